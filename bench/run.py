#!/usr/bin/env python3
"""xtcp2 benchmark: how close one collection sits to the kernel's floor.

Run as root from anywhere, after `cargo build --release --examples`:

    python3 bench/run.py                    # issue 8: the full matrix (< 10 min)
    python3 bench/run.py --mode namespaces  # issue 3: discovery and 100 x 100
    python3 bench/run.py --mode profile     # the daemon's own CPU profile at N=50,000
    python3 bench/run.py --smoke --mode all # CI: N=1,000, K=2, 1 repetition, every mode

Mode `collect` (issue 8), for each N connections spread over K network
namespaces (K=0: all in the root namespace), measures every case
`--repeat` times and reports median and range of wall time, CPU time
(user+sys of the child, from wait4) and peak RSS (ru_maxrss):

  floor          examples/floor_dump: one dump per family and namespace, same
                 idiag_ext as xtcp2's default decoders, counts, decodes nothing
  floor_uring    the same with the io_uring receive path
  ss             `ss -tinmOe` > /dev/null, once per namespace (nsenter)
  null           xtcp2 --max-loops 1 --dest null
  null_uring     the same with --io-uring
  jsonl          xtcp2 --max-loops 1 --marshal jsonl --dest file:...
  protobufList   xtcp2 --max-loops 1 --marshal protobufList --dest file:...

and, on request (`--cases`), with a `--filter` that keeps about 1% of the
sockets (a band of 1/50 of the ephemeral port range, on the client side and
on the server side of the same connections; issue 21):

  floor_filtered examples/floor_dump --filter: the kernel runs the program
  null_filtered  xtcp2 --max-loops 1 --dest null --filter

and, at N=10,000 K=0, xtcp2 as a daemon polling every second for
`--daemon-seconds`, reporting CPU % per 5-second window and RSS.

Every xtcp2 run is checked for lost records: the sockets xtcp2 decoded and
the records it flushed and dropped (its own counters, from the summary it
logs at --max-loops) against the records found in the output file.

Mode `namespaces` (issue 3) times `netns::discover` with the /proc scan over
1,000 namespaces held only by processes, and over 10,000 processes in the
host namespace, then runs the 100 namespaces x 100 connections collection.

Mode `stalled` (issue 22) measures the daemon's peak memory (VmHWM) while
its destination takes nothing: N=2,500 connections (5,000 sockets), 200 ms
polls in jsonl to a TCP listener that accepts and never reads, for
`--stalled-seconds`, once with the default queue bounds and once with the
old ones (64 envelopes, no byte bound); it reports VmHWM, the queue's bytes
and the rows dropped.

Mode `pipelines` (issues 14 and 19) delivers one collection of N=50,000
connections (100,000 sockets) in protobufList to real servers on loopback,
waiting for every acknowledgement: a tansu Kafka broker once per
compression codec (kafka_zstd, kafka_lz4, kafka_snappy, kafka_gzip,
kafka_none), NATS JetStream (nats) and a Valkey stream (valkey, Debian's
redis-server), beside the floor of the same load. Each server is reached
through a byte-counting relay (bench/pipelines.py): the bytes xtcp2 sent
per record delivered are reported with the CPU ratio and peak RSS.

Results go to a table on stdout and a JSON file (`--out`, Markdown tables
next to it) for comparing commits. Timings are never judged; the exit code
is 3 when an xtcp2 run lost records (or they could not be counted).

Everything the benchmark creates (namespaces, helper processes, output
files) lives under one private directory and is removed on exit, also on
Ctrl-C or an error.
"""

import argparse
import json
import os
import re
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

# The protobuf varint reader of the pprof printer beside this file.
from pprof_top import varint
from pipelines import Pipelines

ROOT = Path(__file__).resolve().parent.parent
HELPER = ROOT / "bench" / "conn_helper.py"
# Connections per helper process: two fds each, under the 20,000 open-file
# hard limit of the benchmark machine (see conn_helper.MAX_CONNECTIONS).
CONNECTIONS_PER_HELPER = 9_000
# A helper that has not established its connections in this time is stuck.
HELPER_READY_TIMEOUT_S = 120
# One xtcp2 or floor run at 100,000 sockets takes well under a second; a
# run past this is hung and is killed. At 1,000 namespaces the floor alone
# spends a minute of CPU (every namespace's dump walks the host's hashes,
# see bench/scale.py), several minutes of wall time on a busy machine.
RUN_TIMEOUT_S = 900
# Windows the daemon's CPU is averaged over.
DAEMON_WINDOW_S = 5

FULL_CONNECTIONS = [1_000, 10_000, 50_000]
FULL_NAMESPACES = [0, 10, 100]
ONE_SHOT_CASES = ["floor", "floor_uring", "ss", "null", "null_uring", "jsonl", "protobufList"]
# Not in the default set: with the 1% kernel filter (issue 21).
FILTERED_CASES = ["floor_filtered", "null_filtered"]
# Not in the default set: one poll of `--emit changed` with nothing changed
# (issue 20), per poll after the first, over CHANGED_POLLS polls.
CHANGED_CASES = ["null_changed"]
CHANGED_POLLS = 10
# Not in the default set: with workload attribution on (any case + `_attributed`).
ATTRIBUTED_CASES = ["null_attributed", "jsonl_attributed"]
# Every TCP state but bound-inactive (Linux 6.5+), whose dump walks the
# bind hash that all namespaces share: the `_nobound` cases (bench/scale.py).
# Mode `pipelines` (issues 14 and 19): one collection delivered to a real
# server on loopback, acknowledged, in protobufList: Kafka (tansu) per
# compression codec, NATS JetStream and a Valkey stream.
PIPELINE_CASES = ["kafka_zstd", "kafka_lz4", "kafka_snappy", "kafka_gzip", "kafka_none", "nats", "valkey"]
PIPELINE_CONNECTIONS = 50_000
STATES_NO_BOUND = ("established,syn-sent,syn-recv,fin-wait-1,fin-wait-2,time-wait,close,close-wait,"
                   "last-ack,listen,closing,new-syn-recv")


def log(msg):
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


