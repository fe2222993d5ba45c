//! `xtcp2 decode` applies every flag it takes and refuses the daemon's.
//! Regression tests for the flags that `decode` used to accept and ignore
//! silently (`--columns`, `--label`, `--tag`, ...: every flag was global).

mod support;

use std::path::PathBuf;
use std::process::Output;

/// A real capture; `None` (skipped, or a failure under CI) without fixtures.
fn capture() -> Option<PathBuf> {
    let pcap = support::fixtures_dir()?.join("6_6_44/tcp_100_sockets_dctcp.pcap");
    assert!(pcap.is_file(), "fixture {} is missing", pcap.display());
    Some(pcap)
}

fn xtcp2(args: &[&str]) -> Output {
    support::Xtcp2::new().args(args).output()
}

fn stdout(out: &Output) -> String {
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout.clone()).unwrap()
}

/// `decode --marshal csv --columns` prints exactly those columns, in that
/// order (it printed all 143 before).
#[test]
fn decode_columns_select_and_order_csv_columns() {
    let Some(pcap) = capture() else { return };
    let out = xtcp2(&[
        "decode",
        "--pcap",
        pcap.to_str().unwrap(),
        "--marshal",
        "csv",
        "--columns",
        "tcpi_rtt,idiag_sport",
    ]);
    let text = stdout(&out);
    let mut lines = text.lines();
    assert_eq!(lines.next(), Some("tcpi_rtt,idiag_sport"));
    let rows: Vec<&str> = lines.collect();
    assert!(rows.len() > 100, "{} rows", rows.len());
    for row in rows {
        let cells: Vec<&str> = row.split(',').collect();
        assert_eq!(cells.len(), 2, "{row}");
        cells[1].parse::<u16>().unwrap_or_else(|_| panic!("sport {row}"));
    }
}

/// `--label`, `--tag`, `--location` and `--hostname` are stamped on every
/// decoded record (they left no trace before); without `--hostname` no host
/// name is invented for a capture that may come from another host.
#[test]
fn decode_stamps_label_tag_location_and_hostname() {
    let Some(pcap) = capture() else { return };
    let out = xtcp2(&[
        "decode",
        "--pcap",
        pcap.to_str().unwrap(),
        "--label",
        "lab-1",
        "--tag",
        "t9",
        "--location",
        "rack 7",
        "--hostname",
        "capture-host",
    ]);
    let text = stdout(&out);
    let records: Vec<serde_json::Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert!(records.len() > 100);
    for r in &records {
        assert_eq!(r["label"], "lab-1");
        assert_eq!(r["tag"], "t9");
        assert_eq!(r["location"], "rack 7");
        assert_eq!(r["hostname"], "capture-host");
    }
    let plain = stdout(&xtcp2(&["decode", "--pcap", pcap.to_str().unwrap()]));
    let first: serde_json::Value = serde_json::from_str(plain.lines().next().unwrap()).unwrap();
    assert!(first.get("hostname").is_none(), "{first}");
    assert!(first.get("label").is_none(), "{first}");
}

/// `--deserializers` chooses what decode keeps: with only `info`, no
/// congestion name is printed.
#[test]
fn decode_applies_deserializers() {
    let Some(pcap) = capture() else { return };
    let all = stdout(&xtcp2(&["decode", "--pcap", pcap.to_str().unwrap()]));
    assert!(all.contains("\"cong\":"), "the fixture carries the congestion name");
    let info = stdout(&xtcp2(&[
        "decode",
        "--pcap",
        pcap.to_str().unwrap(),
        "--deserializers",
        "info",
    ]));
    assert!(!info.contains("\"cong\":"));
    assert!(info.contains("\"tcpi_rtt\":"));
}

/// A daemon flag given to `decode`, before or after the subcommand, is exit
/// 2 naming it, not silence.
#[test]
fn daemon_flags_are_refused_by_decode() {
    let Some(pcap) = capture() else { return };
    for args in [
        vec!["decode", "--pcap", pcap.to_str().unwrap(), "--dest", "null"],
        vec!["decode", "--pcap", pcap.to_str().unwrap(), "--frequency", "1s"],
        vec!["--frequency", "1s", "decode", "--pcap", pcap.to_str().unwrap()],
        vec!["decode", "--pcap", pcap.to_str().unwrap(), "-maxLoops", "1"],
    ] {
        let out = xtcp2(&args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            (err.contains("unexpected argument") || err.contains("cannot be used with"))
                && (err.contains("--dest") || err.contains("--frequency") || err.contains("maxLoops")),
            "{args:?}: {err}"
        );
    }
}

/// Bad output flags are exit 2 in decode as in the daemon, with the
/// registry's list of valid formats.
#[test]
fn decode_output_flag_errors_are_exit_2() {
    let Some(pcap) = capture() else { return };
    let out = xtcp2(&["decode", "--pcap", pcap.to_str().unwrap(), "--marshal", "xml"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("jsonl, csv, tsv, protobufList, msgpack"), "{err}");
    let out = xtcp2(&["decode", "--pcap", pcap.to_str().unwrap(), "--columns", "nope"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("\"nope\""));
}

/// `--help` lists every registered destination and format.
#[test]
fn help_lists_the_registries() {
    let out = xtcp2(&["--help"]);
    let help = stdout(&out);
    for d in xtcp2::sink::Destination::REGISTERED {
        assert!(help.contains(d.form), "--help lacks {}", d.form);
    }
    for f in xtcp2::format::Format::ALL {
        assert!(help.contains(f.name()), "--help lacks {f}");
    }
}
