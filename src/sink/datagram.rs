//! Datagram destinations: splitting envelopes into datagrams (one resume
//! loop, [`DatagramSink`], shared by `udp:` and `unixgram:`), and
//! `unixgram:PATH`.
//!
//! An envelope larger than one datagram is split on record boundaries,
//! never inside a record: every datagram is a self-contained output (the
//! csv/tsv header, then whole records framed as the format requires: for
//! protobufList, its own length-delimited `Envelope`), because a datagram
//! receiver gets no order or delivery guarantee between datagrams.
//!
//! When a send fails half-way through an envelope, the sink remembers which
//! records went out, and the retry of that same envelope continues from
//! there instead of sending its first datagrams twice.

use std::future::Future;
use std::ops::Range;
use std::path::PathBuf;
use std::sync::Arc;

use tokio::net::UnixDatagram;

use super::file::non_empty_path;
use super::{DestinationKind, Sent, SinkError, Transport, MAX_DATAGRAM_PAYLOAD};
use crate::batch::Envelope;
use crate::format::StreamFormat;

/// One datagram's worth of an envelope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Run {
    /// These rows fit one datagram.
    Records(Range<usize>),
    /// This row alone is larger than a datagram: it cannot be sent.
    TooLarge(usize),
}

/// Splits rows `from_row..` of `envelope` into datagrams of at most
/// `max_payload` bytes, each carrying `header_len` bytes of header and the
/// format's frame prefix before its records.
pub(crate) fn plan_runs(envelope: &Envelope, from_row: usize, max_payload: usize, header_len: usize) -> Vec<Run> {
    let fits = |bytes: usize| header_len + envelope.frame.overhead(bytes) + bytes <= max_payload;
    let mut runs = Vec::new();
    let mut start = from_row;
    let mut row = from_row;
    while row < envelope.rows {
        let run_bytes = envelope.rows_range(start..row + 1).len();
        if fits(run_bytes) {
            row += 1;
        } else if row == start {
            runs.push(Run::TooLarge(row));
            row += 1;
            start = row;
        } else {
            runs.push(Run::Records(start..row));
            start = row;
        }
    }
    if start < envelope.rows {
        runs.push(Run::Records(start..envelope.rows));
    }
    runs
}

/// Writes the datagram for `rows`: header, frame prefix, records.
pub(crate) fn build_datagram(envelope: &Envelope, rows: Range<usize>, header: &[u8], out: &mut Vec<u8>) {
    out.clear();
    out.extend_from_slice(header);
    envelope
        .frame
        .frame(&envelope.records()[envelope.rows_range(rows)], out);
}

/// How far a half-sent envelope got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Progress {
    pub envelope_id: u64,
    pub next_row: usize,
    pub rows_too_large: usize,
}

impl Progress {
    /// Where sending `envelope` starts: after what an earlier, failed
    /// attempt at the same envelope already sent.
    pub(crate) fn resume(saved: Option<Progress>, envelope: &Envelope) -> Progress {
        match saved {
            Some(p) if p.envelope_id == envelope.id => p,
            _ => Progress {
                envelope_id: envelope.id,
                next_row: 0,
                rows_too_large: 0,
            },
        }
    }
}

/// How one kind of socket sends one datagram; [`DatagramSink`] does the
/// splitting and the resuming.
pub(crate) trait DatagramSocket: Send {
    /// Sends one whole datagram (what a failed send left is sent again at
    /// the next attempt, from the first datagram that did not go out).
    fn send_datagram(&mut self, datagram: &[u8], dest: &str) -> impl Future<Output = Result<(), SinkError>> + Send;
}

/// A datagram destination: every envelope is cut into self-contained
/// datagrams on record boundaries, and a retry of a half-sent envelope
/// resumes where the failed attempt stopped.
pub struct DatagramSink<S> {
    socket: S,
    header: Arc<[u8]>,
    datagram: Vec<u8>,
    progress: Option<Progress>,
}

impl<S> DatagramSink<S> {
    pub fn new(socket: S, header: Arc<[u8]>) -> Self {
        DatagramSink {
            socket,
            header,
            datagram: Vec::with_capacity(MAX_DATAGRAM_PAYLOAD),
            progress: None,
        }
    }
}

impl<S: DatagramSocket> Transport for DatagramSink<S> {
    async fn send(&mut self, envelope: &Envelope, dest: &str) -> Result<Sent, SinkError> {
        let mut progress = Progress::resume(self.progress, envelope);
        for run in plan_runs(envelope, progress.next_row, MAX_DATAGRAM_PAYLOAD, self.header.len()) {
            match run {
                Run::TooLarge(row) => {
                    progress.rows_too_large += 1;
                    progress.next_row = row + 1;
                }
                Run::Records(rows) => {
                    build_datagram(envelope, rows.clone(), &self.header, &mut self.datagram);
                    if let Err(e) = self.socket.send_datagram(&self.datagram, dest).await {
                        self.progress = Some(progress);
                        return Err(e);
                    }
                    progress.next_row = rows.end;
                }
            }
        }
        self.progress = None;
        Ok(Sent {
            rows_too_large: progress.rows_too_large,
            ..Sent::default()
        })
    }
}

