//! `docs/record.md` lists every record field exactly as `record::FIELDS`
//! declares it, and the Go record's mapping exactly as `record::go_v1`
//! declares it, so the documentation cannot drift from the code.
//!
//! The tables between the `BEGIN`/`END` markers are generated here from
//! `FIELDS` and `go_v1::COLUMNS`. After changing a field or a mapping line,
//! regenerate them with `XTCP2_BLESS=1 cargo test --test record_docs`; the
//! prose around the markers is kept.

use std::path::Path;

use xtcp2::record::go_v1::COLUMNS;
use xtcp2::record::{FieldKind, FieldMeta, FIELDS};

const BEGIN: &str = "<!-- BEGIN FIELDS: generated from record::FIELDS by tests/record_docs.rs -->";
const END: &str = "<!-- END FIELDS -->";
const BEGIN_GO: &str = "<!-- BEGIN GO_V1: generated from record::go_v1 by tests/record_docs.rs -->";
const END_GO: &str = "<!-- END GO_V1 -->";

/// Field groups by protobuf tag range (see the comment atop
/// `src/record/fields.rs`).
const GROUPS: [(u32, u32, &str); 12] = [
    (1, 9, "Context (stamped by xtcp2)"),
    (10, 29, "`inet_diag_msg` header (every socket)"),
    (30, 39, "`INET_DIAG_MEMINFO` (`--deserializers meminfo`)"),
    (40, 49, "`INET_DIAG_SKMEMINFO` (`skmem`)"),
    (
        50,
        59,
        "Small attributes (`cong`, `tos`, `tc`, `shut`, `classid`, `cgroup`; `mark`, `v6only`, `ulp_name` whenever sent)",
    ),
    (60, 79, "`INET_DIAG_SOCKOPT` (`sockopt`, Linux 5.10+)"),
    (
        80,
        99,
        "Congestion-control info (`vegas`, `dctcp`, `bbr`; only the running algorithm's)",
    ),
    (100, 199, "`INET_DIAG_INFO`: `struct tcp_info` (`info`)"),
    (
        200,
        219,
        "Workload attribution (`--resolve-container-id`, `--enrich-container`; see [attribution](attribution.md))",
    ),
    (
        220,
        229,
        "Namespace id (`--populate-nsid`; see [attribution](attribution.md#namespace-ids---populate-nsid))",
    ),
    (
        230,
        269,
        "Uplinks, the same on every record (`--enrich-nic`, `--enrich-lldp`; see [attribution](attribution.md#uplink-nics---enrich-nic-and-their-lldp-neighbours---enrich-lldp))",
    ),
    (
        270,
        289,
        "Flow events and rates (`--flow-events`, `--rates`; see [flows](flows.md))",
    ),
];

fn json_type(kind: FieldKind) -> &'static str {
    match kind {
        FieldKind::Uint => "integer",
        FieldKind::TimestampNs => "integer (CSV: RFC 3339)",
        FieldKind::TcpState => "integer (CSV: state name)",
        FieldKind::Family => "integer (CSV: `AF_INET`/`AF_INET6`)",
        FieldKind::Str => "string",
        FieldKind::Addr => "string (protobuf: 4 or 16 bytes)",
        FieldKind::AddrSlot => "string (protobuf: 16 bytes, IPv4 in the first 4)",
        FieldKind::Enum => "integer (CSV, protoJson, protoText: the value's name)",
    }
}

/// Markdown table cells cannot hold a bare `|`.
fn cell(text: &str) -> String {
    text.replace('|', "\\|")
}

fn row(f: &FieldMeta) -> String {
    let unit = if f.unit.is_empty() { "" } else { f.unit };
    format!(
        "| `{}` | {} | `{}` | {} | {} | {} |\n",
        f.name,
        json_type(f.kind),
        cell(f.source),
        cell(unit),
        cell(f.doc),
        f.tag
    )
}

