//! Where each value comes from: flags > `UPGRADERD_*` environment > the
//! older name in the environment > the file (same order of names) > the
//! default. [`Layers`] holds every key's raw text and its [`Source`], before typing.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::PathBuf;

use super::envfile::EnvFile;
use super::keys::{KeySpec, KEYS};

/// Where a configuration value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    Flag,
    Env(String),
    File {
        path: PathBuf,
        line: usize,
        name: String,
    },
    /// The state directory `--app NAME` chose.
    App(String),
    Default,
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Flag => f.write_str("flag"),
            Source::Env(name) => write!(f, "env {name}"),
            Source::File { path, line, name } => write!(f, "{}:{line} ({name})", path.display()),
            Source::App(name) => write!(f, "--app {name}"),
            Source::Default => f.write_str("default"),
        }
    }
}

/// A resolved raw value with its source.
#[derive(Debug, Clone)]
pub struct Value {
    pub text: String,
    pub source: Source,
}

/// A snapshot of the environment, so tests can resolve configuration without touching the process's.
#[derive(Debug, Clone, Default)]
pub struct Env(pub HashMap<String, String>);

impl Env {
    pub fn from_process() -> Self {
        Env(std::env::vars_os().filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?))).collect())
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(String::as_str)
    }

    pub fn from_pairs<K: Into<String>>(pairs: impl IntoIterator<Item = (K, String)>) -> Self {
        Env(pairs.into_iter().map(|(k, v)| (k.into(), v)).collect())
    }
}

/// Every key's raw value and source, before typing.
#[derive(Debug)]
pub struct Layers {
    pub values: BTreeMap<&'static str, Value>,
    pub file: Option<EnvFile>,
}

impl Layers {
    /// Resolves every key through flags, environment, file and defaults.
    pub fn resolve(flags: &[(&'static str, String)], env: &Env, file: Option<EnvFile>) -> Layers {
        let mut values = BTreeMap::new();
        for spec in KEYS {
            if let Some(value) = resolve_one(spec, flags, env, file.as_ref()) {
                values.insert(spec.name, value);
            }
        }
        Layers { values, file }
    }

    pub fn get(&self, name: &str) -> Option<&Value> {
        self.values.get(name)
    }
}

fn resolve_one(spec: &KeySpec, flags: &[(&'static str, String)], env: &Env, file: Option<&EnvFile>) -> Option<Value> {
    if let Some((_, text)) = flags.iter().find(|(k, _)| *k == spec.name) {
        return Some(Value { text: text.clone(), source: Source::Flag });
    }
    let names = std::iter::once(spec.name).chain(spec.fallback);
    for name in names.clone() {
        if let Some(text) = env.get(name) {
            return Some(Value { text: text.to_string(), source: Source::Env(name.to_string()) });
        }
    }
    if let Some(file) = file {
        for name in names {
            if let Some(entry) = file.entries.get(name) {
                return Some(Value {
                    text: entry.value.clone(),
                    source: Source::File { path: file.path.clone(), line: entry.line, name: name.to_string() },
                });
            }
        }
    }
    spec.default.map(|d| Value { text: d.to_string(), source: Source::Default })
}
