//! The Go daemon's configuration message (`xtcp_config.v1.XtcpConfig`) as
//! proto3 JSON: read from `XTCP_CONFIG_JSON` at start and by
//! `xtcp2 ctl reconfigure --file`, written by `xtcp2 ctl get`.
//!
//! The JSON mapping is protobuf's own (field names in lowerCamelCase or as
//! declared, durations as `"10s"`, 64-bit integers as strings or numbers),
//! done by `prost-reflect` over the descriptors `build.rs` compiles, so it
//! is the mapping the Go daemon's `protojson` writes. An unknown field is an
//! error naming it: a misspelt field must not be silently dropped.
//!
//! At start, each field the JSON sets becomes the Go flag it stands for
//! (`poll_frequency` → `-frequency`), given after the command line's flags,
//! so the JSON wins where both set a value. Fields the JSON leaves out keep
//! the command line's value or the default. (The Go daemon re-executes
//! itself with the whole configuration in this variable; ours never
//! re-executes, but a process started with the variable behaves the same.)

use prost::Message;
use prost_reflect::{DescriptorPool, DynamicMessage, MessageDescriptor, ReflectMessage};

use super::proto::config::XtcpConfig;
use super::proto::DESCRIPTORS;

/// The variable the Go daemon reads its pushed configuration from.
pub const ENV: &str = "XTCP_CONFIG_JSON";

#[derive(Debug, thiserror::Error)]
pub enum ConfigJsonError {
    #[error("not an xtcp_config.v1.XtcpConfig in proto3 JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("the compiled descriptors lack xtcp_config.v1.XtcpConfig: {0}")]
    Descriptors(String),
    #[error("{field}: {reason}")]
    Field { field: String, reason: String },
}

fn descriptor() -> Result<MessageDescriptor, ConfigJsonError> {
    let pool = DescriptorPool::decode(DESCRIPTORS).map_err(|e| ConfigJsonError::Descriptors(e.to_string()))?;
    pool.get_message_by_name("xtcp_config.v1.XtcpConfig")
        .ok_or_else(|| ConfigJsonError::Descriptors("no such message".into()))
}

/// A configuration read from proto3 JSON, and the fields the JSON set (in
/// the message's field order).
#[derive(Debug, Clone, PartialEq)]
pub struct ParsedConfig {
    pub config: XtcpConfig,
    pub present: Vec<String>,
}

/// Reads `json` as an `XtcpConfig`.
pub fn parse(json: &str) -> Result<ParsedConfig, ConfigJsonError> {
    let descriptor = descriptor()?;
    let mut deserializer = serde_json::Deserializer::from_str(json);
    let message = DynamicMessage::deserialize(descriptor.clone(), &mut deserializer)?;
    deserializer.end()?;
    // Presence from the JSON's own keys: proto3 does not keep it for a
    // scalar at its zero value, and `"modulus": 0` must still count.
    let keys: Vec<String> = match serde_json::from_str::<serde_json::Value>(json)? {
        serde_json::Value::Object(map) => map.into_iter().map(|(k, _)| k).collect(),
        _ => Vec::new(),
    };
    let present = descriptor
        .fields()
        .filter(|f| keys.iter().any(|k| k == f.name() || k == f.json_name()))
        .map(|f| f.name().to_string())
        .collect();
    // The dynamic message and the generated struct come from the same
    // descriptors, so the bytes of one always decode as the other.
    let config = XtcpConfig::decode(message.encode_to_vec().as_slice()).map_err(|e| ConfigJsonError::Field {
        field: "XtcpConfig".into(),
        reason: e.to_string(),
    })?;
    Ok(ParsedConfig { config, present })
}

/// `config` as proto3 JSON (lowerCamelCase names, fields at their zero value left out).
pub fn to_json(config: &XtcpConfig) -> Result<String, ConfigJsonError> {
    let message = DynamicMessage::decode(descriptor()?, config.encode_to_vec().as_slice()).map_err(|e| {
        ConfigJsonError::Field {
            field: "XtcpConfig".into(),
            reason: e.to_string(),
        }
    })?;
    debug_assert_eq!(message.descriptor().full_name(), "xtcp_config.v1.XtcpConfig");
    Ok(serde_json::to_string_pretty(&message)?)
}

