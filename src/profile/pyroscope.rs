//! Continuous profiling: every `--pyroscope-upload-sec`, the CPU profile of
//! that period goes to a Pyroscope server's ingest API.
//!
//! The `pyroscope` crate links its own copy of pprof-rs, which collides
//! with ours (two SIGPROF handlers, two profiler singletons), so the push
//! is built here on the pprof crate and the hyper client:
//!
//! `POST {url}/ingest?name=APP{hostname=H,version=V}&from=UNIX&until=UNIX&format=pprof&sampleRate=HZ&spyName=pyroscope-rs`
//! with the gzipped pprof protobuf as the body (Pyroscope's documented
//! ingest API; the server unzips gzip bodies).
//!
//! The push never hurts collection: it runs on the async runtime, not the
//! poll thread; a failed upload is counted
//! (`xtcp2_pyroscope_upload_failures_total{kind}`) and logged at most once
//! a minute; at most one upload is in flight, so a slow server cannot pile
//! up memory. It yields the profiler to on-demand requests (see
//! [`super::profile`]).

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::header::HeaderValue;
use hyper::Uri;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;

use super::{encode_pprof_gz, CpuRecording, ProfilerHolder, ProfilerLock};
use crate::log_throttle::LogThrottle;
use crate::metrics::{KindLabel, Metrics};
use crate::shutdown::Shutdown;

/// What Pyroscope records as the profiler; its UI keys language-specific
/// behaviour off this name, and our profiles are exactly what the Rust
/// agent (pprof-rs) produces.
pub(crate) const SPY_NAME: &str = "pyroscope-rs";
/// Upload failures are logged at most this often (each is counted).
const FAILURE_LOG_INTERVAL: Duration = Duration::from_secs(60);
/// An upload may take at most one period (so uploads cannot overlap for
/// long), but no less than 1 s (a loaded server) nor more than 10 s.
fn upload_timeout(period: Duration) -> Duration {
    period.clamp(Duration::from_secs(1), Duration::from_secs(10))
}

/// The Pyroscope push's settings (`--pyroscope-*`).
#[derive(Debug, Clone)]
pub struct PyroscopeConfig {
    pub url: String,
    pub app_name: String,
    pub sample_hz: u32,
    pub upload_period: Duration,
}

/// A `--pyroscope-url` we cannot push to.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("--pyroscope-url {url:?}: {reason}")]
pub struct PyroscopeUrlError {
    pub url: String,
    pub reason: &'static str,
}

/// Checks a `--pyroscope-url`: `http[s]://[USER:PASSWORD@]HOST[:PORT][/PREFIX]`.
/// The error shows the URL with its credentials masked.
pub(crate) fn check_url(url: &str) -> Result<(), PyroscopeUrlError> {
    let err = |reason| PyroscopeUrlError {
        url: redact_credentials(url),
        reason,
    };
    let uri: Uri = url.parse().map_err(|_| err("not a URL"))?;
    if !matches!(uri.scheme_str(), Some("http" | "https")) {
        return Err(err("must start with http:// or https://"));
    }
    if uri.host().is_none_or(str::is_empty) {
        return Err(err("has no host"));
    }
    if uri.query().is_some() {
        return Err(err("must not have a query string"));
    }
    Ok(())
}

/// Where and as whom profiles are pushed.
#[derive(Debug, Clone)]
pub struct IngestTarget {
    /// `{url}` without credentials and without a trailing slash.
    base: String,
    /// `Basic ...` from the URL's `user:password@`, marked sensitive.
    authorization: Option<HeaderValue>,
    /// `APP{hostname=H,version=V}`, not yet percent-encoded.
    name: String,
    sample_hz: u32,
}

impl IngestTarget {
    pub fn new(config: &PyroscopeConfig, hostname: &str) -> Result<Self, PyroscopeUrlError> {
        check_url(&config.url)?;
        let name = format!(
            "{}{{hostname={},version={}}}",
            config.app_name,
            tag_value(hostname),
            tag_value(env!("CARGO_PKG_VERSION"))
        );
        let (url, authorization) = split_credentials(&config.url);
        Ok(IngestTarget {
            base: url.trim_end_matches('/').to_string(),
            authorization,
            name,
            sample_hz: config.sample_hz,
        })
    }

