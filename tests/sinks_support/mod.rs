//! Shared by the format, sink and fault tests: a known collection of
//! records decoded from real captures, independent decoders for every
//! output format, and real receivers (TCP, UDP, unix stream and datagram,
//! HTTP) that hand back what arrived.
//!
//! The decoders here are written from the format specifications (JSON,
//! RFC 4180, TabSeparated, the MessagePack spec, the protobuf wire format),
//! not from xtcp2's encoders, so a test that round-trips through them
//! checks the encoders against the formats.
//!
//! Builds on `support` (the fixture lookup, HTTP heads): a test file that includes
//! this module includes `mod support;` too.

#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap};
use std::io::{BufReader, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, TcpListener, UdpSocket};
use std::os::unix::net::{UnixDatagram, UnixListener};
use std::path::Path;
use std::sync::mpsc;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use xtcp2::decode::capture::for_each_pcap_reply;
use xtcp2::decode::{Deserializers, SocketDecoder};
use xtcp2::format::Format;
use xtcp2::record::{FieldKind, FieldMeta, Record, FIELDS};

/// Field metadata by name and by tag (the decoders look one up per value).
fn field_named(name: &str) -> Option<&'static FieldMeta> {
    static BY_NAME: OnceLock<HashMap<&'static str, &'static FieldMeta>> = OnceLock::new();
    BY_NAME
        .get_or_init(|| FIELDS.iter().map(|f| (f.name, *f)).collect())
        .get(name)
        .copied()
}

fn field_tagged(tag: u32) -> Option<&'static FieldMeta> {
    static BY_TAG: OnceLock<HashMap<u32, &'static FieldMeta>> = OnceLock::new();
    BY_TAG
        .get_or_init(|| FIELDS.iter().map(|f| (f.tag, *f)).collect())
        .get(&tag)
        .copied()
}

/// One record as `name → canonical text` (numbers in decimal, addresses as
/// std prints them, strings as they are).
pub type Row = BTreeMap<String, String>;

/// Captures the known collection is made of: IPv4 and IPv6, listeners and
/// established sockets, cubic/dctcp/vegas, and a 7.0 kernel's AccECN tail.
pub const COLLECTION: &[&str] = &[
    "6_6_44/tcp_100_sockets.pcap",
    "6_6_44/tcp_100_sockets_dctcp.pcap",
    "6_6_44/tcp_100_sockets_vegas.pcap",
    "7_0_3/7_0_3_ss_tcp_info.pcap",
];

/// Dumps of a capture used: the first `ss` run (IPv4 then IPv6); the later
/// runs repeat the same sockets and would only slow the tests down.
const DUMPS_PER_CAPTURE: usize = 2;

