//! Saved netlink traffic: classic pcap files with link type `DLT_NETLINK`
//! (253), and bare netlink byte streams.
//!
//! A pcap packet starts with a 16-byte cooked netlink header whose last two
//! bytes (big-endian) are the netlink protocol; only protocol 4
//! (`NETLINK_SOCK_DIAG`) is inet_diag. Other protocols are skipped, because
//! rtnetlink's `RTM_NEWADDR` is also message type 20.
//!
//! Two ways in, one parsing: [`read_pcap_replies`] and [`read_raw_replies`]
//! stream any [`Read`] through one reused buffer (memory is bounded by
//! [`MAX_RECORD_BYTES`], whatever the input's size: `/dev/zero`, an endless
//! pipe), and stop when the caller says so; [`for_each_pcap_reply`] and
//! [`for_each_raw_reply`] take a whole capture already in memory. Both
//! report the same errors at the same offsets for the same bytes.

use std::io::{self, Read};
use std::ops::ControlFlow;

use super::bytes::{align4, u16_at, u32_at};
use super::netlink::{NetlinkMessage, NetlinkMessages, NLMSG_HDRLEN};
use super::{classify, DecodeError, Reply};

/// `LINKTYPE_NETLINK`.
pub const DLT_NETLINK: u32 = 253;
/// `NETLINK_SOCK_DIAG`.
pub const NETLINK_SOCK_DIAG: u16 = 4;
const PCAP_HEADER_LEN: usize = 24;
const PCAP_RECORD_HEADER_LEN: usize = 16;
const COOKED_HEADER_LEN: usize = 16;

/// The largest pcap record or raw netlink message read. A dump datagram is
/// at most a few tens of KiB (the captures here have a 256 KiB snaplen),
/// so a larger length is corruption: it is refused before any buffer is
/// sized by it, and no input can make a reader hold more than this.
pub const MAX_RECORD_BYTES: usize = 16 << 20;

#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
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
    #[error("pcap packet {index} at byte {offset}: captured length {len} is above the {} MiB limit of one packet", MAX_RECORD_BYTES >> 20)]
    PacketTooLarge { index: usize, offset: usize, len: usize },
    #[error("pcap packet {index}: netlink data is corrupt: {source}")]
    CorruptNetlink { index: usize, source: super::DecodeError },
    #[error("raw netlink stream is corrupt: {0}")]
    CorruptRaw(super::DecodeError),
    #[error("raw netlink stream is corrupt: netlink message at byte {offset} claims {len} bytes, above the {} MiB limit of one message", MAX_RECORD_BYTES >> 20)]
    RawMessageTooLarge { offset: usize, len: usize },
    /// The input itself failed (not its contents): an I/O error while reading.
    #[error("reading at byte {offset}: {message}")]
    Read {
        offset: usize,
        kind: io::ErrorKind,
        message: String,
    },
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

/// Where a socket reply was found in a capture.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplyOrigin {
    /// Which dump of the capture (counted by `NLMSG_DONE`), from 0.
    pub dump_index: usize,
    /// Packet time for pcaps; `None` for raw streams.
    pub timestamp_ns: Option<u64>,
}

// ------------------------------------------------------- pcap framing ---

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

/// What the file header says about every record: byte order and
/// timestamp resolution.
#[derive(Clone, Copy)]
struct PcapFormat {
    little: bool,
    nanos: bool,
}

impl PcapFormat {
    /// Checks the file header; `head` is the first (up to) 24 bytes.
    fn parse(head: &[u8]) -> Result<PcapFormat, CaptureError> {
        if head.is_empty() {
            return Err(CaptureError::Empty);
        }
        if head.len() < PCAP_HEADER_LEN {
            return Err(CaptureError::ShortPcapHeader { len: head.len() });
        }
        let (little, nanos) = match u32::from_le_bytes([head[0], head[1], head[2], head[3]]) {
            0xa1b2c3d4 => (true, false),
            0xa1b23c4d => (true, true),
            0xd4c3b2a1 => (false, false),
            0x4d3cb2a1 => (false, true),
            magic => return Err(CaptureError::BadMagic { magic }),
        };
        let format = PcapFormat { little, nanos };
        let linktype = format.u32(&head[20..24]);
        if linktype != DLT_NETLINK {
            return Err(CaptureError::WrongLinkType { linktype });
        }
        Ok(format)
    }

