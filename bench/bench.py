#!/usr/bin/env python3
"""reckon's benchmark: generate N records a side, time every stage of `reckon` (release
build), and run the same reconciliation in DuckDB (bench/duckdb_peer.py) on the same Parquet,
side by side, checking that its categories equal reckon's.

Usage: bench/bench.py [--rows 1000000 10000000] [--work DIR] [--repeat 3] [--reuse] [--no-peer]
                      [--memory-limit-mb MB]
Prints a Markdown table (wall time and peak RSS per step) to paste into BENCHMARKS.md.
"""
import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DATE = "2026-11-20"
CHANNEL = "wechat"
SERVICES = Path.home() / ".cache" / "reckon" / "services"


def venv(name, packages):
    """A virtualenv of its own under the services cache with `packages` installed (once)."""
    d = SERVICES / name
    if not (d / ".installed").exists():
        subprocess.run([sys.executable, "-m", "venv", str(d)], check=True)
        subprocess.run([str(d / "bin" / "pip"), "install", "-q", *packages], check=True)
        (d / ".installed").write_text("\n".join(packages))
    return d


def run_measured(cmd, env=None):
    """Runs cmd under /usr/bin/time -v; returns (seconds, peak RSS MiB, stdout)."""
    return run_timed(cmd, env)[:3]


def run_timed(cmd, env=None):
    """run_measured, and the CPU seconds (user + system) cmd used: (seconds, peak RSS MiB,
    stdout, CPU seconds)."""
    start = time.monotonic()
    proc = subprocess.run(["/usr/bin/time", "-v", *map(str, cmd)], capture_output=True, env=env)
    elapsed = time.monotonic() - start
    if proc.returncode != 0:
        sys.exit(f"failed ({proc.returncode}): {' '.join(map(str, cmd))}\n{proc.stderr.decode()[-3000:]}")
    rss_kb, cpu = 0, 0.0
    for line in proc.stderr.decode().splitlines():
        if "Maximum resident set size" in line:
            rss_kb = int(line.split(":")[1])
        elif "User time (seconds)" in line or "System time (seconds)" in line:
            cpu += float(line.split(":")[1])
    return elapsed, rss_kb / 1024, proc.stdout.decode(), cpu


def manifest(data):
    """The day's working manifest under data/output."""
    return json.loads((data / "output" / "runs" / f"channel={CHANNEL}" / f"dt={DATE}" / "manifest.json").read_text())


def committed_file(data, stage, area):
    """The file of `area` the stage's record names (in its `_v=` version folder)."""
    return committed_files(data, stage, area)[0]


def committed_files(data, stage, area):
    """Every file of `area` the stage's record names (a side written in buckets has several)."""
    files = manifest(data)["stages"][stage]["files"]
    return [data / "output" / f for f in sorted(files) if f.startswith(area)]


def duckdb_peer(python, data, work, n):
    """The DuckDB peer (bench/duckdb_peer.py) on the Parquet reckon reconciled, with the rules
    reckon recorded, 2 threads: (wall s, peak RSS MiB, its statistics per category, its diffs)."""
    m = manifest(data)
    rules = m["stages"]["reconcile"]["detail"]["rules"]
    out = Path(work) / f"duck-out-{n}"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    params = {"bill": [str(f) for f in committed_files(data, "normalize", "normalized/")],
              "platform": [str(f) for f in committed_files(data, "collect", "platform/")],
              "carry": None, "out": str(out), "threads": 2, "channel": CHANNEL,
              "bill_date": DATE, "rules": rules}
    t, rss, stdout = run_measured([python, Path(__file__).resolve().parent / "duckdb_peer.py",
                                   json.dumps(params)])
    said = json.loads(stdout.strip().splitlines()[-1])
    return t, rss, said["by_category"], out / "diffs.parquet"


