//! Every destination, in every format, against a real receiver started by
//! the test: the receiver decodes what arrived (each connection, datagram,
//! request or file as one standalone output) and every record of the known
//! collection must be there exactly once, with every value intact.

mod sinks_support;
mod support;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use sinks_support::*;
use support::{require, Need};
use xtcp2::batch::Envelope;
use xtcp2::format::{Format, StreamFormat};
use xtcp2::record::Record;
use xtcp2::sink::{Disposition, Sink, SinkError};

/// Rows per envelope: large enough that jsonl/csv envelopes exceed one
/// datagram and must be split, small enough to make several envelopes.
const ROWS_PER_ENVELOPE: usize = 150;
/// How long a receiver may take to hand everything over.
const RECEIVE_TIMEOUT: Duration = Duration::from_secs(20);
/// How long to keep listening after the last expected record, to catch duplicates.
const GRACE: Duration = Duration::from_millis(300);

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// Sends the records to `dest` in envelopes, then closes the sink.
/// Returns how many envelopes were sent.
fn send_all(dest: &str, format: &StreamFormat, records: &[Record]) -> usize {
    runtime().block_on(async {
        let mut sink = Sink::open(dest, format)
            .await
            .unwrap_or_else(|e| panic!("open {dest}: {e}"));
        let mut encoder = format.encoder();
        let mut envelopes = 0;
        for chunk in records.chunks(ROWS_PER_ENVELOPE) {
            let envelope = Envelope::from_records(encoder.as_mut(), chunk, Arc::from("h"), 1);
            let sent = sink
                .send(&envelope)
                .await
                .unwrap_or_else(|e| panic!("send to {dest} ({}): {e}", format.format()));
            assert_eq!(sent.rows_too_large, 0);
            envelopes += 1;
        }
        envelopes
    })
}

fn stream_format(format: Format) -> StreamFormat {
    StreamFormat::new(format.name(), &[]).unwrap()
}

fn check_arrivals(
    what: &str,
    format: Format,
    records: &[Record],
    rx: &std::sync::mpsc::Receiver<Received>,
) -> Vec<Received> {
    let expected: Vec<Row> = records.iter().map(row_of).collect();
    let (rows, items) = collect_rows(rx, format, expected.len(), RECEIVE_TIMEOUT, GRACE);
    assert_exactly_once(&format!("{what} {format}"), &expected, &rows);
    items
}

/// tcp: one connection per sink, the csv/tsv header once at its start.
#[test]
fn tcp_delivers_every_record_once_in_every_format() {
    let Some(records) = known_collection() else { return };
    for format in Format::ALL {
        let (addr, rx) = tcp_receiver();
        send_all(&format!("tcp:{addr}"), &stream_format(format), &records);
        let items = check_arrivals("tcp", format, &records, &rx);
        assert_eq!(items.len(), 1, "{format}: one connection");
    }
}

/// unix: the same over a unix stream socket.
#[test]
fn unix_stream_delivers_every_record_once_in_every_format() {
    let Some(records) = known_collection() else { return };
    let dir = tempfile::tempdir().unwrap();
    for format in Format::ALL {
        let path = dir.path().join(format!("{format}.sock"));
        let rx = unix_receiver(&path);
        send_all(&format!("unix:{}", path.display()), &stream_format(format), &records);
        let items = check_arrivals("unix", format, &records, &rx);
        assert_eq!(items.len(), 1, "{format}: one connection");
    }
}