    /// The application name with its tags, as sent in `name=`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The ingest URI for a profile covering `from..until` (Unix seconds).
    pub(crate) fn uri(&self, from: u64, until: u64) -> Result<Uri, hyper::http::uri::InvalidUri> {
        format!(
            "{}/ingest?name={}&from={from}&until={until}&format=pprof&sampleRate={}&spyName={SPY_NAME}",
            self.base,
            percent_encode(&self.name),
            self.sample_hz
        )
        .parse()
    }
}

/// `user:password@` of a URL, split off: the URL without it, and the HTTP
/// Basic `Authorization` value (percent-decoded, marked sensitive so hyper
/// never logs it). Grafana Cloud's Pyroscope takes the instance id and an
/// access token this way.
fn split_credentials(url: &str) -> (String, Option<HeaderValue>) {
    let Some((scheme, rest)) = url.split_once("://") else {
        return (url.to_string(), None);
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let Some((userinfo, host)) = rest[..authority_end].rsplit_once('@') else {
        return (url.to_string(), None);
    };
    let (user, password) = userinfo.split_once(':').unwrap_or((userinfo, ""));
    let decode = |s: &str| percent_encoding::percent_decode_str(s).decode_utf8_lossy().into_owned();
    let token = base64::engine::general_purpose::STANDARD.encode(format!("{}:{}", decode(user), decode(password)));
    let authorization = HeaderValue::from_str(&format!("Basic {token}")).ok().map(|mut v| {
        v.set_sensitive(true);
        v
    });
    (format!("{scheme}://{host}{}", &rest[authority_end..]), authorization)
}

/// The URL with `user:password@` replaced by `***@`, for messages.
pub(crate) fn redact_credentials(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    match rest[..authority_end].rsplit_once('@') {
        Some((_, host)) => format!("{scheme}://***@{host}{}", &rest[authority_end..]),
        None => url.to_string(),
    }
}

/// Tag values may not contain the characters that delimit the tag list.
fn tag_value(v: &str) -> String {
    v.chars()
        .map(|c| {
            if matches!(c, '{' | '}' | ',' | '=' | '"') || c.is_whitespace() {
                '_'
            } else {
                c
            }
        })
        .collect()
}

/// Percent-encodes everything but RFC 3986 unreserved characters.
pub(crate) fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3);
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Why an upload failed; `kind()` is the metric label.
#[derive(Debug, thiserror::Error)]
pub(crate) enum UploadError {
    #[error("cannot start the CPU profiler: {0}")]
    Profiler(String),
    #[error("cannot encode the profile: {0}")]
    Encode(String),
    #[error("the previous upload is still running; this period's profile was dropped")]
    Backlog,
    #[error("cannot connect to the Pyroscope server: {0}")]
    Connect(String),
    #[error("the Pyroscope request failed: {0}")]
    Http(String),
    #[error("no answer from the Pyroscope server within {0:?}")]
    Timeout(Duration),
    #[error("the Pyroscope server answered {0}")]
    Status(hyper::StatusCode),
}

impl UploadError {
    pub fn kind(&self) -> &'static str {
        match self {
            UploadError::Profiler(_) => "profiler",
            UploadError::Encode(_) => "encode",
            UploadError::Backlog => "backlog",
            UploadError::Connect(_) => "connect",
            UploadError::Http(_) => "http",
            UploadError::Timeout(_) => "timeout",
            UploadError::Status(_) => "status",
        }
    }
}

type HttpClient = Client<HttpsConnector<HttpConnector>, Full<Bytes>>;

