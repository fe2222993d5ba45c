//! The real binary, end to end: a one-shot collection of this machine's
//! sockets sent to a receiver the test runs, checked against the daemon's
//! own account of what it collected and sent; the poll loop's cycle count
//! and stamps; SIGHUP log rotation; and output flag errors.
//!
//! The daemon tests need CAP_NET_ADMIN and CAP_SYS_ADMIN, so they run as
//! root (CI does; elsewhere they are skipped, saying why). Each run uses a
//! private empty namespace directory and no /proc scan, so it collects
//! only the test's own network namespace.

mod sinks_support;
mod support;

use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, Instant};

use sinks_support::*;
use support::{require, Need, Xtcp2, DAEMON_CAPABILITIES};
use xtcp2::format::Format;

/// What the daemon says at exit: its `delivery finished` log line.
#[derive(Debug)]
struct Account {
    rows_sent: u64,
    rows_queued: u64,
    rows_dropped: u64,
}

fn account(log: &str) -> Account {
    let line = log
        .lines()
        .find(|l| l.contains("delivery finished"))
        .unwrap_or_else(|| panic!("no `delivery finished` line in the daemon log:\n{log}"));
    let field = |name: &str| -> u64 {
        line.split_whitespace()
            .find_map(|kv| kv.strip_prefix(&format!("{name}=")))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{name} missing in {line:?}"))
    };
    Account {
        rows_sent: field("rows_sent"),
        rows_queued: field("rows_queued"),
        rows_dropped: field("rows_dropped"),
    }
}

/// The daemon with the test's isolation flags and `args`.
fn daemon(netns_dirs: &Path, args: &[&str]) -> Xtcp2 {
    let mut cmd = Xtcp2::new();
    cmd.args(["--prom-listen", "", "--netns-proc-scan=false", "--netlinkers", "1"])
        .arg("--netns-dirs")
        .arg(netns_dirs)
        .args(args)
        .env("XTCP2_LOG", "info");
    cmd
}

/// Runs to completion; returns the exit status and the log.
fn run(mut cmd: Xtcp2) -> (std::process::ExitStatus, String) {
    let output = cmd.output();
    (output.status, String::from_utf8_lossy(&output.stderr).into_owned())
}

/// Keeps a few sockets of our own open, so the collection is never empty.
fn some_sockets() -> (std::net::TcpListener, std::net::TcpStream, std::net::TcpStream) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let (server, _) = listener.accept().unwrap();
    (listener, client, server)
}

/// Checks a one-shot run: what arrived is what the daemon says it sent,
/// which is everything it collected, each record stamped.
fn check_one_shot(what: &str, rows: &[Row], log: &str) {
    let account = account(log);
    assert_eq!(
        rows.len() as u64,
        account.rows_sent,
        "{what}: received {} rows, the daemon sent {}\n{log}",
        rows.len(),
        account.rows_sent
    );
    assert_eq!(
        account.rows_sent, account.rows_queued,
        "{what}: not everything collected was sent\n{log}"
    );
    assert_eq!(account.rows_dropped, 0, "{what}\n{log}");
    assert!(rows.len() >= 3, "{what}: only {} sockets collected", rows.len());
    let unique: BTreeSet<&Row> = rows.iter().collect();
    assert_eq!(unique.len(), rows.len(), "{what}: a record arrived twice");
    for row in rows {
        assert_eq!(row.get("poll_seq").map(String::as_str), Some("1"), "{what}: {row:?}");
        assert_eq!(row.get("hostname").map(String::as_str), Some("e2e-host"), "{what}");
        assert_eq!(row.get("label").map(String::as_str), Some("lbl, \"q\""), "{what}");
        assert_eq!(row.get("tag").map(String::as_str), Some("tg"), "{what}");
        assert_eq!(row.get("location").map(String::as_str), Some("dc-1"), "{what}");
        assert!(
            row.contains_key("idiag_src") && row.contains_key("timestamp_ns"),
            "{what}: {row:?}"
        );
    }
}

const STAMPS: &[&str] = &[
    "--max-loops",
    "1",
    "--label",
    "lbl, \"q\"",
    "--tag",
    "tg",
    "--location",
    "dc-1",
];

/// `--max-loops 1` into a TCP receiver, in every format: everything the
/// daemon collected arrives once, stamped with -hostname (from
/// XTCP_HOSTNAME), -label, -tag and -location.
#[test]
fn one_shot_over_tcp_in_every_format() {
    if !require(Need::Root, DAEMON_CAPABILITIES) {
        return;
    }
    let _sockets = some_sockets();
    let dirs = tempfile::tempdir().unwrap();
    for format in Format::ALL {
        let (addr, rx) = tcp_receiver();
        let mut cmd = daemon(dirs.path(), STAMPS);
        cmd.args(["--marshal", format.name(), "--dest", &format!("tcp:{addr}")])
            .env("XTCP_HOSTNAME", "e2e-host");
        let (status, log) = run(cmd);
        assert!(status.success(), "{format}: {status:?}\n{log}");
        let received = rx.recv_timeout(Duration::from_secs(10)).expect("the daemon connected");
        check_one_shot(&format!("tcp {format}"), &decode_output(format, &received.bytes), &log);
    }
}

