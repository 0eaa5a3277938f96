#!/usr/bin/env python3
"""reckon's benchmark: generate N records a side, time every stage of `reckon` (release
build), and run the same join and classification in DuckDB on the same Parquet, side by side.

Usage: bench/bench.py [--rows 1000000 10000000] [--work DIR]
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


def run_measured(cmd, env=None):
    """Runs cmd under /usr/bin/time -v; returns (seconds, peak RSS MiB, stdout)."""
    start = time.monotonic()
    proc = subprocess.run(["/usr/bin/time", "-v", *map(str, cmd)], capture_output=True, env=env)
    elapsed = time.monotonic() - start
    if proc.returncode != 0:
        sys.exit(f"failed ({proc.returncode}): {' '.join(map(str, cmd))}\n{proc.stderr.decode()[-3000:]}")
    rss_kb = 0
    for line in proc.stderr.decode().splitlines():
        if "Maximum resident set size" in line:
            rss_kb = int(line.split(":")[1])
    return elapsed, rss_kb / 1024, proc.stdout.decode()


def manifest(data):
    """The day's working manifest under data/output."""
    return json.loads((data / "output" / "runs" / f"channel={CHANNEL}" / f"dt={DATE}" / "manifest.json").read_text())


def committed_file(data, stage, area):
    """The file of `area` the stage's record names (in its `_v=` version folder)."""
    files = manifest(data)["stages"][stage]["files"]
    return data / "output" / next(f for f in files if f.startswith(area))


DUCKDB_SQL = """
WITH
channel_side AS (
    SELECT *, row_number() OVER (PARTITION BY match_key ORDER BY source_file, source_line) AS occurrence
    FROM (SELECT *, CASE WHEN txn_type = 'REFUND' THEN 'REFUND:' || refund_id
                         ELSE 'PAY:' || merchant_order_id END AS match_key
          FROM read_parquet('{bill}'))
),
platform_side AS (
    SELECT *, row_number() OVER (PARTITION BY match_key ORDER BY platform_order_id, refund_id, txn_time) AS occurrence
    FROM (SELECT *, CASE WHEN txn_type = 'REFUND' THEN 'REFUND:' || refund_id
                         ELSE 'PAY:' || merchant_order_id END AS match_key
          FROM read_parquet('{platform}'))
),
joined AS (
    SELECT c.match_key AS c_key, c.occurrence AS c_occ, c.amount AS c_amount, c.status AS c_status,
           c.fee AS c_fee, c.txn_type AS c_type, c.txn_time AS c_time, c.source_file, c.source_line,
           c.channel_txn_id, c.merchant_order_id, c.refund_id,
           p.match_key AS p_key, p.occurrence AS p_occ, p.amount AS p_amount, p.status AS p_status,
           p.txn_time AS p_time, p.platform_order_id, p.refunded_amount AS p_refunded,
           c.match_key IS NOT NULL OR c.source_line IS NOT NULL AS in_channel,
           p.txn_type IS NOT NULL AS in_platform
    FROM (SELECT *, CASE WHEN occurrence = 1 THEN match_key END AS join_key FROM channel_side) c
    FULL OUTER JOIN (SELECT *, CASE WHEN occurrence = 1 THEN match_key END AS join_key FROM platform_side) p
      ON c.join_key = p.join_key
),
classified AS (
    SELECT *,
      CASE
        WHEN in_channel AND c_key IS NOT NULL AND c_occ > 1 THEN 'DUPLICATE_IN_CHANNEL'
        WHEN in_platform AND p_key IS NOT NULL AND p_occ > 1 THEN 'DUPLICATE_IN_PLATFORM'
        WHEN in_channel AND in_platform THEN CASE
          WHEN abs(c_amount - p_amount) > 0 THEN 'AMOUNT_MISMATCH'
          -- The refund check: a paid order the platform marks REFUNDED, whose successful
          -- refunds add up to its amount, is explained (reckon's rule, README "Categories").
          WHEN c_status IS DISTINCT FROM p_status
               AND NOT coalesce(c_type = 'PAY' AND c_status = 'SUCCESS' AND p_status = 'REFUNDED'
                                AND p_refunded = p_amount, false) THEN 'STATUS_MISMATCH'
          WHEN c_type = 'PAY' AND c_fee IS NOT NULL
               AND c_fee <> CAST(c_amount * CAST(0.006 AS DECIMAL(18,6)) AS DECIMAL(18,2)) THEN 'FEE_MISMATCH'
          ELSE 'MATCHED' END
        WHEN in_channel THEN CASE WHEN c_key IS NOT NULL
             AND abs(epoch(c_time) - epoch(TIMESTAMPTZ '{end}')) <= 300 THEN 'CROSS_DAY_PENDING'
             ELSE 'MISSING_IN_PLATFORM' END
        ELSE CASE WHEN p_key IS NOT NULL
             AND abs(epoch(p_time) - epoch(TIMESTAMPTZ '{end}')) <= 300 THEN 'CROSS_DAY_PENDING'
             ELSE 'MISSING_IN_CHANNEL' END
      END AS category
    FROM joined
)
SELECT *, md5(concat_ws('|', coalesce(c_key, p_key), c_occ, p_occ, source_file, source_line, platform_order_id)) AS diff_id
FROM classified
"""

