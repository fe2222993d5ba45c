//! No input makes the decoder panic, and every failure is a typed error
//! whose fields describe the bytes truthfully. Proptest feeds random
//! bytes, and real captures with bit flips, truncations and corrupted
//! length fields, to every entry point that reads untrusted bytes:
//! `NetlinkMessages`, `decode_socket`/`SocketDecoder`, the capture readers
//! (in memory, and streamed in small chunks: both must agree) and the dump
//! receive step `absorb_datagram`. The coverage-guided fuzzers in `fuzz/`
//! (cargo-fuzz) hunt the same entry points for longer.
//!
//! Case counts are bounded so the whole file runs in seconds; raise them
//! with `PROPTEST_CASES=100000` for a longer hunt.

mod support;

use proptest::prelude::*;
use proptest::test_runner::Config;
use std::ops::ControlFlow;

use xtcp2::decode::capture::{
    for_each_pcap_reply, for_each_raw_reply, read_pcap_replies, read_raw_replies, CaptureError, MAX_RECORD_BYTES,
};
use xtcp2::decode::inet_diag::INET_DIAG_MSG_LEN;
use xtcp2::decode::netlink::NLMSG_HDRLEN;
use xtcp2::decode::{decode_socket, DecodeError, DecodeStats, Deserializers, NetlinkMessages, SocketDecoder};
use xtcp2::kernel::socket::{absorb_datagram, DumpSummary};
use xtcp2::kernel::DumpError;
use xtcp2::record::Record;

/// Cases per property unless `PROPTEST_CASES` says otherwise.
const CASES: u32 = 512;

fn config() -> Config {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(CASES);
    Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    }
}

// ---------------------------------------------------------------- seeds ---

/// Appends one netlink attribute, padded to 4 bytes.
fn push_attr(out: &mut Vec<u8>, kind: u16, value: &[u8]) {
    out.extend_from_slice(&((4 + value.len()) as u16).to_ne_bytes());
    out.extend_from_slice(&kind.to_ne_bytes());
    out.extend_from_slice(value);
    while out.len() % 4 != 0 {
        out.push(0);
    }
}

/// A socket reply payload with every attribute the decoder knows and a
/// 280-byte (Linux 7.0) tcp_info, so mutations reach every decoding branch.
fn synthetic_socket(port: u16) -> Vec<u8> {
    let mut p = vec![0u8; INET_DIAG_MSG_LEN];
    p[0] = 10;
    p[1] = 1;
    p[4..6].copy_from_slice(&port.to_be_bytes());
    p[6..8].copy_from_slice(&4000u16.to_be_bytes());
    p[8..24].copy_from_slice(&[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 127, 0, 0, 1]);
    p[68..72].copy_from_slice(&12345u32.to_ne_bytes());
    let info: Vec<u8> = (0..280u32).map(|i| i as u8).collect();
    push_attr(&mut p, 2, &info);
    push_attr(&mut p, 4, b"dctcp\0");
    push_attr(&mut p, 1, &[1; 16]);
    push_attr(&mut p, 7, &[2; 36]);
    push_attr(&mut p, 16, &[3; 20]);
    push_attr(&mut p, 9, &[4; 16]);
    push_attr(&mut p, 3, &[5; 16]);
    push_attr(&mut p, 5, &[6]);
    push_attr(&mut p, 6, &[7]);
    push_attr(&mut p, 8, &[3]);
    push_attr(&mut p, 17, &[8; 4]);
    push_attr(&mut p, 21, &[9; 8]);
    push_attr(&mut p, 22, &[0x52, 0]);
    push_attr(&mut p, 15, &[10; 4]);
    push_attr(&mut p, 11, &[1]);
    p
}

/// One netlink message (header + payload + padding).
fn message(kind: u16, flags: u16, seq: u32, payload: &[u8]) -> Vec<u8> {
    let mut m = Vec::new();
    m.extend_from_slice(&((NLMSG_HDRLEN + payload.len()) as u32).to_ne_bytes());
    m.extend_from_slice(&kind.to_ne_bytes());
    m.extend_from_slice(&flags.to_ne_bytes());
    m.extend_from_slice(&seq.to_ne_bytes());
    m.extend_from_slice(&0u32.to_ne_bytes());
    m.extend_from_slice(payload);
    while m.len() % 4 != 0 {
        m.push(0);
    }
    m
}

