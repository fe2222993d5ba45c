//! Sink: envelopes → the destination (`-dest`).
//!
//! A sink writes whole envelopes. The delivery task ([`deliver`]) takes
//! envelopes from the bounded queue, sends them, and on failure retries with
//! capped exponential backoff while the queue keeps absorbing (and, when
//! full, dropping the oldest) new envelopes: collection never waits for a
//! destination.
//!
//! | `-dest` | module | stream opened (CSV header written) |
//! |---|---|---|
//! | `null`, `stdout`, `stderr` | here | once per process |
//! | `file:PATH` | [`file`] | when the file is empty at (re)open; SIGHUP reopens |
//! | `tcp:HOST:PORT`, `unix:PATH` | [`stream`] | on every new connection |
//! | `udp:HOST:PORT` | [`udp`] | every datagram (raw IPv4, IP_HDRINCL) |
//! | `unixgram:PATH` | [`datagram`] | every datagram |
//! | `http://`, `https://` | [`http`] | every POST |
//!
//! Connections are made at the first send, not at start, so a destination
//! that is down when the daemon starts only delays delivery.
//!
//! This module must not encode records (that is `format`) nor decide what
//! to drop when the queue is full (that is `batch::queue`).

pub mod datagram;
pub mod file;
pub mod http;
pub mod stream;
pub mod udp;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::AsyncWriteExt;

use crate::batch::{Envelope, EnvelopeQueue};
use crate::format::StreamFormat;
use crate::observe::metrics::{KindLabel, Metrics};

/// First retry delay after a failed send.
pub const RETRY_INITIAL: Duration = Duration::from_millis(100);
/// Retry delays double up to this cap: a destination that comes back is
/// used again within 5 s, and a dead one costs one attempt per 5 s.
pub const RETRY_MAX: Duration = Duration::from_secs(5);
/// Failed sends allowed after shutdown began before the rest is dropped: a
/// dead destination must not hold the exit hostage.
pub const SHUTDOWN_SEND_ATTEMPTS: u32 = 3;
/// Longest delivery may go on after shutdown began; shorter than the
/// daemon's `SHUTDOWN_FLUSH_TIMEOUT` (10 s) so delivery ends by itself and
/// counts what it drops.
pub const SHUTDOWN_BUDGET: Duration = Duration::from_secs(8);
/// Retry delay once shutdown began.
pub const SHUTDOWN_RETRY_DELAY: Duration = Duration::from_millis(100);
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
pub const FAILURE_LOG_INTERVAL: Duration = Duration::from_secs(60);

#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error("unknown destination {0:?}; valid: null, stdout, stderr, file:PATH, tcp:HOST:PORT, udp:HOST:PORT, unix:PATH, unixgram:PATH, http://..., https://...")]
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
        }
    }

    /// Sending the same envelope again cannot succeed: the receiver
    /// rejected its content (an HTTP 4xx other than 408 timeout and 429
    /// too-many-requests). Such an envelope is dropped and counted at once
    /// instead of blocking the queue.
    pub fn is_permanent(&self) -> bool {
        match self {
            SinkError::Io { .. } if self.is_reader_gone() => true,
            SinkError::HttpStatus { status, .. } => (400..500).contains(status) && *status != 408 && *status != 429,
            _ => false,
        }
    }
}

impl SinkError {
    /// stdout or stderr is a pipe whose reader has exited (`xtcp2 | head`):
    /// nothing written there can ever be read again.
    pub fn is_reader_gone(&self) -> bool {
        matches!(self, SinkError::Io { dest, source }
            if (dest == "stdout" || dest == "stderr") && source.kind() == std::io::ErrorKind::BrokenPipe)
    }
}

/// A parsed `-dest`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Destination {
    Null,
    Stdout,
    Stderr,
    File(PathBuf),
    Tcp(String),
    Udp(String),
    Unix(PathBuf),
    Unixgram(PathBuf),
    Http(String),
}

