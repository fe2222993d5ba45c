//! protobufList: the schema file matches the record, and the hand-written
//! encoder matches prost's encoding of the same records.

mod sinks_support;
mod support;

use std::path::Path;
use std::sync::Arc;

use prost::Message;
use xtcp2::batch::Envelope;
use xtcp2::format::protobuf::schema;
use xtcp2::format::StreamFormat;

/// proto/xtcp2.proto is exactly the text generated from the record fields
/// (run with XTCP2_BLESS=1 to rewrite it after changing src/record/fields.rs).
#[test]
fn proto_file_matches_the_record() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("proto/xtcp2.proto");
    let generated = xtcp2::format::protobuf::schema_text(xtcp2::record::RecordSchema::Xtcp2);
    if std::env::var_os("XTCP2_BLESS").is_some() {
        std::fs::write(&path, &generated).unwrap();
    }
    let on_disk = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        on_disk == generated,
        "proto/xtcp2.proto is stale: run `XTCP2_BLESS=1 cargo test --test formats_protobuf` and commit the result"
    );
}

/// prost, built from proto/xtcp2.proto, decodes the hand-written encoding
/// of every record of the known collection, sees the same values, and
/// re-encodes it to the very same bytes (so every field number and wire
/// type we write is the schema's: prost drops unknown fields).
#[test]
fn hand_written_encoding_equals_prost() {
    let Some(records) = sinks_support::known_collection() else {
        return;
    };
    let mut encoder = StreamFormat::new("protobufList", &[]).unwrap().encoder();
    for chunk in records.chunks(250) {
        let envelope = Envelope::from_records(encoder.as_mut(), chunk, Arc::from("h"), 1);
        let decoded =
            schema::Envelope::decode_length_delimited(envelope.payload()).expect("prost decodes our envelope");
        assert_eq!(decoded.records.len(), chunk.len());
        assert_eq!(
            decoded.encode_length_delimited_to_vec(),
            envelope.payload(),
            "prost re-encodes to different bytes"
        );
        for (ours, theirs) in chunk.iter().zip(&decoded.records) {
            assert_eq!(theirs.poll_seq, ours.poll_seq);
            assert_eq!(theirs.timestamp_ns, ours.timestamp_ns);
            assert_eq!(theirs.idiag_state, ours.idiag_state.map(u64::from));
            assert_eq!(theirs.idiag_sport, ours.idiag_sport.map(u64::from));
            assert_eq!(theirs.tcpi_rtt, ours.tcpi_rtt.map(u64::from));
            assert_eq!(theirs.tcpi_bytes_acked, ours.tcpi_bytes_acked);
            assert_eq!(theirs.cong.as_deref(), ours.cong.as_ref().map(|c| c.as_str()));
            assert_eq!(theirs.label.as_deref(), ours.label.as_deref());
            let addr = |a: std::net::IpAddr| match a {
                std::net::IpAddr::V4(v4) => v4.octets().to_vec(),
                std::net::IpAddr::V6(v6) => v6.octets().to_vec(),
            };
            assert_eq!(theirs.idiag_src, ours.idiag_src.map(addr));
            assert_eq!(theirs.idiag_dst, ours.idiag_dst.map(addr));
        }
    }
}

/// Absent fields stay absent through prost (proto3 `optional`): a record
/// without tcp_info has no tcpi_rtt rather than a zero.
#[test]
fn absent_fields_stay_absent() {
    let record = xtcp2::record::Record {
        idiag_sport: Some(0),
        ..Default::default()
    };
    let mut encoder = StreamFormat::new("protobufList", &[]).unwrap().encoder();
    let envelope = Envelope::from_records(encoder.as_mut(), [&record], Arc::from("h"), 1);
    let decoded = schema::Envelope::decode_length_delimited(envelope.payload()).unwrap();
    assert_eq!(decoded.records[0].idiag_sport, Some(0), "a present zero is kept");
    assert_eq!(decoded.records[0].tcpi_rtt, None);
}
