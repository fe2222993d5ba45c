//! Sink: envelopes → the destination (`-dest`).
//!
//! A sink writes whole envelopes. The delivery task ([`deliver`]) takes
//! envelopes from the bounded queue, sends them, and on failure retries with
//! capped exponential backoff while the queue keeps absorbing (and, when
//! full, dropping the oldest) new envelopes: collection never waits for a
//! destination.
//!
//! Each destination is one module that implements [`DestinationKind`]: its
//! scheme, how its address parses, how it opens, and its [`Transport`]
//! (send, reset, and which of its errors are worth a retry). Adding one is
//! that module plus one line in [`destinations!`] below; `--help`, the error
//! for an unknown scheme and the table in `docs/outputs.md` are generated
//! from the registry ([`Destination::docs_table`]).
//!
//! Connections are made at the first send, not at start, so a destination
//! that is down when the daemon starts only delays delivery.
//!
//! This module must not encode records (that is `format`) nor decide what
//! to drop when the queue is full (that is `batch::queue`).

pub mod copies;
pub mod datagram;
pub mod file;
pub mod http;
pub mod kafka;
pub mod nats;
pub mod null;
pub mod stdio;
pub mod stream;
pub mod udp;
pub mod valkey;

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::batch::{Envelope, EnvelopeQueue};
use crate::format::StreamFormat;
use crate::metrics::{KindLabel, Metrics};

/// First retry delay after a failed send.
pub(crate) const RETRY_INITIAL: Duration = Duration::from_millis(100);
/// Retry delays double up to this cap: a destination that comes back is
/// used again within 5 s, and a dead one costs one attempt per 5 s.
pub(crate) const RETRY_MAX: Duration = Duration::from_secs(5);
/// Failed sends allowed after shutdown began before the rest is dropped: a
/// dead destination must not hold the exit hostage.
pub(crate) const SHUTDOWN_SEND_ATTEMPTS: u32 = 3;
/// Longest delivery may go on after the queue closed at shutdown
/// (`--shutdown-timeout`'s default), the send in flight included: what is
/// not delivered by then is dropped and counted.
pub const SHUTDOWN_BUDGET: Duration = Duration::from_secs(2);
/// Retry delay once shutdown began.
pub(crate) const SHUTDOWN_RETRY_DELAY: Duration = Duration::from_millis(100);
/// Largest datagram payload sent to udp and unixgram destinations: the
/// IPv4 maximum (65535 − 20 IP − 8 UDP). Bigger envelopes are split at
/// record boundaries; a datagram above the path MTU is fragmented by xtcp2
/// (IP_HDRINCL turns the kernel's fragmentation off), and 65507 bytes fit
/// the default unix socket send buffer (`net.core.wmem_default`, 208 KiB).
/// A smaller, MTU-sized cap (1472) would hold neither one JSON record with
/// every tcp_info field (~2.1 KiB) nor the csv header of every column (~2 KiB).
pub const MAX_DATAGRAM_PAYLOAD: usize = 65_507;
/// A repeating delivery failure is logged at most this often (with the
/// count of failures in between), so a dead destination cannot flood the
/// journal.
pub(crate) const FAILURE_LOG_INTERVAL: Duration = Duration::from_secs(60);