    fn u32(self, b: &[u8]) -> u32 {
        let arr = [b[0], b[1], b[2], b[3]];
        if self.little {
            u32::from_le_bytes(arr)
        } else {
            u32::from_be_bytes(arr)
        }
    }

    /// Reads a whole 16-byte record header: the packet time in nanoseconds
    /// and the captured length, refused above [`MAX_RECORD_BYTES`].
    fn record_header(self, index: usize, offset: usize, h: &[u8]) -> Result<(u64, usize), CaptureError> {
        let secs = u64::from(self.u32(&h[0..4]));
        let frac = u64::from(self.u32(&h[4..8]));
        let len = self.u32(&h[8..12]) as usize;
        if len > MAX_RECORD_BYTES {
            return Err(CaptureError::PacketTooLarge { index, offset, len });
        }
        let sub_second_ns = if self.nanos { frac } else { frac.saturating_mul(1000) };
        Ok((secs.saturating_mul(1_000_000_000).saturating_add(sub_second_ns), len))
    }
}

fn corrupt(index: usize, offset: usize, detail: String) -> CaptureError {
    CaptureError::CorruptPacket { index, offset, detail }
}

fn short_record_header(index: usize, offset: usize, got: usize) -> CaptureError {
    corrupt(index, offset, format!("record header cut short ({got} of 16 bytes)"))
}

fn body_past_end(index: usize, offset: usize, len: usize, got: usize) -> CaptureError {
    corrupt(
        index,
        offset,
        format!("captured length {len} runs past the end of the file ({got} bytes left)"),
    )
}

/// A packet from its record's body: the cooked header, then netlink.
fn packet(index: usize, offset: usize, timestamp_ns: u64, body: &[u8]) -> Result<PcapPacket<'_>, CaptureError> {
    if body.len() < COOKED_HEADER_LEN {
        return Err(corrupt(
            index,
            offset,
            format!("packet of {} bytes has no 16-byte cooked netlink header", body.len()),
        ));
    }
    Ok(PcapPacket {
        index,
        timestamp_ns,
        protocol: u16::from_be_bytes([body[14], body[15]]),
        netlink: &body[COOKED_HEADER_LEN..],
    })
}

/// Validates the pcap header and returns an iterator over its packets.
pub(crate) fn pcap_packets(data: &[u8]) -> Result<PcapPackets<'_>, CaptureError> {
    let format = PcapFormat::parse(&data[..data.len().min(PCAP_HEADER_LEN)])?;
    Ok(PcapPackets {
        data,
        offset: PCAP_HEADER_LEN,
        index: 0,
        format,
        failed: false,
    })
}

/// The packets of a pcap in memory, borrowed in place.
pub(crate) struct PcapPackets<'a> {
    data: &'a [u8],
    offset: usize,
    index: usize,
    format: PcapFormat,
    failed: bool,
}

impl<'a> PcapPackets<'a> {
    fn next_packet(&mut self) -> Result<(usize, PcapPacket<'a>), CaptureError> {
        let (index, offset) = (self.index, self.offset);
        let rest = &self.data[offset..];
        let header = rest
            .get(..PCAP_RECORD_HEADER_LEN)
            .ok_or_else(|| short_record_header(index, offset, rest.len()))?;
        let (timestamp_ns, len) = self.format.record_header(index, offset, header)?;
        let rest = &rest[PCAP_RECORD_HEADER_LEN..];
        let body = rest
            .get(..len)
            .ok_or_else(|| body_past_end(index, offset, len, rest.len()))?;
        Ok((PCAP_RECORD_HEADER_LEN + len, packet(index, offset, timestamp_ns, body)?))
    }
}

