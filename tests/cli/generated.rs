//! The man pages in `man/` and the completions in `completions/` are generated
//! from the clap definitions and the configuration key table, and checked in.
//! This test fails when they are stale; `UPGRADERD_BLESS=1 cargo test --test
//! cli generated::` rewrites them. It also checks what the pages must say, that
//! the configuration table in `docs/configuration.md` names every key, and
//! that the README's install section says what a new host needs.

use std::path::{Path, PathBuf};

use clap_complete::Shell;
use upgraderd::testing::Cli;
use upgraderd::testing::KEYS;

fn generated() -> Vec<(PathBuf, Vec<u8>)> {
    let mut out: Vec<(PathBuf, Vec<u8>)> = upgraderd::testing::pages()
        .into_iter()
        .map(|(name, text)| (PathBuf::from("man").join(name), text.into_bytes()))
        .collect();
    for (shell, file) in [(Shell::Bash, "upgraderd.bash"), (Shell::Zsh, "_upgraderd"), (Shell::Fish, "upgraderd.fish")]
    {
        let mut bytes = Vec::new();
        clap_complete::generate(shell, &mut <Cli as clap::CommandFactory>::command(), "upgraderd", &mut bytes);
        out.push((PathBuf::from(format!("completions/{file}")), bytes));
    }
    out
}

/// clap's own checks of the definitions (conflicting flags, bad defaults,
/// duplicate names), which it otherwise makes only on the paths a run takes.
#[test]
fn the_command_line_passes_clap_debug_asserts() {
    <Cli as clap::CommandFactory>::command().debug_assert();
}

#[test]
fn man_pages_and_completions_are_current() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let bless = std::env::var_os("UPGRADERD_BLESS").is_some();
    let mut stale = Vec::new();
    let generated = generated();
    for (path, bytes) in &generated {
        let full = root.join(path);
        if std::fs::read(&full).ok().as_deref() != Some(bytes.as_slice()) {
            if bless {
                std::fs::create_dir_all(full.parent().unwrap()).unwrap();
                std::fs::write(&full, bytes).unwrap();
            } else {
                stale.push(path.display().to_string());
            }
        }
    }
    // A page of a command that is gone is stale too.
    for entry in std::fs::read_dir(root.join("man")).unwrap() {
        let path = PathBuf::from("man").join(entry.unwrap().file_name());
        if !generated.iter().any(|(p, _)| *p == path) {
            if bless {
                std::fs::remove_file(root.join(&path)).unwrap();
            } else {
                stale.push(path.display().to_string());
            }
        }
    }
    assert!(
        stale.is_empty(),
        "stale generated files (run `UPGRADERD_BLESS=1 cargo test --test cli generated::`): {stale:?}"
    );
}

fn page(name: &str) -> String {
    upgraderd::testing::pages().into_iter().find(|(n, _)| n == name).unwrap_or_else(|| panic!("no page {name}")).1
}

/// A roff term as clap and the pages write it: `-` escaped.
fn roff(text: &str) -> String {
    text.replace('-', "\\-")
}

#[test]
fn the_main_page_has_exit_status_environment_files_and_examples() {
    let main = page("upgraderd.1");
    let sections: Vec<&str> = main.lines().filter_map(|l| l.strip_prefix(".SH ")).collect();
    for section in [
        "NAME",
        "SYNOPSIS",
        "OPTIONS",
        "SUBCOMMANDS",
        "\"EXIT STATUS\"",
        "ENVIRONMENT",
        "FILES",
        "EXAMPLES",
        "\"SEE ALSO\"",
    ] {
        assert!(sections.contains(&section), "upgraderd.1 lacks {section}: {sections:?}");
    }
    for code in ["0", "1", "2", "3", "10"] {
        assert!(main.contains(&format!(".TP\n\\fB{code}\\fR\n")), "EXIT STATUS lacks {code}");
    }
    // Every key, its older name and its default: from the key table, so a new key cannot be missed.
    let environment = section(&main, "ENVIRONMENT");
    for key in KEYS {
        let mut term = format!("\\fB{}\\fR", roff(key.name));
        if let Some(older) = key.fallback {
            term.push_str(&format!(" (older name \\fB{}\\fR)", roff(older)));
        }
        assert!(environment.contains(&format!(".TP\n{term}\n")), "ENVIRONMENT lacks {term}");
        if let Some(default) = key.default {
            assert!(environment.contains(&format!("Default: {}.", roff(default))), "{} default {default}", key.name);
        }
    }
    for name in ["UPGRADERD_CONFIG", "UPGRADERD_APP_CONFIG_ROOT", "UPGRADERD_APP_STATE_ROOT"] {
        assert!(environment.contains(&format!("\\fB{}\\fR", roff(name))), "ENVIRONMENT lacks {name}");
    }
    let files = section(&main, "FILES");
    for path in [
        "/etc/upgraderd/upgraderd.env",
        "/etc/upgraderd/NAME.env",
        "/var/lib/upgraderd",
        "STATE_DIR/upgraderd.db",
        "STATE_DIR/upgraderd.lock",
        "STATE_DIR/backups/",
        "TRIGGER_DIR/.upgrade\\-trigger",
        "TRIGGER_DIR/.upgrade\\-status.json",
        "upgraderd@.service",
    ] {
        assert!(files.contains(&roff(path).replace("\\\\-", "\\-")), "FILES lacks {path}");
    }
    assert!(section(&main, "EXAMPLES").contains("\\-\\-app meshmonitor history"));
    assert!(!main.contains("upgraderd\\-help"), "there is no upgraderd-help page to point to");
    assert!(
        main.contains(".TH upgraderd 1  \"upgraderd 0.1.0\" \"upgraderd manual\""),
        "{}",
        main.lines().nth(2).unwrap()
    );
}

