#!/usr/bin/env python3
"""Cluster benchmark (issue #6): the 10M x 10M WeChat day of bench.py reconciled on the
embedded engine and on a two-executor Ballista cluster of reckon's own binaries
(`reckon cluster up`), each executor's memory pool well below the data, side by side.

Usage: bench/cluster_bench.py [--rows 10000000] [--executor-mb 1024] [--reckon BIN] [--work DIR]
Prints a Markdown table (wall time, peak RSS of each process) for BENCHMARKS.md, and checks
that both engines wrote byte-identical differences.
"""
import argparse
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench import ROOT, run_measured  # noqa: E402

DATE = "2026-11-20"
CHANNEL = "wechat"


def peak_rss_mib(pid):
    """VmHWM of a running process, in MiB."""
    text = Path(f"/proc/{pid}/status").read_text()
    m = re.search(r"VmHWM:\s+(\d+) kB", text)
    return int(m.group(1)) / 1024 if m else float("nan")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=10_000_000)
    ap.add_argument("--executor-mb", type=int, default=1024)
    ap.add_argument("--vcores", type=int, default=1)
    ap.add_argument("--work", default=os.path.expanduser("~/.cache/reckon/bench"))
    ap.add_argument("--reckon", default=None)
    args = ap.parse_args()

    reckon = args.reckon
    if reckon is None:
        subprocess.run(["cargo", "build", "--release", "--workspace", "--bins"], cwd=ROOT, check=True)
        reckon = str(Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target")) / "release" / "reckon")
    data = Path(args.work) / f"cluster-{args.rows}"
    if not (data / "reckon.toml").exists():
        subprocess.run([reckon, "generate", "--out", data, "--from", DATE, "--days", "1",
                        "--rows", str(args.rows), "--seed", "1", "--channel", CHANNEL], check=True,
                       stdout=subprocess.DEVNULL)
    base = (data / "reckon.toml").read_text()
    configs = {}
    for name in ["local", "cluster"]:
        root = data / f"out-{name}"
        shutil.rmtree(root, ignore_errors=True)
        cfg = data / f"reckon-{name}.toml"
        cfg.write_text(re.sub(r'(?m)^storage_root = .*$', f'storage_root = "out-{name}"', base))
        configs[name] = cfg
        for stage in ["fetch", "normalize", "collect"]:
            run_measured([reckon, "stage", stage, "--config", cfg, "--date", DATE, "--channel", CHANNEL])

    rows = []
    t, rss, _ = run_measured([reckon, "stage", "reconcile", "--config", configs["local"], "--date", DATE,
                              "--channel", CHANNEL, "--engine", "local"])
    rows.append(("embedded (local)", t, f"{rss:.0f}", "-", "-"))
    run_measured([reckon, "stage", "report", "--config", configs["local"], "--date", DATE, "--channel", CHANNEL])

    cl_dir = data / "cluster-state"
    up = subprocess.run([reckon, "cluster", "up", "--dir", cl_dir, "--executors", "2",
                         "--vcores", str(args.vcores), "--memory-mb", str(args.executor_mb)],
                        capture_output=True, text=True)
    if up.returncode != 0:
        sys.exit(f"cluster up failed: {up.stderr}")
    cluster = json.loads(up.stdout.strip().splitlines()[-1])
    try:
        t, rss, _ = run_measured([reckon, "stage", "reconcile", "--config", configs["cluster"], "--date", DATE,
                                  "--channel", CHANNEL, "--engine", cluster["url"]])
        procs = {p["name"]: peak_rss_mib(p["pid"]) for p in cluster["processes"]}
    finally:
        subprocess.run([reckon, "cluster", "down", "--dir", cl_dir], check=False)
    run_measured([reckon, "stage", "report", "--config", configs["cluster"], "--date", DATE, "--channel", CHANNEL])
    execs = " / ".join(f"{procs[n]:.0f}" for n in sorted(procs) if n.startswith("executor"))
    rows.append((f"2 executors, {args.executor_mb} MiB pool each, {args.vcores} task each", t,
                 f"{rss:.0f}", f"{procs['scheduler']:.0f}", execs))

    def committed(out, name):
        """The committed file `name` of results/ (the day's pointer names it)."""
        pointer = json.loads((data / out / "runs" / f"channel={CHANNEL}" / f"dt={DATE}"
                              / "committed.json").read_text())
        path = next(f["path"] for f in pointer["files"]
                    if f["path"].startswith("results/") and f["path"].endswith("/" + name))
        return data / out / path

    same = True
    for f in ["diffs.parquet", "summary.json"]:
        same = same and committed("out-local", f).read_bytes() == committed("out-cluster", f).read_bytes()
    summary = json.loads(committed("out-local", "summary.json").read_text())
    size = sum(p.stat().st_size for d in ["out-local/normalized", "out-local/platform"]
               for p in (data / d).rglob("*.parquet")) / 2**20
    print(f"WeChat day of {summary['inputs']['channel_rows']:,} channel and "
          f"{summary['inputs']['platform_rows']:,} platform records ({size:.0f} MiB of Parquet in).\n")
    print("| engine | reconcile wall s | client peak RSS MiB | scheduler peak RSS MiB | executors peak RSS MiB |")
    print("|---|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r[0]} | {r[1]:.2f} | {r[2]} | {r[3]} | {r[4]} |")
    print(f"\nDifferences and summary byte-identical between the engines: {'yes' if same else 'NO'}")
    if not same:
        sys.exit(1)


if __name__ == "__main__":
    main()
