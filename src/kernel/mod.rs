//! Kernel: the `NETLINK_SOCK_DIAG` socket and the dump conversation.
//!
//! Owns sending `inet_diag_req_v2` requests and receiving the multi-part
//! reply safely (truncation, sequence numbers, `NLMSG_DONE` errno,
//! `NLMSG_ERROR`, `NLM_F_DUMP_INTR`, timeouts). It hands each socket's bytes
//! to a callback and must not decode them (that is `decode`) nor know which
//! namespace it is in (that is `netns`). It counts its own work into the
//! netlink metrics (`DumpSummary::report_to`, `DumpError::report_to`).
//! `destroy` listens to the kernel's TCP destroy notifications.

pub mod destroy;
pub mod filter;
pub mod request;
pub mod socket;
pub mod uring;

pub use filter::{check_with_kernel, parse_filter, Bytecode, FilterCheckError, FilterError};
pub use request::{parse_states, DumpRequest, ALL_TCP_STATES};
pub(crate) use socket::set_recv_timeout;
pub use socket::{DatagramTap, DiagSocket, DumpError, DumpSummary, RECV_BUFFER_BYTES};
