//! csv and tsv: one line per record, the `-columns` in their order (every
//! field by default), humanised for people and spreadsheets:
//!
//! - `timestamp_ns` as RFC 3339 UTC with nanoseconds;
//! - `idiag_state` / `tcpi_state` as the `ss` state name (`ESTAB`, `LISTEN`);
//! - `idiag_family` as `AF_INET` / `AF_INET6`;
//! - addresses as text; `cong` is already a name; an enum is its value's name;
//! - an absent field is an empty cell.
//!
//! The same rendering applies to the Go record's columns of the same kinds
//! (`--record-schema xtcp_flat_record.v1`), under its names.
//!
//! Quoting: csv follows RFC 4180 (a cell holding a comma, quote, CR or LF
//! is wrapped in quotes, inner quotes doubled); tsv cannot quote, so it uses
//! the backslash escapes (`\t`, `\n`, `\r`, `\\`) that ClickHouse's
//! TabSeparated and PostgreSQL's COPY text read. Lines end with LF.
//!
//! The header line is not part of any envelope (see [`super::StreamFormat::header`]).

use std::sync::Arc;

use super::text::{write_ip, write_rfc3339_ns, write_u64};
use super::{Encoder, Format, FormatSpec, Framing};
use crate::record::{tcp_state_name, Column, FieldKind, FieldVisitor, ProtoType, Record, RecordSchema, Value};

/// `AF_INET` from `<sys/socket.h>`.
const AF_INET: u64 = 2;
/// `AF_INET6` from `<sys/socket.h>`.
const AF_INET6: u64 = 10;
/// Marks a schema column that is not an output column.
const NOT_A_COLUMN: u32 = u32::MAX;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Separator {
    Comma,
    Tab,
}

impl Separator {
    fn byte(self) -> u8 {
        match self {
            Separator::Comma => b',',
            Separator::Tab => b'\t',
        }
    }
}

/// The header line: column names joined by the separator.
pub(crate) fn header_line(columns: &[&'static Column], separator: Separator) -> Vec<u8> {
    let mut line = Vec::new();
    for (i, c) in columns.iter().enumerate() {
        if i > 0 {
            line.push(separator.byte());
        }
        // Column names are identifiers: never quoted.
        line.extend_from_slice(c.name.as_bytes());
    }
    line.push(b'\n');
    line
}

/// The csv and tsv encoder.
/// `--marshal csv`.
pub(crate) static CSV_SPEC: FormatSpec = FormatSpec {
    name: "csv",
    aliases: &[],
    content_type: "text/csv; charset=utf-8; header=present",
    framing: Framing::Concatenated,
    summary: "RFC 4180 comma-separated values, a header line per stream, `--columns` selects and orders",
    header: Some(|columns| header_line(columns, Separator::Comma)),
    encoder: |stream| {
        Box::new(Delimited::new(
            Separator::Comma,
            stream.schema(),
            stream.columns_shared(),
            stream.header_shared(),
        ))
    },
};

/// `--marshal tsv`.
pub(crate) static TSV_SPEC: FormatSpec = FormatSpec {
    name: "tsv",
    aliases: &[],
    content_type: "text/tab-separated-values; charset=utf-8",
    framing: Framing::Concatenated,
    summary: "tab-separated values, a header line per stream, `--columns` selects and orders",
    header: Some(|columns| header_line(columns, Separator::Tab)),
    encoder: |stream| {
        Box::new(Delimited::new(
            Separator::Tab,
            stream.schema(),
            stream.columns_shared(),
            stream.header_shared(),
        ))
    },
};

pub(crate) struct Delimited {
    separator: Separator,
    schema: RecordSchema,
    column_count: usize,
    /// Output position of each schema column (by [`Column::index`]), or
    /// [`NOT_A_COLUMN`].
    column_of_index: Vec<u32>,
    /// Columns are in schema order (a subsequence of its columns, the
    /// default), so cells can be written as the record is walked.
    in_record_order: bool,
    /// For other orders: each column's cell text, as a range of `scratch`.
    cells: Vec<(u32, u32)>,
    scratch: Vec<u8>,
    header: Arc<[u8]>,
}

impl Delimited {
    pub fn new(separator: Separator, schema: RecordSchema, columns: Arc<[&'static Column]>, header: Arc<[u8]>) -> Self {
        let mut column_of_index = vec![NOT_A_COLUMN; schema.columns().len()];
        for (i, c) in columns.iter().enumerate() {
            column_of_index[usize::from(c.index)] = i as u32;
        }
        let in_record_order = columns.windows(2).all(|w| w[0].index < w[1].index);
        Delimited {
            separator,
            schema,
            column_count: columns.len(),
            column_of_index,
            in_record_order,
            cells: vec![(0, 0); columns.len()],
            scratch: Vec::new(),
            header,
        }
    }
}

impl Encoder for Delimited {
    fn format(&self) -> Format {
        match self.separator {
            Separator::Comma => Format::Csv,
            Separator::Tab => Format::Tsv,
        }
    }

    fn schema(&self) -> RecordSchema {
        self.schema
    }

    fn encode(&mut self, record: &Record, out: &mut Vec<u8>) {
        let sep = self.separator.byte();
        if self.in_record_order {
            let mut writer = InOrderCells {
                out,
                separator: self.separator,
                column_of_index: &self.column_of_index,
                started: 0,
            };
            self.schema.visit(record, &mut writer);
            for i in writer.started..self.column_count {
                if i > 0 {
                    out.push(sep);
                }
            }
        } else {
            self.scratch.clear();
            self.cells.fill((0, 0));
            let mut writer = ScratchCells {
                scratch: &mut self.scratch,
                cells: &mut self.cells,
                separator: self.separator,
                column_of_index: &self.column_of_index,
            };
            self.schema.visit(record, &mut writer);
            for (i, &(start, end)) in self.cells.iter().enumerate() {
                if i > 0 {
                    out.push(sep);
                }
                out.extend_from_slice(&self.scratch[start as usize..end as usize]);
            }
        }
        out.push(b'\n');
    }

    /// A standalone output opens with the header line.
    fn begin_envelope(&mut self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.header);
    }
}

struct InOrderCells<'a> {
    out: &'a mut Vec<u8>,
    separator: Separator,
    column_of_index: &'a [u32],
    /// Columns whose cell has been started (separator written).
    started: usize,
}

