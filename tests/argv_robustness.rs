//! No command line makes xtcp2 panic: any argv, bytes included, is either
//! accepted or a usage error with exit status 2 (0 for `--help` and
//! `--version`, 77 when the daemon lacks a capability).
//!
//! Regression of issue 22: a non-UTF-8 argument panicked in
//! `std::env::args()` (exit 101). Now file paths may be any bytes, and any
//! other non-UTF-8 argument is exit 2 with a message naming it.
//!
//! The properties run the parser and validation in-process (many cases),
//! then the real binary (fewer cases, each a process). Raise the counts
//! with `PROPTEST_CASES`.

use std::ffi::OsString;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::Path;
use std::process::{Command, Output, Stdio};

#[path = "common/synthetic_pcap.rs"]
mod synthetic_pcap;

/// The binary with `args`, no environment (no stray `XTCP2_*` variable),
/// in `dir` (where `--profile-path .` would write).
fn xtcp2(args: &[OsString], dir: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_xtcp2"))
        .args(args)
        .env_clear()
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .expect("run xtcp2")
}

fn os(parts: &[&[u8]]) -> Vec<OsString> {
    parts.iter().map(|p| OsString::from_vec(p.to_vec())).collect()
}

/// A one-dump capture in `dir`, under a file name that is not UTF-8.
fn capture_with_non_utf8_name(dir: &Path) -> OsString {
    let mut bytes = synthetic_pcap::pcap_header();
    bytes.extend(synthetic_pcap::dump_record(3));
    let path = dir.join(std::ffi::OsStr::from_bytes(b"capture-\xff\xfe.pcap"));
    std::fs::write(&path, bytes).unwrap();
    path.into_os_string()
}

// ------------------------------------------------- regression: non-UTF-8 ---

/// A non-UTF-8 flag value is exit 2, and the message names the argument
/// (lossily printed), where it used to panic with exit 101.
#[test]
fn non_utf8_flag_value_is_exit_2_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    for argv in [
        os(&[b"--label", b"rack-\xff7"]),
        os(&[b"--label=rack-\xff7"]),
        os(&[b"-label=rack-\xff7"]),
        os(&[b"decode", b"--pcap", b"x.pcap", b"--label", b"rack-\xff7"]),
    ] {
        let out = xtcp2(&argv, dir.path());
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{argv:?}: {stderr}");
        assert!(stderr.contains("is not valid UTF-8"), "{argv:?}: {stderr}");
        assert!(stderr.contains("rack-\u{fffd}7"), "{argv:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{argv:?}: {stderr}");
    }
}

/// A non-UTF-8 word where no argument is expected, or as a flag name, is
/// exit 2 too.
#[test]
fn non_utf8_stray_argument_is_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    for argv in [
        os(&[b"\xff"]),
        os(&[b"--\xff"]),
        os(&[b"-\xff"]),
        os(&[b"decode", b"\xff"]),
    ] {
        let out = xtcp2(&argv, dir.path());
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{argv:?}: {stderr}");
        assert!(stderr.contains('\u{fffd}'), "{argv:?}: {stderr}");
    }
}

/// A file path may be any bytes, as file names are: decode reads a
/// capture whose name is not UTF-8.
#[test]
fn decode_reads_a_capture_whose_path_is_not_utf8() {
    let dir = tempfile::tempdir().unwrap();
    let path = capture_with_non_utf8_name(dir.path());
    let out = xtcp2(&[OsString::from("decode"), OsString::from("--pcap"), path], dir.path());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), 3, "{stderr}");
}

/// A non-UTF-8 environment variable that stands for a flag is exit 2
/// naming the variable.
#[test]
fn non_utf8_environment_variable_is_exit_2_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_xtcp2"))
        .env_clear()
        .env("XTCP2_LABEL", std::ffi::OsStr::from_bytes(b"rack-\xff7"))
        .current_dir(dir.path())
        .output()
        .expect("run xtcp2");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("XTCP2_LABEL"), "{stderr}");
}

// ------------------------------------------------------------ properties ---

use proptest::prelude::*;
use proptest::test_runner::Config as ProptestConfig;
use xtcp2::config::{parse_args_os, CliCommand, Config, OutputConfig};

/// In-process cases per property unless `PROPTEST_CASES` says otherwise.
const PARSER_CASES: u32 = 1000;
/// Cases that run the binary, one process each.
const BINARY_CASES: u32 = 64;

fn cases(default: u32) -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default);
    ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// Every long name and alias the command knows (daemon and decode), as
