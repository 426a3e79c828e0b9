//! The file read line by line against systemd's rules for `EnvironmentFile=`
//! (systemd.exec(5) and `parse_env_file_internal` in `src/basic/env-file.c`).

use super::*;

struct Case {
    rule: &'static str,
    file: &'static [u8],
    /// Every name=value systemd passes on, with the line the assignment starts on.
    read: &'static [(&'static str, &'static str, usize)],
    /// Warnings: the line and a part of the text.
    warned: &'static [(usize, &'static str)],
}

const fn case(
    rule: &'static str,
    file: &'static [u8],
    read: &'static [(&'static str, &'static str, usize)],
    warned: &'static [(usize, &'static str)],
) -> Case {
    Case { rule, file, read, warned }
}

const NOT_A_NAME: &str = "is not a variable name";

#[rustfmt::skip]
const CASES: &[Case] = &[
    case("KEY=VALUE", b"A=1\n", &[("A", "1", 1)], &[]),
    case("the last line needs no line end", b"A=1", &[("A", "1", 1)], &[]),
    case("blank lines", b"\n  \t\n\r\nA=1\n\n", &[("A", "1", 4)], &[]),
    case("# and ; start comments, after blanks too", b"# x=1\n; y=2\n \t# z=3\nA=1\n", &[("A", "1", 4)], &[]),
    case("# and ; inside a value are text", b"A=a#b ;c\n", &[("A", "a#b ;c", 1)], &[]),
    case("blanks around name and value are cut, inner ones kept", b"  A \t=  v  w \t\n", &[("A", "v  w", 1)], &[]),
    case("double quotes keep blanks", b"A=\"  v  \"\n", &[("A", "  v  ", 1)], &[]),
    case("single quotes are verbatim", b"A='a\\b \"c\" $d'\n", &[("A", "a\\b \"c\" $d", 1)], &[]),
    case("in double quotes \\ escapes \" \\ ` $ and stays before others",
        b"A=\"\\\"\\\\\\`\\$\\n\\q\"\n", &[("A", "\"\\`$\\n\\q", 1)], &[]),
    case("a quoted part joins what follows it", b"A=\"7\"x\n", &[("A", "7x", 1)], &[]),
    case("blanks between quoted parts are skipped", b"A='a' \"b\"  c \n", &[("A", "abc", 1)], &[]),
    case("quotes after the first character are text", b"A=x \"y\" 'z'\n", &[("A", "x \"y\" 'z'", 1)], &[]),
    case("unquoted \\ keeps the next character", b"A=a\\ b\\\\c\\\"\\ \n", &[("A", "a b\\c\" ", 1)], &[]),
    case("a \\ at the end of a line continues the value", b"A=one \\\n  two\nB=1\n",
        &[("A", "one   two", 1), ("B", "1", 3)], &[]),
    case("continuation inside double quotes", b"A=\"one\\\ntwo\"\n", &[("A", "onetwo", 1)], &[]),
    case("quoted values span lines", b"A='one\ntwo'\nB=\"x\ny\"\n", &[("A", "one\ntwo", 1), ("B", "x\ny", 3)], &[]),
    case("CRLF line ends", b"A=1\r\nB= 2 \r\n", &[("A", "1", 1), ("B", "2", 2)], &[]),
    case("a lone CR ends a line", b"A=1\rB=2\n", &[("A", "1", 1), ("B", "2", 1)], &[]),
    case("a CR inside quotes is kept", b"A=\"x\ry\"\n", &[("A", "x\ry", 1)], &[]),
    case("\\ then CRLF: the CR is escaped, the LF ends the line", b"A=x\\\r\nB=1\n",
        &[("A", "x", 1), ("B", "1", 2)], &[]),
    case("empty values", b"A=\nB=''\nC=\"\"\nD=  \n",
        &[("A", "", 1), ("B", "", 2), ("C", "", 3), ("D", "", 4)], &[]),
    case("a later assignment replaces an earlier one", b"A=1\nA=2\n", &[("A", "2", 2)], &[]),
    case("a quote open at the end of the file keeps what it holds", b"A='open\nB=1\n", &[("A", "open\nB=1\n", 1)], &[]),
    case("a \\ at the end of the file", b"A=x\\", &[("A", "x", 1)], &[]),
    case("blanks and tabs around quotes", b"\tA\t=\t'v'\t\n", &[("A", "v", 1)], &[]),
    case("a byte order mark is part of the first name", b"\xef\xbb\xbfA=1\nB=2\n",
        &[("B", "2", 2)], &[(1, "byte order mark")]),
    case("a byte order mark before a comment makes it a line without =", b"\xef\xbb\xbf# c\nB=2\n",
        &[("B", "2", 2)], &[(1, "byte order mark")]),
    case("export is not special", b"export A=1\n", &[], &[(1, "`export` is not special")]),
    case("invalid names are ignored", b"A.B=1\n1A=2\nA-B=3\n\xc3\x84=4\nA B=5\n_a1=6\n",
        &[("_a1", "6", 6)], &[(1, NOT_A_NAME), (2, NOT_A_NAME), (3, NOT_A_NAME), (4, NOT_A_NAME), (5, NOT_A_NAME)]),
    case("a line without = is ignored", b"JUSTANAME\nA=1\nLAST", &[("A", "1", 2)],
        &[(1, "`JUSTANAME` has no `=`"), (3, "`LAST` has no `=`")]),
    case("a line starting with = has no name", b"=1\nA=1\n", &[("A", "1", 2)], &[(1, "no name before `=`")]),
    case("a comment ending in \\ does not continue (systemd 254 and later)", b"# note \\\nA=1\n",
        &[("A", "1", 2)], &[(2, "comment ending in `\\`")]),
    case("the same after a comment ending in \\ and CR", b"# note \\\rA=1\n# \\\n\nB=2\n",
        &[("A", "1", 1), ("B", "2", 4)], &[(1, "comment ending in `\\`")]),
    case("invalid UTF-8 in a comment is no concern", b"# \xff\nA=1\n", &[("A", "1", 2)], &[]),
    case("invalid UTF-8 in a line without = is no concern", b"\xff\nA=1\n", &[("A", "1", 2)], &[(1, "has no `=`")]),
];

