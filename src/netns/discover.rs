//! Discovery passes over every place a network namespace can be found.
//!
//! The `/proc` part is the expensive one: a `stat` of `/proc/PID/ns/net`
//! costs the kernel several microseconds per process (about 90 ms per pass
//! on a host with 10,000 processes). A daemon therefore keeps a
//! [`Discovery`], which remembers the namespace of every process it has
//! seen and, between full rescans, stats only processes that are new.

use std::collections::{HashMap, HashSet};
use std::os::unix::fs::{DirEntryExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{DiscoveredNetns, NetnsId, NetnsOrigin};

#[derive(Debug, Clone)]
pub struct DiscoveryConfig {
    /// Directories holding bind-mounted namespace files.
    pub dirs: Vec<PathBuf>,
    /// Scan `/proc/PID/ns/net` for namespaces held only by processes.
    pub proc_scan: bool,
    /// `/proc`, replaceable for tests.
    pub proc_root: PathBuf,
    /// How often a [`Discovery`] stats every process again, to catch a
    /// process that moved to another namespace (`unshare`, `setns`) after
    /// it was first seen; between full scans only new processes are
    /// stat'ed. Zero: every pass is a full scan.
    pub proc_rescan_interval: Duration,
}

/// Default of [`DiscoveryConfig::proc_rescan_interval`].
pub const DEFAULT_PROC_RESCAN_INTERVAL: Duration = Duration::from_secs(30);

impl DiscoveryConfig {
    pub fn new(dirs: Vec<PathBuf>, proc_scan: bool) -> Self {
        DiscoveryConfig {
            dirs,
            proc_scan,
            proc_root: PathBuf::from("/proc"),
            proc_rescan_interval: DEFAULT_PROC_RESCAN_INTERVAL,
        }
    }

    pub fn with_proc_rescan_interval(mut self, interval: Duration) -> Self {
        self.proc_rescan_interval = interval;
        self
    }
}

fn id_of(path: &Path) -> Option<NetnsId> {
    let meta = std::fs::metadata(path).ok()?;
    Some(NetnsId {
        dev: meta.dev(),
        ino: meta.ino(),
    })
}

/// Finds every namespace, host first, then bind mounts, then processes; a
/// namespace reachable several ways is reported once, by the first of those.
/// Every process is stat'ed: for one-off passes (`floor_dump`, tests).
pub fn discover(config: &DiscoveryConfig) -> Vec<DiscoveredNetns> {
    Discovery::new(config.clone().with_proc_rescan_interval(Duration::ZERO)).run(Instant::now())
}

/// What one pass over `/proc` did, for metrics and the benchmark.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ProcScanStats {
    /// Every known process was stat'ed again (else only new ones were).
    pub full: bool,
    /// Process directories listed in `/proc`.
    pub processes: usize,
    /// `stat` calls made on `/proc/PID/ns/net`.
    pub stats: usize,
}

#[derive(Debug, Clone, Copy)]
struct SeenProcess {
    proc_inode: u64,
    netns: Option<NetnsId>,
}

/// Repeated discovery for a daemon: the same result as [`discover`], with
/// the namespace of each process remembered between passes.
pub struct Discovery {
    config: DiscoveryConfig,
    /// The namespace each live process was last seen in, keyed by pid and
    /// checked against the inode of its `/proc/PID` directory entry: procfs
    /// gives a new process a new inode, so a reused pid is stat'ed again
    /// (so is an old one whose inode was evicted and rebuilt; that is only
    /// a wasted `stat`). `None` when its `ns/net` could not be read (EACCES
    /// without CAP_SYS_PTRACE, a process gone meanwhile): tried again at
    /// the next full scan.
    netns_of_pid: HashMap<u32, SeenProcess>,
    last_full_scan: Option<Instant>,
    last_proc_scan: ProcScanStats,
}

impl Discovery {
    pub fn new(config: DiscoveryConfig) -> Self {
        Discovery {
            config,
            netns_of_pid: HashMap::new(),
            last_full_scan: None,
            last_proc_scan: ProcScanStats::default(),
        }
    }

    /// What the last pass did in `/proc` (all zero when the scan is off).
    pub(crate) fn last_proc_scan(&self) -> ProcScanStats {
        self.last_proc_scan
    }

