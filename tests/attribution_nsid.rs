//! `--populate-nsid` against real namespaces: `ip netns set NAME ID` gives
//! one namespace a known id in the host's table, a second namespace gets
//! none; the built daemon must stamp the first one's records with that id,
//! leave the second one's without `nsid` (read-only: it assigns none), and
//! write no `nsid` at all when the flag is off.
//!
//! Needs root and iproute2. Both namespaces are deleted when the test
//! ends, failing or not.

mod netns_support;
mod support;

use std::process::Command;

use netns_support::*;
use support::{require, run_tool, Need, Xtcp2};

/// The records of one run over the named namespaces, as JSON objects.
fn collect(extra: &[&str]) -> Vec<serde_json::Value> {
    let mut args = vec![
        "--max-loops",
        "1",
        "--prom-listen",
        "",
        "--netns-dirs",
        "/run/netns",
        "--netns-proc-scan=false",
        "--deserializers",
        "info",
    ];
    args.extend_from_slice(extra);
    let out = Xtcp2::new().args(&args).output();
    assert!(
        out.status.success(),
        "xtcp2 failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    parse_records(&String::from_utf8_lossy(&out.stdout))
}

/// Both sides of `conn`, each exactly once.
fn sides<'a>(records: &'a [serde_json::Value], conn: &LoopbackConnection) -> Vec<&'a serde_json::Value> {
    let mut found = with_ports(records, conn.server_port, conn.client_port);
    found.extend(with_ports(records, conn.client_port, conn.server_port));
    assert_eq!(found.len(), 2, "expected both sides once: {found:?}");
    found
}

/// A namespace with an nsid carries it; one without has no `nsid`; with
/// the flag off no record has one, and the lookup assigned nothing.
#[test]
fn populate_nsid_stamps_the_assigned_id_and_assigns_none() {
    if !require(Need::Netns, "the test makes network namespaces and assigns one an nsid") {
        return;
    }
    let pid = std::process::id();
    // Ids are per host table: one unlikely to be taken by a parallel test.
    let id = 3000 + pid % 20_000;
    let with_id = NamedNetns::new(&format!("xtcp2t-{pid}-nsid"));
    let without = NamedNetns::new(&format!("xtcp2t-{pid}-nonsid"));
    run_tool(Command::new("ip").args(["netns", "set", &with_id.name, &id.to_string()]));
    let with_conn = LoopbackConnection::open_in(&with_id.path());
    let without_conn = LoopbackConnection::open_in(&without.path());

    let records = collect(&["--populate-nsid"]);
    for r in sides(&records, &with_conn) {
        assert_eq!(r["netns_name"], with_id.name.as_str());
        assert_eq!(r["nsid"], id, "record of the namespace with nsid {id}: {r}");
    }
    for r in sides(&records, &without_conn) {
        assert!(r.get("nsid").is_none(), "namespace without an nsid got one: {r}");
    }

    // Read-only: the daemon assigned the second namespace no id.
    let ids = Command::new("ip")
        .args(["netns", "list-id"])
        .output()
        .expect("ip netns list-id");
    let listed = String::from_utf8_lossy(&ids.stdout);
    // `nsid 7 (iproute2 netns name: NAME)` per id.
    assert!(
        !listed.contains(&format!("name: {})", without.name)),
        "the daemon assigned an nsid: {listed}"
    );
    assert!(
        listed.contains(&format!("nsid {id} (iproute2 netns name: {})", with_id.name)),
        "{listed}"
    );

    let records = collect(&[]);
    for r in sides(&records, &with_conn) {
        assert!(r.get("nsid").is_none(), "nsid without --populate-nsid: {r}");
    }
}

/// The Go spelling and its environment variable turn it on too.
#[test]
fn populate_nsid_go_flag_and_env_are_taken() {
    let conf = |out: std::process::Output| -> serde_json::Value {
        assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice(&out.stdout).expect("-conf prints JSON")
    };
    let off = conf(Xtcp2::new().args(["-conf"]).env_remove("POPULATE_NSID").output());
    assert_eq!(off["populate-nsid"], "false");
    let flag = conf(Xtcp2::new().args(["-conf", "-populateNsid"]).output());
    assert_eq!(flag["populate-nsid"], "true");
    let env = conf(Xtcp2::new().args(["-conf"]).env("POPULATE_NSID", "true").output());
    assert_eq!(env["populate-nsid"], "true");
}
