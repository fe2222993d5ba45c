//! `--dest kafka:`: the daemon produces to a real Kafka-protocol broker
//! (tansu), and the topic is read back by an independent client
//! (kafka-python) and decoded against `proto/` by Google's protobuf.
//!
//! - Round trip: a known set of loopback connections arrives exactly once
//!   per side, in every codec, one message per envelope, with the headers
//!   (host, poll sequence, schema, rows) and the key asked for.
//! - Faults: the broker down at start (polling goes on, /readyz says not
//!   ready until the brokers answer, and the rows delivered plus the rows
//!   dropped are exactly the rows collected, with no duplicates); killed
//!   mid-run and restarted (delivery resumes, polling never stops); dead at
//!   shutdown (SIGTERM exits 0 within the shutdown budget, the rest counted
//!   as dropped).
//!
//! Needs root (the daemon), tansu (`XTCP2_TANSU`, else where
//! ci/install-deps.sh installs it) and the CI venv's kafka-python,
//! protobuf and grpcio-tools; outside CI a missing one skips saying why,
//! under CI it fails. Every broker and daemon is killed when its test ends.

mod observability_support;
mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsStr;
use std::net::{IpAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use observability_support::{free_port, http_get, sample, HttpDaemon};
use serde_json::Value;
use support::{
    log_line, number_field, python, require, require_python_module, run_python_json, Need, Xtcp2, DAEMON_CAPABILITIES,
};

/// Where ci/install-deps.sh installs tansu.
const CI_TANSU: &str = "/var/cache/xtcp2-ci/tansu/bin/tansu";
/// Partitions of every test topic: more than one, so keys matter.
const PARTITIONS: &str = "3";
/// The host name stamped on records and sent as the key and header.
const HOST: &str = "kafka-test-host";
/// Connections the round trip opens.
const CONNECTIONS: usize = 3;

/// tansu: `XTCP2_TANSU`, else CI's install.
fn tansu_path() -> PathBuf {
    std::env::var_os("XTCP2_TANSU")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(CI_TANSU))
}

/// Whether everything the Kafka tests need is here (see `support::require`).
fn can_run() -> bool {
    let python = python();
    let tansu = tansu_path();
    require(Need::Root, DAEMON_CAPABILITIES)
        && require(
            Need::Usable(
                "tansu",
                if tansu.is_file() {
                    Ok(())
                } else {
                    Err(format!(
                        "{} is missing (ci/install-deps.sh installs it)",
                        tansu.display()
                    ))
                },
            ),
            "the Kafka-protocol broker of the tests",
        )
        && require_python_module(&python, "kafka", "kafka-python reads the topic back")
        && require_python_module(&python, "zstandard", "kafka-python's zstd codec")
        && require_python_module(&python, "lz4", "kafka-python's lz4 codec")
        && require_python_module(&python, "cramjam", "kafka-python's snappy codec")
        && require_python_module(&python, "google.protobuf", "the messages are decoded against proto/")
        && require_python_module(&python, "grpc_tools.protoc", "protoc generates the Python classes")
}

/// A tansu broker on a loopback port, in memory; killed on drop.
struct Broker {
    port: u16,
    child: Option<Child>,
}

impl Broker {
    fn start() -> Broker {
        let mut broker = Broker {
            port: free_port(),
            child: None,
        };
        broker.restart();
        broker
    }

    /// A started broker holding `topic`.
    fn with_topic(topic: &str) -> Broker {
        let broker = Broker::start();
        broker.create_topic(topic);
        broker
    }

    /// A broker on a port reserved now but not started yet.
    fn not_started() -> Broker {
        Broker {
            port: free_port(),
            child: None,
        }
    }

    fn url(&self) -> String {
        format!("tcp://127.0.0.1:{}", self.port)
    }

    fn dest(&self) -> String {
        format!("kafka:127.0.0.1:{}", self.port)
    }

    fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Starts (again) on the same port, empty, and waits until it listens.
    fn restart(&mut self) {
        assert!(self.child.is_none(), "the broker is running");
        let child = Command::new(tansu_path())
            .args([
                "broker",
                "--listener-url",
                &self.url(),
                "--advertised-listener-url",
                &self.url(),
            ])
            .args(["--storage-engine", "memory://tansu/"])
            .env("CLUSTER_ID", "xtcp2-test")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", tansu_path().display()));
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "tansu did not listen on {}", self.port);
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn create_topic(&self, topic: &str) {
        let output = Command::new(tansu_path())
            .args([
                "topic",
                "create",
                topic,
                "--partitions",
                PARTITIONS,
                "--broker",
                &self.url(),
            ])
            .output()
            .expect("tansu topic create");
        let said = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        // A broker that auto-created it at the producer's metadata request is fine.
        assert!(
            output.status.success() || said.to_ascii_lowercase().contains("exist"),
            "tansu topic create {topic}: {said}"
        );
    }

    /// SIGKILL: the broker vanishes with everything it held.
    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Every message of `topic`, read by kafka-python and decoded against
    /// our `.proto` (waits until at least `minimum` came, then for quiet).
    fn consume(&self, topic: &str, minimum: usize) -> Vec<Message> {
        self.consume_into(topic, minimum, None)
    }

    /// [`Broker::consume`], also writing each message's value to a file
    /// of its own in `raw_dir`.
    fn consume_into(&self, topic: &str, minimum: usize, raw_dir: Option<&Path>) -> Vec<Message> {
        let proto = proto_file();
        let minimum = minimum.to_string();
        let bootstrap = self.bootstrap();
        let mut args = vec![
            OsStr::new(&bootstrap),
            OsStr::new(topic),
            proto.as_os_str(),
            OsStr::new("2"),
            OsStr::new(&minimum),
        ];
        if let Some(dir) = raw_dir {
            args.extend([OsStr::new("--raw-dir"), dir.as_os_str()]);
        }
        let answer = run_python_json("kafka/consume.py", &args, b"");
        answer["messages"]
            .as_array()
            .expect("messages")
            .iter()
            .map(Message::from_json)
            .collect()
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.kill();
    }
}

/// One consumed message.
#[derive(Debug)]
struct Message {
    key: Option<String>,
    headers: BTreeMap<String, String>,
    rows: Vec<serde_json::Map<String, Value>>,
}

impl Message {
    fn from_json(v: &Value) -> Message {
        Message {
            key: v["key"].as_str().map(str::to_string),
            headers: v["headers"]
                .as_object()
                .expect("headers")
                .iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                .collect(),
            rows: v["rows"]
                .as_array()
                .expect("rows")
                .iter()
                .map(|r| r.as_object().expect("row").clone())
                .collect(),
        }
    }

    fn poll_seq(&self) -> u64 {
        self.headers["xtcp2-poll-seq"].parse().expect("poll seq header")
    }
}

/// Identity of a socket in one poll: poll, namespace, address, ports.
fn row_identity(poll_seq: u64, row: &serde_json::Map<String, Value>) -> String {
    format!(
        "{poll_seq} {} {} {} {} {} {}",
        row.get("netns_inode").unwrap_or(&Value::Null),
        row.get("idiag_family").unwrap_or(&Value::Null),
        row.get("idiag_src").unwrap_or(&Value::Null),
        row.get("idiag_sport").unwrap_or(&Value::Null),
        row.get("idiag_dst").unwrap_or(&Value::Null),
        row.get("idiag_dport").unwrap_or(&Value::Null),
    )
}

/// Asserts no socket of any poll arrived twice (a duplicated message would).
fn assert_no_duplicates(messages: &[Message]) {
    let mut seen = BTreeSet::new();
    for m in messages {
        for row in &m.rows {
            let id = row_identity(m.poll_seq(), row);
            assert!(seen.insert(id.clone()), "arrived twice: {id}");
        }
    }
}

fn total_rows(messages: &[Message]) -> u64 {
    messages.iter().map(|m| m.rows.len() as u64).sum()
}

/// The daemon flags every test shares: host namespace only, a fixed host name.
fn common_args<'a>(broker: &'a str, topic: &'a str) -> Vec<&'a str> {
    vec![
        "--dest",
        broker,
        "--topic",
        topic,
        "--hostname",
        HOST,
        "--netns-proc-scan=false",
        "--netns-dirs",
        "",
    ]
}

/// A daemon polling the host's listeners every 500 ms on a fixed
/// schedule, then `extra`.
fn polling_args<'a>(broker: &'a str, topic: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = common_args(broker, topic);
    args.extend(["--frequency", "500ms", "--states", "listen", "--poll-jitter-pct", "0"]);
    args.extend(extra);
    args
}

