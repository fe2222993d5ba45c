//! Track: what became of each socket since the last poll.
//!
//! Between record and format on the data's path. One [`SocketTable`] per
//! network namespace remembers every socket it has seen, keyed by its
//! kernel cookie, in a small fixed-size entry: a digest of the fields
//! whose change makes a record worth sending (not a copy of the record),
//! when it was first seen, how many polls ago it was last emitted, and the
//! identity a close record must name (family, ports, addresses).
//!
//! With it the collector can:
//! - emit only what changed (`--emit changed`), with a heartbeat every
//!   `--emit-heartbeat` polls so that consumers tell idle from gone;
//! - mark a socket's first record `event = open`;
//! - turn a kernel destroy notification into one `event = close` record
//!   that names the socket even when an abortive close zeroed its
//!   addresses, and close from the poll's difference the sockets that
//!   vanished without one (never both: the entry is removed by the first).
//!
//! What counts as a change is [`CHANGE_FIELDS`], nothing else.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::{Arc, OnceLock};

use crate::record::Record;

/// Which records a poll emits (`--emit`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum EmitMode {
    /// Every socket, every poll (the default; the Go daemon's behaviour).
    #[default]
    All,
    /// A socket's first record, then only when a [`CHANGE_FIELDS`] field
    /// changed, and at least every heartbeat.
    Changed,
}

impl std::str::FromStr for EmitMode {
    /// The text given, for the error message.
    type Err = String;

    fn from_str(s: &str) -> Result<EmitMode, String> {
        match s {
            "all" => Ok(EmitMode::All),
            "changed" => Ok(EmitMode::Changed),
            other => Err(other.to_string()),
        }
    }
}

/// The fields compared between polls: the state, the queues, and the
/// counters and gauges that move whenever the connection does anything.
/// Timers and estimates that drift on an idle socket (RTT, RTO, pacing,
/// `tcpi_last_*`) are left out on purpose: they would make every idle
/// socket look changed.
pub const CHANGE_FIELDS: &[&str] = &[
    "idiag_state",
    "idiag_rqueue",
    "idiag_wqueue",
    "tcpi_bytes_acked",
    "tcpi_bytes_received",
    "tcpi_bytes_sent",
    "tcpi_segs_out",
    "tcpi_segs_in",
    "tcpi_total_retrans",
    "tcpi_unacked",
    "tcpi_lost",
    "tcpi_retrans",
    "tcpi_notsent_bytes",
];

/// The digest of [`CHANGE_FIELDS`] of one record (32 bits: a false
/// "unchanged" needs a collision between two consecutive snapshots of the
/// same socket, one in four billion, and the heartbeat bounds its cost).
fn change_digest(r: &Record) -> u32 {
    let mut h = FoldHasher::default();
    // An absent field hashes differently from a zero one.
    let mut put = |v: Option<u64>| h.write_u64(v.map_or(u64::MAX, |v| v.wrapping_add(1)));
    put(r.idiag_state.map(u64::from));
    put(r.idiag_rqueue.map(u64::from));
    put(r.idiag_wqueue.map(u64::from));
    put(r.tcpi_bytes_acked);
    put(r.tcpi_bytes_received);
    put(r.tcpi_bytes_sent);
    put(r.tcpi_segs_out.map(u64::from));
    put(r.tcpi_segs_in.map(u64::from));
    put(r.tcpi_total_retrans.map(u64::from));
    put(r.tcpi_unacked.map(u64::from));
    put(r.tcpi_lost.map(u64::from));
    put(r.tcpi_retrans.map(u64::from));
    put(r.tcpi_notsent_bytes.map(u64::from));
    let full = h.finish();
    (full ^ (full >> 32)) as u32
}

/// A multiply-fold hasher for cookies and digests: cookies are a counter,
/// so the table needs their bits spread, not SipHash's resistance to
/// chosen keys (nobody outside the kernel picks a cookie).
#[derive(Default)]
struct FoldHasher {
    state: u64,
}

