//! `--filter`: the kernel keeps exactly the sockets `ss` keeps with the same
//! expression, and bad expressions stop the start with a pointed error.
//!
//! The sockets are held in a namespace the test makes (a bind mount in a
//! temporary directory, so no other test's sockets are in it), on several
//! ports of several addresses of 127.0.0.0/8 and on ::1. `ss` runs in that
//! namespace with `nsenter` against the same held set.

mod netns_support;
mod support;

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::Command;

use netns_support::*;
use support::{require, require_tool, Need, Xtcp2};

/// A socket as both tools show it: state, local and remote end.
type Seen = (u8, SocketAddr, SocketAddr);

/// The held set: listeners on two IPv4 addresses and ::1, and connections
/// to them from several source addresses.
struct Held {
    _listeners: Vec<TcpListener>,
    _streams: Vec<TcpStream>,
}

fn hold_sockets() -> Held {
    let mut listeners = Vec::new();
    let mut streams = Vec::new();
    let ends: [(&str, u16, &[&str]); 6] = [
        ("127.0.0.1", 7001, &["127.0.0.1", "127.0.0.9"]),
        ("127.0.0.1", 7443, &["127.0.0.1"]),
        ("127.0.0.2", 8443, &["127.0.0.7", "127.0.0.8"]),
        ("127.0.0.3", 9000, &["127.0.0.3"]),
        ("::1", 7001, &["::1"]),
        ("::1", 8443, &["::1", "::1"]),
    ];
    for (addr, port, clients) in ends {
        let ip: IpAddr = addr.parse().expect("address");
        let listener = TcpListener::bind((ip, port)).expect("bind listener");
        for client in clients {
            let from: IpAddr = client.parse().expect("address");
            let socket = match from {
                IpAddr::V4(_) => socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None),
                IpAddr::V6(_) => socket2::Socket::new(socket2::Domain::IPV6, socket2::Type::STREAM, None),
            }
            .expect("socket");
            socket.bind(&SocketAddr::new(from, 0).into()).expect("bind client");
            // Marks for the fwmark expressions: 0x101 on the clients of
            // 127.0.0.7 and 127.0.0.8, 0x2 on those of ::1, none elsewhere
            // (an accepted socket has the listener's mark, 0).
            let mark = match client {
                &"127.0.0.7" | &"127.0.0.8" => 0x101,
                &"::1" => 0x2,
                _ => 0,
            };
            socket.set_mark(mark).expect("SO_MARK (root)");
            socket.connect(&SocketAddr::new(ip, port).into()).expect("connect");
            streams.push(TcpStream::from(socket));
            streams.push(listener.accept().expect("accept").0);
        }
        listeners.push(listener);
    }
    Held {
        _listeners: listeners,
        _streams: streams,
    }
}

/// `ss -Htan EXPR` inside the namespace, as (state, local, remote).
fn ss_sockets(netns: &Path, expr: &str) -> BTreeSet<Seen> {
    let out = Command::new("nsenter")
        .arg(format!("--net={}", netns.display()))
        .args(["ss", "-Htan", expr])
        .output()
        .expect("run ss");
    assert!(
        out.status.success(),
        "ss {expr:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let parse_end = |text: &str| -> SocketAddr {
        let (addr, port) = text.rsplit_once(':').unwrap_or_else(|| panic!("ss end {text:?}"));
        let addr = addr.trim_start_matches('[').trim_end_matches(']');
        let addr = if addr == "*" { "::" } else { addr };
        let ip: IpAddr = addr.parse().unwrap_or_else(|e| panic!("ss address {addr:?}: {e}"));
        let port = if port == "*" { 0 } else { port.parse().expect("ss port") };
        SocketAddr::new(ip, port)
    };
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            let state = match f[0] {
                "ESTAB" => 1,
                "LISTEN" => 10,
                other => panic!("unexpected state {other} in the held set: {line}"),
            };
            (state, parse_end(f[3]), parse_end(f[4]))
        })
        .collect()
}

