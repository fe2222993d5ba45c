//! Every Prometheus metric of the daemon, declared once.
//!
//! Metrics are lock-free atomics (prometheus-client counters and gauges).
//! The hot path never touches them per socket: collectors keep plain
//! integers per dump and add them here once per dump. Counters only grow for
//! the life of the process (Prometheus handles restarts); gauges are set to
//! the current value. Names get the `xtcp2_` prefix and counters the
//! `_total` suffix at registration; `docs/observability.md` lists them.
//!
//! Each metric is one entry of `define_metrics!`: its help, field, kind,
//! labels, exposition name and unit. The group structs, their construction,
//! the registration (in declaration order) and [`METRICS`], the list the
//! docs table and the tests read, all come from that entry. This module
//! imports no stage of the pipeline: stages add their own counts to the
//! group they own (`DecodeStats::report_to`, `DumpSummary::report_to`, ...).
//!
//! Two registries: `registry` holds everything of ours under `xtcp2_`;
//! `process_registry` holds the standard `process_*` metrics, which are
//! unprefixed by convention and read from `/proc` at scrape time.

pub mod aggregate;
pub mod exposition;
pub mod process;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::{Registry, Unit};
use std::sync::atomic::AtomicU64;

/// The prefix of every family in [`Metrics::registry`].
pub(crate) const PREFIX: &str = "xtcp2";

/// The label names of a label set, known without encoding a sample.
pub(crate) trait LabelNames {
    const NAMES: &'static [&'static str];
}

/// Declares label sets: each is a struct of `&'static str` fields, one per
/// label, that encodes as Prometheus labels and knows its label names.
macro_rules! define_labels {
    ($( $(#[doc = $doc:literal])* $name:ident { $( $(#[doc = $field_doc:literal])* $field:ident ),* $(,)? } )*) => {
        $(
            $(#[doc = $doc])*
            #[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
            pub struct $name {
                $( $(#[doc = $field_doc])* pub $field: &'static str, )*
            }

            impl LabelNames for $name {
                const NAMES: &'static [&'static str] = &[$(stringify!($field)),*];
            }
        )*
    };
}

define_labels! {
    /// A label naming a kind of error.
    KindLabel { kind }
    /// A label naming a netlink attribute.
    AttributeLabel { attribute }
    /// A label naming an output format.
    FormatLabel { format }
    /// Labels of an on-demand profile request: which profile (`cpu`,
    /// `flamegraph`, `heap`) and what became of it (`ok`, `busy`, `error`,
    /// `unsupported`).
    ProfileRequestLabel { kind, outcome }
    /// A capability in one of a thread's capability sets: the set
    /// (`effective`, `permitted`, `inheritable`, `bounding`, `ambient`) and
    /// the kernel's lower-case name (`cap_net_admin`).
    CapabilityLabel { set, capability }
    /// A gRPC method (`Get`, `FlatRecords`, ...) and the status code it
    /// answered (`OK`, `INVALID_ARGUMENT`, ...).
    RpcLabel { method, code }
    /// The build's identity, as labels of `xtcp2_build_info`.
    BuildLabel {
        version,
        /// "true" when built with the `heap-profiling` feature.
        heap_profiling,
    }
}

/// One gRPC record stream: its method and a number unique for the
/// process's life. Its series are removed when the stream ends.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StreamLabel {
    pub method: &'static str,
    pub stream: String,
}

impl LabelNames for StreamLabel {
    const NAMES: &'static [&'static str] = &["method", "stream"];
}

impl BuildLabel {
    /// The identity of this binary.
    pub(crate) fn this_build() -> Self {
        BuildLabel {
            version: env!("CARGO_PKG_VERSION"),
            heap_profiling: if cfg!(feature = "heap-profiling") {
                "true"
            } else {
                "false"
            },
        }
    }
}

/// A metric's type, as the OpenMetrics `# TYPE` line names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MetricKind {
    Counter,
    Gauge,
    Histogram,
    Info,
}

impl MetricKind {
    pub fn as_str(self) -> &'static str {
        match self {
            MetricKind::Counter => "counter",
            MetricKind::Gauge => "gauge",
            MetricKind::Histogram => "histogram",
            MetricKind::Info => "info",
        }
    }
}

