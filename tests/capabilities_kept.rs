//! Issue 22 point 6: started as root, the real binary keeps only the
//! capabilities its configuration needs, on every thread, in every set
//! (effective, permitted, bounding; inheritable and ambient empty), with
//! `no_new_privs` set, and still does its work with what it kept: sockets
//! from a named and a process-held namespace, datagrams through the raw
//! socket of `udp:`, a listener on a privileged port.
//!
//! The sets are read the way an operator would: `/proc/PID/task/TID/status`
//! of every thread of the running daemon, sampled repeatedly so threads
//! that come and go (netlinkers, setns helpers) are caught too.
//!
//! Needs root, iproute2 and util-linux. Skipped with a note otherwise;
//! under `CI=true` a missing prerequisite fails the test instead.

mod netns_support;
mod observability_support;
mod support;

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use netns_support::*;
use observability_support::{sample, HttpDaemon as Daemon};

/// Capability numbers (linux/capability.h).
const CAP_NET_BIND_SERVICE: u32 = 10;
const CAP_NET_ADMIN: u32 = 12;
const CAP_NET_RAW: u32 = 13;
const CAP_SYS_PTRACE: u32 = 19;
const CAP_SYS_ADMIN: u32 = 21;

/// How long each test samples the daemon's threads.
const SAMPLE_FOR: Duration = Duration::from_millis(2500);

/// True when the test can run: root (the daemon must start with the full
/// root set to show what it drops) and network namespaces. Under `CI=true`
/// a missing prerequisite fails the test (support::require).
fn prerequisites(_test: &str) -> bool {
    support::require(
        support::Need::Netns,
        "the daemon must start as root with namespaces to enter",
    )
}

fn mask(caps: &[u32]) -> u64 {
    caps.iter().fold(0, |m, c| m | 1u64 << c)
}

/// One thread's capability sets and `no_new_privs`, from its status file.
#[derive(Debug, PartialEq, Eq)]
struct ThreadPrivileges {
    inheritable: u64,
    permitted: u64,
    effective: u64,
    bounding: u64,
    ambient: u64,
    no_new_privs: bool,
}

fn parse_status(status: &str) -> Option<(String, ThreadPrivileges)> {
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
            .map(str::trim)
    };
    let hex = |name: &str| u64::from_str_radix(field(name)?, 16).ok();
    Some((
        field("Name")?.to_string(),
        ThreadPrivileges {
            inheritable: hex("CapInh")?,
            permitted: hex("CapPrm")?,
            effective: hex("CapEff")?,
            bounding: hex("CapBnd")?,
            ambient: hex("CapAmb")?,
            no_new_privs: field("NoNewPrivs")? == "1",
        },
    ))
}

