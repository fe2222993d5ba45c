//! `nats:HOST:PORT` (or `nats://[USER:PASS@]HOST:PORT`): each envelope is
//! one NATS message on the subject `--topic`.
//!
//! By default (`--nats-mode jetstream`) the message is a JetStream publish
//! and a send succeeds only once the stream acknowledged it (stored it): an
//! envelope the server did not confirm stays ours and is sent again, so a
//! restart of the server loses nothing that was acknowledged. Each message
//! carries a `Nats-Msg-Id` unique to the envelope, so the stream drops the
//! second copy when an acknowledgement was lost and the envelope is sent
//! again (within the stream's duplicate window, 2 minutes by default).
//!
//! In flight: one envelope. The delivery task awaits each send before the
//! next, so an unacknowledged envelope is never out of the queue's sight
//! (it is retried or, at shutdown, counted as dropped); an envelope is up to
//! `--envelope-flush-bytes` (768 KiB), so one round trip per envelope costs
//! little next to moving its bytes.
//!
//! `--nats-mode core` is the Go daemon's plain publish: the server confirms
//! nothing, so every record sent that way is counted in
//! `xtcp2_destination_unconfirmed_rows_total` (a subscriber that was not
//! listening, or a server restart, loses them unseen).
//!
//! Credentials: user and password in the URL, or `--nats-credentials FILE`
//! (a `.creds` file: JWT and NKey seed). TLS: `--nats-tls` (verified
//! against the system's roots). Neither the URL's password nor the file's
//! contents are logged: logs name the destination with the password
//! replaced by `***`.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream;
use async_nats::jetstream::message::PublishMessage;
use bytes::Bytes;

use super::{DestinationKind, Disposition, Sent, SinkError, Transport};
use crate::batch::Envelope;
use crate::format::StreamFormat;

/// `--topic`'s default, the Go daemon's: the NATS subject (and Kafka topic,
/// Valkey stream or channel).
pub const DEFAULT_TOPIC: &str = "xtcp";
/// Header with the envelope's record count, for consumers that check it.
pub const ROWS_HEADER: &str = "Xtcp2-Rows";
/// Header with the envelope's poll sequence.
pub const POLL_SEQ_HEADER: &str = "Xtcp2-Poll-Seq";
/// Longest wait for the TCP connection and the server's greeting; the
/// delivery task bounds the whole send by `--produce-timeout` as well.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// `--nats-mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum NatsMode {
    /// JetStream publish, acknowledged by the stream.
    #[default]
    JetStream,
    /// Core NATS publish, the Go daemon's: nothing confirms it.
    Core,
}

impl std::str::FromStr for NatsMode {
    type Err = String;
    fn from_str(s: &str) -> Result<NatsMode, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "jetstream" | "js" | "" => Ok(NatsMode::JetStream),
            "core" => Ok(NatsMode::Core),
            other => Err(format!("--nats-mode {other:?}: expected jetstream or core")),
        }
    }
}

/// The nats: destination's options (from the `--nats-*` flags and `--topic`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NatsSettings {
    pub subject: String,
    pub mode: NatsMode,
    /// Create the stream `stream` on `subject` (file storage) if it does not exist.
    pub create_stream: bool,
    pub stream: String,
    pub credentials: Option<PathBuf>,
    pub tls: bool,
}

impl NatsSettings {
    /// The stream name for `subject` when `--nats-stream` is empty: stream
    /// names may not hold `.`, `*`, `>`, `/`, `\` or whitespace.
    pub fn default_stream_name(subject: &str) -> String {
        subject
            .chars()
            .map(|c| {
                if matches!(c, '.' | '*' | '>' | '/' | '\\') || c.is_whitespace() {
                    '_'
                } else {
                    c
                }
            })
            .collect()
    }
}

/// A parsed `nats:` destination. Its `Debug` hides the URL's password.
#[derive(Clone, PartialEq, Eq)]
pub struct NatsAddress {
    /// What the client connects to: `HOST:PORT` or the whole URL.
    pub server: String,
    pub settings: NatsSettings,
}

