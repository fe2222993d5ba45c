#!/usr/bin/env python3
"""Plots for the scale benchmark and the soak run (matplotlib, PNG).

    plot.py scale RESULTS.json OUT.png   # bench/scale.py's growth curves
    plot.py soak SAMPLES.csv OUT.png     # bench/soak.py's samples and verdict

The benchmarks themselves run on the system python3, which has no
matplotlib on a fresh Debian; they call this script with `find_python()`:
the first of $XTCP2_BENCH_PYTHON, the running python, and the venv that
ci/install-deps.sh caches in /var/cache/xtcp2-ci/bench-venv, that can
import matplotlib.
"""

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

BENCH_VENV_PYTHON = "/var/cache/xtcp2-ci/bench-venv/bin/python"
CASE_STYLE = {
    "floor": ("black", "o", "floor (kernel)"),
    "null": ("tab:blue", "s", "xtcp2 --dest null"),
    "protobufList": ("tab:green", "^", "xtcp2 protobufList to a file"),
    "jsonl": ("tab:red", "D", "xtcp2 jsonl to a file"),
}
TARGETS = {"null": 1.05, "protobufList": 1.3, "jsonl": 2.0}


def find_python():
    """A python that can import matplotlib, or None."""
    candidates = [os.environ.get("XTCP2_BENCH_PYTHON"), sys.executable, BENCH_VENV_PYTHON]
    for python in candidates:
        if not python or not Path(python).exists():
            continue
        ok = subprocess.run([python, "-c", "import matplotlib"], capture_output=True).returncode == 0
        if ok:
            return python
    return None