/// One declared metric, as `define_metrics!` describes it.
#[derive(Debug)]
pub struct MetricMeta {
    /// The field of [`Metrics`] holding the group (`netlink`).
    pub group: &'static str,
    /// The group struct's field holding the metric (`recv_bytes`).
    pub field: &'static str,
    /// The name it is registered under: no prefix, no unit (`netlink_recv`).
    pub name: &'static str,
    pub kind: MetricKind,
    /// The OpenMetrics unit, appended to the name (`bytes`).
    pub unit: Option<&'static str>,
    /// The help text as exposed, ending in a full stop.
    pub help: &'static str,
    /// The label names of every sample (none for plain metrics).
    pub labels: &'static [&'static str],
}

impl MetricMeta {
    /// The family name in the exposition (`xtcp2_netlink_recv_bytes`).
    pub fn family_name(&self) -> String {
        match self.unit {
            Some(unit) => format!("{PREFIX}_{}_{unit}", self.name),
            None => format!("{PREFIX}_{}", self.name),
        }
    }

    /// The help text as registered: prometheus-client appends the full stop.
    fn registered_help(&self) -> &'static str {
        self.help.strip_suffix('.').unwrap_or(self.help)
    }
}

/// What each metric kind of `define_metrics!` means: its field type, its
/// construction, its [`MetricKind`], its label names, what is registered and
/// its unit. A kind is an identifier, `<Label>` for families (and info), and
/// `(expression)` for what construction needs (histogram buckets, info
/// labels).
macro_rules! metric {
    (type counter) => { Counter };
    (type counter <$label:ty>) => { Family<$label, Counter> };
    (type gauge) => { Gauge };
    (type gauge <$label:ty>) => { Family<$label, Gauge> };
    (type float_gauge) => { Gauge<f64, AtomicU64> };
    (type histogram) => { Histogram };
    // Info is not Clone: the field holds the labels, the registry an Info of them.
    (type info <$label:ty>) => { $label };

    (new histogram ($buckets:expr)) => { Histogram::new($buckets) };
    (new info <$label:ty> ($labels:expr)) => { $labels };
    (new $kind:ident $(<$label:ty>)?) => { Default::default() };

    (kind counter $(<$label:ty>)?) => { MetricKind::Counter };
    (kind gauge $(<$label:ty>)?) => { MetricKind::Gauge };
    (kind float_gauge) => { MetricKind::Gauge };
    (kind histogram) => { MetricKind::Histogram };
    (kind info <$label:ty>) => { MetricKind::Info };

    (labels $kind:ident) => { &[] };
    (labels $kind:ident <$label:ty>) => { <$label as LabelNames>::NAMES };

    (registered info <$label:ty>, $value:expr) => { Info::new($value.clone()) };
    (registered $kind:ident $(<$label:ty>)?, $value:expr) => { $value.clone() };

    (unit) => { None };
    (unit bytes) => { Some(Unit::Bytes) };
    (unit seconds) => { Some(Unit::Seconds) };
    (unit_name) => { None };
    (unit_name $unit:ident) => { Some(stringify!($unit)) };
}

