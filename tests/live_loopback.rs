//! Live kernel: real TCP connections on 127.0.0.1 and ::1, dumped over a
//! real `NETLINK_SOCK_DIAG` socket, must come back with the states, ports
//! and counters the test created; a second decoder (netlink-packet-sock-diag)
//! must agree on the very same received bytes; and the built `xtcp2` binary,
//! run one-shot, must print those connections as JSON lines.
//!
//! Needs root, inet_diag and a working loopback (CI has them; elsewhere
//! the tests say what is missing and are skipped). Every socket is closed
//! when the test ends; the binary is waited for or killed.

#[path = "common/sock_diag_crosscheck.rs"]
mod crosscheck;
mod support;

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use support::{require, Need, Xtcp2};

use xtcp2::decode::inet_diag::{AF_INET, AF_INET6};
use xtcp2::decode::{Deserializers, SocketDecoder};
use xtcp2::kernel::{DiagSocket, DumpRequest, ALL_TCP_STATES, RECV_BUFFER_BYTES};
use xtcp2::record::Record;

/// Connections per address family.
const CONNECTIONS: usize = 3;
/// Bytes each client sends and gets echoed back.
const PAYLOAD: usize = 1000;
const TCP_ESTABLISHED: u8 = 1;
const TCP_LISTEN: u8 = 10;

/// Whether the live tests can run here (see `support::require`): root,
/// a netlink inet_diag socket, and TCP on 127.0.0.1 (a fresh network
/// namespace has its loopback down).
fn can_run() -> bool {
    require(Need::Root, "a dump of every socket needs CAP_NET_ADMIN")
        && require(
            Need::Usable(
                "netlink inet_diag",
                DiagSocket::open(Duration::from_secs(1))
                    .map(drop)
                    .map_err(|e| e.to_string()),
            ),
            "the test dumps sockets",
        )
        && require(
            Need::Usable(
                "TCP on 127.0.0.1",
                TcpListener::bind("127.0.0.1:0")
                    .and_then(|l| TcpStream::connect(l.local_addr()?))
                    .map(drop)
                    .map_err(|e| e.to_string()),
            ),
            "the test opens loopback connections",
        )
}

/// A listener with established connections and the bytes they exchanged.
struct Loopback {
    listener: TcpListener,
    /// (client, server side) pairs.
    pairs: Vec<(TcpStream, TcpStream)>,
}

impl Loopback {
    fn open(ip: IpAddr) -> std::io::Result<Loopback> {
        let listener = TcpListener::bind(SocketAddr::new(ip, 0))?;
        let mut pairs = Vec::new();
        for i in 0..CONNECTIONS {
            let mut client = TcpStream::connect(listener.local_addr()?)?;
            let (mut server, _) = listener.accept()?;
            for s in [&client, &server] {
                s.set_read_timeout(Some(Duration::from_secs(5)))?;
            }
            let sent = vec![b'a' + i as u8; PAYLOAD];
            client.write_all(&sent)?;
            let mut got = vec![0u8; PAYLOAD];
            server.read_exact(&mut got)?;
            server.write_all(&got)?;
            client.read_exact(&mut got)?;
            assert_eq!(got, sent, "echo came back changed");
            pairs.push((client, server));
        }
        Ok(Loopback { listener, pairs })
    }

    fn listen_port(&self) -> u16 {
        self.listener.local_addr().map(|a| a.port()).unwrap_or(0)
    }