def median(runs):
    """The median wall time of (wall s, peak RSS) runs, and the largest peak."""
    times = sorted(r[0] for r in runs)
    return times[len(times) // 2], max(r[1] for r in runs)


def same_differences(python, reckon_diffs, duck_diffs):
    """Whether both wrote the same differences: each record's category, key, bill line and
    platform order, as multisets."""
    script = """
import duckdb, sys
q = "SELECT category, match_key, source_line, platform_order_id FROM read_parquet('{}', hive_partitioning = false)"
a, b = q.format(sys.argv[1]), q.format(sys.argv[2])
con = duckdb.connect()
extra = con.sql(f"SELECT count(*) FROM (({a}) EXCEPT ALL ({b}))").fetchone()[0]
missing = con.sql(f"SELECT count(*) FROM (({b}) EXCEPT ALL ({a}))").fetchone()[0]
print(extra + missing)
"""
    out = subprocess.run([python, "-c", script, reckon_diffs, duck_diffs], capture_output=True,
                         text=True, check=True).stdout
    return int(out.strip()) == 0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, nargs="+", default=[1_000_000, 10_000_000])
    ap.add_argument("--work", default=os.path.expanduser("~/.cache/reckon/bench"))
    ap.add_argument("--reckon", default=None, help="a built reckon binary (default: cargo build --release)")
    ap.add_argument("--reuse", action="store_true",
                    help="keep a day generated by an earlier run (same rows and seed); rerun reckon")
    ap.add_argument("--repeat", type=int, default=3,
                    help="reconcile and its DuckDB peer run alternately this many times; medians")
    ap.add_argument("--no-peer", action="store_true",
                    help="reckon's stages only (a day too large for the DuckDB peer's memory)")
    ap.add_argument("--memory-limit-mb", type=int, default=None,
                    help="memory_limit_mb for reckon's stages (written into the day's reckon.toml)")
    args = ap.parse_args()

    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    python = venv("duckdb", ["duckdb==1.4.*"]) / "bin" / "python"
    duck_version = subprocess.run([python, "-c", "import duckdb; print(duckdb.__version__)"],
                                  capture_output=True, text=True, check=True).stdout.strip()

    reckon = args.reckon
    if reckon is None:
        subprocess.run(["cargo", "build", "--release", "--workspace", "--bins"], cwd=ROOT, check=True)
        target = os.environ.get("CARGO_TARGET_DIR", str(ROOT / "target"))
        reckon = str(Path(target) / "release" / "reckon")

    print(f"machine: {os.cpu_count()} cores; reckon {reckon}; duckdb {duck_version}\n")
    print("| records a side | step | wall s | peak RSS MiB | notes |")
    print("|---:|---|---:|---:|---|")
    for n in args.rows:
        data = work / f"data-{n}"
        if args.reuse and (data / "reckon.toml").exists():
            # The same generated day; only reckon's outputs go.
            shutil.rmtree(data / "output", ignore_errors=True)
        else:
            if data.exists():
                shutil.rmtree(data)
            t, rss, _ = run_measured([reckon, "generate", "--out", data, "--from", DATE, "--days",
                                      "1", "--rows", n, "--seed", "1", "--channel", CHANNEL])
            print(f"| {n:,} | generate (both sides, {CHANNEL}) | {t:.1f} | {rss:.0f} | |")
        config = data / "reckon.toml"
        if args.memory_limit_mb:
            # Beside the generated one (paths in it are relative to its folder).
            limited = data / "reckon-memory-limit.toml"
            limited.write_text(f"memory_limit_mb = {args.memory_limit_mb}\n{config.read_text()}")
            config = limited
        summary = None
        end_to_end = 0.0
        for stage in ["fetch", "normalize", "collect", "reconcile", "report"]:
            t, rss, out = run_measured([reckon, "stage", stage, "--config", config, "--date", DATE,
                                        "--channel", CHANNEL])
            last = json.loads(out.strip().splitlines()[-1])
            if stage == "report":
                summary = last
            note = ""
            if stage == "normalize":
                rows = manifest(data)["stages"]["normalize"]["detail"]["rows_read"]
                note = f"{rows / t / 1e6:.2f} M rows/s (process wall)"
            end_to_end += t
            print(f"| {n:,} | reckon {stage} | {t:.2f} | {rss:.0f} | {note} |")
        print(f"| {n:,} | reckon stage by stage, the delivered bill to committed results (the stages' "
              f"sum) | {end_to_end:.2f} | | |")
        # The day as a scheduler runs it: one `reckon run` on a fresh root (collect beside fetch
        # and normalize), the delivered bill to committed results.
        whole = config.with_name(f"reckon-run-{config.stem}.toml")
        whole.write_text(config.read_text().replace('storage_root = "output"', 'storage_root = "output-run"', 1))
        runs = []
        for _ in range(max(1, args.repeat)):
            shutil.rmtree(data / "output-run", ignore_errors=True)
            runs.append(run_measured([reckon, "run", "--config", whole, "--date", DATE, "--channel", CHANNEL])[:2])
        shutil.rmtree(data / "output-run", ignore_errors=True)
        t_run, rss_run = median(runs)
        print(f"| {n:,} | reckon end to end: the day in one `reckon run`, median of {len(runs)} "
              f"({', '.join(f'{r[0]:.1f}' for r in runs)}) | {t_run:.2f} | {rss_run:.0f} | |")
        sys.stdout.flush()
        if args.no_peer:
            continue
        # Reconcile and its peer alternately, so both see the same moments of a noisy machine.
        ours_runs, duck_runs = [], []
        for _ in range(max(1, args.repeat)):
            ours_runs.append(run_measured([reckon, "stage", "reconcile", "--config", config, "--date",
                                           DATE, "--channel", CHANNEL])[:2])
            t, rss, duck, duck_diffs = duckdb_peer(python, data, work, n)
            duck_runs.append((t, rss))
        (t_ours, rss_ours), (t_duck, rss_duck) = median(ours_runs), median(duck_runs)
        print(f"| {n:,} | reckon reconcile, median of {len(ours_runs)} "
              f"({', '.join(f'{r[0]:.1f}' for r in ours_runs)}) | {t_ours:.2f} | {rss_ours:.0f} | "
              f"{manifest(data)['stages']['reconcile']['detail'].get('buckets', 1)} buckets |")
        print(f"| {n:,} | DuckDB: the same reconciliation (bench/duckdb_peer.py), median of "
              f"{len(duck_runs)} ({', '.join(f'{r[0]:.1f}' for r in duck_runs)}) | {t_duck:.2f} | "
              f"{rss_duck:.0f} | same Parquet, 2 threads; reckon/DuckDB {t_ours / t_duck:.2f}x |")
        ours = manifest(data)["stages"]["reconcile"]["detail"]["counts"]["by_category"]
        agree = ours == duck and same_differences(
            python, committed_file(data, "reconcile", "results/") .with_name("diffs.parquet"), duck_diffs)
        print(f"| {n:,} | categories agree (every category's counts and sums; every difference) | | | {agree} |")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
