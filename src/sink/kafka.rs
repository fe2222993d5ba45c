//! `kafka:HOST:PORT[,HOST:PORT...]`: one Kafka message per envelope, with
//! librdkafka (the `rdkafka` crate, built from its bundled librdkafka
//! sources: see `docs/outputs.md` for the version and codecs).
//!
//! Each envelope is produced as one message to `--topic`, in the chosen
//! format (protobufList unless `--marshal` says otherwise: one
//! length-delimited `Envelope` per message, what ClickHouse's Kafka engine
//! reads with `kafka_format = 'ProtobufList'`), with headers naming the
//! host, the poll sequence and the schema (`HEADER_*`).
//!
//! Delivery: a send produces the message and waits for its delivery report,
//! so the existing delivery task keeps its meaning (sends, failures by
//! kind, retries, dropped rows) and our queue stays the one place where
//! envelopes wait and the oldest are dropped. The producer is idempotent
//! with `acks=all` by default, so librdkafka's own retries inside one send
//! never duplicate a message. A send cut short by `--produce-timeout` is
//! still owned by librdkafka ([`Transport::send_outlives_timeout`]): the next
//! send waits for the same delivery report instead of producing the
//! envelope twice. librdkafka's queue is bounded from `--queue-envelopes`
//! and `--queue-bytes`.
//!
//! Readiness: `/readyz` stays "destination not open" until a metadata
//! request to the brokers has succeeded ([`Transport::ready_signal`]).
//!
//! This module must not log `--kafka-option` values that may be secrets
//! ([`is_secret_option`]).

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::client::ClientContext;
use rdkafka::config::{ClientConfig, RDKafkaLogLevel};
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord, Producer};
use rdkafka::types::RDKafkaErrorCode;

use super::stream::HostPort;
use super::{DestinationKind, Disposition, Sent, SinkError, Transport};
use crate::batch::Envelope;
use crate::format::StreamFormat;
use crate::metrics::Metrics;

/// The `kafka:` destination.
pub struct Kafka;

/// Header naming the host the envelope's records come from.
pub const HEADER_HOST: &str = "xtcp2-host";
/// Header carrying the envelope's poll sequence (decimal).
pub const HEADER_POLL_SEQ: &str = "xtcp2-poll-seq";
/// Header naming the record schema and format, e.g. `xtcp2/protobufList`.
pub const HEADER_SCHEMA: &str = "xtcp2-schema";
/// Header carrying the envelope's record count (decimal).
pub const HEADER_ROWS: &str = "xtcp2-rows";
/// Header carrying the network namespace's inode (decimal), with
/// `--kafka-key netns` only (otherwise an envelope mixes namespaces).
pub const HEADER_NETNS: &str = "xtcp2-netns";

/// `--topic`'s default (the Go daemon's).
pub const DEFAULT_TOPIC: &str = "xtcp";
/// How long librdkafka keeps retrying one message before it reports it
/// failed (`message.timeout.ms`); the delivery task then retries it from our
/// queue. Long enough to ride out a broker restart or a leader election.
pub const MESSAGE_TIMEOUT: Duration = Duration::from_secs(30);
/// Between two metadata requests while the brokers have not answered yet.
const METADATA_RETRY: Duration = Duration::from_millis(500);
/// Deadline of one metadata request of the readiness probe.
const METADATA_TIMEOUT: Duration = Duration::from_secs(2);
/// librdkafka's repeating errors (all brokers down) are logged at most this often.
const CLIENT_LOG_INTERVAL: Duration = Duration::from_secs(60);

/// `--kafka-compression` (Go `-kafkaCompression`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Compression {
    /// `""` and `auto`: zstd, the best ratio for protobuf records at a low CPU cost.
    #[default]
    Zstd,
    Lz4,
    Snappy,
    Gzip,
    None,
}

impl Compression {
    pub fn parse(text: &str) -> Result<Compression, KafkaConfigError> {
        Ok(match text.trim() {
            "" | "auto" | "zstd" => Compression::Zstd,
            "lz4" => Compression::Lz4,
            "snappy" => Compression::Snappy,
            "gzip" => Compression::Gzip,
            "none" => Compression::None,
            other => return Err(KafkaConfigError::Compression(other.to_string())),
        })
    }

