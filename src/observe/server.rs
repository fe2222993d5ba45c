//! The HTTP listeners: `--prom-listen` (metrics, health, readiness, and
//! pprof with `--pprof`) and `--pprof-listen` (pprof only). hyper 1 over
//! HTTP/1.1, on the daemon's tokio runtime.
//!
//! | path | answer |
//! |---|---|
//! | `--prom-path` (`/metrics`) | Prometheus text, or OpenMetrics if `Accept` asks |
//! | `/healthz` | 200 once the listener is up (liveness) |
//! | `/readyz` | 200 while polling, 503 before the first poll and during shutdown |
//! | `/debug/pprof/profile?seconds=N` | gzipped pprof CPU profile |
//! | `/debug/pprof/flamegraph?seconds=N` | SVG flame graph |
//! | `/debug/pprof/heap` | gzipped pprof heap profile, or 501 without jemalloc |
//!
//! pprof is off unless asked for: a profile costs memory for the life of
//! the process (see [`crate::profile`]) and anyone who reaches the port
//! could take one. Off, its paths answer 404 saying how to turn it on.
//!
//! Staying answerable: every connection is accepted, and the caps
//! ([`MAX_CONNECTIONS`], [`MAX_CONNECTIONS_PER_PEER`]) close idle
//! connections to make room instead of queueing new ones (see
//! [`super::connections`]); a client has [`HEADER_READ_TIMEOUT`] to send
//! each request. Whatever the listener cuts short is counted in
//! `xtcp2_http_connections_dropped_total{kind}`.
//!
//! The server keeps answering while the daemon flushes on shutdown, so
//! `/readyz` can say 503 to whoever routes or alarms on it; it stops once
//! the daemon says it has drained (or after [`DRAIN_GRACE`]).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, ACCEPT, ALLOW, CONTENT_DISPOSITION, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::task::JoinSet;

use super::connections::{Admission, Cap, Ledger};
use super::readiness::Readiness;
use crate::log_throttle::LogThrottle;
use crate::metrics::exposition::ExpositionFormat;
use crate::metrics::{KindLabel, Metrics, ProfileRequestLabel};
use crate::profile::MAX_PROFILE_SECONDS;
use crate::profile::{
    encode_flamegraph, encode_pprof_gz, heap_pprof_gz, return_memory, CpuRecording, ProfileError, ProfilerLock,
    CPU_PROFILE_HZ, DEFAULT_PROFILE_SECONDS, PYROSCOPE_YIELD_WAIT,
};
use crate::shutdown::Shutdown;

/// Connections served at once, from all clients. Scrapers, probes and an
/// operator need a handful; the cap bounds what misbehaving clients cost
/// (a connection is a task and hyper's buffers, tens of KiB). At the cap an
/// idle connection is closed to make room (see [`super::connections`]).
pub(crate) const MAX_CONNECTIONS: usize = 64;
/// Connections one client address may hold. A Prometheus pair, a kubelet
/// and an operator's curl each need one or two; with 8, one client (or one
/// NAT) flooding the port pushes out only its own connections.
pub(crate) const MAX_CONNECTIONS_PER_PEER: usize = 8;
/// A client must send a request's headers within this time of the
/// connection opening or of its previous answer (slowloris). hyper starts
/// the clock when it starts waiting for a request, so this is also the
/// keep-alive idle timeout. Scrapers and probes send their request at
/// once; 5 s tolerates a slow network and frees an idle client's slot soon.
pub(crate) const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest the server keeps answering after shutdown began, if the daemon
/// never says it drained: the daemon's flush timeout plus a margin.
pub(crate) const DRAIN_GRACE: Duration = Duration::from_secs(15);
/// Once stopping, open connections get this long to finish their answer.
pub(crate) const CONNECTION_CLOSE_GRACE: Duration = Duration::from_secs(2);
/// After a failed accept (out of file descriptors), wait this long before
/// the next, instead of spinning on the error.
const ACCEPT_RETRY_DELAY: Duration = Duration::from_millis(100);
/// A failing accept repeats every [`ACCEPT_RETRY_DELAY`]; log it at most this often.
const ACCEPT_FAILURE_LOG_INTERVAL: Duration = Duration::from_secs(60);
/// Written, best effort, to a connection refused because every connection
/// is mid-request, before it is closed.
const REFUSED_ANSWER: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\n\
    Content-Type: text/plain; charset=utf-8\r\nContent-Length: 38\r\nRetry-After: 1\r\n\
    Connection: close\r\n\r\nbusy: every connection is mid-request\n";

