-- reckon's reconciliation of one channel and one bill date.
--
-- Tables (registered by the job):
--   bill      the channel's normalized rows of the day           (normalized/)
--   platform  the platform's records of the day                  (platform/)
--   carry_in  one-sided records carried over from the day before (carryover/ of D-1)
-- Parameters (bound by the job, never spliced into this text):
--   $channel          VARCHAR        the channel's name
--   $bill_date        DATE           the bill date, a day in the channel's time zone
--   $time_zone        VARCHAR        the channel's IANA time zone
--   $cut_window_secs  BIGINT         the daily-cut window around midnight, in seconds
--   $grace_days       BIGINT         days a one-sided record may wait for its other side
--   $tolerance        DECIMAL(18,2)  the accepted amount difference
--   $tolerance_rate   DECIMAL(18,6)  the accepted difference as a fraction of the platform's
--                                    amount (rounded to the cent); NULL: none. The larger applies.
--   $fee_rate         DECIMAL(18,6)  the contracted fee rate; NULL skips the fee check
--   $match_on         VARCHAR        'merchant_order_id' or 'channel_txn_id'
--   $fee_rounding     VARCHAR        how the channel rounds its fee: 'half_up', 'half_even',
--                                    'down' or 'up'
--   $compare_amount   VARCHAR        which bill amount is compared: 'order' (amount) or
--                                    'received' (what the merchant received)
-- Output: one row per reconciled record or pair of records; sql/README.md describes each
-- column. The job writes every row that is not MATCHED to diffs.parquet, the
-- CROSS_DAY_PENDING rows to the carry-over, and counts every row in summary.json (rows whose
-- refund_explained is true also as `refund_explained` of their category).
WITH
-- The amount each bill row is compared on: the order amount, or what the merchant received
-- (the channel's compare_amount; also the base of the fee check). Refunds compare by size, so
-- a side that writes them negative matches one that writes them positive.
bill_amounts AS (
    SELECT *,
           CASE WHEN CAST($compare_amount AS VARCHAR) = 'received' THEN received ELSE amount END
               AS compared_amount
    FROM bill
),

channel_source AS (
    -- A carried record keeps the amount compared on the day it was first seen.
    SELECT txn_type, channel_txn_id, merchant_order_id, refund_id,
           CASE WHEN txn_type = 'REFUND' THEN abs(compared_amount) ELSE compared_amount END
               AS amount,
           fee, status, txn_time, source_file, source_line, merchant_id,
           FALSE AS carried, CAST(NULL AS DATE) AS carried_from, CAST(NULL AS DATE) AS grace_until
    FROM bill_amounts
    UNION ALL
    SELECT txn_type, channel_txn_id, merchant_order_id, refund_id, amount, fee, status,
           txn_time, source_file, source_line, merchant_id,
           TRUE AS carried, carried_from, grace_until
    FROM carry_in
    WHERE side = 'CHANNEL'
),

channel_keyed AS (
    SELECT *,
           -- A NULL part gives a NULL key: such a record matches nothing (never '' = '').
           CASE
               WHEN CAST($match_on AS VARCHAR) = 'channel_txn_id' THEN txn_type || ':' || channel_txn_id
               WHEN txn_type = 'REFUND' THEN 'REFUND:' || refund_id
               ELSE 'PAY:' || merchant_order_id
           END AS match_key
    FROM channel_source
),

channel_ordered AS (
    -- Which occurrence of a key comes first: a carried record, then the bill's line order.
    SELECT *, CASE WHEN carried THEN 0 ELSE 1000000000000 + source_line END AS ordinal
    FROM channel_keyed
),

channel_repeated AS (
    -- The few keys that occur more than once, with their first occurrence.
    SELECT match_key AS repeated_key, min(ordinal) AS first_ordinal
    FROM channel_ordered
    WHERE match_key IS NOT NULL
    GROUP BY match_key
    HAVING count(*) > 1
),

channel_side AS (
    SELECT o.*,
           TRUE AS present,
           -- The first occurrence of a key is reconciled; later ones are duplicates.
           r.repeated_key IS NOT NULL AND o.ordinal <> r.first_ordinal AS duplicate
    FROM channel_ordered o
    LEFT JOIN channel_repeated r ON o.match_key = r.repeated_key
),

platform_source AS (
    SELECT txn_type, platform_order_id, merchant_order_id, refund_id, channel_txn_id,
           CASE WHEN txn_type = 'REFUND' THEN abs(amount) ELSE amount END AS amount,
           status, txn_time, refunded_amount, snapshot_row, merchant_id,
           FALSE AS carried, CAST(NULL AS DATE) AS carried_from, CAST(NULL AS DATE) AS grace_until
    FROM platform
    UNION ALL
    SELECT txn_type, platform_order_id, merchant_order_id, refund_id, channel_txn_id, amount,
           status, txn_time, CAST(NULL AS DECIMAL(18, 2)) AS refunded_amount,
           CAST(0 AS BIGINT) AS snapshot_row, merchant_id,
           TRUE AS carried, carried_from, grace_until
    FROM carry_in
    WHERE side = 'PLATFORM'
),

platform_keyed AS (
    SELECT *,
           CASE
               WHEN CAST($match_on AS VARCHAR) = 'channel_txn_id' THEN txn_type || ':' || channel_txn_id
               WHEN txn_type = 'REFUND' THEN 'REFUND:' || refund_id
               ELSE 'PAY:' || merchant_order_id
           END AS match_key
    FROM platform_source
),

platform_ordered AS (
    -- A carried record first, then the snapshot's order (it is sorted on every column).
    SELECT *, CASE WHEN carried THEN 0 ELSE 1000000000000 + snapshot_row END AS ordinal
    FROM platform_keyed
),

platform_repeated AS (
    SELECT match_key AS repeated_key, min(ordinal) AS first_ordinal
    FROM platform_ordered
    WHERE match_key IS NOT NULL
    GROUP BY match_key
    HAVING count(*) > 1
),

platform_side AS (
    SELECT o.*,
           TRUE AS present,
           r.repeated_key IS NOT NULL AND o.ordinal <> r.first_ordinal AS duplicate
    FROM platform_ordered o
    LEFT JOIN platform_repeated r ON o.match_key = r.repeated_key
),

joined AS (
    SELECT
        coalesce(c.present, FALSE) AS in_channel,
        coalesce(p.present, FALSE) AS in_platform,
        c.match_key AS c_match_key, c.ordinal AS c_ordinal, c.duplicate AS c_dup, c.txn_type AS c_txn_type,
        c.channel_txn_id AS c_channel_txn_id, c.merchant_order_id AS c_merchant_order_id,
        c.refund_id AS c_refund_id, c.amount AS c_amount, c.fee AS c_fee, c.status AS c_status,
        c.txn_time AS c_txn_time, c.source_file AS c_source_file, c.source_line AS c_source_line,
        c.carried AS c_carried, c.carried_from AS c_carried_from, c.grace_until AS c_grace_until,
        c.merchant_id AS c_merchant_id, p.merchant_id AS p_merchant_id,
        p.match_key AS p_match_key, p.ordinal AS p_ordinal, p.duplicate AS p_dup, p.txn_type AS p_txn_type,
        p.platform_order_id AS p_platform_order_id, p.merchant_order_id AS p_merchant_order_id,
        p.refund_id AS p_refund_id, p.channel_txn_id AS p_channel_txn_id, p.amount AS p_amount,
        p.status AS p_status, p.txn_time AS p_txn_time, p.refunded_amount AS p_refunded_amount,
        p.carried AS p_carried, p.carried_from AS p_carried_from, p.grace_until AS p_grace_until
    -- Only first occurrences with a key pair up: a duplicate fails the join condition and a
    -- keyless record (NULL key) equals nothing, so the full outer join keeps each of them as a
    -- one-sided row. Joining on match_key itself lets the engine reuse the partitioning of the
    -- duplicate check instead of shuffling both sides again.
    FROM channel_side c
    FULL OUTER JOIN platform_side p
      ON c.match_key = p.match_key AND NOT c.duplicate AND NOT p.duplicate
),

facts AS (
    SELECT *,
           in_channel AND c_dup AS c_duplicate,
           in_platform AND p_dup AS p_duplicate,
           coalesce(c_carried, FALSE) OR coalesce(p_carried, FALSE) AS carried,
           -- May a one-sided record wait for the next day? A fresh one inside the cut window
           -- of midnight (when grace is allowed at all); a carried one until its grace ends.
           CASE
               WHEN in_channel AND in_platform THEN FALSE
               WHEN in_channel THEN c_match_key IS NOT NULL AND CASE
                   WHEN c_carried THEN CAST($bill_date AS DATE) < c_grace_until
                   ELSE CAST($grace_days AS BIGINT) > 0 AND reckon_in_cut_window(
                       c_txn_time, CAST($bill_date AS DATE), CAST($time_zone AS VARCHAR),
                       CAST($cut_window_secs AS BIGINT))
               END
               ELSE p_match_key IS NOT NULL AND CASE
                   WHEN p_carried THEN CAST($bill_date AS DATE) < p_grace_until
                   ELSE CAST($grace_days AS BIGINT) > 0 AND reckon_in_cut_window(
                       p_txn_time, CAST($bill_date AS DATE), CAST($time_zone AS VARCHAR),
                       CAST($cut_window_secs AS BIGINT))
               END
           END AS pending_ok,
           -- The fee check applies to payments; refund fees follow each channel's own policy.
           CASE WHEN c_txn_type = 'PAY' THEN c_fee END AS c_checked_fee,
           -- The refund check: the platform marks a paid order REFUNDED while the channel's
           -- payment row says SUCCESS; the platform's own refund table explains it when the
           -- order's refunds add up to the amount paid (the refunds are reconciled as records
           -- of their own).
           coalesce(in_channel AND in_platform AND c_txn_type = 'PAY' AND c_status = 'SUCCESS'
                    AND p_status = 'REFUNDED' AND p_refunded_amount = p_amount, FALSE)
               AS refund_explained
    FROM joined
),

