//! `udp:HOST:PORT`: UDP datagrams sent through a raw IPv4 socket with
//! `IP_HDRINCL`, as the original xtcp2 does: xtcp2 writes the IPv4 and UDP
//! headers (and checksums) itself.
//!
//! Why the route probe: the UDP checksum covers the source address, which
//! the kernel would only pick after we computed it. So at the first send an
//! ordinary UDP socket is `connect`ed to the destination, and the kernel's
//! route lookup gives the source address, a source port (kept reserved by
//! holding that socket), and the path MTU (`IP_MTU`).
//!
//! Why xtcp2 fragments: with `IP_HDRINCL` the kernel refuses packets larger
//! than the device MTU instead of fragmenting them, so a datagram larger
//! than the path MTU is cut into IPv4 fragments here (RFC 791); the
//! receiver's kernel reassembles them.
//!
//! The raw socket needs CAP_NET_RAW. It is opened at the first send, so the
//! daemon starts without it and the first send fails with an error that
//! names the capability (then retried like any other failure).

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::ops::Range;
use std::os::fd::AsRawFd;

use socket2::{Domain, Protocol, SockAddr, Socket, Type};
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

use super::datagram::{DatagramSink, DatagramSocket};
use super::stream::HostPort;
use super::{DestinationKind, SinkError, MAX_DATAGRAM_PAYLOAD};
use crate::format::StreamFormat;

/// Bytes of an IPv4 header without options.
pub(crate) const IPV4_HEADER: usize = 20;
/// Bytes of a UDP header.
pub(crate) const UDP_HEADER: usize = 8;
/// TTL of the packets we build: Linux's default (`net.ipv4.ip_default_ttl`).
const TTL: u8 = 64;
const IPPROTO_UDP: u8 = 17;
/// IPv4 "more fragments" flag in the flags/offset word.
const MORE_FRAGMENTS: u16 = 0x2000;
/// Fragment offsets count units of 8 bytes.
const FRAGMENT_UNIT: usize = 8;
/// Smallest MTU every IPv4 link must carry (RFC 791); a lower reported MTU
/// is treated as this.
const MIN_IPV4_MTU: usize = 68;

/// Everything the first send learns about the path.
struct Route {
    raw: AsyncFd<Socket>,
    /// Holds the source port so no other socket gets it.
    _probe: std::net::UdpSocket,
    src: SocketAddrV4,
    dst: SocketAddrV4,
    mtu: usize,
}

/// The `udp:HOST:PORT` destination.
pub struct Udp;

impl DestinationKind for Udp {
    const SCHEMES: &'static [&'static str] = &["udp"];
    const TAKES_ADDRESS: bool = true;
    const FORM: &'static str = "udp:HOST:PORT";
    const SUMMARY: &'static str =
        "IPv4 datagrams of whole records through a raw socket (IP_HDRINCL, needs CAP_NET_RAW); every datagram opens with the csv header";
    type Address = HostPort;
    type Sink = DatagramSink<UdpSocket>;

    fn parse(_scheme: &str, rest: &str) -> Result<HostPort, String> {
        HostPort::parse(rest)
    }

    async fn open(address: &HostPort, format: &StreamFormat) -> Result<Self::Sink, SinkError> {
        Ok(DatagramSink::new(
            UdpSocket::new(address.to_string()),
            format.header_shared(),
        ))
    }
}

/// A raw IPv4 socket that builds UDP datagrams (and fragments) itself.
pub struct UdpSocket {
    target: String,
    route: Option<Route>,
    /// IPv4 identification of the next datagram (shared by its fragments).
    ident: u16,
    udp: Vec<u8>,
    packets: Vec<u8>,
    packet_ranges: Vec<Range<usize>>,
}

impl UdpSocket {
    pub fn new(target: String) -> Self {
        UdpSocket {
            target,
            route: None,
            // Any start works; varying it between runs keeps a restarted
            // daemon's fragments from mixing with the previous run's.
            ident: (crate::clock::now_ns() >> 10) as u16,
            udp: Vec::with_capacity(MAX_DATAGRAM_PAYLOAD + UDP_HEADER),
            packets: Vec::new(),
            packet_ranges: Vec::new(),
        }
    }

