//! One `SOCK_DIAG_BY_FAMILY` reply: `struct inet_diag_msg` followed by
//! netlink attributes (`include/uapi/linux/inet_diag.h`).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::bytes::{align4, u16_at, u16_be_at, u32_at, u64_at, u8_at};
use super::selection::{Deserializer, Deserializers};
use super::tcp_info::decode_tcp_info;
use super::{DecodeError, DecodeStats};
use crate::record::{Record, ShortName};

/// `sizeof(struct inet_diag_msg)`.
pub const INET_DIAG_MSG_LEN: usize = 72;
/// `sizeof(struct nlattr)`.
const NLA_HDRLEN: usize = 4;
/// Attribute type bits that are flags, not part of the type.
const NLA_TYPE_MASK: u16 = !(0x8000 | 0x4000);

pub const AF_INET: u8 = 2;
pub const AF_INET6: u8 = 10;

/// `enum { INET_DIAG_NONE, ... }` — the attribute numbers we know.
pub mod attr {
    pub(crate) const MEMINFO: u16 = 1;
    pub const INFO: u16 = 2;
    pub(crate) const VEGASINFO: u16 = 3;
    pub(crate) const CONG: u16 = 4;
    pub const TOS: u16 = 5;
    pub(crate) const TCLASS: u16 = 6;
    pub(crate) const SKMEMINFO: u16 = 7;
    pub(crate) const SHUTDOWN: u16 = 8;
    pub(crate) const DCTCPINFO: u16 = 9;
    pub const PROTOCOL: u16 = 10;
    pub(crate) const SKV6ONLY: u16 = 11;
    pub(crate) const MARK: u16 = 15;
    pub const ULP_INFO: u16 = 19;
    pub(crate) const BBRINFO: u16 = 16;
    pub(crate) const CLASS_ID: u16 = 17;
    pub const CGROUP_ID: u16 = 21;
    pub const SOCKOPT: u16 = 22;
    /// Attribute numbers below this get their own skip counter slot;
    /// anything above shares the last slot.
    pub(crate) const SLOTS: usize = 32;

    /// Kernel name of an attribute number, for metrics labels.
    pub fn name(kind: u16) -> &'static str {
        match kind {
            0 => "none",
            MEMINFO => "meminfo",
            INFO => "info",
            VEGASINFO => "vegasinfo",
            CONG => "cong",
            TOS => "tos",
            TCLASS => "tclass",
            SKMEMINFO => "skmeminfo",
            SHUTDOWN => "shutdown",
            DCTCPINFO => "dctcpinfo",
            PROTOCOL => "protocol",
            SKV6ONLY => "skv6only",
            12 => "locals",
            13 => "peers",
            14 => "pad",
            MARK => "mark",
            BBRINFO => "bbrinfo",
            CLASS_ID => "class_id",
            18 => "md5sig",
            ULP_INFO => "ulp_info",
            20 => "sk_bpf_storages",
            CGROUP_ID => "cgroup_id",
            SOCKOPT => "sockopt",
            _ => "unknown",
        }
    }
}

/// Decodes one reply payload into `rec` (which is reset first).
///
/// A header shorter than 72 bytes is an error and `rec` is unusable. An
/// attribute with an impossible length is an error too, but `rec` keeps the
/// header and every attribute before it (see [`DecodeError::keeps_record`]).
pub fn decode_socket(
    payload: &[u8],
    enabled: Deserializers,
    stats: &mut DecodeStats,
    rec: &mut Record,
) -> Result<(), DecodeError> {
    *rec = Record::default();
    if payload.len() < INET_DIAG_MSG_LEN {
        return Err(DecodeError::HeaderTooShort { len: payload.len() });
    }
    decode_header(payload, rec);
    let mut offset = INET_DIAG_MSG_LEN;
    while offset + NLA_HDRLEN <= payload.len() {
        let len = usize::from(u16_at(payload, offset).unwrap_or_default());
        let kind = u16_at(payload, offset + 2).unwrap_or_default() & NLA_TYPE_MASK;
        if len < NLA_HDRLEN || offset + len > payload.len() {
            return Err(DecodeError::AttributeLength {
                kind,
                offset,
                len,
                available: payload.len() - offset,
            });
        }
        let value = &payload[offset + NLA_HDRLEN..offset + len];
        if !decode_attribute(kind, value, enabled, rec) {
            stats.skipped_attributes[usize::from(kind).min(attr::SLOTS - 1)] += 1;
        }
        offset = align4(offset + len);
    }
    Ok(())
}

