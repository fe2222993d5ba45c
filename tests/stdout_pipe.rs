//! `xtcp2 | head`: when the reader of stdout exits, the daemon stops
//! cleanly instead of retrying a broken pipe forever.

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Regression: a closed stdout pipe used to be retried with backoff until
/// SIGTERM. Now the daemon exits 0 promptly and says why.
#[test]
fn closed_stdout_pipe_stops_the_daemon() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("SKIP closed_stdout_pipe_stops_the_daemon: the daemon needs root's capabilities");
        return;
    }
    // Keep a socket around so every poll has at least one record to write.
    let _listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_xtcp2"))
        .args([
            "--frequency",
            "200ms",
            "--timeout",
            "150ms",
            "--prom-listen",
            "",
            "--netns-proc-scan=false",
            "--netns-dirs",
            "",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn xtcp2");
    // Read one byte, then close the pipe as `head -c 1` would.
    let mut stdout = child.stdout.take().unwrap();
    let mut first = [0u8; 1];
    stdout.read_exact(&mut first).expect("the daemon wrote something");
    drop(stdout);
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > Duration::from_secs(15) {
            let _ = child.kill();
            panic!("daemon kept running after its stdout reader left");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut stderr = String::new();
    child.stderr.take().unwrap().read_to_string(&mut stderr).unwrap();
    assert!(status.success(), "exit {status:?}: {stderr}");
    assert!(stderr.contains("the reader of the output closed it"), "{stderr}");
}
