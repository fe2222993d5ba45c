//! `--enrich-nic` against real interfaces: the test makes a namespace of
//! its own with a bridge and a veth interface, each carrying a default
//! route (br0 metric 10, veth0 metric 20), and runs the built daemon inside
//! it (`ip netns exec`, which also gives it that namespace's
//! /sys/class/net). A bridge rather than a dummy: both are virtual NICs
//! without a PCI device, and the bridge driver is built into kernels (this
//! machine's included) that ship `dummy` as a module or not at all. The
//! uplink slots must name those interfaces in metric order with the
//! drivers the kernel gives them ("bridge", "veth"), the speed the kernel
//! reports (read back by the test from sysfs), and no PCI ids, model, bus
//! address or firmware (a virtual NIC has none: absent, not zero). Explicit
//! `--uplink-interfaces`, `--uplink-count 1`, and a route change while the
//! daemon runs (it re-reads on rtnetlink news) are checked too.
//!
//! Needs root and iproute2. The namespace (and with it every interface in
//! it) is deleted and the daemon killed when the test ends, failing or not.

mod netns_support;
mod support;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use netns_support::*;
use support::{require, run_tool, Need, Xtcp2};

const NIC_FIELDS: [&str; 7] = [
    "nic_driver",
    "nic_model",
    "nic_pci_vendor",
    "nic_pci_device",
    "nic_bus_info",
    "nic_speed_mbps",
    "nic_fw_version",
];

/// A namespace with bridge br0 (default route, metric 10) and veth0 (peer
/// veth1, default route, metric 20), all up.
fn uplink_namespace(test: &str) -> NamedNetns {
    let ns = NamedNetns::new(&format!("xtcp2t-{}-{test}", std::process::id()));
    let ip = |args: &[&str]| {
        let mut all = vec!["-n", ns.name.as_str()];
        all.extend_from_slice(args);
        run_tool(Command::new("ip").args(&all));
    };
    ip(&["link", "add", "br0", "type", "bridge"]);
    ip(&["link", "add", "veth0", "type", "veth", "peer", "name", "veth1"]);
    for link in ["br0", "veth0", "veth1"] {
        ip(&["link", "set", link, "up"]);
    }
    ip(&["addr", "add", "10.201.1.1/24", "dev", "br0"]);
    ip(&["addr", "add", "10.201.2.1/24", "dev", "veth0"]);
    ip(&[
        "route",
        "add",
        "default",
        "via",
        "10.201.1.254",
        "dev",
        "br0",
        "metric",
        "10",
    ]);
    ip(&[
        "route",
        "add",
        "default",
        "via",
        "10.201.2.2",
        "dev",
        "veth0",
        "metric",
        "20",
    ]);
    ns
}

/// What the kernel says the interface's speed is, read by the test inside
/// the namespace; `None` when it reports none.
fn kernel_speed(ns: &NamedNetns, ifname: &str) -> Option<u64> {
    let out = Command::new("ip")
        .args(["netns", "exec", &ns.name, "cat"])
        .arg(format!("/sys/class/net/{ifname}/speed"))
        .output()
        .expect("cat speed");
    let text = String::from_utf8_lossy(&out.stdout);
    text.trim().parse::<i64>().ok().and_then(|s| u64::try_from(s).ok())
}

/// The daemon in `ns`, one poll, its own namespace only.
fn daemon_in(ns: &NamedNetns) -> Xtcp2 {
    let mut xtcp2 = Xtcp2::under("ip", ["netns", "exec", ns.name.as_str()]);
    xtcp2.args([
        "--prom-listen",
        "",
        "--netns-dirs",
        "",
        "--netns-proc-scan=false",
        "--deserializers",
        "info",
        "--enrich-nic",
    ]);
    xtcp2
}