impl<'a> Iterator for PcapPackets<'a> {
    type Item = Result<PcapPacket<'a>, CaptureError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed || self.offset >= self.data.len() {
            return None;
        }
        match self.next_packet() {
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

/// The packets of a pcap read from a stream, one at a time into one
/// reused buffer (a lending iterator: each packet borrows the reader).
struct PcapStream<R> {
    input: Input<R>,
    format: PcapFormat,
    index: usize,
    body: Vec<u8>,
    done: bool,
}

impl<R: Read> PcapStream<R> {
    fn new(input: R) -> Result<Self, CaptureError> {
        let mut input = Input {
            inner: input,
            offset: 0,
        };
        let mut head = [0u8; PCAP_HEADER_LEN];
        let got = input.fill(&mut head)?;
        let format = PcapFormat::parse(&head[..got])?;
        Ok(PcapStream {
            input,
            format,
            index: 0,
            body: Vec::new(),
            done: false,
        })
    }

    fn next_packet(&mut self) -> Result<Option<PcapPacket<'_>>, CaptureError> {
        if self.done {
            return Ok(None);
        }
        // Any error ends the stream: nothing after it can be trusted.
        self.done = true;
        let (index, offset) = (self.index, self.input.offset);
        let mut header = [0u8; PCAP_RECORD_HEADER_LEN];
        match self.input.fill(&mut header)? {
            0 => return Ok(None),
            PCAP_RECORD_HEADER_LEN => {}
            got => return Err(short_record_header(index, offset, got)),
        }
        let (timestamp_ns, len) = self.format.record_header(index, offset, &header)?;
        let got = self.input.read_up_to(len, &mut self.body)?;
        if got < len {
            return Err(body_past_end(index, offset, len, got));
        }
        let packet = packet(index, offset, timestamp_ns, &self.body)?;
        self.index += 1;
        self.done = false;
        Ok(Some(packet))
    }
}

/// A reader that counts the bytes it has read, for error offsets.
struct Input<R> {
    inner: R,
    offset: usize,
}

impl<R: Read> Input<R> {
    /// Fills `buf` unless the input ends first; returns the bytes read.
    fn fill(&mut self, buf: &mut [u8]) -> Result<usize, CaptureError> {
        let mut got = 0;
        while got < buf.len() {
            match self.inner.read(&mut buf[got..]) {
                Ok(0) => break,
                Ok(n) => got += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(self.failed(got, e)),
            }
        }
        self.offset += got;
        Ok(got)
    }

    /// Replaces `buf`'s contents with the next `len` bytes, or fewer if the
    /// input ends first. The buffer grows with the bytes that arrive, not
    /// with the length claimed, so a truncated input costs what it holds.
    fn read_up_to(&mut self, len: usize, buf: &mut Vec<u8>) -> Result<usize, CaptureError> {
        buf.clear();
        match (&mut self.inner).take(len as u64).read_to_end(buf) {
            Ok(got) => {
                self.offset += got;
                Ok(got)
            }
            Err(e) => Err(self.failed(buf.len(), e)),
        }
    }

    fn failed(&self, got: usize, e: io::Error) -> CaptureError {
        CaptureError::Read {
            offset: self.offset + got,
            kind: e.kind(),
            message: e.to_string(),
        }
    }
}

// ---------------------------------------------------- raw netlink stream ---

/// The netlink messages of a bare stream, read one at a time into one
/// reused buffer. The same checks, in the same order, as
/// [`NetlinkMessages`] on the stream in memory, plus [`MAX_RECORD_BYTES`].
struct RawStream<R> {
    input: Input<R>,
    payload: Vec<u8>,
    done: bool,
}

impl<R: Read> RawStream<R> {
    fn new(input: R) -> Self {
        RawStream {
            input: Input {
                inner: input,
                offset: 0,
            },
            payload: Vec::new(),
            done: false,
        }
    }

    fn next_message(&mut self) -> Result<Option<NetlinkMessage<'_>>, CaptureError> {
        if self.done {
            return Ok(None);
        }
        self.done = true;
        let offset = self.input.offset;
        let mut header = [0u8; NLMSG_HDRLEN];
        let got = self.input.fill(&mut header)?;
        if got == 0 {
            return if offset == 0 {
                Err(CaptureError::Empty)
            } else {
                Ok(None)
            };
        }
        let corrupt = |e| Err(CaptureError::CorruptRaw(e));
        let Some(len) = u32_at(&header[..got], 0).map(|l| l as usize) else {
            return corrupt(DecodeError::TruncatedHeader { offset, available: got });
        };
        if len < NLMSG_HDRLEN {
            return corrupt(DecodeError::MessageTooShort { offset, len });
        }
        if len > MAX_RECORD_BYTES {
            return Err(CaptureError::RawMessageTooLarge { offset, len });
        }
        let mut available = got;
        if got == NLMSG_HDRLEN {
            available += self.input.read_up_to(len - NLMSG_HDRLEN, &mut self.payload)?;
        }
        if available < len {
            return corrupt(DecodeError::MessageOverrun { offset, len, available });
        }
        // Alignment padding; the stream may end inside it.
        let mut padding = [0u8; 3];
        self.input.fill(&mut padding[..align4(len) - len])?;
        self.done = false;
        Ok(Some(NetlinkMessage {
            kind: u16_at(&header, 4).unwrap_or_default(),
            flags: u16_at(&header, 6).unwrap_or_default(),
            seq: u32_at(&header, 8).unwrap_or_default(),
            port_id: u32_at(&header, 12).unwrap_or_default(),
            payload: &self.payload,
        }))
    }
}

