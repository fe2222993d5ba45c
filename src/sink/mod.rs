//! Sink: envelopes → the destination (`-dest`).
//!
//! A sink writes whole envelopes. The delivery task ([`deliver`]) takes
//! envelopes from the bounded queue, sends them, and on failure retries with
//! capped exponential backoff while the queue keeps absorbing (and, when
//! full, dropping the oldest) new envelopes: collection never waits for a
//! destination.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncWriteExt;

use crate::batch::{Envelope, EnvelopeQueue};
use crate::observe::metrics::{KindLabel, Metrics};

/// First retry delay after a failed send.
pub const RETRY_INITIAL: Duration = Duration::from_millis(100);
/// Retry delays double up to this cap.
pub const RETRY_MAX: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error("unknown destination {0:?}; valid: null, stdout, stderr, file:PATH, tcp:HOST:PORT, udp:HOST:PORT, unix:PATH, unixgram:PATH, http(s)://...")]
    UnknownScheme(String),
    #[error("writing to {dest}: {source}")]
    Io {
        dest: String,
        #[source]
        source: std::io::Error,
    },
    #[error("sending to {dest} timed out after {timeout:?}")]
    Timeout { dest: String, timeout: Duration },
}

impl SinkError {
    pub fn kind(&self) -> &'static str {
        match self {
            SinkError::UnknownScheme(_) => "config",
            SinkError::Io { .. } => "io",
            SinkError::Timeout { .. } => "timeout",
        }
    }
}

/// Where envelopes go.
pub enum Sink {
    Null,
    Stdout(tokio::io::Stdout),
    Stderr(tokio::io::Stderr),
}

impl Sink {
    /// Opens the destination named by `-dest`.
    pub async fn open(dest: &str) -> Result<Sink, SinkError> {
        match dest {
            "null" => Ok(Sink::Null),
            "stdout" => Ok(Sink::Stdout(tokio::io::stdout())),
            "stderr" => Ok(Sink::Stderr(tokio::io::stderr())),
            other => Err(SinkError::UnknownScheme(other.to_string())),
        }
    }

    pub async fn send(&mut self, envelope: &Envelope) -> Result<(), SinkError> {
        let io = |dest: &str| {
            let dest = dest.to_string();
            move |source| SinkError::Io { dest, source }
        };
        match self {
            Sink::Null => Ok(()),
            Sink::Stdout(out) => {
                out.write_all(envelope.payload()).await.map_err(io("stdout"))?;
                out.flush().await.map_err(io("stdout"))
            }
            Sink::Stderr(out) => {
                out.write_all(envelope.payload()).await.map_err(io("stderr"))?;
                out.flush().await.map_err(io("stderr"))
            }
        }
    }
}

/// Sends queued envelopes until the queue is closed and drained.
pub async fn deliver(mut sink: Sink, queue: Arc<EnvelopeQueue>, metrics: Arc<Metrics>, produce_timeout: Duration) {
    let mut backoff = RETRY_INITIAL;
    while let Some(envelope) = queue.pop().await {
        let result = match tokio::time::timeout(produce_timeout, sink.send(&envelope)).await {
            Ok(r) => r,
            Err(_) => Err(SinkError::Timeout {
                dest: "destination".into(),
                timeout: produce_timeout,
            }),
        };
        match result {
            Ok(()) => {
                metrics.destination.sends.inc();
                metrics.destination.send_bytes.inc_by(envelope.payload().len() as u64);
                backoff = RETRY_INITIAL;
            }
            Err(e) => {
                metrics.destination.failures.get_or_create(&KindLabel { kind: e.kind() }).inc();
                metrics.destination.retries.inc();
                tracing::warn!(error = %e, retry_in = ?backoff, "destination send failed");
                queue.requeue_front(envelope);
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(RETRY_MAX);
            }
        }
    }
}