/// the parser itself lists them, plus clap's own.
fn flag_names() -> Vec<String> {
    fn collect(command: &clap::Command, out: &mut Vec<String>) {
        for arg in command.get_arguments() {
            out.extend(arg.get_long().map(str::to_string));
            out.extend(
                arg.get_all_aliases()
                    .unwrap_or_default()
                    .into_iter()
                    .map(str::to_string),
            );
        }
        for sub in command.get_subcommands() {
            collect(sub, out);
        }
    }
    let mut names = vec!["help".to_string(), "version".to_string()];
    collect(&xtcp2::config::command(), &mut names);
    names.sort();
    names.dedup();
    names
}

/// Values that mean something to some flag, and some that mean nothing.
const VALUES: &[&str] = &[
    "",
    "0",
    "1",
    "-1",
    "4",
    "65536",
    "4294967296",
    "0.5",
    "1e300",
    "nan",
    "-0",
    "10s",
    "500ms",
    "1m",
    "1h",
    "0s",
    "2.5us",
    "5 parsecs",
    "true",
    "false",
    "all",
    "default",
    "info,cong",
    "bogus",
    "jsonl",
    "csv",
    "tsv",
    "protobufList",
    "msgpack",
    "protoJson",
    "xtcp_flat_record.v1",
    "null",
    "stdout",
    "file:",
    "udp:127.0.0.1:9",
    "tcp:",
    "unix:",
    "http://",
    "https://x",
    ":0",
    "127.0.0.1:0",
    "[::1]:0",
    "nohost:99999",
    "/metrics",
    "metrics",
    "cpu",
    "mem",
    "mutex",
    "established,listen",
    "time-wait",
    "idiag_sport,bogus",
    "=",
    "-",
    "--",
    "é",
    "\u{fffd}",
    "\0",
];

/// A value: known, printable noise, any Unicode, or bytes that are not UTF-8.
fn value() -> impl Strategy<Value = OsString> {
    prop_oneof![
        4 => proptest::sample::select(VALUES).prop_map(OsString::from),
        2 => "[ -~]{0,12}".prop_map(OsString::from),
        1 => any::<String>().prop_map(OsString::from),
        2 => proptest::collection::vec(any::<u8>(), 0..12).prop_map(OsString::from_vec),
    ]
}

/// One argv word: a flag in Go or GNU spelling (maybe with `=value`), a
/// value, or one of the words that change how the rest is read.
fn word(names: Vec<String>) -> impl Strategy<Value = OsString> {
    let flag = (
        proptest::sample::select(names),
        any::<bool>(),
        proptest::option::of(value()),
    )
        .prop_map(|(name, go_spelling, inline)| {
            let mut word = OsString::from(if go_spelling { "-" } else { "--" });
            word.push(name);
            if let Some(v) = inline {
                word.push("=");
                word.push(v);
            }
            word
        });
    prop_oneof![
        6 => flag,
        5 => value(),
        1 => proptest::sample::select(vec!["decode", "--", "-", "-h", "-V"]).prop_map(OsString::from),
    ]
}

/// Parses and validates `argv` as `main` does; returns the exit status
/// `main` would give before running anything (`None`: it would run).
fn judge(argv: Vec<OsString>) -> Option<i32> {
    match parse_args_os(argv) {
        Ok(cli) => {
            let valid = match &cli.command {
                Some(CliCommand::Decode(d)) => OutputConfig::from_args(&d.output).is_ok(),
                // gRPC clients: clap validates everything they take.
                Some(CliCommand::Ctl(_) | CliCommand::Client(_)) => true,
                None => Config::from_args(&cli.daemon).is_ok(),
            };
            (!valid).then_some(2)
        }
        Err(e) => {
            assert!(!e.render().to_string().is_empty());
            Some(e.exit_code())
        }
    }
}

/// Flags pinned for runs of the binary, so an argv that validates runs one
/// quick, quiet poll.
const DAEMON_PINNED: &[&str] = &[
    "--max-loops=1",
    "--dest=null",
    "--prom-listen=",
    "--poll-jitter=0s",
    "--pyroscope-url=",
    "--profile-mode=",
    "--netns-dirs=",
    "--netns-proc-scan=false",
];