classified AS (
    SELECT *,
           reckon_classify(
               in_channel, in_platform, c_duplicate, p_duplicate,
               c_amount, p_amount, c_status,
               CASE WHEN refund_explained THEN c_status ELSE p_status END,
               c_checked_fee, CAST($fee_rate AS DECIMAL(18, 6)),
               -- The accepted difference: the absolute one, or the relative one of the
               -- platform's amount when that is larger.
               CAST(greatest(
                   CAST($tolerance AS DECIMAL(18, 2)),
                   coalesce(CAST(abs(p_amount) * CAST($tolerance_rate AS DECIMAL(18, 6))
                                 AS DECIMAL(18, 2)), CAST(0 AS DECIMAL(18, 2)))
               ) AS DECIMAL(18, 2)),
               pending_ok, carried, CAST($fee_rounding AS VARCHAR)
           ) AS category
    FROM facts
)

SELECT
    CASE WHEN category <> 'MATCHED' THEN reckon_diff_id(
        CAST($channel AS VARCHAR), CAST(CAST($bill_date AS DATE) AS VARCHAR),
        coalesce(c_match_key, p_match_key),
        CAST(c_ordinal AS VARCHAR), CAST(p_ordinal AS VARCHAR),
        c_source_file, CAST(c_source_line AS VARCHAR), p_platform_order_id, p_refund_id)
    END                                                AS diff_id,
    CAST($channel AS VARCHAR)                          AS channel,
    CAST($bill_date AS DATE)                           AS bill_date,
    category,
    CASE WHEN category <> 'MATCHED' THEN reckon_reason(
        category, coalesce(c_match_key, p_match_key), c_amount, p_amount, c_status, p_status,
        c_checked_fee, CAST($fee_rate AS DECIMAL(18, 6)), CAST($fee_rounding AS VARCHAR))
    END                                                AS reason,
    coalesce(c_match_key, p_match_key)                 AS match_key,
    coalesce(c_txn_type, p_txn_type)                   AS txn_type,
    p_platform_order_id                                AS platform_order_id,
    coalesce(c_channel_txn_id, p_channel_txn_id)       AS channel_txn_id,
    coalesce(c_merchant_order_id, p_merchant_order_id) AS merchant_order_id,
    coalesce(c_refund_id, p_refund_id)                 AS refund_id,
    -- The platform's merchant when the platform has the record, else the one the bill names.
    coalesce(p_merchant_id, c_merchant_id)             AS merchant_id,
    p_amount                                           AS platform_amount,
    c_amount                                           AS channel_amount,
    CAST(c_amount - p_amount AS DECIMAL(18, 2))        AS amount_delta,
    c_fee                                              AS channel_fee,
    p_status                                           AS platform_status,
    c_status                                           AS channel_status,
    p_txn_time                                         AS platform_time,
    c_txn_time                                         AS channel_time,
    c_source_file                                      AS source_file,
    c_source_line                                      AS source_line,
    in_channel,
    in_platform,
    coalesce(c_carried, FALSE)                         AS channel_carried,
    coalesce(p_carried, FALSE)                         AS platform_carried,
    coalesce(c_carried_from, p_carried_from)           AS carried_from,
    coalesce(c_grace_until, p_grace_until)             AS grace_until,
    refund_explained
FROM classified
