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
//! TLS comes from [`crate::https_client`]: rustls, verified against the
//! system's roots or the built-in Mozilla roots.

use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::header::{HeaderValue, CONTENT_TYPE, USER_AGENT};
use hyper::{Method, Request, Uri};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;

use crate::https_client::https_client;

use super::{DestinationKind, Disposition, Sent, SinkError, Transport};
use crate::batch::Envelope;
use crate::format::StreamFormat;

/// The `http://` and `https://` destinations.
pub struct Http;

impl DestinationKind for Http {
    const SCHEMES: &'static [&'static str] = &["http", "https"];
    const TAKES_ADDRESS: bool = true;
    const FORM: &'static str = "http(s)://HOST[:PORT]/PATH?QUERY";
    const SUMMARY: &'static str =
        "one POST per envelope (pooled connections; TLS verified against the system roots); each body opens with the csv header";
    type Address = Uri;
    type Sink = HttpSink;

    fn parse(scheme: &str, rest: &str) -> Result<Uri, String> {
        let url = format!("{scheme}:{rest}");
        let uri: Uri = url
            .parse()
            .map_err(|e: hyper::http::uri::InvalidUri| format!("not a URL: {e}"))?;
        if uri.host().is_none_or(str::is_empty) {
            return Err("the URL has no host".into());
        }
        Ok(uri)
    }

    async fn open(uri: &Uri, format: &StreamFormat) -> Result<HttpSink, SinkError> {
        HttpSink::new(uri.clone(), format.format().content_type(), format.header_shared())
    }
}

/// Bytes of an error response kept for the error message.
const ERROR_BODY_LIMIT: usize = 512;
/// Bytes of a response body read to let the connection be reused; a larger
/// body makes hyper close the connection instead.
const RESPONSE_BODY_LIMIT: usize = 64 * 1024;
/// Header carrying the envelope's row count, for receivers that check it.
pub(crate) const ROWS_HEADER: &str = "x-xtcp2-rows";
/// Header carrying the envelope's poll sequence.
pub(crate) const POLL_SEQ_HEADER: &str = "x-xtcp2-poll-seq";

pub struct HttpSink {
    uri: Uri,
    content_type: HeaderValue,
    header: Arc<[u8]>,
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
}

impl HttpSink {
    pub fn new(uri: Uri, content_type: &'static str, header: Arc<[u8]>) -> Result<Self, SinkError> {
        let client = https_client().map_err(|reason| SinkError::Tls {
            dest: uri.to_string(),
            reason,
        })?;
        Ok(HttpSink {
            uri,
            content_type: HeaderValue::from_static(content_type),
            header,
            client,
        })
    }

    async fn post(&mut self, envelope: &Envelope, dest: &str) -> Result<(), SinkError> {
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

impl Transport for HttpSink {
    async fn send(&mut self, envelope: &Envelope, dest: &str) -> Result<Sent, SinkError> {
        self.post(envelope, dest).await.map(|()| Sent::default())
    }

    /// A 4xx other than 408 (timeout) and 429 (too many requests) rejects
    /// the envelope's content: sending it again cannot succeed.
    fn classify(&self, error: &SinkError) -> Disposition {
        match error {
            SinkError::HttpStatus { status, .. } if is_rejection(*status) => Disposition::Drop,
            other => other.default_disposition(),
        }
    }
}

/// The receiver refused the request's content, not its timing.
fn is_rejection(status: u16) -> bool {
    (400..500).contains(&status) && status != 408 && status != 429
}