/// SIGTERM, a clean exit, and every collected row sent or counted as
/// dropped: (rows sent, rows dropped).
fn stop_accounted(daemon: &mut HttpDaemon) -> (u64, u64) {
    daemon.terminate();
    let status = daemon.wait_exit(Duration::from_secs(10));
    assert!(status.success(), "exit {status}: {}", daemon.stderr());
    let (queued, sent, dropped) = delivery_totals(&daemon.stderr());
    assert_eq!(
        queued,
        sent + dropped,
        "every collected row is sent or counted as dropped"
    );
    (sent, dropped)
}

/// A one-shot run (`--max-loops 1`) that delivered every row it
/// collected: its stderr and the rows sent.
fn one_shot_all_sent(args: &[&str], what: &str) -> (String, u64) {
    let mut args = args.to_vec();
    args.extend(["--max-loops", "1", "--prom-listen", ""]);
    let output = Xtcp2::new().args(&args).env("XTCP2_LOG", "info").output();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(
        output.status.success(),
        "{what}: xtcp2 exited {}: {stderr}",
        output.status
    );
    let (queued, sent, dropped) = delivery_totals(&stderr);
    // A message dropped at shutdown may still have reached the broker:
    // only a run that delivered everything can be compared row for row.
    assert_eq!((sent, dropped), (queued, 0), "{what}: {stderr}");
    (stderr, sent)
}

/// Envelopes the daemon says it delivered ("delivery finished").
fn envelopes_sent(stderr: &str) -> u64 {
    number_field(log_line(stderr, "delivery finished"), "envelopes_sent")
}

/// The "delivery finished" totals: (rows queued, rows sent, rows dropped).
fn delivery_totals(stderr: &str) -> (u64, u64, u64) {
    let line = log_line(stderr, "delivery finished");
    (
        number_field(line, "rows_queued"),
        number_field(line, "rows_sent"),
        number_field(line, "rows_dropped"),
    )
}

/// TCP sockets of the host's namespace now (lines of /proc/net/tcp{,6}).
fn host_tcp_sockets() -> usize {
    ["/proc/net/tcp", "/proc/net/tcp6"]
        .iter()
        .map(|p| std::fs::read_to_string(p).map_or(0, |t| t.lines().count().saturating_sub(1)))
        .sum()
}

/// Listener and established connections on 127.0.0.1, kept open.
struct Loopback {
    listener: TcpListener,
    pairs: Vec<(TcpStream, TcpStream)>,
}

impl Loopback {
    fn open() -> Loopback {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let pairs = (0..CONNECTIONS)
            .map(|_| {
                let client = TcpStream::connect(listener.local_addr().expect("addr")).expect("connect");
                let (server, _) = listener.accept().expect("accept");
                (client, server)
            })
            .collect();
        Loopback { listener, pairs }
    }

    /// (local port, remote port) of every socket: the listener, each
    /// client side and each server side.
    fn sockets(&self) -> Vec<(u64, u64)> {
        let listen = u64::from(self.listener.local_addr().expect("addr").port());
        let mut out = vec![(listen, 0)];
        for (client, _) in &self.pairs {
            let c = u64::from(client.local_addr().expect("addr").port());
            out.push((c, listen));
            out.push((listen, c));
        }
        out
    }
}

/// `ip` as the hex our protobuf rows carry for `idiag_src` (either form).
fn is_address(hex: &Value, ip: IpAddr) -> bool {
    let IpAddr::V4(v4) = ip else { return false };
    let short: String = v4.octets().iter().map(|b| format!("{b:02x}")).collect();
    hex.as_str()
        .is_some_and(|h| h == short || h.ends_with(&format!("ffff{short}")))
}

/// Our record's `.proto`.
fn proto_file() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("proto/xtcp2.proto")
}

/// Runs `statements` in one chdb session: each result as TabSeparated
/// text without its last newline; every statement must succeed.
fn clickhouse_session(statements: &[String]) -> Vec<String> {
    let input = serde_json::to_vec(statements).expect("JSON");
    let results = run_python_json("kafka/clickhouse_session.py", &[], &input);
    results
        .as_array()
        .expect("a list")
        .iter()
        .zip(statements)
        .map(|(r, q)| match r.get("ok").and_then(Value::as_str) {
            Some(text) => text.trim_end().to_string(),
            None => panic!("ClickHouse rejected\n  {q}\nwith {}", r["error"]),
        })
        .collect()
}

