//! The env file compose reads for interpolation (`.env`, `--env-file`):
//! `NAME=value` lines, `export NAME=value`, `#` comments, single- and
//! double-quoted values, an unquoted value's ` # comment`, LF or CRLF. Each
//! assignment keeps the byte range of its value, so that one value can be
//! changed without touching a byte around it.

use std::ops::Range;

/// One `NAME=value` line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Assignment {
    pub name: String,
    /// The value as compose reads it.
    pub value: String,
    /// Where the value's bytes are in the file, when they are the value
    /// itself (no escape, no variable inside): what an edit may replace.
    pub span: Option<Range<usize>>,
    /// 1-based.
    pub line: usize,
}

/// Every assignment, in file order (compose keeps the last of a name).
pub(crate) fn parse(text: &str) -> Vec<Assignment> {
    let mut assignments = Vec::new();
    let mut offset = 0;
    for (index, line) in text.split_inclusive('\n').enumerate() {
        if let Some(assignment) = parse_line(line, offset, index + 1) {
            assignments.push(assignment);
        }
        offset += line.len();
    }
    assignments
}

/// The assignment compose uses for `name`: the last one.
pub(crate) fn last<'a>(assignments: &'a [Assignment], name: &str) -> Option<&'a Assignment> {
    assignments.iter().rev().find(|a| a.name == name)
}

fn parse_line(line: &str, offset: usize, number: usize) -> Option<Assignment> {
    let body = line.trim_end_matches(['\n', '\r']);
    let indent = body.len() - body.trim_start().len();
    let mut rest = &body[indent..];
    let mut at = offset + indent;
    if rest.is_empty() || rest.starts_with('#') {
        return None;
    }
    if let Some(after) = rest.strip_prefix("export ") {
        let skipped = rest.len() - after.trim_start().len();
        at += skipped;
        rest = &rest[skipped..];
    }
    let eq = rest.find('=')?;
    let name = rest[..eq].trim_end();
    if name.is_empty() || !name.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'_' || c == b'.' || c == b'-') {
        return None;
    }
    let after_eq = &rest[eq + 1..];
    let lead = after_eq.len() - after_eq.trim_start_matches([' ', '\t']).len();
    let value_at = at + eq + 1 + lead;
    let raw = &after_eq[lead..];
    let (value, span) = match raw.as_bytes().first() {
        Some(b'\'') => match raw[1..].find('\'') {
            Some(close) => (raw[1..1 + close].to_string(), Some(value_at + 1..value_at + 1 + close)),
            None => (raw[1..].to_string(), None),
        },
        Some(b'"') => match closing_double_quote(&raw[1..]) {
            Some(close) => {
                let inner = &raw[1..1 + close];
                // Escapes and variables make the bytes differ from the value: not editable in place.
                let plain = !inner.contains(['\\', '$']);
                (unescape_double(inner), plain.then(|| value_at + 1..value_at + 1 + close))
            }
            None => (raw[1..].to_string(), None),
        },
        _ => {
            let end = inline_comment(raw).unwrap_or(raw.len());
            let value = raw[..end].trim_end_matches([' ', '\t']);
            let plain = !value.contains('$');
            (value.to_string(), plain.then(|| value_at..value_at + value.len()))
        }
    };
    Some(Assignment { name: name.to_string(), value, span, line: number })
}

/// The index of the `"` that closes a double-quoted value (after the opening one).
fn closing_double_quote(text: &str) -> Option<usize> {
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' => i += 2,
            b'"' => return Some(i),
            _ => i += 1,
        }
    }
    None
}

fn unescape_double(inner: &str) -> String {
    let mut out = String::new();
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        match (c, c == '\\') {
            (_, true) => match chars.next() {
                Some('n') => out.push('\n'),
                Some(other) => out.push(other),
                None => out.push('\\'),
            },
            (c, false) => out.push(c),
        }
    }
    out
}

/// Where an unquoted value's ` # comment` begins.
fn inline_comment(raw: &str) -> Option<usize> {
    let bytes = raw.as_bytes();
    (1..bytes.len()).find(|&i| bytes[i] == b'#' && (bytes[i - 1] == b' ' || bytes[i - 1] == b'\t'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_and_the_bytes_that_hold_them() {
        let text = "# Immich\r\nUPLOAD_LOCATION=./library\r\nIMMICH_VERSION=v1.131.3  # pinned\r\n\
                    export QUOTED=\"v1.2\"\nSINGLE='v1.3'\nESCAPED=\"a\\\"b\"\nDERIVED=${X}\nIMMICH_VERSION=v1.131.4\n";
        let all = parse(text);
        let version = last(&all, "IMMICH_VERSION").unwrap();
        assert_eq!((version.value.as_str(), version.line), ("v1.131.4", 8));
        assert_eq!(&text[version.span.clone().unwrap()], "v1.131.4");
        let first = all.iter().find(|a| a.name == "IMMICH_VERSION").unwrap();
        assert_eq!(&text[first.span.clone().unwrap()], "v1.131.3", "the comment and CR stay out");
        let quoted = last(&all, "QUOTED").unwrap();
        assert_eq!((quoted.value.as_str(), &text[quoted.span.clone().unwrap()]), ("v1.2", "v1.2"));
        let single = last(&all, "SINGLE").unwrap();
        assert_eq!(&text[single.span.clone().unwrap()], "v1.3");
        let escaped = last(&all, "ESCAPED").unwrap();
        assert_eq!((escaped.value.as_str(), escaped.span.clone()), ("a\"b", None));
        assert_eq!(last(&all, "DERIVED").unwrap().span, None);
        assert!(last(&all, "Immich").is_none(), "a comment is no assignment");
    }
}
