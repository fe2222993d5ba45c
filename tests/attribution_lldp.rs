//! `--enrich-lldp` against a real LLDP neighbour: Debian's `lldpd` on both
//! ends of a veth pair between two namespaces made by the test, each with
//! a control socket of its own (`-u`) and in the foreground (`-d`, no pid
//! file), the far end named `switch-<pid>` with `configure system hostname`
//! and both sending every second. Once the near end's lldpd sees the
//! neighbour (asked with `lldpcli`, by the test), the built daemon runs in
//! the near namespace with `--uplink-interfaces` naming its veth end and
//! must report the far end's chassis name, chassis id, management address,
//! port id and port description as the far end's own interface shows them
//! (`ip link`, `ip addr`, read by the test). A socket without lldpd leaves
//! the fields absent and the daemon running.
//!
//! Needs root, iproute2, `lldpd` and `lldpcli` (CI installs Debian's
//! lldpd). Both lldpd and both namespaces are removed when the test ends,
//! failing or not. lldpd's privilege separation chroots into /run/lldpd
//! (created by lldpd itself, shared by both instances, left in place).

mod netns_support;
mod support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use netns_support::*;
use support::{find_tool, require, require_tool, run_tool, Need, Xtcp2};

/// How long the near end may take to hear the far end (it sends every
/// second once configured).
const NEIGHBOUR_WITHIN: Duration = Duration::from_secs(30);

/// An lldpd in namespace `ns` on interface `ifname`, killed and reaped on drop.
struct Lldpd {
    child: Child,
    socket: PathBuf,
    lldpcli: PathBuf,
}

