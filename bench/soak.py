#!/usr/bin/env python3
"""xtcp2 soak: the daemon for a given time under namespace and connection
churn, writing to a real destination; fails if its memory, file
descriptors or threads trend upward (issue 23).

Run as root, after `cargo build --release` (CI: `--xtcp2 target/ci/xtcp2`):

    python3 bench/soak.py --minutes 5             # what CI runs
    python3 bench/soak.py --minutes 120           # the long run of docs/performance.md

What runs:
- the load (bench/load.py): `--host-connections` loopback connections held
  in the root namespace for the whole run; `--netns-population`
  namespaces of `--netns-sockets` sockets each, `--netns-rate` of them made
  and as many of the oldest removed every second; `--conn-population`
  connections in the root namespace, `--conn-rate` per second opened and
  as many of the oldest closed (in groups of 50). The population stays the
  same, so any growth of the daemon is its own.
- xtcp2 with its default flags except: `--frequency` (2 s: more polls per
  hour than the default 10 s), `--prom-listen` on a free loopback port,
  `--netns-dirs` the run's own directory (the /proc scan is off, so that
  namespaces other programs on the machine make do not change what is
  measured), and the destination: `--dest tcp` (default) sends JSON Lines
  to a reader in this script that counts every line; `--dest file` writes
  to a file on a tmpfs (/dev/shm) that is rotated every
  `--rotate-seconds` (renamed, SIGHUP, the old file counted and deleted).
- every second: VmRSS, open fds, threads of the daemon; every
  `--sample-seconds`, one CSV row: RSS (median of the window), fds and
  threads (minimum of the window: the level between polls, without the
  netlinkers' transient sockets), CPU %, and from the daemon's /metrics
  the polls, mean poll duration, sockets and namespaces of the last poll,
  rows flushed, dropped, partial polls, queue bytes, the heap the daemon
  holds and the free space its allocator keeps; and the rows the
  destination received and the churn's counters.

Verdict, on the second half of the run (the first half is warm-up):
a Theil-Sen line (the median of the slopes between every pair of
samples, which one outlier cannot move) through RSS, fds and threads; the
run FAILS (exit 1) when the line's rise over the second half exceeds the
tolerance (RSS: the larger of `--rss-tolerance-mb` and
`--rss-tolerance-pct` of its median; fds: `--fd-tolerance`; threads:
`--thread-tolerance`), when the daemon exits, when the churn fails, when
rows are dropped (unless `--allow-drops`), or when there are fewer than
6 samples in the second half. A single high sample never fails it.

Writes `<out-dir>/soak-<rev>-<time>.csv`, `.verdict.json` and `.png`
(bench/plot.py; matplotlib from the system python or the venv
ci/install-deps.sh caches). Without matplotlib it writes no PNG and says
so, except under CI=true, where it fails before starting.

Everything it creates (namespaces, helpers, the tmpfs directory, sysctls)
is removed or restored on exit, also on Ctrl-C, SIGTERM or an error.
"""

import argparse
import csv
import json
import os
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
from pathlib import Path

import load
import run
from plot import find_python
from run import ROOT, Workspace, log

MIN_SECOND_HALF_SAMPLES = 6
# SIGTERM finishes the poll in flight and flushes; past this the daemon is
# killed and the summary says so (reported, not judged: the verdict is
# about trends).
SHUTDOWN_WAIT_S = 60
# Metrics sampled from /metrics into each CSV row.
METRICS = {
    "polls": "xtcp2_poll_cycles_total",
    "poll_ratio": "xtcp2_poll_duration_ratio",
    "sockets": "xtcp2_poll_sockets",
    "netns_active": "xtcp2_netns_active",
    "rows_flushed": "xtcp2_envelope_rows_flushed_total",
    "rows_dropped": "xtcp2_destination_dropped_rows_total",
    "partial_polls": "xtcp2_poll_partial_total",
    "queue_bytes": "xtcp2_destination_queue_bytes",
    "netns_discovered": "xtcp2_netns_discovered_total",
    "netns_removed_seen": "xtcp2_netns_removed_total",
    "heap_in_use": "xtcp2_heap_in_use_bytes",
    "heap_free_held": "xtcp2_heap_free_held_bytes",
    "heap_trim_s": "xtcp2_heap_last_trim_seconds",
}
COLUMNS = (["t_s", "rss_mb", "fds", "threads", "cpu_pct", "poll_mean_s"] + list(METRICS)
           + ["rows_received", "netns_made", "netns_removed", "conns_opened", "conns_closed", "loadavg1"])


