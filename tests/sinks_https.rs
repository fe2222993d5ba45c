//! https:// destinations: TLS with certificate verification. A TLS
//! receiver with a self-signed certificate (made by the openssl CLI) is
//! refused until that certificate is trusted through SSL_CERT_FILE; then
//! every record arrives once.
//!
//! The destination test sets SSL_CERT_FILE for this process, so these
//! tests have a binary of their own; the Pyroscope test gives its daemons
//! their own SSL_CERT_FILE (or none).

mod sinks_support;
mod support;

use std::process::Command;
use std::sync::mpsc;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use sinks_support::*;
use support::{require_tool, run_tool, Daemon, Xtcp2};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use xtcp2::batch::Envelope;
use xtcp2::format::{Format, StreamFormat};
use xtcp2::sink::{Sink, SinkError};

/// Serves HTTPS on 127.0.0.1: every request body goes to `tx`, answered 200.
fn tls_receiver(cert: &std::path::Path, key: &std::path::Path) -> (std::net::SocketAddr, mpsc::Receiver<Received>) {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .unwrap()
        .map(|c| c.unwrap())
        .collect();
    let key = PrivateKeyDer::from_pem_file(key).unwrap();
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            loop {
                let Ok((tcp, _)) = listener.accept().await else { return };
                let acceptor = acceptor.clone();
                let tx = tx.clone();
                tokio::spawn(async move {
                    // A client that refuses our certificate ends the handshake: fine.
                    let Ok(tls) = acceptor.accept(tcp).await else { return };
                    let mut reader = BufReader::new(tls);
                    loop {
                        let mut line = String::new();
                        if reader.read_line(&mut line).await.unwrap_or(0) == 0 {
                            return;
                        }
                        let (mut length, mut content_type) = (0usize, None);
                        loop {
                            let mut header = String::new();
                            if reader.read_line(&mut header).await.unwrap_or(0) == 0 {
                                return;
                            }
                            let header = header.trim_end();
                            if header.is_empty() {
                                break;
                            }
                            if let Some((name, value)) = header.split_once(':') {
                                match name.to_ascii_lowercase().as_str() {
                                    "content-length" => length = value.trim().parse().unwrap(),
                                    "content-type" => content_type = Some(value.trim().to_string()),
                                    _ => {}
                                }
                            }
                        }
                        let mut body = vec![0u8; length];
                        if reader.read_exact(&mut body).await.is_err() {
                            return;
                        }
                        let _ = reader
                            .get_mut()
                            .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
                            .await;
                        let _ = reader.get_mut().flush().await;
                        let _ = tx.send(Received {
                            bytes: body,
                            content_type,
                        });
                    }
                });
            }
        });
    });
    (addr, rx)
}

/// Whether the openssl CLI is here to make the test certificates (see
/// `support::require`).
fn openssl_available() -> bool {
    require_tool("openssl", "the openssl CLI makes the test certificates")
}

/// A test CA and a server certificate for 127.0.0.1 signed by it, made
/// with the openssl CLI (the caller checked [`openssl_available`]):
/// (ca.pem, cert.pem, key.pem).
fn make_certificates(dir: &std::path::Path) -> (std::path::PathBuf, std::path::PathBuf, std::path::PathBuf) {
    let run = |args: &[&str]| {
        run_tool(Command::new("openssl").args(args).current_dir(dir));
    };
    run(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "1",
        "-subj",
        "/CN=xtcp2 test CA",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
    ]);
    run(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-subj",
        "/CN=localhost",
        "-keyout",
        "key.pem",
        "-out",
        "server.csr",
    ]);
    std::fs::write(
        dir.join("server.ext"),
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n",
    )
    .unwrap();
    run(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "1",
        "-extfile",
        "server.ext",
        "-out",
        "cert.pem",
    ]);
    (dir.join("ca.pem"), dir.join("cert.pem"), dir.join("key.pem"))
}

