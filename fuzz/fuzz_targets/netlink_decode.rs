//! The netlink decoder on arbitrary bytes, taken three ways:
//! - as one socket payload (`inet_diag_msg` + attributes) for
//!   `SocketDecoder::decode`, with every attribute decoder on and with none;
//! - as a received dump datagram: the message walk (`NetlinkMessages`,
//!   `classify`) and the live receive step `absorb_datagram`, decoding each
//!   socket reply;
//! - each record decoded is encoded in every output format and record
//!   schema, as the daemon would.
//!
//! No input may panic, and the receive step may not see a socket the walk
//! does not.

#![no_main]

use std::cell::RefCell;

use libfuzzer_sys::fuzz_target;
use xtcp2::decode::{classify, Deserializers, NetlinkMessages, Reply, SocketDecoder};
use xtcp2::format::{Encoder, Format, StreamFormat};
use xtcp2::kernel::socket::{absorb_datagram, DumpSummary};
use xtcp2::record::RecordSchema;

/// One encoder per format and schema, and their output buffer: built once (costly,
/// and stateless from one record to the next), unlike the decoders, which
/// are fresh for each input so that a crash reproduces from its input alone.
struct Encoding {
    encoders: Vec<Box<dyn Encoder>>,
    out: Vec<u8>,
}

impl Encoding {
    fn new() -> Self {
        Encoding {
            encoders: RecordSchema::ALL
                .iter()
                .flat_map(|&schema| {
                    Format::ALL.iter().map(move |f| {
                        StreamFormat::in_schema(f.name(), schema, &[])
                            .expect("every format with every column")
                            .encoder()
                    })
                })
                .collect(),
            out: Vec::new(),
        }
    }
}

thread_local! {
    static ENCODING: RefCell<Encoding> = RefCell::new(Encoding::new());
}

struct Decoders<'e> {
    all: SocketDecoder,
    none: SocketDecoder,
    encoding: &'e mut Encoding,
}

impl Decoders<'_> {
    /// Decodes a socket payload both ways and encodes what decoded.
    fn socket(&mut self, payload: &[u8]) {
        let _ = self.none.decode(payload);
        let (record, error) = self.all.decode(payload);
        if let Some(e) = &error {
            assert!(!e.to_string().is_empty());
        }
        if let Some(record) = record {
            let Encoding { encoders, out } = &mut *self.encoding;
            for encoder in encoders.iter_mut() {
                out.clear();
                encoder.encode(record, out);
                assert!(!out.is_empty(), "{:?} wrote nothing", encoder.format());
            }
        }
    }
}

fuzz_target!(|data: &[u8]| ENCODING.with_borrow_mut(|encoding| {
    let mut decoders = Decoders {
        all: SocketDecoder::new(Deserializers::all()),
        none: SocketDecoder::new(Deserializers::NONE),
        encoding,
    };
    decoders.socket(data);

    let mut walked = 0u64;
    for msg in NetlinkMessages::new(data) {
        let Ok(msg) = msg else { break };
        if let Reply::Socket(payload) = classify(&msg) {
            walked += 1;
            decoders.socket(payload);
        }
    }

    // The receive step keeps only messages of its dump's sequence number:
    // take the first message's, as a real dump would.
    let seq = data.get(8..12).map_or(0, |b| u32::from_ne_bytes(b.try_into().unwrap()));
    let mut summary = DumpSummary::default();
    let mut delivered = 0u64;
    let _ = absorb_datagram(data, seq, 0, &mut summary, &mut |_, _| delivered += 1);
    assert_eq!(summary.sockets, delivered);
    assert!(
        delivered <= walked,
        "the receive step saw {delivered} sockets, the walk {walked}"
    );
}));
