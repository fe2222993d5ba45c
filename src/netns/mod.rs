//! Namespaces: find every network namespace on the host, and hold one
//! `NETLINK_SOCK_DIAG` socket inside each.
//!
//! A netlink socket sees only the namespace it was created in. Discovery
//! ([`discover`]) merges the host namespace, bind mounts under the watched
//! directories (`/run/netns`, `/run/docker/netns`) and namespaces held only
//! by processes (`/proc/PID/ns/net`), deduplicated by the nsfs file's
//! device and inode ([`NetnsId`]). [`enter::open_socket_in`] creates each
//! namespace's socket from a short-lived thread that `setns()`s and exits,
//! so no long-lived thread (and never a tokio worker) sits in a foreign
//! namespace. The [`NetnsRegistry`] keeps those sockets across polls and
//! closes a socket the moment its namespace is gone, because an open socket
//! keeps a dead namespace alive in the kernel.
//!
//! This module must not dump or decode; it only provides sockets and names.

pub mod discover;
pub mod enter;
pub mod nsid;
pub mod sockstat;
pub mod watch;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::kernel::DiagSocket;
use crate::metrics::{KindLabel, Metrics};

pub use discover::{discover, Discovery, DiscoveryConfig, ProcScanStats, DEFAULT_PROC_RESCAN_INTERVAL};

/// Identity of a network namespace: device and inode of its nsfs file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NetnsId {
    pub dev: u64,
    pub ino: u64,
}

/// Where a namespace was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NetnsOrigin {
    /// The namespace xtcp2 itself runs in.
    Host,
    /// A bind mount: `name` is the file name (`ip netns` name, Docker id).
    BindMount { name: Arc<str> },
    /// Held only by process `pid`.
    Process { pid: u32 },
}

/// Identity of the namespace a record came from.
#[derive(Debug, Clone, Default)]
pub(crate) struct NamespaceStamp {
    pub inode: Option<u64>,
    pub name: Option<Arc<str>>,
    pub pid: Option<u32>,
    /// NETNSA_NSID as the daemon's namespace knows it (`-populateNsid`).
    pub nsid: Option<u32>,
}

/// A namespace found by one discovery pass.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiscoveredNetns {
    pub id: NetnsId,
    /// A path that refers to the namespace, to open for `setns`.
    pub path: PathBuf,
    pub origin: NetnsOrigin,
}

impl DiscoveredNetns {
    pub(crate) fn stamp(&self) -> NamespaceStamp {
        let (name, pid) = match &self.origin {
            NetnsOrigin::Host => (None, None),
            NetnsOrigin::BindMount { name } => (Some(name.clone()), None),
            NetnsOrigin::Process { pid } => (None, Some(*pid)),
        };
        NamespaceStamp {
            inode: Some(self.id.ino),
            name,
            pid,
            nsid: None,
        }
    }
}

/// One namespace the daemon collects, with its socket once opened.
pub(crate) struct NetnsEntry {
    pub found: DiscoveredNetns,
    pub stamp: NamespaceStamp,
    pub socket: Option<DiagSocket>,
    /// Consecutive failed polls; the first failure of a streak is logged.
    pub failure_streak: u32,
    /// Sockets of the last poll that collected this namespace whole: the
    /// estimate of what a dump cut short missed.
    pub last_whole_sockets: Option<u64>,
    /// What became of its sockets between polls (`track`), when tracked.
    pub flows: Option<crate::track::NamespaceFlows>,
}

impl NetnsEntry {
    /// Opens the socket if there is none. Errors are counted and logged once
    /// per failure streak; the namespace is retried on the next poll.
    pub(crate) fn ensure_socket(
        &mut self,
        recv_timeout: Duration,
        first_seq: u32,
        metrics: &Metrics,
    ) -> Option<&mut DiagSocket> {
        if self.socket.is_none() {
            match enter::open_socket_in(&self.found, recv_timeout) {
                Ok(mut socket) => {
                    socket.start_sequence_at(first_seq);
                    self.socket = Some(socket)
                }
                Err(e) => {
                    metrics
                        .netns
                        .enter_failures
                        .get_or_create(&KindLabel { kind: e.kind() })
                        .inc();
                    self.note_failure(&e);
                    return None;
                }
            }
        }
        self.socket.as_mut()
    }

    /// Logs the first failure of a streak; later ones only count.
    pub(crate) fn note_failure(&mut self, error: &dyn std::fmt::Display) {
        if self.failure_streak == 0 {
            tracing::warn!(netns = ?self.found.origin, inode = self.found.id.ino, path = %self.found.path.display(),
                error = %error, "namespace failed; will retry every poll (further failures not logged until it recovers)");
        }
        self.failure_streak += 1;
    }

    /// About how many TCP sockets the namespace holds now, for a dump cut
    /// short: what the kernel says for a namespace whose process is known
    /// (or the daemon's own), else the last whole poll's count.
    pub(crate) fn estimated_sockets(&self) -> Option<u64> {
        let from_kernel = match &self.found.origin {
            NetnsOrigin::Host => sockstat::tcp_sockets(None),
            NetnsOrigin::Process { pid } => sockstat::tcp_sockets(Some(*pid)),
            NetnsOrigin::BindMount { .. } => None,
        };
        from_kernel.or(self.last_whole_sockets)
    }

