//! Reading a child's stdout and stderr on their own threads: what is kept of
//! each (the head of stdout, the tail of stderr), the lines streamed as
//! progress, and the events that tell the waiting loop a pipe has closed.

use std::io::{self, Read};
use std::process::ExitStatus;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread;

/// What the threads around a child report to the loop that waits for it.
pub(super) enum Event {
    Line(String),
    Exited(ExitStatus),
    /// A pipe reached its end.
    Closed,
}

/// What a reader thread has kept so far; read by the caller even when a
/// grandchild keeps the pipe open past the child's exit.
#[derive(Default)]
pub(super) struct Captured {
    pub bytes: Vec<u8>,
    pub overflow: bool,
}

/// A reader thread's capture, shared with the caller.
#[derive(Clone, Default)]
pub(super) struct Shared(Arc<Mutex<Captured>>);

impl Shared {
    /// Takes what was kept so far, leaving the capture empty.
    pub(super) fn take(&self) -> Captured {
        self.0.lock().map(|mut c| std::mem::take(&mut *c)).unwrap_or_default()
    }

    fn keep(&self, keep: Keep, data: &[u8]) {
        let Ok(mut captured) = self.0.lock() else { return };
        match keep {
            Keep::Head(cap) if captured.bytes.len() + data.len() > cap => captured.overflow = true,
            Keep::Head(_) => captured.bytes.extend_from_slice(data),
            Keep::Tail(cap) => {
                captured.bytes.extend_from_slice(data);
                // Trimmed in batches so a flood does not shift the buffer on every chunk.
                if captured.bytes.len() > cap * 2 {
                    let excess = captured.bytes.len() - cap;
                    captured.bytes.drain(..excess);
                }
            }
        }
    }
}

/// Which part of a pipe's output is kept.
#[derive(Clone, Copy)]
pub(super) enum Keep {
    /// The first N bytes; more is an overflow.
    Head(usize),
    /// The last N bytes (and at most twice that while reading).
    Tail(usize),
}

/// Reads a pipe to its end on a thread, streaming lines when asked and
/// keeping what `keep` says in `shared`; sends [`Event::Closed`] at the end.
pub(super) fn spawn_reader(
    mut pipe: impl Read + Send + 'static,
    tx: mpsc::Sender<Event>,
    stream_lines: bool,
    shared: Shared,
    keep: Keep,
) {
    thread::spawn(move || {
        let mut partial: Vec<u8> = Vec::new();
        let mut chunk = [0u8; 16 * 1024];
        loop {
            let n = match pipe.read(&mut chunk) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => break,
            };
            let data = &chunk[..n];
            if stream_lines {
                partial.extend_from_slice(data);
                send_complete_lines(&mut partial, &tx);
            }
            shared.keep(keep, data);
        }
        if stream_lines && !partial.is_empty() {
            let _ = tx.send(Event::Line(String::from_utf8_lossy(&partial).trim_end().to_string()));
        }
        let _ = tx.send(Event::Closed);
    });
}

/// Sends every complete line in `partial` and leaves the unfinished rest.
fn send_complete_lines(partial: &mut Vec<u8>, tx: &mpsc::Sender<Event>) {
    // Docker prints progress with bare carriage returns; both end a line here.
    while let Some(end) = partial.iter().position(|&b| b == b'\n' || b == b'\r') {
        let line: Vec<u8> = partial.drain(..=end).collect();
        let text = String::from_utf8_lossy(&line[..line.len() - 1]).trim_end().to_string();
        if !text.is_empty() {
            let _ = tx.send(Event::Line(text));
        }
    }
}
