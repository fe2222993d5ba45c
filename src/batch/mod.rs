//! Batch: records → [`Envelope`]s → the bounded delivery [`queue`].
//!
//! Each collecting thread owns an [`EnvelopeBuilder`] that encodes records
//! straight into the envelope's byte buffer, and hands the envelope to the
//! shared queue when it reaches `-envelopeFlushRows` or
//! `-envelopeFlushBytes`, and at the end of every poll, so nothing waits for
//! the next cycle. Size is the encoded length, known in O(1) per row.

pub mod queue;

use std::sync::Arc;

use crate::format::Encoder;
use crate::record::Record;
pub use queue::EnvelopeQueue;

/// A batch of encoded records plus what describes it.
#[derive(Debug, Clone)]
pub struct Envelope {
    pub hostname: Arc<str>,
    pub poll_seq: u64,
    /// When the envelope was closed, nanoseconds since the epoch.
    pub created_ns: u64,
    pub rows: usize,
    /// The encoded records, framed as the format requires.
    pub bytes: Vec<u8>,
}

/// Flush thresholds.
#[derive(Debug, Clone, Copy)]
pub struct FlushLimits {
    pub rows: usize,
    pub bytes: usize,
}

/// Fills envelopes for one collecting thread.
pub struct EnvelopeBuilder {
    encoder: Box<dyn Encoder>,
    limits: FlushLimits,
    queue: Arc<EnvelopeQueue>,
    hostname: Arc<str>,
    poll_seq: u64,
    rows: usize,
    bytes: Vec<u8>,
}

impl EnvelopeBuilder {
    pub fn new(encoder: Box<dyn Encoder>, limits: FlushLimits, queue: Arc<EnvelopeQueue>, hostname: Arc<str>) -> Self {
        EnvelopeBuilder {
            encoder,
            limits,
            queue,
            hostname,
            poll_seq: 0,
            rows: 0,
            bytes: Vec::new(),
        }
    }

    /// Records that follow belong to poll `seq`.
    pub fn start_poll(&mut self, seq: u64) {
        if seq != self.poll_seq {
            self.flush();
            self.poll_seq = seq;
        }
    }

    /// Encodes one record into the current envelope, flushing it when full.
    #[inline]
    pub fn push(&mut self, record: &Record) {
        if self.rows == 0 {
            self.encoder.begin_envelope(&mut self.bytes);
        }
        self.encoder.encode(record, &mut self.bytes);
        self.rows += 1;
        if self.rows >= self.limits.rows || self.bytes.len() >= self.limits.bytes {
            self.flush();
        }
    }

    /// Closes the current envelope (if it has rows) and queues it.
    pub fn flush(&mut self) {
        if self.rows == 0 {
            return;
        }
        self.encoder.end_envelope(&mut self.bytes);
        let capacity = self.bytes.capacity();
        let envelope = Envelope {
            hostname: self.hostname.clone(),
            poll_seq: self.poll_seq,
            created_ns: crate::clock::now_ns(),
            rows: self.rows,
            bytes: std::mem::replace(&mut self.bytes, Vec::with_capacity(capacity.min(self.limits.bytes + 64 * 1024))),
        };
        self.rows = 0;
        self.queue.push(envelope);
    }
}