    /// The namespace's tracking table, made on first use, and its destroy
    /// listener with `--flow-events` (retried each poll until it opens;
    /// the first failure of a namespace is logged, all are counted).
    pub(crate) fn ensure_flows(&mut self, policy: crate::track::TrackPolicy, metrics: &Metrics) {
        if !policy.tracks() {
            return;
        }
        let flows = self.flows.get_or_insert_with(|| crate::track::NamespaceFlows {
            table: crate::track::SocketTable::new(crate::clock::now_ns()),
            destroy: None,
            listener_failed: false,
        });
        if !policy.flow_events || flows.destroy.is_some() {
            return;
        }
        match enter::open_destroy_listener_in(&self.found) {
            Ok(listener) => flows.destroy = Some(listener),
            Err(e) => {
                metrics
                    .track
                    .listener_failures
                    .get_or_create(&KindLabel { kind: e.kind() })
                    .inc();
                if !flows.listener_failed {
                    flows.listener_failed = true;
                    tracing::warn!(netns = ?self.found.origin, error = %e, "cannot join the TCP destroy notifications: closes in this namespace come from the poll difference only");
                }
            }
        }
    }

    pub(crate) fn note_success(&mut self) {
        if self.failure_streak > 0 {
            tracing::info!(netns = ?self.found.origin, inode = self.found.id.ino, failed_polls = self.failure_streak, "namespace recovered");
            self.failure_streak = 0;
        }
    }
}

/// The namespaces being collected, keyed by identity.
#[derive(Default)]
pub struct NetnsRegistry {
    entries: HashMap<NetnsId, NetnsEntry>,
    /// `-populateNsid`: looks up each new namespace's nsid.
    nsids: Option<NsidLookup>,
    /// Tracked namespaces that vanished since the last poll, with what they
    /// held: the next poll closes their sockets (`track`).
    vanished: Vec<(NamespaceStamp, crate::track::NamespaceFlows)>,
}

/// `-populateNsid`'s rtnetlink socket, opened on first use and again after
/// a failure to open it (logged once).
#[derive(Default)]
struct NsidLookup {
    reader: Option<nsid::NsidReader>,
    logged: bool,
}

impl NsidLookup {
    /// The namespace's nsid; `None` when it has none or the lookup failed
    /// (counted in `xtcp2_attribution_source_failures_total`).
    fn lookup(&mut self, found: &DiscoveredNetns, metrics: &Metrics) -> Option<u32> {
        let result = match &mut self.reader {
            Some(reader) => reader.lookup(&found.path),
            None => nsid::NsidReader::open().and_then(|mut reader| {
                let answer = reader.lookup(&found.path);
                self.reader = Some(reader);
                answer
            }),
        };
        match result {
            Ok(id) => id,
            Err(e) => {
                metrics
                    .attribution
                    .source_failures
                    .get_or_create(&KindLabel { kind: e.kind() })
                    .inc();
                if !self.logged {
                    self.logged = true;
                    tracing::warn!(error = %e, path = %found.path.display(),
                        "--populate-nsid: namespace id lookup failed; nsid stays unset (further failures only counted)");
                }
                if matches!(e, nsid::NsidError::Request(_) | nsid::NsidError::Malformed(_)) {
                    // The socket may hold a late reply: start afresh.
                    self.reader = None;
                }
                None
            }
        }
    }
}

impl NetnsRegistry {
    pub fn new() -> Self {
        Self::default()
    }

    /// Stamps every namespace found from now on with its nsid.
    pub fn with_nsids(mut self, populate: bool) -> Self {
        self.nsids = populate.then(NsidLookup::default);
        self
    }

