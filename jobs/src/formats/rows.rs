//! From a record's fields to a canonical row: the resolved plan of a template (which field
//! fills which column, mappings, signs, formats), row filters and the totals accumulators.
//! Shared by the delimited and the XML bodies; nothing here allocates per row unless the row
//! is bad.

use chrono_tz::Tz;

use super::template::{Aggregate, Condition, Kind, Sign, Template, CANONICAL};
use super::values::{parse_money, parse_money_fine, MoneyFormat, TimeParser, FINE_SCALE};
use crate::error::{Error, Result};

/// A record's fields by resolved index; an absent field reads as `""`.
pub trait Record {
    /// The field at `i`.
    fn field(&self, i: usize) -> &str;
}

/// Whether two short texts (a mapped value, a condition's word) are equal, compared in
/// place: a call to `memcmp` costs more than these few bytes.
#[inline(always)]
fn same(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x == y)
}

/// A record without fields, to read what constants give.
struct NoFields;

impl Record for NoFields {
    fn field(&self, _: usize) -> &str {
        ""
    }
}

/// Where a column's value comes from.
#[derive(Debug, Clone)]
enum Src {
    /// Fields, the first non-empty wins.
    Fields(Vec<usize>),
    /// One field (the common case, without the search).
    Field(usize),
    /// A constant.
    Const(String),
    /// Nothing: NULL.
    Null,
}

#[derive(Debug, Clone)]
struct ColumnPlan {
    name: &'static str,
    kind: Kind,
    pay: Src,
    refund: Src,
    /// The source column's name, for reasons.
    label: String,
    /// Value mappings; a template's maps are small, so a scan beats hashing.
    map: Vec<(String, String)>,
    sign: Sign,
    refund_sign: Sign,
    money: MoneyFormat,
    time: Option<TimeParser>,
}

/// A row filter on one field.
#[derive(Debug, Clone, PartialEq)]
pub struct Cond {
    field: usize,
    one_of: Vec<String>,
    nonzero: bool,
}

impl Cond {
    fn holds<R: Record + ?Sized>(&self, r: &R) -> bool {
        let v = r.field(self.field);
        if self.nonzero {
            return parse_money(v, MoneyFormat::default()).is_ok_and(|m| m != 0);
        }
        self.one_of.iter().any(|w| same(w, v))
    }
}

/// A totals aggregate accumulated over every body record (accepted, rejected or skipped).
#[derive(Debug, Clone)]
pub struct CheckAcc {
    /// The value's name in the template.
    pub value: String,
    /// The bill may lack the value (or the summed column): the check is then recorded as
    /// skipped.
    pub optional: bool,
    /// The summed column of an optional check, when the bill's header lacks it.
    pub absent_column: Option<String>,
    sum_field: Option<usize>,
    abs: bool,
    /// The index of its condition in `Plan::conds`.
    when: Option<usize>,
    money: MoneyFormat,
    /// Records counted.
    pub count: u64,
    /// The sum, exact: a mantissa of [`FINE_SCALE`] decimals.
    pub sum: i128,
    /// Records whose amount could not be read.
    pub unknown: u64,
}

impl CheckAcc {
    /// Whether this check sums a column.
    pub fn is_sum(&self) -> bool {
        self.sum_field.is_some()
    }

    /// A total as the bill writes it, in this check's money format (or plain decimal text),
    /// exactly: a mantissa of [`FINE_SCALE`] decimals. A total with more decimals is refused,
    /// never rounded.
    pub fn parse_total(&self, v: &str) -> std::result::Result<i128, String> {
        parse_money_fine(v, self.money).or_else(|e| {
            let d = v
                .parse::<rust_decimal::Decimal>()
                .map_err(|_| e.clone())?
                .normalize();
            if d.scale() > FINE_SCALE {
                return Err(e);
            }
            let mut d = d;
            d.rescale(FINE_SCALE);
            Ok(d.mantissa())
        })
    }

    /// The sum as decimal text: cents when it has no fraction of a cent, else every decimal.
    pub fn sum_text(&self) -> String {
        let mut d = rust_decimal::Decimal::from_i128_with_scale(self.sum, FINE_SCALE).normalize();
        if d.scale() < 2 {
            d.rescale(2);
        }
        d.to_string()
    }

