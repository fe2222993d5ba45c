//! Watches the bind-mount directories with inotify, so that a deleted
//! namespace's socket is closed at once (an open socket would keep the dead
//! namespace alive) and a new one is collected without waiting for a rescan.

use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::sync::mpsc::Sender;
use std::thread::JoinHandle;
use std::time::Duration;

use inotify::{Inotify, WatchMask};

use crate::shutdown::Shutdown;

/// How long the watcher waits in poll(2) before re-checking shutdown and
/// directories that did not exist yet.
const WATCH_POLL_INTERVAL: Duration = Duration::from_millis(500);
/// `ip netns add` creates the file, then bind-mounts the namespace onto it;
/// waiting a little lets the mount land before discovery runs.
const SETTLE_DELAY: Duration = Duration::from_millis(50);

/// Something the poll loop should wake up for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wake {
    /// A watched directory changed: rediscover now.
    NetnsChanged,
    /// A runtime-control request (`control::PollControl`): look again at what is due.
    Control,
    /// Stop.
    Shutdown,
}

/// Starts the watcher thread. Returns `None` (and logs) when inotify is
/// unavailable; discovery before every poll still finds changes then.
pub fn spawn(dirs: Vec<PathBuf>, wake: Sender<Wake>, shutdown: Shutdown) -> Option<JoinHandle<()>> {
    let inotify = match Inotify::init() {
        Ok(i) => i,
        Err(e) => {
            tracing::warn!(error = %e, "inotify unavailable; namespace changes are seen at the next poll only");
            return None;
        }
    };
    std::thread::Builder::new()
        .name("xtcp2-netns-watch".into())
        .spawn(move || watch_loop(inotify, dirs, wake, shutdown))
        .map_err(|e| tracing::warn!(error = %e, "cannot start the namespace watcher thread"))
        .ok()
}

fn watch_loop(mut inotify: Inotify, dirs: Vec<PathBuf>, wake: Sender<Wake>, shutdown: Shutdown) {
    let mut watched = vec![false; dirs.len()];
    let mut buffer = [0u8; 4096];
    let mask =
        WatchMask::CREATE | WatchMask::DELETE | WatchMask::MOVED_FROM | WatchMask::MOVED_TO | WatchMask::DELETE_SELF;
    while !shutdown.is_triggered() {
        for (dir, is_watched) in dirs.iter().zip(watched.iter_mut()) {
            if !*is_watched && dir.is_dir() {
                match inotify.watches().add(dir, mask) {
                    Ok(_) => *is_watched = true,
                    Err(e) => tracing::debug!(dir = %dir.display(), error = %e, "cannot watch namespace directory"),
                }
            }
        }
        let mut pfd = libc::pollfd {
            fd: inotify.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: `pfd` is a single valid pollfd on the stack for the
        // duration of the call, and its fd is owned by `inotify`.
        let ready = unsafe { libc::poll(&mut pfd, 1, WATCH_POLL_INTERVAL.as_millis() as libc::c_int) };
        if ready <= 0 {
            continue;
        }
        let mut changed = false;
        while let Ok(events) = inotify.read_events(&mut buffer) {
            let mut any = false;
            for event in events {
                any = true;
                if event.mask.contains(inotify::EventMask::DELETE_SELF)
                    || event.mask.contains(inotify::EventMask::IGNORED)
                {
                    // The directory itself went away: watch it again when it returns.
                    watched.iter_mut().for_each(|w| *w = false);
                }
            }
            if !any {
                break;
            }
            changed = true;
        }
        if changed {
            std::thread::sleep(SETTLE_DELAY);
            if wake.send(Wake::NetnsChanged).is_err() {
                return;
            }
        }
    }
}
