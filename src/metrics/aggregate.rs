//! Bounded aggregates of the sockets themselves in `/metrics`
//! (`--aggregate-metrics`): per network namespace and workload (pod,
//! container), sockets by state, histograms of smoothed RTT and of
//! retransmitted segments, and the bytes acked and received.
//!
//! Per-socket series would give Prometheus one series per connection, which
//! no server holds; these are per label set (namespace x pod x container),
//! and the number of label sets is capped (`--aggregate-max-series`): label
//! sets beyond the cap are folded into one whose labels are all `other`, and
//! the sockets folded are counted (`xtcp2_aggregate_folded_sockets_total`).
//!
//! How it is fed: each netlinker owns a [`PollAggregate`] and offers it every
//! record it has just decoded ([`PollAggregate::observe`]: array increments
//! in an entry found by a comparison with the last one, or a hash lookup; no
//! allocation once a label set has been seen in an earlier poll). When the
//! poll is over, the poll thread merges the netlinkers' aggregates, applies
//! the cap and swaps the result into the [`AggregateStore`] that the scrape
//! renders ([`AggregateStore::publish`]). Every family except the folded
//! counter describes the LAST completed poll (replaced, not accumulated), so
//! the series of a namespace that went away disappear with the next poll.
//!
//! Bytes acked and received are gauges of the sum over the poll's sockets,
//! not counters: a counter would need a per-socket memory of what was
//! already added (a map of every socket, the cost this module exists to
//! avoid), and would still go backwards whenever a busy socket closes. A
//! sum over the live sockets is what the kernel says now; its `deriv()` is
//! a rate for long-lived connections.
//!
//! This module reads records but imports no stage of the pipeline; the
//! collector calls `observe`, the poller calls `publish`.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, NoLabelSet};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Unit;

use super::{MetricKind, MetricMeta};
use crate::record::{tcp_state_name, Record};

/// The kernel's TCP_LISTEN: a listener has no peer, so no RTT and no
/// retransmissions of its own; it would only pile up zeros in the histograms.
const TCP_LISTEN: u8 = 10;

/// State numbers kept apart (`include/net/tcp_states.h` has 13, 0..=13 with
/// BOUND_INACTIVE); anything larger is counted as 15, shown as `UNKNOWN`.
const STATE_SLOTS: usize = 16;

/// Upper bounds of the smoothed-RTT histogram, microseconds (`tcpi_rtt`'s
/// unit; exposed in seconds). From loopback and same-rack paths (tens of
/// µs), through a data centre (100 µs - 1 ms), a region (1 - 10 ms), a
/// continent (10 - 100 ms), intercontinental paths (100 - 300 ms), to
/// satellite links and bufferbloat (up to seconds): about two buckets a
/// decade, 17 buckets with +Inf.
pub const RTT_BOUNDS_US: [u64; 16] = [
    25, 50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000, 1_000_000, 2_500_000,
];
/// Upper bounds of the retransmitted-segments histogram (`tcpi_total_retrans`
/// over the socket's life): 0 is most sockets on a healthy network, then
/// powers of two.
pub const RETRANS_BOUNDS: [u64; 11] = [0, 1, 2, 4, 8, 16, 32, 64, 128, 256, 1_024];

/// The label value of the folded label set, for every label.
pub const OTHER: &str = "other";

/// A histogram's per-bucket (not cumulative) counts, the last one +Inf.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Counts<const N: usize> {
    buckets: [u64; N],
    sum: u64,
    count: u64,
}

impl<const N: usize> Default for Counts<N> {
    fn default() -> Self {
        Counts {
            buckets: [0; N],
            sum: 0,
            count: 0,
        }
    }
}

impl<const N: usize> Counts<N> {
    /// `bounds` has N-1 entries: bucket i counts values <= bounds[i].
    #[inline]
    fn observe(&mut self, bounds: &[u64], value: u64) {
        let i = bounds.partition_point(|b| *b < value).min(N - 1);
        self.buckets[i] += 1;
        self.sum = self.sum.saturating_add(value);
        self.count += 1;
    }

