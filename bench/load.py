"""Load at fleet scale (issue 23), for bench/scale.py and bench/soak.py.

- `Sysctls`: raises kernel settings for the run and puts every one back
  on exit, also on Ctrl-C, SIGTERM or an error (the caller closes it in a
  `finally`, and an `atexit` hook covers the rest).
- `host_sockets(ws, connections)`: established loopback connections in
  the root namespace, up to a million sockets: one bench/conn_helper.py
  per CONNECTIONS_PER_HELPER connections, each listening on an address of
  its own (127.0.0.10, 127.0.0.11, ...) and connecting from addresses of
  its own (127.B.x.y), so no two helpers compete for ephemeral ports.
- `NamespaceLoad`: namespaces made in-process (unshare, a bind mount in
  the run's Workspace, lo up; no `ip`/`unshare` process per namespace) and
  connections inside them held by `conn_helper.py --serve` processes, each
  holding groups in many namespaces; groups and namespaces can be opened
  and closed one by one, which is what `Churn` does at a set rate.

Everything is registered with the run's `Workspace` (bench/run.py), whose
`close()` stops the helpers and removes the namespaces.
"""

import atexit
import ctypes
import fcntl
import os
import random
import socket
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

from conn_helper import CLONE_NEWNET, setns

HELPER = Path(__file__).resolve().parent / "conn_helper.py"
# Connections per helper process (two fds each) under the 20,000 open-file
# hard limit; 500,000 connections take 55 helpers.
CONNECTIONS_PER_HELPER = 9_100
# fds one --serve helper may hold: the same limit, less stdio and margin.
SERVE_FDS_PER_HELPER = 19_000
# A group of connections, or a helper, that is not ready in this time is stuck.
READY_TIMEOUT_S = 300

_libc = ctypes.CDLL(None, use_errno=True)
MS_BIND = 4096
MNT_DETACH = 2
SIOCGIFFLAGS = 0x8913
SIOCSIFFLAGS = 0x8914
IFF_UP = 0x1


