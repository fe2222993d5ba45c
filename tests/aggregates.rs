//! `--aggregate-metrics` against real namespaces: the aggregates in
//! /metrics say what the records of the same poll say, the series cap holds
//! with its excess counted, series of namespaces that went away disappear,
//! and promtool accepts the exposition.
//!
//! The namespaces are bind mounts in a temporary directory (`--netns-dirs`),
//! each holding a few loopback connections; the daemon polls once an hour,
//! so the one poll it makes is both the records in the file destination and
//! what /metrics shows. Root is needed (CI runs as root).

mod netns_support;
mod observability_support;
mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use netns_support::*;
use observability_support::*;
use support::{require, require_tool, Need, STATE_NAMES};

/// A label set of the aggregates: (netns, pod_uid, container_id).
type LabelSet = (String, String, String);

/// The namespaces of a test and the connections they hold.
struct Namespaces {
    // Declared first: connections close before their namespaces go.
    _connections: Vec<LoopbackConnection>,
    netns: Vec<BindMountedNetns>,
}

/// `count` namespaces named `{prefix}{i}` in `dir`, namespace i holding
/// i % 3 + 1 loopback connections (a listener and both ends each).
fn make_namespaces(dir: &Path, prefix: &str, count: usize) -> Namespaces {
    let mut netns = Vec::new();
    let mut connections = Vec::new();
    for i in 0..count {
        let ns = BindMountedNetns::new(dir, &format!("{prefix}{i}"));
        for _ in 0..(i % 3 + 1) {
            connections.push(LoopbackConnection::open_in(&ns.path));
        }
        netns.push(ns);
    }
    Namespaces {
        _connections: connections,
        netns,
    }
}

/// One sample of the exposition: family-level name, labels, value.
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// The samples whose name starts with `xtcp2_aggregate_`. Our label values
/// hold no commas, quotes or braces.
fn aggregate_samples(exposition: &str) -> Vec<Sample> {
    exposition
        .lines()
        .filter(|l| l.starts_with("xtcp2_aggregate_"))
        .map(|line| {
            let (series, value) = line.rsplit_once(' ').expect("sample value");
            let (name, labels) = match series.split_once('{') {
                Some((name, rest)) => (name, rest.trim_end_matches('}')),
                None => (series, ""),
            };
            let labels = labels
                .split(',')
                .filter(|p| !p.is_empty())
                .map(|pair| {
                    let (k, v) = pair.split_once('=').expect("label pair");
                    (k.to_string(), v.trim_matches('"').to_string())
                })
                .collect();
            Sample {
                name: name.to_string(),
                labels,
                value: value.parse().unwrap_or_else(|e| panic!("value in {line:?}: {e}")),
            }
        })
        .collect()
}

fn label_set(labels: &BTreeMap<String, String>) -> LabelSet {
    let get = |k: &str| labels.get(k).cloned().unwrap_or_default();
    (get("netns"), get("pod_uid"), get("container_id"))
}

/// What one label set holds, from either side.
#[derive(Debug, Default, PartialEq)]
struct Expected {
    /// State name to sockets.
    by_state: BTreeMap<String, u64>,
    rtt_count: u64,
    rtt_sum_us: u64,
    retrans_count: u64,
    retrans_sum: u64,
    acked: u64,
    received: u64,
}

/// The aggregates computed from the records themselves.
fn from_records(records: &[serde_json::Value]) -> BTreeMap<LabelSet, Expected> {
    let mut out: BTreeMap<LabelSet, Expected> = BTreeMap::new();
    for r in records {
        let netns = match r["netns_name"].as_str() {
            Some(name) => name.to_string(),
            None => r["netns_inode"].as_u64().expect("netns_inode").to_string(),
        };
        let text = |k: &str| r[k].as_str().unwrap_or("").to_string();
        let e = out.entry((netns, text("pod_uid"), text("container_id"))).or_default();
        let state = r["idiag_state"].as_u64().expect("idiag_state");
        *e.by_state.entry(STATE_NAMES[state as usize].to_string()).or_default() += 1;
        if state != 10 {
            if let Some(rtt) = r["tcpi_rtt"].as_u64() {
                e.rtt_count += 1;
                e.rtt_sum_us += rtt;
            }
            if let Some(retrans) = r["tcpi_total_retrans"].as_u64() {
                e.retrans_count += 1;
                e.retrans_sum += retrans;
            }
        }
        e.acked += r["tcpi_bytes_acked"].as_u64().unwrap_or(0);
        e.received += r["tcpi_bytes_received"].as_u64().unwrap_or(0);
    }
    out
}

