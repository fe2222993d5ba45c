//! Configuration: every flag is defined once here (clap), then validated
//! into a typed [`Config`] that the rest of the program receives. Nothing
//! outside this module parses flags or reads configuration environment
//! variables, and nothing parses a flag's text again after validation: the
//! destination is a [`Destination`], the format a [`StreamFormat`].
//!
//! Each flag has an idiomatic `--kebab-case` name, the Go xtcp2 spelling as
//! an alias (accepted with one dash, see [`argv`]), and an environment
//! variable fallback. Each subcommand takes only the flags it applies: the
//! output flags ([`OutputArgs`]) are shared by the daemon and `decode`; a
//! daemon flag given to `decode` is an error, not silence.

pub mod argv;
pub mod docs;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};

use crate::batch::FlushLimits;
use crate::decode::Deserializers;
use crate::format::{Format, StreamFormat};
use crate::kernel::parse_states;
use crate::observe::{ObserveConfig, PprofServing};
use crate::profile::pyroscope::PyroscopeConfig;
use crate::profile::ProfileMode;
use crate::record::{RecordSchema, Stamps};
use crate::sink::Destination;

/// Default poll period.
pub(crate) const DEFAULT_FREQUENCY: &str = "10s";

/// The documented range of every numeric flag, checked at validation (exit
/// 2 naming the flag and its range), so no value can overflow a deadline,
/// allocate without bound or spawn without bound later. Each bound is far
/// beyond any useful setting.
pub mod bounds {
    use std::time::Duration;

    /// A poll period above a day is a misconfiguration, and keeps deadline
    /// arithmetic (three periods for readiness) far from overflow.
    pub const FREQUENCY: (Duration, Duration) = (Duration::from_millis(1), Duration::from_secs(86_400));
    /// A dump deadline of zero would give every poll zero records.
    pub const TIMEOUT: (Duration, Duration) = (Duration::from_millis(1), Duration::from_secs(86_400));
    /// The start delay is at most a day, like the period.
    pub const POLL_JITTER: (Duration, Duration) = (Duration::ZERO, Duration::from_secs(86_400));
    pub const NETNS_PROC_RESCAN: (Duration, Duration) = (Duration::ZERO, Duration::from_secs(86_400));
    pub const PRODUCE_TIMEOUT: (Duration, Duration) = (Duration::from_millis(1), Duration::from_secs(3_600));
    /// Long enough for a slow destination, short enough for systemd's stop.
    pub const SHUTDOWN_TIMEOUT: (Duration, Duration) = (Duration::ZERO, Duration::from_secs(600));
    /// Netlink receive timeout, milliseconds: up to a minute.
    pub const NLTIMEOUT_MS: (u64, u64) = (1, 60_000);
    /// Threads dumping in parallel: one per namespace at most is useful, and
    /// each holds a receive buffer; 256 covers the busiest node.
    pub const NETLINKERS: (u64, u64) = (1, 256);
    pub const ENVELOPE_FLUSH_ROWS: (u64, u64) = (1, 10_000_000);
    /// The envelope's hard cap is 1 GiB.
    pub const ENVELOPE_FLUSH_BYTES: (u64, u64) = (1, 1 << 30);
    /// Envelopes waiting for the destination.
    pub const QUEUE_ENVELOPES: (u64, u64) = (1, 65_536);
    /// Memory of the waiting envelopes: from 1 MiB (about one envelope)
    /// to 64 GiB.
    pub const QUEUE_BYTES: (u64, u64) = (1 << 20, 1 << 36);
    pub const PYROSCOPE_SAMPLE_HZ: (u64, u64) = (1, 10_000);
    pub const PYROSCOPE_UPLOAD_SEC: (u64, u64) = (1, 3_600);
    pub const IO_URING_BATCH: (u64, u64) = (1, 4_096);
    /// Keep every Nth socket.
    pub const MODULUS: (u64, u64) = (1, 1_000_000);
    /// `--emit-heartbeat` polls (the tracking entry counts them in 16 bits).
    pub const EMIT_HEARTBEAT: (u64, u64) = (1, 10_000);
    pub const POLL_JITTER_PCT: (u64, u64) = (0, 100);
    pub const RECONCILE_FREQUENCY: (Duration, Duration) = (Duration::ZERO, Duration::from_secs(7 * 86_400));
    /// The receive buffer (`--packet-size` x `--packet-size-mply`): up to 16 MiB.
    pub const RECV_BUFFER: (u64, u64) = (0, 16 << 20);
    pub const TTL: (u64, u64) = (0, 255);
    /// The record has two uplink slots (the Go record's uplink1/uplink2).
    pub const UPLINK_COUNT: (u64, u64) = (1, 2);
    /// Label sets of `--aggregate-metrics`: each costs about 300 bytes and
    /// ~35 series in every scrape, so 100,000 is already more than one
    /// Prometheus target should carry.
    pub const AGGREGATE_MAX_SERIES: (u64, u64) = (1, 100_000);
}

#[derive(Debug, Parser)]
#[command(
    name = "xtcp2",
    version,
    about = "Streams the kernel's per-socket TCP state (inet_diag) from every network namespace",
    after_help = "Go xtcp2 spellings such as -promListen, -maxLoops, -profile.mode are accepted too.",
    args_conflicts_with_subcommands = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<CliCommand>,
    /// The Go daemon's `-v`: print the version (as --version / -V).
    #[arg(short = 'v', action = clap::ArgAction::Version, hide = true)]
    pub go_version: (),
    #[command(flatten)]
    pub daemon: DaemonArgs,
}

#[derive(Debug, Subcommand)]
pub enum CliCommand {
    /// Decode saved netlink traffic (no capabilities needed) and print records.
    Decode(DecodeArgs),
    /// Control a running daemon over gRPC (its -grpcPort / --grpc-listen).
    Ctl(crate::grpc::client::CtlArgs),
    /// Print a running daemon's records as they are collected, over gRPC.
    Client(crate::grpc::client::ClientArgs),
}

/// `xtcp2 decode`: an input, and the output flags it shares with the daemon.
#[derive(Debug, clap::Args)]
pub struct DecodeArgs {
    #[command(flatten)]
    pub input: DecodeInput,
    #[command(flatten)]
    pub output: OutputArgs,
}

#[derive(Debug, clap::Args)]
#[group(required = true, multiple = false)]
pub struct DecodeInput {
    /// A DLT_NETLINK pcap (only packets of netlink protocol 4 are read).
    #[arg(long, value_name = "FILE")]
    pub pcap: Option<PathBuf>,
    /// A bare stream of netlink messages.
    #[arg(long, value_name = "FILE")]
    pub raw: Option<PathBuf>,
}

/// What a record holds and how it is written: the daemon's and `decode`'s.
#[derive(Debug, Clone, clap::Args)]
pub struct OutputArgs {
    /// Output format (the list is generated from the format registry);
    /// default jsonl, or protobufList for a kafka: destination.
    #[arg(long, env = "XTCP2_MARSHAL")]
    pub marshal: Option<Format>,
    /// csv/tsv columns, comma separated, in order (default: all), by the
    /// record schema's names.
    #[arg(long, env = "XTCP2_COLUMNS", default_value = "")]
    pub columns: String,
    /// The record every format writes: xtcp2 (ours, proto/xtcp2.proto) or
    /// xtcp_flat_record.v1 (the Go daemon's, proto/xtcp_flat_record_v1.proto,
    /// with its field names and numbers).
    #[arg(
        long = "record-schema",
        alias = "recordSchema",
        env = "XTCP2_RECORD_SCHEMA",
        default_value = "xtcp2"
    )]
    pub record_schema: RecordSchema,
    /// Attribute decoders: default (all but meminfo), all, "" or a comma list
    /// of info,cong,meminfo,skmem,bbr,dctcp,vegas,tos,tc,shut,classid,cgroup,sockopt.
    #[arg(long, env = "XTCP2_DESERIALIZERS", default_value = "default")]
    pub deserializers: String,
    /// Label stamped on every record.
    #[arg(long, env = "XTCP2_LABEL", default_value = "")]
    pub label: String,
    /// Tag stamped on every record.
    #[arg(long, env = "XTCP2_TAG", default_value = "")]
    pub tag: String,
    /// Location stamped on every record.
    #[arg(long, env = "XTCP2_LOCATION", default_value = "")]
    pub location: String,
    /// Host name stamped on every record (the daemon's default: the kernel's
    /// host name; `decode`'s: none, as the capture may come from elsewhere).
    #[arg(long, env = "XTCP_HOSTNAME", default_value = "")]
    pub hostname: String,
}

