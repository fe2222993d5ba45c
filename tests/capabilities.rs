//! The startup capability check of the real binary, with capabilities
//! really removed: `setpriv` drops them from the bounding (and inheritable)
//! set before exec, and for a root process exec then leaves them out of
//! the permitted and effective sets. Needs root and setpriv (util-linux).
//!
//! Contract (docs/contract.md, docs/observability.md): a missing
//! CAP_NET_ADMIN or CAP_SYS_ADMIN prints one exact line each plus a systemd
//! snippet and exits 77, before anything is opened; missing soft
//! capabilities log a warning each and the daemon runs.

mod support;

use std::net::TcpListener;
use std::process::Output;

use support::{require, require_tool, Need, Xtcp2};

const NET_ADMIN_LINE: &str = "xtcp2: missing capability CAP_NET_ADMIN: required for netlink inet_diag queries";
const SYS_ADMIN_LINE: &str =
    "xtcp2: missing capability CAP_SYS_ADMIN: required for setns(CLONE_NEWNET) into each network namespace";
const SNIPPET: &str = "xtcp2: cannot start without them. Grant them, e.g. in the systemd unit:

[Service]
AmbientCapabilities=CAP_NET_ADMIN CAP_SYS_ADMIN CAP_SYS_PTRACE CAP_NET_RAW CAP_SYS_RESOURCE
CapabilityBoundingSet=CAP_NET_ADMIN CAP_SYS_ADMIN CAP_SYS_PTRACE CAP_NET_RAW CAP_SYS_RESOURCE

or run as root. Exiting with code 77.
";

/// Root (capabilities to drop) and setpriv (util-linux) to drop them.
fn can_run() -> bool {
    require(Need::Root, "capabilities are dropped from a process that has them")
        && require_tool("setpriv", "setpriv drops the capabilities before exec")
}

/// Runs xtcp2 with `drop` (setpriv names, e.g. "net_admin") removed.
fn run_without(drop: &[&str], args: &[&str]) -> Output {
    let list: Vec<String> = drop.iter().map(|c| format!("-{c}")).collect();
    let list = list.join(",");
    Xtcp2::under(
        "setpriv",
        [
            format!("--bounding-set={list}"),
            format!("--inh-caps={list}"),
            "--".into(),
        ],
    )
    .args(args)
    .env("XTCP2_LOG", "info")
    .output()
}

/// Stderr without tracing's log lines (soft-capability warnings may
/// precede the fatal message).
fn message_lines(stderr: &str) -> String {
    stderr
        .lines()
        .filter(|l| !l.contains(" WARN ") && !l.contains(" INFO "))
        .map(|l| format!("{l}\n"))
        .collect()
}

/// Asserts exit 77, nothing on stdout, and exactly `missing` lines then
/// the snippet on stderr. A port held by the test is passed as
/// --prom-listen: had the daemon bound it before checking, it would have
/// failed with exit 1 instead, so 77 proves the check runs first.
fn assert_refused(drop: &[&str], missing: &[&str]) {
    let held = TcpListener::bind("127.0.0.1:0").unwrap();
    let listen = held.local_addr().unwrap().to_string();
    let out = run_without(drop, &["--prom-listen", &listen, "--dest", "null", "--max-loops", "1"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(77), "stderr:\n{stderr}");
    assert!(
        out.stdout.is_empty(),
        "stdout: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    let expected: String = missing.iter().map(|l| format!("{l}\n")).collect::<String>() + SNIPPET;
    assert_eq!(message_lines(&stderr), expected);
}

/// Without CAP_NET_ADMIN: the NET_ADMIN line, the snippet, exit 77.
#[test]
fn missing_net_admin_exits_77_with_the_contract_message() {
    if !can_run() {
        return;
    }
    assert_refused(&["net_admin"], &[NET_ADMIN_LINE]);
}

/// Without CAP_SYS_ADMIN: the SYS_ADMIN line, the snippet, exit 77.
#[test]
fn missing_sys_admin_exits_77_with_the_contract_message() {
    if !can_run() {
        return;
    }
    assert_refused(&["sys_admin"], &[SYS_ADMIN_LINE]);
}

/// Without both: both lines, NET_ADMIN first, the snippet, exit 77.
#[test]
fn missing_both_hard_capabilities_names_both() {
    if !can_run() {
        return;
    }
    assert_refused(&["net_admin", "sys_admin"], &[NET_ADMIN_LINE, SYS_ADMIN_LINE]);
}

/// A bad flag is a usage error (exit 2, naming the flag) even without the
/// capabilities: the flags are checked first, so a typo is not reported
/// as a permissions problem.
#[test]
fn bad_flags_are_exit_2_before_the_capability_check() {
    if !can_run() {
        return;
    }
    let out = run_without(&["net_admin", "sys_admin"], &["--frequency", "1s", "--timeout", "5s"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "stderr:\n{stderr}");
    assert!(
        stderr.contains("--timeout (5s) must be shorter than --frequency"),
        "{stderr}"
    );
    assert!(!stderr.contains("CAP_NET_ADMIN"), "{stderr}");
}

/// Without the soft capabilities the daemon warns once per capability,
/// naming it, then runs a one-shot collection and exits 0.
#[test]
fn missing_soft_capabilities_warn_and_run() {
    if !can_run() {
        return;
    }
    let out = run_without(
        &["sys_ptrace", "net_raw", "sys_resource"],
        &[
            "--max-loops",
            "1",
            "--dest",
            "null",
            "--prom-listen",
            "",
            "--netns-proc-scan=false",
            "--netns-dirs",
            "",
        ],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "stderr:\n{stderr}");
    for cap in ["CAP_SYS_PTRACE", "CAP_NET_RAW", "CAP_SYS_RESOURCE"] {
        let warnings: Vec<&str> = stderr
            .lines()
            .filter(|l| l.contains(" WARN ") && l.contains(&format!("missing capability {cap}:")))
            .collect();
        assert_eq!(warnings.len(), 1, "{cap}: expected one warning in:\n{stderr}");
    }
    assert!(
        !stderr.contains("CAP_NET_ADMIN") && !stderr.contains("CAP_SYS_ADMIN"),
        "{stderr}"
    );
}
