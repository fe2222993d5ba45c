//! Delivery guarantees when the destination misbehaves: down at start,
//! gone mid-run, back again, stalled, dead at shutdown. Collection never
//! waits, the queue never exceeds its bound, what is lost is exactly what
//! the drop counter says, and nothing arrives twice.
//!
//! The in-process tests push envelopes into the real queue and run the
//! real delivery task against a real TCP receiver the test starts and
//! stops, phase by phase, so every outcome is deterministic. The last test
//! does the same to the real binary.

mod support;

use std::collections::BTreeSet;
use std::io::Read;
use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use support::{require, Need, Xtcp2, DAEMON_CAPABILITIES};
use xtcp2::batch::{Envelope, EnvelopeQueue};
use xtcp2::format::StreamFormat;
use xtcp2::metrics::{KindLabel, Metrics};
use xtcp2::record::Record;
use xtcp2::sink::{deliver, DeliveryPolicy, DeliveryReport, Sink};

const QUEUE_CAPACITY: usize = 4;
const ROWS_PER_ENVELOPE: u64 = 10;

/// Fast retries so the phases take milliseconds, not the production 5 s cap.
fn fast_policy() -> DeliveryPolicy {
    DeliveryPolicy {
        retry_initial: Duration::from_millis(5),
        retry_max: Duration::from_millis(40),
        ..DeliveryPolicy::new(Duration::from_millis(500))
    }
}

/// A jsonl envelope whose records carry poll_seq `first..first+ROWS_PER_ENVELOPE`.
fn envelope(first: u64) -> Envelope {
    let records: Vec<Record> = (first..first + ROWS_PER_ENVELOPE)
        .map(|seq| Record {
            poll_seq: Some(seq),
            idiag_sport: Some(443),
            ..Record::default()
        })
        .collect();
    let mut encoder = StreamFormat::new("jsonl", &[]).unwrap().encoder();
    Envelope::from_records(encoder.as_mut(), &records, Arc::from("h"), first)
}

/// A TCP receiver on a fixed port that can go away and come back. It
/// collects every complete jsonl line. Going away is graceful, as a server
/// restart is: it stops accepting, sends FIN, and reads what the sender
/// had already written until the sender closes too. (A receiver that
/// vanishes with unread bytes in its kernel buffer loses data TCP already
/// acknowledged: no sender can count that.)
struct Receiver {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<()>,
}

impl Receiver {
    fn start(addr: SocketAddr, lines: Arc<std::sync::Mutex<Vec<Vec<u8>>>>) -> Receiver {
        // std sets SO_REUSEADDR, so the port is free again at once after a stop.
        let listener = TcpListener::bind(addr).unwrap();
        listener.set_nonblocking(true).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let stop = stop.clone();
            let lines = lines.clone();
            std::thread::spawn(move || {
                let mut listener = Some(listener);
                let mut connections: Vec<(std::net::TcpStream, Vec<u8>, bool)> = Vec::new();
                let mut stopping_since: Option<Instant> = None;
                loop {
                    if stopping_since.is_none() && stop.load(Ordering::SeqCst) {
                        stopping_since = Some(Instant::now());
                        listener = None;
                        for (c, _, _) in &connections {
                            let _ = c.shutdown(std::net::Shutdown::Write);
                        }
                    }
                    if let Some(l) = &listener {
                        if let Ok((c, _)) = l.accept() {
                            c.set_nonblocking(true).unwrap();
                            connections.push((c, Vec::new(), false));
                        }
                    }
                    let mut chunk = vec![0u8; 1 << 16];
                    for (c, buf, eof) in &mut connections {
                        loop {
                            match c.read(&mut chunk) {
                                Ok(0) => {
                                    *eof = true;
                                    break;
                                }
                                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                                Err(_) => {
                                    *eof = true;
                                    break;
                                }
                            }
                        }
                        let mut start = 0;
                        let mut got = lines.lock().unwrap();
                        while let Some(len) = buf[start..].iter().position(|&b| b == b'\n') {
                            got.push(buf[start..start + len + 1].to_vec());
                            start += len + 1;
                        }
                        drop(got);
                        buf.drain(..start);
                    }
                    if let Some(since) = stopping_since {
                        let all_closed = connections.iter().all(|(_, _, eof)| *eof);
                        if all_closed || since.elapsed() > Duration::from_secs(5) {
                            return;
                        }
                    }
                    std::thread::sleep(Duration::from_millis(2));
                }
            })
        };
        Receiver { stop, thread }
    }

    /// Goes away gracefully (see the type's doc).
    fn stop(self) {
        self.stop.store(true, Ordering::SeqCst);
        self.thread.join().unwrap();
    }
}

