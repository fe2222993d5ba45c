//! `--record-schema xtcp_flat_record.v1`: the Go daemon's record.
//!
//! proto/xtcp_flat_record_v1.proto is generated from the mapping table
//! (src/record/go_v1.rs) and must state exactly what the facts about the Go
//! daemon (`shared/upstream/record-v1.tsv`) state.

use std::path::Path;

use xtcp2::record::RecordSchema;

/// proto/xtcp_flat_record_v1.proto is exactly the text generated from the
/// mapping table (run with XTCP2_BLESS=1 to rewrite it after changing
/// src/record/go_v1.rs).
#[test]
fn go_proto_file_matches_the_mapping_table() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("proto/xtcp_flat_record_v1.proto");
    let generated = xtcp2::format::protobuf::schema_text(RecordSchema::FlatRecordV1);
    if std::env::var_os("XTCP2_BLESS").is_some() {
        std::fs::write(&path, &generated).unwrap();
    }
    let on_disk = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        on_disk == generated,
        "proto/xtcp_flat_record_v1.proto is stale: run `XTCP2_BLESS=1 cargo test --test go_schema` and commit the result"
    );
}