/// Samples every thread of `pid` for [`SAMPLE_FOR`], asserting each thread
/// seen holds exactly `kept` (and no_new_privs); returns the thread names
/// seen. A thread that exits between listing and reading is skipped.
fn assert_every_thread_keeps_exactly(pid: u32, kept: &[u32]) -> BTreeSet<String> {
    let expected = ThreadPrivileges {
        inheritable: 0,
        permitted: mask(kept),
        effective: mask(kept),
        bounding: mask(kept),
        ambient: 0,
        no_new_privs: true,
    };
    let mut seen = BTreeSet::new();
    let deadline = Instant::now() + SAMPLE_FOR;
    while Instant::now() < deadline {
        let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).expect("the daemon is running");
        for task in tasks.flatten() {
            let Ok(status) = std::fs::read_to_string(task.path().join("status")) else {
                continue;
            };
            let (name, got) = parse_status(&status).expect("a status file with Cap* and NoNewPrivs lines");
            assert_eq!(
                got,
                expected,
                "thread {name} ({}) holds other capabilities than {kept:?}",
                task.file_name().to_string_lossy()
            );
            seen.insert(name);
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    seen
}

/// The `(set, capability)` samples of `xtcp2_capabilities` with value 1.
fn exposed_capabilities(exposition: &str) -> BTreeSet<(String, String)> {
    exposition
        .lines()
        .filter_map(|l| l.strip_prefix("xtcp2_capabilities{"))
        .filter_map(|rest| {
            let (labels, value) = rest.split_once("} ")?;
            assert_eq!(value.trim(), "1", "{rest}");
            let label = |name: &str| {
                labels
                    .split(',')
                    .find_map(|kv| kv.strip_prefix(name)?.strip_prefix("=\""))
                    .and_then(|v| v.strip_suffix('"'))
                    .map(str::to_string)
            };
            Some((label("set")?, label("capability")?))
        })
        .collect()
}

fn expected_exposed(kept: &[&str]) -> BTreeSet<(String, String)> {
    ["effective", "permitted", "bounding"]
        .iter()
        .flat_map(|set| kept.iter().map(|c| (set.to_string(), c.to_string())))
        .collect()
}

/// The log line naming the kept set, e.g. `... kept=cap_net_admin,cap_sys_admin`.
fn logged_kept(stderr: &str) -> Option<String> {
    let line = stderr.lines().find(|l| l.contains("dropped every other capability"))?;
    let rest = line.split("kept=").nth(1)?;
    Some(rest.split_whitespace().next()?.trim_matches('"').to_string())
}

/// Started as root with the /proc scan on and a file destination, the
/// daemon keeps CAP_NET_ADMIN, CAP_SYS_ADMIN and CAP_SYS_PTRACE on every
/// thread and nothing else, sets no_new_privs, logs and exposes the kept
/// set, and still collects both a named namespace (setns) and a namespace
/// held only by a root process (its /proc/PID/ns/net needs CAP_SYS_PTRACE).
#[test]
fn root_daemon_keeps_only_net_admin_sys_admin_sys_ptrace_on_every_thread() {
    let test = "root_daemon_keeps_only_net_admin_sys_admin_sys_ptrace_on_every_thread";
    if !prerequisites(test) {
        return;
    }
    let named = NamedNetns::new(&format!("xtcp2c-{}", std::process::id()));
    let anonymous = ProcessNetns::new();
    let named_conn = LoopbackConnection::open_in(&named.path());
    let anon_conn = LoopbackConnection::open_in(&anonymous.path());
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("records.jsonl");
    let dest = format!("file:{}", out.display());
    let daemon = Daemon::start(
        &[
            "--dest",
            &dest,
            "--frequency",
            "1s",
            "--timeout",
            "500ms",
            "--netns-dirs",
            "/run/netns",
        ],
        Stdio::null(),
    );
    daemon.wait_metric("xtcp2_poll_cycles_total", 2.0, Duration::from_secs(20));

    let kept = [CAP_NET_ADMIN, CAP_SYS_PTRACE, CAP_SYS_ADMIN];
    let threads = assert_every_thread_keeps_exactly(daemon.child.id(), &kept);
    assert!(
        threads.contains("xtcp2") && threads.contains("xtcp2-async"),
        "expected the main thread and the runtime's workers among {threads:?}"
    );

    let names = ["cap_net_admin", "cap_sys_ptrace", "cap_sys_admin"];
    let metrics = daemon.metrics();
    assert_eq!(exposed_capabilities(&metrics), expected_exposed(&names), "{metrics}");
    assert_eq!(sample(&metrics, "xtcp2_no_new_privs"), Some(1.0), "{metrics}");
    assert_eq!(
        logged_kept(&daemon.stderr()).as_deref(),
        Some("cap_net_admin,cap_sys_ptrace,cap_sys_admin"),
        "stderr:\n{}",
        daemon.stderr()
    );

    // What it kept is enough: both namespaces' connections were written.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let records = parse_records(&std::fs::read_to_string(&out).unwrap_or_default());
        let named_seen = !with_ports(&records, named_conn.server_port, named_conn.client_port).is_empty();
        let anon_seen = !with_ports(&records, anon_conn.server_port, anon_conn.client_port).is_empty();
        if named_seen && anon_seen {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "named namespace seen: {named_seen}, process-held namespace seen: {anon_seen}; stderr:\n{}",
            daemon.stderr()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(
        sample(&metrics, "xtcp2_netns_enter_failures_total{kind=\"eperm\"}"),
        None,
        "{metrics}"
    );
}

/// With a `udp:` destination and only the host namespace, the daemon keeps
/// CAP_NET_ADMIN and CAP_NET_RAW (its raw socket is opened at the first
/// send, after the drop) and drops CAP_SYS_ADMIN (no setns to do); the
/// datagrams still arrive.
#[test]
fn udp_destination_keeps_net_raw_and_still_sends() {
    let test = "udp_destination_keeps_net_raw_and_still_sends";
    if !prerequisites(test) {
        return;
    }
    let receiver = UdpSocket::bind("127.0.0.1:0").expect("bind udp");
    receiver.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let dest = format!("udp:{}", receiver.local_addr().unwrap());
    let daemon = Daemon::start(
        &[
            "--dest",
            &dest,
            "--frequency",
            "1s",
            "--timeout",
            "500ms",
            "--netns-dirs",
            "",
            "--netns-proc-scan=false",
        ],
        Stdio::null(),
    );
    let mut buf = vec![0u8; 65536];
    let (n, _) = receiver
        .recv_from(&mut buf)
        .unwrap_or_else(|e| panic!("no datagram from the daemon: {e}; stderr:\n{}", daemon.stderr()));
    assert!(n > 0);

    assert_every_thread_keeps_exactly(daemon.child.id(), &[CAP_NET_ADMIN, CAP_NET_RAW]);
    let metrics = daemon.metrics();
    assert_eq!(
        exposed_capabilities(&metrics),
        expected_exposed(&["cap_net_admin", "cap_net_raw"]),
        "{metrics}"
    );
    assert_eq!(
        logged_kept(&daemon.stderr()).as_deref(),
        Some("cap_net_admin,cap_net_raw")
    );
}

/// The first port below `net.ipv4.ip_unprivileged_port_start` that is free.
fn free_privileged_port() -> Option<u16> {
    let start: u16 = std::fs::read_to_string("/proc/sys/net/ipv4/ip_unprivileged_port_start")
        .ok()?
        .trim()
        .parse()
        .ok()?;
    (1..start).rev().find(|p| TcpListener::bind(("127.0.0.1", *p)).is_ok())
}

/// `--prom-listen` on a privileged port keeps CAP_NET_BIND_SERVICE (the
/// listener is bound after the drop) and the endpoint answers there.
#[test]
fn privileged_prom_port_keeps_net_bind_service() {
    let test = "privileged_prom_port_keeps_net_bind_service";
    if !prerequisites(test) {
        return;
    }
    let Some(port) = free_privileged_port() else {
        let why = "no privileged port (ip_unprivileged_port_start is 0, or every port below it is taken)";
        assert!(std::env::var("CI").as_deref() != Ok("true"), "{test}: {why}");
        eprintln!("SKIP {test}: {why}");
        return;
    };
    let listen = format!("127.0.0.1:{port}");
    let mut child = Command::new(env!("CARGO_BIN_EXE_xtcp2"))
        .args([
            "--prom-listen",
            &listen,
            "--dest",
            "null",
            "--frequency",
            "1s",
            "--timeout",
            "500ms",
        ])
        .args(["--netns-dirs", "", "--netns-proc-scan=false"])
        .env("XTCP2_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn xtcp2");
    let stderr = Arc::new(Mutex::new(String::new()));
    {
        let (pipe, stderr) = (child.stderr.take().unwrap(), stderr.clone());
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                stderr.lock().unwrap().push_str(&(line + "\n"));
            }
        });
    }
    let addr: SocketAddr = listen.parse().unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    let metrics = loop {
        if let Ok(r) = observability_support::http_get(addr, "/metrics") {
            break r.text();
        }
        if Instant::now() > deadline || child.try_wait().unwrap().is_some() {
            let _ = child.kill();
            let _ = child.wait();
            panic!("no /metrics on {listen}; stderr:\n{}", stderr.lock().unwrap());
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let sampled = std::panic::catch_unwind(|| {
        assert_every_thread_keeps_exactly(child.id(), &[CAP_NET_BIND_SERVICE, CAP_NET_ADMIN]);
    });
    let _ = child.kill();
    let _ = child.wait();
    if let Err(e) = sampled {
        std::panic::resume_unwind(e);
    }
    assert_eq!(
        exposed_capabilities(&metrics),
        expected_exposed(&["cap_net_bind_service", "cap_net_admin"]),
        "{metrics}"
    );
}
