"""The DuckDB peer of reckon's reconcile stage, written the way a DuckDB user who knows the
engine would write it, for the benchmarks of issue #19.

The same reconciliation as sql/reconcile.sql with reckon's functions (reckon_classify,
reckon_in_cut_window, the fee rounding of udfs/src/classify.rs), on the same normalized bill
and platform snapshot (and carry-in, when there is one), with the channel's rules as reckon
recorded them:
- keys per `match_key`; duplicates by GROUP BY ... HAVING count(*) > 1 (the first occurrence,
  a carried record or else the lowest line or snapshot row, is reconciled), no windows;
- the full outer join of first occurrences on the key, keyless records one-sided;
- the classification: duplicates, amount with tolerance, status with the refund check, fee
  with the channel's rounding, cut window and grace for one-sided records, carried matches;
- only narrow columns go through the join and into the one materialised table (category,
  amounts, the statistics' grain, row ids); the differences' wide columns are joined back by
  row id for the few rows that are not MATCHED;
- outputs: the differences sorted by their id, the carry-over (CROSS_DAY_PENDING), and the
  statistics per category and local hour and per category and merchant, as Parquet.

Run as a script by the DuckDB venv's python:
    python duckdb_peer.py PARAMS_JSON
PARAMS_JSON: {"bill", "platform" (a file or a list of files), "carry" (or null), "out", "threads", "channel", "bill_date",
"rules": reckon's recorded rules}. Prints one JSON line: the wall seconds of the work and the
statistics per category, in reckon's summary terms (amounts as scale-2 integers).
"""

import json
import sys
import time

