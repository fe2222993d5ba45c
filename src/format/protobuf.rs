//! protobufList: ClickHouse's `ProtobufList` framing of our schema.
//!
//! An envelope is one length-delimited `Envelope` message (varint length,
//! then the message) whose field 1 repeats `Envelope.Record`; ClickHouse
//! reads exactly that with `FORMAT ProtobufList` and
//! `format_schema = 'xtcp2.proto:Record'` (it looks the row type up *inside*
//! the message named `Envelope`, which is why `Record` is nested).
//!
//! The schema text ([`schema_text`]) is generated from
//! [`FIELDS`](crate::record::FIELDS): one `optional` field per record field,
//! numbered by its tag, so presence survives (absent is not zero). The
//! encoder writes the wire format directly from the field visitor, with
//! precomputed keys and no allocation; tests decode its output with the
//! prost types generated from the same schema to prove they agree.

use super::text::{write_growing, SliceWriter};
use super::{field_tables, Encoder, Format, FormatSpec, Framing, MAX_FRAME_PREFIX};
use crate::record::{FieldKind, FieldMeta, FieldVisitor, Record, Value, FIELDS};
use std::net::IpAddr;

/// The protobuf types generated (by `build.rs`, with prost) from
/// `proto/xtcp2.proto`, for consumers and for the tests that check the
/// hand-written encoder against prost.
#[allow(clippy::all, missing_docs)]
pub mod schema {
    include!(concat!(env!("OUT_DIR"), "/xtcp2.rs"));
}

/// Wire type of varint fields.
const WIRE_VARINT: u8 = 0;
/// Wire type of length-delimited fields (strings, bytes, sub-messages).
const WIRE_LEN: u8 = 2;
/// `Envelope.records` is field 1, length-delimited: key byte `0x0a`.
const ENVELOPE_RECORD_KEY: u8 = (1 << 3) | WIRE_LEN;
/// Longest varint (a u64).
const MAX_VARINT: usize = 10;
/// Room reserved for the string fields of a record before the first retry.
const STRING_ROOM: usize = 1024;

/// `--marshal protobufList`.
pub static SPEC: FormatSpec = FormatSpec {
    name: "protobufList",
    aliases: &["protobuflist"],
    content_type: "application/x-protobuf",
    framing: Framing::VarintLengthPrefix,
    summary: "ClickHouse's ProtobufList: length-delimited `Envelope` messages of `Record`s (`proto/xtcp2.proto`)",
    header: None,
    encoder: |_| Box::new(ProtobufList::new()),
};

pub struct ProtobufList {
    keys: &'static [([u8; 2], u8)],
    /// Where `begin_envelope` reserved the envelope length.
    envelope_start: Option<usize>,
    /// A record body is written here first (see [`SliceWriter`] for why),
    /// then appended after its length: no room to reserve and patch.
    scratch: Vec<u8>,
}

impl ProtobufList {
    pub fn new() -> Self {
        ProtobufList {
            keys: &field_tables().protobuf_keys,
            envelope_start: None,
            scratch: vec![0; widest_record()],
        }
    }
}

/// Bytes of a record body with every field present at its widest, plus
/// [`STRING_ROOM`] for string contents.
fn widest_record() -> usize {
    let fields: usize = FIELDS
        .iter()
        .map(|f| {
            2 + match f.kind {
                FieldKind::Addr => 1 + 16,
                _ => MAX_VARINT,
            }
        })
        .sum();
    fields + STRING_ROOM
}

impl Default for ProtobufList {
    fn default() -> Self {
        Self::new()
    }
}

impl Encoder for ProtobufList {
    fn format(&self) -> Format {
        Format::ProtobufList
    }

    /// Appends `Envelope.records` entry: key, length, `Record` body.
    #[inline]
    fn encode(&mut self, record: &Record, out: &mut Vec<u8>) {
        let keys = self.keys;
        let body = write_growing(&mut self.scratch, |writer| {
            record.visit(&mut ProtobufFields { writer, keys });
        });
        out.push(ENVELOPE_RECORD_KEY);
        write_varint(out, body.len() as u64);
        out.extend_from_slice(body);
    }

    fn begin_envelope(&mut self, out: &mut Vec<u8>) {
        self.envelope_start = Some(out.len());
        out.extend_from_slice(&[0; MAX_FRAME_PREFIX]);
    }

