"""The DuckDB peer of reckon's collect stage, for the benchmarks of issue #19: the day's
platform snapshot from the same Hive-partitioned warehouse Parquet, the way a DuckDB user would
write it.

The same work as `reckon stage collect` with sql/platform.sql: the channel's paid orders with
their successful refunds summed, and its refunds, renamed to the canonical platform columns;
the day selected by time over partitions D-1, D and D+1; sorted on every column (ascending,
NULLs first, as reckon sorts) with `snapshot_row` the row's place in that order; written as one
Parquet file (zstd).

Run as a script by the DuckDB venv's python:
    python duckdb_collect_peer.py PARAMS_JSON
PARAMS_JSON: {"orders": [partition folders], "refunds": [partition folders], "channel",
"day_start_us", "day_end_us", "out" (a file), "threads", "memory_limit_mb" (or null)}. Prints one JSON line: the wall seconds
of the work and the rows written.
"""

import json
import sys
import time

SQL = r"""
COPY (
    WITH
    orders AS (SELECT * FROM read_parquet({orders}, hive_partitioning = false)),
    refunds AS (SELECT * FROM read_parquet({refunds}, hive_partitioning = false)),
    refunded AS (
        SELECT order_no, CAST(sum(amount) AS DECIMAL(18, 2)) AS refunded_amount
        FROM refunds WHERE pay_channel = '{channel}' AND status = 'SUCCESS'
        GROUP BY order_no
    ),
    unioned AS (
        SELECT 'PAY' AS txn_type, o.order_no AS platform_order_id, o.order_no AS merchant_order_id,
               CAST(NULL AS VARCHAR) AS refund_id, o.channel_trade_no AS channel_txn_id,
               CAST(o.amount AS DECIMAL(18, 2)) AS amount, o.status, o.paid_at AS txn_time,
               r.refunded_amount, o.merchant_id
        FROM orders o LEFT JOIN refunded r USING (order_no)
        WHERE o.pay_channel = '{channel}' AND o.status IN ('SUCCESS', 'REFUNDED')
        UNION ALL
        SELECT 'REFUND', order_no, order_no, refund_no, channel_refund_no,
               CAST(amount AS DECIMAL(18, 2)), status, refunded_at, CAST(NULL AS DECIMAL(18, 2)),
               merchant_id
        FROM refunds WHERE pay_channel = '{channel}'
    ),
    day AS (
        SELECT '{channel}' AS channel, * FROM unioned
        WHERE txn_time >= make_timestamp({start}) AND txn_time < make_timestamp({end})
    )
    SELECT *, row_number() OVER (ORDER BY {order}) AS snapshot_row
    FROM day
    ORDER BY snapshot_row
) TO '{out}' (FORMAT PARQUET, COMPRESSION zstd)
"""

COLUMNS = ["channel", "txn_type", "platform_order_id", "merchant_order_id", "refund_id",
           "channel_txn_id", "amount", "status", "txn_time", "refunded_amount", "merchant_id"]


def main():
    import duckdb  # the peer's own venv

    p = json.loads(sys.argv[1])
    con = duckdb.connect()
    con.execute(f"SET threads TO {int(p['threads'])}")
    con.execute("SET TimeZone = 'UTC'")
    con.execute("SET enable_progress_bar = false")
    if p.get("memory_limit_mb"):
        con.execute(f"SET memory_limit = '{int(p['memory_limit_mb'])}MB'")
    globs = lambda dirs: repr([f"{d.rstrip('/')}/*.parquet" for d in dirs])
    sql = SQL.format(orders=globs(p["orders"]), refunds=globs(p["refunds"]),
                     channel=p["channel"], start=int(p["day_start_us"]), end=int(p["day_end_us"]),
                     order=", ".join(f"{c} ASC NULLS FIRST" for c in COLUMNS), out=p["out"])
    started = time.monotonic()
    con.execute(sql)
    seconds = time.monotonic() - started
    rows = con.execute("SELECT count(*) FROM read_parquet(?)", [p["out"]]).fetchone()[0]
    print(json.dumps({"seconds": seconds, "rows": rows}))


if __name__ == "__main__":
    main()