    /// Applies a discovery pass: new namespaces are added, vanished ones are
    /// removed and their sockets closed at once. A namespace whose origin
    /// changed (e.g. the holding process changed) keeps its socket.
    pub fn apply(&mut self, discovered: Vec<DiscoveredNetns>, metrics: &Metrics) {
        let mut seen: HashMap<NetnsId, DiscoveredNetns> = discovered.into_iter().map(|d| (d.id, d)).collect();
        let before = self.entries.len();
        let vanished = &mut self.vanished;
        self.entries.retain(|id, entry| match seen.remove(id) {
            Some(found) => {
                if found.origin != entry.found.origin {
                    // Same namespace, so the same nsid.
                    let nsid = entry.stamp.nsid;
                    entry.stamp = found.stamp();
                    entry.stamp.nsid = nsid;
                    entry.found = found;
                }
                true
            }
            None => {
                tracing::debug!(inode = id.ino, origin = ?entry.found.origin, "namespace gone; closing its socket");
                if let Some(flows) = entry.flows.take() {
                    if !flows.table.is_empty() {
                        vanished.push((entry.stamp.clone(), flows));
                    }
                }
                false
            }
        });
        let removed = before - self.entries.len();
        metrics.netns.removed.inc_by(removed as u64);
        for (id, found) in seen {
            tracing::debug!(inode = id.ino, origin = ?found.origin, "namespace discovered");
            metrics.netns.discovered.inc();
            let mut stamp = found.stamp();
            if let Some(nsids) = &mut self.nsids {
                stamp.nsid = nsids.lookup(&found, metrics);
            }
            self.entries.insert(
                id,
                NetnsEntry {
                    stamp,
                    found,
                    socket: None,
                    failure_streak: 0,
                    last_whole_sockets: None,
                    flows: None,
                },
            );
        }
        metrics.netns.active.set(self.entries.len() as i64);
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Sockets tracked and the bytes their tables hold, over every namespace.
    pub(crate) fn tracking_totals(&self) -> (usize, usize) {
        self.entries
            .values()
            .filter_map(|e| e.flows.as_ref())
            .fold((0, 0), |(n, b), f| (n + f.table.len(), b + f.table.memory_bytes()))
    }

    /// The tracked namespaces that vanished since the last call.
    pub(crate) fn take_vanished(&mut self) -> Vec<(NamespaceStamp, crate::track::NamespaceFlows)> {
        std::mem::take(&mut self.vanished)
    }

    /// All entries, for one poll to work through.
    pub(crate) fn entries_mut(&mut self) -> Vec<&mut NetnsEntry> {
        self.entries.values_mut().collect()
    }

    #[cfg(test)]
    fn ids(&self) -> Vec<NetnsId> {
        self.entries.keys().copied().collect()
    }

    /// Number of namespaces that currently hold an open socket.
    #[cfg(test)]
    fn open_sockets(&self) -> usize {
        self.entries.values().filter(|e| e.socket.is_some()).count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn found(ino: u64, origin: NetnsOrigin, path: &str) -> DiscoveredNetns {
        DiscoveredNetns {
            id: NetnsId { dev: 4, ino },
            path: PathBuf::from(path),
            origin,
        }
    }

    /// A namespace that cannot be entered is counted by kind, logged once
    /// per streak, and left for the next poll instead of failing the poll.
    #[test]
    fn enter_failure_is_counted_and_retried() {
        let metrics = Metrics::new();
        let mut registry = NetnsRegistry::new();
        registry.apply(
            vec![found(
                7,
                NetnsOrigin::Process { pid: 999_999_999 },
                "/proc/999999999/ns/net",
            )],
            &metrics,
        );
        for attempt in 1..=2 {
            let entry = registry.entries_mut().pop().unwrap();
            assert!(entry.ensure_socket(Duration::from_millis(100), 1, &metrics).is_none());
            assert_eq!(entry.failure_streak, attempt);
        }
        let kind = KindLabel { kind: "enoent" };
        assert_eq!(metrics.netns.enter_failures.get_or_create(&kind).get(), 2);
    }

    /// Vanished namespaces are removed at once, new ones added, and the
    /// gauges and counters follow.
    #[test]
    fn apply_adds_and_removes_namespaces() {
        let metrics = Metrics::new();
        let mut registry = NetnsRegistry::new();
        let name: Arc<str> = Arc::from("blue");
        registry.apply(
            vec![
                found(1, NetnsOrigin::Host, "/proc/self/ns/net"),
                found(2, NetnsOrigin::BindMount { name: name.clone() }, "/run/netns/blue"),
            ],
            &metrics,
        );
        assert_eq!(registry.len(), 2);
        assert_eq!(metrics.netns.active.get(), 2);
        registry.apply(vec![found(1, NetnsOrigin::Host, "/proc/self/ns/net")], &metrics);
        assert_eq!(registry.ids(), vec![NetnsId { dev: 4, ino: 1 }]);
        assert_eq!(metrics.netns.active.get(), 1);
        assert_eq!(metrics.netns.discovered.get(), 2);
        assert_eq!(metrics.netns.removed.get(), 1);
    }

    /// The host namespace's socket opens without setns and is kept until
    /// the namespace disappears from discovery.
    #[test]
    fn host_socket_is_opened_and_closed_with_the_namespace() {
        let metrics = Metrics::new();
        let mut registry = NetnsRegistry::new();
        registry.apply(vec![found(1, NetnsOrigin::Host, "/proc/self/ns/net")], &metrics);
        let entry = registry.entries_mut().pop().unwrap();
        assert!(entry.ensure_socket(Duration::from_millis(100), 1, &metrics).is_some());
        assert_eq!(registry.open_sockets(), 1);
        registry.apply(vec![], &metrics);
        assert_eq!(registry.open_sockets(), 0);
        assert!(registry.is_empty());
    }

    /// Namespace identity is stamped as the record fields expect.
    #[test]
    fn stamps_carry_name_or_pid() {
        let named = found(5, NetnsOrigin::BindMount { name: Arc::from("red") }, "/run/netns/red").stamp();
        assert_eq!(
            (named.inode, named.name.as_deref(), named.pid),
            (Some(5), Some("red"), None)
        );
        let held = found(6, NetnsOrigin::Process { pid: 42 }, "/proc/42/ns/net").stamp();
        assert_eq!((held.inode, held.name.as_deref(), held.pid), (Some(6), None, Some(42)));
    }
}
