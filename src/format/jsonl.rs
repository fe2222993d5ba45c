//! JSON Lines: one object per record, kernel field names, absent fields
//! omitted, addresses as text.

use std::io::Write;

use super::Encoder;
use crate::record::{FieldMeta, FieldVisitor, Record, Value};

pub struct JsonLines;

impl Encoder for JsonLines {
    fn content_type(&self) -> &'static str {
        "application/x-ndjson"
    }

    fn encode(&mut self, record: &Record, out: &mut Vec<u8>) {
        out.push(b'{');
        let mut writer = JsonFields { out, first: true };
        record.visit(&mut writer);
        out.extend_from_slice(b"}\n");
    }
}

struct JsonFields<'a> {
    out: &'a mut Vec<u8>,
    first: bool,
}

impl FieldVisitor for JsonFields<'_> {
    #[inline]
    fn field(&mut self, meta: &'static FieldMeta, value: Value<'_>) {
        if !self.first {
            self.out.push(b',');
        }
        self.first = false;
        self.out.push(b'"');
        // Field names are Rust identifiers: no escaping needed.
        self.out.extend_from_slice(meta.name.as_bytes());
        self.out.extend_from_slice(b"\":");
        match value {
            Value::Uint(v) => {
                self.out.extend_from_slice(itoa::Buffer::new().format(v).as_bytes());
            }
            Value::Str(s) => write_json_string(self.out, s),
            Value::Addr(a) => {
                self.out.push(b'"');
                // Writing to a Vec cannot fail.
                let _ = write!(self.out, "{a}");
                self.out.push(b'"');
            }
        }
    }
}

/// Writes `s` as a JSON string with the escapes RFC 8259 requires.
pub fn write_json_string(out: &mut Vec<u8>, s: &str) {
    out.push(b'"');
    for &b in s.as_bytes() {
        match b {
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\t' => out.extend_from_slice(b"\\t"),
            0..=0x1f => {
                let _ = write!(out, "\\u{b:04x}");
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
        JsonLines.encode(&rec, &mut out);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "{\"hostname\":\"h\\\"1\",\"idiag_sport\":22,\"idiag_src\":\"::1\",\"tcpi_rtt\":1500}\n"
        );
    }
}
