//! The typed records the stages hand each other through the manifest, and the summary the
//! report stage writes: what each stage did, in fields with names and types, never JSON read
//! back by string keys. Stage names, stage states and a day's status are enums.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::engine::Spills;
use crate::formats::TotalsResult;

/// A stage of a channel-day, in the order they run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    /// The channel's bill into `raw/`.
    Fetch,
    /// The bill through its template into `normalized/` and `rejected/`.
    Normalize,
    /// The platform's records of the day into `platform/`.
    Collect,
    /// The join and classification into `results/`, `carryover/`, `stats/`.
    Reconcile,
    /// `summary.json`.
    Report,
}

impl Stage {
    /// Every stage, in order.
    pub const ALL: [Stage; 5] = [
        Stage::Fetch,
        Stage::Normalize,
        Stage::Collect,
        Stage::Reconcile,
        Stage::Report,
    ];

    /// Its name on the command line and in the manifest.
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Fetch => "fetch",
            Stage::Normalize => "normalize",
            Stage::Collect => "collect",
            Stage::Reconcile => "reconcile",
            Stage::Report => "report",
        }
    }

    /// The stages that read what this one wrote, directly or through another: a rerun of it
    /// makes them stale. collect reads only the warehouse, so a fetch or normalize leaves it
    /// alone (and `reckon run` runs it beside them).
    pub fn dependents(self) -> &'static [Stage] {
        match self {
            Stage::Fetch => &[Stage::Normalize, Stage::Reconcile, Stage::Report],
            Stage::Normalize | Stage::Collect => &[Stage::Reconcile, Stage::Report],
            Stage::Reconcile => &[Stage::Report],
            Stage::Report => &[],
        }
    }
}

impl std::fmt::Display for Stage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Stage {
    type Err = crate::Error;

    fn from_str(s: &str) -> crate::Result<Stage> {
        Stage::ALL
            .into_iter()
            .find(|st| st.as_str() == s)
            .ok_or_else(|| {
                let names: Vec<&str> = Stage::ALL.iter().map(|s| s.as_str()).collect();
                crate::Error::Config(format!("unknown stage {s:?}: one of {}", names.join(", ")))
            })
    }
}

/// Where a stage's record stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StageState {
    /// It ran and committed its outputs.
    Done,
    /// Its last attempt failed; its outputs are the earlier ones, if any.
    Failed,
    /// An earlier stage ran again since: it must run again too.
    Stale,
}

/// Where a channel-day stands (the manifest's `status`, the run's JSON, `reckon status`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DayStatus {
    /// No stage has run.
    #[default]
    #[serde(alias = "")]
    NeverRun,
    /// Some stages are done, the rest are to run (a DAG runs them one task at a time).
    #[serde(alias = "running")]
    InProgress,
    /// Every stage is done and the conservation check holds.
    Reconciled,
    /// The bill failed its own checks (exit 3).
    Incomplete,
    /// Not ready yet: no bill or no warehouse partition (exit 75).
    Waiting,
    /// A service could not be reached after the stage's attempts (exit 75).
    Unavailable,
    /// Anything else failed, the conservation check among it (exit 1 or 2).
    Failed,
    /// An earlier day changed after this one was reconciled: run it again.
    Stale,
}

impl DayStatus {
    /// Its name in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            DayStatus::NeverRun => "never_run",
            DayStatus::InProgress => "in_progress",
            DayStatus::Reconciled => "reconciled",
            DayStatus::Incomplete => "incomplete",
            DayStatus::Waiting => "waiting",
            DayStatus::Unavailable => "unavailable",
            DayStatus::Failed => "failed",
            DayStatus::Stale => "stale",
        }
    }
}

impl std::fmt::Display for DayStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// What fetch recorded: the bill it brought into `raw/`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FetchDetail {
    /// The bill's file name in `raw/…/`.
    pub file: String,
    /// Its SHA-256 (an input of the run id).
    pub sha256: String,
    /// Its size in bytes.
    pub size: u64,
    /// Where it came from (a URL without its query, a path).
    pub source: String,
    /// The fetcher's kind.
    pub fetcher: String,
    /// When (UTC, RFC 3339).
    pub fetched_at: String,
    /// The channel's own facts (bill type, WeChat's `hash_value`): recorded, never read.
    pub channel_detail: serde_json::Value,
    /// The same content as the fetch before: nothing changed.
    #[serde(default, skip_serializing_if = "is_false")]
    pub unchanged: bool,
    /// A re-issued bill: the SHA-256 of the one it replaced.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reissued_from_sha256: Option<String>,
    /// The earlier bills of the date this one replaced, kept where they were committed
    /// (paths relative to the root), oldest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub superseded: Vec<String>,
}