fn decode_header(p: &[u8], rec: &mut Record) {
    let family = u8_at(p, 0);
    rec.idiag_family = family;
    rec.idiag_state = u8_at(p, 1);
    rec.idiag_timer = u8_at(p, 2);
    rec.idiag_retrans = u8_at(p, 3);
    rec.idiag_sport = u16_be_at(p, 4);
    rec.idiag_dport = u16_be_at(p, 6);
    rec.idiag_src = address(family, &p[8..24]);
    rec.idiag_dst = address(family, &p[24..40]);
    rec.idiag_if = u32_at(p, 40);
    // `__u32 idiag_cookie[2]`: low word first, as `ss` combines them.
    rec.idiag_cookie = match (u32_at(p, 44), u32_at(p, 48)) {
        (Some(lo), Some(hi)) => Some(u64::from(lo) | (u64::from(hi) << 32)),
        _ => None,
    };
    rec.idiag_expires = u32_at(p, 52);
    rec.idiag_rqueue = u32_at(p, 56);
    rec.idiag_wqueue = u32_at(p, 60);
    rec.idiag_uid = u32_at(p, 64);
    rec.idiag_inode = u32_at(p, 68);
}

/// `INET_ULP_INFO_NAME` inside the `INET_DIAG_ULP_INFO` nest. The TLS and
/// MPTCP details nested beside it (`INET_ULP_INFO_TLS`, `_MPTCP`) are not
/// decoded. A malformed nest yields no name (and no error: the socket is
/// still worth its other fields).
fn ulp_name(nest: &[u8]) -> Option<ShortName> {
    const INET_ULP_INFO_NAME: u16 = 1;
    let mut offset = 0;
    while offset + NLA_HDRLEN <= nest.len() {
        let len = usize::from(u16_at(nest, offset)?);
        let kind = u16_at(nest, offset + 2)? & NLA_TYPE_MASK;
        if len < NLA_HDRLEN || offset + len > nest.len() {
            return None;
        }
        if kind == INET_ULP_INFO_NAME {
            return Some(ShortName::from_c_bytes(&nest[offset + NLA_HDRLEN..offset + len]));
        }
        offset = align4(offset + len);
    }
    None
}

/// `__be32 idiag_src[4]`: IPv4 uses the first word only.
fn address(family: Option<u8>, raw: &[u8]) -> Option<IpAddr> {
    let bytes: [u8; 16] = raw.try_into().ok()?;
    match family? {
        AF_INET => Some(IpAddr::V4(Ipv4Addr::new(bytes[0], bytes[1], bytes[2], bytes[3]))),
        AF_INET6 => Some(IpAddr::V6(Ipv6Addr::from(bytes))),
        _ => None,
    }
}

/// Decodes one attribute if its decoder is enabled. Returns false when the
/// attribute was skipped (unknown, or its decoder is off).
fn decode_attribute(kind: u16, v: &[u8], on: Deserializers, rec: &mut Record) -> bool {
    use Deserializer as D;
    match kind {
        attr::INFO if on.contains(D::Info) => decode_tcp_info(v, rec),
        attr::CONG if on.contains(D::Cong) => rec.cong = Some(ShortName::from_c_bytes(v)),
        attr::MEMINFO if on.contains(D::Meminfo) => {
            rec.idiag_rmem = u32_at(v, 0);
            rec.idiag_wmem = u32_at(v, 4);
            rec.idiag_fmem = u32_at(v, 8);
            rec.idiag_tmem = u32_at(v, 12);
        }
        attr::SKMEMINFO if on.contains(D::Skmem) => {
            rec.skmem_rmem_alloc = u32_at(v, 0);
            rec.skmem_rcvbuf = u32_at(v, 4);
            rec.skmem_wmem_alloc = u32_at(v, 8);
            rec.skmem_sndbuf = u32_at(v, 12);
            rec.skmem_fwd_alloc = u32_at(v, 16);
            rec.skmem_wmem_queued = u32_at(v, 20);
            rec.skmem_optmem = u32_at(v, 24);
            rec.skmem_backlog = u32_at(v, 28);
            rec.skmem_drops = u32_at(v, 32);
        }
        attr::BBRINFO if on.contains(D::Bbr) => {
            rec.bbr_bw_lo = u32_at(v, 0);
            rec.bbr_bw_hi = u32_at(v, 4);
            rec.bbr_min_rtt = u32_at(v, 8);
            rec.bbr_pacing_gain = u32_at(v, 12);
            rec.bbr_cwnd_gain = u32_at(v, 16);
        }
        attr::DCTCPINFO if on.contains(D::Dctcp) => {
            rec.dctcp_enabled = u16_at(v, 0);
            rec.dctcp_ce_state = u16_at(v, 2);
            rec.dctcp_alpha = u32_at(v, 4);
            rec.dctcp_ab_ecn = u32_at(v, 8);
            rec.dctcp_ab_tot = u32_at(v, 12);
        }
        attr::VEGASINFO if on.contains(D::Vegas) => {
            rec.tcpv_enabled = u32_at(v, 0);
            rec.tcpv_rttcnt = u32_at(v, 4);
            rec.tcpv_rtt = u32_at(v, 8);
            rec.tcpv_minrtt = u32_at(v, 12);
        }
        attr::TOS if on.contains(D::Tos) => rec.tos = u8_at(v, 0),
        attr::TCLASS if on.contains(D::Tc) => rec.tclass = u8_at(v, 0),
        attr::SHUTDOWN if on.contains(D::Shut) => rec.shutdown = u8_at(v, 0),
        attr::CLASS_ID if on.contains(D::Classid) => rec.class_id = u32_at(v, 0),
        attr::CGROUP_ID if on.contains(D::Cgroup) => rec.cgroup_id = u64_at(v, 0),
        attr::SOCKOPT if on.contains(D::Sockopt) => decode_sockopt(v, rec),
        // The kernel sends MARK and ULP_INFO only to CAP_NET_ADMIN callers,
        // and SKV6ONLY for every IPv6 socket, whatever idiag_ext asks: keep
        // them when they come.
        attr::MARK => rec.mark = u32_at(v, 0),
        attr::SKV6ONLY => rec.v6only = u8_at(v, 0),
        attr::ULP_INFO => rec.ulp_name = ulp_name(v),
        _ => return false,
    }
    true
}