def log(msg):
    print(f"[load {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


class Sysctls:
    """Kernel settings raised for the run, each restored by `restore()`.

    `at_least(name, value)` only ever raises a setting (a machine tuned
    higher keeps its value). Every change is written down first, so a
    failure halfway still restores what was changed."""

    def __init__(self):
        self.saved = {}
        self.refused = {}
        atexit.register(self.restore)

    @staticmethod
    def path(name):
        return Path("/proc/sys") / name.replace(".", "/")

    def read(self, name):
        return self.path(name).read_text().split()

    def write(self, name, values):
        if name not in self.saved:
            self.saved[name] = self.read(name)
        try:
            self.path(name).write_text(" ".join(str(v) for v in values))
        except OSError as e:
            self.refused[name] = str(e)
            log(f"sysctl {name}: cannot set {values}: {e}")
            return False
        log(f"sysctl {name}: {' '.join(self.saved[name])} -> {' '.join(str(v) for v in values)}")
        return True

    def at_least(self, name, value):
        """Raises a one-value setting to `value` if it is lower."""
        current = self.read(name)
        if int(current[0]) >= value:
            return True
        return self.write(name, [value])

    def set(self, name, value):
        return self.write(name, value if isinstance(value, (list, tuple)) else [value])

    def restore(self):
        for name, values in list(self.saved.items()):
            try:
                self.path(name).write_text(" ".join(values))
                log(f"sysctl {name}: restored {' '.join(values)}")
            except OSError as e:
                log(f"sysctl {name}: could not restore {' '.join(values)}: {e}")
            del self.saved[name]


def raise_for_host_sockets(sysctls, sockets):
    """What a host with `sockets` established loopback sockets needs.

    Measured on the benchmark machine (Debian 12, kernel 6.18, 24 GiB): the
    defaults already hold a million; only what is below these floors is
    raised. fs.nr_open is not one of them: it caps what setrlimit may ask,
    but raising the 20,000 hard RLIMIT_NOFILE needs CAP_SYS_RESOURCE,
    which even root lacks there, so the load is spread over processes
    instead."""
    # Every socket is a file: leave room for the rest of the machine.
    sysctls.at_least("fs.file-max", 2 * sockets + 200_000)
    # Each helper's listener takes 1,000 connections before accepting them.
    sysctls.at_least("net.core.somaxconn", 4096)
    sysctls.at_least("net.ipv4.tcp_max_syn_backlog", 4096)
    # Sockets are closed with RST (SO_LINGER 0), so none becomes an orphan
    # or a TIME_WAIT socket; raised anyway so that an interrupted run that
    # closes them another way does not hit "too many orphaned sockets".
    sysctls.at_least("net.ipv4.tcp_max_orphans", sockets)
    # Only when conntrack is loaded; it tracks loopback connections too
    # once any rule uses it.
    if Sysctls.path("net.netfilter.nf_conntrack_max").exists():
        sysctls.at_least("net.netfilter.nf_conntrack_max", sockets)


def kernel_allows():
    """Which of the settings a million-socket run might touch this kernel
    lets us write (the current value written back), and whether the hard
    open-file limit can be raised (CAP_SYS_RESOURCE)."""
    import resource

    allowed = {}
    for name in ("fs.nr_open", "fs.file-max", "net.core.somaxconn", "net.ipv4.ip_local_port_range",
                 "net.ipv4.tcp_max_orphans", "net.ipv4.tcp_max_syn_backlog", "net.ipv4.tcp_mem",
                 "net.netfilter.nf_conntrack_max", "net.ipv4.tcp_child_ehash_entries"):
        p = Sysctls.path(name)
        if not p.exists():
            allowed[name] = "absent"
            continue
        value = p.read_text()
        try:
            p.write_text(value)
            allowed[name] = "writable (" + " ".join(value.split()) + ")"
        except OSError as e:
            allowed[name] = f"refused: {e.strerror}"
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard + 1, hard + 1))
        allowed["RLIMIT_NOFILE hard"] = f"{hard}, raisable"
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    except (OSError, ValueError) as e:
        allowed["RLIMIT_NOFILE hard"] = f"{hard}, not raisable ({e})"
    return allowed


def host_sockets(ws, connections, per_helper=CONNECTIONS_PER_HELPER):
    """`connections` established loopback connections in the root namespace
    (2 sockets each, plus a listener per helper); returns when all are up."""
    procs = []
    i = 0
    remaining = connections
    while remaining > 0:
        chunk = min(per_helper, remaining)
        # Listener 127.0.0.(10+i) (i < 240), clients from 127.(1+i).x.y.
        argv = [sys.executable, str(HELPER), str(chunk),
                "--listen", f"127.0.{i // 240}.{10 + i % 240}", "--source-net", f"127.{1 + i % 250}"]
        procs.append(ws.start_helper(argv))
        remaining -= chunk
        i += 1
    started = time.monotonic()
    ws.wait_ready(procs)
    log(f"{connections} connections ({2 * connections + len(procs)} sockets) held by {len(procs)} helpers, "
        f"up in {time.monotonic() - started:.1f}s")
    return procs


def sockstat():
    """The TCP line of /proc/net/sockstat as a dict (inuse, orphan, tw, alloc, mem)."""
    for line in Path("/proc/net/sockstat").read_text().splitlines():
        if line.startswith("TCP:"):
            words = line.split()[1:]
            return {words[i]: int(words[i + 1]) for i in range(0, len(words), 2)}
    return {}


