//! A `NETLINK_SOCK_DIAG` socket and one dump over it.

use std::io;
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use netlink_sys::{protocols::NETLINK_SOCK_DIAG, Socket, SocketAddr};

use super::request::DumpRequest;
use crate::decode::netlink::NLM_F_DUMP_INTR;
use crate::decode::{classify, DecodeError, NetlinkMessages, Reply};
use crate::metrics::{KindLabel, NetlinkMetrics};

/// Receive buffer size. The kernel fills dump datagrams up to 32 KiB
/// (and to the size of the largest buffer it has seen us offer, capped);
/// 64 KiB leaves room so a full datagram is never truncated, and
/// `MSG_TRUNC` reports it if one ever is.
pub const RECV_BUFFER_BYTES: usize = 64 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum DumpError {
    #[error("opening NETLINK_SOCK_DIAG socket: {0}")]
    Open(#[source] io::Error),
    #[error("sending inet_diag dump request: {0}")]
    Send(#[source] io::Error),
    #[error("receiving inet_diag dump: {0}")]
    Recv(#[source] io::Error),
    #[error("inet_diag dump timed out after {0:?} (no reply within -nltimeout or the dump deadline)")]
    Timeout(Duration),
    #[error("netlink datagram of {len} bytes truncated to the {buffer}-byte receive buffer")]
    Truncated { len: usize, buffer: usize },
    #[error("kernel answered the dump with error {errno} ({})", io::Error::from_raw_os_error(*errno))]
    Kernel { errno: i32 },
    #[error("kernel sent a malformed netlink datagram: {0}")]
    Malformed(#[from] DecodeError),
}

impl DumpError {
    /// After these the socket may still hold the rest of an unfinished dump,
    /// and the kernel refuses a new dump while one runs: open a new socket.
    pub(crate) fn poisons_socket(&self) -> bool {
        matches!(
            self,
            DumpError::Timeout(_) | DumpError::Truncated { .. } | DumpError::Recv(_) | DumpError::Malformed(_)
        )
    }

    /// Short, stable name for metrics labels.
    pub fn kind(&self) -> &'static str {
        match self {
            DumpError::Open(_) => "open",
            DumpError::Send(_) => "send",
            DumpError::Recv(_) => "recv",
            DumpError::Timeout(_) => "timeout",
            DumpError::Truncated { .. } => "truncated",
            DumpError::Kernel { .. } => "kernel",
            DumpError::Malformed(_) => "malformed",
        }
    }

    /// Counts a failed dump by kind, and a truncation as data lost.
    pub(crate) fn report_to(&self, metrics: &NetlinkMetrics) {
        if matches!(self, DumpError::Truncated { .. }) {
            metrics.truncations.inc();
        }
        metrics.errors.get_or_create(&KindLabel { kind: self.kind() }).inc();
    }
}

/// What one dump cost and saw.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct DumpSummary {
    pub recv_calls: u64,
    pub bytes: u64,
    pub messages: u64,
    pub sockets: u64,
    /// Messages from an earlier, abandoned dump (wrong sequence number).
    pub stale_messages: u64,
    /// The kernel flagged the dump `NLM_F_DUMP_INTR`: its socket table
    /// changed mid-dump, so a socket may be missing or repeated. The data is
    /// still kept; the next poll sees a consistent table.
    pub interrupted: bool,
}

impl DumpSummary {
    /// Counts a finished dump: its receive work, the dump, and whether the
    /// kernel flagged it interrupted.
    pub(crate) fn report_to(&self, metrics: &NetlinkMetrics) {
        self.report_reads_to(metrics);
        metrics.dumps.inc();
        if self.interrupted {
            metrics.dumps_interrupted.inc();
        }
    }

    /// Counts the receive work of a dump, finished or not (a failed dump's
    /// reads were real work too).
    pub(crate) fn report_reads_to(&self, metrics: &NetlinkMetrics) {
        metrics.recv_calls.inc_by(self.recv_calls);
        metrics.recv_bytes.inc_by(self.bytes);
        metrics.messages.inc_by(self.messages);
        metrics.stale_messages.inc_by(self.stale_messages);
    }
}

/// One `NETLINK_SOCK_DIAG` socket, bound to the network namespace of the
/// thread that created it, for its whole life.
pub struct DiagSocket {
    socket: Socket,
    seq: u32,
    recv_timeout: Duration,
    /// What the last failed dump received before it failed, so the
    /// netlink metrics count those reads too.
    failed_dump: DumpSummary,
    /// Sees every datagram received (`-writeFiles`); lent by the collector.
    tap: Option<Box<dyn DatagramTap>>,
}

/// Sees every datagram a dump receives, before it is decoded: the Go
/// daemon's `-writeFiles` saves them as a capture `xtcp2 decode` reads.
pub trait DatagramTap: Send {
    fn datagram(&mut self, bytes: &[u8]);
}

impl DiagSocket {
    /// Opens a socket in the calling thread's current network namespace.
    pub fn open(recv_timeout: Duration) -> Result<Self, DumpError> {
        let mut socket = Socket::new(NETLINK_SOCK_DIAG).map_err(DumpError::Open)?;
        socket.bind_auto().map_err(DumpError::Open)?;
        socket.connect(&SocketAddr::new(0, 0)).map_err(DumpError::Open)?;
        set_recv_timeout(&socket, recv_timeout).map_err(DumpError::Open)?;
        Ok(DiagSocket {
            socket,
            seq: 0,
            recv_timeout,
            failed_dump: DumpSummary::default(),
            tap: None,
        })
    }

    /// Runs one dump and calls `on_socket(payload, receive_time_ns)` for each
    /// socket reply, straight from the receive buffer.
    ///
    /// `deadline` bounds the whole dump; each receive also waits at most the
    /// socket's receive timeout (`-nltimeout`).
    pub fn dump(
        &mut self,
        request: &DumpRequest,
        buf: &mut [u8],
        deadline: Instant,
        mut on_socket: impl FnMut(&[u8], u64),
    ) -> Result<DumpSummary, DumpError> {
        let mut summary = DumpSummary::default();
        let result = self.receive_dump(request, buf, deadline, &mut on_socket, &mut summary);
        self.failed_dump = if result.is_err() {
            summary
        } else {
            DumpSummary::default()
        };
        result.map(|()| summary)
    }

    /// What the last dump had received when it failed (all zero after a
    /// successful dump).
    pub(crate) fn failed_dump(&self) -> DumpSummary {
        self.failed_dump
    }

    fn receive_dump(
        &mut self,
        request: &DumpRequest,
        buf: &mut [u8],
        deadline: Instant,
        on_socket: &mut impl FnMut(&[u8], u64),
        summary: &mut DumpSummary,
    ) -> Result<(), DumpError> {
        let seq = self.send_request(request)?;
        let started = Instant::now();
        loop {
            if Instant::now() >= deadline {
                return Err(DumpError::Timeout(started.elapsed()));
            }
            let mut window: &mut [u8] = &mut buf[..];
            let capacity = window.len();
            let received = match self.socket.recv(&mut window, libc::MSG_TRUNC) {
                Ok(n) => n,
                Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {
                    return Err(DumpError::Timeout(started.elapsed().max(self.recv_timeout)));
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(DumpError::Recv(e)),
            };
            summary.recv_calls += 1;
            if received > capacity {
                return Err(DumpError::Truncated {
                    len: received,
                    buffer: capacity,
                });
            }
            summary.bytes += received as u64;
            self.tap(&buf[..received]);
            if let DumpProgress::Done =
                absorb_datagram(&buf[..received], seq, crate::clock::now_ns(), summary, on_socket)?
            {
                return Ok(());
            }
        }
    }

    /// Sends the request of a new dump and returns its sequence number; the
    /// caller receives the reply (recv(2) in [`DiagSocket::dump`], or the
    /// io_uring path), feeding each datagram to [`absorb_datagram`].
    pub(crate) fn send_request(&mut self, request: &DumpRequest) -> Result<u32, DumpError> {
        self.seq = self.seq.wrapping_add(1);
        self.socket
            .send(&request.encode(self.seq), 0)
            .map_err(DumpError::Send)?;
        Ok(self.seq)
    }

    /// Installs `tap` (or none), returning the one installed before.
    pub fn set_tap(&mut self, tap: Option<Box<dyn DatagramTap>>) -> Option<Box<dyn DatagramTap>> {
        std::mem::replace(&mut self.tap, tap)
    }

    /// Hands a received datagram to the tap, if any.
    pub(crate) fn tap(&mut self, datagram: &[u8]) {
        if let Some(tap) = &mut self.tap {
            tap.datagram(datagram);
        }
    }

    /// Numbers the next dump request `first` (the Go daemon's `-nlmsgSeq`);
    /// later ones count up from it.
    pub fn start_sequence_at(&mut self, first: u32) {
        self.seq = first.wrapping_sub(1);
    }

    /// How long one receive may wait (`-nltimeout`).
    pub fn recv_timeout(&self) -> Duration {
        self.recv_timeout
    }
}

impl AsRawFd for DiagSocket {
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        self.socket.as_raw_fd()
    }
}

/// Whether a dump continues after a datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DumpProgress {
    More,
    Done,
}

/// Processes one received datagram of the dump with sequence number `seq`:
/// hands socket replies to `on_socket`, skips messages of other dumps, and
/// turns `NLMSG_DONE`/`NLMSG_ERROR` into the dump's outcome. Shared by the
/// recv(2) and io_uring receive paths, and testable without a kernel.
pub fn absorb_datagram(
    datagram: &[u8],
    seq: u32,
    now_ns: u64,
    summary: &mut DumpSummary,
    on_socket: &mut impl FnMut(&[u8], u64),
) -> Result<DumpProgress, DumpError> {
    for msg in NetlinkMessages::new(datagram) {
        let msg = msg?;
        summary.messages += 1;
        if msg.seq != seq {
            summary.stale_messages += 1;
            continue;
        }
        if msg.flags & NLM_F_DUMP_INTR != 0 {
            summary.interrupted = true;
        }
        match classify(&msg) {
            Reply::Socket(payload) => {
                summary.sockets += 1;
                on_socket(payload, now_ns);
            }
            Reply::Done { errno: 0 } => return Ok(DumpProgress::Done),
            Reply::Done { errno } | Reply::Error { errno } if errno != 0 => {
                return Err(DumpError::Kernel {
                    errno: errno.saturating_neg(),
                });
            }
            // An ack (NLMSG_ERROR with errno 0) or an unrelated type.
            _ => {}
        }
    }
    Ok(DumpProgress::More)
}

pub(crate) fn set_recv_timeout(socket: &Socket, timeout: Duration) -> io::Result<()> {
    let tv = libc::timeval {
        tv_sec: timeout.as_secs() as libc::time_t,
        tv_usec: libc::suseconds_t::from(timeout.subsec_micros() as i32),
    };
    // SAFETY: `tv` is a valid timeval that outlives the call, the length
    // passed is its exact size, and the fd is owned by `socket`.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            (&tv as *const libc::timeval).cast(),
            std::mem::size_of::<libc::timeval>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::netlink::{NLMSG_DONE, NLMSG_ERROR, SOCK_DIAG_BY_FAMILY};

    fn message(kind: u16, flags: u16, seq: u32, payload: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        v.extend_from_slice(&((16 + payload.len()) as u32).to_ne_bytes());
        v.extend_from_slice(&kind.to_ne_bytes());
        v.extend_from_slice(&flags.to_ne_bytes());
        v.extend_from_slice(&seq.to_ne_bytes());
        v.extend_from_slice(&0u32.to_ne_bytes());
        v.extend_from_slice(payload);
        v
    }

    fn absorb(datagram: &[u8], seq: u32) -> (Result<DumpProgress, DumpError>, DumpSummary, Vec<Vec<u8>>) {
        let mut summary = DumpSummary::default();
        let mut seen = Vec::new();
        let r = absorb_datagram(datagram, seq, 5, &mut summary, &mut |p: &[u8], _| seen.push(p.to_vec()));
        (r, summary, seen)
    }

    /// Several replies in one datagram are all delivered; DONE ends the dump.
    #[test]
    fn multi_message_datagram_then_done() {
        let mut d = message(SOCK_DIAG_BY_FAMILY, 2, 9, &[1; 72]);
        d.extend(message(SOCK_DIAG_BY_FAMILY, 2, 9, &[2; 72]));
        d.extend(message(NLMSG_DONE, 2, 9, &0i32.to_ne_bytes()));
        let (r, summary, seen) = absorb(&d, 9);
        assert_eq!(r.unwrap(), DumpProgress::Done);
        assert_eq!(seen.len(), 2);
        assert_eq!((summary.messages, summary.sockets), (3, 2));
    }

    /// A negative errno in DONE's payload is the dump's error.
    #[test]
    fn done_with_negative_errno_is_a_kernel_error() {
        let d = message(NLMSG_DONE, 2, 3, &(-libc::ENOMEM).to_ne_bytes());
        match absorb(&d, 3).0 {
            Err(DumpError::Kernel { errno }) => assert_eq!(errno, libc::ENOMEM),
            other => panic!("expected kernel error, got {other:?}"),
        }
    }

    /// NLMSG_ERROR with a non-zero errno fails the dump; errno 0 is an ack.
    #[test]
    fn nlmsg_error_fails_but_ack_does_not() {
        let d = message(NLMSG_ERROR, 0, 4, &(-libc::EPERM).to_ne_bytes());
        assert!(matches!(absorb(&d, 4).0, Err(DumpError::Kernel { errno }) if errno == libc::EPERM));
        let ack = message(NLMSG_ERROR, 0, 4, &0i32.to_ne_bytes());
        assert_eq!(absorb(&ack, 4).0.unwrap(), DumpProgress::More);
    }

    /// Messages of an abandoned earlier dump are skipped and counted.
    #[test]
    fn stale_sequence_numbers_are_skipped() {
        let mut d = message(SOCK_DIAG_BY_FAMILY, 2, 1, &[1; 72]);
        d.extend(message(NLMSG_DONE, 2, 1, &0i32.to_ne_bytes()));
        let (r, summary, seen) = absorb(&d, 2);
        assert_eq!(r.unwrap(), DumpProgress::More);
        assert!(seen.is_empty());
        assert_eq!(summary.stale_messages, 2);
    }

    /// NLM_F_DUMP_INTR is reported, and the data is still delivered.
    #[test]
    fn interrupted_dump_is_flagged_but_kept() {
        let d = message(SOCK_DIAG_BY_FAMILY, 2 | NLM_F_DUMP_INTR, 6, &[1; 72]);
        let (r, summary, seen) = absorb(&d, 6);
        assert_eq!(r.unwrap(), DumpProgress::More);
        assert!(summary.interrupted);
        assert_eq!(seen.len(), 1);
    }

    /// A corrupt datagram is an error, not a panic.
    #[test]
    fn corrupt_datagram_is_malformed() {
        let mut d = message(SOCK_DIAG_BY_FAMILY, 2, 6, &[1; 72]);
        d[0] = 0xff;
        assert!(matches!(absorb(&d, 6).0, Err(DumpError::Malformed(_))));
    }

    /// A live dump of the host namespace ends cleanly (no privileges needed
    /// to dump one's own namespace's TCP sockets).
    #[test]
    fn live_dump_of_own_namespace_completes() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let mut socket = DiagSocket::open(Duration::from_secs(1)).unwrap();
        let request = DumpRequest {
            family: 2,
            states: super::super::ALL_TCP_STATES,
            ext: 0,
            filter: None,
        };
        let mut buf = vec![0u8; RECV_BUFFER_BYTES];
        let mut ports = Vec::new();
        let summary = socket
            .dump(&request, &mut buf, Instant::now() + Duration::from_secs(2), |p, _| {
                ports.push(u16::from_be_bytes([p[4], p[5]]))
            })
            .unwrap();
        assert!(ports.contains(&port));
        assert_eq!(summary.sockets as usize, ports.len());
        // The same socket serves a second dump (sequence numbers advance).
        socket
            .dump(&request, &mut buf, Instant::now() + Duration::from_secs(2), |_, _| {})
            .unwrap();
    }

    /// `-nlmsgSeq`: the first request carries the number given, the next
    /// ones count up, and a dump under that number completes (the reply is
    /// matched by it).
    #[test]
    fn sequence_numbers_start_where_asked() {
        let mut socket = DiagSocket::open(Duration::from_secs(1)).unwrap();
        socket.start_sequence_at(666);
        let request = DumpRequest {
            family: 2,
            states: super::super::ALL_TCP_STATES,
            ext: 0,
            filter: None,
        };
        let mut buf = vec![0u8; RECV_BUFFER_BYTES];
        socket
            .dump(&request, &mut buf, Instant::now() + Duration::from_secs(2), |_, _| {})
            .unwrap();
        assert_eq!(socket.send_request(&request).unwrap(), 667);
    }

    /// A datagram larger than the buffer is reported (MSG_TRUNC), never
    /// silently cut, and the read it took is kept for the metrics.
    #[test]
    fn truncation_is_detected_and_its_read_counted() {
        let _listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let mut socket = DiagSocket::open(Duration::from_secs(1)).unwrap();
        let request = DumpRequest {
            family: 2,
            states: super::super::ALL_TCP_STATES,
            ext: 0xff,
            filter: None,
        };
        let mut tiny = vec![0u8; 64];
        let err = socket
            .dump(&request, &mut tiny, Instant::now() + Duration::from_secs(2), |_, _| {})
            .unwrap_err();
        assert!(
            matches!(err, DumpError::Truncated { buffer: 64, len } if len > 64),
            "{err:?}"
        );
        assert!(err.poisons_socket());
        assert_eq!(socket.failed_dump().recv_calls, 1);
    }

    /// A finished dump counts its receive work, itself and the kernel's
    /// interruption flag; a failed dump's reads are counted too.
    #[test]
    fn dump_summaries_report_to_the_netlink_metrics() {
        let metrics = NetlinkMetrics::default();
        let finished = DumpSummary {
            recv_calls: 3,
            bytes: 70_000,
            messages: 40,
            sockets: 38,
            stale_messages: 2,
            interrupted: true,
        };
        finished.report_to(&metrics);
        let failed = DumpSummary {
            recv_calls: 1,
            bytes: 100,
            messages: 1,
            ..DumpSummary::default()
        };
        failed.report_reads_to(&metrics);
        let m = &metrics;
        assert_eq!(
            (
                m.recv_calls.get(),
                m.recv_bytes.get(),
                m.messages.get(),
                m.stale_messages.get()
            ),
            (4, 70_100, 41, 2)
        );
        assert_eq!((m.dumps.get(), m.dumps_interrupted.get()), (1, 1));
    }

    /// A failed dump is counted by kind; a truncation is also data lost.
    #[test]
    fn dump_errors_report_their_kind_and_truncation() {
        let metrics = NetlinkMetrics::default();
        DumpError::Truncated {
            len: 70_000,
            buffer: 65_536,
        }
        .report_to(&metrics);
        DumpError::Timeout(Duration::from_secs(1)).report_to(&metrics);
        DumpError::Timeout(Duration::from_secs(1)).report_to(&metrics);
        let errors = |kind| metrics.errors.get(&KindLabel { kind }).map(|c| c.get());
        assert_eq!(errors("truncated"), Some(1));
        assert_eq!(errors("timeout"), Some(2));
        assert_eq!(errors("kernel"), None);
        assert_eq!(metrics.truncations.get(), 1);
    }
}
