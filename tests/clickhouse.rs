//! Real ClickHouse (chdb, ClickHouse in-process, driven by
//! tests/clickhouse/run_queries.py) reads the files xtcp2 writes:
//! protobufList with the project's proto/xtcp2.proto, jsonl as
//! JSONEachRow, csv as CSVWithNames and tsv as TSVWithNames. Counts and
//! sampled values must equal what xtcp2 wrote.
//!
//! ClickHouse's `ProtobufList` reads exactly one length-delimited Envelope
//! per input (its reader fails on bytes after the first Envelope), so a
//! protobufList file is read with `ProtobufList` when it holds one envelope
//! and with `Protobuf` + `ARRAY JOIN records` when it holds several; both
//! are checked.
//!
//! Needs chdb: outside CI the tests are skipped, saying why, when it cannot
//! be imported; under CI that fails them. ci/install-deps.sh installs it with
//! python3 -m venv /var/cache/xtcp2-ci/venv && /var/cache/xtcp2-ci/venv/bin/pip install chdb
//! (XTCP2_PYTHON names another interpreter, see support::python).

mod sinks_support;
mod support;

use std::path::Path;
use std::sync::Arc;

use sinks_support::*;
use support::{clickhouse, python, require, require_python_module, Need, Xtcp2, DAEMON_CAPABILITIES};
use xtcp2::batch::Envelope;
use xtcp2::format::{Format, StreamFormat};
use xtcp2::record::Record;
use xtcp2::sink::Sink;

/// True when chdb can be imported (see [`support::require`]).
fn chdb_available() -> bool {
    require_python_module(&python(), "chdb", "ClickHouse in-process reads the files")
}

fn proto_schema() -> String {
    format!("{}/proto/xtcp2.proto:Record", env!("CARGO_MANIFEST_DIR"))
}

/// Writes `records` through the real file sink, `rows_per_envelope` per envelope.
fn write_file(path: &Path, format: Format, records: &[Record], rows_per_envelope: usize) {
    let stream = StreamFormat::new(format.name(), &[]).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut sink = Sink::open(&format!("file:{}", path.display()), &stream).await.unwrap();
        let mut encoder = stream.encoder();
        for chunk in records.chunks(rows_per_envelope) {
            let envelope = Envelope::from_records(encoder.as_mut(), chunk, Arc::from("h"), 1);
            sink.send(&envelope).await.unwrap();
        }
    });
}

/// The `FROM` clause and settings that read `path` in `format`.
fn source(path: &Path, format: Format) -> (String, String) {
    let p = path.display();
    match format {
        Format::ProtobufList => (
            format!("file('{p}', 'ProtobufList')"),
            format!("SETTINGS format_schema = '{}'", proto_schema()),
        ),
        Format::Jsonl => (format!("file('{p}', 'JSONEachRow')"), String::new()),
        Format::Csv => (
            format!("file('{p}', 'CSVWithNames')"),
            "SETTINGS input_format_try_infer_datetimes = 0".into(),
        ),
        Format::Tsv => (
            format!("file('{p}', 'TSVWithNames')"),
            "SETTINGS input_format_try_infer_datetimes = 0".into(),
        ),
        Format::Msgpack => unreachable!("ClickHouse's MsgPack format is positional, not maps"),
        Format::ProtoJson | Format::ProtoText => unreachable!("not a ClickHouse input format"),
    }
}

/// SQL text of an address column, as std prints it.
fn address_sql(format: Format, column: &str) -> String {
    match format {
        Format::ProtobufList => format!(
            "if(length({column}) = 4, IPv4NumToString(reinterpretAsUInt32(reverse({column}))), IPv6NumToString(toFixedString({column}, 16)))"
        ),
        _ => format!("toString({column})"),
    }
}

/// SQL of the timestamp in nanoseconds.
fn timestamp_sql(format: Format) -> &'static str {
    match format {
        Format::Csv | Format::Tsv => "toUnixTimestamp64Nano(parseDateTime64BestEffort(timestamp_ns, 9, 'UTC'))",
        _ => "timestamp_ns",
    }
}