/// The sockets of the first `ss` run of each of `captures`, decoded with
/// every decoder enabled.
pub fn records_from(dir: &Path, captures: &[&str]) -> Vec<Record> {
    let mut decoder = SocketDecoder::new(Deserializers::parse("all").unwrap());
    let mut records = Vec::new();
    for name in captures {
        let data = std::fs::read(dir.join(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
        for_each_pcap_reply(&data, |origin, payload| {
            if origin.dump_index >= DUMPS_PER_CAPTURE {
                return;
            }
            if let (Some(record), _) = decoder.decode(payload) {
                record.timestamp_ns = origin.timestamp_ns;
                records.push(record.clone());
            }
        })
        .unwrap_or_else(|e| panic!("{name}: {e}"));
    }
    records
}

/// The known collection (`None` when the fixtures are absent, see
/// `support::fixtures_dir`): the captures' sockets, each stamped with a unique
/// `poll_seq` (its index) so "arrived exactly once" is checkable, and with
/// context strings that need quoting and escaping in every text format.
pub fn known_collection() -> Option<Vec<Record>> {
    let dir = crate::support::fixtures_dir()?;
    let mut records = records_from(&dir, COLLECTION);
    let hostname: Arc<str> = Arc::from("fixture-host");
    let label: Arc<str> = Arc::from("rack 7, \"blue\"");
    let tag: Arc<str> = Arc::from("tab\there\\back");
    let location: Arc<str> = Arc::from("line\nbreak");
    for (i, r) in records.iter_mut().enumerate() {
        r.poll_seq = Some(i as u64);
        r.hostname = Some(hostname.clone());
        r.label = Some(label.clone());
        r.tag = Some(tag.clone());
        r.location = Some(location.clone());
        r.netns_inode = Some(4026531840);
    }
    assert!(records.len() > 1000, "the collection has {} records", records.len());
    Some(records)
}

/// The canonical row of a record (what every decoder below must return).
pub fn row_of(record: &Record) -> Row {
    record.to_pairs().into_iter().map(|(n, v)| (n.to_string(), v)).collect()
}

/// The row restricted to csv/tsv `columns` (all fields when empty).
pub fn row_in_columns(record: &Record, columns: &[String]) -> Row {
    let mut row = row_of(record);
    if !columns.is_empty() {
        row.retain(|name, _| columns.iter().any(|c| c == name));
    }
    row
}

/// Asserts `arrived` holds every record of `sent` exactly once (matched by
/// `poll_seq`), with every value equal.
pub fn assert_exactly_once(what: &str, sent: &[Row], arrived: &[Row]) {
    let mut by_seq: BTreeMap<String, &Row> = BTreeMap::new();
    for row in arrived {
        let seq = row
            .get("poll_seq")
            .unwrap_or_else(|| panic!("{what}: a record arrived without poll_seq: {row:?}"));
        assert!(
            by_seq.insert(seq.clone(), row).is_none(),
            "{what}: record poll_seq={seq} arrived twice"
        );
    }
    assert_eq!(
        arrived.len(),
        sent.len(),
        "{what}: {} records sent, {} arrived",
        sent.len(),
        arrived.len()
    );
    for row in sent {
        let seq = &row["poll_seq"];
        let got = by_seq
            .get(seq)
            .unwrap_or_else(|| panic!("{what}: record poll_seq={seq} never arrived"));
        assert_eq!(*got, row, "{what}: record poll_seq={seq} differs");
    }
}

// ---------------------------------------------------------------- decoders

/// Decodes one self-contained output (a file, a connection's bytes, a
/// datagram, an HTTP body) of `format`.
pub fn decode_output(format: Format, bytes: &[u8]) -> Vec<Row> {
    match format {
        Format::Jsonl => decode_jsonl(bytes),
        Format::Csv => decode_csv(bytes),
        Format::Tsv => decode_tsv(bytes),
        Format::Msgpack => decode_msgpack(bytes),
        Format::ProtobufList => decode_protobuf_list(bytes),
        Format::ProtoJson => decode_proto_json(bytes),
        Format::ProtoText => decode_proto_text(bytes),
    }
}

/// Our field named `json` in the proto3 JSON mapping: lowerCamelCase of
/// the field name (`idiag_sport` → `idiagSport`).
fn field_of_json_name(json: &str) -> Option<&'static FieldMeta> {
    static BY_JSON: OnceLock<HashMap<String, &'static FieldMeta>> = OnceLock::new();
    BY_JSON
        .get_or_init(|| {
            FIELDS
                .iter()
                .map(|f| {
                    let mut camel = String::new();
                    let mut words = f.name.split('_');
                    camel.push_str(words.next().unwrap_or(""));
                    for w in words {
                        let mut chars = w.chars();
                        if let Some(c) = chars.next() {
                            camel.push(c.to_ascii_uppercase());
                            camel.extend(chars);
                        }
                    }
                    (camel, *f)
                })
                .collect()
        })
        .get(json)
        .copied()
}

/// An address's text from its 4 or 16 raw bytes.
fn address_text(name: &str, raw: &[u8]) -> String {
    match raw.len() {
        4 => IpAddr::V4(Ipv4Addr::from(<[u8; 4]>::try_from(raw).unwrap())).to_string(),
        16 => IpAddr::V6(Ipv6Addr::from(<[u8; 16]>::try_from(raw).unwrap())).to_string(),
        n => panic!("{name}: address of {n} bytes"),
    }
}

/// protoJson of our schema, by the proto3 JSON mapping: one `Envelope`
/// object per line, `{"records":[...]}`; uint64 values are decimal
/// strings, bytes are standard base64.
pub fn decode_proto_json(bytes: &[u8]) -> Vec<Row> {
    use base64::Engine;
    let text = std::str::from_utf8(bytes).expect("protoJson is UTF-8");
    assert!(
        text.is_empty() || text.ends_with('\n'),
        "protoJson output ends mid-line"
    );
    let mut rows = Vec::new();
    for line in text.lines() {
        let envelope: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("bad protoJson line {line:?}: {e}"));
        let object = envelope.as_object().expect("each line is an Envelope object");
        assert!(
            object.keys().all(|k| k == "records"),
            "Envelope has only records: {line}"
        );
        for record in object.get("records").and_then(|r| r.as_array()).into_iter().flatten() {
            let mut row = Row::new();
            for (key, value) in record.as_object().expect("a record is an object") {
                let meta = field_of_json_name(key).unwrap_or_else(|| panic!("unknown protoJson key {key}"));
                let text = value
                    .as_str()
                    .unwrap_or_else(|| panic!("{key}: {value} is not a string"));
                let text = match meta.kind {
                    FieldKind::Addr => {
                        let raw = base64::engine::general_purpose::STANDARD
                            .decode(text)
                            .unwrap_or_else(|e| panic!("{key}: bad base64 {text:?}: {e}"));
                        address_text(key, &raw)
                    }
                    FieldKind::Str => text.to_string(),
                    _ => {
                        // uint64 in proto3 JSON: a decimal string.
                        let n: u64 = text.parse().unwrap_or_else(|e| panic!("{key}: {text:?}: {e}"));
                        n.to_string()
                    }
                };
                assert!(row.insert(meta.name.to_string(), text).is_none(), "{key} twice");
            }
            rows.push(row);
        }
    }
    rows
}