    /// librdkafka's `compression.codec` value.
    pub fn codec(self) -> &'static str {
        match self {
            Compression::Zstd => "zstd",
            Compression::Lz4 => "lz4",
            Compression::Snappy => "snappy",
            Compression::Gzip => "gzip",
            Compression::None => "none",
        }
    }
}

/// `--kafka-key`: what each message is keyed by (Kafka puts equal keys in
/// one partition).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MessageKey {
    /// No key: messages spread over the partitions.
    #[default]
    None,
    /// The host name: one host's envelopes stay in order in one partition.
    Hostname,
    /// `HOSTNAME/INODE` of the network namespace: each envelope then holds
    /// one namespace's records, and one namespace's envelopes stay in order
    /// in one partition while a host's namespaces spread over all of them
    /// (an inode is unique only on its host, hence the host name).
    Netns,
}

impl MessageKey {
    pub fn parse(text: &str) -> Result<MessageKey, KafkaConfigError> {
        match text.trim() {
            "" | "none" => Ok(MessageKey::None),
            "hostname" => Ok(MessageKey::Hostname),
            "netns" => Ok(MessageKey::Netns),
            other => Err(KafkaConfigError::Key(other.to_string())),
        }
    }
}

/// One `--kafka-option KEY=VALUE`, passed to librdkafka as given.
#[derive(Clone, PartialEq, Eq)]
pub struct KafkaOption {
    pub key: String,
    pub value: String,
}

impl KafkaOption {
    pub fn parse(text: &str) -> Result<KafkaOption, KafkaConfigError> {
        let (key, value) = text
            .split_once('=')
            .ok_or_else(|| KafkaConfigError::Option(redact_option_text(text)))?;
        let key = key.trim();
        if key.is_empty() {
            return Err(KafkaConfigError::Option(redact_option_text(text)));
        }
        Ok(KafkaOption {
            key: key.to_string(),
            value: value.to_string(),
        })
    }

    /// `KEY=VALUE`, with the value masked when the key names a secret.
    pub fn redacted(&self) -> String {
        if is_secret_option(&self.key) {
            format!("{}=***", self.key)
        } else {
            format!("{}={}", self.key, self.value)
        }
    }
}

/// Debug output is logged and printed by `-conf`: never a secret's value.
impl std::fmt::Debug for KafkaOption {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.redacted())
    }
}

/// Whether a librdkafka property holds a secret (passwords, private keys,
/// OAuth client secrets, SASL JAAS-style configs): its value is never shown.
pub fn is_secret_option(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    [
        "password",
        "secret",
        "ssl.key.pem",
        "sasl.oauthbearer.config",
        "token",
        "credential",
    ]
    .iter()
    .any(|s| key.contains(s))
}

/// `--kafka-option` text as it may be shown: masked after `=` if secret.
pub fn redact_option_text(text: &str) -> String {
    match text.split_once('=') {
        Some((key, _)) if is_secret_option(key) => format!("{key}=***"),
        _ => text.to_string(),
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KafkaConfigError {
    #[error("--kafka-compression {0:?} is unknown; use auto (zstd), zstd, lz4, snappy, gzip or none")]
    Compression(String),
    #[error("--kafka-key {0:?} is unknown; use none, hostname or netns")]
    Key(String),
    #[error("--kafka-option {0:?} is not KEY=VALUE")]
    Option(String),
    #[error("--topic must not be empty")]
    EmptyTopic,
    #[error("--kafka-schema-url {0:?} is not an http:// or https:// URL")]
    SchemaUrl(String),
}

impl SchemaRegistry {
    /// Checks `url` (no I/O); `proto_file` is read at registration.
    pub fn new(url: &str, proto_file: Option<PathBuf>) -> Result<SchemaRegistry, KafkaConfigError> {
        let url = url.trim().trim_end_matches('/');
        let shown = || KafkaConfigError::SchemaUrl(crate::profile::pyroscope::redact_credentials(url));
        let uri: hyper::Uri = url.parse().map_err(|_| shown())?;
        if !matches!(uri.scheme_str(), Some("http" | "https")) || uri.host().is_none_or(str::is_empty) {
            return Err(shown());
        }
        Ok(SchemaRegistry {
            url: url.to_string(),
            proto_file,
        })
    }
}

/// What the kafka sink needs beyond the broker list, filled from the flags
/// by `config` (the defaults here are the flags' defaults).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KafkaSettings {
    pub topic: String,
    pub compression: Compression,
    pub key: MessageKey,
    pub options: Vec<KafkaOption>,
    /// librdkafka's queue bounds: `--queue-envelopes` and `--queue-bytes`.
    pub queue_messages: usize,
    pub queue_bytes: usize,
    /// The largest envelope the daemon makes (`--envelope-flush-bytes`),
    /// so `message.max.bytes` can be raised to fit it.
    pub max_envelope_bytes: usize,
    /// `--kafka-schema-url`: register the record's schema there at start.
    pub schema_registry: Option<SchemaRegistry>,
}

/// `--kafka-schema-url` and `--xtcp-proto-file`: where the record's
/// `.proto` is registered (Confluent's REST API) as the value schema of
/// the topic's subject, `<topic>-value` (the TopicNameStrategy).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SchemaRegistry {
    /// Base URL, without a trailing `/`.
    pub url: String,
    /// The `.proto` to register; `None`: the one of `--record-schema`
    /// (`proto/xtcp2.proto` or `proto/xtcp_flat_record_v1.proto`, built in).
    pub proto_file: Option<PathBuf>,
}

