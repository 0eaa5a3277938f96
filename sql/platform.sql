-- The platform's records of one channel and one bill date, in the canonical platform schema
-- (sql/README.md). This is the file to edit when your warehouse names things differently:
-- change the `*_renamed` CTEs, keep the output columns.
--
-- Output: the canonical platform schema (sql/README.md); refunded_amount is, for an order,
-- the sum of its successful refunds in the partitions read (NULL when none, and on refunds).
-- Tables (registered by the job from the partitions dt = D-1, D and D+1, by explicit path):
--   orders   order_no, pay_channel, channel_trade_no, amount, status, paid_at (UTC), merchant_id
--   refunds  refund_no, order_no, pay_channel, channel_refund_no, amount, status, refunded_at (UTC),
--            merchant_id
-- Parameters (bound by the job):
--   $channel    VARCHAR    the channel's name
--   $day_start  TIMESTAMP  the bill date's first instant in the channel's time zone, as UTC
--   $day_end    TIMESTAMP  the next day's first instant, as UTC
WITH
-- What the platform's refund table says each order got back (the refund check of
-- reconcile.sql: a REFUNDED order whose refunds add up to its amount is explained).
refunded AS (
    SELECT order_no, CAST(sum(amount) AS DECIMAL(18, 2)) AS refunded_amount
    FROM refunds
    WHERE pay_channel = $channel AND status = 'SUCCESS'
    GROUP BY order_no
),

orders_renamed AS (
    SELECT
        'PAY'                          AS txn_type,
        order_no                       AS platform_order_id,
        order_no                       AS merchant_order_id,
        CAST(NULL AS VARCHAR)          AS refund_id,
        channel_trade_no               AS channel_txn_id,
        CAST(amount AS DECIMAL(18, 2)) AS amount,
        status                         AS status,
        paid_at                        AS txn_time,
        r.refunded_amount              AS refunded_amount,
        merchant_id                    AS merchant_id
    FROM orders
    LEFT JOIN refunded r USING (order_no)
    WHERE pay_channel = $channel
      -- Orders the platform believes were paid; unpaid ones have nothing to reconcile.
      AND status IN ('SUCCESS', 'REFUNDED')
),

refunds_renamed AS (
    SELECT
        'REFUND'                       AS txn_type,
        order_no                       AS platform_order_id,
        order_no                       AS merchant_order_id,
        refund_no                      AS refund_id,
        channel_refund_no              AS channel_txn_id,
        CAST(amount AS DECIMAL(18, 2)) AS amount,
        status                         AS status,
        refunded_at                    AS txn_time,
        CAST(NULL AS DECIMAL(18, 2))   AS refunded_amount,
        merchant_id                    AS merchant_id
    FROM refunds
    WHERE pay_channel = $channel
),

unioned AS (
    SELECT * FROM orders_renamed
    UNION ALL
    SELECT * FROM refunds_renamed
)

SELECT
    CAST($channel AS VARCHAR) AS channel,
    txn_type,
    platform_order_id,
    merchant_order_id,
    refund_id,
    channel_txn_id,
    amount,
    status,
    txn_time,
    refunded_amount,
    merchant_id
FROM unioned
-- The bill date is a day in the channel's zone; the warehouse may have put the record in
-- any of the three partitions read, so the time decides.
WHERE txn_time >= $day_start
  AND txn_time < $day_end
