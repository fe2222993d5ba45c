//! MessagePack: one map per record, the schema's column names as keys, absent
//! fields omitted, numbers as the smallest unsigned integer, addresses and
//! names as strings. Records are concatenated maps, which every msgpack
//! stream decoder reads one after the other.

use super::text::{write_ip, MAX_IP_TEXT};
use super::{field_tables, Encoder, FieldTables, Format, FormatSpec, Framing};
use crate::record::{Column, FieldVisitor, Record, RecordSchema, Value};

/// Marker of a map with a 16-bit entry count.
const MAP16: u8 = 0xde;
/// Largest entry count of the one-byte `fixmap` marker.
const FIXMAP_MAX: usize = 15;
/// Bytes of a map16 header: marker and big-endian count.
const MAP16_HEADER: usize = 3;

/// `--marshal msgpack`.
pub static SPEC: FormatSpec = FormatSpec {
    name: "msgpack",
    aliases: &[],
    content_type: "application/msgpack",
    framing: Framing::Concatenated,
    summary: "MessagePack: one map per record, keyed by field name",
    header: None,
    encoder: |stream| Box::new(Msgpack::new(stream.schema())),
};

pub struct Msgpack {
    schema: RecordSchema,
    tables: &'static FieldTables,
    /// Address text is built here, then written with its length.
    scratch: Vec<u8>,
}

impl Msgpack {
    pub fn new(schema: RecordSchema) -> Self {
        Msgpack {
            schema,
            tables: field_tables(schema),
            scratch: Vec::with_capacity(MAX_IP_TEXT),
        }
    }
}

impl Default for Msgpack {
    fn default() -> Self {
        Self::new(RecordSchema::Xtcp2)
    }
}

impl Encoder for Msgpack {
    fn format(&self) -> Format {
        Format::Msgpack
    }

    fn schema(&self) -> RecordSchema {
        self.schema
    }

    #[inline]
    fn encode(&mut self, record: &Record, out: &mut Vec<u8>) {
        // The entry count is known only after the walk: reserve a map16
        // header, then shrink it to a fixmap when the record is small, so
        // the encoding stays the minimal one the spec asks for.
        let header_at = out.len();
        out.extend_from_slice(&[MAP16, 0, 0]);
        let mut writer = MsgpackFields {
            out,
            keys: &self.tables.msgpack_keys,
            scratch: &mut self.scratch,
            entries: 0,
        };
        self.schema.visit(record, &mut writer);
        let entries = writer.entries;
        if entries <= FIXMAP_MAX {
            out[header_at] = 0x80 | entries as u8;
            out.copy_within(header_at + MAP16_HEADER.., header_at + 1);
            out.truncate(out.len() - (MAP16_HEADER - 1));
        } else {
            // A schema has far fewer than 65536 columns.
            let count = (entries as u16).to_be_bytes();
            out[header_at + 1] = count[0];
            out[header_at + 2] = count[1];
        }
    }
}

struct MsgpackFields<'a> {
    out: &'a mut Vec<u8>,
    keys: &'a [Box<[u8]>],
    scratch: &'a mut Vec<u8>,
    entries: usize,
}

impl FieldVisitor for MsgpackFields<'_> {
    // Inlined into Record::visit: a call per field costs more than the
    // field's encoding (the marshal bench doubles with this).
    #[inline(always)]
    fn field(&mut self, meta: &'static Column, value: Value<'_>) {
        self.entries += 1;
        self.out.extend_from_slice(&self.keys[usize::from(meta.index)]);
        match value {
            Value::Uint(v) => {
                // Writing into a Vec cannot fail.
                let _ = rmp::encode::write_uint(self.out, v);
            }
            Value::Str(s) => write_str(self.out, s),
            Value::Addr(a) => {
                self.scratch.clear();
                write_ip(self.scratch, a);
                // Address text is at most 39 bytes: a fixstr.
                self.out.push(0xa0 | self.scratch.len() as u8);
                self.out.extend_from_slice(self.scratch);
            }
        }
    }
}

/// Appends a msgpack string (smallest str marker, then the bytes).
pub(crate) fn write_str(out: &mut Vec<u8>, s: &str) {
    // Writing into a Vec cannot fail; strings longer than u32::MAX cannot
    // come from a flag or a kernel name.
    let _ = rmp::encode::write_str(out, s);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    /// A small record is a fixmap with kernel-name keys, minimal ints and text addresses.
    #[test]
    fn small_record_bytes() {
        let rec = Record {
            hostname: Some(Arc::from("h")),
            idiag_sport: Some(443),
            idiag_src: Some("10.0.0.1".parse().unwrap()),
            ..Record::default()
        };
        let mut out = Vec::new();
        Msgpack::default().encode(&rec, &mut out);
        let mut expected = vec![0x83];
        expected.extend_from_slice(b"\xa8hostname\xa1h");
        expected.extend_from_slice(b"\xabidiag_sport\xcd\x01\xbb");
        expected.extend_from_slice(b"\xa9idiag_src\xa810.0.0.1");
        assert_eq!(out, expected);
    }

    /// More than 15 fields switch to a map16 header with the exact count.
    #[test]
    fn large_record_uses_map16() {
        let rec = Record {
            tcpi_rto: Some(1),
            tcpi_ato: Some(2),
            tcpi_snd_mss: Some(3),
            tcpi_rcv_mss: Some(4),
            tcpi_unacked: Some(5),
            tcpi_sacked: Some(6),
            tcpi_lost: Some(7),
            tcpi_retrans: Some(8),
            tcpi_fackets: Some(9),
            tcpi_last_data_sent: Some(10),
            tcpi_last_ack_sent: Some(11),
            tcpi_last_data_recv: Some(12),
            tcpi_last_ack_recv: Some(13),
            tcpi_pmtu: Some(14),
            tcpi_rcv_ssthresh: Some(15),
            tcpi_rtt: Some(16),
            ..Record::default()
        };
        let mut out = Vec::new();
        Msgpack::default().encode(&rec, &mut out);
        assert_eq!(&out[..3], &[MAP16, 0, 16]);
    }
}
