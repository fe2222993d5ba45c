//! `xtcp2 ctl` and `xtcp2 client`: our own clients of the two services
//! (the Go daemon ships them as `xtcp2ctl` and `xtcp2client`).
//!
//! `client` prints each record as a line of JSON (proto3 JSON names, as
//! `--record-schema xtcp_flat_record.v1` writes them) or csv/tsv, read
//! straight from the record's protobuf fields with the Go record's column
//! table, so it prints every field the daemon set and nothing else.

use std::io::Write;
use std::time::Duration;

use tonic::transport::{Channel, Endpoint};

use super::proto::config::config_service_client::ConfigServiceClient;
use super::proto::config::{
    GetRequest, SetPollFrequencyRequest, SetRequest, SetS3UploadRequest, TriggerPollBurstRequest, TriggerPollRequest,
};
use super::proto::flat_record::xtcp_flat_record_service_client::XtcpFlatRecordServiceClient;
use super::proto::flat_record::{FlatRecordsRequest, PollFlatRecordsRequest};
use crate::config::json_string;
use crate::record::{ProtoType, RecordSchema};

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot connect to {addr}: {source}")]
    Connect {
        addr: String,
        source: tonic::transport::Error,
    },
    #[error("{method}: {code}: {message}", code = super::code_name(status.code()), message = status.message())]
    Rpc {
        method: &'static str,
        status: tonic::Status,
    },
    #[error("{0:?} is not a duration (use e.g. 500ms, 10s, 1m)")]
    Duration(String),
    #[error("writing the output: {0}")]
    Output(#[from] std::io::Error),
    #[error("{path}: {source}")]
    ConfigFile {
        path: String,
        source: super::config_json::ConfigJsonError,
    },
    #[error("{path}: {source}")]
    ReadFile { path: String, source: std::io::Error },
    #[error("{0}")]
    ConfigJson(#[from] super::config_json::ConfigJsonError),
    #[error("a record that does not decode: {0}")]
    Decode(#[from] prost::DecodeError),
}

/// `xtcp2 ctl` commands.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum CtlCommand {
    /// Print the running configuration (secrets redacted).
    Get,
    /// Set the poll period (and deadline; default: 90 % of the period).
    SetPollFrequency {
        frequency: String,
        #[arg(long)]
        timeout: Option<String>,
    },
    /// Run one poll now.
    TriggerPoll,
    /// COUNT polls INTERVAL apart, the first now (replaces a running burst).
    PollBurst { count: u32, interval: String },
    /// Apply the fields a proto3 JSON file of `XtcpConfig` sets (the rest
    /// stay as they are): what can change live changes; anything else is
    /// refused, naming the fields, and nothing changes.
    Reconfigure {
        #[arg(long)]
        file: std::path::PathBuf,
    },
    /// Set the S3 upload's flush interval and threshold (refused: no S3 here).
    SetS3 {
        #[arg(long)]
        flush_interval: Option<String>,
        #[arg(long, default_value_t = 0)]
        threshold_bytes: u32,
    },
}

/// `xtcp2 ctl`: drives `xtcp_config.v1.ConfigService`.
#[derive(Debug, Clone, clap::Args)]
pub struct CtlArgs {
    /// The daemon's gRPC address (`--grpc-listen` / `-grpcPort`).
    #[arg(long, env = "XTCP2_GRPC_ADDR", default_value = "127.0.0.1:8889")]
    pub addr: String,
    #[command(subcommand)]
    pub command: CtlCommand,
}

/// Output of `xtcp2 client`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ClientFormat {
    Json,
    Csv,
    Tsv,
}

/// `xtcp2 client`: reads `xtcp_flat_record.v1.XTCPFlatRecordService`.
#[derive(Debug, Clone, clap::Args)]
pub struct ClientArgs {
    /// The daemon's gRPC address (`--grpc-listen` / `-grpcPort`).
    #[arg(long, env = "XTCP2_GRPC_ADDR", default_value = "127.0.0.1:8889")]
    pub addr: String,
    /// Ask for this many polls (PollFlatRecords) and print their records,
    /// instead of listening to every record (FlatRecords).
    #[arg(long)]
    pub poll: Option<u32>,
    /// Stop after this many records (0: never).
    #[arg(long, default_value_t = 0)]
    pub count: u64,
    #[arg(long, value_enum, default_value_t = ClientFormat::Json)]
    pub format: ClientFormat,
}

