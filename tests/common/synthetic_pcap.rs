//! Small DLT_NETLINK captures built in the test, field by field, for
//! tests that need valid input of any size without the shared fixtures.

#![allow(dead_code)]

/// One netlink message (`nlmsghdr` + payload), padded to 4 bytes.
pub fn netlink_message(kind: u16, flags: u16, payload: &[u8]) -> Vec<u8> {
    let mut m = Vec::new();
    m.extend_from_slice(&(16 + payload.len() as u32).to_ne_bytes()); // nlmsg_len
    m.extend_from_slice(&kind.to_ne_bytes()); // nlmsg_type
    m.extend_from_slice(&flags.to_ne_bytes()); // nlmsg_flags
    m.extend_from_slice(&7u32.to_ne_bytes()); // nlmsg_seq
    m.extend_from_slice(&0u32.to_ne_bytes()); // nlmsg_pid
    m.extend_from_slice(payload);
    m.resize(m.len().next_multiple_of(4), 0);
    m
}

/// A `SOCK_DIAG_BY_FAMILY` reply (`NLM_F_MULTI`): a 72-byte `inet_diag_msg`
/// of an established IPv4 socket, no attributes.
pub fn socket_reply(sport: u16) -> Vec<u8> {
    let mut msg = vec![0u8; 72];
    msg[0] = 2; // idiag_family = AF_INET
    msg[1] = 1; // idiag_state = TCP_ESTABLISHED
    msg[4..6].copy_from_slice(&sport.to_be_bytes()); // id.idiag_sport
    msg[6..8].copy_from_slice(&443u16.to_be_bytes()); // id.idiag_dport
    netlink_message(20, 0x2, &msg)
}

/// `NLMSG_DONE` with errno 0.
pub fn done() -> Vec<u8> {
    netlink_message(3, 0x2, &0i32.to_ne_bytes())
}

/// Classic little-endian pcap header, microseconds, link type 253.
pub fn pcap_header() -> Vec<u8> {
    let mut h = Vec::new();
    h.extend_from_slice(&0xa1b2_c3d4u32.to_le_bytes()); // magic
    h.extend_from_slice(&2u16.to_le_bytes()); // version major
    h.extend_from_slice(&4u16.to_le_bytes()); // version minor
    h.extend_from_slice(&[0; 8]); // thiszone, sigfigs
    h.extend_from_slice(&262_144u32.to_le_bytes()); // snaplen
    h.extend_from_slice(&253u32.to_le_bytes()); // DLT_NETLINK
    h
}

/// One pcap record: record header, the 16-byte cooked netlink header
/// (protocol 4, NETLINK_SOCK_DIAG, big-endian in its last two bytes), then
/// the netlink messages.
pub fn pcap_record(netlink: &[u8]) -> Vec<u8> {
    let len = (16 + netlink.len()) as u32;
    let mut r = Vec::new();
    r.extend_from_slice(&1_700_000_000u32.to_le_bytes()); // ts_sec
    r.extend_from_slice(&0u32.to_le_bytes()); // ts_usec
    r.extend_from_slice(&len.to_le_bytes()); // incl_len
    r.extend_from_slice(&len.to_le_bytes()); // orig_len
    let mut cooked = [0u8; 16];
    cooked[14..16].copy_from_slice(&4u16.to_be_bytes());
    r.extend_from_slice(&cooked);
    r.extend_from_slice(netlink);
    r
}

/// One dump of `sockets` sockets in one pcap record.
pub fn dump_record(sockets: u16) -> Vec<u8> {
    let mut netlink: Vec<u8> = (0..sockets).flat_map(|i| socket_reply(10_000 + i)).collect();
    netlink.extend(done());
    pcap_record(&netlink)
}
