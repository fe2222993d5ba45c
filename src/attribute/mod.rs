//! Workload attribution: which container, pod or service owns a socket.
//!
//! Each source is off by default and best-effort: one that cannot be read
//! is logged once and counted (`xtcp2_attribution_source_failures_total`),
//! and the records go out without its fields. None makes a system call per
//! socket: the sources are read into shared indexes beside the poll, and a
//! netlinker looks a socket up in memory.
//!
//! - [`cgroup`] (`--resolve-container-id`): the socket's `cgroup_id` → its
//!   cgroup v2 path → container id and runtime, pod UID, systemd unit;
//! - [`docker`] (`--enrich-container`): the Docker Engine's containers by
//!   network namespace → container id, name and image for every socket of
//!   the namespace;
//! - [`uplink`] (`--enrich-nic`, `--enrich-lldp`): the host's uplink NICs
//!   and their LLDP neighbours ([`lldp`]), the same on every record.
//!
//! This module must not know about netlink or output formats: it fills
//! fields of a [`Record`].

pub mod cgroup;
pub mod docker;
pub mod lldp;
pub mod uplink;

use std::sync::Arc;

use crate::record::Record;
use cgroup::{CgroupResolver, CgroupSnapshot, IdMap};
use docker::ContainerIndex;
use uplink::{UplinkIndex, Uplinks};

/// What a cgroup path or the container engine says owns a socket.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Workload {
    pub container_id: Option<Arc<str>>,
    pub container_runtime: Option<Arc<str>>,
    pub container_name: Option<Arc<str>>,
    pub container_image: Option<Arc<str>>,
    pub pod_uid: Option<Arc<str>>,
    pub systemd_unit: Option<Arc<str>>,
}

impl Workload {
    pub fn is_empty(&self) -> bool {
        *self == Workload::default()
    }

    /// A copy with strings of its own: every record clones them, and clones
    /// of one Arc shared by concurrent netlinkers bounce its reference count
    /// between cores (see `collect::private_copy`).
    fn private_copy(&self) -> Workload {
        let copy = |s: &Option<Arc<str>>| s.as_deref().map(Arc::from);
        Workload {
            container_id: copy(&self.container_id),
            container_runtime: copy(&self.container_runtime),
            container_name: copy(&self.container_name),
            container_image: copy(&self.container_image),
            pod_uid: copy(&self.pod_uid),
            systemd_unit: copy(&self.systemd_unit),
        }
    }
}

/// The attribution sources the daemon runs, shared by every netlinker.
#[derive(Clone, Default)]
pub struct Sources {
    pub cgroups: Option<Arc<CgroupResolver>>,
    pub containers: Option<Arc<ContainerIndex>>,
    pub uplinks: Option<Arc<UplinkIndex>>,
}

impl Sources {
    pub fn is_empty(&self) -> bool {
        self.cgroups.is_none() && self.containers.is_none() && self.uplinks.is_none()
    }
}

/// One netlinker's view of the sources: the snapshot it reads and a memo
/// of the workloads it has stamped, in strings of its own.
pub struct Attributor {
    sources: Sources,
    snapshot: Option<Arc<CgroupSnapshot>>,
    /// cgroup id → its workload (`None`: a cgroup that names none), for the
    /// snapshot's generation; bounded by the snapshot's size.
    memo: IdMap<Option<Workload>>,
    /// The current namespace's container (`--enrich-container`).
    namespace: Option<Workload>,
    /// The uplinks (`--enrich-nic`) in strings of this netlinker's own,
    /// and the index generation they are of.
    uplinks: Option<(u64, Uplinks)>,
}

impl Attributor {
    pub fn new(sources: Sources) -> Attributor {
        Attributor {
            sources,
            snapshot: None,
            memo: IdMap::default(),
            namespace: None,
            uplinks: None,
        }
    }

    /// Before a namespace's dump: takes the newest cgroup snapshot and
    /// looks the namespace's container up (one lock each, per namespace).
    pub fn start_namespace(&mut self, netns_inode: Option<u64>) {
        if let Some(resolver) = &self.sources.cgroups {
            let snapshot = resolver.snapshot();
            self.adopt(snapshot);
        }
        self.namespace = match (&self.sources.containers, netns_inode) {
            (Some(index), Some(inode)) => index.by_netns(inode).map(|w| w.private_copy()),
            _ => None,
        };
        if let Some(index) = &self.sources.uplinks {
            let (generation, current) = index.snapshot();
            if self.uplinks.as_ref().is_none_or(|(g, _)| *g != generation) {
                self.uplinks = Some((generation, current.private_copy()));
            }
        }
    }

    /// Cgroups this netlinker remembers (bounded by the snapshot's size).
    pub fn memo_len(&self) -> usize {
        self.memo.len()
    }

    fn adopt(&mut self, snapshot: Arc<CgroupSnapshot>) {
        if self
            .snapshot
            .as_ref()
            .is_none_or(|s| s.generation != snapshot.generation)
        {
            self.memo.clear();
            self.snapshot = Some(snapshot);
        }
    }

    /// Fills the record's workload fields. The cgroup says what runs the
    /// socket's owner; the container engine adds name and image, and the id
    /// and runtime when the cgroup did not name them.
    #[inline]
    pub fn apply(&mut self, record: &mut Record) {
        if let (Some(id), Some(_)) = (record.cgroup_id, &self.sources.cgroups) {
            if let Some(workload) = self.cgroup_workload(id) {
                record.container_id = workload.container_id.clone();
                record.container_runtime = workload.container_runtime.clone();
                record.pod_uid = workload.pod_uid.clone();
                record.systemd_unit = workload.systemd_unit.clone();
            }
        }
        if let Some(container) = &self.namespace {
            if record.container_id.is_none() {
                record.container_id = container.container_id.clone();
                record.container_runtime = container.container_runtime.clone();
            }
            if record.container_id == container.container_id {
                record.container_name = container.container_name.clone();
                record.container_image = container.container_image.clone();
            }
        }
        if let Some((_, uplinks)) = &self.uplinks {
            uplinks.apply(record);
        }
    }

    /// The workload of cgroup `id`, from the memo, else the snapshot, else
    /// a new walk (rate bounded by the resolver).
    fn cgroup_workload(&mut self, id: u64) -> Option<&Workload> {
        if !self.memo.contains_key(&id) {
            let resolver = self.sources.cgroups.as_ref()?;
            let mut snapshot = self.snapshot.clone().unwrap_or_else(|| resolver.snapshot());
            if !snapshot.cgroups.contains_key(&id) {
                snapshot = resolver.refresh(&snapshot);
            }
            self.adopt(snapshot.clone());
            let workload = snapshot
                .cgroups
                .get(&id)
                .and_then(|w| w.as_deref())
                .map(Workload::private_copy);
            // An id unknown even after a walk stays unknown for this
            // generation: its socket outlived its cgroup.
            self.memo.insert(id, workload);
        }
        self.memo.get(&id).and_then(Option::as_ref)
    }
}