#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error("unknown destination {0:?}; valid: {valid}", valid = Destination::forms())]
    UnknownScheme(String),
    #[error("destination {dest:?}: {reason}")]
    BadAddress { dest: String, reason: String },
    #[error("connecting to {dest}: {source}")]
    Connect {
        dest: String,
        #[source]
        source: std::io::Error,
    },
    #[error("writing to {dest}: {source}")]
    Io {
        dest: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{dest}: opening a raw IPv4 socket (IP_HDRINCL) needs CAP_NET_RAW: {source}")]
    NeedsCapNetRaw {
        dest: String,
        #[source]
        source: std::io::Error,
    },
    #[error("sending to {dest} timed out after {timeout:?}")]
    Timeout { dest: String, timeout: Duration },
    #[error("POST {dest}: {source}")]
    Http {
        dest: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("POST {dest}: HTTP {status}: {body}")]
    HttpStatus { dest: String, status: u16, body: String },
    #[error("{dest}: TLS setup: {reason}")]
    Tls { dest: String, reason: String },
    #[error("{dest}: refusing to open: {reason}")]
    UnsafePath { dest: String, reason: String },
    #[error("producing to {dest}: {source}")]
    Kafka {
        dest: String,
        /// The failure's metric label (`kafka_queue_full`, `kafka_message_timeout`, ...).
        kind: &'static str,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A message broker's client (nats, valkey) failed; `kind` is the
    /// metric label (`connect`, `nats_ack`, `valkey_xadd`, ...).
    #[error("{dest}: {reason}")]
    Broker {
        dest: String,
        kind: &'static str,
        reason: String,
    },
    /// The destination can never take this envelope (too large for it).
    #[error("{dest} cannot take the envelope: {reason}")]
    Rejected { dest: String, reason: String },
}

impl SinkError {
    /// Label of `xtcp2_destination_failures_total`.
    pub fn kind(&self) -> &'static str {
        match self {
            SinkError::UnknownScheme(_) | SinkError::BadAddress { .. } => "config",
            SinkError::Connect { .. } => "connect",
            SinkError::Io { .. } => "io",
            SinkError::NeedsCapNetRaw { .. } => "permission",
            SinkError::Timeout { .. } => "timeout",
            SinkError::Http { .. } => "http",
            SinkError::HttpStatus { .. } => "http_status",
            SinkError::Tls { .. } => "tls",
            SinkError::UnsafePath { .. } => "unsafe_path",
            SinkError::Kafka { kind, .. } => kind,
            SinkError::Broker { kind, .. } => kind,
            SinkError::Rejected { .. } => "rejected",
        }
    }

    /// What the delivery task does after this error, unless the
    /// destination says otherwise ([`Transport::classify`]): a failure of
    /// the path or the peer is retried.
    pub(crate) fn default_disposition(&self) -> Disposition {
        Disposition::Retry
    }
}

/// What the delivery task does with an envelope whose send failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Disposition {
    /// Send it again after a backoff (the destination may come back).
    Retry,
    /// Sending it again cannot succeed (the receiver rejected its content):
    /// drop and count it at once instead of blocking the queue.
    Drop,
    /// Nothing sent here can ever be read again (stdout's reader exited):
    /// drop everything and stop the daemon, as any Unix filter would.
    Stop,
}

/// What a destination module declares; registered in [`destinations!`].
pub trait DestinationKind {
    /// The `-dest` scheme names (the text before the first `:`).
    const SCHEMES: &'static [&'static str];
    /// Whether an address follows `SCHEME:` (`file:PATH`) or the scheme is
    /// the whole destination (`stdout`).
    const TAKES_ADDRESS: bool;
    /// The form shown in `--help` and errors, e.g. `file:PATH`.
    const FORM: &'static str;
    /// One line for the docs table: what is sent and when a stream opens.
    const SUMMARY: &'static str;
    /// The parsed address and options.
    type Address: std::fmt::Debug + Clone + PartialEq + Eq + Send + Sync + 'static;
    /// The open destination.
    type Sink: Transport;
    /// Checks the syntax of what follows `scheme:` (no name resolution, no
    /// I/O); the error is the reason, shown after the whole `-dest`.
    fn parse(scheme: &str, rest: &str) -> Result<Self::Address, String>;
    /// Opens the destination for `format` (network destinations connect
    /// at the first send, so a receiver that is down does not stop start).
    fn open(
        address: &Self::Address,
        format: &StreamFormat,
    ) -> impl Future<Output = Result<Self::Sink, SinkError>> + Send;
}

/// An open destination.
pub trait Transport: Send {
    /// Sends one whole envelope (`dest` names the destination in errors).
    fn send(&mut self, envelope: &Envelope, dest: &str) -> impl Future<Output = Result<Sent, SinkError>> + Send;

    /// Forgets connection state after a failed or timed-out send, so the
    /// next send starts a fresh stream (a half-written envelope must not be
    /// continued on the same connection).
    fn reset(&mut self) {}

