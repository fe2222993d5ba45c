//! The capture readers on arbitrary bytes, as a pcap and as a raw netlink
//! stream: in memory (`for_each_*_reply`) and streamed (`read_*_replies`)
//! through a reader that hands out a few bytes at a time, as a pipe may.
//!
//! No input may panic, and both readers must see the same replies (same
//! origins, same payloads) and end with the same result; a caller that
//! stops early must stop the streamed read there.

#![no_main]

use std::io::Read;
use std::ops::ControlFlow;

use libfuzzer_sys::fuzz_target;
use xtcp2::decode::capture::{
    for_each_pcap_reply, for_each_raw_reply, read_pcap_replies, read_raw_replies, CaptureError, ReplyOrigin,
};

/// Hands out at most `chunk` bytes per read.
struct Trickle<'a> {
    bytes: &'a [u8],
    chunk: usize,
}

impl Read for Trickle<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = buf.len().min(self.chunk).min(self.bytes.len());
        buf[..n].copy_from_slice(&self.bytes[..n]);
        self.bytes = &self.bytes[n..];
        Ok(n)
    }
}

/// A reply as seen: where, and a fingerprint of its bytes.
type Seen = (ReplyOrigin, usize, u64);

fn fingerprint(origin: ReplyOrigin, payload: &[u8]) -> Seen {
    let hash = payload.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    });
    (origin, payload.len(), hash)
}

type InMemory = fn(&[u8], &mut dyn FnMut(ReplyOrigin, &[u8])) -> Result<usize, CaptureError>;
type Streamed = fn(Trickle<'_>, &mut dyn FnMut(ReplyOrigin, &[u8]) -> ControlFlow<()>) -> Result<usize, CaptureError>;

fn check(data: &[u8], in_memory: InMemory, streamed: Streamed) {
    let mut expected: Vec<Seen> = Vec::new();
    let whole = in_memory(data, &mut |o, p| expected.push(fingerprint(o, p)));
    if let Err(e) = &whole {
        assert!(!e.to_string().is_empty());
    }

    // The chunk size comes from the length, so the seeds need no prefix.
    let chunk = data.len() % 7 + 1;
    let mut seen: Vec<Seen> = Vec::new();
    let result = streamed(Trickle { bytes: data, chunk }, &mut |o, p| {
        seen.push(fingerprint(o, p));
        ControlFlow::Continue(())
    });
    assert_eq!(seen, expected);
    assert_eq!(result, whole);

    // Stopping after `stop` replies delivers exactly those.
    let stop = data.len() % 5;
    if stop < expected.len() {
        let mut delivered = 0;
        let _ = streamed(Trickle { bytes: data, chunk }, &mut |_, _| {
            delivered += 1;
            if delivered > stop {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        });
        assert_eq!(delivered, stop + 1);
    }
}

fuzz_target!(|data: &[u8]| {
    check(data, |d, f| for_each_pcap_reply(d, f), |r, f| read_pcap_replies(r, f));
    check(data, |d, f| for_each_raw_reply(d, f), |r, f| read_raw_replies(r, f));
});
