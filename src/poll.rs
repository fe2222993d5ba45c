//! The poll loop: every `-frequency`, discover namespaces, dump them all
//! with a bounded pool of `-netlinkers` threads, and flush the envelopes.
//!
//! Runs on its own (blocking) thread, never on a tokio worker, because dumps
//! block in recv(2). Between polls it sleeps on a channel, so a namespace
//! change (inotify) or shutdown wakes it at once.

use std::hash::{BuildHasher, Hasher};
use std::sync::mpsc::{Receiver, RecvTimeoutError, TryRecvError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;

use crate::batch::{CountOnly, EnvelopeBuilder, EnvelopeQueue};
use crate::collect::{Collector, DumpPlan};
use crate::config::Config;
use crate::control::{Cadence, Due, PollCause, PollControl};
use crate::metrics::{KindLabel, Metrics};
use crate::netns::watch::Wake;
use crate::netns::{Discovery, DiscoveryConfig, NetnsEntry, NetnsRegistry};
use crate::tap::{RecordTap, TapWriter};

/// What one poll cycle did, reported to the caller (readiness, tests).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PollReport {
    pub seq: u64,
    pub namespaces: usize,
    /// Namespaces not collected whole: not entered, or cut short.
    pub namespaces_failed: usize,
    /// Namespaces entered whose dump did not finish (their records so far
    /// were kept): the poll is incomplete.
    pub namespaces_cut_short: usize,
    /// Sockets the cut-short dumps are estimated to have missed (0 when
    /// none was cut short or nothing is known of them).
    pub sockets_missed: u64,
    pub records: u64,
    pub duration: Duration,
}

impl PollReport {
    /// Whether some namespace's dump was cut short.
    pub fn is_incomplete(&self) -> bool {
        self.namespaces_cut_short > 0
    }
}

/// One namespace in one poll.
enum NamespaceOutcome {
    Whole(u64),
    /// Entered, but its dump did not finish.
    CutShort {
        records: u64,
        /// Estimated sockets the dump missed.
        missed: Option<u64>,
        /// What happened, for the poll's error line.
        what: String,
    },
    /// Not entered (gone since discovery, or refused): counted and logged
    /// by the entry; not a cut-short dump.
    Unreachable,
}

/// What one netlinker thread did in one poll.
#[derive(Default)]
struct WorkerTally {
    records: u64,
    failed: usize,
    cut_short: usize,
    missed: u64,
    first_cut: Option<String>,
}

impl WorkerTally {
    fn add(&mut self, outcome: NamespaceOutcome) {
        match outcome {
            NamespaceOutcome::Whole(n) => self.records += n,
            NamespaceOutcome::CutShort { records, missed, what } => {
                self.records += records;
                self.failed += 1;
                self.cut_short += 1;
                self.missed += missed.unwrap_or(0);
                self.first_cut.get_or_insert(what);
            }
            NamespaceOutcome::Unreachable => self.failed += 1,
        }
    }

    fn merge(&mut self, other: WorkerTally) {
        self.records += other.records;
        self.failed += other.failed;
        self.cut_short += other.cut_short;
        self.missed += other.missed;
        if self.first_cut.is_none() {
            self.first_cut = other.first_cut;
        }
    }
}

/// An incomplete poll is an error worth a page, but one per poll on a host
/// that is always too big for its deadline would flood the log: once a
/// minute, with the count of the suppressed (the metric counts all).
static INCOMPLETE_POLL_LOG: crate::log_throttle::LogThrottle =
    crate::log_throttle::LogThrottle::new(Duration::from_secs(60));

pub struct Poller {
    config: Config,
    metrics: Arc<Metrics>,
    discovery: Discovery,
    registry: NetnsRegistry,
    collectors: Vec<Collector>,
    seq: u64,
    /// When namespaces were last rediscovered (`--reconcile-frequency`).
    last_discovery: Option<Instant>,
    /// The live period and deadline, and requested polls (gRPC `ConfigService`).
    control: Arc<PollControl>,
    /// The live record streams (gRPC `XTCPFlatRecordService`).
    tap: Option<Arc<RecordTap>>,
}

/// What a [`Poller`] is driven by beyond its configuration.
#[derive(Default)]
pub struct PollerLinks {
    /// Runtime control; `None`: the configuration's cadence, no requests.
    pub control: Option<Arc<PollControl>>,
    pub tap: Option<Arc<RecordTap>>,
}

