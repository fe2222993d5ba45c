//! The bounded queue between collectors and the destination.
//!
//! Collection must never block on a slow destination, and memory must stay
//! bounded: when the queue is full the oldest envelope is dropped and
//! counted (its rows too), because the newest data is the most useful to an
//! operator.
//!
//! A destination that works but is slower than collection (a file while
//! four netlinkers encode JSON) must not lose records either: past
//! [`PACE_DEPTH`] waiting envelopes a collector waits, up to
//! [`PACE_MAX_WAIT`], for the destination to take one. It stops waiting as
//! soon as the destination is failing (an envelope came back for a retry)
//! or stalled (took nothing within the wait), until it takes one again, so
//! a dead destination still costs collection at most one short wait.

use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use tokio::sync::{watch, Notify};

use super::Envelope;
use crate::log_throttle::LogThrottle;
use crate::metrics::{FormatLabel, Metrics};

/// Waiting envelopes beyond which a collector waits for a healthy
/// destination: with 768 KiB envelopes about 6 MiB, enough to cover a
/// destination's scheduling hiccups, small enough that a one-shot of
/// 100,000 sockets stays far below its memory budget.
pub(crate) const PACE_DEPTH: usize = 8;
/// Longest a collector waits for the destination to take one envelope. A
/// healthy destination writes an envelope in about a millisecond; one that
/// takes nothing for this long is treated as stalled and collection moves
/// on (dropping the oldest envelopes once the queue is full).
pub(crate) const PACE_MAX_WAIT: Duration = Duration::from_millis(25);

/// Drops repeat every envelope while a destination is down: log them at
/// most once a minute (the metrics count every one).
static QUEUE_FULL_LOG: LogThrottle = LogThrottle::new(Duration::from_secs(60));

pub struct EnvelopeQueue {
    inner: Mutex<Inner>,
    capacity: usize,
    /// Memory the waiting envelopes may hold (`--queue-bytes`); the queue
    /// always keeps at least the newest envelope.
    byte_limit: usize,
    ready: Notify,
    /// Signalled whenever the destination takes an envelope.
    taken: Condvar,
    closed: watch::Sender<bool>,
    metrics: Arc<Metrics>,
}

struct Inner {
    envelopes: VecDeque<Envelope>,
    /// Sum of the waiting envelopes' [`Envelope::memory_bytes`].
    bytes: usize,
    closed: bool,
    /// Highest depth ever reached (tests and the bound's proof).
    peak: usize,
    /// An envelope came back for a retry and none was taken since.
    failing: bool,
    /// The destination took nothing within a pacing wait.
    stalled: bool,
    /// The envelope taken last came back with `requeue_front`.
    requeued_since_pop: bool,
}

/// What [`EnvelopeQueue::discard_all`] threw away.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Discarded {
    pub envelopes: u64,
    pub rows: u64,
}

impl EnvelopeQueue {
    /// A queue of at most `capacity` envelopes, whatever their size.
    pub fn new(capacity: usize, metrics: Arc<Metrics>) -> Self {
        EnvelopeQueue::with_byte_limit(capacity, usize::MAX, metrics)
    }

