//! Text rendering shared by the text formats (jsonl, csv, tsv, msgpack's
//! address strings), written by hand because `core::fmt` is the hot spot of
//! a text encoder: an IPv6 address through `Display` costs more than the
//! rest of its record.
//!
//! Every function appends to a caller-owned buffer and never allocates.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Longest IPv6 text: eight groups of four hex digits and seven colons
/// (the `::ffff:255.255.255.255` form is shorter).
pub(crate) const MAX_IP_TEXT: usize = 39;

/// Decimal text of every octet value, as (digits, length), built at compile
/// time so writing an IPv4 address is four table lookups.
static OCTETS: [([u8; 3], u8); 256] = {
    let mut table = [([0u8; 3], 0u8); 256];
    let mut i = 0;
    while i < 256 {
        let v = i as u8;
        table[i] = if v >= 100 {
            ([b'0' + v / 100, b'0' + (v / 10) % 10, b'0' + v % 10], 3)
        } else if v >= 10 {
            ([b'0' + v / 10, b'0' + v % 10, 0], 2)
        } else {
            ([b'0' + v, 0, 0], 1)
        };
        i += 1;
    }
    table
};

const HEX: &[u8; 16] = b"0123456789abcdef";

/// Where the text writers append: a growable `Vec<u8>`, or a [`SliceWriter`]
/// over a fixed buffer.
pub(crate) trait TextSink {
    fn push(&mut self, byte: u8);
    fn extend_from_slice(&mut self, bytes: &[u8]);
}

impl TextSink for Vec<u8> {
    #[inline]
    fn push(&mut self, byte: u8) {
        Vec::push(self, byte);
    }

    #[inline]
    fn extend_from_slice(&mut self, bytes: &[u8]) {
        Vec::extend_from_slice(self, bytes);
    }
}

/// Appends an address exactly as `std`'s `Display` writes it.
#[inline]
pub(crate) fn write_ip<S: TextSink + ?Sized>(out: &mut S, addr: IpAddr) {
    match addr {
        IpAddr::V4(a) => write_ipv4(out, a),
        IpAddr::V6(a) => write_ipv6(out, a),
    }
}

/// Appends dotted-quad text (`10.0.0.1`).
#[inline]
pub(crate) fn write_ipv4<S: TextSink + ?Sized>(out: &mut S, addr: Ipv4Addr) {
    let [a, b, c, d] = addr.octets();
    write_octet(out, a);
    out.push(b'.');
    write_octet(out, b);
    out.push(b'.');
    write_octet(out, c);
    out.push(b'.');
    write_octet(out, d);
}

#[inline]
fn write_octet<S: TextSink + ?Sized>(out: &mut S, v: u8) {
    let (digits, len) = &OCTETS[usize::from(v)];
    out.extend_from_slice(&digits[..usize::from(*len)]);
}

/// Appends RFC 5952 text, matching `std`: lowercase hex, the longest run of
/// two or more zero groups (the first one on a tie) shortened to `::`, and
/// IPv4-mapped addresses as `::ffff:a.b.c.d`.
pub(crate) fn write_ipv6<S: TextSink + ?Sized>(out: &mut S, addr: Ipv6Addr) {
    let segments = addr.segments();
    if let Some(v4) = addr.to_ipv4_mapped() {
        out.extend_from_slice(b"::ffff:");
        write_ipv4(out, v4);
        return;
    }
    let (mut best_start, mut best_len) = (0usize, 0usize);
    let (mut run_start, mut run_len) = (0usize, 0usize);
    for (i, &s) in segments.iter().enumerate() {
        if s == 0 {
            if run_len == 0 {
                run_start = i;
            }
            run_len += 1;
            if run_len > best_len {
                best_start = run_start;
                best_len = run_len;
            }
        } else {
            run_len = 0;
        }
    }
    if best_len > 1 {
        write_groups(out, &segments[..best_start]);
        out.extend_from_slice(b"::");
        write_groups(out, &segments[best_start + best_len..]);
    } else {
        write_groups(out, &segments);
    }
}