impl Poller {
    pub fn new(config: Config, metrics: Arc<Metrics>, queue: Arc<EnvelopeQueue>) -> anyhow::Result<Self> {
        Self::with_links(config, metrics, queue, PollerLinks::default())
    }

    pub fn with_links(
        config: Config,
        metrics: Arc<Metrics>,
        queue: Arc<EnvelopeQueue>,
        links: PollerLinks,
    ) -> anyhow::Result<Self> {
        let plan = DumpPlan {
            states: config.poll.states,
            filter: config.poll.filter.clone(),
            deserializers: config.output.deserializers,
            modulus: config.poll.modulus,
            recv_buffer: config.poll.recv_buffer,
            track: config.poll.track,
        };
        let output = &config.output;
        let mut collectors = Vec::with_capacity(config.poll.netlinkers);
        // Tried once per collector until it fails, so a refusal is logged once.
        let mut io_uring = config.poll.io_uring;
        for _ in 0..config.poll.netlinkers {
            let encoder: Box<dyn crate::format::Encoder> = if config.delivery.destination.discards_records() {
                Box::new(CountOnly(output.format.format()))
            } else {
                output.format.encoder()
            };
            let builder = EnvelopeBuilder::new(
                encoder,
                config.delivery.flush,
                queue.clone(),
                config.observe.hostname.clone(),
            )
            .per_namespace(config.delivery.destination.envelope_per_namespace());
            let mut collector = Collector::new(plan.clone(), output.stamps.clone(), builder, metrics.clone());
            if let Some(uring) = io_uring {
                if !collector.use_io_uring(uring.recv_batch, uring.cqe_batch) {
                    io_uring = None;
                }
            }
            if let Some(capture) = &config.poll.capture {
                let path = capture.dir.join(format!(
                    "xtcp2-{}-netlinker{}.pcap",
                    std::process::id(),
                    collectors.len()
                ));
                let file = crate::decode::capture::PcapCapture::create(&path, capture.datagrams_per_netlinker)
                    .with_context(|| format!("--write-files: creating {}", path.display()))?;
                tracing::info!(path = %path.display(), datagrams = capture.datagrams_per_netlinker, "saving raw netlink replies");
                collector.capture_to(Box::new(file));
            }
            if let Some(tap) = &links.tap {
                collector.tap_to(TapWriter::new(tap.clone()));
            }
            if let Some(store) = &metrics.aggregates {
                collector.aggregate = Some(store.poll_aggregate());
            }
            collectors.push(collector);
        }
        Ok(Poller {
            discovery: Discovery::new(
                DiscoveryConfig::new(config.netns.dirs.clone(), config.netns.proc_scan)
                    .with_proc_rescan_interval(config.netns.proc_rescan),
            ),
            metrics,
            registry: NetnsRegistry::new().with_nsids(config.netns.populate_nsid),
            collectors,
            seq: 0,
            last_discovery: None,
            control: links.control.unwrap_or_else(|| {
                Arc::new(PollControl::new(Cadence {
                    frequency: config.poll.frequency,
                    timeout: config.poll.timeout,
                }))
            }),
            tap: links.tap,
            config,
        })
    }

    /// Every netlinker fills the records' workload fields from `sources`.
    pub fn attribute_with(&mut self, sources: &crate::attribute::Sources) {
        for collector in &mut self.collectors {
            collector.attribute_with(sources.clone());
        }
    }

    pub fn registry(&self) -> &NetnsRegistry {
        &self.registry
    }

    /// Runs discovery now and applies it (closing sockets of vanished namespaces).
    pub(crate) fn rediscover(&mut self) {
        let started = Instant::now();
        self.last_discovery = Some(started);
        let found = self.discovery.run(started);
        let netns = &self.metrics.netns;
        netns.discovery_seconds.observe(started.elapsed().as_secs_f64());
        let scan = self.discovery.last_proc_scan();
        if scan.processes > 0 {
            let kind = if scan.full { "full" } else { "incremental" };
            netns.proc_scans.get_or_create(&KindLabel { kind }).inc();
            netns.proc_stat_calls.inc_by(scan.stats as u64);
        }
        self.registry.apply(found, &self.metrics);
    }