/// A dump reply stream: three sockets and NLMSG_DONE, sequence 7.
fn synthetic_stream() -> Vec<u8> {
    let mut s = Vec::new();
    for port in [1, 2, 3] {
        s.extend(message(20, 2, 7, &synthetic_socket(port)));
    }
    s.extend(message(3, 2, 7, &0i32.to_ne_bytes()));
    s
}

/// The same stream in a DLT_NETLINK pcap, one packet per message, with an
/// rtnetlink packet (protocol 0, type 20) in the middle that must be skipped.
fn synthetic_pcap() -> Vec<u8> {
    let mut f = Vec::new();
    f.extend_from_slice(&0xa1b2_c3d4u32.to_le_bytes());
    f.extend_from_slice(&[2, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    f.extend_from_slice(&65535u32.to_le_bytes());
    f.extend_from_slice(&253u32.to_le_bytes());
    let mut packet = |protocol: u16, body: &[u8]| {
        let incl = (16 + body.len()) as u32;
        f.extend_from_slice(&[1, 0, 0, 0, 2, 0, 0, 0]);
        f.extend_from_slice(&incl.to_le_bytes());
        f.extend_from_slice(&incl.to_le_bytes());
        let mut cooked = [0u8; 16];
        cooked[14..16].copy_from_slice(&protocol.to_be_bytes());
        f.extend_from_slice(&cooked);
        f.extend_from_slice(body);
    };
    let stream = synthetic_stream();
    let msgs = message_offsets(&stream);
    for (i, (start, len)) in msgs.iter().enumerate() {
        if i == 1 {
            packet(0, &message(20, 0, 1, &[0; 24]));
        }
        packet(4, &stream[*start..*start + *len]);
    }
    f
}

struct Seeds {
    pcaps: Vec<Vec<u8>>,
    raws: Vec<Vec<u8>>,
}

/// The synthetic captures, and the real ones when the fixture folder is
/// there (see `support::fixtures_dir`): a 6.6 dump with Vegas info, a 7.0
/// reply, and a raw 6.x stream.
fn seeds() -> &'static Seeds {
    static SEEDS: std::sync::OnceLock<Seeds> = std::sync::OnceLock::new();
    SEEDS.get_or_init(|| {
        let mut pcaps = vec![synthetic_pcap()];
        let mut raws = vec![synthetic_stream()];
        if let Some(dir) = support::fixtures_dir() {
            let read = |name: &str| std::fs::read(dir.join(name)).unwrap_or_else(|e| panic!("fixture {name}: {e}"));
            for name in [
                "6_6_44/ss_tcp_info_a_4.pcap",
                "7_0_3/netlink_sock_diag_response_7_0_3_sport26546_dport443.pcap",
                "6_6_44/netlink_sock_diag_reply_single_packet_port4018.pcap",
            ] {
                pcaps.push(read(name));
            }
            raws.push(read("netlink_packets_capture/2024-08-29T12-10-36.560332872-07-00"));
        }
        Seeds { pcaps, raws }
    })
}

// ----------------------------------------------------- where lengths are ---

/// (offset, length) of each netlink message in a raw stream.
fn message_offsets(stream: &[u8]) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut at = 0;
    while at + 4 <= stream.len() {
        let len = u32::from_ne_bytes(stream[at..at + 4].try_into().expect("4 bytes")) as usize;
        if len < NLMSG_HDRLEN || at + len > stream.len() {
            break;
        }
        out.push((at, len));
        at += (len + 3) & !3;
    }
    out
}