def plot_scale(results_path, out):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    report = json.loads(Path(results_path).read_text())
    sock = report.get("sockets", [])
    nss = report.get("namespaces", [])
    fig, axes = plt.subplots(2, 3, figsize=(17, 10))
    fig.suptitle(f"xtcp2 at scale: one collection per case, CPU (user+sys) median, commit {report['commit']}, "
                 f"kernel {report['kernel']}, {report['machine']['cpus']} CPUs", fontsize=11)

    def series(results, xkey, ykey, case):
        xs, ys, lo, hi = [], [], [], []
        for r in results:
            e = r["cases"].get(case)
            if not e:
                continue
            xs.append(xkey(r))
            v = e[ykey]
            ys.append(v["median"] if isinstance(v, dict) else v)
            if isinstance(v, dict):
                lo.append(v["median"] - v["min"])
                hi.append(v["max"] - v["median"])
        return xs, ys, (lo, hi) if lo else None

    sockets_of = lambda r: r["cases"]["floor"]["sockets"]["median"]  # noqa: E731
    ns_of = lambda r: r["namespaces"]  # noqa: E731

    ax = axes[0][0]
    for case, (color, marker, label) in CASE_STYLE.items():
        xs, ys, err = series(sock, sockets_of, "cpu_s", case)
        if xs:
            ax.errorbar(xs, ys, yerr=err, color=color, marker=marker, label=label, capsize=3)
    ax.set(xscale="log", yscale="log", xlabel="sockets in the root namespace", ylabel="CPU s per collection",
           title="CPU vs sockets (error bars: min-max)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)

    ax = axes[0][1]
    for case in ("null", "protobufList", "jsonl"):
        color, marker, label = CASE_STYLE[case]
        xs, ys, _ = series(sock, sockets_of, "cpu_ratio", case)
        if xs:
            ax.plot(xs, ys, color=color, marker=marker, label=label)
            ax.axhline(TARGETS[case], color=color, linestyle=":", linewidth=1)
    ax.set(xscale="log", xlabel="sockets in the root namespace", ylabel="CPU / floor CPU (same run)",
           title="ratio to the kernel floor (dotted: issue 23 targets)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)

    ax = axes[0][2]
    for case, (color, marker, label) in CASE_STYLE.items():
        xs, _, _ = series(sock, sockets_of, "rss_mb", case)
        ys = [r["cases"][case]["rss_mb"]["max"] for r in sock if case in r["cases"]]
        if xs:
            ax.plot(xs, ys, color=color, marker=marker, label=label)
    ax.axhline(24, color="grey", linestyle=":", linewidth=1)
    ax.axhline(64, color="grey", linestyle=":", linewidth=1)
    ax.text(1.0, 24, " 24 MB target (100k)", transform=ax.get_yaxis_transform(), fontsize=7, va="bottom", ha="right")
    ax.text(1.0, 64, " 64 MB target (1M)", transform=ax.get_yaxis_transform(), fontsize=7, va="bottom", ha="right")
    ax.set(xscale="log", xlabel="sockets in the root namespace", ylabel="peak RSS MB (worst run)",
           title="peak memory of a one-shot, default flags")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)

    ax = axes[1][0]
    for case, (color, marker, label) in CASE_STYLE.items():
        xs, ys, err = series(nss, ns_of, "cpu_s", case)
        if xs:
            ax.errorbar(xs, ys, yerr=err, color=color, marker=marker, label=label, capsize=3)
    own = [(r["namespaces"], r["own_ehash"]) for r in nss if "own_ehash" in r]
    for case, color, marker, label in (
            ("floor", "k", "*", "floor, own hash"), ("null", "tab:blue", "P", "null, own hash"),
            ("floor_nobound", "k", "v", "floor, own hash, no bound-inactive"),
            ("null_nobound", "tab:blue", "v", "null, own hash, no bound-inactive")):
        pts = [(n, o["cases"][case]["cpu_s"]["median"]) for n, o in own if case in o["cases"]]
        if pts:
            ax.plot([n for n, _ in pts], [y for _, y in pts], color=color, marker=marker, markersize=10,
                    fillstyle="none" if case.startswith("floor") else "full", linestyle="none", label=label)
    ax.set(xscale="log", yscale="log", xlabel="namespaces (each ~100 sockets)", ylabel="CPU s per collection",
           title="CPU vs namespaces")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)

    ax = axes[1][1]
    probes = [(r["kernel_probe"]["shared_ehash"]["host_sockets"], r["kernel_probe"]) for r in sock if "kernel_probe" in r]
    probe_styles = (("shared_ehash", "ko-", "shared hash, all states (the default)"),
                    ("shared_ehash_nobound", "ks--", "shared hash, --states without bound-inactive"),
                    ("own_ehash", "g^-", "own hash (tcp_child_ehash_entries), all states"),
                    ("own_ehash_nobound", "gv--", "own hash, --states without bound-inactive"))
    for key, style, label in probe_styles:
        pts = [(s, p[key]["per_namespace_cpu_ms"]) for s, p in probes if key in p]
        # A difference at or below zero is noise around a cost too small to
        # measure this way; a log axis cannot show it, so it is named.
        shown = [(x, y) for x, y in pts if y > 0]
        if shown:
            ax.plot([x for x, _ in shown], [y for _, y in shown], style, label=label)
        for x, y in pts:
            if y <= 0:
                ax.annotate(f"{x / 1e6:.0f}M: {y:.1f} ms,\n0 within noise", (x, 0.1), fontsize=7, ha="right")
    ax.set(xscale="log", yscale="log", xlabel="sockets in the root namespace",
           ylabel="floor CPU ms per (empty) namespace",
           title="the kernel's limit: each namespace's dump walks the host's hash")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)

    ax = axes[1][2]
    rows = []
    for r in sock:
        for d in r.get("daemon", []) or []:
            rows.append((f"{sockets_of(r) / 1e6:.0f}M sockets\n{d['args'].replace('--dest ', '').replace('file:/dev/null --marshal ', '')}", d))
    for r in nss:
        for key, label in (("daemon_shared_ehash", "shared hash"), ("daemon_shared_ehash_nobound", "shared,\nno bound-inact."),
                           ("daemon_own_ehash", "own hash"), ("daemon_own_ehash_nobound", "own hash,\nno bound-inact.")):
            d = r.get(key)
            if d:
                rows.append((f"{r['namespaces']} ns\n{label}", d))
    if rows:
        for i, (_, d) in enumerate(rows):
            if d.get("polls"):
                ax.bar(i, d["poll_mean_s"], color="tab:purple")
            else:
                # No poll finished inside the window: at least that long.
                ax.bar(i, d["seconds"], color="white", edgecolor="tab:purple", hatch="//")
                ax.text(i, d["seconds"], f"> {d['seconds']} s:\nno poll\nfinished", ha="center", va="bottom", fontsize=7)
        ax.set_xticks(range(len(rows)), [l for l, _ in rows], fontsize=7)
        ax.set_ylim(0, max(d["seconds"] for _, d in rows) * 1.35)
        ax.axhline(10, color="red", linestyle=":", linewidth=1)
        ax.text(0, 10, "10 s period", fontsize=7, va="bottom")
    ax.set(ylabel="mean poll duration s", title="daemon, default flags (10 s polls)")
    ax.grid(True, axis="y", alpha=0.3)

    fig.tight_layout()
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=90)
    print(f"plot: {out}")