    fn add(&mut self, other: &Self) {
        for (a, b) in self.buckets.iter_mut().zip(other.buckets) {
            *a += b;
        }
        self.sum = self.sum.saturating_add(other.sum);
        self.count += other.count;
    }

    /// (upper bound, count) pairs as prometheus-client wants them, the
    /// last bound `f64::MAX` (written `+Inf`); dividing by `per_unit` turns
    /// our unit into the exposed one (a division, not a multiplication by
    /// 1e-6, so 25 µs is written 0.000025 rather than 0.000024999999999999999).
    fn buckets(&self, bounds: &[u64], per_unit: f64) -> Vec<(f64, u64)> {
        bounds
            .iter()
            .map(|b| *b as f64 / per_unit)
            .chain(std::iter::once(f64::MAX))
            .zip(self.buckets)
            .collect()
    }
}

/// What one label set holds for one poll.
#[derive(Debug, Clone, Default, PartialEq)]
struct Series {
    sockets: u64,
    by_state: [u64; STATE_SLOTS],
    rtt_us: Counts<17>,
    retrans: Counts<12>,
    bytes_acked: u64,
    bytes_received: u64,
}

impl Series {
    #[inline]
    fn observe(&mut self, record: &Record) {
        self.sockets += 1;
        let state = record.idiag_state.unwrap_or(0);
        self.by_state[usize::from(state).min(STATE_SLOTS - 1)] += 1;
        if state != TCP_LISTEN {
            if let Some(rtt) = record.tcpi_rtt {
                self.rtt_us.observe(&RTT_BOUNDS_US, u64::from(rtt));
            }
            if let Some(retrans) = record.tcpi_total_retrans {
                self.retrans.observe(&RETRANS_BOUNDS, u64::from(retrans));
            }
        }
        self.bytes_acked = self.bytes_acked.saturating_add(record.tcpi_bytes_acked.unwrap_or(0));
        self.bytes_received = self
            .bytes_received
            .saturating_add(record.tcpi_bytes_received.unwrap_or(0));
    }

    fn add(&mut self, other: &Series) {
        self.sockets += other.sockets;
        for (a, b) in self.by_state.iter_mut().zip(other.by_state) {
            *a += b;
        }
        self.rtt_us.add(&other.rtt_us);
        self.retrans.add(&other.retrans);
        self.bytes_acked = self.bytes_acked.saturating_add(other.bytes_acked);
        self.bytes_received = self.bytes_received.saturating_add(other.bytes_received);
    }
}

/// A label set as a netlinker sees it: the namespace by inode (its name
/// rides along for the label), the workload by the record's own strings
/// (reference-counted, so a key costs no allocation).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct SeriesKey {
    netns_inode: Option<u64>,
    pod_uid: Option<Arc<str>>,
    container_id: Option<Arc<str>>,
}

impl SeriesKey {
    fn of(record: &Record) -> Self {
        SeriesKey {
            netns_inode: record.netns_inode,
            pod_uid: record.pod_uid.clone(),
            container_id: record.container_id.clone(),
        }
    }

    /// Whether `record` belongs here, without building a key: consecutive
    /// records mostly share the namespace and workload.
    #[inline]
    fn matches(&self, record: &Record) -> bool {
        fn same(a: &Option<Arc<str>>, b: &Option<Arc<str>>) -> bool {
            match (a, b) {
                (None, None) => true,
                (Some(a), Some(b)) => Arc::ptr_eq(a, b) || a == b,
                _ => false,
            }
        }
        self.netns_inode == record.netns_inode
            && same(&self.pod_uid, &record.pod_uid)
            && same(&self.container_id, &record.container_id)
    }
}

/// One netlinker's aggregate of the poll in progress, bounded by the cap:
/// a label set beyond it goes to the netlinker's `other` at once.
#[derive(Debug)]
pub struct PollAggregate {
    max_series: usize,
    index: HashMap<SeriesKey, usize>,
    /// The label sets in first-seen order, with the namespace's name.
    entries: Vec<(SeriesKey, Option<Arc<str>>, Series)>,
    /// The entry of the last record.
    last: Option<usize>,
    other: Series,
}