    /// What to do after `error`.
    fn classify(&self, error: &SinkError) -> Disposition {
        error.default_disposition()
    }

    /// SIGHUP: start afresh at the next send (reopen a rotated file, make a
    /// new connection). By default the same as [`Transport::reset`].
    fn reopen(&mut self) {
        self.reset()
    }

    /// Whether a send cut short by its deadline may still complete (a
    /// write already handed to another thread). Then [`deliver`] never
    /// gives the envelope back to the queue (where it could be dropped
    /// while it is being written) nor to another destination attempt: it
    /// sends the same envelope again, and the transport waits for its
    /// write in flight instead of writing it twice.
    fn send_outlives_timeout(&self) -> bool {
        false
    }

    /// Gives the destination the daemon's metrics, for what only it sees
    /// (kafka: messages in flight, the last delivery's latency). Called
    /// once by [`deliver`] before the first send.
    fn attach_metrics(&mut self, _metrics: Arc<Metrics>) {}

    /// For a destination that is open only once its peer answered (kafka:
    /// the first metadata exchange): becomes `true` then, and `/readyz`
    /// waits for it. `None`: open as soon as [`DestinationKind::open`] returned.
    fn ready_signal(&self) -> Option<tokio::sync::watch::Receiver<bool>> {
        None
    }
}

/// Asks an open [`Sink`] to reopen its destination before its next send
/// (SIGHUP). Cheap to clone and to call from a signal task.
#[derive(Clone, Default)]
pub struct ReopenHandle(Arc<std::sync::atomic::AtomicBool>);

impl ReopenHandle {
    pub fn request(&self) {
        self.0.store(true, std::sync::atomic::Ordering::Release);
    }

    fn take(&self) -> bool {
        self.0.swap(false, std::sync::atomic::Ordering::AcqRel)
    }
}

/// One registered destination, for help texts and docs.
#[derive(Debug, Clone, Copy)]
pub struct DestinationDoc {
    pub schemes: &'static [&'static str],
    pub form: &'static str,
    pub summary: &'static str,
}

/// The destination registry: one line per destination module,
/// `Variant => module::Type`. Generates [`Destination`] (the parsed
/// `-dest`), the open sink's dispatch, and the docs list.
macro_rules! destinations {
    ($($variant:ident => $kind:ty),+ $(,)?) => {
        /// A parsed `-dest`: the destination and its address.
        #[derive(Debug, Clone, PartialEq, Eq)]
        pub enum Destination {
            $($variant(<$kind as DestinationKind>::Address)),+
        }

        // One per daemon, moved once: the size of its largest variant (an
        // HTTP client, larger since the gRPC server's dependencies updated
        // hyper-util) costs nothing worth a box.
        #[allow(clippy::large_enum_variant)]
        enum OpenSink {
            $($variant(<$kind as DestinationKind>::Sink)),+
        }

        impl Destination {
            /// Every registered destination, in registration order.
            pub const REGISTERED: [DestinationDoc; [$(stringify!($variant)),+].len()] = [$(DestinationDoc {
                schemes: <$kind as DestinationKind>::SCHEMES,
                form: <$kind as DestinationKind>::FORM,
                summary: <$kind as DestinationKind>::SUMMARY,
            }),+];

            /// Checks the syntax of `-dest` (no name resolution, no I/O).
            pub fn parse(dest: &str) -> Result<Destination, SinkError> {
                let (scheme, rest) = match dest.split_once(':') {
                    Some((scheme, rest)) => (scheme, Some(rest)),
                    None => (dest, None),
                };
                $(
                    if <$kind as DestinationKind>::SCHEMES.contains(&scheme)
                        && <$kind as DestinationKind>::TAKES_ADDRESS == rest.is_some()
                    {
                        return <$kind as DestinationKind>::parse(scheme, rest.unwrap_or_default())
                            .map(Destination::$variant)
                            .map_err(|reason| SinkError::BadAddress { dest: dest.to_string(), reason });
                    }
                )+
                Err(SinkError::UnknownScheme(dest.to_string()))
            }

            async fn open_sink(&self, format: &StreamFormat) -> Result<OpenSink, SinkError> {
                Ok(match self {
                    $(Destination::$variant(address) => {
                        OpenSink::$variant(<$kind as DestinationKind>::open(address, format).await?)
                    })+
                })
            }
        }

        impl OpenSink {
            async fn send(&mut self, envelope: &Envelope, dest: &str) -> Result<Sent, SinkError> {
                match self {
                    $(OpenSink::$variant(sink) => sink.send(envelope, dest).await),+
                }
            }

            fn reset(&mut self) {
                match self {
                    $(OpenSink::$variant(sink) => sink.reset()),+
                }
            }

            fn classify(&self, error: &SinkError) -> Disposition {
                match self {
                    $(OpenSink::$variant(sink) => sink.classify(error)),+
                }
            }

            fn reopen(&mut self) {
                match self {
                    $(OpenSink::$variant(sink) => sink.reopen()),+
                }
            }

            fn send_outlives_timeout(&self) -> bool {
                match self {
                    $(OpenSink::$variant(sink) => sink.send_outlives_timeout()),+
                }
            }

            fn attach_metrics(&mut self, metrics: Arc<Metrics>) {
                match self {
                    $(OpenSink::$variant(sink) => sink.attach_metrics(metrics)),+
                }
            }

            fn ready_signal(&self) -> Option<tokio::sync::watch::Receiver<bool>> {
                match self {
                    $(OpenSink::$variant(sink) => sink.ready_signal()),+
                }
            }
        }
    };
}