fn one_poll(ns: &NamedNetns, extra: &[&str]) -> Vec<serde_json::Value> {
    let out = daemon_in(ns).args(["--max-loops", "1"]).args(extra).output();
    assert!(
        out.status.success(),
        "xtcp2 failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let records = parse_records(&String::from_utf8_lossy(&out.stdout));
    assert!(!records.is_empty(), "no records");
    records
}

/// Checks slot `slot` describes virtual interface `ifname` of `driver`.
fn assert_slot(ns: &NamedNetns, r: &serde_json::Value, slot: u8, ifname: &str, driver: &str) {
    let f = |name: &str| r.get(format!("uplink{slot}_{name}"));
    assert_eq!(f("ifname").and_then(|v| v.as_str()), Some(ifname), "{r}");
    assert_eq!(f("nic_driver").and_then(|v| v.as_str()), Some(driver), "{r}");
    assert_eq!(
        f("nic_speed_mbps").and_then(|v| v.as_u64()),
        kernel_speed(ns, ifname),
        "speed of {ifname}: {r}"
    );
    for absent in [
        "nic_model",
        "nic_pci_vendor",
        "nic_pci_device",
        "nic_bus_info",
        "nic_fw_version",
    ] {
        assert!(f(absent).is_none(), "a virtual NIC has no {absent}: {r}");
    }
}

fn assert_slot_empty(r: &serde_json::Value, slot: u8) {
    assert!(r.get(format!("uplink{slot}_ifname")).is_none(), "{r}");
    for name in NIC_FIELDS {
        assert!(r.get(format!("uplink{slot}_{name}")).is_none(), "{r}");
    }
}

/// Default routes give the slots in metric order; every record carries
/// the same uplinks; explicit interfaces and a count of 1 are obeyed; the
/// flag off writes no uplink field.
#[test]
fn enrich_nic_names_the_default_route_interfaces_with_kernel_drivers() {
    if !require(
        Need::Netns,
        "the test makes a namespace with bridge and veth interfaces",
    ) {
        return;
    }
    let ns = uplink_namespace("upl");
    let _conn = LoopbackConnection::open_in(&ns.path());

    let records = one_poll(&ns, &[]);
    for r in &records {
        assert_slot(&ns, r, 1, "br0", "bridge");
        assert_slot(&ns, r, 2, "veth0", "veth");
    }
    // veth reports a speed, so "absent" above was not the only outcome.
    assert!(kernel_speed(&ns, "veth0").is_some(), "veth0 reports no speed");

    let records = one_poll(&ns, &["--uplink-interfaces", "veth0"]);
    for r in &records {
        assert_slot(&ns, r, 1, "veth0", "veth");
        assert_slot_empty(r, 2);
    }
    let records = one_poll(&ns, &["-uplinkCount", "1"]);
    for r in &records {
        assert_slot(&ns, r, 1, "br0", "bridge");
        assert_slot_empty(r, 2);
    }

    let out = Xtcp2::under("ip", ["netns", "exec", ns.name.as_str()])
        .args([
            "--max-loops",
            "1",
            "--prom-listen",
            "",
            "--netns-dirs",
            "",
            "--netns-proc-scan=false",
        ])
        .output();
    assert!(out.status.success());
    for r in parse_records(&String::from_utf8_lossy(&out.stdout)) {
        assert_slot_empty(&r, 1);
        assert_slot_empty(&r, 2);
    }

    let out = Xtcp2::new().args(["-conf", "-uplinkCount", "3"]).output();
    assert_eq!(out.status.code(), Some(2), "an uplink count of 3 must be refused");
}

/// When the bridge's default route goes away while the daemon runs, the
/// records of later polls name veth0 as the first and only uplink.
#[test]
fn enrich_nic_follows_a_route_change() {
    if !require(
        Need::Netns,
        "the test makes a namespace with bridge and veth interfaces",
    ) {
        return;
    }
    let ns = uplink_namespace("uplchg");
    let _conn = LoopbackConnection::open_in(&ns.path());
    let mut daemon = daemon_in(&ns)
        .args(["--frequency", "300ms"])
        .stdout(Stdio::piped())
        .spawn();
    let (tx, rx) = mpsc::channel();
    let stdout = daemon.take_stdout();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if let Ok(record) = serde_json::from_str::<serde_json::Value>(&line) {
                if tx.send(record).is_err() {
                    break;
                }
            }
        }
    });
    let first_uplink = |want: &str, within: Duration| {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let r = rx
                .recv_timeout(left)
                .unwrap_or_else(|_| panic!("no record with uplink1 {want} within {within:?}"));
            if r["uplink1_ifname"] == want {
                return r;
            }
        }
    };
    let before = first_uplink("br0", Duration::from_secs(20));
    assert_eq!(before["uplink2_ifname"], "veth0");
    run_tool(Command::new("ip").args(["-n", &ns.name, "route", "del", "default", "dev", "br0"]));
    let after = first_uplink("veth0", Duration::from_secs(10));
    assert_slot(&ns, &after, 1, "veth0", "veth");
    assert_slot_empty(&after, 2);
    daemon.kill();
}
