//! The gRPC server: the Go daemon's control and record services, so its
//! `xtcp2ctl`/`xtcp2client` (and ours, `xtcp2 ctl`/`xtcp2 client`) work
//! unchanged, plus `grpc.health.v1` and server reflection.
//!
//! - `xtcp_config.v1.ConfigService` ([`config`]): the configuration, the
//!   live poll cadence, polls on request;
//! - `xtcp_flat_record.v1.XTCPFlatRecordService` ([`records`]): the live
//!   record streams.
//!
//! Off unless `--grpc-listen` or `-grpcPort` asks (then loopback unless
//! `--grpc-listen` names another address), optionally over TLS with client
//! certificates: the Go daemon serves every address without auth, and this
//! API can change what the daemon collects. It owns no schedule: requests
//! go to [`crate::control::PollControl`], records come from
//! [`crate::tap::RecordTap`].

pub mod client;
pub mod config;
pub mod records;

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::runtime::Runtime;
use tonic::transport::{Certificate, Identity, Server, ServerTlsConfig};

use crate::config::{DaemonArgs, GrpcConfig, GrpcTls};
use crate::control::PollControl;
use crate::metrics::{Metrics, RpcLabel};
use crate::shutdown::Shutdown;
use crate::tap::RecordTap;

/// The generated messages and services.
pub mod proto {
    /// `xtcp_config.v1` (`proto/xtcp_config_v1.proto`).
    #[allow(clippy::all, missing_docs)]
    pub mod config {
        include!(concat!(env!("OUT_DIR"), "/xtcp_config.v1.rs"));
    }
    /// `xtcp_flat_record.v1` (`proto/xtcp_flat_record_v1.proto`).
    pub use crate::format::protobuf::flat_record_v1 as flat_record;

    /// Every file of `proto/` and its imports, for reflection.
    pub const DESCRIPTORS: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/descriptors.bin"));
}

/// The services' full names, as reflection and health report them.
pub const CONFIG_SERVICE: &str = "xtcp_config.v1.ConfigService";
pub const RECORD_SERVICE: &str = "xtcp_flat_record.v1.XTCPFlatRecordService";

/// What the daemon hands the services.
pub struct GrpcParts {
    pub metrics: Arc<Metrics>,
    pub control: Arc<PollControl>,
    pub tap: Arc<RecordTap>,
    pub args: Arc<DaemonArgs>,
}

/// What the services share with the daemon.
pub struct GrpcShared {
    pub metrics: Arc<Metrics>,
    pub control: Arc<PollControl>,
    pub tap: Arc<RecordTap>,
    /// The flags the daemon started with (`Get` reports them, with the live cadence).
    pub args: Arc<DaemonArgs>,
    /// The listener's port, as `XtcpConfig.grpc_port` reports it.
    pub grpc_port: u16,
}

/// The RPCs, for the metrics.
#[derive(Debug, Clone, Copy)]
pub enum Method {
    Get,
    Set,
    SetPollFrequency,
    TriggerPoll,
    TriggerPollBurst,
    SetS3Upload,
    FlatRecords,
    PollFlatRecords,
}

impl Method {
    pub fn name(self) -> &'static str {
        match self {
            Method::Get => "Get",
            Method::Set => "Set",
            Method::SetPollFrequency => "SetPollFrequency",
            Method::TriggerPoll => "TriggerPoll",
            Method::TriggerPollBurst => "TriggerPollBurst",
            Method::SetS3Upload => "SetS3Upload",
            Method::FlatRecords => "FlatRecords",
            Method::PollFlatRecords => "PollFlatRecords",
        }
    }
}

/// The canonical name of a status code (`INVALID_ARGUMENT`).
pub fn code_name(code: tonic::Code) -> &'static str {
    use tonic::Code::*;
    match code {
        Ok => "OK",
        Cancelled => "CANCELLED",
        Unknown => "UNKNOWN",
        InvalidArgument => "INVALID_ARGUMENT",
        DeadlineExceeded => "DEADLINE_EXCEEDED",
        NotFound => "NOT_FOUND",
        AlreadyExists => "ALREADY_EXISTS",
        PermissionDenied => "PERMISSION_DENIED",
        ResourceExhausted => "RESOURCE_EXHAUSTED",
        FailedPrecondition => "FAILED_PRECONDITION",
        Aborted => "ABORTED",
        OutOfRange => "OUT_OF_RANGE",
        Unimplemented => "UNIMPLEMENTED",
        Internal => "INTERNAL",
        Unavailable => "UNAVAILABLE",
        DataLoss => "DATA_LOSS",
        Unauthenticated => "UNAUTHENTICATED",
    }
}

impl GrpcShared {
    /// Counts one answered call.
    pub fn count(&self, method: Method, code: tonic::Code) {
        self.metrics
            .grpc
            .requests
            .get_or_create(&RpcLabel {
                method: method.name(),
                code: code_name(code),
            })
            .inc();
    }

