//! Collect: one namespace's sockets → records → the envelope builder.
//!
//! Glue between `kernel` (bytes), `decode` (records) and `batch`
//! (envelopes). A [`Collector`] belongs to one thread and is reused across
//! namespaces and polls: its receive buffer and record are allocated once.

use std::sync::Arc;
use std::time::Instant;

use crate::batch::EnvelopeBuilder;
use crate::config::Stamps;
use crate::decode::inet_diag::{AF_INET, AF_INET6};
use crate::decode::{Deserializers, SocketDecoder};
use crate::kernel::uring::UringReceiver;
use crate::kernel::{DiagSocket, DumpError, DumpRequest, RECV_BUFFER_BYTES};
use crate::observe::metrics::{KindLabel, Metrics};

/// Identity of the namespace a record came from.
#[derive(Debug, Clone, Default)]
pub struct NamespaceStamp {
    pub inode: Option<u64>,
    pub name: Option<Arc<str>>,
    pub pid: Option<u32>,
}

/// What to ask for in every dump.
#[derive(Debug, Clone, Copy)]
pub struct DumpPlan {
    pub states: u32,
    pub deserializers: Deserializers,
}

impl DumpPlan {
    /// One request per family: IPv4 first, then IPv6.
    pub fn requests(&self) -> [DumpRequest; 2] {
        let ext = self.deserializers.request_ext();
        [AF_INET, AF_INET6].map(|family| DumpRequest {
            family,
            states: self.states,
            ext,
        })
    }
}

pub struct Collector {
    plan: DumpPlan,
    decoder: SocketDecoder,
    buf: Vec<u8>,
    stamps: Stamps,
    metrics: Arc<Metrics>,
    /// The io_uring receive path, when `-ioUring` is on and the kernel allows it.
    uring: Option<UringReceiver>,
    pub builder: EnvelopeBuilder,
}

impl Collector {
    pub fn new(plan: DumpPlan, stamps: Stamps, builder: EnvelopeBuilder, metrics: Arc<Metrics>) -> Self {
        Collector {
            plan,
            decoder: SocketDecoder::new(plan.deserializers),
            buf: vec![0u8; RECV_BUFFER_BYTES],
            stamps,
            metrics,
            uring: None,
            builder,
        }
    }

    /// Receives with io_uring from now on (`-ioUring`); when the kernel or a
    /// seccomp filter refuses, says why and stays on recv(2) (returns false).
    pub fn use_io_uring(&mut self, recv_batch: u32, cqe_batch: u32) -> bool {
        match UringReceiver::new(recv_batch, cqe_batch) {
            Ok(uring) => {
                self.uring = Some(uring);
                true
            }
            Err(e) => {
                tracing::warn!(error = %e, "-ioUring: io_uring unavailable, falling back to recv(2)");
                false
            }
        }
    }

    /// Dumps both families of one namespace into the envelope builder.
    /// Returns the number of records produced.
    pub fn collect(
        &mut self,
        socket: &mut DiagSocket,
        namespace: &NamespaceStamp,
        poll_seq: u64,
        deadline: Instant,
    ) -> Result<u64, DumpError> {
        self.builder.start_poll(poll_seq);
        let mut produced = 0u64;
        for request in self.plan.requests() {
            let Collector {
                decoder,
                buf,
                stamps,
                builder,
                metrics,
                uring,
                ..
            } = self;
            let on_socket = |payload: &[u8], now_ns: u64| {
                let (record, error) = decoder.decode(payload);
                if let Some(e) = error {
                    metrics.decode.errors.get_or_create(&KindLabel { kind: e.kind() }).inc();
                    tracing::debug!(error = %e, "inet_diag message failed to decode");
                }
                if let Some(record) = record {
                    record.timestamp_ns = Some(now_ns);
                    record.poll_seq = Some(poll_seq);
                    record.hostname = Some(stamps.hostname.clone());
                    record.label = stamps.label.clone();
                    record.tag = stamps.tag.clone();
                    record.location = stamps.location.clone();
                    record.netns_inode = namespace.inode;
                    record.netns_name = namespace.name.clone();
                    record.netns_pid = namespace.pid;
                    builder.push(record);
                    produced += 1;
                }
            };
            let result = match uring {
                Some(uring) => uring.dump(socket, &request, deadline, on_socket),
                None => socket.dump(&request, buf, deadline, on_socket),
            };
            metrics.record_decode(&std::mem::take(&mut decoder.stats));
            match result {
                Ok(summary) => metrics.record_dump(&summary),
                Err(e) => {
                    metrics.record_dump_error(&e);
                    return Err(e);
                }
            }
        }
        Ok(produced)
    }
}
