//! The io_uring receive path (`-ioUring`, issue 8): the same dump as
//! [`DiagSocket::dump`], with the datagrams received by io_uring `RECV`
//! operations instead of recv(2).
//!
//! `-ioUringRecvBatch` receives are kept in flight on the socket, each into
//! its own buffer; each `io_uring_enter` submits the receives to renew and
//! waits for one completion, and up to `-ioUringCqeBatch` completions are
//! handled before the next. A netlink dump produces its next datagram
//! only when the previous one is read, so the receives complete one after
//! another inside the kernel; what io_uring can save is the system calls
//! between datagrams, not kernel work. `docs/performance.md` has the
//! measurement; the path stays off by default because it did not win.
//!
//! Buffers handed to the kernel must outlive every operation that uses
//! them: every exit from [`UringReceiver::dump`] first cancels and reaps
//! all receives in flight, and if the kernel does not give them back in
//! time the buffers are leaked rather than freed under it.
//!
//! A [`UringReceiver`] belongs to one collecting thread and serves every
//! namespace's socket in turn; the sockets never change.

use std::io;
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use io_uring::{opcode, types, IoUring, Probe};

use super::socket::{absorb_datagram, DiagSocket, DumpError, DumpProgress, DumpSummary, RECV_BUFFER_BYTES};
use super::DumpRequest;

/// Most receives kept in flight per dump. A dump is a chain of datagrams
/// produced one at a time, so more than a few only costs buffer memory
/// (64 KiB each).
pub(crate) const MAX_RECV_BATCH: u32 = 16;
/// How long reaping cancelled receives may take before their buffers are
/// abandoned (leaked) instead of freed while the kernel might still use them.
const CANCEL_DRAIN_TIMEOUT: Duration = Duration::from_secs(1);
/// `user_data` of cancel requests; receive operations use their buffer index.
const CANCEL_USER_DATA: u64 = u64::MAX;

