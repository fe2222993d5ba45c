//! `--resolve-container-id` against real cgroup v2 directories: the test
//! creates, under the cgroup2 mount, one cgroup named as each container
//! runtime names its containers (Docker with both cgroup drivers,
//! containerd, CRI-O, Podman), a Kubernetes pod of each cgroup driver and a
//! systemd service; starts in each a process that opens a listening socket
//! there (a socket belongs to the cgroup its creator was in); runs the built
//! daemon once; and checks each socket's container id, runtime, pod UID and
//! unit against the names it created. A second test makes 10,000 cgroups
//! come and go under a live resolver and checks its index follows them
//! without growing.
//!
//! Needs root and a writable cgroup2 mount (CI has both). Every process is
//! killed and every cgroup removed when the test ends, failing or not.

mod support;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;

use support::{require, Need, Xtcp2};
use xtcp2::attribute::cgroup::{cgroup2_mount, CgroupResolver};
use xtcp2::attribute::{Attributor, Sources};
use xtcp2::metrics::Metrics;
use xtcp2::record::Record;

/// The cgroup2 mount, when this machine has one we may write (root).
fn cgroup2_root() -> Option<PathBuf> {
    if !require(Need::Root, "creating cgroups and moving processes needs root") {
        return None;
    }
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let root = cgroup2_mount(&mountinfo);
    let probe = match &root {
        None => Err("no cgroup2 mount in /proc/self/mountinfo".to_string()),
        Some(r) => {
            // Tests in this file run in parallel: each probes with its own name.
            static PROBES: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
            let n = PROBES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let dir = r.join(format!("xtcp2-test-probe-{}-{n}", std::process::id()));
            std::fs::create_dir(&dir)
                .and_then(|()| std::fs::remove_dir(&dir))
                .map_err(|e| format!("cannot create a cgroup under {}: {e}", r.display()))
        }
    };
    require(
        Need::Usable("a writable cgroup2 hierarchy", probe),
        "the test creates cgroups",
    )
    .then(|| root.unwrap())
}

/// Cgroups made by the test, and the processes in them: all removed on drop.
struct Cgroups {
    base: PathBuf,
    processes: Vec<Child>,
}

impl Cgroups {
    fn new(root: &Path, name: &str) -> Cgroups {
        let base = root.join(format!("xtcp2-test-{name}-{}", std::process::id()));
        std::fs::create_dir(&base).unwrap_or_else(|e| panic!("mkdir {}: {e}", base.display()));
        Cgroups {
            base,
            processes: Vec::new(),
        }
    }

    /// Makes `relative` (and its parents) under the base.
    fn make(&self, relative: &str) -> PathBuf {
        let dir = self.base.join(relative);
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
        dir
    }

    /// Starts a process that moves itself into `cgroup`, then listens on
    /// 127.0.0.1 (so its socket is the cgroup's); returns the port.
    fn listen_in(&mut self, cgroup: &Path) -> u16 {
        let script = "import socket,sys\n\
                      s=socket.socket()\n\
                      s.bind(('127.0.0.1',0))\n\
                      s.listen()\n\
                      print(s.getsockname()[1],flush=True)\n\
                      sys.stdin.read()\n";
        let mut child = Command::new("sh")
            .arg("-c")
            .arg(r#"echo $$ > "$1/cgroup.procs" && exec python3 -c "$2""#)
            .arg("sh")
            .arg(cgroup)
            .arg(script)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn sh");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("stdout"))
            .read_line(&mut line)
            .expect("read the port");
        self.processes.push(child);
        line.trim()
            .parse()
            .unwrap_or_else(|_| panic!("no port from the listener in {}: {line:?}", cgroup.display()))
    }
}

impl Drop for Cgroups {
    fn drop(&mut self) {
        for child in &mut self.processes {
            let _ = child.kill();
            let _ = child.wait();
        }
        remove_tree(&self.base);
    }
}

/// Removes a cgroup tree, deepest first (cgroupfs refuses recursive removal).
fn remove_tree(dir: &Path) {
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                remove_tree(&entry.path());
            }
        }
    }
    let _ = std::fs::remove_dir(dir);
}

