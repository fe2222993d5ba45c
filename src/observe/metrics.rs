//! Every Prometheus metric of the daemon, in one place.
//!
//! Metrics are lock-free atomics (prometheus-client counters and gauges).
//! The hot path never touches them per socket: collectors keep plain
//! integers per dump and add them here once per dump. Counters only grow for
//! the life of the process (Prometheus handles restarts); gauges are set to
//! the current value. Names get the `xtcp2_` prefix and counters the
//! `_total` suffix at registration; `docs/observability.md` lists them.
//!
//! Two registries: `registry` holds everything of ours under `xtcp2_`;
//! `process_registry` holds the standard `process_*` metrics, which are
//! unprefixed by convention and read from `/proc` at scrape time.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::{Registry, Unit};
use std::sync::atomic::AtomicU64;

/// A label naming a kind of error.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabel {
    pub kind: &'static str,
}

/// A label naming a netlink attribute.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AttributeLabel {
    pub attribute: &'static str,
}

/// A label naming an output format.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FormatLabel {
    pub format: &'static str,
}

/// Labels of an on-demand profile request: which profile (`cpu`,
/// `flamegraph`, `heap`) and what became of it (`ok`, `busy`, `error`,
/// `unsupported`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ProfileRequestLabel {
    pub kind: &'static str,
    pub outcome: &'static str,
}

/// The build's identity, as labels of `xtcp2_build_info`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BuildLabel {
    pub version: &'static str,
    /// "true" when built with the `heap-profiling` feature.
    pub heap_profiling: &'static str,
}

#[derive(Default)]
pub struct NetlinkMetrics {
    pub recv_calls: Counter,
    pub recv_bytes: Counter,
    pub messages: Counter,
    pub truncations: Counter,
    pub stale_messages: Counter,
    pub dumps: Counter,
    pub dumps_interrupted: Counter,
    pub errors: Family<KindLabel, Counter>,
}

#[derive(Default)]
pub struct DecodeMetrics {
    pub sockets: Counter,
    pub errors: Family<KindLabel, Counter>,
    pub skipped_attributes: Family<AttributeLabel, Counter>,
}

pub struct PollMetrics {
    pub cycles: Counter,
    pub duration_seconds: Histogram,
    pub last_timestamp_seconds: Gauge<f64, AtomicU64>,
    pub duration_ratio: Gauge<f64, AtomicU64>,
    pub sockets_last_poll: Gauge,
}

#[derive(Default)]
pub struct EnvelopeMetrics {
    pub rows_flushed: Counter,
    pub envelopes_flushed: Counter,
    pub bytes_marshalled: Family<FormatLabel, Counter>,
}

#[derive(Default)]
pub struct DestinationMetrics {
    pub sends: Counter,
    pub send_bytes: Counter,
    pub failures: Family<KindLabel, Counter>,
    pub retries: Counter,
    pub queue_depth: Gauge,
    pub dropped_envelopes: Counter,
    pub dropped_rows: Counter,
}

pub struct NetnsMetrics {
    pub active: Gauge,
    pub discovered: Counter,
    pub removed: Counter,
    pub enter_failures: Family<KindLabel, Counter>,
    pub dump_failures: Family<KindLabel, Counter>,
    /// Whole discovery passes (bind-mount directories and /proc).
    pub discovery_seconds: Histogram,
    /// /proc scans, kind `full` or `incremental`.
    pub proc_scans: Family<KindLabel, Counter>,
    /// `stat` calls on /proc/PID/ns/net.
    pub proc_stat_calls: Counter,
}

impl Default for NetnsMetrics {
    fn default() -> Self {
        NetnsMetrics {
            active: Gauge::default(),
            discovered: Counter::default(),
            removed: Counter::default(),
            enter_failures: Family::default(),
            dump_failures: Family::default(),
            // 0.1 ms .. ~3 s
            discovery_seconds: Histogram::new(exponential_buckets(0.0001, 2.0, 16)),
            proc_scans: Family::default(),
            proc_stat_calls: Counter::default(),
        }
    }
}

/// On-demand profiles and the Pyroscope push.
#[derive(Default)]
pub struct ProfilingMetrics {
    pub requests: Family<ProfileRequestLabel, Counter>,
    pub pyroscope_uploads: Counter,
    pub pyroscope_upload_bytes: Counter,
    pub pyroscope_failures: Family<KindLabel, Counter>,
    pub pyroscope_yields: Counter,
}

/// All metrics; create one, share it behind an `Arc`.
pub struct Metrics {
    pub netlink: NetlinkMetrics,
    pub decode: DecodeMetrics,
    pub poll: PollMetrics,
    pub envelope: EnvelopeMetrics,
    pub destination: DestinationMetrics,
    pub netns: NetnsMetrics,
    pub profiling: ProfilingMetrics,
    pub registry: Registry,
    pub process_registry: Registry,
}

