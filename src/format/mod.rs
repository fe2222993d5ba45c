//! Format: records → bytes, one encoder per `-marshal` value.
//!
//! An encoder appends one record at a time to a caller-owned buffer (the
//! envelope being filled), so encoding never allocates per record. Every
//! format's records are self-delimiting, so an envelope is the
//! concatenation of its records plus what [`Frame`] adds when the envelope
//! is sealed: protobufList's length prefix, protoJson's enclosing object.
//!
//! Every encoder writes the columns of a record schema
//! ([`RecordSchema`], `--record-schema`): it walks a record with
//! [`RecordSchema::visit`] and takes each column's bytes (keys, names)
//! from that schema's [`FieldTables`], so our record and the Go daemon's go
//! through the same code.
//!
//! What opens an output stream (the CSV/TSV header line) is not part of any
//! envelope: [`StreamFormat::header`] hands it to the sink, which writes it
//! once per file, connection or HTTP request.
//!
//! This module must not know about destinations (that is `sink`) nor about
//! netlink (that is `decode`).

pub mod clickhouse;
pub mod csv;
pub mod jsonl;
pub mod msgpack;
pub mod protobuf;
pub mod protojson;
pub mod prototext;
pub mod text;
pub mod writer;

use std::sync::{Arc, OnceLock};

use crate::record::{proto3_json_name, Column, Record, RecordSchema};

/// Longest frame prefix of any format: protoJson's `{"records":` (a u64
/// varint, protobufList's envelope length, is 10). Envelope buffers keep
/// this much headroom so sealing never moves the records.
pub(crate) const MAX_FRAME_PREFIX: usize = 16;

/// How a format turns whole encoded records into one self-contained envelope.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// Records are self-delimiting: an envelope is their concatenation.
    Concatenated,
    /// The varint length of the records goes first: ClickHouse's
    /// protobufList (one `Envelope` message whose rows field repeats records).
    VarintLengthPrefix,
    /// One JSON `Envelope` object on one line, as the Go daemon frames
    /// protoJson: `{"records":[` (`{"row":[` in `xtcp_flat_record.v1`),
    /// the records separated by commas, `]}` and a newline. Each record is
    /// encoded with a leading comma; sealing turns the first into the `[`.
    JsonEnvelope,
}

/// Writes the bytes that open an output stream for the given columns.
pub type HeaderFn = fn(&[&'static Column]) -> Vec<u8>;

/// Everything the program knows about one format, declared once in its
/// module and registered in [`formats!`] below. `--help`, error messages and
/// the table in `docs/outputs.md` are generated from these.
pub struct FormatSpec {
    /// The `-marshal` spelling, also the `format` label of metrics.
    pub name: &'static str,
    /// Other accepted spellings (Go's, lower-case).
    pub aliases: &'static [&'static str],
    /// MIME type for HTTP destinations.
    pub content_type: &'static str,
    pub framing: Framing,
    /// One line for the docs table.
    pub summary: &'static str,
    /// Bytes that open every output stream for these columns (the csv/tsv
    /// header line); `None` for formats that have none.
    pub header: Option<HeaderFn>,
    /// A fresh encoder for this stream's choices.
    pub encoder: fn(&StreamFormat) -> Box<dyn Encoder>,
}

/// The format registry: one line per format, `Variant => module::SPEC`.
/// Generates [`Format`], [`Format::ALL`] and [`Format::spec`].
macro_rules! formats {
    ($($variant:ident => $spec:path),+ $(,)?) => {
        /// An output format (`-marshal`): a handle on its [`FormatSpec`].
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum Format {
            $($variant),+
        }

        impl Format {
            /// Every registered format, in registration order.
            pub const ALL: [Format; [$(stringify!($variant)),+].len()] = [$(Format::$variant),+];

            /// The format's declaration.
            pub fn spec(self) -> &'static FormatSpec {
                match self {
                    $(Format::$variant => &$spec),+
                }
            }
        }
    };
}

