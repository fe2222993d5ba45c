//! The live record tap: every record as it is collected, encoded once as
//! the Go daemon's `FlatRecordsResponse` (an `xtcp_flat_record.v1` record
//! in field 1), broadcast to the gRPC record streams.
//!
//! Collection never waits for a subscriber: the broadcast is a ring of
//! [`TAP_RING_RECORDS`] records; a subscriber that falls further behind
//! loses the oldest ones and learns how many (counted per stream by
//! `grpc::records`). With no subscriber the tap costs one atomic load per
//! record and encodes nothing.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::broadcast;

use crate::format::protobuf::ProtobufList;
use crate::record::{Record, RecordSchema};

/// Records the broadcast ring holds (a few hundred bytes each, about 2 MiB
/// when full): each stream's task moves them into the stream's own buffer
/// as they come, so this only has to cover the moments that task waits
/// for a thread; a task further behind loses the oldest (counted).
pub const TAP_RING_RECORDS: usize = 8_192;

/// The field of `FlatRecordsResponse` / `PollFlatRecordsResponse` holding the record.
const RESPONSE_RECORD_FIELD: u32 = 1;

/// What the tap broadcasts.
#[derive(Debug, Clone)]
pub enum TapEvent {
    /// One record of poll `poll`, as the bytes of a whole response message.
    Record { poll: u64, response: Bytes },
    /// Poll `poll` has finished: every record of it was sent before this.
    PollDone { poll: u64 },
}

/// The sending side, shared by every netlinker and the poller.
#[derive(Debug)]
pub struct RecordTap {
    tx: broadcast::Sender<TapEvent>,
    subscribers: Arc<AtomicUsize>,
}

impl Default for RecordTap {
    fn default() -> Self {
        let (tx, _) = broadcast::channel(TAP_RING_RECORDS);
        RecordTap {
            tx,
            subscribers: Arc::new(AtomicUsize::new(0)),
        }
    }
}

/// One stream's view of the tap; dropping it stops the encoding once no
/// stream is left.
#[derive(Debug)]
pub struct Subscription {
    pub events: broadcast::Receiver<TapEvent>,
    subscribers: Arc<AtomicUsize>,
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.subscribers.fetch_sub(1, Ordering::Relaxed);
    }
}

impl RecordTap {
    pub fn subscribe(&self) -> Subscription {
        self.subscribers.fetch_add(1, Ordering::Relaxed);
        Subscription {
            events: self.tx.subscribe(),
            subscribers: self.subscribers.clone(),
        }
    }

    /// Streams subscribed now.
    pub fn subscribers(&self) -> usize {
        self.subscribers.load(Ordering::Relaxed)
    }

    /// Whether records are wanted (a stream is subscribed).
    #[inline]
    pub fn active(&self) -> bool {
        self.subscribers.load(Ordering::Relaxed) > 0
    }

    pub fn poll_done(&self, poll: u64) {
        if self.active() {
            // An error only means nobody is subscribed any more.
            let _ = self.tx.send(TapEvent::PollDone { poll });
        }
    }
}

/// A netlinker's handle on the tap, with its own encoder.
pub struct TapWriter {
    tap: Arc<RecordTap>,
    encoder: ProtobufList,
    buf: Vec<u8>,
}

impl TapWriter {
    pub fn new(tap: Arc<RecordTap>) -> Self {
        TapWriter {
            tap,
            encoder: ProtobufList::new(RecordSchema::FlatRecordV1),
            buf: Vec::with_capacity(1024),
        }
    }

    /// Sends `record` to the subscribed streams, if any.
    #[inline]
    pub fn offer(&mut self, record: &Record, poll: u64) {
        if !self.tap.active() {
            return;
        }
        self.buf.clear();
        self.encoder
            .encode_as_field(record, RESPONSE_RECORD_FIELD, &mut self.buf);
        let response = Bytes::copy_from_slice(&self.buf);
        let _ = self.tap.tx.send(TapEvent::Record { poll, response });
    }
}
