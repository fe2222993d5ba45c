//! Changed-only records, flow events and rates (`--emit changed
//! --flow-events --rates`), against the real kernel: connections made by
//! the test in a namespace of its own, the daemon polling every second,
//! its records read back from a file destination.

mod netns_support;
mod support;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::path::Path;
use std::time::{Duration, Instant};

use netns_support::*;
use serde_json::Value;
use support::{require, Daemon, Need, Xtcp2};

const MAKES_NAMESPACES: &str = "the test makes a network namespace and connections in it";

/// The records of our namespace written so far.
fn records_of(path: &Path, inode: u64) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    // The last line may be half written while the daemon runs.
    text.lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|r| r["netns_inode"] == inode)
        .collect()
}

/// Polls completed so far: the daemon logs each at debug level. Records
/// cannot tell, since an idle poll in `changed` mode writes none.
fn polls_done(daemon: &Daemon) -> usize {
    daemon.stderr().matches("poll done").count()
}

/// Waits until `count` polls are done.
fn wait_for_polls(daemon: &Daemon, count: usize) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while polls_done(daemon) < count {
        assert!(Instant::now() < deadline, "{count} polls not done within 30 s");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn port(r: &Value, field: &str) -> u16 {
    r[field].as_u64().unwrap_or(0) as u16
}

/// The records of one socket, by its local and peer ports.
fn socket_records(records: &[Value], sport: u16, dport: u16) -> Vec<&Value> {
    records
        .iter()
        .filter(|r| port(r, "idiag_sport") == sport && port(r, "idiag_dport") == dport)
        .collect()
}

fn events<'a>(records: &[&'a Value], event: &str) -> Vec<&'a Value> {
    records.iter().copied().filter(|r| r["flow_event"] == event).collect()
}

/// A connection that opens, moves `bytes` from client to server and closes
/// both ends, all within a few milliseconds: (client port, server port).
fn short_connection(netns: &Path, listener: &TcpListener, bytes: usize) -> (u16, u16) {
    let server_port = listener.local_addr().expect("addr").port();
    // A socket belongs to the namespace it was made in.
    let mut client = in_netns(netns, move || {
        TcpStream::connect((Ipv4Addr::LOCALHOST, server_port)).expect("connect")
    });
    let (mut server, _) = listener.accept().expect("accept");
    client.write_all(&vec![7u8; bytes]).expect("write");
    let mut got = vec![0u8; bytes];
    server.read_exact(&mut got).expect("read");
    let client_port = client.local_addr().expect("addr").port();
    drop(client);
    // The server reads the FIN before closing: an orderly close of both.
    let mut rest = Vec::new();
    server.read_to_end(&mut rest).expect("read to end");
    drop(server);
    (client_port, server_port)
}

