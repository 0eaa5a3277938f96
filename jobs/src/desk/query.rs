//! The differences the desk lists: the committed `diffs.parquet` of every channel-day in a
//! range (found through each day's pointer, so a reader never sees a half-committed day),
//! queried through DataFusion with the filters of the list page, counted and summed, sorted
//! and cut into pages. Nothing is loaded whole: the engine reads only the columns and row
//! groups a query needs. Filters are expressions with literal values, never SQL text.

use chrono::NaiveDate;
use datafusion::arrow::array::{
    Array, AsArray, Date32Array, Decimal128Array, RecordBatch, StringArray,
};
use datafusion::common::ScalarValue;
use datafusion::functions_aggregate::expr_fn::{count, sum};
use datafusion::logical_expr::{col, lit, Expr};
use datafusion::prelude::SessionContext;
use rust_decimal::Decimal;
use serde::Serialize;

use crate::error::{Error, Result};
use crate::schema::epoch;
use crate::stages::ageing::column;

/// What errors call the rows read.
const WHAT: &str = "the committed differences";

/// reckon's amounts: DECIMAL(18, 2).
const MONEY_SCALE: u32 = 2;
use crate::store::Store;

/// The list's filters, sort and page (what the page keeps in its URL).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Filter {
    /// The channels (none: every channel given to [`differences`]).
    pub channels: Vec<String>,
    /// Bill dates, both ends included.
    pub from: NaiveDate,
    pub to: NaiveDate,
    /// Categories (none: all).
    pub categories: Vec<String>,
    /// Ageing states: `new`, `persisting`, `resolved` (none: all).
    pub states: Vec<String>,
    /// The difference's size (the larger side, by size) at least / at most.
    pub min_amount: Option<Decimal>,
    pub max_amount: Option<Decimal>,
    /// First seen on or before this date (how old it is).
    pub first_seen_by: Option<NaiveDate>,
    /// An id or key, exactly: `diff_id`, `match_key`, the channel's, the merchant's or the
    /// platform's order id, or the refund id.
    pub search: Option<String>,
    /// Only (or, with `include` false, all but) the differences of these ageing keys: what
    /// the desk's assignee and decided filters select.
    pub keys: Option<Keys>,
    pub sort: Sort,
    pub descending: bool,
    /// From 0.
    pub page: usize,
    pub page_size: usize,
}

/// Differences picked by ageing key (see [`Filter::keys`]).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Keys {
    pub keys: Vec<String>,
    pub include: bool,
}

/// What the list is sorted by (then by `diff_id`, so a page is always the same rows).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum Sort {
    BillDate,
    Category,
    Amount,
    Delta,
    FirstSeen,
    DiffId,
}

impl Sort {
    fn expr(self) -> Expr {
        match self {
            Sort::BillDate => col("bill_date"),
            Sort::Category => col("category"),
            Sort::Amount => size(),
            Sort::Delta => col("amount_delta"),
            Sort::FirstSeen => col("first_seen"),
            Sort::DiffId => col("diff_id"),
        }
    }
}

/// One row of the list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Row {
    pub diff_id: String,
    /// What the desk follows it by (from its day's ledger).
    pub ageing_key: Option<String>,
    pub channel: String,
    pub bill_date: NaiveDate,
    pub category: String,
    pub state: Option<String>,
    pub first_seen: Option<NaiveDate>,
    pub reason: Option<String>,
    pub match_key: Option<String>,
    pub merchant_order_id: Option<String>,
    pub channel_txn_id: Option<String>,
    pub platform_order_id: Option<String>,
    pub channel_amount: Option<Decimal>,
    pub platform_amount: Option<Decimal>,
    pub amount_delta: Option<Decimal>,
}

/// A page of the list, and what the whole filter matches.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Page {
    pub rows: Vec<Row>,
    /// Rows the filter matches, over every page.
    pub total: u64,
    /// Their channel and platform amounts, and the channel-minus-platform deltas, summed.
    pub channel_sum: Decimal,
    pub platform_sum: Decimal,
    pub delta_sum: Decimal,
    /// The channel-days of the range that are not committed (not reconciled, or failed).
    pub not_committed: Vec<(String, NaiveDate)>,
}

/// `greatest(abs(channel_amount), abs(platform_amount))`, a missing side as 0.
fn size() -> Expr {
    use datafusion::functions::expr_fn::{coalesce, greatest};
    use datafusion::functions::math::expr_fn::abs;
    let zero = || lit(ScalarValue::Decimal128(Some(0), 18, MONEY_SCALE as i8));
    greatest(vec![
        coalesce(vec![abs(col("channel_amount")), zero()]),
        coalesce(vec![abs(col("platform_amount")), zero()]),
    ])
}

