//! `install.sh` into a temporary DESTDIR: what it installs, that it is
//! idempotent and never overwrites the operator's configuration, that the
//! unit it installs passes `systemd-analyze verify`, and `--uninstall`.

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

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

    fs::write(&env_file, "UPGRADERD_CONTAINER=mine\n").unwrap();
    let again = install(dest, &[]);
    assert!(again.contains("kept existing"), "{again}");
    assert_eq!(fs::read_to_string(&env_file).unwrap(), "UPGRADERD_CONTAINER=mine\n");

    verify_unit(dest, &unit_text);

    install(dest, &["--uninstall"]);
    assert!(!dest.join("usr/bin/upgraderd").exists());
    assert!(!unit.exists());
    assert!(!dest.join("usr/share/man/man1/upgraderd.1").exists());
    assert_eq!(fs::read_to_string(&env_file).unwrap(), "UPGRADERD_CONTAINER=mine\n", "config kept");
    assert!(dest.join("var/lib/upgraderd").is_dir(), "state kept");
}

/// `systemd-analyze verify` on the installed unit, its ExecStart pointed at the staged binary.
fn verify_unit(dest: &Path, unit_text: &str) {
    if Command::new("systemd-analyze").arg("--version").output().is_err() {
        assert!(
            std::env::var("UPGRADERD_E2E_REQUIRED").as_deref() != Ok("1"),
            "systemd-analyze is missing; install Debian's systemd package"
        );
        eprintln!("SKIP: systemd-analyze not installed; the unit was not verified");
        return;
    }
    let staged = dest.join("upgraderd.service");
    let binary = dest.join("usr/bin/upgraderd");
    fs::write(&staged, unit_text.replace("/usr/bin/upgraderd", &binary.display().to_string())).unwrap();
    let out = Command::new("systemd-analyze").args(["verify", "--man=no"]).arg(&staged).output().unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success() && text.trim().is_empty(), "systemd-analyze verify:\n{text}");
}
