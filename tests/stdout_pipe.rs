//! `xtcp2 | head`: when the reader of stdout exits, the daemon stops
//! cleanly instead of retrying a broken pipe forever.

mod support;

use std::io::Read;
use std::process::Stdio;
use std::time::{Duration, Instant};

use support::{require, Need, Xtcp2, DAEMON_CAPABILITIES};

/// Regression: a closed stdout pipe used to be retried with backoff until
/// SIGTERM. Now the daemon exits 0 promptly and says why.
#[test]
fn closed_stdout_pipe_stops_the_daemon() {
    if !require(Need::Root, DAEMON_CAPABILITIES) {
        return;
    }
    // Keep a socket around so every poll has at least one record to write.
    let _listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let mut daemon = Xtcp2::new()
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
        .spawn();
    // Read one byte, then close the pipe as `head -c 1` would.
    let mut stdout = daemon.take_stdout();
    let mut first = [0u8; 1];
    stdout.read_exact(&mut first).expect("the daemon wrote something");
    drop(stdout);
    let started = Instant::now();
    while daemon.is_running() {
        assert!(
            started.elapsed() <= Duration::from_secs(15),
            "daemon kept running after its stdout reader left"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let status = daemon.wait_exit(Duration::ZERO);
    let stderr = daemon.stderr();

    assert!(status.success(), "exit {status:?}: {stderr}");
    assert!(stderr.contains("the reader of the output closed it"), "{stderr}");
}