destinations! {
    Null => null::Null,
    Stdout => stdio::Stdout,
    Stderr => stdio::Stderr,
    File => file::File,
    Tcp => stream::Tcp,
    Unix => stream::Unix,
    Udp => udp::Udp,
    Unixgram => datagram::Unixgram,
    Http => http::Http,
    Kafka => kafka::Kafka,
    Nats => nats::Nats,
    Valkey => valkey::Valkey,
}

impl Destination {
    /// Every destination form, comma separated (help and error texts).
    pub(crate) fn forms() -> String {
        Destination::REGISTERED.map(|d| d.form).join(", ")
    }

    /// The format used when `--marshal` is not given: protobufList for
    /// kafka (what ClickHouse's Kafka engine reads), else none of its own.
    pub(crate) fn preferred_format(&self) -> Option<crate::format::Format> {
        match self {
            Destination::Kafka(_) => Some(crate::format::Format::ProtobufList),
            _ => None,
        }
    }

    /// Whether each envelope must hold one namespace's records
    /// (`--kafka-key netns` keys messages by namespace).
    pub(crate) fn envelope_per_namespace(&self) -> bool {
        matches!(self, Destination::Kafka(k) if k.settings.key == kafka::MessageKey::Netns)
    }

    /// Whether records are thrown away (encoding can be skipped).
    pub(crate) fn discards_records(&self) -> bool {
        matches!(self, Destination::Null(_))
    }

    /// The markdown table of destinations in `docs/outputs.md` (a test
    /// keeps the doc equal to this).
    pub fn docs_table() -> String {
        let mut t =
            String::from("| `--dest` | what is sent, and when an output stream (csv header) opens |\n|---|---|\n");
        for d in Destination::REGISTERED {
            t.push_str(&format!("| `{}` | {} |\n", d.form, d.summary));
        }
        t
    }
}

impl std::str::FromStr for Destination {
    type Err = SinkError;
    fn from_str(s: &str) -> Result<Destination, SinkError> {
        Destination::parse(s)
    }
}

/// What one send delivered besides the envelope itself.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Sent {
    /// Records a datagram destination skipped because one alone exceeds
    /// [`MAX_DATAGRAM_PAYLOAD`]; they count as dropped.
    pub rows_too_large: usize,
    /// Records sent without any confirmation that they arrived
    /// (fire-and-forget modes: nats core publish, a valkey PUBLISH no
    /// subscriber received); delivered, but counted in
    /// `xtcp2_destination_unconfirmed_rows_total`.
    pub rows_unconfirmed: usize,
}

/// Where envelopes go: an open destination and its `-dest` text.
pub struct Sink {
    name: String,
    open: OpenSink,
    reopen: ReopenHandle,
    copies: Option<copies::EnvelopeCopies>,
}

