//! What the binary says when it fails: every cause once, no OS error text
//! printed twice (it was: "...: No such file or directory (os error 2): No
//! such file or directory (os error 2)").

mod support;

use support::{require, Need, Xtcp2, DAEMON_CAPABILITIES};

/// A destination that cannot be opened is exit 1 with one line naming the
/// path and the OS error once.
#[test]
fn os_error_text_is_printed_once() {
    if !require(Need::Root, DAEMON_CAPABILITIES) {
        return;
    }
    let out = Xtcp2::new()
        .args(["--prom-listen", "", "--netns-proc-scan=false", "--netns-dirs", ""])
        .args(["--max-loops", "1", "--dest", "file:/nonexistent-xtcp2-dir/out.jsonl"])
        .output();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    let line = err
        .lines()
        .find(|l| l.starts_with("xtcp2: "))
        .unwrap_or_else(|| panic!("no error line:\n{err}"));
    assert!(line.contains("/nonexistent-xtcp2-dir"), "{line}");
    assert_eq!(line.matches("os error 2").count(), 1, "{line}");
}

/// A bad capture given to decode says so once, too.
#[test]
fn decode_errors_are_said_once() {
    let out = Xtcp2::new()
        .args(["decode", "--pcap", "/nonexistent-xtcp2-capture.pcap"])
        .output();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.matches("os error 2").count(), 1, "{err}");
}
