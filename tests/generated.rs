//! The man pages in `man/` and the completions in `completions/` are generated
//! from the clap definitions and checked in. This test fails when they are
//! stale; `UPGRADERD_BLESS=1 cargo test --test generated` rewrites them.

use std::path::{Path, PathBuf};

use clap::CommandFactory;
use clap_complete::Shell;
use upgraderd::cli::Cli;

fn man_pages(cmd: &clap::Command, prefix: &str, out: &mut Vec<(PathBuf, Vec<u8>)>) {
    let name = if prefix.is_empty() { cmd.get_name().to_string() } else { format!("{prefix}-{}", cmd.get_name()) };
    let page_cmd = cmd.clone().display_name(name.clone());
    let mut bytes = Vec::new();
    clap_mangen::Man::new(page_cmd).render(&mut bytes).unwrap();
    out.push((PathBuf::from(format!("man/{name}.1")), bytes));
    for sub in cmd.get_subcommands().filter(|s| s.get_name() != "help") {
        man_pages(sub, &name, out);
    }
}

fn generated() -> Vec<(PathBuf, Vec<u8>)> {
    let mut cmd = Cli::command();
    cmd.build();
    let mut out = Vec::new();
    man_pages(&cmd, "", &mut out);
    for (shell, file) in [(Shell::Bash, "upgraderd.bash"), (Shell::Zsh, "_upgraderd"), (Shell::Fish, "upgraderd.fish")]
    {
        let mut bytes = Vec::new();
        clap_complete::generate(shell, &mut Cli::command(), "upgraderd", &mut bytes);
        out.push((PathBuf::from(format!("completions/{file}")), bytes));
    }
    out
}

#[test]
fn man_pages_and_completions_are_current() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let bless = std::env::var_os("UPGRADERD_BLESS").is_some();
    let mut stale = Vec::new();
    for (path, bytes) in generated() {
        let full = root.join(&path);
        if std::fs::read(&full).ok().as_deref() != Some(bytes.as_slice()) {
            if bless {
                std::fs::create_dir_all(full.parent().unwrap()).unwrap();
                std::fs::write(&full, &bytes).unwrap();
            } else {
                stale.push(path.display().to_string());
            }
        }
    }
    assert!(stale.is_empty(), "stale generated files (run `UPGRADERD_BLESS=1 cargo test --test generated`): {stale:?}");
}