/// The push loop; returns when `shutdown` is triggered.
pub async fn run(
    target: IngestTarget,
    upload_period: Duration,
    lock: Arc<ProfilerLock>,
    metrics: Arc<Metrics>,
    shutdown: Shutdown,
) {
    // https:// is verified like an https:// destination (system roots, or
    // SSL_CERT_FILE / SSL_CERT_DIR).
    let client: HttpClient = match crate::https_client::https_client() {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "no TLS client; Pyroscope push disabled (collection is unaffected)");
            return;
        }
    };
    let failures = Arc::new(LogThrottle::new(FAILURE_LOG_INTERVAL));
    let report_failure = {
        let metrics = metrics.clone();
        let failures = failures.clone();
        move |e: &UploadError| {
            metrics
                .profiling
                .pyroscope_failures
                .get_or_create(&KindLabel { kind: e.kind() })
                .inc();
            if let Some(suppressed) = failures.admit() {
                tracing::warn!(error = %e, suppressed, "Pyroscope upload failed (collection is unaffected)");
            }
        }
    };
    let hz = i32::try_from(target.sample_hz).unwrap_or(i32::MAX);
    let mut in_flight: Option<tokio::task::JoinHandle<()>> = None;
    let mut first_period = true;
    loop {
        let lease = loop {
            if shutdown.is_triggered() {
                return;
            }
            if let Some(lease) = lock.try_acquire(ProfilerHolder::Pyroscope) {
                break lease;
            }
            tokio::select! {
                _ = lock.until_free() => {}
                _ = shutdown.wait() => return,
            }
        };
        let (recording, lease) = match CpuRecording::start_blocking(lease, hz).await {
            Ok(started) => started,
            Err(e) => {
                report_failure(&UploadError::Profiler(e.to_string()));
                tokio::select! {
                    _ = tokio::time::sleep(upload_period) => continue,
                    _ = shutdown.wait() => return,
                }
            }
        };
        // The period starts once samples are being taken.
        let from = unix_seconds();
        if first_period {
            // Logged here, not at task start: the first profiler start loads
            // symbol tables, which takes a while in large binaries.
            tracing::info!(name = target.name(), period = ?upload_period, "pushing CPU profiles to Pyroscope");
            first_period = false;
        }
        let yielded = tokio::select! {
            _ = tokio::time::sleep(upload_period) => false,
            _ = lock.yield_requested() => true,
            _ = shutdown.wait() => {
                // The last partial period is not uploaded: exit promptly.
                // Dropping the recording stops the profiler, before the lease goes.
                drop(recording);
                drop(lease);
                return;
            }
        };
        let until = unix_seconds();
        if yielded {
            metrics.profiling.pyroscope_yields.inc();
            tracing::debug!("Pyroscope period cut short for an on-demand profile");
        }
        // Symbolizing is CPU work; keep it off the async workers. The lease
        // is released only after the profiler has stopped.
        let encoded = tokio::task::spawn_blocking(move || {
            let report = recording.finish();
            drop(lease);
            report
                .map_err(|e| UploadError::Profiler(e.to_string()))
                .and_then(|r| encode_pprof_gz(&r).map_err(|e| UploadError::Encode(e.to_string())))
        })
        .await
        .unwrap_or_else(|e| Err(UploadError::Encode(format!("report task failed: {e}"))));
        let body = match encoded {
            Ok(b) => b,
            Err(e) => {
                report_failure(&e);
                continue;
            }
        };
        if in_flight.as_ref().is_some_and(|h| !h.is_finished()) {
            report_failure(&UploadError::Backlog);
            continue;
        }
        let uri = match target.uri(from, until) {
            Ok(u) => u,
            Err(e) => {
                report_failure(&UploadError::Http(e.to_string()));
                continue;
            }
        };
        let client = client.clone();
        let metrics = metrics.clone();
        let report_failure = report_failure.clone();
        let timeout = upload_timeout(upload_period);
        let authorization = target.authorization.clone();
        in_flight = Some(tokio::spawn(async move {
            let size = body.len() as u64;
            match upload(&client, uri, authorization, body, timeout).await {
                Ok(()) => {
                    metrics.profiling.pyroscope_uploads.inc();
                    metrics.profiling.pyroscope_upload_bytes.inc_by(size);
                }
                Err(e) => report_failure(&e),
            }
        }));
    }
}

async fn upload(
    client: &HttpClient,
    uri: Uri,
    authorization: Option<HeaderValue>,
    body: Vec<u8>,
    timeout: Duration,
) -> Result<(), UploadError> {
    let mut request = hyper::Request::post(uri)
        .header(hyper::header::CONTENT_TYPE, "application/octet-stream")
        .header(hyper::header::USER_AGENT, concat!("xtcp2/", env!("CARGO_PKG_VERSION")));
    if let Some(value) = authorization {
        request = request.header(hyper::header::AUTHORIZATION, value);
    }
    let request = request
        .body(Full::new(Bytes::from(body)))
        .map_err(|e| UploadError::Http(e.to_string()))?;
    let exchange = async {
        let response = client.request(request).await.map_err(|e| {
            if e.is_connect() {
                UploadError::Connect(e.to_string())
            } else {
                UploadError::Http(e.to_string())
            }
        })?;
        let status = response.status();
        // Read the (small) answer so the connection can be reused.
        let _ = response.into_body().collect().await;
        if status.is_success() {
            Ok(())
        } else {
            Err(UploadError::Status(status))
        }
    };
    tokio::time::timeout(timeout, exchange)
        .await
        .unwrap_or(Err(UploadError::Timeout(timeout)))
}

