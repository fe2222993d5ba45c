//! `xtcp_config.v1.ConfigService`: the configuration as the Go daemon's
//! `XtcpConfig`, the live poll cadence, polls on request.
//!
//! What can change live is the poll cadence (`poll_frequency`,
//! `poll_timeout`): the poller reads it before every wait. Everything else
//! is fixed for the process's life (sockets, threads, the destination and
//! format are built at start), so `Set` refuses a configuration that
//! changes any other field, naming those fields, and changes nothing.
//! Unlike the Go daemon, ours never re-executes itself: a restart with new
//! flags is the operator's, visible, decision.

use std::sync::Arc;
use std::time::Duration;

use tonic::{Request, Response, Status};

use super::proto::config::config_service_server::ConfigService;
use super::proto::config::{
    GetRequest, GetResponse, SetPollFrequencyRequest, SetPollFrequencyResponse, SetRequest, SetResponse,
    SetS3UploadRequest, SetS3UploadResponse, TriggerPollBurstRequest, TriggerPollBurstResponse, TriggerPollRequest,
    TriggerPollResponse, XtcpConfig,
};
use super::{GrpcShared, Method};
use crate::config::{auto_timeout, bounds as flag_bounds, parse_duration, DaemonArgs};
use crate::control::{bounds, Cadence};
use crate::record::go_v1::DAEMON_VERSION;

/// What `Get` shows in place of a secret. `Set` reads it back as "unchanged".
pub const REDACTED: &str = "<redacted>";

/// The service, over the daemon's shared gRPC state.
pub struct ControlService {
    pub(super) shared: Arc<GrpcShared>,
}

fn to_proto(d: Duration) -> prost_types::Duration {
    prost_types::Duration {
        seconds: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        nanos: d.subsec_nanos() as i32,
    }
}

/// A request's duration, or INVALID_ARGUMENT naming `field`.
fn from_proto(field: &str, d: &prost_types::Duration) -> Result<Duration, Status> {
    if d.seconds < 0 || d.nanos < 0 || d.nanos >= 1_000_000_000 {
        return Err(Status::invalid_argument(format!(
            "{field}: {}s {}ns is not a valid positive duration",
            d.seconds, d.nanos
        )));
    }
    Ok(Duration::new(d.seconds as u64, d.nanos as u32))
}

fn required(field: &str, d: Option<&prost_types::Duration>) -> Result<Duration, Status> {
    match d {
        Some(d) => from_proto(field, d),
        None => Err(Status::invalid_argument(format!("{field} is required"))),
    }
}

fn saturating_u32(v: impl TryInto<u32>) -> u32 {
    v.try_into().unwrap_or(u32::MAX)
}

/// `userinfo@` of a URL replaced: a destination or Pyroscope URL may carry a token.
fn redact_url(url: &str) -> String {
    crate::profile::pyroscope::redact_credentials(url)
}