/// The aggregates as the scrape shows them.
fn from_scrape(samples: &[Sample]) -> BTreeMap<LabelSet, Expected> {
    let mut out: BTreeMap<LabelSet, Expected> = BTreeMap::new();
    for s in samples {
        if s.labels.contains_key("le") || !s.labels.contains_key("netns") {
            continue;
        }
        let e = out.entry(label_set(&s.labels)).or_default();
        let v = s.value;
        match s.name.as_str() {
            "xtcp2_aggregate_sockets" => {
                e.by_state.insert(s.labels["state"].clone(), v as u64);
            }
            "xtcp2_aggregate_rtt_seconds_count" => e.rtt_count = v as u64,
            // Microseconds as the exposition's seconds, back to integers.
            "xtcp2_aggregate_rtt_seconds_sum" => e.rtt_sum_us = (v * 1e6).round() as u64,
            "xtcp2_aggregate_retransmitted_segments_count" => e.retrans_count = v as u64,
            "xtcp2_aggregate_retransmitted_segments_sum" => e.retrans_sum = v as u64,
            "xtcp2_aggregate_acked_bytes" => e.acked = v as u64,
            "xtcp2_aggregate_received_bytes" => e.received = v as u64,
            other => panic!("unexpected aggregate sample {other}"),
        }
    }
    out
}