fn write_groups<S: TextSink + ?Sized>(out: &mut S, groups: &[u16]) {
    for (i, &g) in groups.iter().enumerate() {
        if i > 0 {
            out.push(b':');
        }
        write_hex_group(out, g);
    }
}

#[inline]
fn write_hex_group<S: TextSink + ?Sized>(out: &mut S, g: u16) {
    let nibbles = [
        (g >> 12) as usize,
        ((g >> 8) & 0xf) as usize,
        ((g >> 4) & 0xf) as usize,
        (g & 0xf) as usize,
    ];
    let skip = if g >= 0x1000 {
        0
    } else if g >= 0x100 {
        1
    } else if g >= 0x10 {
        2
    } else {
        3
    };
    for &n in &nibbles[skip..] {
        out.push(HEX[n]);
    }
}

/// Appends an unsigned integer in decimal.
#[inline]
pub(crate) fn write_u64(out: &mut Vec<u8>, v: u64) {
    out.extend_from_slice(itoa::Buffer::new().format(v).as_bytes());
}

/// Width of a [`FixedText`]: the longest JSON key (`"name":`) fits.
pub(crate) const FIXED_TEXT_WIDTH: usize = 48;

/// Short text kept in a fixed array, appended as a whole array then cut to
/// its length: a fixed-size copy compiles to a few vector moves, where a
/// copy of a variable length calls memmove (30% of jsonl encoding time in
/// a profile when JSON keys were copied that way).
#[derive(Clone, Copy)]
pub(crate) struct FixedText {
    bytes: [u8; FIXED_TEXT_WIDTH],
    len: u8,
}

impl FixedText {
    /// `None` when `text` is longer than [`FIXED_TEXT_WIDTH`].
    pub fn new(text: &[u8]) -> Option<FixedText> {
        if text.len() > FIXED_TEXT_WIDTH {
            return None;
        }
        let mut bytes = [0u8; FIXED_TEXT_WIDTH];
        bytes[..text.len()].copy_from_slice(text);
        Some(FixedText {
            bytes,
            len: text.len() as u8,
        })
    }

    #[cfg(test)]
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }
}

impl Default for FixedText {
    fn default() -> Self {
        FixedText {
            bytes: [0; FIXED_TEXT_WIDTH],
            len: 0,
        }
    }
}

/// Most decimal digits of a u64 (`18446744073709551615`).
pub(crate) const MAX_U64_DIGITS: usize = 20;

/// "00" to "99": integers are written two digits per division.
static DIGIT_PAIRS: [u8; 200] = {
    let mut table = [0u8; 200];
    let mut i = 0;
    while i < 100 {
        table[2 * i] = b'0' + (i / 10) as u8;
        table[2 * i + 1] = b'0' + (i % 10) as u8;
        i += 1;
    }
    table
};

/// A text writer over a fixed slice, for encoders that write many small
/// pieces per record. The write position is a local (a register), where
/// every push to a `&mut Vec` reloads and stores the Vec's length and checks
/// its capacity; and integers are written in place, where `itoa` plus a
/// copy of a variable length costs a memmove call per number (5% of a
/// jsonl collection in a profile).
///
/// A write that does not fit is dropped and marks the writer overflowed;
/// the caller then retries with a bigger buffer. Nothing here can panic.
pub(crate) struct SliceWriter<'a> {
    buf: &'a mut [u8],
    pos: usize,
    overflowed: bool,
}

impl<'a> SliceWriter<'a> {
    pub fn new(buf: &'a mut [u8]) -> Self {
        SliceWriter {
            buf,
            pos: 0,
            overflowed: false,
        }
    }

    /// Bytes written so far.
    pub fn len(&self) -> usize {
        self.pos
    }

    pub fn is_empty(&self) -> bool {
        self.pos == 0
    }

