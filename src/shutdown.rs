//! A shutdown signal usable from both blocking threads (the poll loop) and
//! async tasks (HTTP server, delivery). Production triggers it from
//! SIGTERM/SIGINT; tests trigger it directly.
//!
//! [`HeldSignals`] closes the window between `exec` and the daemon's
//! handlers: `main` blocks SIGTERM, SIGINT and SIGHUP first thing, and the
//! daemon unblocks them once its handlers are installed, so a signal sent
//! in the first milliseconds waits (pending) instead of killing the
//! process with its default action.

use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use tokio::sync::watch;

#[derive(Clone)]
pub struct Shutdown {
    inner: Arc<Inner>,
}

struct Inner {
    flag: Mutex<bool>,
    condvar: Condvar,
    watch: watch::Sender<bool>,
}

impl Default for Shutdown {
    fn default() -> Self {
        Self::new()
    }
}

impl Shutdown {
    pub fn new() -> Self {
        Shutdown {
            inner: Arc::new(Inner {
                flag: Mutex::new(false),
                condvar: Condvar::new(),
                watch: watch::channel(false).0,
            }),
        }
    }

    pub fn trigger(&self) {
        *self.inner.flag.lock().unwrap_or_else(|p| p.into_inner()) = true;
        self.inner.condvar.notify_all();
        self.inner.watch.send_replace(true);
    }

    pub(crate) fn is_triggered(&self) -> bool {
        *self.inner.flag.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Blocks up to `timeout`; returns true if shutdown was triggered.
    pub fn wait_timeout(&self, timeout: Duration) -> bool {
        let guard = self.inner.flag.lock().unwrap_or_else(|p| p.into_inner());
        let (guard, _) = self
            .inner
            .condvar
            .wait_timeout_while(guard, timeout, |triggered| !*triggered)
            .unwrap_or_else(|p| p.into_inner());
        *guard
    }

    /// Resolves once shutdown is triggered.
    pub async fn wait(&self) {
        let mut rx = self.inner.watch.subscribe();
        // An error means the sender is gone, which cannot happen while self lives.
        let _ = rx.wait_for(|t| *t).await;
    }
}

/// The signals whose default action (terminate) must never be taken.
const HELD: [libc::c_int; 3] = [libc::SIGTERM, libc::SIGINT, libc::SIGHUP];

/// SIGTERM, SIGINT and SIGHUP blocked in the calling thread (and so in every
/// thread it starts) until [`HeldSignals::release`]. Pending signals are
/// delivered at the release, to the handlers installed by then.
#[must_use = "release the signals once their handlers are installed"]
pub struct HeldSignals {
    set: libc::sigset_t,
}

impl HeldSignals {
    /// Blocks the signals in the calling thread; call before any other thread exists.
    pub fn hold() -> HeldSignals {
        // SAFETY: sigemptyset/sigaddset initialise and fill a local
        // sigset_t; pthread_sigmask only changes this thread's mask, with a
        // valid set pointer and a null old-set pointer.
        unsafe {
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            for signal in HELD {
                libc::sigaddset(&mut set, signal);
            }
            libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
            HeldSignals { set }
        }
    }

    /// Unblocks the signals in the calling thread: any that arrived while
    /// held are delivered now. Threads started while they were held keep
    /// them blocked, so they are always handled on this thread.
    pub fn release(self) {
        // SAFETY: `set` was initialised in `hold`; this changes only the
        // calling thread's mask.
        unsafe {
            libc::pthread_sigmask(libc::SIG_UNBLOCK, &self.set, std::ptr::null_mut());
        }
    }
}