    /// A queue of at most `capacity` envelopes holding at most
    /// `byte_limit` bytes of memory between them.
    pub fn with_byte_limit(capacity: usize, byte_limit: usize, metrics: Arc<Metrics>) -> Self {
        let capacity = capacity.max(1);
        EnvelopeQueue {
            byte_limit,
            inner: Mutex::new(Inner {
                bytes: 0,
                // Grown as needed: the count cap may be far above what
                // the byte limit lets in.
                envelopes: VecDeque::with_capacity(capacity.min(64)),
                closed: false,
                peak: 0,
                failing: false,
                stalled: false,
                requeued_since_pop: false,
            }),
            capacity,
            ready: Notify::new(),
            taken: Condvar::new(),
            closed: watch::channel(false).0,
            metrics,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding this lock cannot leave the deque invalid
        // (push/pop are single operations), so keep going with its data.
        self.inner.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Counts an envelope that will never reach the destination.
    pub(crate) fn count_dropped(&self, envelopes: u64, rows: u64) {
        self.metrics.destination.dropped_envelopes.inc_by(envelopes);
        self.metrics.destination.dropped_rows.inc_by(rows);
    }

    /// Adds an envelope: first waits for a healthy destination to make
    /// room (see the module doc), then drops the oldest when still full.
    pub fn push(&self, envelope: Envelope) {
        let rows = envelope.rows as u64;
        let bytes = envelope.payload().len() as u64;
        let format = envelope.format.name();
        {
            let mut inner = self.lock();
            let pace_depth = PACE_DEPTH.min(self.capacity);
            while inner.envelopes.len() >= pace_depth && !inner.closed && !inner.failing && !inner.stalled {
                let (guard, wait) = self
                    .taken
                    .wait_timeout(inner, PACE_MAX_WAIT)
                    .unwrap_or_else(|poisoned| poisoned.into_inner());
                inner = guard;
                if wait.timed_out() && inner.envelopes.len() >= pace_depth {
                    inner.stalled = true;
                }
            }
            let size = envelope.memory_bytes();
            while !inner.envelopes.is_empty()
                && (inner.envelopes.len() >= self.capacity || inner.bytes.saturating_add(size) > self.byte_limit)
            {
                let Some(dropped) = inner.envelopes.pop_front() else {
                    break;
                };
                inner.bytes -= dropped.memory_bytes();
                self.count_dropped(1, dropped.rows as u64);
                if let Some(suppressed) = QUEUE_FULL_LOG.admit() {
                    tracing::warn!(
                        rows = dropped.rows,
                        poll_seq = dropped.poll_seq,
                        suppressed,
                        "destination queue full: dropped the oldest envelope (xtcp2_destination_dropped_rows_total counts every drop)"
                    );
                }
            }
            inner.bytes += size;
            inner.envelopes.push_back(envelope);
            inner.peak = inner.peak.max(inner.envelopes.len());
            self.metrics.destination.queue_depth.set(inner.envelopes.len() as i64);
            self.metrics.destination.queue_bytes.set(inner.bytes as i64);
        }
        self.metrics.envelope.rows_flushed.inc_by(rows);
        self.metrics.envelope.envelopes_flushed.inc();
        self.metrics
            .envelope
            .bytes_marshalled
            .get_or_create(&FormatLabel { format })
            .inc_by(bytes);
        self.ready.notify_one();
    }

    /// Takes the oldest envelope, waiting for one. `None` once closed and empty.
    pub(crate) async fn pop(&self) -> Option<Envelope> {
        loop {
            let notified = self.ready.notified();
            {
                let mut inner = self.lock();
                if let Some(e) = inner.envelopes.pop_front() {
                    inner.bytes -= e.memory_bytes();
                    self.metrics.destination.queue_depth.set(inner.envelopes.len() as i64);
                    self.metrics.destination.queue_bytes.set(inner.bytes as i64);
                    // The previous envelope did not come back: it was sent.
                    if !inner.requeued_since_pop {
                        inner.failing = false;
                    }
                    inner.requeued_since_pop = false;
                    inner.stalled = false;
                    drop(inner);
                    self.taken.notify_all();
                    return Some(e);
                }
                if inner.closed {
                    return None;
                }
            }
            notified.await;
        }
    }

    /// Puts an envelope back at the front after a failed send, unless newer
    /// data has filled the queue meanwhile (then it, the oldest, is dropped
    /// and counted).
    pub(crate) fn requeue_front(&self, envelope: Envelope) {
        let mut inner = self.lock();
        inner.failing = true;
        inner.requeued_since_pop = true;
        let size = envelope.memory_bytes();
        let over_bytes = !inner.envelopes.is_empty() && inner.bytes.saturating_add(size) > self.byte_limit;
        if inner.envelopes.len() >= self.capacity || over_bytes {
            self.count_dropped(1, envelope.rows as u64);
            if let Some(suppressed) = QUEUE_FULL_LOG.admit() {
                tracing::warn!(
                    rows = envelope.rows,
                    suppressed,
                    "destination queue full while retrying: dropped the oldest envelope"
                );
            }
            return;
        }
        inner.envelopes.push_front(envelope);
        inner.bytes += size;
        inner.peak = inner.peak.max(inner.envelopes.len());
        self.metrics.destination.queue_depth.set(inner.envelopes.len() as i64);
        self.metrics.destination.queue_bytes.set(inner.bytes as i64);
    }

    /// No more envelopes will come; `pop` drains what is left then ends.
    pub fn close(&self) {
        self.lock().closed = true;
        self.taken.notify_all();
        self.closed.send_replace(true);
        self.ready.notify_waiters();
        self.ready.notify_one();
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.lock().closed
    }

    /// Resolves once [`EnvelopeQueue::close`] has been called.
    pub(crate) async fn wait_closed(&self) {
        let mut rx = self.closed.subscribe();
        // The sender lives as long as self.
        let _ = rx.wait_for(|closed| *closed).await;
    }

    /// Drops every waiting envelope, counting them (shutdown with a dead
    /// destination).
    pub(crate) fn discard_all(&self) -> Discarded {
        let mut inner = self.lock();
        let mut d = Discarded::default();
        for e in inner.envelopes.drain(..) {
            d.envelopes += 1;
            d.rows += e.rows as u64;
        }
        inner.bytes = 0;
        self.metrics.destination.queue_depth.set(0);
        self.metrics.destination.queue_bytes.set(0);
        drop(inner);
        self.count_dropped(d.envelopes, d.rows);
        d
    }

    /// The highest number of envelopes ever waiting at once.
    pub fn peak_len(&self) -> usize {
        self.lock().peak
    }

    pub fn len(&self) -> usize {
        self.lock().envelopes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::jsonl::JsonLines;
    use crate::record::Record;

    fn envelope(rows: u16) -> Envelope {
        let records: Vec<Record> = (0..rows)
            .map(|p| Record {
                idiag_sport: Some(p),
                ..Record::default()
            })
            .collect();
        Envelope::from_records(&mut JsonLines::default(), &records, Arc::from("h"), 1)
    }

    /// A full queue drops its oldest envelope, counts it, and never grows past capacity.
    #[test]
    fn full_queue_drops_oldest_and_counts() {
        let metrics = Arc::new(Metrics::new());
        let q = EnvelopeQueue::new(2, metrics.clone());
        let ids: Vec<u64> = (1..=4)
            .map(|rows| {
                let e = envelope(rows);
                let id = e.id;
                q.push(e);
                id
            })
            .collect();
        assert_eq!(q.len(), 2);
        assert_eq!(q.peak_len(), 2);
        assert_eq!(metrics.destination.dropped_envelopes.get(), 2);
        assert_eq!(metrics.destination.dropped_rows.get(), 1 + 2);
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let left: Vec<u64> = rt.block_on(async { vec![q.pop().await.unwrap().id, q.pop().await.unwrap().id] });
        assert_eq!(left, ids[2..]);
    }

    /// The byte limit drops the oldest envelopes as the count cap does, the
    /// memory held never passes it (one envelope alone may), and the gauge
    /// follows pushes, pops and drops.
    #[test]
    fn byte_limit_drops_oldest_and_bounds_memory() {
        let metrics = Arc::new(Metrics::new());
        let size = envelope(10).memory_bytes();
        let q = EnvelopeQueue::with_byte_limit(1000, size * 5 / 2, metrics.clone());
        let ids: Vec<u64> = (0..5)
            .map(|_| {
                let e = envelope(10);
                let id = e.id;
                q.push(e);
                id
            })
            .collect();
        assert_eq!(q.len(), 2);
        assert_eq!(metrics.destination.dropped_envelopes.get(), 3);
        assert_eq!(metrics.destination.dropped_rows.get(), 30);
        assert_eq!(metrics.destination.queue_bytes.get(), 2 * size as i64);
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let first = rt.block_on(q.pop()).unwrap();
        assert_eq!(first.id, ids[3]);
        assert_eq!(metrics.destination.queue_bytes.get(), size as i64);

        // Alone, an envelope above the limit is kept, pushed or requeued.
        let tiny = EnvelopeQueue::with_byte_limit(1000, 1, metrics.clone());
        tiny.push(envelope(10));
        assert_eq!(tiny.len(), 1);
        let e = rt.block_on(tiny.pop()).unwrap();
        tiny.requeue_front(e);
        assert_eq!(tiny.len(), 1);
        // A second one replaces it.
        tiny.push(envelope(10));
        assert_eq!(tiny.len(), 1);
    }

    /// A destination slower than collection but working loses nothing: the
    /// producer waits for it once PACE_DEPTH envelopes are queued, and the
    /// queue never holds more than that (issue 8: no record lost, memory
    /// bounded by the flush caps).
    #[test]
    fn slow_healthy_destination_paces_collection_without_drops() {
        let metrics = Arc::new(Metrics::new());
        let q = Arc::new(EnvelopeQueue::new(64, metrics.clone()));
        let consumer = {
            let q = q.clone();
            std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
                let mut rows = 0;
                while let Some(e) = rt.block_on(q.pop()) {
                    rows += e.rows;
                    std::thread::sleep(Duration::from_millis(2));
                }
                rows
            })
        };
        for _ in 0..100 {
            q.push(envelope(3));
        }
        q.close();
        assert_eq!(consumer.join().unwrap(), 300);
        assert_eq!(metrics.destination.dropped_rows.get(), 0);
        assert!(q.peak_len() <= PACE_DEPTH, "queue reached {}", q.peak_len());
    }

    /// A failing destination (an envelope came back for a retry) is not
    /// waited for: collection goes on at once and drops the oldest when full.
    #[test]
    fn failing_destination_is_not_waited_for() {
        let metrics = Arc::new(Metrics::new());
        let q = EnvelopeQueue::new(PACE_DEPTH + 2, metrics.clone());
        q.requeue_front(envelope(1));
        let started = std::time::Instant::now();
        for _ in 0..PACE_DEPTH + 10 {
            q.push(envelope(1));
        }
        assert!(
            started.elapsed() < PACE_MAX_WAIT,
            "pushes waited {:?}",
            started.elapsed()
        );
        assert_eq!(q.len(), PACE_DEPTH + 2);
        assert_eq!(metrics.destination.dropped_rows.get(), 9);
    }

    /// Discarding at shutdown empties the queue and counts every row as dropped.
    #[test]
    fn discard_all_counts_rows() {
        let metrics = Arc::new(Metrics::new());
        let q = EnvelopeQueue::new(8, metrics.clone());
        q.push(envelope(3));
        q.push(envelope(4));
        assert_eq!(q.discard_all(), Discarded { envelopes: 2, rows: 7 });
        assert!(q.is_empty());
        assert_eq!(metrics.destination.dropped_rows.get(), 7);
    }

    /// A requeued envelope goes back to the front, or is dropped when newer data filled the queue.
    #[test]
    fn requeue_front_respects_the_bound() {
        let metrics = Arc::new(Metrics::new());
        let q = EnvelopeQueue::new(1, metrics.clone());
        let first = envelope(5);
        let first_id = first.id;
        q.requeue_front(first);
        assert_eq!(q.len(), 1);
        q.requeue_front(envelope(6));
        assert_eq!(q.len(), 1);
        assert_eq!(metrics.destination.dropped_rows.get(), 6);
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        assert_eq!(rt.block_on(q.pop()).unwrap().id, first_id);
    }
}
