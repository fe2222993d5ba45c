//! Walking a buffer of netlink messages (`struct nlmsghdr` + payload).
//!
//! A datagram from the kernel, a packet of a pcap, or a raw byte stream all
//! hold back-to-back, 4-byte-aligned messages. This walker borrows each
//! payload in place and never allocates.

use super::bytes::{align4, u16_at, u32_at};
use super::DecodeError;

/// `sizeof(struct nlmsghdr)`.
pub const NLMSG_HDRLEN: usize = 16;
/// `NLMSG_ERROR`: an error or an acknowledgement (errno 0).
pub(crate) const NLMSG_ERROR: u16 = 2;
/// `NLMSG_DONE`: end of a dump; payload is an `int` errno (0 or negative).
pub const NLMSG_DONE: u16 = 3;
/// `SOCK_DIAG_BY_FAMILY`: one socket in a dump reply.
pub const SOCK_DIAG_BY_FAMILY: u16 = 20;
/// `NLM_F_REQUEST`: a request (set by the requester; replies lack it).
pub(crate) const NLM_F_REQUEST: u16 = 0x1;
/// `NLM_F_DUMP_INTR`: the dump was interrupted by a change of the table;
/// the set of sockets may be inconsistent (some seen twice or missed).
pub(crate) const NLM_F_DUMP_INTR: u16 = 0x10;

/// One netlink message, borrowed from the buffer.
#[derive(Debug, Clone, Copy)]
pub struct NetlinkMessage<'a> {
    pub kind: u16,
    pub flags: u16,
    pub seq: u32,
    pub port_id: u32,
    /// The bytes after the 16-byte header, `nlmsg_len - 16` long.
    pub payload: &'a [u8],
}

/// Iterates the messages in `buf`. Stops with an error (and then ends) at the
/// first impossible length, because nothing after it can be trusted.
pub struct NetlinkMessages<'a> {
    buf: &'a [u8],
    offset: usize,
    failed: bool,
}

impl<'a> NetlinkMessages<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        NetlinkMessages {
            buf,
            offset: 0,
            failed: false,
        }
    }
}

impl<'a> Iterator for NetlinkMessages<'a> {
    type Item = Result<NetlinkMessage<'a>, DecodeError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed || self.offset >= self.buf.len() {
            return None;
        }
        let rest = &self.buf[self.offset..];
        let offset = self.offset;
        let parsed = (|| {
            let len = u32_at(rest, 0).ok_or(DecodeError::TruncatedHeader {
                offset,
                available: rest.len(),
            })? as usize;
            if len < NLMSG_HDRLEN {
                return Err(DecodeError::MessageTooShort { offset, len });
            }
            if len > rest.len() {
                return Err(DecodeError::MessageOverrun {
                    offset,
                    len,
                    available: rest.len(),
                });
            }
            Ok(NetlinkMessage {
                kind: u16_at(rest, 4).unwrap_or_default(),
                flags: u16_at(rest, 6).unwrap_or_default(),
                seq: u32_at(rest, 8).unwrap_or_default(),
                port_id: u32_at(rest, 12).unwrap_or_default(),
                payload: &rest[NLMSG_HDRLEN..len],
            })
        })();
        match parsed {
            Ok(msg) => {
                let advance = align4(NLMSG_HDRLEN + msg.payload.len());
                self.offset = self.offset.saturating_add(advance);
                Some(Ok(msg))
            }
            Err(e) => {
                self.failed = true;
                Some(Err(e))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(kind: u16, flags: u16, seq: u32, payload: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        v.extend_from_slice(&((NLMSG_HDRLEN + payload.len()) as u32).to_ne_bytes());
        v.extend_from_slice(&kind.to_ne_bytes());
        v.extend_from_slice(&flags.to_ne_bytes());
        v.extend_from_slice(&seq.to_ne_bytes());
        v.extend_from_slice(&0u32.to_ne_bytes());
        v.extend_from_slice(payload);
        while v.len() % 4 != 0 {
            v.push(0);
        }
        v
    }

    /// Several messages in one buffer are walked in order, padding skipped.
    #[test]
    fn walks_back_to_back_messages_with_padding() {
        let mut buf = message(20, 2, 7, &[1, 2, 3]);
        buf.extend(message(NLMSG_DONE, 2, 7, &0i32.to_ne_bytes()));
        let msgs: Vec<_> = NetlinkMessages::new(&buf).collect::<Result<_, _>>().unwrap();
        assert_eq!(msgs.len(), 2);
        assert_eq!(msgs[0].payload, &[1, 2, 3]);
        assert_eq!(msgs[1].kind, NLMSG_DONE);
        assert_eq!(msgs[1].seq, 7);
    }

    /// A length that runs past the buffer is an error with the offsets in it.
    #[test]
    fn overrun_is_an_error_with_context() {
        let mut buf = message(20, 0, 1, &[0; 8]);
        buf[0] = 200;
        let err = NetlinkMessages::new(&buf).next().unwrap().unwrap_err();
        assert_eq!(
            err.to_string(),
            "netlink message at byte 0 claims 200 bytes but only 24 remain"
        );
    }

    /// A length below the header size cannot be skipped safely: error, then stop.
    #[test]
    fn too_short_length_stops_the_walk() {
        let mut buf = message(20, 0, 1, &[]);
        buf[0] = 4;
        let mut it = NetlinkMessages::new(&buf);
        assert!(matches!(
            it.next(),
            Some(Err(DecodeError::MessageTooShort { len: 4, .. }))
        ));
        assert!(it.next().is_none());
    }
}
