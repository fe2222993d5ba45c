//! `null`: records are collected and counted, then thrown away (the
//! collectors skip encoding them: see [`Destination::discards_records`]).
//!
//! [`Destination::discards_records`]: super::Destination::discards_records

use super::{DestinationKind, Sent, SinkError, Transport};
use crate::batch::Envelope;
use crate::format::StreamFormat;

/// The `null` destination.
pub struct Null;

impl DestinationKind for Null {
    const SCHEMES: &'static [&'static str] = &["null"];
    const TAKES_ADDRESS: bool = false;
    const FORM: &'static str = "null";
    const SUMMARY: &'static str = "nothing: records are counted and discarded (benchmarks, dry runs)";
    type Address = ();
    type Sink = NullSink;

    fn parse(_scheme: &str, _rest: &str) -> Result<(), String> {
        Ok(())
    }

    async fn open(_address: &(), _format: &StreamFormat) -> Result<NullSink, SinkError> {
        Ok(NullSink)
    }
}

pub struct NullSink;

impl Transport for NullSink {
    async fn send(&mut self, _envelope: &Envelope, _dest: &str) -> Result<Sent, SinkError> {
        Ok(Sent::default())
    }
}
