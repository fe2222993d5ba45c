//! The flat socket record: one struct per socket per poll, and the record
//! schemas the formats speak.
//!
//! Every field is declared once, in [`fields`], with its JSON/CSV name (the
//! kernel's own name), its protobuf tag and what it means. The struct, the
//! field table used by the formats, the generated `.proto` text and the field
//! documentation all come from that one declaration, so they cannot drift.
//!
//! A record schema ([`RecordSchema`], `--record-schema`) is the list of
//! [`Column`]s a format writes and how each is read from a [`Record`]:
//! `xtcp2` is the record's own fields ([`FIELDS`]); `xtcp_flat_record.v1`,
//! the Go daemon's record, is the one mapping table in [`go_v1`]. Every
//! encoder walks a record through [`RecordSchema::visit`], so both schemas
//! go through the same encoding code.
//!
//! Absent is not zero: a field the kernel did not send is `None` and is left
//! out of every output, so a 4.19 kernel's 224-byte `tcp_info` never shows a
//! `tcpi_rcv_wnd` of 0.
//!
//! This module must not know about netlink bytes (that is `decode`) nor about
//! output encodings (that is `format`).

mod fields;
pub mod go_v1;
mod schema;

use std::net::IpAddr;
use std::sync::Arc;

pub use fields::{Record, FIELDS};
pub use schema::{RecordSchema, SchemaError};

/// Strings stamped on every record (`--hostname`, `--label`, `--tag`,
/// `--location`); shared, never copied per record.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stamps {
    pub hostname: Option<Arc<str>>,
    pub label: Option<Arc<str>>,
    pub tag: Option<Arc<str>>,
    pub location: Option<Arc<str>>,
}

impl Stamps {
    /// Sets the record's stamp fields (a reference count increment each).
    #[inline]
    pub fn apply(&self, record: &mut Record) {
        record.hostname = self.hostname.clone();
        record.label = self.label.clone();
        record.tag = self.tag.clone();
        record.location = self.location.clone();
    }
}

/// How a field's value is rendered by the human-oriented formats (CSV/TSV).
/// Machine formats (JSON, protobuf, msgpack) write the raw value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldKind {
    /// A plain unsigned counter or size.
    Uint,
    /// Nanoseconds since the Unix epoch; CSV renders RFC 3339.
    TimestampNs,
    /// `idiag_state` / `tcpi_state`: CSV renders the TCP state name.
    TcpState,
    /// `idiag_family`: CSV renders `AF_INET` / `AF_INET6`.
    Family,
    /// Text.
    Str,
    /// An IPv4 or IPv6 address; protobuf carries the 4 or 16 raw bytes.
    Addr,
    /// An address as the kernel's `inet_diag_sockid` holds it: protobuf
    /// carries 16 bytes whatever the family, an IPv4 address in the first
    /// four and zeros after (the Go daemon's layout).
    AddrSlot,
    /// A protobuf enum's number ([`ProtoType::Enum`] names its values):
    /// CSV, protoJson and protoText write the value's name.
    Enum,
}

/// A protobuf enum: its name in the `.proto` and its values' names,
/// indexed by number (0 is the `_UNSPECIFIED` value).
#[derive(Debug, PartialEq, Eq)]
pub struct EnumType {
    pub name: &'static str,
    pub values: &'static [&'static str],
}

impl EnumType {
    /// The name of value `number`, `None` when the enum has no such value.
    pub fn name_of(&self, number: u64) -> Option<&'static str> {
        usize::try_from(number).ok().and_then(|i| self.values.get(i)).copied()
    }
}

/// The protobuf type a column is declared with in its schema's `.proto`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProtoType {
    Uint32,
    Uint64,
    Int64,
    String,
    Bytes,
    Enum(&'static EnumType),
}

impl ProtoType {
    /// The type as the `.proto` spells it.
    pub fn proto_name(self) -> &'static str {
        match self {
            ProtoType::Uint32 => "uint32",
            ProtoType::Uint64 => "uint64",
            ProtoType::Int64 => "int64",
            ProtoType::String => "string",
            ProtoType::Bytes => "bytes",
            ProtoType::Enum(e) => e.name,
        }
    }

    /// The type our own schema (`proto/xtcp2.proto`) declares a field of
    /// this kind with: every number is a `uint64`.
    pub(crate) const fn of_xtcp2_kind(kind: FieldKind) -> ProtoType {
        match kind {
            FieldKind::Str => ProtoType::String,
            FieldKind::Addr | FieldKind::AddrSlot => ProtoType::Bytes,
            FieldKind::Uint | FieldKind::TimestampNs | FieldKind::TcpState | FieldKind::Family | FieldKind::Enum => {
                ProtoType::Uint64
            }
        }
    }
}