/// The listener could not be opened. The cause is part of the message
/// (not a `source`), so `{:#}` does not print it twice.
#[derive(Debug, thiserror::Error)]
#[error("cannot listen on {addr} (--{flag}): {cause}")]
pub struct BindError {
    /// The flag that named the address (`prom-listen`, `pprof-listen`).
    pub flag: &'static str,
    pub addr: SocketAddr,
    pub cause: std::io::Error,
}

/// Binds the listener now, so a taken port fails startup with its address.
pub fn bind(flag: &'static str, addr: SocketAddr) -> Result<std::net::TcpListener, BindError> {
    bind_with_hops(flag, addr, crate::observe::ListenerHops::default())
}

/// [`bind`], with the TTL / hop limit of `-ipv4Ttl` / `-ipv6HopLimit` set
/// on the listening socket: Linux copies it into every accepted connection.
pub fn bind_with_hops(
    flag: &'static str,
    addr: SocketAddr,
    hops: crate::observe::ListenerHops,
) -> Result<std::net::TcpListener, BindError> {
    use socket2::{Domain, Protocol, Socket, Type};
    let err = |cause| BindError { flag, addr, cause };
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP)).map_err(err)?;
    // As std's TcpListener::bind: a restarted daemon rebinds at once.
    socket.set_reuse_address(true).map_err(err)?;
    if let Some(ttl) = hops.ipv4_ttl {
        // On an IPv6 socket this is the TTL of IPv4-mapped peers.
        socket.set_ttl_v4(ttl).map_err(err)?;
    }
    if let (Some(hops), true) = (hops.ipv6_hop_limit, addr.is_ipv6()) {
        socket.set_unicast_hops_v6(hops).map_err(err)?;
    }
    socket.bind(&addr.into()).map_err(err)?;
    socket.listen(1024).map_err(err)?;
    socket.set_nonblocking(true).map_err(err)?;
    Ok(socket.into())
}

/// The paths the server answers itself, which `--prom-path` must not take,
/// with what they are.
pub(crate) const RESERVED_PATHS: [(&str, &str); 2] = [
    ("/healthz", "the liveness endpoint /healthz"),
    ("/readyz", "the readiness endpoint /readyz"),
];
/// The profiles' prefix: `--prom-path` may take nothing under it either.
const PPROF_PREFIX: &str = "/debug/pprof";

/// What `path` would hide if the metrics were served there, if anything.
pub(crate) fn reserved_path(path: &str) -> Option<&'static str> {
    if is_pprof_path(path) {
        return Some("the profiling endpoints under /debug/pprof");
    }
    RESERVED_PATHS
        .iter()
        .find_map(|&(reserved, what)| (path == reserved).then_some(what))
}

/// Where the `/debug/pprof/*` routes are, seen from one listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PprofHere {
    /// Served here.
    Served,
    /// Nowhere: `--pprof` and `--pprof-listen` were not given.
    Off,
    /// On the `--pprof-listen` listener at this address.
    Elsewhere(SocketAddr),
}

/// Which listener this is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listener {
    /// `--prom-listen`: metrics, health and readiness; pprof as it says.
    Metrics { pprof: PprofHere },
    /// `--pprof-listen`: the profiles only.
    Pprof,
}

/// What the handlers need.
pub struct Endpoints {
    pub listener: Listener,
    pub metrics: Arc<Metrics>,
    pub readiness: Arc<Readiness>,
    pub profiler: Arc<ProfilerLock>,
    /// `--prom-path`.
    pub prom_path: String,
    /// The daemon's shutdown: an on-demand profile ends early with it.
    pub shutdown: Shutdown,
}

/// Counts a connection the listener cut short (`kind`: see the module doc
/// of [`super::connections`] and docs/observability.md).
fn dropped(metrics: &Metrics, kind: &'static str) {
    metrics
        .http
        .connections_dropped
        .get_or_create(&KindLabel { kind })
        .inc();
}

