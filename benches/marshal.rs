//! Marshalling throughput per output format on real 1000-socket captures,
//! and what encoding allocates.
//!
//! The records of each capture are decoded once (every decoder on, stamped
//! like the collector stamps them), then encoded again and again into one
//! reused envelope buffer for a fixed time, one thread. Rates are per
//! second of this thread's CPU time (CLOCK_THREAD_CPUTIME_ID), so other
//! work on a shared machine does not lower them; wall time is the budget. Printed per format
//! and capture: records per second, bytes per record, heap allocations per
//! record (counted by a wrapper around the system allocator installed in
//! this binary only). Encoding must not allocate per record: the bench
//! exits non-zero if it does. Targets (one core): protobufList above
//! 1 M records/s, jsonl above 0.5 M records/s; the verdict is printed.
//!
//! Full run: `cargo bench --bench marshal` (about 1 s per format and capture).
//! Quick run for CI: `XTCP2_BENCH_QUICK=1 cargo bench --bench marshal`
//! or `cargo bench --bench marshal -- --quick`; name formats to measure
//! only those (`cargo bench --bench marshal -- protobufList`). Records are
//! written in our schema; `-- --record-schema xtcp_flat_record.v1`
//! measures the Go daemon's instead.
//! Fixtures: `../shared/fixtures/inet_diag` or `XTCP2_FIXTURES`.

use std::hint::black_box;
use std::path::Path;
use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use xtcp2::decode::capture::for_each_pcap_reply;
use xtcp2::decode::{Deserializers, SocketDecoder};
use xtcp2::format::{Format, StreamFormat};
use xtcp2::record::{Record, RecordSchema};

mod support;

use support::{fixtures_dir, CountingAllocator, ALLOCATIONS};

#[global_allocator]
static GLOBAL: CountingAllocator = CountingAllocator;

/// The 1000-socket captures: three kernels' `tcp_info` lengths.
const CAPTURES: &[&str] = &[
    "6_6_44/tcp_1000_sockets.pcap",
    "6_10_3/6_10_3_tcp_1000_sockets.pcap",
    "5_15_164/5_15_164_tcp_1000_sockets.pcap",
];

/// Targets in records per second on one core, by format.
fn target(format: Format) -> Option<f64> {
    match format {
        Format::ProtobufList => Some(1_000_000.0),
        Format::Jsonl => Some(500_000.0),
        Format::Csv | Format::Tsv | Format::Msgpack | Format::ProtoJson | Format::ProtoText => None,
    }
}

/// Decodes every socket of a capture and stamps it as the collector does.
fn load(dir: &Path, name: &str) -> Result<Vec<Record>, String> {
    let data = std::fs::read(dir.join(name)).map_err(|e| format!("{name}: {e}"))?;
    let mut decoder = SocketDecoder::new(Deserializers::parse("all").map_err(|e| e.to_string())?);
    let hostname: Arc<str> = Arc::from("bench-host.example.net");
    let mut records = Vec::new();
    for_each_pcap_reply(&data, |origin, payload| {
        if let (Some(record), _) = decoder.decode(payload) {
            record.timestamp_ns = origin.timestamp_ns;
            record.hostname = Some(hostname.clone());
            record.poll_seq = Some(12345);
            record.netns_inode = Some(4026531840);
            records.push(record.clone());
        }
    })
    .map_err(|e| format!("{name}: {e}"))?;
    if records.is_empty() {
        return Err(format!("{name}: no sockets decoded"));
    }
    Ok(records)
}

struct Timing {
    records: u64,
    bytes: u64,
    /// CPU time of the encoding thread.
    elapsed: Duration,
    allocations: u64,
}

