//! A run of the binary whose outcome is declared before it runs, in the
//! manner of `just`'s `tests/test.rs`:
//!
//! ```ignore
//! Test::new().args(["config"]).env("UPGRADERD_DOCKER", "").status(2).stderr_contains("is empty").run();
//! sb.test().args(["--json", "status"]).stdout_contains("\"status\"").run();
//! ```
//!
//! The exit code expected is 0 unless `status` says otherwise. Every
//! expectation is checked, and when any fails the panic shows all that
//! failed, the command line, the working directory, the environment the
//! binary ran with (it starts from an empty one), stdin, and both streams.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::Write as _;
use std::path::PathBuf;
use std::process::Stdio;

use super::{Run, Sandbox, BIN};

/// The sandbox a test runs in: its own, or one the caller keeps using afterwards.
enum Place<'a> {
    Own(Box<Sandbox>),
    Shared(&'a Sandbox),
}

/// What a stream must hold.
enum Expect {
    Exactly(String),
    Contains(String),
    Lacks(String),
}

/// One run of `upgraderd` and what it must end with; see the module docs.
#[must_use = "a Test does nothing until .run()"]
pub struct Test<'a> {
    place: Place<'a>,
    args: Vec<String>,
    env: BTreeMap<String, Option<String>>,
    stdin: Option<Vec<u8>>,
    current_dir: Option<PathBuf>,
    status: i32,
    stdout: Vec<Expect>,
    stderr: Vec<Expect>,
}

impl Test<'static> {
    /// A run in a fresh sandbox of its own.
    pub fn new() -> Test<'static> {
        Test::with(Place::Own(Box::new(Sandbox::new())))
    }
}

