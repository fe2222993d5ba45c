"""Reads a Kafka topic with kafka-python (not librdkafka) and decodes each
message as one protobufList Envelope with Google's protobuf library.

    consume.py BROKER TOPIC PROTO IDLE_SECONDS [MIN_MESSAGES]
        reads every partition of TOPIC from the beginning until
        MIN_MESSAGES (default 1) have arrived and then no message came for
        IDLE_SECONDS; prints {"messages": [...]} where a message is
        {partition, offset, key, headers: {name: text}, value_bytes,
        compression, rows: [row, ...]} (rows as read_protobuf.py gives them).

    consume.py BROKER TOPIC - IDLE_SECONDS [MIN_MESSAGES] --raw-dir DIR
        also writes each message's value to DIR/<partition>-<offset>.bin
        (what ClickHouse is given in the tests).

Used by tests/kafka.rs; needs kafka-python (with zstandard, lz4, cramjam
for the codecs) and protobuf with grpcio-tools.
"""

import json
import os
import sys
import tempfile
import time

from kafka import KafkaConsumer, TopicPartition

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "protobuf"))
import read_protobuf  # noqa: E402


def decode(module, value):
    """One message: a varint length, then one Envelope, and nothing else."""
    length, at = read_protobuf.varint(value, 0)
    if at + length != len(value):
        sys.exit(f"message of {len(value)} bytes is not one length-delimited Envelope ({length} + {at})")
    envelope = module.Envelope()
    envelope.ParseFromString(value[at:])
    return read_protobuf.rows_of(envelope)


def main():
    args = sys.argv[1:]
    raw_dir = None
    if "--raw-dir" in args:
        i = args.index("--raw-dir")
        raw_dir = args[i + 1]
        del args[i : i + 2]
    broker, topic, proto, idle = args[:4]
    minimum = int(args[4]) if len(args) > 4 else 1
    idle = float(idle)
    consumer = KafkaConsumer(
        bootstrap_servers=[broker],
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        consumer_timeout_ms=int(idle * 1000),
    )
    deadline = time.monotonic() + 60
    partitions = None
    while partitions is None and time.monotonic() < deadline:
        partitions = consumer.partitions_for_topic(topic)
        if partitions is None:
            time.sleep(0.2)
    if partitions is None:
        sys.exit(f"topic {topic} has no partitions")
    consumer.assign([TopicPartition(topic, p) for p in sorted(partitions)])
    consumer.seek_to_beginning()
    messages = []
    with tempfile.TemporaryDirectory() as out_dir:
        module = read_protobuf.compile_proto(proto, out_dir) if proto != "-" else None
        while True:
            for m in consumer:
                entry = {
                    "partition": m.partition,
                    "offset": m.offset,
                    "key": m.key.decode("utf-8") if m.key is not None else None,
                    "headers": {k: v.decode("utf-8") for k, v in (m.headers or [])},
                    "value_bytes": len(m.value),
                }
                if module is not None:
                    entry["rows"] = decode(module, m.value)
                if raw_dir is not None:
                    with open(os.path.join(raw_dir, f"{m.partition}-{m.offset}.bin"), "wb") as f:
                        f.write(m.value)
                messages.append(entry)
            if len(messages) >= minimum or time.monotonic() > deadline:
                break
    consumer.close()
    json.dump({"messages": messages}, sys.stdout)


if __name__ == "__main__":
    main()