    /// Counts the answer `result` and passes it on.
    pub fn counted<T>(&self, method: Method, result: Result<T, tonic::Status>) -> Result<T, tonic::Status> {
        let code = match &result {
            Ok(_) => tonic::Code::Ok,
            Err(status) => status.code(),
        };
        self.count(method, code);
        result
    }
}

#[derive(Debug, thiserror::Error)]
pub enum GrpcError {
    #[error("--grpc-listen {addr}: cannot listen: {source}")]
    Bind { addr: SocketAddr, source: std::io::Error },
    #[error("gRPC TLS: cannot read {path}: {source}")]
    TlsFile {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("gRPC TLS: {0}")]
    Tls(#[from] tonic::transport::Error),
    #[error("gRPC reflection: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
}

/// The running server: its address, and the health status to set once the
/// daemon is ready.
pub struct GrpcServer {
    pub local_addr: SocketAddr,
    health: tonic_health::server::HealthReporter,
    task: tokio::task::JoinHandle<()>,
}

impl GrpcServer {
    /// Binds (an error here stops the start, like a taken --prom-listen)
    /// and serves until `shutdown`.
    pub fn start(
        runtime: &Runtime,
        config: &GrpcConfig,
        parts: GrpcParts,
        shutdown: Shutdown,
    ) -> Result<GrpcServer, GrpcError> {
        let bind_error = |source| GrpcError::Bind {
            addr: config.listen,
            source,
        };
        let std_listener = std::net::TcpListener::bind(config.listen).map_err(bind_error)?;
        std_listener.set_nonblocking(true).map_err(bind_error)?;
        let local_addr = std_listener.local_addr().map_err(bind_error)?;
        let shared = Arc::new(GrpcShared {
            metrics: parts.metrics,
            control: parts.control,
            tap: parts.tap,
            args: parts.args,
            grpc_port: local_addr.port(),
        });
        let listener = {
            let _guard = runtime.enter();
            tokio::net::TcpListener::from_std(std_listener).map_err(bind_error)?
        };
        let mut builder = Server::builder();
        if let Some(tls) = &config.tls {
            builder = builder.tls_config(tls_config(tls)?)?;
        }
        let (health, health_service) = {
            let _guard = runtime.enter();
            tonic_health::server::health_reporter()
        };
        // Both versions: grpcurl and newer clients ask v1, grpcio-reflection
        // and older tools v1alpha.
        let reflection = || {
            tonic_reflection::server::Builder::configure()
                .register_encoded_file_descriptor_set(proto::DESCRIPTORS)
                .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        };
        let (reflection_v1, reflection_v1alpha) = (reflection().build_v1()?, reflection().build_v1alpha()?);
        let router = builder
            .add_service(health_service)
            .add_service(reflection_v1)
            .add_service(reflection_v1alpha)
            .add_service(proto::config::config_service_server::ConfigServiceServer::new(
                config::ControlService { shared: shared.clone() },
            ))
            .add_service(
                proto::flat_record::xtcp_flat_record_service_server::XtcpFlatRecordServiceServer::new(
                    records::RecordService { shared },
                ),
            );
        let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
        let tls = if config.tls.is_some() { "on" } else { "off" };
        tracing::info!(addr = %local_addr, tls, "gRPC listening (ConfigService, XTCPFlatRecordService, health, reflection)");
        let task = runtime.spawn(async move {
            if let Err(e) = router
                .serve_with_incoming_shutdown(incoming, async move { shutdown.wait().await })
                .await
            {
                tracing::error!(error = %e, "gRPC server stopped");
            }
        });
        Ok(GrpcServer {
            local_addr,
            health,
            task,
        })
    }

    /// The daemon is ready (its first poll is done): health says SERVING.
    pub async fn ready(&self) {
        for service in ["", CONFIG_SERVICE, RECORD_SERVICE] {
            self.health
                .set_service_status(service, tonic_health::ServingStatus::Serving)
                .await;
        }
    }

    /// Waits (bounded) for the server to stop after shutdown.
    pub async fn finish(self) {
        let _ = tokio::time::timeout(std::time::Duration::from_secs(1), self.task).await;
    }
}

fn read(path: &std::path::Path) -> Result<Vec<u8>, GrpcError> {
    std::fs::read(path).map_err(|source| GrpcError::TlsFile {
        path: path.to_path_buf(),
        source,
    })
}

fn tls_config(tls: &GrpcTls) -> Result<ServerTlsConfig, GrpcError> {
    let identity = Identity::from_pem(read(&tls.cert)?, read(&tls.key)?);
    let mut config = ServerTlsConfig::new().identity(identity);
    if let Some(ca) = &tls.client_ca {
        config = config.client_ca_root(Certificate::from_pem(read(ca)?));
    }
    Ok(config)
}
