//! JSON Lines: one object per record, the schema's column names (the
//! kernel's, or the Go record's proto3 JSON names), absent fields omitted,
//! addresses as text, numbers as JSON numbers (state, family and enums stay
//! numeric: this is the machine format).

use super::text::{
    write_growing, write_ip, FixedText, SliceWriter, TextSink, FIXED_TEXT_WIDTH, MAX_IP_TEXT, MAX_U64_DIGITS,
};
use super::{field_tables, Encoder, FieldTables, Format, FormatSpec, Framing};
use crate::record::{Column, FieldKind, FieldVisitor, Record, RecordSchema, Value};

/// Room reserved for the string fields of a record before the first retry
/// (host name, labels, namespace name, congestion name: short in practice).
const STRING_ROOM: usize = 1024;

/// `--marshal jsonl`.
pub static SPEC: FormatSpec = FormatSpec {
    name: "jsonl",
    aliases: &["json"],
    content_type: "application/x-ndjson",
    framing: Framing::Concatenated,
    summary: "JSON Lines: one object per record, the schema's field names, absent fields omitted",
    header: None,
    encoder: |stream| Box::new(JsonLines::new(stream.schema())),
};

pub(crate) struct JsonLines {
    schema: RecordSchema,
    tables: &'static FieldTables,
    /// A record is written here first, then copied to the output in one
    /// piece (see [`SliceWriter`] for why); sized for every field at its
    /// widest and grown when long strings do not fit.
    scratch: Vec<u8>,
}

impl JsonLines {
    pub fn new(schema: RecordSchema) -> Self {
        JsonLines {
            schema,
            tables: field_tables(schema),
            scratch: vec![0; widest_record(schema)],
        }
    }
}

impl Default for JsonLines {
    fn default() -> Self {
        Self::new(RecordSchema::Xtcp2)
    }
}

/// Bytes of a record with every column present at its widest value, plus
/// [`STRING_ROOM`] for string contents and the closing `}\n`.
fn widest_record(schema: RecordSchema) -> usize {
    let fields: usize = schema
        .columns()
        .iter()
        .map(|f| {
            FIXED_TEXT_WIDTH
                + match f.kind {
                    FieldKind::Addr | FieldKind::AddrSlot => MAX_IP_TEXT + 2,
                    FieldKind::Str => 2,
                    _ => MAX_U64_DIGITS,
                }
        })
        .sum();
    fields + STRING_ROOM + 2
}

impl Encoder for JsonLines {
    fn format(&self) -> Format {
        Format::Jsonl
    }

    fn schema(&self) -> RecordSchema {
        self.schema
    }

    #[inline]
    fn encode(&mut self, record: &Record, out: &mut Vec<u8>) {
        let keys = &self.tables.json_keys;
        let schema = self.schema;
        let text = write_growing(&mut self.scratch, |writer| {
            schema.visit(record, &mut JsonFields { writer, keys });
            if writer.is_empty() {
                writer.push(b'{');
            }
            writer.extend_from_slice(b"}\n");
        });
        // Every key starts with its comma; the first one becomes the `{`.
        if let Some(first) = text.first_mut() {
            *first = b'{';
        }
        out.extend_from_slice(text);
    }
}

struct JsonFields<'w, 'b> {
    writer: &'w mut SliceWriter<'b>,
    keys: &'w [FixedText],
}

impl FieldVisitor for JsonFields<'_, '_> {
    // Inlined into Record::visit: a call per field costs more than the
    // field's encoding (the marshal bench doubles with this).
    #[inline(always)]
    fn field(&mut self, meta: &'static Column, value: Value<'_>) {
        // Column names are identifiers: the table holds `,"name":` ready.
        self.writer.put_fixed(&self.keys[usize::from(meta.index)]);
        match value {
            Value::Uint(v) => self.writer.put_u64(v),
            Value::Str(s) => {
                // Escaping at most sextuples a byte (`\u00XX`).
                if self.writer.has_room(s.len() * 6 + 2) {
                    write_json_string(self.writer, s);
                }
            }
            Value::Addr(a) => {
                if self.writer.has_room(MAX_IP_TEXT + 2) {
                    self.writer.push(b'"');
                    write_ip(self.writer, a);
                    self.writer.push(b'"');
                }
            }
        }
    }
}