/// Flags of the collector daemon.
#[derive(Debug, Clone, clap::Args)]
pub struct DaemonArgs {
    /// Poll period (e.g. 500ms, 10s, 1m; a bare number is seconds).
    #[arg(long, alias = "frequency", env = "XTCP2_FREQUENCY", default_value = DEFAULT_FREQUENCY)]
    pub frequency: String,
    /// Per-namespace dump deadline, shorter than --frequency; auto = 90 % of
    /// --frequency, or 60s for a one-shot (--max-loops 1). A dump cut short
    /// makes the poll incomplete: counted, logged as an error, exit 3 for --max-loops runs.
    #[arg(long, env = "XTCP2_TIMEOUT", default_value = "auto")]
    pub timeout: String,
    /// Collections to run before exiting; 0 = forever, 1 = one-shot.
    #[arg(long = "max-loops", alias = "maxLoops", env = "XTCP2_MAX_LOOPS", default_value_t = 0)]
    pub max_loops: u64,
    /// Random delay before the first poll, up to this, to spread a fleet.
    #[arg(
        long = "poll-jitter",
        alias = "pollJitter",
        env = "XTCP2_POLL_JITTER",
        default_value = "0s"
    )]
    pub poll_jitter: String,
    /// Destination (the list is generated from the destination registry).
    #[arg(long, env = "XTCP2_DEST", default_value = "stdout")]
    pub dest: String,
    #[command(flatten)]
    pub output: OutputArgs,
    /// TCP states to dump: all, or a comma list (established,listen,time-wait,...).
    #[arg(long, env = "XTCP2_STATES", default_value = "all")]
    pub states: String,
    /// Socket filter in the `ss` language, run by the kernel on each socket
    /// (e.g. "dport = :443 and dst 10.0.0.0/8"); see docs/filters.md.
    #[arg(long, env = "XTCP2_FILTER", default_value = "")]
    pub filter: String,
    /// Netlink receive timeout, milliseconds.
    #[arg(long, env = "XTCP2_NLTIMEOUT", default_value_t = 1000)]
    pub nltimeout: u64,
    /// Namespaces dumped in parallel.
    #[arg(long, env = "XTCP2_NETLINKERS", default_value_t = 4)]
    pub netlinkers: usize,
    /// Directories of bind-mounted namespaces to watch, comma separated.
    #[arg(
        long = "netns-dirs",
        alias = "netnsDirs",
        env = "XTCP2_NETNS_DIRS",
        default_value = "/run/netns,/run/docker/netns"
    )]
    pub netns_dirs: String,
    /// Scan /proc/*/ns/net for namespaces held only by processes.
    #[arg(long = "netns-proc-scan", alias = "netnsProcScan", env = "XTCP2_NETNS_PROC_SCAN", default_value = "true",
          num_args = 0..=1, default_missing_value = "true", value_parser = clap::value_parser!(bool))]
    pub netns_proc_scan: bool,
    /// How often the /proc scan stats every process again (between full
    /// scans only new processes are stat'ed); 0 = every poll.
    #[arg(
        long = "netns-proc-rescan",
        alias = "netnsProcRescan",
        env = "XTCP2_NETNS_PROC_RESCAN",
        default_value = "30s"
    )]
    pub netns_proc_rescan: String,
    /// Flush an envelope when it holds this many records.
    #[arg(
        long = "envelope-flush-rows",
        alias = "envelopeFlushRows",
        env = "XTCP2_ENVELOPE_FLUSH_ROWS",
        default_value_t = 10_000
    )]
    pub envelope_flush_rows: usize,
    /// Flush an envelope when its encoded size reaches this many bytes.
    #[arg(long = "envelope-flush-bytes", alias = "envelopeFlushBytes", env = "XTCP2_ENVELOPE_FLUSH_BYTES", default_value_t = 768 * 1024)]
    pub envelope_flush_bytes: usize,
    /// Envelopes that may wait for a slow destination before the oldest is
    /// dropped (a cap on their number; --queue-bytes bounds their memory).
    #[arg(
        long = "queue-envelopes",
        alias = "queueEnvelopes",
        env = "XTCP2_QUEUE_ENVELOPES",
        default_value_t = 1024
    )]
    pub queue_envelopes: usize,
    /// Memory the envelopes waiting for a slow destination may hold before
    /// the oldest is dropped (64 MiB: a whole poll of 150,000 sockets in
    /// protobufList, or of 30,000 in jsonl).
    #[arg(
        long = "queue-bytes",
        alias = "queueBytes",
        env = "XTCP2_QUEUE_BYTES",
        default_value_t = 64 << 20
    )]
    pub queue_bytes: usize,
    /// The Kafka topic, NATS subject, or Valkey stream or channel every
    /// envelope goes to (kafka:, nats:, valkey: destinations).
    #[arg(long, env = "XTCP2_TOPIC", default_value = crate::sink::kafka::DEFAULT_TOPIC)]
    pub topic: String,
    /// Kafka compression: "" or auto (zstd), zstd, lz4, snappy, gzip, none.
    #[arg(
        long = "kafka-compression",
        alias = "kafkaCompression",
        env = "XTCP2_KAFKA_COMPRESSION",
        default_value = ""
    )]
    pub kafka_compression: String,
    /// Kafka message key: none (spread over partitions), hostname (one
    /// host's envelopes in order in one partition) or netns (one envelope
    /// per namespace, keyed HOSTNAME/INODE: one namespace's in order).
    #[arg(long = "kafka-key", env = "XTCP2_KAFKA_KEY", default_value = "none")]
    pub kafka_key: String,
    /// A librdkafka property KEY=VALUE (TLS, SASL, linger.ms, batch.size,
    /// acks, ...), repeatable (in the environment: separated by ';'); wins
    /// over our defaults. Secret values (passwords, keys, tokens) are never
    /// logged nor printed by -conf.
    #[arg(
        long = "kafka-option",
        value_name = "KEY=VALUE",
        env = "XTCP2_KAFKA_OPTION",
        value_delimiter = ';'
    )]
    pub kafka_option: Vec<String>,
    /// Confluent-compatible schema registry: the record's .proto is
    /// registered there at start as the subject TOPIC-value; a failure is
    /// logged and counted, never fatal. Empty: no registration (the Go
    /// daemon's default is http://localhost:18081).
    #[arg(
        long = "kafka-schema-url",
        alias = "kafkaSchemaUrl",
        env = "XTCP2_KAFKA_SCHEMA_URL",
        default_value = ""
    )]
    pub kafka_schema_url: String,
    /// The .proto registered with --kafka-schema-url; empty: the built-in
    /// .proto of --record-schema (proto/xtcp2.proto or xtcp_flat_record_v1.proto).
    #[arg(
        long = "xtcp-proto-file",
        alias = "xtcpProtoFile",
        env = "XTCP2_PROTO_FILE",
        default_value = ""
    )]
    pub xtcp_proto_file: String,
    /// Timeout of one write or POST to the destination.
    #[arg(
        long = "produce-timeout",
        alias = "produceTimeout",
        env = "XTCP2_PRODUCE_TIMEOUT",
        default_value = "5s"
    )]
    pub produce_timeout: String,
    /// At shutdown, how long delivery may go on once the last poll is
    /// queued, the send in flight included; what is left is dropped and counted.
    #[arg(
        long = "shutdown-timeout",
        alias = "shutdownTimeout",
        env = "XTCP2_SHUTDOWN_TIMEOUT",
        default_value = "2s"
    )]
    pub shutdown_timeout: String,
    /// nats: jetstream (publish acknowledged by the stream) or core (the Go
    /// daemon's plain publish, counted as unconfirmed).
    #[arg(long = "nats-mode", env = "XTCP2_NATS_MODE", default_value = "jetstream")]
    pub nats_mode: String,
    /// nats: create the JetStream stream (file storage, on --topic) if it
    /// does not exist.
    #[arg(long = "nats-create-stream", env = "XTCP2_NATS_CREATE_STREAM", default_value = "false",
          num_args = 0..=1, default_missing_value = "true", value_parser = clap::value_parser!(bool))]
    pub nats_create_stream: bool,
    /// nats: the stream --nats-create-stream creates (default: --topic with
    /// '.', '*', '>' and spaces as '_').
    #[arg(long = "nats-stream", env = "XTCP2_NATS_STREAM", default_value = "")]
    pub nats_stream: String,
    /// nats: a credentials file (.creds: JWT and NKey seed); user and
    /// password can also be given in the URL nats://USER:PASS@HOST:PORT.
    #[arg(long = "nats-credentials", env = "XTCP2_NATS_CREDENTIALS", default_value = "")]
    pub nats_credentials: String,
    /// nats: require TLS (verified against the system's roots).
    #[arg(long = "nats-tls", env = "XTCP2_NATS_TLS", default_value = "false",
          num_args = 0..=1, default_missing_value = "true", value_parser = clap::value_parser!(bool))]
    pub nats_tls: bool,
    /// valkey: stream (XADD, capped by --valkey-maxlen) or publish (the Go
    /// daemon's PUBLISH, counted as unconfirmed when nobody received it).
    #[arg(long = "valkey-mode", env = "XTCP2_VALKEY_MODE", default_value = "stream")]
    pub valkey_mode: String,
    /// valkey: the stream keeps about this many envelopes (XADD MAXLEN ~); 0 = no cap.
    #[arg(long = "valkey-maxlen", env = "XTCP2_VALKEY_MAXLEN", default_value_t = crate::sink::valkey::DEFAULT_MAXLEN)]
    pub valkey_maxlen: u64,
    /// valkey: ACL user name (empty: the default user).
    #[arg(long = "valkey-user", env = "XTCP2_VALKEY_USER", default_value = "")]
    pub valkey_user: String,
    /// valkey: password (prefer the environment: never logged nor printed by -conf).
    #[arg(
        long = "valkey-password",
        env = "XTCP2_VALKEY_PASSWORD",
        default_value = "",
        hide_env_values = true
    )]
    pub valkey_password: String,
    /// valkey: database number.
    #[arg(long = "valkey-db", env = "XTCP2_VALKEY_DB", default_value_t = 0)]
    pub valkey_db: u32,
    /// valkey: connect with TLS (verified against the system's roots).
    #[arg(long = "valkey-tls", env = "XTCP2_VALKEY_TLS", default_value = "false",
          num_args = 0..=1, default_missing_value = "true", value_parser = clap::value_parser!(bool))]
    pub valkey_tls: bool,
    /// Listener for /metrics, /healthz and /readyz (:PORT = every address); empty disables.
    #[arg(
        long = "prom-listen",
        alias = "promListen",
        env = "XTCP2_PROM_LISTEN",
        default_value = ":9088"
    )]
    pub prom_listen: String,
    /// Path of the Prometheus exposition (not /healthz, /readyz or /debug/pprof).
    #[arg(
        long = "prom-path",
        alias = "promPath",
        env = "XTCP2_PROM_PATH",
        default_value = "/metrics"
    )]
    pub prom_path: String,
    /// Bounded aggregates in /metrics: per namespace and workload (pod,
    /// container), sockets by state, histograms of smoothed RTT and of
    /// retransmitted segments, bytes acked and received (docs/observability.md).
    #[arg(long = "aggregate-metrics", env = "XTCP2_AGGREGATE_METRICS", default_value = "false",
          num_args = 0..=1, default_missing_value = "true", value_parser = clap::value_parser!(bool))]
    pub aggregate_metrics: bool,
    /// --aggregate-metrics: label sets (namespace x workload) shown at most;
    /// the rest are folded into one labelled `other`.
    #[arg(
        long = "aggregate-max-series",
        env = "XTCP2_AGGREGATE_MAX_SERIES",
        default_value_t = 1000
    )]
    pub aggregate_max_series: u64,
    /// Serve /debug/pprof/* (CPU and heap profiles) on --prom-listen too.
    #[arg(long = "pprof", env = "XTCP2_PPROF", default_value = "false",
          num_args = 0..=1, default_missing_value = "true", value_parser = clap::value_parser!(bool))]
    pub pprof: bool,
    /// Serve /debug/pprof/* only on this listener of its own (e.g. 127.0.0.1:6060); empty: see --pprof.
    #[arg(
        long = "pprof-listen",
        alias = "pprofListen",
        env = "XTCP2_PPROF_LISTEN",
        default_value = ""
    )]
    pub pprof_listen: String,
    /// One-shot profile of the whole run, written at exit: cpu or mem.
    #[arg(
        long = "profile-mode",
        alias = "profile.mode",
        env = "XTCP2_PROFILE_MODE",
        default_value = ""
    )]
    pub profile_mode: String,
    /// Directory the one-shot profile is written to.
    #[arg(
        long = "profile-path",
        alias = "profile.path",
        env = "XTCP2_PROFILE_PATH",
        default_value = "."
    )]
    pub profile_path: PathBuf,
    /// Pyroscope server URL; empty disables the push.
    #[arg(
        long = "pyroscope-url",
        alias = "pyroscopeUrl",
        env = "PYROSCOPE_URL",
        default_value = ""
    )]
    pub pyroscope_url: String,
    /// Application name reported to Pyroscope.
    #[arg(
        long = "pyroscope-app-name",
        alias = "pyroscopeAppName",
        env = "PYROSCOPE_APP_NAME",
        default_value = "xtcp2"
    )]
    pub pyroscope_app_name: String,
    /// Sampling frequency of the Pyroscope CPU profile.
    #[arg(
        long = "pyroscope-sample-hz",
        alias = "pyroscopeSampleHz",
        env = "PYROSCOPE_SAMPLE_HZ",
        default_value_t = 100
    )]
    pub pyroscope_sample_hz: u32,
    /// Seconds between Pyroscope uploads.
    #[arg(
        long = "pyroscope-upload-sec",
        alias = "pyroscopeUploadSec",
        env = "PYROSCOPE_UPLOAD_SEC",
        default_value_t = 15
    )]
    pub pyroscope_upload_sec: u64,
    /// Receive with io_uring instead of recv(2).
    #[arg(long = "io-uring", alias = "ioUring", env = "XTCP2_IO_URING", default_value = "false",
          num_args = 0..=1, default_missing_value = "true", value_parser = clap::value_parser!(bool))]
    pub io_uring: bool,
    /// io_uring: receive submissions kept in flight per dump.
    #[arg(
        long = "io-uring-recv-batch",
        alias = "ioUringRecvBatch",
        env = "XTCP2_IO_URING_RECV_BATCH",
        default_value_t = 4
    )]
    pub io_uring_recv_batch: u32,
    /// io_uring: completions reaped per wait.
    #[arg(
        long = "io-uring-cqe-batch",
        alias = "ioUringCqeBatch",
        env = "XTCP2_IO_URING_CQE_BATCH",
        default_value_t = 4
    )]
    pub io_uring_cqe_batch: u32,
    /// Save this many raw netlink replies per netlinker, as a DLT_NETLINK pcap
    /// in --capture-path that `xtcp2 decode --pcap` reads (test data); 0 = none.
    #[arg(
        long = "write-files",
        alias = "writeFiles",
        env = "XTCP2_WRITE_FILES",
        default_value_t = 0
    )]
    pub write_files: u64,
    /// Directory --write-files writes xtcp2-<pid>-netlinker<N>.pcap to (created new, 0600).
    #[arg(
        long = "capture-path",
        alias = "capturePath",
        env = "XTCP2_CAPTURE_PATH",
        default_value = "./"
    )]
    pub capture_path: PathBuf,
    /// Also write the first N marshalled envelopes, exactly as sent, each to
    /// a file xtcp2-<pid>-envelope<i>.<marshal> in --capture-path (debugging;
    /// created new, 0600). The Go daemon's default is 10; ours 0 (none).
    #[arg(
        long = "dest-write-files",
        alias = "destWriteFiles",
        env = "XTCP2_DEST_WRITE_FILES",
        default_value_t = 0
    )]
    pub dest_write_files: u64,
    /// Keep every Nth socket of each netlinker's stream (sampling); 1 = every socket.
    #[arg(long, env = "XTCP2_MODULUS", default_value_t = 1)]
    pub modulus: u64,
    /// Which records a poll sends: all (every socket, every poll) or
    /// changed (a socket's first record, then only when its state, queues
    /// or counters changed, and every --emit-heartbeat polls; see docs/flows.md).
    #[arg(long, env = "XTCP2_EMIT", default_value = "all")]
    pub emit: String,
    /// With --emit changed: an unchanged socket is still sent every N polls,
    /// so that consumers tell idle from gone.
    #[arg(long = "emit-heartbeat", env = "XTCP2_EMIT_HEARTBEAT", default_value_t = 10)]
    pub emit_heartbeat: u64,
    /// Flow events: flow_event = open on a socket's first record, and one
    /// close record per socket, from the kernel's destroy notifications
    /// (connections between two polls included) or the poll difference.
    #[arg(long = "flow-events", env = "XTCP2_FLOW_EVENTS", default_value = "false", num_args = 0..=1,
          default_missing_value = "true", value_parser = clap::value_parser!(bool))]
    pub flow_events: bool,
    /// Per-second rates since the socket's previous poll: bytes acked and
    /// received, segments out and in, retransmissions (*_per_s fields).
    #[arg(long, env = "XTCP2_RATES", default_value = "false", num_args = 0..=1,
          default_missing_value = "true", value_parser = clap::value_parser!(bool))]
    pub rates: bool,
    /// Jitter of every poll tick, percent of --frequency (each period is
    /// drawn from frequency +/- half of it), and of the first poll unless one-shot.
    #[arg(
        long = "poll-jitter-pct",
        alias = "pollJitterPct",
        env = "XTCP2_POLL_JITTER_PCT",
        default_value_t = 20
    )]
    pub poll_jitter_pct: u64,
    /// Full namespace rediscovery at this period when --reconcile-before-poll
    /// is off (inotify still wakes it for --netns-dirs); 0 = never.
    #[arg(
        long = "reconcile-frequency",
        alias = "reconcileFrequency",
        env = "XTCP2_RECONCILE_FREQUENCY",
        default_value = "6h"
    )]
    pub reconcile_frequency: String,
    /// Rediscover namespaces (directories and the /proc scan) before every poll.
    #[arg(long = "reconcile-before-poll", alias = "reconcileBeforePoll", env = "XTCP2_RECONCILE_BEFORE_POLL",
          default_value = "true", num_args = 0..=1, default_missing_value = "true",
          value_parser = clap::value_parser!(bool))]
    pub reconcile_before_poll: bool,
    /// First netlink sequence number of each namespace's socket.
    #[arg(
        long = "nlmsg-seq",
        alias = "nlmsgSeq",
        env = "XTCP2_NLMSG_SEQ",
        default_value_t = 666
    )]
    pub nlmsg_seq: u32,
    /// Receive buffer unit in bytes, 0 = the page size; the buffer is this x
    /// --packet-size-mply, and never below 64 KiB (ours: a dump's datagrams fill it).
    #[arg(
        long = "packet-size",
        alias = "packetSize",
        env = "XTCP2_PACKET_SIZE",
        default_value_t = 0
    )]
    pub packet_size: u64,
    /// Receive buffer = --packet-size x this.
    #[arg(
        long = "packet-size-mply",
        alias = "packetSizeMply",
        env = "XTCP2_PACKET_SIZE_MPLY",
        default_value_t = 8
    )]
    pub packet_size_mply: u64,
    /// IP TTL of the replies of the daemon's listeners; 0 = the system's default.
    #[arg(long = "ipv4-ttl", alias = "ipv4Ttl", env = "IPV4_TTL", default_value_t = 0)]
    pub ipv4_ttl: u32,
    /// IPv6 hop limit of the replies of the daemon's listeners; 0 = the system's default.
    #[arg(
        long = "ipv6-hop-limit",
        alias = "ipv6HopLimit",
        env = "IPV6_HOP_LIMIT",
        default_value_t = 0
    )]
    pub ipv6_hop_limit: u32,
    /// Log verbosity as the Go daemon's debug level: 0 warn, 1-99 info,
    /// 100-999 debug, 1000+ trace; unset: XTCP2_LOG or info.
    #[arg(short = 'd', long = "debug-level", alias = "d", env = "XTCP2_DEBUG_LEVEL")]
    pub debug_level: Option<u64>,
    /// Print the effective configuration (every flag's value, as JSON) and exit.
    #[arg(long, env = "XTCP2_CONF", default_value = "false", num_args = 0..=1,
          default_missing_value = "true", value_parser = clap::value_parser!(bool))]
    pub conf: bool,
    /// Probe the local /readyz (--prom-listen) and exit 0 when ready, 1 when
    /// not; starts nothing (a container HEALTHCHECK).
    #[arg(long, env = "XTCP2_HEALTHCHECK", default_value = "false", num_args = 0..=1,
          default_missing_value = "true", value_parser = clap::value_parser!(bool))]
    pub healthcheck: bool,
    /// Go runtime: CPUs used. Accepted for compatibility; no effect (logged).
    #[arg(long = "go-max-procs", alias = "goMaxProcs", env = "XTCP2_GO_MAX_PROCS")]
    pub go_max_procs: Option<u64>,
    /// Go runtime: OS thread cap. Accepted for compatibility; no effect (logged).
    #[arg(long = "max-threads", alias = "maxThreads", env = "XTCP2_MAX_THREADS")]
    pub max_threads: Option<i64>,
    /// Attribute each socket to its workload from its cgroup v2 path:
    /// container_id and container_runtime (Docker, containerd, CRI-O,
    /// Podman), pod_uid (Kubernetes), systemd_unit. Turns the cgroup decoder on.
    #[arg(long = "resolve-container-id", alias = "resolveContainerId", env = "CONTAINER_ID_RESOLVE",
          default_value = "false", num_args = 0..=1, default_missing_value = "true",
          value_parser = clap::value_parser!(bool))]
    pub resolve_container_id: bool,
    /// Name and image of the Docker container owning each socket's network
    /// namespace, from the Docker Engine API on --docker-socket (followed live).
    #[arg(long = "enrich-container", alias = "enrichContainer", env = "ENRICH_CONTAINER",
          default_value = "false", num_args = 0..=1, default_missing_value = "true",
          value_parser = clap::value_parser!(bool))]
    pub enrich_container: bool,
    /// The Docker Engine's unix socket, for --enrich-container.
    #[arg(
        long = "docker-socket",
        alias = "dockerSocket",
        env = "DOCKER_SOCKET",
        default_value = "/run/docker.sock"
    )]
    pub docker_socket: PathBuf,
    /// Each namespace's id (NETNSA_NSID) as the daemon's namespace knows it,
    /// into `nsid`: read with rtnetlink once per namespace found, never
    /// assigned (a namespace without one has no `nsid`).
    #[arg(long = "populate-nsid", alias = "populateNsid", env = "POPULATE_NSID",
          default_value = "false", num_args = 0..=1, default_missing_value = "true",
          value_parser = clap::value_parser!(bool))]
    pub populate_nsid: bool,
    /// Identity of each uplink NIC (driver, model, PCI ids, bus address,
    /// speed, firmware) on every record, from sysfs and the ethtool ioctl;
    /// re-read when a link or route changes.
    #[arg(long = "enrich-nic", alias = "enrichNic", env = "ENRICH_NIC",
          default_value = "false", num_args = 0..=1, default_missing_value = "true",
          value_parser = clap::value_parser!(bool))]
    pub enrich_nic: bool,
    /// Uplink slots filled by --enrich-nic (1 or 2).
    #[arg(
        long = "uplink-count",
        alias = "uplinkCount",
        env = "UPLINK_COUNT",
        default_value_t = 2
    )]
    pub uplink_count: u64,
    /// The uplinks, comma separated, in slot order; empty: the interfaces
    /// of the default routes (IPv4 then IPv6, lowest metric first).
    #[arg(
        long = "uplink-interfaces",
        alias = "uplinkInterfaces",
        env = "XTCP2_UPLINK_INTERFACES",
        default_value = ""
    )]
    pub uplink_interfaces: String,
    /// Each uplink's LLDP neighbour (switch name and id, management
    /// address, port id and description) from lldpd, via `lldpcli -f json0`
    /// every 30 s and on link changes. The uplinks are those of --enrich-nic.
    #[arg(long = "enrich-lldp", alias = "enrichLldp", env = "ENRICH_LLDP",
          default_value = "false", num_args = 0..=1, default_missing_value = "true",
          value_parser = clap::value_parser!(bool))]
    pub enrich_lldp: bool,
    /// lldpd's control socket, for --enrich-lldp.
    #[arg(
        long = "lldpd-socket",
        alias = "lldpdSocket",
        env = "LLDPD_SOCKET",
        default_value = "/run/lldpd.socket"
    )]
    pub lldpd_socket: PathBuf,
    /// The Go daemon's lldpd protocol version hint: accepted and logged; no
    /// effect (lldpcli's json0 output is the same for every lldpd version).
    #[arg(
        long = "lldpd-version-hint",
        alias = "lldpdVersionHint",
        env = "XTCP2_LLDPD_VERSION_HINT",
        default_value = ""
    )]
    pub lldpd_version_hint: String,
    /// The lldpd client run by --enrich-lldp (a bare name is looked up in PATH).
    #[arg(long = "lldpcli", env = "XTCP2_LLDPCLI", default_value = "lldpcli")]
    pub lldpcli: PathBuf,
    /// gRPC listener (ConfigService, XTCPFlatRecordService, health,
    /// reflection; docs/grpc.md): HOST:PORT, or :PORT for every address.
    /// Empty: see --grpc-port; neither: no gRPC.
    #[arg(long = "grpc-listen", env = "XTCP2_GRPC_LISTEN", default_value = "")]
    pub grpc_listen: String,
    /// The Go daemon's -grpcPort: serve gRPC on 127.0.0.1:PORT (loopback,
    /// unlike the Go daemon's every address; --grpc-listen for others).
    #[arg(long = "grpc-port", alias = "grpcPort", env = "XTCP2_GRPC_PORT")]
    pub grpc_port: Option<u16>,
    /// PEM certificate chain of the gRPC listener: serve gRPC over TLS (with --grpc-tls-key).
    #[arg(long = "grpc-tls-cert", env = "XTCP2_GRPC_TLS_CERT", value_name = "FILE")]
    pub grpc_tls_cert: Option<PathBuf>,
    /// PEM private key of --grpc-tls-cert.
    #[arg(long = "grpc-tls-key", env = "XTCP2_GRPC_TLS_KEY", value_name = "FILE")]
    pub grpc_tls_key: Option<PathBuf>,
    /// PEM CA certificates: gRPC clients must present a certificate they signed (mutual TLS).
    #[arg(long = "grpc-tls-client-ca", env = "XTCP2_GRPC_TLS_CLIENT_CA", value_name = "FILE")]
    pub grpc_tls_client_ca: Option<PathBuf>,
    /// Skip the startup capability check (for unprivileged decode/testing only).
    #[arg(long = "skip-capability-check", env = "XTCP2_SKIP_CAPABILITY_CHECK", hide = true)]
    pub skip_capability_check: bool,
}