/// Declares every metric once. Each group becomes a struct, a field of
/// [`Metrics`] and a run of registrations; each entry within it is
///
/// ```text
/// /// Help text, one line, ending in a full stop.
/// field: kind<Label>(construction) = "registered_name" in unit;
/// ```
///
/// where `<Label>`, `(construction)` and `in unit` are optional (see
/// `metric!` for the kinds and units). Entries register in declaration
/// order, which is the order of the exposition and the docs table.
macro_rules! define_metrics {
    (
        $(#[doc = $doc:literal])*
        pub struct Metrics {
            $(
                $(#[doc = $group_doc:literal])*
                $group:ident: $Group:ident {
                    $(
                        #[doc = $help:literal]
                        $field:ident: $kind:ident $(<$label:ty>)? $(($init:expr))? = $name:literal $(in $unit:ident)?;
                    )*
                }
            )*
        }
    ) => {
        $(
            $(#[doc = $group_doc])*
            pub struct $Group {
                $(
                    #[doc = $help]
                    #[doc = ""]
                    #[doc = concat!("Registered as `", $name, "`", $(" in ", stringify!($unit),)? ".")]
                    pub $field: metric!(type $kind $(<$label>)?),
                )*
            }

            impl Default for $Group {
                fn default() -> Self {
                    $Group { $( $field: metric!(new $kind $(<$label>)? $(($init))?), )* }
                }
            }

            impl $Group {
                fn register(&self, registry: &mut Registry) {
                    $(
                        let help = metric_meta::$group::$field.registered_help();
                        let value = metric!(registered $kind $(<$label>)?, self.$field);
                        match metric!(unit $($unit)?) {
                            Some(unit) => registry.register_with_unit($name, help, unit, value),
                            None => registry.register($name, help, value),
                        }
                    )*
                }
            }
        )*

        #[allow(non_upper_case_globals)]
        mod metric_meta {
            $( pub mod $group {
                use super::super::*;
                $( pub static $field: MetricMeta = MetricMeta {
                    group: stringify!($group),
                    field: stringify!($field),
                    name: $name,
                    kind: metric!(kind $kind $(<$label>)?),
                    unit: metric!(unit_name $($unit)?),
                    help: $help.trim_ascii(),
                    labels: metric!(labels $kind $(<$label>)?),
                }; )*
            } )*
        }

        /// Every declared metric, in registration order. The `process_*`
        /// metrics are not here: a collector reads them at scrape time.
        pub static METRICS: &[&MetricMeta] = &[ $( $( &metric_meta::$group::$field, )* )* ];

        $(#[doc = $doc])*
        pub struct Metrics {
            $( $(#[doc = $group_doc])* pub $group: $Group, )*
            /// Every declared metric, under [`PREFIX`].
            pub registry: Registry,
            /// The standard `process_*` metrics, unprefixed.
            pub process_registry: Registry,
            /// `--aggregate-metrics`: the store the poller publishes to;
            /// `None` when off.
            pub aggregates: Option<std::sync::Arc<aggregate::AggregateStore>>,
            /// Its families, under [`PREFIX`], rendered after ours.
            aggregate_registry: Registry,
        }

        impl Metrics {
            /// The declared metrics, registered in declaration order.
            fn declared() -> Self {
                let mut m = Metrics {
                    $( $group: $Group::default(), )*
                    registry: Registry::with_prefix(PREFIX),
                    process_registry: Registry::default(),
                    aggregates: None,
                    aggregate_registry: Registry::with_prefix(PREFIX),
                };
                $( m.$group.register(&mut m.registry); )*
                m
            }
        }
    };
}

define_metrics! {
    /// All metrics; create one, share it behind an `Arc`.
    pub struct Metrics {
        /// The inet_diag dump conversation (`kernel`).
        netlink: NetlinkMetrics {
            /// recv() calls on inet_diag sockets.
            recv_calls: counter = "netlink_recv_calls";
            /// Bytes received from inet_diag sockets.
            recv_bytes: counter = "netlink_recv" in bytes;
            /// Netlink messages received.
            messages: counter = "netlink_messages";
            /// Datagrams larger than the receive buffer (data lost).
            truncations: counter = "netlink_truncations";
            /// Messages of an abandoned earlier dump, skipped.
            stale_messages: counter = "netlink_stale_messages";
            /// inet_diag dumps completed (one per family and namespace).
            dumps: counter = "netlink_dumps";
            /// Dumps the kernel flagged NLM_F_DUMP_INTR (table changed mid-dump).
            dumps_interrupted: counter = "netlink_dumps_interrupted";
            /// Dump failures by kind.
            errors: counter<KindLabel> = "netlink_errors";
        }
        /// Decoding inet_diag messages into records (`decode`).
        decode: DecodeMetrics {
            /// Sockets decoded into records.
            sockets: counter = "sockets_decoded";
            /// Messages that failed to decode, by kind.
            errors: counter<KindLabel> = "decode_errors";
            /// Attributes skipped (unknown or decoder off), by attribute.
            skipped_attributes: counter<AttributeLabel> = "decode_skipped_attributes";
        }
        /// Poll cycles (`poll`).
        poll: PollMetrics {
            /// Poll cycles completed.
            cycles: counter = "poll_cycles";
            // Buckets: 1 ms .. ~33 s.
            /// Duration of a poll cycle.
            duration_seconds: histogram(exponential_buckets(0.001, 2.0, 16)) = "poll_duration" in seconds;
            /// Unix time the last poll cycle finished.
            last_timestamp_seconds: float_gauge = "poll_last_timestamp" in seconds;
            /// Last poll duration as a fraction of -frequency (alarm near 1).
            duration_ratio: float_gauge = "poll_duration_ratio";
            /// Sockets seen in the last poll cycle.
            sockets_last_poll: gauge = "poll_sockets";
            /// Polls that did not collect every namespace whole: a dump cut short by --timeout or failed midway.
            partial: counter = "poll_partial";
            /// Sockets the last poll is estimated to have missed in its cut-short dumps (from the namespace's previous whole poll, or /proc/PID/net/sockstat).
            sockets_missed: gauge = "poll_sockets_missed";
        }
        /// Records batched into envelopes and encoded (`batch`, `format`).
        envelope: EnvelopeMetrics {
            /// Records flushed into the destination queue.
            rows_flushed: counter = "envelope_rows_flushed";
            /// Envelopes flushed into the destination queue.
            envelopes_flushed: counter = "envelopes_flushed";
            /// Bytes encoded, by format.
            bytes_marshalled: counter<FormatLabel> = "marshalled" in bytes;
        }
        /// Delivery to the destination (`sink`).
        destination: DestinationMetrics {
            /// Envelopes delivered to the destination.
            sends: counter = "destination_sends";
            /// Bytes delivered to the destination.
            send_bytes: counter = "destination_sent" in bytes;
            /// Failed destination sends, by kind.
            failures: counter<KindLabel> = "destination_failures";
            /// Destination send retries.
            retries: counter = "destination_retries";
            /// Envelopes waiting for the destination.
            queue_depth: gauge = "destination_queue_depth";
            /// Memory held by the envelopes waiting for the destination (bounded by --queue-bytes).
            queue_bytes: gauge = "destination_queue_bytes";
            /// Envelopes dropped because the queue was full.
            dropped_envelopes: counter = "destination_dropped_envelopes";
            /// Records dropped because the queue was full.
            dropped_rows: counter = "destination_dropped_rows";
            /// Records sent without a confirmation that anyone received them (nats --nats-mode core: every record; valkey --valkey-mode publish: the records of a PUBLISH no subscriber received): loss there goes unseen.
            unconfirmed_rows: counter = "destination_unconfirmed_rows";
            /// Messages handed to the destination's client library and not yet acknowledged (kafka: librdkafka's queue and in-flight requests).
            in_flight: gauge = "destination_in_flight";
            /// Time from handing the last delivered envelope to the destination's client library to its acknowledgement (kafka: the delivery report).
            last_delivery_latency: float_gauge = "destination_last_delivery_latency" in seconds;
            /// Producers replaced by a new one (kafka: after a fatal error, or a message that timed out, e.g. a broker that lost the producer id).
            producer_restarts: counter = "destination_producer_restarts";
            /// Schema registrations at start (kafka --kafka-schema-url), by outcome: ok, or the failure's kind.
            schema_registrations: counter<KindLabel> = "destination_schema_registrations";
        }
        /// Network namespaces (`netns`).
        netns: NetnsMetrics {
            /// Network namespaces currently collected.
            active: gauge = "netns_active";
            /// Network namespaces discovered.
            discovered: counter = "netns_discovered";
            /// Network namespaces that went away.
            removed: counter = "netns_removed";
            /// Failures to enter a namespace or open its socket, by kind.
            enter_failures: counter<KindLabel> = "netns_enter_failures";
            /// Failed dumps of a namespace, by kind.
            dump_failures: counter<KindLabel> = "netns_dump_failures";
            // Buckets: 0.1 ms .. ~3 s. Registered without a unit (the name
            // already ends in _seconds); adding one would change the exposition.
            /// Duration of namespace discovery passes (bind-mount directories and /proc).
            discovery_seconds: histogram(exponential_buckets(0.0001, 2.0, 16)) = "netns_discovery_seconds";
            /// Scans of /proc for process-held namespaces, by kind (full, incremental).
            proc_scans: counter<KindLabel> = "netns_proc_scans";
            /// stat calls on /proc/PID/ns/net (incremental scans stat only new processes).
            proc_stat_calls: counter = "netns_proc_stat_calls";
        }
        /// Workload attribution (`attribute`): cgroups and containers.
        attribution: AttributionMetrics {
            /// Walks of the cgroup2 hierarchy (at start, and when a socket's cgroup id is unknown, at most every 2 s).
            cgroup_walks: counter = "attribution_cgroup_walks";
            /// Socket cgroup ids the netlinker's snapshot did not know (each asks for a walk).
            cgroup_misses: counter = "attribution_cgroup_misses";
            /// cgroups in the index after the last walk.
            cgroups: gauge = "attribution_cgroups";
            /// Containers known by network namespace (--enrich-container).
            containers: gauge = "attribution_containers";
            /// Docker Engine events read.
            docker_events: counter = "attribution_docker_events";
            /// Attribution sources that could not be read, by kind (cgroup_mount, cgroup_walk, cgroup_cap, docker_connect, docker_http, docker_status, docker_timeout, docker_reply, nsid_open, nsid_socket, nsid_request, nsid_kernel, nsid_malformed, nic_routes, nic_ethtool, nic_subscribe, lldp_socket, lldp_exec, lldp_timeout, lldp_status, lldp_reply).
            source_failures: counter<KindLabel> = "attribution_source_failures";
        }
        /// Socket tracking (`track`): changed-only records, flow events and rates.
        track: TrackMetrics {
            /// Sockets tracked after the last poll, over every namespace.
            sockets: gauge = "track_sockets";
            /// Bytes of the tracking tables after the last poll.
            memory_bytes: gauge = "track_memory" in bytes;
            /// Records not sent because nothing in them changed (--emit changed).
            suppressed: counter = "track_records_suppressed";
            /// Flow opens sent (a socket's first sighting, --flow-events).
            opens: counter = "flow_opens";
            /// Flow closes sent, by where they came from (destroy: the kernel's notification; poll: gone from a whole poll without one).
            closes: counter<KindLabel> = "flow_closes";
            /// Destroy notifications lost to a full receive buffer (ENOBUFS); those sockets close from the poll difference.
            destroy_overruns: counter = "flow_destroy_overruns";
            /// Sockets first seen in TIME-WAIT: their opening was never seen (they lived between two polls).
            first_seen_time_wait: counter = "flow_first_seen_time_wait";
            /// Namespaces whose destroy notifications could not be joined, by kind.
            listener_failures: counter<KindLabel> = "flow_listener_failures";
        }
        /// On-demand profiles and the Pyroscope push.
        profiling: ProfilingMetrics {
            /// On-demand /debug/pprof requests, by profile kind and outcome.
            requests: counter<ProfileRequestLabel> = "profile_requests";
            /// CPU profiles accepted by the Pyroscope server.
            pyroscope_uploads: counter = "pyroscope_uploads";
            /// Bytes of CPU profiles accepted by the Pyroscope server.
            pyroscope_upload_bytes: counter = "pyroscope_uploaded" in bytes;
            /// Pyroscope uploads that failed, by kind.
            pyroscope_failures: counter<KindLabel> = "pyroscope_upload_failures";
            /// Pyroscope periods cut short to let an on-demand profile run.
            pyroscope_yields: counter = "pyroscope_yields";
        }
        /// The privileges kept after start-up (`observe::caps`).
        privileges: PrivilegeMetrics {
            /// Capabilities held after start-up, by set and capability (1: held; no sample: not held).
            capabilities: gauge<CapabilityLabel> = "capabilities";
            /// 1 when no_new_privs is set, so no exec can gain privileges.
            no_new_privs: gauge = "no_new_privs";
        }
        /// The HTTP listeners (`observe::server`).
        http: HttpMetrics {
            /// HTTP connections the listener cut short, by kind (peer_limit, total_limit, all_busy, header_timeout).
            connections_dropped: counter<KindLabel> = "http_connections_dropped";
        }
        /// The gRPC server (`grpc`).
        grpc: GrpcMetrics {
            /// gRPC calls answered, by method and status code (a stream counts when it opens).
            requests: counter<RpcLabel> = "grpc_requests";
            /// Record streams open now (FlatRecords and PollFlatRecords).
            stream_clients: gauge = "grpc_stream_clients";
            /// Records sent on each open record stream.
            streamed_records: counter<StreamLabel> = "grpc_stream_records";
            /// Records each open record stream lost by falling behind its buffer.
            dropped_records: counter<StreamLabel> = "grpc_stream_dropped_records";
            /// Records lost by all record streams, ended ones included.
            dropped_records_all: counter = "grpc_streams_dropped_records";
        }
        /// The allocator's heap after each poll's trim (`observe::heap`; glibc only, 0 elsewhere).
        heap: HeapMetrics {
            /// Bytes the daemon holds from the allocator.
            in_use_bytes: gauge = "heap_in_use" in bytes;
            /// Bytes free inside the allocator's arenas that it keeps after the trim.
            free_held_bytes: gauge = "heap_free_held" in bytes;
            /// Duration of the last trim (free pages given back to the kernel after a poll).
            last_trim_seconds: float_gauge = "heap_last_trim" in seconds;
        }
        /// What is running.
        build: BuildMetrics {
            /// The running build: version and optional features.
            info: info<BuildLabel>(BuildLabel::this_build()) = "build";
        }
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut m = Self::declared();
        // The process_* families are not declared above: a collector reads
        // them from /proc at scrape time, so there is no field to hold.
        m.process_registry
            .register_collector(Box::new(process::ProcessCollector::this_process()));
        m
    }

    /// Turns on the bounded aggregates (`--aggregate-metrics`): their
    /// families appear in the exposition from now on, filled by whoever
    /// publishes to the returned store (the poller). Idempotent.
    pub fn enable_aggregates(&mut self, max_series: usize) -> std::sync::Arc<aggregate::AggregateStore> {
        if let Some(store) = &self.aggregates {
            return store.clone();
        }
        let store = std::sync::Arc::new(aggregate::AggregateStore::new(max_series));
        self.aggregate_registry
            .register_collector(Box::new(aggregate::AggregateCollector(store.clone())));
        self.aggregates = Some(store.clone());
        store
    }

    /// The OpenMetrics text exposition of every registry.
    pub fn encode_text(&self) -> String {
        use prometheus_client::encoding::text::{encode_eof, encode_registry};
        let mut out = String::with_capacity(16 * 1024);
        // Encoding into a String only fails if a metric's encoder does;
        // ours are built-in types and a collector that skips what it
        // cannot read.
        let _ = encode_registry(&mut out, &self.registry);
        let _ = encode_registry(&mut out, &self.aggregate_registry);
        let _ = encode_registry(&mut out, &self.process_registry);
        let _ = encode_eof(&mut out);
        out
    }

    /// The exposition in the format a scraper asked for.
    pub fn encode(&self, format: exposition::ExpositionFormat) -> String {
        let openmetrics = self.encode_text();
        match format {
            exposition::ExpositionFormat::OpenMetrics => openmetrics,
            exposition::ExpositionFormat::Prometheus => exposition::to_prometheus_text(&openmetrics),
        }
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::encoding::text::encode_registry;

    /// A family as the exposition describes it, and the label names of each
    /// of its labelled samples (histogram `le` aside).
    #[derive(Debug, PartialEq)]
    struct Exposed {
        name: String,
        kind: String,
        unit: Option<String>,
        help: String,
        sample_labels: Vec<Vec<String>>,
    }

    fn exposed(registry: &Registry) -> Vec<Exposed> {
        let mut text = String::new();
        encode_registry(&mut text, registry).unwrap();
        let mut out: Vec<Exposed> = Vec::new();
        let mut help = None;
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# HELP ") {
                let (name, h) = rest.split_once(' ').unwrap();
                help = Some((name.to_string(), h.to_string()));
            } else if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').unwrap();
                let (help_name, help) = help.take().expect("HELP before TYPE");
                assert_eq!(help_name, name);
                out.push(Exposed {
                    name: name.to_string(),
                    kind: kind.to_string(),
                    unit: None,
                    help,
                    sample_labels: Vec::new(),
                });
            } else if let Some(rest) = line.strip_prefix("# UNIT ") {
                let (name, unit) = rest.split_once(' ').unwrap();
                let family = out.last_mut().unwrap();
                assert_eq!(family.name, name);
                family.unit = Some(unit.to_string());
            } else if let Some((_, labels)) = line.split_once('{') {
                // Our label values hold no commas, braces or equals signs.
                let (labels, _) = labels.split_once('}').unwrap();
                let names: Vec<String> = labels
                    .split(',')
                    .map(|pair| pair.split_once('=').unwrap().0.to_string())
                    .filter(|name| name != "le")
                    .collect();
                if !names.is_empty() {
                    out.last_mut().unwrap().sample_labels.push(names);
                }
            }
        }
        out
    }

    /// What the declaration says the exposition holds, with the label names
    /// of every sample still to be compared separately.
    fn declared() -> Vec<Exposed> {
        METRICS
            .iter()
            .map(|m| Exposed {
                name: m.family_name(),
                kind: m.kind.as_str().to_string(),
                unit: m.unit.map(str::to_string),
                help: m.help.to_string(),
                sample_labels: Vec::new(),
            })
            .collect()
    }

    /// Every declared metric is registered exactly once, in declaration
    /// order, with the declared name, type, unit and help, and nothing
    /// undeclared is registered under the prefix.
    #[test]
    fn every_declared_metric_is_registered_once_as_declared() {
        let metrics = Metrics::new();
        let mut exposed = exposed(&metrics.registry);
        for family in &mut exposed {
            family.sample_labels.clear();
        }
        assert_eq!(exposed, declared());
        let mut names: Vec<String> = METRICS.iter().map(|m| m.family_name()).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), METRICS.len(), "a family name is declared twice");
    }

    /// The declared label names are the ones samples carry, in order:
    /// `xtcp2_build_info` always has its sample; two families get one here.
    #[test]
    fn declared_labels_are_the_labels_samples_carry() {
        let metrics = Metrics::new();
        metrics
            .netlink
            .errors
            .get_or_create(&KindLabel { kind: "timeout" })
            .inc();
        metrics
            .profiling
            .requests
            .get_or_create(&ProfileRequestLabel {
                kind: "cpu",
                outcome: "ok",
            })
            .inc();
        let exposed = exposed(&metrics.registry);
        let mut checked = Vec::new();
        for (family, meta) in exposed.iter().zip(METRICS) {
            for labels in &family.sample_labels {
                assert_eq!(labels, meta.labels, "{}", family.name);
                checked.push(family.name.as_str());
            }
        }
        assert_eq!(
            checked,
            ["xtcp2_netlink_errors", "xtcp2_profile_requests", "xtcp2_build"]
        );
    }

    /// Each help text is one sentence ending in a full stop (registration
    /// strips it and prometheus-client adds it back), and each metric has
    /// its own field.
    #[test]
    fn declarations_are_well_formed() {
        for m in METRICS {
            assert!(
                m.help.ends_with('.') && !m.help.ends_with(".."),
                "{}: {:?}",
                m.name,
                m.help
            );
            assert_eq!(m.help.trim(), m.help, "{}", m.name);
            let same_field = METRICS.iter().filter(|o| (o.group, o.field) == (m.group, m.field));
            assert_eq!(same_field.count(), 1, "{}.{}", m.group, m.field);
        }
    }
}