impl Destination {
    /// Checks the syntax of `-dest` (no name resolution, no I/O).
    pub fn parse(dest: &str) -> Result<Destination, SinkError> {
        let bad = |reason: &str| SinkError::BadAddress {
            dest: dest.to_string(),
            reason: reason.to_string(),
        };
        if dest.starts_with("http://") || dest.starts_with("https://") {
            let uri: hyper::Uri = dest
                .parse()
                .map_err(|e: hyper::http::uri::InvalidUri| bad(&format!("not a URL: {e}")))?;
            if uri.host().is_none_or(str::is_empty) {
                return Err(bad("the URL has no host"));
            }
            return Ok(Destination::Http(dest.to_string()));
        }
        let (scheme, rest) = dest.split_once(':').unwrap_or((dest, ""));
        let path = |rest: &str| {
            if rest.is_empty() {
                Err(bad("needs a path, e.g. file:/var/log/xtcp2.jsonl"))
            } else {
                Ok(PathBuf::from(rest))
            }
        };
        match scheme {
            "null" if rest.is_empty() => Ok(Destination::Null),
            "stdout" if rest.is_empty() => Ok(Destination::Stdout),
            "stderr" if rest.is_empty() => Ok(Destination::Stderr),
            "file" => path(rest).map(Destination::File),
            "unix" => path(rest).map(Destination::Unix),
            "unixgram" => path(rest).map(Destination::Unixgram),
            "tcp" | "udp" => {
                let (host, port) = rest.rsplit_once(':').ok_or_else(|| bad("needs HOST:PORT"))?;
                if host.is_empty() {
                    return Err(bad("needs a host before :PORT"));
                }
                port.parse::<u16>()
                    .map_err(|_| bad(&format!("{port:?} is not a port number")))?;
                Ok(if scheme == "tcp" {
                    Destination::Tcp(rest.to_string())
                } else {
                    Destination::Udp(rest.to_string())
                })
            }
            _ => Err(SinkError::UnknownScheme(dest.to_string())),
        }
    }
}

/// What one send delivered besides the envelope itself.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Sent {
    /// Records a datagram destination skipped because one alone exceeds
    /// [`MAX_DATAGRAM_PAYLOAD`]; they count as dropped.
    pub rows_too_large: usize,
}

/// Where envelopes go.
pub struct Sink {
    name: String,
    kind: SinkKind,
}

enum SinkKind {
    Null,
    Stdout(Stdio<tokio::io::Stdout>),
    Stderr(Stdio<tokio::io::Stderr>),
    File(file::FileSink),
    Stream(stream::StreamSink),
    Unixgram(datagram::UnixgramSink),
    Udp(udp::UdpSink),
    Http(http::HttpSink),
}

/// stdout/stderr: the header once per process.
struct Stdio<W> {
    out: W,
    header: Arc<[u8]>,
    header_written: bool,
}

impl<W: tokio::io::AsyncWrite + Unpin> Stdio<W> {
    async fn send(&mut self, envelope: &Envelope) -> std::io::Result<()> {
        if !self.header_written {
            self.out.write_all(&self.header).await?;
            self.header_written = true;
        }
        self.out.write_all(envelope.payload()).await?;
        self.out.flush().await
    }
}

impl Sink {
    /// Opens the destination named by `-dest` for `format`. Network
    /// destinations connect at the first send.
    pub async fn open(dest: &str, format: &StreamFormat) -> Result<Sink, SinkError> {
        let header: Arc<[u8]> = Arc::from(format.header());
        let kind = match Destination::parse(dest)? {
            Destination::Null => SinkKind::Null,
            Destination::Stdout => SinkKind::Stdout(Stdio {
                out: tokio::io::stdout(),
                header,
                header_written: false,
            }),
            Destination::Stderr => SinkKind::Stderr(Stdio {
                out: tokio::io::stderr(),
                header,
                header_written: false,
            }),
            Destination::File(path) => SinkKind::File(file::FileSink::open(path, header).await?),
            Destination::Tcp(addr) => {
                SinkKind::Stream(stream::StreamSink::new(stream::StreamTarget::Tcp(addr), header))
            }
            Destination::Unix(path) => {
                SinkKind::Stream(stream::StreamSink::new(stream::StreamTarget::Unix(path), header))
            }
            Destination::Unixgram(path) => SinkKind::Unixgram(datagram::UnixgramSink::new(path, header)?),
            Destination::Udp(addr) => SinkKind::Udp(udp::UdpSink::new(addr, header)),
            Destination::Http(url) => {
                SinkKind::Http(http::HttpSink::new(&url, format.format().content_type(), header)?)
            }
        };
        Ok(Sink {
            name: dest.to_string(),
            kind,
        })
    }

    /// The `-dest` this sink writes to.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Sends one envelope.
    pub async fn send(&mut self, envelope: &Envelope) -> Result<Sent, SinkError> {
        let io = |dest: &str| {
            let dest = dest.to_string();
            move |source| SinkError::Io { dest, source }
        };
        match &mut self.kind {
            SinkKind::Null => Ok(Sent::default()),
            SinkKind::Stdout(out) => out
                .send(envelope)
                .await
                .map(|()| Sent::default())
                .map_err(io(&self.name)),
            SinkKind::Stderr(out) => out
                .send(envelope)
                .await
                .map(|()| Sent::default())
                .map_err(io(&self.name)),
            SinkKind::File(f) => f.send(envelope, &self.name).await.map(|()| Sent::default()),
            SinkKind::Stream(s) => s.send(envelope, &self.name).await.map(|()| Sent::default()),
            SinkKind::Unixgram(s) => s.send(envelope, &self.name).await,
            SinkKind::Udp(s) => s.send(envelope, &self.name).await,
            SinkKind::Http(h) => h.send(envelope, &self.name).await.map(|()| Sent::default()),
        }
    }

