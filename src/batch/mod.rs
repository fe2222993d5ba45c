//! Batch: records → [`Envelope`]s → the bounded delivery [`queue`].
//!
//! Each collecting thread owns an [`EnvelopeBuilder`] that encodes records
//! straight into the envelope's byte buffer, and hands the envelope to the
//! shared queue when it reaches `-envelopeFlushRows` or
//! `-envelopeFlushBytes`, and at the end of every poll, so nothing waits for
//! the next cycle. Size is the encoded length, known in O(1) per row.
//!
//! An envelope remembers where each record ends, so a datagram destination
//! can split it at record boundaries, and keeps [`MAX_FRAME_PREFIX`] bytes
//! of headroom in front of the records so the format's framing (the
//! protobufList length, protoJson's opening) is written in place when it
//! is sealed, without moving the records.

pub mod queue;

use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crate::format::{Encoder, Format, Frame, MAX_FRAME_PREFIX};
use crate::record::{Record, RecordSchema};
pub use queue::EnvelopeQueue;

/// Largest envelope the builder fills, whatever `-envelopeFlushBytes` says:
/// record offsets are kept as u32 (4 bytes per row instead of 8), and a
/// gigabyte is already far beyond what any destination takes in one write.
pub(crate) const MAX_ENVELOPE_BYTES: usize = 1 << 30;

/// Source of [`Envelope::id`]: unique for the life of the process.
static NEXT_ENVELOPE_ID: AtomicU64 = AtomicU64::new(1);

/// A batch of encoded records plus what describes it.
#[derive(Debug, Clone)]
pub struct Envelope {
    /// Unique per process; lets a destination resume a half-sent envelope
    /// instead of sending its first part twice.
    pub id: u64,
    pub hostname: Arc<str>,
    pub poll_seq: u64,
    /// The network namespace (inode) every record comes from, when the
    /// destination asked for one envelope per namespace (`--kafka-key
    /// netns`); otherwise `None` and an envelope may mix namespaces.
    pub netns: Option<u64>,
    /// When the envelope was closed, nanoseconds since the epoch.
    pub created_ns: u64,
    pub rows: usize,
    pub format: Format,
    /// How the envelope was sealed, and how a part of it is framed alone.
    pub frame: Frame,
    /// Headroom, the records, then what closes the frame (if anything).
    buf: Vec<u8>,
    /// Where the framed envelope starts inside the headroom.
    frame_start: usize,
    /// Where the records end.
    records_end: usize,
    /// End of each record, relative to the first record.
    record_ends: Vec<u32>,
}

impl Envelope {
    /// Encodes `records` into one sealed envelope (for tools and tests; the
    /// collector uses [`EnvelopeBuilder`]).
    pub fn from_records<'a>(
        encoder: &mut dyn Encoder,
        records: impl IntoIterator<Item = &'a Record>,
        hostname: Arc<str>,
        poll_seq: u64,
    ) -> Envelope {
        let mut open = OpenEnvelope::new(Vec::new());
        for record in records {
            open.push(encoder, record);
        }
        open.seal(encoder.format(), encoder.frame(), hostname, poll_seq, None).0
    }

    /// The framed envelope: what a stream destination writes and what one
    /// HTTP request carries (ClickHouse's ProtobufList reads exactly one of
    /// these per stream).
    /// The heap memory this envelope holds (what `--queue-bytes` bounds).
    pub fn memory_bytes(&self) -> usize {
        self.buf.capacity() + self.record_ends.capacity() * std::mem::size_of::<u32>()
    }

    pub fn payload(&self) -> &[u8] {
        &self.buf[self.frame_start..]
    }

    /// The records without framing, concatenated (protoJson's first
    /// separator is the `[` of its frame).
    pub fn records(&self) -> &[u8] {
        &self.buf[MAX_FRAME_PREFIX..self.records_end]
    }

    /// The bytes of record `i` inside [`Envelope::records`].
    pub(crate) fn record_range(&self, i: usize) -> Range<usize> {
        let start = if i == 0 { 0 } else { self.record_ends[i - 1] as usize };
        start..self.record_ends[i] as usize
    }

    /// Byte ranges of records `rows` inside [`Envelope::records`].
    pub(crate) fn rows_range(&self, rows: Range<usize>) -> Range<usize> {
        if rows.is_empty() {
            return 0..0;
        }
        self.record_range(rows.start).start..self.record_range(rows.end - 1).end
    }
}