/// Serves until `shutdown` is triggered and then `drained` is (or
/// [`DRAIN_GRACE`] passes).
pub async fn serve(
    listener: tokio::net::TcpListener,
    endpoints: Arc<Endpoints>,
    shutdown: Shutdown,
    drained: Shutdown,
) {
    let stopping = Shutdown::new();
    let stop_when_drained = {
        let stopping = stopping.clone();
        async move {
            shutdown.wait().await;
            tokio::select! {
                _ = drained.wait() => {}
                _ = tokio::time::sleep(DRAIN_GRACE) => {}
            }
            stopping.trigger();
        }
    };
    tokio::pin!(stop_when_drained);
    let ledger = Ledger::new(MAX_CONNECTIONS, MAX_CONNECTIONS_PER_PEER);
    let mut connections = JoinSet::new();
    let accept_failures = LogThrottle::new(ACCEPT_FAILURE_LOG_INTERVAL);
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new()).header_read_timeout(HEADER_READ_TIMEOUT);
    loop {
        // Never waits for a free slot: a probe must not queue in the
        // kernel behind connections that hold slots and send nothing.
        let (stream, peer) = tokio::select! {
            _ = &mut stop_when_drained => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    if let Some(suppressed) = accept_failures.admit() {
                        tracing::warn!(error = %e, suppressed, "HTTP accept failed");
                    }
                    tokio::time::sleep(ACCEPT_RETRY_DELAY).await;
                    continue;
                }
            },
        };
        // Reap finished connections so the set does not grow.
        while connections.try_join_next().is_some() {}
        let ticket = match ledger.admit(peer.ip()) {
            Admission::Admitted { ticket, made_room } => {
                match made_room {
                    Some(Cap::Peer) => dropped(&endpoints.metrics, "peer_limit"),
                    Some(Cap::Total) => dropped(&endpoints.metrics, "total_limit"),
                    None => {}
                }
                Arc::new(ticket)
            }
            Admission::Refused(cap) => {
                tracing::debug!(%peer, ?cap, "HTTP connection refused: every connection is mid-request");
                dropped(&endpoints.metrics, "all_busy");
                // Best effort: a fresh socket's send buffer is empty.
                let _ = stream.try_write(REFUSED_ANSWER);
                continue;
            }
        };
        let metrics = endpoints.metrics.clone();
        let stopping = stopping.clone();
        let in_service = ticket.clone();
        let serving = endpoints.clone();
        let service = hyper::service::service_fn(move |req| {
            let endpoints = serving.clone();
            let request = in_service.request();
            async move {
                let answer = route(req, &endpoints).await;
                drop(request);
                Ok::<_, Infallible>(answer)
            }
        });
        let connection = http.serve_connection(TokioIo::new(stream), service);
        connections.spawn(async move {
            tokio::pin!(connection);
            let result = tokio::select! {
                r = connection.as_mut() => r,
                _ = ticket.evicted() => {
                    if !ticket.in_request() {
                        return; // dropping the connection closes it
                    }
                    // A request arrived just as it was chosen: let it finish.
                    connection.as_mut().graceful_shutdown();
                    connection.await
                }
                _ = stopping.wait() => {
                    connection.as_mut().graceful_shutdown();
                    connection.await
                }
            };
            if let Err(e) = result {
                if e.is_timeout() {
                    dropped(&metrics, "header_timeout");
                }
                tracing::debug!(%peer, error = %e, "HTTP connection ended with an error");
            }
        });
    }
    stopping.trigger();
    drop(listener);
    if tokio::time::timeout(CONNECTION_CLOSE_GRACE, async {
        while connections.join_next().await.is_some() {}
    })
    .await
    .is_err()
    {
        connections.abort_all();
    }
}

type Answer = Response<Full<Bytes>>;

fn text(status: StatusCode, body: impl Into<Bytes>) -> Answer {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    r
}

fn bytes(content_type: &'static str, body: Vec<u8>) -> Answer {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    r
}

/// The index lines of the profiling endpoints.
const PPROF_INDEX: &str = "\
    /debug/pprof/profile?seconds=N           CPU profile, gzipped pprof (go tool pprof URL)\n\
    /debug/pprof/flamegraph?seconds=N        CPU flame graph, SVG\n\
    /debug/pprof/heap                        heap profile, gzipped pprof (heap-profiling builds)\n";

/// What `/` lists: the endpoints this listener answers.
fn index(e: &Endpoints) -> String {
    let mut out = String::from("xtcp2\n\n");
    let pprof = match e.listener {
        Listener::Metrics { pprof } => {
            out.push_str(&format!("{:<41}metrics\n", e.prom_path));
            out.push_str("/healthz                                 liveness\n");
            out.push_str("/readyz                                  readiness (200 while polling)\n");
            pprof
        }
        Listener::Pprof => PprofHere::Served,
    };
    match pprof {
        PprofHere::Served => out.push_str(PPROF_INDEX),
        PprofHere::Off | PprofHere::Elsewhere(_) => out.push_str(&pprof_not_here(pprof)),
    }
    out
}

