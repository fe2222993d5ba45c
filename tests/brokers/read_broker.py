"""Reads what xtcp2 sent to NATS or Valkey, with clients independent of
the daemon's (nats-py, redis-py), and decodes each message with Google's
protobuf library against a .proto of proto/ (tests/protobuf/read_protobuf.py).

    read_broker.py PROTO WHAT MODE ARGS...

WHAT is records=PORT,... (the decoded records with one of these local or
remote ports; a busy machine's thousands of others are only counted) or
counts (only how many records each message holds). MODE:

    jetstream URL STREAM
        every message stored in the JetStream stream (direct reads by
        sequence, no consumer)
    nats-subscribe URL SUBJECT
        core NATS subscription: prints "ready" once subscribed, collects
        (reconnecting across server restarts) until stdin closes
    xrange HOST PORT KEY
        every entry of the Valkey/Redis stream KEY
    subscribe HOST PORT CHANNEL
        Valkey/Redis SUBSCRIBE: prints "ready" once subscribed, collects
        (subscribing again after a server restart) until stdin closes

Prints {"messages": [{"id": ..., "rows": N or null, "count": N, "records": [row, ...]}]}
where id is the message's de-duplication key (Nats-Msg-Id, the stream
entry's envelope field) when it has one, rows the record count the message
declares, records the decoded rows (see read_protobuf.py's row()).

Used by tests/nats_valkey.rs; needs nats-py, redis, protobuf, grpcio-tools.
"""

import asyncio
import json
import os
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "protobuf"))
import read_protobuf  # noqa: E402


def decode(module, out_dir, payload):
    path = os.path.join(out_dir, "message.bin")
    with open(path, "wb") as f:
        f.write(payload)
    return read_protobuf.read(module, "protobufList", path)


def count(module, payload):
    """Records in a protobufList payload, each Envelope parsed by protobuf."""
    at, n = 0, 0
    while at < len(payload):
        length, at = read_protobuf.varint(payload, at)
        envelope = module.Envelope()
        envelope.ParseFromString(payload[at : at + length])
        at += length
        (rows_field,) = envelope.DESCRIPTOR.fields
        n += len(getattr(envelope, rows_field.name))
    return n


def stdin_closed():
    """An event set once stdin reaches EOF (the test's stop signal)."""
    closed = threading.Event()

    def wait():
        sys.stdin.read()
        closed.set()

    threading.Thread(target=wait, daemon=True).start()
    return closed


async def jetstream(url, stream):
    import nats

    nc = await nats.connect(url)
    js = nc.jetstream()
    info = await js.stream_info(stream)
    out = []
    for seq in range(info.state.first_seq, info.state.last_seq + 1):
        msg = await js.get_msg(stream, seq)
        headers = msg.headers or {}
        rows = headers.get("Xtcp2-Rows")
        out.append((headers.get("Nats-Msg-Id"), int(rows) if rows else None, msg.data))
    await nc.close()
    return out


async def nats_subscribe(url, subject):
    import nats

    got = []

    async def on_message(msg):
        headers = msg.headers or {}
        rows = headers.get("Xtcp2-Rows")
        got.append((None, int(rows) if rows else None, msg.data))

    async def reconnecting(_error):
        # Refused connections while the server restarts are expected.
        pass

    nc = await nats.connect(url, max_reconnect_attempts=-1, reconnect_time_wait=0.1, error_cb=reconnecting)
    await nc.subscribe(subject, cb=on_message)
    await nc.flush()
    print("ready", flush=True)
    closed = stdin_closed()
    while not closed.is_set():
        await asyncio.sleep(0.05)
    # What the server sent before the stop is in the socket: read it.
    try:
        await nc.flush(timeout=2)
    except Exception:
        pass
    await nc.drain()
    return got


def xrange(host, port, key):
    import redis

    r = redis.Redis(host=host, port=int(port))
    out = []
    for _id, fields in r.xrange(key, "-", "+"):
        out.append((fields[b"envelope"].decode(), int(fields[b"rows"]), fields[b"payload"]))
    return out


def subscribe(host, port, channel):
    import redis

    got = []
    closed = None
    pubsub = None
    while True:
        try:
            if pubsub is None:
                pubsub = redis.Redis(host=host, port=int(port)).pubsub()
                pubsub.subscribe(channel)
                # Subscribed once the server's confirmation was read.
                while True:
                    reply = pubsub.get_message(timeout=1.0)
                    if reply is not None and reply["type"] == "subscribe":
                        break
                if closed is None:
                    print("ready", flush=True)
                    closed = stdin_closed()
            message = pubsub.get_message(timeout=0.1)
            if message is not None and message["type"] == "message":
                got.append((None, None, message["data"]))
            elif message is None and closed.is_set():
                return got
        except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError):
            pubsub = None
            if closed is not None and closed.is_set():
                return got
            time.sleep(0.05)


def main():
    proto, what, mode, *args = sys.argv[1:]
    with tempfile.TemporaryDirectory() as out_dir:
        module = read_protobuf.compile_proto(proto, out_dir)
        if mode == "jetstream":
            messages = asyncio.run(jetstream(*args))
        elif mode == "nats-subscribe":
            messages = asyncio.run(nats_subscribe(*args))
        elif mode == "xrange":
            messages = xrange(*args)
        elif mode == "subscribe":
            messages = subscribe(*args)
        else:
            sys.exit(f"unknown mode {mode}")
        out = []
        for mid, rows, payload in messages:
            if what.startswith("records="):
                ports = {int(p) for p in what.split("=", 1)[1].split(",")}
                records = decode(module, out_dir, payload)
                wanted = [r for r in records if r.get("idiag_sport") in ports or r.get("idiag_dport") in ports]
                out.append({"id": mid, "rows": rows, "count": len(records), "records": wanted})
            else:
                out.append({"id": mid, "rows": rows, "count": count(module, payload)})
    json.dump({"messages": out}, sys.stdout)


if __name__ == "__main__":
    main()