/// `--max-loops 1` into the other destinations (jsonl): unix, unixgram,
/// http, file, and udp when root.
#[test]
fn one_shot_into_every_destination() {
    if !require(Need::Root, DAEMON_CAPABILITIES) {
        return;
    }
    let _sockets = some_sockets();
    let dirs = tempfile::tempdir().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let one_shot = |dest: String| {
        let mut cmd = daemon(dirs.path(), STAMPS);
        cmd.args(["--marshal", "csv", "--dest", &dest])
            .env("XTCP_HOSTNAME", "e2e-host");
        let (status, log) = run(cmd);
        assert!(status.success(), "{dest}: {status:?}\n{log}");
        log
    };
    let collect = |rx: &std::sync::mpsc::Receiver<Received>, log: &str| {
        let expected = account(log).rows_sent as usize;
        collect_rows(
            rx,
            Format::Csv,
            expected,
            Duration::from_secs(10),
            Duration::from_millis(200),
        )
        .0
    };

    let path = tmp.path().join("stream.sock");
    let rx = unix_receiver(&path);
    let log = one_shot(format!("unix:{}", path.display()));
    check_one_shot("unix", &collect(&rx, &log), &log);

    let path = tmp.path().join("dgram.sock");
    let rx = unixgram_receiver(&path);
    let log = one_shot(format!("unixgram:{}", path.display()));
    check_one_shot("unixgram", &collect(&rx, &log), &log);

    let (addr, rx) = http_receiver(200);
    let log = one_shot(format!("http://{addr}/"));
    check_one_shot("http", &collect(&rx, &log), &log);

    let path = tmp.path().join("out.csv");
    let log = one_shot(format!("file:{}", path.display()));
    check_one_shot("file", &decode_csv(&std::fs::read(&path).unwrap()), &log);

    // A burst of datagrams must not overflow the receiving socket.
    let (addr, rx) = big_udp_receiver();
    let log = one_shot(format!("udp:{addr}"));
    check_one_shot("udp", &collect(&rx, &log), &log);
}

/// `--max-loops 3 --frequency 200ms`: three cycles numbered 1, 2, 3, at
/// least two periods apart in total, then exit 0.
#[test]
fn max_loops_runs_that_many_cycles() {
    if !require(Need::Root, DAEMON_CAPABILITIES) {
        return;
    }
    let _sockets = some_sockets();
    let dirs = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let path = out.path().join("out.jsonl");
    // No tick jitter (the periods are exactly 300 ms) and the default
    // deadline (270 ms): a dump cut short would make the run exit 3, and
    // this test is about counting polls, not about a busy host.
    let mut cmd = daemon(
        dirs.path(),
        &["--max-loops", "3", "--frequency", "300ms", "--poll-jitter-pct", "0"],
    );
    cmd.arg("--dest").arg(format!("file:{}", path.display()));
    let started = Instant::now();
    let (status, log) = run(cmd);
    let elapsed = started.elapsed();
    assert!(status.success(), "{status:?}\n{log}");
    assert!(
        elapsed >= Duration::from_millis(600),
        "3 polls 300 ms apart took only {elapsed:?}"
    );
    let rows = decode_jsonl(&std::fs::read(&path).unwrap());
    let seqs: BTreeSet<&str> = rows.iter().map(|r| r["poll_seq"].as_str()).collect();
    assert_eq!(seqs, BTreeSet::from(["1", "2", "3"]));
    assert_eq!(rows.len() as u64, account(&log).rows_sent);
}

