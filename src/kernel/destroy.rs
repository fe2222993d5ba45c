//! The kernel's TCP destroy notifications (`ss -E`): a `NETLINK_SOCK_DIAG`
//! socket joined to the sock_diag destroy groups of its namespace receives
//! every TCP socket as the kernel destroys it, as an `inet_diag_msg` with
//! its final `tcp_info`. This is how a connection that opened and closed
//! between two polls still yields its close.
//!
//! The socket is drained at each poll of its namespace, so the messages
//! wait in its receive buffer meanwhile; a buffer that overflows loses
//! some (ENOBUFS on the next read), which is counted and left to the
//! poll's difference to close.

use std::io;
use std::os::fd::AsRawFd;

use netlink_sys::{protocols::NETLINK_SOCK_DIAG, Socket};

use crate::decode::{classify, NetlinkMessages, Reply};

/// `enum sknetlink_groups` of `linux/sock_diag.h`.
const SKNLGRP_INET_TCP_DESTROY: u32 = 1;
const SKNLGRP_INET6_TCP_DESTROY: u32 = 3;

/// The receive buffer asked for: about 16,000 closes of one namespace
/// between two polls (a destroy message is about 250 bytes, and the kernel
/// counts each skb's overhead too). Forced past `rmem_max` with
/// CAP_NET_ADMIN, which the daemon has; else whatever `rmem_max` allows.
const RECEIVE_BUFFER_BYTES: libc::c_int = 4 << 20;

/// What one drain read.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct DrainSummary {
    pub sockets: u64,
    /// Times the kernel said it had dropped messages (ENOBUFS).
    pub overruns: u64,
}

/// One namespace's destroy listener.
pub struct DestroyListener {
    socket: Socket,
}

impl DestroyListener {
    /// Joins the destroy groups in the calling thread's network namespace.
    /// Joining needs CAP_NET_ADMIN in that namespace's user namespace.
    pub fn open() -> io::Result<DestroyListener> {
        let mut socket = Socket::new(NETLINK_SOCK_DIAG)?;
        socket.bind_auto()?;
        socket.add_membership(SKNLGRP_INET_TCP_DESTROY)?;
        socket.add_membership(SKNLGRP_INET6_TCP_DESTROY)?;
        socket.set_non_blocking(true)?;
        if force_receive_buffer(&socket).is_err() {
            // Without the capability: as large as rmem_max allows.
            let _ = socket.set_rx_buf_sz(RECEIVE_BUFFER_BYTES);
        }
        Ok(DestroyListener { socket })
    }

    /// Reads every waiting notification and calls `on_socket(payload)` for
    /// each destroyed socket's `inet_diag_msg` (and its attributes).
    pub fn drain(&mut self, buf: &mut [u8], mut on_socket: impl FnMut(&[u8])) -> io::Result<DrainSummary> {
        let mut summary = DrainSummary::default();
        loop {
            let mut space = &mut buf[..];
            let n = match self.socket.recv(&mut space, 0) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(summary),
                Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => {
                    summary.overruns += 1;
                    continue;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            let datagram = &buf[..n.min(buf.len())];
            for msg in NetlinkMessages::new(datagram) {
                // A malformed datagram ends this one's reading, not the drain.
                let Ok(msg) = msg else { break };
                if let Reply::Socket(payload) = classify(&msg) {
                    summary.sockets += 1;
                    on_socket(payload);
                }
            }
        }
    }
}

fn force_receive_buffer(socket: &Socket) -> io::Result<()> {
    let size = RECEIVE_BUFFER_BYTES;
    // SAFETY: `size` is a c_int that outlives the call, the length given is
    // its exact size, and the fd is owned by `socket`.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUFFORCE,
            (&size as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}