impl Hasher for FoldHasher {
    fn finish(&self) -> u64 {
        self.state
    }

    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.write_u64(u64::from_le_bytes(word));
        }
    }

    fn write_u64(&mut self, v: u64) {
        const K: u64 = 0x9E37_79B9_7F4A_7C15;
        let m = u128::from(self.state ^ v) * u128::from(K);
        self.state = (m as u64) ^ ((m >> 64) as u64);
    }
}

type Cookies = BuildHasherDefault<FoldHasher>;

/// The event a record announces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    Open,
    Close,
}

impl Event {
    pub fn as_str(self) -> &'static str {
        match self {
            Event::Open => "open",
            Event::Close => "close",
        }
    }

    /// The record field's value, one shared allocation per event.
    pub fn label(self) -> Arc<str> {
        static OPEN: OnceLock<Arc<str>> = OnceLock::new();
        static CLOSE: OnceLock<Arc<str>> = OnceLock::new();
        let cell = match self {
            Event::Open => &OPEN,
            Event::Close => &CLOSE,
        };
        cell.get_or_init(|| Arc::from(self.as_str())).clone()
    }
}

/// Where a close came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseSource {
    /// The kernel's destroy notification (sock_diag destroy group).
    Destroy,
    /// Seen in an earlier poll, absent now, and no notification came.
    PollDiff,
}

impl CloseSource {
    pub fn as_str(self) -> &'static str {
        match self {
            CloseSource::Destroy => "destroy",
            CloseSource::PollDiff => "poll",
        }
    }

    fn label(self) -> Arc<str> {
        static DESTROY: OnceLock<Arc<str>> = OnceLock::new();
        static POLL: OnceLock<Arc<str>> = OnceLock::new();
        let cell = match self {
            CloseSource::Destroy => &DESTROY,
            CloseSource::PollDiff => &POLL,
        };
        cell.get_or_init(|| Arc::from(self.as_str())).clone()
    }
}

/// What to do with one polled record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Send it; `Some(Open)` on the socket's first sighting.
    Emit(Option<Event>),
    /// Unchanged since it was last sent (`--emit changed`).
    Suppress,
}

/// A cookie as the table's key: two words, so that a slot is 4-byte
/// aligned and no padding follows the 36-byte [`Tracked`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct CookieKey([u32; 2]);

impl CookieKey {
    fn new(cookie: u64) -> CookieKey {
        CookieKey([cookie as u32, (cookie >> 32) as u32])
    }

    fn get(self) -> u64 {
        u64::from(self.0[0]) | (u64::from(self.0[1]) << 32)
    }
}

impl std::hash::Hash for CookieKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u64(self.get());
    }
}

/// One tracked socket: 36 bytes, 4-byte aligned; with its key, 44 bytes a
/// slot (and one control byte).
#[derive(Debug, Clone, Copy)]
struct Tracked {
    digest: u32,
    /// Seconds since the table's clock origin ([`SocketTable::origin_ns`]).
    first_seen_s: u32,
    /// Polls since it was last emitted (saturating).
    polls_since_emit: u16,
    /// The generation of the poll that last saw it (odd/even is enough to
    /// tell "this poll" from "an earlier one" at the sweep).
    seen_generation: u8,
    family: u8,
    /// Its close is already sent ([`CLOSED`]).
    flags: u8,
    sport: u16,
    dport: u16,
    /// The local address, as an index into [`SocketTable::locals`]: a
    /// namespace has few local addresses and many peers.
    src: u16,
    dst: [u8; 16],
}

/// No interned local address (the table of them is full).
const NO_LOCAL: u16 = u16::MAX;

/// The socket's close was sent (a destroy notification came, or it was
/// first seen in TIME-WAIT, the remains of a socket already closed): it is
/// kept, silently, while polls still see it (a TIME-WAIT socket keeps its
/// cookie for a minute), so that it neither opens nor closes again.
const CLOSED: u8 = 1;

/// `TCP_TIME_WAIT`.
const TIME_WAIT: u8 = 6;

