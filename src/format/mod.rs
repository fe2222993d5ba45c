//! Format: records → bytes, one encoder per `-marshal` value.
//!
//! An encoder appends one record at a time to a caller-owned buffer (the
//! envelope being filled), so encoding never allocates per record. Every
//! format's records are self-delimiting, so an envelope is the
//! concatenation of its records plus, for protobufList, a length prefix
//! that [`Format::frame_prefix`] computes when the envelope is sealed.
//!
//! What opens an output stream (the CSV/TSV header line) is not part of any
//! envelope: [`StreamFormat::header`] hands it to the sink, which writes it
//! once per file, connection or HTTP request.
//!
//! This module must not know about destinations (that is `sink`) nor about
//! netlink (that is `decode`).

pub mod csv;
pub mod jsonl;
pub mod msgpack;
pub mod protobuf;
pub mod text;
pub mod writer;

use std::sync::{Arc, OnceLock};

use crate::record::{field_by_name, FieldMeta, Record, FIELDS};

/// Longest frame prefix of any format: a u64 varint (protobufList's
/// envelope length). Envelope buffers keep this much headroom so sealing
/// never moves the records.
pub(crate) const MAX_FRAME_PREFIX: usize = 10;

/// How a format turns whole encoded records into one self-contained envelope.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// Records are self-delimiting: an envelope is their concatenation.
    Concatenated,
    /// The varint length of the records goes first: ClickHouse's
    /// protobufList (one `Envelope` message whose field 1 repeats records).
    VarintLengthPrefix,
}

