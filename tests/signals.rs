//! Signals never kill the daemon without a flush: SIGHUP reopens the
//! destination whatever it is (it used to kill every destination but
//! `file:`, exit 129), and a SIGTERM sent in the first milliseconds after
//! exec is handled like any other (it used to exit 143, nothing flushed).
//! Needs root (the daemon's capabilities), as CI has.

mod support;

use std::io::Read;
use std::net::TcpListener;
use std::time::{Duration, Instant};

use support::{require, Need, Xtcp2, DAEMON_CAPABILITIES};

/// Flags that keep the daemon to the host namespace and off the network.
const QUIET: [&str; 8] = [
    "--prom-listen",
    "",
    "--netns-proc-scan=false",
    "--netns-dirs",
    "",
    "--frequency",
    "200ms",
    "--timeout=100ms",
];

/// SIGHUP on a tcp: destination: the daemon stays up, says what it did,
/// and makes a new connection (a new output stream); SIGTERM then exits 0.
#[test]
fn sighup_reconnects_a_stream_destination_and_never_kills() {
    if !require(Need::Root, DAEMON_CAPABILITIES) {
        return;
    }
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let mut daemon = Xtcp2::new()
        .args(QUIET)
        .args(["--dest", &format!("tcp:{addr}")])
        .spawn();
    listener.set_nonblocking(false).unwrap();
    let (mut first, _) = listener.accept().unwrap();
    let mut buf = [0u8; 4096];
    assert!(first.read(&mut buf).unwrap() > 0, "records on the first connection");
    for round in 1..=3 {
        daemon.signal(libc::SIGHUP);
        // Each SIGHUP is followed by a fresh connection with data on it.
        let (mut next, _) = listener.accept().unwrap();
        next.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        assert!(next.read(&mut buf).unwrap() > 0, "records after SIGHUP {round}");
        assert!(
            daemon.is_running(),
            "SIGHUP {round} killed the daemon:\n{}",
            daemon.stderr()
        );
    }
    daemon.terminate();
    let status = daemon.wait_exit(Duration::from_secs(30));
    let log = daemon.stderr();
    assert!(status.success(), "{status:?}\n{log}");
    assert!(log.contains("SIGHUP: the destination is reopened"), "{log}");
}

/// SIGHUP on stdout and null destinations does not stop the daemon either.
#[test]
fn sighup_keeps_every_destination_running() {
    if !require(Need::Root, DAEMON_CAPABILITIES) {
        return;
    }
    for dest in ["null", "stdout", "stderr"] {
        let mut daemon = Xtcp2::new()
            .args(QUIET)
            .args(["--dest", dest])
            .stdout(std::process::Stdio::null())
            .spawn();
        std::thread::sleep(Duration::from_millis(300));
        for _ in 0..3 {
            daemon.signal(libc::SIGHUP);
            std::thread::sleep(Duration::from_millis(100));
        }
        assert!(
            daemon.is_running(),
            "{dest}: SIGHUP killed the daemon:\n{}",
            daemon.stderr()
        );
        daemon.terminate();
        let status = daemon.wait_exit(Duration::from_secs(30));
        assert!(status.success(), "{dest}: {status:?}\n{}", daemon.stderr());
    }
}

/// Whether the process blocks SIGHUP, SIGINT and SIGTERM (its main
/// thread's `SigBlk` in /proc): true from the first line of `main`.
fn holds_signals(pid: u32) -> bool {
    let held = (1u64 << (libc::SIGHUP - 1)) | (1u64 << (libc::SIGINT - 1)) | (1u64 << (libc::SIGTERM - 1));
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|status| {
            let line = status.lines().find(|l| l.starts_with("SigBlk:"))?;
            u64::from_str_radix(line.trim_start_matches("SigBlk:").trim(), 16).ok()
        })
        .is_some_and(|mask| mask & held == held)
}

/// SIGTERM (and SIGINT, SIGHUP) sent at the very start of `main`, before
/// the daemon has parsed a flag or built its runtime, still ends in a clean
/// exit 0 with the delivery summary, never death by signal. The signal is
/// sent as soon as /proc shows the process holding it (so the test does not
/// depend on scheduling), and again after short delays.
#[test]
fn signals_in_the_first_milliseconds_are_handled() {
    if !require(Need::Root, DAEMON_CAPABILITIES) {
        return;
    }
    for (signal, delay_us) in [
        (libc::SIGTERM, 0),
        (libc::SIGTERM, 0),
        (libc::SIGTERM, 500),
        (libc::SIGTERM, 2_000),
        (libc::SIGINT, 0),
        (libc::SIGHUP, 0),
    ] {
        let mut daemon = Xtcp2::new().args(QUIET).args(["--dest", "null"]).spawn();
        let spawned = Instant::now();
        while !holds_signals(daemon.pid()) {
            assert!(
                spawned.elapsed() < Duration::from_secs(10),
                "the daemon never blocked the signals in main:\n{}",
                daemon.stderr()
            );
            std::hint::spin_loop();
        }
        std::thread::sleep(Duration::from_micros(delay_us));
        daemon.signal(signal);
        if signal == libc::SIGHUP {
            std::thread::sleep(Duration::from_millis(500));
            assert!(
                daemon.is_running(),
                "an early SIGHUP killed the daemon:\n{}",
                daemon.stderr()
            );
            daemon.terminate();
        }
        let status = daemon.wait_exit(Duration::from_secs(30));
        let log = daemon.stderr();
        assert!(
            status.success(),
            "signal {signal} {delay_us} µs after start: {status:?}\n{log}"
        );
        assert!(log.contains("delivery finished"), "signal {signal}: {log}");
    }
}

/// The numbers of the "delivery finished" summary line.
fn summary_field(log: &str, field: &str) -> u64 {
    support::number_field(support::log_line(log, "delivery finished"), field)
}

/// SIGTERM with a stalled destination (an HTTP server that accepts and
/// never answers, with a 60 s produce timeout) exits 0 within the shutdown
/// budget, not after the produce timeout; the envelope in flight and the
/// rest are counted as dropped, and the summary adds up.
#[test]
fn shutdown_with_a_stalled_destination_keeps_to_its_budget() {
    if !require(Need::Root, DAEMON_CAPABILITIES) {
        return;
    }
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let mut daemon = Xtcp2::new()
        .args(QUIET)
        .args(["--dest", &format!("http://{addr}/"), "--produce-timeout", "60s"])
        .args(["--shutdown-timeout", "1s"])
        .spawn();
    // The first POST arrives and is never answered: delivery is stalled.
    let (_held, _) = listener.accept().unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let asked = Instant::now();
    daemon.terminate();
    let status = daemon.wait_exit(Duration::from_secs(30));
    let took = asked.elapsed();
    let log = daemon.stderr();
    assert!(status.success(), "{status:?}\n{log}");
    // The last poll (at most --timeout, 100 ms) plus the 1 s budget, with
    // room for a loaded machine; the produce timeout is 60 s.
    assert!(took < Duration::from_secs(4), "shutdown took {took:?}\n{log}");
    let (queued, sent, dropped) = (
        summary_field(&log, "rows_queued"),
        summary_field(&log, "rows_sent"),
        summary_field(&log, "rows_dropped"),
    );
    assert!(dropped > 0, "{log}");
    assert_eq!(sent + dropped, queued, "{log}");
}