/// `current` with the fields `parsed` sets replaced by its values
/// (`xtcp2 ctl reconfigure --file`: a file naming only `pollFrequency`
/// changes only that).
pub fn merged(current: &XtcpConfig, parsed: &ParsedConfig) -> Result<XtcpConfig, ConfigJsonError> {
    let descriptor = descriptor()?;
    let decode = |config: &XtcpConfig| {
        DynamicMessage::decode(descriptor.clone(), config.encode_to_vec().as_slice()).map_err(|e| {
            ConfigJsonError::Field {
                field: "XtcpConfig".into(),
                reason: e.to_string(),
            }
        })
    };
    let mut out = decode(current)?;
    let wanted = decode(&parsed.config)?;
    for name in &parsed.present {
        if let Some(field) = descriptor.get_field_by_name(name) {
            out.set_field(&field, wanted.get_field(&field).into_owned());
        }
    }
    XtcpConfig::decode(out.encode_to_vec().as_slice()).map_err(|e| ConfigJsonError::Field {
        field: "XtcpConfig".into(),
        reason: e.to_string(),
    })
}

/// The Go flags a JSON configuration stands for.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct GoFlags {
    /// `-flag=value` arguments, in the message's field order.
    pub arguments: Vec<String>,
    /// Fields set that have no flag here (read-only, or of the Go runtime's
    /// internals): accepted, without effect.
    pub without_effect: Vec<String>,
}

fn duration(field: &str, d: Option<&prost_types::Duration>) -> Result<String, ConfigJsonError> {
    let d = d.copied().unwrap_or_default();
    if d.seconds < 0 || d.nanos < 0 {
        return Err(ConfigJsonError::Field {
            field: field.into(),
            reason: "a negative duration".into(),
        });
    }
    let nanos = i128::from(d.seconds) * 1_000_000_000 + i128::from(d.nanos);
    Ok(if nanos % 1_000_000 == 0 {
        format!("{}ms", nanos / 1_000_000)
    } else {
        format!("{nanos}ns")
    })
}