DUCKDB_SCRIPT = """
import duckdb, sys, time
sql = sys.argv[1]
out = sys.argv[2]
con = duckdb.connect()
con.execute("SET threads TO 2")
con.execute("SET preserve_insertion_order = false")
t = time.monotonic()
con.execute("CREATE TEMP TABLE classified AS " + sql)
con.execute(f"COPY (SELECT * FROM classified WHERE category <> 'MATCHED') TO '{out}' (FORMAT PARQUET)")
rows = con.execute("SELECT category, count(*), sum(c_amount), sum(p_amount) FROM classified GROUP BY 1 ORDER BY 1").fetchall()
print({r[0]: r[1] for r in rows})
"""


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, nargs="+", default=[1_000_000, 10_000_000])
    ap.add_argument("--work", default=os.path.expanduser("~/.cache/reckon/bench"))
    ap.add_argument("--reckon", default=None, help="a built reckon binary (default: cargo build --release)")
    args = ap.parse_args()

    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    venv = work / "venv"
    if not (venv / "bin" / "python").exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(venv / "bin" / "pip"), "install", "-q", "duckdb"], check=True)
    duck_version = subprocess.run([str(venv / "bin" / "python"), "-c", "import duckdb; print(duckdb.__version__)"],
                                  capture_output=True, text=True, check=True).stdout.strip()

    reckon = args.reckon
    if reckon is None:
        subprocess.run(["cargo", "build", "--release", "-p", "reckon"], cwd=ROOT, check=True)
        target = os.environ.get("CARGO_TARGET_DIR", str(ROOT / "target"))
        reckon = str(Path(target) / "release" / "reckon")

    print(f"machine: {os.cpu_count()} cores; reckon {reckon}; duckdb {duck_version}\n")
    print("| records a side | step | wall s | peak RSS MiB | notes |")
    print("|---:|---|---:|---:|---|")
    for n in args.rows:
        data = work / f"data-{n}"
        if data.exists():
            shutil.rmtree(data)
        t, rss, _ = run_measured([reckon, "generate", "--out", data, "--from", DATE, "--days", "1",
                                  "--rows", n, "--seed", "1", "--channel", CHANNEL])
        print(f"| {n:,} | generate (both sides, {CHANNEL}) | {t:.1f} | {rss:.0f} | |")
        config = data / "reckon.toml"
        summary = None
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
            print(f"| {n:,} | reckon {stage} | {t:.2f} | {rss:.0f} | {note} |")
        bill = committed_file(data, "normalize", "normalized/")
        platform = committed_file(data, "collect", "platform/")
        sql = DUCKDB_SQL.format(bill=bill, platform=platform, end=f"{DATE} 16:00:00+00")
        t, rss, out = run_measured([venv / "bin" / "python", "-c", DUCKDB_SCRIPT, sql, work / f"duck-diffs-{n}.parquet"])
        print(f"| {n:,} | DuckDB join + classify + write diffs | {t:.2f} | {rss:.0f} | same Parquet, 2 threads |")
        duck = eval(out.strip().splitlines()[-1])
        counts = {k: v for k, v in summary["counts"].items() if v} if summary else {}
        agree = all(duck.get(k) == v for k, v in counts.items() if k != "CROSS_DAY_MATCHED")
        print(f"| {n:,} | categories agree (reckon vs DuckDB) | | | {agree} |")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