/// The clap command, with the lists of valid `--dest` and `--marshal`
/// values filled in from the registries (so `--help` cannot drift).
pub fn command() -> clap::Command {
    let marshal_help = format!(
        "Output format: {} (default jsonl; protobufList for a kafka: destination)",
        Format::names()
    );
    let dest_help = format!("Destination: {}", Destination::forms());
    // mut_args keeps the flags' order (mut_arg would move one to the end).
    let fill = move |a: clap::Arg| match a.get_id().as_str() {
        "dest" => a.help(dest_help.clone()),
        "marshal" => a.help(marshal_help.clone()),
        _ => a,
    };
    Cli::command()
        .mut_args(fill.clone())
        .mut_subcommand("decode", |d| d.mut_args(fill))
}

/// `-conf`: every daemon flag's effective value (from the command line,
/// the environment or the default) as a JSON object keyed by flag name,
/// plus the values derived from them (`timeout_effective`). Credentials in
/// the Pyroscope URL are masked.
pub fn effective_flags(args: impl IntoIterator<Item = std::ffi::OsString>, config: &Config) -> String {
    // Later wins, as when XTCP_CONFIG_JSON's flags follow the command line's.
    let mut command = command().args_override_self(true);
    let normalised = argv::normalise(args, &command);
    let mut pairs: Vec<(String, String)> = Vec::new();
    if let Ok(matches) = command.try_get_matches_from_mut(&normalised) {
        for arg in command.get_arguments() {
            let Some(name) = arg.get_long() else { continue };
            let Some(values) = matches.get_raw(arg.get_id().as_str()) else {
                continue;
            };
            let value = values
                .map(|v| {
                    let v = v.to_string_lossy();
                    match name {
                        "pyroscope-url" | "kafka-schema-url" | "dest" => {
                            crate::profile::pyroscope::redact_credentials(&v)
                        }
                        "kafka-option" => crate::sink::kafka::redact_option_text(&v),
                        "valkey-password" if !v.is_empty() => "***".to_string(),
                        _ => v.into_owned(),
                    }
                })
                .collect::<Vec<_>>()
                .join(",");
            pairs.push((name.to_string(), value));
        }
    }
    pairs.push(("timeout_effective".into(), format!("{:?}", config.poll.timeout)));
    let body: Vec<String> = pairs
        .iter()
        .map(|(k, v)| format!("  {}: {}", json_string(k), json_string(v)))
        .collect();
    format!("{{\n{}\n}}", body.join(",\n"))
}

