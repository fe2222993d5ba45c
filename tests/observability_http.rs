//! The HTTP server in-process, driven step by step (no root needed):
//! readiness through each lifecycle state, serving on through the
//! shutdown flush and stopping once drained, 409 while the profiler is
//! held, a real CPU profile, routing and content negotiation, and where
//! pprof is served (off, here, on its own listener). Behaviour under load
//! is observability_listener.rs.

mod observability_support;
mod support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use observability_support::*;
use xtcp2::metrics::Metrics;
use xtcp2::observe::readiness::Readiness;
use xtcp2::observe::server::{self, Endpoints, Listener, PprofHere};
use xtcp2::profile::{ProfilerHolder, ProfilerLock};
use xtcp2::shutdown::Shutdown;

struct Running {
    runtime: tokio::runtime::Runtime,
    addr: SocketAddr,
    readiness: Arc<Readiness>,
    profiler: Arc<ProfilerLock>,
    metrics: Arc<Metrics>,
    shutdown: Shutdown,
    drained: Shutdown,
    task: tokio::task::JoinHandle<()>,
}

/// The metrics listener with pprof served on it, as `--pprof` does.
fn start(prom_path: &str) -> Running {
    start_listener(
        prom_path,
        Listener::Metrics {
            pprof: PprofHere::Served,
        },
    )
}

fn start_listener(prom_path: &str, serves: Listener) -> Running {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let shutdown = Shutdown::new();
    let drained = Shutdown::new();
    let metrics = Arc::new(Metrics::new());
    let readiness = Arc::new(Readiness::new(Duration::from_secs(10), shutdown.clone()));
    let profiler = ProfilerLock::new();
    let std_listener = server::bind("prom-listen", "127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = std_listener.local_addr().unwrap();
    let listener = {
        let _guard = runtime.enter();
        tokio::net::TcpListener::from_std(std_listener).unwrap()
    };
    let endpoints = Arc::new(Endpoints {
        listener: serves,
        metrics: metrics.clone(),
        readiness: readiness.clone(),
        profiler: profiler.clone(),
        prom_path: prom_path.to_string(),
        shutdown: shutdown.clone(),
    });
    let task = runtime.spawn(server::serve(listener, endpoints, shutdown.clone(), drained.clone()));
    Running {
        runtime,
        addr,
        readiness,
        profiler,
        metrics,
        shutdown,
        drained,
        task,
    }
}

fn readyz(addr: SocketAddr) -> (u16, String) {
    let r = http_get(addr, "/readyz").unwrap();
    (r.status, r.text())
}

/// /readyz walks 503 (destination) → 503 (first poll) → 200 → 503
/// (shutting down) while /healthz stays 200; the server keeps answering
/// after shutdown until the daemon says it drained, then stops listening.
#[test]
fn readiness_lifecycle_and_serving_through_the_flush() {
    let s = start("/metrics");
    assert_eq!(http_get(s.addr, "/healthz").unwrap().status, 200);
    assert_eq!(
        readyz(s.addr),
        (503, "not ready: the destination is not open yet\n".to_string())
    );
    s.readiness.destination_opened();
    assert_eq!(
        readyz(s.addr),
        (503, "not ready: the first poll has not completed\n".to_string())
    );
    s.readiness.poll_completed();
    assert_eq!(readyz(s.addr), (200, "ready: polling\n".to_string()));

    s.shutdown.trigger();
    assert_eq!(readyz(s.addr), (503, "not ready: shutting down\n".to_string()));
    assert_eq!(http_get(s.addr, "/healthz").unwrap().status, 200);

    s.drained.trigger();
    s.runtime
        .block_on(async { tokio::time::timeout(Duration::from_secs(5), s.task).await })
        .expect("server stopped once drained")
        .unwrap();
    assert!(
        http_get(s.addr, "/healthz").is_err(),
        "still listening after it stopped"
    );
}

/// --prom-path moves the exposition; Accept picks OpenMetrics; other
/// paths are 404, other methods 405.
#[test]
fn metrics_path_negotiation_and_routing() {
    let s = start("/custom/metrics");
    s.metrics.decode.sockets.inc_by(7);
    let plain = http_get(s.addr, "/custom/metrics").unwrap();
    assert_eq!(plain.status, 200);
    assert_eq!(
        plain.header("content-type"),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    assert!(plain
        .text()
        .contains("# TYPE xtcp2_sockets_decoded_total counter\nxtcp2_sockets_decoded_total 7\n"));
    let om = http_get_with(
        s.addr,
        "/custom/metrics",
        &[("Accept", "application/openmetrics-text")],
        Duration::from_secs(5),
    )
    .unwrap();
    assert_eq!(
        om.header("content-type"),
        Some("application/openmetrics-text; version=1.0.0; charset=utf-8")
    );
    assert!(om
        .text()
        .contains("# TYPE xtcp2_sockets_decoded counter\nxtcp2_sockets_decoded_total 7\n"));
    assert!(om.text().ends_with("# EOF\n"));
    assert_eq!(http_get(s.addr, "/metrics").unwrap().status, 404);

    let mut stream = std::net::TcpStream::connect(s.addr).unwrap();
    use std::io::{Read, Write};
    stream
        .write_all(b"POST /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 405"), "{answer}");
    assert!(answer.to_ascii_lowercase().contains("allow: get, head"), "{answer}");
}

/// While another request holds the profiler, profile and flame graph
/// requests get 409 with the reason, and each is counted as busy.
#[test]
fn held_profiler_means_409() {
    let s = start("/metrics");
    let lease = s.profiler.try_acquire(ProfilerHolder::Request).unwrap();
    for path in ["/debug/pprof/profile?seconds=1", "/debug/pprof/flamegraph?seconds=1"] {
        let r = http_get(s.addr, path).unwrap();
        assert_eq!(r.status, 409, "{path}");
        assert_eq!(r.text(), "another CPU profile is being taken; retry when it finishes\n");
    }
    drop(lease);
    let m = s.metrics.encode_text();
    assert!(
        m.contains("xtcp2_profile_requests_total{kind=\"cpu\",outcome=\"busy\"} 1\n"),
        "{m}"
    );
    assert!(
        m.contains("xtcp2_profile_requests_total{kind=\"flamegraph\",outcome=\"busy\"} 1\n"),
        "{m}"
    );
}

/// A one-second profile of this (busy) test process is a gzipped pprof
/// with samples; the profiler is free again afterwards.
#[test]
fn cpu_profile_in_process_has_samples() {
    let s = start("/metrics");
    // Burn CPU until the answer is in: starting the profiler (symbol
    // tables are loaded the first time) can take a while in a debug build.
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let busy = {
        let done = done.clone();
        std::thread::spawn(move || {
            let mut x = 0u64;
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
            }
            x
        })
    };
    let r = http_get_with(s.addr, "/debug/pprof/profile?seconds=1", &[], Duration::from_secs(30)).unwrap();
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    busy.join().unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    let p = decode_pprof(&r.body);
    assert!(!p.sample.is_empty());
    assert!(p.string_table.len() > 1);
    assert_eq!(s.profiler.holder(), None);
}