/// The text format's C escapes (`\"`, `\\`, `\n`, `\r`, `\t`, `\'`,
/// three-digit octal) undone; `quoted` includes the quotes.
fn unescape_text_format(quoted: &str) -> Vec<u8> {
    let inner = quoted
        .strip_prefix('"')
        .and_then(|q| q.strip_suffix('"'))
        .unwrap_or_else(|| panic!("not a quoted string: {quoted}"));
    let bytes = inner.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] != b'\\' {
            out.push(bytes[i]);
            i += 1;
            continue;
        }
        let c = bytes[i + 1];
        match c {
            b'n' => out.push(b'\n'),
            b'r' => out.push(b'\r'),
            b't' => out.push(b'\t'),
            b'"' | b'\'' | b'\\' => out.push(c),
            b'0'..=b'7' => {
                let digits = &inner[i + 1..i + 4];
                out.push(u8::from_str_radix(digits, 8).unwrap_or_else(|e| panic!("octal {digits}: {e}")));
                i += 2;
            }
            other => panic!("unknown escape \\{}", other as char),
        }
        i += 2;
    }
    out
}

/// protoText of our schema: `records {` blocks of `name: value` lines.
pub fn decode_proto_text(bytes: &[u8]) -> Vec<Row> {
    let text = std::str::from_utf8(bytes).expect("protoText is UTF-8");
    let mut rows = Vec::new();
    let mut open: Option<Row> = None;
    for line in text.lines() {
        match (line, open.as_mut()) {
            ("records {", None) => open = Some(Row::new()),
            ("}", Some(_)) => rows.push(open.take().unwrap()),
            (field, Some(row)) => {
                let (name, value) = field
                    .trim_start()
                    .split_once(": ")
                    .unwrap_or_else(|| panic!("not a field line: {field:?}"));
                let meta = field_named(name).unwrap_or_else(|| panic!("unknown field {name}"));
                let text = match meta.kind {
                    FieldKind::Addr => address_text(name, &unescape_text_format(value)),
                    FieldKind::Str => String::from_utf8(unescape_text_format(value)).expect("string is UTF-8"),
                    _ => value
                        .parse::<u64>()
                        .unwrap_or_else(|e| panic!("{name}: {value:?}: {e}"))
                        .to_string(),
                };
                assert!(row.insert(name.to_string(), text).is_none(), "{name} twice");
            }
            (other, None) => panic!("text outside a record: {other:?}"),
        }
    }
    assert!(open.is_none(), "protoText output ends inside a record");
    rows
}