impl Metrics {
    pub fn new() -> Self {
        let mut m = Metrics {
            netlink: NetlinkMetrics::default(),
            decode: DecodeMetrics::default(),
            poll: PollMetrics {
                cycles: Counter::default(),
                // 1 ms .. ~33 s
                duration_seconds: Histogram::new(exponential_buckets(0.001, 2.0, 16)),
                last_timestamp_seconds: Gauge::default(),
                duration_ratio: Gauge::default(),
                sockets_last_poll: Gauge::default(),
            },
            envelope: EnvelopeMetrics::default(),
            destination: DestinationMetrics::default(),
            netns: NetnsMetrics::default(),
            profiling: ProfilingMetrics::default(),
            registry: Registry::with_prefix("xtcp2"),
            process_registry: Registry::default(),
        };
        m.register();
        m
    }

    fn register(&mut self) {
        let r = &mut self.registry;
        let n = &self.netlink;
        r.register(
            "netlink_recv_calls",
            "recv() calls on inet_diag sockets",
            n.recv_calls.clone(),
        );
        r.register_with_unit(
            "netlink_recv",
            "Bytes received from inet_diag sockets",
            Unit::Bytes,
            n.recv_bytes.clone(),
        );
        r.register("netlink_messages", "Netlink messages received", n.messages.clone());
        r.register(
            "netlink_truncations",
            "Datagrams larger than the receive buffer (data lost)",
            n.truncations.clone(),
        );
        r.register(
            "netlink_stale_messages",
            "Messages of an abandoned earlier dump, skipped",
            n.stale_messages.clone(),
        );
        r.register(
            "netlink_dumps",
            "inet_diag dumps completed (one per family and namespace)",
            n.dumps.clone(),
        );
        r.register(
            "netlink_dumps_interrupted",
            "Dumps the kernel flagged NLM_F_DUMP_INTR (table changed mid-dump)",
            n.dumps_interrupted.clone(),
        );
        r.register("netlink_errors", "Dump failures by kind", n.errors.clone());
        let d = &self.decode;
        r.register("sockets_decoded", "Sockets decoded into records", d.sockets.clone());
        r.register(
            "decode_errors",
            "Messages that failed to decode, by kind",
            d.errors.clone(),
        );
        r.register(
            "decode_skipped_attributes",
            "Attributes skipped (unknown or decoder off), by attribute",
            d.skipped_attributes.clone(),
        );
        let p = &self.poll;
        r.register("poll_cycles", "Poll cycles completed", p.cycles.clone());
        r.register_with_unit(
            "poll_duration",
            "Duration of a poll cycle",
            Unit::Seconds,
            p.duration_seconds.clone(),
        );
        r.register_with_unit(
            "poll_last_timestamp",
            "Unix time the last poll cycle finished",
            Unit::Seconds,
            p.last_timestamp_seconds.clone(),
        );
        r.register(
            "poll_duration_ratio",
            "Last poll duration as a fraction of -frequency (alarm near 1)",
            p.duration_ratio.clone(),
        );
        r.register(
            "poll_sockets",
            "Sockets seen in the last poll cycle",
            p.sockets_last_poll.clone(),
        );
        let e = &self.envelope;
        r.register(
            "envelope_rows_flushed",
            "Records flushed into the destination queue",
            e.rows_flushed.clone(),
        );
        r.register(
            "envelopes_flushed",
            "Envelopes flushed into the destination queue",
            e.envelopes_flushed.clone(),
        );
        r.register_with_unit(
            "marshalled",
            "Bytes encoded, by format",
            Unit::Bytes,
            e.bytes_marshalled.clone(),
        );
        let s = &self.destination;
        r.register(
            "destination_sends",
            "Envelopes delivered to the destination",
            s.sends.clone(),
        );
        r.register_with_unit(
            "destination_sent",
            "Bytes delivered to the destination",
            Unit::Bytes,
            s.send_bytes.clone(),
        );
        r.register(
            "destination_failures",
            "Failed destination sends, by kind",
            s.failures.clone(),
        );
        r.register("destination_retries", "Destination send retries", s.retries.clone());
        r.register(
            "destination_queue_depth",
            "Envelopes waiting for the destination",
            s.queue_depth.clone(),
        );
        r.register(
            "destination_dropped_envelopes",
            "Envelopes dropped because the queue was full",
            s.dropped_envelopes.clone(),
        );
        r.register(
            "destination_dropped_rows",
            "Records dropped because the queue was full",
            s.dropped_rows.clone(),
        );
        let ns = &self.netns;
        r.register(
            "netns_active",
            "Network namespaces currently collected",
            ns.active.clone(),
        );
        r.register(
            "netns_discovered",
            "Network namespaces discovered",
            ns.discovered.clone(),
        );
        r.register("netns_removed", "Network namespaces that went away", ns.removed.clone());
        r.register(
            "netns_enter_failures",
            "Failures to enter a namespace or open its socket, by kind",
            ns.enter_failures.clone(),
        );
        r.register(
            "netns_dump_failures",
            "Failed dumps of a namespace, by kind",
            ns.dump_failures.clone(),
        );
        r.register(
            "netns_discovery_seconds",
            "Duration of namespace discovery passes (bind-mount directories and /proc)",
            ns.discovery_seconds.clone(),
        );
        r.register(
            "netns_proc_scans",
            "Scans of /proc for process-held namespaces, by kind (full, incremental)",
            ns.proc_scans.clone(),
        );
        r.register(
            "netns_proc_stat_calls",
            "stat calls on /proc/PID/ns/net (incremental scans stat only new processes)",
            ns.proc_stat_calls.clone(),
        );
        let pr = &self.profiling;
        r.register(
            "profile_requests",
            "On-demand /debug/pprof requests, by profile kind and outcome",
            pr.requests.clone(),
        );
        r.register(
            "pyroscope_uploads",
            "CPU profiles accepted by the Pyroscope server",
            pr.pyroscope_uploads.clone(),
        );
        r.register_with_unit(
            "pyroscope_uploaded",
            "Bytes of CPU profiles accepted by the Pyroscope server",
            Unit::Bytes,
            pr.pyroscope_upload_bytes.clone(),
        );
        r.register(
            "pyroscope_upload_failures",
            "Pyroscope uploads that failed, by kind",
            pr.pyroscope_failures.clone(),
        );
        r.register(
            "pyroscope_yields",
            "Pyroscope periods cut short to let an on-demand profile run",
            pr.pyroscope_yields.clone(),
        );
        r.register(
            "build",
            "The running build: version and optional features",
            Info::new(BuildLabel {
                version: env!("CARGO_PKG_VERSION"),
                heap_profiling: if cfg!(feature = "heap-profiling") {
                    "true"
                } else {
                    "false"
                },
            }),
        );
        self.process_registry
            .register_collector(Box::new(super::process::ProcessCollector::this_process()));
    }