/// What a destroy notification was to the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Destroyed {
    /// A socket it had seen: identity and lifetime filled in.
    Known,
    /// Never seen: it lived and died between two polls (or before the
    /// table existed); the notification's own fields are all there is.
    Unknown,
    /// Its close was already sent: drop this one.
    AlreadyClosed,
}

fn addr_bytes(a: Option<IpAddr>) -> [u8; 16] {
    match a {
        Some(IpAddr::V4(v4)) => v4.to_ipv6_mapped().octets(),
        Some(IpAddr::V6(v6)) => v6.octets(),
        None => [0; 16],
    }
}

fn addr_of(family: u8, bytes: [u8; 16]) -> IpAddr {
    let v6 = Ipv6Addr::from(bytes);
    if family == crate::decode::inet_diag::AF_INET {
        IpAddr::V4(v6.to_ipv4_mapped().unwrap_or(Ipv4Addr::UNSPECIFIED))
    } else {
        IpAddr::V6(v6)
    }
}

/// How a table decides.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TrackPolicy {
    pub emit: EmitMode,
    /// `--emit-heartbeat`: an unchanged socket is still emitted every this
    /// many polls (at least 1).
    pub heartbeat_polls: u16,
    /// `--flow-events`: `flow_event = open` on first sightings (closes are
    /// the caller's: destroy notifications and [`SocketTable::sweep`]).
    pub flow_events: bool,
    /// `--rates`: the `*_per_s` fields.
    pub rates: bool,
}

impl Default for TrackPolicy {
    /// Today's behaviour: every socket every poll, no events, no rates.
    fn default() -> Self {
        TrackPolicy {
            emit: EmitMode::All,
            heartbeat_polls: 10,
            flow_events: false,
            rates: false,
        }
    }
}

impl TrackPolicy {
    /// Whether anything needs a table at all.
    pub fn tracks(&self) -> bool {
        self.emit == EmitMode::Changed || self.flow_events || self.rates
    }
}

/// A socket's counters at its previous poll (`--rates` only: 40 bytes
/// more per socket, in a table of their own).
#[derive(Debug, Clone, Copy)]
struct RateBase {
    at_ns: u64,
    bytes_acked: u64,
    bytes_received: u64,
    segs_out: u32,
    segs_in: u32,
    total_retrans: u32,
}

impl RateBase {
    fn of(r: &Record, at_ns: u64) -> Option<RateBase> {
        Some(RateBase {
            at_ns,
            bytes_acked: r.tcpi_bytes_acked?,
            bytes_received: r.tcpi_bytes_received?,
            segs_out: r.tcpi_segs_out?,
            segs_in: r.tcpi_segs_in?,
            total_retrans: r.tcpi_total_retrans?,
        })
    }

    /// Sets the record's rates from `self` (earlier) to `now`. A counter
    /// that went backwards (a reused cookie cannot, but a kernel bug
    /// could) gives no rate rather than a huge one; the 32-bit segment
    /// counters wrap and are taken modulo 2^32 as the kernel counts them.
    fn apply(&self, now: &RateBase, r: &mut Record) {
        let elapsed_ns = now.at_ns.saturating_sub(self.at_ns);
        if elapsed_ns == 0 {
            return;
        }
        let per_s = |delta: u64| (u128::from(delta) * 1_000_000_000 / u128::from(elapsed_ns)) as u64;
        r.tcpi_bytes_acked_per_s = now.bytes_acked.checked_sub(self.bytes_acked).map(per_s);
        r.tcpi_bytes_received_per_s = now.bytes_received.checked_sub(self.bytes_received).map(per_s);
        r.tcpi_segs_out_per_s = Some(per_s(u64::from(now.segs_out.wrapping_sub(self.segs_out))));
        r.tcpi_segs_in_per_s = Some(per_s(u64::from(now.segs_in.wrapping_sub(self.segs_in))));
        r.tcpi_total_retrans_per_s = now
            .total_retrans
            .checked_sub(self.total_retrans)
            .map(|d| per_s(u64::from(d)));
    }
}