    /// One poll cycle over every namespace.
    pub(crate) fn poll_once(&mut self) -> PollReport {
        let started = Instant::now();
        let seq = self.control.begin_poll(started);
        self.seq = seq;
        let cadence = self.control.cadence();
        let netns = &self.config.netns;
        let reconcile_due = self
            .last_discovery
            .is_none_or(|at| netns.reconcile_every.is_some_and(|every| at.elapsed() >= every));
        if netns.reconcile_before_poll || reconcile_due {
            self.rediscover();
        }
        let entries = self.registry.entries_mut();
        let namespaces = entries.len();
        let jobs = Mutex::new(entries.into_iter());
        let workers = self.collectors.len().min(namespaces).max(1);
        let timeout = cadence.timeout;
        let nl_timeout = self.config.poll.netlink_timeout;
        let metrics = &self.metrics;
        let job = PollJob {
            seq,
            timeout,
            nl_timeout,
            first_seq: self.config.poll.first_seq,
            all_states: self.config.poll.states == crate::kernel::ALL_TCP_STATES,
            track: self.config.poll.track,
        };
        if let Some(store) = &self.metrics.aggregates {
            for aggregate in self.collectors.iter_mut().filter_map(|c| c.aggregate.as_mut()) {
                store.start_poll(aggregate);
            }
        }
        let tally = std::thread::scope(|scope| {
            let handles: Vec<_> = self
                .collectors
                .iter_mut()
                .take(workers)
                .map(|collector| {
                    let jobs = &jobs;
                    std::thread::Builder::new()
                        .name("xtcp2-netlinker".into())
                        .spawn_scoped(scope, move || {
                            let mut tally = WorkerTally::default();
                            loop {
                                let next = jobs.lock().unwrap_or_else(|p| p.into_inner()).next();
                                let Some(entry) = next else { break };
                                collector.builder.start_namespace(entry.stamp.inode);
                                tally.add(poll_namespace(entry, collector, job, metrics));
                            }
                            collector.builder.flush();
                            tally
                        })
                })
                .collect();
            let mut tally = WorkerTally::default();
            for handle in handles {
                match handle {
                    Ok(h) => match h.join() {
                        Ok(t) => tally.merge(t),
                        Err(_) => {
                            tracing::error!("a netlinker thread panicked; its namespaces are missing from this poll")
                        }
                    },
                    Err(e) => tracing::error!(error = %e, "cannot start a netlinker thread"),
                }
            }
            tally
        });
        // Jobs nobody took (thread spawn failures) still must be flushed.
        for c in &mut self.collectors {
            c.builder.flush();
        }
        let mut closed_vanished = 0;
        for (stamp, flows) in self.registry.take_vanished() {
            if let Some(c) = self.collectors.first_mut() {
                closed_vanished += c.close_vanished(&stamp, flows, seq);
            }
        }
        let duration = started.elapsed();
        let m = &self.metrics.poll;
        m.cycles.inc();
        m.duration_seconds.observe(duration.as_secs_f64());
        m.last_timestamp_seconds.set(crate::clock::now_ns() as f64 / 1e9);
        m.duration_ratio
            .set(duration.as_secs_f64() / cadence.frequency.as_secs_f64());
        m.sockets_last_poll.set(tally.records as i64);
        if self.config.poll.track.tracks() {
            let (sockets, bytes) = self.registry.tracking_totals();
            self.metrics.track.sockets.set(sockets as i64);
            self.metrics.track.memory_bytes.set(bytes as i64);
        }
        m.sockets_missed.set(tally.missed as i64);
        if let Some(store) = &self.metrics.aggregates {
            // Replaces what /metrics shows with this poll, all at once.
            store.publish(self.collectors.iter().filter_map(|c| c.aggregate.as_ref()));
        }
        let report = PollReport {
            seq,
            namespaces,
            namespaces_failed: tally.failed,
            namespaces_cut_short: tally.cut_short,
            sockets_missed: tally.missed,
            records: tally.records + closed_vanished,
            duration,
        };
        if let Some(tap) = &self.tap {
            tap.poll_done(seq);
        }
        if report.is_incomplete() {
            m.partial.inc();
            if let Some(suppressed) = INCOMPLETE_POLL_LOG.admit() {
                tracing::error!(
                    poll = seq,
                    namespaces_cut_short = report.namespaces_cut_short,
                    namespaces,
                    records_kept = report.records,
                    sockets_missed_estimate = report.sockets_missed,
                    first = tally.first_cut.as_deref().unwrap_or(""),
                    ?timeout,
                    suppressed,
                    "poll incomplete: dumps were cut short and their sockets are missing from this poll (xtcp2_poll_partial_total); if the deadline cut them, raise --timeout"
                );
            }
        }
        report
    }

