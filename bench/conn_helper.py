#!/usr/bin/env python3
"""Holds COUNT established loopback TCP connections until stdin closes.

Run in the namespace to load (``nsenter --net=FILE python3 conn_helper.py
COUNT``). It opens one listener on 127.0.0.1, connects COUNT clients to it
and accepts them, so the namespace holds 2*COUNT established sockets plus
one listening socket. It prints ``ready COUNT`` on stdout once every
connection is established, then waits for EOF on stdin (the orchestrator
closing the pipe, or dying) and exits, which closes everything.

Each connection costs two file descriptors; the orchestrator keeps COUNT
below MAX_CONNECTIONS so one helper fits the per-process open-file limit.
"""

import resource
import socket
import struct
import sys

# The hard RLIMIT_NOFILE on the benchmark machine is 20,000; two fds per
# connection plus the listener and stdio must fit under it.
MAX_CONNECTIONS = 9_900
# SO_LINGER on with a zero timeout: close() sends RST and leaves no
# TIME_WAIT socket behind, which would otherwise stay in the namespace for a
# minute and be dumped (and counted) by the next benchmark configuration.
ABORT_ON_CLOSE = struct.pack("ii", 1, 0)
# Connect this many clients before accepting them: stays under the
# listen backlog (net.core.somaxconn, 4096 by default) so no SYN is dropped
# and retried a second later.
CONNECT_BATCH = 1_000


def main() -> int:
    count = int(sys.argv[1])
    if count > MAX_CONNECTIONS:
        print(f"conn_helper: {count} connections exceed {MAX_CONNECTIONS}", file=sys.stderr)
        return 2
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))

    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(CONNECT_BATCH * 2)
    address = listener.getsockname()

    held = []
    remaining = count
    while remaining > 0:
        batch = min(CONNECT_BATCH, remaining)
        for _ in range(batch):
            client = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, ABORT_ON_CLOSE)
            client.connect(address)
            held.append(client)
        for _ in range(batch):
            server, _peer = listener.accept()
            server.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, ABORT_ON_CLOSE)
            held.append(server)
        remaining -= batch

    sys.stdout.write(f"ready {count}\n")
    sys.stdout.flush()
    # Block until the orchestrator closes our stdin.
    sys.stdin.buffer.read()
    return 0


if __name__ == "__main__":
    sys.exit(main())