    fn end_envelope(&mut self, out: &mut Vec<u8>) {
        let Some(start) = self.envelope_start.take() else {
            return;
        };
        let records_start = start + MAX_FRAME_PREFIX;
        if out.len() < records_start {
            // The caller broke the contract (dropped bytes between begin and
            // end): there is no length to patch.
            tracing::error!("protobufList envelope buffer was cut between begin_envelope and end_envelope");
            return;
        }
        let mut prefix = [0u8; MAX_FRAME_PREFIX];
        let n = varint_into((out.len() - records_start) as u64, &mut prefix);
        out[start..start + n].copy_from_slice(&prefix[..n]);
        out.copy_within(records_start.., start + n);
        out.truncate(out.len() - (MAX_FRAME_PREFIX - n));
    }
}

struct ProtobufFields<'w, 'b> {
    writer: &'w mut SliceWriter<'b>,
    keys: &'w [([u8; 2], u8)],
}

impl FieldVisitor for ProtobufFields<'_, '_> {
    // Inlined into Record::visit: a call per field costs more than the
    // field's encoding (the marshal bench doubles with this).
    #[inline(always)]
    fn field(&mut self, meta: &'static FieldMeta, value: Value<'_>) {
        // One or two bytes: both are stored, the length decides.
        let (key, key_len) = self.keys[meta.tag as usize];
        self.writer.write_with(2, |w| {
            w.copy_from_slice(&key);
            usize::from(key_len)
        });
        match value {
            Value::Uint(v) => put_varint(self.writer, v),
            Value::Str(s) => {
                if self.writer.has_room(MAX_VARINT + s.len()) {
                    put_varint(self.writer, s.len() as u64);
                    self.writer.write_with(s.len(), |w| {
                        w.copy_from_slice(s.as_bytes());
                        s.len()
                    });
                }
            }
            Value::Addr(IpAddr::V4(a)) => self.writer.write_with(5, |w| {
                w[0] = 4;
                w[1..].copy_from_slice(&a.octets());
                5
            }),
            Value::Addr(IpAddr::V6(a)) => self.writer.write_with(17, |w| {
                w[0] = 16;
                w[1..].copy_from_slice(&a.octets());
                17
            }),
        }
    }
}

/// Writes `v` as a varint through `writer`.
#[inline(always)]
fn put_varint(writer: &mut SliceWriter<'_>, v: u64) {
    if v < 0x80 {
        writer.write_with(1, |w| {
            w[0] = v as u8;
            1
        });
        return;
    }
    writer.write_with(MAX_VARINT, |w| {
        let mut rest = v;
        let mut i = 0;
        while rest >= 0x80 && i < MAX_VARINT - 1 {
            w[i] = (rest as u8) | 0x80;
            rest >>= 7;
            i += 1;
        }
        w[i] = rest as u8;
        i + 1
    });
}

/// Appends `v` as a protobuf base-128 varint.
#[inline]
pub(crate) fn write_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Writes `v` as a varint at the start of `buf`; returns its length.
#[inline]
pub(crate) fn varint_into(mut v: u64, buf: &mut [u8; MAX_FRAME_PREFIX]) -> usize {
    let mut i = 0;
    while v >= 0x80 {
        buf[i] = (v as u8) | 0x80;
        v >>= 7;
        i += 1;
    }
    buf[i] = v as u8;
    i + 1
}

/// The wire type a field's kind is written with.
fn wire_type(kind: FieldKind) -> u8 {
    match kind {
        FieldKind::Uint | FieldKind::TimestampNs | FieldKind::TcpState | FieldKind::Family => WIRE_VARINT,
        FieldKind::Str | FieldKind::Addr => WIRE_LEN,
    }
}

/// The protobuf type a field's kind is declared with.
fn proto_type(kind: FieldKind) -> &'static str {
    match kind {
        FieldKind::Uint | FieldKind::TimestampNs | FieldKind::TcpState | FieldKind::Family => "uint64",
        FieldKind::Str => "string",
        FieldKind::Addr => "bytes",
    }
}

