//! Creating a socket inside a namespace.
//!
//! `setns(CLONE_NEWNET)` changes the namespace of the calling thread only,
//! and a socket keeps the namespace it was created in. So a throwaway thread
//! enters the namespace, creates the socket, and exits; the socket is then
//! used from any thread. The daemon's own threads never change namespace.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::time::Duration;

use super::{DiscoveredNetns, NetnsOrigin};
use crate::kernel::destroy::DestroyListener;
use crate::kernel::{DiagSocket, DumpError};

#[derive(Debug, thiserror::Error)]
pub(crate) enum EnterError {
    #[error("opening {path}: {source}")]
    Open {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} now refers to namespace inode {found}, not {expected} (it was replaced)")]
    Replaced { path: String, expected: u64, found: u64 },
    #[error("setns(CLONE_NEWNET) into {path}: {source}")]
    Setns {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("creating the inet_diag socket inside {path}: {source}")]
    Socket {
        path: String,
        #[source]
        source: DumpError,
    },
    #[error("joining the TCP destroy notifications inside {path}: {source}")]
    DestroyListener {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the namespace-entering thread could not be started or panicked")]
    Thread,
}

impl EnterError {
    /// Short, stable name for metrics labels.
    pub fn kind(&self) -> &'static str {
        match self {
            EnterError::Open { source, .. } | EnterError::Setns { source, .. } => match source.raw_os_error() {
                Some(libc::ENOENT) => "enoent",
                Some(libc::EPERM) | Some(libc::EACCES) => "eperm",
                _ => "other",
            },
            EnterError::Replaced { .. } => "replaced",
            EnterError::Socket { .. } => "socket",
            EnterError::DestroyListener { .. } => "destroy_listener",
            EnterError::Thread => "thread",
        }
    }
}

/// Opens a `NETLINK_SOCK_DIAG` socket inside the namespace.
pub(crate) fn open_socket_in(netns: &DiscoveredNetns, recv_timeout: Duration) -> Result<DiagSocket, EnterError> {
    open_in(netns, move |path| {
        DiagSocket::open(recv_timeout).map_err(|source| EnterError::Socket { path, source })
    })
}

/// Joins the namespace's TCP destroy notifications (`--flow-events`).
pub(crate) fn open_destroy_listener_in(netns: &DiscoveredNetns) -> Result<DestroyListener, EnterError> {
    open_in(netns, |path| {
        DestroyListener::open().map_err(|source| EnterError::DestroyListener { path, source })
    })
}

/// Runs `open(path)` with the calling thread's view of the namespace:
/// directly for the host's, else on a throwaway thread that entered it.
fn open_in<T: Send + 'static>(
    netns: &DiscoveredNetns,
    open: impl FnOnce(String) -> Result<T, EnterError> + Send + 'static,
) -> Result<T, EnterError> {
    let path = netns.path.display().to_string();
    if netns.origin == NetnsOrigin::Host {
        // Our threads are all in the host namespace: no setns needed.
        return open(path);
    }
    let file = File::open(&netns.path).map_err(|source| EnterError::Open {
        path: path.clone(),
        source,
    })?;
    // The path may have been reused since discovery (a pid recycled, a
    // bind mount replaced): make sure the open file is the namespace we mean.
    let meta = file.metadata().map_err(|source| EnterError::Open {
        path: path.clone(),
        source,
    })?;
    if meta.ino() != netns.id.ino || meta.dev() != netns.id.dev {
        return Err(EnterError::Replaced {
            path,
            expected: netns.id.ino,
            found: meta.ino(),
        });
    }
    let thread = std::thread::Builder::new()
        .name("xtcp2-setns".into())
        .spawn(move || -> Result<T, EnterError> {
            // SAFETY: `file` is an open nsfs file owned by this closure, so the
            // fd is valid for the call; setns only affects this thread, which
            // ends right after creating the socket.
            let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
            if rc != 0 {
                return Err(EnterError::Setns {
                    path: path.clone(),
                    source: std::io::Error::last_os_error(),
                });
            }
            open(path)
        })
        .map_err(|_| EnterError::Thread)?;
    thread.join().map_err(|_| EnterError::Thread)?
}