// -------------------------------------------------------------- replies ---

/// Hands `on_socket` one message if it is a socket reply; counts
/// `NLMSG_DONE`s in `dumps`.
fn reply(
    msg: &NetlinkMessage<'_>,
    timestamp_ns: Option<u64>,
    dumps: &mut usize,
    on_socket: &mut impl FnMut(ReplyOrigin, &[u8]) -> ControlFlow<()>,
) -> ControlFlow<()> {
    match classify(msg) {
        Reply::Socket(payload) => on_socket(
            ReplyOrigin {
                dump_index: *dumps,
                timestamp_ns,
            },
            payload,
        ),
        Reply::Done { .. } => {
            *dumps += 1;
            ControlFlow::Continue(())
        }
        Reply::Error { .. } | Reply::Other => ControlFlow::Continue(()),
    }
}

/// The replies of one pcap packet (none unless it is `NETLINK_SOCK_DIAG`).
fn packet_replies(
    packet: &PcapPacket<'_>,
    dumps: &mut usize,
    on_socket: &mut impl FnMut(ReplyOrigin, &[u8]) -> ControlFlow<()>,
) -> Result<ControlFlow<()>, CaptureError> {
    if packet.protocol != NETLINK_SOCK_DIAG {
        return Ok(ControlFlow::Continue(()));
    }
    for msg in NetlinkMessages::new(packet.netlink) {
        let msg = msg.map_err(|source| CaptureError::CorruptNetlink {
            index: packet.index,
            source,
        })?;
        if reply(&msg, Some(packet.timestamp_ns), dumps, on_socket).is_break() {
            return Ok(ControlFlow::Break(()));
        }
    }
    Ok(ControlFlow::Continue(()))
}

/// Calls `on_socket` with every inet_diag socket reply of a pcap read from
/// `input`, in order, until the input ends or `on_socket` breaks. Returns
/// the number of dumps that ended with `NLMSG_DONE` until then. Memory is
/// one packet's buffer, however long the input.
pub fn read_pcap_replies<R: Read>(
    input: R,
    mut on_socket: impl FnMut(ReplyOrigin, &[u8]) -> ControlFlow<()>,
) -> Result<usize, CaptureError> {
    let mut stream = PcapStream::new(input)?;
    let mut dumps = 0;
    while let Some(packet) = stream.next_packet()? {
        if packet_replies(&packet, &mut dumps, &mut on_socket)?.is_break() {
            break;
        }
    }
    Ok(dumps)
}

/// The same for a bare netlink byte stream (no pcap framing).
pub fn read_raw_replies<R: Read>(
    input: R,
    mut on_socket: impl FnMut(ReplyOrigin, &[u8]) -> ControlFlow<()>,
) -> Result<usize, CaptureError> {
    let mut stream = RawStream::new(input);
    let mut dumps = 0;
    while let Some(msg) = stream.next_message()? {
        if reply(&msg, None, &mut dumps, &mut on_socket).is_break() {
            break;
        }
    }
    Ok(dumps)
}

/// Calls `on_socket` with every inet_diag socket reply in a pcap held in
/// memory, in order, borrowing each in place. Returns the number of dumps
/// that ended with `NLMSG_DONE`.
pub fn for_each_pcap_reply(data: &[u8], mut on_socket: impl FnMut(ReplyOrigin, &[u8])) -> Result<usize, CaptureError> {
    let mut dumps = 0;
    let mut on_socket = |origin, payload: &[u8]| {
        on_socket(origin, payload);
        ControlFlow::Continue(())
    };
    for packet in pcap_packets(data)? {
        // `on_socket` never breaks here.
        let _ = packet_replies(&packet?, &mut dumps, &mut on_socket)?;
    }
    Ok(dumps)
}