/// `d` as a money literal (rounded to the cent, as every amount reckon keeps).
fn money(d: Decimal) -> Expr {
    let mut d = d.round_dp(MONEY_SCALE);
    d.rescale(MONEY_SCALE);
    lit(ScalarValue::Decimal128(
        Some(d.mantissa()),
        18,
        MONEY_SCALE as i8,
    ))
}

fn texts(values: &[String]) -> Vec<Expr> {
    values.iter().map(|v| lit(v.as_str())).collect()
}

/// The filter as one predicate (None: everything).
fn predicate(f: &Filter) -> Option<Expr> {
    let mut all: Vec<Expr> = Vec::new();
    let days = |d: NaiveDate| lit(ScalarValue::Date32(Some(crate::schema::date32(d))));
    all.push(col("bill_date").gt_eq(days(f.from)));
    all.push(col("bill_date").lt_eq(days(f.to)));
    if !f.categories.is_empty() {
        all.push(col("category").in_list(texts(&f.categories), false));
    }
    if !f.states.is_empty() {
        all.push(col("state").in_list(texts(&f.states), false));
    }
    if let Some(m) = f.min_amount {
        all.push(size().gt_eq(money(m)));
    }
    if let Some(m) = f.max_amount {
        all.push(size().lt_eq(money(m)));
    }
    if let Some(d) = f.first_seen_by {
        all.push(col("first_seen").lt_eq(days(d)));
    }
    if let Some(s) = f.search.as_deref().map(str::trim).filter(|s| !s.is_empty()) {
        let any = [
            "diff_id",
            "match_key",
            "channel_txn_id",
            "merchant_order_id",
            "platform_order_id",
            "refund_id",
        ]
        .into_iter()
        .map(|c| col(c).eq(lit(s)))
        .reduce(Expr::or);
        all.extend(any);
    }
    all.into_iter().reduce(Expr::and)
}

/// Column `name` of `b` as `T` (`what` names the type in the error).
pub(crate) fn typed<T: Clone + 'static>(b: &RecordBatch, name: &str) -> Result<T> {
    let c = column(b, name, WHAT)?;
    c.as_any()
        .downcast_ref::<T>()
        .cloned()
        .ok_or_else(|| Error::Other(format!("{WHAT}: column {name:?} is {}", c.data_type())))
}

pub(crate) fn decimal(a: &Decimal128Array, i: usize) -> Option<Decimal> {
    a.is_valid(i)
        .then(|| Decimal::from_i128_with_scale(a.value(i), a.scale() as u32))
}

pub(crate) fn date(a: &Date32Array, i: usize) -> Option<NaiveDate> {
    a.is_valid(i)
        .then(|| epoch() + chrono::Duration::days(i64::from(a.value(i))))
}

pub(crate) fn text(a: &StringArray, i: usize) -> Option<String> {
    a.is_valid(i).then(|| a.value(i).to_string())
}

/// Column `name` of `b` as plain strings (an engine may hand out views).
pub(crate) fn strings(b: &RecordBatch, name: &str) -> Result<StringArray> {
    let c = column(b, name, WHAT)?;
    let c = datafusion::arrow::compute::cast(c, &datafusion::arrow::datatypes::DataType::Utf8)?;
    Ok(c.as_string::<i32>().clone())
}

/// The columns a `Row` shows: its texts, dates and amounts.
const ROW_TEXTS: [&str; 9] = [
    "diff_id",
    "channel",
    "category",
    "state",
    "reason",
    "match_key",
    "merchant_order_id",
    "channel_txn_id",
    "platform_order_id",
];
const ROW_DATES: [&str; 2] = ["bill_date", "first_seen"];
const ROW_AMOUNTS: [&str; 3] = ["channel_amount", "platform_amount", "amount_delta"];

/// Every column a `Row` shows.
fn row_columns() -> Vec<&'static str> {
    ROW_TEXTS
        .iter()
        .chain(&ROW_DATES)
        .chain(&ROW_AMOUNTS)
        .copied()
        .collect()
}