/// One column of a record schema: its names, its protobuf field and how
/// the formats render it. The `xtcp2` schema's columns are the record's
/// fields ([`FIELDS`]), `xtcp_flat_record.v1`'s are [`go_v1::COLUMNS`].
#[derive(Debug)]
pub struct Column {
    /// The output name: jsonl and msgpack keys, the csv/tsv header,
    /// `--columns`. The kernel's own name in `xtcp2`, the proto3 JSON name
    /// in `xtcp_flat_record.v1`.
    pub name: &'static str,
    /// The field's name in its schema's `.proto` (protoText writes it;
    /// protoJson writes its proto3 JSON form, lowerCamelCase).
    pub proto_name: &'static str,
    /// The protobuf field number.
    pub tag: u32,
    /// Position in its schema's column list: encoders keep their
    /// per-column bytes (keys) in tables indexed by it.
    pub index: u16,
    pub kind: FieldKind,
    pub proto_type: ProtoType,
    /// Where the value comes from: the kernel struct and member for our
    /// fields; the field(s) of our record it is read from for `go_v1`.
    pub source: &'static str,
    /// Unit of the value, empty when it has none.
    pub unit: &'static str,
    /// One-line meaning (for `go_v1`: the conversion, or why it is unset).
    pub doc: &'static str,
}

/// Our record's fields are the `xtcp2` schema's columns.
pub type FieldMeta = Column;

/// A present field value, borrowed from the record.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Value<'a> {
    Uint(u64),
    Str(&'a str),
    Addr(IpAddr),
}

/// Receives every present column of a record, in its schema's order.
///
/// Formats implement this; it is monomorphised per format, so walking a record
/// costs one branch per field and no allocation.
pub(crate) trait FieldVisitor {
    fn field(&mut self, column: &'static Column, value: Value<'_>);
}

/// Conversion of a stored field into a [`Value`], used by the generated code.
pub(crate) trait AsValue {
    fn as_value(&self) -> Value<'_>;
}

macro_rules! uint_as_value {
    ($($t:ty),*) => {$(
        impl AsValue for $t {
            #[inline]
            fn as_value(&self) -> Value<'_> {
                Value::Uint(u64::from(*self))
            }
        }
    )*};
}
uint_as_value!(u8, u16, u32, u64);

impl AsValue for IpAddr {
    #[inline]
    fn as_value(&self) -> Value<'_> {
        Value::Addr(*self)
    }
}

impl AsValue for Arc<str> {
    #[inline]
    fn as_value(&self) -> Value<'_> {
        Value::Str(self)
    }
}

impl AsValue for ShortName {
    #[inline]
    fn as_value(&self) -> Value<'_> {
        Value::Str(self.as_str())
    }
}

/// Longest congestion control name the kernel has (`TCP_CA_NAME_MAX`).
pub(crate) const TCP_CA_NAME_MAX: usize = 16;

/// A congestion-control name held inline, so decoding `INET_DIAG_CONG`
/// does not allocate per socket.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct ShortName {
    bytes: [u8; TCP_CA_NAME_MAX],
    len: u8,
}

impl ShortName {
    /// Takes the bytes up to the first NUL, at most [`TCP_CA_NAME_MAX`],
    /// keeping only the longest valid UTF-8 prefix (kernel names are ASCII).
    pub(crate) fn from_c_bytes(raw: &[u8]) -> Self {
        let end = raw.iter().position(|&b| b == 0).unwrap_or(raw.len());
        let mut take = end.min(TCP_CA_NAME_MAX);
        while std::str::from_utf8(&raw[..take]).is_err() {
            take -= 1;
        }
        let mut bytes = [0u8; TCP_CA_NAME_MAX];
        bytes[..take].copy_from_slice(&raw[..take]);
        ShortName { bytes, len: take as u8 }
    }

    pub fn as_str(&self) -> &str {
        // Only valid UTF-8 prefixes are ever stored (see `from_c_bytes`).
        std::str::from_utf8(&self.bytes[..usize::from(self.len)]).unwrap_or("")
    }
}

impl std::fmt::Debug for ShortName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.as_str().fmt(f)
    }
}