/// Why `/debug/pprof/*` is not answered here, and where it is.
fn pprof_not_here(pprof: PprofHere) -> String {
    match pprof {
        PprofHere::Elsewhere(addr) => format!("pprof is served on the --pprof-listen listener, {addr}, not here\n"),
        _ => "pprof is off: start xtcp2 with --pprof to serve it here, or with --pprof-listen 127.0.0.1:6060 \
              to serve it on a listener of its own\n"
            .to_string(),
    }
}

fn is_pprof_path(path: &str) -> bool {
    path.strip_prefix(PPROF_PREFIX)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

async fn route(req: Request<Incoming>, e: &Endpoints) -> Answer {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        let mut r = text(StatusCode::METHOD_NOT_ALLOWED, "only GET and HEAD\n");
        r.headers_mut().insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
        return r;
    }
    let path = req.uri().path();
    let pprof = match e.listener {
        Listener::Metrics { pprof } => {
            if path == e.prom_path {
                let accept = req.headers().get(ACCEPT).and_then(|v| v.to_str().ok());
                let format = ExpositionFormat::negotiate(accept);
                let mut r = Response::new(Full::new(Bytes::from(e.metrics.encode(format))));
                r.headers_mut()
                    .insert(CONTENT_TYPE, HeaderValue::from_static(format.content_type()));
                return r;
            }
            match path {
                "/healthz" => return text(StatusCode::OK, "ok\n"),
                "/readyz" => {
                    let state = e.readiness.state();
                    let status = if state.is_ready() {
                        StatusCode::OK
                    } else {
                        StatusCode::SERVICE_UNAVAILABLE
                    };
                    return text(status, state.describe());
                }
                _ => pprof,
            }
        }
        Listener::Pprof => PprofHere::Served,
    };
    if path == "/" {
        return text(StatusCode::OK, index(e));
    }
    if !is_pprof_path(path) {
        return text(StatusCode::NOT_FOUND, "no such endpoint; see /\n");
    }
    if pprof != PprofHere::Served {
        return text(StatusCode::NOT_FOUND, pprof_not_here(pprof));
    }
    match path {
        "/debug/pprof" | "/debug/pprof/" => text(StatusCode::OK, index(e)),
        "/debug/pprof/profile" => cpu_profile(req.uri().query(), e, CpuOutput::Pprof).await,
        "/debug/pprof/flamegraph" => cpu_profile(req.uri().query(), e, CpuOutput::Flamegraph).await,
        "/debug/pprof/heap" => heap_profile(e).await,
        _ => text(StatusCode::NOT_FOUND, "no such endpoint; see /\n"),
    }
}

#[derive(Debug, Clone, Copy)]
enum CpuOutput {
    Pprof,
    Flamegraph,
}

impl CpuOutput {
    fn kind(self) -> &'static str {
        match self {
            CpuOutput::Pprof => "cpu",
            CpuOutput::Flamegraph => "flamegraph",
        }
    }
}

/// `?seconds=N`: absent means [`DEFAULT_PROFILE_SECONDS`]; more than
/// [`MAX_PROFILE_SECONDS`] is capped so a request cannot pin the profiler.
pub(crate) fn profile_seconds(query: Option<&str>) -> Result<u64, String> {
    let value = query
        .unwrap_or("")
        .split('&')
        .find_map(|pair| pair.strip_prefix("seconds="));
    match value {
        None => Ok(DEFAULT_PROFILE_SECONDS.min(MAX_PROFILE_SECONDS)),
        Some(v) => match v.parse::<u64>() {
            Ok(0) | Err(_) => Err(format!(
                "seconds={v:?}: give a whole number of seconds, 1 to {MAX_PROFILE_SECONDS}\n"
            )),
            Ok(n) => Ok(n.min(MAX_PROFILE_SECONDS)),
        },
    }
}

fn count(e: &Endpoints, kind: &'static str, outcome: &'static str) {
    e.metrics
        .profiling
        .requests
        .get_or_create(&ProfileRequestLabel { kind, outcome })
        .inc();
}