impl Lldpd {
    fn start(ns: &NamedNetns, ifname: &str, dir: &Path, name: &str) -> Lldpd {
        let socket = dir.join(format!("{name}.socket"));
        let log = std::fs::File::create(dir.join(format!("{name}.log"))).expect("lldpd log");
        let child = Command::new("ip")
            .args(["netns", "exec", &ns.name])
            .arg(find_tool("lldpd").expect("lldpd"))
            .arg("-d")
            .arg("-u")
            .arg(&socket)
            .args(["-I", ifname])
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("spawn lldpd");
        let lldpd = Lldpd {
            child,
            socket,
            lldpcli: find_tool("lldpcli").expect("lldpcli"),
        };
        let started = Instant::now();
        while !lldpd.socket.exists() {
            assert!(started.elapsed() < Duration::from_secs(10), "lldpd made no socket");
            std::thread::sleep(Duration::from_millis(20));
        }
        // Port settings given before lldpd has found the port are lost:
        // wait until it lists it.
        while !lldpd.cli(&["show", "interfaces"]).contains(ifname) {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "lldpd did not find {ifname}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        lldpd
    }

    fn cli(&self, args: &[&str]) -> String {
        let out = Command::new(&self.lldpcli)
            .arg("-u")
            .arg(&self.socket)
            .args(args)
            .output()
            .expect("lldpcli");
        assert!(
            out.status.success(),
            "lldpcli {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for Lldpd {
    fn drop(&mut self) {
        // The monitor's child (the privilege-separated part) exits with it.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An interface's MAC address inside `ns`, as `ip` shows it.
fn mac_of(ns: &NamedNetns, ifname: &str) -> String {
    let out = Command::new("ip")
        .args(["-n", &ns.name, "-j", "link", "show", ifname])
        .output()
        .expect("ip link");
    let links: serde_json::Value = serde_json::from_slice(&out.stdout).expect("ip -j link");
    links[0]["address"].as_str().expect("address").to_string()
}

/// The daemon in `ns` with `--enrich-lldp` on `socket`, one poll.
fn one_poll(ns: &NamedNetns, socket: &Path, ifname: &str) -> Vec<serde_json::Value> {
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
        .args([
            "--deserializers",
            "info",
            "--enrich-lldp",
            "--uplink-interfaces",
            ifname,
        ])
        .arg("--lldpd-socket")
        .arg(socket)
        .output();
    assert!(
        out.status.success(),
        "xtcp2 failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let records = parse_records(&String::from_utf8_lossy(&out.stdout));
    assert!(!records.is_empty(), "no records");
    records
}

/// The far end's lldpd, seen from the near end, is on every record.
#[test]
fn enrich_lldp_reports_the_neighbour_lldpd_announces() {
    if !require(Need::Netns, "the test makes two namespaces joined by a veth pair")
        || !require_tool("lldpd", "the LLDP neighbour on both ends")
        || !require_tool("lldpcli", "configuring lldpd, and the daemon's client of it")
    {
        return;
    }
    let pid = std::process::id();
    let near = NamedNetns::new(&format!("xtcp2t-{pid}-lldpn"));
    let far = NamedNetns::new(&format!("xtcp2t-{pid}-lldpf"));
    run_tool(Command::new("ip").args([
        "-n", &near.name, "link", "add", "up0", "type", "veth", "peer", "name", "sw7", "netns", &far.name,
    ]));
    run_tool(Command::new("ip").args(["-n", &near.name, "link", "set", "up0", "up"]));
    run_tool(Command::new("ip").args(["-n", &far.name, "addr", "add", "10.203.0.2/24", "dev", "sw7"]));
    run_tool(Command::new("ip").args(["-n", &far.name, "link", "set", "sw7", "up"]));
    let _conn = LoopbackConnection::open_in(&near.path());

    let dir = tempfile::Builder::new()
        .prefix("xtcp2-lldp-")
        .tempdir()
        .expect("tempdir");
    let near_lldpd = Lldpd::start(&near, "up0", dir.path(), "near");
    let far_lldpd = Lldpd::start(&far, "sw7", dir.path(), "far");
    let switch = format!("switch-{pid}");
    far_lldpd.cli(&["configure", "system", "hostname", &switch]);
    far_lldpd.cli(&["configure", "ports", "sw7", "lldp", "portdescription", "rack 7 port 12"]);
    far_lldpd.cli(&["configure", "lldp", "tx-interval", "1"]);
    near_lldpd.cli(&["configure", "lldp", "tx-interval", "1"]);
    let started = Instant::now();
    loop {
        let seen = near_lldpd.cli(&["show", "neighbors"]);
        if seen.contains(&switch) && seen.contains("rack 7 port 12") {
            break;
        }
        assert!(
            started.elapsed() < NEIGHBOUR_WITHIN,
            "the near lldpd never heard {switch} with its port description: {seen}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }

    let far_mac = mac_of(&far, "sw7");
    for r in one_poll(&near, &near_lldpd.socket, "up0") {
        assert_eq!(r["uplink1_ifname"], "up0", "{r}");
        assert_eq!(r["uplink1_lldp_chassis_name"], switch.as_str(), "{r}");
        // lldpd's chassis id is the MAC of its (only) interface, its port
        // id that port's MAC.
        assert_eq!(r["uplink1_lldp_chassis_id"], far_mac.as_str(), "{r}");
        assert_eq!(r["uplink1_lldp_port_id"], far_mac.as_str(), "{r}");
        assert_eq!(r["uplink1_lldp_port_descr"], "rack 7 port 12", "{r}");
        assert_eq!(r["uplink1_lldp_mgmt_ip"], "10.203.0.2", "{r}");
        // Without --enrich-nic only the name of the NIC.
        assert!(r.get("uplink1_nic_driver").is_none(), "{r}");
        assert!(r.get("uplink2_ifname").is_none(), "{r}");
    }

    // A socket nobody serves: the fields are absent, the daemon runs on.
    let nobody = dir.path().join("nobody.socket");
    for r in one_poll(&near, &nobody, "up0") {
        assert_eq!(r["uplink1_ifname"], "up0", "{r}");
        assert!(r.get("uplink1_lldp_chassis_name").is_none(), "{r}");
    }
}