#[test]
fn every_rule_of_systemds_env_file_syntax() {
    for case in CASES {
        let file = EnvFile::parse_bytes(Path::new("/etc/u.env"), case.file)
            .unwrap_or_else(|e| panic!("{}: refused: {e}", case.rule));
        let mut read: Vec<(&str, &str, usize)> =
            file.entries.iter().map(|(name, entry)| (name.as_str(), entry.value.as_str(), entry.line)).collect();
        read.sort();
        let mut expected = case.read.to_vec();
        expected.sort();
        assert_eq!(read, expected, "{}", case.rule);
        // Names upgraderd does not know are warned about too; these cases are about syntax.
        let warnings: Vec<String> = file.warnings().into_iter().filter(|w| !w.contains("unknown key")).collect();
        for (line, text) in case.warned {
            let prefix = format!("/etc/u.env:{line}: ");
            assert!(
                warnings.iter().any(|w| w.starts_with(&prefix) && w.contains(text)),
                "{}: no warning on line {line} with {text:?}: {warnings:#?}",
                case.rule
            );
        }
        assert_eq!(warnings.len(), case.warned.len(), "{}: {warnings:#?}", case.rule);
    }
}

#[test]
fn a_nul_byte_or_a_name_or_value_that_is_not_utf8_refuses_the_file_as_systemd_does() {
    for (rule, bytes) in [
        ("a value", b"A=\xff\n".as_slice()),
        ("a name", b"\xffA=1\n"),
        ("a noncharacter", "A=\u{fdd0}\n".as_bytes()),
        ("even when replaced later", b"A=\xff\nA=1\n"),
        ("a NUL byte, even in a comment", b"# \0\nA=1\n"),
    ] {
        let err = EnvFile::parse_bytes(Path::new("/etc/u.env"), bytes).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("/etc/u.env:1: "), "{rule}: {text}");
        assert!(text.contains("not valid UTF-8") || text.contains("a NUL byte"), "{rule}: {text}");
        assert!(text.contains("systemd refuses such a file"), "{rule}: {text}");
        assert_eq!(crate::exit::classify(&err), crate::exit::Exit::Usage, "{rule}");
    }
}

#[test]
fn unknown_keys_are_warned_about_with_the_key_they_resemble() {
    let file = EnvFile::parse(Path::new("f"), "; comment\nUPGRADERD_DOKCER=/bin/docker\nMY_APP_SETTING=1\n").unwrap();
    assert_eq!(file.unknown, vec![(2, "UPGRADERD_DOKCER".to_string()), (3, "MY_APP_SETTING".to_string())]);
    assert_eq!(
        file.warnings(),
        vec![
            "f:2: unknown key UPGRADERD_DOKCER (ignored); did you mean UPGRADERD_DOCKER?",
            "f:3: unknown key MY_APP_SETTING (ignored)",
        ]
    );
}