/// The LISTEN test in SQL: csv/tsv hold the state's name.
fn listen_sql(format: Format) -> &'static str {
    match format {
        Format::Csv | Format::Tsv => "idiag_state = 'LISTEN'",
        _ => "idiag_state = 10",
    }
}

/// ClickHouse reads the known collection in every format it can, and
/// agrees with xtcp2 on the count, on aggregates over every record and on
/// sampled records' values (strings that need CSV quoting and TSV escaping
/// included).
#[test]
fn clickhouse_reads_the_known_collection() {
    let Some(records) = known_collection() else { return };
    if !chdb_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let n = records.len() as u64;
    let sum_rtt: u64 = records.iter().filter_map(|r| r.tcpi_rtt).map(u64::from).sum();
    let sum_sport: u64 = records.iter().filter_map(|r| r.idiag_sport).map(u64::from).sum();
    let listeners = records.iter().filter(|r| r.idiag_state == Some(10)).count();
    let min_ts = records.iter().filter_map(|r| r.timestamp_ns).min().unwrap();
    let max_ts = records.iter().filter_map(|r| r.timestamp_ns).max().unwrap();
    let expected_aggregates = format!(
        "{n}\t{}\t{sum_rtt}\t{sum_sport}\t{listeners}\t{min_ts}\t{max_ts}\t{n}",
        n * (n - 1) / 2
    );
    let mut samples: Vec<&Record> = [1usize, records.len() / 3, 2 * records.len() / 3]
        .iter()
        .map(|&i| {
            records[i..]
                .iter()
                .find(|r| r.tcpi_rtt.is_some() && r.cong.is_some())
                .unwrap()
        })
        .collect();
    // An IPv6 socket too, so ClickHouse's IPv6 text is compared with ours.
    samples.push(
        records
            .iter()
            .find(|r| r.idiag_family == Some(10) && r.tcpi_rtt.is_some() && r.cong.is_some())
            .expect("an IPv6 socket"),
    );
    samples.sort_by_key(|r| r.poll_seq);
    samples.dedup_by_key(|r| r.poll_seq);
    let expected_samples = samples
        .iter()
        .map(|r| {
            format!(
                "{}\t{}\t{}\t{}\t{}\t{}",
                r.poll_seq.unwrap(),
                r.idiag_sport.unwrap(),
                r.tcpi_rtt.unwrap(),
                r.cong.unwrap().as_str(),
                r.idiag_src.unwrap(),
                r.idiag_dst.unwrap()
            )
        })
        .collect::<Vec<_>>()
        .join("\n");
    let sample_seqs = samples
        .iter()
        .map(|r| r.poll_seq.unwrap().to_string())
        .collect::<Vec<_>>()
        .join(", ");

    let mut queries = Vec::new();
    let formats = [Format::ProtobufList, Format::Jsonl, Format::Csv, Format::Tsv];
    for format in formats {
        let path = dir.path().join(format!("collection.{format}"));
        // protobufList: one envelope, as ClickHouse's ProtobufList reads one.
        let rows_per_envelope = if format == Format::ProtobufList {
            records.len()
        } else {
            200
        };
        write_file(&path, format, &records, rows_per_envelope);
        let (from, settings) = source(&path, format);
        queries.push(format!(
            "SELECT count(), sum(poll_seq), sum(tcpi_rtt), sum(idiag_sport), countIf({}), min({ts}), max({ts}), \
             countIf(hostname = 'fixture-host' AND label = 'rack 7, \"blue\"' AND tag = 'tab\\there\\\\back' AND location = 'line\\nbreak') \
             FROM {from} {settings}",
            listen_sql(format),
            ts = timestamp_sql(format),
        ));
        queries.push(format!(
            "SELECT poll_seq, idiag_sport, tcpi_rtt, cong, {}, {} FROM {from} WHERE poll_seq IN ({sample_seqs}) ORDER BY poll_seq {settings}",
            address_sql(format, "idiag_src"),
            address_sql(format, "idiag_dst"),
        ));
    }
    // Several envelopes in one protobufList file: Protobuf + ARRAY JOIN.
    let multi = dir.path().join("collection-multi.protobufList");
    write_file(&multi, Format::ProtobufList, &records, 150);
    queries.push(format!(
        "SELECT count(), sum(r.poll_seq), sum(r.tcpi_rtt) FROM file('{}', 'Protobuf') ARRAY JOIN records AS r SETTINGS format_schema = '{}'",
        multi.display(),
        proto_schema().replace(":Record", ":Envelope")
    ));

    let results = clickhouse(&queries);
    for (i, format) in formats.iter().enumerate() {
        assert_eq!(results[2 * i], expected_aggregates, "{format}: aggregates");
        assert_eq!(results[2 * i + 1], expected_samples, "{format}: sampled records");
    }
    assert_eq!(
        results[8],
        format!("{n}\t{}\t{sum_rtt}", n * (n - 1) / 2),
        "multi-envelope protobufList"
    );
}

