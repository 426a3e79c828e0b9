//! The one place that prints: logs and progress on stderr, data (tables or
//! JSON) on stdout. With `--json`, progress steps become JSON lines on stdout.

use std::io::{self, Write};
use std::time::Instant;

use serde::Serialize;

/// Printer for one run of the program.
#[derive(Debug, Clone)]
pub struct Ui {
    json: bool,
    verbosity: i8,
    started: Instant,
}

impl Ui {
    pub fn new(json: bool, verbosity: i8) -> Ui {
        Ui { json, verbosity, started: Instant::now() }
    }

    /// A silent printer, for library callers and tests.
    pub fn silent() -> Ui {
        Ui::new(false, -1)
    }

    pub fn json(&self) -> bool {
        self.json
    }

    /// A normal log line.
    pub fn info(&self, message: impl AsRef<str>) {
        if self.verbosity >= 0 {
            eprintln!("{}", message.as_ref());
        }
    }

    /// A detail shown with `-v`.
    pub fn detail(&self, message: impl AsRef<str>) {
        if self.verbosity >= 1 {
            eprintln!("  {}", message.as_ref());
        }
    }

    pub fn warn(&self, message: impl AsRef<str>) {
        if self.verbosity >= 0 {
            eprintln!("warning: {}", message.as_ref());
        }
    }

    /// Prints an error with its chain of causes, each on its own line.
    pub fn error(&self, err: &anyhow::Error) {
        let mut text = format!("error: {err}");
        for cause in err.chain().skip(1) {
            text.push_str(&format!("\n  caused by: {cause}"));
        }
        eprintln!("{text}");
    }

    /// One progress step: `[ 40%] downloading: Pulling image (12.3s)`.
    pub fn step(&self, percent: u8, phase: &str, message: &str) {
        let elapsed = self.started.elapsed().as_secs_f64();
        if self.json {
            self.emit(&serde_json::json!({
                "event": "step", "progress": percent, "status": phase,
                "message": message, "elapsedSeconds": (elapsed * 10.0).round() / 10.0,
            }));
        } else if self.verbosity >= 0 {
            eprintln!("[{percent:>3}%] {phase}: {message} ({elapsed:.1}s)");
        }
    }

    /// One line of a child's output, streamed as progress.
    pub fn stream_line(&self, source: &str, line: &str) {
        if self.json {
            self.emit(&serde_json::json!({"event": "output", "source": source, "line": line}));
        } else if self.verbosity >= 0 {
            eprintln!("       | {line}");
        }
    }

    /// Prints one JSON value on its own line on stdout.
    pub fn emit<T: Serialize>(&self, value: &T) {
        let mut out = io::stdout().lock();
        let _ = serde_json::to_writer(&mut out, value);
        let _ = writeln!(out);
    }

    /// Prints pretty JSON on stdout (a command's final answer).
    pub fn data<T: Serialize>(&self, value: &T) {
        let mut out = io::stdout().lock();
        let _ = serde_json::to_writer_pretty(&mut out, value);
        let _ = writeln!(out);
    }

    /// Prints plain text on stdout.
    pub fn print(&self, text: impl AsRef<str>) {
        let mut out = io::stdout().lock();
        let _ = writeln!(out, "{}", text.as_ref());
    }

    /// Prints a table with aligned columns on stdout.
    pub fn table(&self, headers: &[&str], rows: &[Vec<String>]) {
        self.print(render_table(headers, rows));
    }
}

/// Renders rows under headers, columns padded to their widest cell.
pub fn render_table(headers: &[&str], rows: &[Vec<String>]) -> String {
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
pub use crate::units::human_bytes;

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