/// What normalize recorded: the bill's rows and its totals checks.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NormalizeDetail {
    /// The template's name.
    pub template: String,
    /// The raw file it read.
    pub raw_file: String,
    /// Data records read.
    pub rows_read: u64,
    /// Canonical rows written.
    pub rows_written: u64,
    /// Records sent to `rejected/`.
    pub rows_rejected: u64,
    /// Records the template skips (not transactions).
    pub rows_skipped: u64,
    /// SHA-256 of the normalized file (an input of the run id); of bucket files, their
    /// digest (`buckets::digest`).
    pub sha256: String,
    /// Hash buckets of the match key it was written in (one file each).
    #[serde(default = "one", skip_serializing_if = "is_one")]
    pub buckets: u32,
    /// Each totals check.
    pub totals: Vec<TotalsResult>,
}

fn one() -> u32 {
    1
}

fn is_one(n: &u32) -> bool {
    *n == 1
}

/// What collect recorded: the platform snapshot.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CollectDetail {
    /// Records in the snapshot.
    pub rows: u64,
    /// What was read: partitions by path, a Delta version, a PostgreSQL snapshot.
    pub partitions_read: Vec<String>,
    /// SHA-256 of the snapshot (an input of the run id); of bucket files, their digest.
    pub sha256: String,
    /// Hash buckets of the match key it was written in (one file each).
    #[serde(default = "one", skip_serializing_if = "is_one")]
    pub buckets: u32,
    /// The `platform.sql` that ran.
    pub sql: String,
    /// What its sort spilled to disk.
    #[serde(default)]
    pub spilled: Spills,
}

/// The day before's carry-over a reconcile read.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CarryIn {
    /// The day it came from; `None` when that day was not reconciled.
    pub from: Option<String>,
    /// Its file, relative to the storage root.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    /// Records carried in.
    pub rows: u64,
    /// Its SHA-256 (`none` without one; an input of the run id).
    pub sha256: String,
    /// Why there is none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// The day before's ledger the ageing started from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LedgerIn {
    /// The day it came from; `None` when that day has no ledger.
    pub from: Option<String>,
    /// Its file, relative to the storage root.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    /// Its SHA-256 (`none` without one; an input of the run id).
    pub sha256: String,
    /// Why there is none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// The ageing of a day: where it started, and its figures.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgeingDetail {
    /// The day before's ledger.
    pub before: LedgerIn,
    /// The figures for `summary.json`.
    pub stats: AgeingStats,
    /// An earlier run of this day whose differences this run resolved: those entries are kept
    /// among the run's recorded inputs (`inputs/…/earlier_ledger.parquet`) for a replay.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub earlier_run: Option<EarlierRun>,
}

/// What an earlier run of the day contributed to this run's ledger.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EarlierRun {
    /// Its differences this run resolved.
    pub entries: u64,
    /// The SHA-256 of `earlier_ledger.parquet`, which holds them.
    pub ledger_sha256: String,
}

/// The day's ageing in numbers, for `summary.json`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AgeingStats {
    /// Differences first seen today.
    pub new: u64,
    /// Differences open since an earlier day (seen again today or not).
    pub persisting: u64,
    /// Differences resolved today, by what resolved them.
    pub resolved: BTreeMap<String, u64>,
    /// Open after today: new + persisting.
    pub open: u64,
    /// The first day of the oldest open difference.
    pub oldest_open: Option<String>,
    /// Open differences with a decision that no longer fits them (another category or
    /// amount since it was taken): waiting for a person to review it.
    #[serde(default)]
    pub flagged: u64,
}

impl AgeingStats {
    /// Adds the counts of another part of the day.
    pub fn add(&mut self, other: &AgeingStats) {
        self.new += other.new;
        self.persisting += other.persisting;
        self.flagged += other.flagged;
        self.open = self.new + self.persisting;
        for (by, n) in &other.resolved {
            *self.resolved.entry(by.clone()).or_default() += n;
        }
        if let Some(first) = &other.oldest_open {
            if self.oldest_open.as_ref().is_none_or(|o| first < o) {
                self.oldest_open = Some(first.clone());
            }
        }
    }
}

/// What the second look asked the operational database, and what it found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecondLookDetail {
    /// Keys looked up.
    pub looked_up: u64,
    /// Keys the database has (loaded into the warehouse late).
    pub found_in_database: u64,
    /// Connections the pool held.
    pub connections: usize,
    /// Queries sent, retries included.
    #[serde(default)]
    pub queries: u64,
    /// Queries sent again after a connection error or a timeout.
    #[serde(default)]
    pub retries: u64,
    /// How long the lookups took.
    #[serde(default)]
    pub elapsed_ms: u64,
}