/// unixgram: envelopes are split at record boundaries into datagrams that
/// each decode alone (csv/tsv datagrams each carry the header).
#[test]
fn unixgram_delivers_every_record_once_in_every_format() {
    let Some(records) = known_collection() else { return };
    let dir = tempfile::tempdir().unwrap();
    for format in Format::ALL {
        let path = dir.path().join(format!("{format}.dgram"));
        let rx = unixgram_receiver(&path);
        let envelopes = send_all(
            &format!("unixgram:{}", path.display()),
            &stream_format(format),
            &records,
        );
        let items = check_arrivals("unixgram", format, &records, &rx);
        assert!(items.iter().all(|d| d.bytes.len() <= xtcp2::sink::MAX_DATAGRAM_PAYLOAD));
        if matches!(format, Format::Jsonl | Format::Csv | Format::Tsv) {
            assert!(
                items.len() > envelopes,
                "{format}: {} datagrams for {envelopes} envelopes: nothing was split",
                items.len()
            );
        }
    }
}

/// udp (raw IPv4 socket, headers built by xtcp2): every record arrives
/// once through an ordinary UDP socket, so our IPv4/UDP headers and
/// checksums are accepted by the kernel.
#[test]
fn udp_delivers_every_record_once_in_every_format() {
    if !require(
        Need::Root,
        "the udp destination opens a raw socket, which needs CAP_NET_RAW",
    ) {
        return;
    }
    let Some(records) = known_collection() else { return };
    for format in Format::ALL {
        let (addr, rx) = big_udp_receiver();
        send_all(&format!("udp:{addr}"), &stream_format(format), &records);
        let items = check_arrivals("udp", format, &records, &rx);
        assert!(items.iter().all(|d| d.bytes.len() <= xtcp2::sink::MAX_DATAGRAM_PAYLOAD));
    }
}

/// udp across a 1500-byte MTU: datagrams of up to 64 KiB are fragmented by
/// xtcp2 (IP_HDRINCL disables the kernel's fragmentation) and the
/// receiver's kernel reassembles them. Runs in a private network namespace
/// whose loopback has MTU 1500, so the host's loopback is untouched.
#[test]
fn udp_fragments_datagrams_above_the_path_mtu() {
    if !require(
        Need::Netns,
        "a raw socket in a private network namespace with a 1500-byte loopback",
    ) {
        return;
    }
    let Some(records) = known_collection() else { return };
    let records = &records[..300];
    let handle = std::thread::scope(|scope| {
        scope
            .spawn(|| {
                // SAFETY: unshare only changes this thread's network
                // namespace; no pointers are involved.
                let rc = unsafe { libc::unshare(libc::CLONE_NEWNET) };
                assert_eq!(rc, 0, "unshare(CLONE_NEWNET): {}", std::io::Error::last_os_error());
                // A child forked from this thread lives in its namespace.
                let status = std::process::Command::new("ip")
                    .args(["link", "set", "lo", "up", "mtu", "1500"])
                    .status()
                    .expect("run ip");
                assert!(status.success(), "ip link set lo up mtu 1500");
                let (addr, rx) = big_udp_receiver();
                let format = stream_format(Format::Jsonl);
                send_all(&format!("udp:{addr}"), &format, records);
                check_arrivals("udp mtu 1500", Format::Jsonl, records, &rx)
            })
            .join()
    });
    let items = handle.expect("the namespace thread panicked");
    assert!(
        items.iter().any(|d| d.bytes.len() > 1500 - 28),
        "no datagram needed fragmenting"
    );
}

/// Without CAP_NET_RAW the first udp send fails and says which capability is missing.
#[test]
fn udp_without_cap_net_raw_fails_with_a_clear_error() {
    if !require(
        Need::Root,
        "the test process drops CAP_NET_RAW from one thread, so it must have it",
    ) {
        return;
    }
    let message = std::thread::spawn(|| {
        // Capabilities are per thread: only this thread loses CAP_NET_RAW.
        caps::drop(None, caps::CapSet::Effective, caps::Capability::CAP_NET_RAW).unwrap();
        runtime().block_on(async {
            let format = stream_format(Format::Jsonl);
            let mut sink = Sink::open("udp:127.0.0.1:9", &format)
                .await
                .expect("opening does not need the capability");
            let mut encoder = format.encoder();
            let envelope = Envelope::from_records(encoder.as_mut(), [&Record::default()], Arc::from("h"), 1);
            let err = sink.send(&envelope).await.expect_err("the raw socket must be refused");
            assert!(matches!(err, SinkError::NeedsCapNetRaw { .. }), "{err:?}");
            assert_eq!(err.kind(), "permission");
            err.to_string()
        })
    })
    .join()
    .unwrap();
    assert!(message.contains("needs CAP_NET_RAW"), "{message}");
}