    async fn route(&self, dest: &str) -> Result<Route, SinkError> {
        let connect_error = |source| SinkError::Connect {
            dest: dest.to_string(),
            source,
        };
        let dst = tokio::net::lookup_host(self.target.as_str())
            .await
            .map_err(connect_error)?
            .find_map(|a| match a {
                SocketAddr::V4(v4) => Some(v4),
                SocketAddr::V6(_) => None,
            })
            .ok_or_else(|| SinkError::BadAddress {
                dest: dest.to_string(),
                reason: "udp: needs an IPv4 destination (the raw socket is IPv4 with IP_HDRINCL)".into(),
            })?;
        let probe = std::net::UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).map_err(connect_error)?;
        probe.connect(dst).map_err(connect_error)?;
        let src = match probe.local_addr().map_err(connect_error)? {
            SocketAddr::V4(v4) => v4,
            SocketAddr::V6(_) => {
                return Err(SinkError::BadAddress {
                    dest: dest.to_string(),
                    reason: "udp: the route to the destination is not IPv4".into(),
                })
            }
        };
        let mtu = path_mtu(&probe).map_err(connect_error)?.max(MIN_IPV4_MTU);
        let raw = Socket::new(Domain::IPV4, Type::RAW, Some(Protocol::from(libc::IPPROTO_RAW))).map_err(|source| {
            if matches!(source.raw_os_error(), Some(libc::EPERM) | Some(libc::EACCES)) {
                SinkError::NeedsCapNetRaw {
                    dest: dest.to_string(),
                    source,
                }
            } else {
                connect_error(source)
            }
        })?;
        // IPPROTO_RAW implies it; set it anyway so the intent is explicit.
        raw.set_header_included_v4(true).map_err(connect_error)?;
        raw.set_nonblocking(true).map_err(connect_error)?;
        // SAFETY: `Socket` owns its descriptor: it stays open, and
        // `as_raw_fd` returns the same one, until the AsyncFd drops it.
        let raw =
            unsafe { AsyncFd::register_with_interest(raw, Interest::WRITABLE) }.map_err(|e| connect_error(e.into()))?;
        tracing::info!(dest, %src, %dst, mtu, "udp destination: raw IPv4 socket ready");
        Ok(Route {
            raw,
            _probe: probe,
            src,
            dst,
            mtu,
        })
    }
}

impl DatagramSocket for UdpSocket {
    async fn send_datagram(&mut self, datagram: &[u8], dest: &str) -> Result<(), SinkError> {
        let route = match &mut self.route {
            Some(route) => route,
            None => {
                let route = self.route(dest).await?;
                self.route.insert(route)
            }
        };
        udp_datagram(route.src, route.dst, datagram, &mut self.udp);
        self.ident = self.ident.wrapping_add(1);
        ipv4_packets(
            *route.src.ip(),
            *route.dst.ip(),
            self.ident,
            route.mtu,
            &self.udp,
            &mut self.packets,
            &mut self.packet_ranges,
        );
        let to = SockAddr::from(SocketAddrV4::new(*route.dst.ip(), 0));
        for range in &self.packet_ranges {
            if let Err(source) = send_packet(&route.raw, &self.packets[range.clone()], &to).await {
                // Forget the route: the next attempt looks it up again.
                self.route = None;
                return Err(SinkError::Io {
                    dest: dest.to_string(),
                    source,
                });
            }
        }
        Ok(())
    }
}

async fn send_packet(raw: &AsyncFd<Socket>, packet: &[u8], to: &SockAddr) -> std::io::Result<()> {
    loop {
        let mut ready = raw.writable().await?;
        match ready.try_io(|fd| fd.get_ref().send_to(packet, to)) {
            Ok(Ok(n)) if n == packet.len() => return Ok(()),
            Ok(Ok(n)) => {
                return Err(std::io::Error::other(format!(
                    "raw socket sent {n} of {} bytes",
                    packet.len()
                )));
            }
            Ok(Err(e)) => return Err(e),
            Err(_would_block) => continue,
        }
    }
}