/// The same for a bare netlink byte stream in memory.
pub fn for_each_raw_reply(data: &[u8], mut on_socket: impl FnMut(ReplyOrigin, &[u8])) -> Result<usize, CaptureError> {
    read_raw_replies(data, |origin, payload| {
        on_socket(origin, payload);
        ControlFlow::Continue(())
    })
}

/// Saves received netlink datagrams as a DLT_NETLINK pcap that
/// [`read_pcap_replies`] (and `xtcp2 decode --pcap`) reads back: the Go
/// daemon's `-writeFiles`, at most `limit` datagrams per file. The file is
/// created new (`O_EXCL | O_NOFOLLOW`, mode 0600: it holds every socket's
/// details). A write error is logged once and ends the capture; it never
/// stops the collection.
pub struct PcapCapture {
    path: std::path::PathBuf,
    out: Option<std::io::BufWriter<std::fs::File>>,
    left: u64,
}

/// The cooked header's `ARPHRD_NETLINK`.
const ARPHRD_NETLINK: u16 = 824;

impl PcapCapture {
    pub fn create(path: &std::path::Path, limit: u64) -> io::Result<PcapCapture> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(path)?;
        let mut out = std::io::BufWriter::new(file);
        let mut header = [0u8; 24];
        header[..4].copy_from_slice(&0xa1b2_c3d4u32.to_le_bytes());
        header[4..6].copy_from_slice(&2u16.to_le_bytes());
        header[6..8].copy_from_slice(&4u16.to_le_bytes());
        header[16..20].copy_from_slice(&(MAX_RECORD_BYTES as u32).to_le_bytes());
        header[20..24].copy_from_slice(&DLT_NETLINK.to_le_bytes());
        out.write_all(&header)?;
        out.flush()?;
        Ok(PcapCapture {
            path: path.to_path_buf(),
            out: Some(out),
            left: limit,
        })
    }

    fn write(out: &mut std::io::BufWriter<std::fs::File>, datagram: &[u8]) -> io::Result<()> {
        use std::io::Write;
        let now = crate::clock::now_ns();
        let len = (COOKED_HEADER_LEN + datagram.len()) as u32;
        let mut record = [0u8; 16 + COOKED_HEADER_LEN];
        record[..4].copy_from_slice(&((now / 1_000_000_000) as u32).to_le_bytes());
        record[4..8].copy_from_slice(&((now % 1_000_000_000 / 1_000) as u32).to_le_bytes());
        record[8..12].copy_from_slice(&len.to_le_bytes());
        record[12..16].copy_from_slice(&len.to_le_bytes());
        // The cooked header: packet type "to us" (0), ARPHRD_NETLINK, no
        // address, then the netlink protocol, big-endian.
        record[18..20].copy_from_slice(&ARPHRD_NETLINK.to_be_bytes());
        record[30..32].copy_from_slice(&NETLINK_SOCK_DIAG.to_be_bytes());
        out.write_all(&record)?;
        out.write_all(datagram)?;
        // Whole packets on disk as they come: the capture is readable while
        // the daemon runs and complete if it is killed.
        out.flush()
    }
}

