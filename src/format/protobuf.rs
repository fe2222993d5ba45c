//! protobufList: ClickHouse's `ProtobufList` framing of a record schema.
//!
//! An envelope is one length-delimited `Envelope` message (varint length,
//! then the message) whose rows field repeats the row message: in `xtcp2`,
//! field 1 repeating `Envelope.Record` (`proto/xtcp2.proto`); in
//! `xtcp_flat_record.v1`, field 10 (`row`) repeating `XtcpFlatRecord`
//! (`proto/xtcp_flat_record_v1.proto`). ClickHouse reads exactly that with
//! `FORMAT ProtobufList` and `format_schema = 'xtcp2.proto:Record'` (or
//! `'xtcp_flat_record_v1.proto:XtcpFlatRecord'`).
//!
//! The schema texts ([`schema_text`]) are generated from the schemas'
//! columns: one `optional` field per column, so presence survives (absent
//! is not zero). The encoder writes the wire format directly from the
//! field visitor, with precomputed keys and no allocation; tests decode its
//! output with the prost types generated from the same files to prove they
//! agree.

use super::text::{write_growing, SliceWriter};
use super::{field_tables, Encoder, Format, FormatSpec, Framing, MAX_FRAME_PREFIX};
use crate::record::go_v1::{self, address_slot};
use crate::record::{Column, FieldKind, FieldVisitor, ProtoType, Record, RecordSchema, Value};
use std::net::IpAddr;

/// The protobuf types generated (by `build.rs`, with prost) from
/// `proto/xtcp2.proto`, for consumers and for the tests that check the
/// hand-written encoder against prost.
#[allow(clippy::all, missing_docs)]
pub mod schema {
    include!(concat!(env!("OUT_DIR"), "/xtcp2.rs"));
}

/// The same for the Go daemon's record, `proto/xtcp_flat_record_v1.proto`.
#[allow(clippy::all, missing_docs)]
pub mod flat_record_v1 {
    include!(concat!(env!("OUT_DIR"), "/xtcp_flat_record.v1.rs"));
}

/// Wire type of varint fields.
const WIRE_VARINT: u8 = 0;
/// Wire type of length-delimited fields (strings, bytes, sub-messages).
const WIRE_LEN: u8 = 2;
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
    summary: "ClickHouse's ProtobufList: length-delimited `Envelope` messages of rows (`proto/xtcp2.proto`, `proto/xtcp_flat_record_v1.proto`)",
    header: None,
    encoder: |stream| Box::new(ProtobufList::new(stream.schema())),
};

pub struct ProtobufList {
    schema: RecordSchema,
    keys: &'static [([u8; 4], u8)],
    /// The key of the Envelope's rows field (one byte: its number is below 16).
    envelope_key: u8,
    /// Where `begin_envelope` reserved the envelope length.
    envelope_start: Option<usize>,
    /// A record body is written here first (see [`SliceWriter`] for why),
    /// then appended after its length: no room to reserve and patch.
    scratch: Vec<u8>,
}

impl ProtobufList {
    pub fn new(schema: RecordSchema) -> Self {
        let (_, rows_field) = schema.envelope_field();
        debug_assert!(rows_field < 16, "the rows field's key must be one byte");
        ProtobufList {
            schema,
            keys: &field_tables(schema).protobuf_keys,
            envelope_key: ((rows_field as u8) << 3) | WIRE_LEN,
            envelope_start: None,
            scratch: vec![0; widest_record(schema)],
        }
    }
}

/// Bytes of a record body with every column present at its widest, plus
/// [`STRING_ROOM`] for string contents.
fn widest_record(schema: RecordSchema) -> usize {
    let fields: usize = schema
        .columns()
        .iter()
        .map(|f| {
            4 + match f.kind {
                FieldKind::Addr | FieldKind::AddrSlot => 1 + 16,
                _ => MAX_VARINT,
            }
        })
        .sum();
    fields + STRING_ROOM
}