impl Default for KafkaSettings {
    fn default() -> Self {
        KafkaSettings {
            topic: DEFAULT_TOPIC.to_string(),
            compression: Compression::default(),
            key: MessageKey::default(),
            options: Vec::new(),
            queue_messages: 1024,
            queue_bytes: 64 << 20,
            max_envelope_bytes: 768 * 1024,
            schema_registry: None,
        }
    }
}

impl KafkaSettings {
    /// The librdkafka configuration: our defaults, then `--kafka-option`s,
    /// which win.
    pub fn client_config(&self, brokers: &[HostPort], client_id: &str) -> ClientConfig {
        let bootstrap: Vec<String> = brokers.iter().map(|b| format!("{}:{}", b.host, b.port)).collect();
        let mut config = ClientConfig::new();
        // Kafka caps: queue.buffering.max.messages ≤ 2^31, kbytes ≤ 2^31 KiB;
        // our bounds (config::bounds) are far below.
        let queue_kbytes = (self.queue_bytes / 1024).max(1);
        // message.max.bytes must hold the largest envelope plus the
        // protocol's per-message overhead.
        let message_max = (self.max_envelope_bytes + 64 * 1024).max(1_000_000);
        config
            .set("bootstrap.servers", bootstrap.join(","))
            .set("client.id", client_id)
            .set("acks", "all")
            .set("enable.idempotence", "true")
            .set("compression.codec", self.compression.codec())
            .set("queue.buffering.max.messages", self.queue_messages.to_string())
            .set("queue.buffering.max.kbytes", queue_kbytes.to_string())
            .set("message.max.bytes", message_max.to_string())
            .set("message.timeout.ms", MESSAGE_TIMEOUT.as_millis().to_string())
            .set_log_level(RDKafkaLogLevel::Warning);
        for option in &self.options {
            config.set(option.key.clone(), option.value.clone());
            // librdkafka's `debug` contexts log at debug level: let them
            // through to our log (XTCP2_LOG=debug shows them).
            if option.key == "debug" {
                config.set_log_level(RDKafkaLogLevel::Debug);
            }
        }
        config
    }
}

/// A parsed `kafka:` destination: the bootstrap brokers and the settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KafkaAddress {
    pub brokers: Vec<HostPort>,
    pub settings: KafkaSettings,
}

impl DestinationKind for Kafka {
    const SCHEMES: &'static [&'static str] = &["kafka"];
    const TAKES_ADDRESS: bool = true;
    const FORM: &'static str = "kafka:HOST:PORT[,HOST:PORT...]";
    const SUMMARY: &'static str =
        "one Kafka message per envelope to --topic (protobufList by default; idempotent, acks=all; headers name the host, poll sequence and schema)";
    type Address = KafkaAddress;
    type Sink = KafkaSink;

    fn parse(_scheme: &str, rest: &str) -> Result<KafkaAddress, String> {
        let mut brokers = Vec::new();
        for broker in rest.split(',') {
            let broker = broker.trim();
            if broker.is_empty() {
                return Err("an empty broker in the list (use kafka:HOST:PORT[,HOST:PORT...])".into());
            }
            brokers.push(HostPort::parse(broker)?);
        }
        Ok(KafkaAddress {
            brokers,
            settings: KafkaSettings::default(),
        })
    }

    async fn open(address: &KafkaAddress, format: &StreamFormat) -> Result<KafkaSink, SinkError> {
        KafkaSink::new(address, format)
    }
}

