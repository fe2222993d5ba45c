//! `-populateNsid`: the id (NETNSA_NSID) the daemon's own namespace knows
//! each collected namespace by, read with rtnetlink `RTM_GETNSID`.
//!
//! An nsid is local to the namespace asking: `ip netns set NAME ID` (or the
//! kernel, when a veth or similar link crosses namespaces) assigns it in
//! the asker's table. This module only reads: a namespace without an id
//! gets none from us (`NETNSA_NSID_NOT_ASSIGNED`, -1, means the record's
//! `nsid` is absent), because assigning one would change the host's state
//! (`ip netns list-id` would show ids the operator never made).
//!
//! One request per namespace, when discovery first finds it; never per
//! socket or per poll.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::path::Path;
use std::time::Duration;

use netlink_sys::{protocols::NETLINK_ROUTE, Socket};

/// `RTM_GETNSID` / `RTM_NEWNSID` (linux/rtnetlink.h).
const RTM_NEWNSID: u16 = 88;
const RTM_GETNSID: u16 = 90;
use crate::decode::netlink::{NLMSG_ERROR, NLM_F_REQUEST};
/// linux/net_namespace.h.
const NETNSA_NSID: u16 = 1;
const NETNSA_FD: u16 = 3;
/// The kernel's "no id" (`NETNSA_NSID_NOT_ASSIGNED`).
const NSID_NOT_ASSIGNED: i32 = -1;
/// A reply is a header, a 4-byte `rtgenmsg` and one or two attributes.
const REPLY_BUFFER: usize = 512;
/// The kernel answers at once; a second is generous.
const REPLY_TIMEOUT: Duration = Duration::from_secs(1);