impl crate::kernel::DatagramTap for PcapCapture {
    fn datagram(&mut self, bytes: &[u8]) {
        if self.left == 0 {
            return;
        }
        let Some(out) = &mut self.out else { return };
        if bytes.len() + COOKED_HEADER_LEN > MAX_RECORD_BYTES {
            return;
        }
        match PcapCapture::write(out, bytes) {
            Ok(()) => self.left -= 1,
            Err(e) => {
                tracing::warn!(path = %self.path.display(), error = %e, "-writeFiles: cannot write the capture; it stops here");
                self.out = None;
            }
        }
    }
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
        let streamed = read_pcap_replies(&f[..], |_, _| ControlFlow::Continue(())).unwrap_err();
        assert_eq!(streamed, err);
    }

    fn pcap_header() -> Vec<u8> {
        let mut f = vec![0u8; 24];
        f[..4].copy_from_slice(&0xa1b2c3d4u32.to_le_bytes());
        f[20..24].copy_from_slice(&DLT_NETLINK.to_le_bytes());
        f
    }

    /// One pcap record holding one `SOCK_DIAG_BY_FAMILY` reply (a zeroed
    /// 72-byte `inet_diag_msg`).
    fn socket_record() -> Vec<u8> {
        let mut netlink = Vec::new();
        netlink.extend_from_slice(&88u32.to_ne_bytes()); // nlmsg_len
        netlink.extend_from_slice(&20u16.to_ne_bytes()); // SOCK_DIAG_BY_FAMILY
        netlink.extend_from_slice(&[0; 10]); // flags, seq, pid
        netlink.extend_from_slice(&[0; 72]);
        let mut r = vec![0u8; 8]; // ts_sec, ts_usec
        r.extend_from_slice(&(16 + netlink.len() as u32).to_le_bytes()); // incl_len
        r.extend_from_slice(&(16 + netlink.len() as u32).to_le_bytes()); // orig_len
        let mut cooked = [0u8; 16];
        cooked[14..].copy_from_slice(&NETLINK_SOCK_DIAG.to_be_bytes());
        r.extend_from_slice(&cooked);
        r.extend_from_slice(&netlink);
        r
    }

    /// A packet claiming more than [`MAX_RECORD_BYTES`] is refused from its
    /// header, in memory and streamed, whatever follows.
    #[test]
    fn oversized_packet_is_refused_before_it_is_read() {
        let mut f = pcap_header();
        f.extend_from_slice(&socket_record());
        let len = MAX_RECORD_BYTES + 1;
        f.extend_from_slice(&[0; 8]);
        f.extend_from_slice(&(len as u32).to_le_bytes());
        f.extend_from_slice(&(len as u32).to_le_bytes());
        f.extend_from_slice(&[0; 64]);
        let offset = 24 + socket_record().len();
        let expected = CaptureError::PacketTooLarge { index: 1, offset, len };
        assert_eq!(for_each_pcap_reply(&f, |_, _| {}), Err(expected.clone()));
        let mut sockets = 0;
        let streamed = read_pcap_replies(&f[..], |_, _| {
            sockets += 1;
            ControlFlow::Continue(())
        });
        assert_eq!((sockets, streamed), (1, Err(expected)));
    }

    /// A raw message claiming more than [`MAX_RECORD_BYTES`] is refused from
    /// its header.
    #[test]
    fn oversized_raw_message_is_refused_before_it_is_read() {
        let mut raw = vec![0u8; 16];
        raw[..4].copy_from_slice(&(MAX_RECORD_BYTES as u32 + 1).to_ne_bytes());
        let err = for_each_raw_reply(&raw, |_, _| {}).unwrap_err();
        assert_eq!(
            err,
            CaptureError::RawMessageTooLarge {
                offset: 0,
                len: MAX_RECORD_BYTES + 1
            }
        );
        assert!(err.to_string().contains("above the 16 MiB limit"), "{err}");
    }

    /// An input that fails (not its bytes) is a read error at the byte
    /// where it failed.
    #[test]
    fn read_error_names_its_offset() {
        struct FailsAfter(std::io::Cursor<Vec<u8>>);
        impl Read for FailsAfter {
            fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
                match self.0.read(buf)? {
                    0 => Err(io::Error::other("disk on fire")),
                    n => Ok(n),
                }
            }
        }
        let mut f = pcap_header();
        f.extend_from_slice(&socket_record()[..20]);
        let err = read_pcap_replies(FailsAfter(std::io::Cursor::new(f)), |_, _| ControlFlow::Continue(())).unwrap_err();
        assert_eq!(
            err,
            CaptureError::Read {
                offset: 44,
                kind: io::ErrorKind::Other,
                message: "disk on fire".into()
            }
        );
    }

    /// When the caller breaks, reading stops: an endless stream ends there.
    #[test]
    fn break_stops_reading_an_endless_stream() {
        struct Endless {
            record: Vec<u8>,
            at: usize,
            read: usize,
        }
        impl Read for Endless {
            fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
                assert!(self.read < 1 << 20, "read on after the caller stopped");
                let n = buf.len().min(self.record.len() - self.at);
                buf[..n].copy_from_slice(&self.record[self.at..self.at + n]);
                self.at = (self.at + n) % self.record.len();
                self.read += n;
                Ok(n)
            }
        }
        let mut endless = Endless {
            record: socket_record(),
            at: 0,
            read: 0,
        };
        let mut sockets = 0;
        let header = pcap_header();
        let input = io::Read::chain(&header[..], &mut endless);
        let dumps = read_pcap_replies(input, |_, _| {
            sockets += 1;
            if sockets == 3 {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        });
        assert_eq!((sockets, dumps), (3, Ok(0)));
        assert_eq!(endless.read, 3 * socket_record().len());
    }
}
