//! The HTTP listener under misbehaving clients (issue 22): slow clients
//! that send half a request line and hold, idle keep-alive connections,
//! from the probe's own address and from many others, held or renewed
//! every millisecond; `/healthz`, `/readyz` and `/metrics` must still be
//! answered promptly, and what the caps cut is counted. Also the startup
//! side: pprof is off by default, and a `--prom-path` that would hide a
//! built-in route is refused. The server runs in-process (no root needed)
//! except where the binary is the point.

mod observability_support;
mod support;

use std::io::{BufReader, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use observability_support::*;
use support::read_head;
use xtcp2::metrics::Metrics;
use xtcp2::observe::readiness::Readiness;
use xtcp2::observe::server::{self, Endpoints, Listener, PprofHere};
use xtcp2::profile::ProfilerLock;
use xtcp2::shutdown::Shutdown;

/// Slow clients: connections that send half a request line and hold.
const SLOW_CLIENTS: usize = 200;
/// Idle clients: connections that made one keep-alive request and hold.
const IDLE_CLIENTS: usize = 100;
/// Health probes sent while the load is held.
const PROBES: usize = 40;
/// Each probe must be answered within this, connection included. A
/// kubelet's default probe timeout is 1 s.
const PROBE_BOUND: Duration = Duration::from_secs(1);
/// The listener's caps and timeout (src/observe/server.rs); the tests
/// derive their expectations from them.
const MAX_CONNECTIONS: usize = 64;
const MAX_CONNECTIONS_PER_PEER: usize = 8;
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(5);

struct Running {
    runtime: tokio::runtime::Runtime,
    addr: SocketAddr,
    readiness: Arc<Readiness>,
    metrics: Arc<Metrics>,
}

/// The metrics listener as the daemon runs it (2 runtime workers), on
/// 127.0.0.1 with a kernel-chosen port.
fn start(listener: Listener) -> Running {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let shutdown = Shutdown::new();
    let metrics = Arc::new(Metrics::new());
    let readiness = Arc::new(Readiness::new(Duration::from_secs(10), shutdown.clone()));
    let std_listener = server::bind("prom-listen", "127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = std_listener.local_addr().unwrap();
    let tokio_listener = {
        let _guard = runtime.enter();
        tokio::net::TcpListener::from_std(std_listener).unwrap()
    };
    let endpoints = Arc::new(Endpoints {
        listener,
        metrics: metrics.clone(),
        readiness: readiness.clone(),
        profiler: ProfilerLock::new(),
        prom_path: "/metrics".to_string(),
        shutdown: shutdown.clone(),
    });
    runtime.spawn(server::serve(tokio_listener, endpoints, shutdown, Shutdown::new()));
    Running {
        runtime,
        addr,
        readiness,
        metrics,
    }
}

/// A TCP connection to `to` from `from` (any address of 127/8 works on
/// loopback), so one test can play several clients.
fn connect_from(from: IpAddr, to: SocketAddr) -> TcpStream {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket.bind(&SocketAddr::new(from, 0).into()).unwrap();
    socket.connect(&to.into()).unwrap();
    socket.into()
}

/// The load: slow and idle connections spread round-robin over `peers`.
struct Load {
    slow: Vec<TcpStream>,
    idle: Vec<TcpStream>,
}

fn open_load(to: SocketAddr, peers: &[IpAddr]) -> Load {
    let mut slow = Vec::new();
    for i in 0..SLOW_CLIENTS {
        let mut s = connect_from(peers[i % peers.len()], to);
        s.write_all(b"GET /metrics HT").unwrap();
        slow.push(s);
    }
    let mut idle = Vec::new();
    for i in 0..IDLE_CLIENTS {
        let mut s = connect_from(peers[i % peers.len()], to);
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        let mut reader = BufReader::new(&s);
        let (status, headers) = read_head(&mut reader).unwrap();
        assert_eq!(status, "HTTP/1.1 200 OK");
        let length: usize = headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
            .unwrap()
            .1
            .parse()
            .unwrap();
        let mut body = vec![0; length];
        reader.read_exact(&mut body).unwrap();
        drop(reader);
        idle.push(s);
    }
    Load { slow, idle }
}

/// Whether the server closes `s` (EOF or reset) within `within`, whatever
/// it writes first.
fn closed_by_server(s: &mut TcpStream, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    let mut buf = [0u8; 512];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return false;
        }
        s.set_read_timeout(Some(left)).unwrap();
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) => return !matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut),
        }
    }
}