formats! {
    Jsonl => jsonl::SPEC,
    Csv => csv::CSV_SPEC,
    Tsv => csv::TSV_SPEC,
    ProtobufList => protobuf::SPEC,
    Msgpack => msgpack::SPEC,
    ProtoJson => protojson::SPEC,
    ProtoText => prototext::SPEC,
}

impl Format {
    /// Parses a `-marshal` value: a registered name or alias.
    pub fn parse(name: &str) -> Result<Format, FormatError> {
        Format::ALL
            .into_iter()
            .find(|f| f.spec().name == name || f.spec().aliases.contains(&name))
            .ok_or_else(|| FormatError::UnknownFormat(name.to_string()))
    }

    /// The `-marshal` spelling, also the `format` label of metrics.
    pub fn name(self) -> &'static str {
        self.spec().name
    }

    /// Every `-marshal` name, comma separated (help and error texts).
    pub fn names() -> String {
        Format::ALL.map(Format::name).join(", ")
    }

    /// MIME type for HTTP destinations.
    pub fn content_type(self) -> &'static str {
        self.spec().content_type
    }

    /// The markdown table of formats in `docs/outputs.md` (a test keeps the
    /// doc equal to this).
    pub fn docs_table() -> String {
        let mut t =
            String::from("| `--marshal` | also | content type | envelope | what it is |\n|---|---|---|---|---|\n");
        for f in Format::ALL {
            let s = f.spec();
            let aliases: Vec<String> = s.aliases.iter().map(|a| format!("`{a}`")).collect();
            let framing = match s.framing {
                Framing::Concatenated => "records concatenated",
                Framing::VarintLengthPrefix => "varint length, then records",
                Framing::JsonEnvelope => "one JSON object per line holding the records",
            };
            t.push_str(&format!(
                "| `{}` | {} | `{}` | {} | {} |\n",
                s.name,
                aliases.join(", "),
                s.content_type,
                framing,
                s.summary
            ));
        }
        t
    }
}

impl std::str::FromStr for Format {
    type Err = FormatError;
    fn from_str(s: &str) -> Result<Format, FormatError> {
        Format::parse(s)
    }
}

impl std::fmt::Display for Format {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The framing of one stream: its format's [`Framing`] for its record
/// schema. It turns the records of an envelope into the self-contained
/// bytes a destination sends (an envelope, a datagram, a standalone output).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frame {
    pub framing: Framing,
    pub schema: RecordSchema,
}

impl Frame {
    pub fn new(format: Format, schema: RecordSchema) -> Frame {
        Frame {
            framing: format.spec().framing,
            schema,
        }
    }

