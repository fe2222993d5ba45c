//! JSON Lines: one object per record, kernel field names, absent fields
//! omitted, addresses as text, numbers as JSON numbers (state and family
//! stay numeric: this is the machine format).

use super::text::{write_ip, write_u64};
use super::{field_tables, Encoder, FieldTables, Format};
use crate::record::{FieldMeta, FieldVisitor, Record, Value};

pub struct JsonLines {
    tables: &'static FieldTables,
}

impl JsonLines {
    pub fn new() -> Self {
        JsonLines { tables: field_tables() }
    }
}

impl Default for JsonLines {
    fn default() -> Self {
        Self::new()
    }
}

impl Encoder for JsonLines {
    fn format(&self) -> Format {
        Format::Jsonl
    }

    #[inline]
    fn encode(&mut self, record: &Record, out: &mut Vec<u8>) {
        out.push(b'{');
        let mut writer = JsonFields {
            out,
            keys: &self.tables.json_keys,
            first: true,
        };
        record.visit(&mut writer);
        out.extend_from_slice(b"}\n");
    }
}

struct JsonFields<'a> {
    out: &'a mut Vec<u8>,
    keys: &'a [super::text::FixedText],
    first: bool,
}

impl FieldVisitor for JsonFields<'_> {
    // Inlined into Record::visit: a call per field costs more than the
    // field's encoding (the marshal bench doubles with this).
    #[inline(always)]
    fn field(&mut self, meta: &'static FieldMeta, value: Value<'_>) {
        if !self.first {
            self.out.push(b',');
        }
        self.first = false;
        // Field names are Rust identifiers: the table holds `"name":` ready.
        self.keys[meta.tag as usize].append_to(self.out);
        match value {
            Value::Uint(v) => write_u64(self.out, v),
            Value::Str(s) => write_json_string(self.out, s),
            Value::Addr(a) => {
                self.out.push(b'"');
                write_ip(self.out, a);
                self.out.push(b'"');
            }
        }
    }
}

/// Writes `s` as a JSON string with the escapes RFC 8259 requires.
pub fn write_json_string(out: &mut Vec<u8>, s: &str) {
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
        JsonLines::new().encode(&rec, &mut out);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "{\"hostname\":\"h\\\"1\",\"idiag_sport\":22,\"idiag_src\":\"::1\",\"tcpi_rtt\":1500}\n"
        );
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