class CountingReader:
    """The tcp: destination: accepts connections on 127.0.0.1 and counts the
    JSON Lines it receives (every connection, if the daemon reconnects)."""

    def __init__(self):
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(4)
        self.port = self.listener.getsockname()[1]
        self.rows = 0
        self.bytes = 0
        self.connections = 0
        self.lock = threading.Lock()
        self.stopping = False
        threading.Thread(target=self._accept, daemon=True).start()

    def dest(self):
        return f"tcp:127.0.0.1:{self.port}"

    def _accept(self):
        while not self.stopping:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._read, args=(conn,), daemon=True).start()

    def _read(self, conn):
        with conn:
            while True:
                try:
                    data = conn.recv(1 << 20)
                except OSError:
                    return
                if not data:
                    return
                with self.lock:
                    self.rows += data.count(b"\n")
                    self.bytes += len(data)

    def received(self):
        return self.rows

    def close(self):
        self.stopping = True
        self.listener.close()


class RotatedFile:
    """The file: destination on a tmpfs, rotated like logrotate would: the
    file is renamed, the daemon gets SIGHUP and reopens the path, the rest
    of the old file is counted and it is deleted. Rows are counted as they
    arrive (from the last offset read), never by re-reading the file."""

    def __init__(self, rotate_seconds):
        self.dir = Path(tempfile.mkdtemp(prefix="xtcp2-soak-", dir="/dev/shm"))
        self.path = self.dir / "out.jsonl"
        self.rotate_seconds = rotate_seconds
        self.rows = 0
        self.offset = 0
        self.rotations = 0
        self.last = time.monotonic()
        self.pid = None

    def dest(self):
        return f"file:{self.path}"

    def _count_new(self, path):
        with open(path, "rb") as f:
            f.seek(self.offset)
            while chunk := f.read(1 << 24):
                self.rows += chunk.count(b"\n")
                self.offset += len(chunk)

    def maybe_rotate(self):
        if time.monotonic() - self.last < self.rotate_seconds or self.pid is None:
            return
        self.last = time.monotonic()
        old = self.dir / "out.jsonl.1"
        if not self.path.exists():
            return
        self.path.rename(old)
        os.kill(self.pid, signal.SIGHUP)
        # Writes in flight to the renamed file finish within a moment.
        time.sleep(1)
        self._count_new(old)
        old.unlink()
        self.offset = 0
        self.rotations += 1

    def received(self):
        if self.path.exists():
            self._count_new(self.path)
        return self.rows

    def close(self):
        shutil.rmtree(self.dir, ignore_errors=True)


def proc_snapshot(pid):
    status = Path(f"/proc/{pid}/status").read_text()
    values = {}
    for line in status.splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "Threads"):
            values[key] = int(rest.split()[0])
    values["fds"] = len(os.listdir(f"/proc/{pid}/fd"))
    return values


def theil_sen(xs, ys):
    """Median of pairwise slopes, and the intercept through the medians."""
    slopes = [(ys[j] - ys[i]) / (xs[j] - xs[i]) for i in range(len(xs)) for j in range(i + 1, len(xs)) if xs[j] != xs[i]]
    slope = statistics.median(slopes) if slopes else 0.0
    intercept = statistics.median([y - slope * x for x, y in zip(xs, ys)])
    return slope, intercept