    fn add<R: Record + ?Sized>(&mut self, r: &R, held: &[bool]) {
        if self
            .when
            .is_some_and(|c| !held.get(c).copied().unwrap_or(false))
        {
            return;
        }
        self.count += 1;
        if let Some(i) = self.sum_field {
            let v = r.field(i);
            if v.is_empty() {
                return;
            }
            match parse_money_fine(v, self.money) {
                Ok(m) => self.sum += if self.abs { m.abs() } else { m },
                Err(_) => self.unknown += 1,
            }
        }
    }
}

/// One canonical row, borrowing its text from the record and the plan.
#[derive(Debug)]
pub struct Row<'a> {
    /// `PAY` or `REFUND`.
    pub txn_type: &'a str,
    /// See the BILL schema.
    pub channel_txn_id: Option<&'a str>,
    /// See the BILL schema.
    pub merchant_order_id: Option<&'a str>,
    /// See the BILL schema.
    pub refund_id: Option<&'a str>,
    /// Scale-2 mantissa.
    pub amount: i128,
    /// Scale-2 mantissa.
    pub fee: Option<i128>,
    /// Scale-2 mantissa: what the merchant received, when the bill says.
    pub received: Option<i128>,
    /// The merchant (account or sub-merchant) the bill names.
    pub merchant_id: Option<&'a str>,
    /// See the BILL schema.
    pub status: &'a str,
    /// Microseconds since the epoch, UTC.
    pub txn_time: i64,
}

/// What a record became.
pub enum Outcome<'a> {
    /// A canonical row.
    Row(Row<'a>),
    /// Not a transaction to reconcile (a `skip` condition held).
    Skipped,
    /// Malformed: the reason.
    Rejected(String),
}

/// A template resolved against one bill's header (or XML paths).
#[derive(Debug, Clone)]
pub struct Plan {
    cols: Vec<ColumnPlan>,
    /// Every distinct condition of the skips and checks, evaluated once per record.
    conds: Vec<Cond>,
    /// Whether each of `conds` holds for the current record.
    held: Vec<bool>,
    /// Indices into `conds`.
    skip: Vec<usize>,
    /// The totals accumulators.
    pub checks: Vec<CheckAcc>,
}

/// Indices of the canonical columns in `Plan::cols` (the order of `CANONICAL`).
const TXN_TYPE: usize = 0;
const CHANNEL_TXN_ID: usize = 1;
const MERCHANT_ORDER_ID: usize = 2;
const REFUND_ID: usize = 3;
const AMOUNT: usize = 4;
const FEE: usize = 5;
const STATUS: usize = 6;
const TXN_TIME: usize = 7;
const RECEIVED: usize = 8;
const MERCHANT_ID: usize = 9;