/// The open kafka destination.
pub struct KafkaSink {
    producer: FutureProducer<ClientLog>,
    /// Kept to make a new producer after a fatal error (see `reset`).
    client_config: ClientConfig,
    topic: String,
    key: MessageKey,
    schema_header: String,
    /// The send whose delivery report has not come yet, by envelope id.
    pending: Option<(u64, Instant, DeliveryFuture)>,
    /// The last send's message timed out inside librdkafka (see `reset`).
    timed_out: bool,
    metrics: Option<Arc<Metrics>>,
    ready: tokio::sync::watch::Receiver<bool>,
    /// Stops the readiness probe thread when the sink goes.
    probe_stop: Arc<AtomicBool>,
    /// Registered once the metrics are attached (delivery started).
    registration: Option<Registration>,
}

/// A schema registration still to do.
struct Registration {
    registry: SchemaRegistry,
    subject: String,
    schema: crate::record::RecordSchema,
}

impl KafkaSink {
    fn new(address: &KafkaAddress, format: &StreamFormat) -> Result<KafkaSink, SinkError> {
        let settings = &address.settings;
        let dest = format!(
            "kafka:{}",
            address
                .brokers
                .iter()
                .map(|b| format!("{}:{}", b.host, b.port))
                .collect::<Vec<_>>()
                .join(",")
        );
        let client_id = format!("xtcp2-{}", crate::config::system_hostname());
        let client_config = settings.client_config(&address.brokers, &client_id);
        let producer: FutureProducer<ClientLog> =
            client_config
                .create_with_context(ClientLog)
                .map_err(|e| SinkError::BadAddress {
                    dest: dest.clone(),
                    // librdkafka names the property it refused, not its value.
                    reason: format!("librdkafka refused the configuration: {e}"),
                })?;
        let options: Vec<String> = settings.options.iter().map(KafkaOption::redacted).collect();
        tracing::info!(
            dest,
            topic = settings.topic,
            compression = settings.compression.codec(),
            options = ?options,
            librdkafka = rdkafka::util::get_rdkafka_version().1,
            "kafka producer created (idempotent, acks=all unless overridden)"
        );
        let (ready_tx, ready) = tokio::sync::watch::channel(false);
        let probe_stop = Arc::new(AtomicBool::new(false));
        spawn_metadata_probe(producer.clone(), settings.topic.clone(), ready_tx, probe_stop.clone());
        Ok(KafkaSink {
            producer,
            client_config,
            topic: settings.topic.clone(),
            key: settings.key,
            schema_header: format!("{}/{}", format.schema().name(), format.format().name()),
            pending: None,
            timed_out: false,
            metrics: None,
            ready,
            probe_stop,
            registration: settings.schema_registry.clone().map(|registry| Registration {
                registry,
                subject: format!("{}-value", settings.topic),
                schema: format.schema(),
            }),
        })
    }

    fn produce(&self, envelope: &Envelope, dest: &str) -> Result<DeliveryFuture, SinkError> {
        let poll_seq = envelope.poll_seq.to_string();
        let rows = envelope.rows.to_string();
        let netns = envelope.netns.map(|inode| inode.to_string());
        let mut headers = OwnedHeaders::new_with_capacity(5)
            .insert(Header {
                key: HEADER_HOST,
                value: Some(envelope.hostname.as_bytes()),
            })
            .insert(Header {
                key: HEADER_POLL_SEQ,
                value: Some(poll_seq.as_bytes()),
            })
            .insert(Header {
                key: HEADER_SCHEMA,
                value: Some(self.schema_header.as_bytes()),
            })
            .insert(Header {
                key: HEADER_ROWS,
                value: Some(rows.as_bytes()),
            });
        if let Some(inode) = &netns {
            headers = headers.insert(Header {
                key: HEADER_NETNS,
                value: Some(inode.as_bytes()),
            });
        }
        let key = message_key(self.key, envelope);
        let record = FutureRecord::<[u8], [u8]>::to(&self.topic)
            .payload(envelope.payload())
            .headers(headers);
        let record = match &key {
            None => record,
            Some(key) => record.key(key.as_bytes()),
        };
        self.producer
            .send_result(record)
            .map_err(|(e, _record)| kafka_error(dest, e))
    }