    /// Folds a finished dump's decode counters into the metrics.
    pub fn record_decode(&self, stats: &crate::decode::DecodeStats) {
        self.decode.sockets.inc_by(stats.sockets);
        for (kind, count) in stats.skipped_attributes.iter().enumerate() {
            if *count > 0 {
                let attribute = crate::decode::inet_diag::attr::name(kind as u16);
                self.decode
                    .skipped_attributes
                    .get_or_create(&AttributeLabel { attribute })
                    .inc_by(*count);
            }
        }
    }

    /// Folds a finished dump's netlink counters into the metrics.
    pub fn record_dump(&self, s: &crate::kernel::DumpSummary) {
        self.record_reads(s);
        self.netlink.dumps.inc();
        if s.interrupted {
            self.netlink.dumps_interrupted.inc();
        }
    }

    /// Counts the receive work of a dump, finished or not.
    pub fn record_reads(&self, s: &crate::kernel::DumpSummary) {
        self.netlink.recv_calls.inc_by(s.recv_calls);
        self.netlink.recv_bytes.inc_by(s.bytes);
        self.netlink.messages.inc_by(s.messages);
        self.netlink.stale_messages.inc_by(s.stale_messages);
    }

    /// Counts a failed dump.
    pub fn record_dump_error(&self, e: &crate::kernel::DumpError) {
        if matches!(e, crate::kernel::DumpError::Truncated { .. }) {
            self.netlink.truncations.inc();
        }
        self.netlink.errors.get_or_create(&KindLabel { kind: e.kind() }).inc();
    }

    /// The OpenMetrics text exposition of both registries.
    pub fn encode_text(&self) -> String {
        use prometheus_client::encoding::text::{encode_eof, encode_registry};
        let mut out = String::with_capacity(16 * 1024);
        // Encoding into a String only fails if a metric's encoder does;
        // ours are built-in types and a collector that skips what it
        // cannot read.
        let _ = encode_registry(&mut out, &self.registry);
        let _ = encode_registry(&mut out, &self.process_registry);
        let _ = encode_eof(&mut out);
        out
    }

    /// The exposition in the format a scraper asked for.
    pub fn encode(&self, format: super::exposition::ExpositionFormat) -> String {
        let openmetrics = self.encode_text();
        match format {
            super::exposition::ExpositionFormat::OpenMetrics => openmetrics,
            super::exposition::ExpositionFormat::Prometheus => super::exposition::to_prometheus_text(&openmetrics),
        }
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