/// Sends `PROBES` /healthz probes (one every 25 ms) and returns the
/// slowest answer's time; panics on any failure or any answer over
/// [`PROBE_BOUND`].
fn probe_healthz(addr: SocketAddr) -> Duration {
    let mut slowest = Duration::ZERO;
    for i in 0..PROBES {
        let started = Instant::now();
        let answer = http_get_with(addr, "/healthz", &[], PROBE_BOUND);
        let took = started.elapsed();
        let r = answer.unwrap_or_else(|e| panic!("probe {i} failed after {took:?}: {e}"));
        assert_eq!((r.status, r.text()), (200, "ok\n".to_string()), "probe {i}");
        assert!(took <= PROBE_BOUND, "probe {i} took {took:?}");
        slowest = slowest.max(took);
        std::thread::sleep(Duration::from_millis(25));
    }
    slowest
}

fn dropped(metrics: &Metrics, kind: &str) -> f64 {
    sample(
        &metrics.encode_text(),
        &format!("xtcp2_http_connections_dropped_total{{kind=\"{kind}\"}}"),
    )
    .unwrap_or(0.0)
}

/// Issue 22's load, from the probes' own address: 200 slow clients and 100
/// idle keep-alive connections. Every /healthz probe is answered 200 within
/// 1 s, /readyz and /metrics answer too, the held connections were closed
/// by the per-peer cap (counted), and the earliest slow client is gone.
#[test]
fn healthz_and_metrics_answer_under_slow_and_idle_clients_from_the_same_address() {
    let s = start(Listener::Metrics { pprof: PprofHere::Off });
    s.readiness.destination_opened();
    s.readiness.poll_completed();
    let localhost: IpAddr = [127, 0, 0, 1].into();
    let started = Instant::now();
    let mut load = open_load(s.addr, &[localhost]);
    let slowest = probe_healthz(s.addr);
    let ready = http_get_with(s.addr, "/readyz", &[], PROBE_BOUND).expect("/readyz under load");
    assert_eq!((ready.status, ready.text()), (200, "ready: polling\n".to_string()));
    let metrics = http_get_with(s.addr, "/metrics", &[], PROBE_BOUND).expect("/metrics under load");
    assert_eq!(metrics.status, 200);
    assert!(metrics
        .text()
        .contains("xtcp2_http_connections_dropped_total{kind=\"peer_limit\"}"));
    let elapsed = started.elapsed();
    eprintln!("slowest of {PROBES} probes: {slowest:?}; load and probes took {elapsed:?}");

    // Of the 300 held connections, at most the cap's worth can still be
    // open; every other one was evicted (or, on a slow machine, timed out).
    let cut = dropped(&s.metrics, "peer_limit") + dropped(&s.metrics, "header_timeout");
    let held = (SLOW_CLIENTS + IDLE_CLIENTS - MAX_CONNECTIONS_PER_PEER) as f64;
    assert!(cut >= held, "only {cut} of the held connections were cut");
    assert_eq!(dropped(&s.metrics, "all_busy"), 0.0);
    assert!(closed_by_server(&mut load.slow[0], Duration::from_secs(1)));
    assert!(closed_by_server(&mut load.idle[0], Duration::from_secs(1)));
    drop(load);
    drop(s.runtime);
}