/// One namespace's tracked sockets.
#[derive(Debug)]
pub struct SocketTable {
    sockets: HashMap<CookieKey, Tracked, Cookies>,
    /// The distinct local addresses of the namespace's sockets.
    locals: Vec<[u8; 16]>,
    local_index: HashMap<[u8; 16], u16, Cookies>,
    rates: HashMap<CookieKey, RateBase, Cookies>,
    generation: u8,
    first_seen_in_time_wait: u64,
    /// Wall clock (ns) the `first_seen_s` of the entries count from.
    origin_ns: u64,
}

/// One namespace's tracking: its table and, with flow events, the
/// listener of its destroy notifications. Lives with the namespace's
/// entry, so it is freed with it.
pub struct NamespaceFlows {
    pub table: SocketTable,
    pub destroy: Option<crate::kernel::destroy::DestroyListener>,
    /// Joining the destroy groups failed once here (logged once).
    pub listener_failed: bool,
}

/// A close the table produced: the record to send (identity filled in).
pub struct Closed {
    pub record: Record,
    pub source: CloseSource,
}

impl SocketTable {
    pub fn new(now_ns: u64) -> SocketTable {
        SocketTable {
            sockets: HashMap::default(),
            locals: Vec::new(),
            local_index: HashMap::default(),
            rates: HashMap::default(),
            generation: 0,
            first_seen_in_time_wait: 0,
            origin_ns: now_ns,
        }
    }

    pub fn len(&self) -> usize {
        self.sockets.len()
    }

    pub fn is_empty(&self) -> bool {
        self.sockets.is_empty()
    }

    /// Bytes the table holds (its slots, their control bytes included).
    pub fn memory_bytes(&self) -> usize {
        self.sockets.capacity() * (std::mem::size_of::<(CookieKey, Tracked)>() + 1)
            + self.locals.capacity() * 16
            + self.local_index.capacity() * (std::mem::size_of::<([u8; 16], u16)>() + 1)
            + self.rates.capacity() * (std::mem::size_of::<(CookieKey, RateBase)>() + 1)
    }

    fn intern_local(&mut self, address: [u8; 16]) -> u16 {
        if let Some(&i) = self.local_index.get(&address) {
            return i;
        }
        if self.locals.len() >= usize::from(NO_LOCAL) {
            return NO_LOCAL;
        }
        let i = self.locals.len() as u16;
        self.locals.push(address);
        self.local_index.insert(address, i);
        i
    }

    /// Starts a poll of this namespace: what `observe` sees from now on
    /// is "this poll" for the next `sweep`.
    pub fn start_poll(&mut self) {
        self.generation = self.generation.wrapping_add(1);
    }

    fn seconds_since_origin(&self, now_ns: u64) -> u32 {
        (now_ns.saturating_sub(self.origin_ns) / 1_000_000_000).min(u64::from(u32::MAX)) as u32
    }

    /// One polled record: remember it, set its event and rates as the
    /// policy asks, and say whether to send it. A record without a cookie
    /// cannot be tracked and is always sent as it is.
    pub fn observe(&mut self, record: &mut Record, policy: TrackPolicy, now_ns: u64) -> Verdict {
        let Some(cookie) = record.idiag_cookie else {
            return Verdict::Emit(None);
        };
        let key = CookieKey::new(cookie);
        if policy.rates {
            self.update_rates(key, record, now_ns);
        }
        let verdict = self.observe_change(key, record, policy, now_ns);
        if policy.flow_events && verdict == Verdict::Emit(Some(Event::Open)) {
            record.flow_event = Some(Event::Open.label());
        }
        verdict
    }

    fn update_rates(&mut self, key: CookieKey, record: &mut Record, now_ns: u64) {
        let Some(now) = RateBase::of(record, now_ns) else {
            return;
        };
        if let Some(before) = self.rates.insert(key, now) {
            before.apply(&now, record);
        }
    }

