//! Issue 19: the `nats:` and `valkey:`/`redis:` destinations against the
//! real servers (Debian's `nats-server` with JetStream, `redis-server`,
//! protocol-compatible with Valkey), each started here on a free loopback
//! port in a temporary directory, and read back by independent clients
//! (nats-py, redis-py: `tests/brokers/read_broker.py`) that decode every
//! message with Google's protobuf against `proto/xtcp2.proto`.
//!
//! - Round trip: a one-shot collection's known loopback connection
//!   arrives exactly once per side, and everything the daemon says it sent
//!   is in the stream.
//! - Acknowledged delivery (JetStream, XADD with appendonly): the server is
//!   restarted mid-run; every record the daemon counts as sent is in the
//!   stream afterwards, and what it could not deliver is what it counts as
//!   dropped.
//! - Fire and forget (core NATS publish, PUBLISH): the loss is within what
//!   the daemon counts as unconfirmed.
//!
//! The daemon needs root (CAP_NET_ADMIN, CAP_SYS_ADMIN); it collects only
//! the test's own network namespace (no /proc scan, an empty namespace
//! directory). Under CI a missing server or Python module fails the test.

mod support;

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::io::{BufRead, BufReader, Read};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use support::{
    find_tool, log_line, number_field, python, require, require_python_module, require_tool, run_python_json, Need,
    Xtcp2, DAEMON_CAPABILITIES,
};

const SUBJECT: &str = "xtcp.test";
/// The stream `--nats-create-stream` makes of [`SUBJECT`].
const STREAM: &str = "xtcp_test";
/// How long the server stays down in the restart tests: ten polls at
/// [`RESTART_FREQUENCY`], five times the queue's two envelopes.
const DOWN_FOR: Duration = Duration::from_secs(2);
const RESTART_FREQUENCY: &str = "200ms";

fn proto() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("proto/xtcp2.proto")
}

/// Root, the server binary and the Python readers; false (skip) outside CI
/// when one is missing.
fn prerequisites(server: &str, module: &str) -> bool {
    let python = python();
    require(Need::Root, DAEMON_CAPABILITIES)
        && require_tool(server, "the real server the destination sends to")
        && require_python_module(&python, module, "the independent reader of what arrived")
        && require_python_module(&python, "google.protobuf", "Google's protobuf decodes every message")
        && require_python_module(&python, "grpc_tools.protoc", "protoc generates the Python classes")
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Nats,
    Valkey,
}

