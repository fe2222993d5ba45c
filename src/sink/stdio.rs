//! `stdout` and `stderr`: the output stream of the process. The csv/tsv
//! header is written once per process; a reader that went away (`xtcp2 |
//! head`) stops the daemon like any Unix filter.

use std::sync::Arc;

use tokio::io::{AsyncWrite, AsyncWriteExt};

use super::{DestinationKind, Disposition, Sent, SinkError, Transport};
use crate::batch::Envelope;
use crate::format::StreamFormat;

/// The `stdout` destination.
pub struct Stdout;
/// The `stderr` destination.
pub struct Stderr;

impl DestinationKind for Stdout {
    const SCHEMES: &'static [&'static str] = &["stdout"];
    const TAKES_ADDRESS: bool = false;
    const FORM: &'static str = "stdout";
    const SUMMARY: &'static str =
        "standard output; the csv header once per process; exits when the reader closes the pipe";
    type Address = ();
    type Sink = StdioSink<tokio::io::Stdout>;

    fn parse(_scheme: &str, _rest: &str) -> Result<(), String> {
        Ok(())
    }

    async fn open(_address: &(), format: &StreamFormat) -> Result<Self::Sink, SinkError> {
        Ok(StdioSink::new(tokio::io::stdout(), format))
    }
}

impl DestinationKind for Stderr {
    const SCHEMES: &'static [&'static str] = &["stderr"];
    const TAKES_ADDRESS: bool = false;
    const FORM: &'static str = "stderr";
    const SUMMARY: &'static str = "standard error (shared with the logs); the csv header once per process";
    type Address = ();
    type Sink = StdioSink<tokio::io::Stderr>;

    fn parse(_scheme: &str, _rest: &str) -> Result<(), String> {
        Ok(())
    }

    async fn open(_address: &(), format: &StreamFormat) -> Result<Self::Sink, SinkError> {
        Ok(StdioSink::new(tokio::io::stderr(), format))
    }
}

/// stdout/stderr: the header once per process.
pub struct StdioSink<W> {
    out: W,
    header: Arc<[u8]>,
    header_written: bool,
}

impl<W> StdioSink<W> {
    fn new(out: W, format: &StreamFormat) -> Self {
        StdioSink {
            out,
            header: format.header_shared(),
            header_written: false,
        }
    }
}

impl<W: AsyncWrite + Unpin + Send> StdioSink<W> {
    async fn write(&mut self, envelope: &Envelope) -> std::io::Result<()> {
        if !self.header_written {
            self.out.write_all(&self.header).await?;
            self.header_written = true;
        }
        self.out.write_all(envelope.payload()).await?;
        self.out.flush().await
    }
}

impl<W: AsyncWrite + Unpin + Send> Transport for StdioSink<W> {
    async fn send(&mut self, envelope: &Envelope, dest: &str) -> Result<Sent, SinkError> {
        self.write(envelope)
            .await
            .map(|()| Sent::default())
            .map_err(|source| SinkError::Io {
                dest: dest.to_string(),
                source,
            })
    }

    /// A broken pipe means the reader exited: nothing written here can
    /// ever be read again.
    fn classify(&self, error: &SinkError) -> Disposition {
        match error {
            SinkError::Io { source, .. } if source.kind() == std::io::ErrorKind::BrokenPipe => Disposition::Stop,
            other => other.default_disposition(),
        }
    }
}
