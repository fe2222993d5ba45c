//! Saved netlink traffic: classic pcap files with link type `DLT_NETLINK`
//! (253), and bare netlink byte streams.
//!
//! A pcap packet starts with a 16-byte cooked netlink header whose last two
//! bytes (big-endian) are the netlink protocol; only protocol 4
//! (`NETLINK_SOCK_DIAG`) is inet_diag. Other protocols are skipped, because
//! rtnetlink's `RTM_NEWADDR` is also message type 20.

use super::netlink::NetlinkMessages;
use super::{classify, Reply};

/// `LINKTYPE_NETLINK`.
pub const DLT_NETLINK: u32 = 253;
/// `NETLINK_SOCK_DIAG`.
pub const NETLINK_SOCK_DIAG: u16 = 4;
const PCAP_HEADER_LEN: usize = 24;
const PCAP_RECORD_HEADER_LEN: usize = 16;
const COOKED_HEADER_LEN: usize = 16;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CaptureError {
    #[error("the file is empty")]
    Empty,
    #[error("not a pcap file: {len} bytes is shorter than the 24-byte pcap header")]
    ShortPcapHeader { len: usize },
    #[error("not a classic pcap file: magic {magic:#010x}{}", pcapng_hint(*magic))]
    BadMagic { magic: u32 },
    #[error("pcap link type is {linktype}, expected {DLT_NETLINK} (DLT_NETLINK)")]
    WrongLinkType { linktype: u32 },
    #[error("pcap packet {index} at byte {offset}: {detail}")]
    CorruptPacket {
        index: usize,
        offset: usize,
        detail: String,
    },
    #[error("pcap packet {index}: netlink data is corrupt: {source}")]
    CorruptNetlink { index: usize, source: super::DecodeError },
    #[error("raw netlink stream is corrupt: {0}")]
    CorruptRaw(super::DecodeError),
}

/// The pcapng section header block type, as the first four bytes read.
const PCAPNG_MAGIC: u32 = 0x0a0d_0d0a;

/// Names pcapng only when the file is pcapng: a zero-filled or foreign file
/// must not be blamed on a format it is not.
fn pcapng_hint(magic: u32) -> &'static str {
    if magic == PCAPNG_MAGIC {
        " (this is pcapng, which is not supported: convert it with `editcap -F pcap`)"
    } else {
        ""
    }
}

/// One packet of a DLT_NETLINK pcap.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PcapPacket<'a> {
    pub index: usize,
    pub timestamp_ns: u64,
    /// Netlink protocol from the cooked header.
    pub protocol: u16,
    /// The netlink messages after the cooked header.
    pub netlink: &'a [u8],
}

/// Validates the pcap header and returns an iterator over its packets.
pub(crate) fn pcap_packets(data: &[u8]) -> Result<PcapPackets<'_>, CaptureError> {
    if data.is_empty() {
        return Err(CaptureError::Empty);
    }
    if data.len() < PCAP_HEADER_LEN {
        return Err(CaptureError::ShortPcapHeader { len: data.len() });
    }
    let magic_le = u32::from_le_bytes([data[0], data[1], data[2], data[3]]);
    let (little, nanos) = match magic_le {
        0xa1b2c3d4 => (true, false),
        0xa1b23c4d => (true, true),
        0xd4c3b2a1 => (false, false),
        0x4d3cb2a1 => (false, true),
        magic => return Err(CaptureError::BadMagic { magic }),
    };
    let reader = PcapReader { little };
    let linktype = reader.u32(&data[20..24]);
    if linktype != DLT_NETLINK {
        return Err(CaptureError::WrongLinkType { linktype });
    }
    Ok(PcapPackets {
        data,
        offset: PCAP_HEADER_LEN,
        index: 0,
        reader,
        nanos,
        failed: false,
    })
}

#[derive(Clone, Copy)]
struct PcapReader {
    little: bool,
}

impl PcapReader {
    fn u32(self, b: &[u8]) -> u32 {
        let arr = [b[0], b[1], b[2], b[3]];
        if self.little {
            u32::from_le_bytes(arr)
        } else {
            u32::from_be_bytes(arr)
        }
    }
}

pub(crate) struct PcapPackets<'a> {
    data: &'a [u8],
    offset: usize,
    index: usize,
    reader: PcapReader,
    nanos: bool,
    failed: bool,
}

