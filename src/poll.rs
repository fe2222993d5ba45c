//! The poll loop: every `-frequency`, discover namespaces, dump them all
//! with a bounded pool of `-netlinkers` threads, and flush the envelopes.
//!
//! Runs on its own (blocking) thread, never on a tokio worker, because dumps
//! block in recv(2). Between polls it sleeps on a channel, so a namespace
//! change (inotify) or shutdown wakes it at once.

use std::hash::{BuildHasher, Hasher};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::batch::{CountOnly, EnvelopeBuilder, EnvelopeQueue};
use crate::collect::{Collector, DumpPlan};
use crate::config::Config;
use crate::metrics::{KindLabel, Metrics};
use crate::netns::watch::Wake;
use crate::netns::{Discovery, DiscoveryConfig, NetnsEntry, NetnsRegistry};

/// What one poll cycle did, reported to the caller (readiness, tests).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PollReport {
    pub seq: u64,
    pub namespaces: usize,
    pub namespaces_failed: usize,
    pub records: u64,
    pub duration: Duration,
}

pub struct Poller {
    config: Config,
    metrics: Arc<Metrics>,
    discovery: Discovery,
    registry: NetnsRegistry,
    collectors: Vec<Collector>,
    seq: u64,
}

impl Poller {
    pub fn new(config: Config, metrics: Arc<Metrics>, queue: Arc<EnvelopeQueue>) -> anyhow::Result<Self> {
        let plan = DumpPlan {
            states: config.poll.states,
            deserializers: config.output.deserializers,
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
            );
            let mut collector = Collector::new(plan, output.stamps.clone(), builder, metrics.clone());
            if let Some(uring) = io_uring {
                if !collector.use_io_uring(uring.recv_batch, uring.cqe_batch) {
                    io_uring = None;
                }
            }
            collectors.push(collector);
        }
        Ok(Poller {
            discovery: Discovery::new(
                DiscoveryConfig::new(config.netns.dirs.clone(), config.netns.proc_scan)
                    .with_proc_rescan_interval(config.netns.proc_rescan),
            ),
            config,
            metrics,
            registry: NetnsRegistry::new(),
            collectors,
            seq: 0,
        })
    }

    pub fn registry(&self) -> &NetnsRegistry {
        &self.registry
    }

    /// Runs discovery now and applies it (closing sockets of vanished namespaces).
    pub(crate) fn rediscover(&mut self) {
        let started = Instant::now();
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
        self.seq += 1;
        let seq = self.seq;
        self.rediscover();
        let entries = self.registry.entries_mut();
        let namespaces = entries.len();
        let jobs = Mutex::new(entries.into_iter());
        let workers = self.collectors.len().min(namespaces).max(1);
        let timeout = self.config.poll.timeout;
        let nl_timeout = self.config.poll.netlink_timeout;
        let metrics = &self.metrics;
        let (records, failed) = std::thread::scope(|scope| {
            let handles: Vec<_> = self
                .collectors
                .iter_mut()
                .take(workers)
                .map(|collector| {
                    let jobs = &jobs;
                    std::thread::Builder::new()
                        .name("xtcp2-netlinker".into())
                        .spawn_scoped(scope, move || {
                            let mut records = 0u64;
                            let mut failed = 0usize;
                            loop {
                                let next = jobs.lock().unwrap_or_else(|p| p.into_inner()).next();
                                let Some(entry) = next else { break };
                                match poll_namespace(entry, collector, seq, timeout, nl_timeout, metrics) {
                                    Some(n) => records += n,
                                    None => failed += 1,
                                }
                            }
                            collector.builder.flush();
                            (records, failed)
                        })
                })
                .collect();
            let mut records = 0;
            let mut failed = 0;
            for handle in handles {
                match handle {
                    Ok(h) => match h.join() {
                        Ok((r, f)) => {
                            records += r;
                            failed += f;
                        }
                        Err(_) => {
                            tracing::error!("a netlinker thread panicked; its namespaces are missing from this poll")
                        }
                    },
                    Err(e) => tracing::error!(error = %e, "cannot start a netlinker thread"),
                }
            }
            (records, failed)
        });
        // Jobs nobody took (thread spawn failures) still must be flushed.
        for c in &mut self.collectors {
            c.builder.flush();
        }
        let duration = started.elapsed();
        let m = &self.metrics.poll;
        m.cycles.inc();
        m.duration_seconds.observe(duration.as_secs_f64());
        m.last_timestamp_seconds.set(crate::clock::now_ns() as f64 / 1e9);
        m.duration_ratio
            .set(duration.as_secs_f64() / self.config.poll.frequency.as_secs_f64());
        m.sockets_last_poll.set(records as i64);
        PollReport {
            seq,
            namespaces,
            namespaces_failed: failed,
            records,
            duration,
        }
    }

    /// Polls every `-frequency` until `-maxLoops` or shutdown. `on_poll` is
    /// called after each cycle.
    pub fn run(&mut self, wake: Receiver<Wake>, mut on_poll: impl FnMut(&PollReport)) {
        if !self.config.poll.jitter.is_zero() {
            let jitter = random_fraction_of(self.config.poll.jitter);
            tracing::info!(?jitter, "delaying the first poll");
            if wait_or_shutdown(&wake, jitter) {
                return;
            }
        }
        loop {
            let report = self.poll_once();
            tracing::debug!(?report, "poll done");
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
                    "max-loops reached"
                );
                return;
            }
            let next = Instant::now() + self.config.poll.frequency.saturating_sub(report.duration);
            loop {
                let now = Instant::now();
                if now >= next {
                    break;
                }
                match wake.recv_timeout(next - now) {
                    Ok(Wake::NetnsChanged) => self.rediscover(),
                    Ok(Wake::Shutdown) | Err(RecvTimeoutError::Disconnected) => return,
                    Err(RecvTimeoutError::Timeout) => break,
                }
            }
        }
    }
}

fn poll_namespace(
    entry: &mut NetnsEntry,
    collector: &mut Collector,
    seq: u64,
    timeout: Duration,
    nl_timeout: Duration,
    metrics: &Metrics,
) -> Option<u64> {
    entry.ensure_socket(nl_timeout, metrics)?;
    let NetnsEntry {
        socket: Some(socket),
        stamp,
        ..
    } = entry
    else {
        return None;
    };
    let deadline = Instant::now() + timeout;
    match collector.collect(socket, stamp, seq, deadline) {
        Ok(n) => {
            entry.note_success();
            Some(n)
        }
        Err(e) => {
            metrics
                .netns
                .dump_failures
                .get_or_create(&KindLabel { kind: e.kind() })
                .inc();
            if e.poisons_socket() {
                entry.socket = None;
            }
            entry.note_failure(&e);
            None
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
            Ok(Wake::NetnsChanged) => {}
            Ok(Wake::Shutdown) | Err(RecvTimeoutError::Disconnected) => return true,
            Err(RecvTimeoutError::Timeout) => return false,
        }
    }
}

/// A uniformly random duration in `[0, max)`, from the std hasher's random keys.
fn random_fraction_of(max: Duration) -> Duration {
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(crate::clock::now_ns());
    let fraction = (h.finish() >> 11) as f64 / (1u64 << 53) as f64;
    max.mul_f64(fraction)
}