/// Opens, closes and idles connections around a daemon polling every
/// second, then checks every socket's events: one open for what a poll saw
/// open, one close for what closed (those that lived only between two
/// polls included, from the kernel's notification, with their byte
/// counts), idle sockets sent once, and the rate of a busy one.
#[test]
fn flow_events_changed_only_records_and_rates_match_what_the_test_did() {
    if !require(Need::Netns, MAKES_NAMESPACES) {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let ns = BindMountedNetns::new(dir.path(), "flows");
    let inode = netns_inode(&ns.path);
    let out = tempfile::tempdir().expect("tempdir");
    let file = out.path().join("records.jsonl");

    let idle: Vec<LoopbackConnection> = (0..20).map(|_| LoopbackConnection::open_in(&ns.path)).collect();
    let closing: Vec<LoopbackConnection> = (0..3).map(|_| LoopbackConnection::open_in(&ns.path)).collect();
    let listener = in_netns(&ns.path, || TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind"));
    let busy = LoopbackConnection::open_in(&ns.path);

    let netns_dirs = dir.path().display().to_string();
    let dest = format!("file:{}", file.display());
    let mut daemon = Xtcp2::new()
        .args(["--frequency", "1s", "--poll-jitter-pct", "0", "--prom-listen", ""])
        .args(["--netns-dirs", &netns_dirs, "--netns-proc-scan=false"])
        .args([
            "--emit",
            "changed",
            "--emit-heartbeat",
            "1000",
            "--flow-events",
            "--rates",
        ])
        .args(["--dest", &dest, "--marshal", "jsonl", "--envelope-flush-rows", "1"])
        .env("XTCP2_LOG", "info,xtcp2::poll=debug")
        .spawn();

    wait_for_polls(&daemon, 2);
    let closed: Vec<(u16, u16)> = closing.iter().map(|c| (c.client_port, c.server_port)).collect();
    drop(closing);
    // Right after a poll: this one lives and dies well within the next second.
    wait_for_polls(&daemon, 3);
    let between = short_connection(&ns.path, &listener, 1_000);

    // The busy connection: 10 kB every 100 ms for 3 s, about 100 kB/s.
    let started = Instant::now();
    let mut sent = 0usize;
    let mut sink = vec![0u8; 10_000];
    while started.elapsed() < Duration::from_secs(3) {
        (&busy.client).write_all(&[1u8; 10_000]).expect("write");
        (&busy.server).read_exact(&mut sink).expect("read");
        sent += 10_000;
        std::thread::sleep(Duration::from_millis(100));
    }
    let rate = sent as f64 / started.elapsed().as_secs_f64();
    let last = polls_done(&daemon);
    wait_for_polls(&daemon, last + 2);
    daemon.stop_cleanly(Duration::from_secs(10));
    let records = records_of(&file, inode);

    // Never two opens or two closes of one socket.
    let mut by_cookie: HashMap<u64, (usize, usize)> = HashMap::new();
    for r in &records {
        let counts = by_cookie.entry(r["idiag_cookie"].as_u64().unwrap_or(0)).or_default();
        match r["flow_event"].as_str() {
            Some("open") => counts.0 += 1,
            Some("close") => counts.1 += 1,
            _ => {}
        }
    }
    for (cookie, (opens, closes)) in &by_cookie {
        assert!(
            *opens <= 1 && *closes <= 1,
            "cookie {cookie}: {opens} opens, {closes} closes"
        );
    }

    // Idle sockets: their open, and nothing else (no change, heartbeat 1000).
    for c in &idle {
        for (sport, dport) in [(c.client_port, c.server_port), (c.server_port, c.client_port)] {
            let mine = socket_records(&records, sport, dport);
            assert_eq!(mine.len(), 1, "idle {sport}->{dport}: {mine:?}");
            assert_eq!(mine[0]["flow_event"], "open");
        }
    }

    // Closed after two polls saw them: one open, one close each side,
    // from the kernel's notification, with a lifetime.
    for &(client, server) in &closed {
        for (sport, dport) in [(client, server), (server, client)] {
            let mine = socket_records(&records, sport, dport);
            assert_eq!(events(&mine, "open").len(), 1, "{sport}->{dport}: {mine:?}");
            let close = events(&mine, "close");
            assert_eq!(close.len(), 1, "{sport}->{dport}: {mine:?}");
            assert_eq!(close[0]["flow_close_source"], "destroy", "{:?}", close[0]);
            assert!(close[0]["flow_lifetime_ns"].as_u64().unwrap_or(0) > 0, "{:?}", close[0]);
        }
    }

    // Lived between two polls: no open, one close each side, from the
    // kernel, no lifetime (never seen), the 1,000 bytes counted.
    let (client, server) = between;
    let client_side = socket_records(&records, client, server);
    let server_side = socket_records(&records, server, client);
    assert!(events(&client_side, "open").is_empty(), "{client_side:?}");
    assert!(events(&server_side, "open").is_empty(), "{server_side:?}");
    let client_close = events(&client_side, "close");
    let server_close = events(&server_side, "close");
    assert_eq!(
        (client_close.len(), server_close.len()),
        (1, 1),
        "{client_side:?} {server_side:?}"
    );
    for c in [client_close[0], server_close[0]] {
        assert_eq!(c["flow_close_source"], "destroy", "{c}");
        assert!(c.get("flow_lifetime_ns").is_none(), "never seen: no lifetime: {c}");
    }
    // bytes_sent counts data only; bytes_received counts the peer's FIN
    // as one more (seen with `ss -tinE` on this kernel).
    assert_eq!(client_close[0]["tcpi_bytes_sent"], 1_000, "{}", client_close[0]);
    assert_eq!(server_close[0]["tcpi_bytes_received"], 1_001, "{}", server_close[0]);

    // The busy socket is sent every poll it moved, with its rate.
    let receiving = socket_records(&records, busy.server_port, busy.client_port);
    let rates: Vec<f64> = receiving
        .iter()
        .filter_map(|r| r["tcpi_bytes_received_per_s"].as_f64())
        .filter(|r| *r > 0.0)
        .collect();
    assert!(rates.len() >= 2, "a rate each poll it moved: {receiving:?}");
    // Poll boundaries cut the 100 ms bursts unevenly: the middle of the
    // measured rates is within a third of the real one.
    let mut sorted = rates.clone();
    sorted.sort_by(f64::total_cmp);
    let median = sorted[sorted.len() / 2];
    assert!(
        (median - rate).abs() < rate / 3.0,
        "median rate {median:.0} B/s against {rate:.0} B/s sent: {rates:?}"
    );
    drop(idle);
    drop(busy);
}

/// Idle connections held by the test: 4,000 pairs (8,000 sockets) in one
/// namespace, plus their listener; two file descriptors each, so the
/// test's soft open-file limit is raised to its hard limit first.
const IDLE_PAIRS: usize = 4_000;

fn raise_open_file_limit() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit read and write the struct passed.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit), 0, "getrlimit");
        limit.rlim_cur = limit.rlim_max;
        assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &limit), 0, "setrlimit");
    }
    assert!(
        limit.rlim_cur as usize > 2 * IDLE_PAIRS + 100,
        "open-file limit {} too low for {IDLE_PAIRS} connections",
        limit.rlim_cur
    );
}