/// The running configuration as the Go daemon's message; fields ours does
/// not have are at their zero value.
pub fn xtcp_config(args: &DaemonArgs, cadence: Cadence, grpc_port: u16) -> XtcpConfig {
    let reconcile = parse_duration("reconcile-frequency", &args.reconcile_frequency).unwrap_or_default();
    let produce = parse_duration("produce-timeout", &args.produce_timeout).unwrap_or_default();
    // Without --marshal the destination picks (protobufList for kafka:).
    let marshal = args.output.marshal.unwrap_or_else(|| {
        crate::sink::Destination::parse(&args.dest)
            .ok()
            .and_then(|d| d.preferred_format())
            .unwrap_or(crate::format::Format::Jsonl)
    });
    XtcpConfig {
        nl_timeout_milliseconds: args.nltimeout,
        poll_frequency: Some(to_proto(cadence.frequency)),
        poll_timeout: Some(to_proto(cadence.timeout)),
        max_loops: args.max_loops,
        netlinkers: saturating_u32(args.netlinkers),
        nlmsg_seq: args.nlmsg_seq,
        packet_size: args.packet_size,
        packet_size_mply: saturating_u32(args.packet_size_mply),
        write_files: saturating_u32(args.write_files),
        capture_path: args.capture_path.display().to_string(),
        modulus: args.modulus,
        marshal_to: marshal.name().to_string(),
        kafka_compression: args.kafka_compression.clone(),
        topic: args.topic.clone(),
        kafka_schema_url: redact_url(&args.kafka_schema_url),
        xtcp_proto_file: args.xtcp_proto_file.clone(),
        envelope_flush_threshold_bytes: saturating_u32(args.envelope_flush_bytes),
        envelope_flush_threshold_rows: saturating_u32(args.envelope_flush_rows),
        pyroscope_url: redact_url(&args.pyroscope_url),
        pyroscope_app_name: args.pyroscope_app_name.clone(),
        pyroscope_sample_hz: args.pyroscope_sample_hz,
        pyroscope_upload_interval_sec: saturating_u32(args.pyroscope_upload_sec),
        dest: redact_url(&args.dest),
        kafka_produce_timeout: Some(to_proto(produce)),
        debug_level: args.debug_level.map_or(0, saturating_u32),
        label: args.output.label.clone(),
        tag: args.output.tag.clone(),
        location: args.output.location.clone(),
        hostname: args.output.hostname.clone(),
        daemon_version: DAEMON_VERSION.to_string(),
        ipv4_ttl: args.ipv4_ttl,
        ipv6_hop_limit: args.ipv6_hop_limit,
        grpc_port: grpc_port.into(),
        io_uring: args.io_uring,
        io_uring_recv_batch_size: args.io_uring_recv_batch,
        io_uring_cqe_batch_size: args.io_uring_cqe_batch,
        csv_columns: args.output.columns.clone(),
        poll_jitter_pct: saturating_u32(args.poll_jitter_pct),
        reconcile_frequency: Some(to_proto(reconcile)),
        reconcile_before_poll: args.reconcile_before_poll,
        populate_nsid: args.populate_nsid,
        enrich_nic_enable: args.enrich_nic,
        enrich_lldp_enable: args.enrich_lldp,
        lldpd_socket_path: args.lldpd_socket.display().to_string(),
        lldpd_version_hint: args.lldpd_version_hint.clone(),
        uplink_count: saturating_u32(args.uplink_count),
        uplink_interfaces: args
            .uplink_interfaces
            .split(',')
            .map(str::trim)
            .filter(|i| !i.is_empty())
            .map(String::from)
            .collect(),
        ..XtcpConfig::default()
    }
}

/// The fields of `XtcpConfig` that differ between `a` and `b`, by name.
macro_rules! differing {
    ($a:expr, $b:expr, [$($field:ident),* $(,)?]) => {{
        let mut names: Vec<&'static str> = Vec::new();
        $( if $a.$field != $b.$field { names.push(stringify!($field)); } )*
        names
    }};
}

/// Fields that cannot change without a restart and differ between the
/// running configuration and a requested one. Secrets sent back redacted,
/// and `daemon_version` (read-only), count as unchanged.
fn fixed_fields_changed(current: &XtcpConfig, wanted: &XtcpConfig) -> Vec<&'static str> {
    let mut wanted = wanted.clone();
    for (w, c) in [
        (&mut wanted.s3_secret_key, &current.s3_secret_key),
        (&mut wanted.s3_access_key, &current.s3_access_key),
        (&mut wanted.pyroscope_url, &current.pyroscope_url),
        (&mut wanted.dest, &current.dest),
        (&mut wanted.kafka_schema_url, &current.kafka_schema_url),
    ] {
        if w.contains(REDACTED) || *w == *c {
            w.clone_from(c);
        }
    }
    differing!(
        current,
        wanted,
        [
            nl_timeout_milliseconds,
            max_loops,
            netlinkers,
            netlinkers_done_chan_size,
            nlmsg_seq,
            packet_size,
            packet_size_mply,
            write_files,
            capture_path,
            modulus,
            marshal_to,
            envelope_flush_threshold_bytes,
            envelope_flush_threshold_rows,
            kafka_compression,
            s3_endpoint,
            s3_bucket,
            s3_prefix,
            s3_access_key,
            s3_secret_key,
            s3_parquet_flush_threshold_bytes,
            s3_region,
            s3_skip_bucket_probe,
            pyroscope_url,
            pyroscope_app_name,
            pyroscope_sample_hz,
            pyroscope_upload_interval_sec,
            dest,
            dest_write_files,
            topic,
            xtcp_proto_file,
            kafka_schema_url,
            kafka_produce_timeout,
            debug_level,
            label,
            tag,
            location,
            hostname,
            resolve_container_id,
            ipv4_ttl,
            ipv6_hop_limit,
            grpc_port,
            enabled_deserializers,
            io_uring,
            io_uring_recv_batch_size,
            io_uring_cqe_batch_size,
            csv_columns,
            poll_jitter_pct,
            s3_flush_interval,
            s3_flush_jitter_pct,
            s3_flush_threshold_jitter_pct,
            s3_upload_max_attempts,
            s3_upload_backoff_cap,
            reconcile_frequency,
            reconcile_before_poll,
            enrich_container_enable,
            docker_socket_path,
            enrich_lldp_enable,
            lldpd_socket_path,
            lldpd_version_hint,
            enrich_nic_enable,
            uplink_count,
            uplink_interfaces,
            populate_nsid,
        ]
    )
}