    /// Polls every `-frequency` until `-maxLoops` or shutdown, plus the
    /// polls asked for through [`PollControl`] (never overlapping: this is
    /// one thread). `on_poll` is called after each cycle.
    pub fn run(&mut self, wake: Receiver<Wake>, mut on_poll: impl FnMut(&PollReport)) {
        let poll = &self.config.poll;
        // A one-shot is run by someone waiting for it: only an explicit
        // --poll-jitter delays it, not the fleet-spreading percentage.
        let tick_jitter = if poll.max_loops == 1 { 0.0 } else { poll.tick_jitter };
        let first_delay = poll.jitter.max(poll.frequency.mul_f64(tick_jitter));
        if !first_delay.is_zero() {
            let jitter = random_fraction_of(first_delay);
            tracing::info!(?jitter, "delaying the first poll");
            if wait_or_shutdown(&wake, jitter) {
                return;
            }
        }
        // The regular schedule: when the last scheduled poll started, and
        // this tick's jitter. Requested polls come in between and leave it
        // as it is; a new -frequency applies from the last scheduled poll.
        let mut last_scheduled: Option<Instant> = None;
        let mut tick_fraction = 0.5;
        loop {
            let cause = loop {
                // What is already waiting first, even when a poll is due: a
                // poll that overran its period must still see the shutdown
                // asked for meanwhile (otherwise overrunning polls follow
                // each other and SIGTERM is never read).
                match take_pending(&wake) {
                    Pending::Shutdown => return,
                    Pending::NetnsChanged => self.rediscover(),
                    Pending::Nothing => {}
                }
                let now = Instant::now();
                let scheduled = match last_scheduled {
                    None => now,
                    // Each period is frequency +/- half the jitter: hosts
                    // that started together drift apart, and the mean stays
                    // the period.
                    Some(at) => {
                        let frequency = self.control.cadence().frequency;
                        at + frequency.mul_f64(1.0 + tick_jitter * (tick_fraction - 0.5))
                    }
                };
                match self.control.due(now, scheduled) {
                    Due::Now(cause) => break cause,
                    Due::At(at) => match wake.recv_timeout(at.saturating_duration_since(now)) {
                        Ok(Wake::NetnsChanged) => self.rediscover(),
                        Ok(Wake::Control) | Err(RecvTimeoutError::Timeout) => {}
                        Ok(Wake::Shutdown) | Err(RecvTimeoutError::Disconnected) => return,
                    },
                }
            };
            if cause == PollCause::Scheduled {
                last_scheduled = Some(Instant::now());
                tick_fraction = random_unit();
            }
            let report = self.poll_once();
            tracing::debug!(?report, ?cause, "poll done");
            on_poll(&report);
            if self.config.poll.max_loops > 0 && report.seq >= self.config.poll.max_loops {
                // One line with the collection's totals; what was
                // delivered and dropped is only known once delivery has
                // finished, and its own summary line says it.
                let m = &self.metrics;
                tracing::info!(
                    polls = report.seq,
                    sockets_decoded = m.decode.sockets.get(),
                    records_flushed = m.envelope.rows_flushed.get(),
                    polls_incomplete = m.poll.partial.get(),
                    tracked_sockets = m.track.sockets.get(),
                    tracking_bytes = m.track.memory_bytes.get(),
                    records_suppressed = m.track.suppressed.get(),
                    "max-loops reached"
                );
                return;
            }
        }
    }
}

/// The wake-ups already waiting, taken together.
#[derive(Debug, PartialEq, Eq)]
enum Pending {
    Nothing,
    /// One or more namespace changes: one rediscovery, not one each.
    NetnsChanged,
    Shutdown,
}

/// Takes every wake-up already waiting without blocking. A control
/// wake-up needs nothing here: the caller asks the control what is due.
fn take_pending(wake: &Receiver<Wake>) -> Pending {
    let mut changed = false;
    loop {
        match wake.try_recv() {
            Ok(Wake::NetnsChanged) => changed = true,
            Ok(Wake::Control) => {}
            Ok(Wake::Shutdown) | Err(TryRecvError::Disconnected) => return Pending::Shutdown,
            Err(TryRecvError::Empty) if changed => return Pending::NetnsChanged,
            Err(TryRecvError::Empty) => return Pending::Nothing,
        }
    }
}

