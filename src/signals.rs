//! SIGINT and SIGTERM: the first asks for a clean stop (an upgrade before its
//! switch is abandoned, one after it finishes its gate or rollback); the
//! second exits at once and leaves the journal for recovery. A [`Waker`] pipe
//! lets a blocked `poll` notice the request without waking on a timer.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use crate::exit::Exit;

/// A pipe whose read end becomes readable when someone calls [`Waker::wake`].
#[derive(Debug)]
pub(crate) struct Waker {
    read: OwnedFd,
    write: OwnedFd,
}

impl Waker {
    pub(crate) fn new() -> io::Result<Arc<Waker>> {
        let mut fds = [0 as RawFd; 2];
        // SAFETY: pipe2 fills the two descriptors we own from here on.
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC | libc::O_NONBLOCK) } != 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: both descriptors were just created and are owned by nobody else.
        let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        Ok(Arc::new(Waker { read, write }))
    }

    pub(crate) fn wake(&self) {
        // A full pipe already wakes the reader; nothing to do on EAGAIN.
        // SAFETY: writes one byte from a valid buffer to a descriptor we own.
        unsafe { libc::write(self.write.as_raw_fd(), [1u8].as_ptr().cast(), 1) };
    }

    /// Empties the pipe after a wake-up.
    pub(crate) fn drain(&self) {
        let mut buf = [0u8; 64];
        // SAFETY: reads into a valid buffer from a non-blocking descriptor we own.
        while unsafe { libc::read(self.read.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) } > 0 {}
    }

    pub(crate) fn fd(&self) -> RawFd {
        self.read.as_raw_fd()
    }
}

/// The process's stop request, shared by the daemon, the pipeline and the runner.
#[derive(Debug, Clone)]
pub(crate) struct Shutdown {
    pub requested: Arc<AtomicBool>,
    wakers: Arc<Mutex<Vec<Arc<Waker>>>>,
}

impl Shutdown {
    /// A stop request nobody signals (tests, in-process daemons).
    pub(crate) fn manual() -> Shutdown {
        Shutdown { requested: Arc::new(AtomicBool::new(false)), wakers: Arc::default() }
    }

    pub(crate) fn is_requested(&self) -> bool {
        self.requested.load(Ordering::SeqCst)
    }

    pub(crate) fn request(&self) {
        self.requested.store(true, Ordering::SeqCst);
        for waker in self.wakers.lock().unwrap_or_else(|e| e.into_inner()).iter() {
            waker.wake();
        }
    }

    /// Wakes this waker whenever a stop is requested.
    pub(crate) fn notify(&self, waker: Arc<Waker>) {
        self.wakers.lock().unwrap_or_else(|e| e.into_inner()).push(waker);
    }
}

/// Installs the SIGINT/SIGTERM handler once per process and returns its stop request.
pub(crate) fn install() -> Shutdown {
    static INSTALLED: OnceLock<Shutdown> = OnceLock::new();
    INSTALLED
        .get_or_init(|| {
            let shutdown = Shutdown::manual();
            let signals = Arc::new(AtomicUsize::new(0));
            let handler = shutdown.clone();
            let result = ctrlc::set_handler(move || {
                if signals.fetch_add(1, Ordering::SeqCst) == 0 {
                    say("upgraderd: stop requested; finishing safely (signal again to exit now)");
                    handler.request();
                } else {
                    say("upgraderd: exiting now; the next start recovers any unfinished upgrade");
                    std::process::exit(Exit::Failed as i32);
                }
            });
            if let Err(e) = result {
                say(&format!("upgraderd: cannot handle SIGINT/SIGTERM ({e}); a signal ends upgraderd at once"));
            }
            shutdown
        })
        .clone()
}

/// One line on stderr; a closed stderr must not stop the stop request from being recorded.
fn say(text: &str) {
    use std::io::Write;
    let _ = writeln!(io::stderr(), "{text}");
}