pub fn decode_jsonl(bytes: &[u8]) -> Vec<Row> {
    let text = std::str::from_utf8(bytes).expect("jsonl is UTF-8");
    assert!(text.is_empty() || text.ends_with('\n'), "jsonl output ends mid-line");
    text.lines()
        .map(|line| {
            let value: serde_json::Value =
                serde_json::from_str(line).unwrap_or_else(|e| panic!("bad JSON line {line:?}: {e}"));
            let object = value.as_object().expect("each line is an object");
            object
                .iter()
                .map(|(k, v)| {
                    let text = match v {
                        serde_json::Value::Number(n) => {
                            assert!(n.is_u64(), "{k}: {n} is not an unsigned integer");
                            n.to_string()
                        }
                        serde_json::Value::String(s) => s.clone(),
                        other => panic!("{k}: unexpected JSON value {other}"),
                    };
                    (k.clone(), text)
                })
                .collect()
        })
        .collect()
}

/// RFC 4180 records (LF or CRLF line ends), header first.
pub fn parse_csv(bytes: &[u8]) -> Vec<Vec<String>> {
    let text = std::str::from_utf8(bytes).expect("csv is UTF-8");
    let mut rows = Vec::new();
    let mut row = Vec::new();
    let mut cell = String::new();
    let mut chars = text.chars().peekable();
    let mut quoted = false;
    let mut at_cell_start = true;
    while let Some(c) = chars.next() {
        if quoted {
            if c == '"' {
                if chars.peek() == Some(&'"') {
                    chars.next();
                    cell.push('"');
                } else {
                    quoted = false;
                }
            } else {
                cell.push(c);
            }
            continue;
        }
        match c {
            '"' if at_cell_start => {
                quoted = true;
                at_cell_start = false;
            }
            '"' => panic!("a quote inside an unquoted csv cell: {cell:?}"),
            ',' => {
                row.push(std::mem::take(&mut cell));
                at_cell_start = true;
            }
            '\r' if chars.peek() == Some(&'\n') => {}
            '\n' => {
                row.push(std::mem::take(&mut cell));
                rows.push(std::mem::take(&mut row));
                at_cell_start = true;
            }
            c => {
                cell.push(c);
                at_cell_start = false;
            }
        }
    }
    assert!(!quoted, "csv ends inside a quoted cell");
    assert!(cell.is_empty() && row.is_empty(), "csv output ends mid-line");
    rows
}

fn rows_from_table(table: Vec<Vec<String>>) -> Vec<Row> {
    let mut lines = table.into_iter();
    let header = lines.next().expect("a csv/tsv output starts with its header");
    for name in &header {
        assert!(field_named(name).is_some(), "header names unknown column {name:?}");
    }
    lines
        .map(|cells| {
            assert_eq!(
                cells.len(),
                header.len(),
                "row has {} cells, header {}",
                cells.len(),
                header.len()
            );
            header
                .iter()
                .zip(cells)
                .filter(|(_, cell)| !cell.is_empty())
                .map(|(name, cell)| (name.clone(), dehumanise(name, &cell)))
                .collect()
        })
        .collect()
}

pub fn decode_csv(bytes: &[u8]) -> Vec<Row> {
    rows_from_table(parse_csv(bytes))
}

/// TabSeparated: cells split on tabs, `\t \n \r \\` unescaped.
pub fn decode_tsv(bytes: &[u8]) -> Vec<Row> {
    let text = std::str::from_utf8(bytes).expect("tsv is UTF-8");
    assert!(text.is_empty() || text.ends_with('\n'), "tsv output ends mid-line");
    let table = text
        .lines()
        .map(|line| {
            line.split('\t')
                .map(|cell| {
                    let mut out = String::new();
                    let mut chars = cell.chars();
                    while let Some(c) = chars.next() {
                        if c == '\\' {
                            match chars.next() {
                                Some('t') => out.push('\t'),
                                Some('n') => out.push('\n'),
                                Some('r') => out.push('\r'),
                                Some('\\') => out.push('\\'),
                                other => panic!("bad tsv escape \\{other:?}"),
                            }
                        } else {
                            out.push(c);
                        }
                    }
                    out
                })
                .collect()
        })
        .collect();
    rows_from_table(table)
}

/// Turns a humanised csv/tsv cell back into the canonical text.
pub fn dehumanise(name: &str, cell: &str) -> String {
    let kind = field_named(name).map(|f| f.kind).unwrap_or(FieldKind::Str);
    match kind {
        FieldKind::TimestampNs => parse_rfc3339_ns(cell).to_string(),
        FieldKind::TcpState => crate::support::STATE_NAMES
            .iter()
            .position(|s| *s == cell)
            .unwrap_or_else(|| panic!("{name}: {cell:?} is not a TCP state name"))
            .to_string(),
        FieldKind::Family => match cell {
            "AF_INET" => "2".into(),
            "AF_INET6" => "10".into(),
            other => other.into(),
        },
        FieldKind::Uint | FieldKind::Str | FieldKind::Addr | FieldKind::AddrSlot | FieldKind::Enum => cell.to_string(),
    }
}