impl<'a> Test<'a> {
    fn with(place: Place<'a>) -> Test<'a> {
        Test {
            place,
            args: Vec::new(),
            env: BTreeMap::new(),
            stdin: None,
            current_dir: None,
            status: 0,
            stdout: Vec::new(),
            stderr: Vec::new(),
        }
    }

    /// A run in `sandbox`, with its environment.
    pub fn in_sandbox(sandbox: &'a Sandbox) -> Test<'a> {
        Test::with(Place::Shared(sandbox))
    }

    pub fn arg(mut self, arg: impl Into<String>) -> Self {
        self.args.push(arg.into());
        self
    }

    pub fn args<I: IntoIterator<Item = S>, S: Into<String>>(mut self, args: I) -> Self {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    /// Sets a variable for this run only, over the sandbox's.
    pub fn env(mut self, key: &str, value: impl AsRef<str>) -> Self {
        self.env.insert(key.into(), Some(value.as_ref().into()));
        self
    }

    /// Removes a variable of the sandbox's for this run only.
    pub fn unset(mut self, key: &str) -> Self {
        self.env.insert(key.into(), None);
        self
    }

    pub fn stdin(mut self, bytes: impl AsRef<[u8]>) -> Self {
        self.stdin = Some(bytes.as_ref().to_vec());
        self
    }

    /// Runs in `dir` instead of the sandbox's root.
    pub fn current_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.current_dir = Some(dir.into());
        self
    }

    /// The exit code expected (0 when not said).
    pub fn status(mut self, code: i32) -> Self {
        self.status = code;
        self
    }

    /// Stdout must be exactly `text`.
    pub fn stdout(mut self, text: impl AsRef<str>) -> Self {
        self.stdout.push(Expect::Exactly(text.as_ref().into()));
        self
    }

    /// Stderr must be exactly `text`.
    pub fn stderr(mut self, text: impl AsRef<str>) -> Self {
        self.stderr.push(Expect::Exactly(text.as_ref().into()));
        self
    }

    pub fn stdout_contains(mut self, needle: impl AsRef<str>) -> Self {
        self.stdout.push(Expect::Contains(needle.as_ref().into()));
        self
    }

    pub fn stderr_contains(mut self, needle: impl AsRef<str>) -> Self {
        self.stderr.push(Expect::Contains(needle.as_ref().into()));
        self
    }

    pub fn stdout_lacks(mut self, needle: impl AsRef<str>) -> Self {
        self.stdout.push(Expect::Lacks(needle.as_ref().into()));
        self
    }

    pub fn stderr_lacks(mut self, needle: impl AsRef<str>) -> Self {
        self.stderr.push(Expect::Lacks(needle.as_ref().into()));
        self
    }

    /// Runs the binary, checks every expectation, and returns what it left
    /// behind for the test to look at further.
    #[track_caller]
    pub fn run(self) -> Run {
        let sandbox = match &self.place {
            Place::Own(sb) => sb,
            Place::Shared(sb) => *sb,
        };
        let mut env = sandbox.vars().clone();
        for (key, value) in &self.env {
            match value {
                Some(value) => env.insert(key.clone(), value.clone()),
                None => env.remove(key),
            };
        }
        let cwd = self.current_dir.clone().unwrap_or_else(|| sandbox.path().to_path_buf());
        let mut cmd = std::process::Command::new(BIN);
        cmd.args(&self.args)
            .env_clear()
            .envs(&env)
            .current_dir(&cwd)
            .stdin(if self.stdin.is_some() { Stdio::piped() } else { Stdio::null() })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().unwrap_or_else(|e| panic!("cannot run {BIN} {:?}: {e}", self.args));
        if let Some(bytes) = &self.stdin {
            let mut pipe = child.stdin.take().unwrap();
            let bytes = bytes.clone();
            // A writer of its own: the binary may not read it all before it writes much.
            std::thread::spawn(move || {
                let _ = pipe.write_all(&bytes);
            });
        }
        let run = Run::from_output(child.wait_with_output().expect("upgraderd runs"));

        let mut failures = Vec::new();
        if run.code != self.status {
            failures.push(format!("exit code {}, expected {}", run.code, self.status));
        }
        for (name, expects, actual) in [("stdout", &self.stdout, &run.stdout), ("stderr", &self.stderr, &run.stderr)] {
            for expect in expects {
                match expect {
                    Expect::Exactly(text) if actual != text => {
                        failures.push(format!("{name} is not exactly:\n{}", indent(text)))
                    }
                    Expect::Contains(needle) if !actual.contains(needle.as_str()) => {
                        failures.push(format!("{name} lacks {needle:?}"))
                    }
                    Expect::Lacks(needle) if actual.contains(needle.as_str()) => {
                        failures.push(format!("{name} holds {needle:?}"))
                    }
                    _ => {}
                }
            }
        }
        if !failures.is_empty() {
            panic!("{}", self.report(&failures, &cwd, &env, &run));
        }
        run
    }

    fn report(&self, failures: &[String], cwd: &std::path::Path, env: &BTreeMap<String, String>, run: &Run) -> String {
        let mut out = String::from("the run did not end as declared:\n");
        for failure in failures {
            let _ = writeln!(out, "- {failure}");
        }
        let _ = writeln!(out, "argv: {BIN} {}", shell_words(&self.args));
        let _ = writeln!(out, "cwd: {}", cwd.display());
        let _ = writeln!(out, "env (nothing else is set):");
        for (key, value) in env {
            let _ = writeln!(out, "  {key}={value}");
        }
        if let Some(bytes) = &self.stdin {
            let _ = writeln!(out, "stdin:\n{}", indent(&String::from_utf8_lossy(bytes)));
        }
        let _ = writeln!(out, "stdout:\n{}", indent(&run.stdout));
        let _ = write!(out, "stderr:\n{}", indent(&run.stderr));
        out
    }
}

/// `args` as a shell would need them written.
fn shell_words(args: &[String]) -> String {
    let plain = |a: &str| !a.is_empty() && a.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_./=:,@%+".contains(&b));
    args.iter()
        .map(|a| if plain(a) { a.clone() } else { format!("'{}'", a.replace('\'', r"'\''")) })
        .collect::<Vec<_>>()
        .join(" ")
}

fn indent(text: &str) -> String {
    if text.is_empty() {
        return "  (empty)".into();
    }
    text.lines().map(|l| format!("  | {l}")).collect::<Vec<_>>().join("\n")
}