/// The poll_seq of every line received.
fn seqs(lines: &std::sync::Mutex<Vec<Vec<u8>>>) -> Vec<u64> {
    lines
        .lock()
        .unwrap()
        .iter()
        .map(|l| {
            serde_json::from_slice::<serde_json::Value>(l).unwrap()["poll_seq"]
                .as_u64()
                .unwrap()
        })
        .collect()
}

/// A port nobody listens on (yet).
fn free_port() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap()
}

/// Waits until `count` lines arrived.
fn wait_for(lines: &std::sync::Mutex<Vec<Vec<u8>>>, count: usize, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while lines.lock().unwrap().len() < count {
        assert!(
            Instant::now() < deadline,
            "{what}: {} of {count} records arrived",
            lines.lock().unwrap().len()
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Polls `cond` until true or 10 s pass.
fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

struct Harness {
    runtime: tokio::runtime::Runtime,
    queue: Arc<EnvelopeQueue>,
    metrics: Arc<Metrics>,
    delivery: tokio::task::JoinHandle<DeliveryReport>,
}

fn harness(dest: &str, policy: DeliveryPolicy) -> Harness {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let metrics = Arc::new(Metrics::new());
    let queue = Arc::new(EnvelopeQueue::new(QUEUE_CAPACITY, metrics.clone()));
    let format = StreamFormat::new("jsonl", &[]).unwrap();
    let sink = runtime.block_on(Sink::open(dest, &format)).unwrap();
    let delivery = runtime.spawn(deliver(sink, queue.clone(), metrics.clone(), policy));
    Harness {
        runtime,
        queue,
        metrics,
        delivery,
    }
}

impl Harness {
    /// Pushes envelopes like a collector would; returns the first seq of each.
    fn push(&self, envelopes: u64, next_seq: &mut u64) -> Vec<u64> {
        let mut firsts = Vec::new();
        for _ in 0..envelopes {
            let started = Instant::now();
            self.queue.push(envelope(*next_seq));
            // Collection never waits for the destination.
            assert!(
                started.elapsed() < Duration::from_millis(50),
                "push blocked for {:?}",
                started.elapsed()
            );
            assert!(self.queue.len() <= QUEUE_CAPACITY);
            firsts.push(*next_seq);
            *next_seq += ROWS_PER_ENVELOPE;
        }
        firsts
    }

    /// Closes the queue (shutdown) and waits for delivery to end.
    fn finish(self) -> (DeliveryReport, Arc<Metrics>, Arc<EnvelopeQueue>) {
        let Harness {
            runtime,
            queue,
            metrics,
            delivery,
        } = self;
        queue.close();
        let report = runtime.block_on(delivery).unwrap();
        (report, metrics, queue)
    }
}

/// Down at start, up, gone mid-run, back: every record either arrives
/// once or is counted as dropped, the dropped ones are the oldest of each
/// outage, and the queue never holds more than its bound.
#[test]
fn tcp_receiver_down_up_gone_back() {
    let addr = free_port();
    let h = harness(&format!("tcp:{addr}"), fast_policy());
    let lines = Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut next_seq = 0;

    // Phase A: nobody listens. 10 envelopes; at most the queue's 4 plus the
    // one being retried survive.
    let outage_a = h.push(10, &mut next_seq);
    std::thread::sleep(Duration::from_millis(100));
    assert!(
        h.metrics
            .destination
            .failures
            .get_or_create(&KindLabel { kind: "connect" })
            .get()
            > 0
    );

    // Phase B: the receiver comes up; what survived is delivered.
    let receiver = Receiver::start(addr, lines.clone());
    eventually("the queue drains after the receiver came up", || h.queue.is_empty());
    let dropped_a = h.metrics.destination.dropped_rows.get();
    let survived_a = 10 * ROWS_PER_ENVELOPE - dropped_a;
    assert!(
        dropped_a >= 5 * ROWS_PER_ENVELOPE,
        "only {dropped_a} rows dropped during outage A"
    );
    wait_for(&lines, survived_a as usize, "after outage A");
    // Drop-oldest: the survivors are the newest envelopes of the outage.
    let newest_a: BTreeSet<u64> = outage_a[10 - (survived_a / ROWS_PER_ENVELOPE) as usize..]
        .iter()
        .flat_map(|&f| f..f + ROWS_PER_ENVELOPE)
        .collect();
    assert_eq!(seqs(&lines).into_iter().collect::<BTreeSet<_>>(), newest_a);

    // Healthy: 3 more envelopes all arrive.
    h.push(3, &mut next_seq);
    wait_for(&lines, (survived_a + 30) as usize, "while healthy");

    // Phase C: the receiver goes away (closes its connection and listener).
    receiver.stop();
    h.push(8, &mut next_seq);
    std::thread::sleep(Duration::from_millis(100));

    // Phase D: back again.
    let receiver = Receiver::start(addr, lines.clone());
    eventually("the queue drains after the receiver came back", || h.queue.is_empty());
    let dropped_total = h.metrics.destination.dropped_rows.get();
    assert!(dropped_total > dropped_a, "outage C dropped nothing");
    wait_for(&lines, (next_seq - dropped_total) as usize, "after outage C");
    let (report, metrics, queue) = h.finish();
    receiver.stop();

    let got = seqs(&lines);
    let unique: BTreeSet<u64> = got.iter().copied().collect();
    assert_eq!(unique.len(), got.len(), "a record arrived twice");
    assert_eq!(
        got.len() as u64 + metrics.destination.dropped_rows.get(),
        next_seq,
        "arrived + dropped != produced"
    );
    assert_eq!(report.rows_sent, got.len() as u64);
    assert!(report.failures > 0);
    assert!(queue.peak_len() <= QUEUE_CAPACITY, "queue reached {}", queue.peak_len());
    assert_eq!(metrics.envelope.rows_flushed.get(), next_seq);
}

/// A receiver that accepts but never reads: writes stall, each send times
/// out, collection goes on, the queue stays bounded and drops the oldest.
#[test]
fn stalled_receiver_times_out_and_drops_oldest() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let held = std::thread::spawn(move || {
        // Accept connections and hold them unread until the test ends.
        listener.set_nonblocking(true).unwrap();
        let mut held = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok((s, _)) = listener.accept() {
                held.push(s);
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    });
    let policy = DeliveryPolicy {
        retry_initial: Duration::from_millis(5),
        retry_max: Duration::from_millis(20),
        shutdown_attempts: 1,
        ..DeliveryPolicy::new(Duration::from_millis(100))
    };
    let h = harness(&format!("tcp:{addr}"), policy);
    // Big envelopes fill the socket buffers quickly.
    let mut next_seq = 0;
    for _ in 0..40 {
        let records: Vec<Record> = (0..2000)
            .map(|i| Record {
                poll_seq: Some(next_seq + i),
                label: Some(Arc::from("x".repeat(200).as_str())),
                ..Record::default()
            })
            .collect();
        let mut encoder = StreamFormat::new("jsonl", &[]).unwrap().encoder();
        // Encoded before the clock starts: only the push must not wait for
        // the stalled receiver (encoding 2000 records took over 50 ms on a
        // loaded machine and failed CI).
        let envelope = Envelope::from_records(encoder.as_mut(), &records, Arc::from("h"), 1);
        let started = Instant::now();
        h.queue.push(envelope);
        assert!(started.elapsed() < Duration::from_millis(50));
        next_seq += 2000;
        std::thread::sleep(Duration::from_millis(10));
    }
    eventually("a send timed out", || {
        h.metrics
            .destination
            .failures
            .get_or_create(&KindLabel { kind: "timeout" })
            .get()
            > 0
    });
    let (report, metrics, queue) = h.finish();
    assert!(queue.peak_len() <= QUEUE_CAPACITY);
    assert!(metrics.destination.dropped_rows.get() > 0, "nothing was dropped");
    assert_eq!(
        report.rows_sent + metrics.destination.dropped_rows.get(),
        next_seq,
        "every row is either sent or counted as dropped"
    );
    held.join().unwrap();
}

/// Shutdown with the destination dead: delivery gives up after its
/// bounded attempts, counts everything left as dropped, and ends quickly.
#[test]
fn shutdown_with_dead_destination_is_bounded_and_counted() {
    let addr = free_port();
    let h = harness(&format!("tcp:{addr}"), fast_policy());
    let mut next_seq = 0;
    h.push(3, &mut next_seq);
    let started = Instant::now();
    let (report, metrics, queue) = h.finish();
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "shutdown took {:?}",
        started.elapsed()
    );
    assert_eq!(report.rows_sent, 0);
    assert_eq!(metrics.destination.dropped_rows.get(), 3 * ROWS_PER_ENVELOPE);
    assert!(queue.is_empty());
}

/// Shutdown with a healthy destination flushes everything still queued.
#[test]
fn shutdown_with_healthy_destination_flushes_everything() {
    let addr = free_port();
    let lines = Arc::new(std::sync::Mutex::new(Vec::new()));
    let receiver = Receiver::start(addr, lines.clone());
    let h = harness(&format!("tcp:{addr}"), fast_policy());
    let mut next_seq = 0;
    h.push(4, &mut next_seq);
    let (report, metrics, _) = h.finish();
    wait_for(&lines, next_seq as usize, "after shutdown");
    receiver.stop();
    assert_eq!(seqs(&lines), (0..next_seq).collect::<Vec<_>>());
    assert_eq!(report.rows_sent, next_seq);
    assert_eq!(metrics.destination.dropped_rows.get(), 0);
}

/// The real daemon, polling every 200 ms into a TCP receiver that is down
/// at start, comes up, goes away and comes back: it keeps polling, the
/// receiver never sees a record twice, what arrived is what the daemon
/// says it sent, and sent + dropped is everything it collected.
#[test]
fn daemon_survives_receiver_outages() {
    if !require(Need::Root, DAEMON_CAPABILITIES) {
        return;
    }
    let addr = free_port();
    // A socket of our own, so every poll collects something.
    let _listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let netns_dirs = tempfile::tempdir().unwrap();
    let mut daemon = Xtcp2::new()
        .args([
            "--frequency",
            "200ms",
            "--timeout",
            "150ms",
            "--marshal",
            "jsonl",
            "--prom-listen",
            "",
            "--queue-envelopes",
            "2",
            "--netlinkers",
            "1",
            "--netns-proc-scan=false",
        ])
        .arg("--dest")
        .arg(format!("tcp:{addr}"))
        .arg("--netns-dirs")
        .arg(netns_dirs.path())
        .env("XTCP2_LOG", "info")
        .spawn();

    let lines = Arc::new(std::sync::Mutex::new(Vec::new()));
    std::thread::sleep(Duration::from_millis(1200)); // down at start
    let receiver = Receiver::start(addr, lines.clone()); // up
    std::thread::sleep(Duration::from_millis(1200));
    receiver.stop(); // gone
    let seen_before_gone = lines.lock().unwrap().len();
    let last_seq_before_gone = seqs(&lines).into_iter().max().unwrap_or(0);
    std::thread::sleep(Duration::from_millis(1200));
    let receiver = Receiver::start(addr, lines.clone()); // back
    std::thread::sleep(Duration::from_millis(1200));
    daemon.terminate();
    let status = daemon.wait_exit(Duration::from_secs(30));
    receiver.stop(); // reads until the daemon's connection closed
    let log = daemon.stderr();
    assert!(status.success(), "daemon exit {status:?}\n{log}");

    let finished = log
        .lines()
        .find(|l| l.contains("delivery finished"))
        .unwrap_or_else(|| panic!("no delivery summary in\n{log}"));
    let field = |name: &str| -> u64 {
        finished
            .split_whitespace()
            .find_map(|kv| kv.strip_prefix(&format!("{name}=")))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{name} missing in {finished:?}"))
    };
    let (sent, queued, dropped) = (field("rows_sent"), field("rows_queued"), field("rows_dropped"));
    let seqs = seqs(&lines);
    let lines = lines.lock().unwrap();
    let unique: BTreeSet<&Vec<u8>> = lines.iter().collect();
    assert_eq!(unique.len(), lines.len(), "a record arrived twice");
    assert_eq!(
        lines.len() as u64,
        sent,
        "the receiver got {} rows, the daemon says it sent {sent}",
        lines.len()
    );
    assert_eq!(
        sent + dropped,
        queued,
        "sent {sent} + dropped {dropped} != collected {queued}\n{log}"
    );
    assert!(
        dropped > 0,
        "the outages dropped nothing (queue of 2 envelopes, 1.2 s down)\n{log}"
    );
    assert!(
        seen_before_gone > 0 && lines.len() > seen_before_gone,
        "nothing arrived after the receiver came back"
    );
    // The daemon kept polling through the second outage: records of polls
    // made during and after it arrived.
    let last = seqs.iter().copied().max().unwrap_or(0);
    assert!(
        last > last_seq_before_gone + 2,
        "last poll delivered {last}, {last_seq_before_gone} before the outage: polling stalled?"
    );
}