impl PollAggregate {
    pub fn new(max_series: usize) -> Self {
        PollAggregate {
            max_series,
            index: HashMap::new(),
            entries: Vec::new(),
            last: None,
            other: Series::default(),
        }
    }

    /// Forgets the previous poll (keeping the memory) and reserves the
    /// label sets the scrape shows now, so a netlinker that meets new ones
    /// first cannot fold them away (entries left empty are dropped at
    /// [`AggregateStore::publish`]).
    fn start_poll(&mut self, shown: &[SeriesKey]) {
        self.index.clear();
        self.entries.clear();
        self.last = None;
        self.other = Series::default();
        for key in shown.iter().take(self.max_series) {
            self.index.insert(key.clone(), self.entries.len());
            self.entries.push((key.clone(), None, Series::default()));
        }
    }

    /// Adds one decoded record.
    #[inline]
    pub fn observe(&mut self, record: &Record) {
        if let Some(i) = self.last {
            if let Some((key, _, series)) = self.entries.get_mut(i) {
                if key.matches(record) {
                    series.observe(record);
                    return;
                }
            }
        }
        let key = SeriesKey::of(record);
        let slot = match self.index.get(&key) {
            Some(&i) => Some(i),
            None if self.entries.len() < self.max_series => {
                let i = self.entries.len();
                self.entries
                    .push((key.clone(), record.netns_name.clone(), Series::default()));
                self.index.insert(key, i);
                Some(i)
            }
            None => None,
        };
        self.last = slot;
        match slot.and_then(|i| self.entries.get_mut(i)) {
            Some((_, name, series)) => {
                if series.sockets == 0 {
                    // A reserved entry's name is learnt from its first record.
                    *name = record.netns_name.clone();
                }
                series.observe(record)
            }
            None => self.other.observe(record),
        }
    }
}

/// A label set as exposed: `netns` is the namespace's name (bind mount or
/// Docker sandbox) or, for a namespace without one, its inode; the
/// workload labels are empty when the record has no attribution.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SeriesLabels {
    pub netns: String,
    pub pod_uid: String,
    pub container_id: String,
}

impl SeriesLabels {
    fn of(key: &SeriesKey, netns_name: Option<&str>) -> Self {
        let netns = match (netns_name, key.netns_inode) {
            (Some(name), _) => name.to_string(),
            (None, Some(inode)) => inode.to_string(),
            (None, None) => String::new(),
        };
        SeriesLabels {
            netns,
            pod_uid: key.pod_uid.as_deref().unwrap_or("").to_string(),
            container_id: key.container_id.as_deref().unwrap_or("").to_string(),
        }
    }

    fn other() -> Self {
        SeriesLabels {
            netns: OTHER.into(),
            pod_uid: OTHER.into(),
            container_id: OTHER.into(),
        }
    }

    fn as_array(&self) -> [(&'static str, &str); 3] {
        [
            ("netns", &self.netns),
            ("pod_uid", &self.pod_uid),
            ("container_id", &self.container_id),
        ]
    }
}

/// What the scrape renders: the last completed poll.
#[derive(Debug, Default)]
struct Snapshot {
    series: Vec<(SeriesLabels, Series)>,
    /// The folded label sets, when there were any.
    other: Option<Series>,
}

/// The aggregates `/metrics` shows, replaced at the end of every poll.
#[derive(Debug)]
pub struct AggregateStore {
    max_series: usize,
    current: Mutex<Arc<Snapshot>>,
    /// The netlinkers' keys of the label sets in `current` (reserved in
    /// every netlinker's aggregate at the start of a poll).
    shown: Mutex<Arc<Vec<SeriesKey>>>,
    /// Sockets folded into `other`, over the life of the process.
    folded_sockets: AtomicU64,
}

impl AggregateStore {
    pub fn new(max_series: usize) -> Self {
        AggregateStore {
            max_series,
            current: Mutex::new(Arc::new(Snapshot::default())),
            shown: Mutex::new(Arc::new(Vec::new())),
            folded_sockets: AtomicU64::new(0),
        }
    }