/// `struct inet_diag_sockopt`: two bytes of one-bit flags, low bit first.
fn decode_sockopt(v: &[u8], rec: &mut Record) {
    let bit = |byte: usize, n: u8| u8_at(v, byte).map(|b| (b >> n) & 1);
    rec.sockopt_recverr = bit(0, 0);
    rec.sockopt_is_icsk = bit(0, 1);
    rec.sockopt_freebind = bit(0, 2);
    rec.sockopt_hdrincl = bit(0, 3);
    rec.sockopt_mc_loop = bit(0, 4);
    rec.sockopt_transparent = bit(0, 5);
    rec.sockopt_mc_all = bit(0, 6);
    rec.sockopt_nodefrag = bit(0, 7);
    rec.sockopt_bind_address_no_port = bit(1, 0);
    rec.sockopt_recverr_rfc4884 = bit(1, 1);
    rec.sockopt_defer_connect = bit(1, 2);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(family: u8) -> Vec<u8> {
        let mut p = vec![0u8; INET_DIAG_MSG_LEN];
        p[0] = family;
        p[1] = 1;
        p[4..6].copy_from_slice(&4000u16.to_be_bytes());
        p[6..8].copy_from_slice(&5000u16.to_be_bytes());
        p[8..12].copy_from_slice(&[127, 0, 0, 1]);
        p[24..28].copy_from_slice(&[10, 0, 0, 2]);
        p[44..48].copy_from_slice(&0x1234u32.to_ne_bytes());
        p[48..52].copy_from_slice(&0x1u32.to_ne_bytes());
        p[68..72].copy_from_slice(&777u32.to_ne_bytes());
        p
    }

    fn push_attr(p: &mut Vec<u8>, kind: u16, value: &[u8]) {
        p.extend_from_slice(&((NLA_HDRLEN + value.len()) as u16).to_ne_bytes());
        p.extend_from_slice(&kind.to_ne_bytes());
        p.extend_from_slice(value);
        while p.len() % 4 != 0 {
            p.push(0);
        }
    }

    /// Header fields decode with ports in network order and the cookie's
    /// two words combined low-first.
    #[test]
    fn header_fields_decode() {
        let mut rec = Record::default();
        let mut stats = DecodeStats::default();
        decode_socket(&header(AF_INET), Deserializers::all(), &mut stats, &mut rec).unwrap();
        assert_eq!(rec.idiag_sport, Some(4000));
        assert_eq!(rec.idiag_dport, Some(5000));
        assert_eq!(rec.idiag_src, Some("127.0.0.1".parse().unwrap()));
        assert_eq!(rec.idiag_dst, Some("10.0.0.2".parse().unwrap()));
        assert_eq!(rec.idiag_cookie, Some(0x1_0000_1234));
        assert_eq!(rec.idiag_inode, Some(777));
        assert_eq!(rec.tcpi_rtt, None);
    }

    /// INET_DIAG_ULP_INFO yields the name nested in it, wherever it sits in
    /// the nest; a nest without a name, or cut short, yields none and is
    /// not an error. SKV6ONLY decodes whatever deserializers are on.
    #[test]
    fn ulp_name_and_v6only() {
        let decode = |ulp: &[u8]| {
            let mut p = header(AF_INET6);
            push_attr(&mut p, attr::ULP_INFO, ulp);
            push_attr(&mut p, attr::SKV6ONLY, &[1]);
            let mut rec = Record::default();
            let mut stats = DecodeStats::default();
            decode_socket(&p, Deserializers::parse("").unwrap(), &mut stats, &mut rec).unwrap();
            assert_eq!(stats.skipped_attributes.iter().sum::<u64>(), 0);
            assert_eq!(rec.v6only, Some(1));
            rec.ulp_name.map(|n| n.as_str().to_string())
        };
        let mut nest = Vec::new();
        push_attr(&mut nest, 2, &[0, 0, 0, 0, 0, 0, 0, 0]); // INET_ULP_INFO_TLS first
        push_attr(&mut nest, 1, b"tls\0");
        assert_eq!(decode(&nest).as_deref(), Some("tls"));
        let mut nameless = Vec::new();
        push_attr(&mut nameless, 3, &[0; 4]);
        assert_eq!(decode(&nameless), None);
        assert_eq!(decode(&[12, 0, 1, 0, b'm', b'p']), None, "length past the nest");
        assert_eq!(decode(&[]), None);
    }

    /// Unknown attributes are skipped and counted; known ones still decode.
    #[test]
    fn unknown_attribute_is_skipped_and_counted() {
        let mut p = header(AF_INET6);
        push_attr(&mut p, 30, &[1, 2, 3]);
        push_attr(&mut p, attr::CONG, b"bbr\0");
        let mut rec = Record::default();
        let mut stats = DecodeStats::default();
        decode_socket(&p, Deserializers::all(), &mut stats, &mut rec).unwrap();
        assert_eq!(stats.skipped_attributes[30], 1);
        assert_eq!(rec.cong.unwrap().as_str(), "bbr");
    }

    /// Attributes of disabled decoders are skipped.
    #[test]
    fn disabled_decoder_leaves_field_absent() {
        let mut p = header(AF_INET);
        push_attr(&mut p, attr::TOS, &[0x10]);
        let mut rec = Record::default();
        let mut stats = DecodeStats::default();
        decode_socket(&p, Deserializers::NONE, &mut stats, &mut rec).unwrap();
        assert_eq!(rec.tos, None);
        assert_eq!(stats.skipped_attributes[usize::from(attr::TOS)], 1);
    }

    /// A short skmem attribute keeps the counters that fit.
    #[test]
    fn short_attribute_is_tolerated() {
        let mut p = header(AF_INET);
        let mut sk = Vec::new();
        for v in [11u32, 22, 33] {
            sk.extend_from_slice(&v.to_ne_bytes());
        }
        push_attr(&mut p, attr::SKMEMINFO, &sk);
        let mut rec = Record::default();
        decode_socket(&p, Deserializers::all(), &mut DecodeStats::default(), &mut rec).unwrap();
        assert_eq!(rec.skmem_wmem_alloc, Some(33));
        assert_eq!(rec.skmem_sndbuf, None);
    }

    /// An attribute longer than the message is an error naming it, and the
    /// header decoded before it is kept.
    #[test]
    fn impossible_attribute_length_is_an_error_but_keeps_header() {
        let mut p = header(AF_INET);
        push_attr(&mut p, attr::INFO, &[0; 8]);
        let at = INET_DIAG_MSG_LEN;
        p[at..at + 2].copy_from_slice(&300u16.to_ne_bytes());
        let mut rec = Record::default();
        let err = decode_socket(&p, Deserializers::all(), &mut DecodeStats::default(), &mut rec).unwrap_err();
        assert!(err.keeps_record());
        assert_eq!(
            err.to_string(),
            "attribute info (type 2) at byte 72 claims 300 bytes but only 12 remain in the message"
        );
        assert_eq!(rec.idiag_sport, Some(4000));
    }

    /// A payload shorter than inet_diag_msg is rejected.
    #[test]
    fn short_header_is_an_error() {
        let err = decode_socket(
            &[0; 10],
            Deserializers::all(),
            &mut DecodeStats::default(),
            &mut Record::default(),
        )
        .unwrap_err();
        assert!(!err.keeps_record());
    }
}