SQL = r"""
CREATE TEMP VIEW channel_all AS
    -- The bill's rows and the carried channel records, each with a row id to join back by:
    -- the bill's line, unique in a bill (the snapshot's row, on the other side), whatever
    -- files the side is stored in.
    SELECT source_line AS row_id, FALSE AS carried, txn_type, channel_txn_id,
           merchant_order_id, refund_id,
           CASE WHEN {compare_received} THEN received ELSE amount END AS compared,
           fee, status, txn_time, source_file, source_line, merchant_id,
           CAST(NULL AS DATE) AS carried_from, CAST(NULL AS DATE) AS grace_until
    FROM read_parquet({bill}, file_row_number = true, hive_partitioning = false)
    UNION ALL
    SELECT -1 - file_row_number, TRUE, txn_type, channel_txn_id, merchant_order_id, refund_id,
           amount, fee, status, txn_time, source_file, source_line, merchant_id,
           carried_from, grace_until
    FROM read_parquet({carry}, file_row_number = true, hive_partitioning = false)
    WHERE side = 'CHANNEL';

CREATE TEMP VIEW platform_all AS
    SELECT snapshot_row AS row_id, FALSE AS carried, txn_type, platform_order_id,
           merchant_order_id, refund_id, channel_txn_id, amount, status, txn_time,
           refunded_amount, snapshot_row, merchant_id,
           CAST(NULL AS DATE) AS carried_from, CAST(NULL AS DATE) AS grace_until
    FROM read_parquet({platform}, file_row_number = true, hive_partitioning = false)
    UNION ALL
    SELECT -1 - file_row_number, TRUE, txn_type, platform_order_id, merchant_order_id,
           refund_id, channel_txn_id, amount, status, txn_time, NULL, 0, merchant_id,
           carried_from, grace_until
    FROM read_parquet({carry}, file_row_number = true, hive_partitioning = false)
    WHERE side = 'PLATFORM';

CREATE TEMP TABLE reconciled AS
WITH
c AS (
    SELECT row_id, carried, txn_type, status, txn_time, merchant_id, fee, grace_until,
           CASE WHEN txn_type = 'REFUND' AND NOT carried THEN abs(compared) ELSE compared END
               AS amount,
           {channel_key} AS k,
           CASE WHEN carried THEN 0 ELSE 1000000000000 + source_line END AS ordinal
    FROM channel_all
),
p AS (
    SELECT row_id, carried, txn_type, status, txn_time, merchant_id, refunded_amount,
           grace_until,
           CASE WHEN txn_type = 'REFUND' AND NOT carried THEN abs(amount) ELSE amount END
               AS amount,
           {platform_key} AS k,
           CASE WHEN carried THEN 0 ELSE 1000000000000 + snapshot_row END AS ordinal
    FROM platform_all
),
c_repeated AS (SELECT k, min(ordinal) AS first FROM c WHERE k IS NOT NULL GROUP BY k HAVING count(*) > 1),
p_repeated AS (SELECT k, min(ordinal) AS first FROM p WHERE k IS NOT NULL GROUP BY k HAVING count(*) > 1),
-- A duplicate joins on nothing: its join key is NULL (so is a keyless record's).
cs AS (SELECT *, CASE WHEN NOT dup THEN k END AS jk
       FROM (SELECT c.*, r.first IS NOT NULL AND c.ordinal <> r.first AS dup
             FROM c LEFT JOIN c_repeated r ON c.k = r.k)),
ps AS (SELECT *, CASE WHEN NOT dup THEN k END AS jk
       FROM (SELECT p.*, r.first IS NOT NULL AND p.ordinal <> r.first AS dup
             FROM p LEFT JOIN p_repeated r ON p.k = r.k)),
joined AS (
    SELECT cs.row_id IS NOT NULL AS in_c, ps.row_id IS NOT NULL AS in_p,
           cs.row_id AS c_row, ps.row_id AS p_row, cs.k AS c_k, ps.k AS p_k,
           cs.ordinal AS c_ord, ps.ordinal AS p_ord,
           coalesce(cs.dup, FALSE) AS c_dup, coalesce(ps.dup, FALSE) AS p_dup,
           cs.txn_type AS c_type, cs.amount AS c_amount, ps.amount AS p_amount,
           cs.fee AS c_fee, cs.status AS c_status, ps.status AS p_status,
           cs.txn_time AS c_time, ps.txn_time AS p_time,
           coalesce(cs.carried, FALSE) AS c_carried, coalesce(ps.carried, FALSE) AS p_carried,
           cs.grace_until AS c_grace, ps.grace_until AS p_grace,
           ps.refunded_amount AS p_refunded, coalesce(ps.merchant_id, cs.merchant_id) AS merchant_id
    FROM cs FULL OUTER JOIN ps ON cs.jk = ps.jk
),
facts AS (
    SELECT *,
           coalesce(in_c AND in_p AND c_type = 'PAY' AND c_status = 'SUCCESS'
                    AND p_status = 'REFUNDED' AND p_refunded = p_amount, FALSE) AS refund_explained,
           CASE
               WHEN in_c AND in_p THEN FALSE
               WHEN in_c THEN c_k IS NOT NULL AND CASE WHEN c_carried THEN DATE '{bill_date}' < c_grace
                   ELSE {grace_days} > 0 AND abs(epoch_us(c_time) - {day_end_us}) <= {window_us} END
               ELSE p_k IS NOT NULL AND CASE WHEN p_carried THEN DATE '{bill_date}' < p_grace
                   ELSE {grace_days} > 0 AND abs(epoch_us(p_time) - {day_end_us}) <= {window_us} END
           END AS pending_ok,
           -- The fee the contract gives, in scale-8 units, and its rounding to cents.
           CASE WHEN c_type = 'PAY' AND c_fee IS NOT NULL AND {fee_rate} IS NOT NULL
                THEN CAST(c_amount * 100 AS HUGEINT) * CAST({fee_rate} * 1000000 AS HUGEINT) END AS raw_fee
    FROM joined
),
classified AS (
    SELECT *,
        CASE
            WHEN in_c AND c_dup THEN 'DUPLICATE_IN_CHANNEL'
            WHEN in_p AND p_dup THEN 'DUPLICATE_IN_PLATFORM'
            WHEN in_c AND in_p THEN CASE
                WHEN c_amount IS NULL OR p_amount IS NULL
                     OR abs(c_amount - p_amount) > {tolerance} THEN 'AMOUNT_MISMATCH'
                WHEN c_status IS DISTINCT FROM
                     (CASE WHEN refund_explained THEN c_status ELSE p_status END) THEN 'STATUS_MISMATCH'
                WHEN raw_fee IS NOT NULL AND CAST(c_fee * 100 AS HUGEINT) <> {rounded_fee} THEN 'FEE_MISMATCH'
                WHEN c_carried OR p_carried THEN 'CROSS_DAY_MATCHED'
                ELSE 'MATCHED' END
            WHEN pending_ok THEN 'CROSS_DAY_PENDING'
            WHEN in_c THEN 'MISSING_IN_PLATFORM'
            ELSE 'MISSING_IN_CHANNEL'
        END AS category
    FROM facts
)
SELECT category, in_c, in_p, c_carried, p_carried, c_amount, p_amount, refund_explained,
       hour(timezone('{time_zone}', coalesce(c_time, p_time))) AS hour, merchant_id,
       c_row, p_row, coalesce(c_k, p_k) AS match_key, c_ord, p_ord, c_grace, p_grace
FROM classified;

-- The statistics: engine aggregates over the narrow table.
COPY (
    SELECT category, hour, {stats}
    FROM reconciled GROUP BY ALL ORDER BY ALL
) TO '{out}/by_hour.parquet' (FORMAT PARQUET);
COPY (
    SELECT category, merchant_id, {stats}
    FROM reconciled GROUP BY ALL ORDER BY ALL
) TO '{out}/by_merchant.parquet' (FORMAT PARQUET);

-- The differences, their wide columns joined back by row id, sorted by their id.
CREATE TEMP TABLE diffs AS
SELECT md5(concat_ws('|', '{channel}', '{bill_date}', r.match_key, r.c_ord, r.p_ord,
                     c.source_file, c.source_line, p.platform_order_id, p.refund_id)) AS diff_id,
       r.category, r.match_key, coalesce(c.txn_type, p.txn_type) AS txn_type,
       p.platform_order_id, coalesce(c.channel_txn_id, p.channel_txn_id) AS channel_txn_id,
       coalesce(c.merchant_order_id, p.merchant_order_id) AS merchant_order_id,
       coalesce(c.refund_id, p.refund_id) AS refund_id, r.merchant_id,
       r.p_amount AS platform_amount, r.c_amount AS channel_amount,
       r.c_amount - r.p_amount AS amount_delta, c.fee AS channel_fee,
       p.status AS platform_status, c.status AS channel_status,
       p.txn_time AS platform_time, c.txn_time AS channel_time,
       c.source_file, c.source_line, r.in_c AS in_channel, r.in_p AS in_platform,
       r.c_carried AS channel_carried, r.p_carried AS platform_carried,
       coalesce(c.carried_from, p.carried_from) AS carried_from,
       coalesce(r.c_grace, r.p_grace) AS grace_until, r.refund_explained
FROM (SELECT * FROM reconciled WHERE category <> 'MATCHED') r
LEFT JOIN channel_all c ON c.row_id = r.c_row
LEFT JOIN platform_all p ON p.row_id = r.p_row;
COPY (SELECT * FROM diffs ORDER BY diff_id) TO '{out}/diffs.parquet' (FORMAT PARQUET);

-- The carry-over: each pending record with its own side's values.
COPY (
    SELECT CASE WHEN in_channel THEN 'CHANNEL' ELSE 'PLATFORM' END AS side,
           coalesce(carried_from, DATE '{bill_date}') AS carried_from,
           coalesce(grace_until, DATE '{bill_date}' + {grace_days}) AS grace_until,
           txn_type, channel_txn_id, merchant_order_id, refund_id, platform_order_id,
           CASE WHEN in_channel THEN channel_amount ELSE platform_amount END AS amount,
           channel_fee AS fee,
           CASE WHEN in_channel THEN channel_status ELSE platform_status END AS status,
           CASE WHEN in_channel THEN channel_time ELSE platform_time END AS txn_time,
           source_file, source_line, merchant_id
    FROM diffs WHERE category = 'CROSS_DAY_PENDING' ORDER BY diff_id
) TO '{out}/carryover.parquet' (FORMAT PARQUET);
"""

