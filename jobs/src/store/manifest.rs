//! The state of one channel and bill date (`runs/channel=C/dt=D/manifest.json`): each stage's
//! record with its own typed detail, the day's status and its run id.

use serde::{Deserialize, Serialize};

use crate::records::{
    CollectDetail, DayStatus, FetchDetail, NormalizeDetail, Output, ReconcileDetail, ReportDetail,
    Stage, StageState,
};

/// The state of one channel and bill date, kept at `runs/channel=C/dt=D/manifest.json`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Manifest {
    /// The channel.
    pub channel: String,
    /// The bill date.
    pub bill_date: String,
    /// The deterministic id of the last reconciliation (hash of its inputs, SQL and rules).
    pub run_id: Option<String>,
    /// Where the day stands.
    #[serde(default)]
    pub status: DayStatus,
    /// The last error, when the status is not `reconciled`.
    pub error: Option<String>,
    /// Each stage's record.
    #[serde(default)]
    pub stages: Stages,
}

/// The record of each stage that ran.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Stages {
    /// Fetch's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fetch: Option<Record<FetchDetail>>,
    /// Normalize's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub normalize: Option<Record<NormalizeDetail>>,
    /// Collect's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub collect: Option<Record<CollectDetail>>,
    /// Reconcile's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reconcile: Option<Record<ReconcileDetail>>,
    /// Report's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub report: Option<Record<ReportDetail>>,
}

/// What a stage did: when, how long, what it committed, and its facts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(bound(deserialize = "D: serde::de::DeserializeOwned"))]
pub struct Record<D> {
    /// Where it stands.
    pub state: StageState,
    /// When it finished (UTC, RFC 3339).
    pub finished_at: String,
    /// How long it took.
    pub duration_ms: u64,
    /// Files it committed, relative to the storage root.
    pub files: Vec<String>,
    /// Each committed file's SHA-256 and size (absent in manifests written before #18).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub checksums: Vec<FileSum>,
    /// Its facts, or the error of its failed attempt.
    pub detail: Detail<D>,
    /// How many attempts it took (more than one when a service could not be reached).
    #[serde(default = "one")]
    pub attempts: u32,
}

fn one() -> u32 {
    1
}

/// A record's detail: the stage's own facts, or why it failed.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Detail<D> {
    /// What the stage found and wrote.
    Facts(D),
    /// The error of the failed attempt.
    Failed {
        /// The error's text.
        error: String,
    },
}

// Read by hand rather than `untagged`: serde's untagged enums buffer numbers in a way that
// cannot hold the i128 money sums of the reconcile record.
impl<'de, D: serde::de::DeserializeOwned> Deserialize<'de> for Detail<D> {
    fn deserialize<De: serde::Deserializer<'de>>(d: De) -> Result<Self, De::Error> {
        let v = serde_json::Value::deserialize(d)?;
        let failed = v
            .as_object()
            .filter(|o| o.len() == 1)
            .and_then(|o| o.get("error"))
            .and_then(|e| e.as_str());
        match failed {
            Some(error) => Ok(Detail::Failed {
                error: error.to_string(),
            }),
            None => serde_json::from_value(v)
                .map(Detail::Facts)
                .map_err(serde::de::Error::custom),
        }
    }
}

/// When, how long, how often: a record without its detail.
#[derive(Debug, Clone)]
pub struct Ran {
    /// When it finished.
    pub finished_at: String,
    /// How long it took.
    pub duration_ms: u64,
    /// Attempts it took.
    pub attempts: u32,
}

impl<D> Record<D> {
    /// The facts of a done record.
    pub fn facts(&self) -> Option<&D> {
        match (&self.state, &self.detail) {
            (StageState::Done, Detail::Facts(d)) => Some(d),
            _ => None,
        }
    }

    /// The facts, done or stale (what the stage last committed).
    pub fn last_facts(&self) -> Option<&D> {
        match &self.detail {
            Detail::Facts(d) => Some(d),
            Detail::Failed { .. } => None,
        }
    }

    fn done(ran: &Ran, files: Vec<FileSum>, detail: D) -> Self {
        Record {
            state: StageState::Done,
            finished_at: ran.finished_at.clone(),
            duration_ms: ran.duration_ms,
            files: files.iter().map(|f| f.path.clone()).collect(),
            checksums: files,
            detail: Detail::Facts(detail),
            attempts: ran.attempts,
        }
    }

