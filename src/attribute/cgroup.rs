//! `--resolve-container-id`: a socket's `cgroup_id` (the inode of its cgroup
//! v2 directory) → the workload that owns it, read from the cgroup's path.
//!
//! The index is built by walking the cgroup2 mount with `getdents` alone
//! (a directory entry carries its inode, so no `stat` per cgroup) and is
//! shared by every netlinker as an immutable snapshot. An id no snapshot
//! knows (a container started since the last walk) asks for a new walk, at
//! most once per [`MIN_WALK_INTERVAL`]; the index holds at most
//! [`MAX_CGROUPS`] cgroups, so memory stays bounded whatever churns.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::os::unix::fs::DirEntryExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use super::Workload;
use crate::metrics::{KindLabel, Metrics};

/// Cgroups indexed at most. A busy Kubernetes node has a few thousand; the
/// cap only guards memory against something creating cgroups without end
/// (each entry is tens of bytes plus the strings of its workload).
pub const MAX_CGROUPS: usize = 200_000;

/// Deepest cgroup directory walked: systemd and Kubernetes nest 6-8 deep;
/// the cap keeps a pathological tree from recursing without end.
const MAX_DEPTH: usize = 32;

/// Unknown ids ask for a new walk at most this often: a socket whose cgroup
/// was removed (the socket keeps the id) must not make every poll walk.
pub const MIN_WALK_INTERVAL: Duration = Duration::from_secs(2);