# What the statistics hold for each category and grain, as reckon's stats/ files do.
STATS = """count(*) AS rows,
           count(*) FILTER (in_c AND NOT c_carried) AS channel_records,
           count(*) FILTER (in_p AND NOT p_carried) AS platform_records,
           count(*) FILTER (in_c AND c_carried) + count(*) FILTER (in_p AND p_carried) AS carried_records,
           coalesce(sum(c_amount), 0) AS channel_amount, coalesce(sum(p_amount), 0) AS platform_amount,
           count(*) FILTER (refund_explained) AS refund_explained"""

EMPTY_CARRY = r"""
COPY (SELECT * FROM (VALUES (
    'CHANNEL', DATE '2000-01-01', DATE '2000-01-01', CAST(NULL AS VARCHAR), CAST(NULL AS VARCHAR),
    CAST(NULL AS VARCHAR), CAST(NULL AS VARCHAR), CAST(NULL AS VARCHAR),
    CAST(NULL AS DECIMAL(18, 2)), CAST(NULL AS DECIMAL(18, 2)), CAST(NULL AS VARCHAR),
    CAST(NULL AS TIMESTAMPTZ), CAST(NULL AS VARCHAR), CAST(NULL AS BIGINT), CAST(NULL AS VARCHAR)))
    AS t(side, carried_from, grace_until, txn_type, channel_txn_id, merchant_order_id, refund_id,
         platform_order_id, amount, fee, status, txn_time, source_file, source_line, merchant_id)
    WHERE FALSE) TO '{path}' (FORMAT PARQUET)
"""


