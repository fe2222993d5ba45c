//! Format: records → bytes, one encoder per `-marshal` value.
//!
//! An encoder appends one record at a time to a caller-owned buffer (the
//! envelope being filled), so encoding never allocates per record. Envelope
//! framing (CSV header, protobuf length prefix) is the encoder's business
//! too, through [`Encoder::begin_envelope`] / [`Encoder::end_envelope`].

pub mod jsonl;

use crate::record::Record;

/// Encodes records for one output format.
pub trait Encoder: Send {
    /// MIME type for HTTP destinations.
    fn content_type(&self) -> &'static str;
    /// Called before the first record of an envelope.
    fn begin_envelope(&mut self, _out: &mut Vec<u8>) {}
    /// Appends one record.
    fn encode(&mut self, record: &Record, out: &mut Vec<u8>);
    /// Called after the last record of an envelope.
    fn end_envelope(&mut self, _out: &mut Vec<u8>) {}
}

#[derive(Debug, thiserror::Error)]
#[error("unknown --marshal {0:?}; valid: jsonl, csv, tsv, protobufList, msgpack")]
pub struct UnknownFormat(pub String);

/// Builds the encoder for a `-marshal` name.
pub fn encoder_for(name: &str, _columns: &[String]) -> Result<Box<dyn Encoder>, UnknownFormat> {
    match name {
        "jsonl" | "json" => Ok(Box::new(jsonl::JsonLines)),
        other => Err(UnknownFormat(other.to_string())),
    }
}
