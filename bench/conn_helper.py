#!/usr/bin/env python3
"""Holds established loopback TCP connections until stdin closes.

Two ways to run it:

``conn_helper.py COUNT [--listen ADDR] [--source-net A.B]``
    Run in the namespace to load (``nsenter --net=FILE python3
    conn_helper.py COUNT``). It opens one listener (on 127.0.0.1, or on
    ADDR), connects COUNT clients to it and accepts them, so the namespace
    holds 2*COUNT established sockets plus one listening socket. With
    ``--source-net 127.B`` the clients' own addresses are spread over
    127.B.0.1 to 127.B.255.254 (``IP_BIND_ADDRESS_NO_PORT``, so the port is
    still picked at connect time): with a listener address of its own and
    client addresses of its own, each helper's connections have 4-tuples
    no other helper can take, and the ephemeral port range never runs out,
    however many helpers run (bench/load.py's million sockets). It prints
    ``ready COUNT`` once every connection is established, then waits for
    EOF on stdin (the orchestrator closing the pipe, or dying) and exits,
    which closes everything.

``conn_helper.py --serve``
    Takes commands on stdin, one per line, and answers each with one line:
    ``open ID NETNS COUNT`` enters the namespace file NETNS (``-``: the
    helper's own namespace), opens a listener and COUNT connections there,
    comes back to its own namespace and answers ``ok ID SOCKETS``;
    ``close ID`` closes that group's sockets and answers ``ok ID 0``. A
    socket stays in the namespace it was created in, so one helper can hold
    connections in hundreds of namespaces (bench/load.py's namespace load
    and churn). EOF on stdin closes everything and exits.

Each connection costs two file descriptors; the orchestrator keeps what one
helper holds below MAX_CONNECTIONS so it fits the per-process open-file
limit.
"""

import ctypes
import os
import resource
import socket
import struct
import sys

# The hard RLIMIT_NOFILE on the benchmark machine is 20,000 (and raising a
# hard limit needs CAP_SYS_RESOURCE, which even root lacks there); two fds
# per connection plus the listener and stdio must fit under it.
MAX_CONNECTIONS = 9_900
# SO_LINGER on with a zero timeout: close() sends RST and leaves no
# TIME_WAIT socket behind, which would otherwise stay in the namespace for a
# minute and be dumped (and counted) by the next benchmark configuration.
ABORT_ON_CLOSE = struct.pack("ii", 1, 0)
# Connect this many clients before accepting them: stays under the
# listen backlog (net.core.somaxconn, 4096 by default) so no SYN is dropped
# and retried a second later.
CONNECT_BATCH = 1_000
# linux/in.h: bind() reserves the address only, the port is chosen by
# connect(), which may share it with other 4-tuples.
IP_BIND_ADDRESS_NO_PORT = 24
CLONE_NEWNET = 0x40000000

_libc = ctypes.CDLL(None, use_errno=True)


def setns(fd):
    """Moves the calling thread into the network namespace open as fd."""
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns: {os.strerror(err)}")


def source_addresses(net):
    """127.B.x.y for x.y from 0.1 to 255.254, endlessly (B given as '127.B')."""
    b = int(net.split(".")[1])
    while True:
        for x in range(256):
            for y in range(1, 255):
                yield f"127.{b}.{x}.{y}"


def open_connections(count, listen_addr="127.0.0.1", sources=None):
    """A listener on listen_addr and `count` connections to it; returns
    every socket (listener first)."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind((listen_addr, 0))
    listener.listen(CONNECT_BATCH * 2)
    address = listener.getsockname()
    held = [listener]
    remaining = count
    while remaining > 0:
        batch = min(CONNECT_BATCH, remaining)
        for _ in range(batch):
            client = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, ABORT_ON_CLOSE)
            if sources is not None:
                client.setsockopt(socket.IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, 1)
                client.bind((next(sources), 0))
            client.connect(address)
            held.append(client)
        for _ in range(batch):
            server, _peer = listener.accept()
            server.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, ABORT_ON_CLOSE)
            held.append(server)
        remaining -= batch
    return held


def raise_nofile():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def serve():
    """The command loop of --serve (see the module doc)."""
    home = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    groups = {}
    out = sys.stdout
    for line in sys.stdin:
        words = line.split()
        if not words:
            continue
        try:
            if words[0] == "open" and len(words) == 4:
                gid, netns, count = words[1], words[2], int(words[3])
                if netns != "-":
                    fd = os.open(netns, os.O_RDONLY)
                    try:
                        setns(fd)
                    finally:
                        os.close(fd)
                try:
                    groups[gid] = open_connections(count)
                finally:
                    if netns != "-":
                        setns(home)
                out.write(f"ok {gid} {len(groups[gid])}\n")
            elif words[0] == "close" and len(words) == 2:
                for s in groups.pop(words[1], []):
                    s.close()
                out.write(f"ok {words[1]} 0\n")
            else:
                out.write(f"error - unknown command {line.strip()!r}\n")
        except OSError as e:
            out.write(f"error {words[1] if len(words) > 1 else '-'} {e}\n")
        out.flush()
    return 0


def main() -> int:
    raise_nofile()
    if sys.argv[1:] == ["--serve"]:
        return serve()
    args = sys.argv[1:]
    count = int(args.pop(0))
    listen_addr, sources = "127.0.0.1", None
    while args:
        flag = args.pop(0)
        if flag == "--listen":
            listen_addr = args.pop(0)
        elif flag == "--source-net":
            sources = source_addresses(args.pop(0))
        else:
            print(f"conn_helper: unknown argument {flag!r}", file=sys.stderr)
            return 2
    if count > MAX_CONNECTIONS:
        print(f"conn_helper: {count} connections exceed {MAX_CONNECTIONS}", file=sys.stderr)
        return 2
    held = open_connections(count, listen_addr, sources)
    sys.stdout.write(f"ready {count}\n")
    sys.stdout.flush()
    # Block until the orchestrator closes our stdin.
    sys.stdin.buffer.read()
    del held
    return 0


if __name__ == "__main__":
    sys.exit(main())