/// Why io_uring cannot be used; the caller logs it and falls back to recv(2).
#[derive(Debug, thiserror::Error)]
pub enum UringUnavailable {
    #[error("io_uring_setup refused: {0} (kernel without io_uring, kernel.io_uring_disabled, or a seccomp filter)")]
    Setup(#[source] io::Error),
    #[error("the kernel's io_uring cannot be probed: {0}")]
    Probe(#[source] io::Error),
    #[error("the kernel's io_uring lacks the RECV operation (needs Linux 5.6)")]
    NoRecv,
    #[error("the kernel's io_uring lacks wait timeouts (IORING_FEAT_EXT_ARG, Linux 5.11)")]
    NoWaitTimeout,
}

/// One io_uring plus the receive buffers it lends to the kernel.
pub struct UringReceiver {
    ring: IoUring,
    /// One buffer per receive in flight. Boxed slices never move, so the
    /// addresses given to the kernel stay valid while `self` lives.
    buffers: Vec<Box<[u8]>>,
    /// Which buffers the kernel currently holds.
    in_flight: Vec<bool>,
    cqe_batch: usize,
    /// Set when cancelled receives could not be reaped: the ring and its
    /// buffers are then never reused nor freed.
    abandoned: bool,
}

impl UringReceiver {
    /// Sets up a ring for `recv_batch` receives in flight (clamped to
    /// 1..=[`MAX_RECV_BATCH`]) and `cqe_batch` completions per wait.
    pub fn new(recv_batch: u32, cqe_batch: u32) -> Result<Self, UringUnavailable> {
        let recv_batch = recv_batch.clamp(1, MAX_RECV_BATCH);
        // Room for every receive plus one cancel each.
        let ring = IoUring::new((recv_batch * 2).next_power_of_two()).map_err(UringUnavailable::Setup)?;
        let mut probe = Probe::new();
        ring.submitter()
            .register_probe(&mut probe)
            .map_err(UringUnavailable::Probe)?;
        if !probe.is_supported(opcode::Recv::CODE) || !probe.is_supported(opcode::AsyncCancel::CODE) {
            return Err(UringUnavailable::NoRecv);
        }
        if !ring.params().is_feature_ext_arg() {
            return Err(UringUnavailable::NoWaitTimeout);
        }
        let count = recv_batch as usize;
        Ok(UringReceiver {
            ring,
            buffers: (0..count)
                .map(|_| vec![0u8; RECV_BUFFER_BYTES].into_boxed_slice())
                .collect(),
            in_flight: vec![false; count],
            cqe_batch: (cqe_batch.max(1) as usize).min(MAX_RECV_BATCH as usize),
            abandoned: false,
        })
    }

    /// Runs one dump on `socket`, with the contract of [`DiagSocket::dump`]:
    /// `on_socket(payload, receive_time_ns)` per socket reply, `deadline`
    /// for the whole dump and the socket's receive timeout per wait.
    pub fn dump(
        &mut self,
        socket: &mut DiagSocket,
        request: &DumpRequest,
        deadline: Instant,
        mut on_socket: impl FnMut(&[u8], u64),
    ) -> Result<DumpSummary, DumpError> {
        if self.abandoned {
            return Err(DumpError::Recv(io::Error::other(
                "io_uring receiver abandoned after receives could not be cancelled",
            )));
        }
        let fd = socket.as_raw_fd();
        let recv_timeout = socket.recv_timeout();
        let seq = socket.send_request(request)?;
        let started = Instant::now();
        let mut summary = DumpSummary::default();
        let outcome = (|| {
            for index in 0..self.buffers.len() {
                self.submit_recv(fd, index)?;
            }
            loop {
                let now = Instant::now();
                if now >= deadline {
                    return Err(DumpError::Timeout(started.elapsed()));
                }
                let wait = recv_timeout.min(deadline - now);
                // Wait for one completion only: the last receives of a dump
                // never complete, so waiting for a batch would sit out the
                // timeout at the end of every dump.
                if !self.wait(1, wait)? {
                    return Err(DumpError::Timeout(started.elapsed().max(recv_timeout)));
                }
                let now_ns = crate::clock::now_ns();
                // Copy the completions out first (the queue borrows the
                // ring), at most `cqe_batch` of them before resubmitting.
                let mut completions = [(0u64, 0i32); MAX_RECV_BATCH as usize];
                let mut reaped = 0;
                for cqe in self.ring.completion().take(self.cqe_batch) {
                    completions[reaped] = (cqe.user_data(), cqe.result());
                    reaped += 1;
                }
                // Every reaped receive is back in our hands, even those after
                // an early return below.
                for &(user_data, _) in &completions[..reaped] {
                    self.take_completion(user_data);
                }
                for &(user_data, result) in &completions[..reaped] {
                    let Some(index) = receive_index(user_data, self.buffers.len()) else {
                        continue;
                    };
                    if result == -libc::EINTR || result == -libc::EAGAIN {
                        self.submit_recv(fd, index)?;
                        continue;
                    }
                    if result < 0 {
                        return Err(DumpError::Recv(io::Error::from_raw_os_error(-result)));
                    }
                    summary.recv_calls += 1;
                    let received = result as usize;
                    if received > RECV_BUFFER_BYTES {
                        return Err(DumpError::Truncated {
                            len: received,
                            buffer: RECV_BUFFER_BYTES,
                        });
                    }
                    summary.bytes += received as u64;
                    let datagram = &self.buffers[index][..received];
                    socket.tap(datagram);
                    if absorb_datagram(datagram, seq, now_ns, &mut summary, &mut on_socket)? == DumpProgress::Done {
                        return Ok(());
                    }
                    self.submit_recv(fd, index)?;
                }
            }
        })();
        // Receives still in flight would take the next dump's datagrams and
        // write into buffers we may free: take them all back first.
        self.cancel_in_flight();
        outcome.map(|()| summary)
    }

    fn in_flight_count(&self) -> usize {
        self.in_flight.iter().filter(|&&f| f).count()
    }

    /// Marks a receive as completed (cancel completions are ignored).
    fn take_completion(&mut self, user_data: u64) {
        if let Some(index) = receive_index(user_data, self.in_flight.len()) {
            self.in_flight[index] = false;
        }
    }

    fn submit_recv(&mut self, fd: i32, index: usize) -> Result<(), DumpError> {
        let buffer = &mut self.buffers[index];
        let entry = opcode::Recv::new(types::Fd(fd), buffer.as_mut_ptr(), buffer.len() as u32)
            .flags(libc::MSG_TRUNC)
            .build()
            .user_data(index as u64);
        // SAFETY: the buffer is a boxed slice owned by `self` that is neither
        // moved nor freed while the kernel holds it: every dump reaps or
        // cancels all receives before returning, and `Drop` abandons the
        // buffers if that ever failed.
        unsafe { self.push(&entry) }?;
        self.in_flight[index] = true;
        Ok(())
    }

    /// Queues an entry, flushing the submission queue once if it is full.
    ///
    /// # Safety
    /// Any buffer the entry points to must stay valid until its completion.
    unsafe fn push(&mut self, entry: &io_uring::squeue::Entry) -> Result<(), DumpError> {
        // SAFETY: forwarded from the caller.
        if unsafe { self.ring.submission().push(entry) }.is_err() {
            self.ring.submit().map_err(DumpError::Recv)?;
            // SAFETY: as above.
            unsafe { self.ring.submission().push(entry) }
                .map_err(|_| DumpError::Recv(io::Error::other("io_uring submission queue full")))?;
        }
        Ok(())
    }

    /// Submits what is queued and waits for `want` completions or `wait`.
    /// Returns false when the wait timed out with nothing completed.
    fn wait(&mut self, want: usize, wait: Duration) -> Result<bool, DumpError> {
        let timespec = types::Timespec::from(wait);
        let args = types::SubmitArgs::new().timespec(&timespec);
        loop {
            match self.ring.submitter().submit_with_args(want, &args) {
                Ok(_) => return Ok(true),
                Err(e) if e.raw_os_error() == Some(libc::ETIME) => return Ok(!self.ring.completion().is_empty()),
                Err(e) if e.raw_os_error() == Some(libc::EINTR) => continue,
                Err(e) => return Err(DumpError::Recv(e)),
            }
        }
    }

    /// Cancels every receive in flight and reaps them; abandons the ring
    /// if the kernel does not return them within [`CANCEL_DRAIN_TIMEOUT`].
    fn cancel_in_flight(&mut self) {
        let until = Instant::now() + CANCEL_DRAIN_TIMEOUT;
        let pending: Vec<usize> = (0..self.in_flight.len()).filter(|&i| self.in_flight[i]).collect();
        for index in pending {
            let cancel = opcode::AsyncCancel::new(index as u64)
                .build()
                .user_data(CANCEL_USER_DATA);
            // SAFETY: a cancel points to no buffer.
            if unsafe { self.push(&cancel) }.is_err() {
                break;
            }
        }
        while self.in_flight_count() > 0 {
            let now = Instant::now();
            if now >= until || self.wait(1, until - now).is_err() {
                tracing::error!(
                    in_flight = self.in_flight_count(),
                    "io_uring receives not returned after cancel; abandoning the ring"
                );
                self.abandoned = true;
                return;
            }
            let done: Vec<u64> = self.ring.completion().map(|c| c.user_data()).collect();
            for user_data in done {
                self.take_completion(user_data);
            }
        }
        // Cancel completions may still be queued; drop them.
        self.ring.completion().for_each(drop);
    }
}

/// The buffer index a completion's `user_data` names; `None` for cancels.
fn receive_index(user_data: u64, buffers: usize) -> Option<usize> {
    usize::try_from(user_data).ok().filter(|&i| i < buffers)
}

impl Drop for UringReceiver {
    fn drop(&mut self) {
        if self.abandoned {
            // The kernel may still write into these buffers: never free them.
            for buffer in std::mem::take(&mut self.buffers) {
                Box::leak(buffer);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::inet_diag::{AF_INET, AF_INET6};
    use crate::decode::Deserializers;
    use crate::kernel::ALL_TCP_STATES;

    /// What a default collection asks for: IPv4, then IPv6.
    fn requests() -> [DumpRequest; 2] {
        let ext = Deserializers::parse("default")
            .expect("default deserializers")
            .request_ext();
        [AF_INET, AF_INET6].map(|family| DumpRequest {
            family,
            states: ALL_TCP_STATES,
            ext,
            filter: None,
        })
    }

    /// Opens the receiver, or explains why this host cannot (no root,
    /// seccomp). Under `CI=true` that is a failure, never a skip: CI has
    /// root and io_uring.
    fn receiver_and_socket() -> Option<(UringReceiver, DiagSocket)> {
        let skip = |e: &dyn std::fmt::Display| {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "CI must run the io_uring tests: {e}"
            );
            eprintln!("SKIPPED: {e}");
        };
        let uring = match UringReceiver::new(4, 4) {
            Ok(u) => u,
            Err(e) => {
                skip(&e);
                return None;
            }
        };
        match DiagSocket::open(Duration::from_secs(1)) {
            Ok(s) => Some((uring, s)),
            Err(e) => {
                skip(&e);
                None
            }
        }
    }

    /// io_uring and recv(2) see the same sockets: a listener we hold and
    /// 300 connections to it (several datagrams' worth) are in the io_uring
    /// dump, and the counts agree within the sockets that came and went
    /// between the two dumps.
    #[test]
    fn io_uring_dump_sees_what_recv_sees() {
        let Some((mut uring, mut socket)) = receiver_and_socket() else {
            return;
        };
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let mut held = Vec::new();
        for _ in 0..300 {
            held.push(std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect"));
            held.push(listener.accept().expect("accept").0);
        }
        let request = requests()[0].clone();
        let deadline = Instant::now() + Duration::from_secs(5);
        // (source port, whether the source address is 127.0.0.1): on a busy
        // host, client sockets on other loopback addresses may share the
        // listener's port number.
        let mut ports_uring = Vec::new();
        let via_uring = uring
            .dump(&mut socket, &request, deadline, |p, _| {
                ports_uring.push((u16::from_be_bytes([p[4], p[5]]), p[8..12] == [127, 0, 0, 1]))
            })
            .expect("io_uring dump");
        let mut buf = vec![0u8; RECV_BUFFER_BYTES];
        let via_recv = socket.dump(&request, &mut buf, deadline, |_, _| {}).expect("recv dump");
        assert!(ports_uring.contains(&(port, true)), "our listener on {port} is missing");
        let ours = ports_uring.iter().filter(|&&p| p == (port, true)).count();
        assert_eq!(ours, 1 + 300, "listener plus the accepted side of each connection");
        assert!(via_uring.recv_calls > 1, "{via_uring:?}");
        assert_eq!(via_uring.sockets, ports_uring.len() as u64);
        assert!(
            via_uring.sockets.abs_diff(via_recv.sockets) <= 50,
            "{via_uring:?} vs {via_recv:?}"
        );
        assert_eq!(via_uring.stale_messages, 0);
    }

    /// A dump past its deadline fails with Timeout and takes every receive
    /// back from the kernel, so the ring can serve the next (new) socket.
    #[test]
    fn expired_deadline_times_out_and_takes_every_buffer_back() {
        let Some((mut uring, mut socket)) = receiver_and_socket() else {
            return;
        };
        let request = requests()[0].clone();
        let result = uring.dump(&mut socket, &request, Instant::now(), |_, _| {});
        assert!(matches!(result, Err(DumpError::Timeout(_))), "{result:?}");
        assert_eq!(uring.in_flight_count(), 0);
        assert!(!uring.abandoned);
        // The timed-out socket is poisoned (DumpError::poisons_socket); a new one works.
        let mut fresh = DiagSocket::open(Duration::from_secs(1)).expect("socket");
        let deadline = Instant::now() + Duration::from_secs(5);
        let summary = uring.dump(&mut fresh, &request, deadline, |_, _| {}).expect("dump");
        assert_eq!(summary.stale_messages, 0);
    }

    /// Several dumps in a row on one ring and socket: cancelled receives of
    /// one dump never steal the next dump's datagrams.
    #[test]
    fn consecutive_io_uring_dumps_stay_in_step() {
        let Some((mut uring, mut socket)) = receiver_and_socket() else {
            return;
        };
        let _listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        for request in requests().into_iter().cycle().take(6) {
            let deadline = Instant::now() + Duration::from_secs(5);
            let summary = uring.dump(&mut socket, &request, deadline, |_, _| {}).expect("dump");
            assert_eq!(summary.stale_messages, 0, "{summary:?}");
            assert!(!uring.abandoned);
            assert_eq!(uring.in_flight_count(), 0);
        }
    }
}