fn duration(text: &str) -> Result<prost_types::Duration, ClientError> {
    let d: Duration =
        crate::config::parse_duration("duration", text).map_err(|_| ClientError::Duration(text.into()))?;
    Ok(prost_types::Duration {
        seconds: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        nanos: d.subsec_nanos() as i32,
    })
}

async fn connect(addr: &str) -> Result<Channel, ClientError> {
    let uri = if addr.contains("://") {
        addr.to_string()
    } else {
        format!("http://{addr}")
    };
    let connect_error = |source| ClientError::Connect {
        addr: addr.to_string(),
        source,
    };
    Endpoint::from_shared(uri)
        .map_err(connect_error)?
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await
        .map_err(connect_error)
}

fn rpc(method: &'static str) -> impl FnOnce(tonic::Status) -> ClientError {
    move |status| ClientError::Rpc { method, status }
}

/// Runs one `ctl` command; prints the answer.
pub async fn ctl(args: CtlArgs) -> Result<(), ClientError> {
    let mut client = ConfigServiceClient::new(connect(&args.addr).await?);
    let config = match args.command {
        CtlCommand::Get => client.get(GetRequest {}).await.map_err(rpc("Get"))?.into_inner().config,
        CtlCommand::SetPollFrequency { frequency, timeout } => {
            let request = SetPollFrequencyRequest {
                poll_frequency: Some(duration(&frequency)?),
                poll_timeout: timeout.as_deref().map(duration).transpose()?,
            };
            let response = client
                .set_poll_frequency(request)
                .await
                .map_err(rpc("SetPollFrequency"))?;
            response.into_inner().config
        }
        CtlCommand::TriggerPoll => {
            client
                .trigger_poll(TriggerPollRequest {})
                .await
                .map_err(rpc("TriggerPoll"))?;
            println!("poll triggered");
            return Ok(());
        }
        CtlCommand::PollBurst { count, interval } => {
            let request = TriggerPollBurstRequest {
                count,
                interval: Some(duration(&interval)?),
            };
            let burst = client
                .trigger_poll_burst(request)
                .await
                .map_err(rpc("TriggerPollBurst"))?;
            let burst = burst.into_inner();
            let every = burst.interval.unwrap_or_default();
            println!("burst started: {} polls, {}s apart", burst.count, every.seconds);
            return Ok(());
        }
        CtlCommand::Reconfigure { file } => {
            let path = file.display().to_string();
            let text = std::fs::read_to_string(&file).map_err(|source| ClientError::ReadFile {
                path: path.clone(),
                source,
            })?;
            let parsed = super::config_json::parse(&text).map_err(|source| ClientError::ConfigFile {
                path: path.clone(),
                source,
            })?;
            let current = client.get(GetRequest {}).await.map_err(rpc("Get"))?.into_inner().config;
            let wanted = super::config_json::merged(&current.unwrap_or_default(), &parsed)
                .map_err(|source| ClientError::ConfigFile { path, source })?;
            client
                .set(SetRequest { config: Some(wanted) })
                .await
                .map_err(rpc("Set"))?
                .into_inner()
                .config
        }
        CtlCommand::SetS3 {
            flush_interval,
            threshold_bytes,
        } => {
            let request = SetS3UploadRequest {
                s3_flush_interval: flush_interval.as_deref().map(duration).transpose()?,
                s3_parquet_flush_threshold_bytes: threshold_bytes,
            };
            client
                .set_s3_upload(request)
                .await
                .map_err(rpc("SetS3Upload"))?
                .into_inner()
                .config
        }
    };
    println!("{}", super::config_json::to_json(&config.unwrap_or_default())?);
    Ok(())
}