impl std::fmt::Debug for NatsAddress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsAddress")
            .field("server", &crate::profile::pyroscope::redact_credentials(&self.server))
            .field("settings", &self.settings)
            .finish()
    }
}

/// The `nats:` destination.
pub struct Nats;

impl DestinationKind for Nats {
    const SCHEMES: &'static [&'static str] = &["nats"];
    const TAKES_ADDRESS: bool = true;
    const FORM: &'static str = "nats:HOST:PORT";
    const SUMMARY: &'static str = "one message per envelope on the subject --topic: a JetStream publish acknowledged by the stream (--nats-mode core: the Go daemon's unconfirmed publish); each message opens with the csv header";
    type Address = NatsAddress;
    type Sink = NatsSink;

    fn parse(_scheme: &str, rest: &str) -> Result<NatsAddress, String> {
        let server = if let Some(url) = rest.strip_prefix("//") {
            // nats://[USER:PASS@]HOST:PORT: the client takes the URL whole.
            let authority = url.rsplit_once('@').map_or(url, |(_, host)| host);
            check_host_port(authority.trim_end_matches('/'))?;
            format!("nats:{rest}")
        } else {
            check_host_port(rest)?;
            rest.to_string()
        };
        Ok(NatsAddress {
            server,
            settings: NatsSettings {
                subject: DEFAULT_TOPIC.to_string(),
                stream: NatsSettings::default_stream_name(DEFAULT_TOPIC),
                ..NatsSettings::default()
            },
        })
    }

    async fn open(address: &NatsAddress, format: &StreamFormat) -> Result<NatsSink, SinkError> {
        Ok(NatsSink {
            address: address.clone(),
            header: format.header_shared(),
            connection: None,
        })
    }
}

/// `HOST:PORT` with a host and a numeric port (no name resolution).
pub(crate) fn check_host_port(text: &str) -> Result<(), String> {
    let (host, port) = text.rsplit_once(':').ok_or("needs HOST:PORT")?;
    if host.is_empty() {
        return Err("needs a host".into());
    }
    port.parse::<u16>()
        .map_err(|_| format!("{port:?} is not a port number"))?;
    Ok(())
}

struct Connection {
    client: async_nats::Client,
    jetstream: jetstream::Context,
}

pub struct NatsSink {
    address: NatsAddress,
    header: Arc<[u8]>,
    connection: Option<Connection>,
}

impl NatsSink {
    fn error(dest: &str, kind: &'static str, e: impl std::fmt::Display) -> SinkError {
        SinkError::Broker {
            dest: dest.to_string(),
            kind,
            reason: e.to_string(),
        }
    }

    async fn connect(&mut self, dest: &str) -> Result<&Connection, SinkError> {
        if self.connection.is_none() {
            let settings = &self.address.settings;
            let mut options = async_nats::ConnectOptions::new()
                .name(concat!("xtcp2/", env!("CARGO_PKG_VERSION")))
                .connection_timeout(CONNECT_TIMEOUT)
                .require_tls(settings.tls);
            if let Some(path) = &settings.credentials {
                // The error names the file, never its contents.
                options = options
                    .credentials_file(path)
                    .await
                    .map_err(|e| Self::error(dest, "nats_credentials", format!("{}: {e}", path.display())))?;
            }
            let client = options
                .connect(self.address.server.as_str())
                .await
                .map_err(|e| Self::error(dest, "connect", e))?;
            let jetstream = jetstream::new(client.clone());
            if settings.mode == NatsMode::JetStream && settings.create_stream {
                jetstream
                    .get_or_create_stream(jetstream::stream::Config {
                        name: settings.stream.clone(),
                        subjects: vec![settings.subject.clone()],
                        storage: jetstream::stream::StorageType::File,
                        ..Default::default()
                    })
                    .await
                    .map_err(|e| {
                        Self::error(dest, "nats_stream", format!("creating stream {}: {e}", settings.stream))
                    })?;
            }
            self.connection = Some(Connection { client, jetstream });
        }
        self.connection
            .as_ref()
            .ok_or_else(|| Self::error(dest, "connect", "not connected"))
    }