    /// One discovery pass at time `now`.
    pub fn run(&mut self, now: Instant) -> Vec<DiscoveredNetns> {
        let mut found: HashMap<NetnsId, DiscoveredNetns> = HashMap::new();
        let host_path = self.config.proc_root.join("self/ns/net");
        let Some(host) = id_of(&host_path) else {
            tracing::error!(path = %host_path.display(), "cannot stat the host network namespace");
            return Vec::new();
        };
        found.insert(
            host,
            DiscoveredNetns {
                id: host,
                path: host_path,
                origin: NetnsOrigin::Host,
            },
        );
        // Every namespace file lives on the one nsfs device; anything else in a
        // netns directory (a leftover empty file after a failed `ip netns add`)
        // is not a namespace.
        let nsfs_dev = host.dev;

        for dir in &self.config.dirs {
            let Ok(entries) = std::fs::read_dir(dir) else {
                continue;
            };
            for entry in entries.flatten() {
                let path = entry.path();
                let Some(id) = id_of(&path) else { continue };
                if id.dev != nsfs_dev || found.contains_key(&id) {
                    continue;
                }
                let name: Arc<str> = Arc::from(entry.file_name().to_string_lossy().as_ref());
                found.insert(
                    id,
                    DiscoveredNetns {
                        id,
                        path,
                        origin: NetnsOrigin::BindMount { name },
                    },
                );
            }
        }

        self.last_proc_scan = ProcScanStats::default();
        if self.config.proc_scan {
            self.scan_processes(now, nsfs_dev, &mut found);
        }

        let mut list: Vec<_> = found.into_values().collect();
        list.sort_by_key(|d| d.id);
        list
    }

    /// Adds namespaces held by processes, keeping the lowest pid for each
    /// (the longest-lived holder, usually the container's init).
    fn scan_processes(&mut self, now: Instant, nsfs_dev: u64, found: &mut HashMap<NetnsId, DiscoveredNetns>) {
        let proc_root = &self.config.proc_root;
        let Ok(entries) = std::fs::read_dir(proc_root) else {
            tracing::warn!(path = %proc_root.display(), "cannot read /proc; process-held namespaces are not collected");
            return;
        };
        let full = self
            .last_full_scan
            .is_none_or(|at| now.saturating_duration_since(at) >= self.config.proc_rescan_interval);
        if full {
            self.last_full_scan = Some(now);
        }
        let mut stats = ProcScanStats {
            full,
            ..ProcScanStats::default()
        };
        let mut live: HashSet<u32> = HashSet::with_capacity(self.netns_of_pid.len());
        for entry in entries.flatten() {
            let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
                continue;
            };
            stats.processes += 1;
            live.insert(pid);
            let proc_inode = entry.ino();
            let id = match self.netns_of_pid.get(&pid) {
                Some(seen) if !full && seen.proc_inode == proc_inode => seen.netns,
                _ => {
                    stats.stats += 1;
                    // EACCES without CAP_SYS_PTRACE, ENOENT for exited
                    // processes: both are expected and simply skipped.
                    let netns = id_of(&netns_path(proc_root, pid));
                    self.netns_of_pid.insert(pid, SeenProcess { proc_inode, netns });
                    netns
                }
            };
            let Some(id) = id else { continue };
            if id.dev != nsfs_dev {
                continue;
            }
            match found.get_mut(&id) {
                None => {
                    found.insert(
                        id,
                        DiscoveredNetns {
                            id,
                            path: netns_path(proc_root, pid),
                            origin: NetnsOrigin::Process { pid },
                        },
                    );
                }
                Some(existing) => {
                    if let NetnsOrigin::Process { pid: held } = existing.origin {
                        if pid < held {
                            existing.origin = NetnsOrigin::Process { pid };
                            existing.path = netns_path(proc_root, pid);
                        }
                    }
                }
            }
        }
        // A pid seen again later is a new process (pids are reused).
        self.netns_of_pid.retain(|pid, _| live.contains(pid));
        self.last_proc_scan = stats;
    }
}

