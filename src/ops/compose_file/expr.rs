//! Compose's variable interpolation in one value (`${VAR}`, `$VAR`,
//! `${VAR:-default}`, `${VAR-default}`, `${VAR:?message}`, `${VAR?message}`,
//! `${VAR:+alternative}`, `$$`), parsed into segments that keep their byte
//! ranges in the raw text, so that a piece of the resolved value can be traced
//! back to the bytes that wrote it.

use std::ops::Range;

/// One piece of a value as written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Segment {
    /// Text written as it is (its raw bytes are its value).
    Literal { raw: Range<usize> },
    /// `$$`: one literal `$`.
    Dollar { raw: Range<usize> },
    /// A variable reference, the whole `${…}` or `$NAME` in `raw`.
    Var { name: String, op: Op, raw: Range<usize> },
}

/// What a `${NAME<op>word}` does when the variable is unset or empty.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Op {
    /// `${NAME}` or `$NAME`: the value, empty when unset.
    Plain,
    /// `${NAME:-word}` (`or_empty`) or `${NAME-word}`: `word` when unset (or empty).
    Default { word: Range<usize>, or_empty: bool },
    /// `${NAME:?message}` or `${NAME?message}`: an error when unset (or empty).
    Required { or_empty: bool },
    /// `${NAME:+word}` or `${NAME+word}`: `word` when set (and not empty), else empty.
    Alternative { word: Range<usize>, or_empty: bool },
}

/// Splits `raw` into segments; an error names what compose would refuse or
/// what upgraderd does not follow (a nested expression in a default).
pub(crate) fn parse(raw: &str) -> Result<Vec<Segment>, String> {
    let bytes = raw.as_bytes();
    let mut segments = Vec::new();
    let mut literal_start = 0;
    let mut i = 0;
    let flush = |segments: &mut Vec<Segment>, start: usize, end: usize| {
        if end > start {
            segments.push(Segment::Literal { raw: start..end });
        }
    };
    while i < bytes.len() {
        if bytes[i] != b'$' {
            i += 1;
            continue;
        }
        flush(&mut segments, literal_start, i);
        match bytes.get(i + 1) {
            Some(b'$') => {
                segments.push(Segment::Dollar { raw: i..i + 2 });
                i += 2;
            }
            Some(b'{') => {
                let close =
                    raw[i..].find('}').map(|at| i + at).ok_or_else(|| format!("`{raw}` has an unclosed `${{`"))?;
                let inner = i + 2..close;
                segments.push(braced(raw, inner, i..close + 1)?);
                i = close + 1;
            }
            Some(c) if c.is_ascii_alphabetic() || *c == b'_' => {
                let end = bytes[i + 1..]
                    .iter()
                    .position(|c| !(c.is_ascii_alphanumeric() || *c == b'_'))
                    .map_or(bytes.len(), |at| i + 1 + at);
                segments.push(Segment::Var { name: raw[i + 1..end].to_string(), op: Op::Plain, raw: i..end });
                i = end;
            }
            _ => return Err(format!("`{raw}` has a `$` that starts no variable (write `$$` for a literal `$`)")),
        }
        literal_start = i;
    }
    flush(&mut segments, literal_start, bytes.len());
    Ok(segments)
}

/// `NAME`, `NAME:-word`, `NAME-word`, `NAME:?msg`, `NAME?msg`, `NAME:+word`, `NAME+word` between the braces.
fn braced(raw: &str, inner: Range<usize>, whole: Range<usize>) -> Result<Segment, String> {
    let text = &raw[inner.clone()];
    if text.contains('$') {
        return Err(format!("`{raw}` nests one variable in another; upgraderd follows one level"));
    }
    let name_len = text.bytes().position(|c| !(c.is_ascii_alphanumeric() || c == b'_')).unwrap_or(text.len());
    let name = &text[..name_len];
    if name.is_empty() || name.as_bytes()[0].is_ascii_digit() {
        return Err(format!("`{raw}` has `${{{text}}}`, which names no variable"));
    }
    let rest = &text[name_len..];
    let word = |skip: usize| inner.start + name_len + skip..inner.end;
    let op = if rest.is_empty() {
        Op::Plain
    } else if rest.starts_with(":-") {
        Op::Default { word: word(2), or_empty: true }
    } else if rest.starts_with('-') {
        Op::Default { word: word(1), or_empty: false }
    } else if rest.starts_with(":?") {
        Op::Required { or_empty: true }
    } else if rest.starts_with('?') {
        Op::Required { or_empty: false }
    } else if rest.starts_with(":+") {
        Op::Alternative { word: word(2), or_empty: true }
    } else if rest.starts_with('+') {
        Op::Alternative { word: word(1), or_empty: false }
    } else {
        return Err(format!("`{raw}` has `${{{text}}}`, which compose does not understand"));
    };
    Ok(Segment::Var { name: name.to_string(), op, raw: whole })
}