impl ProtobufList {
    /// Appends `record` as field `field` (a sub-message) of an enclosing
    /// message: key, length, row body. The gRPC record streams write each
    /// record once this way as a whole `FlatRecordsResponse` (field 1).
    pub fn encode_as_field(&mut self, record: &Record, field: u32, out: &mut Vec<u8>) {
        let keys = self.keys;
        let schema = self.schema;
        let body = write_growing(&mut self.scratch, |writer| {
            schema.visit(record, &mut ProtobufFields { writer, keys });
        });
        write_varint(out, (u64::from(field) << 3) | u64::from(WIRE_LEN));
        write_varint(out, body.len() as u64);
        out.extend_from_slice(body);
    }
}

impl Default for ProtobufList {
    fn default() -> Self {
        Self::new(RecordSchema::Xtcp2)
    }
}

impl Encoder for ProtobufList {
    fn format(&self) -> Format {
        Format::ProtobufList
    }

    fn schema(&self) -> RecordSchema {
        self.schema
    }

    /// Appends one entry of the Envelope's rows field: key, length, row body.
    #[inline]
    fn encode(&mut self, record: &Record, out: &mut Vec<u8>) {
        let keys = self.keys;
        let schema = self.schema;
        let body = write_growing(&mut self.scratch, |writer| {
            schema.visit(record, &mut ProtobufFields { writer, keys });
        });
        out.push(self.envelope_key);
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
    keys: &'w [([u8; 4], u8)],
}

impl FieldVisitor for ProtobufFields<'_, '_> {
    // Inlined into Record::visit: a call per field costs more than the
    // field's encoding (the marshal bench doubles with this).
    #[inline(always)]
    fn field(&mut self, meta: &'static Column, value: Value<'_>) {
        // One to three bytes, stored as four so the copy is one store;
        // the length decides.
        let (key, key_len) = self.keys[usize::from(meta.index)];
        self.writer.write_with(4, |w| {
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
            Value::Addr(a) if meta.kind == FieldKind::AddrSlot => self.writer.write_with(17, |w| {
                w[0] = 16;
                w[1..].copy_from_slice(&address_slot(a));
                17
            }),
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

/// The wire type a column is written with.
fn wire_type(proto_type: ProtoType) -> u8 {
    match proto_type {
        ProtoType::Uint32 | ProtoType::Uint64 | ProtoType::Int64 | ProtoType::Enum(_) => WIRE_VARINT,
        ProtoType::String | ProtoType::Bytes => WIRE_LEN,
    }
}

/// The key of a column (number and wire type) as a varint of at most three
/// bytes; tags above [`super::MAX_TABLE_TAG`] are refused by a test.
pub(crate) fn field_key(meta: &Column) -> ([u8; 4], u8) {
    debug_assert!(
        meta.tag <= super::MAX_TABLE_TAG,
        "tag {} of {} needs a longer key",
        meta.tag,
        meta.name
    );
    let key = (u64::from(meta.tag) << 3) | u64::from(wire_type(meta.proto_type));
    let mut buf = [0u8; MAX_FRAME_PREFIX];
    let n = varint_into(key, &mut buf);
    ([buf[0], buf[1], buf[2], 0], n.min(3) as u8)
}

/// The text of the schema's `.proto` file under `proto/`, generated from
/// its columns.
pub fn schema_text(schema: RecordSchema) -> String {
    match schema {
        RecordSchema::Xtcp2 => xtcp2_schema_text(),
        RecordSchema::FlatRecordV1 => flat_record_v1_schema_text(),
    }
}

/// One `optional` line per column, each after a comment saying what it is.
fn column_lines(columns: &[&Column], indent: &str, comment: impl Fn(&Column) -> String) -> String {
    let mut s = String::new();
    for c in columns {
        s.push_str(&format!("{indent}// {}\n", comment(c)));
        s.push_str(&format!(
            "{indent}optional {} {} = {};\n",
            c.proto_type.proto_name(),
            c.proto_name,
            c.tag
        ));
    }
    s
}

/// `proto/xtcp2.proto`.
fn xtcp2_schema_text() -> String {
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
    s.push_str(&column_lines(RecordSchema::Xtcp2.columns(), "    ", |f| {
        let unit = if f.unit.is_empty() {
            String::new()
        } else {
            format!(" [{}]", f.unit)
        };
        format!("{}{} ({})", f.doc, unit, f.source)
    }));
    s.push_str("  }\n  repeated Record records = 1;\n}\n");
    s
}

/// `proto/xtcp_flat_record_v1.proto`: the Go daemon's record as
/// `shared/upstream/record-v1.tsv` states it, each field commented with
/// what of ours fills it.
fn flat_record_v1_schema_text() -> String {
    let mut s = String::new();
    s.push_str(
        "// Generated from src/record/go_v1.rs by `XTCP2_BLESS=1 cargo test --test go_schema`.\n\
         // Do not edit: tests/go_schema.rs fails when this file and the mapping table drift apart.\n\
         //\n\
         // The Go xtcp2's record, xtcp_flat_record.v1, written by\n\
         // `xtcp2 --record-schema xtcp_flat_record.v1`: same package, messages, field\n\
         // names, numbers and types as the Go daemon's. --marshal protobufList writes\n\
         // each envelope as one length-delimited Envelope; read it with\n\
         // FORMAT ProtobufList SETTINGS format_schema = 'xtcp_flat_record_v1.proto:XtcpFlatRecord'.\n\
         //\n\
         // Every scalar is `optional`: on the wire that is what a plain proto3 field\n\
         // is (Go's readers read these bytes unchanged), and a reader generated from\n\
         // this file also sees which fields were set. A field xtcp2 cannot fill is\n\
         // never set (absent, not zero).\n\
         syntax = \"proto3\";\n\
         \n\
         package xtcp_flat_record.v1;\n\
         \n\
         // What one protobufList frame holds.\n\
         message Envelope {\n",
    );
    let (rows, rows_tag) = RecordSchema::FlatRecordV1.envelope_field();
    s.push_str(&format!("  repeated XtcpFlatRecord {rows} = {rows_tag};\n}}\n\n"));
    s.push_str("// One socket of one poll.\nmessage XtcpFlatRecord {\n");
    let congestion = &go_v1::CONGESTION_ALGORITHM;
    s.push_str(&format!("  enum {} {{\n", congestion.name));
    for (number, value) in congestion.values.iter().enumerate() {
        s.push_str(&format!("    {value} = {number};\n"));
    }
    s.push_str("  }\n");
    s.push_str(&column_lines(RecordSchema::FlatRecordV1.columns(), "  ", |c| {
        let from = if c.source.is_empty() {
            String::new()
        } else {
            format!("xtcp2: {}", c.source)
        };
        match (from.is_empty(), c.doc.is_empty()) {
            (false, false) => format!("{from}. {}", c.doc),
            (false, true) => from,
            (true, _) => c.doc.to_string(),
        }
    }));
    s.push_str(
        "}\n\
         \n\
         // The Go daemon's record service, served by `xtcp2 --grpc-listen` (docs/grpc.md).\n\
         service XTCPFlatRecordService {\n\
         \x20 rpc FlatRecords(FlatRecordsRequest) returns (stream FlatRecordsResponse);\n\
         \x20 rpc PollFlatRecords(stream PollFlatRecordsRequest) returns (stream PollFlatRecordsResponse);\n\
         }\n\
         \n\
         message FlatRecordsRequest {}\n\
         \n\
         message FlatRecordsResponse {\n\
         \x20 XtcpFlatRecord xtcp_flat_record = 1;\n\
         }\n\
         \n\
         message PollFlatRecordsRequest {}\n\
         \n\
         message PollFlatRecordsResponse {\n\
         \x20 XtcpFlatRecord xtcp_flat_record = 1;\n\
         }\n",
    );
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;
    use std::sync::Arc;

    fn encode(record: &Record) -> Vec<u8> {
        let mut out = Vec::new();
        ProtobufList::default().encode(record, &mut out);
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
        let mut enc = ProtobufList::default();
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
