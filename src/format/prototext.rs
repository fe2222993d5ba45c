//! protoText: protobuf's text format of each envelope, as `protoc
//! --decode`, C++'s `DebugString` and Go's `prototext` print it: every
//! record is one `records { ... }` block (`row { ... }` in
//! `xtcp_flat_record.v1`), a field per line as `name: value`, indented by
//! two spaces.
//!
//! Names are the `.proto` field names; integers are decimal; enums are
//! their value's name; strings and bytes are double-quoted with C escapes
//! (`\n`, `\"`, `\\`, three-digit octal for other control bytes, and for
//! every byte of a `bytes` field outside printable ASCII); absent fields
//! are left out.
//!
//! In the text format a repeated field is simply written again, so the
//! records of an envelope concatenated are the envelope, and any number of
//! envelopes concatenated (a file, a stream) is still one valid `Envelope`
//! holding every record: `text_format.Parse` reads a whole output at once.

use std::net::IpAddr;

use super::text::{write_growing, FixedText, SliceWriter, TextSink, FIXED_TEXT_WIDTH, MAX_U64_DIGITS};
use super::{field_tables, Encoder, Format, FormatSpec, Framing};
use crate::record::go_v1::address_slot;
use crate::record::{Column, FieldKind, FieldVisitor, ProtoType, Record, RecordSchema, Value};

/// Room reserved for the string fields of a record before the first retry.
const STRING_ROOM: usize = 1024;
/// Longest escaped address: 16 bytes of 4-character octal escapes, quoted.
const MAX_ADDRESS_TEXT: usize = 16 * 4 + 2;

/// `--marshal protoText`.
pub static SPEC: FormatSpec = FormatSpec {
    name: "protoText",
    aliases: &["prototext"],
    content_type: "text/plain; charset=utf-8",
    framing: Framing::Concatenated,
    summary: "protobuf's text format of each envelope: a `records { ... }` block per record (`row` in `xtcp_flat_record.v1`), a field per line",
    header: None,
    encoder: |stream| Box::new(ProtoText::new(stream.schema())),
};

pub struct ProtoText {
    schema: RecordSchema,
    keys: &'static [FixedText],
    /// `records {\n` or `row {\n`: what opens every record.
    open: &'static [u8],
    /// A record is written here first, then copied out in one piece.
    scratch: Vec<u8>,
}

impl ProtoText {
    pub fn new(schema: RecordSchema) -> Self {
        let open: &'static [u8] = match schema.envelope_field().0 {
            "records" => b"records {\n",
            _ => b"row {\n",
        };
        let widest = schema.columns().len() * (FIXED_TEXT_WIDTH + MAX_ADDRESS_TEXT + 1) + STRING_ROOM;
        ProtoText {
            schema,
            keys: &field_tables(schema).proto_text_keys,
            open,
            scratch: vec![0; widest],
        }
    }
}

impl Encoder for ProtoText {
    fn format(&self) -> Format {
        Format::ProtoText
    }

    fn schema(&self) -> RecordSchema {
        self.schema
    }

    #[inline]
    fn encode(&mut self, record: &Record, out: &mut Vec<u8>) {
        let keys = self.keys;
        let schema = self.schema;
        let open = self.open;
        let text = write_growing(&mut self.scratch, |writer| {
            writer.extend_from_slice(open);
            schema.visit(record, &mut ProtoTextFields { writer, keys });
            writer.extend_from_slice(b"}\n");
        });
        out.extend_from_slice(text);
    }
}

struct ProtoTextFields<'w, 'b> {
    writer: &'w mut SliceWriter<'b>,
    keys: &'w [FixedText],
}

impl FieldVisitor for ProtoTextFields<'_, '_> {
    // Inlined into the schema's walk: a call per field costs more than the
    // field's encoding.
    #[inline(always)]
    fn field(&mut self, column: &'static Column, value: Value<'_>) {
        self.writer.put_fixed(&self.keys[usize::from(column.index)]);
        match value {
            Value::Uint(v) => match column.proto_type {
                ProtoType::Enum(e) => match e.name_of(v) {
                    Some(name) => {
                        if self.writer.has_room(name.len()) {
                            self.writer.extend_from_slice(name.as_bytes());
                        }
                    }
                    None => self.writer.put_u64(v),
                },
                _ => {
                    if self.writer.has_room(MAX_U64_DIGITS) {
                        self.writer.put_u64(v);
                    }
                }
            },
            Value::Str(s) => {
                if self.writer.has_room(s.len() * 4 + 2) {
                    write_quoted(self.writer, s.as_bytes(), false);
                }
            }
            Value::Addr(a) => {
                if self.writer.has_room(MAX_ADDRESS_TEXT) {
                    match (column.kind, a) {
                        (FieldKind::AddrSlot, _) => write_quoted(self.writer, &address_slot(a), true),
                        (_, IpAddr::V4(v4)) => write_quoted(self.writer, &v4.octets(), true),
                        (_, IpAddr::V6(v6)) => write_quoted(self.writer, &v6.octets(), true),
                    }
                }
            }
        }
        self.writer.push(b'\n');
    }
}

/// Writes `bytes` double-quoted with the text format's C escapes. A
/// `bytes` field escapes everything outside printable ASCII; a `string`
/// field keeps its UTF-8 as it is (the parsers take both).
pub(crate) fn write_quoted<S: TextSink + ?Sized>(out: &mut S, bytes: &[u8], binary: bool) {
    out.push(b'"');
    for &b in bytes {
        match b {
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\t' => out.extend_from_slice(b"\\t"),
            0x20..=0x7e => out.push(b),
            0x80..=0xff if !binary => out.push(b),
            _ => out.extend_from_slice(&[b'\\', b'0' + (b >> 6), b'0' + ((b >> 3) & 7), b'0' + (b & 7)]),
        }
    }
    out.push(b'"');
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn encode(schema: RecordSchema, record: &Record) -> String {
        let mut out = Vec::new();
        ProtoText::new(schema).encode(record, &mut out);
        String::from_utf8(out).unwrap()
    }

    /// A record is a block of `name: value` lines; bytes are octal-escaped,
    /// strings keep their UTF-8 and escape quotes and control characters.
    #[test]
    fn record_is_a_block_of_fields() {
        let record = Record {
            label: Some(Arc::from("r\u{e9}\"\n")),
            idiag_sport: Some(443),
            idiag_src: Some("127.0.0.1".parse().unwrap()),
            cong: Some(crate::record::ShortName::from_c_bytes(b"dctcp")),
            ..Record::default()
        };
        assert_eq!(
            encode(RecordSchema::Xtcp2, &record),
            "records {\n  label: \"r\u{e9}\\\"\\n\"\n  idiag_sport: 443\n  idiag_src: \"\\177\\000\\000\\001\"\n  cong: \"dctcp\"\n}\n"
        );
        let go = encode(RecordSchema::FlatRecordV1, &record);
        assert!(go.starts_with("row {\n  schema_version: 1\n"), "{go}");
        assert!(
            go.contains("\n  inet_diag_msg_socket_source: \"\\177\\000\\000\\001\\000\\000\\000\\000\\000\\000\\000\\000\\000\\000\\000\\000\"\n"),
            "{go}"
        );
        assert!(
            go.contains("\n  congestion_algorithm_enum: CONGESTION_ALGORITHM_DCTCP\n"),
            "{go}"
        );
        assert_eq!(encode(RecordSchema::Xtcp2, &Record::default()), "records {\n}\n");
    }
}