class Workspace:
    """The private directory for namespaces and outputs, and every helper
    process started; `close()` undoes all of it."""

    def __init__(self, keep_outputs=False):
        self.dir = Path(tempfile.mkdtemp(prefix="xtcp2-bench-", dir="/run"))
        self.netns_dir = self.dir / "netns"
        self.netns_dir.mkdir()
        # `unshare --net=FILE` bind-mounts the namespace on FILE, which the
        # kernel refuses under a shared mount (systemd makes / shared): give
        # the directory a private mount of its own, as `ip netns` does.
        subprocess.run(["mount", "--bind", str(self.netns_dir), str(self.netns_dir)], check=True)
        subprocess.run(["mount", "--make-private", str(self.netns_dir)], check=True)
        self.namespaces = []
        self.helpers = []
        self.keep_outputs = keep_outputs
        self.closed = False
        # Started on first use by a pipeline case.
        self.pipelines = Pipelines(self.dir)

    def add_namespace(self, name):
        path = self.netns_dir / name
        path.touch()
        subprocess.run(["unshare", f"--net={path}", "true"], check=True)
        subprocess.run(["nsenter", f"--net={path}", "ip", "link", "set", "lo", "up"], check=True)
        self.namespaces.append(path)
        return path

    def start_helper(self, argv, netns=None):
        """Starts a helper that prints `ready ...` and holds its load until
        its stdin closes."""
        if netns is not None:
            argv = ["nsenter", f"--net={netns}"] + argv
        proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.helpers.append(proc)
        return proc

    def wait_ready(self, procs):
        deadline = time.monotonic() + HELPER_READY_TIMEOUT_S
        for proc in procs:
            line = proc.stdout.readline()
            if not line.startswith("ready") or time.monotonic() > deadline:
                raise RuntimeError(f"helper {proc.args} did not get ready: {line!r}")

    def stop_helpers(self):
        for proc in self.helpers:
            try:
                proc.stdin.close()
            except OSError:
                pass
        for proc in self.helpers:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.helpers = []

    def remove_namespace(self, path):
        subprocess.run(["umount", str(path)], check=False)
        path.unlink(missing_ok=True)
        self.namespaces.remove(path)

    def remove_namespaces(self):
        for path in self.namespaces:
            subprocess.run(["umount", str(path)], check=False)
            path.unlink(missing_ok=True)
        self.namespaces = []

    def close(self):
        if self.closed:
            return
        self.closed = True
        self.pipelines.close()
        self.stop_helpers()
        self.remove_namespaces()
        subprocess.run(["umount", str(self.netns_dir)], check=False)
        if self.keep_outputs:
            log(f"outputs kept in {self.dir}")
        else:
            shutil.rmtree(self.dir, ignore_errors=True)