#[test]
fn every_page_has_exit_status_examples_and_an_upgraderd_footer() {
    for (name, text) in upgraderd::testing::pages() {
        let title = text.lines().find(|l| l.starts_with(".TH ")).unwrap();
        assert!(title.contains(&format!("\"upgraderd {}\"", env!("CARGO_PKG_VERSION"))), "{name}: {title}");
        assert!(text.contains("\n.SH \"EXIT STATUS\"\n"), "{name} lacks EXIT STATUS");
        assert!(text.contains("\n.SH EXAMPLES\n"), "{name} lacks EXAMPLES");
        assert!(text.contains("\n.SH ENVIRONMENT\n"), "{name} lacks ENVIRONMENT");
        if name != "upgraderd-completions.1" {
            // completions reads and writes no file of its own.
            assert!(text.contains("\n.SH FILES\n"), "{name} lacks FILES");
        }
        assert!(!text.contains("\\-help(1)"), "{name} points to a help page that does not exist");
        if name != "upgraderd.1" {
            assert!(text.contains("\n.SH \"SEE ALSO\"\nupgraderd"), "{name} points back to its parent");
        }
    }
    assert!(!section(&page("upgraderd-check-version.1"), "\"EXIT STATUS\"").is_empty());
    assert!(section(&page("upgraderd-check-version.1"), "\"EXIT STATUS\"").contains("\\fB10\\fR"));
    assert!(!section(&page("upgraderd-history.1"), "\"EXIT STATUS\"").contains("\\fB3\\fR"), "history takes no lock");
    // A command's page points to the key table and lists the files that command uses.
    let upgrade = page("upgraderd-upgrade.1");
    assert!(section(&upgrade, "ENVIRONMENT").contains("listed under ENVIRONMENT in \\fBupgraderd\\fR(1)"));
    assert!(section(&upgrade, "FILES").contains("TRIGGER_DIR/.upgrade\\-status.json"));
    assert!(section(&page("upgraderd-backup-create.1"), "FILES").contains("STATE_DIR/backups/"));
    assert!(!section(&page("upgraderd-history.1"), "FILES").contains("TRIGGER_DIR"));
}

/// The text of one `.SH` section.
fn section<'a>(page: &'a str, name: &str) -> &'a str {
    let start = page.find(&format!("\n.SH {name}\n")).unwrap_or_else(|| panic!("no section {name}")) + 1;
    let rest = &page[start..];
    let end = rest[1..].find("\n.SH ").map_or(rest.len(), |i| i + 2);
    &rest[..end]
}

#[test]
fn the_configuration_table_names_every_key() {
    let doc = "docs/configuration.md";
    let text = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(doc)).unwrap();
    let table: Vec<&str> = text.lines().filter(|l| l.starts_with("| `UPGRADERD_")).collect();
    assert!(!table.is_empty(), "{doc} has no configuration table");
    for key in KEYS {
        let named = table.iter().any(|row| {
            let first = row.split(" | ").next().unwrap_or("");
            first.contains(&format!("`{}`", key.name))
        });
        assert!(named, "the configuration table in {doc} has no row for {}", key.name);
        if let Some(older) = key.fallback {
            assert!(
                table.iter().any(|row| row.contains(&format!("`{}` (`{older}`)", key.name))),
                "{doc}: {} without its older name {older}",
                key.name
            );
        }
    }
}

#[test]
fn the_readme_says_what_a_new_host_needs() {
    let readme = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    let start = readme.find("\n## Install and test\n").expect("the README has no section `## Install and test`") + 1;
    // The section ends at the next second-level heading.
    let end = readme[start + 1..].find("\n## ").map_or(readme.len(), |i| start + 1 + i);
    let install = &readme[start..end];
    for needed in ["Docker engine", "Docker\nCompose (the v2 plugin, `docker compose`, or v1's `docker-compose`"] {
        assert!(install.contains(needed), "the README's install section lacks {needed:?}");
    }
    // The two commands a fresh machine needs, each at the start of a line of
    // the section: the one that builds and installs, and CI's test command.
    let ci = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(".ci/run")).unwrap();
    assert!(ci.contains("exec ./test.sh"), ".ci/run no longer runs ./test.sh: update the README's install section");
    for command in ["./install.sh", "./test.sh"] {
        assert!(
            install.lines().any(|l| l.split_whitespace().next() == Some(command)),
            "the README's install section has no line running {command}"
        );
    }
}

#[test]
fn no_python_bytecode_is_tracked() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let Ok(out) = std::process::Command::new("git").arg("-C").arg(root).arg("ls-files").output() else {
        eprintln!("SKIP: git is not installed");
        return;
    };
    if !out.status.success() {
        eprintln!("SKIP: not a git checkout");
        return;
    }
    let tracked = String::from_utf8_lossy(&out.stdout);
    let bytecode: Vec<&str> = tracked.lines().filter(|p| p.contains("__pycache__/") || p.ends_with(".pyc")).collect();
    assert!(bytecode.is_empty(), "tracked Python bytecode (bench/run.py leaves it): {bytecode:?}");
}
