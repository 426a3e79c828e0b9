//! systemd's env-file grammar, byte for byte: the state machine of
//! `parse_env_file_internal` in systemd's `src/basic/env-file.c`, which is what
//! `EnvironmentFile=` reads. It only splits the file into assignments; which
//! of them systemd keeps (valid UTF-8, valid names) is decided by the caller.
//!
//! The rules, as systemd applies them:
//! - A NUL byte makes the file unreadable (systemd's `read_full_file` refuses
//!   it); [`nul_line`] finds it so the caller can refuse the file too.
//! - Space, tab, CR and LF before a name are skipped; a line whose first other
//!   character is `#` or `;` is a comment up to the next CR or LF. A UTF-8 byte
//!   order mark is not skipped: it becomes part of the first name.
//! - A name runs to `=`; trailing blanks are cut, inner ones kept (so
//!   `export KEY` is a name of its own). A CR or LF before any `=` drops what
//!   was read, silently.
//! - Blanks after `=` are skipped. There, `'` opens a single-quoted part
//!   (everything verbatim up to the next `'`, CR and LF included), `"` a
//!   double-quoted part (`\` before `"`, `\`, `` ` `` or `$` is dropped, before
//!   LF it joins lines, before anything else it stays), `\` escapes the next
//!   character. After a closing quote blanks are skipped again, so `"a" "b"`
//!   is `ab` and `"7"x` is `7x`.
//! - Any other character starts the unquoted rest of the value, where quotes
//!   are ordinary characters, `\` keeps the next character (a CR or LF after it
//!   joins lines) and a CR or LF ends the value; trailing blanks are cut.
//! - A file may end inside a value or an open quote: what was read is kept.
//! - Since systemd 254 a comment ending in `\` does not continue onto the next
//!   line; before, the next line was part of the comment. This follows 254 and
//!   notes the lines where the two differ.

/// Space, tab and both line ends: what systemd skips around names and values.
const WHITESPACE: &[u8] = b" \t\n\r";
/// Either byte ends a line for systemd.
const NEWLINE: &[u8] = b"\n\r";
const COMMENTS: &[u8] = b"#;";
/// What a backslash escapes inside double quotes, as in a POSIX shell.
const SHELL_NEED_ESCAPE: &[u8] = b"\"\\`$";

/// One `name=value` as systemd pushes it, before any check of name or encoding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Assignment {
    pub name: Vec<u8>,
    pub value: Vec<u8>,
    /// The line (counted by LF, as editors and `grep -n` count) where the name starts.
    pub line: usize,
}

/// Something systemd passes over without a word that an operator should hear about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Note {
    /// A line with a name but no `=`, dropped.
    NoEquals { line: usize, text: Vec<u8> },
    /// An assignment on the line after a comment ending in `\`: systemd before
    /// 254 reads it as part of the comment.
    AfterCommentContinuation { line: usize },
}

/// What a file holds, in the order systemd reads it.
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct Lexed {
    pub assignments: Vec<Assignment>,
    pub notes: Vec<Note>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    PreKey,
    Key,
    PreValue,
    Value,
    ValueEscape,
    SingleQuoted,
    DoubleQuoted,
    DoubleQuotedEscape,
    Comment,
    CommentEscape,
}

/// The line of the first NUL byte, if the file has one.
pub(super) fn nul_line(bytes: &[u8]) -> Option<usize> {
    let at = bytes.iter().position(|&b| b == 0)?;
    Some(1 + bytes[..at].iter().filter(|&&b| b == b'\n').count())
}

/// Splits a file into assignments the way systemd does. NUL bytes are to be
/// refused before; here one would end the file, as it ends systemd's C string.
pub(super) fn lex(bytes: &[u8]) -> Lexed {
    let readable = &bytes[..bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len())];
    let mut lexer = Lexer::default();
    for &c in readable {
        lexer.step(c);
        if c == b'\n' {
            lexer.line += 1;
        }
    }
    lexer.finish();
    lexer.out
}

struct Lexer {
    state: State,
    name: Vec<u8>,
    value: Vec<u8>,
    /// Where the trailing blanks of the name begin, if it ends in blanks.
    name_blanks_from: Option<usize>,
    /// Where the trailing blanks of an unquoted value begin, if it ends in blanks.
    value_blanks_from: Option<usize>,
    line: usize,
    name_line: usize,
    /// A comment just ended in `\` and a line end: systemd before 254 reads
    /// the next line, up to its line end, as part of it.
    after_comment_continuation: bool,
    /// The name being read started on such a line.
    name_after_comment_continuation: bool,
    out: Lexed,
}

impl Default for Lexer {
    fn default() -> Lexer {
        Lexer {
            state: State::PreKey,
            name: Vec::new(),
            value: Vec::new(),
            name_blanks_from: None,
            value_blanks_from: None,
            line: 1,
            name_line: 1,
            after_comment_continuation: false,
            name_after_comment_continuation: false,
            out: Lexed::default(),
        }
    }
}