fn unix_seconds() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(url: &str) -> PyroscopeConfig {
        PyroscopeConfig {
            url: url.to_string(),
            app_name: "xtcp2".to_string(),
            sample_hz: 100,
            upload_period: Duration::from_secs(15),
        }
    }

    /// The ingest URI carries the tagged, percent-encoded name and every
    /// documented query parameter.
    #[test]
    fn ingest_uri_has_name_tags_and_parameters() {
        let target = IngestTarget::new(&config("http://pyroscope:4040/"), "host a,b").unwrap();
        assert_eq!(
            target.name(),
            format!("xtcp2{{hostname=host_a_b,version={}}}", env!("CARGO_PKG_VERSION"))
        );
        let uri = target.uri(1700000000, 1700000015).unwrap().to_string();
        assert_eq!(
            uri,
            format!(
                "http://pyroscope:4040/ingest?name=xtcp2%7Bhostname%3Dhost_a_b%2Cversion%3D{}%7D&from=1700000000&until=1700000015&format=pprof&sampleRate=100&spyName=pyroscope-rs",
                env!("CARGO_PKG_VERSION")
            )
        );
    }

    /// A path prefix is kept before /ingest.
    #[test]
    fn ingest_uri_keeps_a_path_prefix() {
        let target = IngestTarget::new(&config("http://proxy/pyroscope"), "h").unwrap();
        assert!(target
            .uri(1, 2)
            .unwrap()
            .to_string()
            .starts_with("http://proxy/pyroscope/ingest?name=xtcp2%7B"));
    }

    /// URLs we cannot push to are refused with the reason.
    #[test]
    fn unusable_urls_are_refused() {
        assert_eq!(
            check_url("ftp://p:4040").unwrap_err().reason,
            "must start with http:// or https://"
        );
        assert_eq!(
            check_url("p:4040").unwrap_err().reason,
            "must start with http:// or https://"
        );
        assert_eq!(
            check_url("http://p:4040/?x=1").unwrap_err().reason,
            "must not have a query string"
        );
        assert!(check_url("http://127.0.0.1:4040").is_ok());
        assert!(check_url("https://profiles.example.net/pyroscope").is_ok());
    }

    /// `user:password@` becomes Basic auth (percent-decoded) and leaves the
    /// URL; messages show it masked.
    #[test]
    fn credentials_become_basic_auth_and_are_masked() {
        let target = IngestTarget::new(&config("https://12345:glc%2Fabc%3D@profiles.example.net/p"), "h").unwrap();
        assert!(target
            .uri(1, 2)
            .unwrap()
            .to_string()
            .starts_with("https://profiles.example.net/p/ingest?"));
        let auth = target.authorization.clone().unwrap();
        assert!(auth.is_sensitive());
        // base64("12345:glc/abc=")
        assert_eq!(auth.to_str().unwrap(), "Basic MTIzNDU6Z2xjL2FiYz0=");
        assert!(IngestTarget::new(&config("http://pyro:4040"), "h")
            .unwrap()
            .authorization
            .is_none());
        assert_eq!(
            redact_credentials("https://u:secret@h:4040/x@y"),
            "https://***@h:4040/x@y"
        );
        let err = check_url("https://u:secret@h/?q=1").unwrap_err();
        assert!(!err.to_string().contains("secret"), "{err}");
    }

    /// Each failure has its own metric label.
    #[test]
    fn failure_kinds() {
        assert_eq!(UploadError::Backlog.kind(), "backlog");
        assert_eq!(UploadError::Timeout(Duration::from_secs(1)).kind(), "timeout");
        assert_eq!(UploadError::Status(hyper::StatusCode::BAD_GATEWAY).kind(), "status");
        assert_eq!(UploadError::Connect("refused".into()).kind(), "connect");
    }
}