    fn observe_change(&mut self, key: CookieKey, record: &Record, policy: TrackPolicy, now_ns: u64) -> Verdict {
        let digest = change_digest(record);
        let generation = self.generation;
        let first_seen_s = self.seconds_since_origin(now_ns);
        match self.sockets.get_mut(&key) {
            Some(t) => {
                t.seen_generation = generation;
                if t.flags & CLOSED != 0 {
                    // The remains of a closed socket: its records follow
                    // the emit mode, but it has no events any more.
                    let changed = t.digest != digest;
                    t.digest = digest;
                    t.polls_since_emit = t.polls_since_emit.saturating_add(1);
                    let emit =
                        policy.emit == EmitMode::All || changed || t.polls_since_emit >= policy.heartbeat_polls.max(1);
                    if emit {
                        t.polls_since_emit = 0;
                        return Verdict::Emit(None);
                    }
                    return Verdict::Suppress;
                }
                let changed = t.digest != digest;
                t.digest = digest;
                t.polls_since_emit = t.polls_since_emit.saturating_add(1);
                // The state can change the identity (a listener's child
                // keeps its cookie); keep the last one seen.
                t.sport = record.idiag_sport.unwrap_or(t.sport);
                t.dport = record.idiag_dport.unwrap_or(t.dport);
                let emit = match policy.emit {
                    EmitMode::All => true,
                    EmitMode::Changed => changed || t.polls_since_emit >= policy.heartbeat_polls.max(1),
                };
                if emit {
                    t.polls_since_emit = 0;
                    Verdict::Emit(None)
                } else {
                    Verdict::Suppress
                }
            }
            None => {
                let src = self.intern_local(addr_bytes(record.idiag_src));
                // First seen in TIME-WAIT: the connection ended before any
                // poll saw it open, and its close was either sent from the
                // destroy notification or missed; it is not an opening.
                let time_wait = record.idiag_state == Some(TIME_WAIT);
                if time_wait {
                    self.first_seen_in_time_wait += 1;
                }
                self.sockets.insert(
                    key,
                    Tracked {
                        digest,
                        first_seen_s,
                        polls_since_emit: 0,
                        seen_generation: generation,
                        flags: if time_wait { CLOSED } else { 0 },
                        family: record.idiag_family.unwrap_or(0),
                        sport: record.idiag_sport.unwrap_or(0),
                        dport: record.idiag_dport.unwrap_or(0),
                        src,
                        dst: addr_bytes(record.idiag_dst),
                    },
                );
                Verdict::Emit((!time_wait).then_some(Event::Open))
            }
        }
    }

    /// The kernel destroyed a socket: completes `record` (the destroy
    /// message, decoded) into its close record. An abortive close zeroes
    /// the local address and the peer's port before the kernel reports it;
    /// the last sighting fills them, and sets the lifetime. Call it before
    /// the namespace's dump of the same poll (after [`Self::start_poll`]).
    pub fn destroyed(&mut self, record: &mut Record, now_ns: u64) -> Destroyed {
        record.flow_event = Some(Event::Close.label());
        record.flow_close_source = Some(CloseSource::Destroy.label());
        let Some(cookie) = record.idiag_cookie else {
            return Destroyed::Unknown;
        };
        let key = CookieKey::new(cookie);
        self.rates.remove(&key);
        // Not seen by this poll (yet): the sweep drops it unless the dump
        // that follows finds its TIME-WAIT remains.
        let earlier = self.generation.wrapping_sub(1);
        if let Some(t) = self.sockets.get_mut(&key) {
            if t.flags & CLOSED != 0 {
                return Destroyed::AlreadyClosed;
            }
            t.flags |= CLOSED;
            let t = *t;
            fill_identity(record, &t, self.local(t.src), now_ns, self.origin_ns);
            return Destroyed::Known;
        }
        let src = self.intern_local(addr_bytes(record.idiag_src));
        self.sockets.insert(
            key,
            Tracked {
                digest: 0,
                first_seen_s: self.seconds_since_origin(now_ns),
                polls_since_emit: 0,
                seen_generation: earlier,
                flags: CLOSED,
                family: record.idiag_family.unwrap_or(0),
                sport: record.idiag_sport.unwrap_or(0),
                dport: record.idiag_dport.unwrap_or(0),
                src,
                dst: addr_bytes(record.idiag_dst),
            },
        );
        Destroyed::Unknown
    }