def verdict(rows, args, died, churn_errors):
    """Fits RSS, fds and threads over the second half; the reasons to fail."""
    end = rows[-1]["t_s"] if rows else 0
    half = [r for r in rows if r["t_s"] >= end / 2]
    reasons, fits = [], {}
    if died:
        reasons.append(died)
    if churn_errors:
        reasons.append(f"churn failed: {churn_errors}")
    if len(half) < MIN_SECOND_HALF_SAMPLES:
        reasons.append(f"only {len(half)} samples in the second half (need {MIN_SECOND_HALF_SAMPLES}): run longer")
    else:
        rss_median = statistics.median(r["rss_mb"] for r in half)
        tolerances = {
            "rss_mb": max(args.rss_tolerance_mb, rss_median * args.rss_tolerance_pct / 100),
            "fds": args.fd_tolerance,
            "threads": args.thread_tolerance,
        }
        for name, tol in tolerances.items():
            xs = [r["t_s"] for r in half]
            ys = [r[name] for r in half]
            slope, intercept = theil_sen(xs, ys)
            rise = slope * (xs[-1] - xs[0])
            fits[name] = {"slope_per_s": slope, "intercept": intercept, "t0_s": xs[0], "t1_s": xs[-1],
                          "rise": rise, "tolerance": tol, "first": ys[0], "last": ys[-1],
                          "min": min(ys), "max": max(ys), "per_hour": slope * 3600}
            if rise > tol:
                reasons.append(f"{name} trends upward over the second half: {rise:+.2f} "
                               f"({slope * 3600:+.2f}/hour) > tolerance {tol:.2f}")
    dropped = rows[-1].get("rows_dropped") if rows else None
    if dropped and not args.allow_drops:
        reasons.append(f"{dropped:.0f} rows dropped by the daemon with a destination that keeps up")
    return {"result": "FAIL" if reasons else "PASS", "reasons": reasons, "fits": fits}