impl Sink {
    /// Parses and opens a `-dest` given as text (tests and tools).
    pub async fn open(dest: &str, format: &StreamFormat) -> Result<Sink, SinkError> {
        Sink::open_destination(dest, &Destination::parse(dest)?, format).await
    }

    /// Opens a parsed destination for `format`; `name` is how logs and
    /// errors call it (the `-dest` text).
    pub(crate) async fn open_destination(
        name: &str,
        destination: &Destination,
        format: &StreamFormat,
    ) -> Result<Sink, SinkError> {
        Ok(Sink {
            name: name.to_string(),
            open: destination.open_sink(format).await?,
            reopen: ReopenHandle::default(),
            copies: None,
        })
    }

    /// Also writes the first envelopes taken for delivery to files
    /// (`-destWriteFiles`).
    pub fn keep_copies(&mut self, copies: copies::EnvelopeCopies) {
        self.copies = Some(copies);
    }

    /// Called once per envelope taken from the queue (retries are not new).
    fn taken(&mut self, envelope: &Envelope) {
        if let Some(copies) = &mut self.copies {
            copies.save(envelope);
        }
    }

    /// The `-dest` this sink writes to.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Sends one envelope (after reopening the destination if that was
    /// requested since the last send).
    pub async fn send(&mut self, envelope: &Envelope) -> Result<Sent, SinkError> {
        if self.reopen.take() {
            self.open.reopen();
        }
        self.open.send(envelope, &self.name).await
    }

    /// A handle that asks this sink to reopen before its next send.
    pub fn reopen_handle(&self) -> ReopenHandle {
        self.reopen.clone()
    }

    /// Forgets connection state after a failed or timed-out send.
    pub(crate) fn reset(&mut self) {
        self.open.reset()
    }

    /// What to do after a failed send.
    pub fn classify(&self, error: &SinkError) -> Disposition {
        self.open.classify(error)
    }

    /// See [`Transport::send_outlives_timeout`].
    pub(crate) fn send_outlives_timeout(&self) -> bool {
        self.open.send_outlives_timeout()
    }

    /// See [`Transport::ready_signal`].
    pub fn ready_signal(&self) -> Option<tokio::sync::watch::Receiver<bool>> {
        self.open.ready_signal()
    }
}

/// How [`deliver`] retries.
#[derive(Debug, Clone, Copy)]
pub struct DeliveryPolicy {
    /// Deadline of one send (`-produceTimeout`).
    pub produce_timeout: Duration,
    pub retry_initial: Duration,
    pub retry_max: Duration,
    pub shutdown_attempts: u32,
    pub shutdown_budget: Duration,
}

impl DeliveryPolicy {
    pub fn new(produce_timeout: Duration) -> Self {
        DeliveryPolicy {
            produce_timeout,
            retry_initial: RETRY_INITIAL,
            retry_max: RETRY_MAX,
            shutdown_attempts: SHUTDOWN_SEND_ATTEMPTS,
            shutdown_budget: SHUTDOWN_BUDGET,
        }
    }
}

/// What [`deliver`] did, for logs and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DeliveryReport {
    pub envelopes_sent: u64,
    pub rows_sent: u64,
    pub failures: u64,
    /// Rows [`deliver`] itself gave up on (rejected, too large, or left at
    /// shutdown); the queue counts the ones it dropped when full.
    pub rows_dropped: u64,
    /// Rows sent without confirmation ([`Sent::rows_unconfirmed`]).
    pub rows_unconfirmed: u64,
}

