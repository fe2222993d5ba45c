//! What every integration test shares, so that each exists once:
//!
//! - `prerequisites`: the one check of what a test needs (root, network
//!   namespaces, a tool, a Python module, the fixture captures), which
//!   skips outside CI and fails under `CI=true`; and the fixture lookup.
//! - `daemon`: the one way to run the built binary, to completion or as a
//!   daemon that is always reaped.
//! - `http`: the one reader of HTTP/1.1 message heads, for the test
//!   clients and receivers.
//! - `logs`: the one reader of the daemon's `key=value` log fields.
//! - `python`: the one way to run Python (CI's venv), a helper script's
//!   JSON answer, and chdb (ClickHouse) queries.
//!
//! Each test file includes it with `mod support;`. The domain helpers
//! beside it (`sinks_support`: records, decoders and receivers;
//! `observability_support`: HTTP and pprof; `netns_support`: namespaces;
//! `common/`: `ss` text and a second decoder) build on it and must not
//! repeat it. The benchmarks include `prerequisites.rs` too.

// Each test binary uses a different part, so parts (and their re-exports)
// go unused in every one of them.
#![allow(dead_code, unused_imports)]

mod daemon;
mod http;
mod logs;
mod prerequisites;
mod python;

pub use daemon::{Daemon, Xtcp2, XTCP2};
pub use http::{content_length, header, read_head, Headers};
pub use logs::{log_line, number_field};
pub use prerequisites::{
    find_tool, fixtures_dir, require, require_python_module, require_tool, run_tool, under_ci, upstream_dir, Need,
    DAEMON_CAPABILITIES,
};
pub use python::{clickhouse, python, run_python_json, run_python_json_with_env};

/// `ss` state names by kernel state number (include/net/tcp_states.h),
/// written here rather than taken from the code under test.
pub const STATE_NAMES: [&str; 14] = [
    "UNKNOWN",
    "ESTAB",
    "SYN-SENT",
    "SYN-RECV",
    "FIN-WAIT-1",
    "FIN-WAIT-2",
    "TIME-WAIT",
    "UNCONN",
    "CLOSE-WAIT",
    "LAST-ACK",
    "LISTEN",
    "CLOSING",
    "NEW-SYN-RECV",
    "BOUND-INACTIVE",
];