/// The generated part of docs/record.md.
fn generated() -> String {
    let mut out = String::new();
    out.push_str(BEGIN);
    out.push('\n');
    for (low, high, title) in GROUPS {
        let fields: Vec<_> = FIELDS.iter().filter(|f| (low..=high).contains(&f.tag)).collect();
        if fields.is_empty() {
            continue;
        }
        out.push_str(&format!("\n### {title}\n\n"));
        out.push_str("| JSON name | type | kernel source | unit | meaning | protobuf tag |\n");
        out.push_str("|---|---|---|---|---|---|\n");
        for f in fields {
            out.push_str(&row(f));
        }
    }
    out.push('\n');
    out.push_str(END);
    out
}

/// The generated mapping of `xtcp_flat_record.v1`: every Go field, what of
/// ours fills it, and our fields it leaves out.
fn generated_go() -> String {
    let mut out = String::new();
    out.push_str(BEGIN_GO);
    out.push_str(
        "\n\n| Go field | name (JSON, csv, `--columns`) | number | type | from xtcp2 | conversion, or why unset |\n",
    );
    out.push_str("|---|---|---|---|---|---|\n");
    for c in COLUMNS {
        let from = if c.source.is_empty() {
            "unset".to_string()
        } else {
            c.source
                .split(", ")
                .map(|s| format!("`{s}`"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let from = if matches!(c.proto_name, "schema_version" | "daemon_version") {
            "constant".to_string()
        } else {
            from
        };
        out.push_str(&format!(
            "| `{}` | `{}` | {} | {} | {} | {} |\n",
            c.proto_name,
            c.name,
            c.tag,
            c.proto_type.proto_name(),
            from,
            cell(c.doc)
        ));
    }
    let read: Vec<&str> = COLUMNS.iter().flat_map(|c| c.source.split(", ")).collect();
    let left_out: Vec<String> = FIELDS
        .iter()
        .filter(|f| !read.contains(&f.name))
        .map(|f| format!("`{}`", f.name))
        .collect();
    out.push_str(&format!(
        "\nOur fields the Go record has no place for, left out in this schema: {}.\n\n",
        left_out.join(", ")
    ));
    out.push_str(END_GO);
    out
}

/// Checks (or, with XTCP2_BLESS=1, rewrites) the block between `begin`
/// and `end` in docs/record.md.
fn check_block(begin: &str, end: &str, want: &str, source: &str) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/record.md");
    let current = std::fs::read_to_string(&path).unwrap_or_default();
    if std::env::var_os("XTCP2_BLESS").is_some_and(|v| v == "1") {
        let updated = match (current.find(begin), current.find(end)) {
            (Some(b), Some(e)) if b < e => format!("{}{want}{}", &current[..b], &current[e + end.len()..]),
            _ => format!("{current}\n{want}\n"),
        };
        if updated != current {
            std::fs::write(&path, updated).expect("write docs/record.md");
            println!("rewrote a generated block of {}", path.display());
        }
        return;
    }
    assert!(
        current.contains(want),
        "{} is out of date with {source}; run `XTCP2_BLESS=1 cargo test --test record_docs`",
        path.display()
    );
    assert_eq!(current.matches(begin).count(), 1, "one generated block");
}

/// Every field of `FIELDS` appears in exactly one group, so none is left
/// out of the page.
#[test]
fn every_field_has_a_group() {
    for f in FIELDS {
        let groups = GROUPS
            .iter()
            .filter(|(low, high, _)| (*low..=*high).contains(&f.tag))
            .count();
        assert_eq!(groups, 1, "{} (tag {}) is in {groups} groups", f.name, f.tag);
    }
}

/// docs/record.md holds the field tables generated from `FIELDS`, byte for
/// byte (rewrite them with `XTCP2_BLESS=1`).
#[test]
fn record_md_matches_the_field_declarations() {
    check_block(BEGIN, END, &generated(), "record::FIELDS");
}

/// docs/record.md holds the `xtcp_flat_record.v1` mapping generated from
/// `go_v1::COLUMNS`, byte for byte (rewrite it with `XTCP2_BLESS=1`).
#[test]
fn record_md_matches_the_go_mapping() {
    check_block(BEGIN_GO, END_GO, &generated_go(), "record::go_v1");
}
