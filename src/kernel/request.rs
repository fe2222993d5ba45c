//! The dump request: `nlmsghdr` + `struct inet_diag_req_v2`.

use super::filter::{Bytecode, INET_DIAG_REQ_BYTECODE};
use crate::decode::netlink::{NLMSG_HDRLEN, SOCK_DIAG_BY_FAMILY};

/// `sizeof(struct inet_diag_req_v2)`.
pub(crate) const INET_DIAG_REQ_V2_LEN: usize = 56;
/// Total request size on the wire.
pub(crate) const DUMP_REQUEST_LEN: usize = NLMSG_HDRLEN + INET_DIAG_REQ_V2_LEN;
/// `sizeof(struct nlattr)`.
const NLA_HDRLEN: usize = 4;
use crate::decode::netlink::NLM_F_REQUEST;
const NLM_F_DUMP: u16 = 0x300;
const IPPROTO_TCP: u8 = 6;

/// Every TCP state (bits 1..=13; bit 0 is unused by the kernel). Bit 13 is
/// TCP_BOUND_INACTIVE (Linux 6.5+: bound, not listening or connected);
/// older kernels ignore bits they do not know.
pub const ALL_TCP_STATES: u32 = 0x3ffe;

/// Kernel TCP state names (as `ss -state` accepts them) and numbers.
pub(crate) const TCP_STATES: [(&str, u8); 13] = [
    ("established", 1),
    ("syn-sent", 2),
    ("syn-recv", 3),
    ("fin-wait-1", 4),
    ("fin-wait-2", 5),
    ("time-wait", 6),
    ("close", 7),
    ("close-wait", 8),
    ("last-ack", 9),
    ("listen", 10),
    ("closing", 11),
    ("new-syn-recv", 12),
    ("bound-inactive", 13),
];

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("unknown TCP state {name:?}; valid: all, or a comma list of {}", TCP_STATES.map(|s| s.0).join(","))]
pub struct UnknownState {
    pub name: String,
}

/// Parses `-states`: `all` (or empty) or a comma list of state names.
pub fn parse_states(spec: &str) -> Result<u32, UnknownState> {
    let spec = spec.trim();
    if spec.is_empty() || spec == "all" {
        return Ok(ALL_TCP_STATES);
    }
    spec.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .try_fold(0u32, |mask, name| {
            let lower = name.to_ascii_lowercase();
            let (_, number) = TCP_STATES
                .iter()
                .find(|(n, _)| *n == lower || n.replace('-', "_") == lower)
                .ok_or_else(|| UnknownState { name: name.to_string() })?;
            Ok(mask | (1 << number))
        })
}

/// What to ask the kernel for in one dump.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DumpRequest {
    /// `AF_INET` or `AF_INET6`.
    pub family: u8,
    /// Bit mask of TCP states (`1 << state`).
    pub states: u32,
    /// `idiag_ext`: which extension attributes to send.
    pub ext: u8,
    /// `--filter`: the program the kernel runs on each socket
    /// (`INET_DIAG_REQ_BYTECODE`); `None` keeps every socket.
    pub filter: Option<Bytecode>,
}

