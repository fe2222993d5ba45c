//! Decoder throughput on real 1000-socket captures, and what it allocates.
//!
//! The socket payloads of each capture are extracted once into one buffer
//! (as they sit in a receive buffer), then decoded again and again with the
//! default attribute decoders for a fixed time. Printed per capture and
//! overall: sockets per second for decode alone and for decode + JSON Lines
//! encoding, and heap allocations per socket, counted by a wrapper around
//! the system allocator installed in this binary only. Decoding must
//! allocate nothing: the bench exits non-zero if it does.
//!
//! Full run: `cargo bench --bench decode` (about 2 s per capture and mode).
//! Quick run for CI: `XTCP2_BENCH_QUICK=1 cargo bench --bench decode`
//! or `cargo bench --bench decode -- --quick` (about 1-2 s in all); run by
//! `cargo test --all-targets` (no `--bench` argument) it is quick as well;
//! `-- --decode-only` skips the JSON Lines pass (for profiling).
//! Fixtures: `../shared/fixtures/inet_diag` or `XTCP2_FIXTURES`.

use std::hint::black_box;
use std::path::Path;
use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use xtcp2::decode::capture::for_each_pcap_reply;
use xtcp2::decode::{Deserializers, SocketDecoder};
use xtcp2::format::encoder_for;

mod support;

use support::{fixtures_dir, CountingAllocator, ALLOCATIONS};

#[global_allocator]
static GLOBAL: CountingAllocator = CountingAllocator;

/// The captures with about 1000 sockets per run (6.1's is zero-filled).
const CAPTURES: [&str; 5] = [
    "5_4_281/5_4_281_tcp_1000_sockets.pcap",
    "5_15_164/5_15_164_tcp_1000_sockets.pcap",
    "6_6_44/tcp_1000_sockets.pcap",
    "6_10_3/6_10_3_tcp_1000_sockets.pcap",
    "6_10_3/6_10_3_tcp_1000_sockets_sleep1ms.pcap",
];

/// Decode throughput the project aims for (sockets per second, one core).
const TARGET_SOCKETS_PER_SECOND: f64 = 5_000_000.0;

/// The socket payloads of one capture, back to back in one buffer.
struct Payloads {
    name: String,
    bytes: Vec<u8>,
    ranges: Vec<(usize, usize)>,
}

fn load(dir: &Path, name: &str) -> Result<Payloads, String> {
    let data = std::fs::read(dir.join(name)).map_err(|e| format!("{name}: {e}"))?;
    let mut bytes = Vec::new();
    let mut ranges = Vec::new();
    for_each_pcap_reply(&data, |_, payload| {
        ranges.push((bytes.len(), bytes.len() + payload.len()));
        bytes.extend_from_slice(payload);
    })
    .map_err(|e| format!("{name}: {e}"))?;
    Ok(Payloads {
        name: name.to_string(),
        bytes,
        ranges,
    })
}

/// Result of timing one loop.
struct Timing {
    sockets: u64,
    elapsed: Duration,
    allocations: u64,
}

impl Timing {
    fn per_second(&self) -> f64 {
        self.sockets as f64 / self.elapsed.as_secs_f64()
    }
    fn allocations_per_socket(&self) -> f64 {
        self.allocations as f64 / self.sockets as f64
    }
}

/// Decodes every payload repeatedly for at least `budget`.
fn time_decode(p: &Payloads, budget: Duration) -> Timing {
    let mut decoder = SocketDecoder::new(Deserializers::default_set());
    // Warm up: first touches of the record and the payloads.
    for &(s, e) in &p.ranges {
        black_box(decoder.decode(&p.bytes[s..e]).0.map(|r| r.tcpi_rtt));
    }
    let allocations_before = ALLOCATIONS.load(Ordering::Relaxed);
    let started = Instant::now();
    let mut sockets = 0u64;
    while started.elapsed() < budget {
        for &(s, e) in &p.ranges {
            let (record, err) = decoder.decode(black_box(&p.bytes[s..e]));
            black_box((record.map(|r| r.tcpi_rtt), err));
        }
        sockets += p.ranges.len() as u64;
    }
    let elapsed = started.elapsed();
    Timing {
        sockets,
        elapsed,
        allocations: ALLOCATIONS.load(Ordering::Relaxed) - allocations_before,
    }
}

