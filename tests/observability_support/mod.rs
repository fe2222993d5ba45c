//! Shared by the observability tests: a plain HTTP/1.1 client, the daemon
//! with its HTTP listener (on `support::Daemon`), exposition parsing, and
//! pprof decoding. Std only, so the tests exercise the daemon's own HTTP
//! stack and nothing of ours sits in between. A test file that includes
//! this module includes `mod support;` too.

#![allow(dead_code)] // each test file uses a different part

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::ops::{Deref, DerefMut};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::support::{content_length, header, read_head, Daemon, Xtcp2};

/// A port nobody listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .expect("bind 127.0.0.1:0")
        .local_addr()
        .expect("local addr")
        .port()
}

#[derive(Debug)]
pub struct HttpResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl HttpResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        header(&self.headers, name)
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// GET with extra headers; `Connection: close` so the body ends at EOF
/// when the server does not send a length.
pub fn http_get_with(
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
    timeout: Duration,
) -> std::io::Result<HttpResponse> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    stream.set_read_timeout(Some(timeout))?;
    let mut request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (k, v) in headers {
        request.push_str(&format!("{k}: {v}\r\n"));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes())?;
    read_response(&mut BufReader::new(stream))
}

pub fn http_get(addr: SocketAddr, path: &str) -> std::io::Result<HttpResponse> {
    http_get_with(addr, path, &[], Duration::from_secs(10))
}

fn read_response(reader: &mut impl BufRead) -> std::io::Result<HttpResponse> {
    let (status_line, headers) = read_head(reader)?;
    let status = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("bad status line {status_line:?}"),
            )
        })?;
    let mut body = Vec::new();
    match content_length(&headers) {
        Some(n) => {
            body.resize(n, 0);
            reader.read_exact(&mut body)?;
        }
        None => {
            reader.read_to_end(&mut body)?;
        }
    }
    Ok(HttpResponse { status, headers, body })
}

/// A request received by [`RecordingServer`].
#[derive(Debug, Clone)]
pub struct ReceivedRequest {
    pub at: Instant,
    pub method: String,
    pub target: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl ReceivedRequest {
    /// The decoded value of query parameter `name`.
    pub fn query(&self, name: &str) -> Option<String> {
        let query = self.target.split_once('?')?.1;
        query.split('&').find_map(|pair| {
            let (k, v) = pair.split_once('=')?;
            (k == name).then(|| percent_decode(v))
        })
    }
}

pub fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let Ok(b) = u8::from_str_radix(&s[i + 1..i + 3], 16) {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(if bytes[i] == b'+' { b' ' } else { bytes[i] });
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// An HTTP server on 127.0.0.1 that answers 200 to everything and keeps
/// every request, standing in for Pyroscope. Its thread ends with the test
/// process; it holds no files.
pub struct RecordingServer {
    pub addr: SocketAddr,
    pub requests: Arc<Mutex<Vec<ReceivedRequest>>>,
}

impl RecordingServer {
    pub fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        let requests = Arc::new(Mutex::new(Vec::new()));
        let keep = requests.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                let keep = keep.clone();
                std::thread::spawn(move || serve_one_connection(stream, keep));
            }
        });
        RecordingServer { addr, requests }
    }

    pub fn received(&self) -> Vec<ReceivedRequest> {
        self.requests.lock().unwrap().clone()
    }
}

fn serve_one_connection(stream: TcpStream, keep: Arc<Mutex<Vec<ReceivedRequest>>>) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(30)));
    let Ok(mut writer) = stream.try_clone() else { return };
    let mut reader = BufReader::new(stream);
    // Keep-alive: the client may send several requests on one connection.
    while let Ok((request_line, headers)) = read_head(&mut reader) {
        let mut body = vec![0u8; content_length(&headers).unwrap_or(0)];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        let mut parts = request_line.split_whitespace();
        keep.lock().unwrap().push(ReceivedRequest {
            at: Instant::now(),
            method: parts.next().unwrap_or("").to_string(),
            target: parts.next().unwrap_or("").to_string(),
            headers,
            body,
        });
        if writer
            .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
            .is_err()
        {
            return;
        }
    }
}

/// The daemon with its HTTP listener on a loopback port the kernel picked
/// (`--prom-listen 127.0.0.1:0`, so no other process can take the port
/// between choosing and binding it). Everything of the process itself
/// (stderr, signals, exit, kill on drop) is `support::Daemon`'s.
pub struct HttpDaemon {
    daemon: Daemon,
    pub addr: SocketAddr,
}

impl Deref for HttpDaemon {
    type Target = Daemon;
    fn deref(&self) -> &Daemon {
        &self.daemon
    }
}

impl DerefMut for HttpDaemon {
    fn deref_mut(&mut self) -> &mut Daemon {
        &mut self.daemon
    }
}

impl HttpDaemon {
    /// Starts `xtcp2` with `args` (logging at info) and waits for the log
    /// line that names its listen address. Stdout goes where `stdout` says.
    pub fn start(args: &[&str], stdout: Stdio) -> HttpDaemon {
        HttpDaemon::start_with_env(args, stdout, &[])
    }