    /// A failed attempt's record. The files the stage committed before stay named (they are
    /// still in place, and an earlier bill's `fetch.json` tells a re-issue from a first fetch).
    fn failed(before: Option<&Self>, ran: &Ran, error: String) -> Self {
        Record {
            state: StageState::Failed,
            finished_at: ran.finished_at.clone(),
            duration_ms: ran.duration_ms,
            files: before.map(|r| r.files.clone()).unwrap_or_default(),
            checksums: before.map(|r| r.checksums.clone()).unwrap_or_default(),
            detail: Detail::Failed { error },
            attempts: ran.attempts,
        }
    }
}

/// A committed file: its path relative to the storage root, its SHA-256 and size.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileSum {
    /// Relative to the storage root.
    pub path: String,
    /// Hex SHA-256 of its bytes.
    pub sha256: String,
    /// Its size in bytes.
    pub size: u64,
}

/// A record's facts as JSON, for people and schedulers (the `reckon stage` line).
#[derive(Debug, Clone, Serialize)]
pub struct RecordView {
    /// The stage.
    pub stage: Stage,
    /// Where it stands.
    pub state: StageState,
    /// How long it took.
    pub duration_ms: u64,
    /// Attempts it took.
    pub attempts: u32,
    /// What it committed.
    pub files: Vec<String>,
    /// Its facts.
    pub detail: serde_json::Value,
}

fn view<D: Serialize>(stage: Stage, r: &Option<Record<D>>) -> Option<RecordView> {
    r.as_ref().map(|r| RecordView {
        stage,
        state: r.state,
        duration_ms: r.duration_ms,
        attempts: r.attempts,
        files: r.files.clone(),
        detail: serde_json::to_value(&r.detail).unwrap_or_default(),
    })
}

/// What every stage's record has, whatever its facts.
struct Head<'a> {
    state: StageState,
    finished_at: &'a str,
    duration_ms: u64,
    files: &'a [String],
    checksums: &'a [FileSum],
}

impl Stages {
    /// `stage`'s record without its facts, when it ran.
    fn head(&self, stage: Stage) -> Option<Head<'_>> {
        fn of<D>(r: &Option<Record<D>>) -> Option<Head<'_>> {
            r.as_ref().map(|r| Head {
                state: r.state,
                finished_at: &r.finished_at,
                duration_ms: r.duration_ms,
                files: &r.files,
                checksums: &r.checksums,
            })
        }
        match stage {
            Stage::Fetch => of(&self.fetch),
            Stage::Normalize => of(&self.normalize),
            Stage::Collect => of(&self.collect),
            Stage::Reconcile => of(&self.reconcile),
            Stage::Report => of(&self.report),
        }
    }

    /// The state of `stage`'s record, when it ran.
    pub fn state(&self, stage: Stage) -> Option<StageState> {
        self.head(stage).map(|h| h.state)
    }

    /// When `stage` last ran, and how long it took.
    pub fn finished_at(&self, stage: Stage) -> Option<(&str, u64)> {
        self.head(stage).map(|h| (h.finished_at, h.duration_ms))
    }

    /// The files `stage`'s record names (none when it did not run).
    pub fn files_of(&self, stage: Stage) -> &[String] {
        self.head(stage).map_or(&[], |h| h.files)
    }

    /// The checksums of the files `stage`'s record names (none for a record from before
    /// checksums were kept).
    pub fn checksums(&self, stage: Stage) -> &[FileSum] {
        self.head(stage).map_or(&[], |h| h.checksums)
    }

    /// `stage`'s record for people: its state, time, attempts, files and facts.
    pub fn view(&self, stage: Stage) -> Option<RecordView> {
        match stage {
            Stage::Fetch => view(stage, &self.fetch),
            Stage::Normalize => view(stage, &self.normalize),
            Stage::Collect => view(stage, &self.collect),
            Stage::Reconcile => view(stage, &self.reconcile),
            Stage::Report => view(stage, &self.report),
        }
    }

    /// Every file the records name, and the checksums they have, stage by stage.
    pub fn files(&self) -> Vec<(&[String], &[FileSum])> {
        fn of<D>(r: &Option<Record<D>>) -> Option<(&[String], &[FileSum])> {
            r.as_ref()
                .map(|r| (r.files.as_slice(), r.checksums.as_slice()))
        }
        [
            of(&self.fetch),
            of(&self.normalize),
            of(&self.collect),
            of(&self.reconcile),
            of(&self.report),
        ]
        .into_iter()
        .flatten()
        .collect()
    }

    /// Whether any stage ran.
    pub fn is_empty(&self) -> bool {
        Stage::ALL.iter().all(|s| self.state(*s).is_none())
    }

    fn set_state(&mut self, stage: Stage, state: StageState) {
        match stage {
            Stage::Fetch => self.fetch.iter_mut().for_each(|r| r.state = state),
            Stage::Normalize => self.normalize.iter_mut().for_each(|r| r.state = state),
            Stage::Collect => self.collect.iter_mut().for_each(|r| r.state = state),
            Stage::Reconcile => self.reconcile.iter_mut().for_each(|r| r.state = state),
            Stage::Report => self.report.iter_mut().for_each(|r| r.state = state),
        }
    }
}

