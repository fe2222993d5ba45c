//! The bounded queue between collectors and the destination.
//!
//! Collection must never block on a slow destination, and memory must stay
//! bounded: when the queue is full the oldest envelope is dropped and
//! counted (its rows too), because the newest data is the most useful to an
//! operator.

use std::collections::VecDeque;
use std::sync::Mutex;

use tokio::sync::Notify;

use super::Envelope;
use crate::observe::metrics::Metrics;
use std::sync::Arc;

pub struct EnvelopeQueue {
    inner: Mutex<Inner>,
    capacity: usize,
    ready: Notify,
    metrics: Arc<Metrics>,
}

struct Inner {
    envelopes: VecDeque<Envelope>,
    closed: bool,
}

impl EnvelopeQueue {
    pub fn new(capacity: usize, metrics: Arc<Metrics>) -> Self {
        EnvelopeQueue {
            inner: Mutex::new(Inner {
                envelopes: VecDeque::with_capacity(capacity),
                closed: false,
            }),
            capacity: capacity.max(1),
            ready: Notify::new(),
            metrics,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding this lock cannot leave the deque invalid
        // (push/pop are single operations), so keep going with its data.
        self.inner.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Adds an envelope, dropping the oldest when full.
    pub fn push(&self, envelope: Envelope) {
        let rows = envelope.rows as u64;
        {
            let mut inner = self.lock();
            if inner.envelopes.len() >= self.capacity {
                if let Some(dropped) = inner.envelopes.pop_front() {
                    self.metrics.destination.dropped_envelopes.inc();
                    self.metrics.destination.dropped_rows.inc_by(dropped.rows as u64);
                    tracing::warn!(rows = dropped.rows, poll_seq = dropped.poll_seq, "destination queue full: dropped the oldest envelope");
                }
            }
            inner.envelopes.push_back(envelope);
            self.metrics.destination.queue_depth.set(inner.envelopes.len() as i64);
        }
        self.metrics.envelope.rows_flushed.inc_by(rows);
        self.metrics.envelope.envelopes_flushed.inc();
        self.ready.notify_one();
    }

    /// Takes the oldest envelope, waiting for one. `None` once closed and empty.
    pub async fn pop(&self) -> Option<Envelope> {
        loop {
            let notified = self.ready.notified();
            {
                let mut inner = self.lock();
                if let Some(e) = inner.envelopes.pop_front() {
                    self.metrics.destination.queue_depth.set(inner.envelopes.len() as i64);
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
    /// data has filled the queue meanwhile (then it is dropped and counted).
    pub fn requeue_front(&self, envelope: Envelope) {
        let mut inner = self.lock();
        if inner.envelopes.len() >= self.capacity {
            self.metrics.destination.dropped_envelopes.inc();
            self.metrics.destination.dropped_rows.inc_by(envelope.rows as u64);
            tracing::warn!(rows = envelope.rows, "destination queue full while retrying: dropped the oldest envelope");
            return;
        }
        inner.envelopes.push_front(envelope);
        self.metrics.destination.queue_depth.set(inner.envelopes.len() as i64);
    }

    /// No more envelopes will come; `pop` drains what is left then ends.
    pub fn close(&self) {
        self.lock().closed = true;
        self.ready.notify_waiters();
        self.ready.notify_one();
    }

    pub fn len(&self) -> usize {
        self.lock().envelopes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