    /// protoJson's opening text: `{"` + the rows field's JSON name + `":[`.
    fn json_open(self) -> &'static str {
        match self.schema {
            RecordSchema::Xtcp2 => "{\"records\":[",
            RecordSchema::FlatRecordV1 => "{\"row\":[",
        }
    }

    /// Bytes the framing adds to `records_len` bytes of records.
    pub(crate) fn overhead(self, records_len: usize) -> usize {
        match self.framing {
            Framing::Concatenated => 0,
            Framing::VarintLengthPrefix => {
                let mut varint = [0u8; MAX_FRAME_PREFIX];
                protobuf::varint_into(records_len as u64, &mut varint)
            }
            // The first record's comma becomes the `[`.
            Framing::JsonEnvelope if records_len > 0 => self.json_open().len() - 1 + JSON_ENVELOPE_CLOSE.len(),
            Framing::JsonEnvelope => self.json_open().len() + JSON_ENVELOPE_CLOSE.len(),
        }
    }

    /// Frames the records that follow [`MAX_FRAME_PREFIX`] bytes of
    /// headroom in `buf`, in place: the prefix goes into the headroom, a
    /// suffix (if any) is appended. Returns where the framed bytes start.
    pub(crate) fn seal_in_place(self, buf: &mut Vec<u8>) -> usize {
        let records_len = buf.len() - MAX_FRAME_PREFIX;
        let prefix: &[u8] = match self.framing {
            Framing::Concatenated => return MAX_FRAME_PREFIX,
            Framing::VarintLengthPrefix => {
                let mut varint = [0u8; MAX_FRAME_PREFIX];
                let n = protobuf::varint_into(records_len as u64, &mut varint);
                buf[MAX_FRAME_PREFIX - n..MAX_FRAME_PREFIX].copy_from_slice(&varint[..n]);
                return MAX_FRAME_PREFIX - n;
            }
            Framing::JsonEnvelope => self.json_open().as_bytes(),
        };
        let start = if records_len > 0 {
            // The first record's leading comma becomes the opening `[`.
            buf[MAX_FRAME_PREFIX] = b'[';
            MAX_FRAME_PREFIX + 1 - prefix.len()
        } else {
            MAX_FRAME_PREFIX - prefix.len()
        };
        let written = if records_len > 0 {
            prefix.len() - 1
        } else {
            prefix.len()
        };
        buf[start..start + written].copy_from_slice(&prefix[..written]);
        buf.extend_from_slice(JSON_ENVELOPE_CLOSE);
        start
    }

    /// Appends `records` (whole encoded records) framed as one envelope.
    pub fn frame(self, records: &[u8], out: &mut Vec<u8>) {
        match self.framing {
            Framing::Concatenated => out.extend_from_slice(records),
            Framing::VarintLengthPrefix => {
                let mut varint = [0u8; MAX_FRAME_PREFIX];
                let n = protobuf::varint_into(records.len() as u64, &mut varint);
                out.extend_from_slice(&varint[..n]);
                out.extend_from_slice(records);
            }
            Framing::JsonEnvelope => {
                out.extend_from_slice(self.json_open().as_bytes());
                // Skip the first record's separator (a comma, or the `[` a
                // seal already put there).
                out.extend_from_slice(records.get(1..).unwrap_or_default());
                out.extend_from_slice(JSON_ENVELOPE_CLOSE);
            }
        }
    }
}

/// What closes a protoJson envelope: the array, the object, the line.
pub(crate) const JSON_ENVELOPE_CLOSE: &[u8] = b"]}\n";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FormatError {
    #[error("unknown --marshal {0:?}; valid: {valid}", valid = Format::names())]
    UnknownFormat(String),
    #[error("unknown --columns name {name:?}; columns are the {schema} record's field names such as {examples} (see docs/record.md)", examples = column_examples(*schema))]
    UnknownColumn { name: String, schema: RecordSchema },
    #[error("--columns names {0:?} twice")]
    DuplicateColumn(String),
}

/// A few column names of `schema`, for the error that names an unknown one.
fn column_examples(schema: RecordSchema) -> &'static str {
    match schema {
        RecordSchema::Xtcp2 => "timestamp_ns, idiag_src, idiag_state, tcpi_rtt",
        RecordSchema::FlatRecordV1 => "timestampNs, inetDiagMsgSocketSource, inetDiagMsgState, tcpInfoRtt",
    }
}

/// Encodes records for one output format.
pub trait Encoder: Send {
    fn format(&self) -> Format;

    /// The record schema it writes.
    fn schema(&self) -> RecordSchema;

    /// How its envelopes are sealed.
    fn frame(&self) -> Frame {
        Frame::new(self.format(), self.schema())
    }

    /// MIME type for HTTP destinations.
    fn content_type(&self) -> &'static str {
        self.format().content_type()
    }

    /// Appends one record. The bytes are self-delimiting, so records can be
    /// concatenated and later split again at record boundaries.
    fn encode(&mut self, record: &Record, out: &mut Vec<u8>);

    /// For callers that write one whole standalone output into one buffer
    /// without an [`EnvelopeBuilder`](crate::batch::EnvelopeBuilder): writes
    /// what opens it (the CSV header, room for the protobuf length). The
    /// buffer must keep everything from here to [`Encoder::end_envelope`];
    /// a caller that writes its buffer out in pieces must use
    /// [`writer::StreamWriter`] instead.
    fn begin_envelope(&mut self, _out: &mut Vec<u8>) {}

    /// Closes what [`Encoder::begin_envelope`] opened.
    fn end_envelope(&mut self, _out: &mut Vec<u8>) {}
}

