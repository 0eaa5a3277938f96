#!/usr/bin/env python3
"""The review desk's benchmark (issue #20): `reckon serve` (release build) on bench.py's
reconciled day of --rows records, asked for the first page of the list under many filters
(the HTML page a person sees, and the JSON page a script reads), sequentially, the way one
person clicks; latencies measured by the client, p50 and p95 per filter and over all requests.
Target: p95 under 300 ms for the first page of any filter.

Usage: bench/desk_bench.py [--rows 10000000] [--rounds 10] [--reckon BIN] [--work DIR]
Reconciles the day first when bench.py has not (`reckon run`). Prints a Markdown table.
"""
import argparse
import http.cookiejar
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench import CHANNEL, DATE, ROOT  # noqa: E402
from collect_bench import dataset  # noqa: E402

PASSWORD = "desk bench passphrase"

# The filters a person uses, each asked for its first page (with the count and the sums).
FILTERS = {
    "none": "",
    "one category": "category=AMOUNT_MISMATCH",
    "two categories": "category=MISSING_IN_PLATFORM&category=MISSING_IN_CHANNEL",
    "state new": "state=new",
    "amount range": "min=100&max=500",
    "large first": "sort=amount&desc=1",
    "by delta": "sort=delta",
    "open 1+ days": "age=1&sort=first-seen",
    "id search": "q={id}",
    "undecided": "decided=no",
    "assignee": "assignee=ann",
    "page 100": "page=100",
}


def percentile(xs, p):
    xs = sorted(xs)
    k = max(0, min(len(xs) - 1, round(p / 100 * (len(xs) - 1))))
    return xs[k]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=10_000_000)
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--reckon", default=str(Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target")) / "release" / "reckon"))
    ap.add_argument("--work", default=os.path.expanduser("~/.cache/reckon/bench"))
    args = ap.parse_args()
    work = Path(args.work)
    data = dataset(args.reckon, work, args.rows)
    pointer = data / "output" / "runs" / f"channel={CHANNEL}" / f"dt={DATE}" / "committed.json"
    if not pointer.exists():
        subprocess.run([args.reckon, "run", "--config", str(data / "reckon.toml"), "--date", DATE,
                        "--channel", CHANNEL], check=True, stdout=subprocess.DEVNULL)
    # A config of its own beside the data (its desk and users stay out of the data set).
    desk = work / f"desk-{args.rows}"
    shutil.rmtree(desk, ignore_errors=True)
    desk.mkdir(parents=True)
    text = (data / "reckon.toml").read_text()
    text = re.sub(r'^storage_root\s*=.*$', f'storage_root = "{data / "output"}"', text, flags=re.M)
    text = re.sub(r'^(\w+_dir|path)\s*=\s*"(?!/)([^"]*)"', lambda m: f'{m.group(1)} = "{data / m.group(2)}"', text, flags=re.M)
    (desk / "reckon.toml").write_text(text)
    cfg = str(desk / "reckon.toml")
    subprocess.run([args.reckon, "desk", "user", "add", "--config", cfg, "--name", "ann", "--role", "resolver"],
                   input=PASSWORD + "\n", text=True, check=True, stderr=subprocess.DEVNULL)
    server = subprocess.Popen([args.reckon, "serve", "--config", cfg, "--listen", "127.0.0.1:0"],
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        base = server.stdout.readline().strip().removeprefix("reckon desk on ").rstrip("/")
        jar = http.cookiejar.CookieJar()
        opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
        form = opener.open(f"{base}/login").read().decode()
        csrf = re.search(r'name="csrf" value="([^"]+)"', form).group(1)
        # The cookie is Secure: over plain HTTP on loopback, send it by hand.
        login = urllib.parse.urlencode({"csrf": csrf, "user": "ann", "password": PASSWORD, "next": "/"}).encode()
        cookie = "; ".join(f"{c.name}={c.value}" for c in jar)

        class NoRedirect(urllib.request.HTTPRedirectHandler):
            def redirect_request(self, *a, **k):
                return None
        plain = urllib.request.build_opener(NoRedirect)
        try:
            plain.open(urllib.request.Request(f"{base}/login", data=login, headers={"Cookie": cookie}))
        except urllib.error.HTTPError as e:
            session = re.search(r"reckon_desk=([^;]+)", e.headers.get("Set-Cookie", "")).group(1)
        headers = {"Cookie": f"reckon_desk={session}"}

        def get(path):
            start = time.monotonic()
            with plain.open(urllib.request.Request(f"{base}{path}", headers=headers)) as r:
                body = r.read()
            return (time.monotonic() - start) * 1000, body

        q = f"from={DATE}&to={DATE}&channel={CHANNEL}"
        _, first = get(f"/api/differences?{q}&size=1")
        page = json.loads(first)["page"]
        some_id = page["rows"][0]["diff_id"]
        print(f"{page['total']} differences on {DATE}; {len(FILTERS)} filters x {args.rounds} rounds x (HTML, JSON)")
        times = {name: [] for name in FILTERS}
        totals = {}
        for _ in range(args.rounds):
            for name, f in FILTERS.items():
                f = f.format(id=some_id)
                for path in (f"/differences?{q}&{f}", f"/api/differences?{q}&{f}"):
                    ms, body = get(path)
                    times[name].append(ms)
                    if path.startswith("/api/"):
                        totals[name] = json.loads(body)["page"]["total"]
        every = [t for ts in times.values() for t in ts]
        print()
        print("| filter | matches | p50 ms | p95 ms | max ms |")
        print("|---|---|---|---|---|")
        for name, ts in times.items():
            print(f"| {name} | {totals[name]} | {statistics.median(ts):.0f} | {percentile(ts, 95):.0f} | {max(ts):.0f} |")
        print(f"| **all {len(every)} requests** | | {statistics.median(every):.0f} | {percentile(every, 95):.0f} | {max(every):.0f} |")
    finally:
        server.terminate()
        server.wait()


if __name__ == "__main__":
    main()
