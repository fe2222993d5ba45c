//! The one HTTP listener (`--prom-listen`): metrics, health, readiness and
//! pprof. hyper 1 over HTTP/1.1, on the daemon's tokio runtime.
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

use super::readiness::Readiness;
use crate::log_throttle::LogThrottle;
use crate::metrics::exposition::ExpositionFormat;
use crate::metrics::{Metrics, ProfileRequestLabel};
use crate::profile::MAX_PROFILE_SECONDS;
use crate::profile::{
    encode_flamegraph, encode_pprof_gz, heap_pprof_gz, CpuRecording, ProfileError, ProfilerLock, CPU_PROFILE_HZ,
    DEFAULT_PROFILE_SECONDS, PYROSCOPE_YIELD_WAIT,
};
use crate::shutdown::Shutdown;

/// Connections served at once; more wait in the kernel's accept queue.
/// Scrapers and an operator's pprof need a handful; the cap keeps a
/// misbehaving client from costing more than a few hundred KiB.
pub(crate) const MAX_CONNECTIONS: usize = 64;
/// A client must send its request headers within this time (slowloris).
pub(crate) const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
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

/// The listener could not be opened. The cause is part of the message
/// (not a `source`), so `{:#}` does not print it twice.
#[derive(Debug, thiserror::Error)]
#[error("cannot listen on {addr} (--prom-listen): {cause}")]
pub struct BindError {
    pub addr: SocketAddr,
    pub cause: std::io::Error,
}

/// Binds the listener now, so a taken port fails startup with its address.
pub fn bind(addr: SocketAddr) -> Result<std::net::TcpListener, BindError> {
    let err = |cause| BindError { addr, cause };
    let listener = std::net::TcpListener::bind(addr).map_err(err)?;
    listener.set_nonblocking(true).map_err(err)?;
    Ok(listener)
}

/// What the handlers need.
pub struct Endpoints {
    pub metrics: Arc<Metrics>,
    pub readiness: Arc<Readiness>,
    pub profiler: Arc<ProfilerLock>,
    /// `--prom-path`.
    pub prom_path: String,
    /// The daemon's shutdown: an on-demand profile ends early with it.
    pub shutdown: Shutdown,
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
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    let mut connections = JoinSet::new();
    let accept_failures = LogThrottle::new(ACCEPT_FAILURE_LOG_INTERVAL);
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new()).header_read_timeout(HEADER_READ_TIMEOUT);
    loop {
        let slot = tokio::select! {
            _ = &mut stop_when_drained => break,
            slot = slots.clone().acquire_owned() => match slot {
                Ok(s) => s,
                Err(_) => break, // the semaphore is never closed
            },
        };
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
        let endpoints = endpoints.clone();
        let stopping = stopping.clone();
        let service = hyper::service::service_fn(move |req| {
            let endpoints = endpoints.clone();
            async move { Ok::<_, Infallible>(route(req, &endpoints).await) }
        });
        let connection = http.serve_connection(TokioIo::new(stream), service);
        connections.spawn(async move {
            let _slot = slot;
            tokio::pin!(connection);
            let result = tokio::select! {
                r = connection.as_mut() => r,
                _ = stopping.wait() => {
                    connection.as_mut().graceful_shutdown();
                    connection.await
                }
            };
            if let Err(e) = result {
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

const INDEX: &str = "xtcp2\n\n\
    /healthz                                 liveness\n\
    /readyz                                  readiness (200 while polling)\n\
    /debug/pprof/profile?seconds=N           CPU profile, gzipped pprof (go tool pprof URL)\n\
    /debug/pprof/flamegraph?seconds=N        CPU flame graph, SVG\n\
    /debug/pprof/heap                        heap profile, gzipped pprof (heap-profiling builds)\n";

async fn route(req: Request<Incoming>, e: &Endpoints) -> Answer {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        let mut r = text(StatusCode::METHOD_NOT_ALLOWED, "only GET and HEAD\n");
        r.headers_mut().insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
        return r;
    }
    let path = req.uri().path();
    if path == e.prom_path {
        let accept = req.headers().get(ACCEPT).and_then(|v| v.to_str().ok());
        let format = ExpositionFormat::negotiate(accept);
        let mut r = Response::new(Full::new(Bytes::from(e.metrics.encode(format))));
        r.headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_static(format.content_type()));
        return r;
    }
    match path {
        "/healthz" => text(StatusCode::OK, "ok\n"),
        "/readyz" => {
            let state = e.readiness.state();
            let status = if state.is_ready() {
                StatusCode::OK
            } else {
                StatusCode::SERVICE_UNAVAILABLE
            };
            text(status, state.describe())
        }
        "/" | "/debug/pprof" | "/debug/pprof/" => text(StatusCode::OK, format!("{INDEX}{:<41}metrics\n", e.prom_path)),
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
        let report = report?;
        match output {
            CpuOutput::Pprof => encode_pprof_gz(&report),
            CpuOutput::Flamegraph => encode_flamegraph(&report),
        }
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
}