def plot_soak(csv_path, out):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with open(csv_path) as f:
        rows = list(csv.DictReader(f))
    verdict_path = Path(csv_path).with_suffix(".verdict.json")
    verdict = json.loads(verdict_path.read_text()) if verdict_path.exists() else {}

    def col(name):
        return [float(r[name]) if r[name] not in ("", "None") else float("nan") for r in rows]

    t = [x / 60 for x in col("t_s")]
    fig, axes = plt.subplots(2, 3, figsize=(17, 9))
    title = verdict.get("title", "xtcp2 soak")
    fig.suptitle(title + (f"  —  verdict: {verdict['result']}" if verdict.get("result") else ""), fontsize=11)

    def trend(ax, name):
        fit = verdict.get("fits", {}).get(name)
        if fit:
            x0, x1 = fit["t0_s"] / 60, fit["t1_s"] / 60
            ax.plot([x0, x1], [fit["intercept"] + fit["slope_per_s"] * fit["t0_s"],
                               fit["intercept"] + fit["slope_per_s"] * fit["t1_s"]],
                    "r--", linewidth=1.5, label=f"2nd-half fit: {fit['rise']:+.2f} (tolerance {fit['tolerance']:.2f})")
            ax.legend(fontsize=8)

    ax = axes[0][0]
    ax.plot(t, col("rss_mb"), label="RSS MB")
    if rows and "heap_in_use" in rows[0]:
        # Older CSVs have no heap columns.
        ax.plot(t, [b / 1e6 for b in col("heap_in_use")], color="tab:purple", alpha=0.7, label="heap in use MB (after the poll's trim)")
    trend(ax, "rss_mb")
    ax.legend(fontsize=8)
    ax.set(xlabel="minutes", ylabel="MB", title="resident memory (VmRSS)")
    ax = axes[0][1]
    ax.plot(t, col("fds"), label="open fds")
    trend(ax, "fds")
    ax.set(xlabel="minutes", ylabel="fds", title="open file descriptors")
    ax = axes[0][2]
    ax.plot(t, col("threads"), label="threads")
    trend(ax, "threads")
    ax.set(xlabel="minutes", ylabel="threads", title="threads")
    ax = axes[1][0]
    ax.plot(t, col("poll_mean_s"), label="mean poll s (per sample)")
    ax.set(xlabel="minutes", ylabel="seconds", title="poll duration")
    ax2 = ax.twinx()
    ax2.plot(t, [c / 100 for c in col("cpu_pct")], color="tab:orange", alpha=0.6, label="CPU (cores)")
    ax2.set_ylabel("CPU (cores)")
    ax.legend(loc="upper left", fontsize=8)
    ax2.legend(loc="upper right", fontsize=8)
    ax = axes[1][1]
    ax.plot(t, col("sockets"), label="sockets in last poll")
    ax.set(xlabel="minutes", ylabel="sockets", title="load seen by the daemon")
    ax2 = ax.twinx()
    ax2.plot(t, col("netns_active"), color="tab:green", label="namespaces")
    ax2.set_ylabel("namespaces")
    ax.legend(loc="upper left", fontsize=8)
    ax2.legend(loc="upper right", fontsize=8)
    ax = axes[1][2]
    ax.plot(t, col("rows_dropped"), label="rows dropped (total)")
    ax.plot(t, col("partial_polls"), label="partial polls (total)")
    ax.plot(t, col("netns_made"), label="namespaces made by churn (total)")
    ax.set(xlabel="minutes", title="losses and churn")
    ax.legend(fontsize=8)
    for a in axes.flat:
        a.grid(True, alpha=0.3)
    fig.tight_layout()
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=90)
    print(f"plot: {out}")


def main():
    if len(sys.argv) != 4 or sys.argv[1] not in ("scale", "soak"):
        sys.exit(__doc__)
    (plot_scale if sys.argv[1] == "scale" else plot_soak)(sys.argv[2], sys.argv[3])


if __name__ == "__main__":
    main()
