//! Decode: netlink bytes → [`Record`]s.
//!
//! Owns the byte layouts of `nlmsghdr`, `inet_diag_msg`, its attributes and
//! `tcp_info`, and nothing else: it never touches a socket (that is
//! `kernel`) and never formats output (that is `format`). Everything here
//! borrows the receive buffer and reuses one [`Record`], so decoding
//! allocates nothing per socket, and no input can make it panic: every read
//! is bounds-checked, short structures decode what fits, impossible lengths
//! are errors that carry the offsets. Its counters ([`DecodeStats`]) are
//! plain integers, added to the decode metrics once per dump
//! ([`DecodeStats::report_to`]).

pub mod bytes;
pub mod capture;
pub mod inet_diag;
pub mod netlink;
pub mod selection;
pub mod tcp_info;

pub use inet_diag::decode_socket;
pub use netlink::{NetlinkMessage, NetlinkMessages};
pub use selection::{Deserializer, Deserializers, UnknownDeserializer};

use crate::metrics::{AttributeLabel, DecodeMetrics};
use crate::record::Record;

/// Everything that can be wrong with bytes handed to the decoder.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("netlink header at byte {offset} is cut short: {available} bytes remain, 16 needed")]
    TruncatedHeader { offset: usize, available: usize },
    #[error("netlink message at byte {offset} has length {len}, shorter than its 16-byte header")]
    MessageTooShort { offset: usize, len: usize },
    #[error("netlink message at byte {offset} claims {len} bytes but only {available} remain")]
    MessageOverrun {
        offset: usize,
        len: usize,
        available: usize,
    },
    #[error("inet_diag_msg is {len} bytes, the kernel's struct is 72")]
    HeaderTooShort { len: usize },
    #[error(
        "attribute {} (type {kind}) at byte {offset} claims {len} bytes but only {available} remain in the message",
        inet_diag::attr::name(*kind)
    )]
    AttributeLength {
        kind: u16,
        offset: usize,
        len: usize,
        available: usize,
    },
}

impl DecodeError {
    /// True when the record still holds a valid header and the attributes
    /// before the bad one, and is worth keeping.
    pub fn keeps_record(&self) -> bool {
        matches!(self, DecodeError::AttributeLength { .. })
    }

    /// Short, stable name for metrics labels.
    pub fn kind(&self) -> &'static str {
        match self {
            DecodeError::TruncatedHeader { .. } => "truncated_header",
            DecodeError::MessageTooShort { .. } => "message_too_short",
            DecodeError::MessageOverrun { .. } => "message_overrun",
            DecodeError::HeaderTooShort { .. } => "header_too_short",
            DecodeError::AttributeLength { .. } => "attribute_length",
        }
    }
}

/// Counters kept by one decoder; folded into the Prometheus metrics by the
/// caller after each dump, so the hot path only bumps plain integers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeStats {
    /// Sockets decoded into records (including ones kept after an attribute error).
    pub sockets: u64,
    /// Messages that could not be decoded, by [`DecodeError::kind`] order.
    pub errors: u64,
    /// Attributes skipped (unknown, or their decoder is off), by attribute number.
    pub skipped_attributes: [u64; inet_diag::attr::SLOTS],
}

impl Default for DecodeStats {
    fn default() -> Self {
        DecodeStats {
            sockets: 0,
            errors: 0,
            skipped_attributes: [0; inet_diag::attr::SLOTS],
        }
    }
}

impl DecodeStats {
    /// Adds one dump's counts to the decode metrics: sockets decoded, and
    /// skipped attributes labelled with their kernel name. Decode errors are
    /// counted by the caller, which sees each [`DecodeError`].
    pub(crate) fn report_to(&self, metrics: &DecodeMetrics) {
        metrics.sockets.inc_by(self.sockets);
        for (number, count) in self.skipped_attributes.iter().enumerate() {
            if *count > 0 {
                let attribute = inet_diag::attr::name(number as u16);
                metrics
                    .skipped_attributes
                    .get_or_create(&AttributeLabel { attribute })
                    .inc_by(*count);
            }
        }
    }
}

/// What one netlink message of a dump reply means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reply<'a> {
    /// One socket: an `inet_diag_msg` with attributes.
    Socket(&'a [u8]),
    /// End of the dump; `errno` is 0 or a negative errno from the kernel.
    Done { errno: i32 },
    /// `NLMSG_ERROR`; errno 0 is an acknowledgement.
    Error { errno: i32 },
    /// Anything else (requests in captures, overrun notices, other types).
    Other,
}

/// Classifies a message. Requests seen in captures carry `NLM_F_REQUEST`
/// and are not replies, even though they share type 20.
pub fn classify<'a>(msg: &NetlinkMessage<'a>) -> Reply<'a> {
    match msg.kind {
        netlink::SOCK_DIAG_BY_FAMILY if msg.flags & netlink::NLM_F_REQUEST == 0 => Reply::Socket(msg.payload),
        netlink::NLMSG_DONE => Reply::Done {
            // Old kernels may send DONE with an empty payload: treat as success.
            errno: bytes::i32_at(msg.payload, 0).unwrap_or(0),
        },
        netlink::NLMSG_ERROR => Reply::Error {
            errno: bytes::i32_at(msg.payload, 0).unwrap_or(0),
        },
        _ => Reply::Other,
    }
}

/// A reusable decoder: the enabled attribute set, its counters and one
/// record that is overwritten for each socket.
pub struct SocketDecoder {
    pub enabled: Deserializers,
    pub stats: DecodeStats,
    record: Record,
}

impl SocketDecoder {
    pub fn new(enabled: Deserializers) -> Self {
        SocketDecoder {
            enabled,
            stats: DecodeStats::default(),
            record: Record::default(),
        }
    }

    /// Decodes one socket payload. Returns the record when it is usable;
    /// errors are counted and handed back so the caller can log them.
    #[inline]
    pub fn decode(&mut self, payload: &[u8]) -> (Option<&mut Record>, Option<DecodeError>) {
        match decode_socket(payload, self.enabled, &mut self.stats, &mut self.record) {
            Ok(()) => {
                self.stats.sockets += 1;
                (Some(&mut self.record), None)
            }
            Err(e) if e.keeps_record() => {
                self.stats.sockets += 1;
                self.stats.errors += 1;
                (Some(&mut self.record), Some(e))
            }
            Err(e) => {
                self.stats.errors += 1;
                (None, Some(e))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A dump's decode counts reach the metrics once: the sockets, and each
    /// skipped attribute under its kernel name; attributes never skipped
    /// get no series.
    #[test]
    fn decode_stats_report_sockets_and_skipped_attributes_by_name() {
        let metrics = DecodeMetrics::default();
        let mut stats = DecodeStats {
            sockets: 12,
            ..DecodeStats::default()
        };
        stats.skipped_attributes[18] = 3; // INET_DIAG_MD5SIG
        stats.skipped_attributes[20] = 1; // INET_DIAG_SK_BPF_STORAGES
        stats.report_to(&metrics);
        assert_eq!(metrics.sockets.get(), 12);
        let skipped = |attribute| {
            metrics
                .skipped_attributes
                .get(&AttributeLabel { attribute })
                .map(|c| c.get())
        };
        assert_eq!(skipped("md5sig"), Some(3));
        assert_eq!(skipped("sk_bpf_storages"), Some(1));
        assert_eq!(skipped("cong"), None);
    }
}