    fn update_in_flight(&self) {
        if let Some(m) = &self.metrics {
            m.destination.in_flight.set(self.producer.in_flight_count().into());
        }
    }
}

impl Drop for KafkaSink {
    fn drop(&mut self) {
        self.probe_stop.store(true, Ordering::Release);
    }
}

/// The message key of `envelope` under `--kafka-key`.
fn message_key(key: MessageKey, envelope: &Envelope) -> Option<String> {
    match (key, envelope.netns) {
        (MessageKey::None, _) => None,
        (MessageKey::Netns, Some(inode)) => Some(format!("{}/{inode}", envelope.hostname)),
        // A namespace whose inode could not be read: the host still keeps
        // its records together.
        (MessageKey::Hostname, _) | (MessageKey::Netns, None) => Some(envelope.hostname.to_string()),
    }
}

/// A librdkafka error as a sink error, its kind the metric label.
fn kafka_error(dest: &str, e: KafkaError) -> SinkError {
    SinkError::Kafka {
        dest: dest.to_string(),
        kind: kafka_error_kind(&e),
        source: Box::new(e),
    }
}

/// The `xtcp2_destination_failures_total` label of a librdkafka error.
fn kafka_error_kind(e: &KafkaError) -> &'static str {
    match e.rdkafka_error_code() {
        Some(RDKafkaErrorCode::QueueFull) => "kafka_queue_full",
        Some(RDKafkaErrorCode::MessageTimedOut) => "kafka_message_timeout",
        Some(RDKafkaErrorCode::MessageSizeTooLarge) | Some(RDKafkaErrorCode::InvalidMessageSize) => {
            "kafka_message_too_large"
        }
        Some(RDKafkaErrorCode::UnknownTopicOrPartition) | Some(RDKafkaErrorCode::UnknownTopic) => "kafka_unknown_topic",
        Some(RDKafkaErrorCode::TopicAuthorizationFailed) | Some(RDKafkaErrorCode::ClusterAuthorizationFailed) => {
            "kafka_authorization"
        }
        Some(RDKafkaErrorCode::AllBrokersDown) | Some(RDKafkaErrorCode::BrokerTransportFailure) => "kafka_transport",
        _ => "kafka",
    }
}

impl Transport for KafkaSink {
    async fn send(&mut self, envelope: &Envelope, dest: &str) -> Result<Sent, SinkError> {
        // The same envelope again after a timed-out send: wait for its
        // delivery report rather than producing it a second time.
        let (started, future) = match self.pending.take() {
            Some((id, started, future)) if id == envelope.id => (started, future),
            _ => (Instant::now(), self.produce(envelope, dest)?),
        };
        self.update_in_flight();
        // Kept in `pending` while awaited: if the delivery task's deadline
        // drops this send, the delivery report's receiver stays here.
        let pending = self.pending.insert((envelope.id, started, future));
        let result = (&mut pending.2).await;
        self.pending = None;
        self.update_in_flight();
        match result {
            Ok(Ok(_delivery)) => {
                if let Some(m) = &self.metrics {
                    m.destination.last_delivery_latency.set(started.elapsed().as_secs_f64());
                }
                Ok(Sent::default())
            }
            Ok(Err((e, _message))) => {
                self.timed_out = e.rdkafka_error_code() == Some(RDKafkaErrorCode::MessageTimedOut);
                Err(kafka_error(dest, e))
            }
            // The producer went away before reporting (only at drop).
            Err(_canceled) => Err(kafka_error(dest, KafkaError::Canceled)),
        }
    }