    /// [`HttpDaemon::start`] with extra environment variables.
    pub fn start_with_env(args: &[&str], stdout: Stdio, env: &[(&str, &str)]) -> HttpDaemon {
        let mut command = Xtcp2::new();
        command.args(args).stdout(stdout);
        for (name, value) in env {
            command.env(name, value);
        }
        HttpDaemon::start_command(command)
    }

    /// Starts `command` (e.g. `Xtcp2::under("setpriv", ..)` with its
    /// arguments) with the listener on a loopback port the kernel picks,
    /// logging at info, and waits for the log line that names the address.
    pub fn start_command(mut command: Xtcp2) -> HttpDaemon {
        command.args(["--prom-listen", "127.0.0.1:0"]).env("XTCP2_LOG", "info");
        let mut daemon = command.spawn();
        let line = daemon.wait_for_stderr("serving metrics and health", Duration::from_secs(15));
        let addr = line
            .split("addr=")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|a| a.parse::<SocketAddr>().ok())
            .unwrap_or_else(|| panic!("unparsable listen address in {line:?}"));
        HttpDaemon { daemon, addr }
    }

    /// Waits until the HTTP server answers /healthz.
    pub fn wait_healthy(&mut self, within: Duration) {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Ok(r) = http_get(self.addr, "/healthz") {
                assert_eq!(r.status, 200, "/healthz");
                return;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("xtcp2 exited with {status} before serving; stderr:\n{}", self.stderr());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!(
            "xtcp2 did not answer /healthz within {within:?}; stderr:\n{}",
            self.stderr()
        );
    }

    /// Waits until /readyz answers 200 (the listener may not be up yet).
    pub fn wait_ready(&mut self, within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            let answer = http_get(self.addr, "/readyz").map(|r| (r.status, r.text()));
            if matches!(answer, Ok((200, _))) {
                return;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "xtcp2 exited with {status} before it was ready; stderr:\n{}",
                    self.stderr()
                );
            }
            assert!(
                Instant::now() < deadline,
                "/readyz: {answer:?} after {within:?}; stderr:\n{}",
                self.stderr()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn metrics(&self) -> String {
        let r = http_get(self.addr, "/metrics").expect("GET /metrics");
        assert_eq!(r.status, 200, "/metrics");
        r.text()
    }

    /// Waits until `metric` (an exact sample name with labels) reaches `at_least`.
    pub fn wait_metric(&self, metric: &str, at_least: f64, within: Duration) -> f64 {
        let deadline = Instant::now() + within;
        loop {
            let v = sample(&self.metrics(), metric).unwrap_or(0.0);
            if v >= at_least {
                return v;
            }
            assert!(
                Instant::now() < deadline,
                "{metric} stayed at {v} (< {at_least}) for {within:?}; stderr:\n{}",
                self.stderr()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// The value of the sample named exactly `name` (labels included, as
/// written in the exposition, e.g. `x_total{kind="io"}`).
pub fn sample(exposition: &str, name: &str) -> Option<f64> {
    exposition.lines().find_map(|line| {
        let rest = line.strip_prefix(name)?;
        let value = rest.strip_prefix(' ')?;
        value.split_whitespace().next()?.parse().ok()
    })
}

/// Runs `promtool check metrics` on the exposition: whether it passed,
/// and what promtool said. The caller has `support::require_tool("promtool", ..)`.
pub fn promtool_check(exposition: &str) -> (bool, String) {
    let promtool = crate::support::find_tool("promtool").expect("promtool is installed");
    let mut child = Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn promtool");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(exposition.as_bytes())
        .expect("write to promtool");
    let out = child.wait_with_output().expect("promtool");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// Gunzips and decodes a pprof profile.
pub fn decode_pprof(gzipped: &[u8]) -> pprof::protos::Profile {
    use pprof::protos::Message;
    assert_eq!(&gzipped[..2], &[0x1f, 0x8b], "not gzip");
    let mut raw = Vec::new();
    flate2::read::GzDecoder::new(gzipped)
        .read_to_end(&mut raw)
        .expect("gunzip");
    pprof::protos::Profile::decode(raw.as_slice()).expect("pprof protobuf")
}

/// The string-table entries a profile's sample types name, e.g.
/// `[("samples", "count"), ("cpu", "nanoseconds")]`.
pub fn sample_types(p: &pprof::protos::Profile) -> Vec<(String, String)> {
    p.sample_type
        .iter()
        .map(|t| {
            (
                p.string_table[t.ty as usize].clone(),
                p.string_table[t.unit as usize].clone(),
            )
        })
        .collect()
}

/// Loopback TCP connections held open: `count` pairs on one listener.
pub struct LoopbackConnections {
    pub listener: TcpListener,
    pub clients: Vec<TcpStream>,
    pub servers: Vec<TcpStream>,
}

impl LoopbackConnections {
    pub fn open(count: usize) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().unwrap();
        let mut clients = Vec::new();
        let mut servers = Vec::new();
        for _ in 0..count {
            clients.push(TcpStream::connect(addr).expect("connect"));
            servers.push(listener.accept().expect("accept").0);
        }
        LoopbackConnections {
            listener,
            clients,
            servers,
        }
    }

    /// Sockets the kernel now has for these: both ends of each connection and the listener.
    pub fn sockets(&self) -> usize {
        self.clients.len() + self.servers.len() + 1
    }
}