/// The statements of a `.sql` file (split at `;` ending a line; comments dropped).
fn sql_statements(text: &str) -> Vec<String> {
    let body: String = text
        .lines()
        .filter(|l| !l.trim_start().starts_with("--"))
        .collect::<Vec<_>>()
        .join("\n");
    body.split(";\n")
        .map(|s| s.trim().trim_end_matches(';').to_string())
        .filter(|s| !s.is_empty())
        .collect()
}

/// docs/clickhouse/*.sql are exactly the DDL generated from the record's
/// fields (XTCP2_BLESS=1 rewrites them after a change of src/record/fields.rs).
#[test]
fn clickhouse_ddl_is_generated() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/clickhouse");
    for (file, generated) in [
        ("records.sql", xtcp2::format::clickhouse::merge_tree_ddl()),
        ("kafka.sql", xtcp2::format::clickhouse::kafka_ddl()),
    ] {
        let path = dir.join(file);
        if std::env::var_os("XTCP2_BLESS").is_some() {
            std::fs::create_dir_all(&dir).expect("mkdir docs/clickhouse");
            std::fs::write(&path, &generated).expect("write");
        }
        let on_disk = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            on_disk == generated,
            "docs/clickhouse/{file} is stale: run `XTCP2_BLESS=1 cargo test --test kafka clickhouse_ddl_is_generated` and commit it"
        );
    }
}

/// The pipeline's far end: the messages read back from Kafka, inserted by
/// the shipped view's query into the shipped MergeTree table (real
/// ClickHouse, chdb), give the row count xtcp2 counted as sent and, for
/// each test socket, the values the protobuf decoding of the same message
/// gives.
#[test]
fn clickhouse_ingests_the_topic_into_the_shipped_table() {
    if !can_run() || !require_python_module(&python(), "chdb", "ClickHouse runs the shipped DDL") {
        return;
    }
    let topic = "clickhouse";
    let broker = Broker::with_topic(topic);
    let loopback = Loopback::open();
    let dest = broker.dest();
    let mut args = common_args(&dest, topic);
    // About 16 envelopes whatever the host holds (a busy CI host has
    // thousands of sockets): several messages, and far fewer than the
    // queue holds, so none is dropped before delivery takes it.
    let rows_per_envelope = (host_tcp_sockets() / 16).max(4).to_string();
    args.extend(["--envelope-flush-rows", &rows_per_envelope, "--shutdown-timeout", "60s"]);
    let (_, sent) = one_shot_all_sent(&args, "clickhouse");

    let raw = tempfile::tempdir().expect("tempdir");
    let messages = broker.consume_into(topic, 1, Some(raw.path()));
    assert!(
        messages.len() > 1,
        "several envelopes, several messages: {}",
        messages.len()
    );
    let source = format!("file('{}/*.bin', 'ProtobufList')", raw.path().display());
    let mut statements = sql_statements(&xtcp2::format::clickhouse::merge_tree_ddl());
    statements.push(format!(
        "INSERT INTO xtcp2.records {} SETTINGS format_schema = '{}:Record'",
        xtcp2::format::clickhouse::ingest_select(&source),
        proto_file().display()
    ));
    statements
        .push("SELECT count(), countIf(hostname = 'kafka-test-host'), uniqExact(poll_seq) FROM xtcp2.records".into());
    let ip = loopback.listener.local_addr().expect("addr").ip();
    let sockets = loopback.sockets();
    for (local, remote) in &sockets {
        statements.push(format!(
            "SELECT idiag_state, idiag_family, lower(hex(idiag_src)), toUnixTimestamp64Nano(timestamp_ns), tcpi_snd_mss \
             FROM xtcp2.records WHERE idiag_sport = {local} AND idiag_dport = {remote} \
             AND (idiag_src = unhex('7f000001') OR endsWith(idiag_src, unhex('ffff7f000001')))"
        ));
    }
    let results = clickhouse_session(&statements);
    let answers = &results[results.len() - sockets.len() - 1..];
    assert_eq!(
        answers[0],
        format!("{sent}\t{sent}\t1"),
        "rows in ClickHouse = rows xtcp2 sent"
    );
    for ((local, remote), answer) in sockets.iter().zip(&answers[1..]) {
        let row = messages
            .iter()
            .flat_map(|m| &m.rows)
            .find(|r| {
                r["idiag_sport"] == *local
                    && r.get("idiag_dport").and_then(Value::as_u64).unwrap_or(0) == *remote
                    && is_address(&r["idiag_src"], ip)
            })
            .unwrap_or_else(|| panic!("socket {local} -> {remote} not in the topic"));
        let field = |name: &str| {
            row.get(name)
                .map(|v| v.to_string().trim_matches('"').to_string())
                .unwrap_or_else(|| "0".into())
        };
        let expected = [
            field("idiag_state"),
            field("idiag_family"),
            field("idiag_src"),
            field("timestamp_ns"),
            field("tcpi_snd_mss"),
        ]
        .join("\t");
        assert_eq!(answer, &expected, "socket {local} -> {remote}: ClickHouse vs protobuf");
    }
    println!(
        "ClickHouse: {sent} rows from {} messages; {} test sockets compared",
        messages.len(),
        sockets.len()
    );
}

