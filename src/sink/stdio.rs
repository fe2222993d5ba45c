//! `stdout` and `stderr`: the output stream of the process. The csv/tsv
//! header is written once per process; a reader that went away (`xtcp2 |
//! head`) stops the daemon like any Unix filter.

use std::sync::Arc;

use tokio::sync::oneshot;

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
    type Sink = StdioSink<std::io::Stdout>;

    fn parse(_scheme: &str, _rest: &str) -> Result<(), String> {
        Ok(())
    }

    async fn open(_address: &(), format: &StreamFormat) -> Result<Self::Sink, SinkError> {
        StdioSink::new(std::io::stdout, format).map_err(|source| SinkError::Io {
            dest: "stdout".into(),
            source,
        })
    }
}

impl DestinationKind for Stderr {
    const SCHEMES: &'static [&'static str] = &["stderr"];
    const TAKES_ADDRESS: bool = false;
    const FORM: &'static str = "stderr";
    const SUMMARY: &'static str = "standard error (shared with the logs); the csv header once per process";
    type Address = ();
    type Sink = StdioSink<std::io::Stderr>;

    fn parse(_scheme: &str, _rest: &str) -> Result<(), String> {
        Ok(())
    }

    async fn open(_address: &(), format: &StreamFormat) -> Result<Self::Sink, SinkError> {
        StdioSink::new(std::io::stderr, format).map_err(|source| SinkError::Io {
            dest: "stderr".into(),
            source,
        })
    }
}

/// stdout/stderr: the header once per process.
///
/// A write to stdout cannot be taken back: once handed to the kernel it
/// completes whenever the reader reads, however long that takes. So the
/// writes run on a thread of their own, and a send whose deadline passes
/// leaves its write in flight here; the retry of the same envelope waits
/// for that write instead of writing it again
/// ([`Transport::send_outlives_timeout`]), so an envelope is written once
/// or, if the daemon gives up on it at shutdown, counted as dropped.
pub struct StdioSink<W> {
    writer: std::sync::mpsc::Sender<Write>,
    stream: std::marker::PhantomData<fn() -> W>,
    in_flight: Option<InFlight>,
    header: Arc<[u8]>,
    header_written: bool,
}

/// One write for the writer thread: the bytes and where to say how it went.
struct Write {
    bytes: Vec<u8>,
    done: oneshot::Sender<std::io::Result<()>>,
}

/// The write of envelope `id`, handed to the writer thread and not yet
/// known to be finished.
struct InFlight {
    id: u64,
    done: oneshot::Receiver<std::io::Result<()>>,
}

impl<W: std::io::Write + 'static> StdioSink<W> {
    /// Starts the writer thread now, at open, so the daemon's threads are
    /// all there from the start (a thread appearing later looks like a leak).
    fn new(stream: fn() -> W, format: &StreamFormat) -> std::io::Result<Self> {
        let (jobs, queue) = std::sync::mpsc::channel::<Write>();
        std::thread::Builder::new().name("xtcp2-stdout".into()).spawn(move || {
            let mut out = stream();
            // Ends when the sink (the only sender) is dropped.
            for job in queue {
                let result = out.write_all(&job.bytes).and_then(|()| out.flush());
                // The sink may have stopped waiting (shutdown): nothing to tell.
                let _ = job.done.send(result);
            }
        })?;
        Ok(StdioSink {
            writer: jobs,
            stream: std::marker::PhantomData,
            in_flight: None,
            header: format.header_shared(),
            header_written: false,
        })
    }

    async fn write(&mut self, envelope: &Envelope) -> std::io::Result<()> {
        if let Some(in_flight) = &mut self.in_flight {
            // Cancel-safe: if this future is dropped, the receiver stays
            // in `self` for the next send.
            let result = (&mut in_flight.done)
                .await
                .unwrap_or_else(|_| Err(std::io::Error::other("the stdout writer thread ended")));
            let id = in_flight.id;
            self.in_flight = None;
            if id == envelope.id {
                // This envelope's own earlier write: it is done now.
                return result;
            }
            // Another envelope's write finished; go on with this one.
            result?;
        }
        let mut bytes = Vec::with_capacity(self.header.len() + envelope.payload().len());
        if !self.header_written {
            bytes.extend_from_slice(&self.header);
            self.header_written = true;
        }
        bytes.extend_from_slice(envelope.payload());
        let (done, receiver) = oneshot::channel();
        self.writer
            .send(Write { bytes, done })
            .map_err(|_| std::io::Error::other("the stdout writer thread ended"))?;
        self.in_flight = Some(InFlight {
            id: envelope.id,
            done: receiver,
        });
        let in_flight = self.in_flight.as_mut().map(|f| &mut f.done);
        let result = match in_flight {
            Some(done) => done
                .await
                .unwrap_or_else(|_| Err(std::io::Error::other("the stdout writer thread ended"))),
            None => Ok(()),
        };
        self.in_flight = None;
        result
    }
}

impl<W: std::io::Write + 'static> Transport for StdioSink<W> {
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

    fn send_outlives_timeout(&self) -> bool {
        true
    }
}