    fn reset(&mut self) {
        // A pending delivery stays with librdkafka; the next send of the
        // same envelope picks it up (see `send`). But a producer can be
        // stuck for good, and then only a new one (with a new producer id
        // from the brokers) delivers again:
        // - a fatal error of the idempotent producer refuses every message;
        // - a message that timed out (`message.timeout.ms`): the brokers
        //   were unreachable that long, or they answer but refuse the
        //   producer id. A broker that lost its producer state (restarted
        //   empty; tansu's `memory://` storage in the tests) answers every
        //   produce with UNKNOWN_PRODUCER_ID, and librdkafka bumps the epoch
        //   of the same id and retries, forever, never asking for a new id.
        //   The delivery task sends the timed-out message again on the new
        //   producer: a refused one is not duplicated; one that timed out in
        //   flight may have been written, the at-least-once that
        //   librdkafka's own epoch bump (a sequence reset) has too. What
        //   the queue dropped meanwhile is counted there.
        let why = match self.producer.client().fatal_error() {
            Some((code, reason)) => format!("fatal error {code:?}: {reason}"),
            None if std::mem::take(&mut self.timed_out) => "a message timed out".to_string(),
            None => return,
        };
        match self
            .client_config
            .create_with_context::<ClientLog, FutureProducer<ClientLog>>(ClientLog)
        {
            Ok(producer) => {
                tracing::warn!(why, "kafka: starting a new producer (a new producer id)");
                self.pending = None;
                self.producer = producer;
                if let Some(m) = &self.metrics {
                    m.destination.producer_restarts.inc();
                }
            }
            Err(e) => {
                tracing::warn!(why, error = %e, "kafka: a new producer cannot be made; retrying later");
                self.timed_out = true;
            }
        }
    }

    fn classify(&self, error: &SinkError) -> Disposition {
        match error {
            // The broker refuses a message this size: sending it again cannot help.
            SinkError::Kafka {
                kind: "kafka_message_too_large",
                ..
            } => Disposition::Drop,
            other => other.default_disposition(),
        }
    }

    fn send_outlives_timeout(&self) -> bool {
        true
    }

    fn attach_metrics(&mut self, metrics: Arc<Metrics>) {
        if let Some(registration) = self.registration.take() {
            // In the background: the registry never delays delivery.
            tokio::spawn(register_schema(registration, metrics.clone()));
        }
        self.metrics = Some(metrics);
    }

    fn ready_signal(&self) -> Option<tokio::sync::watch::Receiver<bool>> {
        Some(self.ready.clone())
    }
}

/// Deadline of the schema registration request.
const REGISTRY_TIMEOUT: Duration = Duration::from_secs(10);
/// Bytes of the registry's answer kept (for the id, or an error message).
const REGISTRY_BODY_LIMIT: usize = 4096;

/// Why the schema could not be registered.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("reading --xtcp-proto-file {path}: {source}")]
    ProtoFile {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("--kafka-schema-url {url}: {reason}")]
    Request { url: String, reason: String },
    #[error("--kafka-schema-url {url}: HTTP {status}: {body}")]
    Status { url: String, status: u16, body: String },
    #[error("--kafka-schema-url {url}: no answer within {REGISTRY_TIMEOUT:?}")]
    Timeout { url: String },
}

impl RegistryError {
    /// Label of `xtcp2_destination_schema_registrations_total`.
    pub fn kind(&self) -> &'static str {
        match self {
            RegistryError::ProtoFile { .. } => "proto_file",
            RegistryError::Request { .. } => "request",
            RegistryError::Status { .. } => "http_status",
            RegistryError::Timeout { .. } => "timeout",
        }
    }
}

/// The registry's request body: `{"schemaType":"PROTOBUF","schema":TEXT}`.
pub fn registry_request_body(proto_text: &str) -> String {
    let mut escaped = String::with_capacity(proto_text.len() + 16);
    for c in proto_text.chars() {
        match c {
            '"' => escaped.push_str("\\\""),
            '\\' => escaped.push_str("\\\\"),
            '\n' => escaped.push_str("\\n"),
            c if (c as u32) < 0x20 => escaped.push_str(&format!("\\u{:04x}", c as u32)),
            c => escaped.push(c),
        }
    }
    format!("{{\"schemaType\":\"PROTOBUF\",\"schema\":\"{escaped}\"}}")
}

/// Registers the record's `.proto` at start; a failure is logged and
/// counted, never fatal (the messages are produced all the same).
async fn register_schema(registration: Registration, metrics: Arc<Metrics>) {
    let shown = crate::profile::pyroscope::redact_credentials(&registration.registry.url);
    let outcome = match tokio::time::timeout(REGISTRY_TIMEOUT, post_schema(&registration, &shown)).await {
        Ok(result) => result,
        Err(_) => Err(RegistryError::Timeout { url: shown.clone() }),
    };
    let kind = match &outcome {
        Ok(answer) => {
            tracing::info!(url = %shown, subject = registration.subject, answer = %answer, "kafka: schema registered");
            "ok"
        }
        Err(e) => {
            tracing::warn!(error = %e, subject = registration.subject, "kafka: schema registration failed; producing without it");
            e.kind()
        }
    };
    metrics
        .destination
        .schema_registrations
        .get_or_create(&crate::metrics::KindLabel { kind })
        .inc();
}