    /// Forgets connection state after a failed or timed-out send, so the
    /// next send starts a fresh stream (a half-written envelope must not be
    /// continued on the same connection).
    pub fn reset(&mut self) {
        match &mut self.kind {
            SinkKind::Stream(s) => s.disconnect(),
            SinkKind::File(f) => f.close(),
            SinkKind::Null
            | SinkKind::Stdout(_)
            | SinkKind::Stderr(_)
            | SinkKind::Unixgram(_)
            | SinkKind::Udp(_)
            | SinkKind::Http(_) => {}
        }
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
    while let Some(envelope) = queue.pop().await {
        if queue.is_closed() && shutdown.is_none() {
            shutdown = Some((Instant::now() + policy.shutdown_budget, 0));
        }
        let timeout = match shutdown {
            Some((deadline, _)) => policy
                .produce_timeout
                .min(deadline.saturating_duration_since(Instant::now())),
            None => policy.produce_timeout,
        };
        let result = match tokio::time::timeout(timeout, sink.send(&envelope)).await {
            Ok(r) => r,
            Err(_) => Err(SinkError::Timeout {
                dest: sink.name().to_string(),
                timeout,
            }),
        };
        match result {
            Ok(sent) => {
                metrics.destination.sends.inc();
                metrics.destination.send_bytes.inc_by(envelope.payload().len() as u64);
                report.envelopes_sent += 1;
                report.rows_sent += (envelope.rows - sent.rows_too_large) as u64;
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
                if e.is_reader_gone() {
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
                if e.is_permanent() {
                    queue.count_dropped(1, envelope.rows as u64);
                    report.rows_dropped += envelope.rows as u64;
                    tracing::warn!(error = %e, rows = envelope.rows, "destination rejected an envelope; dropped it");
                    continue;
                }
                if queue.is_closed() && shutdown.is_none() {
                    shutdown = Some((Instant::now() + policy.shutdown_budget, 0));
                }
                if let Some((deadline, attempts)) = &mut shutdown {
                    *attempts += 1;
                    if *attempts >= policy.shutdown_attempts || Instant::now() >= *deadline {
                        queue.count_dropped(1, envelope.rows as u64);
                        let rest = queue.discard_all();
                        let rows = envelope.rows as u64 + rest.rows;
                        report.rows_dropped += rows;
                        tracing::warn!(error = %e, rows, envelopes = rest.envelopes + 1, "shutting down with the destination failing: dropped what was left");
                        break;
                    }
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
        "delivery finished"
    );
    report
}

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

    /// Every documented destination form parses; malformed ones say what is wrong.
    #[test]
    fn destinations_parse() {
        assert_eq!(Destination::parse("null").unwrap(), Destination::Null);
        assert_eq!(
            Destination::parse("file:/tmp/x").unwrap(),
            Destination::File("/tmp/x".into())
        );
        assert_eq!(
            Destination::parse("tcp:127.0.0.1:9000").unwrap(),
            Destination::Tcp("127.0.0.1:9000".into())
        );
        assert_eq!(
            Destination::parse("tcp:[::1]:9000").unwrap(),
            Destination::Tcp("[::1]:9000".into())
        );
        assert_eq!(
            Destination::parse("udp:collector:5000").unwrap(),
            Destination::Udp("collector:5000".into())
        );
        assert_eq!(
            Destination::parse("unix:/run/x.sock").unwrap(),
            Destination::Unix("/run/x.sock".into())
        );
        assert_eq!(
            Destination::parse("unixgram:/run/x.sock").unwrap(),
            Destination::Unixgram("/run/x.sock".into())
        );
        assert_eq!(
            Destination::parse("https://ch:8443/?query=INSERT").unwrap(),
            Destination::Http("https://ch:8443/?query=INSERT".into())
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
            Err(SinkError::UnknownScheme(_))
        ));
        assert!(matches!(
            Destination::parse("stdout:x"),
            Err(SinkError::UnknownScheme(_))
        ));
    }

    /// Only content rejections are permanent; overload and timeouts are retried.
    #[test]
    fn permanent_errors_are_client_rejections() {
        let status = |status| SinkError::HttpStatus {
            dest: "d".into(),
            status,
            body: String::new(),
        };
        assert!(status(400).is_permanent());
        assert!(status(404).is_permanent());
        assert!(!status(408).is_permanent());
        assert!(!status(429).is_permanent());
        assert!(!status(500).is_permanent());
        assert!(!status(503).is_permanent());
    }
}