impl Manifest {
    /// A manifest for a day that never ran.
    pub fn new(channel: &str, bill_date: &str) -> Manifest {
        Manifest {
            channel: channel.to_string(),
            bill_date: bill_date.to_string(),
            ..Default::default()
        }
    }

    /// Whether `stage` is done.
    pub fn is_done(&self, stage: Stage) -> bool {
        self.stages.state(stage) == Some(StageState::Done)
    }

    /// Fetch's facts, when it is done.
    pub fn fetched(&self) -> Option<&FetchDetail> {
        self.stages.fetch.as_ref().and_then(Record::facts)
    }

    /// Normalize's facts, when it is done.
    pub fn normalized(&self) -> Option<&NormalizeDetail> {
        self.stages.normalize.as_ref().and_then(Record::facts)
    }

    /// Collect's facts, when it is done.
    pub fn collected(&self) -> Option<&CollectDetail> {
        self.stages.collect.as_ref().and_then(Record::facts)
    }

    /// Reconcile's record, when it is done.
    pub fn reconciled(&self) -> Option<&Record<ReconcileDetail>> {
        self.stages
            .reconcile
            .as_ref()
            .filter(|r| r.facts().is_some())
    }

    /// Report's facts, when it is done.
    pub fn reported(&self) -> Option<&ReportDetail> {
        self.stages.report.as_ref().and_then(Record::facts)
    }

    /// Records `stage` done with `files` and its facts; a stage that reran makes the ones that
    /// read it stale (they must run again), but for a fetch that brought the same bill. The day
    /// is `in_progress` until the report, then `reconciled`.
    pub fn record_done(&mut self, stage: Stage, ran: &Ran, files: Vec<FileSum>, output: Output) {
        let changed = !matches!(&output, Output::Fetch(f) if f.unchanged);
        match output {
            Output::Fetch(d) => self.stages.fetch = Some(Record::done(ran, files, d)),
            Output::Normalize(d) => self.stages.normalize = Some(Record::done(ran, files, d)),
            Output::Collect(d) => self.stages.collect = Some(Record::done(ran, files, d)),
            Output::Reconcile(d) => {
                self.run_id = Some(d.run_id.clone());
                self.stages.reconcile = Some(Record::done(ran, files, *d));
            }
            Output::Report(d) => self.stages.report = Some(Record::done(ran, files, *d)),
        }
        if changed {
            for later in stage.dependents() {
                self.stages.set_state(*later, StageState::Stale);
            }
        }
        self.status = if stage == Stage::Report {
            DayStatus::Reconciled
        } else {
            DayStatus::InProgress
        };
        self.error = None;
    }