/// The path MTU the kernel knows for a connected socket (`IP_MTU`).
fn path_mtu(socket: &std::net::UdpSocket) -> std::io::Result<usize> {
    let mut mtu: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: the fd is a live socket borrowed from `socket`; `mtu` and `len`
    // are a c_int and its size, which is what IP_MTU writes.
    let rc = unsafe {
        libc::getsockopt(
            socket.as_raw_fd(),
            libc::IPPROTO_IP,
            libc::IP_MTU,
            (&mut mtu as *mut libc::c_int).cast::<libc::c_void>(),
            &mut len,
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(usize::try_from(mtu).unwrap_or(MIN_IPV4_MTU))
}

/// Writes the UDP header and payload to `out`, with the checksum over the
/// IPv4 pseudo-header (RFC 768).
pub(crate) fn udp_datagram(src: SocketAddrV4, dst: SocketAddrV4, payload: &[u8], out: &mut Vec<u8>) {
    // MAX_DATAGRAM_PAYLOAD keeps the length within 16 bits.
    let length = (UDP_HEADER + payload.len()) as u16;
    out.clear();
    out.extend_from_slice(&src.port().to_be_bytes());
    out.extend_from_slice(&dst.port().to_be_bytes());
    out.extend_from_slice(&length.to_be_bytes());
    out.extend_from_slice(&[0, 0]);
    out.extend_from_slice(payload);
    let mut pseudo = [0u8; 12];
    pseudo[0..4].copy_from_slice(&src.ip().octets());
    pseudo[4..8].copy_from_slice(&dst.ip().octets());
    pseudo[9] = IPPROTO_UDP;
    pseudo[10..12].copy_from_slice(&length.to_be_bytes());
    let sum = ones_complement_sum(ones_complement_sum(0, &pseudo), out);
    let mut checksum = !fold(sum);
    // 0 means "no checksum" in UDP over IPv4; all ones is the same value.
    if checksum == 0 {
        checksum = 0xffff;
    }
    out[6..8].copy_from_slice(&checksum.to_be_bytes());
}

/// Wraps a UDP datagram in IPv4: one packet, or fragments of at most `mtu`
/// bytes each. Packets go to `out`, their byte ranges to `ranges`.
pub(crate) fn ipv4_packets(
    src: Ipv4Addr,
    dst: Ipv4Addr,
    ident: u16,
    mtu: usize,
    udp: &[u8],
    out: &mut Vec<u8>,
    ranges: &mut Vec<Range<usize>>,
) {
    out.clear();
    ranges.clear();
    let mtu = mtu.max(MIN_IPV4_MTU);
    if IPV4_HEADER + udp.len() <= mtu {
        push_packet(src, dst, ident, 0, udp, out, ranges);
        return;
    }
    let chunk = (mtu - IPV4_HEADER) / FRAGMENT_UNIT * FRAGMENT_UNIT;
    let mut offset = 0;
    while offset < udp.len() {
        let end = (offset + chunk).min(udp.len());
        let more = if end < udp.len() { MORE_FRAGMENTS } else { 0 };
        let flags_offset = more | (offset / FRAGMENT_UNIT) as u16;
        push_packet(src, dst, ident, flags_offset, &udp[offset..end], out, ranges);
        offset = end;
    }
}

fn push_packet(
    src: Ipv4Addr,
    dst: Ipv4Addr,
    ident: u16,
    flags_offset: u16,
    data: &[u8],
    out: &mut Vec<u8>,
    ranges: &mut Vec<Range<usize>>,
) {
    let start = out.len();
    let total = (IPV4_HEADER + data.len()) as u16;
    let mut header = [0u8; IPV4_HEADER];
    header[0] = 0x45; // version 4, 5 words of header
    header[2..4].copy_from_slice(&total.to_be_bytes());
    header[4..6].copy_from_slice(&ident.to_be_bytes());
    header[6..8].copy_from_slice(&flags_offset.to_be_bytes());
    header[8] = TTL;
    header[9] = IPPROTO_UDP;
    header[12..16].copy_from_slice(&src.octets());
    header[16..20].copy_from_slice(&dst.octets());
    let checksum = !fold(ones_complement_sum(0, &header));
    header[10..12].copy_from_slice(&checksum.to_be_bytes());
    out.extend_from_slice(&header);
    out.extend_from_slice(data);
    ranges.push(start..out.len());
}

/// Adds `bytes` as big-endian 16-bit words (a trailing odd byte padded with
/// zero) to `sum` (RFC 1071). Only the last slice summed may be odd.
pub(crate) fn ones_complement_sum(mut sum: u64, bytes: &[u8]) -> u64 {
    let mut words = bytes.chunks_exact(2);
    for w in &mut words {
        sum += u64::from(u16::from_be_bytes([w[0], w[1]]));
    }
    if let [last] = words.remainder() {
        sum += u64::from(u16::from_be_bytes([*last, 0]));
    }
    sum
}

/// Folds the carries of a one's complement sum into 16 bits.
pub fn fold(mut sum: u64) -> u16 {
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum as u16
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> SocketAddrV4 {
        s.parse().unwrap()
    }

    /// The UDP checksum verifies: summing pseudo-header and datagram gives all ones.
    #[test]
    fn udp_checksum_verifies() {
        for payload in [&b""[..], b"a", b"hello, world", &[0xffu8; 1001]] {
            let (src, dst) = (addr("10.1.2.3:40000"), addr("192.0.2.7:5000"));
            let mut udp = Vec::new();
            udp_datagram(src, dst, payload, &mut udp);
            assert_eq!(&udp[4..6], &((8 + payload.len()) as u16).to_be_bytes());
            let mut pseudo = [0u8; 12];
            pseudo[0..4].copy_from_slice(&src.ip().octets());
            pseudo[4..8].copy_from_slice(&dst.ip().octets());
            pseudo[9] = 17;
            pseudo[10..12].copy_from_slice(&udp[4..6]);
            assert_eq!(fold(ones_complement_sum(ones_complement_sum(0, &pseudo), &udp)), 0xffff);
        }
    }

    /// The RFC 1071 example words sum to the documented value.
    #[test]
    fn rfc1071_example() {
        // RFC 1071 section 3: 00 01 f2 03 f4 f5 f6 f7 sums to ddf2.
        assert_eq!(
            fold(ones_complement_sum(
                0,
                &[0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7]
            )),
            0xddf2
        );
    }

    /// A datagram larger than the MTU becomes fragments that each fit, carry
    /// valid headers, and reassemble to the original datagram.
    #[test]
    fn large_datagrams_are_fragmented_and_reassemble() {
        let (src, dst) = (addr("10.0.0.1:1234"), addr("10.0.0.2:5678"));
        let payload: Vec<u8> = (0..4000u32).map(|i| i as u8).collect();
        let mut udp = Vec::new();
        udp_datagram(src, dst, &payload, &mut udp);
        let (mut out, mut ranges) = (Vec::new(), Vec::new());
        ipv4_packets(*src.ip(), *dst.ip(), 0xbeef, 1500, &udp, &mut out, &mut ranges);
        assert_eq!(ranges.len(), 3);
        let mut reassembled = vec![0u8; udp.len()];
        for (i, r) in ranges.iter().enumerate() {
            let p = &out[r.clone()];
            assert!(p.len() <= 1500);
            assert_eq!(
                fold(ones_complement_sum(0, &p[..20])),
                0xffff,
                "header checksum of fragment {i}"
            );
            assert_eq!(u16::from_be_bytes([p[2], p[3]]) as usize, p.len());
            assert_eq!(u16::from_be_bytes([p[4], p[5]]), 0xbeef);
            let word = u16::from_be_bytes([p[6], p[7]]);
            let more = word & MORE_FRAGMENTS != 0;
            assert_eq!(more, i < 2);
            let offset = usize::from(word & 0x1fff) * 8;
            reassembled[offset..offset + p.len() - 20].copy_from_slice(&p[20..]);
        }
        assert_eq!(reassembled, udp);
    }

    /// A datagram within the MTU is one unfragmented packet.
    #[test]
    fn small_datagram_is_one_packet() {
        let (src, dst) = (addr("10.0.0.1:1234"), addr("10.0.0.2:5678"));
        let mut udp = Vec::new();
        udp_datagram(src, dst, b"x", &mut udp);
        let (mut out, mut ranges) = (Vec::new(), Vec::new());
        ipv4_packets(*src.ip(), *dst.ip(), 1, 1500, &udp, &mut out, &mut ranges);
        assert_eq!(ranges, vec![0..29]);
        assert_eq!(&out[6..8], &[0, 0]);
        assert_eq!(out[9], 17);
    }
}
