#!/usr/bin/env python3
"""Seeds the fuzz corpora from the shared real captures, so the fuzzers
start from what kernels really send instead of from nothing.

    fuzz/seed-corpora.py [FIXTURES_DIR] [CORPUS_DIR]

FIXTURES_DIR defaults to $XTCP2_FIXTURES, else ../shared/fixtures/inet_diag
beside the repository,
CORPUS_DIR to fuzz/corpus. Writes, named by content hash (so reseeding adds
nothing twice):

- corpus/pcap_reader: each pcap cut after its first packets (at most
  MAX_SEED bytes, at a packet boundary), and the bare netlink streams;
- corpus/netlink_decode: the netlink datagrams of those packets (protocol 4),
  each socket payload in them (inet_diag_msg + attributes), and each
  single-attribute fixture behind a zeroed 72-byte inet_diag_msg.

Nothing large is committed: CI runs this before fuzzing.
"""

import hashlib
import os
import pathlib
import struct
import sys

MAX_SEED = 16 * 1024  # libFuzzer mutates small inputs faster
MAX_PER_FILE = 16  # datagrams / payloads taken from one capture
NETLINK_SOCK_DIAG = 4
SOCK_DIAG_BY_FAMILY = 20
NLM_F_REQUEST = 1


def write(directory, data, written):
    if not data:
        return
    name = hashlib.sha1(data).hexdigest()
    path = directory / name
    if not path.exists():
        path.write_bytes(data)
        written[directory.name] = written.get(directory.name, 0) + 1


def pcap_packets(data):
    """(record start, record end, cooked protocol, netlink bytes) of a classic pcap."""
    if len(data) < 24:
        return
    magic = struct.unpack_from("<I", data)[0]
    if magic in (0xA1B2C3D4, 0xA1B23C4D):
        endian = "<"
    elif magic in (0xD4C3B2A1, 0x4D3CB2A1):
        endian = ">"
    else:
        return
    offset = 24
    while offset + 16 <= len(data):
        incl = struct.unpack_from(endian + "I", data, offset + 8)[0]
        end = offset + 16 + incl
        if end > len(data) or incl < 16:
            return
        body = data[offset + 16 : end]
        yield offset, end, struct.unpack_from(">H", body, 14)[0], body[16:]
        offset = end


def netlink_messages(data):
    """(type, flags, payload, end) of each whole message, native endian (x86)."""
    offset = 0
    while offset + 16 <= len(data):
        length, kind, flags = struct.unpack_from("=IHH", data, offset)
        if length < 16 or offset + length > len(data):
            return
        yield kind, flags, data[offset + 16 : offset + length], offset + length
        offset += (length + 3) & ~3


def main():
    repo = pathlib.Path(__file__).resolve().parent.parent
    default = os.environ.get("XTCP2_FIXTURES") or repo.parent / "shared/fixtures/inet_diag"
    fixtures = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else default)
    corpus = pathlib.Path(sys.argv[2]) if len(sys.argv) > 2 else repo / "fuzz/corpus"
    if not fixtures.is_dir():
        if os.environ.get("CI") == "true":
            sys.exit(f"seed-corpora: no fixtures at {fixtures} (CI=true: the fuzzers must start from real captures)")
        print(f"seed-corpora: WARNING: no fixtures at {fixtures}; the fuzzers start from their corpora as they are",
              file=sys.stderr)
        return
    pcap_dir = corpus / "pcap_reader"
    netlink_dir = corpus / "netlink_decode"
    pcap_dir.mkdir(parents=True, exist_ok=True)
    netlink_dir.mkdir(parents=True, exist_ok=True)
    written = {}

    for path in sorted(fixtures.rglob("*.pcap")):
        data = path.read_bytes()
        packets = list(pcap_packets(data))
        # The pcap, cut after as many whole packets as fit in MAX_SEED.
        cut = 24
        for _, end, _, _ in packets:
            if end > MAX_SEED and cut > 24:
                break
            cut = end
        write(pcap_dir, data[:cut], written)
        datagrams = payloads = 0
        for _, _, protocol, netlink in packets:
            if protocol != NETLINK_SOCK_DIAG:
                continue
            if datagrams < MAX_PER_FILE and len(netlink) <= MAX_SEED:
                write(netlink_dir, netlink, written)
                datagrams += 1
            for kind, flags, payload, _ in netlink_messages(netlink):
                if kind == SOCK_DIAG_BY_FAMILY and not flags & NLM_F_REQUEST and payloads < MAX_PER_FILE:
                    write(netlink_dir, payload, written)
                    payloads += 1

    # Bare netlink streams: the raw captures and the single-message fixtures.
    raw_files = list((fixtures / "netlink_packets_capture").rglob("*"))
    raw_files += [p for p in fixtures.rglob("netlink_*") if p.suffix != ".pcap"]
    for path in sorted(p for p in raw_files if p.is_file()):
        data = path.read_bytes()
        cut = 0
        for _, _, _, end in netlink_messages(data):
            if end > MAX_SEED and cut > 0:
                break
            cut = end
        write(pcap_dir, data[: cut or MAX_SEED], written)
        write(netlink_dir, data[: cut or MAX_SEED], written)

    # One attribute each, behind a zeroed inet_diag_msg: a payload that
    # reaches that attribute's decoder at once.
    for path in sorted(fixtures.rglob("attribute_*")):
        if path.is_file():
            write(netlink_dir, bytes(72) + path.read_bytes(), written)

    for name in ("pcap_reader", "netlink_decode"):
        total = sum(1 for _ in (corpus / name).iterdir())
        print(f"seed-corpora: {name}: {written.get(name, 0)} new seeds, {total} in {corpus / name}")


if __name__ == "__main__":
    main()