/// A new cadence within the flags' bounds (INVALID_ARGUMENT with the reason).
/// No timeout: `--timeout auto` of the new frequency.
fn checked_cadence(frequency: Duration, timeout: Option<Duration>, one_shot: bool) -> Result<Cadence, Status> {
    let (min, max) = flag_bounds::FREQUENCY;
    if !(min..=max).contains(&frequency) {
        return Err(Status::invalid_argument(format!(
            "poll_frequency {frequency:?} is out of range: it must be between {min:?} and {max:?}"
        )));
    }
    let timeout = match timeout {
        None => auto_timeout(frequency, one_shot),
        Some(t) => {
            let (min, max) = flag_bounds::TIMEOUT;
            if !(min..=max).contains(&t) {
                return Err(Status::invalid_argument(format!(
                    "poll_timeout {t:?} is out of range: it must be between {min:?} and {max:?}"
                )));
            }
            if t >= frequency {
                return Err(Status::invalid_argument(format!(
                    "poll_timeout ({t:?}) must be shorter than poll_frequency ({frequency:?}), or a slow namespace would overlap the next poll"
                )));
            }
            t
        }
    };
    Ok(Cadence { frequency, timeout })
}

impl ControlService {
    fn current(&self) -> XtcpConfig {
        xtcp_config(&self.shared.args, self.shared.control.cadence(), self.shared.grpc_port)
    }

    fn set(&self, request: SetRequest) -> Result<SetResponse, Status> {
        let wanted = request.config.ok_or_else(|| {
            Status::invalid_argument("config is required (the whole configuration, as Get returns it)")
        })?;
        let current = self.current();
        let fixed = fixed_fields_changed(&current, &wanted);
        if !fixed.is_empty() {
            return Err(Status::failed_precondition(format!(
                "these fields cannot change while the daemon runs (restart it with the new flags): {}; nothing was changed",
                fixed.join(", ")
            )));
        }
        let frequency = required("poll_frequency", wanted.poll_frequency.as_ref())?;
        let timeout = required("poll_timeout", wanted.poll_timeout.as_ref())?;
        let cadence = checked_cadence(frequency, Some(timeout), self.shared.args.max_loops == 1)?;
        if cadence != self.shared.control.cadence() {
            tracing::info!(frequency = ?cadence.frequency, timeout = ?cadence.timeout, "gRPC Set: new poll cadence");
            self.shared.control.set_cadence(cadence);
        }
        Ok(SetResponse {
            config: Some(self.current()),
        })
    }

    fn set_poll_frequency(&self, request: SetPollFrequencyRequest) -> Result<SetPollFrequencyResponse, Status> {
        let frequency = required("poll_frequency", request.poll_frequency.as_ref())?;
        let timeout = request
            .poll_timeout
            .as_ref()
            .map(|t| from_proto("poll_timeout", t))
            .transpose()?
            // A zero timeout is proto3's "not set".
            .filter(|t| !t.is_zero());
        let cadence = checked_cadence(frequency, timeout, self.shared.args.max_loops == 1)?;
        tracing::info!(frequency = ?cadence.frequency, timeout = ?cadence.timeout, "gRPC SetPollFrequency: new poll cadence");
        self.shared.control.set_cadence(cadence);
        Ok(SetPollFrequencyResponse {
            config: Some(self.current()),
        })
    }

    fn trigger_poll_burst(&self, request: TriggerPollBurstRequest) -> Result<TriggerPollBurstResponse, Status> {
        let (min, max) = bounds::BURST_COUNT;
        if !(min..=max).contains(&request.count) {
            return Err(Status::invalid_argument(format!(
                "count {} is out of range: it must be between {min} and {max}",
                request.count
            )));
        }
        let interval = required("interval", request.interval.as_ref())?;
        let (min, max) = bounds::BURST_INTERVAL;
        if !(min..=max).contains(&interval) {
            return Err(Status::invalid_argument(format!(
                "interval {interval:?} is out of range: it must be between {min:?} and {max:?}"
            )));
        }
        tracing::info!(count = request.count, ?interval, "gRPC TriggerPollBurst");
        self.shared.control.start_burst(request.count, interval);
        Ok(TriggerPollBurstResponse {
            count: request.count,
            interval: Some(to_proto(interval)),
        })
    }
}

