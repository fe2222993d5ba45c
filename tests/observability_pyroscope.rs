//! The Pyroscope push of the daemon binary, against a local HTTP server
//! posing as Pyroscope: uploads arrive every period as valid pprof with the
//! app name and tags; an on-demand profile makes the push yield; a dead
//! server costs only a counted, rate-limited failure. Root is needed for
//! inet_diag (CI runs as root).

mod observability_support;
mod support;

use std::process::Stdio;
use std::time::{Duration, Instant};

use observability_support::*;
use support::{require, Need, DAEMON_CAPABILITIES};

const UPLOAD_PERIOD: Duration = Duration::from_secs(1);

/// Waits for the log line of the push's first profiling period (the first
/// profiler start loads symbol tables first, seconds in a debug build) and
/// returns when it was seen.
fn wait_push_started(daemon: &mut HttpDaemon) -> Instant {
    daemon.wait_for_stderr("pushing CPU profiles to Pyroscope", Duration::from_secs(20));
    Instant::now()
}

fn daemon_args<'a>(url: &'a str, app: &'a str) -> Vec<&'a str> {
    vec![
        "--frequency",
        "1s",
        "--timeout",
        "500ms",
        "--dest",
        "null",
        "--netns-proc-scan=false",
        "--netns-dirs",
        "",
        "--states=established,listen",
        "--pyroscope-url",
        url,
        "--pyroscope-app-name",
        app,
        "--pyroscope-upload-sec",
        "1",
        "--pyroscope-sample-hz",
        "100",
    ]
}

/// At least two uploads arrive within three upload periods of the push
/// starting to profile;
/// each is `POST /ingest` with the app name and hostname/version tags,
/// format=pprof, sampleRate=100, a 1 s from/until window and a gzipped
/// pprof CPU profile as the body; the upload counter matches.
#[test]
fn pyroscope_receives_a_pprof_profile_every_upload_period() {
    if !require(Need::Root, DAEMON_CAPABILITIES) {
        return;
    }
    let server = RecordingServer::start();
    // Credentials in the URL become Basic auth ("tenant#1", percent-encoded).
    let url = format!("http://tenant%231:s3cret@{}", server.addr);
    let mut daemon = HttpDaemon::start(&daemon_args(&url, "xtcp2-test"), Stdio::null());
    let started = wait_push_started(&mut daemon);
    let window = UPLOAD_PERIOD * 3;
    std::thread::sleep(window.saturating_sub(started.elapsed()));
    let uploads: Vec<_> = server
        .received()
        .into_iter()
        .filter(|r| r.at <= started + window)
        .collect();
    assert!(
        uploads.len() >= 2,
        "{} uploads within {window:?}; stderr:\n{}",
        uploads.len(),
        daemon.stderr()
    );

    let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .unwrap()
        .trim()
        .to_string();
    let expected_name = format!(
        "xtcp2-test{{hostname={hostname},version={}}}",
        env!("CARGO_PKG_VERSION")
    );
    for upload in &uploads {
        assert_eq!(upload.method, "POST");
        let authorization = upload
            .headers
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case("authorization"))
            .map(|(_, value)| value.as_str());
        // base64("tenant#1:s3cret")
        assert_eq!(authorization, Some("Basic dGVuYW50IzE6czNjcmV0"));
        assert!(upload.target.starts_with("/ingest?"), "{}", upload.target);
        assert_eq!(
            upload.query("name").as_deref(),
            Some(expected_name.as_str()),
            "{}",
            upload.target
        );
        assert_eq!(upload.query("format").as_deref(), Some("pprof"));
        assert_eq!(upload.query("sampleRate").as_deref(), Some("100"));
        assert_eq!(upload.query("spyName").as_deref(), Some("pyroscope-rs"));
        let from: u64 = upload.query("from").unwrap().parse().unwrap();
        let until: u64 = upload.query("until").unwrap().parse().unwrap();
        assert!(until >= from && until - from <= 2, "window {from}..{until}");
        let profile = decode_pprof(&upload.body);
        assert_eq!(
            sample_types(&profile),
            [
                ("samples".to_string(), "count".to_string()),
                ("cpu".to_string(), "nanoseconds".to_string())
            ]
        );
        assert_eq!(profile.string_table[0], "");
    }
    let m = daemon.metrics();
    let uploaded = sample(&m, "xtcp2_pyroscope_uploads_total").unwrap();
    assert!(
        uploaded >= uploads.len() as f64,
        "counter {uploaded} < {} received",
        uploads.len()
    );
    assert!(sample(&m, "xtcp2_pyroscope_uploaded_bytes_total").unwrap() > 0.0);
    assert!(!daemon.stderr().contains("s3cret"), "{}", daemon.stderr());

    daemon.stop_cleanly(Duration::from_secs(15));
}