    /// A netlinker's aggregate, capped like the store.
    pub fn poll_aggregate(&self) -> PollAggregate {
        PollAggregate::new(self.max_series)
    }

    /// Readies a netlinker's aggregate for a new poll.
    pub fn start_poll(&self, aggregate: &mut PollAggregate) {
        let shown = self.shown.lock().unwrap_or_else(|p| p.into_inner()).clone();
        aggregate.start_poll(&shown);
    }

    fn snapshot(&self) -> Arc<Snapshot> {
        self.current.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Merges the netlinkers' aggregates of one completed poll, applies the
    /// cap and makes the result what the scrape shows. Label sets already
    /// shown keep their place when the cap is reached, so a new namespace
    /// cannot push an old one into `other` (series stay stable).
    pub fn publish<'a>(&self, polls: impl IntoIterator<Item = &'a PollAggregate>) {
        let previous = self.snapshot();
        let mut merged: HashMap<SeriesLabels, (SeriesKey, Series)> = HashMap::new();
        let mut other = Series::default();
        let mut any_folded = false;
        for poll in polls {
            for (key, name, series) in poll.entries.iter().filter(|(_, _, s)| s.sockets > 0) {
                merged
                    .entry(SeriesLabels::of(key, name.as_deref()))
                    .or_insert_with(|| (key.clone(), Series::default()))
                    .1
                    .add(series);
            }
            if poll.other.sockets > 0 {
                any_folded = true;
                other.add(&poll.other);
            }
        }
        let mut kept: Vec<(SeriesLabels, (SeriesKey, Series))> = merged.into_iter().collect();
        if kept.len() > self.max_series {
            let shown: HashSet<&SeriesLabels> = previous.series.iter().map(|(l, _)| l).collect();
            kept.sort_by(|(a, _), (b, _)| (!shown.contains(a), a).cmp(&(!shown.contains(b), b)));
            for (_, (_, folded)) in kept.drain(self.max_series..) {
                any_folded = true;
                other.add(&folded);
            }
        }
        kept.sort_by(|(a, _), (b, _)| a.cmp(b));
        let keys: Vec<SeriesKey> = kept.iter().map(|(_, (k, _))| k.clone()).collect();
        let series = kept.into_iter().map(|(l, (_, s))| (l, s)).collect();
        self.folded_sockets.fetch_add(other.sockets, Ordering::Relaxed);
        let next = Arc::new(Snapshot {
            series,
            other: any_folded.then_some(other),
        });
        *self.current.lock().unwrap_or_else(|p| p.into_inner()) = next;
        *self.shown.lock().unwrap_or_else(|p| p.into_inner()) = Arc::new(keys);
    }
}

/// The collector the registry calls at every scrape.
#[derive(Debug)]
pub(crate) struct AggregateCollector(pub Arc<AggregateStore>);

/// Declares the families (for the docs table and the tests) next to the
/// names the collector encodes with.
macro_rules! aggregate_meta {
    ($( $ident:ident: $kind:ident $name:literal $unit:expr, [$($label:literal),*], $help:literal; )*) => {
        #[allow(non_upper_case_globals)]
        mod meta {
            use super::*;
            $( pub(super) static $ident: MetricMeta = MetricMeta {
                group: "aggregate",
                field: stringify!($ident),
                name: $name,
                kind: MetricKind::$kind,
                unit: $unit,
                help: $help,
                labels: &[$($label),*],
            }; )*
        }
        /// The families of `--aggregate-metrics`, in exposition order (not
        /// in [`super::METRICS`]: they exist only when the flag is on).
        pub static AGGREGATE_METRICS: &[&MetricMeta] = &[$(&meta::$ident),*];
    };
}

aggregate_meta! {
    sockets: Gauge "aggregate_sockets" None, ["netns", "pod_uid", "container_id", "state"],
        "Sockets of the last completed poll by namespace, workload and TCP state (a state without sockets has no series).";
    rtt: Histogram "aggregate_rtt" Some("seconds"), ["netns", "pod_uid", "container_id"],
        "Smoothed RTT (tcpi_rtt) of the last completed poll's sockets by namespace and workload, listeners excluded.";
    retrans: Histogram "aggregate_retransmitted_segments" None, ["netns", "pod_uid", "container_id"],
        "Segments retransmitted over each socket's life (tcpi_total_retrans) in the last completed poll, listeners excluded.";
    acked: Gauge "aggregate_acked" Some("bytes"), ["netns", "pod_uid", "container_id"],
        "Sum of tcpi_bytes_acked over the last completed poll's sockets by namespace and workload (a gauge: closed sockets leave the sum).";
    received: Gauge "aggregate_received" Some("bytes"), ["netns", "pod_uid", "container_id"],
        "Sum of tcpi_bytes_received over the last completed poll's sockets by namespace and workload (a gauge: closed sockets leave the sum).";
    series: Gauge "aggregate_series" None, [],
        "Label sets of the last completed poll, the folded other set included (at most --aggregate-max-series plus one).";
    folded: Counter "aggregate_folded_sockets" None, [],
        "Sockets counted under the other label set because --aggregate-max-series label sets were already in use.";
}

fn unit_of(meta: &MetricMeta) -> Option<Unit> {
    match meta.unit {
        Some("seconds") => Some(Unit::Seconds),
        Some("bytes") => Some(Unit::Bytes),
        _ => None,
    }
}

fn metric_type(kind: MetricKind) -> MetricType {
    match kind {
        MetricKind::Counter => MetricType::Counter,
        MetricKind::Gauge => MetricType::Gauge,
        MetricKind::Histogram => MetricType::Histogram,
        MetricKind::Info => MetricType::Info,
    }
}

impl Collector for AggregateCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let snapshot = self.0.snapshot();
        let other_labels = SeriesLabels::other();
        let all: Vec<(&SeriesLabels, &Series)> = snapshot
            .series
            .iter()
            .map(|(l, s)| (l, s))
            .chain(snapshot.other.as_ref().map(|s| (&other_labels, s)))
            .collect();
        for meta in AGGREGATE_METRICS {
            let unit = unit_of(meta);
            // A collector's help is written as given (registration is what
            // appends the full stop to the declared metrics' help).
            let mut family = encoder.encode_descriptor(meta.name, meta.help, unit.as_ref(), metric_type(meta.kind))?;
            match meta.field {
                "sockets" => {
                    for (labels, series) in &all {
                        for (state, &n) in series.by_state.iter().enumerate() {
                            if n == 0 {
                                continue;
                            }
                            let [a, b, c] = labels.as_array();
                            let set = [a, b, c, ("state", tcp_state_name(state as u64))];
                            ConstGauge::new(n as i64).encode(family.encode_family(&set)?)?;
                        }
                    }
                }
                "rtt" => {
                    for (labels, series) in &all {
                        let h = &series.rtt_us;
                        family
                            .encode_family(&labels.as_array())?
                            .encode_histogram::<NoLabelSet>(
                                h.sum as f64 / 1e6,
                                h.count,
                                &h.buckets(&RTT_BOUNDS_US, 1e6),
                                None,
                            )?;
                    }
                }
                "retrans" => {
                    for (labels, series) in &all {
                        let h = &series.retrans;
                        family
                            .encode_family(&labels.as_array())?
                            .encode_histogram::<NoLabelSet>(
                                h.sum as f64,
                                h.count,
                                &h.buckets(&RETRANS_BOUNDS, 1.0),
                                None,
                            )?;
                    }
                }
                "acked" | "received" => {
                    for (labels, series) in &all {
                        let v = if meta.field == "acked" {
                            series.bytes_acked
                        } else {
                            series.bytes_received
                        };
                        // A sum of u64 byte counts can exceed i64; f64 holds any.
                        ConstGauge::new(v as f64).encode(family.encode_family(&labels.as_array())?)?;
                    }
                }
                "series" => ConstGauge::new(all.len() as i64).encode(family)?,
                "folded" => ConstCounter::new(self.0.folded_sockets.load(Ordering::Relaxed)).encode(family)?,
                _ => {}
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(inode: u64, state: u8, rtt_us: u32, retrans: u32, pod: Option<&Arc<str>>) -> Record {
        Record {
            netns_inode: Some(inode),
            idiag_state: Some(state),
            tcpi_rtt: Some(rtt_us),
            tcpi_total_retrans: Some(retrans),
            tcpi_bytes_acked: Some(1_000),
            tcpi_bytes_received: Some(10),
            pod_uid: pod.cloned(),
            ..Record::default()
        }
    }

    /// A value equal to a bound is in that bound's bucket; beyond the last
    /// bound is +Inf.
    #[test]
    fn histogram_buckets_are_upper_inclusive() {
        let mut c = Counts::<17>::default();
        for v in [0, 25, 26, 2_500_000, 2_500_001] {
            c.observe(&RTT_BOUNDS_US, v);
        }
        assert_eq!(c.buckets[0], 2);
        assert_eq!(c.buckets[1], 1);
        assert_eq!(c.buckets[15], 1);
        assert_eq!(c.buckets[16], 1);
        assert_eq!(c.count, 5);
        assert_eq!(c.sum, 5_000_052);
    }

    /// Listeners count as sockets by state but stay out of the histograms;
    /// bytes are summed over every socket.
    #[test]
    fn listeners_are_counted_but_not_observed() {
        let mut a = PollAggregate::new(10);
        a.observe(&record(1, 1, 100, 2, None));
        a.observe(&record(1, TCP_LISTEN, 0, 0, None));
        let (_, _, s) = &a.entries[0];
        assert_eq!(s.sockets, 2);
        assert_eq!(s.by_state[1], 1);
        assert_eq!(s.by_state[10], 1);
        assert_eq!(s.rtt_us.count, 1);
        assert_eq!(s.retrans.count, 1);
        assert_eq!(s.retrans.sum, 2);
        assert_eq!(s.bytes_acked, 2_000);
    }

    /// Beyond the cap, label sets go to `other`, their sockets are counted
    /// as folded, and the number of label sets never exceeds cap + 1.
    #[test]
    fn the_cap_folds_into_other_and_counts() {
        let store = AggregateStore::new(3);
        let mut a = store.poll_aggregate();
        let mut b = store.poll_aggregate();
        for inode in 1..=4 {
            a.observe(&record(inode, 1, 100, 0, None));
        }
        for inode in 3..=6 {
            b.observe(&record(inode, 1, 100, 0, None));
            b.observe(&record(inode, 1, 100, 0, None));
        }
        store.publish([&a, &b]);
        let snap = store.snapshot();
        assert_eq!(snap.series.len(), 3);
        let kept: u64 = snap.series.iter().map(|(_, s)| s.sockets).sum();
        let other = snap.other.as_ref().expect("folded").sockets;
        assert_eq!(kept + other, 12);
        assert_eq!(store.folded_sockets.load(Ordering::Relaxed), other);
        // The next poll keeps the label sets already shown.
        let shown: Vec<SeriesLabels> = snap.series.iter().map(|(l, _)| l.clone()).collect();
        store.start_poll(&mut a);
        for inode in [9, 8, 7, 6, 5, 4, 3, 2, 1] {
            a.observe(&record(inode, 1, 100, 0, None));
        }
        store.publish([&a]);
        let again: Vec<SeriesLabels> = store.snapshot().series.iter().map(|(l, _)| l.clone()).collect();
        assert_eq!(again, shown);
    }

    /// A namespace absent from a poll has no series after it.
    #[test]
    fn vanished_namespaces_leave_no_series() {
        let store = AggregateStore::new(10);
        let mut a = store.poll_aggregate();
        let pod: Arc<str> = Arc::from("pod-a");
        a.observe(&record(1, 1, 100, 0, Some(&pod)));
        a.observe(&record(2, 1, 100, 0, None));
        store.publish([&a]);
        assert_eq!(store.snapshot().series.len(), 2);
        store.start_poll(&mut a);
        a.observe(&record(2, 1, 100, 0, None));
        store.publish([&a]);
        let snap = store.snapshot();
        assert_eq!(snap.series.len(), 1);
        assert_eq!(snap.series[0].0.netns, "2");
        assert!(snap.other.is_none());
    }
}
