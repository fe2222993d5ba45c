//! `valkey:HOST:PORT` (also `redis:HOST:PORT`): each envelope is one entry
//! of the stream `--topic`, or one message on the channel `--topic`.
//!
//! By default (`--valkey-mode stream`) the envelope is an `XADD` with an
//! approximate `MAXLEN` cap (`--valkey-maxlen`), so the server's memory
//! stays bounded however far the consumers fall behind; a send succeeds
//! once the server replied with the entry's id. The entry's fields:
//! `rows` (record count), `poll_seq`, `envelope` (unique per envelope and
//! daemon run, for consumers that drop the second copy of an envelope sent
//! again after a lost reply) and `payload` (the csv header, if any, then
//! the envelope, exactly as a file: destination would write it).
//!
//! `--valkey-mode publish` is the Go daemon's `PUBLISH`: the payload alone;
//! the server answers with the number of subscribers that received it, and
//! the records of a message nobody received are counted in
//! `xtcp2_destination_unconfirmed_rows_total`.
//!
//! One command in flight: the delivery task awaits each send before the
//! next, so an envelope the server did not confirm is retried (or counted
//! as dropped at shutdown), never lost unseen.
//!
//! `--valkey-password` (env `XTCP2_VALKEY_PASSWORD`) and `--valkey-user`
//! authenticate, `--valkey-db` selects the database, `--valkey-tls`
//! connects with TLS (rustls, the system's roots). The password is never
//! logged nor shown by `Debug`.

use std::sync::Arc;
use std::time::Duration;

use super::{DestinationKind, Sent, SinkError, Transport};
use crate::batch::Envelope;
use crate::format::StreamFormat;

/// `--valkey-maxlen`'s default: the stream keeps about this many envelopes
/// (the newest). At the default 768 KiB per envelope that is at most about
/// 750 MiB of server memory, and about 18 polls of 100,000 sockets in
/// protobufList: time for a consumer to come back.
pub const DEFAULT_MAXLEN: u64 = 1000;
/// Longest wait for the TCP (and TLS) connection; the delivery task bounds
/// the whole send by `--produce-timeout` as well.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// `--valkey-mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ValkeyMode {
    /// `XADD` to a stream, capped by `MAXLEN ~`.
    #[default]
    Stream,
    /// `PUBLISH` to a channel (the Go daemon's).
    Publish,
}

impl std::str::FromStr for ValkeyMode {
    type Err = String;
    fn from_str(s: &str) -> Result<ValkeyMode, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "stream" | "xadd" | "" => Ok(ValkeyMode::Stream),
            "publish" | "pubsub" => Ok(ValkeyMode::Publish),
            other => Err(format!("--valkey-mode {other:?}: expected stream or publish")),
        }
    }
}

/// The valkey: destination's options (from the `--valkey-*` flags and `--topic`).
#[derive(Clone, PartialEq, Eq, Default)]
pub struct ValkeySettings {
    /// The stream's key, or the channel.
    pub key: String,
    pub mode: ValkeyMode,
    /// 0: no cap.
    pub maxlen: u64,
    pub user: String,
    pub password: String,
    pub db: u32,
    pub tls: bool,
}

impl std::fmt::Debug for ValkeySettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ValkeySettings")
            .field("key", &self.key)
            .field("mode", &self.mode)
            .field("maxlen", &self.maxlen)
            .field("user", &self.user)
            .field("password", &if self.password.is_empty() { "" } else { "***" })
            .field("db", &self.db)
            .field("tls", &self.tls)
            .finish()
    }
}

/// A parsed `valkey:`/`redis:` destination.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValkeyAddress {
    pub host: String,
    pub port: u16,
    pub settings: ValkeySettings,
}

/// The `valkey:` and `redis:` destinations.
pub struct Valkey;

impl DestinationKind for Valkey {
    const SCHEMES: &'static [&'static str] = &["valkey", "redis"];
    const TAKES_ADDRESS: bool = true;
    const FORM: &'static str = "valkey:HOST:PORT";
    const SUMMARY: &'static str = "one XADD per envelope to the stream --topic, capped by MAXLEN ~ --valkey-maxlen (--valkey-mode publish: the Go daemon's PUBLISH); also redis:HOST:PORT; each entry opens with the csv header";
    type Address = ValkeyAddress;
    type Sink = ValkeySink;

    fn parse(_scheme: &str, rest: &str) -> Result<ValkeyAddress, String> {
        super::nats::check_host_port(rest)?;
        let (host, port) = rest.rsplit_once(':').ok_or("needs HOST:PORT")?;
        let port = port.parse().map_err(|_| format!("{port:?} is not a port number"))?;
        Ok(ValkeyAddress {
            host: host.trim_start_matches('[').trim_end_matches(']').to_string(),
            port,
            settings: ValkeySettings {
                key: super::nats::DEFAULT_TOPIC.to_string(),
                maxlen: DEFAULT_MAXLEN,
                ..ValkeySettings::default()
            },
        })
    }

    async fn open(address: &ValkeyAddress, format: &StreamFormat) -> Result<ValkeySink, SinkError> {
        let s = &address.settings;
        let addr = if s.tls {
            redis::ConnectionAddr::TcpTls {
                host: address.host.clone(),
                port: address.port,
                insecure: false,
                tls_params: None,
            }
        } else {
            redis::ConnectionAddr::Tcp(address.host.clone(), address.port)
        };
        let bad_address = |e: redis::RedisError| SinkError::BadAddress {
            dest: format!("valkey:{}:{}", address.host, address.port),
            reason: e.to_string(),
        };
        let info = redis::IntoConnectionInfo::into_connection_info(addr).map_err(bad_address)?;
        let mut redis_info = redis::RedisConnectionInfo::default().set_db(i64::from(s.db));
        if !s.user.is_empty() {
            redis_info = redis_info.set_username(s.user.clone());
        }
        if !s.password.is_empty() {
            redis_info = redis_info.set_password(s.password.clone());
        }
        let info = info.set_redis_settings(redis_info);
        let client = redis::Client::open(info).map_err(bad_address)?;
        Ok(ValkeySink {
            settings: s.clone(),
            client,
            header: format.header_shared(),
            connection: None,
        })
    }
}

