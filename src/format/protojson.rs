//! protoJson: protobuf's JSON form (the proto3 JSON mapping) of each
//! envelope, one `Envelope` object per line, as the Go daemon frames it:
//! `{"records":[{...},{...}]}` in `xtcp2` (`{"row":[...]}` in
//! `xtcp_flat_record.v1`), so every line parses with any protobuf library's
//! JSON parser (`json_format.Parse`, `protojson.Unmarshal`) into the
//! schema's `Envelope`.
//!
//! The mapping: keys are the fields' proto3 JSON names (lowerCamelCase of
//! the `.proto` name: `tcpiRtt`, `inetDiagMsgSocketSourcePort`); 32-bit
//! integers are JSON numbers, 64-bit integers JSON strings (`"123"`, which
//! is what proto3 JSON requires, since JSON readers lose precision past
//! 2^53); bytes (addresses) are standard base64 with padding; enums are
//! their value's name; absent fields are left out.
//!
//! Each record is written with a leading comma, and [`super::Frame`] turns
//! the envelope's first one into the `[` when it is sealed, so records stay
//! self-delimiting and an envelope can still be cut into datagrams at any
//! record (each datagram is then an `Envelope` line of its own).

use std::net::IpAddr;

use base64::Engine;

use super::jsonl::write_json_string;
use super::text::{write_growing, FixedText, SliceWriter, TextSink, FIXED_TEXT_WIDTH, MAX_U64_DIGITS};
use super::{field_tables, Encoder, Format, FormatSpec, Framing};
use crate::record::go_v1::address_slot;
use crate::record::{Column, FieldKind, FieldVisitor, ProtoType, Record, RecordSchema, Value};

/// Room reserved for the string fields of a record before the first retry.
const STRING_ROOM: usize = 1024;
/// Longest base64 of an address (16 bytes), with its quotes.
const MAX_ADDRESS_BASE64: usize = 24 + 2;
/// Room for any non-string value: a quoted u64, an address, an enum name.
const MAX_VALUE: usize = 48;

/// `--marshal protoJson`.
pub static SPEC: FormatSpec = FormatSpec {
    name: "protoJson",
    aliases: &["protojson"],
    content_type: "application/x-ndjson",
    framing: Framing::JsonEnvelope,
    summary: "protobuf's JSON form of each envelope (proto3 JSON mapping: lowerCamelCase names, 64-bit integers as strings, bytes as base64), one `Envelope` object per line",
    header: None,
    encoder: |stream| Box::new(ProtoJson::new(stream.schema())),
};

pub struct ProtoJson {
    schema: RecordSchema,
    keys: &'static [FixedText],
    /// A record is written here first, then copied out in one piece.
    scratch: Vec<u8>,
    /// Where `begin_envelope` started a standalone envelope.
    envelope_start: Option<usize>,
}

impl ProtoJson {
    pub fn new(schema: RecordSchema) -> Self {
        let widest = schema.columns().len() * (FIXED_TEXT_WIDTH + MAX_VALUE) + STRING_ROOM;
        ProtoJson {
            schema,
            keys: &field_tables(schema).proto_json_keys,
            scratch: vec![0; widest],
            envelope_start: None,
        }
    }
}

impl Encoder for ProtoJson {
    fn format(&self) -> Format {
        Format::ProtoJson
    }

    fn schema(&self) -> RecordSchema {
        self.schema
    }

    /// Appends `,{...}`: the separator, then the record's JSON object.
    #[inline]
    fn encode(&mut self, record: &Record, out: &mut Vec<u8>) {
        let keys = self.keys;
        let schema = self.schema;
        let text = write_growing(&mut self.scratch, |writer| {
            writer.push(b',');
            schema.visit(record, &mut ProtoJsonFields { writer, keys });
            if writer.len() == 1 {
                writer.push(b'{');
            }
            writer.push(b'}');
        });
        // Every key starts with its comma; the first one becomes the `{`.
        if let Some(first_key) = text.get_mut(1) {
            *first_key = b'{';
        }
        out.extend_from_slice(text);
    }

    fn begin_envelope(&mut self, out: &mut Vec<u8>) {
        self.envelope_start = Some(out.len());
    }

    /// Wraps what was written since [`Encoder::begin_envelope`] in the
    /// `Envelope` object.
    fn end_envelope(&mut self, out: &mut Vec<u8>) {
        let Some(start) = self.envelope_start.take() else {
            return;
        };
        let records = out.split_off(start.min(out.len()));
        self.frame().frame(&records, out);
    }
}

struct ProtoJsonFields<'w, 'b> {
    writer: &'w mut SliceWriter<'b>,
    keys: &'w [FixedText],
}