/// Every codec: a one-shot run produces one message per envelope with the
/// headers and key asked for, and every test socket arrives exactly once.
#[test]
fn round_trip_every_codec_exactly_once() {
    if !can_run() {
        return;
    }
    let broker = Broker::start();
    let loopback = Loopback::open();
    let dest = broker.dest();
    for codec in ["zstd", "lz4", "snappy", "gzip", "none"] {
        let topic = format!("round-trip-{codec}");
        broker.create_topic(&topic);
        let mut args = common_args(&dest, &topic);
        args.extend(["--kafka-compression", codec]);
        // One codec also proves --kafka-key netns (a namespace per message).
        let key = if codec == "none" { "netns" } else { "hostname" };
        args.extend(["--kafka-key", key, "--envelope-flush-rows", "500"]);
        let (stderr, sent) = one_shot_all_sent(&args, codec);

        let messages = broker.consume(&topic, 1);
        assert_eq!(
            total_rows(&messages),
            sent,
            "{codec}: rows read back = rows the daemon sent"
        );
        // 50 rows per envelope: more than one message when there are more sockets.
        assert_eq!(
            messages.len() as u64,
            envelopes_sent(&stderr),
            "{codec}: one message per envelope"
        );
        for m in &messages {
            if key == "netns" {
                let inode: u64 = m.headers["xtcp2-netns"].parse().expect("namespace header");
                assert_eq!(m.key, Some(format!("{HOST}/{inode}")), "{codec}: key");
                assert!(
                    m.rows.iter().all(|r| r["netns_inode"] == inode),
                    "{codec}: every row of the message from namespace {inode}"
                );
            } else {
                assert_eq!(m.key.as_deref(), Some(HOST), "{codec}: key");
                assert!(!m.headers.contains_key("xtcp2-netns"), "{codec}: no namespace header");
            }
            assert_eq!(m.headers["xtcp2-host"], HOST);
            assert_eq!(m.headers["xtcp2-poll-seq"], "1");
            assert_eq!(m.headers["xtcp2-schema"], "xtcp2/protobufList");
            assert_eq!(m.headers["xtcp2-rows"], m.rows.len().to_string());
            assert!(m.rows.iter().all(|r| r["hostname"] == HOST));
        }
        assert_no_duplicates(&messages);
        let ip = loopback.listener.local_addr().expect("addr").ip();
        for (local, remote) in loopback.sockets() {
            let found = messages
                .iter()
                .flat_map(|m| &m.rows)
                .filter(|r| {
                    r["idiag_sport"] == local
                        && r.get("idiag_dport").and_then(Value::as_u64).unwrap_or(0) == remote
                        && is_address(&r["idiag_src"], ip)
                })
                .count();
            assert_eq!(found, 1, "{codec}: socket {local} -> {remote} arrived {found} times");
        }
        println!(
            "{codec}: {} messages, {sent} rows, {} test sockets each once",
            messages.len(),
            loopback.sockets().len()
        );
    }
}

