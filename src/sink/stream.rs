//! `tcp:HOST:PORT` and `unix:PATH`: one long-lived stream connection.
//!
//! The connection is made at the first send and remade after any failure
//! (the delivery task spaces attempts with capped exponential backoff).
//! Each new connection is a new output stream: it starts with the csv/tsv
//! header.
//!
//! Before each envelope the connection is checked for a close by the peer
//! (receivers never send us anything, so a readable socket means EOF or an
//! error): writing into a connection the receiver already closed would
//! succeed locally and lose the envelope without any error to count.

use std::mem::MaybeUninit;
use std::path::PathBuf;
use std::sync::Arc;

use tokio::io::AsyncWriteExt;
use tokio::net::{TcpStream, UnixStream};

use super::file::non_empty_path;
use super::{DestinationKind, Sent, SinkError, Transport};
use crate::batch::Envelope;
use crate::format::StreamFormat;

/// `HOST:PORT` of a network destination, checked but not resolved (it is
/// resolved at every connect, so a receiver that moved is found).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPort {
    pub host: String,
    pub port: u16,
}

impl HostPort {
    /// Parses `HOST:PORT` (`[v6]:PORT` too).
    pub fn parse(text: &str) -> Result<HostPort, String> {
        let (host, port) = text.rsplit_once(':').ok_or("needs HOST:PORT")?;
        if host.is_empty() {
            return Err("needs a host before :PORT".into());
        }
        let port = port
            .parse::<u16>()
            .map_err(|_| format!("{port:?} is not a port number"))?;
        Ok(HostPort {
            host: host.to_string(),
            port,
        })
    }
}

impl std::fmt::Display for HostPort {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.host, self.port)
    }
}

/// The `tcp:HOST:PORT` destination.
pub struct Tcp;
/// The `unix:PATH` destination.
pub struct Unix;

impl DestinationKind for Tcp {
    const SCHEMES: &'static [&'static str] = &["tcp"];
    const TAKES_ADDRESS: bool = true;
    const FORM: &'static str = "tcp:HOST:PORT";
    const SUMMARY: &'static str = "one long-lived connection; the csv header on every new connection";
    type Address = HostPort;
    type Sink = StreamSink;

    fn parse(_scheme: &str, rest: &str) -> Result<HostPort, String> {
        HostPort::parse(rest)
    }

    async fn open(address: &HostPort, format: &StreamFormat) -> Result<StreamSink, SinkError> {
        Ok(StreamSink::new(
            StreamTarget::Tcp(address.to_string()),
            format.header_shared(),
        ))
    }
}

impl DestinationKind for Unix {
    const SCHEMES: &'static [&'static str] = &["unix"];
    const TAKES_ADDRESS: bool = true;
    const FORM: &'static str = "unix:PATH";
    const SUMMARY: &'static str = "one long-lived unix stream connection; the csv header on every new connection";
    type Address = PathBuf;
    type Sink = StreamSink;

    fn parse(_scheme: &str, rest: &str) -> Result<PathBuf, String> {
        non_empty_path(rest, "unix:/run/xtcp2.sock")
    }

    async fn open(path: &PathBuf, format: &StreamFormat) -> Result<StreamSink, SinkError> {
        Ok(StreamSink::new(
            StreamTarget::Unix(path.clone()),
            format.header_shared(),
        ))
    }
}

/// Where a stream sink connects.
#[derive(Debug, Clone)]
pub enum StreamTarget {
    /// `HOST:PORT`, resolved at every connect so a moved receiver is found.
    Tcp(String),
    Unix(PathBuf),
}

enum Connection {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl Connection {
    /// True when the peer closed (or reset) the connection. Never waits.
    fn peer_closed(&self) -> bool {
        let sock = match self {
            Connection::Tcp(s) => socket2::SockRef::from(s),
            Connection::Unix(s) => socket2::SockRef::from(s),
        };
        let mut buf = [MaybeUninit::<u8>::uninit(); 512];
        loop {
            // tokio sockets are non-blocking: this is one recv(2) that
            // returns WouldBlock when nothing (not even EOF) is pending.
            match sock.recv(&mut buf) {
                Ok(0) => return true,
                // A receiver that talks back is unexpected; discard it.
                Ok(_) => continue,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return false,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(_) => return true,
            }
        }
    }

    async fn write_all(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        match self {
            Connection::Tcp(s) => s.write_all(bytes).await,
            Connection::Unix(s) => s.write_all(bytes).await,
        }
    }
}

pub struct StreamSink {
    target: StreamTarget,
    header: Arc<[u8]>,
    connection: Option<Connection>,
}

impl StreamSink {
    pub fn new(target: StreamTarget, header: Arc<[u8]>) -> Self {
        StreamSink {
            target,
            header,
            connection: None,
        }
    }

    async fn connect(&self, dest: &str) -> Result<Connection, SinkError> {
        let connect_error = |source| SinkError::Connect {
            dest: dest.to_string(),
            source,
        };
        let connection = match &self.target {
            StreamTarget::Tcp(addr) => {
                let stream = TcpStream::connect(addr.as_str()).await.map_err(connect_error)?;
                // Keepalive finds a peer that vanished without a FIN (host
                // down) while the stream is idle between polls.
                if let Err(e) = socket2::SockRef::from(&stream).set_keepalive(true) {
                    tracing::debug!(error = %e, "cannot enable TCP keepalive");
                }
                Connection::Tcp(stream)
            }
            StreamTarget::Unix(path) => Connection::Unix(UnixStream::connect(path).await.map_err(connect_error)?),
        };
        tracing::info!(dest, "connected to the destination");
        Ok(connection)
    }

    async fn write(&mut self, envelope: &Envelope, dest: &str) -> Result<(), SinkError> {
        if self.connection.as_ref().is_some_and(Connection::peer_closed) {
            tracing::info!(dest, "the destination closed the connection; reconnecting");
            self.connection = None;
        }
        let connection = match &mut self.connection {
            Some(c) => c,
            None => {
                let mut c = self.connect(dest).await?;
                if !self.header.is_empty() {
                    c.write_all(&self.header).await.map_err(|source| SinkError::Io {
                        dest: dest.to_string(),
                        source,
                    })?;
                }
                self.connection.insert(c)
            }
        };
        let result = connection.write_all(envelope.payload()).await;
        result.map_err(|source| {
            self.connection = None;
            SinkError::Io {
                dest: dest.to_string(),
                source,
            }
        })
    }
}

impl Transport for StreamSink {
    async fn send(&mut self, envelope: &Envelope, dest: &str) -> Result<Sent, SinkError> {
        self.write(envelope, dest).await.map(|()| Sent::default())
    }

    /// Drops the connection; the next send connects again.
    fn reset(&mut self) {
        self.connection = None;
    }
}
