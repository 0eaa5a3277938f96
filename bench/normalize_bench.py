#!/usr/bin/env python3
"""Normalize benchmark (issue #3): one Alipay trade bill of N rows, normalized by
`reckon normalize` pinned to one core, side by side with DuckDB's read_csv and Polars'
read_csv on the same bill converted to UTF-8, each also on one thread, each writing the same
typed columns to Parquet.

Usage: bench/normalize_bench.py [--rows 2000000] [--reckon BIN] [--work DIR]
Prints a Markdown table for BENCHMARKS.md.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import zipfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench import ROOT, run_measured  # noqa: E402

DUCK = r"""
import duckdb, sys
con = duckdb.connect()
con.execute("SET threads = 1")
src, out = sys.argv[1], sys.argv[2]
con.execute(f'''
COPY (
  SELECT trim("支付宝交易号", ' ' || chr(9)) AS channel_txn_id,
         trim("商户订单号", ' ' || chr(9)) AS merchant_order_id,
         CASE "业务类型" WHEN '交易' THEN 'PAY' WHEN '退款' THEN 'REFUND' END AS txn_type,
         abs(CAST(CASE WHEN "业务类型" = '退款' THEN "商家实收（元）" ELSE "订单金额（元）" END AS DECIMAL(18,2))) AS amount,
         abs(CAST("服务费（元）" AS DECIMAL(18,2))) AS fee,
         try_strptime("完成时间", '%Y-%m-%d %H:%M:%S') AS txn_time,
         trim("退款批次号/请求号", ' ' || chr(9)) AS refund_id
  FROM read_csv('{src}', header=true, comment='#', all_varchar=true, ignore_errors=true)
) TO '{out}' (FORMAT parquet, COMPRESSION zstd)
''')
print(con.execute(f"SELECT count(*) FROM '{out}'").fetchone()[0])
"""

POLARS = r"""
import polars as pl, sys
src, out = sys.argv[1], sys.argv[2]
df = pl.read_csv(src, comment_prefix="#", infer_schema=False, truncate_ragged_lines=True)
refund = pl.col("业务类型") == "退款"
res = df.select(
    pl.col("支付宝交易号").str.strip_chars().alias("channel_txn_id"),
    pl.col("商户订单号").str.strip_chars().alias("merchant_order_id"),
    pl.when(refund).then(pl.lit("REFUND")).otherwise(pl.lit("PAY")).alias("txn_type"),
    pl.when(refund).then(pl.col("商家实收（元）")).otherwise(pl.col("订单金额（元）"))
      .str.strip_chars().cast(pl.Decimal(18, 2), strict=False).abs().alias("amount"),
    pl.col("服务费（元）").str.strip_chars().cast(pl.Decimal(18, 2), strict=False).abs().alias("fee"),
    pl.col("完成时间").str.strptime(pl.Datetime, "%Y-%m-%d %H:%M:%S", strict=False).alias("txn_time"),
    pl.col("退款批次号/请求号").str.strip_chars().alias("refund_id"),
)
res.write_parquet(out, compression="zstd")
print(res.height)
"""


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=2_000_000)
    ap.add_argument("--work", default=os.path.expanduser("~/.cache/reckon/bench"))
    ap.add_argument("--reckon", default=None)
    ap.add_argument("--repeat", type=int, default=5,
                    help="rounds; each round runs every tool once, so a drift of the shared "
                         "machine's speed touches all tools alike")
    args = ap.parse_args()

    work = Path(args.work)
    venv = work / "venv"
    if not (venv / "bin" / "python").exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    subprocess.run([str(venv / "bin" / "pip"), "install", "-q", "duckdb", "polars"], check=True)
    reckon = args.reckon
    if reckon is None:
        subprocess.run(["cargo", "build", "--release", "-p", "reckon"], cwd=ROOT, check=True)
        reckon = str(Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target")) / "release" / "reckon")
    n = args.rows
    data = work / f"alipay-{n}"
    if not data.exists():
        subprocess.run([reckon, "generate", "--out", str(data), "--from", "2026-11-20", "--days", "1",
                        "--rows", str(n), "--seed", "1", "--channel", "alipay"], check=True,
                       stdout=subprocess.DEVNULL)
    bill = next((data / "bills" / "alipay").glob("*.zip"))
    utf8 = data / "alipay-utf8.csv"
    if not utf8.exists():
        with zipfile.ZipFile(bill) as z:
            name = next(i for i in z.infolist() if member_name(i).endswith("业务明细.csv"))
            utf8.write_bytes(z.read(name).decode("gbk").encode("utf-8"))
    size = bill.stat().st_size / 2**20
    text = utf8.stat().st_size / 2**20
    print(f"Alipay trade bill: {n:,} payments (+refunds); zip {size:.0f} MiB, text {text:.0f} MiB (UTF-8)\n")
    (work / "plain.toml").write_text(
        (ROOT / "formats" / "alipay_trade_v1.toml").read_text()
        .replace('kind = "zip"', 'kind = "plain"').replace('encoding = "gbk"', 'encoding = "utf-8"')
        .replace("member = '业务明细\\.csv$'\n", "", 1)
        .split("[totals.summary]")[0]
        + "\n" + "\n".join(("[[totals.check]]" + c) for c in
                           (ROOT / "formats" / "alipay_trade_v1.toml").read_text().split("[[totals.check]]")[1:5]))
    out = work / "norm-out"
    tools = [
        ("reckon normalize (1 core)", "GBK zip",
         ["taskset", "-c", "0", reckon, "normalize", "--format", "alipay_trade_v1", "--input", bill,
          "--out", out, "--bill-date", "2026-11-20"], None),
        ("reckon normalize (1 core)", "UTF-8 text",
         ["taskset", "-c", "0", reckon, "normalize", "--format", work / "plain.toml", "--input", utf8,
          "--out", out, "--bill-date", "2026-11-20"], None),
        ("DuckDB read_csv (1 thread)", "UTF-8 text",
         ["taskset", "-c", "0", venv / "bin" / "python", "-c", DUCK, utf8, work / "duckdb.parquet"], {}),
        ("Polars read_csv (1 thread)", "UTF-8 text",
         ["taskset", "-c", "0", venv / "bin" / "python", "-c", POLARS, utf8, work / "polars.parquet"],
         {"POLARS_MAX_THREADS": "1"}),
    ]
    runs = [[] for _ in tools]
    for r in range(args.repeat):
        for i, (name, _, cmd, env) in enumerate(tools):
            runs[i].append(run_measured(cmd, env=None if env is None else {**os.environ, **env}))
        print(f"round {r + 1}/{args.repeat}: "
              + ", ".join(f"{runs[i][-1][0]:.2f}" for i in range(len(tools))) + " s", file=sys.stderr)
    rows = json.loads(runs[0][0][2].strip().splitlines()[-1])["rows_read"]
    print(f"{args.repeat} rounds, each running every tool once, pinned to one core; the best and "
          "the median wall time of each tool.\n")
    print("| tool | input | best s | median s | M rows/s (best) | M rows/s (median) | peak RSS MiB |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for (name, what, _, env), rs in zip(tools, runs):
        got = rows if env is None else int(rs[0][2].strip().splitlines()[-1])
        times = sorted(t for t, _, _ in rs)
        best, median = times[0], statistics.median(times)
        print(f"| {name} | {what} | {best:.2f} | {median:.2f} | {got / best / 1e6:.2f} | "
              f"{got / median / 1e6:.2f} | {max(m for _, m, _ in rs):.0f} |")
    # The rows themselves: reckon's (the last run, from the UTF-8 text) against each peer's,
    # both ways. A peer reads an empty id as '' and keeps a row whose time it cannot read.
    for peer in ["duckdb", "polars"]:
        same = subprocess.run([venv / "bin" / "python", "-c", SAME, out / "normalized.parquet",
                               work / f"{peer}.parquet"], check=True, capture_output=True, text=True)
        print(f"\nRows only reckon wrote / only {peer} wrote: {same.stdout.strip()}")


SAME = r"""
import duckdb, sys
con = duckdb.connect()
con.execute("SET TimeZone = 'UTC'")
ours = f'''SELECT channel_txn_id, merchant_order_id, txn_type, amount, fee,
                    (txn_time AT TIME ZONE 'Asia/Shanghai')::TIMESTAMP AS t, refund_id
             FROM '{sys.argv[1]}' '''
peer = f'''SELECT channel_txn_id, nullif(merchant_order_id, '') AS merchant_order_id, txn_type,
                    amount, fee, txn_time::TIMESTAMP AS t, nullif(refund_id, '') AS refund_id
             FROM '{sys.argv[2]}' '''
a = con.execute(f"SELECT count(*) FROM ({ours} EXCEPT ALL {peer})").fetchall()[0][0]
b = con.execute(f"SELECT count(*) FROM ({peer} EXCEPT ALL {ours})").fetchall()[0][0]
print(f"{a} / {b}")
"""


def member_name(info):
    """A zip member's name: UTF-8 when flagged, else GBK bytes as Alipay writes them."""
    if info.flag_bits & 0x800:
        return info.filename
    return info.filename.encode("cp437").decode("gbk", errors="replace")


if __name__ == "__main__":
    main()