def load_connections(ws, connections, namespaces):
    """N established loopback connections, in the root namespace (K=0) or
    spread evenly over K new namespaces. Returns the namespace files."""
    targets = [None] if namespaces == 0 else [ws.add_namespace(f"bench-{i}") for i in range(namespaces)]
    per_target = [connections // len(targets)] * len(targets)
    for i in range(connections % len(targets)):
        per_target[i] += 1
    procs = []
    for netns, count in zip(targets, per_target):
        while count > 0:
            chunk = min(count, CONNECTIONS_PER_HELPER)
            procs.append(ws.start_helper([sys.executable, str(HELPER), str(chunk)], netns))
            count -= chunk
    ws.wait_ready(procs)
    return [t for t in targets if t is not None]


# Set by main(): examples/floor_dump, which also serves as the launcher of
# every measured program (see `floor_dump measure`).
LAUNCHER = None


def measured(argv, stdout=subprocess.DEVNULL, env=None):
    """Runs argv to completion through `floor_dump measure`: wall time, CPU
    (user+sys) and peak RSS of the program from wait4, plus its stderr."""
    with tempfile.TemporaryFile() as err, tempfile.NamedTemporaryFile(suffix=".json") as report:
        launch = [str(LAUNCHER), "measure", "--report", report.name, "--"] + [str(a) for a in argv]
        # A session of its own, so that a run past the timeout (or
        # interrupted) is killed with the program it launched, not only
        # the launcher.
        proc = subprocess.Popen(launch, stdout=stdout, stderr=err, env=env, start_new_session=True)
        try:
            proc.wait(timeout=RUN_TIMEOUT_S)
        except BaseException:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            raise
        err.seek(0)
        stderr = err.read().decode(errors="replace")
        if proc.returncode != 0:
            raise RuntimeError(f"{' '.join(map(str, argv))} exited {proc.returncode}: {stderr[-2000:]}")
        usage = json.loads(Path(report.name).read_text())
    return {
        "wall_s": usage["wall_s"],
        "cpu_s": usage["user_s"] + usage["sys_s"],
        "user_s": usage["user_s"],
        "sys_s": usage["sys_s"],
        "rss_kb": usage["rss_kb"],
        "stderr": stderr,
    }


# The summary lines xtcp2 logs when --max-loops is reached (collection)
# and when delivery has finished (what was sent and dropped); key=value.
SUMMARY_RE = re.compile(r"max-loops reached.*")
DELIVERY_RE = re.compile(r"delivery finished.*")


def xtcp2_counters(stderr):
    """The counters of xtcp2's --max-loops and delivery summary lines;
    records_dropped is the delivery line's rows_dropped (the final count)."""
    counters = {}
    for line in stderr.splitlines():
        if SUMMARY_RE.search(line) or DELIVERY_RE.search(line):
            counters.update({k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", line)})
    if "rows_dropped" in counters:
        counters["records_dropped"] = counters["rows_dropped"]
    return counters


def count_output_records(path, marshal):
    """Records in an output file: lines for jsonl; for protobufList, the
    length-delimited XtcpFlatRecord messages inside each envelope. Read in
    pieces: at a million sockets a jsonl file is 2.5 GB."""
    with open(path, "rb") as f:
        if marshal == "jsonl":
            lines = 0
            while chunk := f.read(1 << 24):
                lines += chunk.count(b"\n")
            return lines
        return count_protobuf_list(f)


def read_varint(f):
    """One varint from a file; None at a clean end of file."""
    value, shift = 0, 0
    while True:
        b = f.read(1)
        if not b:
            if shift:
                raise ValueError("protobuf stream ends inside a varint")
            return None
        value |= (b[0] & 0x7F) << shift
        if b[0] < 0x80:
            return value
        shift += 7


def count_protobuf_list(f):
    """protobufList: a stream of envelopes, each a varint length then an
    `Envelope` message whose field 1 (`row`, repeated, length-delimited)
    holds one record. Counts those rows without decoding them."""
    rows = 0
    while (length := read_varint(f)) is not None:
        data = f.read(length)
        if len(data) != length:
            raise ValueError("protobuf stream ends inside an envelope")
        pos = 0
        while pos < length:
            key, pos = varint(data, pos)
            wire = key & 7
            if wire == 2:
                size, pos = varint(data, pos)
                if key >> 3 == 1:
                    rows += 1
                pos += size
            elif wire == 0:
                _, pos = varint(data, pos)
            elif wire == 1:
                pos += 8
            elif wire == 5:
                pos += 4
            else:
                raise ValueError(f"unexpected protobuf wire type {wire} at byte {pos}")
    return rows


class Tools:
    def __init__(self, args):
        self.xtcp2 = Path(args.xtcp2)
        self.floor = Path(args.floor)
        for p in (self.xtcp2, self.floor):
            if not p.exists():
                sys.exit(f"{p} is missing: run `cargo build --release --examples` first")
        self.env = dict(os.environ, XTCP2_LOG="info", RUST_BACKTRACE="0")
        self.file_dest = self.supports_file_dest()

    def supports_file_dest(self):
        """Whether this build has the `file:` destination; older ones write
        to stdout, which the benchmark then redirects to the same file."""
        with tempfile.TemporaryDirectory() as d:
            probe = subprocess.run(
                [str(self.xtcp2), "--max-loops", "1", "--prom-listen", "", "--netns-proc-scan=false",
                 "--netns-dirs", d, "--states", "listen", "--dest", f"file:{d}/probe"],
                capture_output=True, text=True, env=self.env, timeout=RUN_TIMEOUT_S,
            )
        if probe.returncode == 0:
            return True
        if "unknown destination" in probe.stderr:
            log("this xtcp2 has no file: destination yet; jsonl/protobufList go to stdout redirected to the file")
            return False
        raise RuntimeError(f"xtcp2 probe run failed: {probe.stderr[-2000:]}")

    def xtcp2_argv(self, netns_dir, extra):
        return [
            str(self.xtcp2), "--max-loops", "1", "--prom-listen", "",
            "--netns-dirs", str(netns_dir), "--netns-proc-scan=false",
            "--deserializers", "default",
        ] + extra


def filter_one_percent():
    """A --filter keeping about 1% of the sockets of load_connections: the
    client sides whose ephemeral port falls in 1/50 of the range, and the
    server sides of the same connections (their dport)."""
    low, high = (int(v) for v in Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
    start = (low + high) // 2
    end = start + (high - low + 1) // 50
    return (f"( sport >= :{start} and sport < :{end} ) or ( dport >= :{start} and dport < :{end} )")


def run_case(case, tools, ws, namespaces):
    """One run of one case; returns the measurement and what it counted."""
    netns_dir = ws.netns_dir
    states = []
    if case.endswith("_nobound"):
        case = case.removesuffix("_nobound")
        states = ["--states", STATES_NO_BOUND]
    if case.endswith("_filtered"):
        case = case.removesuffix("_filtered")
        states += ["--filter", filter_one_percent()]
    if case in ("floor", "floor_uring"):
        argv = [str(tools.floor), "dump", "--netns-dirs", str(netns_dir), "--deserializers", "default"] + states
        if case == "floor_uring":
            argv.append("--io-uring")
        with tempfile.TemporaryFile() as out:
            m = measured(argv, stdout=out)
            out.seek(0)
            counts = json.loads(out.read())
        m["sockets"] = counts["sockets"]
        m["namespaces"] = counts["namespaces"]
        return m
    if case == "ss":
        total = {"wall_s": 0.0, "cpu_s": 0.0, "user_s": 0.0, "sys_s": 0.0, "rss_kb": 0}
        for netns in [None] + namespaces:
            argv = ["ss", "-tinmOe"] if netns is None else ["nsenter", f"--net={netns}", "ss", "-tinmOe"]
            m = measured(argv)
            for k in ("wall_s", "cpu_s", "user_s", "sys_s"):
                total[k] += m[k]
            total["rss_kb"] = max(total["rss_kb"], m["rss_kb"])
        return total
    if case in PIPELINE_CASES:
        return run_pipeline_case(case, tools, ws)
    out_path = ws.dir / "out.data"
    # `_attributed`: the same with every enrichment on (issue 16): every
    # socket's cgroup looked up, the Docker Engine asked (absent here: it
    # costs one failed connect, nothing per socket), each namespace's nsid,
    # the uplink NICs stamped on every record, and lldpd asked (absent too).
    attribution = []
    if case.endswith("_attributed"):
        case = case.removesuffix("_attributed")
        attribution = ["--resolve-container-id", "--enrich-container", "--docker-socket", str(ws.dir / "no-docker.sock"),
                       "--populate-nsid", "--enrich-nic", "--enrich-lldp", "--lldpd-socket", str(ws.dir / "no-lldpd.sock")]
    if case.endswith("_changed"):
        return run_changed_case(case.removesuffix("_changed"), tools, netns_dir, states + attribution)
    marshal = {"jsonl": "jsonl", "protobufList": "protobufList"}.get(case, "jsonl")
    stdout = subprocess.DEVNULL
    if case in ("null", "null_uring"):
        extra = ["--dest", "null"] + states
        if case == "null_uring":
            extra.append("--io-uring")
    else:
        out_path.unlink(missing_ok=True)
        extra = ["--marshal", marshal]
        if tools.file_dest:
            extra += ["--dest", f"file:{out_path}"]
        else:
            extra += ["--dest", "stdout"]
            stdout = open(out_path, "wb")
    extra += attribution
    try:
        m = measured(tools.xtcp2_argv(netns_dir, extra), stdout=stdout, env=tools.env)
    finally:
        if stdout is not subprocess.DEVNULL:
            stdout.close()
    counters = xtcp2_counters(m["stderr"])
    m["counters"] = counters
    m["sockets"] = counters.get("sockets_decoded")
    if case in ("jsonl", "protobufList"):
        m["records_in_file"] = count_output_records(out_path, marshal)
        m["output_bytes"] = out_path.stat().st_size
        out_path.unlink()
    if "uring" in case and "falling back" in m["stderr"]:
        m["uring_fallback"] = True
    return m


def run_changed_case(case, tools, netns_dir, extra):
    """`--emit changed` with nothing changing (issue 20): the CPU of one
    poll after the first, as the difference between a run of
    CHANGED_POLLS + 1 polls and a run of 1, divided by CHANGED_POLLS; the
    first poll records every socket, the later ones find each unchanged
    and send nothing but heartbeats (none due within CHANGED_POLLS)."""
    if case != "null":
        raise ValueError(f"no {case}_changed case: only null_changed")
    tracking = ["--emit", "changed", "--emit-heartbeat", str(CHANGED_POLLS + 10), "--frequency", "1s",
                "--poll-jitter", "0s", "--dest", "null"] + extra

    def run(loops):
        argv = tools.xtcp2_argv(netns_dir, tracking)
        argv[argv.index("--max-loops") + 1] = str(loops)
        m = measured(argv, env=tools.env)
        m["counters"] = xtcp2_counters(m["stderr"])
        return m

    one, many = run(1), run(CHANGED_POLLS + 1)
    m = dict(many)
    for k in ("wall_s", "cpu_s", "user_s", "sys_s"):
        m[k] = max(0.0, (many[k] - one[k]) / CHANGED_POLLS)
    counters = many["counters"]
    polls = counters.get("polls") or 1
    m["sockets"] = counters.get("sockets_decoded", 0) // polls
    tracked = counters.get("tracked_sockets")
    if tracked:
        m["tracking_bytes_per_socket"] = counters.get("tracking_bytes", 0) / tracked
    # Records sent by the later polls: all of them but the first poll's.
    m["records_after_first_poll"] = counters.get("records_flushed", 0) - one["counters"].get("records_flushed", 0)
    return m


def run_pipeline_case(case, tools, ws):
    """One collection to a pipeline server, through its counting relay:
    xtcp2 waits for every envelope's acknowledgement before it exits."""
    kind = case.split("_")[0]
    server = ws.pipelines.server(kind)
    topic = ws.pipelines.new_topic(case)
    extra = ["--dest", server.dest, "--marshal", "protobufList", "--topic", topic]
    if kind == "kafka":
        extra += ["--kafka-compression", case.removeprefix("kafka_")]
    elif kind == "nats":
        extra += ["--nats-create-stream", "true"]
    server.relay.reset()
    m = measured(tools.xtcp2_argv(ws.netns_dir, extra), env=tools.env)
    counters = xtcp2_counters(m["stderr"])
    m["counters"] = counters
    m["sockets"] = counters.get("sockets_decoded")
    # Acknowledged by the server, not only handed to the client library.
    m["records_delivered"] = counters.get("rows_sent")
    if counters.get("rows_unconfirmed"):
        m["records_delivered"] = None
    # The relay's last bytes may still be in flight when xtcp2 exits.
    time.sleep(0.2)
    m["wire_bytes"] = server.relay.sent()
    return m


def summarise(values):
    values = [v for v in values if v is not None]
    if not values:
        return None
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def run_collect_config(tools, ws, connections, namespaces, repeat, cases):
    log(f"N={connections} K={namespaces}: opening {connections} connections")
    started = time.monotonic()
    netns_files = load_connections(ws, connections, namespaces)
    log(f"N={connections} K={namespaces}: ready in {time.monotonic() - started:.1f}s; measuring")
    runs = measure_cases(tools, ws, netns_files, repeat, cases)
    ws.stop_helpers()
    ws.remove_namespaces()
    return aggregate_runs(connections, namespaces, runs)


def measure_cases(tools, ws, netns_files, repeat, cases):
    """Every case `repeat` times over the load in place; the raw runs."""
    runs = {case: [] for case in cases}
    # Interleave the cases so a burst of load from elsewhere on the machine
    # spreads over all of them instead of skewing one.
    for _ in range(repeat):
        for case in cases:
            runs[case].append(run_case(case, tools, ws, netns_files))
    return runs


def aggregate_runs(connections, namespaces, runs):
    """Median and range per case, records lost, ratios to the floor."""
    result = {"connections": connections, "namespaces": namespaces, "cases": {}}
    for case, ms in runs.items():
        entry = {
            "runs": len(ms),
            "wall_s": summarise([m["wall_s"] for m in ms]),
            "cpu_s": summarise([m["cpu_s"] for m in ms]),
            "user_s": summarise([m["user_s"] for m in ms]),
            "sys_s": summarise([m["sys_s"] for m in ms]),
            "rss_mb": summarise([m["rss_kb"] / 1024 for m in ms]),
            "sockets": summarise([m.get("sockets") for m in ms]),
        }
        if case.endswith("_changed"):
            # Records are suppressed by design here: what is reported is
            # how many the later polls sent and the tracking state's size.
            entry["records_after_first_poll"] = [m.get("records_after_first_poll") for m in ms]
            entry["tracking_bytes_per_socket"] = summarise([m.get("tracking_bytes_per_socket") for m in ms])
        elif case.removesuffix("_nobound").removesuffix("_filtered") not in ("floor", "floor_uring", "ss"):
            lost = []
            for m in ms:
                c = m["counters"]
                decoded = c.get("sockets_decoded")
                written = m.get("records_in_file", m.get("records_delivered", c.get("records_flushed")))
                if decoded is None or written is None:
                    lost.append(None)
                else:
                    lost.append(decoded - written)
            entry["records_lost"] = lost
            entry["records_dropped"] = [m["counters"].get("records_dropped") for m in ms]
            entry["records_in_file"] = [m.get("records_in_file") for m in ms]
            entry["output_bytes"] = summarise([m.get("output_bytes") for m in ms])
            entry["uring_fallback"] = any(m.get("uring_fallback") for m in ms)
            wire = [m["wire_bytes"] / m["records_delivered"] for m in ms if m.get("wire_bytes") and m.get("records_delivered")]
            if wire:
                entry["wire_bytes_per_record"] = summarise(wire)
        result["cases"][case] = entry
    for case, entry in result["cases"].items():
        # A `_nobound` case is compared with the floor of the same states.
        floor = result["cases"].get("floor_nobound" if case.endswith("_nobound") else "floor")
        if floor:
            entry["cpu_ratio"] = entry["cpu_s"]["median"] / floor["cpu_s"]["median"]
            entry["wall_ratio"] = entry["wall_s"]["median"] / floor["wall_s"]["median"]
            sockets = floor["sockets"]["median"] if floor["sockets"] else None
            if sockets:
                entry["cpu_us_per_socket"] = entry["cpu_s"]["median"] / sockets * 1e6
    return result


def proc_cpu_s(pid):
    """utime+stime of a live process from /proc/PID/stat, seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


def proc_status_kb(pid, key):
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return None


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def scrape(port, path="/metrics"):
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
            return r.read().decode()
    except OSError:
        return None


def metric_value(text, name):
    if not text:
        return None
    m = re.search(rf"^{re.escape(name)}(?:{{[^}}]*}})? (\S+)$", text, re.M)
    return float(m.group(1)) if m else None


def perf_top(pid, seconds, path, rows):
    """`perf record -g` of a running process for `seconds`, then the top of
    `perf report` by shared object and symbol (kernel included, which the
    daemon's own profiler cannot see). None when perf is not installed."""
    if shutil.which("perf") is None:
        return None
    record = subprocess.run(
        ["timeout", "-s", "INT", str(seconds), "perf", "record", "-F", "999", "-g", "-p", str(pid), "-o", str(path)],
        capture_output=True, text=True,
    )
    if not Path(path).exists():
        return {"error": record.stderr[-500:]}
    report = subprocess.run(
        ["perf", "report", "-i", str(path), "--no-children", "--sort", "dso,sym", "--stdio"],
        capture_output=True, text=True,
    )
    lines = [l for l in report.stdout.splitlines() if re.match(r"^\s+\d+\.\d+%\s", l)]
    if not lines:
        return {"error": (record.stderr + report.stderr)[-500:]}
    return {"path": str(path), "top": lines[:rows]}


def run_daemon(tools, ws, connections, seconds, output=("--dest", "null"), profile_to=None):
    """xtcp2 polling every second over the load already in place: CPU % per
    window and RSS over `seconds`; with `profile_to`, also its own CPU
    profile (/debug/pprof/profile) over the same seconds, saved there."""
    log(f"daemon: N={connections}, 1 s polls, {seconds}s, {' '.join(output)}")
    port = free_port()
    argv = [
        str(tools.xtcp2), "--frequency", "1s", "--timeout", "900ms",
        "--prom-listen", f"127.0.0.1:{port}", "--netns-dirs", str(ws.netns_dir),
        "--netns-proc-scan=false", "--deserializers", "default",
    ] + list(output)
    err = open(ws.dir / "daemon.stderr", "w+")
    # Counts the polls from the log when the build has no /metrics yet.
    env = dict(tools.env, XTCP2_LOG="info,xtcp2::poll=debug")
    if profile_to:
        # pprof is off by default since issue 22; the variable (not --pprof)
        # so that builds from before it, which lack the flag, still run.
        env["XTCP2_PPROF"] = "true"
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=err, env=env)
    profile = {}
    try:
        time.sleep(3)  # first polls, allocations settle
        if proc.poll() is not None:
            err.seek(0)
            raise RuntimeError(f"daemon exited {proc.returncode}: {err.read()[-2000:]}")
        polls_before = metric_value(scrape(port), "xtcp2_poll_cycles_total")
        logged_before = poll_lines(err)
        if profile_to:
            profiler = threading.Thread(target=lambda: profile.update(fetch_profile(port, seconds, profile_to)))
            profiler.start()
            perf = {}
            perf_thread = threading.Thread(
                target=lambda: perf.update(perf_top(proc.pid, seconds, str(profile_to).replace(".pb.gz", ".perf.data"), 30) or {}))
            perf_thread.start()
        cpu_marks = [proc_cpu_s(proc.pid)]
        rss = []
        start = time.monotonic()
        next_mark = start
        for i in range(seconds):
            next_mark += 1
            time.sleep(max(0, next_mark - time.monotonic()))
            rss.append(proc_status_kb(proc.pid, "VmRSS") / 1024)
            if (i + 1) % DAEMON_WINDOW_S == 0:
                cpu_marks.append(proc_cpu_s(proc.pid))
        elapsed = time.monotonic() - start
        metrics = scrape(port)
        polls_after = metric_value(metrics, "xtcp2_poll_cycles_total")
        if polls_after is None or polls_before is None:
            polls_before, polls_after = logged_before, poll_lines(err)
        if profile_to:
            profiler.join()
            perf_thread.join()
        windows = [(b - a) / DAEMON_WINDOW_S * 100 for a, b in zip(cpu_marks, cpu_marks[1:])]
        result = {
            "connections": connections,
            "seconds": round(elapsed, 1),
            "cpu_percent": summarise(windows),
            "cpu_percent_windows": [round(w, 2) for w in windows],
            "cpu_s_total": cpu_marks[-1] - cpu_marks[0],
            "rss_mb": summarise(rss),
            "hwm_mb": proc_status_kb(proc.pid, "VmHWM") / 1024,
            "polls": polls_after - polls_before,
            "output": " ".join(output),
        }
        if profile_to:
            result["profile"] = profile
            result["perf"] = perf
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        err.close()
    return result


def poll_lines(err):
    """Polls the daemon has logged so far (its `poll done` debug lines)."""
    err.flush()
    return Path(err.name).read_text(errors="replace").count("poll done")


def fetch_profile(port, seconds, path):
    """The daemon's own CPU profile from /debug/pprof/profile, saved to path."""
    url = f"http://127.0.0.1:{port}/debug/pprof/profile?seconds={seconds}"
    try:
        with urllib.request.urlopen(url, timeout=seconds + 30) as r:
            data = r.read()
    except OSError as e:
        return {"error": str(e)}
    Path(path).write_bytes(data)
    return {"bytes": len(data), "path": str(path)}


def fmt_range(s, scale=1.0, digits=3):
    if s is None:
        return "-"
    return f"{s['median'] * scale:.{digits}f} [{s['min'] * scale:.{digits}f}-{s['max'] * scale:.{digits}f}]"


def print_collect_table(results):
    header = f"{'N':>6} {'K':>4} {'case':<13} {'wall ms med [range]':>26} {'cpu ms med [range]':>26} {'rss MB med [range]':>22} {'sockets':>8} {'us/sock':>7} {'cpu/floor':>9} {'lost':>5}"
    print(header)
    print("-" * len(header))
    for r in results:
        for case, e in r["cases"].items():
            lost = e.get("records_lost")
            lost_text = "-" if lost is None else ("?" if None in lost else str(max(lost)))
            sockets = e["sockets"]["median"] if e["sockets"] else None
            print(
                f"{r['connections']:>6} {r['namespaces']:>4} {case:<13} "
                f"{fmt_range(e['wall_s'], 1e3, 1):>26} {fmt_range(e['cpu_s'], 1e3, 1):>26} "
                f"{fmt_range(e['rss_mb'], 1, 1):>22} {sockets if sockets is not None else '-':>8} "
                f"{e.get('cpu_us_per_socket', 0):>7.2f} {e.get('cpu_ratio', 0):>8.2f}x {lost_text:>5}"
            )
    print()
    for r in results:
        for case, e in r["cases"].items():
            if case == "floor":
                continue
            print(
                f"N={r['connections']} K={r['namespaces']} {case}: cpu {e['cpu_ratio']:.2f}x floor, "
                f"wall {e['wall_ratio']:.2f}x floor, peak rss {e['rss_mb']['max']:.1f} MB"
                + (f", records lost {e['records_lost']}" if "records_lost" in e else "")
                + (f", records sent after the first poll {e['records_after_first_poll']}, tracking "
                   f"{e['tracking_bytes_per_socket']['median']:.1f} B/socket"
                   if e.get("tracking_bytes_per_socket") else "")
            )


def markdown_tables(report):
    """The results as Markdown, for docs/performance.md."""
    lines = []
    collect = report.get("collect", [])
    ns = report.get("namespaces", {})
    if ns.get("collection"):
        collect = collect + [ns["collection"]]
    if collect:
        lines += [
            "| N | K | case | sockets | wall ms median [range] | CPU ms median [range] | CPU/floor | µs CPU/socket | peak RSS MB | lost | wire B/record |",
            "|---:|---:|---|---:|---|---|---:|---:|---:|---:|---:|",
        ]
        for r in collect:
            for case, e in r["cases"].items():
                sockets = e["sockets"]["median"] if e["sockets"] else None
                lost = e.get("records_lost")
                lines.append(
                    f"| {r['connections']} | {r['namespaces']} | {case} | {sockets if sockets is not None else '-'} | "
                    f"{fmt_range(e['wall_s'], 1e3, 1)} | {fmt_range(e['cpu_s'], 1e3, 1)} | {e.get('cpu_ratio', 0):.2f}x | "
                    f"{e.get('cpu_us_per_socket', 0):.2f} | {e['rss_mb']['max']:.1f} | "
                    f"{'-' if lost is None else ('?' if None in lost else max(lost))} | "
                    f"{fmt_range(e.get('wire_bytes_per_record'), 1, 1)} |"
                )
    d = report.get("daemon")
    if d:
        lines += [
            "",
            f"Daemon, N={d['connections']}, 1 s polls, {d['output']}, {d['seconds']} s ({d['polls']} polls): "
            f"CPU {fmt_range(d['cpu_percent'], 1, 2)} % per {DAEMON_WINDOW_S} s window"
            + (f" ({d['cpu_per_poll_ratio']:.2f}x the one-shot floor per poll)" if d.get("cpu_per_poll_ratio") else "")
            + f", RSS {fmt_range(d['rss_mb'], 1, 1)} MB, VmHWM {d['hwm_mb']:.1f} MB.",
        ]
    for r in ns.get("discovery", []):
        what = f"{r['processes']} processes" + (", one network namespace each" if r["new_netns"] else " in the host namespace")
        lines.append(f"- discovery with /proc scan, {what}: {r['namespaces_found']} namespaces found, "
                     f"wall {fmt_range(r['wall_ms'], 1, 2)} ms, CPU {fmt_range(r['cpu_ms'], 1, 2)} ms; "
                     f"a daemon's incremental pass (new processes only): wall {fmt_range(r['incremental_wall_ms'], 1, 2)} ms, "
                     f"CPU {fmt_range(r['incremental_cpu_ms'], 1, 2)} ms")
    return "\n".join(lines) + "\n"


def git_describe():
    try:
        rev = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True).stdout.strip()
        return rev + ("+dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def machine_load():
    return {"loadavg": Path("/proc/loadavg").read_text().split()[:3], "cpus": os.cpu_count()}


def mode_collect(args, tools, ws, report):
    cases = args.cases.split(",") if args.cases else ONE_SHOT_CASES
    results = []
    for n in args.connections:
        for k in args.namespaces:
            results.append(run_collect_config(tools, ws, n, k, args.repeat, cases))
    report["collect"] = results
    print_collect_table(results)
    if args.daemon_seconds > 0:
        load_connections(ws, args.daemon_connections, 0)
        d = run_daemon(tools, ws, args.daemon_connections, args.daemon_seconds)
        ws.stop_helpers()
        report["daemon"] = d
        floor_per_poll = None
        for r in results:
            if r["connections"] == args.daemon_connections and r["namespaces"] == 0 and "floor" in r["cases"]:
                floor_per_poll = r["cases"]["floor"]["cpu_s"]["median"]
        print()
        print(
            f"daemon N={d['connections']} 1 s polls over {d['seconds']}s ({d['polls']} polls): "
            f"cpu {fmt_range(d['cpu_percent'], 1, 2)} % per {DAEMON_WINDOW_S}s window, "
            f"rss {fmt_range(d['rss_mb'], 1, 1)} MB, VmHWM {d['hwm_mb']:.1f} MB"
        )
        if floor_per_poll and d["polls"]:
            per_poll = d["cpu_s_total"] / d["polls"]
            d["cpu_per_poll_ratio"] = per_poll / floor_per_poll
            print(f"daemon: {per_poll * 1e3:.1f} ms CPU per poll, {d['cpu_per_poll_ratio']:.2f}x the one-shot floor")


def mode_pipelines(args, tools, ws, report):
    """Issues 14 and 19: one collection of N connections (2N sockets) to
    each pipeline server, beside the floor of the same load."""
    cases = args.cases.split(",") if args.cases else ["floor"] + PIPELINE_CASES
    connections = args.connections if args.connections != FULL_CONNECTIONS else [PIPELINE_CONNECTIONS]
    results = [run_collect_config(tools, ws, n, 0, args.repeat, cases) for n in connections]
    report["collect"] = results
    print_collect_table(results)
    print()
    for r in results:
        for case, e in r["cases"].items():
            if "wire_bytes_per_record" in e:
                print(f"N={r['connections']} {case}: {fmt_range(e['wire_bytes_per_record'], 1, 1)} bytes on the wire per record")


def hold(ws, processes, new_netns):
    argv = [str(ws.tools.floor), "hold", "--processes", str(processes)] + (["--new-netns"] if new_netns else [])
    proc = ws.start_helper(argv)
    ws.wait_ready([proc])
    return proc


def discovery(tools, ws, processes, new_netns, repeat):
    log(f"discovery: {processes} processes{' each in its own namespace' if new_netns else ' in the host namespace'}")
    ws.tools = tools
    hold(ws, processes, new_netns)
    with tempfile.TemporaryFile() as out:
        measured([str(tools.floor), "discover", "--proc-scan", "--netns-dirs", "", "--repeat", str(repeat)], stdout=out)
        out.seek(0)
        timing = json.loads(out.read())
    ws.stop_helpers()
    return {
        "processes": processes,
        "new_netns": new_netns,
        "namespaces_found": timing["namespaces"],
        "wall_ms": summarise(timing["wall_ms"]),
        "cpu_ms": summarise(timing["cpu_ms"]),
        "incremental_wall_ms": summarise(timing["incremental"]["wall_ms"]),
        "incremental_cpu_ms": summarise(timing["incremental"]["cpu_ms"]),
    }


def mode_namespaces(args, tools, ws, report):
    rows = [
        discovery(tools, ws, args.discover_namespaces, True, args.repeat),
        discovery(tools, ws, args.discover_processes, False, args.repeat),
    ]
    coll = run_collect_config(tools, ws, args.ns_connections * args.ns_count, args.ns_count, args.repeat, ["floor", "null", "jsonl"])
    report["namespaces"] = {"discovery": rows, "collection": coll}
    print(f"{'load':<40} {'found':>6} {'full: wall ms med [range]':>26} {'cpu ms med [range]':>24} {'incremental: cpu ms':>24}")
    for r in rows:
        what = f"{r['processes']} processes" + (", one netns each" if r["new_netns"] else ", host netns")
        print(f"{what:<40} {r['namespaces_found']:>6} {fmt_range(r['wall_ms'], 1, 2):>26} {fmt_range(r['cpu_ms'], 1, 2):>24} "
              f"{fmt_range(r['incremental_cpu_ms'], 1, 2):>24}")
    print()
    print_collect_table([coll])


def stop_on_sigterm(_signum, _frame):
    raise KeyboardInterrupt("SIGTERM")


def mode_profile(args, tools, ws, report):
    """The daemon's own CPU profile under N connections, polling every
    second: once with -dest null, once writing jsonl to file:/dev/null
    (all of the encoding, none of the disk)."""
    n = args.profile_connections
    load_connections(ws, n, 0)
    out_dir = ROOT / "target" / "bench"
    out_dir.mkdir(parents=True, exist_ok=True)
    report["profile"] = []
    for name, output in (("null", ("--dest", "null")), ("jsonl-devnull", ("--dest", "file:/dev/null", "--marshal", "jsonl"))):
        path = out_dir / f"profile-{name}-{report['commit']}.pb.gz"
        d = run_daemon(tools, ws, n, args.profile_seconds, output, profile_to=path)
        report["profile"].append(d)
        print(f"\n== daemon N={n}, 1 s polls, {' '.join(output)}: {d['polls']} polls in {d['seconds']}s, "
              f"cpu {fmt_range(d['cpu_percent'], 1, 1)} %, rss max {d['rss_mb']['max']:.1f} MB")
        if "error" in d["profile"]:
            print(f"no profile: {d['profile']['error']}")
            continue
        print(f"profile: {path}")
        sys.stdout.flush()
        subprocess.run([sys.executable, str(ROOT / "bench" / "pprof_top.py"), str(path), "--rows", str(args.profile_rows)])
        if d.get("perf", {}).get("top"):
            print(f"\nperf record -g over the same seconds (kernel and libc included; {d['perf']['path']}):")
            print("\n".join(d["perf"]["top"]))
        elif d.get("perf", {}).get("error"):
            print(f"\nperf record failed: {d['perf']['error']}")


def run_stalled(tools, ws, seconds, label, extra):
    """The daemon writing jsonl every 200 ms to a listener that never reads."""
    sink = socket.socket()
    sink.bind(("127.0.0.1", 0))
    sink.listen(1)
    held = []
    accepter = threading.Thread(target=lambda: held.append(sink.accept()), daemon=True)
    accepter.start()
    port = free_port()
    argv = [
        str(tools.xtcp2), "--frequency", "200ms", "--timeout", "150ms",
        "--prom-listen", f"127.0.0.1:{port}", "--netns-dirs", str(ws.netns_dir),
        "--netns-proc-scan=false", "--marshal", "jsonl", "--states", "established",
        "--dest", f"tcp:127.0.0.1:{sink.getsockname()[1]}",
    ] + extra
    log(f"stalled destination, {label}: {' '.join(argv[1:])}")
    err = open(ws.dir / "stalled.stderr", "w+")
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=err, env=tools.env)
    try:
        peak_queue = 0
        for _ in range(seconds * 2):
            time.sleep(0.5)
            if proc.poll() is not None:
                err.seek(0)
                raise RuntimeError(f"daemon exited {proc.returncode}: {err.read()[-2000:]}")
            peak_queue = max(peak_queue, metric_value(scrape(port), "xtcp2_destination_queue_bytes") or 0)
        metrics = scrape(port)
        result = {
            "label": label,
            "args": " ".join(extra),
            "seconds": seconds,
            "hwm_mb": proc_status_kb(proc.pid, "VmHWM") / 1024,
            "rss_mb": proc_status_kb(proc.pid, "VmRSS") / 1024,
            "peak_queue_mb": peak_queue / 2**20,
            "rows_queued": metric_value(metrics, "xtcp2_envelope_rows_flushed_total"),
            "rows_dropped": metric_value(metrics, "xtcp2_destination_dropped_rows_total"),
        }
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        err.close()
        for conn, _ in held:
            conn.close()
        sink.close()
    print(f"  {label:<40} VmHWM {result['hwm_mb']:6.1f} MB  RSS {result['rss_mb']:6.1f} MB  "
          f"queue peak {result['peak_queue_mb']:5.1f} MiB  rows queued {result['rows_queued']:.0f}, "
          f"dropped {result['rows_dropped']:.0f}", flush=True)
    return result


def mode_stalled(args, tools, ws, report):
    """Peak memory with a destination that takes nothing (see the module doc)."""
    load_connections(ws, args.stalled_connections, 0)
    report["stalled"] = [
        run_stalled(tools, ws, args.stalled_seconds, "defaults", []),
        run_stalled(tools, ws, args.stalled_seconds, "old bounds: 64 envelopes, no byte bound",
                    ["--queue-envelopes", "64", "--queue-bytes", str(1 << 36)]),
    ]


def mode_load(args, tools, ws, report):
    """Holds the load of the first --connections/--namespaces pair for
    --hold-seconds (or until Ctrl-C), for profiling by hand."""
    n, k = args.connections[0], args.namespaces[0]
    load_connections(ws, n, k)
    print(f"holding N={n} K={k}; namespaces in {ws.netns_dir}; e.g.\n"
          f"  perf record -g -- {tools.xtcp2} --max-loops 1 --dest null --prom-listen '' "
          f"--netns-dirs {ws.netns_dir} --netns-proc-scan=false", flush=True)
    try:
        time.sleep(args.hold_seconds)
    except KeyboardInterrupt:
        pass
    report["load"] = {"connections": n, "namespaces": k}


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--mode", choices=["collect", "namespaces", "profile", "all", "load", "stalled", "pipelines"], default="collect",
                   help="all = collect, then namespaces, then profile (what CI runs with --smoke)")
    p.add_argument("--profile-connections", type=int, default=50_000)
    p.add_argument("--profile-seconds", type=int, default=20)
    p.add_argument("--profile-rows", type=int, default=25)
    p.add_argument("--hold-seconds", type=int, default=600, help="--mode load: how long to hold the load")
    p.add_argument("--stalled-connections", type=int, default=2_500)
    p.add_argument("--stalled-seconds", type=int, default=30)
    p.add_argument("--smoke", action="store_true", help="CI size: N=1,000, K=2, 1 repetition, 5 s daemon")
    p.add_argument("--connections", type=lambda s: [int(x) for x in s.split(",")], default=FULL_CONNECTIONS)
    p.add_argument("--namespaces", type=lambda s: [int(x) for x in s.split(",")], default=FULL_NAMESPACES)
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--cases", default="", help=f"comma list of {','.join(ONE_SHOT_CASES + FILTERED_CASES + CHANGED_CASES + ATTRIBUTED_CASES)}")
    p.add_argument("--daemon-seconds", type=int, default=60)
    p.add_argument("--daemon-connections", type=int, default=10_000)
    p.add_argument("--discover-namespaces", type=int, default=1_000)
    p.add_argument("--discover-processes", type=int, default=10_000)
    p.add_argument("--ns-count", type=int, default=100)
    p.add_argument("--ns-connections", type=int, default=100)
    p.add_argument("--xtcp2", default=str(ROOT / "target/release/xtcp2"))
    p.add_argument("--floor", default=str(ROOT / "target/release/examples/floor_dump"))
    p.add_argument("--out", default="", help="JSON results (default target/bench/<mode>-<rev>-<time>.json)")
    p.add_argument("--keep-outputs", action="store_true")
    args = p.parse_args()
    if args.smoke:
        args.connections, args.namespaces, args.repeat = [1_000], [2], 1
        args.daemon_seconds, args.daemon_connections = 5, 1_000
        args.discover_namespaces, args.discover_processes = 20, 200
        args.ns_count, args.ns_connections = 2, 100
        args.profile_connections, args.profile_seconds = 1_000, 2
    if os.geteuid() != 0:
        sys.exit("bench/run.py needs root (namespaces, inet_diag of every socket)")

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    tools = Tools(args)
    global LAUNCHER
    LAUNCHER = tools.floor
    report = {
        "mode": args.mode,
        "file_destination": "file:" if tools.file_dest else "stdout redirected to a file",
        "commit": git_describe(),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "kernel": os.uname().release,
        "machine": machine_load(),
        "args": {k: v for k, v in vars(args).items()},
    }
    started = time.monotonic()
    ws = Workspace(args.keep_outputs)
    # SIGTERM (CI timeouts) must clean up like Ctrl-C does.
    signal.signal(signal.SIGTERM, stop_on_sigterm)
    try:
        if args.mode == "all":
            mode_collect(args, tools, ws, report)
            print()
            mode_namespaces(args, tools, ws, report)
            print()
            mode_profile(args, tools, ws, report)
        elif args.mode == "collect":
            mode_collect(args, tools, ws, report)
        elif args.mode == "load":
            mode_load(args, tools, ws, report)
        elif args.mode == "stalled":
            mode_stalled(args, tools, ws, report)
        elif args.mode == "pipelines":
            mode_pipelines(args, tools, ws, report)
        elif args.mode == "profile":
            mode_profile(args, tools, ws, report)
        else:
            mode_namespaces(args, tools, ws, report)
    except KeyboardInterrupt:
        ws.close()
        sys.exit("bench/run.py: interrupted; namespaces, helpers and outputs removed")
    finally:
        ws.close()
    report["duration_s"] = round(time.monotonic() - started, 1)
    report["machine_after"] = machine_load()
    out = Path(args.out) if args.out else ROOT / "target" / "bench" / f"{args.mode}-{report['commit']}-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1, default=str))
    out.with_suffix(".md").write_text(markdown_tables(report))
    print(f"\nresults: {out} ({report['duration_s']}s, load {report['machine']['loadavg']} -> {report['machine_after']['loadavg']})")
    # Timings are never judged here (the machine may be busy); a lost or
    # uncounted record is a bug whatever the load, and fails the run.
    losses = records_lost(report)
    if losses:
        print("records lost or not accounted for: " + "; ".join(losses), file=sys.stderr)
        sys.exit(3)


def records_lost(report):
    """Every xtcp2 case whose records written differ from sockets decoded."""
    collect = list(report.get("collect", []))
    if report.get("namespaces", {}).get("collection"):
        collect.append(report["namespaces"]["collection"])
    bad = []
    for r in collect:
        for case, e in r["cases"].items():
            lost = e.get("records_lost")
            if lost is not None and any(x != 0 for x in lost):
                bad.append(f"N={r['connections']} K={r['namespaces']} {case}: {lost}")
    return bad


if __name__ == "__main__":
    main()