/// Flush thresholds.
#[derive(Debug, Clone, Copy)]
pub struct FlushLimits {
    pub rows: usize,
    pub bytes: usize,
}

/// An envelope being filled: headroom, records, record ends.
struct OpenEnvelope {
    buf: Vec<u8>,
    record_ends: Vec<u32>,
}

impl OpenEnvelope {
    fn new(mut buf: Vec<u8>) -> Self {
        buf.clear();
        buf.resize(MAX_FRAME_PREFIX, 0);
        OpenEnvelope {
            buf,
            record_ends: Vec::new(),
        }
    }

    #[inline]
    fn push(&mut self, encoder: &mut dyn Encoder, record: &Record) {
        encoder.encode(record, &mut self.buf);
        // The builder flushes before MAX_ENVELOPE_BYTES, so this fits.
        self.record_ends.push((self.buf.len() - MAX_FRAME_PREFIX) as u32);
    }

    fn rows(&self) -> usize {
        self.record_ends.len()
    }

    fn records_len(&self) -> usize {
        self.buf.len() - MAX_FRAME_PREFIX
    }

    /// Frames the records in place (the headroom, and what closes the
    /// frame) and returns the envelope, plus the capacity a fresh buffer
    /// for the next envelope should have.
    fn seal(
        self,
        format: Format,
        frame: Frame,
        hostname: Arc<str>,
        poll_seq: u64,
        netns: Option<u64>,
    ) -> (Envelope, usize) {
        let mut buf = self.buf;
        let records_end = buf.len();
        let frame_start = frame.seal_in_place(&mut buf);
        let capacity = buf.capacity();
        (
            Envelope {
                id: NEXT_ENVELOPE_ID.fetch_add(1, Ordering::Relaxed),
                hostname,
                poll_seq,
                netns,
                created_ns: crate::clock::now_ns(),
                rows: self.record_ends.len(),
                format,
                frame,
                buf,
                frame_start,
                records_end,
                record_ends: self.record_ends,
            },
            capacity,
        )
    }
}

/// The encoder of `-dest null`: nothing ever reads that destination's
/// bytes, so records are counted into envelopes (rows, flushes, metrics)
/// but not encoded. What encoding costs is measured with real destinations
/// (`bench/run.py`'s jsonl and protobufList cases).
pub(crate) struct CountOnly(pub Format);

impl Encoder for CountOnly {
    fn format(&self) -> Format {
        self.0
    }

    fn schema(&self) -> RecordSchema {
        RecordSchema::Xtcp2
    }

    #[inline]
    fn encode(&mut self, _record: &Record, _out: &mut Vec<u8>) {}
}

/// Fills envelopes for one collecting thread.
pub(crate) struct EnvelopeBuilder {
    encoder: Box<dyn Encoder>,
    limits: FlushLimits,
    queue: Arc<EnvelopeQueue>,
    hostname: Arc<str>,
    poll_seq: u64,
    /// One envelope per namespace (see [`Envelope::netns`]).
    per_namespace: bool,
    /// The namespace of the records being pushed, when `per_namespace`.
    netns: Option<u64>,
    open: OpenEnvelope,
}

impl EnvelopeBuilder {
    pub fn new(encoder: Box<dyn Encoder>, limits: FlushLimits, queue: Arc<EnvelopeQueue>, hostname: Arc<str>) -> Self {
        let limits = FlushLimits {
            rows: limits.rows.max(1),
            bytes: limits.bytes.clamp(1, MAX_ENVELOPE_BYTES),
        };
        EnvelopeBuilder {
            encoder,
            limits,
            queue,
            hostname,
            poll_seq: 0,
            per_namespace: false,
            netns: None,
            open: OpenEnvelope::new(Vec::new()),
        }
    }