    /// True when some write did not fit: the text is incomplete.
    pub(crate) fn overflowed(&self) -> bool {
        self.overflowed
    }

    /// The text written so far.
    #[cfg(test)]
    pub fn written(&mut self) -> &mut [u8] {
        &mut self.buf[..self.pos]
    }

    /// Whether `n` more bytes fit; marks the writer overflowed when not.
    #[inline(always)]
    pub(crate) fn has_room(&mut self, n: usize) -> bool {
        let fits = self.buf.len() - self.pos >= n;
        self.overflowed |= !fits;
        fits
    }

    /// Appends the whole fixed-width array (a few vector stores) and keeps
    /// its first `text.len` bytes.
    #[inline(always)]
    pub(crate) fn put_fixed(&mut self, text: &FixedText) {
        match self.buf.get_mut(self.pos..self.pos + FIXED_TEXT_WIDTH) {
            Some(window) => {
                window.copy_from_slice(&text.bytes);
                self.pos += usize::from(text.len);
            }
            None => self.overflowed = true,
        }
    }

    /// Lets `write` fill up to `max` bytes at the write position and
    /// advances by the count it returns (clamped to `max`): how encoders
    /// outside this module add their own fixed-bound writes (protobuf
    /// varints).
    #[inline(always)]
    pub(crate) fn write_with(&mut self, max: usize, write: impl FnOnce(&mut [u8]) -> usize) {
        match self.buf.get_mut(self.pos..self.pos + max) {
            Some(window) => self.pos += write(window).min(max),
            None => self.overflowed = true,
        }
    }

    /// Appends `v` in decimal.
    #[inline(always)]
    pub(crate) fn put_u64(&mut self, v: u64) {
        if v < 10 {
            self.push(b'0' + v as u8);
            return;
        }
        let Some(window) = self.buf.get_mut(self.pos..self.pos + MAX_U64_DIGITS) else {
            self.overflowed = true;
            return;
        };
        let len = decimal_len(v);
        let mut end = len;
        let mut rest = v;
        while rest >= 100 {
            let pair = (rest % 100) as usize * 2;
            rest /= 100;
            end -= 2;
            window[end..end + 2].copy_from_slice(&DIGIT_PAIRS[pair..pair + 2]);
        }
        if rest >= 10 {
            let pair = rest as usize * 2;
            window[..2].copy_from_slice(&DIGIT_PAIRS[pair..pair + 2]);
        } else {
            window[0] = b'0' + rest as u8;
        }
        self.pos += len;
    }
}

/// Runs `write` over `scratch` through a [`SliceWriter`], doubling
/// `scratch` and running it again until nothing overflowed; returns what
/// was written. Encoders size `scratch` for a typical record at its
/// widest, so the retry happens only for long strings.
pub(crate) fn write_growing(scratch: &mut Vec<u8>, mut write: impl FnMut(&mut SliceWriter<'_>)) -> &mut [u8] {
    let len = loop {
        let mut writer = SliceWriter::new(scratch);
        write(&mut writer);
        if !writer.overflowed() {
            break writer.len();
        }
        let bigger = (scratch.len() * 2).max(64);
        scratch.resize(bigger, 0);
    };
    scratch.get_mut(..len).unwrap_or_default()
}

impl TextSink for SliceWriter<'_> {
    #[inline(always)]
    fn push(&mut self, byte: u8) {
        match self.buf.get_mut(self.pos) {
            Some(slot) => {
                *slot = byte;
                self.pos += 1;
            }
            None => self.overflowed = true,
        }
    }

    #[inline]
    fn extend_from_slice(&mut self, bytes: &[u8]) {
        match self.buf.get_mut(self.pos..self.pos + bytes.len()) {
            Some(window) => {
                window.copy_from_slice(bytes);
                self.pos += bytes.len();
            }
            None => self.overflowed = true,
        }
    }
}