pub struct ValkeySink {
    settings: ValkeySettings,
    client: redis::Client,
    header: Arc<[u8]>,
    connection: Option<redis::aio::MultiplexedConnection>,
}

impl ValkeySink {
    fn error(dest: &str, kind: &'static str, e: redis::RedisError) -> SinkError {
        SinkError::Broker {
            dest: dest.to_string(),
            kind,
            reason: e.to_string(),
        }
    }

    async fn connection(&mut self, dest: &str) -> Result<redis::aio::MultiplexedConnection, SinkError> {
        if let Some(connection) = &self.connection {
            return Ok(connection.clone());
        }
        // No response timeout of the client's own: --produce-timeout
        // bounds each send (an XADD of a large envelope over a slow link
        // must not fail at the client's 500 ms default).
        let config = redis::AsyncConnectionConfig::new()
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_response_timeout(None);
        let connection = self
            .client
            .get_multiplexed_async_connection_with_config(&config)
            .await
            .map_err(|e| Self::error(dest, "connect", e))?;
        self.connection = Some(connection.clone());
        Ok(connection)
    }
}

impl Transport for ValkeySink {
    async fn send(&mut self, envelope: &Envelope, dest: &str) -> Result<Sent, SinkError> {
        let mut payload = Vec::with_capacity(self.header.len() + envelope.payload().len());
        payload.extend_from_slice(&self.header);
        payload.extend_from_slice(envelope.payload());
        let mut connection = self.connection(dest).await?;
        let s = &self.settings;
        match s.mode {
            ValkeyMode::Stream => {
                let mut xadd = redis::cmd("XADD");
                xadd.arg(&s.key);
                if s.maxlen > 0 {
                    xadd.arg("MAXLEN").arg("~").arg(s.maxlen);
                }
                xadd.arg("*")
                    .arg("rows")
                    .arg(envelope.rows)
                    .arg("poll_seq")
                    .arg(envelope.poll_seq)
                    .arg("envelope")
                    .arg(format!("{}-{}-{}", envelope.hostname, envelope.created_ns, envelope.id))
                    .arg("payload")
                    .arg(payload);
                let _id: String = xadd
                    .query_async(&mut connection)
                    .await
                    .map_err(|e| Self::error(dest, "valkey_xadd", e))?;
                Ok(Sent::default())
            }
            ValkeyMode::Publish => {
                let receivers: i64 = redis::cmd("PUBLISH")
                    .arg(&s.key)
                    .arg(payload)
                    .query_async(&mut connection)
                    .await
                    .map_err(|e| Self::error(dest, "valkey_publish", e))?;
                Ok(Sent {
                    rows_unconfirmed: if receivers > 0 { 0 } else { envelope.rows },
                    ..Sent::default()
                })
            }
        }
    }

    /// A new connection at the next send: a reply of the failed command
    /// must not be taken for the next one's.
    fn reset(&mut self) {
        self.connection = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Both schemes parse HOST:PORT; the password never shows in Debug.
    #[test]
    fn valkey_addresses_parse_and_hide_passwords() {
        let mut a = Valkey::parse("valkey", "127.0.0.1:6379").unwrap();
        assert_eq!((a.host.as_str(), a.port), ("127.0.0.1", 6379));
        assert_eq!(a.settings.maxlen, DEFAULT_MAXLEN);
        a.settings.password = "s3cret".into();
        assert!(!format!("{a:?}").contains("s3cret"));
        assert_eq!(Valkey::parse("redis", "[::1]:6379").unwrap().host, "::1");
        assert!(Valkey::parse("redis", "h").unwrap_err().contains("HOST:PORT"));
        assert_eq!("publish".parse::<ValkeyMode>().unwrap(), ValkeyMode::Publish);
        assert!("list".parse::<ValkeyMode>().is_err());
    }
}
