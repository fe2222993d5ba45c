//! Every format, on a known collection of real records (decoded from real
//! captures), decodes back with an independent decoder to exactly the
//! records that were encoded.

mod sinks_support;
mod support;

use std::sync::Arc;

use sinks_support::*;
use xtcp2::batch::Envelope;
use xtcp2::format::{Format, StreamFormat};

/// Encodes `records` as one standalone output: header, then envelopes of
/// `rows_per_envelope` records.
fn encode_output(format: &StreamFormat, records: &[xtcp2::record::Record], rows_per_envelope: usize) -> Vec<u8> {
    let mut out = format.header().to_vec();
    let mut encoder = format.encoder();
    for chunk in records.chunks(rows_per_envelope) {
        let envelope = Envelope::from_records(encoder.as_mut(), chunk, Arc::from("h"), 1);
        out.extend_from_slice(envelope.payload());
    }
    out
}

/// jsonl, csv, tsv, msgpack and protobufList each round-trip every field of every record.
#[test]
fn every_format_round_trips_the_collection() {
    let Some(records) = known_collection() else { return };
    let expected: Vec<Row> = records.iter().map(row_of).collect();
    for format in Format::ALL {
        let stream = StreamFormat::new(format.name(), &[]).unwrap();
        let bytes = encode_output(&stream, &records, 97);
        let decoded = decode_output(format, &bytes);
        assert_exactly_once(format.name(), &expected, &decoded);
    }
}

/// csv/tsv `-columns` select and order the columns, and the header says so.
#[test]
fn columns_select_and_order_delimited_output() {
    let Some(records) = known_collection() else { return };
    let columns: Vec<String> = [
        "poll_seq",
        "tcpi_rtt",
        "idiag_state",
        "idiag_dst",
        "label",
        "timestamp_ns",
        "cong",
        "idiag_family",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let expected: Vec<Row> = records.iter().map(|r| row_in_columns(r, &columns)).collect();
    for marshal in ["csv", "tsv"] {
        let stream = StreamFormat::new(marshal, &columns).unwrap();
        let bytes = encode_output(&stream, &records, 1000);
        let first_line = bytes.split(|&b| b == b'\n').next().unwrap();
        let sep = if marshal == "csv" { "," } else { "\t" };
        assert_eq!(std::str::from_utf8(first_line).unwrap(), columns.join(sep));
        let decoded = decode_output(stream.format(), &bytes);
        assert_exactly_once(marshal, &expected, &decoded);
    }
}

/// csv cells are humanised: the first established IPv4 socket reads as people expect.
#[test]
fn csv_cells_read_like_ss() {
    let Some(records) = known_collection() else { return };
    let columns: Vec<String> = [
        "idiag_family",
        "idiag_state",
        "idiag_src",
        "timestamp_ns",
        "cong",
        "label",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let record = records
        .iter()
        .find(|r| r.idiag_family == Some(2) && r.idiag_state == Some(1) && r.cong.is_some())
        .expect("the captures hold an established IPv4 socket with a congestion name");
    let stream = StreamFormat::new("csv", &columns).unwrap();
    let mut line = Vec::new();
    stream.encoder().encode(record, &mut line);
    let cells = parse_csv(&line).remove(0);
    assert_eq!(cells[0], "AF_INET");
    assert_eq!(cells[1], "ESTAB");
    assert_eq!(cells[2], record.idiag_src.unwrap().to_string());
    assert_eq!(parse_rfc3339_ns(&cells[3]), record.timestamp_ns.unwrap());
    assert_eq!(cells[4], record.cong.unwrap().as_str());
    assert_eq!(cells[5], "rack 7, \"blue\"");
    // The label needs RFC 4180 quoting: it holds a comma and quotes.
    assert!(String::from_utf8(line)
        .unwrap()
        .ends_with(",\"rack 7, \"\"blue\"\"\"\n"));
}