/// Offsets of every length field worth corrupting in a buffer of netlink
/// messages starting at `base`: the `nlmsg_len` words (4 bytes) and the
/// `nla_len` of each socket's attributes (2 bytes).
fn length_fields(buf: &[u8], base: usize, out: &mut Vec<(usize, usize)>) {
    for (start, len) in message_offsets(&buf[base..]) {
        let msg = base + start;
        out.push((msg, 4));
        let kind = u16::from_ne_bytes([buf[msg + 4], buf[msg + 5]]);
        if kind != 20 || len < NLMSG_HDRLEN + INET_DIAG_MSG_LEN {
            continue;
        }
        let end = msg + len;
        let mut attr = msg + NLMSG_HDRLEN + INET_DIAG_MSG_LEN;
        while attr + 4 <= end {
            out.push((attr, 2));
            let alen = usize::from(u16::from_ne_bytes([buf[attr], buf[attr + 1]]));
            if alen < 4 {
                break;
            }
            attr += (alen + 3) & !3;
        }
    }
}

/// Length fields of a pcap: each record's `incl_len` and everything inside
/// its netlink messages.
fn pcap_length_fields(pcap: &[u8]) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut at = 24;
    while at + 16 <= pcap.len() {
        out.push((at + 8, 4));
        let incl = u32::from_le_bytes(pcap[at + 8..at + 12].try_into().expect("4 bytes")) as usize;
        let body = at + 16;
        if body + incl > pcap.len() {
            break;
        }
        if incl >= 16 {
            length_fields(&pcap[..body + incl], body + 16, &mut out);
        }
        at = body + incl;
    }
    out
}

// ------------------------------------------------------------ mutations ---

#[derive(Debug, Clone)]
enum Mutation {
    /// Flip one bit at a position (taken modulo the length).
    FlipBit { at: usize, bit: u8 },
    /// Cut the buffer (position modulo the length + 1).
    Truncate { at: usize },
    /// Overwrite a length field (chosen modulo their count) with a value.
    SetLength { field: usize, value: u32 },
    /// Overwrite a length field with a value near its true one.
    NudgeLength { field: usize, delta: i8 },
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), 0u8..8).prop_map(|(at, bit)| Mutation::FlipBit { at, bit }),
        any::<usize>().prop_map(|at| Mutation::Truncate { at }),
        (
            any::<usize>(),
            prop_oneof![
                Just(0u32),
                Just(1),
                Just(3),
                Just(4),
                Just(15),
                Just(16),
                Just(0xffff),
                Just(u32::MAX),
                any::<u32>()
            ]
        )
            .prop_map(|(field, value)| Mutation::SetLength { field, value }),
        (any::<usize>(), any::<i8>()).prop_map(|(field, delta)| Mutation::NudgeLength { field, delta }),
    ]
}

/// Lengths are host order (netlink) or the pcap's little-endian order; the
/// fixtures come from x86, where the two are the same.
fn write_len(buf: &mut [u8], (at, width): (usize, usize), value: u32) {
    if width == 2 {
        buf[at..at + 2].copy_from_slice(&(value as u16).to_le_bytes());
    } else {
        buf[at..at + 4].copy_from_slice(&value.to_le_bytes());
    }
}

fn read_len(buf: &[u8], (at, width): (usize, usize)) -> u32 {
    if width == 2 {
        u32::from(u16::from_le_bytes([buf[at], buf[at + 1]]))
    } else {
        u32::from_le_bytes(buf[at..at + 4].try_into().expect("4 bytes"))
    }
}

/// Applies mutations in order; length fields are found afresh each time.
fn mutate(mut buf: Vec<u8>, mutations: &[Mutation], is_pcap: bool) -> Vec<u8> {
    for m in mutations {
        if buf.is_empty() {
            break;
        }
        let fields = if is_pcap {
            pcap_length_fields(&buf)
        } else {
            let mut f = Vec::new();
            length_fields(&buf, 0, &mut f);
            f
        };
        match *m {
            Mutation::FlipBit { at, bit } => {
                let at = at % buf.len();
                buf[at] ^= 1 << bit;
            }
            Mutation::Truncate { at } => buf.truncate(at % (buf.len() + 1)),
            Mutation::SetLength { field, value } if !fields.is_empty() => {
                let f = fields[field % fields.len()];
                write_len(&mut buf, f, value);
            }
            Mutation::NudgeLength { field, delta } if !fields.is_empty() => {
                let f = fields[field % fields.len()];
                let value = read_len(&buf, f).wrapping_add_signed(i32::from(delta));
                write_len(&mut buf, f, value);
            }
            _ => {}
        }
    }
    buf
}