    /// Records `stage` failed with `error`, leaving the day in `status`.
    pub fn record_failed(&mut self, stage: Stage, ran: &Ran, status: DayStatus, error: String) {
        let st = &mut self.stages;
        let e = error.clone();
        match stage {
            Stage::Fetch => st.fetch = Some(Record::failed(st.fetch.as_ref(), ran, e)),
            Stage::Normalize => st.normalize = Some(Record::failed(st.normalize.as_ref(), ran, e)),
            Stage::Collect => st.collect = Some(Record::failed(st.collect.as_ref(), ran, e)),
            Stage::Reconcile => st.reconcile = Some(Record::failed(st.reconcile.as_ref(), ran, e)),
            Stage::Report => st.report = Some(Record::failed(st.report.as_ref(), ran, e)),
        }
        self.status = status;
        self.error = Some(error);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::records::CollectDetail;

    fn ran() -> Ran {
        Ran {
            finished_at: "2026-11-21T01:00:00Z".into(),
            duration_ms: 5,
            attempts: 1,
        }
    }

    fn collected(rows: u64) -> Output {
        Output::Collect(CollectDetail {
            rows,
            partitions_read: vec!["dt=2026-11-20".into()],
            sha256: "ab".into(),
            buckets: 1,
            sql: "platform.sql".into(),
            spilled: Default::default(),
        })
    }

    #[test]
    fn a_stage_that_runs_again_makes_the_later_ones_stale() {
        let mut m = Manifest::new("alipay", "2026-11-20");
        assert_eq!(m.status, DayStatus::NeverRun);
        m.record_done(Stage::Collect, &ran(), vec![], collected(3));
        assert_eq!(m.status, DayStatus::InProgress);
        assert_eq!(m.collected().map(|c| c.rows), Some(3));
        // A later stage's record, then collect again: the later one is stale.
        m.stages.report = None;
        m.record_failed(Stage::Reconcile, &ran(), DayStatus::Failed, "boom".into());
        assert_eq!(m.status, DayStatus::Failed);
        assert_eq!(m.error.as_deref(), Some("boom"));
        m.record_done(Stage::Collect, &ran(), vec![], collected(4));
        assert_eq!(m.stages.state(Stage::Reconcile), Some(StageState::Stale));
        assert!(m.error.is_none());
        assert!(!m.is_done(Stage::Reconcile));
        // normalize finishing after collect (they run side by side) leaves collect done.
        let normalized = Output::Normalize(crate::records::NormalizeDetail {
            template: "t".into(),
            raw_file: "bill.csv".into(),
            rows_read: 4,
            rows_written: 4,
            rows_rejected: 0,
            rows_skipped: 0,
            sha256: "cd".into(),
            buckets: 1,
            totals: vec![],
        });
        m.record_done(Stage::Normalize, &ran(), vec![], normalized);
        assert!(m.is_done(Stage::Collect));
        assert_eq!(m.stages.state(Stage::Reconcile), Some(StageState::Stale));
    }

    #[test]
    fn manifests_round_trip_and_read_a_failed_record() {
        let mut m = Manifest::new("wechat", "2026-11-20");
        m.record_done(
            Stage::Collect,
            &ran(),
            vec![FileSum {
                path: "platform/channel=wechat/dt=2026-11-20/_v=1/part-0.parquet".into(),
                sha256: "ab".into(),
                size: 3,
            }],
            collected(7),
        );
        m.record_failed(
            Stage::Reconcile,
            &ran(),
            DayStatus::Unavailable,
            "db down".into(),
        );
        let text = serde_json::to_string(&m).expect("json");
        let back: Manifest = serde_json::from_str(&text).expect("read back");
        assert_eq!(back.collected().map(|c| c.rows), Some(7));
        let files = back.stages.files();
        assert_eq!(files.len(), 2, "collect's files and reconcile's (none)");
        assert_eq!(files[0].0, [files[0].1[0].path.clone()]);
        assert_eq!(files[0].1[0].sha256, "ab");
        assert_eq!(
            back.stages.state(Stage::Reconcile),
            Some(StageState::Failed)
        );
        assert!(matches!(
            back.stages.reconcile.as_ref().map(|r| &r.detail),
            Some(Detail::Failed { error }) if error == "db down"
        ));
        // A manifest written before the typed records: "running", no attempts.
        let old = r#"{"channel":"a","bill_date":"2026-11-20","run_id":null,"status":"running",
            "error":null,"stages":{"collect":{"state":"done","finished_at":"t","duration_ms":1,
            "files":[],"detail":{"rows":2,"partitions_read":[],"sha256":"x","sql":"s"}}}}"#;
        let old: Manifest = serde_json::from_str(old).expect("old manifest");
        assert_eq!(old.status, DayStatus::InProgress);
        assert_eq!(old.stages.collect.as_ref().map(|r| r.attempts), Some(1));
    }
}
