//! xtcp2: the kernel's per-socket TCP state, from every network namespace,
//! streamed to files, sockets and HTTP endpoints.
//!
//! The path a socket's data takes, one module per stage, each importing
//! only the stages below it:
//!
//! | layer | module | owns |
//! |---|---|---|
//! | wiring | [`daemon`], [`poll`] | the runtime, the poll loop, parallel dumps |
//! | configuration | [`config`] | flags (with Go spellings) → a typed [`config::Config`] |
//! | collect | [`collect`] | one namespace's dump → stamped records → the envelope builder |
//! | attribution | [`attribute`] | which container, pod or unit owns a socket (cgroup path, Docker Engine), the uplink NICs |
//! | namespaces | [`netns`] | discovery, entering, one socket per namespace |
//! | kernel | [`kernel`] | the `NETLINK_SOCK_DIAG` socket and dump protocol |
//! | decode | [`decode`] | netlink bytes → [`record::Record`], offline captures |
//! | sink | [`sink`] | the destination registry: null, stdout, file, tcp, udp, unix, http, ... |
//! | batch | [`batch`] | envelopes and the bounded delivery queue |
//! | format | [`format`] | the format registry: jsonl, csv, tsv, protobufList, msgpack, protoJson, protoText |
//! | record | [`record`] | the one flat record, every field declared once; the record schemas the formats write (ours, and the Go daemon's through one mapping table) |
//!
//! So a record goes record → format → batch → sink, and configuration sits
//! on top of every stage (it builds each stage's typed settings).
//!
//! Beside the data path: [`metrics`] (every metric, declared once; each
//! stage writes to it, it imports no stage), [`observe`] (the HTTP
//! endpoints, readiness, the capability check), [`profile`] (CPU and heap profiles,
//! Pyroscope), [`https_client`] (the TLS client the http destination and
//! Pyroscope share), [`shutdown`] (the stop signal every long-running loop
//! takes as an argument), [`log_throttle`] and [`clock`].
//!
//! Extension points (each is one new module plus one line):
//! - a destination: a module in `sink/` implementing
//!   [`sink::DestinationKind`], a line in `sink::destinations!`;
//! - a format: a module in `format/` with a [`format::FormatSpec`], a line
//!   in `format::formats!`;
//! - a record field: a line in `record/fields.rs` (and, when the Go
//!   daemon's record has a place for it, that line of `record/go_v1.rs`);
//! - a metric: an entry in `metrics/mod.rs`'s `define_metrics!`;
//! - a flag: a field in the clap struct of its group in `config/`, and the
//!   value in that group's typed settings.

pub mod attribute;
pub mod batch;
pub mod clock;
pub mod collect;
pub mod config;
pub mod control;
pub mod daemon;
pub mod decode;
pub mod format;
pub mod grpc;
pub mod https_client;
pub mod kernel;
pub mod log_throttle;
pub mod metrics;
pub mod netns;
pub mod observe;
pub mod poll;
pub mod profile;
pub mod record;
pub mod shutdown;
pub mod sink;
pub mod tap;
pub mod track;
