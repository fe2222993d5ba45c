//! `xtcp_flat_record.v1.XTCPFlatRecordService`: the live record streams.
//!
//! `FlatRecords` streams every record as it is collected; `PollFlatRecords`
//! runs a poll for each request on its stream and streams that poll's
//! records back. Both read the record tap ([`crate::tap`]): each record is
//! encoded once, as a whole response message ([`EncodedRecord`]), and
//! shared by every stream. Each stream has a task of its own moving records
//! from the tap into the stream's bounded buffer ([`STREAM_BUFFER_RECORDS`]);
//! when a client reads slower than records come, its buffer fills and the
//! newest records are dropped and counted at once
//! (`xtcp2_grpc_stream_dropped_records_total`), never slowing collection
//! or another stream.

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::{Buf, BufMut, Bytes};
use prost::encoding::{DecodeContext, WireType};
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::mpsc;
use tokio_stream::Stream;
use tonic::{Request, Response, Status, Streaming};

use super::proto::flat_record::{
    xtcp_flat_record_service_server::XtcpFlatRecordService, FlatRecordsRequest, PollFlatRecordsRequest, XtcpFlatRecord,
};
use super::{GrpcShared, Method};
use crate::metrics::StreamLabel;
use crate::tap::{Subscription, TapEvent};

/// Records one stream may hold for its client: a few polls of a small
/// host, or a good part of one of a large host. Shared bytes (each record
/// is encoded once for every stream), so 100 stalled streams hold at most
/// 100 x this many references into the same records.
pub const STREAM_BUFFER_RECORDS: usize = 2048;

/// A `FlatRecordsResponse` / `PollFlatRecordsResponse` (field 1: the
/// record) as its encoded bytes: built once by the tap, sent as they are.
#[derive(Clone, Default, PartialEq)]
pub struct EncodedRecord {
    response: Bytes,
}

impl std::fmt::Debug for EncodedRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "EncodedRecord({} bytes)", self.response.len())
    }
}

/// The field holding the record in both response messages.
const RECORD_FIELD: u32 = 1;

/// Decodes a response's record (for `xtcp2 client`).
#[derive(Clone, PartialEq, prost::Message)]
struct ResponseView {
    #[prost(message, optional, tag = "1")]
    xtcp_flat_record: Option<XtcpFlatRecord>,
}

impl EncodedRecord {
    pub fn from_response_bytes(response: Bytes) -> Self {
        EncodedRecord { response }
    }

    /// The record this response carries (`None`: the field is absent).
    pub fn record(&self) -> Result<Option<XtcpFlatRecord>, prost::DecodeError> {
        <ResponseView as prost::Message>::decode(self.response.clone()).map(|v| v.xtcp_flat_record)
    }
}

impl prost::Message for EncodedRecord {
    fn encode_raw(&self, buf: &mut impl BufMut) {
        buf.put_slice(&self.response);
    }

    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: WireType,
        buf: &mut impl Buf,
        ctx: DecodeContext,
    ) -> Result<(), prost::DecodeError> {
        if tag != RECORD_FIELD {
            return prost::encoding::skip_field(wire_type, tag, buf, ctx);
        }
        let mut body: Vec<u8> = Vec::new();
        prost::encoding::bytes::merge(wire_type, &mut body, buf, ctx)?;
        let mut response = Vec::with_capacity(body.len() + 11);
        prost::encoding::encode_key(RECORD_FIELD, WireType::LengthDelimited, &mut response);
        prost::encoding::encode_varint(body.len() as u64, &mut response);
        response.extend_from_slice(&body);
        self.response = Bytes::from(response);
        Ok(())
    }

    fn encoded_len(&self) -> usize {
        self.response.len()
    }

    fn clear(&mut self) {
        self.response = Bytes::new();
    }
}

/// The service, over the daemon's shared gRPC state.
pub struct RecordService {
    pub(super) shared: Arc<GrpcShared>,
}

type RecordStream = Pin<Box<dyn Stream<Item = Result<EncodedRecord, Status>> + Send>>;

/// Streams opened since start: each stream's metric label.
static STREAM_IDS: AtomicU64 = AtomicU64::new(0);

/// One stream's accounting: its label in the per-stream metrics, removed
/// (with the live-client count) when the stream ends, so ended streams do
/// not pile up series.
struct StreamAccount {
    shared: Arc<GrpcShared>,
    label: StreamLabel,
}

impl StreamAccount {
    fn open(shared: Arc<GrpcShared>, method: &'static str) -> Self {
        let id = STREAM_IDS.fetch_add(1, Ordering::Relaxed) + 1;
        let label = StreamLabel {
            method,
            stream: id.to_string(),
        };
        let grpc = &shared.metrics.grpc;
        grpc.stream_clients.inc();
        let _ = grpc.streamed_records.get_or_create(&label);
        let _ = grpc.dropped_records.get_or_create(&label);
        StreamAccount { shared, label }
    }

    fn streamed(&self) {
        self.shared
            .metrics
            .grpc
            .streamed_records
            .get_or_create(&self.label)
            .inc();
    }

    fn dropped(&self, n: u64) {
        let grpc = &self.shared.metrics.grpc;
        grpc.dropped_records.get_or_create(&self.label).inc_by(n);
        grpc.dropped_records_all.inc_by(n);
    }
}