def make_netns(path):
    """A new network namespace bind-mounted on `path`, loopback up, made
    from this process: unshare on the calling thread, mount, ioctl, and
    back. About 30 times faster than `unshare --net=` plus `ip link set lo
    up` as processes."""
    home = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    try:
        Path(path).touch()
        if _libc.unshare(CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"unshare(CLONE_NEWNET): {os.strerror(err)}")
        try:
            if _libc.mount(b"/proc/thread-self/ns/net", str(path).encode(), None, MS_BIND, None) != 0:
                err = ctypes.get_errno()
                raise OSError(err, f"bind mount on {path}: {os.strerror(err)}")
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                ifreq = struct.pack("16sH14x", b"lo", 0)
                flags = struct.unpack("16sH14x", fcntl.ioctl(s, SIOCGIFFLAGS, ifreq))[1]
                fcntl.ioctl(s, SIOCSIFFLAGS, struct.pack("16sH14x", b"lo", flags | IFF_UP))
        finally:
            setns(home)
    finally:
        os.close(home)


def remove_netns(path):
    """Detaches the bind mount and removes the file; the kernel frees the
    namespace once its last socket is closed."""
    if _libc.umount2(str(path).encode(), MNT_DETACH) != 0:
        err = ctypes.get_errno()
        log(f"umount {path}: {os.strerror(err)}")
    Path(path).unlink(missing_ok=True)


class ServeHelper:
    """One `conn_helper.py --serve` process and the fds it holds."""

    def __init__(self, ws):
        self.proc = ws.start_helper([sys.executable, str(HELPER), "--serve"])
        self.fds = 0
        self.lock = threading.Lock()

    def command(self, line):
        with self.lock:
            self.proc.stdin.write(line + "\n")
            self.proc.stdin.flush()
            answer = self.proc.stdout.readline()
        words = answer.split()
        if not words or words[0] != "ok":
            raise RuntimeError(f"conn_helper --serve: {line!r} -> {answer.strip()!r}")
        return int(words[2])