/// A server this test started: stopped, restarted on the same port and
/// directory, and killed (its directory removed) when dropped.
struct Server {
    kind: Kind,
    port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl Server {
    fn start(kind: Kind) -> Server {
        let mut server = Server {
            kind,
            port: free_port(),
            dir: tempfile::tempdir().unwrap(),
            child: None,
        };
        server.run();
        server
    }

    fn run(&mut self) {
        let port = self.port.to_string();
        let dir = self.dir.path();
        let mut command = match self.kind {
            Kind::Nats => {
                let mut c = Command::new(find_tool("nats-server").expect("nats-server"));
                c.args(["-js", "-a", "127.0.0.1", "-p", &port, "-sd"]).arg(dir);
                c
            }
            Kind::Valkey => {
                let mut c = Command::new(find_tool("redis-server").expect("redis-server"));
                c.args([
                    "--port",
                    &port,
                    "--bind",
                    "127.0.0.1",
                    "--save",
                    "",
                    "--appendonly",
                    "yes",
                ])
                .args(["--daemonize", "no", "--dir"])
                .arg(dir);
                c
            }
        };
        let child = command
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start the server");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "the server did not listen on {}", self.port);
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGTERM (both servers then write what they hold to disk) and wait.
    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let pid = libc::pid_t::try_from(child.id()).expect("pid fits pid_t");
            // SAFETY: kill(2) of our own child, not reaped yet, so the pid names it.
            unsafe { libc::kill(pid, libc::SIGTERM) };
            let deadline = Instant::now() + Duration::from_secs(10);
            while child.try_wait().expect("try_wait").is_none() {
                if Instant::now() > deadline {
                    let _ = child.kill();
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }

    fn dest(&self, scheme: &str) -> String {
        format!("{scheme}:127.0.0.1:{}", self.port)
    }

    fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The daemon, collecting only this test's namespace, in protobufList.
fn daemon(netns_dir: &Path, args: &[&str]) -> Xtcp2 {
    let mut cmd = Xtcp2::new();
    cmd.args(["--prom-listen", "", "--netns-proc-scan=false", "--netlinkers", "1"])
        .arg("--netns-dirs")
        .arg(netns_dir)
        .args(["--marshal", "protobufList", "--hostname", "nv-test", "--topic", SUBJECT])
        .args(args)
        .env("XTCP2_LOG", "info");
    cmd
}

/// The daemon's own account at exit (its `delivery finished` line).
#[derive(Debug)]
struct Account {
    sent: u64,
    queued: u64,
    dropped: u64,
    unconfirmed: u64,
}

fn account(log: &str) -> Account {
    let line = log_line(log, "delivery finished");
    Account {
        sent: number_field(line, "rows_sent"),
        queued: number_field(line, "rows_queued"),
        dropped: number_field(line, "rows_dropped"),
        unconfirmed: number_field(line, "rows_unconfirmed"),
    }
}

/// One message as the reader decoded it.
struct Message {
    id: Option<String>,
    declared_rows: Option<u64>,
    /// Records the message holds, as protobuf parsed them.
    count: u64,
    /// The records themselves, when asked for (round trips).
    records: Vec<serde_json::Map<String, Value>>,
}

fn messages(answer: Value) -> Vec<Message> {
    answer["messages"]
        .as_array()
        .expect("messages")
        .iter()
        .map(|m| Message {
            id: m["id"].as_str().map(str::to_string),
            declared_rows: m["rows"].as_u64(),
            count: m["count"].as_u64().expect("count"),
            records: m["records"]
                .as_array()
                .map(|records| {
                    records
                        .iter()
                        .map(|r| r.as_object().expect("a record").clone())
                        .collect()
                })
                .unwrap_or_default(),
        })
        .collect()
}

/// `read_broker.py WHAT MODE ARGS...` run to completion (WHAT:
/// `records=PORT,...` or `counts`).
fn read_back(what: &str, mode: &str, args: &[&str]) -> Vec<Message> {
    let proto = proto();
    let mut all: Vec<&OsStr> = vec![proto.as_os_str(), OsStr::new(what), OsStr::new(mode)];
    all.extend(args.iter().map(OsStr::new));
    messages(run_python_json("brokers/read_broker.py", &all, b""))
}

/// A subscriber running until [`Subscriber::finish`] (fire-and-forget modes).
struct Subscriber {
    child: Child,
    stdout: BufReader<std::process::ChildStdout>,
}

impl Subscriber {
    fn start(mode: &str, args: &[&str]) -> Subscriber {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/brokers/read_broker.py");
        let mut child = Command::new(python())
            .arg(script)
            .arg(proto())
            .arg("counts")
            .arg(mode)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("start the subscriber");
        let mut stdout = BufReader::new(child.stdout.take().expect("stdout"));
        let mut line = String::new();
        stdout.read_line(&mut line).expect("the subscriber's first line");
        assert_eq!(line.trim(), "ready", "the subscriber did not subscribe");
        Subscriber { child, stdout }
    }

    /// Closes its stdin (the stop signal) and returns what it received.
    fn finish(mut self) -> Vec<Message> {
        drop(self.child.stdin.take());
        let mut text = String::new();
        self.stdout.read_to_string(&mut text).expect("the subscriber's answer");
        let status = self.child.wait().expect("wait for the subscriber");
        assert!(status.success(), "the subscriber failed: {status}");
        messages(serde_json::from_str(&text).expect("the subscriber's JSON"))
    }
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A listening socket and one established connection of our own: the
/// sockets every collection must hold.
struct KnownConnection {
    _listener: TcpListener,
    _client: TcpStream,
    _server: TcpStream,
    listen_port: u64,
    client_port: u64,
}

impl KnownConnection {
    /// The reader's `records=PORT,PORT`: only these records are decoded to JSON.
    fn ports(&self) -> String {
        format!("records={},{}", self.listen_port, self.client_port)
    }
}

fn known_connection() -> KnownConnection {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let (server, _) = listener.accept().unwrap();
    KnownConnection {
        listen_port: u64::from(listener.local_addr().unwrap().port()),
        client_port: u64::from(client.local_addr().unwrap().port()),
        _listener: listener,
        _client: client,
        _server: server,
    }
}

/// Each side of the known connection (and its listener) once among `records`.
fn assert_known_once(what: &str, known: &KnownConnection, records: &[&serde_json::Map<String, Value>]) {
    let count = |sport: u64, dport: u64| {
        records
            .iter()
            .filter(|r| r["idiag_sport"].as_u64() == Some(sport) && r["idiag_dport"].as_u64().unwrap_or(0) == dport)
            .count()
    };
    assert_eq!(count(known.listen_port, 0), 1, "{what}: the listener");
    assert_eq!(
        count(known.listen_port, known.client_port),
        1,
        "{what}: the accepted side"
    );
    assert_eq!(
        count(known.client_port, known.listen_port),
        1,
        "{what}: the connecting side"
    );
    for r in records {
        assert_eq!(r["hostname"].as_str(), Some("nv-test"), "{what}: {r:?}");
        assert_eq!(r["poll_seq"].as_u64(), Some(1), "{what}: {r:?}");
    }
}

/// The rows of `messages` with each message id counted once (a message sent
/// again after a lost acknowledgement); checks each message's declared
/// record count against what it holds.
fn unique_rows(what: &str, messages: &[Message]) -> u64 {
    let mut by_id: BTreeMap<String, u64> = BTreeMap::new();
    for (i, m) in messages.iter().enumerate() {
        if let Some(declared) = m.declared_rows {
            assert_eq!(declared, m.count, "{what}: message {i}");
        }
        let id = m.id.clone().unwrap_or_else(|| format!("#{i}"));
        by_id.insert(id, m.count);
    }
    by_id.values().sum()
}

/// A one-shot run to `dest`; its log.
fn one_shot(dest: &str, extra: &[&str]) -> String {
    let netns_dir = tempfile::tempdir().unwrap();
    let mut args = vec!["--dest", dest, "--max-loops", "1"];
    args.extend_from_slice(extra);
    let output = daemon(netns_dir.path(), &args).output();
    let log = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(output.status.success(), "{dest}: {log}");
    log
}

/// nats: JetStream round trip: the known connection arrives once per side,
/// in as many acknowledged messages as the daemon sent, read by nats-py.
#[test]
fn jetstream_round_trip_known_connection_once() {
    if !prerequisites("nats-server", "nats") {
        return;
    }
    let server = Server::start(Kind::Nats);
    let known = known_connection();
    let log = one_shot(&server.dest("nats"), &["--nats-create-stream"]);
    let got = read_back(&known.ports(), "jetstream", &[&server.url(), STREAM]);
    let account = account(&log);
    let records: Vec<_> = got.iter().flat_map(|m| &m.records).collect();
    assert_known_once("jetstream", &known, &records);
    assert_eq!(unique_rows("jetstream", &got), account.sent, "{log}");
    assert_eq!(
        got.iter().map(|m| m.count).sum::<u64>(),
        account.sent,
        "no message stored twice"
    );
    assert_eq!(
        (account.queued, account.dropped, account.unconfirmed),
        (account.sent, 0, 0),
        "{log}"
    );
}

/// valkey: XADD round trip: the known connection arrives once per side, in
/// as many stream entries as the daemon sent, read by redis-py.
#[test]
fn xadd_round_trip_known_connection_once() {
    if !prerequisites("redis-server", "redis") {
        return;
    }
    let server = Server::start(Kind::Valkey);
    let known = known_connection();
    let log = one_shot(&server.dest("valkey"), &[]);
    let port = server.port.to_string();
    let got = read_back(&known.ports(), "xrange", &["127.0.0.1", &port, SUBJECT]);
    let account = account(&log);
    let records: Vec<_> = got.iter().flat_map(|m| &m.records).collect();
    assert_known_once("xadd", &known, &records);
    assert_eq!(got.iter().map(|m| m.count).sum::<u64>(), account.sent, "{log}");
    assert_eq!(unique_rows("xadd", &got), account.sent, "no entry added twice");
    assert_eq!(
        (account.queued, account.dropped, account.unconfirmed),
        (account.sent, 0, 0),
        "{log}"
    );
}

/// Runs the daemon at a fast cadence with a two-envelope queue, restarts
/// the server after a while, lets delivery recover, stops the daemon with
/// SIGTERM; `before_restart_up` runs while the server is down. Returns the
/// daemon's account and log.
fn run_across_restart(
    server: &mut Server,
    dest: &str,
    extra: &[&str],
    after_restart: impl FnOnce(),
) -> (Account, String) {
    let netns_dir = tempfile::tempdir().unwrap();
    let _known = known_connection();
    let mut args = vec![
        "--dest",
        dest,
        "--frequency",
        RESTART_FREQUENCY,
        "--queue-envelopes",
        "2",
        "--produce-timeout",
        "1s",
        "--shutdown-timeout",
        "5s",
        // Listeners only: a busy machine's thousands of connections
        // would make each poll many envelopes and the test slow.
        "--states",
        "listen",
    ];
    args.extend_from_slice(extra);
    let mut running = daemon(netns_dir.path(), &args).spawn();
    std::thread::sleep(Duration::from_millis(1500));
    server.stop();
    std::thread::sleep(DOWN_FOR);
    server.run();
    after_restart();
    // Retries back off to at most 1.6 s by now: a few more polls delivered.
    std::thread::sleep(Duration::from_secs(4));
    running.terminate();
    let status = running.wait_exit(Duration::from_secs(20));
    let log = running.stderr();
    assert_eq!(status.code(), Some(0), "{log}");
    (account(&log), log)
}

/// The acknowledged modes' promise: everything counted as sent is stored,
/// nothing more, and the loss is exactly what was counted as dropped.
fn assert_nothing_acknowledged_lost(what: &str, account: &Account, stored: u64, log: &str) {
    assert_eq!(
        stored, account.sent,
        "{what}: stored records vs acknowledged ones\n{log}"
    );
    assert_eq!(
        account.queued - stored,
        account.dropped,
        "{what}: the loss is what the daemon counted as dropped\n{log}"
    );
    assert!(
        account.dropped > 0,
        "{what}: {DOWN_FOR:?} down at {RESTART_FREQUENCY} polls must overflow a two-envelope queue\n{log}"
    );
    assert!(stored > 0 && account.unconfirmed == 0, "{what}: {account:?}");
}

/// nats: JetStream (file storage) across a server restart: nothing
/// acknowledged is lost, and what was not delivered is counted as dropped.
#[test]
fn jetstream_restart_loses_nothing_acknowledged() {
    if !prerequisites("nats-server", "nats") {
        return;
    }
    let mut server = Server::start(Kind::Nats);
    let dest = server.dest("nats");
    let (account, log) = run_across_restart(&mut server, &dest, &["--nats-create-stream"], || {});
    let got = read_back("counts", "jetstream", &[&server.url(), STREAM]);
    assert_nothing_acknowledged_lost("jetstream", &account, unique_rows("jetstream", &got), &log);
}

/// redis: XADD (appendonly) across a server restart: nothing acknowledged
/// is lost, and what was not delivered is counted as dropped.
#[test]
fn xadd_restart_loses_nothing_acknowledged() {
    if !prerequisites("redis-server", "redis") {
        return;
    }
    let mut server = Server::start(Kind::Valkey);
    let dest = server.dest("redis");
    let (account, log) = run_across_restart(&mut server, &dest, &[], || {});
    let port = server.port.to_string();
    let got = read_back("counts", "xrange", &["127.0.0.1", &port, SUBJECT]);
    assert_nothing_acknowledged_lost("xadd", &account, unique_rows("xadd", &got), &log);
}

/// nats --nats-mode core (the Go daemon's publish) across a restart: every
/// record is counted as unconfirmed, and the loss is within what was
/// counted as unconfirmed or dropped.
#[test]
fn nats_core_loss_is_counted_unconfirmed() {
    if !prerequisites("nats-server", "nats") {
        return;
    }
    let mut server = Server::start(Kind::Nats);
    let subscriber = Subscriber::start("nats-subscribe", &[&server.url(), SUBJECT]);
    let dest = server.dest("nats");
    let (account, log) = run_across_restart(&mut server, &dest, &["--nats-mode", "core"], || {});
    let received = unique_rows("core", &subscriber.finish());
    assert_eq!(account.unconfirmed, account.sent, "{log}");
    assert!(
        received > 0 && received <= account.sent,
        "received {received}: {account:?}"
    );
    assert!(
        account.queued - received <= account.unconfirmed + account.dropped,
        "received {received}: {account:?}"
    );
    assert_eq!(account.queued, account.sent + account.dropped, "{log}");
}

/// valkey --valkey-mode publish (the Go daemon's PUBLISH): the messages
/// nobody was subscribed to (no subscriber until the server restarted) are
/// exactly the records counted as unconfirmed; the rest all arrived.
#[test]
fn valkey_publish_loss_is_counted_unconfirmed() {
    if !prerequisites("redis-server", "redis") {
        return;
    }
    let mut server = Server::start(Kind::Valkey);
    let dest = server.dest("valkey");
    let port = server.port.to_string();
    let mut subscriber = None;
    let (account, log) = run_across_restart(&mut server, &dest, &["--valkey-mode", "publish"], || {
        subscriber = Some(Subscriber::start("subscribe", &["127.0.0.1", &port, SUBJECT]));
    });
    let received = unique_rows("publish", &subscriber.expect("started").finish());
    assert!(
        account.unconfirmed > 0,
        "nobody listened before the restart: {account:?}\n{log}"
    );
    assert_eq!(received, account.sent - account.unconfirmed, "{account:?}\n{log}");
    assert_eq!(account.queued, account.sent + account.dropped, "{log}");
}
