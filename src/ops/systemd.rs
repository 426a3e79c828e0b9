//! systemd's notify protocol (`Type=notify`), written against the protocol:
//! datagrams to `$NOTIFY_SOCKET` saying `READY=1`, `STATUS=…`, `STOPPING=1`
//! and `WATCHDOG=1` at half of `$WATCHDOG_USEC` when the unit sets
//! `WatchdogSec=`. Without `$NOTIFY_SOCKET` every call does nothing.

use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::time::Duration;

pub(crate) struct Notifier {
    socket: Option<(UnixDatagram, SocketAddr)>,
    watchdog: Option<Duration>,
}

impl Notifier {
    /// From the process environment systemd set up, read through `var` so tests can pass their own.
    pub(crate) fn from_env(var: impl Fn(&str) -> Option<String>) -> Notifier {
        let socket = var("NOTIFY_SOCKET").and_then(|path| {
            let addr = match path.strip_prefix('@') {
                Some(name) => SocketAddr::from_abstract_name(name.as_bytes()).ok()?,
                None => SocketAddr::from_pathname(path).ok()?,
            };
            Some((UnixDatagram::unbound().ok()?, addr))
        });
        let for_us = var("WATCHDOG_PID").is_none_or(|pid| pid.parse() == Ok(std::process::id()));
        let watchdog = var("WATCHDOG_USEC")
            .and_then(|usec| usec.parse::<u64>().ok())
            .filter(|usec| *usec > 0 && for_us)
            .map(|usec| Duration::from_micros(usec / 2));
        Notifier { socket, watchdog }
    }

    /// How often to ping the watchdog, when systemd asked for it.
    pub(crate) fn watchdog_every(&self) -> Option<Duration> {
        self.watchdog
    }

    pub(crate) fn ready(&self, status: &str) {
        self.send(&format!("READY=1\nSTATUS={status}"));
    }

    pub(crate) fn status(&self, status: &str) {
        self.send(&format!("STATUS={status}"));
    }

    pub(crate) fn stopping(&self, status: &str) {
        self.send(&format!("STOPPING=1\nSTATUS={status}"));
    }

    pub(crate) fn watchdog(&self) {
        self.send("WATCHDOG=1");
    }

    fn send(&self, message: &str) {
        if let Some((socket, addr)) = &self.socket {
            // Best effort: systemd not listening must never stop an upgrade.
            let _ = socket.send_to_addr(message.as_bytes(), addr);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn speaks_the_notify_protocol_to_the_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify.sock");
        let listener = UnixDatagram::bind(&path).unwrap();
        let env = HashMap::from([
            ("NOTIFY_SOCKET", path.display().to_string()),
            ("WATCHDOG_USEC", "4000000".to_string()),
            ("WATCHDOG_PID", std::process::id().to_string()),
        ]);
        let notifier = Notifier::from_env(|name| env.get(name).cloned());
        assert_eq!(notifier.watchdog_every(), Some(Duration::from_secs(2)));
        notifier.ready("idle");
        notifier.watchdog();
        let mut buf = [0u8; 256];
        let n = listener.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1\nSTATUS=idle");
        let n = listener.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"WATCHDOG=1");
        let other = HashMap::from([("WATCHDOG_USEC", "4000000".to_string()), ("WATCHDOG_PID", "1".to_string())]);
        assert_eq!(
            Notifier::from_env(|name| other.get(name).cloned()).watchdog_every(),
            None,
            "the watchdog is for another pid"
        );
    }
}