    /// Closes an envelope whenever the namespace changes, so each holds
    /// one namespace's records and says which (`--kafka-key netns`: the
    /// message key keeps one namespace's records in order in one partition).
    pub(crate) fn per_namespace(mut self, on: bool) -> Self {
        self.per_namespace = on;
        self
    }

    /// Records that follow come from the namespace `inode` (ignored unless
    /// [`EnvelopeBuilder::per_namespace`]).
    pub(crate) fn start_namespace(&mut self, inode: Option<u64>) {
        if self.per_namespace && inode != self.netns {
            self.flush();
            self.netns = inode;
        }
    }

    /// Records that follow belong to poll `seq`.
    pub(crate) fn start_poll(&mut self, seq: u64) {
        if seq != self.poll_seq {
            self.flush();
            self.poll_seq = seq;
        }
    }

    /// Encodes one record into the current envelope, flushing it when full.
    #[inline]
    pub fn push(&mut self, record: &Record) {
        self.open.push(self.encoder.as_mut(), record);
        if self.open.rows() >= self.limits.rows || self.open.records_len() >= self.limits.bytes {
            self.flush();
        }
    }

    /// Rows in the envelope being filled.
    #[cfg(test)]
    pub(crate) fn pending_rows(&self) -> usize {
        self.open.rows()
    }