/// What a destination needs to know about the format: the framing and the
/// bytes that open every output stream.
#[derive(Debug, Clone)]
pub struct StreamFormat {
    format: Format,
    schema: RecordSchema,
    columns: Arc<[&'static Column]>,
    header: Arc<[u8]>,
}

impl StreamFormat {
    /// Validates `-marshal` and `-columns` given as text, for our record
    /// schema (tests, benches).
    pub fn new(marshal: &str, columns: &[String]) -> Result<StreamFormat, FormatError> {
        StreamFormat::with_columns(Format::parse(marshal)?, RecordSchema::Xtcp2, columns)
    }

    /// The same for any record schema.
    pub fn in_schema(marshal: &str, schema: RecordSchema, columns: &[String]) -> Result<StreamFormat, FormatError> {
        StreamFormat::with_columns(Format::parse(marshal)?, schema, columns)
    }

    /// `format` in `schema` with `-columns` (names are the schema's and are
    /// checked for every format; they select and order only the csv/tsv
    /// columns). Empty means every column.
    pub(crate) fn with_columns(
        format: Format,
        schema: RecordSchema,
        columns: &[String],
    ) -> Result<StreamFormat, FormatError> {
        let mut selected: Vec<&'static Column> = Vec::with_capacity(columns.len());
        for name in columns {
            let column = schema.column(name).ok_or_else(|| FormatError::UnknownColumn {
                name: name.clone(),
                schema,
            })?;
            if selected.iter().any(|m| m.name == column.name) {
                return Err(FormatError::DuplicateColumn(name.clone()));
            }
            selected.push(column);
        }
        if selected.is_empty() {
            selected = schema.columns().to_vec();
        }
        let header: Arc<[u8]> = match format.spec().header {
            Some(header) => header(&selected).into(),
            None => Arc::from(&[][..]),
        };
        Ok(StreamFormat {
            format,
            schema,
            columns: selected.into(),
            header,
        })
    }

    pub fn format(&self) -> Format {
        self.format
    }

    /// The record schema every record is written in.
    pub fn schema(&self) -> RecordSchema {
        self.schema
    }

    /// How envelopes of this stream are sealed.
    pub fn frame(&self) -> Frame {
        Frame::new(self.format, self.schema)
    }

    /// The csv/tsv columns in output order (every column by default).
    pub fn columns(&self) -> &[&'static Column] {
        &self.columns
    }

    /// The columns shared, for encoders that keep them.
    pub(crate) fn columns_shared(&self) -> Arc<[&'static Column]> {
        self.columns.clone()
    }

    /// Bytes that open every output stream: the csv/tsv header line, empty
    /// for the other formats.
    pub fn header(&self) -> &[u8] {
        &self.header
    }

    /// The header shared, for encoders and sinks that keep it.
    pub(crate) fn header_shared(&self) -> Arc<[u8]> {
        self.header.clone()
    }