impl DumpRequest {
    /// The request bytes, host byte order, with sequence number `seq`:
    /// the header and `inet_diag_req_v2`, then the filter attribute if any.
    pub fn encode(&self, seq: u32) -> Vec<u8> {
        let attr_len = self.filter.as_ref().map_or(0, |f| NLA_HDRLEN + f.as_bytes().len());
        let total = DUMP_REQUEST_LEN + attr_len;
        let mut b = vec![0u8; DUMP_REQUEST_LEN];
        b.reserve(attr_len);
        b[0..4].copy_from_slice(&(total as u32).to_ne_bytes());
        b[4..6].copy_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
        b[6..8].copy_from_slice(&(NLM_F_REQUEST | NLM_F_DUMP).to_ne_bytes());
        b[8..12].copy_from_slice(&seq.to_ne_bytes());
        // nlmsg_pid 0: the kernel fills in our port id.
        b[16] = self.family;
        b[17] = IPPROTO_TCP;
        b[18] = self.ext;
        b[20..24].copy_from_slice(&self.states.to_ne_bytes());
        // inet_diag_sockid stays zero: no filter on ports, addresses or
        // cookie (INET_DIAG_NOCOOKIE is only needed for exact lookups).
        if let Some(filter) = &self.filter {
            // `struct nlattr`; the program is whole ops, so already 4-aligned
            // and no padding follows. Its length fits: `parse_filter` caps it.
            b.extend_from_slice(&(attr_len as u16).to_ne_bytes());
            b.extend_from_slice(&INET_DIAG_REQ_BYTECODE.to_ne_bytes());
            b.extend_from_slice(filter.as_bytes());
        }
        b
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::Deserializers;

    fn ext_byte(spec: &str) -> u8 {
        let req = DumpRequest {
            family: 2,
            states: ALL_TCP_STATES,
            ext: Deserializers::parse(spec).unwrap().request_ext(),
            filter: None,
        };
        req.encode(1)[18]
    }

    /// The `idiag_ext` byte at wire offset 18 follows the enabled decoders.
    #[test]
    fn ext_byte_on_the_wire_follows_deserializers() {
        assert_eq!(ext_byte("default"), 0xFE);
        assert_eq!(ext_byte("all"), 0xFF);
        assert_eq!(ext_byte(""), 0x00);
        assert_eq!(ext_byte("meminfo,skmem"), 0x41);
    }

    /// The encoded request matches the bytes `ss` sent on a 6.6 kernel,
    /// apart from the sequence number and ext/states that ss chose.
    #[test]
    fn request_layout_matches_header_fields() {
        let b = DumpRequest {
            family: 10,
            states: 1 << 10,
            ext: 0,
            filter: None,
        }
        .encode(0x01020304);
        assert_eq!(u32::from_ne_bytes(b[0..4].try_into().unwrap()), 72);
        assert_eq!(u16::from_ne_bytes(b[4..6].try_into().unwrap()), 20);
        assert_eq!(u16::from_ne_bytes(b[6..8].try_into().unwrap()), 0x301);
        assert_eq!(u32::from_ne_bytes(b[8..12].try_into().unwrap()), 0x01020304);
        assert_eq!((b[16], b[17]), (10, 6));
        assert_eq!(u32::from_ne_bytes(b[20..24].try_into().unwrap()), 1 << 10);
    }

    /// A filter rides as one `INET_DIAG_REQ_BYTECODE` attribute after the
    /// request, and the message length covers it.
    #[test]
    fn filter_attribute_follows_the_request() {
        let filter = super::super::filter::parse_filter("dport = :443").unwrap();
        let program = filter.clone().unwrap().as_bytes().to_vec();
        let b = DumpRequest {
            family: 2,
            states: ALL_TCP_STATES,
            ext: 0,
            filter,
        }
        .encode(7);
        assert_eq!(b.len(), 72 + 4 + program.len());
        assert_eq!(u32::from_ne_bytes(b[0..4].try_into().unwrap()) as usize, b.len());
        assert_eq!(
            u16::from_ne_bytes(b[72..74].try_into().unwrap()) as usize,
            4 + program.len()
        );
        assert_eq!(u16::from_ne_bytes(b[74..76].try_into().unwrap()), 1);
        assert_eq!(&b[76..], &program[..]);
    }

    /// State names map to kernel bits; unknown ones are refused.
    #[test]
    fn states_parse() {
        assert_eq!(parse_states("all").unwrap(), ALL_TCP_STATES);
        assert_eq!(parse_states("").unwrap(), ALL_TCP_STATES);
        assert_eq!(parse_states("established,listen").unwrap(), (1 << 1) | (1 << 10));
        assert_eq!(parse_states("TIME_WAIT").unwrap(), 1 << 6);
        assert!(parse_states("bogus").is_err());
    }
}