    /// Closes the current envelope (if it has rows) and queues it.
    pub fn flush(&mut self) {
        if self.open.rows() == 0 {
            return;
        }
        // Reuse a buffer of the size envelopes reach, capped so one huge
        // envelope does not pin memory forever.
        let full = std::mem::replace(&mut self.open, OpenEnvelope::new(Vec::new()));
        let (envelope, capacity) = full.seal(
            self.encoder.format(),
            self.encoder.frame(),
            self.hostname.clone(),
            self.poll_seq,
            self.netns,
        );
        self.open = OpenEnvelope::new(Vec::with_capacity(capacity.min(self.limits.bytes + 64 * 1024)));
        self.queue.push(envelope);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::StreamFormat;
    use crate::metrics::Metrics;

    fn builder(marshal: &str, limits: FlushLimits) -> (EnvelopeBuilder, Arc<EnvelopeQueue>, Arc<Metrics>) {
        let metrics = Arc::new(Metrics::new());
        let queue = Arc::new(EnvelopeQueue::new(1000, metrics.clone()));
        let encoder = StreamFormat::new(marshal, &[]).unwrap().encoder();
        (
            EnvelopeBuilder::new(encoder, limits, queue.clone(), Arc::from("h")),
            queue,
            metrics,
        )
    }

    fn record(port: u16) -> Record {
        Record {
            idiag_sport: Some(port),
            ..Record::default()
        }
    }

    fn drain(queue: &EnvelopeQueue) -> Vec<Envelope> {
        queue.close();
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        rt.block_on(async {
            let mut out = Vec::new();
            while let Some(e) = queue.pop().await {
                out.push(e);
            }
            out
        })
    }

    /// -dest null counts records into envelopes without encoding them.
    #[test]
    fn count_only_counts_rows_and_writes_no_bytes() {
        let metrics = Arc::new(Metrics::new());
        let queue = Arc::new(EnvelopeQueue::new(8, metrics.clone()));
        let limits = FlushLimits {
            rows: 2,
            bytes: 1 << 20,
        };
        let mut b = EnvelopeBuilder::new(
            Box::new(CountOnly(Format::Jsonl)),
            limits,
            queue.clone(),
            Arc::from("h"),
        );
        b.start_poll(1);
        for p in 0..5 {
            b.push(&record(p));
        }
        b.flush();
        let envelopes = drain(&queue);
        assert_eq!(envelopes.iter().map(|e| e.rows).collect::<Vec<_>>(), [2, 2, 1]);
        assert!(envelopes.iter().all(|e| e.records().is_empty()));
        assert_eq!(metrics.envelope.rows_flushed.get(), 5);
    }

    /// An envelope is flushed exactly when it reaches the row limit.
    #[test]
    fn flushes_at_row_limit() {
        let (mut b, queue, _) = builder(
            "jsonl",
            FlushLimits {
                rows: 3,
                bytes: 1 << 20,
            },
        );
        b.start_poll(1);
        for p in 0..7 {
            b.push(&record(p));
        }
        assert_eq!(queue.len(), 2);
        assert_eq!(b.pending_rows(), 1);
        b.flush();
        let rows: Vec<usize> = drain(&queue).iter().map(|e| e.rows).collect();
        assert_eq!(rows, [3, 3, 1]);
    }

    /// The byte limit counts encoded bytes: `{"idiag_sport":NN}\n` lines of
    /// 19 bytes flush after the record that reaches 50 bytes.
    #[test]
    fn flushes_at_byte_limit() {
        let (mut b, queue, _) = builder("jsonl", FlushLimits { rows: 1000, bytes: 50 });
        b.start_poll(1);
        for p in 10..15 {
            b.push(&record(p));
        }
        b.flush();
        let envelopes = drain(&queue);
        let sizes: Vec<(usize, usize)> = envelopes.iter().map(|e| (e.rows, e.payload().len())).collect();
        assert_eq!(sizes, [(3, 57), (2, 38)]);
    }

    /// Per namespace (`--kafka-key netns`): a change of namespace closes
    /// the envelope, and each names its namespace; otherwise namespaces mix.
    #[test]
    fn per_namespace_envelopes_name_their_namespace() {
        let limits = FlushLimits {
            rows: 1000,
            bytes: 1 << 20,
        };
        for (per_namespace, expected) in [(true, vec![(2, Some(7)), (1, Some(9))]), (false, vec![(3, None)])] {
            let (b, queue, _) = builder("jsonl", limits);
            let mut b = b.per_namespace(per_namespace);
            b.start_poll(1);
            b.start_namespace(Some(7));
            b.push(&record(1));
            b.push(&record(2));
            b.start_namespace(Some(9));
            b.push(&record(3));
            b.flush();
            let got: Vec<(usize, Option<u64>)> = drain(&queue).iter().map(|e| (e.rows, e.netns)).collect();
            assert_eq!(got, expected, "per_namespace {per_namespace}");
        }
    }

    /// A new poll sequence closes the previous poll's envelope and stamps the new one.
    #[test]
    fn new_poll_closes_previous_envelope() {
        let (mut b, queue, _) = builder(
            "jsonl",
            FlushLimits {
                rows: 1000,
                bytes: 1 << 20,
            },
        );
        b.start_poll(1);
        b.push(&record(1));
        b.start_poll(2);
        b.push(&record(2));
        b.push(&record(3));
        b.flush();
        let seqs: Vec<(u64, usize)> = drain(&queue).iter().map(|e| (e.poll_seq, e.rows)).collect();
        assert_eq!(seqs, [(1, 1), (2, 2)]);
    }

    /// Record boundaries and the protobuf framing are exact.
    #[test]
    fn record_ranges_and_protobuf_frame() {
        let (mut b, queue, _) = builder(
            "protobufList",
            FlushLimits {
                rows: 1000,
                bytes: 1 << 20,
            },
        );
        b.start_poll(1);
        b.push(&record(1));
        b.push(&record(300));
        b.flush();
        let e = drain(&queue).remove(0);
        // Each record: 0x0a, len, key 0x70 (field 14, varint), port varint.
        assert_eq!(e.records(), &[0x0a, 2, 0x70, 1, 0x0a, 3, 0x70, 0xac, 0x02]);
        assert_eq!(e.record_range(0), 0..4);
        assert_eq!(e.record_range(1), 4..9);
        assert_eq!(e.rows_range(0..2), 0..9);
        assert_eq!(e.payload()[0], 9);
        assert_eq!(&e.payload()[1..], e.records());
    }

    /// Flushed envelopes count their bytes per format in Prometheus.
    #[test]
    fn bytes_marshalled_are_counted_by_format() {
        let (mut b, queue, metrics) = builder(
            "jsonl",
            FlushLimits {
                rows: 2,
                bytes: 1 << 20,
            },
        );
        b.start_poll(1);
        for p in 10..14 {
            b.push(&record(p));
        }
        drain(&queue);
        let text = metrics.encode_text();
        assert!(
            text.contains("xtcp2_marshalled_bytes_total{format=\"jsonl\"} 76"),
            "{text}"
        );
    }
}