fn rows(batches: &[RecordBatch]) -> Result<Vec<Row>> {
    let mut out = Vec::new();
    for b in batches {
        let [diff_id, channel, category, state, reason, match_key, merchant_order_id, channel_txn_id, platform_order_id] =
            ROW_TEXTS.map(|name| strings(b, name));
        let (diff_id, channel, category) = (diff_id?, channel?, category?);
        let (state, reason, match_key) = (state?, reason?, match_key?);
        let (merchant_order_id, channel_txn_id, platform_order_id) =
            (merchant_order_id?, channel_txn_id?, platform_order_id?);
        let [bill_date, first_seen] = ROW_DATES.map(|name| typed::<Date32Array>(b, name));
        let (bill_date, first_seen) = (bill_date?, first_seen?);
        let [channel_amount, platform_amount, amount_delta] =
            ROW_AMOUNTS.map(|name| typed::<Decimal128Array>(b, name));
        let (channel_amount, platform_amount, amount_delta) =
            (channel_amount?, platform_amount?, amount_delta?);
        for i in 0..b.num_rows() {
            let need = |a: &StringArray, what: &str| {
                text(a, i).ok_or_else(|| Error::Other(format!("a difference without {what}")))
            };
            out.push(Row {
                diff_id: need(&diff_id, "diff_id")?,
                ageing_key: None,
                channel: need(&channel, "channel")?,
                bill_date: date(&bill_date, i)
                    .ok_or_else(|| Error::Other("a difference without bill_date".into()))?,
                category: need(&category, "category")?,
                state: text(&state, i),
                first_seen: date(&first_seen, i),
                reason: text(&reason, i),
                match_key: text(&match_key, i),
                merchant_order_id: text(&merchant_order_id, i),
                channel_txn_id: text(&channel_txn_id, i),
                platform_order_id: text(&platform_order_id, i),
                channel_amount: decimal(&channel_amount, i),
                platform_amount: decimal(&platform_amount, i),
                amount_delta: decimal(&amount_delta, i),
            });
        }
    }
    Ok(out)
}

/// The committed files of `channels` between `from` and `to`: the differences and the
/// ledgers; and the channel-days that have none.
async fn files(
    store: &Store,
    channels: &[String],
    from: NaiveDate,
    to: NaiveDate,
) -> Result<(Vec<String>, Vec<String>, Vec<(String, NaiveDate)>)> {
    let (mut diffs, mut ledgers, mut missing) = (Vec::new(), Vec::new(), Vec::new());
    for ch in channels {
        let mut d = from;
        while d <= to {
            match store.committed(ch, d).await? {
                Some(c) => {
                    for f in c.area("results") {
                        if f.path.ends_with("/diffs.parquet") {
                            diffs.push(store.url(&f.path));
                        } else if f.path.ends_with("/ledger.parquet") {
                            ledgers.push(store.url(&f.path));
                        }
                    }
                }
                None => missing.push((ch.clone(), d)),
            }
            d += chrono::Duration::days(1);
        }
    }
    Ok((diffs, ledgers, missing))
}

/// `ctx` (its object stores and memory) with its filters evaluated inside the Parquet scan:
/// for a few rows picked by id out of a day's, whose other columns are then decoded for them
/// alone. (Not for the list's own filters: most keep many rows, and decoding their columns in
/// the scan and again for the output costs more than it saves.)
fn pushing_down(ctx: &SessionContext) -> SessionContext {
    let mut config = ctx.copied_config();
    config.options_mut().execution.parquet.pushdown_filters = true;
    SessionContext::new_with_config_rt(config, ctx.runtime_env())
}

/// The ageing keys of the differences `ids`, from the ledgers (each day's ledger names the
/// key of every difference of that day, by its `diff_id`).
async fn ageing_keys(
    ctx: &SessionContext,
    ledgers: &[String],
    ids: &[String],
) -> Result<std::collections::HashMap<String, String>> {
    let mut out = std::collections::HashMap::new();
    if ledgers.is_empty() || ids.is_empty() {
        return Ok(out);
    }
    let table = crate::engine::listing(ctx, "the committed ledgers", ledgers).await?;
    let batches = ctx
        .read_table(table)?
        .filter(col("diff_id").in_list(texts(ids), false))?
        .select_columns(&["diff_id", "ageing_key"])?
        .collect()
        .await?;
    for b in &batches {
        let (id, key) = (strings(b, "diff_id")?, strings(b, "ageing_key")?);
        for i in 0..b.num_rows() {
            if let (Some(id), Some(key)) = (text(&id, i), text(&key, i)) {
                out.insert(id, key);
            }
        }
    }
    Ok(out)
}

/// The `diff_id`s the ledgers give the ageing keys `keys`.
async fn diff_ids(
    ctx: &SessionContext,
    ledgers: &[String],
    keys: &[String],
) -> Result<Vec<String>> {
    if ledgers.is_empty() || keys.is_empty() {
        return Ok(Vec::new());
    }
    let table = crate::engine::listing(ctx, "the committed ledgers", ledgers).await?;
    let batches = ctx
        .read_table(table)?
        .filter(col("ageing_key").in_list(texts(keys), false))?
        .select_columns(&["diff_id"])?
        .collect()
        .await?;
    let mut out = Vec::new();
    for b in &batches {
        let id = strings(b, "diff_id")?;
        out.extend((0..b.num_rows()).filter_map(|i| text(&id, i)));
    }
    Ok(out)
}