/// The proto3 JSON name of a protobuf field: lowerCamelCase, each `_`
/// dropped and the letter after it upper-cased (`tcp_info_rtt` →
/// `tcpInfoRtt`), as protoc derives `json_name`.
pub fn proto3_json_name(proto_name: &str) -> String {
    let mut out = String::with_capacity(proto_name.len());
    let mut upper = false;
    for c in proto_name.chars() {
        if c == '_' {
            upper = true;
        } else if upper {
            out.push(c.to_ascii_uppercase());
            upper = false;
        } else {
            out.push(c);
        }
    }
    out
}

/// TCP state names as `ss` prints them, indexed by the kernel's state number
/// (`include/net/tcp_states.h`).
pub(crate) const TCP_STATE_NAMES: [&str; 14] = [
    "UNKNOWN",
    "ESTAB",
    "SYN-SENT",
    "SYN-RECV",
    "FIN-WAIT-1",
    "FIN-WAIT-2",
    "TIME-WAIT",
    "UNCONN",
    "CLOSE-WAIT",
    "LAST-ACK",
    "LISTEN",
    "CLOSING",
    "NEW-SYN-RECV",
    "BOUND-INACTIVE",
];

/// The `ss`-style name of a TCP state number.
pub fn tcp_state_name(state: u64) -> &'static str {
    usize::try_from(state)
        .ok()
        .and_then(|i| TCP_STATE_NAMES.get(i))
        .copied()
        .unwrap_or("UNKNOWN")
}

/// A collecting visitor, handy for tests and for tools that want a
/// name → value map of one record.
impl FieldVisitor for Vec<(&'static str, String)> {
    fn field(&mut self, meta: &'static Column, value: Value<'_>) {
        let text = match value {
            Value::Uint(v) => v.to_string(),
            Value::Str(s) => s.to_string(),
            Value::Addr(a) => a.to_string(),
        };
        self.push((meta.name, text));
    }
}

impl Record {
    /// Every present field as `(name, text)`, in declaration order.
    pub fn to_pairs(&self) -> Vec<(&'static str, String)> {
        self.to_pairs_in(RecordSchema::Xtcp2)
    }

    /// Every present column of `schema` as `(name, text)`, in the schema's
    /// order (numbers in decimal, enums as their number, addresses as std
    /// prints them).
    pub fn to_pairs_in(&self, schema: RecordSchema) -> Vec<(&'static str, String)> {
        let mut out = Vec::new();
        schema.visit(self, &mut out);
        out
    }

    /// The text of one present field, by name; `None` when absent.
    pub fn get(&self, name: &str) -> Option<String> {
        self.to_pairs().into_iter().find(|(n, _)| *n == name).map(|(_, v)| v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every field name is unique, every protobuf tag is unique and non-zero,
    /// and each field's index is its position.
    #[test]
    fn field_names_and_tags_are_unique() {
        let mut names = std::collections::HashSet::new();
        let mut tags = std::collections::HashSet::new();
        for (i, f) in FIELDS.iter().enumerate() {
            assert!(names.insert(f.name), "duplicate name {}", f.name);
            assert!(f.tag != 0 && tags.insert(f.tag), "bad tag {} on {}", f.tag, f.name);
            assert!(!f.doc.is_empty(), "{} has no doc", f.name);
            assert_eq!(usize::from(f.index), i, "{}", f.name);
            assert_eq!(f.proto_name, f.name);
        }
    }

    /// proto3 JSON names are protoc's lowerCamelCase.
    #[test]
    fn proto3_json_names_are_lower_camel_case() {
        assert_eq!(
            proto3_json_name("inet_diag_msg_socket_source_port"),
            "inetDiagMsgSocketSourcePort"
        );
        assert_eq!(proto3_json_name("tcpi_rtt"), "tcpiRtt");
        assert_eq!(proto3_json_name("uplink1_nic_pci_vendor"), "uplink1NicPciVendor");
        assert_eq!(proto3_json_name("nsid"), "nsid");
    }

    /// An empty record writes nothing: absent fields are omitted, not zero.
    #[test]
    fn empty_record_has_no_fields() {
        assert!(Record::default().to_pairs().is_empty());
    }

    /// Congestion names stop at NUL and never exceed the kernel's maximum.
    #[test]
    fn short_name_stops_at_nul_and_truncates() {
        assert_eq!(ShortName::from_c_bytes(b"cubic\0\0").as_str(), "cubic");
        assert_eq!(
            ShortName::from_c_bytes(b"abcdefghijklmnopqrstuvwxyz").as_str().len(),
            16
        );
        assert_eq!(ShortName::from_c_bytes(&[0xff, b'a']).as_str(), "");
    }
}
