//! `file:PATH` as root opens only what an attacker cannot redirect: never
//! through a symlink (dangling or not), never a FIFO or device, never in a
//! directory another user can write to unless it is sticky and ours; new
//! files are 0640. Each refusal names the reason. (Before: symlinks were
//! followed and files were created through dangling links.)

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use xtcp2::format::StreamFormat;
use xtcp2::sink::{Sink, SinkError};

fn open(path: &Path) -> Result<Sink, SinkError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let format = StreamFormat::new("jsonl", &[]).unwrap();
    runtime.block_on(Sink::open(&format!("file:{}", path.display()), &format))
}

fn refusal(path: &Path) -> String {
    match open(path) {
        Ok(_) => panic!("{} was opened", path.display()),
        Err(e) => {
            assert!(matches!(e, SinkError::UnsafePath { .. }), "{e:?}");
            e.to_string()
        }
    }
}

/// A symlink at the path is refused, whether it points at a file (which is
/// left untouched) or nowhere (nothing is created there).
#[test]
fn symlinks_are_never_followed() {
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("precious");
    std::fs::write(&target, b"keep me").unwrap();
    let link = dir.path().join("out.jsonl");
    std::os::unix::fs::symlink(&target, &link).unwrap();
    assert!(refusal(&link).contains("symbolic link"));
    assert_eq!(std::fs::read(&target).unwrap(), b"keep me");

    let dangling = dir.path().join("dangling.jsonl");
    let nowhere = dir.path().join("created-through-the-link");
    std::os::unix::fs::symlink(&nowhere, &dangling).unwrap();
    assert!(refusal(&dangling).contains("symbolic link"));
    assert!(!nowhere.exists(), "a file was created through a dangling link");
}

/// A FIFO (which would hang the open) or a directory at the path is refused.
#[test]
fn only_regular_files_are_opened() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("fifo");
    let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    // SAFETY: mkfifo with a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    assert!(refusal(&fifo).contains("not a regular file"));
    let sub = dir.path().join("sub");
    std::fs::create_dir(&sub).unwrap();
    assert!(refusal(&sub).contains("not a regular file"));
    // Devices are refused, except the null device (dry runs, benchmarks).
    assert!(refusal(std::path::Path::new("/dev/zero")).contains("not a regular file"));
}

/// `file:/dev/null` opens and takes writes.
#[test]
fn the_null_device_is_allowed() {
    let format = StreamFormat::new("jsonl", &[]).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut sink = Sink::open("file:/dev/null", &format)
            .await
            .expect("file:/dev/null opens");
        let envelope = xtcp2::batch::Envelope::from_records(
            &mut *format.encoder(),
            &[xtcp2::record::Record::default()],
            std::sync::Arc::from("h"),
            1,
        );
        sink.send(&envelope).await.expect("a write to /dev/null");
    });
}

/// A directory others can write to is refused unless it is sticky and
/// ours; a private directory is fine, and new files are 0640.
#[test]
fn directories_others_can_write_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let open_dir = dir.path().join("world");
    std::fs::create_dir(&open_dir).unwrap();
    std::fs::set_permissions(&open_dir, std::fs::Permissions::from_mode(0o777)).unwrap();
    let said = refusal(&open_dir.join("out.jsonl"));
    assert!(said.contains("writable by another user"), "{said}");
    assert!(!open_dir.join("out.jsonl").exists());

    std::fs::set_permissions(&open_dir, std::fs::Permissions::from_mode(0o1777)).unwrap();
    open(&open_dir.join("out.jsonl")).expect("a sticky directory of ours is fine");

    let private = dir.path().join("private");
    std::fs::create_dir(&private).unwrap();
    let path = private.join("out.jsonl");
    open(&path).expect("a private directory is fine");
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o640);
}

/// A directory owned by another user is refused even when only its owner
/// can write to it (needs root to give it away).
#[test]
fn directories_of_another_user_are_refused() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "CI runs as root: this test must run there"
        );
        println!("SKIPPED: needs root to chown a directory to another user");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let theirs = dir.path().join("theirs");
    std::fs::create_dir(&theirs).unwrap();
    std::os::unix::fs::chown(&theirs, Some(65534), Some(65534)).unwrap();
    let said = refusal(&theirs.join("out.jsonl"));
    assert!(said.contains("owner uid 65534"), "{said}");
}