    /// Sockets first seen in TIME-WAIT since the last call (their opening
    /// was never seen; their close only if a notification came).
    pub fn take_first_seen_in_time_wait(&mut self) -> u64 {
        std::mem::take(&mut self.first_seen_in_time_wait)
    }

    /// Ends a poll that collected this namespace whole: every socket not
    /// seen in it is gone, and each gets its close record (identity and
    /// lifetime; its counters are those of the record last emitted).
    /// A poll cut short must not sweep: its missing sockets are not gone.
    pub fn sweep(&mut self, now_ns: u64, mut closed: impl FnMut(Closed)) {
        let generation = self.generation;
        let origin = self.origin_ns;
        let locals = &self.locals;
        let rates = &mut self.rates;
        self.sockets.retain(|cookie, t| {
            if t.seen_generation == generation {
                return true;
            }
            rates.remove(cookie);
            if t.flags & CLOSED != 0 {
                // Its close was sent; its remains are gone now too.
                return false;
            }
            let mut record = Record {
                idiag_cookie: Some(cookie.get()),
                ..Record::default()
            };
            let local = locals.get(usize::from(t.src)).copied().unwrap_or([0; 16]);
            fill_identity(&mut record, t, local, now_ns, origin);
            record.flow_close_source = Some(CloseSource::PollDiff.label());
            closed(Closed {
                record,
                source: CloseSource::PollDiff,
            });
            false
        });
        // A table that shrank a lot gives its memory back.
        if self.sockets.capacity() > 64 && self.sockets.len() < self.sockets.capacity() / 4 {
            self.sockets.shrink_to_fit();
            self.rates.shrink_to_fit();
        }
    }

    /// The namespace is gone: every socket it held is closed.
    pub fn close_all(mut self, now_ns: u64, closed: impl FnMut(Closed)) {
        self.generation = self.generation.wrapping_add(1);
        self.sweep(now_ns, closed);
    }
}

impl SocketTable {
    fn local(&self, index: u16) -> [u8; 16] {
        self.locals.get(usize::from(index)).copied().unwrap_or([0; 16])
    }
}

fn fill_identity(record: &mut Record, t: &Tracked, local: [u8; 16], now_ns: u64, origin_ns: u64) {
    let family = record.idiag_family.unwrap_or(t.family);
    record.idiag_family = Some(family);
    let zero_src = record.idiag_src.is_none_or(|a| a.is_unspecified());
    if zero_src && local != [0; 16] {
        record.idiag_src = Some(addr_of(family, local));
    }
    let zero_dst = record.idiag_dst.is_none_or(|a| a.is_unspecified());
    if zero_dst && t.dst != [0; 16] {
        record.idiag_dst = Some(addr_of(family, t.dst));
    }
    if record.idiag_sport.is_none_or(|p| p == 0) {
        record.idiag_sport = Some(t.sport);
    }
    if record.idiag_dport.is_none_or(|p| p == 0) {
        record.idiag_dport = Some(t.dport);
    }
    let first_seen_ns = origin_ns + u64::from(t.first_seen_s) * 1_000_000_000;
    record.flow_lifetime_ns = Some(now_ns.saturating_sub(first_seen_ns));
    record.flow_event = Some(Event::Close.label());
}

#[cfg(test)]
mod tests {
    use super::*;

    const CHANGED: TrackPolicy = TrackPolicy {
        emit: EmitMode::Changed,
        heartbeat_polls: 3,
        flow_events: true,
        rates: false,
    };

    fn socket(cookie: u64, acked: u64) -> Record {
        Record {
            idiag_cookie: Some(cookie),
            idiag_family: Some(crate::decode::inet_diag::AF_INET),
            idiag_state: Some(1),
            idiag_sport: Some(40_000),
            idiag_dport: Some(443),
            idiag_src: Some("127.0.0.2".parse().unwrap()),
            idiag_dst: Some("127.0.0.3".parse().unwrap()),
            tcpi_bytes_acked: Some(acked),
            ..Record::default()
        }
    }

