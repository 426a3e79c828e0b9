//! `UPGRADERD_RELEASE_STEPS`: commands a release needs run with its new
//! image before it serves (Mastodon's `rails db:migrate`), written
//! `SERVICE: COMMAND ARGS…`, several separated by `;`. Words split on
//! blanks; `'…'` and `"…"` keep blanks inside one word. Nothing is expanded:
//! the words are the argv compose passes to the container.

/// One release step: the command, run in a one-off container of `service` with its new image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ReleaseStep {
    pub service: String,
    pub argv: Vec<String>,
}

impl ReleaseStep {
    /// `SERVICE: COMMAND…`, as the operator wrote it.
    pub(crate) fn describe(&self) -> String {
        format!("{}: {}", self.service, self.argv.join(" "))
    }
}

/// Parses the setting; the error says which step is wrong and how to write it.
pub(crate) fn parse(text: &str) -> Result<Vec<ReleaseStep>, String> {
    let example = "for example UPGRADERD_RELEASE_STEPS='web: bundle exec rails db:migrate'";
    let mut steps = Vec::new();
    for step in text.split(';').map(str::trim).filter(|s| !s.is_empty()) {
        let no_service = || format!("release step `{step}` names no service: write SERVICE: COMMAND ({example})");
        let (service, command) = step.split_once(':').ok_or_else(no_service)?;
        let service = service.trim();
        if service.contains(char::is_whitespace) && !command.trim().is_empty() {
            // `rails db:migrate`: the colon is the command's, not a service's.
            return Err(no_service());
        }
        if service.is_empty() || !service.bytes().all(|c| c.is_ascii_alphanumeric() || b"_.-".contains(&c)) {
            return Err(format!("release step `{step}`: `{service}` is not a service name ({example})"));
        }
        let argv = words(command).map_err(|e| format!("release step `{step}`: {e}"))?;
        if argv.is_empty() {
            return Err(format!("release step `{step}` has no command ({example})"));
        }
        steps.push(ReleaseStep { service: service.to_string(), argv });
    }
    Ok(steps)
}

/// Blank-separated words; quotes group, and are removed.
fn words(text: &str) -> Result<Vec<String>, String> {
    let mut words = Vec::new();
    let mut word: Option<String> = None;
    let mut quote: Option<char> = None;
    for c in text.chars() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), c) => word.get_or_insert_with(String::new).push(c),
            (None, '\'' | '"') => {
                quote = Some(c);
                word.get_or_insert_with(String::new);
            }
            (None, c) if c.is_whitespace() => words.extend(word.take()),
            (None, c) => word.get_or_insert_with(String::new).push(c),
        }
    }
    if let Some(q) = quote {
        return Err(format!("a {q} is not closed"));
    }
    words.extend(word);
    Ok(words)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_are_a_service_and_its_argv() {
        let steps = parse("web: bundle exec rails db:migrate; web: sh -c 'echo \"a b\"'").unwrap();
        assert_eq!(steps.len(), 2);
        assert_eq!(
            steps[0],
            ReleaseStep {
                service: "web".into(),
                argv: vec!["bundle".into(), "exec".into(), "rails".into(), "db:migrate".into()]
            }
        );
        assert_eq!(steps[1].argv, vec!["sh", "-c", "echo \"a b\""]);
        assert_eq!(parse("").unwrap(), Vec::new());
    }

    #[test]
    fn a_step_that_cannot_run_names_itself_and_the_form() {
        for (bad, says) in [
            ("rails db:migrate", "names no service"),
            ("web:", "has no command"),
            ("we/b: x", "is not a service name"),
            ("web: sh -c 'x", "is not closed"),
        ] {
            let err = parse(bad).unwrap_err();
            assert!(err.contains(says) && err.contains(&format!("`{bad}`")), "{bad}: {err}");
        }
    }
}
