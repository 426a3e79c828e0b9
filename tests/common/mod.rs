//! Test harness: runs the real `upgraderd` binary in a temp dir with a clean
//! environment, optional fake executables on PATH, and its own state dir.
//! [`Test`] (`sb.test()`, `Test::new()`) declares how a run must end before it
//! runs; [`Run`]'s checks are for runs made otherwise (the e2e tests').
#![allow(dead_code)]

pub mod fake_engine;
pub mod fake_git;
pub mod http;
pub mod meshmonitor_backend;
pub mod test;
pub mod wait;
pub mod watcher;

#[allow(unused_imports)] // The e2e binary declares no Test.
pub use test::Test;
#[allow(unused_imports)] // Not every test binary waits.
pub use wait::wait;

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

pub const BIN: &str = env!("CARGO_BIN_EXE_upgraderd");

/// One test's sandbox: a temp dir holding `state/`, `bin/` for fakes, and whatever the test adds.
pub struct Sandbox {
    pub dir: tempfile::TempDir,
    env: BTreeMap<String, String>,
}

/// What a run of the binary left behind.
#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    /// What a finished command left behind.
    pub fn from_output(out: std::process::Output) -> Run {
        Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| panic!("stdout is not JSON ({e}):\n{}", self.stdout))
    }

    #[track_caller]
    pub fn success(self) -> Run {
        assert_eq!(self.code, 0, "expected success\nstdout:\n{}\nstderr:\n{}", self.stdout, self.stderr);
        self
    }

    #[track_caller]
    pub fn code(self, code: i32) -> Run {
        assert_eq!(self.code, code, "expected exit {code}\nstdout:\n{}\nstderr:\n{}", self.stdout, self.stderr);
        self
    }

    #[track_caller]
    pub fn stderr_has(self, needle: &str) -> Run {
        assert!(self.stderr.contains(needle), "stderr lacks {needle:?}:\n{}", self.stderr);
        self
    }

    #[track_caller]
    pub fn stdout_has(self, needle: &str) -> Run {
        assert!(self.stdout.contains(needle), "stdout lacks {needle:?}:\n{}", self.stdout);
        self
    }
}

impl Sandbox {
    pub fn new() -> Sandbox {
        let dir = tempfile::Builder::new().prefix("upgraderd-test-").tempdir().unwrap();
        fs::create_dir_all(dir.path().join("bin")).unwrap();
        let mut env = BTreeMap::new();
        let path = format!("{}:{}", dir.path().join("bin").display(), std::env::var("PATH").unwrap_or_default());
        env.insert("PATH".into(), path);
        env.insert("HOME".into(), dir.path().display().to_string());
        env.insert("UPGRADERD_STATE_DIR".into(), dir.path().join("state").display().to_string());
        // No default /etc file: tests say what they configure.
        env.insert("UPGRADERD_CONFIG".into(), dir.path().join("upgraderd.env").display().to_string());
        fs::write(dir.path().join("upgraderd.env"), "").unwrap();
        Sandbox { dir, env }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn state(&self) -> PathBuf {
        self.path().join("state")
    }

    pub fn backups(&self) -> PathBuf {
        self.state().join("backups")
    }

    /// The whole environment the binary runs with (`run` clears the rest).
    pub fn vars(&self) -> &BTreeMap<String, String> {
        &self.env
    }

    /// A run in this sandbox whose outcome is declared before it runs (see [`Test`]).
    pub fn test(&self) -> Test<'_> {
        Test::in_sandbox(self)
    }

    pub fn env(&mut self, key: &str, value: impl AsRef<str>) -> &mut Self {
        self.env.insert(key.into(), value.as_ref().into());
        self
    }

    pub fn unset(&mut self, key: &str) -> &mut Self {
        self.env.remove(key);
        self
    }

    /// Writes the config file the sandbox points UPGRADERD_CONFIG at.
    pub fn config_file(&self, text: &str) -> PathBuf {
        let path = self.path().join("upgraderd.env");
        fs::write(&path, text).unwrap();
        path
    }

    /// Installs an executable script on the sandbox's PATH.
    pub fn fake(&self, name: &str, script: &str) -> PathBuf {
        let path = self.path().join("bin").join(name);
        fs::write(&path, script).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
        path
    }

    /// Runs upgraderd with these arguments and a clean environment.
    pub fn run(&self, args: &[&str]) -> Run {
        Run::from_output(self.command(args).output().expect("upgraderd runs"))
    }

    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(BIN);
        cmd.args(args).env_clear().envs(&self.env).current_dir(self.path()).stdin(Stdio::null());
        cmd
    }
}

/// Whether this process may mount filesystems (root in a privileged enough sandbox).
pub fn can_mount() -> bool {
    let probe = tempfile::tempdir().unwrap();
    let ok = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=64k", "tmpfs"])
        .arg(probe.path())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if ok {
        let _ = Command::new("umount").arg(probe.path()).status();
    }
    ok
}

/// A mount that is undone when dropped.
pub struct Mounted(pub PathBuf);

impl Mounted {
    pub fn tmpfs(path: &Path, size: &str) -> Mounted {
        fs::create_dir_all(path).unwrap();
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(path)
            .status()
            .unwrap();
        assert!(status.success(), "mount tmpfs on {}", path.display());
        Mounted(path.to_path_buf())
    }

    pub fn read_only_bind(source: &Path, target: &Path) -> Mounted {
        fs::create_dir_all(target).unwrap();
        let status = Command::new("mount").args(["--bind", "-o", "ro"]).arg(source).arg(target).status().unwrap();
        assert!(status.success(), "bind mount {}", target.display());
        Mounted(target.to_path_buf())
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

/// Every file below `root` with its content, for before/after comparisons.
pub fn tree(root: &Path) -> BTreeMap<String, String> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, String>) {
        let mut entries: Vec<_> = fs::read_dir(dir).unwrap().map(|e| e.unwrap()).collect();
        entries.sort_by_key(|e| e.file_name());
        for entry in entries {
            let path = entry.path();
            let rel = path.strip_prefix(root).unwrap().display().to_string();
            let meta = fs::symlink_metadata(&path).unwrap();
            if meta.file_type().is_symlink() {
                out.insert(rel, format!("-> {}", fs::read_link(&path).unwrap().display()));
            } else if meta.is_dir() {
                out.insert(format!("{rel}/"), format!("{:o}", meta.permissions().mode() & 0o7777));
                walk(root, &path, out);
            } else {
                let bytes = fs::read(&path).unwrap();
                out.insert(
                    rel,
                    format!("{:o} {}", meta.permissions().mode() & 0o7777, String::from_utf8_lossy(&bytes)),
                );
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(root, root, &mut out);
    out
}

/// `len` bytes no compressor can shrink (a fixed xorshift sequence): data that fills a disk as it is.
pub fn incompressible(len: usize) -> Vec<u8> {
    let mut x: u64 = 0x9e3779b97f4a7c15;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}
