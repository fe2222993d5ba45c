//! Every network namespace: named, Docker-style, anonymous and the host's
//! own, collected by the real binary, each connection exactly once per side
//! with the right namespace identity; and namespace churn without leaks.

mod netns_support;
mod observability_support;
mod support;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use netns_support::*;
use observability_support::HttpDaemon;
use support::{require, Need, Xtcp2};

/// Why the tests here need [`Need::Netns`].
const MAKES_NAMESPACES: &str = "the test makes network namespaces";

/// Asserts both sides of `conn` appear exactly once, tagged as `check` says.
fn assert_both_sides(
    records: &[serde_json::Value],
    conn: &LoopbackConnection,
    what: &str,
    check: impl Fn(&serde_json::Value),
) {
    for (sport, dport, side) in [
        (conn.server_port, conn.client_port, "server"),
        (conn.client_port, conn.server_port, "client"),
    ] {
        let found = with_ports(records, sport, dport);
        assert_eq!(
            found.len(),
            1,
            "{what} {side} side {sport}->{dport}: expected once, got {found:?}"
        );
        assert_eq!(found[0]["idiag_state"], 1, "{what} {side}: not ESTABLISHED");
        check(found[0]);
    }
}

/// A one-shot collection finds connections in a named namespace, a
/// Docker-style bind mount, a process-held anonymous namespace and the host,
/// each exactly once per side and tagged with its namespace.
#[test]
fn netns_every_kind_of_namespace_is_collected_once_and_tagged() {
    if !require(Need::Netns, MAKES_NAMESPACES) {
        return;
    }
    let tag = std::process::id();
    let named = NamedNetns::new(&format!("xtcp2t-{tag}-named"));
    let docker_dir = tempfile::tempdir().expect("tempdir");
    let docker = BindMountedNetns::new(docker_dir.path(), "0123456789ab");
    let anonymous = ProcessNetns::new();

    let host_conn = LoopbackConnection::open();
    let named_conn = LoopbackConnection::open_in(&named.path());
    let docker_conn = LoopbackConnection::open_in(&docker.path);
    let anon_conn = LoopbackConnection::open_in(&anonymous.path());

    let dirs = format!("/run/netns,{}", docker_dir.path().display());
    let out = Xtcp2::new()
        .args([
            "--max-loops",
            "1",
            "--prom-listen",
            "",
            "--netns-dirs",
            &dirs,
            "--deserializers",
            "info",
        ])
        .output();
    assert!(
        out.status.success(),
        "xtcp2 failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let records = parse_records(&String::from_utf8_lossy(&out.stdout));

    let host_inode = netns_inode(Path::new("/proc/self/ns/net"));
    assert_both_sides(&records, &host_conn, "host", |r| {
        assert_eq!(r["netns_inode"], host_inode);
        assert!(
            r.get("netns_name").is_none() && r.get("netns_pid").is_none(),
            "host record has a name: {r}"
        );
    });
    let named_inode = netns_inode(&named.path());
    assert_both_sides(&records, &named_conn, "named", |r| {
        assert_eq!(r["netns_inode"], named_inode);
        assert_eq!(r["netns_name"], named.name.as_str());
    });
    let docker_inode = netns_inode(&docker.path);
    assert_both_sides(&records, &docker_conn, "docker", |r| {
        assert_eq!(r["netns_inode"], docker_inode);
        assert_eq!(r["netns_name"], "0123456789ab");
    });
    let anon_inode = netns_inode(&anonymous.path());
    assert_both_sides(&records, &anon_conn, "anonymous", |r| {
        assert_eq!(r["netns_inode"], anon_inode);
        assert_eq!(r["netns_pid"], anonymous.pid());
        assert!(r.get("netns_name").is_none());
        assert!(r["tcpi_rtt"].as_u64().unwrap_or(0) > 0, "no rtt: {r}");
    });
}

/// With the /proc scan off, a process-held namespace is not collected.
#[test]
fn netns_proc_scan_can_be_turned_off() {
    if !require(Need::Netns, MAKES_NAMESPACES) {
        return;
    }
    let anonymous = ProcessNetns::new();
    let conn = LoopbackConnection::open_in(&anonymous.path());
    let out = Xtcp2::new()
        .args([
            "--max-loops",
            "1",
            "--prom-listen",
            "",
            "--netns-dirs",
            "",
            "--netns-proc-scan=false",
        ])
        .output();
    assert!(out.status.success());
    let records = parse_records(&String::from_utf8_lossy(&out.stdout));
    assert!(with_ports(&records, conn.server_port, conn.client_port).is_empty());
    assert!(records.iter().all(|r| r.get("netns_pid").is_none()));
}

/// A daemon whose /proc scans after the first are incremental (the full
/// rescan is an hour away) still finds a process-held namespace created
/// after it started, at its next poll: new processes are always stat'ed.
#[test]
fn netns_process_started_after_the_daemon_is_found_by_incremental_scans() {
    if !require(Need::Netns, MAKES_NAMESPACES) {
        return;
    }
    // Something for the first poll to print, so the test knows it happened.
    let host_conn = LoopbackConnection::open();
    let mut daemon = HttpDaemon::start(
        &[
            "--frequency",
            "300ms",
            "--timeout",
            "250ms",
            "--netns-dirs",
            "",
            "--netns-proc-rescan",
            "1h",
            "--states",
            "established",
            "--deserializers",
            "",
        ],
        Stdio::piped(),
    );
    let stdout = daemon.take_stdout();
    let (lines, received) = std::sync::mpsc::channel::<String>();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if lines.send(line).is_err() {
                break;
            }
        }
    });
    // The first poll (a full scan) has happened once records arrive.
    let first = received.recv_timeout(Duration::from_secs(10));
    drop(host_conn);

    let anonymous = ProcessNetns::new();
    let conn = LoopbackConnection::open_in(&anonymous.path());
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut found = None;
    while found.is_none() && Instant::now() < deadline {
        let Ok(line) = received.recv_timeout(Duration::from_millis(200)) else {
            continue;
        };
        let records = parse_records(&line);
        found = with_ports(&records, conn.server_port, conn.client_port)
            .first()
            .map(|r| (*r).clone());
    }
    let metrics = observability_support::http_get(daemon.addr, "/metrics").map(|r| r.text());
    daemon.kill();
    let _ = reader.join();
    assert!(first.is_ok(), "the daemon printed nothing in 10 s");
    let record = found.expect("the new process's namespace was not collected within 10 s");
    assert_eq!(record["netns_pid"], anonymous.pid());
    assert_eq!(record["netns_inode"], netns_inode(&anonymous.path()));
    // Found by an incremental scan: only the first was full.
    let metrics = metrics.expect("GET /metrics");
    let scans = |kind: &str| {
        observability_support::sample(&metrics, &format!("xtcp2_netns_proc_scans_total{{kind=\"{kind}\"}}"))
    };
    assert_eq!(scans("full"), Some(1.0), "{metrics}");
    assert!(scans("incremental").unwrap_or(0.0) >= 1.0, "{metrics}");
}

