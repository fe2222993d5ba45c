//! Collect: one namespace's sockets → records → the envelope builder.
//!
//! Glue between `kernel` (bytes), `decode` (records) and `batch`
//! (envelopes). A [`Collector`] belongs to one thread and is reused across
//! namespaces and polls: its receive buffer and record are allocated once.

use std::sync::Arc;
use std::time::Instant;

use crate::attribute::{Attributor, Sources};
use crate::batch::EnvelopeBuilder;
use crate::decode::inet_diag::{AF_INET, AF_INET6};
use crate::decode::{Deserializers, SocketDecoder};
use crate::kernel::uring::UringReceiver;
use crate::kernel::{DatagramTap, DiagSocket, DumpError, DumpRequest, RECV_BUFFER_BYTES};
use crate::metrics::{KindLabel, Metrics};
use crate::netns::NamespaceStamp;
use crate::record::Stamps;
use crate::tap::TapWriter;
use crate::track::{Destroyed, NamespaceFlows, TrackPolicy, Verdict};

/// What to ask for in every dump.
#[derive(Debug, Clone)]
pub struct DumpPlan {
    pub states: u32,
    /// `--filter`, compiled; sent with both families' requests.
    pub filter: Option<crate::kernel::Bytecode>,
    pub deserializers: Deserializers,
    /// Keep every Nth socket (`--modulus`, sampling); 1 keeps all.
    pub modulus: u64,
    /// Bytes of the recv(2) buffer (`--packet-size` x `--packet-size-mply`).
    pub recv_buffer: usize,
    /// `--emit`, `--flow-events`, `--rates`.
    pub track: TrackPolicy,
}

impl DumpPlan {
    /// One request per family: IPv4 first, then IPv6.
    pub fn requests(&self) -> [DumpRequest; 2] {
        let ext = self.deserializers.request_ext();
        [AF_INET, AF_INET6].map(|family| DumpRequest {
            family,
            states: self.states,
            ext,
            filter: self.filter.clone(),
        })
    }
}

/// The stamps with strings of this collector's own. Every record clones
/// them (a reference count increment, and a decrement when the record is
/// reused): clones of one Arc shared by all netlinkers would bounce its
/// count between the cores of concurrent dumps on every record, measured at
/// 40-80 ns per record with two threads against about 5 ns unshared.
fn private_copy(stamps: &Stamps) -> Stamps {
    let copy = |s: &Option<Arc<str>>| s.as_deref().map(Arc::from);
    Stamps {
        hostname: copy(&stamps.hostname),
        label: copy(&stamps.label),
        tag: copy(&stamps.tag),
        location: copy(&stamps.location),
    }
}

/// A namespace's dump that did not finish: why, and the records it had
/// produced before (kept).
#[derive(Debug)]
pub(crate) struct CutShort {
    pub error: DumpError,
    pub records: u64,
}

pub(crate) struct Collector {
    plan: DumpPlan,
    decoder: SocketDecoder,
    buf: Vec<u8>,
    stamps: Stamps,
    metrics: Arc<Metrics>,
    /// The io_uring receive path, when `-ioUring` is on and the kernel allows it.
    uring: Option<UringReceiver>,
    /// `--write-files`: lent to each namespace's socket for its dumps.
    capture: Option<Box<dyn DatagramTap>>,
    /// Workload attribution (`--resolve-container-id`, `--enrich-container`);
    /// `None` when both are off, so they cost nothing then.
    attributor: Option<Attributor>,
    /// Sockets this collector has been handed, kept or not (`--modulus`
    /// keeps those whose count is a multiple of it, across namespaces and polls).
    seen: u64,
    /// The live gRPC record streams (`tap`), when `--grpc-listen` is on.
    tap: Option<TapWriter>,
    /// This netlinker's share of the poll's aggregates
    /// (`--aggregate-metrics`); `None` when off, so they cost nothing then.
    pub(crate) aggregate: Option<crate::metrics::aggregate::PollAggregate>,
    pub builder: EnvelopeBuilder,
}

impl Collector {
    pub fn new(plan: DumpPlan, stamps: Stamps, builder: EnvelopeBuilder, metrics: Arc<Metrics>) -> Self {
        Collector {
            decoder: SocketDecoder::new(plan.deserializers),
            buf: vec![0u8; plan.recv_buffer.max(RECV_BUFFER_BYTES)],
            plan,
            stamps: private_copy(&stamps),
            metrics,
            uring: None,
            capture: None,
            attributor: None,
            seen: 0,
            tap: None,
            aggregate: None,
            builder,
        }
    }

    /// Offers every record to the live record streams too.
    pub(crate) fn tap_to(&mut self, tap: TapWriter) {
        self.tap = Some(tap);
    }