    #[test]
    fn the_entry_stays_small() {
        assert_eq!(std::mem::size_of::<Tracked>(), 36);
        assert_eq!(std::mem::size_of::<(CookieKey, Tracked)>(), 44);
    }

    #[test]
    fn first_sighting_opens_then_only_changes_and_heartbeats_emit() {
        let mut t = SocketTable::new(0);
        let mut verdicts = Vec::new();
        for (poll, acked) in [10, 10, 10, 10, 20, 20].into_iter().enumerate() {
            t.start_poll();
            verdicts.push(t.observe(&mut socket(7, acked), CHANGED, poll as u64 * 1_000_000_000));
        }
        assert_eq!(
            verdicts,
            vec![
                Verdict::Emit(Some(Event::Open)),
                Verdict::Suppress,
                Verdict::Suppress,
                // The third poll since the last emission: the heartbeat.
                Verdict::Emit(None),
                Verdict::Emit(None),
                Verdict::Suppress,
            ]
        );
    }

    #[test]
    fn all_mode_emits_every_poll_and_still_marks_the_open() {
        let policy = TrackPolicy {
            emit: EmitMode::All,
            heartbeat_polls: 10,
            flow_events: true,
            rates: false,
        };
        let mut t = SocketTable::new(0);
        t.start_poll();
        let mut first = socket(1, 5);
        assert_eq!(t.observe(&mut first, policy, 0), Verdict::Emit(Some(Event::Open)));
        assert_eq!(first.flow_event.as_deref(), Some("open"));
        t.start_poll();
        let mut second = socket(1, 5);
        assert_eq!(t.observe(&mut second, policy, 0), Verdict::Emit(None));
        assert_eq!(second.flow_event, None);
    }

    #[test]
    fn an_absent_counter_is_not_a_zero_one() {
        let mut zero = socket(1, 0);
        let mut absent = socket(1, 0);
        absent.tcpi_bytes_acked = None;
        assert_ne!(change_digest(&zero), change_digest(&absent));
        zero.tcpi_bytes_acked = Some(1);
        assert_ne!(change_digest(&zero), change_digest(&socket(1, 0)));
    }

    #[test]
    fn a_socket_missing_from_a_whole_poll_closes_once_with_its_identity() {
        let mut t = SocketTable::new(1_000_000_000);
        t.start_poll();
        t.observe(&mut socket(1, 5), CHANGED, 1_000_000_000);
        t.observe(&mut socket(2, 5), CHANGED, 1_000_000_000);
        t.start_poll();
        t.observe(&mut socket(2, 5), CHANGED, 3_000_000_000);
        let mut closes = Vec::new();
        t.sweep(3_500_000_000, |c| closes.push(c));
        assert_eq!(closes.len(), 1);
        let r = &closes[0].record;
        assert_eq!(closes[0].source, CloseSource::PollDiff);
        assert_eq!(r.idiag_cookie, Some(1));
        assert_eq!(r.idiag_dport, Some(443));
        assert_eq!(r.idiag_src, Some("127.0.0.2".parse().unwrap()));
        assert_eq!(r.flow_event.as_deref(), Some("close"));
        assert_eq!(r.flow_lifetime_ns, Some(2_500_000_000));
        // The same poll swept again: nothing more.
        let mut again = Vec::new();
        t.sweep(3_600_000_000, |c| again.push(c));
        assert!(again.is_empty());
        // A poll that does not see socket 2.
        t.start_poll();
        t.sweep(4_000_000_000, |c| again.push(c));
        assert_eq!(again.len(), 1, "socket 2 was not seen in this sweep's poll");
        assert_eq!(t.len(), 0);
    }

