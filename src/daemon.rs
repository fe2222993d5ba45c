//! The daemon's wiring: runtime, metrics, queue, destination, poll loop,
//! signals. Kept apart from flag handling so tests can run it in-process.
use std::sync::Arc;
use std::time::Duration;

use crate::batch::EnvelopeQueue;
use crate::config::Config;
use crate::control::{Cadence, PollControl};
use crate::grpc::{GrpcParts, GrpcServer};
use crate::metrics::Metrics;
use crate::netns::watch::{self, Wake};
use crate::observe::{caps, Observability};
use crate::poll::{Poller, PollerLinks};
use crate::shutdown::{HeldSignals, Shutdown};
use crate::sink::copies::EnvelopeCopies;
use crate::sink::{deliver, DeliveryPolicy, Destination, ReopenHandle, Sink};
use crate::tap::RecordTap;
use anyhow::Context;
use tokio::signal::unix::{signal, Signal, SignalKind};

/// Upper bound of the async runtime's blocking-thread pool.
const MAX_BLOCKING_THREADS: usize = 8;

/// How much longer than `--shutdown-timeout` the daemon waits for the
/// delivery task, which ends by itself within its budget: a backstop only.
const SHUTDOWN_BACKSTOP_MARGIN: Duration = Duration::from_secs(1);

/// Runs until `--max-loops` polls are done or `shutdown` is triggered
/// (SIGTERM/SIGINT trigger it too), then flushes and returns.
///
/// First it drops the calling thread's capabilities to what `config` needs
/// (`observe::caps::keep_only`); threads the caller started before keep theirs,
/// so call it while the calling thread is the process's only one.
pub fn run(config: Config, shutdown: Shutdown) -> anyhow::Result<RunOutcome> {
    run_with_held_signals(config, shutdown, None)
}

/// How a run that ended without an error went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunOutcome {
    pub polls: u64,
    /// Polls in which some namespace's dump was cut short.
    pub incomplete_polls: u64,
}

impl RunOutcome {
    /// The exit status of a `--max-loops` run whose polls were not all
    /// complete: what it wrote is true but not the whole host.
    pub const EXIT_INCOMPLETE: u8 = 3;
}