/// Sends queued envelopes until the queue is closed and drained (or, once
/// closed, until the destination has failed
/// [`DeliveryPolicy::shutdown_attempts`] times or the shutdown budget is
/// spent; what is left then is dropped and counted).
pub async fn deliver(
    mut sink: Sink,
    queue: Arc<EnvelopeQueue>,
    metrics: Arc<Metrics>,
    policy: DeliveryPolicy,
) -> DeliveryReport {
    let mut backoff = policy.retry_initial;
    let mut report = DeliveryReport::default();
    let mut shutdown: Option<(Instant, u32)> = None;
    let mut failure_log = FailureLog::default();
    // An envelope whose write may still be in flight (see
    // Transport::send_outlives_timeout): sent again before anything else,
    // never put back in the queue, where it could be dropped as the oldest.
    let mut held: Option<Envelope> = None;
    sink.open.attach_metrics(metrics.clone());
    loop {
        let envelope = match held.take() {
            Some(envelope) => envelope,
            None => match queue.pop().await {
                Some(envelope) => {
                    sink.taken(&envelope);
                    envelope
                }
                None => break,
            },
        };
        if queue.is_closed() && shutdown.is_none() {
            shutdown = Some((Instant::now() + policy.shutdown_budget, 0));
        }
        let started = Instant::now();
        // The send races its own deadline and, until shutdown began, the
        // queue's closing: a send stalled when shutdown begins gets only
        // what is left of the shutdown budget, not a whole produce timeout.
        let finished = {
            let send = sink.send(&envelope);
            tokio::pin!(send);
            loop {
                let deadline = match shutdown {
                    Some((budget_end, _)) => (started + policy.produce_timeout).min(budget_end),
                    None => started + policy.produce_timeout,
                };
                tokio::select! {
                    result = &mut send => break Some(result),
                    _ = tokio::time::sleep_until(deadline.into()) => break None,
                    _ = queue.wait_closed(), if shutdown.is_none() => {
                        shutdown = Some((Instant::now() + policy.shutdown_budget, 0));
                    }
                }
            }
        };
        let result = finished.unwrap_or_else(|| {
            Err(SinkError::Timeout {
                dest: sink.name().to_string(),
                timeout: started.elapsed(),
            })
        });
        match result {
            Ok(sent) => {
                metrics.destination.sends.inc();
                metrics.destination.send_bytes.inc_by(envelope.payload().len() as u64);
                report.envelopes_sent += 1;
                report.rows_sent += (envelope.rows - sent.rows_too_large) as u64;
                if sent.rows_unconfirmed > 0 {
                    report.rows_unconfirmed += sent.rows_unconfirmed as u64;
                    metrics
                        .destination
                        .unconfirmed_rows
                        .inc_by(sent.rows_unconfirmed as u64);
                }
                if sent.rows_too_large > 0 {
                    queue.count_dropped(0, sent.rows_too_large as u64);
                    report.rows_dropped += sent.rows_too_large as u64;
                    tracing::warn!(
                        rows = sent.rows_too_large,
                        max = MAX_DATAGRAM_PAYLOAD,
                        "records larger than one datagram were dropped"
                    );
                }
                failure_log.recovered(sink.name());
                backoff = policy.retry_initial;
            }
            Err(e) => {
                sink.reset();
                report.failures += 1;
                metrics
                    .destination
                    .failures
                    .get_or_create(&KindLabel { kind: e.kind() })
                    .inc();
                match sink.classify(&e) {
                    Disposition::Stop => {
                        // Like any Unix filter whose reader left: stop, and let
                        // the daemon shut down (the caller watches deliver end).
                        queue.count_dropped(1, envelope.rows as u64);
                        let rest = queue.discard_all();
                        report.rows_dropped += envelope.rows as u64 + rest.rows;
                        tracing::info!(
                            destination = sink.name(),
                            "the reader of the output closed it; stopping"
                        );
                        break;
                    }
                    Disposition::Drop => {
                        queue.count_dropped(1, envelope.rows as u64);
                        report.rows_dropped += envelope.rows as u64;
                        tracing::warn!(error = %e, rows = envelope.rows, "destination rejected an envelope; dropped it");
                        continue;
                    }
                    Disposition::Retry => {}
                }
                if queue.is_closed() && shutdown.is_none() {
                    shutdown = Some((Instant::now() + policy.shutdown_budget, 0));
                }
                // A write that goes on is waited for until the budget ends,
                // however many deadlines pass meanwhile.
                let write_goes_on = matches!(e, SinkError::Timeout { .. }) && sink.send_outlives_timeout();
                if let Some((deadline, attempts)) = &mut shutdown {
                    if !write_goes_on {
                        *attempts += 1;
                    }
                    if *attempts >= policy.shutdown_attempts || Instant::now() >= *deadline {
                        queue.count_dropped(1, envelope.rows as u64);
                        let rest = queue.discard_all();
                        let rows = envelope.rows as u64 + rest.rows;
                        report.rows_dropped += rows;
                        tracing::warn!(error = %e, rows, envelopes = rest.envelopes + 1, "shutting down with the destination failing: dropped what was left");
                        break;
                    }
                }
                if write_goes_on {
                    // The write goes on: wait for it (the next send does),
                    // neither writing it again nor dropping it.
                    if let Some(suppressed) = SLOW_WRITE_LOG.admit() {
                        tracing::warn!(
                            destination = sink.name(),
                            waited = ?started.elapsed(),
                            suppressed,
                            "the destination is slow: a write has taken longer than --produce-timeout and goes on (it cannot be taken back, so it is neither repeated nor dropped); the queue drops the oldest waiting envelopes if it fills"
                        );
                    }
                    held = Some(envelope);
                    continue;
                }
                failure_log.failed(&e, backoff);
                metrics.destination.retries.inc();
                queue.requeue_front(envelope);
                let delay = if shutdown.is_some() {
                    backoff.min(SHUTDOWN_RETRY_DELAY)
                } else {
                    backoff
                };
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    // Shutdown cuts a long backoff short: the last attempts come now.
                    _ = queue.wait_closed(), if shutdown.is_none() => {}
                }
                backoff = (backoff * 2).min(policy.retry_max);
            }
        }
    }
    tracing::info!(
        envelopes_sent = report.envelopes_sent,
        rows_sent = report.rows_sent,
        rows_queued = metrics.envelope.rows_flushed.get(),
        rows_dropped = metrics.destination.dropped_rows.get(),
        failures = report.failures,
        rows_unconfirmed = report.rows_unconfirmed,
        "delivery finished"
    );
    report
}

