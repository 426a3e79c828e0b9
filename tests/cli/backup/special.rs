//! FIFOs, sockets and device nodes in the data: a FIFO comes back as a FIFO
//! (never opened), a socket and a device node are left out and named once in
//! the backup's warnings, and an archive holding a device node is refused.

use std::ffi::CString;
use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, SystemTime};

use upgraderd::testing::backup::{self, Destination, Form, Reason, Source};

/// Runs `f` on its own thread and fails the test if it has not returned
/// within a minute: opening a FIFO would block, and that must show as a failure.
fn within<T: Send + 'static>(what: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(Duration::from_secs(60)).unwrap_or_else(|_| panic!("{what} blocked for a minute"))
}

fn mkfifo(path: &Path, mode: u32) {
    let c = CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), mode) }, 0, "mkfifo {}", path.display());
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
}

fn is_root() -> bool {
    // SAFETY: no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// /dev/null's numbers: a character device a root test may create.
fn mknod_char(path: &Path) {
    let c = CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mknod(c.as_ptr(), libc::S_IFCHR | 0o666, libc::makedev(1, 3)) }, 0);
}

#[test]
fn a_fifo_comes_back_as_a_fifo_and_sockets_and_devices_are_left_out_and_named_once() {
    for form in [Form::Archive, Form::Snapshot] {
        fifo_socket_and_device_in(form);
    }
}

fn fifo_socket_and_device_in(form: Form) {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    fs::create_dir_all(data.join("run")).unwrap();
    fs::write(data.join("config"), "port: 3001\n").unwrap();
    let pipe = data.join("run/events.pipe");
    mkfifo(&pipe, 0o640);
    let old = SystemTime::UNIX_EPOCH + Duration::from_secs(1_600_000_000);
    // utimensat by path: the FIFO is never opened.
    let c = CString::new(pipe.as_os_str().as_encoded_bytes()).unwrap();
    let stamp =
        [libc::timespec { tv_sec: 0, tv_nsec: libc::UTIME_OMIT }, libc::timespec { tv_sec: 1_600_000_000, tv_nsec: 0 }];
    // SAFETY: a valid path and two timespecs.
    assert_eq!(unsafe { libc::utimensat(libc::AT_FDCWD, c.as_ptr(), stamp.as_ptr(), 0) }, 0);
    let pipe_before = fs::symlink_metadata(&pipe).unwrap();
    assert_eq!(pipe_before.modified().unwrap(), old);
    let _listener = UnixListener::bind(data.join("run/app.sock")).unwrap();
    let device = is_root().then(|| {
        mknod_char(&data.join("run/null"));
        data.join("run/null")
    });

    let backups = dir.path().join("backups");
    let (d, b) = (data.clone(), backups.clone());
    let created = within("backup create", move || {
        let first = backup::begin(&[Source::path(&d)], &b, form, Reason::default(), &mut |_| {}).unwrap();
        first.finish_after_final_pass(&mut |_| {}).unwrap()
    });
    let warnings = created.warnings.clone();
    let naming = |name: &str| warnings.iter().filter(|w| w.contains(name)).cloned().collect::<Vec<_>>();
    let socket = naming("app.sock");
    assert_eq!(socket.len(), 1, "the socket is named once: {warnings:#?}");
    assert!(socket[0].contains("left out: a socket"), "{}", socket[0]);
    if device.is_some() {
        let device = naming("run/null");
        assert_eq!(device.len(), 1, "the device is named once: {warnings:#?}");
        assert!(device[0].contains("left out: a character device node"), "{}", device[0]);
    }
    assert!(naming("events.pipe").is_empty(), "the FIFO is stored, not warned about: {warnings:#?}");

    let archive = created.path.clone();
    let verified = within("backup verify", move || backup::verify(&archive));
    verified.unwrap();

    // Somewhere else, then over the original (a rollback).
    let elsewhere = dir.path().join("elsewhere");
    let (a, e) = (created.path.clone(), elsewhere.clone());
    within("backup restore --to", move || backup::restore(&a, &Destination::Into(e), &mut |_| {})).unwrap();
    check_restored(&elsewhere, &pipe_before);

    fs::remove_file(&pipe).unwrap();
    fs::write(data.join("config"), "port: 9999\n").unwrap();
    let a = created.path.clone();
    within("backup restore", move || backup::restore(&a, &Destination::Original, &mut |_| {})).unwrap();
    check_restored(&data, &pipe_before);
    assert_eq!(fs::read_to_string(data.join("config")).unwrap(), "port: 3001\n");
}

fn check_restored(root: &Path, pipe_before: &fs::Metadata) {
    let pipe = fs::symlink_metadata(root.join("run/events.pipe")).unwrap();
    assert!(pipe.file_type().is_fifo(), "{}: not a FIFO", root.display());
    assert_eq!(pipe.mode() & 0o7777, 0o640);
    assert_eq!((pipe.uid(), pipe.gid()), (pipe_before.uid(), pipe_before.gid()));
    assert_eq!(pipe.mtime(), pipe_before.mtime());
    let socket: PathBuf = root.join("run/app.sock");
    assert!(fs::symlink_metadata(&socket).is_err(), "{} was restored", socket.display());
    assert!(fs::symlink_metadata(root.join("run/null")).is_err(), "a device node was created by the restore");
    assert_eq!(fs::read_to_string(root.join("config")).unwrap(), "port: 3001\n");
}