def soak(args, ws, sysctls, dest, report):
    tools_env = dict(os.environ, XTCP2_LOG="info", RUST_BACKTRACE="0")
    if args.host_connections:
        load.raise_for_host_sockets(sysctls, 2 * (args.host_connections + args.conn_population) + 10_000)
        load.host_sockets(ws, args.host_connections)
    nl = load.NamespaceLoad(ws)
    churn = load.Churn(nl, netns_per_s=args.netns_rate, netns_population=args.netns_population,
                       netns_sockets=args.netns_sockets, conns_per_s=args.conn_rate,
                       conn_population=args.conn_population)
    churn.start()
    port = run.free_port()
    argv = [args.xtcp2, "--frequency", args.frequency, "--prom-listen", f"127.0.0.1:{port}",
            "--netns-dirs", str(ws.netns_dir), "--netns-proc-scan=false", "--marshal", "jsonl",
            "--dest", dest.dest()] + args.xtcp2_arg
    report["xtcp2_argv"] = " ".join(argv)
    log(f"soak for {args.minutes} min: {' '.join(argv)}")
    # Kept beside the CSV: a drop or a warning hours into a run is read
    # from the daemon's own log, not guessed at.
    err_path = Path(args.csv).with_suffix(".stderr.log")
    err = open(err_path, "w+")
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=err, env=tools_env)
    if isinstance(dest, RotatedFile):
        dest.pid = proc.pid
    rows, died = [], None
    out = open(args.csv, "w", newline="")
    writer = csv.DictWriter(out, fieldnames=COLUMNS)
    writer.writeheader()
    started = time.monotonic()
    end = started + args.minutes * 60
    ticks = os.sysconf("SC_CLK_TCK")
    last_cpu, last_t = None, None
    last_sum = last_count = None
    window = []
    try:
        next_tick = started
        while time.monotonic() < end:
            # One snapshot a second; after a stall (a rotation, a slow
            # scrape) start again from now rather than catch up in a burst
            # of snapshots taken back to back.
            next_tick = max(next_tick + 1, time.monotonic())
            time.sleep(max(0, next_tick - time.monotonic()))
            if proc.poll() is not None:
                err.seek(0)
                died = f"daemon exited {proc.returncode}: {err.read()[-1500:]}"
                break
            if churn.errors:
                break
            try:
                window.append(proc_snapshot(proc.pid))
            except (FileNotFoundError, ProcessLookupError):
                continue
            if isinstance(dest, RotatedFile):
                dest.maybe_rotate()
            if len(window) < args.sample_seconds:
                continue
            t = time.monotonic() - started
            stat = Path(f"/proc/{proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
            cpu = (int(stat[11]) + int(stat[12])) / ticks
            metrics = run.scrape(port) or ""
            row = {
                "t_s": round(t, 1),
                "rss_mb": round(statistics.median(w["VmRSS"] for w in window) / 1024, 2),
                "fds": min(w["fds"] for w in window),
                "threads": min(w["Threads"] for w in window),
                "cpu_pct": round((cpu - last_cpu) / (t - last_t) * 100, 1) if last_cpu is not None else "",
                "rows_received": dest.received(),
                "loadavg1": float(Path("/proc/loadavg").read_text().split()[0]),
            }
            for col, name in METRICS.items():
                row[col] = run.metric_value(metrics, name)
            s = run.metric_value(metrics, "xtcp2_poll_duration_seconds_sum")
            c = run.metric_value(metrics, "xtcp2_poll_duration_seconds_count")
            if s is not None and last_sum is not None and c and c > last_count:
                row["poll_mean_s"] = round((s - last_sum) / (c - last_count), 4)
            else:
                row["poll_mean_s"] = ""
            last_sum, last_count = s, c
            last_cpu, last_t = cpu, t
            row.update({k: v for k, v in churn.counters().items() if k in COLUMNS})
            writer.writerow(row)
            out.flush()
            rows.append(row)
            window = []
            if len(rows) % max(1, 60 // args.sample_seconds) == 0:
                log(f"t={t / 60:.1f} min: rss {row['rss_mb']} MB, fds {row['fds']}, threads {row['threads']}, "
                    f"polls {row['polls']}, poll {row['poll_mean_s']} s, sockets {row['sockets']}, "
                    f"netns {row['netns_active']}, rows received {row['rows_received']}, dropped {row['rows_dropped']}")
    finally:
        churn.stop()
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            stopping = time.monotonic()
            try:
                proc.wait(timeout=SHUTDOWN_WAIT_S)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            report["shutdown_s"] = round(time.monotonic() - stopping, 1)
        out.close()
        err.close()
    report["churn"] = churn.counters()
    report["churn_errors"] = churn.errors
    report["daemon_exit"] = proc.returncode
    report["rows_received_final"] = dest.received()
    report["stderr_tail"] = err_path.read_text(errors="replace")[-3000:]
    return rows, died, churn.errors


def parse_range(s):
    if "-" in s:
        lo, hi = s.split("-")
        return (int(lo), int(hi))
    return int(s)


def stop_on_sigterm(_signum, _frame):
    raise KeyboardInterrupt("SIGTERM")


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--minutes", type=float, default=5)
    p.add_argument("--xtcp2", default=str(ROOT / "target/release/xtcp2"))
    p.add_argument("--frequency", default="2s")
    p.add_argument("--dest", choices=["tcp", "file"], default="tcp")
    p.add_argument("--rotate-seconds", type=int, default=60)
    p.add_argument("--sample-seconds", type=int, default=5)
    p.add_argument("--host-connections", type=int, default=5_000)
    p.add_argument("--netns-rate", type=float, default=1.0, help="namespaces made (and removed) per second")
    p.add_argument("--netns-population", type=int, default=30)
    p.add_argument("--netns-sockets", type=parse_range, default=(10, 200), help="sockets per namespace: N or LOW-HIGH")
    p.add_argument("--conn-rate", type=float, default=100.0, help="connections opened (and closed) per second")
    p.add_argument("--conn-population", type=int, default=2_000)
    # Tolerances of the second half's fitted rise. Measured noise on the
    # busy 2-core machine (polls overrunning their period, 2.5-minute
    # windows of a daemon that was not leaking): RSS rose by up to 2.2 MB,
    # fds by up to 2.7 and threads by up to 2.4 (tokio's blocking threads
    # come and go with slow polls). The defaults sit just above that, so
    # CI's 5 minutes fail on a leak of about a thread or an fd per minute
    # or 100 MB an hour, never on noise; a long run sees far smaller leaks
    # (4 MB over its second hour).
    p.add_argument("--rss-tolerance-mb", type=float, default=4.0)
    p.add_argument("--rss-tolerance-pct", type=float, default=10.0)
    p.add_argument("--fd-tolerance", type=float, default=4.0)
    p.add_argument("--thread-tolerance", type=float, default=3.0)
    p.add_argument("--allow-drops", action="store_true")
    p.add_argument("--xtcp2-arg", action="append", default=[], help="extra xtcp2 argument (repeatable)")
    p.add_argument("--out-dir", default=str(ROOT / "target" / "soak"))
    p.add_argument("--plot-out", default="", help="PNG (default next to the CSV)")
    args = p.parse_args()
    if os.geteuid() != 0:
        sys.exit("bench/soak.py needs root (namespaces, inet_diag of every socket)")
    if not Path(args.xtcp2).exists():
        sys.exit(f"{args.xtcp2} is missing: run `cargo build --release` first")
    python = find_python()
    if python is None:
        if os.environ.get("CI") == "true":
            sys.exit("bench/soak.py: no python with matplotlib (system or /var/cache/xtcp2-ci/bench-venv); "
                     "under CI=true the soak fails rather than run without its plot: run `bash ci/install-deps.sh`")
        log("no python with matplotlib: the CSV and verdict are written, the PNG is not (bash ci/install-deps.sh)")
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    stamp = f"soak-{run.git_describe()}-{time.strftime('%Y%m%d-%H%M%S')}"
    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    args.csv = out_dir / f"{stamp}.csv"
    png = Path(args.plot_out) if args.plot_out else args.csv.with_suffix(".png")
    report = {"commit": run.git_describe(), "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
              "kernel": os.uname().release, "machine": run.machine_load(),
              "args": {k: str(v) for k, v in vars(args).items()}}
    ws = Workspace()
    sysctls = load.Sysctls()
    dest = CountingReader() if args.dest == "tcp" else RotatedFile(args.rotate_seconds)
    signal.signal(signal.SIGTERM, stop_on_sigterm)
    interrupted = False
    try:
        rows, died, churn_errors = soak(args, ws, sysctls, dest, report)
    except KeyboardInterrupt:
        interrupted = True
        rows, died, churn_errors = [], "interrupted", []
    finally:
        ws.close()
        sysctls.restore()
        dest.close()
    if interrupted:
        sys.exit("bench/soak.py: interrupted; namespaces, helpers and outputs removed, sysctls restored")
    v = verdict(rows, args, died, churn_errors)
    report.update(v)
    report["machine_after"] = run.machine_load()
    report["samples"] = len(rows)
    last = rows[-1] if rows else {}
    report["title"] = (f"xtcp2 soak {args.minutes:g} min, commit {report['commit']}, --frequency {args.frequency}, "
                       f"dest {args.dest}, churn {args.netns_rate:g} netns/s + {args.conn_rate:g} conns/s, "
                       f"{last.get('polls') or 0:.0f} polls")
    verdict_path = args.csv.with_suffix(".verdict.json")
    verdict_path.write_text(json.dumps(report, indent=1, default=str))
    if python and rows:
        subprocess.run([python, str(ROOT / "bench" / "plot.py"), "soak", str(args.csv), str(png)])
    print(f"\nsoak {args.minutes:g} min: {len(rows)} samples, {last.get('polls') or 0:.0f} polls, "
          f"rows received {report.get('rows_received_final')}, dropped {last.get('rows_dropped')}, "
          f"partial polls {last.get('partial_polls')}, churn {report.get('churn')}")
    for name, f in v["fits"].items():
        print(f"  {name:<8} second half: first {f['first']:.2f}, last {f['last']:.2f}, range {f['min']:.2f}-{f['max']:.2f}, "
              f"fitted rise {f['rise']:+.2f} (tolerance {f['tolerance']:.2f}, {f['per_hour']:+.2f}/hour)")
    if report.get("daemon_exit") not in (0, None):
        print(f"WARNING: the daemon exited {report['daemon_exit']} after SIGTERM "
              f"({report.get('shutdown_s')} s; killed after {SHUTDOWN_WAIT_S} s): see the stderr tail in the verdict file")
    print(f"csv: {args.csv}\nverdict: {verdict_path}" + (f"\nplot: {png}" if python and rows else ""))
    print(f"soak: {v['result']}" + ("".join(f"\n  - {r}" for r in v["reasons"])))
    sys.exit(1 if v["reasons"] else 0)


if __name__ == "__main__":
    main()
