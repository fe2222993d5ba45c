//! The record schemas a format can speak (`--record-schema`): which columns
//! it writes, under which names and protobuf numbers, and how each is read
//! from a [`Record`].

use super::{go_v1, Column, FieldVisitor, Record, FIELDS};

/// A record schema: `xtcp2` (our record, `proto/xtcp2.proto`) or
/// `xtcp_flat_record.v1` (the Go daemon's, `proto/xtcp_flat_record_v1.proto`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum RecordSchema {
    /// Our record, every field under the kernel's name.
    #[default]
    Xtcp2,
    /// The Go xtcp2's `xtcp_flat_record.v1.XtcpFlatRecord`, read from our
    /// record through the mapping table [`go_v1`].
    FlatRecordV1,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SchemaError {
    #[error("unknown --record-schema {0:?}; valid: xtcp2, xtcp_flat_record.v1")]
    Unknown(String),
}

impl RecordSchema {
    pub const ALL: [RecordSchema; 2] = [RecordSchema::Xtcp2, RecordSchema::FlatRecordV1];

    /// The `--record-schema` spelling, also the schema's protobuf package.
    pub fn name(self) -> &'static str {
        match self {
            RecordSchema::Xtcp2 => "xtcp2",
            RecordSchema::FlatRecordV1 => "xtcp_flat_record.v1",
        }
    }

    pub fn parse(name: &str) -> Result<RecordSchema, SchemaError> {
        RecordSchema::ALL
            .into_iter()
            .find(|s| s.name() == name)
            .ok_or_else(|| SchemaError::Unknown(name.to_string()))
    }

    /// Every column, in output order (ascending protobuf number).
    pub fn columns(self) -> &'static [&'static Column] {
        match self {
            RecordSchema::Xtcp2 => FIELDS,
            RecordSchema::FlatRecordV1 => go_v1::COLUMNS,
        }
    }

    /// A column by its output name (what `--columns` takes).
    pub fn column(self, name: &str) -> Option<&'static Column> {
        self.columns().iter().copied().find(|c| c.name == name)
    }

    /// The `.proto` file under `proto/` that declares this schema.
    pub fn proto_file(self) -> &'static str {
        match self {
            RecordSchema::Xtcp2 => "xtcp2.proto",
            RecordSchema::FlatRecordV1 => "xtcp_flat_record_v1.proto",
        }
    }

    /// The row message, as ClickHouse's `format_schema` names it
    /// (`FILE:MESSAGE`) to read protobufList.
    pub fn row_message(self) -> &'static str {
        match self {
            RecordSchema::Xtcp2 => "Record",
            RecordSchema::FlatRecordV1 => "XtcpFlatRecord",
        }
    }

    /// The `Envelope` field that repeats the rows: its name and number.
    pub fn envelope_field(self) -> (&'static str, u32) {
        match self {
            RecordSchema::Xtcp2 => ("records", 1),
            RecordSchema::FlatRecordV1 => ("row", 10),
        }
    }

    /// Hands every present column of `record` to `visitor`, in the
    /// schema's order. One branch per record picks the schema; each walk
    /// is straight-line code monomorphised per visitor.
    #[inline(always)]
    pub(crate) fn visit<V: FieldVisitor>(self, record: &Record, visitor: &mut V) {
        match self {
            RecordSchema::Xtcp2 => record.visit(visitor),
            RecordSchema::FlatRecordV1 => go_v1::visit(record, visitor),
        }
    }
}

impl std::str::FromStr for RecordSchema {
    type Err = SchemaError;
    fn from_str(s: &str) -> Result<RecordSchema, SchemaError> {
        RecordSchema::parse(s)
    }
}

impl std::fmt::Display for RecordSchema {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every schema's columns have unique names and numbers, ascend by
    /// number, and carry their own position as index.
    #[test]
    fn columns_are_unique_ordered_and_indexed() {
        for schema in RecordSchema::ALL {
            let columns = schema.columns();
            for (i, c) in columns.iter().enumerate() {
                assert_eq!(usize::from(c.index), i, "{schema} {}", c.name);
                assert!(c.tag != 0, "{schema} {}", c.name);
                assert_eq!(schema.column(c.name).map(|f| f.tag), Some(c.tag), "{schema} {}", c.name);
            }
            assert!(
                columns.windows(2).all(|w| w[0].tag < w[1].tag),
                "{schema}: not by number"
            );
        }
    }

    /// The spellings parse and print back.
    #[test]
    fn names_parse() {
        for schema in RecordSchema::ALL {
            assert_eq!(RecordSchema::parse(schema.name()), Ok(schema));
        }
        assert_eq!(
            RecordSchema::parse("v1").unwrap_err().to_string(),
            "unknown --record-schema \"v1\"; valid: xtcp2, xtcp_flat_record.v1"
        );
    }
}