/// Writes the bytes that open an output stream for the given columns.
pub type HeaderFn = fn(&[&'static FieldMeta]) -> Vec<u8>;

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

    /// Writes, right-aligned in `prefix`, what must precede `records_len`
    /// bytes of records to make them one self-contained envelope, and
    /// returns its length (0 for the formats that are plain concatenation).
    #[inline]
    pub(crate) fn frame_prefix(self, records_len: usize, prefix: &mut [u8; MAX_FRAME_PREFIX]) -> usize {
        match self.spec().framing {
            Framing::VarintLengthPrefix => {
                let mut varint = [0u8; MAX_FRAME_PREFIX];
                let n = protobuf::varint_into(records_len as u64, &mut varint);
                prefix[MAX_FRAME_PREFIX - n..].copy_from_slice(&varint[..n]);
                n
            }
            Framing::Concatenated => 0,
        }
    }

    /// Appends `records` (whole encoded records) framed as one envelope.
    pub fn frame(self, records: &[u8], out: &mut Vec<u8>) {
        let mut prefix = [0u8; MAX_FRAME_PREFIX];
        let n = self.frame_prefix(records.len(), &mut prefix);
        out.extend_from_slice(&prefix[MAX_FRAME_PREFIX - n..]);
        out.extend_from_slice(records);
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

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FormatError {
    #[error("unknown --marshal {0:?}; valid: {valid}", valid = Format::names())]
    UnknownFormat(String),
    #[error("unknown --columns name {0:?}; columns are record field names such as timestamp_ns, idiag_src, idiag_state, tcpi_rtt (see docs/record.md)")]
    UnknownColumn(String),
    #[error("--columns names {0:?} twice")]
    DuplicateColumn(String),
}

/// Encodes records for one output format.
pub trait Encoder: Send {
    fn format(&self) -> Format;

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
    columns: Arc<[&'static FieldMeta]>,
    header: Arc<[u8]>,
}

impl StreamFormat {
    /// Validates `-marshal` and `-columns` given as text (tests, benches).
    pub fn new(marshal: &str, columns: &[String]) -> Result<StreamFormat, FormatError> {
        StreamFormat::with_columns(Format::parse(marshal)?, columns)
    }

    /// `format` with `-columns` (names are checked for every format; they
    /// select and order only the csv/tsv columns). Empty means every field.
    pub(crate) fn with_columns(format: Format, columns: &[String]) -> Result<StreamFormat, FormatError> {
        let mut selected: Vec<&'static FieldMeta> = Vec::with_capacity(columns.len());
        for name in columns {
            let meta = field_by_name(name).ok_or_else(|| FormatError::UnknownColumn(name.clone()))?;
            if selected.iter().any(|m| m.name == meta.name) {
                return Err(FormatError::DuplicateColumn(name.clone()));
            }
            selected.push(meta);
        }
        if selected.is_empty() {
            selected = FIELDS.to_vec();
        }
        let header: Arc<[u8]> = match format.spec().header {
            Some(header) => header(&selected).into(),
            None => Arc::from(&[][..]),
        };
        Ok(StreamFormat {
            format,
            columns: selected.into(),
            header,
        })
    }

    pub fn format(&self) -> Format {
        self.format
    }

    /// The csv/tsv columns in output order (every field by default).
    pub fn columns(&self) -> &[&'static FieldMeta] {
        &self.columns
    }

    /// The columns shared, for encoders that keep them.
    pub(crate) fn columns_shared(&self) -> Arc<[&'static FieldMeta]> {
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

/// Per-field bytes every encoder would otherwise rebuild for each value,
/// indexed by protobuf tag (tags are small and unique).
pub(crate) struct FieldTables {
    /// `,"name":` for JSON (the encoder turns the first comma into `{`).
    pub json_keys: Vec<text::FixedText>,
    /// The msgpack string of the name (marker and bytes).
    pub msgpack_keys: Vec<Box<[u8]>>,
    /// The protobuf key varint: field number and wire type.
    pub protobuf_keys: Vec<([u8; 2], u8)>,
}

/// Highest protobuf tag whose key fits the two-byte table entry.
pub(crate) const MAX_TABLE_TAG: u32 = 2047;

pub(crate) fn field_tables() -> &'static FieldTables {
    static TABLES: OnceLock<FieldTables> = OnceLock::new();
    TABLES.get_or_init(|| {
        let size = FIELDS.iter().map(|f| f.tag).max().unwrap_or(0) as usize + 1;
        let mut json_keys = vec![text::FixedText::default(); size];
        let mut msgpack_keys = vec![Box::<[u8]>::default(); size];
        let mut protobuf_keys = vec![([0u8; 2], 0u8); size];
        for f in FIELDS {
            let tag = f.tag as usize;
            // A test checks every key fits; an empty key would show up in it.
            json_keys[tag] = text::FixedText::new(format!(",\"{}\":", f.name).as_bytes()).unwrap_or_default();
            let mut key = Vec::new();
            msgpack::write_str(&mut key, f.name);
            msgpack_keys[tag] = key.into_boxed_slice();
            protobuf_keys[tag] = protobuf::field_key(f);
        }
        FieldTables {
            json_keys,
            msgpack_keys,
            protobuf_keys,
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
            "unknown --marshal \"xml\"; valid: jsonl, csv, tsv, protobufList, msgpack"
        );
    }

    /// An unknown or repeated column is refused, naming the column.
    #[test]
    fn bad_columns_are_config_errors() {
        let err = StreamFormat::new("csv", &["idiag_src".into(), "tcpi_rtt_typo".into()]).unwrap_err();
        assert_eq!(err, FormatError::UnknownColumn("tcpi_rtt_typo".into()));
        assert!(
            err.to_string().starts_with("unknown --columns name \"tcpi_rtt_typo\""),
            "{err}"
        );
        let err = StreamFormat::new("tsv", &["tcpi_rtt".into(), "tcpi_rtt".into()]).unwrap_err();
        assert_eq!(err, FormatError::DuplicateColumn("tcpi_rtt".into()));
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
        for f in ["jsonl", "protobufList", "msgpack"] {
            assert!(StreamFormat::new(f, &cols).unwrap().header().is_empty(), "{f}");
        }
    }

    /// protobufList envelopes carry their length as a varint; the others are bare concatenation.
    #[test]
    fn frame_prefix_is_the_protobuf_length() {
        let mut out = Vec::new();
        Format::ProtobufList.frame(&[0xaa; 300], &mut out);
        assert_eq!(&out[..2], &[0xac, 0x02]);
        assert_eq!(out.len(), 302);
        let mut out = Vec::new();
        Format::Jsonl.frame(b"{}\n", &mut out);
        assert_eq!(out, b"{}\n");
    }

    /// Every tag fits the two-byte protobuf key table, and every JSON key its fixed width.
    #[test]
    fn fields_fit_the_tables() {
        assert!(FIELDS.iter().all(|f| f.tag <= MAX_TABLE_TAG));
        for f in FIELDS {
            let key = field_tables().json_keys[f.tag as usize];
            assert_eq!(key.as_bytes(), format!(",\"{}\":", f.name).as_bytes());
        }
    }
}