    /// A fresh encoder (one per collecting thread).
    pub fn encoder(&self) -> Box<dyn Encoder> {
        (self.format.spec().encoder)(self)
    }
}

/// Builds the encoder for a `-marshal` name and `-columns` list.
pub fn encoder_for(name: &str, columns: &[String]) -> Result<Box<dyn Encoder>, FormatError> {
    Ok(StreamFormat::new(name, columns)?.encoder())
}

/// Per-column bytes every encoder would otherwise rebuild for each value,
/// for one record schema, indexed by [`Column::index`].
pub(crate) struct FieldTables {
    /// `,"name":` for jsonl (the encoder turns the first comma into `{`).
    pub json_keys: Vec<text::FixedText>,
    /// The msgpack string of the name (marker and bytes).
    pub msgpack_keys: Vec<Box<[u8]>>,
    /// The protobuf key varint: field number and wire type.
    pub protobuf_keys: Vec<([u8; 4], u8)>,
    /// `,"protoJsonName":` for protoJson (proto3 JSON, lowerCamelCase).
    pub proto_json_keys: Vec<text::FixedText>,
    /// `  proto_name: ` for protoText.
    pub proto_text_keys: Vec<text::FixedText>,
}

/// Highest protobuf field number whose key fits the three-byte table entry.
pub(crate) const MAX_TABLE_TAG: u32 = (1 << 18) - 1;

/// The tables of `schema`, built once.
pub(crate) fn field_tables(schema: RecordSchema) -> &'static FieldTables {
    static TABLES: [OnceLock<FieldTables>; RecordSchema::ALL.len()] =
        [const { OnceLock::new() }; RecordSchema::ALL.len()];
    TABLES[schema as usize].get_or_init(|| {
        let columns = schema.columns();
        let fixed = |text: String| {
            // A test checks every key fits; an empty key would show up in it.
            text::FixedText::new(text.as_bytes()).unwrap_or_default()
        };
        FieldTables {
            json_keys: columns.iter().map(|c| fixed(format!(",\"{}\":", c.name))).collect(),
            msgpack_keys: columns
                .iter()
                .map(|c| {
                    let mut key = Vec::new();
                    msgpack::write_str(&mut key, c.name);
                    key.into_boxed_slice()
                })
                .collect(),
            protobuf_keys: columns.iter().map(|c| protobuf::field_key(c)).collect(),
            proto_json_keys: columns
                .iter()
                .map(|c| fixed(format!(",\"{}\":", proto3_json_name(c.proto_name))))
                .collect(),
            proto_text_keys: columns.iter().map(|c| fixed(format!("  {}: ", c.proto_name))).collect(),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every contract spelling parses and round-trips through `name`.
    #[test]
    fn every_marshal_name_parses() {
        for f in Format::ALL {
            assert_eq!(Format::parse(f.name()).unwrap(), f);
            for alias in f.spec().aliases {
                assert_eq!(Format::parse(alias).unwrap(), f);
            }
        }
        assert_eq!(Format::parse("json").unwrap(), Format::Jsonl);
        assert_eq!(
            Format::parse("xml").unwrap_err().to_string(),
            "unknown --marshal \"xml\"; valid: jsonl, csv, tsv, protobufList, msgpack, protoJson, protoText"
        );
    }

    /// An unknown or repeated column is refused, naming the column.
    #[test]
    fn bad_columns_are_config_errors() {
        let err = StreamFormat::new("csv", &["idiag_src".into(), "tcpi_rtt_typo".into()]).unwrap_err();
        assert_eq!(
            err,
            FormatError::UnknownColumn {
                name: "tcpi_rtt_typo".into(),
                schema: RecordSchema::Xtcp2
            }
        );
        assert!(
            err.to_string().starts_with("unknown --columns name \"tcpi_rtt_typo\""),
            "{err}"
        );
        let err = StreamFormat::new("tsv", &["tcpi_rtt".into(), "tcpi_rtt".into()]).unwrap_err();
        assert_eq!(err, FormatError::DuplicateColumn("tcpi_rtt".into()));
    }

    /// Each schema takes its own column names: the Go record's proto3 JSON
    /// names in `xtcp_flat_record.v1`, ours in `xtcp2`, and not the other's.
    #[test]
    fn columns_are_the_schema_s_names() {
        let go = RecordSchema::FlatRecordV1;
        let cols = ["tcpInfoRtt".to_string(), "inetDiagMsgSocketSource".to_string()];
        assert_eq!(
            StreamFormat::in_schema("csv", go, &cols).unwrap().header(),
            b"tcpInfoRtt,inetDiagMsgSocketSource\n"
        );
        let err = StreamFormat::in_schema("csv", go, &["tcpi_rtt".into()]).unwrap_err();
        assert!(
            err.to_string().starts_with(
                "unknown --columns name \"tcpi_rtt\"; columns are the xtcp_flat_record.v1 record's field names such as timestampNs"
            ),
            "{err}"
        );
        assert!(StreamFormat::new("csv", &cols).is_err());
    }

    /// Only csv and tsv streams open with a header, and it lists the chosen columns in order.
    #[test]
    fn header_only_for_delimited_formats() {
        let cols = ["tcpi_rtt".to_string(), "idiag_src".to_string()];
        assert_eq!(
            StreamFormat::new("csv", &cols).unwrap().header(),
            b"tcpi_rtt,idiag_src\n"
        );
        assert_eq!(
            StreamFormat::new("tsv", &cols).unwrap().header(),
            b"tcpi_rtt\tidiag_src\n"
        );
        for f in ["jsonl", "protobufList", "msgpack", "protoJson", "protoText"] {
            assert!(StreamFormat::new(f, &cols).unwrap().header().is_empty(), "{f}");
        }
    }

    /// protobufList envelopes carry their length as a varint; the others are bare concatenation.
    #[test]
    fn frame_prefix_is_the_protobuf_length() {
        let frame = |format| Frame::new(format, RecordSchema::Xtcp2);
        let mut out = Vec::new();
        frame(Format::ProtobufList).frame(&[0xaa; 300], &mut out);
        assert_eq!(&out[..2], &[0xac, 0x02]);
        assert_eq!(out.len(), 302);
        assert_eq!(frame(Format::ProtobufList).overhead(300), 2);
        let mut out = Vec::new();
        frame(Format::Jsonl).frame(b"{}\n", &mut out);
        assert_eq!(out, b"{}\n");
    }

    /// protoJson envelopes are one JSON object per line, framed the same in
    /// place (an envelope) and by copy (a datagram), with or without records.
    #[test]
    fn json_envelope_framing() {
        for (schema, open) in [(RecordSchema::Xtcp2, "records"), (RecordSchema::FlatRecordV1, "row")] {
            let frame = Frame::new(Format::ProtoJson, schema);
            for (records, want) in [
                (&b",{\"a\":1},{}"[..], format!("{{\"{open}\":[{{\"a\":1}},{{}}]}}\n")),
                (&b""[..], format!("{{\"{open}\":[]}}\n")),
            ] {
                let mut copied = Vec::new();
                frame.frame(records, &mut copied);
                assert_eq!(String::from_utf8(copied).unwrap(), want);
                let mut buf = vec![0u8; MAX_FRAME_PREFIX];
                buf.extend_from_slice(records);
                let start = frame.seal_in_place(&mut buf);
                assert_eq!(std::str::from_utf8(&buf[start..]).unwrap(), want);
                assert_eq!(frame.overhead(records.len()), want.len() - records.len());
            }
        }
    }

    /// Every tag fits the three-byte protobuf key table, and every key its fixed width.
    #[test]
    fn columns_fit_the_tables() {
        for schema in RecordSchema::ALL {
            let tables = field_tables(schema);
            for c in schema.columns() {
                assert!(c.tag <= MAX_TABLE_TAG);
                let i = usize::from(c.index);
                assert_eq!(tables.json_keys[i].as_bytes(), format!(",\"{}\":", c.name).as_bytes());
                assert_eq!(
                    tables.proto_json_keys[i].as_bytes(),
                    format!(",\"{}\":", proto3_json_name(c.proto_name)).as_bytes()
                );
                assert_eq!(
                    tables.proto_text_keys[i].as_bytes(),
                    format!("  {}: ", c.proto_name).as_bytes()
                );
            }
        }
    }
}