/// Parses `YYYY-MM-DDTHH:MM:SS.nnnnnnnnnZ` by counting days year by year
/// (slow and obviously right, unlike the encoder's closed form).
pub fn parse_rfc3339_ns(text: &str) -> u64 {
    let b = text.as_bytes();
    assert_eq!(b.len(), 30, "{text:?} is not RFC 3339 with nine fractional digits");
    assert!(
        b[4] == b'-'
            && b[7] == b'-'
            && b[10] == b'T'
            && b[13] == b':'
            && b[16] == b':'
            && b[19] == b'.'
            && b[29] == b'Z',
        "{text:?}"
    );
    let num = |r: std::ops::Range<usize>| text[r].parse::<u64>().unwrap_or_else(|_| panic!("{text:?}"));
    let (year, month, day) = (num(0..4), num(5..7), num(8..10));
    let leap = |y: u64| (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    let mut days = 0u64;
    for y in 1970..year {
        days += if leap(y) { 366 } else { 365 };
    }
    let month_days = [
        31,
        if leap(year) { 29 } else { 28 },
        31,
        30,
        31,
        30,
        31,
        31,
        30,
        31,
        30,
        31,
    ];
    days += month_days[..(month - 1) as usize].iter().sum::<u64>() + day - 1;
    let secs = days * 86_400 + num(11..13) * 3600 + num(14..16) * 60 + num(17..19);
    secs * 1_000_000_000 + num(20..29)
}

/// Concatenated MessagePack maps of string keys to unsigned ints or strings.
pub fn decode_msgpack(bytes: &[u8]) -> Vec<Row> {
    struct Reader<'a> {
        b: &'a [u8],
        at: usize,
    }
    impl Reader<'_> {
        fn take(&mut self, n: usize) -> &[u8] {
            let s = &self.b[self.at..self.at + n];
            self.at += n;
            s
        }
        fn uint(&mut self, n: usize) -> u64 {
            self.take(n).iter().fold(0u64, |acc, &x| (acc << 8) | u64::from(x))
        }
        fn value(&mut self) -> String {
            let m = self.take(1)[0];
            let (is_str, len_or_value) = match m {
                0x00..=0x7f => (false, u64::from(m)),
                0xcc => (false, self.uint(1)),
                0xcd => (false, self.uint(2)),
                0xce => (false, self.uint(4)),
                0xcf => (false, self.uint(8)),
                0xa0..=0xbf => (true, u64::from(m & 0x1f)),
                0xd9 => (true, self.uint(1)),
                0xda => (true, self.uint(2)),
                0xdb => (true, self.uint(4)),
                other => panic!("unexpected msgpack marker {other:#x} at {}", self.at - 1),
            };
            if is_str {
                String::from_utf8(self.take(len_or_value as usize).to_vec()).expect("msgpack str is UTF-8")
            } else {
                len_or_value.to_string()
            }
        }
    }
    let mut r = Reader { b: bytes, at: 0 };
    let mut rows = Vec::new();
    while r.at < bytes.len() {
        let m = r.take(1)[0];
        let entries = match m {
            0x80..=0x8f => u64::from(m & 0x0f),
            0xde => r.uint(2),
            0xdf => r.uint(4),
            other => panic!("expected a msgpack map, found marker {other:#x}"),
        };
        if m == 0xde {
            assert!(
                entries > 15,
                "map16 used for {entries} entries: not the minimal encoding"
            );
        }
        let mut row = Row::new();
        for _ in 0..entries {
            let key = r.value();
            let value = r.value();
            assert!(row.insert(key.clone(), value).is_none(), "key {key} twice");
        }
        rows.push(row);
    }
    rows
}