/// The daemon's open fds, but for its inet_diag socket of the host
/// namespace: a dump cut short by the deadline on a busy machine closes it
/// until the next poll, so it comes and goes with the load, not with
/// namespace churn. The sockets of the churned namespaces (what a leak
/// would keep) live in other namespaces and are all counted.
fn fd_count(pid: u32) -> usize {
    let host_diag: std::collections::HashSet<String> = std::fs::read_to_string(format!("/proc/{pid}/net/netlink"))
        .unwrap_or_default()
        .lines()
        .skip(1)
        .filter_map(|line| {
            let cols: Vec<&str> = line.split_whitespace().collect();
            // Eth (the protocol) is the second column, Inode the last.
            let inode = cols.last()?;
            (cols.get(1) == Some(&"4")).then(|| format!("socket:[{inode}]"))
        })
        .collect();
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| {
            d.flatten()
                .filter(|e| {
                    std::fs::read_link(e.path())
                        .map(|t| !host_diag.contains(&t.display().to_string()))
                        .unwrap_or(true)
                })
                .count()
        })
        .unwrap_or(0)
}

/// Threads the daemon itself manages (main, netlinkers, setns helpers,
/// the namespace watcher). The tokio runtime's threads ("xtcp2-async") are
/// left out: its blocking pool starts threads on demand (stdout writes) and
/// retires them after 10 s idle, which is not a leak.
fn thread_count(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .map(|tasks| {
            tasks
                .flatten()
                .filter(|t| {
                    std::fs::read_to_string(t.path().join("comm"))
                        .map(|c| c.trim() != "xtcp2-async")
                        .unwrap_or(false)
                })
                .count()
        })
        .unwrap_or(0)
}

/// The daemon's idle resource use: the minimum over a few samples, so a
/// sample taken mid-poll (scoped netlinker threads) does not count.
fn idle_usage(pid: u32) -> (usize, usize) {
    let mut fds = usize::MAX;
    let mut threads = usize::MAX;
    for _ in 0..10 {
        fds = fds.min(fd_count(pid));
        threads = threads.min(thread_count(pid));
        std::thread::sleep(Duration::from_millis(60));
    }
    (fds, threads)
}

