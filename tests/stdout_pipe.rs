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

/// Issue 22, point 9: a stdout reader that stops reading for longer than
/// the produce timeout. A write to stdout cannot be taken back (it goes on
/// in the background once started), so an envelope whose write timed out
/// must not be written again, nor counted as dropped if it got out: every
/// record the reader sees is whole and seen once, and what it saw plus
/// what the daemon counted as dropped is what it queued.
#[test]
fn slow_stdout_reader_sees_each_record_once_or_it_is_counted_dropped() {
    if !require(Need::Root, DAEMON_CAPABILITIES) {
        return;
    }
    // ~300 listening sockets: each poll's jsonl (~0.5 MB) is far more than
    // a pipe holds (64 KiB), so a paused reader blocks the write.
    let listeners: Vec<_> = (0..300)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();
    let mut daemon = Xtcp2::new()
        .args([
            "--frequency",
            "200ms",
            "--timeout",
            "150ms",
            "--produce-timeout",
            "100ms",
            "--states",
            "listen",
            "--envelope-flush-rows",
            "100",
            "--queue-envelopes",
            "16",
            "--prom-listen",
            "",
            "--netns-proc-scan=false",
            "--netns-dirs",
            "",
        ])
        .stdout(Stdio::piped())
        .spawn();
    let mut stdout = daemon.take_stdout();
    let reader = std::thread::spawn(move || {
        // Paused for 3 s (30 produce timeouts), then reads to the end.
        std::thread::sleep(Duration::from_secs(3));
        let mut all = Vec::new();
        stdout.read_to_end(&mut all).expect("read stdout");
        all
    });
    std::thread::sleep(Duration::from_secs(5));
    daemon.terminate();
    let status = daemon.wait_exit(Duration::from_secs(15));
    let all = reader.join().unwrap();
    let stderr = daemon.stderr();
    assert!(status.success(), "exit {status:?}: {stderr}");
    drop(listeners);

    let text = String::from_utf8(all).expect("utf-8 output");
    let mut seen = std::collections::HashSet::new();
    let mut records = 0u64;
    for line in text.lines() {
        assert!(
            line.starts_with('{') && line.ends_with('}'),
            "a torn record: {line:.120}"
        );
        assert!(seen.insert(line), "a record written twice: {line:.120}");
        records += 1;
    }
    let summary = support::log_line(&stderr, "delivery finished");
    let field = |name: &str| support::number_field(summary, name);
    assert!(
        stderr.contains("stdout") && stderr.contains("slow"),
        "the pause never outlasted the produce timeout:\n{stderr}"
    );
    assert_eq!(records, field("rows_sent"), "{summary}");
    assert_eq!(records + field("rows_dropped"), field("rows_queued"), "{summary}");
}
