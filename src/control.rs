//! Runtime control of the poll loop: what `xtcp_config.v1.ConfigService`
//! changes while the daemon runs (the period and deadline, a poll now, a
//! burst of polls), and what the poll loop reads before each wait.
//!
//! The poller owns the schedule; this module only holds the requests, under
//! one mutex taken a few times per poll (never per socket). A request wakes
//! the poller through its wake channel, so a trigger does not wait out the
//! current period. Polls never overlap: the poller is one thread and runs a
//! requested poll after the running one.

use std::sync::mpsc::Sender;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::netns::watch::Wake;

/// `TriggerPollBurst` bounds: a burst of more than 1000 polls, or polls
/// closer than a second or further than an hour apart, is not an incident
/// snapshot but a new schedule (`SetPollFrequency` is for that).
pub mod bounds {
    use std::time::Duration;

    pub const BURST_COUNT: (u32, u32) = (1, 1000);
    pub const BURST_INTERVAL: (Duration, Duration) = (Duration::from_secs(1), Duration::from_secs(3600));
}

/// Why a poll runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PollCause {
    /// The regular `-frequency` tick.
    Scheduled,
    /// `TriggerPoll` or a `PollFlatRecords` request.
    Triggered,
    /// A poll of a `TriggerPollBurst`.
    Burst,
}

/// What the poller should do now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Due {
    Now(PollCause),
    /// Nothing before this instant (unless woken).
    At(Instant),
}

/// A running burst.
#[derive(Debug, Clone, Copy)]
struct Burst {
    remaining: u32,
    interval: Duration,
    next_at: Instant,
}

#[derive(Debug)]
struct State {
    frequency: Duration,
    timeout: Duration,
    /// Sequence number of the last poll started (0: none yet).
    started: u64,
    trigger_pending: bool,
    burst: Option<Burst>,
}

/// The live poll settings and requests, shared by the gRPC services and the poller.
pub struct PollControl {
    state: Mutex<State>,
    wake: Mutex<Option<Sender<Wake>>>,
    /// Told of every new cadence (readiness's stall threshold follows the period).
    on_cadence: Mutex<Option<CadenceObserver>>,
}

type CadenceObserver = Box<dyn Fn(Cadence) + Send + Sync>;

impl std::fmt::Debug for PollControl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PollControl").field("state", &*self.state()).finish()
    }
}

/// The period and dump deadline in force.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cadence {
    pub frequency: Duration,
    pub timeout: Duration,
}

impl PollControl {
    pub fn new(cadence: Cadence) -> Self {
        PollControl {
            state: Mutex::new(State {
                frequency: cadence.frequency,
                timeout: cadence.timeout,
                started: 0,
                trigger_pending: false,
                burst: None,
            }),
            wake: Mutex::new(None),
            on_cadence: Mutex::new(None),
        }
    }

    /// Calls `observer` with every new cadence.
    pub fn on_cadence_change(&self, observer: impl Fn(Cadence) + Send + Sync + 'static) {
        *lock(&self.on_cadence) = Some(Box::new(observer));
    }

    /// Where requests wake the poller (its namespace-watch channel).
    pub fn wake_with(&self, wake: Sender<Wake>) {
        *lock(&self.wake) = Some(wake);
    }