/// POST `{url}/subjects/{subject}/versions`; the registry's answer text.
async fn post_schema(registration: &Registration, shown: &str) -> Result<String, RegistryError> {
    use http_body_util::{BodyExt, Full, Limited};
    let proto_text = match &registration.registry.proto_file {
        Some(path) => tokio::fs::read_to_string(path)
            .await
            .map_err(|source| RegistryError::ProtoFile {
                path: path.display().to_string(),
                source,
            })?,
        None => crate::format::protobuf::schema_text(registration.schema),
    };
    let request_error = |reason: String| RegistryError::Request {
        url: shown.to_string(),
        reason,
    };
    // The subject is one path segment: everything but RFC 3986's unreserved
    // characters is escaped (a topic may hold '.', '_' and '-', which stay).
    const SEGMENT: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
        .remove(b'-')
        .remove(b'.')
        .remove(b'_')
        .remove(b'~');
    let uri = format!(
        "{}/subjects/{}/versions",
        registration.registry.url,
        percent_encoding::utf8_percent_encode(&registration.subject, SEGMENT)
    );
    let request = hyper::Request::builder()
        .method(hyper::Method::POST)
        .uri(uri)
        .header(hyper::header::CONTENT_TYPE, "application/vnd.schemaregistry.v1+json")
        .header(hyper::header::ACCEPT, "application/vnd.schemaregistry.v1+json")
        .header(hyper::header::USER_AGENT, concat!("xtcp2/", env!("CARGO_PKG_VERSION")))
        .body(Full::new(bytes::Bytes::from(registry_request_body(&proto_text))))
        .map_err(|e| request_error(e.to_string()))?;
    let client = crate::https_client::https_client::<Full<bytes::Bytes>>().map_err(request_error)?;
    let response = client
        .request(request)
        .await
        .map_err(|e| request_error(e.to_string()))?;
    let status = response.status();
    let body = Limited::new(response.into_body(), REGISTRY_BODY_LIMIT)
        .collect()
        .await
        .map(|b| String::from_utf8_lossy(&b.to_bytes()).trim().to_string())
        .unwrap_or_else(|_| String::from("(answer unreadable)"));
    if status.is_success() {
        Ok(body)
    } else {
        Err(RegistryError::Status {
            url: shown.to_string(),
            status: status.as_u16(),
            body,
        })
    }
}

/// Asks the brokers for the topic's metadata until they answer, then marks
/// the destination ready. A thread of its own: the request blocks.
fn spawn_metadata_probe(
    producer: FutureProducer<ClientLog>,
    topic: String,
    ready: tokio::sync::watch::Sender<bool>,
    stop: Arc<AtomicBool>,
) {
    let spawned = std::thread::Builder::new()
        .name("xtcp2-kafka-meta".into())
        .spawn(move || {
            while !stop.load(Ordering::Acquire) {
                match producer.client().fetch_metadata(Some(&topic), METADATA_TIMEOUT) {
                    Ok(metadata) if !metadata.brokers().is_empty() => {
                        tracing::info!(
                            brokers = metadata.brokers().len(),
                            topic,
                            "kafka: metadata received; ready"
                        );
                        let _ = ready.send(true);
                        return;
                    }
                    Ok(_) => {}
                    Err(e) => tracing::debug!(error = %e, "kafka: no metadata yet"),
                }
                std::thread::sleep(METADATA_RETRY);
            }
        });
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "kafka: cannot start the metadata probe; /readyz will not report the destination open");
    }
}

/// librdkafka's log and error callbacks, into our log (rate limited: a
/// dead broker repeats the same error every few seconds).
pub struct ClientLog;

static CLIENT_ERROR_LOG: crate::log_throttle::LogThrottle = crate::log_throttle::LogThrottle::new(CLIENT_LOG_INTERVAL);
static CLIENT_WARN_LOG: crate::log_throttle::LogThrottle = crate::log_throttle::LogThrottle::new(CLIENT_LOG_INTERVAL);