async fn cpu_profile(query: Option<&str>, e: &Endpoints, output: CpuOutput) -> Answer {
    let kind = output.kind();
    let seconds = match profile_seconds(query) {
        Ok(s) => s,
        Err(msg) => {
            count(e, kind, "error");
            return text(StatusCode::BAD_REQUEST, msg);
        }
    };
    let lease = match e.profiler.acquire_for_request(PYROSCOPE_YIELD_WAIT).await {
        Ok(l) => l,
        Err(busy) => {
            count(e, kind, "busy");
            return text(StatusCode::CONFLICT, format!("{busy}\n"));
        }
    };
    let (recording, lease) = match CpuRecording::start_blocking(lease, CPU_PROFILE_HZ).await {
        Ok(started) => started,
        Err(err) => {
            count(e, kind, "error");
            tracing::warn!(error = %err, "on-demand CPU profile failed");
            return text(StatusCode::INTERNAL_SERVER_ERROR, format!("{err}\n"));
        }
    };
    tracing::info!(seconds, kind, "taking an on-demand CPU profile");
    // Shutdown cuts the profile short rather than delaying the exit.
    tokio::select! {
        _ = tokio::time::sleep(Duration::from_secs(seconds)) => {}
        _ = e.shutdown.wait() => {}
    }
    let encoded = tokio::task::spawn_blocking(move || {
        let report = recording.finish();
        drop(lease);
        let encoded = report.and_then(|report| match output {
            CpuOutput::Pprof => encode_pprof_gz(&report),
            CpuOutput::Flamegraph => encode_flamegraph(&report),
        });
        return_memory();
        encoded
    })
    .await
    .unwrap_or_else(|join| Err(ProfileError::Task(join.to_string())));
    match encoded {
        Ok(body) => {
            count(e, kind, "ok");
            match output {
                CpuOutput::Pprof => {
                    let mut r = bytes("application/octet-stream", body);
                    r.headers_mut().insert(
                        CONTENT_DISPOSITION,
                        HeaderValue::from_static("attachment; filename=\"xtcp2-cpu.pb.gz\""),
                    );
                    r
                }
                CpuOutput::Flamegraph => bytes("image/svg+xml", body),
            }
        }
        Err(err) => {
            count(e, kind, "error");
            tracing::warn!(error = %err, "on-demand CPU profile failed");
            text(StatusCode::INTERNAL_SERVER_ERROR, format!("{err}\n"))
        }
    }
}

async fn heap_profile(e: &Endpoints) -> Answer {
    match heap_pprof_gz().await {
        Ok(body) => {
            count(e, "heap", "ok");
            let mut r = bytes("application/octet-stream", body);
            r.headers_mut().insert(
                CONTENT_DISPOSITION,
                HeaderValue::from_static("attachment; filename=\"xtcp2-heap.pb.gz\""),
            );
            r
        }
        Err(err @ ProfileError::HeapNotBuilt) => {
            count(e, "heap", "unsupported");
            text(StatusCode::NOT_IMPLEMENTED, format!("{err}\n"))
        }
        Err(err) => {
            count(e, "heap", "error");
            text(StatusCode::INTERNAL_SERVER_ERROR, format!("{err}\n"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `seconds` defaults to 30, is capped at 60 and must be a positive integer.
    #[test]
    fn profile_seconds_default_cap_and_errors() {
        assert_eq!(profile_seconds(None), Ok(30));
        assert_eq!(profile_seconds(Some("debug=1")), Ok(30));
        assert_eq!(profile_seconds(Some("seconds=2")), Ok(2));
        assert_eq!(profile_seconds(Some("x=1&seconds=3600")), Ok(MAX_PROFILE_SECONDS));
        assert!(profile_seconds(Some("seconds=0")).is_err());
        assert!(profile_seconds(Some("seconds=-1")).is_err());
        assert!(profile_seconds(Some("seconds=1.5")).is_err());
    }

    /// The health, readiness and profiling paths are reserved, with
    /// everything under /debug/pprof; look-alikes are not.
    #[test]
    fn reserved_paths() {
        assert_eq!(reserved_path("/healthz"), Some("the liveness endpoint /healthz"));
        assert_eq!(reserved_path("/readyz"), Some("the readiness endpoint /readyz"));
        for p in ["/debug/pprof", "/debug/pprof/", "/debug/pprof/heap"] {
            assert_eq!(
                reserved_path(p),
                Some("the profiling endpoints under /debug/pprof"),
                "{p}"
            );
        }
        for p in [
            "/metrics",
            "/",
            "/healthz2",
            "/healthz/metrics",
            "/debug/pprofx",
            "/debug",
        ] {
            assert_eq!(reserved_path(p), None, "{p}");
        }
    }

    /// The canned refusal is a well-formed answer: its Content-Length is its body's.
    #[test]
    fn refused_answer_is_well_formed() {
        let text = std::str::from_utf8(REFUSED_ANSWER).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 503 "), "{head}");
        let length = head.lines().find_map(|l| l.strip_prefix("Content-Length: ")).unwrap();
        assert_eq!(length.parse::<usize>().unwrap(), body.len());
    }
}