/// Each field `parsed` sets, as the Go flag it stands for.
pub fn go_flags(parsed: &ParsedConfig) -> Result<GoFlags, ConfigJsonError> {
    let c = &parsed.config;
    let mut out = GoFlags::default();
    for field in &parsed.present {
        let (flag, value) = match field.as_str() {
            "nl_timeout_milliseconds" => ("nltimeout", c.nl_timeout_milliseconds.to_string()),
            "poll_frequency" => ("frequency", duration(field, c.poll_frequency.as_ref())?),
            "poll_timeout" => ("timeout", duration(field, c.poll_timeout.as_ref())?),
            "max_loops" => ("maxLoops", c.max_loops.to_string()),
            "netlinkers" => ("netlinkers", c.netlinkers.to_string()),
            "nlmsg_seq" => ("nlmsgSeq", c.nlmsg_seq.to_string()),
            "packet_size" => ("packetSize", c.packet_size.to_string()),
            "packet_size_mply" => ("packetSizeMply", c.packet_size_mply.to_string()),
            "write_files" => ("writeFiles", c.write_files.to_string()),
            "capture_path" => ("capturePath", c.capture_path.clone()),
            "modulus" => ("modulus", c.modulus.to_string()),
            "marshal_to" => ("marshal", c.marshal_to.clone()),
            "envelope_flush_threshold_bytes" => ("envelopeFlushBytes", c.envelope_flush_threshold_bytes.to_string()),
            "envelope_flush_threshold_rows" => ("envelopeFlushRows", c.envelope_flush_threshold_rows.to_string()),
            "kafka_compression" => ("kafkaCompression", c.kafka_compression.clone()),
            "s3_endpoint" => ("s3Endpoint", c.s3_endpoint.clone()),
            "s3_bucket" => ("s3Bucket", c.s3_bucket.clone()),
            "s3_prefix" => ("s3Prefix", c.s3_prefix.clone()),
            "s3_access_key" => ("s3AccessKey", c.s3_access_key.clone()),
            "s3_secret_key" => ("s3SecretKey", c.s3_secret_key.clone()),
            "s3_parquet_flush_threshold_bytes" => {
                ("s3ParquetFlushBytes", c.s3_parquet_flush_threshold_bytes.to_string())
            }
            "s3_region" => ("s3Region", c.s3_region.clone()),
            "s3_skip_bucket_probe" => ("s3SkipBucketProbe", c.s3_skip_bucket_probe.to_string()),
            "pyroscope_url" => ("pyroscopeUrl", c.pyroscope_url.clone()),
            "pyroscope_app_name" => ("pyroscopeAppName", c.pyroscope_app_name.clone()),
            "pyroscope_sample_hz" => ("pyroscopeSampleHz", c.pyroscope_sample_hz.to_string()),
            "pyroscope_upload_interval_sec" => ("pyroscopeUploadSec", c.pyroscope_upload_interval_sec.to_string()),
            "dest" => ("dest", c.dest.clone()),
            "dest_write_files" => ("destWriteFiles", c.dest_write_files.to_string()),
            "topic" => ("topic", c.topic.clone()),
            "xtcp_proto_file" => ("xtcpProtoFile", c.xtcp_proto_file.clone()),
            "kafka_schema_url" => ("kafkaSchemaUrl", c.kafka_schema_url.clone()),
            "kafka_produce_timeout" => ("produceTimeout", duration(field, c.kafka_produce_timeout.as_ref())?),
            "debug_level" => ("d", c.debug_level.to_string()),
            "label" => ("label", c.label.clone()),
            "tag" => ("tag", c.tag.clone()),
            "location" => ("location", c.location.clone()),
            "hostname" => ("hostname", c.hostname.clone()),
            "resolve_container_id" => ("resolveContainerId", c.resolve_container_id.to_string()),
            "ipv4_ttl" => ("ipv4Ttl", c.ipv4_ttl.to_string()),
            "ipv6_hop_limit" => ("ipv6HopLimit", c.ipv6_hop_limit.to_string()),
            "grpc_port" => ("grpcPort", c.grpc_port.to_string()),
            "io_uring" => ("ioUring", c.io_uring.to_string()),
            "io_uring_recv_batch_size" => ("ioUringRecvBatch", c.io_uring_recv_batch_size.to_string()),
            "io_uring_cqe_batch_size" => ("ioUringCqeBatch", c.io_uring_cqe_batch_size.to_string()),
            "csv_columns" => ("columns", c.csv_columns.clone()),
            "poll_jitter_pct" => ("pollJitterPct", c.poll_jitter_pct.to_string()),
            "s3_flush_interval" => ("s3FlushInterval", duration(field, c.s3_flush_interval.as_ref())?),
            "s3_flush_jitter_pct" => ("s3FlushJitterPct", c.s3_flush_jitter_pct.to_string()),
            "s3_flush_threshold_jitter_pct" => {
                ("s3FlushThresholdJitterPct", c.s3_flush_threshold_jitter_pct.to_string())
            }
            "s3_upload_max_attempts" => ("s3UploadMaxAttempts", c.s3_upload_max_attempts.to_string()),
            "s3_upload_backoff_cap" => ("s3UploadBackoffCap", duration(field, c.s3_upload_backoff_cap.as_ref())?),
            "reconcile_frequency" => ("reconcileFrequency", duration(field, c.reconcile_frequency.as_ref())?),
            "reconcile_before_poll" => ("reconcileBeforePoll", c.reconcile_before_poll.to_string()),
            "enrich_container_enable" => ("enrichContainer", c.enrich_container_enable.to_string()),
            "docker_socket_path" => ("dockerSocket", c.docker_socket_path.clone()),
            "enrich_lldp_enable" => ("enrichLldp", c.enrich_lldp_enable.to_string()),
            "lldpd_socket_path" => ("lldpdSocket", c.lldpd_socket_path.clone()),
            "lldpd_version_hint" => ("lldpdVersionHint", c.lldpd_version_hint.clone()),
            "enrich_nic_enable" => ("enrichNic", c.enrich_nic_enable.to_string()),
            "uplink_count" => ("uplinkCount", c.uplink_count.to_string()),
            "uplink_interfaces" => ("uplinkInterfaces", c.uplink_interfaces.join(",")),
            "populate_nsid" => ("populateNsid", c.populate_nsid.to_string()),
            // Read-only (what Get reports), a channel size of the Go
            // daemon's internals, and a message whose fields the shared
            // facts do not list.
            "daemon_version" | "netlinkers_done_chan_size" | "enabled_deserializers" => {
                out.without_effect.push(field.clone());
                continue;
            }
            other => {
                return Err(ConfigJsonError::Field {
                    field: other.into(),
                    reason: "a field of XtcpConfig this build does not map to a flag".into(),
                })
            }
        };
        out.arguments.push(format!("-{flag}={value}"));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proto3_json_names_durations_and_64_bit_strings_are_read() {
        let parsed = parse(
            r#"{"pollFrequency": "2.500s", "max_loops": "3", "label": "edge", "s3SkipBucketProbe": true,
                "uplinkInterfaces": ["eth0", "eth1"]}"#,
        )
        .unwrap();
        assert_eq!(
            parsed.present,
            [
                "poll_frequency",
                "max_loops",
                "s3_skip_bucket_probe",
                "label",
                "uplink_interfaces"
            ]
        );
        assert_eq!(parsed.config.max_loops, 3);
        let flags = go_flags(&parsed).unwrap();
        assert_eq!(
            flags.arguments,
            [
                "-frequency=2500ms",
                "-maxLoops=3",
                "-s3SkipBucketProbe=true",
                "-label=edge",
                "-uplinkInterfaces=eth0,eth1"
            ]
        );
    }

    #[test]
    fn a_field_at_its_zero_value_still_counts_as_set() {
        let parsed = parse(r#"{"modulus": 0, "label": ""}"#).unwrap();
        assert_eq!(go_flags(&parsed).unwrap().arguments, ["-modulus=0", "-label="]);
    }

    #[test]
    fn an_unknown_or_mistyped_field_is_an_error_naming_it() {
        let e = parse(r#"{"pollFrequncy": "2s"}"#).unwrap_err().to_string();
        assert!(e.contains("pollFrequncy"), "{e}");
        let e = parse(r#"{"maxLoops": "many"}"#).unwrap_err().to_string();
        assert!(e.contains("line 1 column"), "{e}");
        assert!(parse("[1]").is_err());
        assert!(parse(r#"{"label": "a"} trailing"#).is_err());
    }

    #[test]
    fn merging_replaces_only_the_fields_the_file_sets() {
        let current = XtcpConfig {
            max_loops: 7,
            label: "old".into(),
            modulus: 3,
            ..XtcpConfig::default()
        };
        let parsed = parse(r#"{"label": "new", "modulus": 0}"#).unwrap();
        let merged = merged(&current, &parsed).unwrap();
        assert_eq!((merged.max_loops, merged.label.as_str(), merged.modulus), (7, "new", 0));
    }

    #[test]
    fn read_only_and_internal_fields_are_without_effect() {
        let parsed = parse(r#"{"daemonVersion": "v9", "netlinkersDoneChanSize": 5, "tag": "t"}"#).unwrap();
        let flags = go_flags(&parsed).unwrap();
        assert_eq!(flags.arguments, ["-tag=t"]);
        assert_eq!(flags.without_effect, ["netlinkers_done_chan_size", "daemon_version"]);
    }

    #[test]
    fn what_to_json_writes_parses_back_to_the_same_message() {
        let config = XtcpConfig {
            poll_frequency: Some(prost_types::Duration { seconds: 10, nanos: 0 }),
            max_loops: 7,
            dest: "udp:127.0.0.1:9".into(),
            uplink_interfaces: vec!["eth0".into()],
            ..XtcpConfig::default()
        };
        let json = to_json(&config).unwrap();
        assert!(json.contains("\"pollFrequency\": \"10s\""), "{json}");
        assert_eq!(parse(&json).unwrap().config, config);
    }
}
