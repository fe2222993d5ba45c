#!/usr/bin/env python3
"""xtcp2 at fleet scale (issue 23): a million sockets, a thousand namespaces.

Run as root from anywhere, after `cargo build --release --bins --examples`:

    python3 bench/scale.py                      # both suites and the plot (the 1,000 namespaces take long)
    python3 bench/scale.py --suite sockets      # 10k -> 100k -> 1M sockets in the root namespace
    python3 bench/scale.py --suite namespaces   # 10 -> 100 -> 1,000 namespaces x 100 sockets
    python3 bench/scale.py --plot FILE.json     # redraw docs/img/scale.png from a run

Suite `sockets`: for each total of sockets (`--sockets`, default 10,000,
100,000, 1,000,000), loopback connections in the root namespace
(bench/load.py: 55 helper processes at a million, each listening on an
address of its own and connecting from 127.B.x.y addresses of its own),
then bench/run.py's one-shot cases (floor, null, jsonl, protobufList)
`--repeat` times each (interleaved) with the same measures: CPU (user+sys
from wait4) as a ratio to the floor of the same load, wall time, peak RSS,
records lost. Then the kernel probe: the floor's CPU per namespace as the
host's sockets grow, from `--probe-namespaces` empty namespaces (lo only)
dumped on top of the host: (floor with them - floor without) / count.
Each such dump walks the whole shared established hash, so this is what
every namespace costs on a host that size; the probe is repeated with
namespaces made while `net.ipv4.tcp_child_ehash_entries` is set (each gets
a hash table of its own, kernel 6.1+). At the largest size, with `--perf`,
`perf record -g` of the null and jsonl one-shots, and with
`--daemon-seconds`, xtcp2 as a daemon with default flags (10 s polls) to
see its poll time and RSS at that size.

Suite `namespaces`: for each count of namespaces (`--namespaces`, default
10, 100, 1,000), each holding `--ns-sockets` sockets (100 by default, or a
range like 10-1000 drawn per namespace), the same one-shot cases; at the
largest count the daemon with default flags (10 s polls) for
`--daemon-seconds`, its poll duration against the 10 s period, once with
the namespaces sharing the host's hash table and once with namespaces made
under `tcp_child_ehash_entries`.

Sysctls raised for the load are restored on exit (also Ctrl-C, SIGTERM, an
error); namespaces, helpers and output files are removed. Results go to
target/bench/scale-<rev>-<time>.json and .md; the plot (`--plot-out`,
docs/img/scale.png by default) is drawn by bench/plot.py with a python
that has matplotlib (see bench/plot.py). Timings are never judged; the
exit code is 3 when a run lost records.
"""

import argparse
import json
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import load
import run
from run import ROOT, Tools, Workspace, aggregate_runs, fmt_range, log, measure_cases, measured, summarise

CASES = ["floor", "null", "jsonl", "protobufList"]
# Namespaces created with their own established hash get this many buckets
# (rounded up to a power of two by the kernel): plenty for 100-1,000 sockets.
CHILD_EHASH_ENTRIES = 1024


def floor_cpu(tools, netns_dirs, repeat, states=None):
    """CPU seconds of the floor over the host plus the namespaces in
    netns_dirs ("" for the host only), `repeat` runs."""
    out = []
    for _ in range(repeat):
        argv = [str(tools.floor), "dump", "--netns-dirs", netns_dirs, "--deserializers", "default"]
        if states:
            argv += ["--states", states]
        with tempfile.TemporaryFile() as f:
            m = measured(argv, stdout=f)
            f.seek(0)
            counts = json.loads(f.read())
        out.append({"cpu_s": m["cpu_s"], "wall_s": m["wall_s"], "namespaces": counts["namespaces"], "sockets": counts["sockets"]})
    return out


