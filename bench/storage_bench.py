#!/usr/bin/env python3
"""Storage benchmark (issue #18): the same day run stage by stage with the storage root on the
local disk and on an S3-compatible server (moto, on this machine), side by side: wall time and
peak RSS of every stage, then the whole day in one `reckon run` on a fresh root of each kind;
medians of --runs runs, and a check that both roots committed the same bytes.

Usage: bench/storage_bench.py [--rows 10000000] [--runs 3] [--reckon BIN] [--work DIR]
Reuses bench.py's data set of --rows when it exists. Prints a Markdown table.
"""
import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench import CHANNEL, DATE, ROOT, run_measured, run_timed  # noqa: E402
from collect_bench import dataset, free_port, venv, wait  # noqa: E402

STAGES = ["fetch", "normalize", "collect", "reconcile", "report"]


DROP = r"""
import boto3, sys
s3 = boto3.client('s3', endpoint_url=sys.argv[1], region_name='us-east-1',
                  aws_access_key_id='test', aws_secret_access_key='test')
for prefix in sys.argv[2:]:
    for page in s3.get_paginator('list_objects_v2').paginate(Bucket='bench-root', Prefix=prefix + '/'):
        keys = [{'Key': o['Key']} for o in page.get('Contents', [])]
        if keys:
            s3.delete_objects(Bucket='bench-root', Delete={'Objects': keys})
"""


def cpu_seconds(pid):
    """User and system CPU seconds process `pid` has used (from /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def pointer(store_dir):
    """The committed pointer of the day under a local root (or a mirror of the S3 one)."""
    return json.loads((store_dir / "runs" / f"channel={CHANNEL}" / f"dt={DATE}" / "committed.json").read_text())


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=10_000_000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--reckon", default=str(Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target")) / "release" / "reckon"))
    ap.add_argument("--work", default=os.path.expanduser("~/.cache/reckon/bench"))
    ap.add_argument("--only-run", action="store_true",
                    help="the day in one `reckon run` on each root only, not stage by stage")
    args = ap.parse_args()
    work = Path(args.work)
    data = dataset(args.reckon, work, args.rows)
    moto = venv("moto", ["moto[server]==5.1.*", "boto3"])
    port = free_port()
    server = subprocess.Popen([str(moto / "bin" / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    endpoint = f"http://127.0.0.1:{port}"
    env = {**os.environ, "AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test",
           "AWS_REGION": "us-east-1", "RECKON_LOG": "warn"}
    moto_cpu, reckon_cpu = [], {"local": [], "s3": []}
    times = {(root, s): [] for root in ["local", "s3"] for s in STAGES + ["run"]}
    rss = {(root, s): [] for root in ["local", "s3"] for s in STAGES + ["run"]}
    try:
        wait(port)
        subprocess.run([str(moto / "bin" / "python"), "-c",
                        "import boto3,sys; boto3.client('s3', endpoint_url=sys.argv[1], region_name='us-east-1', "
                        "aws_access_key_id='test', aws_secret_access_key='test').create_bucket(Bucket='bench-root')",
                        endpoint], check=True)
        base = (data / "reckon.toml").read_text()
        base = base.replace("storage_root = \"output\"", "storage_root = \"ROOT\"")
        for run in range(args.runs):
            for root in ["local", "s3"]:
                cfg = data / f"storage-{root}.toml"
                if root == "local":
                    out = work / f"storage-local-{args.rows}"
                    shutil.rmtree(out, ignore_errors=True)
                    text = base.replace("ROOT", str(out))
                else:
                    # A fresh prefix each run: nothing of an earlier run is reused.
                    text = base.replace("ROOT", f"s3://bench-root/run-{run}")
                    # Unsigned payloads, as reckon sends them to an https endpoint by default
                    # (this moto speaks plain http, where the default signs every body).
                    text = text.replace("\n[[channel]]", f'\n[object_store]\nendpoint = "{endpoint}"\nallow_http = true\n'
                                        'unsigned_payload = true\n\n[[channel]]', 1)
                cfg.write_text(text)
                for stage in ([] if args.only_run else STAGES):
                    t, r, _ = run_measured([args.reckon, "stage", stage, "--config", cfg, "--date", DATE,
                                            "--channel", CHANNEL], env=env)
                    times[(root, stage)].append(t)
                    rss[(root, stage)].append(r)
                # The whole day in one `reckon run` on a fresh root, as a scheduler runs it: the
                # bill's upload goes on in the background while normalize, collect and reconcile run.
                whole = cfg.with_name(f"storage-{root}-run.toml")
                if root == "local":
                    fresh = work / f"storage-local-run-{args.rows}"
                    shutil.rmtree(fresh, ignore_errors=True)
                    whole.write_text(text.replace(str(out), str(fresh)))
                else:
                    whole.write_text(text.replace(f"s3://bench-root/run-{run}", f"s3://bench-root/day-{run}"))
                before = cpu_seconds(server.pid)
                t, r, _, cpu = run_timed([args.reckon, "run", "--config", whole, "--date", DATE,
                                          "--channel", CHANNEL], env=env)
                reckon_cpu[root].append(cpu)
                if root == "s3":
                    moto_cpu.append(cpu_seconds(server.pid) - before)
                times[(root, "run")].append(t)
                rss[(root, "run")].append(r)
                if root == "s3":
                    # moto holds every object in memory: a run's 2.8 GB go once measured (the
                    # last stage-by-stage prefix stays for the comparison below).
                    last = run == args.runs - 1
                    gone = ([] if last and args.only_run else [f"day-{run}"]) + ([] if last else [f"run-{run}"])
                    subprocess.run([str(moto / "bin" / "python"), "-c", DROP, endpoint, *gone], check=True)
        # The S3 root's last day, read back: the same committed bytes as the local root's.
        mirror = work / f"storage-s3-mirror-{args.rows}"
        shutil.rmtree(mirror, ignore_errors=True)
        get = r"""