/// The channel's rules a reconcile ran with (an input of the run id).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rules {
    /// The channel's zone.
    pub time_zone: String,
    /// The daily-cut window.
    pub cut_window_secs: i64,
    /// Days a carried record may wait.
    pub grace_days: i64,
    /// The absolute amount tolerance.
    pub tolerance: String,
    /// The relative amount tolerance.
    pub tolerance_rate: Option<String>,
    /// The contracted fee rate.
    pub fee_rate: Option<String>,
    /// What the records are matched on.
    pub match_key: String,
    /// How the channel rounds its fee.
    pub fee_rounding: String,
    /// Which amount is compared.
    pub compare_amount: String,
}

/// Counts and sums of one category.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct CategoryStats {
    /// Rows (a matched pair is one row).
    pub rows: u64,
    /// Channel records in those rows.
    pub channel_records: u64,
    /// Platform records in those rows.
    pub platform_records: u64,
    /// Carried-in records in those rows.
    pub carried_records: u64,
    /// Sum of the channel amounts, scale-2 mantissa.
    pub channel_amount: i128,
    /// Sum of the platform amounts, scale-2 mantissa.
    pub platform_amount: i128,
    /// Rows whose status difference the platform's refund table explains.
    #[serde(default)]
    pub refund_explained: u64,
}

impl CategoryStats {
    /// Adds `o` into `self`.
    pub fn add(&mut self, o: &CategoryStats) {
        self.rows += o.rows;
        self.channel_records += o.channel_records;
        self.platform_records += o.platform_records;
        self.carried_records += o.carried_records;
        self.channel_amount += o.channel_amount;
        self.platform_amount += o.platform_amount;
        self.refund_explained += o.refund_explained;
    }
}

/// What the reconciliation counted, per category name.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Counts {
    /// Per category name.
    pub by_category: BTreeMap<String, CategoryStats>,
}

/// What reconcile recorded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReconcileDetail {
    /// The run id: a hash of every input, the SQL and the rules.
    pub run_id: String,
    /// The join's parallelism.
    pub target_partitions: usize,
    /// Hash buckets of the match key it joined one at a time.
    #[serde(default = "one", skip_serializing_if = "is_one")]
    pub buckets: u32,
    /// The day before's carry-over.
    pub carry_in: CarryIn,
    /// The bill this run reconciled (a re-issue changes it).
    pub bill_sha256: String,
    /// The ageing.
    pub ageing: AgeingDetail,
    /// Rows of `diffs.parquet`.
    pub diff_rows: u64,
    /// Rows carried to the next day.
    pub carry_out_rows: u64,
    /// Rows of the statistics tables.
    pub stats_rows: u64,
    /// The second look, when configured.
    pub second_look: Option<SecondLookDetail>,
    /// Per category.
    pub counts: Counts,
    /// The channel's rules.
    pub rules: Rules,
    /// The `reconcile.sql` that ran.
    pub sql: String,
}

/// What report recorded: the summary it wrote.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReportDetail {
    /// `summary.json`.
    pub summary: Summary,
}

/// A stage's typed record, as it returns it.
#[derive(Debug, Clone, PartialEq)]
pub enum Output {
    /// Fetch's.
    Fetch(FetchDetail),
    /// Normalize's.
    Normalize(NormalizeDetail),
    /// Collect's.
    Collect(CollectDetail),
    /// Reconcile's.
    Reconcile(Box<ReconcileDetail>),
    /// Report's.
    Report(Box<ReportDetail>),
}

/// The inputs a summary accounts for.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Inputs {
    /// Normalized bill rows.
    pub channel_rows: u64,
    /// Platform snapshot rows.
    pub platform_rows: u64,
    /// Rejected bill rows.
    pub rejected_rows: u64,
    /// Records carried in from the day before.
    pub carried_in_rows: u64,
}

/// The channel's and the platform's sums of a category, as decimal text.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SideAmounts {
    /// The channel's.
    pub channel: String,
    /// The platform's.
    pub platform: String,
}

/// The conservation check: every input record accounted for once.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Conservation {
    /// Whether the categories account for every input record.
    pub holds: bool,
    /// Channel records accounted.
    pub channel_records: u64,
    /// Platform records accounted.
    pub platform_records: u64,
    /// Carried-in records accounted.
    pub carried_in_records: u64,
}

/// One threshold against the day.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ThresholdCheck {
    /// The category.
    pub category: String,
    /// Its rows.
    pub count: u64,
    /// The limit on rows.
    pub count_limit: Option<u64>,
    /// Its larger side's amount.
    pub amount: String,
    /// The limit on the amount.
    pub amount_limit: Option<String>,
    /// Whether it is past a limit.
    pub passed: bool,
}