impl Plan {
    /// Resolves `t`'s column names with `lookup` (a name → its field index, or `None` when the
    /// bill does not have it); `missing` makes the error for a required name that is absent.
    pub fn resolve(
        t: &Template,
        lookup: &mut dyn FnMut(&str) -> Option<usize>,
        missing: &dyn Fn(&str, &str) -> Error,
    ) -> Result<Plan> {
        let zone: Tz = t
            .columns
            .get("txn_time")
            .and_then(|c| c.time_zone.as_deref())
            .unwrap_or("UTC")
            .parse()
            .map_err(|_| {
                Error::Config(format!("{}: unknown time zone", t.at_column("txn_time")))
            })?;
        let amount_money = t
            .columns
            .get("amount")
            .map(money_format)
            .unwrap_or_default();
        let mut cols = Vec::new();
        for (name, _, kind) in CANONICAL {
            let Some(spec) = t.columns.get(*name) else {
                cols.push(ColumnPlan {
                    name,
                    kind: *kind,
                    pay: Src::Null,
                    refund: Src::Null,
                    label: (*name).to_string(),
                    map: Vec::new(),
                    sign: Sign::Keep,
                    refund_sign: Sign::Keep,
                    money: MoneyFormat::default(),
                    time: None,
                });
                continue;
            };
            let at = t.at_column(name);
            let mut src =
                |names: Option<&super::template::Names>, value: Option<&String>| -> Result<Src> {
                    if let Some(names) = names {
                        let list = names.list();
                        let found: Vec<usize> = list.iter().filter_map(|n| lookup(n)).collect();
                        if found.is_empty() {
                            if spec.optional {
                                return Ok(Src::Null);
                            }
                            return Err(missing(&list.join("\" or \""), &at));
                        }
                        return Ok(match found.as_slice() {
                            [one] => Src::Field(*one),
                            _ => Src::Fields(found),
                        });
                    }
                    Ok(value.map(|v| Src::Const(v.clone())).unwrap_or(Src::Null))
                };
            let pay = src(spec.source.as_ref(), spec.value.as_ref())?;
            let refund = if spec.refund_source.is_some() || spec.refund_value.is_some() {
                src(spec.refund_source.as_ref(), spec.refund_value.as_ref())?
            } else {
                pay.clone()
            };
            let label = spec
                .source
                .as_ref()
                .map(|n| n.list().join(" / "))
                .unwrap_or_else(|| (*name).to_string());
            let time = (*kind == Kind::Time).then(|| {
                let formats = spec.format.as_ref().map(|f| f.list()).unwrap_or_default();
                let z: Tz = spec
                    .time_zone
                    .as_deref()
                    .and_then(|z| z.parse().ok())
                    .unwrap_or(zone);
                TimeParser::new(&formats, z)
            });
            cols.push(ColumnPlan {
                name,
                kind: *kind,
                pay,
                refund,
                label,
                map: spec.map.clone().into_iter().collect(),
                sign: spec.sign,
                refund_sign: spec.refund_sign.unwrap_or(spec.sign),
                money: money_format(spec),
                time,
            });
        }
        let mut conds = Vec::new();
        let skip = t
            .skip
            .iter()
            .map(|c| cond(c, lookup, missing, t.at("[[skip]]"), &mut conds))
            .collect::<Result<Vec<_>>>()?;
        let mut checks = Vec::new();
        if let Some(totals) = &t.totals {
            for c in &totals.checks {
                let at = t.at(&format!("\"{}\"", c.value));
                let mut absent_column = None;
                let sum_field = match c.aggregate {
                    Aggregate::Sum => {
                        let col = c.column.as_deref().unwrap_or("");
                        match lookup(col) {
                            Some(i) => Some(i),
                            // An optional check over a column this bill's layout lacks.
                            None if c.optional => {
                                absent_column = Some(col.to_string());
                                None
                            }
                            None => return Err(missing(col, &at)),
                        }
                    }
                    Aggregate::Count => None,
                };
                let when = c
                    .when
                    .as_ref()
                    .map(|w| cond(w, lookup, missing, at.clone(), &mut conds))
                    .transpose()?;
                checks.push(CheckAcc {
                    value: c.value.clone(),
                    optional: c.optional,
                    absent_column,
                    sum_field,
                    abs: c.abs,
                    when,
                    money: amount_money,
                    count: 0,
                    sum: 0,
                    unknown: 0,
                });
            }
        }
        Ok(Plan {
            cols,
            held: vec![false; conds.len()],
            conds,
            skip,
            checks,
        })
    }

    /// What the text column `name` holds in every row when the template fixes it (a constant
    /// or no source for both payments and refunds): `Some(None)` for null. `None` when rows
    /// differ.
    pub fn fixed_text(&self, name: &str) -> Option<Option<&str>> {
        let c = self
            .cols
            .iter()
            .find(|c| c.name == name && c.kind == Kind::Text)?;
        let fixed = |s: &Src| matches!(s, Src::Const(_) | Src::Null);
        if !fixed(&c.pay) || !fixed(&c.refund) {
            return None;
        }
        let (pay, refund) = (text(c, &NoFields, false), text(c, &NoFields, true));
        // A payment has no refund id whatever the template says.
        if name == "refund_id" && refund.is_some() {
            return None;
        }
        (pay == refund).then_some(pay)
    }

    /// Turns one record into a row (or a skip, or a reason), and counts it into the totals.
    pub fn row<'a, R: Record + ?Sized>(&'a mut self, r: &'a R) -> Outcome<'a> {
        for (h, c) in self.held.iter_mut().zip(&self.conds) {
            *h = c.holds(r);
        }
        for c in &mut self.checks {
            c.add(r, &self.held);
        }
        if self
            .skip
            .iter()
            .any(|&c| self.held.get(c).copied().unwrap_or(false))
        {
            return Outcome::Skipped;
        }
        match self.build(r) {
            Ok(row) => Outcome::Row(row),
            Err(why) => Outcome::Rejected(why),
        }
    }

