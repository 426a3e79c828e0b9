//! Health probes: one HTTP GET with a bounded time, and reading a version out
//! of a JSON body by JSON pointer. The gate that decides is in `engine`.

use std::time::Duration;

/// What one HTTP probe saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Probe {
    /// An answer with this status and body (capped).
    Answered { status: u16, body: String },
    /// No answer: refused, reset, timed out.
    NoAnswer(String),
}

const BODY_CAP: u64 = 64 * 1024;

/// GETs `url` once, giving up after `timeout`.
pub(crate) fn probe_http(url: &str, timeout: Duration) -> Probe {
    let agent = ureq::AgentBuilder::new().timeout_connect(timeout).timeout(timeout).redirects(0).build();
    match agent.get(url).call() {
        Ok(response) => answered(response),
        Err(ureq::Error::Status(_, response)) => answered(response),
        Err(ureq::Error::Transport(transport)) => Probe::NoAnswer(why_no_answer(&transport)),
    }
}

/// What went wrong, without the URL that the transport error's own text starts
/// with: it may carry a token, and the caller says which URL it probed.
fn why_no_answer(transport: &ureq::Transport) -> String {
    let mut why = transport.kind().to_string();
    if let Some(detail) = transport.message() {
        why.push_str(&format!(": {detail}"));
    }
    if let Some(source) = std::error::Error::source(transport) {
        why.push_str(&format!(": {source}"));
    }
    why
}

fn answered(response: ureq::Response) -> Probe {
    use std::io::Read;
    let status = response.status();
    let mut body = String::new();
    let _ = response.into_reader().take(BODY_CAP).read_to_string(&mut body);
    Probe::Answered { status, body }
}

/// The string (or number) at `pointer` in a JSON body.
pub(crate) fn json_pointer(body: &str, pointer: &str) -> Option<String> {
    let value: serde_json::Value = serde_json::from_str(body).ok()?;
    match value.pointer(pointer)? {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_are_read_by_pointer() {
        assert_eq!(json_pointer(r#"{"version":"2.0.0"}"#, "/version").as_deref(), Some("2.0.0"));
        assert_eq!(
            json_pointer(r#"{"opentrace":{"version":"1.1.5"}}"#, "/opentrace/version").as_deref(),
            Some("1.1.5")
        );
        assert_eq!(json_pointer("<html>", "/version"), None);
    }

    #[test]
    fn a_closed_port_is_no_answer() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        drop(listener);
        let probe = probe_http(&format!("http://127.0.0.1:{port}/api/health"), Duration::from_millis(500));
        assert!(matches!(probe, Probe::NoAnswer(_)), "{probe:?}");
    }

    /// Why there was no answer goes into the gate's reason; the URL (and a token in it) does not.
    #[test]
    fn no_answer_says_why_without_the_url() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        drop(listener);
        let probe = probe_http(&format!("http://127.0.0.1:{port}/health?token=tok-secret"), Duration::from_millis(500));
        let Probe::NoAnswer(why) = probe else { panic!("{probe:?}") };
        assert!(!why.contains("tok-secret") && !why.contains("/health"), "{why}");
        assert!(why.to_lowercase().contains("connect"), "{why}");
    }
}