def kernel_probe(tools, ws, sysctls, count, repeat):
    """Floor CPU per empty namespace on this host, for namespaces sharing
    the host's established hash and namespaces with their own, each with
    every state (xtcp2's default) and without bound-inactive."""
    result = {}
    for layout in ("shared_ehash", "own_ehash"):
        probe_dir = ws.netns_dir / f"probe-{layout}"
        probe_dir.mkdir()
        if layout == "own_ehash":
            sysctls.set("net.ipv4.tcp_child_ehash_entries", CHILD_EHASH_ENTRIES)
        paths = []
        try:
            for i in range(count):
                path = probe_dir / f"p{i}"
                load.make_netns(path)
                ws.namespaces.append(path)
                paths.append(path)
        finally:
            if layout == "own_ehash":
                sysctls.set("net.ipv4.tcp_child_ehash_entries", 0)
        for states, suffix in ((None, ""), (run.STATES_NO_BOUND, "_nobound")):
            host = floor_cpu(tools, "", repeat, states)
            with_ns = floor_cpu(tools, str(probe_dir), repeat, states)
            host_cpu = summarise([r["cpu_s"] for r in host])
            ns_cpu = summarise([r["cpu_s"] for r in with_ns])
            per_ns_ms = (ns_cpu["median"] - host_cpu["median"]) / count * 1e3
            result[layout + suffix] = {
                "namespaces": count,
                "host_floor_cpu_s": host_cpu,
                "with_namespaces_floor_cpu_s": ns_cpu,
                "per_namespace_cpu_ms": per_ns_ms,
                "host_sockets": host[0]["sockets"],
            }
            log(f"kernel probe, {layout}{suffix}: host floor {host_cpu['median'] * 1e3:.1f} ms, with {count} empty "
                f"namespaces {ns_cpu['median'] * 1e3:.1f} ms: {per_ns_ms:.2f} ms CPU per namespace")
        for path in paths:
            load.remove_netns(path)
            ws.namespaces.remove(path)
        probe_dir.rmdir()
    return result


def perf_one_shot(tools, ws, extra, path, rows=20):
    """perf record -g of one xtcp2 one-shot; the top of perf report."""
    argv = ["perf", "record", "-F", "999", "-g", "-o", str(path), "--"] + tools.xtcp2_argv(ws.netns_dir, extra)
    rec = subprocess.run(argv, capture_output=True, text=True, env=tools.env, timeout=300)
    if rec.returncode != 0:
        return {"error": rec.stderr[-800:]}
    rep = subprocess.run(["perf", "report", "-i", str(path), "--no-children", "--sort", "dso,sym", "--stdio"],
                         capture_output=True, text=True)
    lines = [l for l in rep.stdout.splitlines() if re.match(r"^\s+\d+\.\d+%\s", l)]
    return {"argv": " ".join(extra), "top": lines[:rows]}


def daemon_probe(tools, ws, seconds, extra=("--dest", "null")):
    """xtcp2 as a daemon with default flags (10 s polls, --timeout auto)
    for `seconds`: poll durations from /metrics, RSS, partial polls."""
    port = run.free_port()
    argv = [str(tools.xtcp2), "--prom-listen", f"127.0.0.1:{port}", "--netns-dirs", str(ws.netns_dir),
            "--netns-proc-scan=false"] + list(extra)
    log(f"daemon, default flags, {seconds}s: {' '.join(argv[1:])}")
    err = open(ws.dir / "daemon.stderr", "w+")
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=err, env=tools.env)
    ratios, rss = [], []
    try:
        started = time.monotonic()
        cpu0 = None
        while time.monotonic() - started < seconds:
            time.sleep(1)
            if proc.poll() is not None:
                err.seek(0)
                raise RuntimeError(f"daemon exited {proc.returncode}: {err.read()[-2000:]}")
            if cpu0 is None:
                cpu0 = run.proc_cpu_s(proc.pid)
            rss.append(run.proc_status_kb(proc.pid, "VmRSS") / 1024)
            r = run.metric_value(run.scrape(port), "xtcp2_poll_duration_ratio")
            if r is not None:
                ratios.append(r)
        metrics = run.scrape(port) or ""
        cpu_s = run.proc_cpu_s(proc.pid) - cpu0
        polls = run.metric_value(metrics, "xtcp2_poll_cycles_total") or 0
        dur_sum = run.metric_value(metrics, "xtcp2_poll_duration_seconds_sum") or 0
        dur_count = run.metric_value(metrics, "xtcp2_poll_duration_seconds_count") or 0
        result = {
            "args": " ".join(extra),
            "seconds": seconds,
            "polls": polls,
            "poll_mean_s": dur_sum / dur_count if dur_count else None,
            "poll_ratio_max": max(ratios) if ratios else None,
            "poll_partial": run.metric_value(metrics, "xtcp2_poll_partial_total"),
            "sockets_missed": run.metric_value(metrics, "xtcp2_poll_sockets_missed"),
            "poll_sockets": run.metric_value(metrics, "xtcp2_poll_sockets"),
            "netns_active": run.metric_value(metrics, "xtcp2_netns_active"),
            "rows_dropped": run.metric_value(metrics, "xtcp2_destination_dropped_rows_total"),
            "cpu_s": cpu_s,
            "rss_mb": summarise(rss),
            "hwm_mb": run.proc_status_kb(proc.pid, "VmHWM") / 1024,
        }
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        err.close()
    log(f"daemon: {result['polls']:.0f} polls, mean {result['poll_mean_s'] or 0:.2f}s, ratio max {result['poll_ratio_max']}, "
        f"partial {result['poll_partial']}, sockets {result['poll_sockets']}, VmHWM {result['hwm_mb']:.1f} MB")
    return result