    fn build<'a, R: Record + ?Sized>(
        &'a mut self,
        r: &'a R,
    ) -> std::result::Result<Row<'a>, String> {
        let (head, tail) = self.cols.split_at_mut(TXN_TIME);
        let txn_type = text(&head[TXN_TYPE], r, false).ok_or("empty transaction type")?;
        if txn_type != "PAY" && txn_type != "REFUND" {
            return Err(format!(
                "transaction type {txn_type:?} ({}) is neither PAY nor REFUND after mapping",
                head[TXN_TYPE].label
            ));
        }
        let refund = txn_type == "REFUND";
        let amount = money(&head[AMOUNT], r, refund)?
            .ok_or_else(|| format!("empty amount ({})", head[AMOUNT].label))?;
        let fee = money(&head[FEE], r, refund)?;
        let status = text(&head[STATUS], r, refund)
            .ok_or_else(|| format!("empty status ({})", head[STATUS].label))?;
        let received = money(&tail[RECEIVED - TXN_TIME], r, refund)?;
        let time_col = &mut tail[0];
        let raw = pick(
            if refund {
                &time_col.refund
            } else {
                &time_col.pay
            },
            r,
        )
        .ok_or_else(|| format!("empty time ({})", time_col.label))?;
        let txn_time = match time_col.time.as_mut() {
            Some(p) => p
                .parse(raw)
                .map_err(|e| format!("column {:?}: {e}", time_col.label))?,
            None => return Err("no time column".into()),
        };
        Ok(Row {
            txn_type,
            channel_txn_id: text(&head[CHANNEL_TXN_ID], r, refund),
            merchant_order_id: text(&head[MERCHANT_ORDER_ID], r, refund),
            refund_id: if refund {
                text(&head[REFUND_ID], r, refund)
            } else {
                None
            },
            amount,
            fee,
            received,
            merchant_id: text(&tail[MERCHANT_ID - TXN_TIME], r, refund),
            status,
            txn_time,
        })
    }
}

fn cond(
    c: &Condition,
    lookup: &mut dyn FnMut(&str) -> Option<usize>,
    missing: &dyn Fn(&str, &str) -> Error,
    at: String,
    conds: &mut Vec<Cond>,
) -> Result<usize> {
    let names = c.column.list();
    let field = names
        .iter()
        .find_map(|n| lookup(n))
        .ok_or_else(|| missing(&names.join("\" or \""), &at))?;
    let c = Cond {
        field,
        one_of: c.one_of.clone(),
        nonzero: c.nonzero,
    };
    Ok(conds.iter().position(|k| *k == c).unwrap_or_else(|| {
        conds.push(c);
        conds.len() - 1
    }))
}

fn money_format(spec: &super::template::ColumnSpec) -> MoneyFormat {
    MoneyFormat {
        minor_units: spec.minor_units,
        thousands: spec.thousands.as_deref().and_then(|s| s.chars().next()),
        point: spec
            .decimal_point
            .as_deref()
            .and_then(|s| s.chars().next())
            .unwrap_or('.'),
        round_half_up: spec.round == Some(super::template::Rounding::HalfUp),
    }
}

/// The raw text of a source: the first non-empty field, or the constant.
#[inline]
fn pick<'a, R: Record + ?Sized>(src: &'a Src, r: &'a R) -> Option<&'a str> {
    match src {
        Src::Field(i) => Some(r.field(*i)).filter(|v| !v.is_empty()),
        Src::Fields(ix) => ix.iter().map(|i| r.field(*i)).find(|v| !v.is_empty()),
        Src::Const(v) => Some(v.as_str()).filter(|v| !v.is_empty()),
        Src::Null => None,
    }
}

#[inline(always)]
fn text<'a, R: Record + ?Sized>(c: &'a ColumnPlan, r: &'a R, refund: bool) -> Option<&'a str> {
    debug_assert_eq!(c.kind, Kind::Text, "{}", c.name);
    let v = pick(if refund { &c.refund } else { &c.pay }, r)?;
    let v = c
        .map
        .iter()
        .find(|(k, _)| same(k, v))
        .map_or(v, |(_, to)| to.as_str());
    (!v.is_empty()).then_some(v)
}

#[inline(always)]
fn money<R: Record + ?Sized>(
    c: &ColumnPlan,
    r: &R,
    refund: bool,
) -> std::result::Result<Option<i128>, String> {
    let Some(v) = pick(if refund { &c.refund } else { &c.pay }, r) else {
        return Ok(None);
    };
    let m = parse_money(v, c.money).map_err(|e| format!("column {:?}: {e}", c.label))?;
    Ok(Some(match if refund { c.refund_sign } else { c.sign } {
        Sign::Keep => m,
        Sign::Abs => m.abs(),
        Sign::Negate => -m,
    }))
}