impl FieldVisitor for InOrderCells<'_> {
    // Inlined into Record::visit: a call per field costs more than the
    // field's encoding (the marshal bench doubles with this).
    #[inline(always)]
    fn field(&mut self, meta: &'static Column, value: Value<'_>) {
        let column = self.column_of_index[usize::from(meta.index)];
        if column == NOT_A_COLUMN {
            return;
        }
        let column = column as usize;
        // Empty cells for the absent columns before this one.
        for i in self.started..=column {
            if i > 0 {
                self.out.push(self.separator.byte());
            }
        }
        self.started = column + 1;
        write_cell(self.out, meta, value, self.separator);
    }
}

struct ScratchCells<'a> {
    scratch: &'a mut Vec<u8>,
    cells: &'a mut [(u32, u32)],
    separator: Separator,
    column_of_index: &'a [u32],
}

impl FieldVisitor for ScratchCells<'_> {
    // Inlined into Record::visit: a call per field costs more than the
    // field's encoding (the marshal bench doubles with this).
    #[inline(always)]
    fn field(&mut self, meta: &'static Column, value: Value<'_>) {
        let column = self.column_of_index[usize::from(meta.index)];
        if column == NOT_A_COLUMN {
            return;
        }
        let start = self.scratch.len();
        write_cell(self.scratch, meta, value, self.separator);
        // A record's cells are a few KiB at most: offsets fit u32.
        self.cells[column as usize] = (start as u32, self.scratch.len() as u32);
    }
}

/// Writes one humanised cell.
#[inline]
fn write_cell(out: &mut Vec<u8>, meta: &Column, value: Value<'_>, separator: Separator) {
    match value {
        Value::Uint(v) => match meta.kind {
            FieldKind::TimestampNs => write_rfc3339_ns(out, v),
            FieldKind::TcpState => out.extend_from_slice(tcp_state_name(v).as_bytes()),
            FieldKind::Family => match v {
                AF_INET => out.extend_from_slice(b"AF_INET"),
                AF_INET6 => out.extend_from_slice(b"AF_INET6"),
                other => write_u64(out, other),
            },
            FieldKind::Enum => match meta.proto_type {
                ProtoType::Enum(e) => match e.name_of(v) {
                    Some(name) => out.extend_from_slice(name.as_bytes()),
                    None => write_u64(out, v),
                },
                _ => write_u64(out, v),
            },
            FieldKind::Uint | FieldKind::Str | FieldKind::Addr | FieldKind::AddrSlot => write_u64(out, v),
        },
        Value::Str(s) => match separator {
            Separator::Comma => write_csv_text(out, s),
            Separator::Tab => write_tsv_text(out, s),
        },
        Value::Addr(a) => write_ip(out, a),
    }
}