/// Writes `s` as a JSON string with the escapes RFC 8259 requires.
pub(crate) fn write_json_string<S: TextSink + ?Sized>(out: &mut S, s: &str) {
    out.push(b'"');
    let bytes = s.as_bytes();
    // Host names, labels and congestion names almost never need escaping.
    if !bytes.iter().any(|&b| b < 0x20 || b == b'"' || b == b'\\') {
        out.extend_from_slice(bytes);
        out.push(b'"');
        return;
    }
    for &b in bytes {
        match b {
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\t' => out.extend_from_slice(b"\\t"),
            0..=0x1f => {
                const HEX: &[u8; 16] = b"0123456789abcdef";
                out.extend_from_slice(b"\\u00");
                out.push(HEX[usize::from(b >> 4)]);
                out.push(HEX[usize::from(b & 0xf)]);
            }
            _ => out.push(b),
        }
    }
    out.push(b'"');
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    /// Present fields are written with kernel names; absent ones are omitted;
    /// strings are escaped.
    #[test]
    fn writes_present_fields_only() {
        let rec = Record {
            hostname: Some(Arc::from("h\"1")),
            idiag_sport: Some(22),
            idiag_src: Some("::1".parse().unwrap()),
            tcpi_rtt: Some(1500),
            ..Record::default()
        };
        let mut out = Vec::new();
        JsonLines::default().encode(&rec, &mut out);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "{\"hostname\":\"h\\\"1\",\"idiag_sport\":22,\"idiag_src\":\"::1\",\"tcpi_rtt\":1500}\n"
        );
    }

    /// Strings longer than the scratch buffer's string room grow it and the
    /// record is still written whole; an empty record is `{}`.
    #[test]
    fn long_strings_grow_the_buffer() {
        let long: String = "a\u{1}\"".repeat(2000);
        let rec = Record {
            hostname: Some(Arc::from(long.as_str())),
            label: Some(Arc::from(long.as_str())),
            idiag_sport: Some(u16::MAX),
            idiag_dst: Some("2001:db8::ffff:1".parse().unwrap()),
            tcpi_bytes_acked: Some(u64::MAX),
            ..Record::default()
        };
        let mut encoder = JsonLines::default();
        let mut out = Vec::new();
        encoder.encode(&rec, &mut out);
        encoder.encode(&Record::default(), &mut out);
        let text = String::from_utf8(out).unwrap();
        let mut lines = text.lines();
        let parsed: serde_json::Value = serde_json::from_str(lines.next().unwrap()).unwrap();
        assert_eq!(parsed["hostname"], long.as_str());
        assert_eq!(parsed["label"], long.as_str());
        assert_eq!(parsed["idiag_sport"], 65535);
        assert_eq!(parsed["idiag_dst"], "2001:db8::ffff:1");
        assert_eq!(parsed["tcpi_bytes_acked"], u64::MAX);
        assert_eq!(parsed.as_object().unwrap().len(), 5);
        assert_eq!(lines.next(), Some("{}"));
        assert_eq!(lines.next(), None);
    }

    /// Control characters become \u00XX escapes that a JSON parser turns back into the original.
    #[test]
    fn control_characters_round_trip() {
        let mut out = Vec::new();
        write_json_string(&mut out, "a\u{1}b\tc\\");
        assert_eq!(out, b"\"a\\u0001b\\tc\\\\\"");
        let parsed: String = serde_json::from_slice(&out).unwrap();
        assert_eq!(parsed, "a\u{1}b\tc\\");
    }
}