class NamespaceLoad:
    """Namespaces in the workspace and connection groups held by --serve
    helpers. Thread-safe enough for one churn thread plus the caller."""

    def __init__(self, ws):
        self.ws = ws
        self.helpers = []
        self.groups = {}  # gid -> (helper, fds)
        self.netns = {}  # name -> [gid, ...]
        self.seq = 0
        self.lock = threading.Lock()
        self.netns_made = 0
        self.netns_removed = 0

    def _helper_for(self, fds):
        with self.lock:
            for h in self.helpers:
                if h.fds + fds <= SERVE_FDS_PER_HELPER:
                    h.fds += fds
                    return h
            h = ServeHelper(self.ws)
            h.fds = fds
            self.helpers.append(h)
            return h

    def open_group(self, netns_path, connections):
        """`connections` connections (plus a listener) in the namespace at
        netns_path (None: the root namespace); returns the group id."""
        fds = 2 * connections + 1
        helper = self._helper_for(fds)
        with self.lock:
            self.seq += 1
            gid = f"g{self.seq}"
        helper.command(f"open {gid} {netns_path or '-'} {connections}")
        with self.lock:
            self.groups[gid] = (helper, fds)
        return gid

    def close_group(self, gid):
        with self.lock:
            helper, fds = self.groups.pop(gid)
        helper.command(f"close {gid}")
        with self.lock:
            helper.fds -= fds

    def add_netns(self, name, sockets):
        """A namespace holding about `sockets` sockets: sockets//2
        connections and their listener (at least one connection)."""
        path = self.ws.netns_dir / name
        make_netns(path)
        with self.lock:
            self.ws.namespaces.append(path)
            self.netns_made += 1
        gid = self.open_group(path, max(1, sockets // 2))
        with self.lock:
            self.netns[name] = [gid]
        return path

    def remove_netns(self, name):
        with self.lock:
            gids = self.netns.pop(name)
        for gid in gids:
            self.close_group(gid)
        path = self.ws.netns_dir / name
        remove_netns(path)
        with self.lock:
            if path in self.ws.namespaces:
                self.ws.namespaces.remove(path)
            self.netns_removed += 1

    def populate(self, count, sockets, prefix="ns", seed=23):
        """`count` namespaces; `sockets` is a number or a (low, high) range
        drawn uniformly per namespace (seeded, so runs are comparable)."""
        rng = random.Random(seed)
        started = time.monotonic()
        total = 0
        for i in range(count):
            n = sockets if isinstance(sockets, int) else rng.randint(*sockets)
            self.add_netns(f"{prefix}-{i}", n)
            total += 2 * max(1, n // 2) + 1
        log(f"{count} namespaces, {total} sockets in them, made in {time.monotonic() - started:.1f}s "
            f"({len(self.helpers)} helpers)")
        return total


class Churn:
    """Namespaces and connections created and destroyed at a set rate per
    second, keeping the population steady: each new namespace (or group of
    connections) replaces the oldest one made by the churn, so what the
    daemon sees comes and goes while its size stays the same, and any
    growth of the daemon is its own.

    netns_per_s: namespaces made and removed per second, each with
      `netns_sockets` (number or range) sockets, `netns_population` alive.
    conns_per_s: connections opened and closed per second in the root
      namespace, in groups of `group` connections, `conn_population` alive.
    """

    def __init__(self, load, netns_per_s=1.0, netns_population=20, netns_sockets=(10, 200),
                 conns_per_s=200.0, conn_population=2_000, group=50, seed=23):
        self.load = load
        self.netns_per_s = netns_per_s
        self.netns_population = netns_population
        self.netns_sockets = netns_sockets
        self.conns_per_s = conns_per_s
        self.conn_population = conn_population
        self.group = group
        self.rng = random.Random(seed)
        self.stop_event = threading.Event()
        self.alive_netns = []
        self.alive_groups = []
        self.counter = 0
        self.conns_opened = 0
        self.conns_closed = 0
        self.errors = []
        self.thread = None

    def _sockets(self):
        s = self.netns_sockets
        return s if isinstance(s, int) else self.rng.randint(*s)

    def start(self):
        # The steady population first, then the churn around it.
        for _ in range(self.netns_population):
            self._new_netns()
        for _ in range(max(0, self.conn_population // self.group)):
            self._new_group()
        self.thread = threading.Thread(target=self._run, name="churn", daemon=True)
        self.thread.start()

    def _new_netns(self):
        self.counter += 1
        name = f"churn-{self.counter}"
        self.load.add_netns(name, self._sockets())
        self.alive_netns.append(name)

    def _new_group(self):
        self.alive_groups.append(self.load.open_group(None, self.group))
        self.conns_opened += self.group

    def _run(self):
        netns_due = conn_due = 0.0
        last = time.monotonic()
        while not self.stop_event.wait(0.1):
            now = time.monotonic()
            netns_due += (now - last) * self.netns_per_s
            conn_due += (now - last) * self.conns_per_s / self.group
            last = now
            try:
                while netns_due >= 1:
                    netns_due -= 1
                    self._new_netns()
                    if len(self.alive_netns) > self.netns_population:
                        self.load.remove_netns(self.alive_netns.pop(0))
                while conn_due >= 1:
                    conn_due -= 1
                    self._new_group()
                    if len(self.alive_groups) * self.group > self.conn_population:
                        self.load.close_group(self.alive_groups.pop(0))
                        self.conns_closed += self.group
            except Exception as e:  # noqa: BLE001 - reported by the caller
                self.errors.append(repr(e))
                log(f"churn error: {e!r}")
                if len(self.errors) > 10:
                    return

    def stop(self):
        self.stop_event.set()
        if self.thread:
            self.thread.join(timeout=30)

    def counters(self):
        return {
            "netns_made": self.load.netns_made,
            "netns_removed": self.load.netns_removed,
            "conns_opened": self.conns_opened,
            "conns_closed": self.conns_closed,
            "churn_errors": len(self.errors),
        }
