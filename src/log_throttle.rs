//! Rate limiting for log lines that can repeat every poll or every upload,
//! so a broken destination or profiling server cannot flood the journal.
//! The first occurrence is always logged; later ones at most once per
//! interval, with the number suppressed in between.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// One per call site.
pub(crate) struct LogThrottle {
    interval: Duration,
    state: Mutex<ThrottleState>,
}

struct ThrottleState {
    last_logged: Option<Instant>,
    suppressed: u64,
}

impl LogThrottle {
    pub const fn new(interval: Duration) -> Self {
        LogThrottle {
            interval,
            state: Mutex::new(ThrottleState {
                last_logged: None,
                suppressed: 0,
            }),
        }
    }

    /// `Some(n)` when this occurrence should be logged, `n` being how many
    /// were suppressed since the last logged one; `None` to stay quiet.
    pub(crate) fn admit(&self) -> Option<u64> {
        self.admit_at(Instant::now())
    }

    fn admit_at(&self, now: Instant) -> Option<u64> {
        // A poisoned lock only means another thread panicked mid-update of
        // two plain numbers; keep using them.
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        match s.last_logged {
            Some(last) if now.saturating_duration_since(last) < self.interval => {
                s.suppressed += 1;
                None
            }
            _ => {
                s.last_logged = Some(now);
                Some(std::mem::take(&mut s.suppressed))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The first occurrence logs, repeats within the interval are counted,
    /// and the next admitted one reports how many were suppressed.
    #[test]
    fn repeats_are_counted_then_reported() {
        let t = LogThrottle::new(Duration::from_secs(60));
        let start = Instant::now();
        assert_eq!(t.admit_at(start), Some(0));
        assert_eq!(t.admit_at(start + Duration::from_secs(1)), None);
        assert_eq!(t.admit_at(start + Duration::from_secs(59)), None);
        assert_eq!(t.admit_at(start + Duration::from_secs(60)), Some(2));
        assert_eq!(t.admit_at(start + Duration::from_secs(61)), None);
    }
}