/// Where the cgroup2 hierarchy is mounted, from `/proc/self/mountinfo`
/// text: `/sys/fs/cgroup` on unified hosts, `/sys/fs/cgroup/unified` on
/// hybrid ones. The first cgroup2 mount wins.
pub fn cgroup2_mount(mountinfo: &str) -> Option<PathBuf> {
    mountinfo.lines().find_map(|line| {
        // `ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTS [OPTIONAL...] - FSTYPE SOURCE SUPER`
        let (left, right) = line.split_once(" - ")?;
        if right.split_whitespace().next()? != "cgroup2" {
            return None;
        }
        left.split_whitespace()
            .nth(4)
            .map(|p| PathBuf::from(unescape_mount_path(p)))
    })
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
fn unescape_mount_path(raw: &str) -> String {
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' && i + 3 < bytes.len() && bytes[i + 1..i + 4].iter().all(|b| (b'0'..=b'7').contains(b)) {
            let v = (bytes[i + 1] - b'0') * 64 + (bytes[i + 2] - b'0') * 8 + (bytes[i + 3] - b'0');
            out.push(v);
            i += 4;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The workload a cgroup path (relative to the cgroup2 root, `/`-separated)
/// names: the innermost container scope, the Kubernetes pod slice of either
/// cgroup driver, or else the innermost systemd unit.
///
/// Recognised container names (the runtime's own):
/// - Docker: `docker-<id>.scope` (systemd driver), `/docker/<id>` (cgroupfs);
/// - containerd (CRI): `cri-containerd-<id>.scope`, and a bare `<id>` under a
///   pod (cgroupfs driver; its runtime is not in the path);
/// - CRI-O: `crio-<id>.scope` (`crio-conmon-<id>` is its monitor, not the container);
/// - Podman: `libpod-<id>.scope` (`libpod-conmon-<id>` likewise).
pub fn parse_cgroup_path(path: &str) -> Workload {
    let mut workload = Workload::default();
    let mut unit: Option<&str> = None;
    let mut previous = "";
    let mut under_kubepods = false;
    for component in path.split('/').filter(|c| !c.is_empty()) {
        if component.starts_with("kubepods") {
            under_kubepods = true;
        }
        if let Some(uid) = pod_uid(component, under_kubepods) {
            workload.pod_uid = Some(Arc::from(uid.as_str()));
        } else if let Some((runtime, id)) = container(component, previous, workload.pod_uid.is_some()) {
            workload.container_runtime = runtime.map(Arc::from);
            workload.container_id = Some(Arc::from(id));
        } else if component.ends_with(".service") || component.ends_with(".scope") {
            unit = Some(component);
        }
        previous = component;
    }
    if workload.container_id.is_none() && workload.pod_uid.is_none() {
        workload.systemd_unit = unit.map(Arc::from);
    }
    workload
}

/// The container a path component names, with its runtime when the name
/// says it.
fn container<'a>(component: &'a str, previous: &str, in_pod: bool) -> Option<(Option<&'static str>, &'a str)> {
    const PREFIXES: [(&str, &str); 4] = [
        ("docker-", "docker"),
        ("cri-containerd-", "containerd"),
        ("crio-", "crio"),
        ("libpod-", "podman"),
    ];
    let bare = component.strip_suffix(".scope").unwrap_or(component);
    for (prefix, runtime) in PREFIXES {
        if let Some(id) = bare.strip_prefix(prefix) {
            // `crio-conmon-<id>`, `libpod-conmon-<id>`: not hex, not a container.
            return is_container_id(id).then_some((Some(runtime), id));
        }
    }
    if is_container_id(component) && is_full_id(component) {
        if previous == "docker" {
            return Some((Some("docker"), component));
        }
        if in_pod {
            return Some((None, component));
        }
    }
    None
}

/// Container ids are lower-case hex; runtimes use 64 digits, short forms 12.
fn is_container_id(s: &str) -> bool {
    s.len() >= 12 && s.len() <= 128 && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// A bare directory name is taken as a container id only at full length,
/// so an ordinary cgroup named in hex is not mistaken for one.
fn is_full_id(s: &str) -> bool {
    s.len() == 64
}

/// The pod UID (with dashes) a Kubernetes cgroup names: the systemd
/// driver's `kubepods-burstable-pod<uid with _>.slice` (or
/// `kubepods-pod<uid>.slice` for guaranteed pods) and the cgroupfs
/// driver's `pod<uid>` under `kubepods`.
fn pod_uid(component: &str, under_kubepods: bool) -> Option<String> {
    let raw = if let Some(slice) = component.strip_suffix(".slice") {
        let start = slice.strip_prefix("kubepods")?;
        let at = start.rfind("-pod")?;
        &start[at + 4..]
    } else if under_kubepods {
        component.strip_prefix("pod")?
    } else {
        return None;
    };
    let uid = raw.replace('_', "-");
    is_uid(&uid).then_some(uid)
}

/// A UID as Kubernetes writes it: 8-4-4-4-12 hex digits.
fn is_uid(s: &str) -> bool {
    let groups: Vec<&str> = s.split('-').collect();
    groups.len() == 5
        && groups
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(g, len)| g.len() == len && g.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// Hashes a cgroup id (an inode number, already well spread) with one
/// multiplication, not SipHash: the lookup is on every socket.
#[derive(Default)]
pub struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(b)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

pub type IdMap<V> = HashMap<u64, V, BuildHasherDefault<IdHasher>>;

/// One walk of the hierarchy: every cgroup's id and, when its path names
/// one, its workload.
#[derive(Debug, Default)]
pub struct CgroupSnapshot {
    /// Numbered from 1 by walk; collectors drop their memo when it changes.
    pub generation: u64,
    /// Every cgroup seen; `None` for a cgroup that names no workload.
    pub cgroups: IdMap<Option<Arc<Workload>>>,
    /// The walk stopped at [`MAX_CGROUPS`].
    pub truncated: bool,
}

impl CgroupSnapshot {
    /// Walks `root` (the cgroup2 mount). Unreadable directories (a cgroup
    /// removed mid-walk) are skipped.
    pub fn walk(root: &Path, generation: u64) -> std::io::Result<CgroupSnapshot> {
        let mut snapshot = CgroupSnapshot {
            generation,
            ..CgroupSnapshot::default()
        };
        let root_meta = std::fs::metadata(root)?;
        use std::os::unix::fs::MetadataExt;
        snapshot.cgroups.insert(root_meta.ino(), None);
        let mut stack: Vec<(PathBuf, String, usize)> = vec![(root.to_path_buf(), String::new(), 0)];
        while let Some((dir, rel, depth)) = stack.pop() {
            let Ok(entries) = std::fs::read_dir(&dir) else { continue };
            for entry in entries.flatten() {
                // cgroupfs directories report DT_DIR; files are the controls.
                if !entry.file_type().is_ok_and(|t| t.is_dir()) {
                    continue;
                }
                if snapshot.cgroups.len() >= MAX_CGROUPS {
                    snapshot.truncated = true;
                    return Ok(snapshot);
                }
                let name = entry.file_name();
                let name = name.to_string_lossy();
                let path = format!("{rel}/{name}");
                let workload = parse_cgroup_path(&path);
                let value = (!workload.is_empty()).then(|| Arc::new(workload));
                snapshot.cgroups.insert(entry.ino(), value);
                if depth + 1 < MAX_DEPTH {
                    stack.push((entry.path(), path, depth + 1));
                }
            }
        }
        Ok(snapshot)
    }
}

/// The shared index: the current snapshot and the rate-bounded walk.
pub struct CgroupResolver {
    root: PathBuf,
    current: RwLock<Arc<CgroupSnapshot>>,
    /// When the last walk was made; held while walking, so concurrent
    /// misses wait for one walk instead of each making their own.
    last_walk: Mutex<Option<Instant>>,
    metrics: Arc<Metrics>,
}

impl CgroupResolver {
    /// Finds the cgroup2 mount and walks it once. `None` (logged, counted)
    /// when there is none or it cannot be read: attribution is best-effort.
    pub fn start(metrics: Arc<Metrics>) -> Option<Arc<CgroupResolver>> {
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        let Some(root) = cgroup2_mount(&mountinfo) else {
            metrics
                .attribution
                .source_failures
                .get_or_create(&KindLabel { kind: "cgroup_mount" })
                .inc();
            tracing::warn!(
                "--resolve-container-id: no cgroup2 mount in /proc/self/mountinfo; container ids stay unset"
            );
            return None;
        };
        Some(Self::at(root, metrics))
    }

    /// A resolver of the hierarchy mounted at `root`.
    pub fn at(root: PathBuf, metrics: Arc<Metrics>) -> Arc<CgroupResolver> {
        let resolver = Arc::new(CgroupResolver {
            root,
            current: RwLock::new(Arc::new(CgroupSnapshot::default())),
            last_walk: Mutex::new(None),
            metrics,
        });
        resolver.walk_now(&mut resolver.last_walk.lock().unwrap_or_else(|p| p.into_inner()));
        resolver
    }

    /// The current snapshot (one lock per namespace dump, not per socket).
    pub fn snapshot(&self) -> Arc<CgroupSnapshot> {
        self.current.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Called on an id `seen` (the snapshot the caller has) does not know:
    /// walks again unless another thread already did since, or the last
    /// walk is younger than [`MIN_WALK_INTERVAL`]. Returns the newest snapshot.
    pub fn refresh(&self, seen: &CgroupSnapshot) -> Arc<CgroupSnapshot> {
        self.metrics.attribution.cgroup_misses.inc();
        let mut last = self.last_walk.lock().unwrap_or_else(|p| p.into_inner());
        let current = self.snapshot();
        if current.generation != seen.generation {
            return current;
        }
        if last.is_some_and(|at| at.elapsed() < MIN_WALK_INTERVAL) {
            return current;
        }
        self.walk_now(&mut last)
    }

    fn walk_now(&self, last: &mut Option<Instant>) -> Arc<CgroupSnapshot> {
        let started = Instant::now();
        *last = Some(started);
        let generation = self.snapshot().generation + 1;
        let m = &self.metrics.attribution;
        m.cgroup_walks.inc();
        match CgroupSnapshot::walk(&self.root, generation) {
            Ok(snapshot) => {
                if snapshot.truncated {
                    m.source_failures.get_or_create(&KindLabel { kind: "cgroup_cap" }).inc();
                    static TRUNCATED: crate::log_throttle::LogThrottle =
                        crate::log_throttle::LogThrottle::new(Duration::from_secs(3600));
                    if let Some(suppressed) = TRUNCATED.admit() {
                        tracing::warn!(
                            cap = MAX_CGROUPS,
                            suppressed,
                            "--resolve-container-id: more cgroups than the index holds; the rest stay unattributed"
                        );
                    }
                }
                m.cgroups.set(snapshot.cgroups.len() as i64);
                tracing::debug!(cgroups = snapshot.cgroups.len(), took = ?started.elapsed(), "cgroup index walked");
                let snapshot = Arc::new(snapshot);
                *self.current.write().unwrap_or_else(|p| p.into_inner()) = snapshot.clone();
                snapshot
            }
            Err(e) => {
                m.source_failures
                    .get_or_create(&KindLabel { kind: "cgroup_walk" })
                    .inc();
                static FAILED: crate::log_throttle::LogThrottle =
                    crate::log_throttle::LogThrottle::new(Duration::from_secs(3600));
                if let Some(suppressed) = FAILED.admit() {
                    tracing::warn!(root = %self.root.display(), error = %e, suppressed, "--resolve-container-id: cannot read the cgroup2 hierarchy; container ids stay unset");
                }
                self.snapshot()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "4f1c9bdb0d9c5e2d8b7a6f5e4d3c2b1a0f9e8d7c6b5a4938271605f4e3d2c1b0";

    fn parse(path: &str) -> (Option<String>, Option<String>, Option<String>, Option<String>) {
        let w = parse_cgroup_path(path);
        let s = |v: Option<Arc<str>>| v.map(|s| s.to_string());
        (
            s(w.container_id),
            s(w.container_runtime),
            s(w.pod_uid),
            s(w.systemd_unit),
        )
    }

    fn some(s: &str) -> Option<String> {
        Some(s.to_string())
    }

    /// Docker under either cgroup driver, including nested (cgroupns) forms.
    #[test]
    fn docker_paths() {
        let docker = (some(ID), some("docker"), None, None);
        assert_eq!(parse(&format!("/system.slice/docker-{ID}.scope")), docker);
        assert_eq!(parse(&format!("/docker/{ID}")), docker);
        assert_eq!(parse(&format!("/system.slice/docker-{ID}.scope/init.scope")), docker);
        assert_eq!(parse(&format!("/docker/{ID}/child")), docker);
        // The daemon itself is a unit, not a container.
        assert_eq!(
            parse("/system.slice/docker.service"),
            (None, None, None, some("docker.service"))
        );
    }

    /// containerd, CRI-O and Podman scopes; their monitors are not containers.
    #[test]
    fn cri_and_podman_paths() {
        assert_eq!(
            parse(&format!("/system.slice/cri-containerd-{ID}.scope")),
            (some(ID), some("containerd"), None, None)
        );
        assert_eq!(
            parse(&format!("/machine.slice/crio-{ID}.scope")),
            (some(ID), some("crio"), None, None)
        );
        assert_eq!(
            parse(&format!("/machine.slice/libpod-{ID}.scope/container")),
            (some(ID), some("podman"), None, None)
        );
        assert_eq!(
            parse(&format!(
                "/user.slice/user-1000.slice/user@1000.service/user.slice/libpod-{ID}.scope"
            )),
            (some(ID), some("podman"), None, None)
        );
        assert_eq!(
            parse(&format!("/machine.slice/libpod-conmon-{ID}.scope")),
            (None, None, None, some(&format!("libpod-conmon-{ID}.scope")))
        );
        assert_eq!(
            parse(&format!("/machine.slice/crio-conmon-{ID}.scope")),
            (None, None, None, some(&format!("crio-conmon-{ID}.scope")))
        );
    }

    /// Kubernetes pods, systemd driver: the UID's dashes are underscores in
    /// the slice name; guaranteed pods have no QoS level in it.
    #[test]
    fn kubernetes_systemd_driver_paths() {
        let uid = "0a1b2c3d-4e5f-6789-abcd-ef0123456789";
        let slice_uid = uid.replace('-', "_");
        let base = format!("/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{slice_uid}.slice");
        assert_eq!(
            parse(&format!("{base}/cri-containerd-{ID}.scope")),
            (some(ID), some("containerd"), some(uid), None)
        );
        assert_eq!(
            parse(&format!("{base}/crio-{ID}.scope")),
            (some(ID), some("crio"), some(uid), None)
        );
        assert_eq!(
            parse(&format!("{base}/docker-{ID}.scope")),
            (some(ID), some("docker"), some(uid), None)
        );
        // The pod's own cgroup (the sandbox's parent) has the pod only.
        assert_eq!(parse(&base), (None, None, some(uid), None));
        assert_eq!(
            parse(&format!(
                "/kubepods.slice/kubepods-pod{slice_uid}.slice/cri-containerd-{ID}.scope"
            )),
            (some(ID), some("containerd"), some(uid), None)
        );
        assert_eq!(
            parse(&format!(
                "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{slice_uid}.slice"
            )),
            (None, None, some(uid), None)
        );
    }

    /// Kubernetes pods, cgroupfs driver: `pod<uid>` and a bare container id.
    #[test]
    fn kubernetes_cgroupfs_driver_paths() {
        let uid = "0a1b2c3d-4e5f-6789-abcd-ef0123456789";
        assert_eq!(
            parse(&format!("/kubepods/burstable/pod{uid}/{ID}")),
            (some(ID), None, some(uid), None)
        );
        assert_eq!(
            parse(&format!("/kubepods/pod{uid}/{ID}")),
            (some(ID), None, some(uid), None)
        );
        assert_eq!(
            parse(&format!("/kubepods/besteffort/pod{uid}/crio-{ID}")),
            (some(ID), some("crio"), some(uid), None)
        );
        // `pod...` outside kubepods is an ordinary cgroup.
        assert_eq!(parse(&format!("/pod{uid}/{ID}")), (None, None, None, None));
    }

    /// Host services and sessions: the innermost unit.
    #[test]
    fn systemd_units() {
        assert_eq!(
            parse("/system.slice/nginx.service"),
            (None, None, None, some("nginx.service"))
        );
        assert_eq!(
            parse("/user.slice/user-1000.slice/session-3.scope"),
            (None, None, None, some("session-3.scope"))
        );
        assert_eq!(
            parse("/user.slice/user-1000.slice/user@1000.service/app.slice/foo.service"),
            (None, None, None, some("foo.service"))
        );
        assert_eq!(parse("/"), (None, None, None, None));
        assert_eq!(parse(""), (None, None, None, None));
        assert_eq!(parse("/init.scope"), (None, None, None, some("init.scope")));
        assert_eq!(parse("/system.slice"), (None, None, None, None));
    }

    /// Lookalikes are not containers: short, upper-case or non-hex ids, and
    /// a bare id outside docker/kubepods.
    #[test]
    fn lookalikes_are_not_containers() {
        assert_eq!(parse("/system.slice/docker-xyz.scope").0, None);
        assert_eq!(
            parse(&format!("/system.slice/docker-{}.scope", ID.to_uppercase())).0,
            None
        );
        assert_eq!(parse(&format!("/other/{ID}")).0, None);
        assert_eq!(parse("/docker/abc").0, None);
        assert_eq!(parse("/kubepods.slice/kubepods-burstable-podnot_a_uid.slice").2, None);
    }

    /// The cgroup2 mount is found on unified and hybrid hosts, escaped paths included.
    #[test]
    fn cgroup2_mount_from_mountinfo() {
        let hybrid = "25 30 0:23 / /sys rw,nosuid - sysfs sysfs rw\n\
                      41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw\n\
                      42 31 0:39 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n";
        assert_eq!(cgroup2_mount(hybrid), Some(PathBuf::from("/sys/fs/cgroup/unified")));
        let unified =
            "30 24 0:26 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 rw,nsdelegate\n";
        assert_eq!(cgroup2_mount(unified), Some(PathBuf::from("/sys/fs/cgroup")));
        let escaped = "30 24 0:26 / /mnt/cg\\040two rw - cgroup2 none rw\n";
        assert_eq!(cgroup2_mount(escaped), Some(PathBuf::from("/mnt/cg two")));
        assert_eq!(
            cgroup2_mount("42 31 0:39 / /sys/fs/cgroup/memory rw - cgroup cgroup rw\n"),
            None
        );
        assert_eq!(cgroup2_mount("garbage\n\n"), None);
    }

    /// The id hasher spreads consecutive inode numbers.
    #[test]
    fn id_hasher_spreads_ids() {
        let mut map: IdMap<u32> = IdMap::default();
        for i in 0..1000u64 {
            map.insert(i, i as u32);
        }
        assert_eq!(map.get(&999), Some(&999));
        assert_eq!(map.len(), 1000);
    }
}