/// The same load spread round-robin over 20 other addresses, so the total
/// cap is what bites (no address ever holds its 8), and kept up while the
/// probes run: a slow client reconnects every millisecond. Probes from
/// 127.0.0.1 are answered within 1 s, /metrics too, and every held
/// connection beyond the total cap was evicted under it.
#[test]
fn healthz_answers_while_other_clients_keep_filling_the_listener() {
    let s = start(Listener::Metrics { pprof: PprofHere::Off });
    let peers: Vec<IpAddr> = (2..22).map(|last| IpAddr::from([127, 0, 0, last])).collect();
    let load = open_load(s.addr, &peers);
    let stop = Arc::new(AtomicBool::new(false));
    let churn = {
        let (stop, peers, addr) = (stop.clone(), peers.clone(), s.addr);
        std::thread::spawn(move || {
            let mut held = std::collections::VecDeque::new();
            let mut opened = 0usize;
            while !stop.load(Ordering::Relaxed) {
                let mut c = connect_from(peers[opened % peers.len()], addr);
                let _ = c.write_all(b"GET /metrics HT");
                held.push_back(c);
                // The server closes them; the client keeps a bounded few.
                if held.len() > SLOW_CLIENTS {
                    held.pop_front();
                }
                opened += 1;
                std::thread::sleep(Duration::from_millis(1));
            }
            opened
        })
    };
    let slowest = probe_healthz(s.addr);
    let metrics = http_get_with(s.addr, "/metrics", &[], PROBE_BOUND).expect("/metrics under load");
    stop.store(true, Ordering::Relaxed);
    let reconnects = churn.join().unwrap();
    eprintln!("slowest of {PROBES} probes: {slowest:?}, while {reconnects} slow clients reconnected");
    assert_eq!(metrics.status, 200);
    let cut = dropped(&s.metrics, "total_limit") + dropped(&s.metrics, "header_timeout");
    let held = (SLOW_CLIENTS + IDLE_CLIENTS + reconnects - MAX_CONNECTIONS) as f64;
    assert!(cut >= held, "only {cut} of the held connections were cut");
    assert_eq!(dropped(&s.metrics, "peer_limit"), 0.0);
    assert_eq!(dropped(&s.metrics, "all_busy"), 0.0);
    drop(load);
    drop(s.runtime);
}

/// A lone slow client and a lone idle keep-alive connection are closed
/// once the header timeout passes (not before, and well before twice it),
/// and each is counted as a header timeout.
#[test]
fn slow_and_idle_connections_are_closed_after_the_header_timeout() {
    let s = start(Listener::Metrics { pprof: PprofHere::Off });
    let localhost: IpAddr = [127, 0, 0, 1].into();
    let opened = Instant::now();
    let mut slow = connect_from(localhost, s.addr);
    slow.write_all(b"GET /metrics HT").unwrap();
    let mut idle = connect_from(localhost, s.addr);
    idle.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut head = [0u8; 17];
    idle.read_exact(&mut head).unwrap();
    assert_eq!(&head, b"HTTP/1.1 200 OK\r\n");
    let mut rest = vec![0u8; 256];
    // The rest of the answer, then EOF once the server gives up on it.
    idle.set_read_timeout(Some(HEADER_READ_TIMEOUT * 2)).unwrap();
    while idle.read(&mut rest).unwrap_or(0) > 0 {}
    let idle_for = opened.elapsed();
    assert!(closed_by_server(&mut slow, HEADER_READ_TIMEOUT * 2));
    let slow_for = opened.elapsed();
    for (what, lived) in [("idle", idle_for), ("slow", slow_for)] {
        assert!(
            lived >= HEADER_READ_TIMEOUT - Duration::from_millis(100) && lived < HEADER_READ_TIMEOUT * 2,
            "{what} connection closed after {lived:?}"
        );
    }
    assert_eq!(dropped(&s.metrics, "header_timeout"), 2.0);
    drop(s.runtime);
}