/// SIGHUP reopens `file:`: after the file is renamed (as logrotate does)
/// and SIGHUP sent, new envelopes go to a new file with its own csv
/// header; every record is in exactly one of the two files; SIGTERM then
/// flushes and exits 0.
#[test]
fn sighup_reopens_the_destination_file() {
    if !require(Need::Root, DAEMON_CAPABILITIES) {
        return;
    }
    let _sockets = some_sockets();
    let dirs = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let path = out.path().join("xtcp2.csv");
    let rotated = out.path().join("xtcp2.csv.1");
    let mut cmd = daemon(
        dirs.path(),
        &["--frequency", "200ms", "--timeout", "100ms", "--marshal", "csv"],
    );
    cmd.arg("--dest").arg(format!("file:{}", path.display()));
    let mut daemon = cmd.spawn();
    let wait_until = |what: &str, cond: &dyn Fn() -> bool| {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !cond() {
            assert!(Instant::now() < deadline, "timed out waiting until {what}");
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    wait_until("the file has data", &|| {
        std::fs::metadata(&path).map(|m| m.len() > 0).unwrap_or(false)
    });
    std::fs::rename(&path, &rotated).unwrap();
    daemon.signal(libc::SIGHUP);
    wait_until("a new file has data", &|| {
        std::fs::metadata(&path).map(|m| m.len() > 0).unwrap_or(false)
    });
    std::thread::sleep(Duration::from_millis(300));
    daemon.terminate();
    let status = daemon.wait_exit(Duration::from_secs(30));
    let log = daemon.stderr();
    assert!(status.success(), "{status:?}\n{log}");
    assert!(log.contains("SIGHUP: reopening the destination file"), "{log}");

    let old = std::fs::read(&rotated).unwrap();
    let new = std::fs::read(&path).unwrap();
    let mode = |p: &Path| std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(p).unwrap().permissions()) & 0o777;
    assert_eq!(mode(&path), 0o640);
    // decode_csv checks each file opens with the header and has no other.
    let (old_rows, new_rows) = (decode_csv(&old), decode_csv(&new));
    let seqs = |rows: &[Row]| {
        rows.iter()
            .map(|r| r["poll_seq"].parse::<u64>().unwrap())
            .collect::<BTreeSet<u64>>()
    };
    let (old_seqs, new_seqs) = (seqs(&old_rows), seqs(&new_rows));
    // A poll of many sockets spans several envelopes, so the reopen may
    // fall inside one poll; envelopes stay whole and in order.
    assert!(
        old_seqs.iter().max() <= new_seqs.iter().min(),
        "the new file got older polls: {old_seqs:?} / {new_seqs:?}"
    );
    let all: BTreeSet<u64> = old_seqs.union(&new_seqs).copied().collect();
    assert_eq!(all, (1..=all.len() as u64).collect(), "every poll is in the files");
    let every: Vec<&Row> = old_rows.iter().chain(&new_rows).collect();
    let unique: BTreeSet<&&Row> = every.iter().collect();
    assert_eq!(unique.len(), every.len(), "a record is in both files");
    assert_eq!(every.len() as u64, account(&log).rows_sent);
}

/// `--poll-jitter` delays the first poll by a random part of it, and
/// SIGTERM during that wait ends the daemon at once with exit 0.
#[test]
fn poll_jitter_wait_is_interrupted_by_sigterm() {
    if !require(Need::Root, DAEMON_CAPABILITIES) {
        return;
    }
    let dirs = tempfile::tempdir().unwrap();
    let mut daemon = daemon(dirs.path(), &["--poll-jitter", "1h", "--dest", "null"]).spawn();
    std::thread::sleep(Duration::from_millis(500));
    let signalled = Instant::now();
    daemon.terminate();
    let status = daemon.wait_exit(Duration::from_secs(30));
    let log = daemon.stderr();
    assert!(status.success(), "{status:?}\n{log}");
    assert!(
        signalled.elapsed() < Duration::from_secs(5),
        "exit took {:?} after SIGTERM",
        signalled.elapsed()
    );
    assert!(log.contains("delaying the first poll"), "{log}");
    // When the drawn delay (logged as e.g. `jitter=1831.2s`) outlasted the
    // 500 ms before SIGTERM, no poll ran: nothing was collected.
    let jitter_seconds = log
        .lines()
        .find(|l| l.contains("delaying the first poll"))
        .and_then(|l| l.split_whitespace().find_map(|kv| kv.strip_prefix("jitter=")))
        .and_then(|v| v.strip_suffix('s'))
        .and_then(|v| v.parse::<f64>().ok());
    if jitter_seconds.is_some_and(|s| s > 1.0) {
        assert_eq!(account(&log).rows_queued, 0, "{log}");
    }
}

/// Output flag mistakes are configuration errors: exit 2 with a message
/// naming the problem, before anything is opened.
#[test]
fn bad_output_flags_exit_2_with_the_reason() {
    let dirs = tempfile::tempdir().unwrap();
    for (args, says) in [
        (
            &["--marshal", "csv", "--columns", "idiag_src,tcpi_rttt"][..],
            "unknown --columns name \"tcpi_rttt\"",
        ),
        (&["--marshal", "xml"][..], "unknown --marshal \"xml\""),
        (
            &["--dest", "nsq:broker:4150"][..],
            "unknown destination \"nsq:broker:4150\"",
        ),
        (
            &["--dest", "kafka:broker:9092", "--kafka-compression", "brotli"][..],
            "--kafka-compression \"brotli\" is unknown",
        ),
        (&["--dest", "tcp:localhost"][..], "needs HOST:PORT"),
        (
            &["--frequency", "1s", "--timeout", "1s"][..],
            "must be shorter than --frequency",
        ),
    ] {
        let mut cmd = daemon(dirs.path(), args);
        cmd.arg("--skip-capability-check");
        let (status, log) = run(cmd);
        assert_eq!(status.code(), Some(2), "{args:?}\n{log}");
        assert!(log.contains(says), "{args:?}: {log}");
    }
}
