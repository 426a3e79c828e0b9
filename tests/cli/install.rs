//! `install.sh` into a temporary DESTDIR: what it installs, that it is
//! idempotent and never overwrites the operator's configuration, that the
//! units it installs (the single one and the per-app template) pass
//! `systemd-analyze verify` and differ only where they must, `--uninstall`,
//! and `--help`.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use crate::common;

fn install(destdir: &Path, extra: &[&str]) -> String {
    let out = Command::new(Path::new(env!("CARGO_MANIFEST_DIR")).join("install.sh"))
        .args(["--binary", common::BIN])
        .args(extra)
        .env("DESTDIR", destdir)
        .env("PREFIX", "/usr")
        .output()
        .unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "install.sh {extra:?} failed:\n{text}");
    text
}

fn mode(path: &Path) -> u32 {
    fs::metadata(path).unwrap().permissions().mode() & 0o7777
}

#[test]
fn installs_idempotently_keeps_the_config_and_uninstalls() {
    let root = tempfile::tempdir().unwrap();
    let dest = root.path();
    install(dest, &[]);
    let unit = dest.join("etc/systemd/system/upgraderd.service");
    let template = dest.join("etc/systemd/system/upgraderd@.service");
    let env_file = dest.join("etc/upgraderd/upgraderd.env");
    for path in [
        "usr/bin/upgraderd",
        "usr/share/man/man1/upgraderd.1",
        "usr/share/man/man1/upgraderd-watch.1",
        "usr/share/bash-completion/completions/upgraderd",
        "usr/share/zsh/site-functions/_upgraderd",
        "usr/share/fish/vendor_completions.d/upgraderd.fish",
    ] {
        assert!(dest.join(path).is_file(), "{path} missing");
    }
    assert_eq!(mode(&dest.join("usr/bin/upgraderd")), 0o755);
    assert_eq!(mode(&env_file), 0o600);
    assert_eq!(mode(&dest.join("var/lib/upgraderd")), 0o700);
    let unit_text = fs::read_to_string(&unit).unwrap();
    assert!(unit_text.contains("ExecStart=/usr/bin/upgraderd watch"), "PREFIX applied:\n{unit_text}");
    assert!(unit_text.contains("Type=notify"));
    let template_text = fs::read_to_string(&template).unwrap();
    assert!(template_text.contains("ExecStart=/usr/bin/upgraderd --app %i watch"), "PREFIX applied:\n{template_text}");
    assert_eq!(mode(&template), 0o644);

    fs::write(&env_file, "UPGRADERD_CONTAINER=mine\n").unwrap();
    let again = install(dest, &[]);
    assert!(again.contains("kept existing"), "{again}");
    assert_eq!(fs::read_to_string(&env_file).unwrap(), "UPGRADERD_CONTAINER=mine\n");

    verify_unit(dest, "upgraderd.service", &unit_text);
    verify_unit(dest, "upgraderd@.service", &template_text);

    install(dest, &["--uninstall"]);
    assert!(!dest.join("usr/bin/upgraderd").exists());
    assert!(!unit.exists());
    assert!(!template.exists());
    assert!(!dest.join("usr/share/man/man1/upgraderd.1").exists());
    assert_eq!(fs::read_to_string(&env_file).unwrap(), "UPGRADERD_CONTAINER=mine\n", "config kept");
    assert!(dest.join("var/lib/upgraderd").is_dir(), "state kept");
}

/// `systemd-analyze verify` on an installed unit, its ExecStart pointed at the
/// staged binary (a template is verified as an instance of itself).
fn verify_unit(dest: &Path, name: &str, unit_text: &str) {
    if Command::new("systemd-analyze").arg("--version").output().is_err() {
        assert!(
            std::env::var("UPGRADERD_E2E_REQUIRED").as_deref() != Ok("1"),
            "systemd-analyze is missing; install Debian's systemd package"
        );
        eprintln!("SKIP: systemd-analyze not installed; the unit was not verified");
        return;
    }
    let staged = dest.join(name);
    let binary = dest.join("usr/bin/upgraderd");
    fs::write(&staged, unit_text.replace("/usr/bin/upgraderd", &binary.display().to_string())).unwrap();
    let out = Command::new("systemd-analyze").args(["verify", "--man=no"]).arg(&staged).output().unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success() && text.trim().is_empty(), "systemd-analyze verify:\n{text}");
}

/// The per-app template is the single unit run with `--app %i`: every other
/// setting (restart, stop, watchdog, hardening) must stay the same in both.
#[test]
fn the_template_unit_differs_from_the_single_unit_only_in_what_selects_the_app() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let settings = |file: &str| -> Vec<String> {
        fs::read_to_string(root.join(file))
            .unwrap()
            .lines()
            .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
            .filter(|l| {
                !l.starts_with("Description=") && !l.starts_with("ExecStart=") && !l.starts_with("EnvironmentFile=")
            })
            .map(str::to_string)
            .collect()
    };
    assert_eq!(settings("upgraderd@.service"), settings("upgraderd.service"));
    let template = fs::read_to_string(root.join("upgraderd@.service")).unwrap();
    assert!(template.contains("\nExecStart=/usr/local/bin/upgraderd --app %i watch\n"));
    assert!(!template.contains("\nEnvironmentFile="), "upgraderd reads the app's file itself");
}

#[test]
fn help_prints_the_usage_not_the_script() {
    for flag in ["--help", "-h"] {
        let out = Command::new(Path::new(env!("CARGO_MANIFEST_DIR")).join("install.sh")).arg(flag).output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{flag}: {}", String::from_utf8_lossy(&out.stderr));
        assert!(text.starts_with("Usage: ./install.sh [--binary PATH] [--uninstall] [--help]\n"), "{text}");
        for needle in ["--binary PATH", "--uninstall", "DESTDIR", "PREFIX", "upgraderd@.service", "Examples:"] {
            assert!(text.contains(needle), "{flag} lacks {needle}:\n{text}");
        }
        assert!(!text.contains("set -euo") && !text.contains("#"), "{flag} prints script lines:\n{text}");
    }
    let out = Command::new(Path::new(env!("CARGO_MANIFEST_DIR")).join("install.sh")).arg("--bogus").output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown argument --bogus (see --help)"));
}
