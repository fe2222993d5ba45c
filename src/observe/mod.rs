//! Observability, beside the data path: metrics, the HTTP endpoints
//! (metrics, health, readiness, pprof) and the startup capability check.
//! Profiling itself is [`crate::profile`]; the metrics it serves are
//! [`crate::metrics`], which every stage writes to. Nothing here touches records,
//! and nothing here imports a stage of the data path.
//!
//! | module | owns |
//! |---|---|
//! | [`readiness`] | what `/readyz` answers |
//! | [`server`] | the `--prom-listen` and `--pprof-listen` HTTP servers and their routes |
//! | `connections` | which connections a listener keeps under load (caps, eviction) |
//! | [`caps`] | the startup capability check (exit 77), the drop to the kept set |
//! | [`heap`] | the allocator's heap gauges, and its free pages given back after each poll |
//!
//! [`Observability`] is what the daemon starts before the data path and
//! finishes after it.

pub mod caps;
pub(crate) mod connections;
pub mod heap;
pub mod readiness;
pub mod server;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::metrics::Metrics;
use crate::profile::pyroscope::{self, PyroscopeConfig};
use crate::profile::{ProfileError, ProfileMode, ProfilerLock, WholeRunProfile};
use crate::shutdown::Shutdown;
use readiness::Readiness;

/// Where `/debug/pprof/*` is served (`--pprof`, `--pprof-listen`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PprofServing {
    /// Nowhere (the default): the paths answer 404 saying how to turn them on.
    Off,
    /// On the `--prom-listen` listener, beside the metrics (`--pprof`).
    WithMetrics,
    /// Only on a listener of its own (`--pprof-listen ADDR`).
    Own(SocketAddr),
}

/// The observability side's settings (`--prom-*`, `--pprof*`,
/// `--profile-*`, `--pyroscope-*`).
#[derive(Debug, Clone)]
pub struct ObserveConfig {
    /// `None`: no HTTP server.
    pub prom_listen: Option<SocketAddr>,
    pub prom_path: String,
    pub pprof: PprofServing,
    pub profile_mode: Option<ProfileMode>,
    pub profile_path: PathBuf,
    pub pyroscope: Option<PyroscopeConfig>,
    /// The poll period: readiness calls a poll stalled after a few of them.
    pub poll_frequency: Duration,
    /// The host name reported to Pyroscope.
    pub hostname: Arc<str>,
    /// TTL and hop limit of the listeners' replies.
    pub listener_hops: ListenerHops,
    /// `--aggregate-metrics`: the cap on label sets; `None` when off.
    pub aggregate_max_series: Option<usize>,
}

/// `-ipv4Ttl` / `-ipv6HopLimit`: the IP TTL (IPv4) or hop limit (IPv6) of
/// what the daemon's listeners send, set on the listening socket so every
/// accepted connection inherits it. `None`: the system's default.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ListenerHops {
    pub ipv4_ttl: Option<u32>,
    pub ipv6_hop_limit: Option<u32>,
}