fn hex_id(seed: u8) -> String {
    (0..32)
        .map(|i| format!("{:02x}", seed.wrapping_mul(31).wrapping_add(i * 7)))
        .collect()
}

/// Every runtime's naming, both Kubernetes cgroup drivers and a host
/// service: each listener's record carries the workload its cgroup names.
#[test]
fn sockets_are_attributed_to_the_workload_their_cgroup_names() {
    let Some(root) = cgroup2_root() else { return };
    let mut cgroups = Cgroups::new(&root, "attr");
    let uid_systemd = "0a1b2c3d-4e5f-4789-abcd-ef0123456789";
    let uid_cgroupfs = "9f8e7d6c-5b4a-4321-8fed-cba987654321";
    let ids: Vec<String> = (1..=7).map(hex_id).collect();
    let cases = [
        (
            format!("system.slice/docker-{}.scope", ids[0]),
            Some(0),
            Some("docker"),
            None,
            None,
        ),
        (format!("docker/{}", ids[1]), Some(1), Some("docker"), None, None),
        (
            format!("system.slice/cri-containerd-{}.scope", ids[2]),
            Some(2),
            Some("containerd"),
            None,
            None,
        ),
        (
            format!("machine.slice/crio-{}.scope", ids[3]),
            Some(3),
            Some("crio"),
            None,
            None,
        ),
        (
            format!("machine.slice/libpod-{}.scope", ids[4]),
            Some(4),
            Some("podman"),
            None,
            None,
        ),
        (
            format!(
                "kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{}.slice/cri-containerd-{}.scope",
                uid_systemd.replace('-', "_"),
                ids[5]
            ),
            Some(5),
            Some("containerd"),
            Some(uid_systemd),
            None,
        ),
        (
            format!("kubepods/burstable/pod{uid_cgroupfs}/{}", ids[6]),
            Some(6),
            None,
            Some(uid_cgroupfs),
            None,
        ),
        (
            "system.slice/xtcp2-test-nginx.service".to_string(),
            None,
            None,
            None,
            Some("xtcp2-test-nginx.service"),
        ),
    ];
    let mut expected = Vec::new();
    for (path, id, runtime, pod, unit) in &cases {
        let dir = cgroups.make(path);
        let port = cgroups.listen_in(&dir);
        expected.push((port, path.clone(), id.map(|i| ids[i].clone()), *runtime, *pod, *unit));
    }

    for schema in ["xtcp2", "xtcp_flat_record.v1"] {
        let out = Xtcp2::new()
            .args([
                "--max-loops",
                "1",
                "--netns-dirs",
                "",
                "--netns-proc-scan=false",
                "--prom-listen",
                "",
                "--states",
                "listen",
                "-resolveContainerId",
                "--record-schema",
                schema,
            ])
            .output();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "xtcp2: {}", String::from_utf8_lossy(&out.stderr));
        let records: Vec<serde_json::Value> = stdout
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
            .collect();
        let (port_key, id_key, runtime_key) = match schema {
            "xtcp2" => ("idiag_sport", "container_id", "container_runtime"),
            _ => ("inetDiagMsgSocketSourcePort", "containerId", "containerRuntime"),
        };
        for (port, path, id, runtime, pod, unit) in &expected {
            let record = records
                .iter()
                .find(|r| r[port_key].as_u64() == Some(u64::from(*port)))
                .unwrap_or_else(|| panic!("{schema}: no record of the listener on {port} in {path}"));
            assert_eq!(record[id_key].as_str(), id.as_deref(), "{schema} {path}: {record}");
            assert_eq!(record[runtime_key].as_str(), *runtime, "{schema} {path}: {record}");
            if schema == "xtcp2" {
                assert_eq!(record["pod_uid"].as_str(), *pod, "{path}: {record}");
                assert_eq!(record["systemd_unit"].as_str(), *unit, "{path}: {record}");
                assert!(record["cgroup_id"].as_u64().is_some(), "{path}: {record}");
            } else {
                // The Go record has no pod or unit column.
                assert!(record.get("podUid").is_none() && record.get("systemdUnit").is_none());
            }
        }
    }
    drop(cgroups);
}

