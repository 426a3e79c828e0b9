//! Where each value comes from: flags > `UPGRADERD_*` environment > the file
//! (its `UPGRADERD_*` name, then the older name) > the older name in the
//! environment > the default. [`Layers`] holds every key's raw text and its
//! [`Source`], before typing, and the older names in the environment it set aside.
//!
//! The older names (`CONTAINER_NAME`, `DATA_DIR`, ...) are common words a
//! shell may export for something else entirely; read from the environment
//! they would retarget upgraderd at another container or directory. So the
//! environment's older name counts only where the key is set nowhere else: an
//! existing watchdog setup moves its names into the file, or keeps them in
//! the environment of a unit that sets no `UPGRADERD_*` key.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::PathBuf;

use super::envfile::EnvFile;
use super::keys::{KeySpec, KEYS};

/// Where a configuration value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Source {
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
pub(crate) struct Value {
    pub text: String,
    pub source: Source,
}

/// A snapshot of the environment, so tests can resolve configuration without touching the process's.
#[derive(Debug, Clone, Default)]
pub(crate) struct Env(pub HashMap<String, String>);

impl Env {
    pub(crate) fn from_process() -> Self {
        Env(std::env::vars_os().filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?))).collect())
    }

    pub(crate) fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(String::as_str)
    }

    #[cfg(test)]
    pub(crate) fn from_pairs<K: Into<String>>(pairs: impl IntoIterator<Item = (K, String)>) -> Self {
        Env(pairs.into_iter().map(|(k, v)| (k.into(), v)).collect())
    }
}

/// Every key's raw value and source, before typing.
#[derive(Debug)]
pub(crate) struct Layers {
    pub values: BTreeMap<&'static str, Value>,
    /// Older names in the environment that a value from elsewhere outranked: (key, older name, its text).
    set_aside: Vec<(&'static str, &'static str, String)>,
}

impl Layers {
    /// Resolves every key through flags, environment, file and defaults.
    pub(crate) fn resolve(flags: &[(&'static str, String)], env: &Env, file: Option<EnvFile>) -> Layers {
        let mut values = BTreeMap::new();
        let mut set_aside = Vec::new();
        for spec in KEYS {
            let value = resolve_one(spec, flags, env, file.as_ref());
            if let (Some(older), Some(value)) = (spec.fallback, &value) {
                if let Some(text) = env.get(older).filter(|_| value.source != Source::Env(older.to_string())) {
                    set_aside.push((spec.name, older, text.to_string()));
                }
            }
            if let Some(value) = value {
                values.insert(spec.name, value);
            }
        }
        Layers { values, set_aside }
    }

    pub(crate) fn get(&self, name: &str) -> Option<&Value> {
        self.values.get(name)
    }

    /// One line for each older name in the environment that was ignored for a
    /// different value set elsewhere, for the operator to see which won.
    pub(crate) fn set_aside(&self) -> Vec<String> {
        self.set_aside
            .iter()
            .filter_map(|(key, older, text)| {
                let value = self.values.get(key)?;
                (value.text != *text).then(|| {
                    format!(
                        "{older}={text} from the environment is ignored: {key}={} (from {}) is set; \
                         unset {older} or move it into the configuration file",
                        value.text, value.source
                    )
                })
            })
            .collect()
    }
}

fn resolve_one(spec: &KeySpec, flags: &[(&'static str, String)], env: &Env, file: Option<&EnvFile>) -> Option<Value> {
    if let Some((_, text)) = flags.iter().find(|(k, _)| *k == spec.name) {
        return Some(Value { text: text.clone(), source: Source::Flag });
    }
    let from_env =
        |name: &str| env.get(name).map(|text| Value { text: text.to_string(), source: Source::Env(name.to_string()) });
    if let Some(value) = from_env(spec.name) {
        return Some(value);
    }
    if let Some(file) = file {
        for name in std::iter::once(spec.name).chain(spec.fallback) {
            if let Some(entry) = file.entries.get(name) {
                return Some(Value {
                    text: entry.value.clone(),
                    source: Source::File { path: file.path.clone(), line: entry.line, name: name.to_string() },
                });
            }
        }
    }
    // Last among the values given: see the module's documentation.
    if let Some(value) = spec.fallback.and_then(from_env) {
        return Some(value);
    }
    spec.default.map(|d| Value { text: d.to_string(), source: Source::Default })
}
