//! `http://` and `https://`: one POST per envelope (hyper's pooled client,
//! so connections are reused between polls).
//!
//! Each request body is one complete output: the csv/tsv header, then the
//! envelope (for protobufList, one length-delimited `Envelope`), so a
//! ClickHouse URL such as
//! `http://ch:8123/?query=INSERT%20INTO%20xtcp%20FORMAT%20CSVWithNames`
//! ingests every request as it is. The content type comes from the format;
//! any status other than 2xx is an error. `-produceTimeout` bounds the
//! whole request (the delivery task applies it).
//!
//! TLS is rustls with the ring provider. Trusted roots are the system's
//! (`/etc/ssl/certs`, or `SSL_CERT_FILE` / `SSL_CERT_DIR` when set), and
//! the Mozilla roots built in (webpki-roots) when the system has none.

use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::header::{HeaderValue, CONTENT_TYPE, USER_AGENT};
use hyper::{Method, Request, Uri};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use super::SinkError;
use crate::batch::Envelope;

/// Bytes of an error response kept for the error message.
const ERROR_BODY_LIMIT: usize = 512;
/// Bytes of a response body read to let the connection be reused; a larger
/// body makes hyper close the connection instead.
const RESPONSE_BODY_LIMIT: usize = 64 * 1024;
/// Header carrying the envelope's row count, for receivers that check it.
pub const ROWS_HEADER: &str = "x-xtcp2-rows";
/// Header carrying the envelope's poll sequence.
pub const POLL_SEQ_HEADER: &str = "x-xtcp2-poll-seq";

pub struct HttpSink {
    uri: Uri,
    content_type: HeaderValue,
    header: Arc<[u8]>,
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
}

impl HttpSink {
    pub fn new(url: &str, content_type: &'static str, header: Arc<[u8]>) -> Result<Self, SinkError> {
        let uri: Uri = url
            .parse()
            .map_err(|e: hyper::http::uri::InvalidUri| SinkError::BadAddress {
                dest: url.to_string(),
                reason: format!("not a URL: {e}"),
            })?;
        let client = https_client().map_err(|reason| SinkError::Tls {
            dest: url.to_string(),
            reason,
        })?;
        Ok(HttpSink {
            uri,
            content_type: HeaderValue::from_static(content_type),
            header,
            client,
        })
    }

    pub async fn send(&mut self, envelope: &Envelope, dest: &str) -> Result<(), SinkError> {
        let http_error = |source: Box<dyn std::error::Error + Send + Sync>| SinkError::Http {
            dest: dest.to_string(),
            source,
        };
        let mut body = Vec::with_capacity(self.header.len() + envelope.payload().len());
        body.extend_from_slice(&self.header);
        body.extend_from_slice(envelope.payload());
        let request = Request::builder()
            .method(Method::POST)
            .uri(self.uri.clone())
            .header(CONTENT_TYPE, self.content_type.clone())
            .header(USER_AGENT, concat!("xtcp2/", env!("CARGO_PKG_VERSION")))
            .header(ROWS_HEADER, envelope.rows)
            .header(POLL_SEQ_HEADER, envelope.poll_seq)
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| http_error(Box::new(e)))?;
        let response = self
            .client
            .request(request)
            .await
            .map_err(|e| http_error(Box::new(e)))?;
        let status = response.status();
        let body = Limited::new(response.into_body(), RESPONSE_BODY_LIMIT).collect().await;
        if status.is_success() {
            return Ok(());
        }
        let text = match body {
            Ok(collected) => {
                let bytes = collected.to_bytes();
                String::from_utf8_lossy(&bytes[..bytes.len().min(ERROR_BODY_LIMIT)])
                    .trim()
                    .to_string()
            }
            Err(_) => String::from("(response body unreadable)"),
        };
        Err(SinkError::HttpStatus {
            dest: dest.to_string(),
            status: status.as_u16(),
            body: text,
        })
    }
}

/// rustls client settings: ring, TLS 1.2 and 1.3, system roots or the
/// built-in Mozilla roots.
/// A pooled HTTP/1.1 client for `http://` and `https://` URLs, verifying
/// servers against the trusted roots described above. The Pyroscope push
/// uses it too.
pub(crate) fn https_client<B>() -> Result<Client<HttpsConnector<HttpConnector>, B>, String>
where
    B: hyper::body::Body + Send,
    B::Data: Send,
{
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls_config()?)
        .https_or_http()
        .enable_http1()
        .build();
    Ok(Client::builder(TokioExecutor::new()).build(connector))
}

fn tls_config() -> Result<rustls::ClientConfig, String> {
    let mut roots = rustls::RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    for e in &native.errors {
        tracing::debug!(error = %e, "skipping an unreadable system certificate");
    }
    let (added, _ignored) = roots.add_parsable_certificates(native.certs);
    if added == 0 {
        tracing::info!("no system CA certificates found; trusting the built-in Mozilla roots");
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth())
}