/// The broker down at start: polling goes on, /readyz says the destination
/// is not open; once the broker is up delivery starts, and the rows read
/// back plus the rows dropped (the queue of 2 overflowed meanwhile) are
/// exactly the rows collected, none twice.
#[test]
fn broker_down_at_start_loses_only_what_is_counted() {
    if !can_run() {
        return;
    }
    let mut broker = Broker::not_started();
    let dest = broker.dest();
    let topic = "down-at-start";
    let args = polling_args(&dest, topic, &["--queue-envelopes", "2"]);
    let mut daemon = HttpDaemon::start(&args, Stdio::null());
    daemon.wait_metric("xtcp2_poll_cycles_total", 4.0, Duration::from_secs(20));
    let readyz = http_get(daemon.addr, "/readyz").expect("/readyz");
    assert_eq!(readyz.status, 503, "{}", readyz.text());
    assert!(readyz.text().contains("destination is not open"), "{}", readyz.text());
    let metrics = daemon.metrics();
    assert!(sample(&metrics, "xtcp2_destination_dropped_envelopes_total").unwrap_or(0.0) > 0.0);

    broker.restart();
    broker.create_topic(topic);
    daemon.wait_ready(Duration::from_secs(20));
    daemon.wait_metric("xtcp2_destination_sends_total", 5.0, Duration::from_secs(40));
    let (sent, dropped) = stop_accounted(&mut daemon);
    assert!(dropped > 0, "the queue of 2 overflowed while the broker was down");

    let messages = broker.consume(topic, 1);
    assert_no_duplicates(&messages);
    assert_eq!(total_rows(&messages), sent, "rows read back = rows sent");
}

/// The broker killed mid-run and restarted empty: polling never stops,
/// delivery resumes to the new broker, and every row is sent or counted.
#[test]
fn broker_killed_and_restarted_delivery_resumes() {
    if !can_run() {
        return;
    }
    let topic = "killed";
    let mut broker = Broker::with_topic(topic);
    let dest = broker.dest();
    // librdkafka gives up on a message after 5 s instead of 30 s: the
    // producer stuck on the restarted broker is replaced sooner.
    let args = polling_args(
        &dest,
        topic,
        &["--produce-timeout", "1s", "--kafka-option", "message.timeout.ms=5000"],
    );
    let mut daemon = HttpDaemon::start(&args, Stdio::null());
    daemon.wait_ready(Duration::from_secs(20));
    let sends = daemon.wait_metric("xtcp2_destination_sends_total", 3.0, Duration::from_secs(20));

    broker.kill();
    let polls = sample(&daemon.metrics(), "xtcp2_poll_cycles_total").unwrap_or(0.0);
    daemon.wait_metric("xtcp2_poll_cycles_total", polls + 4.0, Duration::from_secs(20));
    broker.restart();
    broker.create_topic(topic);
    let sends_after = sample(&daemon.metrics(), "xtcp2_destination_sends_total").unwrap_or(0.0);
    daemon.wait_metric(
        "xtcp2_destination_sends_total",
        sends_after.max(sends) + 5.0,
        Duration::from_secs(60),
    );
    // The restarted broker does not know the producer id (its state was
    // in memory): librdkafka retries it forever, so a new producer is made.
    let restarts = sample(&daemon.metrics(), "xtcp2_destination_producer_restarts_total").unwrap_or(0.0);
    assert!(restarts >= 1.0, "a new producer after the restart: {restarts}");
    stop_accounted(&mut daemon);

    // The restarted broker holds what was produced after the restart.
    let messages = broker.consume(topic, 5);
    assert!(messages.len() >= 5, "delivery resumed: {} messages", messages.len());
    assert_no_duplicates(&messages);
}