    /// The message: the csv/tsv header (if any), then the envelope.
    fn payload(&self, envelope: &Envelope) -> Bytes {
        let mut body = Vec::with_capacity(self.header.len() + envelope.payload().len());
        body.extend_from_slice(&self.header);
        body.extend_from_slice(envelope.payload());
        Bytes::from(body)
    }
}

/// Unique per envelope and daemon run: JetStream's de-duplication key.
fn message_id(envelope: &Envelope) -> String {
    format!("{}-{}-{}", envelope.hostname, envelope.created_ns, envelope.id)
}

impl Transport for NatsSink {
    async fn send(&mut self, envelope: &Envelope, dest: &str) -> Result<Sent, SinkError> {
        let payload = self.payload(envelope);
        let subject = self.address.settings.subject.clone();
        let mode = self.address.settings.mode;
        let connection = self.connect(dest).await?;
        let max_payload = connection.client.server_info().max_payload;
        if max_payload > 0 && payload.len() > max_payload {
            return Err(SinkError::Rejected {
                dest: dest.to_string(),
                reason: format!(
                    "an envelope of {} bytes exceeds the server's max_payload ({max_payload}); lower --envelope-flush-bytes",
                    payload.len()
                ),
            });
        }
        let rows = envelope.rows.to_string();
        let poll_seq = envelope.poll_seq.to_string();
        match mode {
            NatsMode::JetStream => {
                let message = PublishMessage::build()
                    .payload(payload)
                    .message_id(message_id(envelope))
                    .header(ROWS_HEADER, rows.as_str())
                    .header(POLL_SEQ_HEADER, poll_seq.as_str());
                let ack = connection
                    .jetstream
                    .send_publish(subject, message)
                    .await
                    .map_err(|e| Self::error(dest, "nats_publish", e))?;
                ack.await.map_err(|e| Self::error(dest, "nats_ack", e))?;
                Ok(Sent::default())
            }
            NatsMode::Core => {
                let mut headers = async_nats::HeaderMap::new();
                headers.insert(ROWS_HEADER, rows.as_str());
                headers.insert(POLL_SEQ_HEADER, poll_seq.as_str());
                connection
                    .client
                    .publish_with_headers(subject, headers, payload)
                    .await
                    .map_err(|e| Self::error(dest, "nats_publish", e))?;
                // The server has read it once it answers the flush's PING;
                // whether anyone subscribed is not known.
                connection
                    .client
                    .flush()
                    .await
                    .map_err(|e| Self::error(dest, "nats_flush", e))?;
                Ok(Sent {
                    rows_unconfirmed: envelope.rows,
                    ..Sent::default()
                })
            }
        }
    }

    /// A new connection at the next send: the client's own reconnection
    /// would keep publishes of a dead connection waiting in its buffer.
    fn reset(&mut self) {
        self.connection = None;
    }

    fn classify(&self, error: &SinkError) -> Disposition {
        match error {
            SinkError::Rejected { .. } => Disposition::Drop,
            other => other.default_disposition(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Both address forms parse; the URL's password never shows in Debug.
    #[test]
    fn nats_addresses_parse_and_hide_passwords() {
        let a = Nats::parse("nats", "127.0.0.1:4222").unwrap();
        assert_eq!(a.server, "127.0.0.1:4222");
        let b = Nats::parse("nats", "//user:s3cret@broker:4222").unwrap();
        assert_eq!(b.server, "nats://user:s3cret@broker:4222");
        assert!(!format!("{b:?}").contains("s3cret"), "{b:?}");
        for (bad, says) in [
            ("broker", "HOST:PORT"),
            (":4222", "needs a host"),
            ("h:x", "not a port"),
        ] {
            let err = Nats::parse("nats", bad).unwrap_err();
            assert!(err.contains(says), "{bad}: {err}");
        }
    }

    /// Stream names replace the characters a JetStream stream name may not hold.
    #[test]
    fn stream_name_from_subject() {
        assert_eq!(NatsSettings::default_stream_name("xtcp.records v1"), "xtcp_records_v1");
        assert_eq!("core".parse::<NatsMode>().unwrap(), NatsMode::Core);
        assert!("fast".parse::<NatsMode>().is_err());
    }
}