/// One-shot xtcp2 with `--filter expr`: the namespace's records.
fn xtcp2_sockets(dir: &Path, inode: u64, expr: &str) -> BTreeSet<Seen> {
    let out_dir = tempfile::tempdir().expect("tempdir");
    let file = out_dir.path().join("records.jsonl");
    let out = Xtcp2::new()
        .args(["--max-loops", "1", "--prom-listen", "", "--netns-proc-scan", "false"])
        .arg("--netns-dirs")
        .arg(dir)
        .args(["--marshal", "jsonl", "--deserializers", "info", "--filter", expr])
        .arg("--dest")
        .arg(format!("file:{}", file.display()))
        .output();
    assert!(
        out.status.success(),
        "xtcp2 --filter {expr:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = std::fs::read_to_string(&file).unwrap_or_default();
    let ip = |v: &serde_json::Value| -> IpAddr {
        v.as_str()
            .unwrap_or_else(|| panic!("address {v}"))
            .parse()
            .expect("record address")
    };
    let port = |v: &serde_json::Value| v.as_u64().expect("record port") as u16;
    parse_records(&text)
        .iter()
        .filter(|r| r["netns_inode"] == inode)
        .map(|r| {
            (
                r["idiag_state"].as_u64().expect("state") as u8,
                SocketAddr::new(ip(&r["idiag_src"]), port(&r["idiag_sport"])),
                SocketAddr::new(ip(&r["idiag_dst"]), port(&r["idiag_dport"])),
            )
        })
        .collect()
}

/// For many expressions (ports, prefixes, both families, and/or/not,
/// nesting), the sockets xtcp2 returns equal what `ss` returns with the
/// same expression on the same held sockets; neither set is trivially
/// empty or everything.
#[test]
fn filter_keeps_exactly_what_ss_keeps() {
    if !require(Need::Netns, "the test holds sockets in a namespace it makes")
        || !require_tool("ss", "the reference the filter is compared with")
    {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let netns = BindMountedNetns::new(dir.path(), "filter");
    let inode = netns_inode(&netns.path);
    let _held = in_netns(&netns.path, hold_sockets);

    let all = ss_sockets(&netns.path, "");
    // 6 listeners and 9 connections, both sides.
    assert_eq!(all.len(), 6 + 2 * 9, "held set: {all:?}");
    assert_eq!(xtcp2_sockets(dir.path(), inode, "src 0.0.0.0/0 or src ::/0"), all);

    let expressions = [
        "sport = :7001",
        "dport == :8443",
        "sport != :7001",
        "sport > :7001 and sport < :9000",
        "sport ge :7443 and sport le :8443",
        "dport lt :8000",
        "src 127.0.0.0/8",
        "src 127.0.0.2",
        "dst 127.0.0.0/30",
        "src [::1]",
        "dst [::1]:8443",
        "src 127.0.0.1:7001 or dst 127.0.0.3:9000",
        "not src 127.0.0.1",
        "! ( sport = :7001 or dport = :7001 )",
        "( sport = :8443 or dport = :8443 ) and not src [::1]",
        "src 127.0.0.0/8 dport > :7000 || src [::1] && sport = :7001",
        "not ( dst 127.0.0.8 or ( src [::1] and not dport = :8443 ) ) and sport >= :7001",
        "fwmark = 0x101",
        "fwmark = 0x1/0xff",
        "fwmark != 0",
        "fwmark = 2 or fwmark = 0x100/0x100",
        "not fwmark = 0x2 and src [::1]",
    ];
    for expr in expressions {
        let want = ss_sockets(&netns.path, expr);
        assert!(
            !want.is_empty() && want.len() < all.len(),
            "{expr:?}: ss keeps {} of {}: the expression does not discriminate",
            want.len(),
            all.len()
        );
        let got = xtcp2_sockets(dir.path(), inode, expr);
        assert_eq!(got, want, "--filter {expr:?} differs from ss");
    }
}

/// A syntax error stops the start with exit 2, naming the column and the
/// token; the environment variable works like the flag.
#[test]
fn filter_syntax_error_exits_2_naming_column_and_token() {
    let out = Xtcp2::new()
        .args([
            "--max-loops",
            "1",
            "--prom-listen",
            "",
            "--filter",
            "dport = :443 and dstt 10.0.0.0/8",
        ])
        .output();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("column 18") && stderr.contains("\"dstt\""), "{stderr}");

    let out = Xtcp2::new()
        .args(["--max-loops", "1", "--prom-listen", ""])
        .env("XTCP2_FILTER", "src 10.0.0.0/40")
        .output();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("column 5") && stderr.contains("10.0.0.0/40"),
        "{stderr}"
    );
}