/// http: one POST per envelope, the format's content type, every body a
/// standalone output (csv/tsv header in each; one protobuf Envelope each).
#[test]
fn http_delivers_every_record_once_in_every_format() {
    let Some(records) = known_collection() else { return };
    for format in Format::ALL {
        let (addr, rx) = http_receiver(200);
        let envelopes = send_all(&format!("http://{addr}/ingest?x=1"), &stream_format(format), &records);
        let items = check_arrivals("http", format, &records, &rx);
        assert_eq!(items.len(), envelopes, "{format}: one request per envelope");
        for item in &items {
            assert_eq!(item.content_type.as_deref(), Some(format.content_type()));
        }
        if format == Format::ProtobufList {
            use prost::Message;
            for item in &items {
                let env = xtcp2::format::protobuf::schema::Envelope::decode_length_delimited(&item.bytes[..]).unwrap();
                assert_eq!(
                    env.encode_length_delimited_to_vec().len(),
                    item.bytes.len(),
                    "a body is exactly one Envelope"
                );
            }
        }
    }
}

/// A non-2xx answer is an error carrying the status and the body; 4xx is
/// permanent (not retried), 5xx is retried.
#[test]
fn http_errors_carry_the_status() {
    for (status, disposition) in [(400u16, Disposition::Drop), (503, Disposition::Retry)] {
        let (addr, _rx) = http_receiver(status);
        let (err, classified) = runtime().block_on(async {
            let format = stream_format(Format::Jsonl);
            let mut sink = Sink::open(&format!("http://{addr}/"), &format).await.unwrap();
            let mut encoder = format.encoder();
            let envelope = Envelope::from_records(encoder.as_mut(), [&Record::default()], Arc::from("h"), 1);
            let err = sink.send(&envelope).await.unwrap_err();
            let classified = sink.classify(&err);
            (err, classified)
        });
        match &err {
            SinkError::HttpStatus { status: s, body, .. } => {
                assert_eq!(*s, status);
                assert_eq!(body, "rejected by the test server");
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(classified, disposition, "{status}");
    }
}

/// file: appended in one file, csv header once even across reopenings of a
/// non-empty file, created 0640.
#[test]
fn file_delivers_every_record_once_in_every_format() {
    use std::os::unix::fs::PermissionsExt;
    let Some(records) = known_collection() else { return };
    let dir = tempfile::tempdir().unwrap();
    for format in Format::ALL {
        let path = dir.path().join(format!("out.{format}"));
        let dest = format!("file:{}", path.display());
        // Two daemon runs appending to the same file: half the records each.
        let (first, second) = records.split_at(records.len() / 2);
        send_all(&dest, &stream_format(format), first);
        send_all(&dest, &stream_format(format), second);
        let bytes = std::fs::read(&path).unwrap();
        let expected: Vec<Row> = records.iter().map(row_of).collect();
        assert_exactly_once(&format!("file {format}"), &expected, &decode_output(format, &bytes));
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o640, "{}", path.display());
    }
}

/// A destination directory that does not exist fails at open, naming the path.
#[test]
fn file_in_missing_directory_fails_at_open() {
    let err = runtime()
        .block_on(Sink::open(
            "file:/nonexistent-xtcp2-dir/out.jsonl",
            &stream_format(Format::Jsonl),
        ))
        .err()
        .expect("opening must fail");
    assert!(err.to_string().contains("/nonexistent-xtcp2-dir/out.jsonl"), "{err}");
    assert!(!Path::new("/nonexistent-xtcp2-dir").exists());
}