#[derive(Debug, thiserror::Error)]
pub enum NsidError {
    #[error("opening {path}: {source}")]
    OpenNamespace { path: String, source: io::Error },
    #[error("rtnetlink socket: {0}")]
    Socket(#[source] io::Error),
    #[error("RTM_GETNSID: {0}")]
    Request(#[source] io::Error),
    #[error("RTM_GETNSID: kernel answered error {0}")]
    Kernel(i32),
    #[error("RTM_GETNSID: malformed reply ({0})")]
    Malformed(&'static str),
}

impl NsidError {
    /// Short, stable name for metrics labels.
    pub fn kind(&self) -> &'static str {
        match self {
            NsidError::OpenNamespace { .. } => "nsid_open",
            NsidError::Socket(_) => "nsid_socket",
            NsidError::Request(_) => "nsid_request",
            NsidError::Kernel(_) => "nsid_kernel",
            NsidError::Malformed(_) => "nsid_malformed",
        }
    }
}

/// An rtnetlink socket in the daemon's namespace, reused for every lookup
/// of a discovery pass.
pub struct NsidReader {
    socket: Socket,
    seq: u32,
}

impl NsidReader {
    pub fn open() -> Result<NsidReader, NsidError> {
        let mut socket = Socket::new(NETLINK_ROUTE).map_err(NsidError::Socket)?;
        socket.bind_auto().map_err(NsidError::Socket)?;
        crate::kernel::set_recv_timeout(&socket, REPLY_TIMEOUT).map_err(NsidError::Socket)?;
        Ok(NsidReader { socket, seq: 0 })
    }

    /// The nsid of the namespace at `path`, `None` when it has none.
    pub fn lookup(&mut self, path: &Path) -> Result<Option<u32>, NsidError> {
        let file = File::open(path).map_err(|source| NsidError::OpenNamespace {
            path: path.display().to_string(),
            source,
        })?;
        self.seq = self.seq.wrapping_add(1);
        let fd = u32::try_from(file.as_raw_fd()).map_err(|_| NsidError::Malformed("negative fd"))?;
        self.socket
            .send(&request(self.seq, fd), 0)
            .map_err(NsidError::Request)?;
        let mut buf = vec![0u8; REPLY_BUFFER];
        loop {
            let mut window: &mut [u8] = &mut buf[..];
            let n = match self.socket.recv(&mut window, 0) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(NsidError::Request(e)),
            };
            let reply = buf.get(..n).ok_or(NsidError::Malformed("length"))?;
            // A reply to an earlier, timed-out request is skipped.
            if let Some(answer) = parse_reply(reply, self.seq)? {
                drop(file);
                return Ok(answer);
            }
        }
    }
}

/// `RTM_GETNSID` for the namespace open as `fd`: netlink header, a 4-byte
/// `rtgenmsg` (family AF_UNSPEC, padded) and `NETNSA_FD`.
fn request(seq: u32, fd: u32) -> Vec<u8> {
    let len: u32 = 16 + 4 + 8;
    let mut m = Vec::with_capacity(len as usize);
    m.extend_from_slice(&len.to_ne_bytes());
    m.extend_from_slice(&RTM_GETNSID.to_ne_bytes());
    m.extend_from_slice(&NLM_F_REQUEST.to_ne_bytes());
    m.extend_from_slice(&seq.to_ne_bytes());
    m.extend_from_slice(&0u32.to_ne_bytes());
    m.extend_from_slice(&[0u8; 4]);
    m.extend_from_slice(&8u16.to_ne_bytes());
    m.extend_from_slice(&NETNSA_FD.to_ne_bytes());
    m.extend_from_slice(&fd.to_ne_bytes());
    m
}

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_ne_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

/// The answer in `reply` to request `seq`: `Ok(None)` when the datagram
/// answers another request, `Ok(Some(None))` for "no id".
fn parse_reply(reply: &[u8], seq: u32) -> Result<Option<Option<u32>>, NsidError> {
    let malformed = NsidError::Malformed;
    let len = u32_at(reply, 0).ok_or(malformed("short header"))? as usize;
    let kind = u16_at(reply, 4).ok_or(malformed("short header"))?;
    let got_seq = u32_at(reply, 8).ok_or(malformed("short header"))?;
    if len < 16 || len > reply.len() {
        return Err(malformed("length"));
    }
    if got_seq != seq {
        return Ok(None);
    }
    match kind {
        NLMSG_ERROR => {
            let errno = u32_at(reply, 16).ok_or(malformed("short error"))? as i32;
            Err(NsidError::Kernel(-errno))
        }
        RTM_NEWNSID => {
            let mut at = 16 + 4;
            while at + 4 <= len {
                let attr_len = u16_at(reply, at).ok_or(malformed("attribute"))? as usize;
                let attr_type = u16_at(reply, at + 2).ok_or(malformed("attribute"))? & 0x3fff;
                if attr_len < 4 || at + attr_len > len {
                    return Err(malformed("attribute length"));
                }
                if attr_type == NETNSA_NSID {
                    let id = u32_at(reply, at + 4).ok_or(malformed("NETNSA_NSID"))? as i32;
                    return Ok(Some(u32::try_from(id).ok().filter(|_| id != NSID_NOT_ASSIGNED)));
                }
                at += (attr_len + 3) & !3;
            }
            Err(malformed("no NETNSA_NSID"))
        }
        _ => Err(malformed("unexpected message type")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(seq: u32, nsid: i32) -> Vec<u8> {
        let mut m = Vec::new();
        m.extend_from_slice(&28u32.to_ne_bytes());
        m.extend_from_slice(&RTM_NEWNSID.to_ne_bytes());
        m.extend_from_slice(&0u16.to_ne_bytes());
        m.extend_from_slice(&seq.to_ne_bytes());
        m.extend_from_slice(&0u32.to_ne_bytes());
        m.extend_from_slice(&[0u8; 4]);
        m.extend_from_slice(&8u16.to_ne_bytes());
        m.extend_from_slice(&NETNSA_NSID.to_ne_bytes());
        m.extend_from_slice(&nsid.to_ne_bytes());
        m
    }

    /// An assigned id is read; the kernel's -1 is "none", not 4294967295.
    #[test]
    fn reply_with_id_and_without() {
        assert_eq!(parse_reply(&reply(7, 42), 7).unwrap(), Some(Some(42)));
        assert_eq!(parse_reply(&reply(7, -1), 7).unwrap(), Some(None));
        assert_eq!(parse_reply(&reply(6, 42), 7).unwrap(), None);
    }

    /// A kernel error and a truncated reply are errors, not panics.
    #[test]
    fn error_and_truncated_replies() {
        let mut err = Vec::new();
        err.extend_from_slice(&36u32.to_ne_bytes());
        err.extend_from_slice(&NLMSG_ERROR.to_ne_bytes());
        err.extend_from_slice(&0u16.to_ne_bytes());
        err.extend_from_slice(&3u32.to_ne_bytes());
        err.extend_from_slice(&0u32.to_ne_bytes());
        err.extend_from_slice(&(-libc::EINVAL).to_ne_bytes());
        err.extend_from_slice(&[0u8; 16]);
        assert!(matches!(parse_reply(&err, 3), Err(NsidError::Kernel(libc::EINVAL))));
        let full = reply(1, 5);
        for cut in 0..full.len() {
            assert!(parse_reply(&full[..cut], 1).is_err(), "cut at {cut}");
        }
    }

    /// The request is the 28 bytes `ip netns identify`-style tools send.
    #[test]
    fn request_layout() {
        let r = request(9, 5);
        assert_eq!(r.len(), 28);
        assert_eq!(u32_at(&r, 0), Some(28));
        assert_eq!(u16_at(&r, 4), Some(RTM_GETNSID));
        assert_eq!(u32_at(&r, 8), Some(9));
        assert_eq!(u16_at(&r, 22), Some(NETNSA_FD));
        assert_eq!(u32_at(&r, 24), Some(5));
    }
}