impl ClientContext for ClientLog {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, log_message: &str) {
        match level {
            RDKafkaLogLevel::Emerg | RDKafkaLogLevel::Alert | RDKafkaLogLevel::Critical | RDKafkaLogLevel::Error => {
                if let Some(suppressed) = CLIENT_ERROR_LOG.admit() {
                    tracing::error!(facility = fac, suppressed, "librdkafka: {log_message}");
                }
            }
            RDKafkaLogLevel::Warning => {
                if let Some(suppressed) = CLIENT_WARN_LOG.admit() {
                    tracing::warn!(facility = fac, suppressed, "librdkafka: {log_message}");
                }
            }
            _ => tracing::debug!(facility = fac, "librdkafka: {log_message}"),
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        if let Some(suppressed) = CLIENT_ERROR_LOG.admit() {
            tracing::warn!(error = %error, suppressed, "librdkafka: {reason}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Broker lists parse; malformed ones say what is wrong.
    #[test]
    fn broker_lists_parse() {
        let a = Kafka::parse("kafka", "b1:9092,b2:9093").unwrap();
        assert_eq!(a.brokers.len(), 2);
        assert_eq!(a.brokers[1].port, 9093);
        assert_eq!(a.settings.topic, "xtcp");
        assert!(Kafka::parse("kafka", "b1").unwrap_err().contains("HOST:PORT"));
        assert!(Kafka::parse("kafka", "b1:9092,").unwrap_err().contains("empty broker"));
    }

    /// The Go daemon's compression spellings; "" and auto mean zstd.
    #[test]
    fn compression_spellings() {
        assert_eq!(Compression::parse("").unwrap(), Compression::Zstd);
        assert_eq!(Compression::parse("auto").unwrap(), Compression::Zstd);
        assert_eq!(Compression::parse("lz4").unwrap().codec(), "lz4");
        assert_eq!(Compression::parse("none").unwrap().codec(), "none");
        assert!(Compression::parse("brotli").is_err());
    }

    /// Secret option values never appear in Debug output nor in errors.
    #[test]
    fn secrets_are_redacted() {
        let o = KafkaOption::parse("sasl.password=hunter2").unwrap();
        assert_eq!(format!("{o:?}"), "sasl.password=***");
        let o = KafkaOption::parse("linger.ms=5").unwrap();
        assert_eq!(format!("{o:?}"), "linger.ms=5");
        assert_eq!(redact_option_text("ssl.key.password=x"), "ssl.key.password=***");
        let err = KafkaOption::parse("sasl.password").unwrap_err().to_string();
        assert!(!err.contains("hunter2"));
    }

    /// --kafka-key: none, the host, or host/inode of the envelope's namespace.
    #[test]
    fn message_keys() {
        assert_eq!(MessageKey::parse("netns").unwrap(), MessageKey::Netns);
        assert!(MessageKey::parse("pod").unwrap_err().to_string().contains("netns"));
        let mut e = Envelope::from_records(
            crate::format::StreamFormat::new("jsonl", &[])
                .unwrap()
                .encoder()
                .as_mut(),
            [],
            Arc::from("h1"),
            3,
        );
        assert_eq!(message_key(MessageKey::None, &e), None);
        assert_eq!(message_key(MessageKey::Hostname, &e).as_deref(), Some("h1"));
        assert_eq!(message_key(MessageKey::Netns, &e).as_deref(), Some("h1"));
        e.netns = Some(4026531840);
        assert_eq!(message_key(MessageKey::Netns, &e).as_deref(), Some("h1/4026531840"));
        assert_eq!(message_key(MessageKey::Hostname, &e).as_deref(), Some("h1"));
    }

    /// Options given by the operator override our defaults.
    #[test]
    fn options_override_defaults() {
        let settings = KafkaSettings {
            options: vec![KafkaOption::parse("acks=1").unwrap()],
            ..KafkaSettings::default()
        };
        let config = settings.client_config(&[HostPort::parse("b:1").unwrap()], "x");
        assert_eq!(config.get("acks"), Some("1"));
        assert_eq!(config.get("enable.idempotence"), Some("true"));
        assert_eq!(config.get("compression.codec"), Some("zstd"));
        assert_eq!(config.get("bootstrap.servers"), Some("b:1"));
    }
}
