#!/usr/bin/env python3
"""Collect benchmark (issue #4): the platform side of one day read by `reckon stage collect`
from Hive-partitioned Parquet on the local disk and on an S3-compatible server (moto, in
memory on this machine), and from PostgreSQL.

Usage: bench/collect_bench.py [--rows 10000000] [--pg-rows 1000000] [--reckon BIN] [--repeat 3]
                              [--memory-limit-mb M] [--only-local]
The local collect runs alternately with bench/duckdb_collect_peer.py (DuckDB making the same
snapshot from the same partitions), medians of --repeat runs, and the two snapshots compared.
Reuses bench.py's data set of --rows when it exists. Prints a Markdown table.
"""
import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench import DATE, ROOT, run_measured, venv  # noqa: E402



def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait(port, timeout=30):
    start = time.time()
    while time.time() - start < timeout:
        try:
            socket.create_connection(("127.0.0.1", port), 1).close()
            return
        except OSError:
            time.sleep(0.1)
    sys.exit(f"nothing listens on {port}")


def dataset(reckon, work, rows):
    """bench.py's one-day WeChat data set of `rows` records a side, generated when missing."""
    data = Path(work) / f"data-{rows}"
    if not (data / "reckon.toml").exists():
        subprocess.run([reckon, "generate", "--out", str(data), "--from", DATE, "--days", "1",
                        "--rows", str(rows), "--seed", "1", "--channel", "wechat"], check=True)
    return data


def collect(reckon, config, env=None):
    t, rss, out = run_measured([reckon, "stage", "collect", "--config", config, "--date", DATE,
                                "--channel", "wechat"], env=env)
    m = json.loads((Path(config).parent / "output" / "runs" / "channel=wechat" / f"dt={DATE}" /
                    "manifest.json").read_text())
    return t, rss, m["stages"]["collect"]["detail"]["rows"]


def duckdb_collect(python, data, work, memory_limit_mb):
    """bench/duckdb_collect_peer.py on the day's partitions, 2 threads: (wall s, RSS MiB, rows)."""
    from datetime import date, datetime, timedelta
    from zoneinfo import ZoneInfo
    day = date.fromisoformat(DATE)
    zone = ZoneInfo("Asia/Shanghai")
    midnight = lambda d: int(datetime.combine(d, datetime.min.time(), zone).timestamp()) * 1_000_000
    # The partitions D-1, D and D+1 that exist, as reckon reads them.
    parts = lambda table: [str(p) for k in (-1, 0, 1)
                           if (p := data / "warehouse" / table / f"dt={day + timedelta(days=k)}").is_dir()]
    params = {"orders": parts("orders"), "refunds": parts("refunds"), "channel": "wechat",
              "day_start_us": midnight(day), "day_end_us": midnight(day + timedelta(days=1)),
              "out": str(work / "duck-snapshot.parquet"), "threads": 2,
              "memory_limit_mb": memory_limit_mb}
    t, rss, out = run_measured([python, Path(__file__).resolve().parent / "duckdb_collect_peer.py",
                                json.dumps(params)])
    return t, rss, json.loads(out.strip().splitlines()[-1])["rows"]