/// The channel's thresholds against the day.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Thresholds {
    /// The categories past their limits.
    pub passed: Vec<String>,
    /// Each limit with the day's figures.
    pub checked: Vec<ThresholdCheck>,
}

/// Where a day's outputs are, relative to the storage root: each in the version folder its
/// stage published (`AREA/channel=C/dt=D/_v=<hash>/`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Outputs {
    /// `diffs.parquet`.
    pub diffs: String,
    /// `ledger.parquet`.
    pub ledger: String,
    /// The day's committed pointer, `runs/channel=C/dt=D/committed.json`, which names this
    /// summary and every other file of the day (a summary written before #18 named itself).
    #[serde(alias = "summary")]
    pub committed: String,
    /// The carry-over folder.
    pub carryover: String,
    /// `by_hour.parquet`.
    pub stats_by_hour: String,
    /// `by_merchant.parquet`.
    pub stats_by_merchant: String,
    /// The normalized folder.
    pub normalized: String,
    /// The rejected folder.
    pub rejected: String,
    /// The platform snapshot folder.
    pub platform: String,
}

/// `summary.json`: a reconciled channel-day in figures (README, "Outputs").
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    /// The channel.
    pub channel: String,
    /// The bill date.
    pub bill_date: String,
    /// The run id.
    pub run_id: Option<String>,
    /// `reconciled`, or `failed` when conservation breaks.
    pub status: DayStatus,
    /// The inputs.
    pub inputs: Inputs,
    /// Rows of the reconciliation.
    pub rows: u64,
    /// Rows per category.
    pub counts: BTreeMap<String, u64>,
    /// Amounts per category.
    pub amounts: BTreeMap<String, SideAmounts>,
    /// Matched rows whose status difference the platform's refund table explained.
    #[serde(default)]
    pub matched_refund_explained: u64,
    /// Channel minus platform over every difference no rule explains.
    pub net_unexplained: String,
    /// Matched rows over all rows.
    pub match_rate: f64,
    /// The conservation check.
    pub conservation: Conservation,
    /// The thresholds.
    #[serde(default)]
    pub thresholds: Thresholds,
    /// The bill's totals checks.
    #[serde(default)]
    pub bill_totals: Vec<TotalsResult>,
    /// Rows of `diffs.parquet`.
    #[serde(default)]
    pub diff_rows: u64,
    /// Differences across days.
    #[serde(default)]
    pub ageing: AgeingStats,
    /// Rows carried to the next day.
    #[serde(default)]
    pub carry_out_rows: u64,
    /// Where the outputs are.
    #[serde(default)]
    pub outputs: Outputs,
    /// Later days this run marked stale (in the run's JSON, not in `summary.json`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub marked_stale: Option<Vec<String>>,
}

impl Summary {
    /// As JSON with every object's keys in order, the way `summary.json` has always been
    /// written.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::to_value(self).unwrap_or(serde_json::Value::Null)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stage_names_round_trip_and_dependents_follow() {
        for s in Stage::ALL {
            assert_eq!(s.as_str().parse::<Stage>().ok(), Some(s));
            let json = serde_json::to_string(&s).expect("json");
            assert_eq!(json, format!("\"{}\"", s.as_str()));
        }
        assert_eq!(
            Stage::Collect.dependents(),
            &[Stage::Reconcile, Stage::Report]
        );
        assert!(!Stage::Fetch.dependents().contains(&Stage::Collect));
        assert!(!Stage::Normalize.dependents().contains(&Stage::Collect));
        assert!(Stage::Report.dependents().is_empty());
        // Every dependent comes later.
        for s in Stage::ALL {
            assert!(
                s.dependents().iter().all(|d| *d as usize > s as usize),
                "{s}"
            );
        }
        let e = "merge".parse::<Stage>().expect_err("unknown");
        assert!(e.to_string().contains("fetch, normalize"), "{e}");
    }

    #[test]
    fn day_statuses_read_the_old_names() {
        let old: DayStatus = serde_json::from_str("\"running\"").expect("running");
        assert_eq!(old, DayStatus::InProgress);
        let fresh: DayStatus = serde_json::from_str("\"\"").expect("empty");
        assert_eq!(fresh, DayStatus::NeverRun);
        for s in [DayStatus::Reconciled, DayStatus::Stale, DayStatus::Waiting] {
            let json = serde_json::to_string(&s).expect("json");
            assert_eq!(json, format!("\"{}\"", s.as_str()));
        }
    }
}