def suite_sockets(args, tools, ws, sysctls, report):
    results = []
    largest = max(args.sockets)
    load.raise_for_host_sockets(sysctls, largest)
    for total in sorted(args.sockets):
        connections = total // 2
        repeat = args.repeat_large if total >= 1_000_000 else args.repeat
        log(f"sockets={total}: opening {connections} connections in the root namespace")
        load.host_sockets(ws, connections)
        stat = load.sockstat()
        log(f"sockstat TCP: {stat}")
        runs = measure_cases(tools, ws, [], repeat, args.sockets_cases)
        r = aggregate_runs(connections, 0, runs)
        r["sockets_target"] = total
        r["sockstat"] = stat
        r["machine"] = run.machine_load()
        if args.probe_namespaces:
            r["kernel_probe"] = kernel_probe(tools, ws, sysctls, args.probe_namespaces, repeat)
        if total == largest and args.perf and shutil.which("perf"):
            out_dir = ROOT / "target" / "bench"
            r["perf"] = [perf_one_shot(tools, ws, ["--dest", "null"], out_dir / "scale-null.perf.data"),
                         perf_one_shot(tools, ws, ["--marshal", "jsonl", "--dest", f"file:{ws.dir}/perf.jsonl"],
                                       out_dir / "scale-jsonl.perf.data")]
            (ws.dir / "perf.jsonl").unlink(missing_ok=True)
        if total == largest and args.daemon_seconds:
            r["daemon"] = [daemon_probe(tools, ws, args.daemon_seconds, ("--dest", "null")),
                           daemon_probe(tools, ws, args.daemon_seconds, ("--dest", "file:/dev/null", "--marshal", "jsonl"))]
        ws.stop_helpers()
        results.append(r)
        print_rows([r], f"sockets={total}")
        report["sockets"] = results
        save(report, args)  # a run can be cut short: keep what is done
    return results


def suite_namespaces(args, tools, ws, sysctls, report):
    results = []
    largest = max(args.namespaces)
    load.raise_for_host_sockets(sysctls, largest * (args.ns_sockets[1] if isinstance(args.ns_sockets, tuple) else args.ns_sockets))
    nobound = ["--states", run.STATES_NO_BOUND]
    for count in sorted(args.namespaces):
        repeat = args.repeat_large if count >= 1_000 else args.repeat
        nl = load.NamespaceLoad(ws)
        in_ns = nl.populate(count, args.ns_sockets)
        cases = CASES + (["floor_nobound", "null_nobound"] if count == largest else [])
        runs = measure_cases(tools, ws, list(ws.namespaces), repeat, cases)
        r = aggregate_runs(None, count, runs)
        r["sockets_in_namespaces"] = in_ns
        r["machine"] = run.machine_load()
        if count == largest and args.daemon_seconds:
            r["daemon_shared_ehash"] = daemon_probe(tools, ws, args.daemon_seconds, ("--dest", "null"))
            r["daemon_shared_ehash_nobound"] = daemon_probe(tools, ws, args.daemon_seconds, ["--dest", "null"] + nobound)
        teardown(ws, nl)
        if count == largest:
            # The same namespaces, each with an established hash of its own.
            sysctls.set("net.ipv4.tcp_child_ehash_entries", CHILD_EHASH_ENTRIES)
            try:
                nl = load.NamespaceLoad(ws)
                nl.populate(count, args.ns_sockets, prefix="own")
            finally:
                sysctls.set("net.ipv4.tcp_child_ehash_entries", 0)
            own = measure_cases(tools, ws, list(ws.namespaces), repeat,
                                ["floor", "null", "floor_nobound", "null_nobound", "jsonl", "protobufList"])
            r["own_ehash"] = aggregate_runs(None, count, own)
            if args.daemon_seconds:
                r["daemon_own_ehash"] = daemon_probe(tools, ws, args.daemon_seconds, ("--dest", "null"))
                r["daemon_own_ehash_nobound"] = daemon_probe(tools, ws, args.daemon_seconds, ["--dest", "null"] + nobound)
            teardown(ws, nl)
        results.append(r)
        print_rows([r], f"namespaces={count}")
        if "own_ehash" in r:
            print_rows([r["own_ehash"]], f"namespaces={count}, each with its own established hash")
        report["namespaces"] = results
        save(report, args)
    return results