/// A slow reader of stdout times out write after write: say so once a minute.
static SLOW_WRITE_LOG: crate::log_throttle::LogThrottle =
    crate::log_throttle::LogThrottle::new(Duration::from_secs(60));

/// Rate limit of the "send failed" warning.
#[derive(Default)]
struct FailureLog {
    failing_since: Option<Instant>,
    last_logged: Option<Instant>,
    last_kind: &'static str,
    suppressed: u64,
    failures: u64,
}

impl FailureLog {
    fn failed(&mut self, e: &SinkError, retry_in: Duration) {
        let now = Instant::now();
        self.failing_since.get_or_insert(now);
        self.failures += 1;
        let due = self
            .last_logged
            .is_none_or(|t| now.duration_since(t) >= FAILURE_LOG_INTERVAL);
        if due || e.kind() != self.last_kind {
            tracing::warn!(error = %e, ?retry_in, suppressed = self.suppressed, "destination send failed");
            self.last_logged = Some(now);
            self.last_kind = e.kind();
            self.suppressed = 0;
        } else {
            self.suppressed += 1;
        }
    }

    fn recovered(&mut self, dest: &str) {
        if let Some(since) = self.failing_since.take() {
            tracing::info!(dest, failures = self.failures, down_for = ?since.elapsed(), "destination recovered");
        }
        *self = FailureLog::default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::path::PathBuf;

    use super::stream::HostPort;

    fn host_port(host: &str, port: u16) -> HostPort {
        HostPort {
            host: host.into(),
            port,
        }
    }

    /// Every documented destination form parses; malformed ones say what is wrong.
    #[test]
    fn destinations_parse() {
        assert_eq!(Destination::parse("null").unwrap(), Destination::Null(()));
        assert_eq!(
            Destination::parse("file:/tmp/x").unwrap(),
            Destination::File(PathBuf::from("/tmp/x"))
        );
        assert_eq!(
            Destination::parse("tcp:127.0.0.1:9000").unwrap(),
            Destination::Tcp(host_port("127.0.0.1", 9000))
        );
        assert_eq!(
            Destination::parse("tcp:[::1]:9000").unwrap(),
            Destination::Tcp(host_port("[::1]", 9000))
        );
        assert_eq!(
            Destination::parse("udp:collector:5000").unwrap(),
            Destination::Udp(host_port("collector", 5000))
        );
        assert_eq!(
            Destination::parse("unix:/run/x.sock").unwrap(),
            Destination::Unix(PathBuf::from("/run/x.sock"))
        );
        assert_eq!(
            Destination::parse("unixgram:/run/x.sock").unwrap(),
            Destination::Unixgram(PathBuf::from("/run/x.sock"))
        );
        assert_eq!(
            Destination::parse("https://ch:8443/?query=INSERT").unwrap(),
            Destination::Http("https://ch:8443/?query=INSERT".parse().unwrap())
        );
        for (bad, says) in [
            ("tcp:localhost", "needs HOST:PORT"),
            ("tcp::9000", "needs a host"),
            ("udp:h:99999", "not a port number"),
            ("file:", "needs a path"),
            ("http://", "not a URL"),
        ] {
            let err = Destination::parse(bad).unwrap_err().to_string();
            assert!(err.contains(says), "{bad}: {err}");
        }
        assert!(matches!(
            Destination::parse("kafka:broker:9092"),
            Ok(Destination::Kafka(_))
        ));
        assert!(matches!(
            Destination::parse("stdout:x"),
            Err(SinkError::UnknownScheme(_))
        ));
    }

    /// The unknown-scheme error lists every registered form, from the registry.
    #[test]
    fn unknown_scheme_lists_the_registry() {
        let err = Destination::parse("bogus:b:4222").unwrap_err().to_string();
        for d in Destination::REGISTERED {
            assert!(err.contains(d.form), "{err} lacks {}", d.form);
        }
        // Every scheme a registration declares is one the parser accepts.
        let examples = [
            "null",
            "stdout",
            "stderr",
            "file:/x",
            "tcp:h:1",
            "unix:/x",
            "udp:h:1",
            "unixgram:/x",
            "http://h/",
            "https://h/",
            "kafka:h:1",
            "nats:h:1",
            "valkey:h:1",
            "redis:h:1",
        ];
        for d in Destination::REGISTERED {
            for scheme in d.schemes {
                assert!(
                    examples
                        .iter()
                        .any(|e| e.split(':').next() == Some(*scheme) && Destination::parse(e).is_ok()),
                    "no example parses for scheme {scheme}"
                );
            }
        }
    }

    /// Only content rejections are dropped; overload and timeouts are retried.
    #[test]
    fn http_drops_only_client_rejections() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let format = StreamFormat::new("jsonl", &[]).unwrap();
        let sink = runtime.block_on(Sink::open("http://127.0.0.1:9/", &format)).unwrap();
        let status = |status| SinkError::HttpStatus {
            dest: "d".into(),
            status,
            body: String::new(),
        };
        assert_eq!(sink.classify(&status(400)), Disposition::Drop);
        assert_eq!(sink.classify(&status(404)), Disposition::Drop);
        assert_eq!(sink.classify(&status(408)), Disposition::Retry);
        assert_eq!(sink.classify(&status(429)), Disposition::Retry);
        assert_eq!(sink.classify(&status(500)), Disposition::Retry);
        assert_eq!(sink.classify(&status(503)), Disposition::Retry);
    }

    /// A broken pipe on stdout stops delivery; on a file it is retried.
    #[test]
    fn broken_pipe_stops_only_stdio() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let format = StreamFormat::new("jsonl", &[]).unwrap();
        let broken = SinkError::Io {
            dest: "d".into(),
            source: std::io::Error::from(std::io::ErrorKind::BrokenPipe),
        };
        let stdout = runtime.block_on(Sink::open("stdout", &format)).unwrap();
        assert_eq!(stdout.classify(&broken), Disposition::Stop);
        let dir = tempfile::tempdir().unwrap();
        let file = runtime
            .block_on(Sink::open(&format!("file:{}", dir.path().join("f").display()), &format))
            .unwrap();
        assert_eq!(file.classify(&broken), Disposition::Retry);
    }
}
