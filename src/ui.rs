//! The one place that prints: logs and progress on stderr, data (tables or
//! JSON) on stdout. With `--json`, progress steps become JSON lines on stdout.
//!
//! Everything goes through [`Output`]: a reader that went away
//! (`upgraderd history | head -1`, a closed terminal) ends that output
//! quietly, never with a panic or an error. The command itself carries on and
//! exits with its own code: an upgrade is never abandoned half-way because
//! nobody reads its progress.

// The one module allowed to print (the lint is denied everywhere else).
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::io::{self, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use serde::Serialize;

/// Printer for one run of the program.
#[derive(Debug, Clone)]
pub(crate) struct Ui {
    json: bool,
    verbosity: i8,
    started: Instant,
}

impl Ui {
    pub(crate) fn new(json: bool, verbosity: i8) -> Ui {
        Ui { json, verbosity, started: Instant::now() }
    }

    pub(crate) fn json(&self) -> bool {
        self.json
    }

    /// A normal log line.
    pub(crate) fn info(&self, message: impl AsRef<str>) {
        if self.verbosity >= 0 {
            Output::Stderr.line(message.as_ref());
        }
    }

    /// A detail shown with `-v`.
    pub(crate) fn detail(&self, message: impl AsRef<str>) {
        if self.verbosity >= 1 {
            Output::Stderr.line(&format!("  {}", message.as_ref()));
        }
    }

    pub(crate) fn warn(&self, message: impl AsRef<str>) {
        if self.verbosity >= 0 {
            Output::Stderr.line(&format!("warning: {}", message.as_ref()));
        }
    }

    /// Prints an error with its chain of causes, each on its own line.
    pub(crate) fn error(&self, err: &anyhow::Error) {
        let mut text = format!("error: {err}");
        for cause in err.chain().skip(1) {
            text.push_str(&format!("\n  caused by: {cause}"));
        }
        Output::Stderr.line(&text);
    }

    /// One progress step: `[ 40%] downloading: Pulling image (12.3s)`.
    pub(crate) fn step(&self, percent: u8, phase: &str, message: &str) {
        let elapsed = self.started.elapsed().as_secs_f64();
        if self.json {
            self.emit(&serde_json::json!({
                "event": "step", "progress": percent, "status": phase,
                "message": message, "elapsedSeconds": (elapsed * 10.0).round() / 10.0,
            }));
        } else if self.verbosity >= 0 {
            Output::Stderr.line(&format!("[{percent:>3}%] {phase}: {message} ({elapsed:.1}s)"));
        }
    }

    /// One line of a child's output, streamed as progress.
    pub(crate) fn stream_line(&self, source: &str, line: &str) {
        if self.json {
            self.emit(&serde_json::json!({"event": "output", "source": source, "line": line}));
        } else if self.verbosity >= 0 {
            Output::Stderr.line(&format!("       | {line}"));
        }
    }

    /// Prints one JSON value on its own line on stdout.
    pub(crate) fn emit<T: Serialize>(&self, value: &T) {
        if let Ok(text) = serde_json::to_string(value) {
            Output::Stdout.line(&text);
        }
    }

    /// Prints pretty JSON on stdout (a command's final answer).
    pub(crate) fn data<T: Serialize>(&self, value: &T) {
        if let Ok(text) = serde_json::to_string_pretty(value) {
            Output::Stdout.line(&text);
        }
    }

    /// Prints plain text on stdout.
    pub(crate) fn print(&self, text: impl AsRef<str>) {
        Output::Stdout.line(text.as_ref());
    }

    /// One line of a dry run's plan (a command it would run, or a `#` note): plain
    /// on stdout, or a JSON line with `--json`, so stdout stays one format.
    pub(crate) fn plan(&self, line: impl AsRef<str>) {
        if self.json {
            self.emit(&serde_json::json!({"event": "plan", "line": line.as_ref()}));
        } else {
            self.print(line);
        }
    }

    /// Prints a table with aligned columns on stdout.
    pub(crate) fn table(&self, headers: &[&str], rows: &[Vec<String>]) {
        self.print(render_table(headers, rows));
    }
}

/// stdout or stderr, written so that a reader that went away ends the output quietly.
///
/// The first `EPIPE` marks the stream closed and every later write is
/// dropped, reported as written, so nothing downstream (a generator that
/// panics on a write error, a `?` that turns it into a failure) sees it.
/// Any other error is returned as usual.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Output {
    Stdout,
    Stderr,
}

static STDOUT_CLOSED: AtomicBool = AtomicBool::new(false);
static STDERR_CLOSED: AtomicBool = AtomicBool::new(false);

impl Output {
    /// Writes `text` and a newline in one write, so lines from several threads never interleave.
    pub(crate) fn line(self, text: &str) {
        let mut line = String::with_capacity(text.len() + 1);
        line.push_str(text);
        line.push('\n');
        let mut out = self;
        // Nothing sensible is left to do when the terminal itself fails.
        let _ = out.write_all(line.as_bytes()).and_then(|()| out.flush());
    }

    /// Whether a reader went away: later output is dropped.
    pub(crate) fn is_closed(self) -> bool {
        self.closed().load(Ordering::Relaxed)
    }

    fn closed(self) -> &'static AtomicBool {
        match self {
            Output::Stdout => &STDOUT_CLOSED,
            Output::Stderr => &STDERR_CLOSED,
        }
    }

    fn quietly<T>(self, done: T, op: impl FnOnce() -> io::Result<T>) -> io::Result<T> {
        if self.is_closed() {
            return Ok(done);
        }
        match op() {
            Err(e) if e.kind() == io::ErrorKind::BrokenPipe => {
                self.closed().store(true, Ordering::Relaxed);
                Ok(done)
            }
            other => other,
        }
    }
}

impl Write for Output {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.quietly(buf.len(), || match self {
            Output::Stdout => io::stdout().lock().write(buf),
            Output::Stderr => io::stderr().lock().write(buf),
        })
    }

    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        self.quietly((), || match self {
            Output::Stdout => io::stdout().lock().write_all(buf),
            Output::Stderr => io::stderr().lock().write_all(buf),
        })
    }

    fn flush(&mut self) -> io::Result<()> {
        self.quietly((), || match self {
            Output::Stdout => io::stdout().lock().flush(),
            Output::Stderr => io::stderr().lock().flush(),
        })
    }
}

/// Renders rows under headers, columns padded to their widest cell.
pub(crate) fn render_table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            widths[i] = widths[i].max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut text = String::new();
        for (i, cell) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                text.push_str(cell);
            } else {
                text.push_str(&format!("{cell:<w$}  ", w = widths[i]));
            }
        }
        text.trim_end().to_string()
    };
    let mut out = vec![line(headers.to_vec())];
    out.extend(rows.iter().map(|r| line(r.iter().map(String::as_str).collect())));
    out.join("\n")
}

/// Byte counts for people; lives in the leaf module `units` so that lower layers need not import `ui`.
pub(crate) use crate::units::human_bytes;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align_columns() {
        let text =
            render_table(&["ID", "STATUS"], &[vec!["a".into(), "complete".into()], vec!["long-id".into(), "x".into()]]);
        assert_eq!(text, "ID       STATUS\na        complete\nlong-id  x");
    }
}