// ------------------------------------------------------------ checkers ---

/// Walks every message; errors must describe the buffer truthfully and end
/// the walk. Returns the number of messages read.
fn check_messages(buf: &[u8]) -> usize {
    let mut it = NetlinkMessages::new(buf);
    let mut n = 0;
    let mut end = 0usize;
    while let Some(item) = it.next() {
        match item {
            Ok(msg) => {
                n += 1;
                let start = msg.payload.as_ptr() as usize - buf.as_ptr() as usize;
                assert!(start >= end + NLMSG_HDRLEN && start + msg.payload.len() <= buf.len());
                end = start + msg.payload.len();
            }
            Err(e) => {
                check_decode_error(&e, buf.len());
                assert!(it.next().is_none(), "the walk goes on after {e}");
                break;
            }
        }
    }
    n
}

fn check_decode_error(e: &DecodeError, buf_len: usize) {
    assert!(!e.to_string().is_empty() && !e.kind().is_empty());
    match *e {
        DecodeError::TruncatedHeader { offset, available } => {
            assert!(available < 4 && offset + available == buf_len, "{e}")
        }
        DecodeError::MessageTooShort { offset, len } => assert!(len < NLMSG_HDRLEN && offset < buf_len, "{e}"),
        DecodeError::MessageOverrun { offset, len, available } => {
            assert!(len > available && offset + available == buf_len, "{e}")
        }
        DecodeError::HeaderTooShort { len } => assert!(len < INET_DIAG_MSG_LEN, "{e}"),
        DecodeError::AttributeLength {
            offset, len, available, ..
        } => {
            assert!(offset >= INET_DIAG_MSG_LEN && offset + available == buf_len, "{e}");
            assert!(len < 4 || len > available, "{e}");
        }
    }
}

/// Decodes one payload with all and with no decoders, directly and through
/// a `SocketDecoder`, and checks the outcome against the payload's shape.
fn check_socket(payload: &[u8]) {
    for enabled in [Deserializers::all(), Deserializers::default_set(), Deserializers::NONE] {
        let mut rec = Record::default();
        let mut stats = DecodeStats::default();
        match decode_socket(payload, enabled, &mut stats, &mut rec) {
            Ok(()) => assert!(payload.len() >= INET_DIAG_MSG_LEN),
            Err(e) => {
                check_decode_error(&e, payload.len());
                assert_eq!(e.keeps_record(), payload.len() >= INET_DIAG_MSG_LEN, "{e}");
            }
        }
        if payload.len() >= INET_DIAG_MSG_LEN {
            // The header always decodes, whatever follows it.
            assert_eq!(rec.idiag_sport, Some(u16::from_be_bytes([payload[4], payload[5]])));
            assert_eq!(
                rec.idiag_inode,
                Some(u32::from_ne_bytes(payload[68..72].try_into().expect("4")))
            );
        } else {
            assert_eq!(rec, Record::default());
        }
        let mut decoder = SocketDecoder::new(enabled);
        let (record, err) = decoder.decode(payload);
        let (has_record, kept) = (record.is_some(), err.as_ref().map(DecodeError::keeps_record));
        // (sockets, errors) counted: a kept record counts as both.
        let counted = (decoder.stats.sockets, decoder.stats.errors);
        match (has_record, kept) {
            (true, None) => assert_eq!(counted, (1, 0)),
            (true, Some(true)) => assert_eq!(counted, (1, 1)),
            (false, Some(false)) => assert_eq!(counted, (0, 1)),
            other => panic!("record/error combination {other:?} is impossible"),
        }
    }
}

/// A reader that hands out at most `chunk` bytes per read, as a pipe may:
/// the streaming readers must not depend on how the bytes arrive.
struct Trickle<'a> {
    bytes: &'a [u8],
    chunk: usize,
}