/// The key of a field (number and wire type) as a varint of at most two
/// bytes; tags above [`super::MAX_TABLE_TAG`] are refused by a test.
pub(crate) fn field_key(meta: &FieldMeta) -> ([u8; 2], u8) {
    debug_assert!(
        meta.tag <= super::MAX_TABLE_TAG,
        "tag {} of {} needs a longer key",
        meta.tag,
        meta.name
    );
    let key = (u64::from(meta.tag) << 3) | u64::from(wire_type(meta.kind));
    let mut buf = [0u8; MAX_FRAME_PREFIX];
    let n = varint_into(key, &mut buf);
    ([buf[0], buf[1]], n.min(2) as u8)
}

/// The text of `proto/xtcp2.proto`, generated from the record fields.
pub fn schema_text() -> String {
    let mut s = String::new();
    s.push_str(
        "// Generated from src/record/fields.rs by `XTCP2_BLESS=1 cargo test --test formats_protobuf`.\n\
         // Do not edit: tests/formats_protobuf.rs fails when this file and the record drift apart.\n\
         //\n\
         // xtcp2 --marshal protobufList writes each envelope as one length-delimited\n\
         // Envelope (varint length, then the message): ClickHouse's ProtobufList framing.\n\
         // Read it with FORMAT ProtobufList SETTINGS format_schema = 'xtcp2.proto:Record'.\n\
         // Every field is optional: a field the kernel did not send is absent, not zero.\n\
         syntax = \"proto3\";\n\
         \n\
         package xtcp2;\n\
         \n\
         message Envelope {\n\
         \x20 // One socket of one poll (field names follow the kernel).\n\
         \x20 message Record {\n",
    );
    for f in FIELDS {
        let unit = if f.unit.is_empty() {
            String::new()
        } else {
            format!(" [{}]", f.unit)
        };
        s.push_str(&format!("    // {}{} ({})\n", f.doc, unit, f.source));
        s.push_str(&format!(
            "    optional {} {} = {};\n",
            proto_type(f.kind),
            f.name,
            f.tag
        ));
    }
    s.push_str("  }\n  repeated Record records = 1;\n}\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;
    use std::sync::Arc;

    fn encode(record: &Record) -> Vec<u8> {
        let mut out = Vec::new();
        ProtobufList::new().encode(record, &mut out);
        out
    }

    /// Varints are minimal little-endian base-128.
    #[test]
    fn varints_are_minimal() {
        for (v, bytes) in [
            (0u64, &[0u8][..]),
            (127, &[0x7f]),
            (128, &[0x80, 0x01]),
            (300, &[0xac, 0x02]),
            (u64::MAX, &[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01]),
        ] {
            let mut out = Vec::new();
            write_varint(&mut out, v);
            assert_eq!(out, bytes, "{v}");
        }
    }

    /// A tiny record (1-byte length) and a record with a huge label
    /// (3-byte length) both decode with prost to the same values.
    #[test]
    fn record_lengths_of_every_varint_width_decode() {
        for label_len in [0usize, 20_000] {
            let rec = Record {
                idiag_sport: Some(443),
                label: (label_len > 0).then(|| Arc::from("x".repeat(label_len).as_str())),
                ..Record::default()
            };
            let bytes = encode(&rec);
            let env = schema::Envelope::decode(&bytes[..]).unwrap();
            assert_eq!(env.records.len(), 1);
            assert_eq!(env.records[0].idiag_sport, Some(443));
            assert_eq!(env.records[0].label.as_deref().map(str::len).unwrap_or(0), label_len);
            // prost writes the same bytes for the same message.
            assert_eq!(env.encode_to_vec(), bytes);
        }
    }

    /// begin/end_envelope produce one length-delimited Envelope that prost reads back.
    #[test]
    fn standalone_envelope_is_length_delimited() {
        let mut enc = ProtobufList::new();
        let mut out = Vec::new();
        enc.begin_envelope(&mut out);
        for port in [1u16, 2, 3] {
            enc.encode(
                &Record {
                    idiag_dport: Some(port),
                    ..Record::default()
                },
                &mut out,
            );
        }
        enc.end_envelope(&mut out);
        let env = schema::Envelope::decode_length_delimited(&out[..]).unwrap();
        let ports: Vec<_> = env.records.iter().map(|r| r.idiag_dport).collect();
        assert_eq!(ports, [Some(1), Some(2), Some(3)]);
    }
}