impl<'a> Iterator for PcapPackets<'a> {
    type Item = Result<PcapPacket<'a>, CaptureError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed || self.offset >= self.data.len() {
            return None;
        }
        let index = self.index;
        let offset = self.offset;
        let corrupt = |detail: String| CaptureError::CorruptPacket { index, offset, detail };
        let rest = &self.data[offset..];
        let result = (|| {
            if rest.len() < PCAP_RECORD_HEADER_LEN {
                return Err(corrupt(format!("record header cut short ({} of 16 bytes)", rest.len())));
            }
            let secs = u64::from(self.reader.u32(&rest[0..4]));
            let frac = u64::from(self.reader.u32(&rest[4..8]));
            let incl = self.reader.u32(&rest[8..12]) as usize;
            let body = rest
                .get(PCAP_RECORD_HEADER_LEN..PCAP_RECORD_HEADER_LEN + incl)
                .ok_or_else(|| {
                    corrupt(format!(
                        "captured length {incl} runs past the end of the file ({} bytes left)",
                        rest.len() - PCAP_RECORD_HEADER_LEN
                    ))
                })?;
            if body.len() < COOKED_HEADER_LEN {
                return Err(corrupt(format!(
                    "packet of {} bytes has no 16-byte cooked netlink header",
                    body.len()
                )));
            }
            let sub_second_ns = if self.nanos { frac } else { frac.saturating_mul(1000) };
            Ok((
                PCAP_RECORD_HEADER_LEN + incl,
                PcapPacket {
                    index,
                    timestamp_ns: secs.saturating_mul(1_000_000_000).saturating_add(sub_second_ns),
                    protocol: u16::from_be_bytes([body[14], body[15]]),
                    netlink: &body[COOKED_HEADER_LEN..],
                },
            ))
        })();
        match result {
            Ok((advance, packet)) => {
                self.offset += advance;
                self.index += 1;
                Some(Ok(packet))
            }
            Err(e) => {
                self.failed = true;
                Some(Err(e))
            }
        }
    }
}

/// Where a socket reply was found in a capture.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplyOrigin {
    /// Which dump of the capture (counted by `NLMSG_DONE`), from 0.
    pub dump_index: usize,
    /// Packet time for pcaps; `None` for raw streams.
    pub timestamp_ns: Option<u64>,
}

/// Calls `on_socket` with every inet_diag socket reply in a pcap, in order.
/// Returns the number of dumps that ended with `NLMSG_DONE`.
pub fn for_each_pcap_reply(data: &[u8], mut on_socket: impl FnMut(ReplyOrigin, &[u8])) -> Result<usize, CaptureError> {
    let mut dumps = 0;
    for packet in pcap_packets(data)? {
        let packet = packet?;
        if packet.protocol != NETLINK_SOCK_DIAG {
            continue;
        }
        for msg in NetlinkMessages::new(packet.netlink) {
            let msg = msg.map_err(|source| CaptureError::CorruptNetlink {
                index: packet.index,
                source,
            })?;
            match classify(&msg) {
                Reply::Socket(payload) => on_socket(
                    ReplyOrigin {
                        dump_index: dumps,
                        timestamp_ns: Some(packet.timestamp_ns),
                    },
                    payload,
                ),
                Reply::Done { .. } => dumps += 1,
                Reply::Error { .. } | Reply::Other => {}
            }
        }
    }
    Ok(dumps)
}

/// The same for a bare netlink byte stream (no pcap framing).
pub fn for_each_raw_reply(data: &[u8], mut on_socket: impl FnMut(ReplyOrigin, &[u8])) -> Result<usize, CaptureError> {
    if data.is_empty() {
        return Err(CaptureError::Empty);
    }
    let mut dumps = 0;
    for msg in NetlinkMessages::new(data) {
        let msg = msg.map_err(CaptureError::CorruptRaw)?;
        match classify(&msg) {
            Reply::Socket(payload) => on_socket(
                ReplyOrigin {
                    dump_index: dumps,
                    timestamp_ns: None,
                },
                payload,
            ),
            Reply::Done { .. } => dumps += 1,
            Reply::Error { .. } | Reply::Other => {}
        }
    }
    Ok(dumps)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Empty, short, pcapng and wrong-link-type files are refused with a reason.
    #[test]
    fn bad_files_are_clear_errors() {
        assert_eq!(pcap_packets(&[]).err(), Some(CaptureError::Empty));
        assert_eq!(
            pcap_packets(&[1, 2, 3]).err(),
            Some(CaptureError::ShortPcapHeader { len: 3 })
        );
        let mut ng = vec![0u8; 24];
        ng[..4].copy_from_slice(&0x0a0d0d0au32.to_le_bytes());
        assert!(matches!(pcap_packets(&ng), Err(CaptureError::BadMagic { .. })));
        let mut eth = vec![0u8; 24];
        eth[..4].copy_from_slice(&0xa1b2c3d4u32.to_le_bytes());
        eth[20..24].copy_from_slice(&1u32.to_le_bytes());
        assert_eq!(
            pcap_packets(&eth).err(),
            Some(CaptureError::WrongLinkType { linktype: 1 })
        );
    }

    /// A packet whose captured length runs past the file is a corrupt-packet error.
    #[test]
    fn truncated_packet_is_an_error() {
        let mut f = vec![0u8; 24];
        f[..4].copy_from_slice(&0xa1b2c3d4u32.to_le_bytes());
        f[20..24].copy_from_slice(&DLT_NETLINK.to_le_bytes());
        f.extend_from_slice(&[0u8; 8]);
        f.extend_from_slice(&1000u32.to_le_bytes());
        f.extend_from_slice(&1000u32.to_le_bytes());
        f.extend_from_slice(&[0u8; 20]);
        let err = for_each_pcap_reply(&f, |_, _| {}).unwrap_err();
        assert!(err.to_string().contains("captured length 1000 runs past"), "{err}");
    }
}
