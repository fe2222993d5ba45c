"""The pipeline servers of `bench/run.py --mode pipelines`: a tansu Kafka
broker, a NATS server with JetStream and a Valkey/Redis server on loopback,
each reached through a byte-counting TCP relay, so that the benchmark can
say how many bytes one record costs on the wire to each (Kafka per codec).

The relay counts what the client sent (requests, metadata and the record
batches, as the kernel carried them), which is what a fleet's network
pays; it is plain Python, measured apart from xtcp2's own CPU (wait4 of
the xtcp2 process only).
"""

import os
import shutil
import socket
import subprocess
import threading
import time
from pathlib import Path

# Where ci/install-deps.sh installs tansu (the tests use the same one).
CI_TANSU = "/var/cache/xtcp2-ci/tansu/bin/tansu"
SERVER_START_TIMEOUT_S = 30
# Kafka partitions of each benchmark topic: as many as a small fleet topic.
PARTITIONS = 3


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_listening(port, what, proc):
    deadline = time.monotonic() + SERVER_START_TIMEOUT_S
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            if proc.poll() is not None:
                raise RuntimeError(f"{what} exited {proc.returncode} before listening on {port}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"{what} did not listen on {port} in {SERVER_START_TIMEOUT_S}s")
            time.sleep(0.05)


class CountingRelay:
    """Accepts on `port` and relays every connection to `target_port`,
    counting the bytes sent towards the server."""

    def __init__(self, target_port):
        self.port = free_port()
        self.target_port = target_port
        self.lock = threading.Lock()
        self.to_server = 0
        self.listener = socket.create_server(("127.0.0.1", self.port))
        self.closed = False
        threading.Thread(target=self.accept_loop, daemon=True).start()

    def reset(self):
        with self.lock:
            self.to_server = 0

    def sent(self):
        with self.lock:
            return self.to_server

    def accept_loop(self):
        while not self.closed:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            try:
                server = socket.create_connection(("127.0.0.1", self.target_port))
            except OSError:
                client.close()
                continue
            threading.Thread(target=self.pump, args=(client, server, True), daemon=True).start()
            threading.Thread(target=self.pump, args=(server, client, False), daemon=True).start()

    def pump(self, src, dst, counted):
        try:
            while chunk := src.recv(1 << 16):
                dst.sendall(chunk)
                if counted:
                    with self.lock:
                        self.to_server += len(chunk)
        except OSError:
            pass
        finally:
            # Half-close onwards so each side sees the other's end.
            for s, how in ((dst, socket.SHUT_WR), (src, socket.SHUT_RD)):
                try:
                    s.shutdown(how)
                except OSError:
                    pass

    def close(self):
        self.closed = True
        self.listener.close()


class Server:
    """One server process and its relay; `dest` is what xtcp2 is given."""

    def __init__(self, name, argv_for_port, scheme, workdir, env=None, advertise_relay=False):
        self.name = name
        self.port = free_port()
        self.relay = CountingRelay(self.port)
        argv = argv_for_port(self.port, self.relay.port if advertise_relay else self.port)
        self.log_path = workdir / f"{name}.log"
        with open(self.log_path, "wb") as log_file:
            self.proc = subprocess.Popen(argv, stdout=log_file, stderr=subprocess.STDOUT, cwd=workdir,
                                         env=env, start_new_session=True)
        wait_listening(self.port, name, self.proc)
        self.dest = f"{scheme}:127.0.0.1:{self.relay.port}"

    def close(self):
        self.relay.close()
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def tansu_path():
    path = os.environ.get("XTCP2_TANSU") or CI_TANSU
    if not Path(path).is_file():
        path = shutil.which("tansu")
    if not path:
        raise RuntimeError(f"tansu is missing: set XTCP2_TANSU or run ci/install-deps.sh (installs {CI_TANSU})")
    return path


class Pipelines:
    """The servers, started on first use and stopped by `close()`."""

    def __init__(self, workdir):
        self.workdir = Path(workdir) / "pipelines"
        self.workdir.mkdir(exist_ok=True)
        self.servers = {}
        self.topics = 0

    def server(self, kind):
        if kind not in self.servers:
            self.servers[kind] = self.start(kind)
        return self.servers[kind]

    def start(self, kind):
        if kind == "kafka":
            tansu = tansu_path()
            # The broker advertises the relay, so that the producer's
            # connections after the bootstrap also pass through it.
            return Server("tansu", lambda port, advertised: [
                tansu, "broker", "--listener-url", f"tcp://127.0.0.1:{port}",
                "--advertised-listener-url", f"tcp://127.0.0.1:{advertised}",
                "--storage-engine", "memory://tansu/",
            ], "kafka", self.workdir, env=dict(os.environ, CLUSTER_ID="xtcp2-bench"), advertise_relay=True)
        if kind == "nats":
            store = self.workdir / "jetstream"
            return Server("nats-server", lambda port, _: [
                "nats-server", "-js", "-a", "127.0.0.1", "-p", str(port), "-sd", str(store),
            ], "nats", self.workdir)
        if kind == "valkey":
            return Server("redis-server", lambda port, _: [
                "redis-server", "--bind", "127.0.0.1", "--port", str(port), "--save", "", "--appendonly", "no",
            ], "valkey", self.workdir)
        raise ValueError(f"no pipeline server {kind}")

    def new_topic(self, case):
        """A topic (Kafka), subject (NATS) or stream (Valkey) per run, so a
        run's bytes and records are its own."""
        self.topics += 1
        topic = f"xtcp2-bench-{case.replace('_', '-')}-{self.topics}"
        if case.startswith("kafka"):
            kafka = self.server("kafka")
            subprocess.run([tansu_path(), "topic", "create", topic, "--partitions", str(PARTITIONS),
                            "--broker", f"tcp://127.0.0.1:{kafka.port}"], check=True, capture_output=True)
        return topic

    def close(self):
        for server in self.servers.values():
            server.close()
        self.servers = {}
