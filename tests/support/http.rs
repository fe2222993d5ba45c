//! The HTTP/1.1 message head, read one way by every test client and test
//! receiver. Std only, so nothing of ours sits between a test and the
//! daemon's own HTTP stack.

use std::io::BufRead;

/// Header names and values in arrival order, trimmed.
pub type Headers = Vec<(String, String)>;

fn bad(msg: String) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, msg)
}

/// Reads one message head: the start line (request or status line) and
/// the headers. An error when the connection closes before or inside it.
pub fn read_head(reader: &mut impl BufRead) -> std::io::Result<(String, Headers)> {
    let mut first = String::new();
    if reader.read_line(&mut first)? == 0 {
        return Err(bad("connection closed before a message".into()));
    }
    let mut headers = Vec::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            return Err(bad("connection closed inside a message head".into()));
        }
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        let (k, v) = line
            .split_once(':')
            .ok_or_else(|| bad(format!("bad header {line:?}")))?;
        headers.push((k.trim().to_string(), v.trim().to_string()));
    }
    Ok((first.trim_end().to_string(), headers))
}

/// The value of header `name` (case-insensitive).
pub fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// The Content-Length, when present and a number.
pub fn content_length(headers: &[(String, String)]) -> Option<usize> {
    header(headers, "content-length").and_then(|v| v.parse().ok())
}