def teardown(ws, nl):
    started = time.monotonic()
    ws.stop_helpers()
    for name in list(nl.netns):
        path = ws.netns_dir / name
        load.remove_netns(path)
        if path in ws.namespaces:
            ws.namespaces.remove(path)
    log(f"namespaces removed in {time.monotonic() - started:.1f}s")


def print_rows(results, title):
    print(f"\n== {title}")
    print(f"{'case':<13} {'sockets':>9} {'wall ms med [range]':>28} {'cpu ms med [range]':>28} {'cpu/floor':>9} {'rss MB max':>10} {'lost':>5}")
    for r in results:
        for case, e in r["cases"].items():
            lost = e.get("records_lost")
            lost_text = "-" if lost is None else ("?" if None in lost else str(max(lost)))
            sockets = e["sockets"]["median"] if e["sockets"] else "-"
            print(f"{case:<13} {sockets:>9} {fmt_range(e['wall_s'], 1e3, 1):>28} {fmt_range(e['cpu_s'], 1e3, 1):>28} "
                  f"{e.get('cpu_ratio', 0):>8.2f}x {e['rss_mb']['max']:>10.1f} {lost_text:>5}")
    sys.stdout.flush()


def markdown(report):
    lines = ["| load | case | sockets | wall ms median [range] | CPU ms median [range] | CPU/floor | peak RSS MB | lost |",
             "|---|---|---:|---|---|---:|---:|---:|"]
    rows = [(f"{r['sockets_target']:,} sockets, root namespace", r) for r in report.get("sockets", [])]
    rows += [(f"{r['namespaces']:,} namespaces", r) for r in report.get("namespaces", [])]
    rows += [(f"{r['namespaces']:,} namespaces, own hash", r["own_ehash"]) for r in report.get("namespaces", []) if "own_ehash" in r]
    for label, r in rows:
        for case, e in r["cases"].items():
            lost = e.get("records_lost")
            sockets = e["sockets"]["median"] if e["sockets"] else None
            lines.append(f"| {label} | {case} | {'-' if sockets is None else f'{sockets:,.0f}'} | {fmt_range(e['wall_s'], 1e3, 1)} | "
                         f"{fmt_range(e['cpu_s'], 1e3, 1)} | {e.get('cpu_ratio', 0):.2f}x | {e['rss_mb']['max']:.1f} | "
                         f"{'-' if lost is None else ('?' if None in lost else max(lost))} |")
    probes = [(r["kernel_probe"]["shared_ehash"]["host_sockets"], r["kernel_probe"])
              for r in report.get("sockets", []) if "kernel_probe" in r]
    if probes:
        lines += ["", "| host sockets | floor CPU ms per namespace: shared hash, all states | shared hash, no bound-inactive | own hash, all states | own hash, no bound-inactive |",
                  "|---:|---:|---:|---:|---:|"]
        for sockets, p in probes:
            cells = " | ".join(f"{p[k]['per_namespace_cpu_ms']:.2f}" if k in p else "-"
                               for k in ("shared_ehash", "shared_ehash_nobound", "own_ehash", "own_ehash_nobound"))
            lines.append(f"| {sockets:,.0f} | {cells} |")
    for r in report.get("sockets", []) + report.get("namespaces", []):
        for key in ("daemon", "daemon_shared_ehash", "daemon_shared_ehash_nobound", "daemon_own_ehash", "daemon_own_ehash_nobound"):
            ds = r.get(key)
            for d in ([ds] if isinstance(ds, dict) else ds or []):
                lines.append(f"- {key} ({d['args']}): {d['polls']:.0f} polls in {d['seconds']} s, mean poll {d['poll_mean_s'] or 0:.2f} s, "
                             f"max ratio {d['poll_ratio_max']}, partial {d['poll_partial']}, sockets {d['poll_sockets']}, "
                             f"CPU {d['cpu_s']:.1f} s, VmHWM {d['hwm_mb']:.1f} MB")
    return "\n".join(lines) + "\n"