/// [`run`], releasing `held` (blocked since the start of `main`) once the
/// handlers of SIGTERM, SIGINT and SIGHUP are installed.
pub fn run_with_held_signals(
    config: Config,
    shutdown: Shutdown,
    held: Option<HeldSignals>,
) -> anyhow::Result<RunOutcome> {
    // First, while this is the only thread: capabilities are per thread and
    // every thread started from now on copies this one's (observe::caps).
    // What still needs privilege after this line (binding --prom-listen,
    // setns, the /proc scan, the udp: raw socket) is in the kept set.
    let privileges = drop_capabilities(&config)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        // Blocking work here is file writes and stdout: a few threads are
        // plenty, and a bound keeps a stuck disk from growing threads.
        .max_blocking_threads(MAX_BLOCKING_THREADS)
        .thread_name("xtcp2-async")
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    // Handlers first: until they exist, a signal would take its default
    // action (terminate, nothing flushed).
    let signals = {
        let _guard = runtime.enter();
        Signals::install()
    };
    if let Some(held) = held {
        held.release();
    }
    let mut metrics = Metrics::new();
    if let Some(max_series) = config.observe.aggregate_max_series {
        // The poller finds the store in the metrics and publishes each poll.
        metrics.enable_aggregates(max_series);
    }
    let metrics = Arc::new(metrics);
    privileges.report_to(&metrics);
    // Observability first: /healthz answers during startup, and a taken
    // --prom-listen port fails before anything else is opened.
    let observability = Observability::start(&runtime, &config.observe, metrics.clone(), shutdown.clone())?;
    // Bound before the destination opens, like --prom-listen: a taken
    // port fails the start at once.
    let control = Arc::new(PollControl::new(Cadence {
        frequency: config.poll.frequency,
        timeout: config.poll.timeout,
    }));
    let tap = config.grpc.as_ref().map(|_| Arc::new(RecordTap::default()));
    let grpc = match (&config.grpc, &tap) {
        (Some(grpc), Some(tap)) => Some(
            GrpcServer::start(
                &runtime,
                grpc,
                GrpcParts {
                    metrics: metrics.clone(),
                    control: control.clone(),
                    tap: tap.clone(),
                    args: config.args.clone(),
                },
                shutdown.clone(),
            )
            .context("starting the gRPC server")?,
        ),
        _ => None,
    };
    let delivery = &config.delivery;
    let queue = Arc::new(EnvelopeQueue::with_byte_limit(
        delivery.queue_envelopes,
        delivery.queue_bytes,
        metrics.clone(),
    ));
    let mut sink = runtime
        .block_on(Sink::open_destination(
            &delivery.dest_text,
            &delivery.destination,
            &config.output.format,
        ))
        .with_context(|| format!("opening destination {}", delivery.dest_text))?;
    if let Some(copies) = &delivery.envelope_copies {
        sink.keep_copies(EnvelopeCopies::new(copies, config.output.format.format().name()));
    }
    match sink.ready_signal() {
        None => observability.destination_opened(),
        // Open once the peer answered (kafka: the first metadata exchange).
        Some(mut ready) => {
            let readiness = observability.readiness.clone();
            runtime.spawn(async move {
                if ready.wait_for(|open| *open).await.is_ok() {
                    readiness.destination_opened();
                }
            });
        }
    }
    let reopen = sink.reopen_handle();
    let policy = DeliveryPolicy {
        shutdown_budget: delivery.shutdown_timeout,
        ..DeliveryPolicy::new(delivery.produce_timeout)
    };
    let backstop = delivery.shutdown_timeout + SHUTDOWN_BACKSTOP_MARGIN;
    let delivery = {
        let (shutdown, queue, metrics) = (shutdown.clone(), queue.clone(), metrics.clone());
        // Delivery ends before shutdown only when the destination is gone
        // for good (stdout's reader exited): then the daemon stops too.
        runtime.spawn(async move {
            let report = deliver(sink, queue.clone(), metrics.clone(), policy).await;
            shutdown.trigger();
            report
        })
    };

    let (wake_tx, wake_rx) = std::sync::mpsc::channel();
    control.wake_with(wake_tx.clone());
    {
        let readiness = observability.readiness.clone();
        control.on_cadence_change(move |cadence| readiness.set_poll_period(cadence.frequency));
    }
    runtime.spawn(signals.serve(shutdown.clone(), reopen));
    {
        let shutdown = shutdown.clone();
        let wake_tx = wake_tx.clone();
        runtime.spawn(async move {
            shutdown.wait().await;
            let _ = wake_tx.send(Wake::Shutdown);
        });
    }
    // A one-shot collection discovers once and exits: a watcher would only
    // delay its exit by up to one watch interval.
    let watcher = if config.poll.max_loops == 1 {
        None
    } else {
        watch::spawn(config.netns.dirs.clone(), wake_tx, shutdown.clone())
    };

    let sources = attribution_sources(&config, &metrics, &runtime, &shutdown);
    let links = PollerLinks {
        control: Some(control),
        tap,
    };
    let mut poller = Poller::with_links(config, metrics.clone(), queue.clone(), links)?;
    poller.attribute_with(&sources);
    let mut grpc_serving = false;
    poller.run(wake_rx, |_report| {
        observability.poll_completed();
        crate::observe::heap::after_poll(&metrics);
        if let (Some(grpc), false) = (&grpc, grpc_serving) {
            // Ready as /readyz is: the first poll is done.
            runtime.block_on(grpc.ready());
            grpc_serving = true;
        }
    });

    shutdown.trigger();
    queue.close();
    let flushed = runtime.block_on(async { tokio::time::timeout(backstop, delivery).await });
    if flushed.is_err() {
        // Backstop only: delivery gives up by itself within its budget.
        let dropped = queue.discard_all();
        tracing::warn!(
            envelopes = dropped.envelopes,
            rows = dropped.rows,
            rows_queued = metrics.envelope.rows_flushed.get(),
            rows_dropped = metrics.destination.dropped_rows.get(),
            "delivery finished: the destination did not take the remaining envelopes in time; dropped them"
        );
    }
    if let Some(w) = watcher {
        let _ = w.join();
    }
    if let Some(grpc) = grpc {
        runtime.block_on(grpc.finish());
    }
    // After the flush: /readyz kept answering 503 until here.
    let finished = observability.finish(&runtime);
    runtime.shutdown_timeout(Duration::from_secs(1));
    finished?;
    Ok(RunOutcome {
        polls: metrics.poll.cycles.get(),
        incomplete_polls: metrics.poll.partial.get(),
    })
}