impl std::io::Read for Trickle<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = buf.len().min(self.chunk).min(self.bytes.len());
        buf[..n].copy_from_slice(&self.bytes[..n]);
        self.bytes = &self.bytes[n..];
        Ok(n)
    }
}

type OnSocket<'f> = &'f mut dyn FnMut(xtcp2::decode::capture::ReplyOrigin, &[u8]) -> ControlFlow<()>;

/// Sockets seen and the outcome of a streaming reader over `bytes`, fed 1
/// to 7 bytes at a time; every chunk size must give the same answer.
fn streamed(
    bytes: &[u8],
    read: impl Fn(Trickle<'_>, OnSocket<'_>) -> Result<usize, CaptureError>,
) -> (usize, Result<usize, CaptureError>) {
    let mut outcomes = (1..8).map(|chunk| {
        let mut sockets = 0;
        let result = read(Trickle { bytes, chunk }, &mut |_, _| {
            sockets += 1;
            ControlFlow::Continue(())
        });
        (sockets, result)
    });
    let first = outcomes.next().expect("seven chunk sizes");
    for other in outcomes {
        assert_eq!(other, first);
    }
    first
}

/// Runs a pcap through the capture reader and decodes every reply.
fn check_pcap(bytes: &[u8]) -> Result<usize, CaptureError> {
    let mut sockets = 0;
    let result = for_each_pcap_reply(bytes, |_, payload| {
        sockets += 1;
        check_socket(payload);
    });
    assert_eq!(
        streamed(bytes, |input, on_socket| read_pcap_replies(input, on_socket)),
        (sockets, result.clone())
    );
    if let Err(e) = &result {
        assert!(!e.to_string().is_empty());
        if let CaptureError::CorruptNetlink { source, .. } = e {
            assert!(!matches!(
                source,
                DecodeError::HeaderTooShort { .. } | DecodeError::AttributeLength { .. }
            ));
        }
        assert_eq!(bytes.is_empty(), *e == CaptureError::Empty);
    }
    result.map(|_| sockets)
}

/// Runs a raw stream through the raw reader, `NetlinkMessages` and the
/// dump receive step, with the sequence number the stream itself uses.
fn check_raw(bytes: &[u8]) -> Result<usize, CaptureError> {
    check_messages(bytes);
    let mut sockets = 0;
    let result = for_each_raw_reply(bytes, |_, payload| {
        sockets += 1;
        check_socket(payload);
    });
    assert_eq!(
        streamed(bytes, |input, on_socket| read_raw_replies(input, on_socket)),
        (sockets, result.clone())
    );
    // The stream reader makes of the bytes what the in-memory walker does,
    // but for lengths above its limit, which it refuses unread.
    let walked = NetlinkMessages::new(bytes).find_map(Result::err);
    match &result {
        Err(CaptureError::Empty) => assert!(bytes.is_empty()),
        Err(CaptureError::CorruptRaw(e)) => {
            check_decode_error(e, bytes.len());
            assert_eq!(walked.as_ref(), Some(e));
        }
        Err(CaptureError::RawMessageTooLarge { offset, len }) => {
            assert!(*len > MAX_RECORD_BYTES && *offset < bytes.len());
            assert!(
                matches!(walked, Some(DecodeError::MessageOverrun { offset: o, len: l, .. }) if (o, l) == (*offset, *len))
            );
        }
        Err(other) => panic!("a raw stream cannot fail with {other}"),
        Ok(_) => assert_eq!(walked, None),
    }
    let seq = bytes
        .get(8..12)
        .map_or(0, |b| u32::from_ne_bytes(b.try_into().expect("4 bytes")));
    let mut summary = DumpSummary::default();
    let mut delivered: u64 = 0;
    match absorb_datagram(bytes, seq, 1, &mut summary, &mut |_, _| delivered += 1) {
        Ok(_) | Err(DumpError::Kernel { .. }) => {}
        Err(DumpError::Malformed(e)) => check_decode_error(&e, bytes.len()),
        Err(other) => panic!("absorbing a datagram cannot fail with {other}"),
    }
    assert_eq!(summary.sockets, delivered);
    result.map(|_| sockets)
}