/// Flags every daemon in this file runs with (host namespace only, records
/// thrown away, no capability check: the listener needs none).
const DAEMON: [&str; 10] = [
    "--skip-capability-check",
    "--frequency",
    "1s",
    "--timeout",
    "500ms",
    "--dest",
    "null",
    "--netns-proc-scan=false",
    "--netns-dirs",
    "",
];

/// With default flags the daemon serves no profile: every /debug/pprof
/// path is 404 saying how to turn it on, the index lists no profile, and
/// the metrics and health are served as usual.
#[test]
fn default_daemon_serves_no_pprof() {
    let mut daemon = HttpDaemon::start(&DAEMON, Stdio::null());
    daemon.wait_healthy(Duration::from_secs(10));
    for path in [
        "/debug/pprof/",
        "/debug/pprof/profile?seconds=1",
        "/debug/pprof/flamegraph?seconds=1",
        "/debug/pprof/heap",
    ] {
        let r = http_get(daemon.addr, path).unwrap();
        assert_eq!(r.status, 404, "{path}");
        assert_eq!(
            r.text(),
            "pprof is off: start xtcp2 with --pprof to serve it here, or with --pprof-listen 127.0.0.1:6060 to serve it on a listener of its own\n",
            "{path}"
        );
    }
    let index = http_get(daemon.addr, "/").unwrap().text();
    assert!(!index.contains("/debug/pprof/profile"), "{index}");
    let m = daemon.metrics();
    assert!(
        !m.contains("xtcp2_profile_requests_total{"),
        "a profile request was counted"
    );
    assert!(daemon.stderr().contains("pprof=off"), "{}", daemon.stderr());
    daemon.stop_cleanly(Duration::from_secs(15));
}

/// `--pprof-listen` serves the profiles on their own listener only: the
/// metrics listener answers 404 naming it, the pprof listener answers the
/// heap route (501 without jemalloc) but not /metrics or /healthz.
#[test]
fn pprof_listen_serves_profiles_on_their_own_listener() {
    let mut daemon = HttpDaemon::start(
        &[&DAEMON[..], &["--pprof-listen", "127.0.0.1:0"]].concat(),
        Stdio::null(),
    );
    daemon.wait_healthy(Duration::from_secs(10));
    let stderr = daemon.stderr();
    let pprof_addr: SocketAddr = stderr
        .lines()
        .find(|l| l.contains("serving pprof"))
        .and_then(|l| l.split("addr=").nth(1))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("no pprof listen address logged:\n{stderr}"));
    let here = http_get(daemon.addr, "/debug/pprof/heap").unwrap();
    assert_eq!(here.status, 404);
    assert_eq!(
        here.text(),
        format!("pprof is served on the --pprof-listen listener, {pprof_addr}, not here\n")
    );
    let heap = http_get(pprof_addr, "/debug/pprof/heap").unwrap();
    let expected = if cfg!(feature = "heap-profiling") { 200 } else { 501 };
    assert_eq!(heap.status, expected, "{}", heap.text());
    assert_eq!(http_get(pprof_addr, "/metrics").unwrap().status, 404);
    assert_eq!(http_get(pprof_addr, "/healthz").unwrap().status, 404);
    daemon.stop_cleanly(Duration::from_secs(15));
}

/// `--prom-path` on a built-in route is refused before anything starts:
/// exit 2 and one line naming the flag and what it would hide.
#[test]
fn prom_path_on_a_builtin_route_exits_2() {
    for (path, hidden) in [
        ("/healthz", "the liveness endpoint /healthz"),
        ("/readyz", "the readiness endpoint /readyz"),
        ("/debug/pprof/profile", "the profiling endpoints under /debug/pprof"),
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_xtcp2"))
            .args(["--prom-listen", "127.0.0.1:0", "--prom-path", path, "--dest", "null"])
            .stdin(Stdio::null())
            .output()
            .expect("run xtcp2");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{path}: {stderr}");
        assert_eq!(
            stderr,
            format!("xtcp2: --prom-path {path:?} would hide {hidden}; choose another path (the default is /metrics)\n")
        );
    }
}