/// The page of differences `f` asks for, among the committed days of `channels` (`ctx`: a
/// session that can read the storage root).
pub async fn differences(
    store: &Store,
    ctx: &SessionContext,
    channels: &[String],
    f: &Filter,
) -> Result<Page> {
    let wanted: Vec<String> = if f.channels.is_empty() {
        channels.to_vec()
    } else {
        (f.channels.iter())
            .filter(|c| channels.contains(c))
            .cloned()
            .collect()
    };
    let (urls, ledgers, not_committed) = files(store, &wanted, f.from, f.to).await?;
    let mut page = Page {
        rows: Vec::new(),
        total: 0,
        channel_sum: Decimal::ZERO,
        platform_sum: Decimal::ZERO,
        delta_sum: Decimal::ZERO,
        not_committed,
    };
    if urls.is_empty() {
        return Ok(page);
    }
    store.register(ctx);
    // Read as a table of this query's own, not one registered by name: requests may run at
    // once on one session.
    let table = crate::engine::listing(ctx, "the committed differences", &urls).await?;
    let mut df = ctx.read_table(table)?;
    if let Some(p) = predicate(f) {
        df = df.filter(p)?;
    }
    if let Some(k) = &f.keys {
        let ids = diff_ids(ctx, &ledgers, &k.keys).await?;
        if k.include && ids.is_empty() {
            return Ok(page);
        }
        if !ids.is_empty() {
            df = df.filter(col("diff_id").in_list(texts(&ids), !k.include))?;
        }
    }
    // The count and sums, and the page's ids (sorting only the sort key and the id: a day's
    // differences are never decoded whole for one page), side by side on the two scans.
    let size = f.page_size.max(1);
    let totals = df.clone().aggregate(
        vec![],
        vec![
            count(lit(1)).alias("n"),
            sum(col("channel_amount")).alias("c"),
            sum(col("platform_amount")).alias("p"),
            sum(col("amount_delta")).alias("d"),
        ],
    )?;
    let first = df
        .clone()
        .select(vec![f.sort.expr().alias("sort_key"), col("diff_id")])?
        .sort(vec![
            col("sort_key").sort(!f.descending, true),
            col("diff_id").sort(!f.descending, true),
        ])?
        .limit(f.page.saturating_mul(size), Some(size))?;
    let (totals, first) = tokio::try_join!(totals.collect(), first.collect())?;
    if let Some(b) = totals.first().filter(|b| b.num_rows() == 1) {
        let n = b
            .column(0)
            .as_primitive_opt::<datafusion::arrow::datatypes::Int64Type>();
        page.total = n.map_or(0, |n| n.value(0).max(0) as u64);
        let sum = |name: &str| -> Result<Decimal> {
            Ok(decimal(&typed::<Decimal128Array>(b, name)?, 0).unwrap_or_default())
        };
        page.channel_sum = sum("c")?;
        page.platform_sum = sum("p")?;
        page.delta_sum = sum("d")?;
    }
    let mut ids = Vec::new();
    for b in &first {
        let id = strings(b, "diff_id")?;
        ids.extend((0..b.num_rows()).filter_map(|i| text(&id, i)));
    }
    // Then the page's rows: the columns a row shows, which the Parquet reader decodes for
    // them alone (the session filters inside the scan), put in the order the ids came in
    // (sorting them again would evaluate the sort key in the scan, for every row).
    if ids.is_empty() {
        return Ok(page);
    }
    let lookup = pushing_down(ctx);
    let table = crate::engine::listing(&lookup, "the committed differences", &urls).await?;
    let batches = lookup
        .read_table(table)?
        .filter(col("diff_id").in_list(texts(&ids), false))?
        .select_columns(&row_columns())?
        .collect()
        .await?;
    let rank: std::collections::HashMap<&str, usize> = ids
        .iter()
        .enumerate()
        .map(|(i, id)| (id.as_str(), i))
        .collect();
    page.rows = rows(&batches)?;
    page.rows
        .sort_by_key(|r| rank.get(r.diff_id.as_str()).copied().unwrap_or(usize::MAX));
    let ids: Vec<String> = page.rows.iter().map(|r| r.diff_id.clone()).collect();
    let keys = ageing_keys(&lookup, &ledgers, &ids).await?;
    for r in &mut page.rows {
        r.ageing_key = keys.get(&r.diff_id).cloned();
    }
    Ok(page)
}