/// Decodes and encodes as JSON Lines into a reused buffer, the way an
/// envelope is filled.
fn time_decode_jsonl(p: &Payloads, budget: Duration) -> Timing {
    let mut decoder = SocketDecoder::new(Deserializers::default_set());
    let mut encoder = encoder_for("jsonl", &[]).expect("jsonl encoder");
    let mut out = Vec::with_capacity(4 << 20);
    let mut encode_all = |out: &mut Vec<u8>| {
        out.clear();
        for &(s, e) in &p.ranges {
            if let (Some(record), _) = decoder.decode(black_box(&p.bytes[s..e])) {
                encoder.encode(record, out);
            }
        }
        black_box(out.len());
    };
    encode_all(&mut out);
    let allocations_before = ALLOCATIONS.load(Ordering::Relaxed);
    let started = Instant::now();
    let mut sockets = 0u64;
    while started.elapsed() < budget {
        encode_all(&mut out);
        sockets += p.ranges.len() as u64;
    }
    let elapsed = started.elapsed();
    Timing {
        sockets,
        elapsed,
        allocations: ALLOCATIONS.load(Ordering::Relaxed) - allocations_before,
    }
}

fn main() -> ExitCode {
    // `cargo bench` passes --bench; `cargo test --all-targets` runs this
    // binary without it, as a smoke test, so that gets the quick mode too.
    let quick = std::env::var_os("XTCP2_BENCH_QUICK").is_some_and(|v| v != "0")
        || std::env::args().any(|a| a == "--quick")
        || !std::env::args().any(|a| a == "--bench");
    // For profiling one mode: `-- --decode-only`.
    let decode_only = std::env::args().any(|a| a == "--decode-only");
    let budget = if quick {
        Duration::from_millis(120)
    } else {
        Duration::from_secs(2)
    };
    let Some(dir) = fixtures_dir() else {
        return ExitCode::SUCCESS;
    };
    let mut captures = Vec::new();
    for name in CAPTURES {
        match load(&dir, name) {
            Ok(p) => captures.push(p),
            Err(e) => {
                eprintln!("bench decode: {e}");
                return ExitCode::FAILURE;
            }
        }
    }
    println!(
        "decode bench ({} mode, {:?} per capture and mode, default deserializers, one thread)",
        if quick { "quick" } else { "full" },
        budget
    );
    let mut failed = false;
    for (mode, timer) in [
        ("decode", time_decode as fn(&Payloads, Duration) -> Timing),
        ("decode+jsonl", time_decode_jsonl),
    ] {
        if decode_only && mode != "decode" {
            continue;
        }
        let (mut sockets, mut elapsed, mut allocations) = (0u64, Duration::ZERO, 0u64);
        for p in &captures {
            let t = timer(p, budget);
            let bytes_per_socket = p.bytes.len() as f64 / p.ranges.len() as f64;
            println!(
                "{mode:>13}  {:<45} {:>5} sockets ({bytes_per_socket:>3.0} B each)  {:>7.2} M sockets/s  {:.3} allocations/socket",
                p.name,
                p.ranges.len(),
                t.per_second() / 1e6,
                t.allocations_per_socket()
            );
            sockets += t.sockets;
            elapsed += t.elapsed;
            allocations += t.allocations;
        }
        let overall = Timing {
            sockets,
            elapsed,
            allocations,
        };
        println!(
            "{mode:>13}  overall: {:.2} M sockets/s over {sockets} sockets, {:.3} allocations/socket",
            overall.per_second() / 1e6,
            overall.allocations_per_socket()
        );
        if mode == "decode" {
            let verdict = if cfg!(debug_assertions) {
                "(debug build: not comparable with)"
            } else if overall.per_second() >= TARGET_SOCKETS_PER_SECOND {
                "meets"
            } else {
                "is BELOW"
            };
            println!(
                "{mode:>13}  {verdict} the target of {:.0} M sockets/s",
                TARGET_SOCKETS_PER_SECOND / 1e6
            );
            if allocations != 0 {
                println!("{mode:>13}  FAILED: decoding allocated {allocations} times; it must allocate nothing");
                failed = true;
            }
        }
    }
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