/// 200 namespaces, each with a live connection, come and go while the
/// daemon polls every 200 ms: every one that lived two polls is collected,
/// and afterwards the daemon's fds and threads are back to baseline.
#[test]
fn netns_churn_of_200_namespaces_leaks_nothing() {
    if !require(Need::Netns, MAKES_NAMESPACES) {
        return;
    }
    const NAMESPACES: usize = 200;
    const LIVE_AT_ONCE: usize = 25;
    const LIFETIME: Duration = Duration::from_millis(900);
    // A private directory, so namespaces other tests make in /run/netns at
    // the same time do not move this daemon's fd count.
    let dir = tempfile::tempdir().expect("tempdir");
    let dir_arg = dir.path().to_str().expect("utf-8 temp path").to_string();

    let mut daemon = Xtcp2::new()
        .args([
            "--frequency",
            "200ms",
            "--timeout",
            "150ms",
            "--prom-listen",
            "",
            "--netns-proc-scan=false",
            "--netns-dirs",
            &dir_arg,
            "--deserializers",
            "",
            "--states",
            "established",
        ])
        .stdout(Stdio::piped())
        .spawn();
    let pid = daemon.pid();
    let seen_names: Arc<Mutex<std::collections::HashSet<String>>> = Arc::default();
    let reader = {
        let seen = seen_names.clone();
        let stdout = daemon.take_stdout();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) {
                    if let Some(name) = v["netns_name"].as_str() {
                        seen.lock().unwrap().insert(name.to_string());
                    }
                }
            }
        })
    };
    std::thread::sleep(Duration::from_millis(700));
    let (base_fds, base_threads) = idle_usage(pid);

    let mut live: std::collections::VecDeque<(Instant, BindMountedNetns, LoopbackConnection)> = Default::default();
    let mut names = Vec::new();
    let mut peak_fds = 0;
    for i in 0..NAMESPACES {
        if i % LIVE_AT_ONCE == 0 {
            peak_fds = peak_fds.max(fd_count(pid));
        }
        while live.len() >= LIVE_AT_ONCE || live.front().is_some_and(|(born, ..)| born.elapsed() >= LIFETIME) {
            let (born, ns, conn) = live.pop_front().expect("non-empty");
            if let Some(left) = LIFETIME.checked_sub(born.elapsed()) {
                std::thread::sleep(left);
            }
            drop(conn);
            drop(ns);
        }
        let name = format!("churn-{i}");
        let ns = BindMountedNetns::new(dir.path(), &name);
        let conn = LoopbackConnection::open_in(&ns.path);
        names.push(name);
        live.push_back((Instant::now(), ns, conn));
    }
    while let Some((born, ns, conn)) = live.pop_front() {
        if let Some(left) = LIFETIME.checked_sub(born.elapsed()) {
            std::thread::sleep(left);
        }
        drop(conn);
        drop(ns);
    }
    // Sockets of deleted namespaces close at once (inotify) or at the next
    // poll; under a loaded CI machine allow a few polls.
    let settle = Instant::now();
    let (mut end_fds, mut end_threads) = idle_usage(pid);
    while (end_fds > base_fds || end_threads > base_threads) && settle.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(200));
        (end_fds, end_threads) = idle_usage(pid);
    }
    let fd_targets: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| {
            d.flatten()
                .filter_map(|e| std::fs::read_link(e.path()).ok())
                .map(|t| t.display().to_string())
                .collect()
        })
        .unwrap_or_default();
    let alive = daemon.is_running();

    daemon.terminate();
    let status = daemon.wait_exit(Duration::from_secs(30));
    reader.join().expect("reader");
    let stderr = daemon.stderr();

    assert!(alive, "daemon died during churn: {stderr}");
    assert!(status.success(), "daemon exit {status:?}: {stderr}");
    assert!(!stderr.contains("panicked"), "daemon panicked: {stderr}");
    // The measurement sees namespace sockets: with 25 namespaces alive the
    // daemon holds one socket in each.
    assert!(
        peak_fds >= base_fds + LIVE_AT_ONCE / 2,
        "fds never rose during churn: base {base_fds}, peak {peak_fds}"
    );
    // At most the baseline (the host's own socket is not counted, above).
    assert!(
        end_fds <= base_fds,
        "open fds not back to baseline: {end_fds} > {base_fds}: {fd_targets:?}"
    );
    assert_eq!(end_threads, base_threads, "threads not back to baseline");
    let seen = seen_names.lock().unwrap();
    let missing: Vec<_> = names.iter().filter(|n| !seen.contains(*n)).collect();
    assert!(
        missing.is_empty(),
        "{} of {NAMESPACES} namespaces never collected: {missing:?}",
        missing.len()
    );
}