impl FieldVisitor for ProtoJsonFields<'_, '_> {
    // Inlined into the schema's walk: a call per field costs more than the
    // field's encoding.
    #[inline(always)]
    fn field(&mut self, column: &'static Column, value: Value<'_>) {
        self.writer.put_fixed(&self.keys[usize::from(column.index)]);
        match value {
            Value::Uint(v) => match column.proto_type {
                ProtoType::Uint64 | ProtoType::Int64 => {
                    if self.writer.has_room(MAX_U64_DIGITS + 2) {
                        self.writer.push(b'"');
                        self.writer.put_u64(v);
                        self.writer.push(b'"');
                    }
                }
                ProtoType::Enum(e) => match e.name_of(v) {
                    Some(name) => {
                        if self.writer.has_room(name.len() + 2) {
                            self.writer.push(b'"');
                            self.writer.extend_from_slice(name.as_bytes());
                            self.writer.push(b'"');
                        }
                    }
                    // proto3 JSON writes an enum number it has no name for as a number.
                    None => self.writer.put_u64(v),
                },
                ProtoType::Uint32 | ProtoType::String | ProtoType::Bytes => self.writer.put_u64(v),
            },
            Value::Str(s) => {
                // Escaping at most sextuples a byte (`\u00XX`).
                if self.writer.has_room(s.len() * 6 + 2) {
                    write_json_string(self.writer, s);
                }
            }
            Value::Addr(a) => match (column.kind, a) {
                (FieldKind::AddrSlot, _) => self.write_base64(&address_slot(a)),
                (_, IpAddr::V4(v4)) => self.write_base64(&v4.octets()),
                (_, IpAddr::V6(v6)) => self.write_base64(&v6.octets()),
            },
        }
    }
}

impl ProtoJsonFields<'_, '_> {
    /// Writes `bytes` as a quoted standard base64 string (proto3 JSON's bytes).
    #[inline]
    fn write_base64(&mut self, bytes: &[u8]) {
        self.writer.write_with(MAX_ADDRESS_BASE64, |w| {
            w[0] = b'"';
            // 16 bytes are 24 characters: the window always holds them.
            let n = base64::engine::general_purpose::STANDARD
                .encode_slice(bytes, &mut w[1..MAX_ADDRESS_BASE64 - 1])
                .unwrap_or(0);
            w[1 + n] = b'"';
            n + 2
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::StreamFormat;
    use std::sync::Arc;

    fn encode(schema: RecordSchema, record: &Record) -> String {
        let mut out = Vec::new();
        ProtoJson::new(schema).encode(record, &mut out);
        String::from_utf8(out).unwrap()
    }

    fn sample() -> Record {
        Record {
            timestamp_ns: Some(1_723_455_072_123_456_789),
            hostname: Some(Arc::from("h\"1")),
            idiag_sport: Some(443),
            idiag_src: Some("127.0.0.1".parse().unwrap()),
            cong: Some(crate::record::ShortName::from_c_bytes(b"cubic")),
            tcpi_rtt: Some(0),
            ..Record::default()
        }
    }

    /// Our schema: every number is a uint64, so a string; addresses are 4
    /// bytes of base64; names are lowerCamelCase; absent fields are left out.
    #[test]
    fn xtcp2_record_follows_proto3_json() {
        assert_eq!(
            encode(RecordSchema::Xtcp2, &sample()),
            ",{\"timestampNs\":\"1723455072123456789\",\"hostname\":\"h\\\"1\",\"idiagSport\":\"443\",\
             \"idiagSrc\":\"fwAAAQ==\",\"cong\":\"cubic\",\"tcpiRtt\":\"0\"}"
        );
        assert_eq!(encode(RecordSchema::Xtcp2, &Record::default()), ",{}");
    }

    /// The Go schema: uint32 numbers, int64 as strings, the 16-byte address
    /// slot, the enum by name.
    #[test]
    fn go_record_follows_proto3_json() {
        let text = encode(RecordSchema::FlatRecordV1, &sample());
        assert_eq!(
            text,
            format!(
                ",{{\"schemaVersion\":1,\"daemonVersion\":\"{}\",\"timestampNs\":\"1723455072123456789\",\
                 \"hostname\":\"h\\\"1\",\"inetDiagMsgSocketSourcePort\":443,\
                 \"inetDiagMsgSocketSource\":\"fwAAAQAAAAAAAAAAAAAAAA==\",\"tcpInfoRtt\":0,\
                 \"congestionAlgorithmString\":\"cubic\",\"congestionAlgorithmEnum\":\"CONGESTION_ALGORITHM_CUBIC\"}}",
                crate::record::go_v1::DAEMON_VERSION
            )
        );
    }

    /// A standalone envelope is one `Envelope` object and a newline.
    #[test]
    fn standalone_envelope_is_one_line() {
        let mut enc = StreamFormat::in_schema("protoJson", RecordSchema::Xtcp2, &[])
            .unwrap()
            .encoder();
        let mut out = b"before".to_vec();
        enc.begin_envelope(&mut out);
        for port in [1u16, 2] {
            let record = Record {
                idiag_dport: Some(port),
                ..Record::default()
            };
            enc.encode(&record, &mut out);
        }
        enc.end_envelope(&mut out);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "before{\"records\":[{\"idiagDport\":\"1\"},{\"idiagDport\":\"2\"}]}\n"
        );
    }
}
