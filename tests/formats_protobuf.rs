//! protobufList: the schema file matches the record, and the hand-written
//! encoder matches prost's encoding of the same records.

use std::path::Path;

/// proto/xtcp2.proto is exactly the text generated from the record fields
/// (run with XTCP2_BLESS=1 to rewrite it after changing src/record/fields.rs).
#[test]
fn proto_file_matches_the_record() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("proto/xtcp2.proto");
    let generated = xtcp2::format::protobuf::schema_text();
    if std::env::var_os("XTCP2_BLESS").is_some() {
        std::fs::write(&path, &generated).unwrap();
    }
    let on_disk = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        on_disk == generated,
        "proto/xtcp2.proto is stale: run `XTCP2_BLESS=1 cargo test --test formats_protobuf` and commit the result"
    );
}