def save(report, args):
    out = Path(report["out"])
    out.parent.mkdir(parents=True, exist_ok=True)
    report["machine_after"] = run.machine_load()
    out.write_text(json.dumps(report, indent=1, default=str))
    out.with_suffix(".md").write_text(markdown(report))


def plot(results_json, png):
    python = plot_python()
    if python is None:
        log("no python with matplotlib (system or /var/cache/xtcp2-ci/bench-venv): plot skipped; "
            "bash ci/install-deps.sh makes the venv")
        return False
    rc = subprocess.run([python, str(ROOT / "bench" / "plot.py"), "scale", str(results_json), str(png)]).returncode
    return rc == 0


def plot_python():
    from plot import find_python
    return find_python()


def parse_sockets_range(s):
    if "-" in s:
        lo, hi = s.split("-")
        return (int(lo), int(hi))
    return int(s)


def stop_on_sigterm(_signum, _frame):
    raise KeyboardInterrupt("SIGTERM")


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--suite", choices=["all", "sockets", "namespaces"], default="all")
    p.add_argument("--sockets", type=lambda s: [int(x) for x in s.split(",")], default=[10_000, 100_000, 1_000_000])
    p.add_argument("--namespaces", type=lambda s: [int(x) for x in s.split(",")], default=[10, 100, 1_000])
    p.add_argument("--ns-sockets", type=parse_sockets_range, default=100,
                   help="sockets per namespace: a number, or LOW-HIGH drawn per namespace")
    p.add_argument("--sockets-cases", type=lambda s: [c for c in s.split(",") if c], default=CASES,
                   help="one-shot cases of the sockets suite (empty: only the kernel probe)")
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--repeat-large", type=int, default=3, help="repetitions at 1M sockets and 1,000 namespaces")
    p.add_argument("--probe-namespaces", type=int, default=20, help="empty namespaces for the kernel probe (0: none)")
    p.add_argument("--perf", action="store_true", help="perf record the null and jsonl one-shots at the largest size")
    p.add_argument("--daemon-seconds", type=int, default=40, help="daemon with default flags at the largest size (0: none)")
    p.add_argument("--xtcp2", default=str(ROOT / "target/release/xtcp2"))
    p.add_argument("--floor", default=str(ROOT / "target/release/examples/floor_dump"))
    p.add_argument("--out", default="")
    p.add_argument("--plot", default="", help="only redraw the plot from this results JSON")
    p.add_argument("--plot-out", default=str(ROOT / "docs" / "img" / "scale.png"))
    args = p.parse_args()
    args.cases = ""
    if args.plot:
        sys.exit(0 if plot(args.plot, args.plot_out) else 1)
    if os.geteuid() != 0:
        sys.exit("bench/scale.py needs root (namespaces, sysctls, inet_diag of every socket)")
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    tools = Tools(args)
    run.LAUNCHER = tools.floor
    report = {
        "suite": args.suite,
        "commit": run.git_describe(),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "kernel": os.uname().release,
        "machine": run.machine_load(),
        "kernel_allows": load.kernel_allows(),
        "args": {k: v for k, v in vars(args).items()},
    }
    report["out"] = args.out or str(ROOT / "target" / "bench" / f"scale-{report['commit']}-{time.strftime('%Y%m%d-%H%M%S')}.json")
    started = time.monotonic()
    ws = Workspace()
    sysctls = load.Sysctls()
    signal.signal(signal.SIGTERM, stop_on_sigterm)
    try:
        if args.suite in ("all", "sockets"):
            suite_sockets(args, tools, ws, sysctls, report)
        if args.suite in ("all", "namespaces"):
            suite_namespaces(args, tools, ws, sysctls, report)
    except KeyboardInterrupt:
        ws.close()
        sysctls.restore()
        sys.exit("bench/scale.py: interrupted; namespaces, helpers and outputs removed, sysctls restored")
    finally:
        ws.close()
        sysctls.restore()
    report["duration_s"] = round(time.monotonic() - started, 1)
    save(report, args)
    print(f"\nresults: {report['out']} ({report['duration_s']}s, load {report['machine']['loadavg']} -> "
          f"{report['machine_after']['loadavg']})")
    plot(report["out"], args.plot_out)
    lost = []
    for r in report.get("sockets", []) + report.get("namespaces", []):
        for case, e in r["cases"].items():
            if any(x != 0 for x in e.get("records_lost", [])):
                lost.append(f"{case}: {e['records_lost']}")
    if lost:
        print("records lost or not accounted for: " + "; ".join(lost), file=sys.stderr)
        sys.exit(3)


if __name__ == "__main__":
    main()