impl Lexer {
    fn step(&mut self, c: u8) {
        self.state = match self.state {
            State::PreKey => self.pre_key(c),
            State::Key => self.key(c),
            State::PreValue => self.pre_value(c),
            State::Value => self.unquoted(c),
            State::ValueEscape => {
                // An escaped line end joins the lines; anything else is kept as is.
                if !NEWLINE.contains(&c) {
                    self.value.push(c);
                }
                State::Value
            }
            State::SingleQuoted if c == b'\'' => State::PreValue,
            State::SingleQuoted => self.quoted(c, State::SingleQuoted),
            State::DoubleQuoted if c == b'"' => State::PreValue,
            State::DoubleQuoted if c == b'\\' => State::DoubleQuotedEscape,
            State::DoubleQuoted => self.quoted(c, State::DoubleQuoted),
            State::DoubleQuotedEscape => {
                if SHELL_NEED_ESCAPE.contains(&c) {
                    self.value.push(c);
                } else if c != b'\n' {
                    self.value.extend_from_slice(&[b'\\', c]);
                }
                State::DoubleQuoted
            }
            State::Comment if c == b'\\' => State::CommentEscape,
            State::Comment if NEWLINE.contains(&c) => State::PreKey,
            State::Comment => State::Comment,
            State::CommentEscape if NEWLINE.contains(&c) => {
                self.after_comment_continuation = true;
                State::PreKey
            }
            State::CommentEscape => State::Comment,
        };
    }

    fn pre_key(&mut self, c: u8) -> State {
        let after_comment_continuation = std::mem::take(&mut self.after_comment_continuation);
        if COMMENTS.contains(&c) {
            return State::Comment;
        }
        if WHITESPACE.contains(&c) {
            self.after_comment_continuation = after_comment_continuation && !NEWLINE.contains(&c);
            return State::PreKey;
        }
        self.name_after_comment_continuation = after_comment_continuation;
        self.name.clear();
        self.name.push(c);
        self.name_blanks_from = None;
        self.name_line = self.line;
        State::Key
    }

    fn key(&mut self, c: u8) -> State {
        if NEWLINE.contains(&c) {
            self.drop_name();
            return State::PreKey;
        }
        if c == b'=' {
            self.value_blanks_from = None;
            return State::PreValue;
        }
        track_blanks(&mut self.name_blanks_from, self.name.len(), c);
        self.name.push(c);
        State::Key
    }

    fn pre_value(&mut self, c: u8) -> State {
        match c {
            _ if NEWLINE.contains(&c) => {
                self.push(false);
                State::PreKey
            }
            b'\'' => State::SingleQuoted,
            b'"' => State::DoubleQuoted,
            b'\\' => State::ValueEscape,
            _ if WHITESPACE.contains(&c) => State::PreValue,
            _ => {
                self.value.push(c);
                State::Value
            }
        }
    }

    fn unquoted(&mut self, c: u8) -> State {
        if NEWLINE.contains(&c) {
            self.push(true);
            return State::PreKey;
        }
        if c == b'\\' {
            // What a backslash escapes is never a trailing blank.
            self.value_blanks_from = None;
            return State::ValueEscape;
        }
        track_blanks(&mut self.value_blanks_from, self.value.len(), c);
        self.value.push(c);
        State::Value
    }

    fn quoted(&mut self, c: u8, state: State) -> State {
        self.value.push(c);
        state
    }

    /// The file ended: a value being read is kept, a name without `=` is not.
    fn finish(&mut self) {
        match self.state {
            State::Key => self.drop_name(),
            State::Value => self.push(true),
            State::PreValue
            | State::ValueEscape
            | State::SingleQuoted
            | State::DoubleQuoted
            | State::DoubleQuotedEscape => self.push(false),
            State::PreKey | State::Comment | State::CommentEscape => {}
        }
    }

    fn push(&mut self, cut_trailing_blanks: bool) {
        let mut name = std::mem::take(&mut self.name);
        name.truncate(self.name_blanks_from.unwrap_or(name.len()));
        let mut value = std::mem::take(&mut self.value);
        if cut_trailing_blanks {
            value.truncate(self.value_blanks_from.unwrap_or(value.len()));
        }
        if self.name_after_comment_continuation {
            self.out.notes.push(Note::AfterCommentContinuation { line: self.name_line });
        }
        self.out.assignments.push(Assignment { name, value, line: self.name_line });
    }

    fn drop_name(&mut self) {
        let text = std::mem::take(&mut self.name);
        self.out.notes.push(Note::NoEquals { line: self.name_line, text });
    }
}

/// Remembers where a run of trailing blanks starts; any other byte ends the run.
fn track_blanks(blanks_from: &mut Option<usize>, len: usize, c: u8) {
    if !WHITESPACE.contains(&c) {
        *blanks_from = None;
    } else if blanks_from.is_none() {
        *blanks_from = Some(len);
    }
}