/// Files the real daemon wrote (one-shot of this machine's sockets) are
/// read by ClickHouse with the row count the daemon reports and the same
/// sums our own decoder finds in them.
#[test]
fn clickhouse_reads_what_the_daemon_wrote() {
    if !require(Need::Root, DAEMON_CAPABILITIES) || !chdb_available() {
        return;
    }
    let _listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dirs = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let mut queries = Vec::new();
    let mut expected = Vec::new();
    // (format, extra flags): one envelope for ProtobufList; many for Protobuf.
    let runs: [(Format, &[&str], &str); 4] = [
        (
            Format::ProtobufList,
            &[
                "--envelope-flush-rows",
                "1000000",
                "--envelope-flush-bytes",
                "1000000000",
            ],
            "one",
        ),
        (Format::ProtobufList, &["--envelope-flush-rows", "7"], "many"),
        (Format::Jsonl, &[], "jsonl"),
        (Format::Csv, &[], "csv"),
    ];
    for (format, flags, name) in runs {
        let path = out.path().join(format!("daemon-{name}"));
        let output = Xtcp2::new()
            .args([
                "--max-loops",
                "1",
                "--prom-listen",
                "",
                "--netns-proc-scan=false",
                "--netlinkers",
                "1",
                "--marshal",
                format.name(),
            ])
            .arg("--netns-dirs")
            .arg(dirs.path())
            .arg("--dest")
            .arg(format!("file:{}", path.display()))
            .args(flags)
            .env("XTCP2_LOG", "info")
            .output();
        let log = String::from_utf8_lossy(&output.stderr);
        assert!(output.status.success(), "{name}: {log}");
        let rows_sent: u64 = log
            .lines()
            .find(|l| l.contains("delivery finished"))
            .and_then(|l| l.split_whitespace().find_map(|kv| kv.strip_prefix("rows_sent=")))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{name}: no rows_sent in\n{log}"));
        let rows = decode_output(format, &std::fs::read(&path).unwrap());
        assert_eq!(
            rows.len() as u64,
            rows_sent,
            "{name}: our decoder and the daemon disagree"
        );
        let sum = |field: &str| {
            rows.iter()
                .filter_map(|r| r.get(field))
                .map(|v| v.parse::<u64>().unwrap())
                .sum::<u64>()
        };
        expected.push(format!("{rows_sent}\t{}\t{}", sum("idiag_sport"), sum("tcpi_segs_out")));
        let query = if name == "many" {
            format!(
                "SELECT count(), sum(r.idiag_sport), sum(r.tcpi_segs_out) FROM file('{}', 'Protobuf') ARRAY JOIN records AS r SETTINGS format_schema = '{}'",
                path.display(),
                proto_schema().replace(":Record", ":Envelope")
            )
        } else {
            let (from, settings) = source(&path, format);
            format!("SELECT count(), sum(idiag_sport), sum(tcpi_segs_out) FROM {from} {settings}")
        };
        queries.push(query);
    }
    let results = clickhouse(&queries);
    for ((result, expected), (_, _, name)) in results.iter().zip(&expected).zip(runs) {
        assert_eq!(result, expected, "{name}");
    }
}