/// How long the first poll waits for the Docker Engine's container list.
const DOCKER_FIRST_SYNC: Duration = Duration::from_secs(3);

/// Starts the workload attribution sources `config` asks for: the cgroup
/// index is walked once here, the Docker Engine is followed on the runtime.
fn attribution_sources(
    config: &Config,
    metrics: &Arc<Metrics>,
    runtime: &tokio::runtime::Runtime,
    shutdown: &Shutdown,
) -> crate::attribute::Sources {
    use crate::attribute::{cgroup::CgroupResolver, docker};
    let cgroups = if config.attribution.cgroups {
        CgroupResolver::start(metrics.clone())
    } else {
        None
    };
    let containers = config.attribution.docker_socket.as_ref().map(|socket| {
        let index = Arc::new(docker::ContainerIndex::default());
        runtime.spawn(docker::follow(
            socket.clone(),
            index.clone(),
            metrics.clone(),
            shutdown.clone(),
        ));
        // The first poll should know the running containers: wait for
        // the first list, but never long (an engine that is down is
        // logged by the follower and the daemon goes on without it).
        let synced = runtime.block_on(async { tokio::time::timeout(DOCKER_FIRST_SYNC, index.wait_synced()).await });
        if synced.is_err() {
            tracing::info!(waited = ?DOCKER_FIRST_SYNC, "--enrich-container: no container list yet; polling without it");
        }
        index
    });
    if config.args.enrich_lldp && !config.args.lldpd_version_hint.is_empty() {
        tracing::info!(hint = %config.args.lldpd_version_hint,
            "--lldpd-version-hint has no effect: lldpcli's json0 output is the same for every lldpd version");
    }
    let uplinks = config
        .attribution
        .uplinks
        .clone()
        .map(|uplinks| crate::attribute::uplink::UplinkIndex::start(uplinks, metrics.clone()));
    crate::attribute::Sources {
        cgroups,
        containers,
        uplinks,
    }
}

/// What `config` will ask of the kernel once started (`docs/security.md`).
pub(crate) fn capability_needs(config: &Config) -> caps::Needs {
    caps::Needs {
        enter_namespaces: config.netns.proc_scan || !config.netns.dirs.is_empty(),
        proc_scan: config.netns.proc_scan,
        raw_socket: matches!(config.delivery.destination, Destination::Udp(_)),
        privileged_port: config
            .observe
            .prom_listen
            .into_iter()
            .chain(config.grpc.as_ref().map(|g| g.listen))
            .any(|addr| addr.port() != 0 && addr.port() < unprivileged_port_start()),
        lldp_client: config
            .attribution
            .uplinks
            .as_ref()
            .is_some_and(|uplinks| uplinks.lldp.is_some()),
    }
}

/// The lowest port anyone may bind (`net.ipv4.ip_unprivileged_port_start`,
/// 1024 unless changed). The sysctl is read from the daemon's own network
/// namespace, where the listener is bound.
fn unprivileged_port_start() -> u16 {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_unprivileged_port_start")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(1024)
}

/// Keeps the capabilities `config` needs, drops the rest and logs the kept set.
fn drop_capabilities(config: &Config) -> anyhow::Result<caps::Privileges> {
    let dropped = caps::keep_only(&capability_needs(config)).context("dropping capabilities")?;
    let kept = caps::CapabilityMask::of(dropped.kept.iter().map(|k| k.capability));
    let why: Vec<String> = dropped
        .kept
        .iter()
        .map(|k| format!("{}: {}", caps::capability_name(k.capability), k.reason))
        .collect();
    tracing::info!(
        kept = %kept,
        why = %why.join("; "),
        "kept the capabilities this configuration needs; dropped every other capability, set no_new_privs"
    );
    if dropped.bounding_unchanged {
        tracing::info!(
            bounding = %dropped.privileges.bounding,
            "bounding set left as it is (no CAP_SETPCAP to shrink it); no_new_privs keeps exec from using it"
        );
    }
    Ok(dropped.privileges)
}