def same_snapshot(python, data, work):
    """Whether reckon's committed snapshot (every bucket file) and DuckDB's hold the same rows,
    snapshot_row included."""
    m = json.loads((data / "output" / "runs" / "channel=wechat" / f"dt={DATE}" / "manifest.json").read_text())
    files = [str(data / "output" / f) for f in m["stages"]["collect"]["files"] if f.startswith("platform/")]
    script = """
import duckdb, json, sys
ours = "SELECT * FROM read_parquet({}, hive_partitioning = false)".format(json.loads(sys.argv[1]))
theirs = "SELECT * FROM read_parquet('{}')".format(sys.argv[2])
con = duckdb.connect()
con.execute("SET enable_progress_bar = false")
print(con.sql(f"SELECT count(*) FROM (({ours}) EXCEPT ALL ({theirs}))").fetchone()[0]
      + con.sql(f"SELECT count(*) FROM (({theirs}) EXCEPT ALL ({ours}))").fetchone()[0])
"""
    out = subprocess.run([python, "-c", script, json.dumps(files), str(work / "duck-snapshot.parquet")],
                         capture_output=True, text=True, check=True).stdout
    return int(out.strip().splitlines()[-1]) == 0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=10_000_000)
    ap.add_argument("--pg-rows", type=int, default=1_000_000)
    ap.add_argument("--reckon", default=str(ROOT / "target" / "release" / "reckon"))
    ap.add_argument("--work", default=os.path.expanduser("~/.cache/reckon/bench"))
    ap.add_argument("--repeat", type=int, default=3,
                    help="reckon's local collect and the DuckDB peer run alternately this many times")
    ap.add_argument("--memory-limit-mb", type=int, default=None,
                    help="memory_limit_mb for reckon and memory_limit for DuckDB")
    ap.add_argument("--only-local", action="store_true", help="skip S3 and PostgreSQL")
    args = ap.parse_args()
    work = Path(args.work)
    data = dataset(args.reckon, work, args.rows)
    print("| source | records of the day | wall s | peak RSS MiB |")
    print("|---|---:|---:|---:|")
    config = data / "reckon.toml"
    if args.memory_limit_mb:
        config = data / "limited.toml"
        config.write_text(f"memory_limit_mb = {args.memory_limit_mb}\n" + (data / "reckon.toml").read_text())
    python = venv("duckdb", ["duckdb==1.4.*"]) / "bin" / "python"
    ours, theirs = [], []
    for _ in range(max(1, args.repeat)):
        t, rss, rows = collect(args.reckon, config)
        ours.append((t, rss))
        theirs.append(duckdb_collect(python, data, work, args.memory_limit_mb))
    med = lambda runs: (sorted(r[0] for r in runs)[len(runs) // 2], max(r[1] for r in runs))
    (t, rss), (dt, drss) = med(ours), med(theirs)
    runs = lambda rs: ", ".join(f"{r[0]:.1f}" for r in rs)
    print(f"| Parquet on the local disk, median of {len(ours)} ({runs(ours)}) | {rows:,} | {t:.2f} | {rss:.0f} |")
    print(f"| DuckDB, the same snapshot from the same partitions (bench/duckdb_collect_peer.py), "
          f"median of {len(theirs)} ({runs(theirs)}) | {theirs[0][2]:,} | {dt:.2f} | {drss:.0f} |")
    print(f"| the same snapshot (every column, snapshot_row too) | | {same_snapshot(python, data, work)} | |")
    if args.only_local:
        return

    # The same warehouse on moto.
    moto = venv("moto", ["moto[server]==5.1.*", "boto3"])
    port = free_port()
    server = subprocess.Popen([str(moto / "bin" / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait(port)
        endpoint = f"http://127.0.0.1:{port}"
        upload = r"""
import boto3, os, sys
s3 = boto3.client('s3', endpoint_url=sys.argv[1], region_name='us-east-1',
                  aws_access_key_id='test', aws_secret_access_key='test')
s3.create_bucket(Bucket='bench')
root = sys.argv[2]
for d, _, files in os.walk(root):
    for f in files:
        p = os.path.join(d, f)
        s3.upload_file(p, 'bench', 'warehouse/' + os.path.relpath(p, root))
"""
        subprocess.run([str(moto / "bin" / "python"), "-c", upload, endpoint, str(data / "warehouse")], check=True)
        s3dir = work / f"s3-{args.rows}"
        shutil.rmtree(s3dir, ignore_errors=True)
        s3dir.mkdir(parents=True)
        text = (data / "reckon.toml").read_text()
        text = text.replace('orders = "warehouse/orders"', 'orders = "s3://bench/warehouse/orders"')
        text = text.replace('refunds = "warehouse/refunds"', 'refunds = "s3://bench/warehouse/refunds"')
        text = text.replace("\n[[channel]]", f'\n[object_store]\nendpoint = "{endpoint}"\nallow_http = true\n\n[[channel]]', 1)
        text = text.replace('storage_root = "output"', 'storage_root = "output"')
        (s3dir / "reckon.toml").write_text(text)
        env = {**os.environ, "AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test", "AWS_REGION": "us-east-1"}
        t, rss, rows = collect(args.reckon, s3dir / "reckon.toml", env)
        print(f"| Parquet on S3 (moto on this machine) | {rows:,} | {t:.2f} | {rss:.0f} |")
    finally:
        server.kill()

    # PostgreSQL: a data set of --pg-rows written into a fresh server.
    pgbin = sorted(Path("/usr/lib/postgresql").glob("*/bin"))[-1]
    tmp = Path(tempfile.mkdtemp(prefix="reckon-pg-bench"))
    as_pg = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    if os.geteuid() == 0:
        subprocess.run(["chown", "-R", "postgres", str(tmp)], check=True)
    subprocess.run([*as_pg, str(pgbin / "initdb"), "-D", str(tmp / "data"), "-U", "postgres", "-A", "trust"],
                   check=True, stdout=subprocess.DEVNULL)
    port = free_port()
    server = subprocess.Popen([*as_pg, str(pgbin / "postgres"), "-D", str(tmp / "data"), "-p", str(port),
                               "-k", str(tmp), "-c", "listen_addresses=127.0.0.1"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        wait(port)
        time.sleep(1)
        url = f"postgres://postgres@127.0.0.1:{port}/postgres"
        pgdata = work / f"pg-{args.pg_rows}"
        shutil.rmtree(pgdata, ignore_errors=True)
        subprocess.run([args.reckon, "generate", "--out", str(pgdata), "--from", DATE, "--days", "1",
                        "--rows", str(args.pg_rows), "--seed", "1", "--channel", "wechat",
                        "--warehouse-url", url], check=True, stdout=subprocess.DEVNULL)
        t, rss, rows = collect(args.reckon, pgdata / "reckon.toml")
        print(f"| PostgreSQL (chunks of 50,000, 20 a second at most) | {rows:,} | {t:.2f} | {rss:.0f} |")
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