    #[test]
    fn a_destroy_fills_what_an_abortive_close_zeroed_and_prevents_the_diff_close() {
        let mut t = SocketTable::new(0);
        t.start_poll();
        t.observe(&mut socket(9, 5), CHANGED, 0);
        let mut destroy = socket(9, 0);
        destroy.idiag_src = Some("0.0.0.0".parse().unwrap());
        destroy.idiag_dport = Some(0);
        t.start_poll();
        assert_eq!(t.destroyed(&mut destroy, 2_000_000_000), Destroyed::Known);
        assert_eq!(destroy.idiag_src, Some("127.0.0.2".parse().unwrap()));
        assert_eq!(destroy.idiag_dport, Some(443));
        assert_eq!(destroy.flow_lifetime_ns, Some(2_000_000_000));
        assert_eq!(t.destroyed(&mut socket(9, 0), 2_000_000_000), Destroyed::AlreadyClosed);
        // The same poll's dump sees its TIME-WAIT remains: no new opening.
        let mut remains = socket(9, 0);
        remains.idiag_state = Some(TIME_WAIT);
        assert_eq!(t.observe(&mut remains, CHANGED, 2_000_000_000), Verdict::Emit(None));
        let mut closes = 0;
        t.sweep(2_000_000_000, |_| closes += 1);
        assert_eq!((closes, t.len()), (0, 1), "the remains are kept while seen");
        t.start_poll();
        t.sweep(3_000_000_000, |_| closes += 1);
        assert_eq!((closes, t.len()), (0, 0), "never two closes; gone with its remains");
        let mut unknown = socket(10, 0);
        t.start_poll();
        assert_eq!(t.destroyed(&mut unknown, 3_000_000_000), Destroyed::Unknown);
        assert_eq!(unknown.flow_event.as_deref(), Some("close"));
        assert_eq!(unknown.flow_lifetime_ns, None);
        t.sweep(3_000_000_000, |_| closes += 1);
        assert_eq!(
            (closes, t.len()),
            (0, 0),
            "an unknown close not seen by the dump is forgotten"
        );
    }

    #[test]
    fn ipv6_identity_round_trips() {
        let mut r = socket(3, 1);
        r.idiag_family = Some(crate::decode::inet_diag::AF_INET6);
        r.idiag_src = Some("2001:db8::1".parse().unwrap());
        r.idiag_dst = Some("::1".parse().unwrap());
        let mut t = SocketTable::new(0);
        t.start_poll();
        t.observe(&mut r.clone(), CHANGED, 0);
        let mut out = Vec::new();
        t.close_all(0, |c| out.push(c.record));
        assert_eq!(out[0].idiag_src, r.idiag_src);
        assert_eq!(out[0].idiag_dst, r.idiag_dst);
    }

    #[test]
    fn rates_are_per_second_deltas_from_the_previous_poll() {
        let policy = TrackPolicy { rates: true, ..CHANGED };
        let with = |acked: u64, segs: u32| Record {
            tcpi_bytes_received: Some(0),
            tcpi_segs_out: Some(segs),
            tcpi_segs_in: Some(0),
            tcpi_total_retrans: Some(0),
            ..socket(4, acked)
        };
        let mut t = SocketTable::new(0);
        t.start_poll();
        let mut first = with(1_000, u32::MAX - 1);
        t.observe(&mut first, policy, 0);
        assert_eq!(first.tcpi_bytes_acked_per_s, None, "absent on the first record");
        t.start_poll();
        let mut second = with(6_000, 8);
        t.observe(&mut second, policy, 2_000_000_000);
        assert_eq!(second.tcpi_bytes_acked_per_s, Some(2_500));
        // 10 segments across the 32-bit wrap, in 2 s.
        assert_eq!(second.tcpi_segs_out_per_s, Some(5));
        assert_eq!(second.tcpi_total_retrans_per_s, Some(0));
    }

    #[test]
    fn a_socket_first_seen_in_time_wait_neither_opens_nor_closes() {
        let mut t = SocketTable::new(0);
        t.start_poll();
        let mut tw = socket(5, 0);
        tw.idiag_state = Some(TIME_WAIT);
        assert_eq!(t.observe(&mut tw, CHANGED, 0), Verdict::Emit(None));
        assert_eq!(tw.flow_event, None);
        assert_eq!(t.take_first_seen_in_time_wait(), 1);
        t.start_poll();
        let mut closes = 0;
        t.sweep(0, |_| closes += 1);
        assert_eq!((closes, t.len()), (0, 0));
    }
}