import boto3, os, sys
s3 = boto3.client('s3', endpoint_url=sys.argv[1], region_name='us-east-1',
                  aws_access_key_id='test', aws_secret_access_key='test')
prefix, out = sys.argv[2], sys.argv[3]
key = prefix + '/runs/channel=wechat/dt=2026-11-20/committed.json'
os.makedirs(os.path.dirname(os.path.join(out, key[len(prefix) + 1:])), exist_ok=True)
s3.download_file('bench-root', key, os.path.join(out, key[len(prefix) + 1:]))
"""
        compared = "day" if args.only_run else "run"
        subprocess.run([str(moto / "bin" / "python"), "-c", get, endpoint, f"{compared}-{args.runs - 1}", str(mirror)],
                       check=True)
        local_root = work / (f"storage-local-run-{args.rows}" if args.only_run else f"storage-local-{args.rows}")
        local_files = {(f["path"], f["sha256"]) for f in pointer(local_root)["files"]
                       if not f["path"].endswith("fetch.json")}
        s3_files = {(f["path"], f["sha256"]) for f in pointer(mirror)["files"] if not f["path"].endswith("fetch.json")}
        same = local_files == s3_files
    finally:
        server.kill()
        server.wait()

    print(f"machine: {os.cpu_count()} cores; {args.rows:,} records a side (WeChat); medians of {args.runs} runs; "
          f"moto {endpoint} on this machine\n")
    print("| stage | local wall s | S3 wall s | S3 / local | local peak RSS MiB | S3 peak RSS MiB |")
    print("|---|---:|---:|---:|---:|---:|")
    total = {"local": 0.0, "s3": 0.0}
    for s in ([] if args.only_run else STAGES):
        lt, st = statistics.median(times[("local", s)]), statistics.median(times[("s3", s)])
        lr, sr = statistics.median(rss[("local", s)]), statistics.median(rss[("s3", s)])
        total["local"] += lt
        total["s3"] += st
        print(f"| {s} | {lt:.2f} | {st:.2f} | {st / lt:.2f} | {lr:.0f} | {sr:.0f} |")
    if not args.only_run:
        print(f"| **all stages** | {total['local']:.2f} | {total['s3']:.2f} | {total['s3'] / total['local']:.2f} | | |")
    lt, st = statistics.median(times[("local", "run")]), statistics.median(times[("s3", "run")])
    lr, sr = statistics.median(rss[("local", "run")]), statistics.median(rss[("s3", "run")])
    print(f"| **the day in one `reckon run`** | {lt:.2f} | {st:.2f} | {st / lt:.2f} | {lr:.0f} | {sr:.0f} |")
    print(f"\nreckon's CPU time in each `reckon run` (user + system): local "
          f"{', '.join(f'{c:.1f}' for c in reckon_cpu['local'])} s; S3 "
          f"{', '.join(f'{c:.1f}' for c in reckon_cpu['s3'])} s")
    print(f"moto's own CPU time during each S3 `reckon run` (user + system, on the same 2 cores): "
          f"{', '.join(f'{c:.1f}' for c in moto_cpu)} s")
    print(f"committed files (path and sha256) the same on both roots: {same}")


if __name__ == "__main__":
    main()