/// The broker dead at shutdown: SIGTERM still exits 0 within the shutdown
/// budget, and what could not be delivered is counted as dropped.
#[test]
fn broker_dead_at_shutdown_exits_within_the_budget() {
    if !can_run() {
        return;
    }
    let topic = "dead-at-shutdown";
    let mut broker = Broker::with_topic(topic);
    let dest = broker.dest();
    let args = polling_args(&dest, topic, &["--shutdown-timeout", "2s"]);
    let mut daemon = HttpDaemon::start(&args, Stdio::null());
    daemon.wait_ready(Duration::from_secs(20));
    daemon.wait_metric("xtcp2_destination_sends_total", 2.0, Duration::from_secs(20));
    broker.kill();
    let polls = sample(&daemon.metrics(), "xtcp2_poll_cycles_total").unwrap_or(0.0);
    daemon.wait_metric("xtcp2_poll_cycles_total", polls + 3.0, Duration::from_secs(20));
    let started = Instant::now();
    let (_, dropped) = stop_accounted(&mut daemon);
    let took = started.elapsed();
    assert!(took < Duration::from_secs(5), "shutdown took {took:?} with a 2s budget");
    assert!(dropped > 0, "polls after the broker died cannot be delivered");
}

/// The schema registry stand-in (tests/kafka/schema_registry.py); killed on drop.
struct Registry {
    child: Child,
    port: u16,
    record: tempfile::NamedTempFile,
}

impl Registry {
    fn start() -> Registry {
        use std::io::BufRead;
        let record = tempfile::NamedTempFile::new().expect("temp file");
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/kafka/schema_registry.py");
        let mut child = Command::new(python())
            .arg(script)
            .arg(record.path())
            .stdout(Stdio::piped())
            .spawn()
            .expect("start the registry");
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().expect("stdout"))
            .read_line(&mut line)
            .expect("the registry's port");
        let port = line.trim().parse().unwrap_or_else(|_| panic!("no port: {line:?}"));
        Registry { child, port, record }
    }

    /// Every request the registry received, in order.
    fn requests(&self) -> Vec<Value> {
        std::fs::read_to_string(self.record.path())
            .expect("record")
            .lines()
            .map(|l| serde_json::from_str(l).expect("JSON line"))
            .collect()
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `-kafkaSchemaUrl` with `-xtcpProtoFile`: at start the given `.proto` is
/// POSTed to the registry as the value schema of `<topic>-value`, counted
/// as ok; a registry nobody answers at is logged and counted, and delivery
/// goes on regardless.
#[test]
fn schema_is_registered_at_start_and_a_dead_registry_is_not_fatal() {
    if !can_run() {
        return;
    }
    let topic = "registered";
    let broker = Broker::with_topic(topic);
    let registry = Registry::start();
    let proto = Path::new(env!("CARGO_MANIFEST_DIR")).join("proto/xtcp_flat_record_v1.proto");
    let url = format!("http://127.0.0.1:{}", registry.port);
    let dest = broker.dest();
    let proto_path = proto.to_str().expect("UTF-8 path");
    let args = polling_args(&dest, topic, &["-kafkaSchemaUrl", &url, "-xtcpProtoFile", proto_path]);
    let mut daemon = HttpDaemon::start(&args, Stdio::null());
    daemon.wait_metric(
        "xtcp2_destination_schema_registrations_total{kind=\"ok\"}",
        1.0,
        Duration::from_secs(20),
    );
    daemon.wait_metric("xtcp2_destination_sends_total", 1.0, Duration::from_secs(20));
    daemon.stop_cleanly(Duration::from_secs(10));
    let requests = registry.requests();
    assert_eq!(requests.len(), 1, "one registration: {requests:?}");
    let request = &requests[0];
    assert_eq!(request["path"], format!("/subjects/{topic}-value/versions"));
    assert_eq!(request["content_type"], "application/vnd.schemaregistry.v1+json");
    let body: Value = serde_json::from_str(request["body"].as_str().expect("body")).expect("JSON body");
    assert_eq!(body["schemaType"], "PROTOBUF");
    assert_eq!(
        body["schema"].as_str().expect("schema"),
        std::fs::read_to_string(&proto).expect("proto"),
        "the registered schema is -xtcpProtoFile's text"
    );

    // Nobody listens there: counted as a failed request, delivery unaffected.
    let dead = format!("http://127.0.0.1:{}", free_port());
    let args = polling_args(&dest, topic, &["--kafka-schema-url", &dead]);
    let mut daemon = HttpDaemon::start(&args, Stdio::null());
    daemon.wait_metric(
        "xtcp2_destination_schema_registrations_total{kind=\"request\"}",
        1.0,
        Duration::from_secs(20),
    );
    daemon.wait_metric("xtcp2_destination_sends_total", 2.0, Duration::from_secs(20));
    daemon.stop_cleanly(Duration::from_secs(10));
}