/// The daemon's signal handlers, installed before anything else starts.
struct Signals {
    terminate: Option<Signal>,
    interrupt: Option<Signal>,
    hangup: Option<Signal>,
}

impl Signals {
    /// Installs the handlers (needs the runtime's context). One that cannot
    /// be installed is logged; SIGINT then falls back to ctrl_c.
    fn install() -> Signals {
        let install = |kind: SignalKind, name: &str| match signal(kind) {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::warn!(error = %e, "cannot handle {name}");
                None
            }
        };
        Signals {
            terminate: install(SignalKind::terminate(), "SIGTERM"),
            interrupt: install(SignalKind::interrupt(), "SIGINT"),
            hangup: install(SignalKind::hangup(), "SIGHUP"),
        }
    }

    /// SIGTERM/SIGINT trigger `shutdown`; SIGHUP never stops the daemon: it
    /// asks the destination to reopen (a rotated file, a fresh connection).
    async fn serve(mut self, shutdown: Shutdown, reopen: ReopenHandle) {
        async fn next(signal: &mut Option<Signal>) {
            match signal {
                Some(s) => {
                    s.recv().await;
                }
                None => std::future::pending().await,
            }
        }
        loop {
            tokio::select! {
                _ = next(&mut self.terminate) => break,
                _ = next(&mut self.interrupt) => break,
                _ = next(&mut self.hangup) => {
                    tracing::info!(
                        "SIGHUP: the destination is reopened before its next send (a file: is reopened at its \
                         path, a connection is made anew); the rest of the configuration needs a restart"
                    );
                    reopen.request();
                }
            }
        }
        tracing::info!("shutdown requested: finishing the current poll and flushing");
        shutdown.trigger();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn needs(args: &[&str]) -> caps::Needs {
        let argv = std::iter::once("xtcp2").chain(args.iter().copied()).map(String::from);
        let cli = crate::config::parse_args(argv).unwrap();
        capability_needs(&Config::from_args(&cli.daemon).unwrap())
    }

    /// The defaults enter namespaces (bind mounts and the /proc scan) and
    /// listen on an unprivileged port with no raw socket.
    #[test]
    fn default_configuration_needs_setns_and_the_proc_scan() {
        let expected = caps::Needs {
            enter_namespaces: true,
            proc_scan: true,
            raw_socket: false,
            privileged_port: false,
            lldp_client: false,
        };
        assert_eq!(needs(&[]), expected);
        assert!(needs(&["--enrich-lldp"]).lldp_client);
        assert!(!needs(&["--enrich-nic"]).lldp_client);
    }

    /// Host namespace only, no listener, a udp: destination: only the raw
    /// socket is needed (CAP_NET_ADMIN is always kept).
    #[test]
    fn host_only_udp_configuration_needs_only_the_raw_socket() {
        let expected = caps::Needs {
            raw_socket: true,
            ..caps::Needs::default()
        };
        let args = ["--netns-dirs", "", "--netns-proc-scan=false", "--prom-listen", ""];
        assert_eq!(needs(&[&args[..], &["--dest", "udp:127.0.0.1:9"]].concat()), expected);
        // Bind-mount directories alone still need setns, not the /proc scan.
        let dirs = needs(&[
            "--netns-dirs",
            "/run/netns",
            "--netns-proc-scan=false",
            "--prom-listen",
            "",
        ]);
        assert!(dirs.enter_namespaces && !dirs.proc_scan && !dirs.raw_socket);
    }

    /// Port 0 (the kernel picks one) is never privileged.
    #[test]
    fn listening_on_port_zero_is_not_privileged() {
        assert!(!needs(&["--prom-listen", "127.0.0.1:0"]).privileged_port);
    }
}