/// Length-delimited `Envelope`s, decoded with the protobuf wire format and
/// the field numbers and types of proto/xtcp2.proto.
pub fn decode_protobuf_list(bytes: &[u8]) -> Vec<Row> {
    fn varint(b: &[u8], at: &mut usize) -> u64 {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let byte = b[*at];
            *at += 1;
            v |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return v;
            }
        }
        panic!("varint longer than 10 bytes");
    }
    let mut rows = Vec::new();
    let mut at = 0;
    while at < bytes.len() {
        let envelope_len = varint(bytes, &mut at) as usize;
        let envelope_end = at + envelope_len;
        assert!(envelope_end <= bytes.len(), "envelope length runs past the data");
        while at < envelope_end {
            assert_eq!(
                varint(bytes, &mut at),
                (1 << 3) | 2,
                "Envelope holds only field 1 (records)"
            );
            let record_end = {
                let len = varint(bytes, &mut at) as usize;
                at + len
            };
            let mut row = Row::new();
            while at < record_end {
                let key = varint(bytes, &mut at);
                let (tag, wire) = ((key >> 3) as u32, key & 7);
                let meta = field_tagged(tag).unwrap_or_else(|| panic!("unknown field number {tag}"));
                let text = match (wire, meta.kind) {
                    (0, FieldKind::Uint | FieldKind::TimestampNs | FieldKind::TcpState | FieldKind::Family) => {
                        varint(bytes, &mut at).to_string()
                    }
                    (2, FieldKind::Str) => {
                        let len = varint(bytes, &mut at) as usize;
                        let s = String::from_utf8(bytes[at..at + len].to_vec()).expect("string is UTF-8");
                        at += len;
                        s
                    }
                    (2, FieldKind::Addr) => {
                        let len = varint(bytes, &mut at) as usize;
                        let raw = &bytes[at..at + len];
                        at += len;
                        match len {
                            4 => IpAddr::V4(Ipv4Addr::from(<[u8; 4]>::try_from(raw).unwrap())).to_string(),
                            16 => IpAddr::V6(Ipv6Addr::from(<[u8; 16]>::try_from(raw).unwrap())).to_string(),
                            n => panic!("{}: address of {n} bytes", meta.name),
                        }
                    }
                    (w, k) => panic!("{}: wire type {w} for kind {k:?}", meta.name),
                };
                assert!(row.insert(meta.name.to_string(), text).is_none(), "{} twice", meta.name);
            }
            assert_eq!(at, record_end, "record overran its length");
            rows.push(row);
        }
        assert_eq!(at, envelope_end, "envelope overran its length");
    }
    rows
}

// ---------------------------------------------------------------- receivers

/// What a receiver got: one self-contained output per item (a connection's
/// bytes up to EOF, a datagram, an HTTP body with its content type).
pub struct Received {
    pub bytes: Vec<u8>,
    pub content_type: Option<String>,
}

/// Collects from `rx` until `decode` has yielded `expected_rows` rows or
/// `timeout` passes, then waits `grace` for anything extra (duplicates).
pub fn collect_rows(
    rx: &mpsc::Receiver<Received>,
    format: Format,
    expected_rows: usize,
    timeout: Duration,
    grace: Duration,
) -> (Vec<Row>, Vec<Received>) {
    let mut rows = Vec::new();
    let mut items = Vec::new();
    let deadline = Instant::now() + timeout;
    let mut grace_deadline: Option<Instant> = None;
    loop {
        let now = Instant::now();
        let until = grace_deadline.unwrap_or(deadline);
        if now >= until {
            break;
        }
        match rx.recv_timeout(until - now) {
            Ok(item) => {
                rows.extend(decode_output(format, &item.bytes));
                items.push(item);
                if rows.len() >= expected_rows && grace_deadline.is_none() {
                    grace_deadline = Some(Instant::now() + grace);
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) => break,
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
    }
    (rows, items)
}

/// Hands over each connection `incoming` yields as its bytes up to EOF,
/// read on a thread per connection.
fn receive_streams<S: Read + Send + 'static>(
    incoming: impl Iterator<Item = std::io::Result<S>> + Send + 'static,
) -> mpsc::Receiver<Received> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for stream in incoming {
            let Ok(mut stream) = stream else { break };
            let tx = tx.clone();
            std::thread::spawn(move || {
                let mut bytes = Vec::new();
                let _ = stream.read_to_end(&mut bytes);
                let _ = tx.send(Received {
                    bytes,
                    content_type: None,
                });
            });
        }
    });
    rx
}

