//! A shutdown signal usable from both blocking threads (the poll loop) and
//! async tasks (HTTP server, delivery). Production triggers it from
//! SIGTERM/SIGINT; tests trigger it directly.

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