    /// (local port, peer port) of every socket the test owns, with its role.
    fn expected(&self) -> Vec<(u16, u16, Role)> {
        let mut out = vec![(self.listen_port(), 0, Role::Listener)];
        for (client, _) in &self.pairs {
            let c = client.local_addr().expect("client address").port();
            out.push((c, self.listen_port(), Role::Client));
            out.push((self.listen_port(), c, Role::Server));
        }
        out
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Listener,
    Client,
    Server,
}

/// One socket of a live dump: the bytes received and our record of them.
struct Dumped {
    payload: Vec<u8>,
    record: Record,
}

/// Dumps one family with the default decoders and keeps every socket.
fn dump_family(family: u8) -> Vec<Dumped> {
    let mut socket = DiagSocket::open(Duration::from_secs(2)).expect("open NETLINK_SOCK_DIAG");
    let deserializers = Deserializers::default_set();
    let request = DumpRequest {
        family,
        states: ALL_TCP_STATES,
        ext: deserializers.request_ext(),
        filter: None,
    };
    let mut decoder = SocketDecoder::new(deserializers);
    let mut buf = vec![0u8; RECV_BUFFER_BYTES];
    let mut out = Vec::new();
    let summary = socket
        .dump(
            &request,
            &mut buf,
            Instant::now() + Duration::from_secs(10),
            |payload, _| {
                let (record, err) = decoder.decode(payload);
                assert_eq!(err, None, "live socket failed to decode");
                let record = record.expect("a record when there is no error").clone();
                out.push(Dumped {
                    payload: payload.to_vec(),
                    record,
                });
            },
        )
        .expect("dump");
    assert_eq!(summary.sockets as usize, out.len());
    out
}

fn find(dump: &[Dumped], ip: IpAddr, local: u16, peer: u16) -> Option<&Record> {
    dump.iter()
        .map(|d| &d.record)
        .find(|r| r.idiag_src == Some(ip) && r.idiag_sport == Some(local) && r.idiag_dport == Some(peer))
}

/// The loopback sockets come back from a real dump with their state, ports,
/// addresses, RTT, MSS, congestion control, socket memory and the exact
/// byte counts exchanged; and netlink-packet-sock-diag decodes every socket
/// of the same received bytes to the same values.
#[test]
fn live_dump_finds_the_test_connections() {
    if !can_run() {
        return;
    }
    for (ip, family) in [
        (IpAddr::from([127, 0, 0, 1]), AF_INET),
        ("::1".parse().expect("::1"), AF_INET6),
    ] {
        let lo = match Loopback::open(ip) {
            Ok(lo) => lo,
            Err(e) if family == AF_INET6 => {
                // Prints why outside CI; under CI it fails the test.
                let _ = require(
                    Need::Usable("::1", Err(e.to_string())),
                    "the IPv6 part; the IPv4 part ran",
                );
                continue;
            }
            Err(e) => panic!("loopback sockets on {ip}: {e}"),
        };
        let dump = dump_family(family);
        for (local, peer, role) in lo.expected() {
            let rec = find(&dump, ip, local, peer)
                .unwrap_or_else(|| panic!("{role:?} {ip} {local} -> {peer} is missing from the dump"));
            assert_eq!(rec.idiag_family, Some(family));
            assert_eq!(
                rec.idiag_dst,
                Some(if role == Role::Listener { unspecified(ip) } else { ip })
            );
            let want_state = if role == Role::Listener {
                TCP_LISTEN
            } else {
                TCP_ESTABLISHED
            };
            assert_eq!(rec.idiag_state, Some(want_state), "{role:?} {local}");
            assert_eq!(rec.tcpi_state, Some(want_state), "{role:?} {local}");
            assert!(rec.idiag_inode.is_some_and(|i| i > 0), "{role:?} has no inode");
            assert!(
                rec.cong.is_some_and(|c| !c.as_str().is_empty()),
                "{role:?} has no congestion control"
            );
            assert!(rec.skmem_rcvbuf.is_some_and(|b| b > 0), "{role:?} has no skmem");
            assert!(rec.skmem_drops.is_some(), "{role:?} skmem is short");
            // Established: nothing left unread. Listener: nothing left unaccepted.
            assert_eq!(rec.idiag_rqueue, Some(0), "{role:?} receive queue");
            if role != Role::Listener {
                // A listener has no peer, so no MSS or RTT of its own.
                assert!(
                    rec.tcpi_snd_mss.is_some_and(|m| m > 0),
                    "{role:?} snd_mss {:?}",
                    rec.tcpi_snd_mss
                );
                assert!(rec.tcpi_rtt.is_some_and(|r| r > 0), "{role:?} rtt {:?}", rec.tcpi_rtt);
                assert_eq!(rec.tcpi_bytes_received, Some(PAYLOAD as u64), "{role:?} bytes_received");
            }
            if role == Role::Client {
                // The SYN counts as one acknowledged byte; the echo acked the data.
                assert_eq!(rec.tcpi_bytes_acked, Some(PAYLOAD as u64 + 1), "client bytes_acked");
                assert_eq!(rec.tcpi_bytes_sent, Some(PAYLOAD as u64), "client bytes_sent");
            }
        }
        let mut fields = 0;
        for d in &dump {
            fields += crosscheck::compare(&d.payload, &d.record)
                .unwrap_or_else(|m| panic!("socket {:?}: {m:#?}", d.record.idiag_sport));
        }
        println!(
            "{ip}: {} sockets dumped, {} of them the test's, {fields} fields agree with netlink-packet-sock-diag",
            dump.len(),
            lo.expected().len()
        );
    }
}

fn unspecified(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => IpAddr::from([0, 0, 0, 0]),
        IpAddr::V6(_) => "::".parse().expect("::"),
    }
}

/// The built binary, run one-shot in this namespace, prints every test
/// socket (listener, clients and server sides, both families) as a JSON line
/// with the right state and ports.
#[test]
fn one_shot_binary_prints_the_test_connections() {
    if !can_run() {
        return;
    }
    let mut families = vec![Loopback::open(IpAddr::from([127, 0, 0, 1])).expect("IPv4 loopback")];
    match Loopback::open("::1".parse().expect("::1")) {
        Ok(lo) => families.push(lo),
        // Prints why outside CI; under CI it fails the test.
        Err(e) => {
            let _ = require(
                Need::Usable("::1", Err(e.to_string())),
                "the IPv6 part; the IPv4 part runs",
            );
        }
    }

    let output = Xtcp2::new()
        .args([
            "--max-loops",
            "1",
            "--prom-listen",
            "",
            "--netns-proc-scan=false",
            "--netns-dirs",
            "",
        ])
        .output();
    let stdout = String::from_utf8(output.stdout).expect("UTF-8 output");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "xtcp2 exited with {}: {stderr}", output.status);

    let lines: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let mut found = 0;
    for lo in &families {
        let ip = lo.listener.local_addr().expect("listener address").ip();
        for (local, peer, role) in lo.expected() {
            let line = lines
                .iter()
                .find(|v| {
                    v["idiag_src"] == ip.to_string().as_str()
                        && v["idiag_sport"] == u64::from(local)
                        && v["idiag_dport"] == u64::from(peer)
                })
                .unwrap_or_else(|| panic!("{role:?} {ip} {local} -> {peer} not in the binary's output"));
            let state = if role == Role::Listener {
                TCP_LISTEN
            } else {
                TCP_ESTABLISHED
            };
            assert_eq!(line["idiag_state"], u64::from(state), "{role:?} {local}");
            assert!(line["cong"].is_string() && line["tcpi_snd_mss"].is_u64(), "{line}");
            found += 1;
        }
    }
    println!(
        "xtcp2 one-shot printed {} records; all {found} test sockets among them",
        lines.len()
    );
}