/// Runs `client`: prints records until the stream ends, `--count`, or Ctrl-C.
pub async fn client(args: ClientArgs) -> Result<(), ClientError> {
    let mut client = XtcpFlatRecordServiceClient::new(connect(&args.addr).await?);
    let mut stream = match args.poll {
        None => client
            .flat_records(FlatRecordsRequest {})
            .await
            .map_err(rpc("FlatRecords"))?
            .into_inner(),
        Some(polls) => {
            let requests = tokio_stream::iter((0..polls).map(|_| PollFlatRecordsRequest {}));
            client
                .poll_flat_records(requests)
                .await
                .map_err(rpc("PollFlatRecords"))?
                .into_inner()
        }
    };
    let columns = RecordSchema::FlatRecordV1.columns();
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let separator = match args.format {
        ClientFormat::Json => None,
        ClientFormat::Csv => Some(','),
        ClientFormat::Tsv => Some('\t'),
    };
    if let Some(sep) = separator {
        let names: Vec<&str> = columns.iter().map(|c| c.name).collect();
        writeln!(out, "{}", names.join(&sep.to_string()))?;
    }
    let mut printed = 0u64;
    while let Some(response) = stream.message().await.map_err(rpc("stream"))? {
        let Some(record) = response.record()? else { continue };
        let bytes = prost::Message::encode_to_vec(&record);
        let fields = wire_fields(&bytes);
        match separator {
            None => {
                let body: Vec<String> = columns
                    .iter()
                    .filter_map(|c| fields.iter().find(|(tag, _)| *tag == c.tag).map(|(_, v)| (c, v)))
                    .map(|(c, v)| format!("{}:{}", json_string(c.name), json_value(c.proto_type, v)))
                    .collect();
                writeln!(out, "{{{}}}", body.join(","))?;
            }
            Some(sep) => {
                let cells: Vec<String> = columns
                    .iter()
                    .map(|c| {
                        fields
                            .iter()
                            .find(|(tag, _)| *tag == c.tag)
                            .map(|(_, v)| text_value(c.proto_type, v))
                            .unwrap_or_default()
                    })
                    .collect();
                writeln!(out, "{}", cells.join(&sep.to_string()))?;
            }
        }
        out.flush()?;
        printed += 1;
        if args.count > 0 && printed >= args.count {
            break;
        }
    }
    Ok(())
}

/// A field's value on the wire.
enum Wire<'a> {
    Varint(u64),
    Bytes(&'a [u8]),
}

/// The (tag, value) pairs of a message's varint and length-delimited fields.
fn wire_fields(mut buf: &[u8]) -> Vec<(u32, Wire<'_>)> {
    let mut fields = Vec::new();
    while !buf.is_empty() {
        let Ok(key) = prost::encoding::decode_varint(&mut buf) else {
            break;
        };
        let (tag, wire_type) = ((key >> 3) as u32, key & 7);
        match wire_type {
            0 => match prost::encoding::decode_varint(&mut buf) {
                Ok(v) => fields.push((tag, Wire::Varint(v))),
                Err(_) => break,
            },
            2 => {
                let Ok(len) = prost::encoding::decode_varint(&mut buf) else {
                    break;
                };
                let Some((value, rest)) = usize::try_from(len).ok().and_then(|n| buf.split_at_checked(n)) else {
                    break;
                };
                fields.push((tag, Wire::Bytes(value)));
                buf = rest;
            }
            // The Go record has no fixed-width fields.
            _ => break,
        }
    }
    fields
}

fn text_value(proto_type: ProtoType, v: &Wire<'_>) -> String {
    match (proto_type, v) {
        (ProtoType::Enum(e), Wire::Varint(n)) => e.name_of(*n).map_or_else(|| n.to_string(), str::to_string),
        (ProtoType::Int64, Wire::Varint(n)) => (*n as i64).to_string(),
        (_, Wire::Varint(n)) => n.to_string(),
        (ProtoType::String, Wire::Bytes(b)) => String::from_utf8_lossy(b).into_owned(),
        (_, Wire::Bytes(b)) => b.iter().map(|x| format!("{x:02x}")).collect(),
    }
}

/// proto3 JSON: 64-bit integers as strings, bytes as base64, enums by name.
fn json_value(proto_type: ProtoType, v: &Wire<'_>) -> String {
    use base64::Engine as _;
    match (proto_type, v) {
        (ProtoType::Uint32, Wire::Varint(n)) => n.to_string(),
        (ProtoType::String, Wire::Bytes(b)) => json_string(&String::from_utf8_lossy(b)),
        (ProtoType::Bytes, Wire::Bytes(b)) => json_string(&base64::engine::general_purpose::STANDARD.encode(b)),
        (t, v) => json_string(&text_value(t, v)),
    }
}