/// CPU time consumed by the calling thread.
fn thread_cpu_time() -> Duration {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is a valid timespec for the call to fill; the clock id
    // is a constant Linux supports.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime(CLOCK_THREAD_CPUTIME_ID)");
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// Encodes `records` over and over for `budget` into one reused buffer.
fn time_format(stream: &StreamFormat, records: &[Record], budget: Duration) -> Timing {
    let mut encoder = stream.encoder();
    let mut out = Vec::new();
    // Warm-up pass: sizes the buffer, so the timed passes reuse it.
    for r in records {
        encoder.encode(r, &mut out);
    }
    out.reserve(out.len());
    let (mut encoded, mut bytes) = (0u64, 0u64);
    let allocations_before = ALLOCATIONS.load(Ordering::Relaxed);
    let cpu_before = thread_cpu_time();
    let started = Instant::now();
    while started.elapsed() < budget {
        out.clear();
        for r in records {
            encoder.encode(black_box(r), &mut out);
        }
        encoded += records.len() as u64;
        bytes += out.len() as u64;
        black_box(&out);
    }
    Timing {
        records: encoded,
        bytes,
        elapsed: thread_cpu_time() - cpu_before,
        allocations: ALLOCATIONS.load(Ordering::Relaxed) - allocations_before,
    }
}

fn main() -> ExitCode {
    let quick =
        std::env::var_os("XTCP2_BENCH_QUICK").is_some_and(|v| v != "0") || std::env::args().any(|a| a == "--quick");
    let budget = if quick {
        Duration::from_millis(100)
    } else {
        Duration::from_secs(1)
    };
    let Some(dir) = fixtures_dir() else {
        return ExitCode::SUCCESS;
    };
    let mut captures = Vec::new();
    for name in CAPTURES {
        match load(&dir, name) {
            Ok(records) => captures.push((*name, records)),
            Err(e) => {
                eprintln!("bench marshal: {e}");
                return ExitCode::FAILURE;
            }
        }
    }
    let args: Vec<String> = std::env::args().skip(1).collect();
    let schema = match args.iter().position(|a| a == "--record-schema") {
        Some(i) => match args.get(i + 1).map(|s| RecordSchema::parse(s)) {
            Some(Ok(schema)) => schema,
            _ => {
                eprintln!("bench marshal: --record-schema takes xtcp2 or xtcp_flat_record.v1");
                return ExitCode::FAILURE;
            }
        },
        None => RecordSchema::Xtcp2,
    };
    println!(
        "marshal bench ({} mode, {budget:?} per format and capture, every decoder's fields, one thread, record schema {schema})",
        if quick { "quick" } else { "full" }
    );
    // `-- jsonl protobufList` measures only the formats named.
    let only: Vec<String> = args
        .iter()
        .filter(|a| !a.starts_with('-') && RecordSchema::parse(a).is_err())
        .cloned()
        .collect();
    let mut failed = false;
    for format in Format::ALL {
        if !only.is_empty() && !only.iter().any(|o| o == format.name()) {
            continue;
        }
        let stream = StreamFormat::in_schema(format.name(), schema, &[]).expect("every format builds");
        let (mut records, mut bytes, mut elapsed, mut allocations) = (0u64, 0u64, Duration::ZERO, 0u64);
        for (name, set) in &captures {
            let t = time_format(&stream, set, budget);
            println!(
                "{:>13}  {:<42} {:>5} records  {:>6.2} M records/s (CPU)  {:>5.0} B/record  {:.3} allocations/record",
                format.name(),
                name,
                set.len(),
                t.records as f64 / t.elapsed.as_secs_f64() / 1e6,
                t.bytes as f64 / t.records as f64,
                t.allocations as f64 / t.records as f64
            );
            records += t.records;
            bytes += t.bytes;
            elapsed += t.elapsed;
            allocations += t.allocations;
        }
        let per_second = records as f64 / elapsed.as_secs_f64();
        let verdict = match target(format) {
            Some(t) if per_second >= t => format!("meets the target of {:.1} M records/s", t / 1e6),
            Some(t) => format!("is BELOW the target of {:.1} M records/s", t / 1e6),
            None => "no target".to_string(),
        };
        println!(
            "{:>13}  overall: {:.2} M records/s of CPU time, {:.0} B/record; {verdict}",
            format.name(),
            per_second / 1e6,
            bytes as f64 / records as f64
        );
        if allocations != 0 {
            println!(
                "{:>13}  FAILED: encoding allocated {allocations} times; it must not allocate per record",
                format.name()
            );
            failed = true;
        }
    }
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