#[tonic::async_trait]
impl ConfigService for ControlService {
    async fn get(&self, _request: Request<GetRequest>) -> Result<Response<GetResponse>, Status> {
        let response = GetResponse {
            config: Some(self.current()),
        };
        self.shared.counted(Method::Get, Ok(Response::new(response)))
    }

    async fn set(&self, request: Request<SetRequest>) -> Result<Response<SetResponse>, Status> {
        let result = ControlService::set(self, request.into_inner()).map(Response::new);
        self.shared.counted(Method::Set, result)
    }

    async fn set_poll_frequency(
        &self,
        request: Request<SetPollFrequencyRequest>,
    ) -> Result<Response<SetPollFrequencyResponse>, Status> {
        let result = ControlService::set_poll_frequency(self, request.into_inner()).map(Response::new);
        self.shared.counted(Method::SetPollFrequency, result)
    }

    async fn trigger_poll(
        &self,
        _request: Request<TriggerPollRequest>,
    ) -> Result<Response<TriggerPollResponse>, Status> {
        let poll = self.shared.control.trigger();
        tracing::info!(poll, "gRPC TriggerPoll");
        self.shared
            .counted(Method::TriggerPoll, Ok(Response::new(TriggerPollResponse {})))
    }

    async fn trigger_poll_burst(
        &self,
        request: Request<TriggerPollBurstRequest>,
    ) -> Result<Response<TriggerPollBurstResponse>, Status> {
        let result = ControlService::trigger_poll_burst(self, request.into_inner()).map(Response::new);
        self.shared.counted(Method::TriggerPollBurst, result)
    }

    /// Refused: this daemon has no S3 destination, so there is nothing the
    /// values could change; storing them would report a setting that does
    /// nothing.
    async fn set_s3_upload(
        &self,
        _request: Request<SetS3UploadRequest>,
    ) -> Result<Response<SetS3UploadResponse>, Status> {
        let result = Err(Status::failed_precondition(
            "this daemon has no S3 upload to configure (no s3 destination); nothing was changed",
        ));
        self.shared.counted(Method::SetS3Upload, result)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(extra: &[&str]) -> DaemonArgs {
        let argv = ["xtcp2"].iter().chain(extra).map(|s| s.to_string());
        crate::config::parse_args(argv).unwrap().daemon
    }

    fn cadence() -> Cadence {
        Cadence {
            frequency: Duration::from_secs(10),
            timeout: Duration::from_secs(9),
        }
    }

    /// Get's configuration sent back unchanged (secrets redacted as Get
    /// shows them) changes no fixed field.
    #[test]
    fn the_configuration_get_returns_is_accepted_back() {
        let a = args(&["--pyroscope-url", "https://u:secret@pyro:4040", "--label", "x"]);
        let current = xtcp_config(&a, cadence(), 8889);
        assert!(!current.pyroscope_url.contains("secret"), "{}", current.pyroscope_url);
        assert!(fixed_fields_changed(&current, &current.clone()).is_empty());
    }

    /// A changed label and netlinkers are named; the cadence is not.
    #[test]
    fn changed_fixed_fields_are_named() {
        let current = xtcp_config(&args(&[]), cadence(), 8889);
        let mut wanted = current.clone();
        wanted.label = "other".into();
        wanted.netlinkers = 9;
        wanted.poll_frequency = Some(to_proto(Duration::from_secs(1)));
        assert_eq!(fixed_fields_changed(&current, &wanted), vec!["netlinkers", "label"]);
    }

    /// The cadence's bounds: a timeout not below the frequency, and a
    /// frequency above a day, are refused with the reason.
    #[test]
    fn cadence_bounds_are_checked() {
        let err = checked_cadence(Duration::from_secs(5), Some(Duration::from_secs(5)), false).unwrap_err();
        assert_eq!(err.code(), tonic::Code::InvalidArgument);
        assert!(
            err.message().contains("shorter than poll_frequency"),
            "{}",
            err.message()
        );
        let err = checked_cadence(Duration::from_secs(90_000), None, false).unwrap_err();
        assert!(err.message().contains("out of range"), "{}", err.message());
        let ok = checked_cadence(Duration::from_secs(10), None, false).unwrap();
        assert_eq!(ok.timeout, Duration::from_secs(9));
    }
}