/// `--emit changed` on a namespace of idle connections: after the first
/// poll (every socket's first record) at most 1% of the sockets are sent
/// per poll until the heartbeat is due, while a connection that carries
/// traffic is sent every poll.
#[test]
fn idle_sockets_are_sent_once_and_a_busy_one_every_poll() {
    if !require(Need::Netns, MAKES_NAMESPACES) {
        return;
    }
    raise_open_file_limit();
    let dir = tempfile::tempdir().expect("tempdir");
    let ns = BindMountedNetns::new(dir.path(), "idle");
    let inode = netns_inode(&ns.path);
    let out = tempfile::tempdir().expect("tempdir");
    let file = out.path().join("records.jsonl");

    let idle = in_netns(&ns.path, || {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let pairs: Vec<(TcpStream, TcpStream)> = (0..IDLE_PAIRS)
            .map(|_| {
                let client = TcpStream::connect((Ipv4Addr::LOCALHOST, port)).expect("connect");
                let (server, _) = listener.accept().expect("accept");
                (client, server)
            })
            .collect();
        (listener, pairs)
    });
    let busy = LoopbackConnection::open_in(&ns.path);
    let sockets = 2 * IDLE_PAIRS + 1 + 3;

    let netns_dirs = dir.path().display().to_string();
    let dest = format!("file:{}", file.display());
    let mut daemon = Xtcp2::new()
        .args(["--frequency", "500ms", "--poll-jitter-pct", "0", "--prom-listen", ""])
        .args(["--netns-dirs", &netns_dirs, "--netns-proc-scan=false"])
        .args(["--emit", "changed", "--emit-heartbeat", "10"])
        .args(["--dest", &dest, "--marshal", "jsonl"])
        .env("XTCP2_LOG", "info,xtcp2::poll=debug")
        .spawn();
    wait_for_polls(&daemon, 1);
    // Traffic on the busy connection through polls 2 to 7 at least.
    let started = polls_done(&daemon);
    let mut sink = [0u8; 100];
    while polls_done(&daemon) < started + 7 {
        (&busy.client).write_all(&[1u8; 100]).expect("write");
        (&busy.server).read_exact(&mut sink).expect("read");
        std::thread::sleep(Duration::from_millis(20));
    }
    daemon.stop_cleanly(Duration::from_secs(10));
    let records = records_of(&file, inode);

    let mut per_poll: HashMap<u64, usize> = HashMap::new();
    for r in &records {
        *per_poll.entry(r["poll_seq"].as_u64().expect("poll_seq")).or_default() += 1;
    }
    let first = *per_poll.keys().min().expect("records");
    assert!(
        per_poll[&first] >= 2 * IDLE_PAIRS,
        "first poll: every socket: {per_poll:?}"
    );
    eprintln!("records per poll: {per_poll:?}");
    let busy_sent = socket_records(&records, busy.client_port, busy.server_port);
    for seq in first + 1..first + 7 {
        let sent = per_poll.get(&seq).copied().unwrap_or(0);
        assert!(
            sent * 100 <= sockets,
            "poll {seq}: {sent} of {sockets} sockets sent: {per_poll:?}"
        );
        assert!(
            busy_sent.iter().any(|r| r["poll_seq"] == seq),
            "the busy connection is missing from poll {seq}"
        );
    }
    drop(idle);
    drop(busy);
}
