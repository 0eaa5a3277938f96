#!/usr/bin/env python3
"""Cluster benchmark (issues #6 and #19): the 10M x 10M WeChat day of bench.py reconciled on
the embedded engine, on one executor and on two executors of reckon's own Ballista binaries
(`reckon cluster up`), each executor pinned to a core of its own (`taskset`) and running one
task at a time, alternately, several times; prints medians.

On a cluster each bucket of the day is a job on the executors (several at once), which route,
age and write it; the executors merge the day's files too, so the client receives counts, file
names and hashes only and its memory does not grow with the day.

Usage: bench/cluster_bench.py [--rows 10000000] [--repeat 3] [--executor-mb 2048]
                              [--reckon BIN] [--work DIR] [--no-pin]
Prints a Markdown table for BENCHMARKS.md and checks that every engine wrote byte-identical
differences and summaries.
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
from statistics import median  # noqa: E402

DATE = "2026-11-20"
CHANNEL = "wechat"


def peak_rss_mib(pid):
    """VmHWM of a running process, in MiB."""
    text = Path(f"/proc/{pid}/status").read_text()
    m = re.search(r"VmHWM:\s+(\d+) kB", text)
    return int(m.group(1)) / 1024 if m else float("nan")


def pin(pid, core):
    """Pins every thread of `pid` to `core`."""
    subprocess.run(["taskset", "-a", "-p", "-c", str(core), str(pid)], check=True,
                   stdout=subprocess.DEVNULL)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=10_000_000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--executor-mb", type=int, default=2048)
    ap.add_argument("--work", default=os.path.expanduser("~/.cache/reckon/bench"))
    ap.add_argument("--reckon", default=None)
    ap.add_argument("--no-pin", action="store_true", help="leave the executors unpinned")
    args = ap.parse_args()

    reckon = args.reckon
    if reckon is None:
        subprocess.run(["cargo", "build", "--release", "--workspace", "--bins"], cwd=ROOT, check=True)
        reckon = str(Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target")) / "release" / "reckon")
    # bench.py's data set of this size (WeChat, seed 1), generated when absent.
    data = Path(args.work) / f"data-{args.rows}"
    if not (data / "reckon.toml").exists():
        subprocess.run([reckon, "generate", "--out", data, "--from", DATE, "--days", "1",
                        "--rows", str(args.rows), "--seed", "1", "--channel", CHANNEL], check=True,
                       stdout=subprocess.DEVNULL)
    cores = os.cpu_count() or 1
    engines = ["local", "1 executor", "2 executors"]
    base = re.sub(r'(?m)^storage_root = .*$', "", (data / "reckon.toml").read_text())
    configs = {}
    for i, name in enumerate(engines):
        out = f"out-cluster-bench-{i}"
        shutil.rmtree(data / out, ignore_errors=True)
        cfg = data / f"reckon-cluster-bench-{i}.toml"
        cfg.write_text(f'storage_root = "{out}"\n' + base)
        configs[name] = (cfg, out)
        if i == 0:
            for stage in ["fetch", "normalize", "collect"]:
                run_measured([reckon, "stage", stage, "--config", cfg, "--date", DATE, "--channel", CHANNEL])
        else:
            # The same inputs for every engine: a copy of the first root after collect.
            shutil.copytree(data / configs[engines[0]][1], data / out,
                            ignore=shutil.ignore_patterns("_scratch"))

    runs = {name: [] for name in engines}
    for _ in range(args.repeat):
        for name in engines:
            cfg, _ = configs[name]
            if name == "local":
                t, rss, _ = run_measured([reckon, "stage", "reconcile", "--config", cfg, "--date", DATE,
                                          "--channel", CHANNEL, "--engine", "local"])
                runs[name].append((t, rss, None, None))
                continue
            n = int(name.split()[0])
            cl_dir = data / "cluster-state"
            up = subprocess.run([reckon, "cluster", "up", "--dir", cl_dir, "--executors", str(n),
                                 "--vcores", "1", "--memory-mb", str(args.executor_mb)],
                                capture_output=True, text=True)
            if up.returncode != 0:
                sys.exit(f"cluster up failed: {up.stderr}")
            cluster = json.loads(up.stdout.strip().splitlines()[-1])
            try:
                execs = [p for p in cluster["processes"] if p["name"].startswith("executor")]
                if not args.no_pin:
                    for i, p in enumerate(execs):
                        pin(p["pid"], i % cores)
                t, rss, _ = run_measured([reckon, "stage", "reconcile", "--config", cfg, "--date", DATE,
                                          "--channel", CHANNEL, "--engine", cluster["url"]])
                sched = next(peak_rss_mib(p["pid"]) for p in cluster["processes"] if p["name"] == "scheduler")
                ex = [peak_rss_mib(p["pid"]) for p in execs]
            finally:
                subprocess.run([reckon, "cluster", "down", "--dir", cl_dir], check=False,
                               stdout=subprocess.DEVNULL)
            runs[name].append((t, rss, sched, ex))
            print(f"{name}: {t:.2f} s, client {rss:.0f} MiB", file=sys.stderr)

    for name in engines:
        cfg, _ = configs[name]
        run_measured([reckon, "stage", "report", "--config", cfg, "--date", DATE, "--channel", CHANNEL])

    def committed(out, name):
        """The committed file `name` of results/ (the day's pointer names it)."""
        pointer = json.loads((data / out / "runs" / f"channel={CHANNEL}" / f"dt={DATE}"
                              / "committed.json").read_text())
        path = next(f["path"] for f in pointer["files"]
                    if f["path"].startswith("results/") and f["path"].endswith("/" + name))
        return data / out / path

    outs = [configs[n][1] for n in engines]
    same = all(committed(outs[0], f).read_bytes() == committed(o, f).read_bytes()
               for o in outs[1:] for f in ["diffs.parquet", "summary.json"])
    summary = json.loads(committed(outs[0], "summary.json").read_text())
    buckets = json.loads((data / outs[0] / "runs" / f"channel={CHANNEL}" / f"dt={DATE}"
                          / "manifest.json").read_text())["stages"]["reconcile"]["detail"].get("buckets", 1)
    print(f"WeChat day of {summary['inputs']['channel_rows']:,} channel and "
          f"{summary['inputs']['platform_rows']:,} platform records, {buckets} buckets; "
          f"medians of {args.repeat} alternating runs; executors "
          f"{'each pinned to a core of its own' if not args.no_pin else 'unpinned'}, one task at a time, "
          f"{args.executor_mb} MiB pool each.\n")
    print("| engine | reconcile wall s | speed-up vs 1 executor | client peak RSS MiB | scheduler peak RSS MiB | executors peak RSS MiB |")
    print("|---|---:|---:|---:|---:|---:|")
    one = median([r[0] for r in runs["1 executor"]])
    for name in engines:
        rs = runs[name]
        t = median([r[0] for r in rs])
        rss = median([r[1] for r in rs])
        if rs[0][2] is None:
            print(f"| {name} | {t:.2f} | - | {rss:.0f} | - | - |")
        else:
            sched = median([r[2] for r in rs])
            ex = " / ".join(f"{median([r[3][i] for r in rs]):.0f}" for i in range(len(rs[0][3])))
            print(f"| {name} | {t:.2f} | {one / t:.2f}x | {rss:.0f} | {sched:.0f} | {ex} |")
    print(f"\nDifferences and summaries byte-identical between the engines: {'yes' if same else 'NO'}")
    if not same:
        sys.exit(1)


if __name__ == "__main__":
    main()
