//! One discovery pass over every place a network namespace can be found.

use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::{DiscoveredNetns, NetnsId, NetnsOrigin};

#[derive(Debug, Clone)]
pub struct DiscoveryConfig {
    /// Directories holding bind-mounted namespace files.
    pub dirs: Vec<PathBuf>,
    /// Scan `/proc/PID/ns/net` for namespaces held only by processes.
    pub proc_scan: bool,
    /// `/proc`, replaceable for tests.
    pub proc_root: PathBuf,
}

impl DiscoveryConfig {
    pub fn new(dirs: Vec<PathBuf>, proc_scan: bool) -> Self {
        DiscoveryConfig {
            dirs,
            proc_scan,
            proc_root: PathBuf::from("/proc"),
        }
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
pub fn discover(config: &DiscoveryConfig) -> Vec<DiscoveredNetns> {
    let mut found: HashMap<NetnsId, DiscoveredNetns> = HashMap::new();
    let host_path = config.proc_root.join("self/ns/net");
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

    for dir in &config.dirs {
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

    if config.proc_scan {
        scan_processes(&config.proc_root, nsfs_dev, &mut found);
    }

    let mut list: Vec<_> = found.into_values().collect();
    list.sort_by_key(|d| d.id);
    list
}

/// Adds namespaces held by processes, keeping the lowest pid for each (the
/// longest-lived holder, usually the container's init).
fn scan_processes(proc_root: &Path, nsfs_dev: u64, found: &mut HashMap<NetnsId, DiscoveredNetns>) {
    let Ok(entries) = std::fs::read_dir(proc_root) else {
        tracing::warn!(path = %proc_root.display(), "cannot read /proc; process-held namespaces are not collected");
        return;
    };
    for entry in entries.flatten() {
        let file_name = entry.file_name();
        let Some(pid) = file_name.to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let path = proc_root.join(file_name).join("ns/net");
        // EACCES without CAP_SYS_PTRACE, ENOENT for exited processes and
        // kernel threads: both are expected and simply skipped.
        let Some(id) = id_of(&path) else { continue };
        if id.dev != nsfs_dev {
            continue;
        }
        match found.get_mut(&id) {
            None => {
                found.insert(
                    id,
                    DiscoveredNetns {
                        id,
                        path,
                        origin: NetnsOrigin::Process { pid },
                    },
                );
            }
            Some(existing) => {
                if let NetnsOrigin::Process { pid: held } = existing.origin {
                    if pid < held {
                        existing.origin = NetnsOrigin::Process { pid };
                        existing.path = path;
                    }
                }
            }
        }
    }
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