/// Sends `records` to `dest`, one envelope per 200 records.
async fn send(dest: &str, records: &[xtcp2::record::Record]) -> Result<(), SinkError> {
    let format = StreamFormat::new("jsonl", &[]).unwrap();
    let mut sink = Sink::open(dest, &format).await?;
    let mut encoder = format.encoder();
    for chunk in records.chunks(200) {
        sink.send(&Envelope::from_records(encoder.as_mut(), chunk, Arc::from("h"), 1))
            .await?;
    }
    Ok(())
}

/// An untrusted certificate is refused; once trusted, every record arrives over TLS exactly once.
#[test]
fn https_verifies_the_server_and_delivers_every_record() {
    let Some(records) = known_collection() else { return };
    if !openssl_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (ca, cert, key) = make_certificates(dir.path());
    let (addr, rx) = tls_receiver(&cert, &key);
    let dest = format!("https://{addr}/ingest");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();

    // The system roots do not know our self-signed certificate.
    let err = rt
        .block_on(send(&dest, &records))
        .expect_err("an untrusted certificate must be refused");
    let chain = format!("{err} / {:?}", std::error::Error::source(&err));
    assert!(matches!(err, SinkError::Http { .. }), "{chain}");
    assert!(chain.contains("UnknownIssuer"), "{chain}");

    // Trusted through SSL_CERT_FILE (read when the sink is opened).
    std::env::set_var("SSL_CERT_FILE", &ca);
    rt.block_on(send(&dest, &records))
        .expect("https with a trusted certificate");
    let expected: Vec<Row> = records.iter().map(row_of).collect();
    let (rows, items) = collect_rows(
        &rx,
        Format::Jsonl,
        expected.len(),
        Duration::from_secs(20),
        Duration::from_millis(300),
    );
    assert_exactly_once("https", &expected, &rows);
    assert!(items
        .iter()
        .all(|i| i.content_type.as_deref() == Some("application/x-ndjson")));
}

/// The daemon pushing CPU profiles to `url` every second, trusting `ca`
/// (through SSL_CERT_FILE, given to the child only) or nothing extra.
fn pyroscope_daemon(url: &str, ca: Option<&std::path::Path>) -> Daemon {
    let mut cmd = Xtcp2::new();
    cmd.args([
        "--frequency",
        "1s",
        "--timeout",
        "500ms",
        "--dest",
        "null",
        "--prom-listen",
        "",
        "--netns-proc-scan=false",
        "--netns-dirs",
        "",
        "--skip-capability-check",
        "--pyroscope-url",
        url,
        "--pyroscope-upload-sec",
        "1",
    ])
    .env_remove("SSL_CERT_FILE");
    if let Some(ca) = ca {
        cmd.env("SSL_CERT_FILE", ca);
    }
    cmd.spawn()
}

/// `--pyroscope-url https://...` verifies the server like an https://
/// destination: an untrusted certificate gets no profile (and a logged
/// failure); once trusted, gzipped pprof profiles arrive over TLS.
#[test]
fn pyroscope_push_over_https() {
    if !openssl_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (ca, cert, key) = make_certificates(dir.path());
    let (addr, rx) = tls_receiver(&cert, &key);
    let url = format!("https://{addr}/pyroscope");

    let mut untrusted = pyroscope_daemon(&url, None);
    let nothing = rx.recv_timeout(Duration::from_secs(10));
    untrusted.kill();
    let stderr = untrusted.stderr();
    assert!(nothing.is_err(), "a profile reached an untrusted server");
    assert!(stderr.contains("Pyroscope upload failed"), "{stderr}");

    let mut trusted = pyroscope_daemon(&url, Some(&ca));
    // The first profiler start loads symbol tables; allow for a slow machine.
    let upload = rx.recv_timeout(Duration::from_secs(30));
    trusted.kill();
    let upload = upload.unwrap_or_else(|_| panic!("no upload over https in 30 s; stderr:\n{}", trusted.stderr()));
    assert_eq!(upload.content_type.as_deref(), Some("application/octet-stream"));
    assert_eq!(&upload.bytes[..2], &[0x1f, 0x8b], "a gzipped pprof profile");
}