/// Starts a daemon over `dir`'s namespaces that polls every `frequency`
/// (1h: once, for the test's life), writing records to `file`, and waits
/// for the first poll.
fn start_daemon(dir: &Path, file: &Path, frequency: &str, extra: &[&str]) -> HttpDaemon {
    let mut args: Vec<String> = [
        "--frequency",
        frequency,
        "--netns-proc-scan",
        "false",
        "--marshal",
        "jsonl",
        "--aggregate-metrics",
        // The fleet-spreading start delay would hold the first poll back.
        "--poll-jitter-pct",
        "0",
    ]
    .map(String::from)
    .to_vec();
    args.push("--netns-dirs".into());
    args.push(dir.display().to_string());
    args.push("--dest".into());
    args.push(format!("file:{}", file.display()));
    args.extend(extra.iter().map(|s| s.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut daemon = HttpDaemon::start(&args, Stdio::null());
    daemon.wait_ready(Duration::from_secs(30));
    daemon
}

/// Stops the daemon (delivery drained) and reads the records of poll 1.
fn stop_and_read(mut daemon: HttpDaemon, file: &Path) -> Vec<serde_json::Value> {
    daemon.stop_cleanly(Duration::from_secs(20));
    let text = std::fs::read_to_string(file).expect("records file");
    let records = parse_records(&text);
    assert!(records.iter().all(|r| r["poll_seq"] == 1), "one poll only");
    records
}

fn check_promtool(exposition: &str) {
    if require_tool("promtool", "promtool check metrics of the aggregates") {
        let (ok, out) = promtool_check(exposition);
        assert!(
            ok,
            "promtool check metrics failed:\n{out}\n--- exposition ---\n{exposition}"
        );
    }
}

/// Per label set, the state counts, both histograms' counts and sums and
/// the byte sums in /metrics equal what the records of the same poll say,
/// and every bucket series is cumulative up to the count.
#[test]
fn aggregates_equal_what_the_records_of_the_poll_say() {
    if !require(Need::Netns, "the test makes namespaces with connections") {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let out = tempfile::tempdir().expect("tempdir");
    let namespaces = make_namespaces(dir.path(), "agg", 4);
    let file = out.path().join("records.jsonl");
    let daemon = start_daemon(dir.path(), &file, "1h", &[]);
    let exposition = daemon.metrics();
    let records = stop_and_read(daemon, &file);

    let expected = from_records(&records);
    let scraped = from_scrape(&aggregate_samples(&exposition));
    for ns in &namespaces.netns {
        let name = ns.path.file_name().unwrap().to_string_lossy().to_string();
        let set = (name.clone(), String::new(), String::new());
        let e = expected.get(&set).unwrap_or_else(|| panic!("no records of {name}"));
        assert!(e.by_state.get("ESTAB").copied().unwrap_or(0) >= 2, "{name}: {e:?}");
        assert!(e.rtt_count >= 2, "{name}: {e:?}");
    }
    assert_eq!(scraped, expected, "exposition:\n{exposition}");
    assert!(
        !exposition.contains("netns=\"other\""),
        "nothing folded under the default cap"
    );

    // Buckets are cumulative and end at the count.
    let samples = aggregate_samples(&exposition);
    for family in ["xtcp2_aggregate_rtt_seconds", "xtcp2_aggregate_retransmitted_segments"] {
        for (set, e) in &expected {
            let buckets: Vec<f64> = samples
                .iter()
                .filter(|s| s.name == format!("{family}_bucket") && label_set(&s.labels) == *set)
                .map(|s| s.value)
                .collect();
            assert!(
                buckets.windows(2).all(|w| w[0] <= w[1]),
                "{family} {set:?}: {buckets:?}"
            );
            let count = if family.ends_with("seconds") {
                e.rtt_count
            } else {
                e.retrans_count
            };
            assert_eq!(buckets.last().copied(), Some(count as f64), "{family} {set:?} +Inf");
        }
    }
    assert_eq!(
        sample(&exposition, "xtcp2_aggregate_series"),
        Some(expected.len() as f64)
    );
    assert_eq!(sample(&exposition, "xtcp2_aggregate_folded_sockets_total"), Some(0.0));
    check_promtool(&exposition);
}

/// With --aggregate-max-series 3 and ten namespaces (and the daemon's
/// own), /metrics holds exactly three label sets plus `other`, the kept
/// and folded sockets add up to every record, and the folded counter is
/// the sockets under `other`.
#[test]
fn the_series_cap_folds_the_excess_into_other_and_counts_it() {
    if !require(Need::Netns, "the test makes namespaces with connections") {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let out = tempfile::tempdir().expect("tempdir");
    let _namespaces = make_namespaces(dir.path(), "cap", 10);
    let file = out.path().join("records.jsonl");
    let daemon = start_daemon(dir.path(), &file, "1h", &["--aggregate-max-series", "3"]);
    let exposition = daemon.metrics();
    let records = stop_and_read(daemon, &file);

    let samples = aggregate_samples(&exposition);
    let sets: BTreeSet<LabelSet> = samples
        .iter()
        .filter(|s| s.name == "xtcp2_aggregate_sockets")
        .map(|s| label_set(&s.labels))
        .collect();
    let other = ("other".to_string(), "other".to_string(), "other".to_string());
    assert_eq!(sets.len(), 4, "three label sets and other: {sets:?}");
    assert!(sets.contains(&other), "{sets:?}");
    assert_eq!(sample(&exposition, "xtcp2_aggregate_series"), Some(4.0));

    let sockets_of = |set: &LabelSet| -> u64 {
        samples
            .iter()
            .filter(|s| s.name == "xtcp2_aggregate_sockets" && label_set(&s.labels) == *set)
            .map(|s| s.value as u64)
            .sum()
    };
    let total: u64 = sets.iter().map(sockets_of).sum();
    assert_eq!(total, records.len() as u64, "every socket counted once");
    let folded = sockets_of(&other);
    let expected = from_records(&records);
    let kept: u64 = sets
        .iter()
        .filter(|s| **s != other)
        .map(|s| {
            let e = expected.get(s).unwrap_or_else(|| panic!("{s:?} has no records"));
            assert_eq!(e.by_state.values().sum::<u64>(), sockets_of(s), "{s:?}");
            sockets_of(s)
        })
        .sum();
    assert_eq!(kept + folded, records.len() as u64);
    assert!(folded >= 7 * 3, "at least seven namespaces folded: {folded}");
    assert_eq!(
        sample(&exposition, "xtcp2_aggregate_folded_sockets_total"),
        Some(folded as f64)
    );
    check_promtool(&exposition);
}

/// Label sets of namespaces named with `prefix` in a scrape.
fn sets_with_prefix(exposition: &str, prefix: &str) -> BTreeSet<String> {
    aggregate_samples(exposition)
        .iter()
        .filter(|s| s.name == "xtcp2_aggregate_sockets")
        .filter_map(|s| s.labels.get("netns").filter(|n| n.starts_with(prefix)).cloned())
        .collect()
}

/// Waits until the namespaces named with `prefix` in /metrics are `want`;
/// returns the largest number of label sets seen meanwhile.
fn wait_for_sets(daemon: &HttpDaemon, prefix: &str, want: &BTreeSet<String>) -> usize {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut most = 0;
    loop {
        let m = daemon.metrics();
        most = most.max(sample(&m, "xtcp2_aggregate_series").unwrap_or(0.0) as usize);
        let seen = sets_with_prefix(&m, prefix);
        if seen == *want {
            return most;
        }
        assert!(Instant::now() < deadline, "{prefix}*: {seen:?}, want {want:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Namespaces come and go: the series of the gone disappear with the next
/// poll and the number of label sets does not grow past the live ones.
#[test]
fn series_of_vanished_namespaces_disappear() {
    if !require(Need::Netns, "the test makes namespaces with connections") {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let out = tempfile::tempdir().expect("tempdir");
    let file = out.path().join("records.jsonl");
    let mut daemon = start_daemon(dir.path(), &file, "200ms", &[]);
    let names = |n: &Namespaces| -> BTreeSet<String> {
        n.netns
            .iter()
            .map(|ns| ns.path.file_name().unwrap().to_string_lossy().to_string())
            .collect()
    };
    let first = make_namespaces(dir.path(), "come", 6);
    let base = wait_for_sets(&daemon, "come", &names(&first));
    drop(first);
    let most_gone = wait_for_sets(&daemon, "come", &BTreeSet::new());
    let second = make_namespaces(dir.path(), "again", 6);
    let most_again = wait_for_sets(&daemon, "again", &names(&second));
    assert!(sets_with_prefix(&daemon.metrics(), "come").is_empty());
    // The host's label set(s) plus six of ours at most, at every scrape.
    assert!(
        most_gone <= base && most_again <= base,
        "label sets grew: {base} then {most_gone}, {most_again}"
    );
    daemon.stop_cleanly(Duration::from_secs(20));
}

/// With `--emit changed` the later polls send nothing for idle sockets,
/// but the aggregates still count every socket of each poll: the third
/// poll's state counts equal the records of the first (all first
/// sightings, nothing changed since).
#[test]
fn aggregates_count_the_sockets_that_changed_only_records_leave_out() {
    if !require(Need::Netns, "the test makes namespaces with connections") {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let out = tempfile::tempdir().expect("tempdir");
    let _namespaces = make_namespaces(dir.path(), "chg", 3);
    let file = out.path().join("records.jsonl");
    let daemon = start_daemon(
        dir.path(),
        &file,
        "500ms",
        &["--emit", "changed", "--emit-heartbeat", "1000"],
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    let exposition = loop {
        let exposition = daemon.metrics();
        if sample(&exposition, "xtcp2_poll_cycles_total").unwrap_or(0.0) >= 3.0 {
            break exposition;
        }
        assert!(Instant::now() < deadline, "three polls within 30 s");
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut daemon = daemon;
    daemon.stop_cleanly(Duration::from_secs(20));
    // The test's namespaces only: the host's own sockets are busy.
    let records: Vec<serde_json::Value> = parse_records(&std::fs::read_to_string(&file).expect("records file"))
        .into_iter()
        .filter(|r| r["netns_name"].as_str().is_some_and(|n| n.starts_with("chg")))
        .collect();
    let first: Vec<serde_json::Value> = records.iter().filter(|r| r["poll_seq"] == 1).cloned().collect();
    let later = records.len() - first.len();
    assert!(
        !first.is_empty() && later == 0,
        "idle sockets are sent once: {} then {later}",
        first.len()
    );
    let by_state = |sets: BTreeMap<LabelSet, Expected>| -> BTreeMap<LabelSet, BTreeMap<String, u64>> {
        sets.into_iter()
            .filter(|(set, _)| set.0.starts_with("chg"))
            .map(|(set, e)| (set, e.by_state))
            .collect()
    };
    let expected = by_state(from_records(&first));
    assert_eq!(expected.len(), 3, "{expected:?}");
    assert_eq!(
        by_state(from_scrape(&aggregate_samples(&exposition))),
        expected,
        "exposition:\n{exposition}"
    );
}