def key(match_on):
    if match_on == "channel_txn_id":
        return "txn_type || ':' || channel_txn_id"
    return "CASE WHEN txn_type = 'REFUND' THEN 'REFUND:' || refund_id ELSE 'PAY:' || merchant_order_id END"


def rounded_fee(rounding):
    """reckon's expected_fee (udfs/src/classify.rs) on raw_fee, a scale-8 HUGEINT."""
    # Toward zero first (on the size, then the sign back), then the remainder's size decides.
    q = "(sign(raw_fee) * (abs(raw_fee) // 1000000))"
    r = "(abs(raw_fee) % 1000000)"
    away = f"({q} + sign(raw_fee))"
    return {
        "down": q,
        "up": f"(CASE WHEN {r} > 0 THEN {away} ELSE {q} END)",
        "half_up": f"(CASE WHEN {r} * 2 >= 1000000 THEN {away} ELSE {q} END)",
        "half_even": f"(CASE WHEN {r} * 2 > 1000000 OR ({r} * 2 = 1000000 AND {q} % 2 <> 0) "
                     f"THEN {away} ELSE {q} END)",
    }[rounding]


def main():
    import duckdb  # the peer's own venv
    from datetime import date, datetime, timedelta
    from zoneinfo import ZoneInfo

    p = json.loads(sys.argv[1])
    rules = p["rules"]
    day = date.fromisoformat(p["bill_date"])
    # The midnight that ends the bill date in the channel's zone (reckon_in_cut_window).
    end = datetime.combine(day + timedelta(days=1), datetime.min.time(), ZoneInfo(rules["time_zone"]))
    con = duckdb.connect()
    con.execute(f"SET threads TO {int(p['threads'])}")
    con.execute("SET preserve_insertion_order = false")
    carry = p.get("carry")
    if not carry:
        carry = f"{p['out']}/empty_carry.parquet"
        con.execute(EMPTY_CARRY.format(path=carry))
    fee_rate = rules.get("fee_rate")
    sql = SQL.format(
        bill=repr(p["bill"]), platform=repr(p["platform"]), carry=repr(carry), out=p["out"],
        channel=p["channel"], bill_date=p["bill_date"], time_zone=rules["time_zone"],
        compare_received="TRUE" if rules.get("compare_amount") == "received" else "FALSE",
        channel_key=key(rules.get("match_key", "merchant_order_id")),
        platform_key=key(rules.get("match_key", "merchant_order_id")),
        grace_days=int(rules["grace_days"]), window_us=int(rules["cut_window_secs"]) * 1_000_000,
        day_end_us=int(end.timestamp()) * 1_000_000,
        fee_rate=f"CAST({fee_rate} AS DECIMAL(18, 6))" if fee_rate else "CAST(NULL AS DECIMAL(18, 6))",
        rounded_fee=rounded_fee(rules.get("fee_rounding", "half_up")),
        tolerance=tolerance(rules), stats=STATS,
    )
    started = time.monotonic()
    for statement in sql.split(";\n"):
        if statement.strip():
            t = time.monotonic()
            con.execute(statement)
            head = " ".join(l for l in statement.strip().splitlines() if not l.strip().startswith("--"))[:60]
            print(f"{time.monotonic() - t:7.2f} s  {head}", file=sys.stderr, flush=True)
    seconds = time.monotonic() - started
    rows = con.execute("""
        SELECT category, sum(rows), sum(channel_records), sum(platform_records), sum(carried_records),
               CAST(sum(channel_amount) * 100 AS HUGEINT), CAST(sum(platform_amount) * 100 AS HUGEINT),
               sum(refund_explained)
        FROM read_parquet(?) GROUP BY 1 ORDER BY 1""", [f"{p['out']}/by_hour.parquet"]).fetchall()
    by_category = {r[0]: {"rows": int(r[1]), "channel_records": int(r[2]), "platform_records": int(r[3]),
                          "carried_records": int(r[4]), "channel_amount": int(r[5]),
                          "platform_amount": int(r[6]), "refund_explained": int(r[7])} for r in rows}
    print(json.dumps({"seconds": seconds, "by_category": by_category}))


def tolerance(rules):
    """The accepted difference: the absolute one, or the relative one of the platform's amount
    (rounded to the cent) when that is larger."""
    absolute = f"CAST({rules.get('tolerance') or '0'} AS DECIMAL(18, 2))"
    rate = rules.get("tolerance_rate")
    if not rate:
        return absolute
    return (f"greatest({absolute}, coalesce(CAST(abs(p_amount) * CAST({rate} AS DECIMAL(18, 6)) "
            f"AS DECIMAL(18, 2)), 0))")


if __name__ == "__main__":
    main()