    fn state(&self) -> MutexGuard<'_, State> {
        lock(&self.state)
    }

    fn wake(&self) {
        if let Some(tx) = lock(&self.wake).as_ref() {
            // The poller gone means shutdown: nothing to wake.
            let _ = tx.send(Wake::Control);
        }
    }

    pub fn cadence(&self) -> Cadence {
        let s = self.state();
        Cadence {
            frequency: s.frequency,
            timeout: s.timeout,
        }
    }

    /// Sets the period and deadline (validated by the caller) from the next wait on.
    pub fn set_cadence(&self, cadence: Cadence) {
        {
            let mut s = self.state();
            s.frequency = cadence.frequency;
            s.timeout = cadence.timeout;
        }
        if let Some(observer) = lock(&self.on_cadence).as_ref() {
            observer(cadence);
        }
        self.wake();
    }

    /// Asks for one poll as soon as none is running. Returns the sequence
    /// number of the poll that will serve it: requests made while a poll
    /// runs, or before the next one starts, share that next poll.
    pub fn trigger(&self) -> u64 {
        self.trigger_with(|_| {})
    }

    /// [`Self::trigger`], calling `before` with the poll's number before
    /// that poll can start (a stream sets its filter so).
    pub fn trigger_with(&self, before: impl FnOnce(u64)) -> u64 {
        let seq = {
            let mut s = self.state();
            s.trigger_pending = true;
            before(s.started + 1);
            s.started + 1
        };
        self.wake();
        seq
    }

    /// Starts a burst of `count` polls `interval` apart, the first now,
    /// replacing a running burst. Bounds are the caller's ([`bounds`]).
    pub fn start_burst(&self, count: u32, interval: Duration) {
        self.state().burst = Some(Burst {
            remaining: count,
            interval,
            next_at: Instant::now(),
        });
        self.wake();
    }

    /// Polls left in the running burst (0: none running).
    pub fn burst_remaining(&self) -> u32 {
        self.state().burst.map_or(0, |b| b.remaining)
    }

    /// Whether a poll is due at `now`, the regular one being due at `scheduled`.
    pub fn due(&self, now: Instant, scheduled: Instant) -> Due {
        let s = self.state();
        if s.trigger_pending {
            return Due::Now(PollCause::Triggered);
        }
        let burst_at = s.burst.map(|b| b.next_at);
        if burst_at.is_some_and(|at| at <= now) {
            return Due::Now(PollCause::Burst);
        }
        if scheduled <= now {
            return Due::Now(PollCause::Scheduled);
        }
        Due::At(burst_at.map_or(scheduled, |at| at.min(scheduled)))
    }

    /// Called by the poller as a poll starts: numbers it, and counts it
    /// towards the requests it serves (a pending trigger, a due burst poll).
    pub fn begin_poll(&self, now: Instant) -> u64 {
        let mut s = self.state();
        s.started += 1;
        s.trigger_pending = false;
        if let Some(b) = &mut s.burst {
            if b.next_at <= now {
                b.remaining = b.remaining.saturating_sub(1);
                b.next_at = now + b.interval;
                if b.remaining == 0 {
                    s.burst = None;
                }
            }
        }
        s.started
    }
}

/// A poisoned lock still holds consistent plain data here (every update is
/// a few assignments), so it is used rather than propagated as a panic.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn control() -> PollControl {
        PollControl::new(Cadence {
            frequency: Duration::from_secs(60),
            timeout: Duration::from_secs(50),
        })
    }

    /// Triggers made before a poll starts are all served by that poll.
    #[test]
    fn triggers_before_a_poll_share_it() {
        let c = control();
        let now = Instant::now();
        let later = now + Duration::from_secs(60);
        assert_eq!(c.due(now, later), Due::At(later));
        assert_eq!(c.trigger(), 1);
        assert_eq!(c.trigger(), 1);
        assert_eq!(c.due(now, later), Due::Now(PollCause::Triggered));
        assert_eq!(c.begin_poll(now), 1);
        assert_eq!(c.due(now, later), Due::At(later));
        // During poll 1, a trigger asks for poll 2.
        assert_eq!(c.trigger(), 2);
    }

    /// A burst of 3 polls 1 s apart is due now, then at +1 s, +2 s, then ends.
    #[test]
    fn a_burst_counts_its_polls_and_ends() {
        let c = control();
        let t0 = Instant::now();
        let far = t0 + Duration::from_secs(3600);
        c.start_burst(3, Duration::from_secs(1));
        assert_eq!(c.due(t0 + Duration::from_millis(1), far), Due::Now(PollCause::Burst));
        for i in 0..3u64 {
            let at = t0 + Duration::from_secs(i) + Duration::from_millis(1);
            assert_eq!(c.due(at, far), Due::Now(PollCause::Burst));
            c.begin_poll(at);
            if i < 2 {
                assert_eq!(c.due(at, far), Due::At(at + Duration::from_secs(1)));
            }
        }
        assert_eq!(c.burst_remaining(), 0);
        assert_eq!(c.due(t0 + Duration::from_secs(10), far), Due::At(far));
    }

    /// A new burst replaces the running one.
    #[test]
    fn a_new_burst_replaces_the_running_one() {
        let c = control();
        c.start_burst(10, Duration::from_secs(5));
        c.begin_poll(Instant::now());
        assert_eq!(c.burst_remaining(), 9);
        c.start_burst(2, Duration::from_secs(1));
        assert_eq!(c.burst_remaining(), 2);
    }
}