/// `s` as a JSON string literal (also `xtcp2 client`'s JSON lines).
pub(crate) fn json_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Parses process arguments, accepting Go spellings.
pub fn parse_args(args: impl IntoIterator<Item = String>) -> Result<Cli, clap::Error> {
    parse_args_os(args.into_iter().map(std::ffi::OsString::from))
}

/// Parses the OS's arguments (`std::env::args_os()`), which need not be
/// UTF-8: a file path may be any bytes, and any other non-UTF-8 argument is
/// a usage error naming it, where `std::env::args()` would panic.
pub fn parse_args_os(args: impl IntoIterator<Item = std::ffi::OsString>) -> Result<Cli, clap::Error> {
    parse_with(command(), args)
}

/// As [`parse_args_os`], but a flag given twice takes its later value
/// instead of being an error: the flags `XTCP_CONFIG_JSON` stands for come
/// after the command line's and replace them.
pub fn parse_args_os_later_wins(args: impl IntoIterator<Item = std::ffi::OsString>) -> Result<Cli, clap::Error> {
    parse_with(command().args_override_self(true), args)
}

fn parse_with(
    mut command: clap::Command,
    args: impl IntoIterator<Item = std::ffi::OsString>,
) -> Result<Cli, clap::Error> {
    let normalised = argv::normalise(args, &command);
    let mut matches = match command.try_get_matches_from_mut(&normalised) {
        Err(e) if e.kind() == clap::error::ErrorKind::InvalidUtf8 => {
            return Err(argv::not_utf8(&normalised, &mut command))
        }
        other => other?,
    };
    Cli::from_arg_matches_mut(&mut matches)
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("--emit {0:?}: must be all or changed")]
    Emit(String),
    /// A nats/valkey option (`--nats-mode`, `--valkey-mode`, `--topic`).
    #[error("{0}")]
    DestinationOption(String),
    #[error("--{flag} {value} is out of range: it must be between {min} and {max}")]
    OutOfRange {
        flag: &'static str,
        value: String,
        min: String,
        max: String,
    },
    #[error("--{flag}: {value:?} is not a duration (use e.g. 500ms, 10s, 1m, or bare seconds)")]
    Duration { flag: &'static str, value: String },
    #[error("--timeout ({timeout:?}) must be shorter than --frequency ({frequency:?}), or a slow namespace would overlap the next poll")]
    TimeoutNotBelowFrequency { timeout: Duration, frequency: Duration },
    #[error("--frequency must be above zero")]
    ZeroFrequency,
    #[error("--netlinkers must be at least 1")]
    ZeroNetlinkers,
    #[error("--nltimeout must be at least 1 millisecond")]
    ZeroNetlinkTimeout,
    #[error(transparent)]
    Deserializers(#[from] crate::decode::UnknownDeserializer),
    #[error(transparent)]
    States(#[from] crate::kernel::request::UnknownState),
    #[error(transparent)]
    Filter(#[from] crate::kernel::FilterError),
    #[error("--profile-mode {0:?}: mutex and block are Go runtime profiles with no Rust equivalent; use cpu or mem")]
    GoOnlyProfile(String),
    #[error("--profile-mode {0:?} is unknown; use cpu or mem")]
    UnknownProfile(String),
    #[error("--prom-path must start with '/', got {0:?}")]
    PromPath(String),
    #[error("--prom-path {path:?} would hide {hidden}; choose another path (the default is /metrics)")]
    PromPathReserved { path: String, hidden: &'static str },
    #[error("--prom-listen {0:?} is not HOST:PORT or :PORT")]
    PromListen(String),
    #[error("--grpc-listen {0:?} is not HOST:PORT or :PORT")]
    GrpcListen(String),
    #[error("--grpc-tls-cert and --grpc-tls-key go together; --grpc-tls-client-ca needs both")]
    GrpcTlsIncomplete,
    #[error("--pprof-listen {0:?} is not HOST:PORT or :PORT")]
    PprofListen(String),
    #[error("--pprof serves the profiles on --prom-listen, which is empty; give --pprof-listen ADDR instead")]
    PprofWithoutListener,
    #[error("--envelope-flush-rows and --envelope-flush-bytes must be above zero")]
    ZeroFlush,
    #[error("--queue-envelopes must be at least 1")]
    ZeroQueue,
    #[error("--pyroscope-sample-hz and --pyroscope-upload-sec must be above zero")]
    ZeroPyroscope,
    #[error(transparent)]
    PyroscopeUrl(#[from] crate::profile::pyroscope::PyroscopeUrlError),
    #[error("--profile-mode mem needs a build with the heap-profiling feature (jemalloc): cargo build --release --features heap-profiling")]
    HeapProfilingNotBuilt,
    #[error(
        "--profile-mode cpu and --pyroscope-url both need the one CPU profiler for the whole run; use one of them"
    )]
    ProfilerConflict,
    #[error(transparent)]
    Format(#[from] crate::format::FormatError),
    #[error(transparent)]
    Destination(#[from] crate::sink::SinkError),
    #[error(transparent)]
    Kafka(#[from] crate::sink::kafka::KafkaConfigError),
}

/// The gRPC server's settings (`grpc`).
#[derive(Debug, Clone)]
pub struct GrpcConfig {
    pub listen: std::net::SocketAddr,
    pub tls: Option<GrpcTls>,
}

/// PEM files of the gRPC listener's TLS; `client_ca` set: clients must
/// present a certificate it signed.
#[derive(Debug, Clone)]
pub struct GrpcTls {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub client_ca: Option<PathBuf>,
}

/// The poll loop's settings.
#[derive(Debug, Clone)]
pub struct PollConfig {
    pub frequency: Duration,
    /// Per-namespace dump deadline.
    pub timeout: Duration,
    pub max_loops: u64,
    pub jitter: Duration,
    /// Kernel state bitmask of `--states`.
    pub states: u32,
    /// `--filter`, compiled into inet_diag bytecode; `None`: every socket.
    pub filter: Option<crate::kernel::Bytecode>,
    pub netlink_timeout: Duration,
    pub netlinkers: usize,
    /// `None` receives with recv(2).
    pub io_uring: Option<IoUringConfig>,
    /// Keep every Nth socket (`--modulus`); 1 keeps all.
    pub modulus: u64,
    /// Jitter of each tick, a fraction of the period (`--poll-jitter-pct`).
    pub tick_jitter: f64,
    /// Bytes of each netlinker's receive buffer.
    pub recv_buffer: usize,
    /// First netlink sequence number of each socket (`--nlmsg-seq`).
    pub first_seq: u32,
    /// `--write-files`: raw replies saved per netlinker, and where.
    pub capture: Option<CaptureConfig>,
    /// `--emit`, `--emit-heartbeat`, `--flow-events`, `--rates`.
    pub track: crate::track::TrackPolicy,
}

/// `--write-files N --capture-path DIR`.
#[derive(Debug, Clone)]
pub struct CaptureConfig {
    pub dir: PathBuf,
    pub datagrams_per_netlinker: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IoUringConfig {
    pub recv_batch: u32,
    pub cqe_batch: u32,
}

/// Where namespaces are looked for.
#[derive(Debug, Clone)]
pub struct NetnsConfig {
    pub dirs: Vec<PathBuf>,
    pub proc_scan: bool,
    pub proc_rescan: Duration,
    /// Rediscover before every poll; otherwise every `reconcile_every`.
    pub reconcile_before_poll: bool,
    /// `None`: never (inotify alone, with `reconcile_before_poll` off).
    pub reconcile_every: Option<Duration>,
    /// `--populate-nsid`: stamp each namespace's nsid.
    pub populate_nsid: bool,
}

/// What a record holds and how it is encoded: shared by the daemon and
/// `decode`.
#[derive(Debug, Clone)]
pub struct OutputConfig {
    pub format: StreamFormat,
    pub deserializers: Deserializers,
    pub stamps: Stamps,
}

impl OutputConfig {
    /// The output of `decode`, or of a destination without a format of its own.
    pub fn from_args(a: &OutputArgs) -> Result<OutputConfig, ConfigError> {
        OutputConfig::for_destination(a, None)
    }

    /// The output for `destination`: without `--marshal`, its preferred
    /// format (protobufList for kafka), else jsonl.
    pub fn for_destination(a: &OutputArgs, destination: Option<&Destination>) -> Result<OutputConfig, ConfigError> {
        let default_format = destination
            .and_then(Destination::preferred_format)
            .unwrap_or(Format::Jsonl);
        let columns: Vec<String> = a
            .columns
            .split(',')
            .map(str::trim)
            .filter(|c| !c.is_empty())
            .map(str::to_string)
            .collect();
        let non_empty = |s: &str| (!s.is_empty()).then(|| Arc::<str>::from(s));
        Ok(OutputConfig {
            format: StreamFormat::with_columns(a.marshal.unwrap_or(default_format), a.record_schema, &columns)?,
            deserializers: Deserializers::parse(&a.deserializers)?,
            stamps: Stamps {
                hostname: non_empty(&a.hostname),
                label: non_empty(&a.label),
                tag: non_empty(&a.tag),
                location: non_empty(&a.location),
            },
        })
    }
}

/// Where envelopes go and how they are batched and retried.
#[derive(Debug, Clone)]
pub struct DeliveryConfig {
    pub destination: Destination,
    /// `--dest` as given: how logs and errors name the destination.
    pub dest_text: String,
    pub flush: FlushLimits,
    pub queue_envelopes: usize,
    pub queue_bytes: usize,
    pub produce_timeout: Duration,
    /// Delivery's budget once the queue closed at shutdown.
    pub shutdown_timeout: Duration,
    /// `-destWriteFiles`: debug copies of the first envelopes sent.
    pub envelope_copies: Option<crate::sink::copies::EnvelopeCopiesConfig>,
}

/// Workload attribution (`attribute`): which sources run.
#[derive(Debug, Clone, Default)]
pub struct AttributionConfig {
    /// `--resolve-container-id`.
    pub cgroups: bool,
    /// `--enrich-container`: the Docker Engine's socket.
    pub docker_socket: Option<PathBuf>,
    /// `--enrich-nic` / `--enrich-lldp`: which interfaces are uplinks, and
    /// what to read of them.
    pub uplinks: Option<crate::attribute::uplink::UplinkConfig>,
}

/// Validated configuration of the daemon.
#[derive(Debug, Clone)]
pub struct Config {
    /// `None`: no gRPC server.
    pub grpc: Option<GrpcConfig>,
    /// The flags as given, for gRPC `ConfigService.Get` (the Go daemon's view).
    pub args: Arc<DaemonArgs>,
    pub poll: PollConfig,
    pub attribution: AttributionConfig,
    pub netns: NetnsConfig,
    pub output: OutputConfig,
    pub delivery: DeliveryConfig,
    pub observe: ObserveConfig,
    pub skip_capability_check: bool,
}

impl Config {
    pub fn from_args(a: &DaemonArgs) -> Result<Config, ConfigError> {
        let frequency = parse_duration("frequency", &a.frequency)?;
        if frequency.is_zero() {
            return Err(ConfigError::ZeroFrequency);
        }
        in_range_duration("frequency", frequency, bounds::FREQUENCY)?;
        let one_shot = a.max_loops == 1;
        let timeout = match a.timeout.trim() {
            "auto" => auto_timeout(frequency, one_shot),
            text => {
                let timeout = parse_duration("timeout", text)?;
                in_range_duration("timeout", timeout, bounds::TIMEOUT)?;
                // A one-shot has no next poll to overlap.
                if timeout >= frequency && !one_shot {
                    return Err(ConfigError::TimeoutNotBelowFrequency { timeout, frequency });
                }
                timeout
            }
        };
        let poll_jitter = parse_duration("poll-jitter", &a.poll_jitter)?;
        in_range_duration("poll-jitter", poll_jitter, bounds::POLL_JITTER)?;
        let netns_proc_rescan = parse_duration("netns-proc-rescan", &a.netns_proc_rescan)?;
        let reconcile_frequency = parse_duration("reconcile-frequency", &a.reconcile_frequency)?;
        in_range_duration("reconcile-frequency", reconcile_frequency, bounds::RECONCILE_FREQUENCY)?;
        in_range("modulus", a.modulus, bounds::MODULUS)?;
        in_range(
            "aggregate-max-series",
            a.aggregate_max_series,
            bounds::AGGREGATE_MAX_SERIES,
        )?;
        in_range("emit-heartbeat", a.emit_heartbeat, bounds::EMIT_HEARTBEAT)?;
        in_range("poll-jitter-pct", a.poll_jitter_pct, bounds::POLL_JITTER_PCT)?;
        in_range("packet-size", a.packet_size, bounds::RECV_BUFFER)?;
        in_range("packet-size-mply", a.packet_size_mply, bounds::RECV_BUFFER)?;
        let recv_buffer = receive_buffer(a.packet_size, a.packet_size_mply)?;
        in_range("ipv4-ttl", a.ipv4_ttl.into(), bounds::TTL)?;
        in_range("ipv6-hop-limit", a.ipv6_hop_limit.into(), bounds::TTL)?;
        in_range_duration("netns-proc-rescan", netns_proc_rescan, bounds::NETNS_PROC_RESCAN)?;
        let produce_timeout = parse_duration("produce-timeout", &a.produce_timeout)?;
        in_range_duration("produce-timeout", produce_timeout, bounds::PRODUCE_TIMEOUT)?;
        let shutdown_timeout = parse_duration("shutdown-timeout", &a.shutdown_timeout)?;
        in_range_duration("shutdown-timeout", shutdown_timeout, bounds::SHUTDOWN_TIMEOUT)?;
        in_range("nltimeout", a.nltimeout, bounds::NLTIMEOUT_MS)?;
        in_range("netlinkers", a.netlinkers as u64, bounds::NETLINKERS)?;
        in_range("uplink-count", a.uplink_count, bounds::UPLINK_COUNT)?;
        in_range(
            "envelope-flush-rows",
            a.envelope_flush_rows as u64,
            bounds::ENVELOPE_FLUSH_ROWS,
        )?;
        in_range(
            "envelope-flush-bytes",
            a.envelope_flush_bytes as u64,
            bounds::ENVELOPE_FLUSH_BYTES,
        )?;
        in_range("queue-envelopes", a.queue_envelopes as u64, bounds::QUEUE_ENVELOPES)?;
        in_range("queue-bytes", a.queue_bytes as u64, bounds::QUEUE_BYTES)?;
        in_range(
            "io-uring-recv-batch",
            a.io_uring_recv_batch.into(),
            bounds::IO_URING_BATCH,
        )?;
        in_range(
            "io-uring-cqe-batch",
            a.io_uring_cqe_batch.into(),
            bounds::IO_URING_BATCH,
        )?;
        if a.netlinkers == 0 {
            return Err(ConfigError::ZeroNetlinkers);
        }
        if a.nltimeout == 0 {
            return Err(ConfigError::ZeroNetlinkTimeout);
        }
        if a.envelope_flush_rows == 0 || a.envelope_flush_bytes == 0 {
            return Err(ConfigError::ZeroFlush);
        }
        if a.queue_envelopes == 0 {
            return Err(ConfigError::ZeroQueue);
        }
        let profile_mode = match a.profile_mode.trim() {
            "" => None,
            "cpu" => Some(ProfileMode::Cpu),
            "mem" if cfg!(feature = "heap-profiling") => Some(ProfileMode::Mem),
            "mem" => return Err(ConfigError::HeapProfilingNotBuilt),
            "mutex" | "block" => return Err(ConfigError::GoOnlyProfile(a.profile_mode.clone())),
            other => return Err(ConfigError::UnknownProfile(other.to_string())),
        };
        if !a.prom_path.starts_with('/') {
            return Err(ConfigError::PromPath(a.prom_path.clone()));
        }
        if let Some(hidden) = crate::observe::server::reserved_path(&a.prom_path) {
            return Err(ConfigError::PromPathReserved {
                path: a.prom_path.clone(),
                hidden,
            });
        }
        let prom_listen = parse_listen(&a.prom_listen)?;
        let grpc = grpc_config(a)?;
        let pprof_listen =
            parse_listen(&a.pprof_listen).map_err(|_| ConfigError::PprofListen(a.pprof_listen.trim().to_string()))?;
        // A listener of its own wins: the point of it is keeping the
        // profiles off the metrics port.
        let pprof = match (pprof_listen, a.pprof) {
            (Some(addr), _) => PprofServing::Own(addr),
            (None, true) if prom_listen.is_none() => return Err(ConfigError::PprofWithoutListener),
            (None, true) => PprofServing::WithMetrics,
            (None, false) => PprofServing::Off,
        };
        let pyroscope = if a.pyroscope_url.trim().is_empty() {
            None
        } else {
            if a.pyroscope_sample_hz == 0 || a.pyroscope_upload_sec == 0 {
                return Err(ConfigError::ZeroPyroscope);
            }
            in_range(
                "pyroscope-sample-hz",
                a.pyroscope_sample_hz.into(),
                bounds::PYROSCOPE_SAMPLE_HZ,
            )?;
            in_range(
                "pyroscope-upload-sec",
                a.pyroscope_upload_sec,
                bounds::PYROSCOPE_UPLOAD_SEC,
            )?;
            crate::profile::pyroscope::check_url(a.pyroscope_url.trim())?;
            if profile_mode == Some(ProfileMode::Cpu) {
                return Err(ConfigError::ProfilerConflict);
            }
            Some(PyroscopeConfig {
                url: a.pyroscope_url.trim().trim_end_matches('/').to_string(),
                app_name: a.pyroscope_app_name.clone(),
                sample_hz: a.pyroscope_sample_hz,
                upload_period: Duration::from_secs(a.pyroscope_upload_sec),
            })
        };
        // Output choices are checked here, so a typo exits with code 2
        // before anything is opened.
        let mut destination = Destination::parse(&a.dest)?;
        if let Destination::Kafka(kafka) = &mut destination {
            kafka.settings = kafka_settings(a)?;
        }
        broker_settings(a, &mut destination)?;
        let mut output = OutputConfig::for_destination(&a.output, Some(&destination))?;
        let hostname = output
            .stamps
            .hostname
            .get_or_insert_with(|| Arc::from(system_hostname().as_str()))
            .clone();
        if a.resolve_container_id {
            // The cgroup id is what the path is found by.
            output.deserializers = output.deserializers.with(crate::decode::Deserializer::Cgroup);
        }
        Ok(Config {
            attribution: AttributionConfig {
                cgroups: a.resolve_container_id,
                docker_socket: a.enrich_container.then(|| a.docker_socket.clone()),
                uplinks: (a.enrich_nic || a.enrich_lldp).then(|| crate::attribute::uplink::UplinkConfig {
                    count: a.uplink_count as usize,
                    interfaces: a
                        .uplink_interfaces
                        .split(',')
                        .map(str::trim)
                        .filter(|i| !i.is_empty())
                        .map(String::from)
                        .collect(),
                    nic: a.enrich_nic,
                    lldp: a.enrich_lldp.then(|| crate::attribute::lldp::LldpConfig {
                        socket: a.lldpd_socket.clone(),
                        lldpcli: a.lldpcli.clone(),
                    }),
                }),
            },
            grpc,
            args: Arc::new(a.clone()),
            poll: PollConfig {
                frequency,
                timeout,
                max_loops: a.max_loops,
                jitter: poll_jitter,
                states: parse_states(&a.states)?,
                filter: crate::kernel::parse_filter(&a.filter)?,
                netlink_timeout: Duration::from_millis(a.nltimeout),
                netlinkers: a.netlinkers,
                io_uring: a.io_uring.then_some(IoUringConfig {
                    recv_batch: a.io_uring_recv_batch,
                    cqe_batch: a.io_uring_cqe_batch,
                }),
                modulus: a.modulus,
                tick_jitter: a.poll_jitter_pct as f64 / 100.0,
                recv_buffer,
                first_seq: a.nlmsg_seq,
                capture: (a.write_files > 0).then(|| CaptureConfig {
                    dir: a.capture_path.clone(),
                    datagrams_per_netlinker: a.write_files,
                }),
                track: crate::track::TrackPolicy {
                    emit: a.emit.parse().map_err(ConfigError::Emit)?,
                    heartbeat_polls: a.emit_heartbeat as u16,
                    flow_events: a.flow_events,
                    rates: a.rates,
                },
            },
            netns: NetnsConfig {
                dirs: a
                    .netns_dirs
                    .split(',')
                    .map(str::trim)
                    .filter(|d| !d.is_empty())
                    .map(PathBuf::from)
                    .collect(),
                proc_scan: a.netns_proc_scan,
                proc_rescan: netns_proc_rescan,
                reconcile_before_poll: a.reconcile_before_poll,
                reconcile_every: (!reconcile_frequency.is_zero()).then_some(reconcile_frequency),
                populate_nsid: a.populate_nsid,
            },
            output,
            delivery: DeliveryConfig {
                destination,
                // Logs name the destination by it: no URL password.
                dest_text: crate::profile::pyroscope::redact_credentials(&a.dest),
                flush: FlushLimits {
                    rows: a.envelope_flush_rows,
                    bytes: a.envelope_flush_bytes,
                },
                queue_envelopes: a.queue_envelopes,
                queue_bytes: a.queue_bytes,
                produce_timeout,
                shutdown_timeout,
                envelope_copies: (a.dest_write_files > 0).then(|| crate::sink::copies::EnvelopeCopiesConfig {
                    dir: a.capture_path.clone(),
                    count: a.dest_write_files,
                }),
            },
            observe: ObserveConfig {
                prom_listen,
                prom_path: a.prom_path.clone(),
                pprof,
                profile_mode,
                profile_path: a.profile_path.clone(),
                pyroscope,
                poll_frequency: frequency,
                hostname,
                listener_hops: crate::observe::ListenerHops {
                    ipv4_ttl: (a.ipv4_ttl > 0).then_some(a.ipv4_ttl),
                    ipv6_hop_limit: (a.ipv6_hop_limit > 0).then_some(a.ipv6_hop_limit),
                },
                // In range above, so it fits any usize.
                aggregate_max_series: a
                    .aggregate_metrics
                    .then(|| usize::try_from(a.aggregate_max_series).unwrap_or(usize::MAX)),
            },
            skip_capability_check: a.skip_capability_check,
        })
    }
}

/// Fills the nats: and valkey: destinations' options from their flags
/// (other destinations ignore them, so a typo there cannot stop a file: run).
fn broker_settings(a: &DaemonArgs, destination: &mut Destination) -> Result<(), ConfigError> {
    use crate::sink::{nats, valkey};
    let topic = a.topic.trim();
    let needs_topic = || {
        if topic.is_empty() {
            Err(ConfigError::DestinationOption("--topic must not be empty".into()))
        } else {
            Ok(topic.to_string())
        }
    };
    match destination {
        Destination::Nats(address) => {
            let subject = needs_topic()?;
            address.settings = nats::NatsSettings {
                mode: a.nats_mode.parse().map_err(ConfigError::DestinationOption)?,
                create_stream: a.nats_create_stream,
                stream: match a.nats_stream.trim() {
                    "" => nats::NatsSettings::default_stream_name(&subject),
                    name => name.to_string(),
                },
                credentials: (!a.nats_credentials.trim().is_empty()).then(|| PathBuf::from(a.nats_credentials.trim())),
                tls: a.nats_tls,
                subject,
            };
        }
        Destination::Valkey(address) => {
            address.settings = valkey::ValkeySettings {
                key: needs_topic()?,
                mode: a.valkey_mode.parse().map_err(ConfigError::DestinationOption)?,
                maxlen: a.valkey_maxlen,
                user: a.valkey_user.clone(),
                password: a.valkey_password.clone(),
                db: a.valkey_db,
                tls: a.valkey_tls,
            };
        }
        _ => {}
    }
    Ok(())
}

/// The kafka: destination's settings from the Kafka flags (checked even
/// when another destination is chosen would be friendlier, but a typo in a
/// flag that has no effect must not stop a file: run).
fn kafka_settings(a: &DaemonArgs) -> Result<crate::sink::kafka::KafkaSettings, ConfigError> {
    use crate::sink::kafka::{Compression, KafkaOption, KafkaSettings, MessageKey};
    if a.topic.trim().is_empty() {
        return Err(crate::sink::kafka::KafkaConfigError::EmptyTopic.into());
    }
    Ok(KafkaSettings {
        topic: a.topic.trim().to_string(),
        compression: Compression::parse(&a.kafka_compression)?,
        key: MessageKey::parse(&a.kafka_key)?,
        options: a
            .kafka_option
            .iter()
            .map(|o| KafkaOption::parse(o))
            .collect::<Result<_, _>>()?,
        queue_messages: a.queue_envelopes,
        queue_bytes: a.queue_bytes,
        max_envelope_bytes: a.envelope_flush_bytes,
        schema_registry: if a.kafka_schema_url.trim().is_empty() {
            None
        } else {
            let proto_file = (!a.xtcp_proto_file.trim().is_empty()).then(|| PathBuf::from(a.xtcp_proto_file.trim()));
            Some(crate::sink::kafka::SchemaRegistry::new(
                &a.kafka_schema_url,
                proto_file,
            )?)
        },
    })
}

/// The netlinkers' receive buffer from the Go daemon's `-packetSize` (0 =
/// the page size) and `-packetSizeMply`: at least
/// [`crate::kernel::RECV_BUFFER_BYTES`] (64 KiB), because the kernel sizes a
/// dump's datagrams from the reader's buffer and a smaller one only costs
/// more system calls; a larger product raises it (up to 16 MiB).
fn receive_buffer(packet_size: u64, multiplier: u64) -> Result<usize, ConfigError> {
    // SAFETY: sysconf has no preconditions.
    let page = match unsafe { libc::sysconf(libc::_SC_PAGESIZE) } {
        n if n > 0 => n as u64,
        _ => 4096,
    };
    let unit = if packet_size == 0 { page } else { packet_size };
    let product = unit.saturating_mul(multiplier);
    in_range("packet-size x packet-size-mply", product, bounds::RECV_BUFFER)?;
    Ok((product as usize).max(crate::kernel::RECV_BUFFER_BYTES))
}

/// `--timeout auto`. The deadline exists to end a dump that stopped making
/// progress, not to cut one that is making it: a big host (200,000 sockets
/// on a busy machine) was cut at the old fixed 5 s and lost half its sockets.
/// So a poll's dumps may use 90 % of the period (the rest is left for the
/// namespaces behind them), and a one-shot, which has no next poll to
/// protect, a minute. A silent kernel is still caught within `--nltimeout`.
pub fn auto_timeout(frequency: Duration, one_shot: bool) -> Duration {
    if one_shot {
        ONE_SHOT_TIMEOUT
    } else {
        frequency.mul_f64(0.9).max(bounds::TIMEOUT.0)
    }
}

/// `--timeout auto` of a one-shot (`--max-loops 1`).
pub const ONE_SHOT_TIMEOUT: Duration = Duration::from_secs(60);

/// Checks a numeric flag against its documented range.
fn in_range(flag: &'static str, value: u64, (min, max): (u64, u64)) -> Result<(), ConfigError> {
    if (min..=max).contains(&value) {
        return Ok(());
    }
    Err(ConfigError::OutOfRange {
        flag,
        value: value.to_string(),
        min: min.to_string(),
        max: max.to_string(),
    })
}

/// Checks a duration flag against its documented range.
fn in_range_duration(flag: &'static str, value: Duration, (min, max): (Duration, Duration)) -> Result<(), ConfigError> {
    if (min..=max).contains(&value) {
        return Ok(());
    }
    Err(ConfigError::OutOfRange {
        flag,
        value: format!("{value:?}"),
        min: format!("{min:?}"),
        max: format!("{max:?}"),
    })
}

/// `--grpc-listen` or `-grpcPort` (loopback), and the TLS files.
fn grpc_config(a: &DaemonArgs) -> Result<Option<GrpcConfig>, ConfigError> {
    let listen = match parse_listen(&a.grpc_listen) {
        Ok(Some(addr)) => Some(addr),
        Ok(None) => a
            .grpc_port
            .map(|port| std::net::SocketAddr::from((std::net::Ipv4Addr::LOCALHOST, port))),
        Err(_) => return Err(ConfigError::GrpcListen(a.grpc_listen.trim().to_string())),
    };
    let tls = match (&a.grpc_tls_cert, &a.grpc_tls_key, &a.grpc_tls_client_ca) {
        (None, None, None) => None,
        (Some(cert), Some(key), client_ca) => Some(GrpcTls {
            cert: cert.clone(),
            key: key.clone(),
            client_ca: client_ca.clone(),
        }),
        _ => return Err(ConfigError::GrpcTlsIncomplete),
    };
    Ok(listen.map(|listen| GrpcConfig { listen, tls }))
}

/// `:9088` means every address (as Go's net.Listen does); empty disables.
fn parse_listen(spec: &str) -> Result<Option<std::net::SocketAddr>, ConfigError> {
    let spec = spec.trim();
    if spec.is_empty() {
        return Ok(None);
    }
    let full = if spec.starts_with(':') {
        format!("[::]{spec}")
    } else {
        spec.to_string()
    };
    use std::net::ToSocketAddrs;
    full.to_socket_addrs()
        .ok()
        .and_then(|mut it| it.next())
        .map(Some)
        .ok_or_else(|| ConfigError::PromListen(spec.to_string()))
}

/// Parses `500ms`, `10s`, `1.5s`, `2m`, `1h`, `250us`, or a bare number of seconds.
pub(crate) fn parse_duration(flag: &'static str, value: &str) -> Result<Duration, ConfigError> {
    let err = || ConfigError::Duration {
        flag,
        value: value.to_string(),
    };
    let v = value.trim();
    let split = v.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(v.len());
    let (number, unit) = v.split_at(split);
    let number: f64 = number.parse().map_err(|_| err())?;
    let seconds_per_unit = match unit {
        "" | "s" => 1.0,
        "ms" => 1e-3,
        "us" | "µs" => 1e-6,
        "ns" => 1e-9,
        "m" => 60.0,
        "h" => 3600.0,
        _ => return Err(err()),
    };
    Duration::try_from_secs_f64(number * seconds_per_unit).map_err(|_| err())
}

/// The kernel's host name (`/proc/sys/kernel/hostname`), or "unknown".
pub(crate) fn system_hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "unknown".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        parse_args(args.iter().map(|s| s.to_string()))
    }

    /// Go spellings with one dash and idiomatic ones with two both parse.
    #[test]
    fn go_and_idiomatic_spellings_are_equivalent() {
        let go = parse(&[
            "xtcp2",
            "-promListen",
            ":9999",
            "-maxLoops=3",
            "-profile.mode",
            "cpu",
            "-nltimeout",
            "50",
            "-deserializers",
            "info",
        ])
        .unwrap();
        let idiomatic = parse(&[
            "xtcp2",
            "--prom-listen",
            ":9999",
            "--max-loops=3",
            "--profile-mode",
            "cpu",
            "--nltimeout",
            "50",
            "--deserializers",
            "info",
        ])
        .unwrap();
        for cli in [&go, &idiomatic] {
            assert_eq!(cli.daemon.prom_listen, ":9999");
            assert_eq!(cli.daemon.max_loops, 3);
            assert_eq!(cli.daemon.profile_mode, "cpu");
            assert_eq!(cli.daemon.nltimeout, 50);
            assert_eq!(cli.daemon.output.deserializers, "info");
        }
    }

    /// Go-style bare boolean flags mean true; `=false` turns them off.
    #[test]
    fn boolean_flags_take_go_forms() {
        let cli = parse(&["xtcp2", "-ioUring", "-netnsProcScan=false"]).unwrap();
        assert!(cli.daemon.io_uring);
        assert!(!cli.daemon.netns_proc_scan);
    }

    /// The /proc rescan interval defaults to 30 s, takes both spellings, and
    /// 0 (a full scan every poll) is allowed.
    #[test]
    fn proc_rescan_interval() {
        let default = Config::from_args(&parse(&["xtcp2"]).unwrap().daemon).unwrap();
        assert_eq!(default.netns.proc_rescan, Duration::from_secs(30));
        let go = Config::from_args(&parse(&["xtcp2", "-netnsProcRescan", "0"]).unwrap().daemon).unwrap();
        assert_eq!(go.netns.proc_rescan, Duration::ZERO);
        let cli = parse(&["xtcp2", "--netns-proc-rescan", "2m"]).unwrap();
        assert_eq!(
            Config::from_args(&cli.daemon).unwrap().netns.proc_rescan,
            Duration::from_secs(120)
        );
        let cli = parse(&["xtcp2", "--netns-proc-rescan", "soon"]).unwrap();
        let err = Config::from_args(&cli.daemon).unwrap_err();
        assert!(err.to_string().contains("--netns-proc-rescan"), "{err}");
    }

    /// An unknown single-dash flag is left for clap to reject.
    #[test]
    fn unknown_single_dash_flag_is_rejected() {
        assert!(parse(&["xtcp2", "-bogusFlag", "1"]).is_err());
    }

    /// Timeout must stay below frequency.
    #[test]
    fn timeout_at_or_above_frequency_is_rejected() {
        let cli = parse(&["xtcp2", "-frequency", "1s", "-timeout", "1s"]).unwrap();
        let err = Config::from_args(&cli.daemon).unwrap_err();
        assert!(err.to_string().contains("must be shorter than --frequency"), "{err}");
    }

    /// Go-only profile kinds are refused with the reason.
    #[test]
    fn mutex_profile_is_refused_with_reason() {
        let cli = parse(&["xtcp2", "-profile.mode", "mutex"]).unwrap();
        let err = Config::from_args(&cli.daemon).unwrap_err();
        assert!(err.to_string().contains("Go runtime profiles"), "{err}");
    }

    /// Durations accept Go forms and bare seconds.
    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("x", "500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("x", "10s").unwrap(), Duration::from_secs(10));
        assert_eq!(parse_duration("x", "2").unwrap(), Duration::from_secs(2));
        assert_eq!(parse_duration("x", "1.5m").unwrap(), Duration::from_secs(90));
        assert!(parse_duration("x", "ten").is_err());
        assert!(parse_duration("x", "5 parsecs").is_err());
    }

    /// `:PORT` listens on every address; empty disables the server.
    #[test]
    fn prom_listen_forms() {
        assert_eq!(parse_listen(":9088").unwrap().unwrap().port(), 9088);
        assert_eq!(
            parse_listen("127.0.0.1:0").unwrap().unwrap().ip().to_string(),
            "127.0.0.1"
        );
        assert!(parse_listen("").unwrap().is_none());
        assert!(parse_listen("nope").is_err());
    }

    /// Every numeric flag has a range, checked at validation: values that
    /// used to overflow a deadline, abort on an allocation or spawn
    /// thousands of threads are refused, naming the flag and the range.
    #[test]
    fn timeout_auto_follows_the_period_and_a_one_shot_gets_a_minute() {
        let config = |args: &[&str]| {
            let mut argv = vec!["xtcp2"];
            argv.extend_from_slice(args);
            Config::from_args(&parse(&argv).unwrap().daemon).map(|c| c.poll.timeout)
        };
        assert_eq!(config(&[]).unwrap(), Duration::from_secs(9));
        assert_eq!(config(&["--frequency", "1s"]).unwrap(), Duration::from_millis(900));
        assert_eq!(config(&["--max-loops", "1"]).unwrap(), ONE_SHOT_TIMEOUT);
        assert_eq!(config(&["--max-loops", "2"]).unwrap(), Duration::from_secs(9));
        // Given: as given, below the period unless one-shot.
        assert_eq!(config(&["--timeout", "5s"]).unwrap(), Duration::from_secs(5));
        assert!(config(&["--timeout", "10s"]).is_err());
        assert_eq!(
            config(&["--timeout", "30s", "--max-loops", "1"]).unwrap(),
            Duration::from_secs(30)
        );
    }

    #[test]
    fn numeric_flags_out_of_range_are_refused() {
        for (args, flag) in [
            (&["--frequency", "2e15h"][..], "--frequency"),
            (&["--frequency", "2000000000h"][..], "--frequency"),
            (&["--timeout", "0"][..], "--timeout"),
            (&["--poll-jitter", "100000000h"][..], "--poll-jitter"),
            (&["--queue-envelopes", "18446744073709551615"][..], "--queue-envelopes"),
            (&["--queue-envelopes", "100000000"][..], "--queue-envelopes"),
            (&["--queue-bytes", "1000"][..], "--queue-bytes"),
            (&["--queue-bytes", "18446744073709551615"][..], "--queue-bytes"),
            (&["--netlinkers", "100000"][..], "--netlinkers"),
            (&["--nltimeout", "0"][..], "--nltimeout"),
            (&["--nltimeout", "999999999"][..], "--nltimeout"),
            (&["--envelope-flush-bytes", "10000000000"][..], "--envelope-flush-bytes"),
            (&["--envelope-flush-rows", "0"][..], "--envelope-flush-rows"),
            (&["--produce-timeout", "0s"][..], "--produce-timeout"),
            (&["--netns-proc-rescan", "9999999h"][..], "--netns-proc-rescan"),
            (&["--io-uring-recv-batch", "0"][..], "--io-uring-recv-batch"),
            (&["--io-uring-cqe-batch", "100000"][..], "--io-uring-cqe-batch"),
            (
                &["--pyroscope-url", "http://p:4040", "--pyroscope-sample-hz", "1000000"][..],
                "--pyroscope-sample-hz",
            ),
        ] {
            let mut argv = vec!["xtcp2"];
            argv.extend_from_slice(args);
            let err = match parse(&argv) {
                Ok(cli) => Config::from_args(&cli.daemon).unwrap_err().to_string(),
                Err(e) => e.to_string(),
            };
            assert!(err.contains(flag), "{args:?}: {err}");
        }
        // The edges of each range are accepted.
        let edges = parse(&[
            "xtcp2",
            "--netlinkers",
            "256",
            "--queue-envelopes",
            "65536",
            "--queue-bytes",
            "1048576",
            "--nltimeout",
            "60000",
        ])
        .unwrap();
        Config::from_args(&edges.daemon).unwrap();
    }
}