/// 10,000 cgroups come and go in waves of 1,000 under a live resolver: each
/// new cgroup is found (by the walk its unknown id asks for), the index
/// holds the live cgroups only, and a netlinker's memo never outgrows it.
#[test]
fn the_index_follows_10000_cgroups_coming_and_going_without_growing() {
    let Some(root) = cgroup2_root() else { return };
    let cgroups = Cgroups::new(&root, "churn");
    let metrics = Arc::new(Metrics::new());
    let resolver = CgroupResolver::at(root.clone(), metrics.clone());
    let baseline = resolver.snapshot().cgroups.len();
    let mut attributor = Attributor::new(Sources {
        cgroups: Some(resolver.clone()),
        containers: None,
        uplinks: None,
    });
    const WAVES: usize = 10;
    const PER_WAVE: usize = 1_000;
    let mut largest = 0;
    let mut previous: Vec<u64> = Vec::new();
    for wave in 0..WAVES {
        let mut inodes = Vec::with_capacity(PER_WAVE);
        for i in 0..PER_WAVE {
            let id = format!("{:064x}", wave * PER_WAVE + i);
            let dir = cgroups.make(&format!("docker-{id}.scope"));
            use std::os::unix::fs::MetadataExt;
            inodes.push((std::fs::metadata(&dir).expect("stat cgroup").ino(), id));
        }
        // The walk is rate bounded: wait it out so this wave's first
        // unknown id walks.
        std::thread::sleep(xtcp2::attribute::cgroup::MIN_WALK_INTERVAL);
        attributor.start_namespace(None);
        for (inode, id) in &inodes {
            let mut record = Record {
                cgroup_id: Some(*inode),
                ..Record::default()
            };
            attributor.apply(&mut record);
            assert_eq!(record.container_id.as_deref(), Some(id.as_str()), "wave {wave}");
            assert_eq!(record.container_runtime.as_deref(), Some("docker"));
        }
        let snapshot = resolver.snapshot();
        let indexed = snapshot.cgroups.len();
        largest = largest.max(indexed);
        // This wave's cgroups are in, the last wave's are gone (other
        // tests on the host may add or remove a few of their own).
        assert!(
            inodes.iter().all(|(inode, _)| snapshot.cgroups.contains_key(inode)),
            "wave {wave}"
        );
        assert!(
            previous.iter().all(|inode| !snapshot.cgroups.contains_key(inode)),
            "wave {wave}: the last wave's cgroups are still indexed"
        );
        assert!(
            indexed < baseline + PER_WAVE + 500,
            "wave {wave}: {indexed} indexed, {baseline} before"
        );
        assert!(
            attributor.memo_len() <= indexed,
            "memo {} > index {indexed}",
            attributor.memo_len()
        );
        for (_, id) in &inodes {
            std::fs::remove_dir(cgroups.base.join(format!("docker-{id}.scope"))).expect("rmdir cgroup");
        }
        previous = inodes.iter().map(|(inode, _)| *inode).collect();
    }
    std::thread::sleep(xtcp2::attribute::cgroup::MIN_WALK_INTERVAL);
    let gone = resolver.refresh(&resolver.snapshot());
    assert!(
        gone.cgroups.len() < baseline + 500,
        "{} indexed after all were removed",
        gone.cgroups.len()
    );
    assert!(largest < baseline + PER_WAVE + 500);
    // One walk at start and one per wave.
    assert!(metrics.attribution.cgroup_walks.get() > WAVES as u64);
    drop(cgroups);
}