/// Where a piece of the resolved value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Origin {
    /// Raw bytes of the value itself, at this range.
    Written(Range<usize>),
    /// The value of this variable.
    Variable(String),
    /// The default (or alternative) word of a reference to this variable, at this range.
    Word { name: String, raw: Range<usize> },
    /// Text that is not written anywhere as it resolves (`$$`, an unset variable).
    Nowhere,
}

/// One resolved piece: its text and where it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Piece {
    pub text: String,
    pub origin: Origin,
}

/// Resolves the segments the way compose does, with `lookup` giving a variable's value when it is set.
pub(crate) fn resolve(
    raw: &str,
    segments: &[Segment],
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<Vec<Piece>, String> {
    let mut pieces = Vec::new();
    for segment in segments {
        let piece = match segment {
            Segment::Literal { raw: range } => {
                Piece { text: raw[range.clone()].to_string(), origin: Origin::Written(range.clone()) }
            }
            Segment::Dollar { .. } => Piece { text: "$".into(), origin: Origin::Nowhere },
            Segment::Var { name, op, .. } => {
                let value = lookup(name);
                let unset_or = |or_empty: bool| value.as_deref().is_none_or(|v| or_empty && v.is_empty());
                let word = |range: &Range<usize>| Piece {
                    text: raw[range.clone()].to_string(),
                    origin: Origin::Word { name: name.clone(), raw: range.clone() },
                };
                let from_variable =
                    || Piece { text: value.clone().unwrap_or_default(), origin: Origin::Variable(name.clone()) };
                match op {
                    Op::Plain => match &value {
                        Some(_) => from_variable(),
                        None => Piece { text: String::new(), origin: Origin::Nowhere },
                    },
                    Op::Default { word: range, or_empty } => {
                        if unset_or(*or_empty) {
                            word(range)
                        } else {
                            from_variable()
                        }
                    }
                    Op::Required { or_empty } => {
                        if unset_or(*or_empty) {
                            return Err(format!("`{raw}` requires {name}, which is not set"));
                        }
                        from_variable()
                    }
                    Op::Alternative { word: range, or_empty } => {
                        if unset_or(*or_empty) {
                            Piece { text: String::new(), origin: Origin::Nowhere }
                        } else {
                            word(range)
                        }
                    }
                }
            }
        };
        pieces.push(piece);
    }
    Ok(pieces)
}

/// The names of the variables `raw` refers to (empty when it does not parse).
pub(crate) fn variables(raw: &str) -> Vec<String> {
    parse(raw)
        .unwrap_or_default()
        .into_iter()
        .filter_map(|s| match s {
            Segment::Var { name, .. } => Some(name),
            _ => None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        move |name| pairs.iter().find(|(n, _)| *n == name).map(|(_, v)| v.to_string())
    }

    fn text(pieces: &[Piece]) -> String {
        pieces.iter().map(|p| p.text.as_str()).collect()
    }

    #[test]
    fn every_form_compose_knows_resolves_as_compose_does() {
        let set = env(&[("TAG", "v1.2.3"), ("EMPTY", "")]);
        let cases = [
            ("app:${TAG}", "app:v1.2.3"),
            ("app:$TAG", "app:v1.2.3"),
            ("app:${UNSET:-1.0}", "app:1.0"),
            ("app:${EMPTY:-1.0}", "app:1.0"),
            ("app:${EMPTY-1.0}", "app:"),
            ("app:${TAG:-1.0}", "app:v1.2.3"),
            ("app:${TAG:+x}", "app:x"),
            ("app:${UNSET:+x}", "app:"),
            ("a$$b:${TAG}", "a$b:v1.2.3"),
        ];
        for (raw, want) in cases {
            let segments = parse(raw).unwrap();
            assert_eq!(text(&resolve(raw, &segments, &set).unwrap()), want, "{raw}");
        }
        let required = "app:${UNSET:?set it}";
        assert!(resolve(required, &parse(required).unwrap(), &set).unwrap_err().contains("requires UNSET"));
    }

    #[test]
    fn each_piece_says_where_it_is_written() {
        let raw = "${IMAGE:-goauthentik/server}:${TAG:-2025.2.1}";
        let pieces = resolve(raw, &parse(raw).unwrap(), &env(&[("IMAGE", "ghcr.io/x/server")])).unwrap();
        assert_eq!(pieces[0].origin, Origin::Variable("IMAGE".into()));
        assert_eq!(pieces[1].origin, Origin::Written(28..29));
        let Origin::Word { name, raw: range } = &pieces[2].origin else { panic!("{pieces:?}") };
        assert_eq!((name.as_str(), &raw[range.clone()]), ("TAG", "2025.2.1"));
    }

    #[test]
    fn what_compose_refuses_or_upgraderd_does_not_follow_is_an_error() {
        for bad in ["app:${TAG", "app:$1", "app:${}", "app:${A:-${B}}", "app:${A/x/y}", "cost $ 5"] {
            assert!(parse(bad).is_err(), "{bad}");
        }
        assert_eq!(variables("${A}:${B:-x}-$C"), vec!["A", "B", "C"]);
    }
}