/// A TCP listener on 127.0.0.1 that hands over each connection's bytes at EOF.
pub fn tcp_receiver() -> (std::net::SocketAddr, mpsc::Receiver<Received>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    (
        addr,
        receive_streams(std::iter::from_fn(move || Some(listener.accept().map(|(s, _)| s)))),
    )
}

/// A unix stream listener; same contract as [`tcp_receiver`].
pub fn unix_receiver(path: &Path) -> mpsc::Receiver<Received> {
    let listener = UnixListener::bind(path).unwrap();
    receive_streams(std::iter::from_fn(move || Some(listener.accept().map(|(s, _)| s))))
}

/// Largest datagram the receivers accept (the UDP maximum).
const DATAGRAM_BUFFER: usize = 65_536;

/// Hands over each datagram `recv` (a socket's receive) returns, until it fails.
fn receive_datagrams(
    mut recv: impl FnMut(&mut [u8]) -> std::io::Result<usize> + Send + 'static,
) -> mpsc::Receiver<Received> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut buf = vec![0u8; DATAGRAM_BUFFER];
        while let Ok(n) = recv(&mut buf) {
            let datagram = Received {
                bytes: buf[..n].to_vec(),
                content_type: None,
            };
            if tx.send(datagram).is_err() {
                break;
            }
        }
    });
    rx
}

/// A UDP socket on 127.0.0.1 handing over each datagram.
pub fn udp_receiver() -> (std::net::SocketAddr, mpsc::Receiver<Received>) {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = socket.local_addr().unwrap();
    (addr, receive_datagrams(move |buf| socket.recv(buf)))
}

/// Raises a UDP receive buffer beyond rmem_max (root only), so a burst of
/// datagrams on loopback is not dropped by the receiving socket.
pub fn force_receive_buffer(socket: &std::net::UdpSocket, bytes: libc::c_int) {
    use std::os::fd::AsRawFd;
    // SAFETY: the fd belongs to `socket` for the whole call; the option
    // value is a c_int of the size passed.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUFFORCE,
            (&bytes as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    assert_eq!(rc, 0, "SO_RCVBUFFORCE: {}", std::io::Error::last_os_error());
}

/// A UDP receiver with a 64 MiB buffer (see [`force_receive_buffer`]).
pub fn big_udp_receiver() -> (std::net::SocketAddr, mpsc::Receiver<Received>) {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    force_receive_buffer(&socket, 64 << 20);
    let addr = socket.local_addr().unwrap();
    (addr, receive_datagrams(move |buf| socket.recv(buf)))
}

/// A bound unix datagram socket handing over each datagram.
pub fn unixgram_receiver(path: &Path) -> mpsc::Receiver<Received> {
    let socket = UnixDatagram::bind(path).unwrap();
    receive_datagrams(move |buf| socket.recv(buf))
}

/// A minimal HTTP/1.1 server: reads each request (Content-Length bodies,
/// keep-alive), answers `status`, and hands over the body and content type.
pub fn http_receiver(status: u16) -> (std::net::SocketAddr, mpsc::Receiver<Received>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { break };
            let tx = tx.clone();
            std::thread::spawn(move || serve_http(stream, status, tx));
        }
    });
    (addr, rx)
}

/// Serves HTTP requests on one connection until EOF.
pub fn serve_http<S: Read + Write>(stream: S, status: u16, tx: mpsc::Sender<Received>) {
    let mut reader = BufReader::new(stream);
    // Keep-alive: the client may send several requests on one connection.
    while let Ok((request_line, headers)) = crate::support::read_head(&mut reader) {
        assert!(
            request_line.starts_with("POST "),
            "expected a POST, got {request_line:?}"
        );
        let length = crate::support::content_length(&headers).expect("requests carry Content-Length");
        let mut body = vec![0u8; length];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        let reason = if status < 300 { "OK" } else { "Nope" };
        let response_body = if status < 300 {
            ""
        } else {
            "rejected by the test server"
        };
        let response = format!(
            "HTTP/1.1 {status} {reason}\r\nContent-Length: {}\r\n\r\n{response_body}",
            response_body.len()
        );
        if reader.get_mut().write_all(response.as_bytes()).is_err() {
            return;
        }
        let _ = reader.get_mut().flush();
        let received = Received {
            bytes: body,
            content_type: crate::support::header(&headers, "content-type").map(str::to_string),
        };
        if tx.send(received).is_err() {
            return;
        }
    }
}