/// What every namespace of one poll is dumped with.
#[derive(Clone, Copy)]
struct PollJob {
    seq: u64,
    timeout: Duration,
    nl_timeout: Duration,
    first_seq: u32,
    /// `--states all`: the kernel's socket count is comparable to ours.
    all_states: bool,
    track: crate::track::TrackPolicy,
}

fn poll_namespace(
    entry: &mut NetnsEntry,
    collector: &mut Collector,
    job: PollJob,
    metrics: &Metrics,
) -> NamespaceOutcome {
    let PollJob {
        seq,
        timeout,
        nl_timeout,
        first_seq,
        all_states,
        track,
    } = job;
    if entry.ensure_socket(nl_timeout, first_seq, metrics).is_none() {
        return NamespaceOutcome::Unreachable;
    }
    entry.ensure_flows(track, metrics);
    let NetnsEntry {
        socket: Some(socket),
        stamp,
        flows,
        ..
    } = entry
    else {
        return NamespaceOutcome::Unreachable;
    };
    let deadline = Instant::now() + timeout;
    match collector.collect(socket, stamp, seq, deadline, flows.as_mut()) {
        Ok(n) => {
            entry.note_success();
            entry.last_whole_sockets = Some(n);
            NamespaceOutcome::Whole(n)
        }
        Err(cut) => {
            let e = &cut.error;
            metrics
                .netns
                .dump_failures
                .get_or_create(&KindLabel { kind: e.kind() })
                .inc();
            if e.poisons_socket() {
                entry.socket = None;
            }
            entry.note_failure(e);
            // The kernel's count covers every state; with --states it would
            // overstate the miss, so the last whole poll's count comes first.
            let held = if all_states {
                entry.estimated_sockets()
            } else {
                entry.last_whole_sockets.or_else(|| entry.estimated_sockets())
            };
            let missed = held.map(|held| held.saturating_sub(cut.records));
            let what = format!(
                "netns {} (inode {}): {e}; {} records kept; the namespace held about {} sockets",
                entry.found.path.display(),
                entry.found.id.ino,
                cut.records,
                held.map_or_else(|| "an unknown number of".to_string(), |n| n.to_string()),
            );
            NamespaceOutcome::CutShort {
                records: cut.records,
                missed,
                what,
            }
        }
    }
}

/// Sleeps up to `d`; true if told to shut down meanwhile.
fn wait_or_shutdown(wake: &Receiver<Wake>, d: Duration) -> bool {
    let until = Instant::now() + d;
    loop {
        let now = Instant::now();
        if now >= until {
            return false;
        }
        match wake.recv_timeout(until - now) {
            Ok(Wake::NetnsChanged | Wake::Control) => {}
            Ok(Wake::Shutdown) | Err(RecvTimeoutError::Disconnected) => return true,
            Err(RecvTimeoutError::Timeout) => return false,
        }
    }
}

/// A uniformly random duration in `[0, max)`.
fn random_fraction_of(max: Duration) -> Duration {
    max.mul_f64(random_unit())
}

/// A uniformly random number in `[0, 1)`, from the std hasher's random keys.
fn random_unit() -> f64 {
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(crate::clock::now_ns());
    (h.finish() >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc::channel;

    /// A shutdown that arrived while a poll overran its period is seen
    /// before the next poll, behind any other wake-up.
    #[test]
    fn a_waiting_shutdown_is_taken() {
        let (tx, rx) = channel();
        tx.send(Wake::NetnsChanged).unwrap();
        tx.send(Wake::Control).unwrap();
        tx.send(Wake::Shutdown).unwrap();
        assert_eq!(take_pending(&rx), Pending::Shutdown);
    }

    /// Namespace changes that piled up are one rediscovery; then nothing
    /// is waiting.
    #[test]
    fn piled_up_changes_are_one_rediscovery() {
        let (tx, rx) = channel();
        for _ in 0..5 {
            tx.send(Wake::NetnsChanged).unwrap();
        }
        assert_eq!(take_pending(&rx), Pending::NetnsChanged);
        assert_eq!(take_pending(&rx), Pending::Nothing);
        drop(tx);
        assert_eq!(take_pending(&rx), Pending::Shutdown, "the senders are gone");
    }
}