fn netns_path(proc_root: &Path, pid: u32) -> PathBuf {
    let mut path = proc_root.to_path_buf();
    path.push(pid.to_string());
    path.push("ns/net");
    path
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The host namespace is always found, first, and only once even though
    /// our own process also holds it.
    #[test]
    fn host_namespace_is_found_once() {
        let found = discover(&DiscoveryConfig::new(vec![], true));
        let hosts: Vec<_> = found.iter().filter(|d| d.origin == NetnsOrigin::Host).collect();
        assert_eq!(hosts.len(), 1);
        let self_id = id_of(Path::new("/proc/self/ns/net")).unwrap();
        assert_eq!(hosts[0].id, self_id);
        assert_eq!(found.iter().filter(|d| d.id == self_id).count(), 1);
    }

    /// A fake /proc whose "processes" point at this process's own namespace
    /// files: every kind lives on nsfs with its own inode, so each stands in
    /// for a distinct network namespace without needing root.
    struct FakeProc {
        root: tempfile::TempDir,
    }

    impl FakeProc {
        fn new() -> Self {
            let fake = FakeProc {
                root: tempfile::tempdir().unwrap(),
            };
            fake.link("self", "net");
            fake
        }

        fn link(&self, entry: &str, kind: &str) {
            let ns = self.root.path().join(entry).join("ns");
            std::fs::create_dir_all(&ns).unwrap();
            let _ = std::fs::remove_file(ns.join("net"));
            std::os::unix::fs::symlink(format!("/proc/self/ns/{kind}"), ns.join("net")).unwrap();
        }

        fn discovery(&self, rescan: Duration) -> Discovery {
            let mut config = DiscoveryConfig::new(vec![], true).with_proc_rescan_interval(rescan);
            config.proc_root = self.root.path().to_path_buf();
            Discovery::new(config)
        }
    }

    fn pids(found: &[DiscoveredNetns]) -> Vec<(u64, u32)> {
        let mut v: Vec<_> = found
            .iter()
            .filter_map(|d| match d.origin {
                NetnsOrigin::Process { pid } => Some((d.id.ino, pid)),
                _ => None,
            })
            .collect();
        v.sort();
        v
    }

    fn ino(kind: &str) -> u64 {
        id_of(Path::new(&format!("/proc/self/ns/{kind}"))).unwrap().ino
    }

    /// Between full scans only new processes (or reused pids) are stat'ed;
    /// a process that moved namespace is caught by the next full scan; an
    /// exited process's namespace goes at once.
    #[test]
    fn incremental_scan_stats_only_new_processes() {
        let fake = FakeProc::new();
        fake.link("100", "uts");
        fake.link("200", "ipc");
        fake.link("250", "ipc");
        let mut discovery = fake.discovery(Duration::from_secs(3600));
        let t0 = Instant::now();

        let found = discovery.run(t0);
        let first = discovery.last_proc_scan();
        assert_eq!((first.full, first.processes, first.stats), (true, 3, 3));
        assert_eq!(pids(&found), {
            let mut v = vec![(ino("uts"), 100), (ino("ipc"), 200)];
            v.sort();
            v
        });

        assert_eq!(pids(&discovery.run(t0)), pids(&found));
        let again = discovery.last_proc_scan();
        assert_eq!((again.full, again.processes, again.stats), (false, 3, 0));

        // A new process: one stat.
        fake.link("300", "mnt");
        let found = discovery.run(t0);
        assert_eq!(discovery.last_proc_scan().stats, 1);
        assert!(pids(&found).contains(&(ino("mnt"), 300)));

        // Pid 300 exits and the pid is reused by a process elsewhere: its
        // /proc entry is a new inode, so it is stat'ed again.
        fake.link("spare", "pid");
        std::fs::remove_dir_all(fake.root.path().join("300")).unwrap();
        std::fs::rename(fake.root.path().join("spare"), fake.root.path().join("300")).unwrap();
        let found = discovery.run(t0);
        assert_eq!(discovery.last_proc_scan().stats, 1);
        assert!(pids(&found).contains(&(ino("pid"), 300)));
        assert!(!pids(&found).iter().any(|&(i, _)| i == ino("mnt")));

        // Pid 100 moves to another namespace (same /proc entry): unseen
        // until the rescan interval has passed.
        fake.link("100", "cgroup");
        assert!(pids(&discovery.run(t0)).contains(&(ino("uts"), 100)));
        let found = discovery.run(t0 + Duration::from_secs(3600));
        let full = discovery.last_proc_scan();
        assert_eq!((full.full, full.stats), (true, 4));
        assert!(pids(&found).contains(&(ino("cgroup"), 100)));
        assert!(!pids(&found).iter().any(|&(i, _)| i == ino("uts")));

        // The lowest holder exits: the namespace stays, held by the next.
        std::fs::remove_dir_all(fake.root.path().join("200")).unwrap();
        assert!(pids(&discovery.run(t0 + Duration::from_secs(3600))).contains(&(ino("ipc"), 250)));
        assert_eq!(discovery.last_proc_scan().stats, 0);
    }

    /// With a zero interval every pass stats every process, like `discover`.
    #[test]
    fn zero_rescan_interval_is_always_full() {
        let fake = FakeProc::new();
        fake.link("100", "uts");
        let mut discovery = fake.discovery(Duration::ZERO);
        let now = Instant::now();
        for _ in 0..3 {
            discovery.run(now);
            let scan = discovery.last_proc_scan();
            assert_eq!((scan.full, scan.stats), (true, 1));
        }
    }

    /// Plain files in a watched directory are not namespaces.
    #[test]
    fn non_nsfs_files_are_ignored() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("leftover"), b"").unwrap();
        let found = discover(&DiscoveryConfig::new(vec![dir.path().to_path_buf()], false));
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].origin, NetnsOrigin::Host);
    }
}