/// With pprof off, every /debug/pprof path is 404 saying how to turn it
/// on, no profile is attempted or counted, and the index lists none;
/// metrics, health and readiness are unaffected.
#[test]
fn pprof_off_is_404_with_how_to_turn_it_on() {
    let s = start_listener("/metrics", Listener::Metrics { pprof: PprofHere::Off });
    for path in [
        "/debug/pprof",
        "/debug/pprof/",
        "/debug/pprof/profile?seconds=1",
        "/debug/pprof/flamegraph?seconds=1",
        "/debug/pprof/heap",
        "/debug/pprof/goroutine",
    ] {
        let r = http_get(s.addr, path).unwrap();
        assert_eq!(r.status, 404, "{path}");
        assert_eq!(
            r.text(),
            "pprof is off: start xtcp2 with --pprof to serve it here, or with --pprof-listen 127.0.0.1:6060 to serve it on a listener of its own\n",
            "{path}"
        );
    }
    assert_eq!(s.profiler.holder(), None);
    let index = http_get(s.addr, "/").unwrap().text();
    assert!(index.contains("/healthz") && index.contains("/metrics"), "{index}");
    assert!(!index.contains("/debug/pprof/profile"), "{index}");
    assert!(!s.metrics.encode_text().contains("xtcp2_profile_requests_total{"));
    assert_eq!(http_get(s.addr, "/healthz").unwrap().status, 200);
    assert_eq!(http_get(s.addr, "/metrics").unwrap().status, 200);
}

/// With pprof on a listener of its own, the metrics listener answers 404
/// naming where the profiles are, and the pprof listener serves only them.
#[test]
fn pprof_on_its_own_listener() {
    let elsewhere: SocketAddr = "127.0.0.1:6060".parse().unwrap();
    let metrics = start_listener(
        "/metrics",
        Listener::Metrics {
            pprof: PprofHere::Elsewhere(elsewhere),
        },
    );
    let r = http_get(metrics.addr, "/debug/pprof/profile?seconds=1").unwrap();
    assert_eq!(
        (r.status, r.text()),
        (
            404,
            "pprof is served on the --pprof-listen listener, 127.0.0.1:6060, not here\n".to_string()
        )
    );

    let pprof = start_listener("/metrics", Listener::Pprof);
    for path in ["/metrics", "/healthz", "/readyz"] {
        assert_eq!(http_get(pprof.addr, path).unwrap().status, 404, "{path}");
    }
    let index = http_get(pprof.addr, "/debug/pprof/").unwrap();
    assert_eq!(index.status, 200);
    assert!(
        index.text().contains("/debug/pprof/profile?seconds=N"),
        "{}",
        index.text()
    );
    assert!(!index.text().contains("/healthz"), "{}", index.text());
    let lease = pprof.profiler.try_acquire(ProfilerHolder::Request).unwrap();
    assert_eq!(
        http_get(pprof.addr, "/debug/pprof/profile?seconds=1").unwrap().status,
        409,
        "the profile route is served (the profiler is busy)"
    );
    drop(lease);
}