/// Decimal digits of `v` (1 for 0).
#[inline(always)]
fn decimal_len(v: u64) -> usize {
    v.checked_ilog10().map_or(1, |log| log as usize + 1)
}

const NANOS_PER_SECOND: u64 = 1_000_000_000;
const SECONDS_PER_DAY: u64 = 86_400;

/// Appends nanoseconds since the Unix epoch as RFC 3339 UTC with nine
/// fractional digits, e.g. `2024-08-12T09:31:12.123456789Z`. The width is
/// fixed so the column sorts as text and every consumer (ClickHouse's
/// `parseDateTime64BestEffort`, Python's `datetime.fromisoformat`) keeps the
/// full precision.
pub(crate) fn write_rfc3339_ns(out: &mut Vec<u8>, ns: u64) {
    let secs = ns / NANOS_PER_SECOND;
    let nanos = ns % NANOS_PER_SECOND;
    let days = secs / SECONDS_PER_DAY;
    let second_of_day = secs % SECONDS_PER_DAY;
    let (year, month, day) = civil_from_days(days);
    write_padded(out, year, 4);
    out.push(b'-');
    write_padded(out, month, 2);
    out.push(b'-');
    write_padded(out, day, 2);
    out.push(b'T');
    write_padded(out, second_of_day / 3600, 2);
    out.push(b':');
    write_padded(out, second_of_day / 60 % 60, 2);
    out.push(b':');
    write_padded(out, second_of_day % 60, 2);
    out.push(b'.');
    write_padded(out, nanos, 9);
    out.push(b'Z');
}

/// Writes `v` in decimal, left-padded with zeros to `width` digits.
fn write_padded(out: &mut Vec<u8>, v: u64, width: usize) {
    let mut digits = [b'0'; 20];
    let mut n = v;
    let mut i = digits.len();
    while n > 0 {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
    }
    let start = i.min(digits.len() - width);
    out.extend_from_slice(&digits[start..]);
}