    /// Receives with io_uring from now on (`-ioUring`); when the kernel or a
    /// seccomp filter refuses, says why and stays on recv(2) (returns false).
    pub(crate) fn use_io_uring(&mut self, recv_batch: u32, cqe_batch: u32) -> bool {
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

    /// Fills the records' workload fields from `sources` from now on.
    pub(crate) fn attribute_with(&mut self, sources: Sources) {
        self.attributor = (!sources.is_empty()).then(|| Attributor::new(sources));
    }

    /// Saves the raw replies this collector receives (`--write-files`).
    pub(crate) fn capture_to(&mut self, tap: Box<dyn DatagramTap>) {
        self.capture = Some(tap);
    }

    /// Dumps both families of one namespace into the envelope builder.
    /// Returns the number of records produced; a dump that fails midway
    /// says how many it had produced (they are kept and delivered: the poll
    /// is then incomplete, not empty).
    pub fn collect(
        &mut self,
        socket: &mut DiagSocket,
        namespace: &NamespaceStamp,
        poll_seq: u64,
        deadline: Instant,
        mut flows: Option<&mut NamespaceFlows>,
    ) -> Result<u64, CutShort> {
        self.builder.start_poll(poll_seq);
        let mut closes = 0;
        if let Some(flows) = flows.as_deref_mut() {
            flows.table.start_poll();
            closes = self.drain_destroyed(flows, namespace, poll_seq);
        }
        socket.set_tap(self.capture.take());
        let result = self.collect_families(
            socket,
            namespace,
            poll_seq,
            deadline,
            flows.as_deref_mut().map(|f| &mut f.table),
        );
        self.capture = socket.set_tap(None);
        let mut produced = result.map_err(|mut cut| {
            cut.records += closes;
            cut
        })?;
        if let Some(flows) = flows {
            // Only a whole poll tells a vanished socket from an unread one.
            produced += self.sweep(&mut flows.table, namespace, poll_seq);
            self.metrics
                .track
                .first_seen_time_wait
                .inc_by(flows.table.take_first_seen_in_time_wait());
        }
        Ok(produced + closes)
    }

    /// The closes the kernel announced since this namespace's last poll.
    fn drain_destroyed(&mut self, flows: &mut NamespaceFlows, namespace: &NamespaceStamp, poll_seq: u64) -> u64 {
        let Some(listener) = flows.destroy.as_mut() else {
            return 0;
        };
        let Collector {
            decoder,
            buf,
            stamps,
            builder,
            metrics,
            plan,
            ..
        } = self;
        let table = &mut flows.table;
        let emit = plan.track.flow_events;
        let mut closes = 0;
        let now_ns = crate::clock::now_ns();
        let drained = listener.drain(buf, |payload| {
            let (record, error) = decoder.decode(payload);
            if let Some(e) = error {
                metrics.decode.errors.get_or_create(&KindLabel { kind: e.kind() }).inc();
            }
            let Some(record) = record else { return };
            if table.destroyed(record, now_ns) == Destroyed::AlreadyClosed || !emit {
                return;
            }
            stamp(record, stamps, namespace, poll_seq, now_ns);
            metrics.track.closes.get_or_create(&KindLabel { kind: "destroy" }).inc();
            builder.push(record);
            closes += 1;
        });
        std::mem::take(&mut decoder.stats).report_to(&metrics.decode);
        match drained {
            Ok(summary) => {
                metrics.track.destroy_overruns.inc_by(summary.overruns);
            }
            Err(e) => {
                // The listener is reopened at the next poll.
                metrics
                    .track
                    .listener_failures
                    .get_or_create(&KindLabel { kind: "recv" })
                    .inc();
                tracing::warn!(error = %e, netns = ?namespace.inode, "reading TCP destroy notifications failed; reopening");
                flows.destroy = None;
            }
        }
        closes
    }

    /// A tracked namespace vanished: its last destroy notifications, then a
    /// close for every socket it still held.
    pub(crate) fn close_vanished(
        &mut self,
        namespace: &NamespaceStamp,
        mut flows: NamespaceFlows,
        poll_seq: u64,
    ) -> u64 {
        self.builder.start_poll(poll_seq);
        self.builder.start_namespace(namespace.inode);
        flows.table.start_poll();
        let mut closes = self.drain_destroyed(&mut flows, namespace, poll_seq);
        closes += self.sweep(&mut flows.table, namespace, poll_seq);
        self.builder.flush();
        closes
    }

    /// Closes the sockets a whole poll no longer saw.
    fn sweep(&mut self, table: &mut crate::track::SocketTable, namespace: &NamespaceStamp, poll_seq: u64) -> u64 {
        let emit = self.plan.track.flow_events;
        let now_ns = crate::clock::now_ns();
        let Collector {
            stamps,
            builder,
            metrics,
            ..
        } = self;
        let mut closes = 0;
        table.sweep(now_ns, |mut closed| {
            if !emit {
                return;
            }
            stamp(&mut closed.record, stamps, namespace, poll_seq, now_ns);
            metrics
                .track
                .closes
                .get_or_create(&KindLabel {
                    kind: closed.source.as_str(),
                })
                .inc();
            builder.push(&closed.record);
            closes += 1;
        });
        closes
    }

    fn collect_families(
        &mut self,
        socket: &mut DiagSocket,
        namespace: &NamespaceStamp,
        poll_seq: u64,
        deadline: Instant,
        mut table: Option<&mut crate::track::SocketTable>,
    ) -> Result<u64, CutShort> {
        if let Some(attributor) = &mut self.attributor {
            attributor.start_namespace(namespace.inode);
        }
        let mut produced = 0u64;
        for request in self.plan.requests() {
            let Collector {
                decoder,
                buf,
                stamps,
                builder,
                metrics,
                uring,
                seen,
                plan,
                attributor,
                tap,
                aggregate,
                ..
            } = self;
            let modulus = plan.modulus;
            // Counted here and added once per dump: an atomic per socket
            // is a measurable part of a poll that sends nothing.
            let (mut suppressed, mut opens) = (0u64, 0u64);
            let on_socket = |payload: &[u8], now_ns: u64| {
                *seen += 1;
                if modulus > 1 && (*seen - 1) % modulus != 0 {
                    // Sampled out: not decoded, not counted as a record.
                    return;
                }
                let (record, error) = decoder.decode(payload);
                if let Some(e) = error {
                    metrics.decode.errors.get_or_create(&KindLabel { kind: e.kind() }).inc();
                    tracing::debug!(error = %e, "inet_diag message failed to decode");
                }
                if let Some(record) = record {
                    // Tracking first: it reads only what the kernel sent,
                    // and a record it suppresses (most of them, on a quiet
                    // host in `changed` mode) is not worth stamping unless
                    // the aggregates, which count every socket, need it.
                    let mut send = true;
                    if let Some(table) = table.as_deref_mut() {
                        match table.observe(record, plan.track, now_ns) {
                            Verdict::Suppress => {
                                suppressed += 1;
                                send = false;
                                if aggregate.is_none() {
                                    return;
                                }
                            }
                            Verdict::Emit(Some(_)) => opens += 1,
                            Verdict::Emit(None) => {}
                        }
                    }
                    stamp(record, stamps, namespace, poll_seq, now_ns);
                    if let Some(attributor) = attributor {
                        attributor.apply(record);
                    }
                    if let Some(aggregate) = aggregate {
                        aggregate.observe(record);
                    }
                    if !send {
                        return;
                    }
                    if let Some(tap) = tap {
                        tap.offer(record, poll_seq);
                    }
                    builder.push(record);
                    produced += 1;
                }
            };
            let result = match uring {
                Some(uring) => uring.dump(socket, &request, deadline, on_socket),
                None => socket.dump(&request, buf, deadline, on_socket),
            };
            std::mem::take(&mut decoder.stats).report_to(&metrics.decode);
            metrics.track.suppressed.inc_by(suppressed);
            metrics.track.opens.inc_by(opens);
            match result {
                Ok(summary) => summary.report_to(&metrics.netlink),
                Err(e) => {
                    // Reads before the failure were real work: count them.
                    socket.failed_dump().report_reads_to(&metrics.netlink);
                    e.report_to(&metrics.netlink);
                    return Err(CutShort {
                        error: e,
                        records: produced,
                    });
                }
            }
        }
        Ok(produced)
    }
}

/// The context every record of a namespace's poll carries.
#[inline]
fn stamp(record: &mut crate::record::Record, stamps: &Stamps, namespace: &NamespaceStamp, poll_seq: u64, now_ns: u64) {
    record.timestamp_ns = Some(now_ns);
    record.poll_seq = Some(poll_seq);
    stamps.apply(record);
    record.netns_inode = namespace.inode;
    record.netns_name = namespace.name.clone();
    record.netns_pid = namespace.pid;
    record.nsid = namespace.nsid;
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A collector stamps the configured strings from allocations of its
    /// own, so concurrent netlinkers never share a reference count.
    #[test]
    fn collector_stamps_are_equal_but_not_shared() {
        let stamps = Stamps {
            hostname: Some(Arc::from("host-1")),
            label: Some(Arc::from("l")),
            tag: None,
            location: Some(Arc::from("rack 7")),
        };
        let own = private_copy(&stamps);
        assert_eq!(own.hostname, stamps.hostname);
        assert!(!Arc::ptr_eq(
            own.hostname.as_ref().unwrap(),
            stamps.hostname.as_ref().unwrap()
        ));
        assert_eq!(own.label, stamps.label);
        assert_eq!(own.tag, None);
        assert_eq!(own.location.as_deref(), Some("rack 7"));
        assert!(!Arc::ptr_eq(
            own.location.as_ref().unwrap(),
            stamps.location.as_ref().unwrap()
        ));
    }
}