// ----------------------------------------------------------- properties ---

proptest! {
    #![proptest_config(config())]

    /// Random bytes, as a socket payload, a raw stream and a pcap, never
    /// panic; every error is typed and true to the bytes.
    #[test]
    fn random_bytes_are_typed_errors_or_records(bytes in prop::collection::vec(any::<u8>(), 0..2048)) {
        check_socket(&bytes);
        let _ = check_raw(&bytes);
        let _ = check_pcap(&bytes);
    }

    /// Random bytes behind a valid pcap header and after a valid socket
    /// header reach the deeper layers (packets, netlink, attributes).
    #[test]
    fn random_bytes_behind_valid_headers(tail in prop::collection::vec(any::<u8>(), 0..2048)) {
        let mut pcap = synthetic_pcap()[..24].to_vec();
        pcap.extend_from_slice(&tail);
        let _ = check_pcap(&pcap);
        let mut payload = synthetic_socket(9)[..INET_DIAG_MSG_LEN].to_vec();
        payload.extend_from_slice(&tail);
        check_socket(&payload);
    }

    /// Real and synthetic pcaps with bit flips, truncations and corrupted
    /// length fields never panic and fail only with typed errors.
    #[test]
    fn mutated_pcaps_never_panic(seed in any::<usize>(), mutations in prop::collection::vec(mutation(), 1..6)) {
        let seeds = &seeds().pcaps;
        let bytes = mutate(seeds[seed % seeds.len()].clone(), &mutations, true);
        let _ = check_pcap(&bytes);
    }

    /// Real and synthetic raw netlink streams with the same mutations never
    /// panic, in the capture reader and in the live dump receive step.
    #[test]
    fn mutated_raw_streams_never_panic(seed in any::<usize>(), mutations in prop::collection::vec(mutation(), 1..6)) {
        let seeds = &seeds().raws;
        let bytes = mutate(seeds[seed % seeds.len()].clone(), &mutations, false);
        let _ = check_raw(&bytes);
    }

    /// Cutting a valid raw stream anywhere delivers exactly the sockets
    /// whose messages are whole, then a typed error naming where the cut
    /// message starts (or success when the cut falls on a boundary).
    #[test]
    fn truncated_stream_delivers_whole_messages_then_a_precise_error(seed in any::<usize>(), cut in any::<usize>()) {
        let seeds = &seeds().raws;
        let full = &seeds[seed % seeds.len()];
        let at = cut % (full.len() + 1);
        let messages = message_offsets(full);
        let whole_sockets = messages
            .iter()
            .filter(|(start, len)| start + len <= at && full[start + 4] == 20)
            .count();
        let mut sockets = 0;
        let result = for_each_raw_reply(&full[..at], |_, _| sockets += 1);
        prop_assert_eq!(sockets, whole_sockets);
        match messages.iter().find(|(start, len)| *start < at && at < start + len) {
            None if at == 0 => prop_assert_eq!(result, Err(CaptureError::Empty)),
            None => prop_assert!(result.is_ok(), "{:?}", result),
            Some(&(start, _)) if at - start < 4 => prop_assert_eq!(
                result,
                Err(CaptureError::CorruptRaw(DecodeError::TruncatedHeader { offset: start, available: at - start }))
            ),
            Some(&(start, len)) => prop_assert_eq!(
                result,
                Err(CaptureError::CorruptRaw(DecodeError::MessageOverrun { offset: start, len, available: at - start }))
            ),
        }
    }
}

/// The unmutated seeds decode completely: the mutation tests start from
/// inputs that reach every layer, not from inputs that fail at once.
#[test]
fn seeds_decode_without_error() {
    let s = seeds();
    for pcap in &s.pcaps {
        assert!(check_pcap(pcap).expect("seed pcap decodes") > 0);
    }
    for raw in &s.raws {
        assert!(check_raw(raw).expect("seed stream decodes") > 0);
    }
    assert_eq!(check_pcap(&synthetic_pcap()), Ok(3), "the rtnetlink packet is skipped");
}