/// The `unixgram:PATH` destination.
pub struct Unixgram;

impl DestinationKind for Unixgram {
    const SCHEMES: &'static [&'static str] = &["unixgram"];
    const TAKES_ADDRESS: bool = true;
    const FORM: &'static str = "unixgram:PATH";
    const SUMMARY: &'static str =
        "datagrams of whole records (at most 65,507 bytes each); every datagram opens with the csv header";
    type Address = PathBuf;
    type Sink = DatagramSink<UnixgramSocket>;

    fn parse(_scheme: &str, rest: &str) -> Result<PathBuf, String> {
        non_empty_path(rest, "unixgram:/run/xtcp2.sock")
    }

    async fn open(path: &PathBuf, format: &StreamFormat) -> Result<Self::Sink, SinkError> {
        let socket = UnixDatagram::unbound().map_err(|source| SinkError::Io {
            dest: format!("unixgram:{}", path.display()),
            source,
        })?;
        Ok(DatagramSink::new(
            UnixgramSocket {
                path: path.clone(),
                socket,
            },
            format.header_shared(),
        ))
    }
}

/// An unbound unix datagram socket sending to a bound one.
pub struct UnixgramSocket {
    path: PathBuf,
    socket: UnixDatagram,
}

impl DatagramSocket for UnixgramSocket {
    async fn send_datagram(&mut self, datagram: &[u8], dest: &str) -> Result<(), SinkError> {
        self.socket
            .send_to(datagram, &self.path)
            .await
            .map(drop)
            .map_err(|source| SinkError::Io {
                dest: dest.to_string(),
                source,
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::StreamFormat;
    use crate::record::Record;

    fn envelope(marshal: &str, labels: &[usize]) -> Envelope {
        let records: Vec<Record> = labels
            .iter()
            .map(|&n| Record {
                label: Some(Arc::from("x".repeat(n).as_str())),
                ..Record::default()
            })
            .collect();
        let mut enc = StreamFormat::new(marshal, &[]).unwrap().encoder();
        Envelope::from_records(enc.as_mut(), &records, Arc::from("h"), 1)
    }

    /// Runs never split a record, fill datagrams greedily, and isolate a record too large for any datagram.
    #[test]
    fn runs_split_on_record_boundaries() {
        // jsonl: {"label":"xxx"}\n is 13 + n bytes.
        let e = envelope("jsonl", &[37, 37, 37, 200, 10]);
        assert_eq!(e.record_range(0).len(), 50);
        let runs = plan_runs(&e, 0, 110, 0);
        assert_eq!(
            runs,
            [
                Run::Records(0..2),
                Run::Records(2..3),
                Run::TooLarge(3),
                Run::Records(4..5)
            ]
        );
        // A header takes room from every datagram.
        assert_eq!(
            plan_runs(&e, 0, 110, 20),
            [
                Run::Records(0..1),
                Run::Records(1..2),
                Run::Records(2..3),
                Run::TooLarge(3),
                Run::Records(4..5)
            ]
        );
        // Resuming starts at the given row.
        assert_eq!(plan_runs(&e, 4, 110, 0), [Run::Records(4..5)]);
    }

    /// The protobuf length prefix counts against the datagram size, and each datagram is one Envelope.
    #[test]
    fn protobuf_datagrams_are_whole_envelopes() {
        use crate::format::protobuf::schema;
        use prost::Message;
        let e = envelope("protobufList", &[50, 50, 50]);
        let record_len = e.record_range(0).len();
        // Two records plus a one-byte prefix fit exactly; without room for the prefix they do not.
        assert_eq!(
            plan_runs(&e, 0, 2 * record_len + 1, 0),
            [Run::Records(0..2), Run::Records(2..3)]
        );
        assert_eq!(
            plan_runs(&e, 0, 2 * record_len, 0),
            [Run::Records(0..1), Run::Records(1..2), Run::Records(2..3)]
        );
        let mut datagram = Vec::new();
        build_datagram(&e, 0..2, b"", &mut datagram);
        assert_eq!(datagram.len(), 2 * record_len + 1);
        let decoded = schema::Envelope::decode_length_delimited(&datagram[..]).unwrap();
        assert_eq!(decoded.records.len(), 2);
    }
}