/// Runs the binary, killing it (and failing) if it runs over 20 s.
fn run_bounded(argv: &[OsString], dir: &Path) -> std::process::ExitStatus {
    let mut child = Command::new(env!("CARGO_BIN_EXE_xtcp2"))
        .args(argv)
        .env_clear()
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn xtcp2");
    let started = std::time::Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if started.elapsed() > std::time::Duration::from_secs(20) {
            let _ = child.kill();
            let _ = child.wait();
            panic!("xtcp2 {argv:?} still running after 20 s");
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}

proptest! {
    #![proptest_config(cases(PARSER_CASES))]

    /// Any argv, bytes included, parses and validates without a panic,
    /// into a configuration or a usage error whose status is 0 (help,
    /// version) or 2.
    #[test]
    fn any_argv_is_a_config_or_a_usage_error(
        decode in any::<bool>(),
        words in proptest::collection::vec(word(flag_names()), 0..8),
    ) {
        let mut argv = vec![OsString::from("xtcp2")];
        if decode {
            argv.push("decode".into());
        }
        argv.extend(words);
        let status = judge(argv);
        prop_assert!(matches!(status, None | Some(0) | Some(2)), "status {:?}", status);
    }
}

proptest! {
    #![proptest_config(cases(BINARY_CASES))]

    /// The real binary on any argv exits 0, 2 or 77 (a missing
    /// capability), or 1 for an unhealthy `-healthcheck`, never 101 (a panic) nor by a signal: as a daemon with
    /// flags that make a valid argv one quick poll, and as `decode` of a
    /// small capture.
    #[test]
    fn the_binary_on_any_argv_exits_0_2_or_77(
        decode in any::<bool>(),
        words in proptest::collection::vec(word(flag_names()), 0..6),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let mut argv: Vec<OsString> = if decode {
            let mut capture = synthetic_pcap::pcap_header();
            capture.extend(synthetic_pcap::dump_record(2));
            std::fs::write(dir.path().join("c.pcap"), capture).unwrap();
            ["decode", "--pcap", "c.pcap"].map(OsString::from).to_vec()
        } else {
            DAEMON_PINNED.iter().map(OsString::from).collect()
        };
        // An argv from the OS cannot hold a NUL byte (each word is a C string).
        argv.extend(words.into_iter().map(|w| {
            OsString::from_vec(w.into_vec().into_iter().filter(|&b| b != 0).collect())
        }));
        let status = run_bounded(&argv, dir.path());
        let mut full = vec![OsString::from("xtcp2")];
        full.extend(argv.iter().cloned());
        // `-healthcheck` starts nothing: it probes the local listener and
        // exits 1 when nothing healthy answers (0 if something on that port
        // answers /readyz with 200).
        let probes = matches!(
            parse_args_os(full.clone()),
            Ok(cli) if cli.command.is_none() && cli.daemon.healthcheck
        );
        prop_assert!(
            matches!(status.code(), Some(0 | 2 | 77)) || (probes && status.code() == Some(1)),
            "xtcp2 {:?}: {:?}",
            argv,
            status
        );
        // And it is the status the parser gave in-process: main adds nothing.
        match judge(full) {
            Some(expected) => prop_assert_eq!(status.code(), Some(expected), "xtcp2 {:?}", argv),
            None if probes => prop_assert!(matches!(status.code(), Some(0 | 1)), "xtcp2 {:?}: {:?}", argv, status),
            None => prop_assert!(matches!(status.code(), Some(0 | 77)), "xtcp2 {:?}: {:?}", argv, status),
        }
    }
}

/// Huge `--netlinkers` / `--queue-envelopes` values once passed validation
/// and then panicked allocating at startup (exit 101); they are usage
/// errors now (config::bounds).
#[test]
fn huge_counts_are_usage_errors_not_panics() {
    let dir = tempfile::tempdir().unwrap();
    for flag in ["--netlinkers", "--queue-envelopes"] {
        let mut argv: Vec<OsString> = DAEMON_PINNED.iter().map(OsString::from).collect();
        argv.extend([flag, "18446744073709551615"].map(OsString::from));
        let status = run_bounded(&argv, dir.path());
        assert_eq!(status.code(), Some(2), "xtcp2 {argv:?}: {status:?}");
    }
}

/// `-healthcheck` with no listener to probe is unhealthy: exit 1, with
/// nothing started (the proptest above met it once and took 1 for a crash).
#[test]
fn healthcheck_without_a_listener_exits_1() {
    let dir = tempfile::tempdir().unwrap();
    let mut argv: Vec<OsString> = DAEMON_PINNED.iter().map(OsString::from).collect();
    argv.push("--healthcheck".into());
    assert_eq!(run_bounded(&argv, dir.path()).code(), Some(1), "xtcp2 {argv:?}");
}