impl Drop for StreamAccount {
    fn drop(&mut self) {
        let grpc = &self.shared.metrics.grpc;
        grpc.stream_clients.dec();
        grpc.streamed_records.remove(&self.label);
        grpc.dropped_records.remove(&self.label);
    }
}

/// Moves the tap's events into one stream's bounded buffer until the
/// stream ends: a full buffer drops the record (counted); the end of a
/// poll is always delivered (waiting for room), since `PollFlatRecords`
/// needs it to answer its request.
///
/// `wanted`: for `PollFlatRecords`, the poll asked for (0: none), so the
/// records of other polls take no room and count as no loss.
async fn forward(
    mut subscription: Subscription,
    buffer: mpsc::Sender<TapEvent>,
    account: Arc<StreamAccount>,
    wanted: Option<Arc<AtomicU64>>,
) {
    let wants = |poll: u64, done: bool| match &wanted {
        None => true,
        Some(w) => {
            let w = w.load(Ordering::Acquire);
            w != 0 && (poll == w || (done && poll > w))
        }
    };
    loop {
        let event = tokio::select! {
            event = subscription.events.recv() => event,
            _ = buffer.closed() => return,
        };
        match event {
            Ok(TapEvent::Record { poll, .. }) | Ok(TapEvent::PollDone { poll }) if !wants(poll, true) => {}
            Ok(TapEvent::Record { poll, .. }) if !wants(poll, false) => {}
            Ok(record @ TapEvent::Record { .. }) => match buffer.try_send(record) {
                Ok(()) => {}
                Err(mpsc::error::TrySendError::Full(_)) => account.dropped(1),
                Err(mpsc::error::TrySendError::Closed(_)) => return,
            },
            Ok(done @ TapEvent::PollDone { .. }) => {
                if buffer.send(done).await.is_err() {
                    return;
                }
            }
            // Behind the tap's own ring (this task was not scheduled in
            // time): those records are lost for this stream too.
            Err(RecvError::Lagged(n)) => account.dropped(n),
            Err(RecvError::Closed) => return,
        }
    }
}

/// Opens a stream: its account, its buffer, and the task filling it.
fn open_stream(
    shared: &Arc<GrpcShared>,
    method: &'static str,
    wanted: Option<Arc<AtomicU64>>,
) -> (Arc<StreamAccount>, mpsc::Receiver<TapEvent>) {
    let account = Arc::new(StreamAccount::open(shared.clone(), method));
    let (tx, rx) = mpsc::channel(STREAM_BUFFER_RECORDS);
    tokio::spawn(forward(shared.tap.subscribe(), tx, account.clone(), wanted));
    (account, rx)
}

#[tonic::async_trait]
impl XtcpFlatRecordService for RecordService {
    type FlatRecordsStream = RecordStream;
    type PollFlatRecordsStream = RecordStream;

    async fn flat_records(
        &self,
        _request: Request<FlatRecordsRequest>,
    ) -> Result<Response<Self::FlatRecordsStream>, Status> {
        let (account, events) = open_stream(&self.shared, "FlatRecords", None);
        self.shared.count(Method::FlatRecords, tonic::Code::Ok);
        let stream = futures_util::stream::unfold((account, events), |(account, mut events)| async move {
            loop {
                match events.recv().await? {
                    TapEvent::Record { response, .. } => {
                        account.streamed();
                        return Some((Ok(EncodedRecord { response }), (account, events)));
                    }
                    TapEvent::PollDone { .. } => continue,
                }
            }
        });
        Ok(Response::new(Box::pin(stream)))
    }

    async fn poll_flat_records(
        &self,
        request: Request<Streaming<PollFlatRecordsRequest>>,
    ) -> Result<Response<Self::PollFlatRecordsStream>, Status> {
        let requests = request.into_inner();
        // Subscribed before any request asks for a poll: none of its
        // records can be missed.
        let wanted = Arc::new(AtomicU64::new(0));
        let (account, events) = open_stream(&self.shared, "PollFlatRecords", Some(wanted.clone()));
        self.shared.count(Method::PollFlatRecords, tonic::Code::Ok);
        struct State {
            account: Arc<StreamAccount>,
            events: mpsc::Receiver<TapEvent>,
            requests: Streaming<PollFlatRecordsRequest>,
            control: Arc<crate::control::PollControl>,
            /// The poll whose records are being streamed (the forwarder's filter too).
            wanted: Arc<AtomicU64>,
            serving: Option<u64>,
        }
        let state = State {
            account,
            events,
            requests,
            control: self.shared.control.clone(),
            wanted,
            serving: None,
        };
        let stream = futures_util::stream::unfold(state, |mut st| async move {
            loop {
                let Some(poll) = st.serving else {
                    // The next request; the client closing its side ends
                    // the stream.
                    match st.requests.message().await {
                        Ok(Some(_)) => {
                            // The filter is set before the poll can start.
                            let wanted = &st.wanted;
                            let poll = st.control.trigger_with(|poll| wanted.store(poll, Ordering::Release));
                            st.serving = Some(poll);
                            continue;
                        }
                        Ok(None) => return None,
                        Err(status) => return Some((Err(status), st)),
                    }
                };
                match st.events.recv().await? {
                    TapEvent::Record { poll: p, response } if p == poll => {
                        st.account.streamed();
                        return Some((Ok(EncodedRecord { response }), st));
                    }
                    TapEvent::PollDone { poll: p } if p >= poll => st.serving = None,
                    _ => {}
                }
            }
        });
        Ok(Response::new(Box::pin(stream)))
    }
}