/// Gregorian (year, month, day) of a day count since 1970-01-01, after
/// Howard Hinnant's `civil_from_days` (public domain), restricted to
/// non-negative days since a u64 timestamp cannot precede the epoch.
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    // Shift the epoch to 0000-03-01 so leap days fall at the end of a year.
    let z = days + 719_468;
    let era = z / 146_097;
    let day_of_era = z % 146_097;
    let year_of_era = (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let mp = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = year_of_era + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ip_text(addr: IpAddr) -> String {
        let mut out = Vec::new();
        write_ip(&mut out, addr);
        String::from_utf8(out).unwrap()
    }

    fn rfc3339(ns: u64) -> String {
        let mut out = Vec::new();
        write_rfc3339_ns(&mut out, ns);
        String::from_utf8(out).unwrap()
    }

    /// The hand-written address text equals std's on the cases RFC 5952 singles out.
    #[test]
    fn ip_text_matches_std_on_rfc5952_cases() {
        for text in [
            "0.0.0.0",
            "255.255.255.255",
            "10.1.20.199",
            "::",
            "::1",
            "2001:db8::1",
            "2001:db8:0:1:1:1:1:1",
            "2001:0:0:1::1",
            "2001:db8::1:0:0:1",
            "fe80::",
            "::ffff:192.0.2.1",
            "::192.0.2.1",
            "1:0:0:0:1:0:0:0",
            "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
        ] {
            let addr: IpAddr = text.parse().unwrap();
            assert_eq!(ip_text(addr), addr.to_string(), "{text}");
        }
    }

    proptest! {
        /// Any IPv6 address (biased towards zero groups) renders as std renders it.
        #[test]
        fn ipv6_text_matches_std(groups in proptest::collection::vec(prop_oneof![Just(0u16), Just(0u16), any::<u16>()], 8)) {
            let addr = Ipv6Addr::new(groups[0], groups[1], groups[2], groups[3], groups[4], groups[5], groups[6], groups[7]);
            prop_assert_eq!(ip_text(IpAddr::V6(addr)), addr.to_string());
        }

        /// Any integer writes as std writes it, with room to spare or with exactly
        /// the worst-case window the writer asks for.
        #[test]
        fn slice_writer_decimal_matches_std(v in any::<u64>(), exact in any::<bool>()) {
            let room = if exact { MAX_U64_DIGITS } else { 64 };
            prop_assert_eq!(slice_decimal(v, room), (v.to_string(), false));
        }

        /// Any IPv4 address renders as std renders it.
        #[test]
        fn ipv4_text_matches_std(bits in any::<u32>()) {
            let addr = Ipv4Addr::from(bits);
            prop_assert_eq!(ip_text(IpAddr::V4(addr)), addr.to_string());
        }
    }

    fn slice_decimal(v: u64, room: usize) -> (String, bool) {
        let mut buf = vec![0u8; room];
        let mut writer = SliceWriter::new(&mut buf);
        writer.put_u64(v);
        let overflowed = writer.overflowed();
        (String::from_utf8(writer.written().to_vec()).unwrap(), overflowed)
    }

    /// Every digit-count boundary writes as std writes it.
    #[test]
    fn slice_writer_decimal_boundaries() {
        let mut values = vec![0, u64::MAX];
        for power in 0..20 {
            let p = 10u64.pow(power);
            values.extend([p - 1, p, p + 1]);
        }
        for v in values {
            assert_eq!(slice_decimal(v, 64), (v.to_string(), false), "{v}");
        }
    }

    /// A write that does not fit is dropped whole and flags the writer; it never panics
    /// and never leaves a partial number behind.
    #[test]
    fn slice_writer_overflow_is_flagged_not_partial() {
        assert_eq!(slice_decimal(7, 0), (String::new(), true));
        assert_eq!(slice_decimal(12345, 4), (String::new(), true));
        let mut buf = [0u8; 50];
        let mut writer = SliceWriter::new(&mut buf);
        writer.put_fixed(&FixedText::new(b"abc").unwrap());
        assert_eq!(writer.written(), b"abc");
        writer.put_fixed(&FixedText::new(b"def").unwrap());
        assert!(writer.overflowed());
        assert_eq!(writer.written(), b"abc");
        writer.extend_from_slice(&[b'x'; 48]);
        assert_eq!(writer.written(), b"abc");
        assert!(!writer.has_room(48));
        assert!(writer.has_room(47));
    }

    /// Timestamps render as RFC 3339 UTC with nine digits, across leap years
    /// and century rules (values checked against GNU `date -u`).
    #[test]
    fn rfc3339_known_instants() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000000000Z");
        assert_eq!(rfc3339(1), "1970-01-01T00:00:00.000000001Z");
        // date -u -d @951782400 → 2000-02-29 00:00:00 (2000 is a leap year)
        assert_eq!(
            rfc3339(951_782_400 * NANOS_PER_SECOND),
            "2000-02-29T00:00:00.000000000Z"
        );
        // date -u -d @1709251199 → 2024-02-29 23:59:59
        assert_eq!(
            rfc3339(1_709_251_199 * NANOS_PER_SECOND + 999_999_999),
            "2024-02-29T23:59:59.999999999Z"
        );
        // date -u -d @1723455072 → 2024-08-12 09:31:12
        assert_eq!(rfc3339(1_723_455_072_123_456_789), "2024-08-12T09:31:12.123456789Z");
        // date -u -d @4107542400 → 2100-03-01 00:00:00 (2100 is not a leap year)
        assert_eq!(
            rfc3339(4_107_542_400 * NANOS_PER_SECOND),
            "2100-03-01T00:00:00.000000000Z"
        );
        // The largest u64 nanosecond count: 2554-07-21T23:34:33.709551615Z.
        assert_eq!(rfc3339(u64::MAX), "2554-07-21T23:34:33.709551615Z");
    }
}