/// RFC 4180: quote a cell holding a comma, quote, CR or LF; double inner quotes.
pub(crate) fn write_csv_text(out: &mut Vec<u8>, s: &str) {
    let bytes = s.as_bytes();
    if !bytes.iter().any(|&b| matches!(b, b',' | b'"' | b'\r' | b'\n')) {
        out.extend_from_slice(bytes);
        return;
    }
    out.push(b'"');
    for &b in bytes {
        if b == b'"' {
            out.push(b'"');
        }
        out.push(b);
    }
    out.push(b'"');
}

/// TabSeparated escapes: a tab, newline, CR or backslash becomes `\t`, `\n`, `\r`, `\\`.
pub(crate) fn write_tsv_text(out: &mut Vec<u8>, s: &str) {
    for &b in s.as_bytes() {
        match b {
            b'\t' => out.extend_from_slice(b"\\t"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\\' => out.extend_from_slice(b"\\\\"),
            _ => out.push(b),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::StreamFormat;

    fn encode(marshal: &str, columns: &[&str], record: &Record) -> String {
        let columns: Vec<String> = columns.iter().map(|s| s.to_string()).collect();
        let mut enc = StreamFormat::new(marshal, &columns).unwrap().encoder();
        let mut out = Vec::new();
        enc.encode(record, &mut out);
        String::from_utf8(out).unwrap()
    }

    fn sample() -> Record {
        Record {
            timestamp_ns: Some(1_723_455_072_123_456_789),
            label: Some(Arc::from("rack 7, \"blue\"")),
            idiag_family: Some(10),
            idiag_state: Some(10),
            idiag_src: Some("2001:db8::1".parse().unwrap()),
            cong: Some(crate::record::ShortName::from_c_bytes(b"cubic\0")),
            tcpi_rtt: Some(1500),
            ..Record::default()
        }
    }

    /// Humanised cells: RFC 3339 time, state and family names, text address, quoted label.
    #[test]
    fn csv_cells_are_humanised_and_quoted() {
        let line = encode(
            "csv",
            &[
                "timestamp_ns",
                "label",
                "idiag_family",
                "idiag_state",
                "idiag_src",
                "cong",
                "tcpi_rtt",
            ],
            &sample(),
        );
        assert_eq!(
            line,
            "2024-08-12T09:31:12.123456789Z,\"rack 7, \"\"blue\"\"\",AF_INET6,LISTEN,2001:db8::1,cubic,1500\n"
        );
    }

    /// Columns in any order, and absent fields, give the right empty cells.
    #[test]
    fn columns_pick_and_order_cells() {
        let rec = sample();
        assert_eq!(
            encode("csv", &["tcpi_rtt", "idiag_dport", "idiag_state"], &rec),
            "1500,,LISTEN\n"
        );
        assert_eq!(
            encode("csv", &["idiag_dport", "idiag_state", "tcpi_snd_cwnd"], &rec),
            ",LISTEN,\n"
        );
        assert_eq!(encode("csv", &["idiag_dport"], &rec), "\n");
    }

    /// The default (every column) writes one cell per field, empty when absent.
    #[test]
    fn default_columns_cover_every_field() {
        let line = encode("csv", &[], &Record::default());
        assert_eq!(line.len(), crate::record::FIELDS.len() - 1 + 1, "{line:?}");
        assert!(line.bytes().take(line.len() - 1).all(|b| b == b','));
    }

    /// tsv escapes tabs, newlines and backslashes instead of quoting.
    #[test]
    fn tsv_escapes() {
        let rec = Record {
            label: Some(Arc::from("a\tb\nc\\d, \"e\"")),
            idiag_state: Some(1),
            ..Record::default()
        };
        assert_eq!(
            encode("tsv", &["idiag_state", "label"], &rec),
            "ESTAB\ta\\tb\\nc\\\\d, \"e\"\n"
        );
    }

    /// In-order and reordered column paths render the same cells.
    #[test]
    fn reordered_columns_match_in_order_cells() {
        let rec = Record {
            label: Some(Arc::from("blue")),
            ..sample()
        };
        let in_order = encode(
            "csv",
            &["timestamp_ns", "label", "idiag_state", "idiag_dport", "tcpi_rtt"],
            &rec,
        );
        let reversed = encode(
            "csv",
            &["tcpi_rtt", "idiag_dport", "idiag_state", "label", "timestamp_ns"],
            &rec,
        );
        let mut cells: Vec<&str> = in_order.trim_end().split(',').collect();
        cells.reverse();
        assert_eq!(reversed.trim_end().split(',').collect::<Vec<_>>(), cells);
        assert_eq!(reversed, "1500,,LISTEN,blue,2024-08-12T09:31:12.123456789Z\n");
    }
}