/// An on-demand CPU profile while Pyroscope holds the profiler is served
/// (200, not 409): the push cuts its period short, counts the yield, and
/// resumes uploading afterwards.
#[test]
fn pyroscope_yields_the_profiler_to_an_on_demand_profile() {
    if !require(Need::Root, DAEMON_CAPABILITIES) {
        return;
    }
    let server = RecordingServer::start();
    let url = format!("http://{}", server.addr);
    let mut args = daemon_args(&url, "xtcp2-yield");
    args.push("--pprof");
    let mut daemon = HttpDaemon::start(&args, Stdio::null());
    daemon.wait_healthy(Duration::from_secs(10));
    daemon.wait_metric("xtcp2_pyroscope_uploads_total", 1.0, Duration::from_secs(10));

    let profile = http_get_with(
        daemon.addr,
        "/debug/pprof/profile?seconds=1",
        &[],
        Duration::from_secs(30),
    )
    .unwrap();
    assert_eq!(profile.status, 200, "{}", profile.text());
    decode_pprof(&profile.body);
    let m = daemon.metrics();
    assert_eq!(sample(&m, "xtcp2_pyroscope_yields_total"), Some(1.0), "{m}");
    let after_profile = sample(&m, "xtcp2_pyroscope_uploads_total").unwrap();
    daemon.wait_metric(
        "xtcp2_pyroscope_uploads_total",
        after_profile + 1.0,
        Duration::from_secs(10),
    );

    daemon.stop_cleanly(Duration::from_secs(15));
}

/// With the Pyroscope URL pointing at a closed port, polls go on
/// (xtcp2_poll_cycles_total grows, /readyz stays 200), every failed upload
/// is counted as kind="connect", the failure is logged once (rate limited)
/// and SIGTERM still exits 0.
#[test]
fn dead_pyroscope_does_not_hurt_collection() {
    if !require(Need::Root, DAEMON_CAPABILITIES) {
        return;
    }
    let closed = format!("http://127.0.0.1:{}", free_port());
    let mut daemon = HttpDaemon::start(&daemon_args(&closed, "xtcp2-dead"), Stdio::null());
    daemon.wait_healthy(Duration::from_secs(10));
    let cycles_at_start = daemon.wait_metric("xtcp2_poll_cycles_total", 1.0, Duration::from_secs(10));
    daemon.wait_metric(
        "xtcp2_pyroscope_upload_failures_total{kind=\"connect\"}",
        3.0,
        Duration::from_secs(10),
    );
    daemon.wait_metric(
        "xtcp2_poll_cycles_total",
        cycles_at_start + 3.0,
        Duration::from_secs(10),
    );
    assert_eq!(http_get(daemon.addr, "/readyz").unwrap().status, 200);
    let m = daemon.metrics();
    assert_eq!(sample(&m, "xtcp2_pyroscope_uploads_total"), Some(0.0));

    daemon.stop_cleanly(Duration::from_secs(15));
    let stderr = daemon.stderr();
    let logged = stderr.lines().filter(|l| l.contains("Pyroscope upload failed")).count();
    assert_eq!(logged, 1, "failures must be logged once a minute at most:\n{stderr}");
}
