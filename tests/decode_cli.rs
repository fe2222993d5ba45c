//! `xtcp2 decode`: offline captures print the same records as the library
//! decodes, framed like a file destination in every format; bad files are
//! clear errors with a non-zero exit.

mod support;

use std::path::PathBuf;

use prost::Message;
use xtcp2::decode::capture::for_each_pcap_reply;
use xtcp2::decode::{Deserializers, SocketDecoder};
use xtcp2::format::protobuf::schema::Envelope;

use support::{fixtures_dir, Xtcp2};

fn decode(args: &[&str]) -> std::process::Output {
    Xtcp2::new().arg("decode").args(args).output()
}

/// The library's own decoding of a capture, as JSON objects.
fn library_records(pcap: &PathBuf) -> Vec<serde_json::Value> {
    let data = std::fs::read(pcap).unwrap();
    let mut decoder = SocketDecoder::new(Deserializers::default_set());
    let mut out = Vec::new();
    for_each_pcap_reply(&data, |origin, payload| {
        let (record, error) = decoder.decode(payload);
        assert!(error.is_none(), "{error:?}");
        let record = record.unwrap();
        record.timestamp_ns = origin.timestamp_ns;
        let map: serde_json::Map<String, serde_json::Value> = record
            .to_pairs()
            .into_iter()
            .map(|(k, v)| {
                let value = v
                    .parse::<u64>()
                    .map(serde_json::Value::from)
                    .unwrap_or(serde_json::Value::from(v));
                (k.to_string(), value)
            })
            .collect();
        out.push(serde_json::Value::Object(map));
    })
    .unwrap();
    out
}

/// JSON Lines output equals the library's decoding, record for record.
#[test]
fn decode_pcap_jsonl_equals_library_records() {
    let Some(dir) = fixtures_dir() else { return };
    let pcap = dir.join("6_6_44/tcp_100_sockets_dctcp.pcap");
    let out = decode(&["--pcap", pcap.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let printed: Vec<serde_json::Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let expected = library_records(&pcap);
    assert!(expected.len() > 100, "fixture has {} sockets", expected.len());
    assert_eq!(printed, expected);
}

/// protobufList output is a sequence of length-delimited Envelopes holding
/// every record; csv has its header exactly once.
#[test]
fn decode_pcap_framed_formats_hold_every_record() {
    let Some(dir) = fixtures_dir() else { return };
    let pcap = dir.join("6_6_44/tcp_1000_sockets.pcap");
    let expected = library_records(&pcap).len();

    let out = decode(&["--pcap", pcap.to_str().unwrap(), "--marshal", "protobufList"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let mut bytes = &out.stdout[..];
    let (mut envelopes, mut records) = (0, 0);
    while !bytes.is_empty() {
        let envelope = Envelope::decode_length_delimited(&mut bytes).expect("length-delimited Envelope");
        envelopes += 1;
        records += envelope.records.len();
    }
    assert_eq!(records, expected);
    assert!(
        envelopes > 1,
        "a 1000-socket capture spans several 768 KiB envelopes? got {envelopes}"
    );

    let out = decode(&["--pcap", pcap.to_str().unwrap(), "--marshal", "csv"]);
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    let header = text.lines().next().unwrap();
    assert!(
        header.starts_with("timestamp_ns,") || header.contains("idiag_sport"),
        "{header}"
    );
    assert_eq!(text.lines().filter(|l| *l == header).count(), 1);
    assert_eq!(text.lines().count(), expected + 1);
}

/// A bare netlink stream decodes with --raw.
#[test]
fn decode_raw_stream() {
    let Some(dir) = fixtures_dir() else { return };
    let raw = dir.join("netlink_packets_capture/2024-08-29T12-10-41.559779983-07-00");
    let out = decode(&["--raw", raw.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let lines = String::from_utf8(out.stdout).unwrap().lines().count();
    assert!(lines > 0);
}

/// Empty and corrupt files exit non-zero with a message naming the problem.
#[test]
fn decode_bad_files_fail_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("empty.pcap");
    std::fs::write(&empty, b"").unwrap();
    let out = decode(&["--pcap", empty.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("the file is empty"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let garbage = dir.path().join("garbage.raw");
    std::fs::write(&garbage, [0xffu8; 64]).unwrap();
    let out = decode(&["--raw", garbage.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("raw netlink stream is corrupt"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let missing = dir.path().join("missing.pcap");
    let out = decode(&["--pcap", missing.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("reading"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
