//! xtcp2: the kernel's per-socket TCP state, from every network namespace,
//! streamed to files, sockets and HTTP endpoints.
//!
//! The path a socket's data takes, one module per stage:
//!
//! | stage | module | owns |
//! |---|---|---|
//! | configuration | [`config`] | flags (with Go spellings), validation |
//! | namespaces | [`netns`] | discovery, entering, one socket per namespace |
//! | kernel | [`kernel`] | the `NETLINK_SOCK_DIAG` socket and dump protocol |
//! | decode | [`decode`] | netlink bytes → [`record::Record`], offline captures |
//! | collect | [`collect`], [`poll`] | the poll loop, parallel dumps, stamping |
//! | batch | [`batch`] | envelopes and the bounded delivery queue |
//! | format | [`format`] | jsonl, csv, tsv, protobufList, msgpack |
//! | sink | [`sink`] | null, stdout, file, tcp, udp, unix, http |
//!
//! Beside the data path, [`observe`] holds metrics, the HTTP endpoints,
//! profiling and the capability check. [`shutdown`] is the stop signal every
//! long-running loop takes as an argument.

pub mod batch;
pub mod clock;
pub mod collect;
pub mod config;
pub mod daemon;
pub mod decode;
pub mod format;
pub mod https_client;
pub mod kernel;
pub mod netns;
pub mod observe;
pub mod poll;
pub mod profile;
pub mod record;
pub mod shutdown;
pub mod sink;
