//! A standalone output written straight to an `io::Write`, for tools that
//! produce records without the daemon's queue and sinks (`xtcp2 decode`).
//!
//! It frames like a `file:` destination does: the csv/tsv header once at
//! the start, records in envelopes of about `envelope_bytes`, each framed
//! by its format (protobufList: one length-delimited `Envelope` each;
//! protoJson: one `Envelope` line each), so the bytes are exactly what the
//! daemon would append to a file.

use std::io::{self, Write};

use super::{Encoder, Frame, StreamFormat, MAX_FRAME_PREFIX};
use crate::record::Record;

pub struct StreamWriter<W: Write> {
    out: W,
    frame: Frame,
    header: Vec<u8>,
    encoder: Box<dyn Encoder>,
    /// Headroom for the frame prefix, then the records of the open envelope.
    buf: Vec<u8>,
    envelope_bytes: usize,
    records: u64,
}

impl<W: Write> StreamWriter<W> {
    /// `envelope_bytes`: encoded size at which an envelope is written out.
    pub fn new(format: &StreamFormat, out: W, envelope_bytes: usize) -> Self {
        let mut buf = Vec::with_capacity(envelope_bytes + 64 * 1024);
        buf.resize(MAX_FRAME_PREFIX, 0);
        StreamWriter {
            out,
            frame: format.frame(),
            header: format.header().to_vec(),
            encoder: format.encoder(),
            buf,
            envelope_bytes: envelope_bytes.max(1),
            records: 0,
        }
    }

    /// Encodes one record, writing the envelope out when it is full.
    pub fn write(&mut self, record: &Record) -> io::Result<()> {
        self.encoder.encode(record, &mut self.buf);
        self.records += 1;
        if self.buf.len() - MAX_FRAME_PREFIX >= self.envelope_bytes {
            self.write_envelope()?;
        }
        Ok(())
    }

    /// Records written so far.
    pub fn records(&self) -> u64 {
        self.records
    }

    fn write_envelope(&mut self) -> io::Result<()> {
        if !self.header.is_empty() {
            self.out.write_all(&self.header)?;
            self.header.clear();
        }
        if self.buf.len() == MAX_FRAME_PREFIX {
            return Ok(());
        }
        let start = self.frame.seal_in_place(&mut self.buf);
        let written = self.out.write_all(&self.buf[start..]);
        self.buf.truncate(MAX_FRAME_PREFIX);
        written
    }

    /// Writes the last envelope (and the header of an empty output), flushes,
    /// and hands the writer back.
    pub fn finish(mut self) -> io::Result<W> {
        self.write_envelope()?;
        self.out.flush()?;
        Ok(self.out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::protobuf::schema;
    use prost::Message;

    fn records(n: u16) -> Vec<Record> {
        (0..n)
            .map(|p| Record {
                idiag_sport: Some(p),
                ..Record::default()
            })
            .collect()
    }

    /// protobufList output is a sequence of length-delimited Envelopes holding every record in order.
    #[test]
    fn protobuf_output_is_delimited_envelopes() {
        let format = StreamFormat::new("protobufList", &[]).unwrap();
        let mut w = StreamWriter::new(&format, Vec::new(), 100);
        for r in records(50) {
            w.write(&r).unwrap();
        }
        let bytes = w.finish().unwrap();
        let mut rest = &bytes[..];
        let mut ports = Vec::new();
        let mut envelopes = 0;
        while !rest.is_empty() {
            let env = schema::Envelope::decode_length_delimited(&mut rest).unwrap();
            envelopes += 1;
            ports.extend(env.records.iter().map(|r| r.idiag_sport.unwrap()));
        }
        assert!(envelopes > 1, "one envelope only");
        assert_eq!(ports, (0..50).collect::<Vec<u64>>());
    }

    /// csv output has one header at the start, even over several envelopes, and a header when empty.
    #[test]
    fn csv_output_has_one_header() {
        let format = StreamFormat::new("csv", &["idiag_sport".to_string()]).unwrap();
        let mut w = StreamWriter::new(&format, Vec::new(), 8);
        for r in records(5) {
            w.write(&r).unwrap();
        }
        assert_eq!(w.finish().unwrap(), b"idiag_sport\n0\n1\n2\n3\n4\n");
        let empty = StreamWriter::new(&format, Vec::new(), 8).finish().unwrap();
        assert_eq!(empty, b"idiag_sport\n");
    }
}
