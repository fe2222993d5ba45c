//! Readiness: is the daemon doing its job right now?
//!
//! `/healthz` answers "the process is up"; `/readyz` answers "records are
//! flowing": the destination is open, a poll has completed, the poller is
//! not stalled and the daemon is not shutting down. An orchestrator or a
//! load balancer uses it to stop routing to, or alarm on, a collector that
//! is alive but not collecting.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::shutdown::Shutdown;

/// A poller silent for this many poll periods counts as stalled. A poll
/// starts every period and each namespace dump is bounded by `--timeout`
/// (< period), so even a slow cycle reports well within three periods;
/// the same factor is the suggested alert in docs/observability.md.
pub(crate) const STALL_PERIODS: u32 = 3;

/// Why the daemon is not ready (or that it is).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadyState {
    Ready,
    DestinationNotOpen,
    NoPollYet,
    Stalled { since: Duration },
    ShuttingDown,
}

impl ReadyState {
    pub(crate) fn is_ready(self) -> bool {
        self == ReadyState::Ready
    }

    /// The body `/readyz` answers with: one line an operator can act on.
    pub fn describe(self) -> String {
        match self {
            ReadyState::Ready => "ready: polling\n".to_string(),
            ReadyState::DestinationNotOpen => "not ready: the destination is not open yet\n".to_string(),
            ReadyState::NoPollYet => "not ready: the first poll has not completed\n".to_string(),
            ReadyState::Stalled { since } => {
                format!(
                    "not ready: no poll completed for {:.1}s (poller stalled)\n",
                    since.as_secs_f64()
                )
            }
            ReadyState::ShuttingDown => "not ready: shutting down\n".to_string(),
        }
    }
}

/// Shared between the poll loop (writer) and the HTTP server (reader).
pub struct Readiness {
    started: Instant,
    /// Nanoseconds without a poll after which the poller is stalled:
    /// [`STALL_PERIODS`] periods, updated when gRPC changes the period.
    stall_after_ns: AtomicU64,
    destination_open: AtomicBool,
    /// Nanoseconds after `started` when the last poll completed; 0 = none yet.
    last_poll_ns: AtomicU64,
    shutdown: Shutdown,
}

impl Readiness {
    /// `poll_period` is `--frequency`; shutdown is read, never triggered.
    pub fn new(poll_period: Duration, shutdown: Shutdown) -> Self {
        Readiness {
            started: Instant::now(),
            stall_after_ns: AtomicU64::new(stall_after_ns(poll_period)),
            destination_open: AtomicBool::new(false),
            last_poll_ns: AtomicU64::new(0),
            shutdown,
        }
    }

    /// The poll period changed while running (gRPC `SetPollFrequency`).
    pub fn set_poll_period(&self, poll_period: Duration) {
        self.stall_after_ns
            .store(stall_after_ns(poll_period), Ordering::Release);
    }

    pub fn destination_opened(&self) {
        self.destination_open.store(true, Ordering::Release);
    }

    /// Called by the poll loop after each cycle.
    pub fn poll_completed(&self) {
        // At least 1, so a poll finishing in the same nanosecond as startup
        // still counts.
        let ns = (self.started.elapsed().as_nanos() as u64).max(1);
        self.last_poll_ns.store(ns, Ordering::Release);
    }

    pub fn state(&self) -> ReadyState {
        self.state_at(Instant::now())
    }

    fn state_at(&self, now: Instant) -> ReadyState {
        if self.shutdown.is_triggered() {
            return ReadyState::ShuttingDown;
        }
        if !self.destination_open.load(Ordering::Acquire) {
            return ReadyState::DestinationNotOpen;
        }
        let last = self.last_poll_ns.load(Ordering::Acquire);
        if last == 0 {
            return ReadyState::NoPollYet;
        }
        let since = now.saturating_duration_since(self.started + Duration::from_nanos(last));
        if since > Duration::from_nanos(self.stall_after_ns.load(Ordering::Acquire)) {
            return ReadyState::Stalled { since };
        }
        ReadyState::Ready
    }
}

fn stall_after_ns(poll_period: Duration) -> u64 {
    u64::try_from((poll_period * STALL_PERIODS).as_nanos()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Not ready until both the destination is open and a poll completed;
    /// ready then; not ready again once shutdown is triggered.
    #[test]
    fn readiness_follows_the_daemon_lifecycle() {
        let shutdown = Shutdown::new();
        let r = Readiness::new(Duration::from_secs(10), shutdown.clone());
        assert_eq!(r.state(), ReadyState::DestinationNotOpen);
        r.destination_opened();
        assert_eq!(r.state(), ReadyState::NoPollYet);
        r.poll_completed();
        assert_eq!(r.state(), ReadyState::Ready);
        shutdown.trigger();
        assert_eq!(r.state(), ReadyState::ShuttingDown);
        assert_eq!(r.state().describe(), "not ready: shutting down\n");
    }

    /// A poller silent for more than three periods is reported stalled.
    #[test]
    fn silent_poller_is_stalled() {
        let r = Readiness::new(Duration::from_secs(1), Shutdown::new());
        r.destination_opened();
        r.poll_completed();
        let at = Instant::now() + Duration::from_secs(2);
        assert_eq!(r.state_at(at), ReadyState::Ready);
        let at = Instant::now() + Duration::from_secs(4);
        assert!(matches!(r.state_at(at), ReadyState::Stalled { since } if since > Duration::from_secs(3)));
        // A longer period set at run time (gRPC) moves the threshold.
        r.set_poll_period(Duration::from_secs(10));
        assert_eq!(r.state_at(at), ReadyState::Ready);
    }
}
