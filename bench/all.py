#!/usr/bin/env python3
"""Every figure of issue #19 in one run, side by side, medians of --repeat runs:

1. bench.py: each stage of reckon from the delivered bill to committed results, then the day in
   one `reckon run` (the end-to-end time; collect runs beside fetch and normalize) at every
   size of --rows, then reconcile and the DuckDB peer doing the same reconciliation
   alternately, their categories and every difference compared;
2. collect_bench.py --only-local: collect and the DuckDB peer making the same snapshot,
   alternately, the snapshots compared;
3. cluster_bench.py: reconcile on the embedded engine, one executor and two executors, each
   pinned to a core, alternately; the client's and every process's peak memory;
4. with --scale: reckon's stages alone (no peer) at larger days, under --memory-limit-mb, to
   show time growing linearly and memory bounded.

Usage: bench/all.py [--rows 1000000 10000000] [--scale 30000000 100000000] [--repeat 3]
                    [--memory-limit-mb 4096] [--reckon BIN] [--work DIR]
Days are generated once under --work (bench.py's data-N folders) and reused. Prints Markdown
tables; the command lines and figures go to BENCHMARKS.md.
"""
import argparse
import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


def run(title, cmd):
    print(f"\n## {title}\n\n`{' '.join(map(str, cmd[1:]))}`\n", flush=True)
    subprocess.run(cmd, check=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, nargs="+", default=[1_000_000, 10_000_000])
    ap.add_argument("--scale", type=int, nargs="*", default=[])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--memory-limit-mb", type=int, default=4096)
    ap.add_argument("--reckon", default=None)
    ap.add_argument("--work", default=os.path.expanduser("~/.cache/reckon/bench"))
    args = ap.parse_args()

    reckon = args.reckon
    if reckon is None:
        subprocess.run(["cargo", "build", "--release", "--workspace", "--bins"], cwd=ROOT,
                       check=True)
        target = os.environ.get("CARGO_TARGET_DIR", str(ROOT / "target"))
        reckon = str(Path(target) / "release" / "reckon")
    py = sys.executable
    common = ["--reckon", reckon, "--work", args.work]
    largest = max(args.rows)
    run("Every stage, and reconcile against DuckDB",
        [py, HERE / "bench.py", "--rows", *map(str, args.rows), "--reuse", "--repeat",
         str(args.repeat), *common])
    run("Collect against DuckDB",
        [py, HERE / "collect_bench.py", "--rows", str(largest), "--only-local", "--repeat",
         str(args.repeat), *common])
    run("The cluster: one and two executors",
        [py, HERE / "cluster_bench.py", "--rows", str(largest), "--repeat", str(args.repeat),
         *common])
    if args.scale:
        run(f"Larger days, memory_limit_mb = {args.memory_limit_mb} (reckon alone)",
            [py, HERE / "bench.py", "--rows", *map(str, args.scale), "--reuse", "--no-peer",
             "--memory-limit-mb", str(args.memory_limit_mb), *common])


if __name__ == "__main__":
    main()