#[derive(Debug, thiserror::Error)]
pub enum ObserveError {
    #[error(transparent)]
    Bind(#[from] server::BindError),
    #[error(transparent)]
    Profile(#[from] ProfileError),
    #[error(transparent)]
    Pyroscope(#[from] pyroscope::PyroscopeUrlError),
}

impl ObserveError {
    /// Whether a flag's value is at fault (the caller exits 2, as for any
    /// bad flag), not the environment (a taken port: exit 1).
    pub fn is_usage_error(&self) -> bool {
        match self {
            ObserveError::Bind(_) => false,
            ObserveError::Profile(e) => matches!(e, ProfileError::Directory { .. } | ProfileError::Create { .. }),
            ObserveError::Pyroscope(_) => true,
        }
    }
}

/// The running observability side of the daemon.
pub struct Observability {
    pub readiness: Arc<Readiness>,
    pub profiler: Arc<ProfilerLock>,
    /// Where the HTTP server listens (the real port when `:0` was asked).
    pub listen_addr: Option<SocketAddr>,
    /// Where the `--pprof-listen` server listens.
    pub pprof_addr: Option<SocketAddr>,
    server: Option<tokio::task::JoinHandle<()>>,
    pprof_server: Option<tokio::task::JoinHandle<()>>,
    pyroscope: Option<tokio::task::JoinHandle<()>>,
    drained: Shutdown,
    whole_run: Option<WholeRunProfile>,
}

impl Observability {
    /// Binds the HTTP server (a taken port is an error naming it), starts
    /// the whole-run profile and the Pyroscope push. Call before the data
    /// path so `/healthz` answers during startup.
    pub fn start(
        runtime: &tokio::runtime::Runtime,
        config: &ObserveConfig,
        metrics: Arc<Metrics>,
        shutdown: Shutdown,
    ) -> Result<Self, ObserveError> {
        let readiness = Arc::new(Readiness::new(config.poll_frequency, shutdown.clone()));
        let profiler = ProfilerLock::new();
        let whole_run = config
            .profile_mode
            .map(|mode| WholeRunProfile::start(mode, &config.profile_path, &profiler))
            .transpose()?;
        let drained = Shutdown::new();
        // Bound first, so the metrics listener can say where pprof is.
        let pprof_listener = match config.pprof {
            PprofServing::Own(addr) => Some(listen(runtime, "pprof-listen", addr, config.listener_hops)?),
            PprofServing::Off | PprofServing::WithMetrics => None,
        };
        let pprof_addr = pprof_listener.as_ref().map(|(_, addr)| *addr);
        let endpoints = |listener| {
            Arc::new(server::Endpoints {
                listener,
                metrics: metrics.clone(),
                readiness: readiness.clone(),
                profiler: profiler.clone(),
                prom_path: config.prom_path.clone(),
                shutdown: shutdown.clone(),
            })
        };
        let (server, listen_addr) = match config.prom_listen {
            None => (None, None),
            Some(addr) => {
                let (listener, local) = listen(runtime, "prom-listen", addr, config.listener_hops)?;
                let pprof = match (config.pprof, pprof_addr) {
                    (PprofServing::WithMetrics, _) => server::PprofHere::Served,
                    (_, Some(elsewhere)) => server::PprofHere::Elsewhere(elsewhere),
                    _ => server::PprofHere::Off,
                };
                if pprof == server::PprofHere::Served && local.ip().is_unspecified() {
                    tracing::warn!(addr = %local, "pprof is served on every address: anyone who reaches the port can take profiles; prefer --pprof-listen 127.0.0.1:6060");
                }
                let pprof_log = match pprof {
                    server::PprofHere::Served => "here".to_string(),
                    server::PprofHere::Off => "off".to_string(),
                    server::PprofHere::Elsewhere(a) => a.to_string(),
                };
                tracing::info!(addr = %local, path = %config.prom_path, pprof = %pprof_log, "serving metrics and health");
                let endpoints = endpoints(server::Listener::Metrics { pprof });
                let task = runtime.spawn(server::serve(listener, endpoints, shutdown.clone(), drained.clone()));
                (Some(task), Some(local))
            }
        };
        let pprof_server = pprof_listener.map(|(listener, local)| {
            tracing::info!(addr = %local, "serving pprof");
            let endpoints = endpoints(server::Listener::Pprof);
            runtime.spawn(server::serve(listener, endpoints, shutdown.clone(), drained.clone()))
        });
        let pyroscope = match &config.pyroscope {
            None => None,
            Some(p) => {
                let target = pyroscope::IngestTarget::new(p, &config.hostname)?;
                Some(runtime.spawn(pyroscope::run(
                    target,
                    p.upload_period,
                    profiler.clone(),
                    metrics.clone(),
                    shutdown.clone(),
                )))
            }
        };
        Ok(Observability {
            readiness,
            profiler,
            listen_addr,
            pprof_addr,
            server,
            pprof_server,
            pyroscope,
            drained,
            whole_run,
        })
    }

    pub fn destination_opened(&self) {
        self.readiness.destination_opened();
    }

    /// The poll loop's `on_poll` callback.
    pub fn poll_completed(&self) {
        self.readiness.poll_completed();
    }

    /// After the daemon has stopped polling and flushed: stops the server
    /// and the push, and writes the whole-run profile. Returns the path of
    /// the profile written, if any.
    pub fn finish(self, runtime: &tokio::runtime::Runtime) -> Result<Option<PathBuf>, ObserveError> {
        self.drained.trigger();
        let written = match self.whole_run {
            Some(p) => {
                let path = p.finish(runtime)?;
                tracing::info!(path = %path.display(), "wrote the whole-run profile");
                Some(path)
            }
            None => None,
        };
        runtime.block_on(async {
            let stop = async {
                if let Some(t) = self.pyroscope {
                    let _ = t.await;
                }
                for t in [self.server, self.pprof_server].into_iter().flatten() {
                    let _ = t.await;
                }
            };
            // Both end on their own once shutdown and drained are set;
            // the bound only protects the exit from a wedged task.
            let _ = tokio::time::timeout(server::CONNECTION_CLOSE_GRACE * 2, stop).await;
        });
        Ok(written)
    }
}

/// Binds `addr` (named by `--flag` in errors) as a tokio listener, and
/// returns it with the address it got (the real port when `:0` was asked).
fn listen(
    runtime: &tokio::runtime::Runtime,
    flag: &'static str,
    addr: SocketAddr,
    hops: ListenerHops,
) -> Result<(tokio::net::TcpListener, SocketAddr), server::BindError> {
    let std_listener = server::bind_with_hops(flag, addr, hops)?;
    let _guard = runtime.enter();
    let listener =
        tokio::net::TcpListener::from_std(std_listener).map_err(|cause| server::BindError { flag, addr, cause })?;
    let local = listener.local_addr().unwrap_or(addr);
    Ok((listener, local))
}
