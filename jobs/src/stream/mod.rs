//! The real-time mode, `reckon stream`: the platform's records and the channel's
//! notifications arrive on a message queue, meet in a pool, and are decided as they meet,
//! with the batch job's own rules; each day is closed into the storage root in the batch
//! job's layout once both sides' event time has passed it.
//!
//! One micro-batch at a time ([`Stream::step`]):
//! 1. the source hands over up to `batch_max` messages (`source/`);
//! 2. each parses into a canonical record or a kept rejection (`record.rs`); a message
//!    already taken in (the same key and content: a redelivery, a republish) is counted once;
//! 3. a record finds its other side in the pool (`pool.rs`), or a provisional difference of
//!    the other side in the state (a late counterpart clears it), or waits in the pool until
//!    its deadline; the pairs found are classified by `reconcile.sql` (`matcher.rs`);
//! 4. the other side's watermark (`watermark.rs`) past a waiting record's deadline makes it a
//!    provisional difference;
//! 5. the records, outcomes, history, rejections and source positions commit in one
//!    transaction (`state.rs`); a consumer killed anywhere before resumes from the last one.
//!
//! Then each day both watermarks have passed (end of day plus grace) is closed (`close.rs`).

pub mod close;
pub mod compare;
pub mod matcher;
pub mod notify;
pub mod pool;
pub mod record;
pub mod source;
pub mod state;
pub mod tables;
pub mod watermark;

#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use chrono::NaiveDate;
use serde::Deserialize;

use crate::config::{Channel, Config};
use crate::error::{Error, Result};
use pool::{Key, Open, Pool};
use record::{Record, Side};
use source::{Delivery, Source, Subjects};
use state::{Commit, Event, Outcome, Prior, RecordState, State, Taken};
use watermark::{secs, Watermarks};

/// `[stream]` in reckon.toml.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StreamOptions {
    /// `nats://HOST:PORT` (JetStream) or `kafka://HOST:PORT[,HOST:PORT…]`.
    pub broker: String,
    /// The platform's records: a NATS subject (wildcards allowed: `payments.platform.>`) or a
    /// Kafka topic.
    pub platform: String,
    /// The channels' notifications: a NATS subject or a Kafka topic.
    pub channel: String,
    /// The JetStream stream that holds both subjects (created when missing; default `RECKON`).
    #[serde(default = "default_nats_stream")]
    pub nats_stream: String,
    /// The state: a SQLite file (relative to the config; default `stream.sqlite`) or a
    /// `postgres://` URL (the password from `PGPASSWORD`).
    pub database: Option<String>,
    /// Messages a micro-batch takes at most (default 5000).
    #[serde(default = "default_batch_max")]
    pub batch_max: usize,
    /// How long a micro-batch waits for messages, in milliseconds (default 100).
    #[serde(default = "default_batch_wait")]
    pub batch_wait_ms: u64,
    /// How far out of event-time order a partition's records may arrive, in seconds
    /// (default 5).
    #[serde(default = "default_lateness")]
    pub lateness_secs: u64,
    /// A partition quiet this long (wall time, seconds) stops holding its side's watermark
    /// back (default 30).
    #[serde(default = "default_idle_after")]
    pub idle_after_secs: u64,
    /// The longest a producer takes to publish a record after its event time, in seconds: a
    /// quiet side's watermark follows the stream's clock this far behind (default 120).
    #[serde(default = "default_max_lag")]
    pub max_lag_secs: u64,
    /// The writer's lease, in seconds: a standby consumer takes over this long after the
    /// active one stopped renewing it (default 15).
    #[serde(default = "default_lease")]
    pub lease_secs: u64,
    /// Connect timeout for the broker, in seconds (default 10).
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout_secs: u64,
}

fn default_nats_stream() -> String {
    "RECKON".into()
}
fn default_batch_max() -> usize {
    5000
}
fn default_batch_wait() -> u64 {
    100
}
fn default_lateness() -> u64 {
    5
}
fn default_idle_after() -> u64 {
    30
}
fn default_max_lag() -> u64 {
    120
}
fn default_lease() -> u64 {
    15
}
fn default_connect_timeout() -> u64 {
    10
}

/// The default state file, beside the config.
pub const DEFAULT_DATABASE: &str = "stream.sqlite";

/// The name a channel's stream results are committed under in the storage root: beside the
/// batch job's own days of the channel, never over them.
pub fn committed_name(channel: &str) -> String {
    format!("{channel}.stream")
}

/// The wall clock in microseconds.
pub fn now_micros() -> i64 {
    chrono::Utc::now().timestamp_micros()
}

/// How `reckon stream` runs.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Stop (exit 0) once nothing has arrived for this long and no day is left to close.
    pub exit_when_idle: Option<Duration>,
    /// This consumer's name in the lease (default host and process id).
    pub holder: Option<String>,
}

/// Figures of a run, printed when it stops.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Figures {
    pub messages: u64,
    pub records: u64,
    pub rejected: u64,
    pub redelivered: u64,
    pub pairs: u64,
    pub provisional: u64,
    pub cleared: u64,
    pub late: u64,
    pub batches: u64,
    pub days_closed: Vec<String>,
    /// From the broker's receipt of a pair's second record to its decision (milliseconds, to
    /// the next whole millisecond).
    pub latency_ms_p50: Option<f64>,
    pub latency_ms_p99: Option<f64>,
    pub pool_open: usize,
    pub pool_open_max: usize,
    pub elapsed_secs: f64,
    /// Where the time went.
    pub phases: Phases,
}

/// Where a run's time went, in seconds: where to look when it is slow.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Phases {
    /// Waiting for the broker's messages.
    pub reading: f64,
    /// Parsing messages into records.
    pub parsing: f64,
    /// Asking the state about keys the pool does not hold.
    pub lookup: f64,
    /// Pairing, recognising copies and duplicates, expiring.
    pub deciding: f64,
    /// Classifying pairs with reconcile.sql.
    pub classifying: f64,
    /// Committing each micro-batch's transaction.
    pub committing: f64,
    /// Closing days.
    pub closing: f64,
}

/// The running stream.
pub struct Stream<'a> {
    config: &'a Config,
    channels: HashMap<String, &'a Channel>,
    state: State,
    pool: Pool,
    marks: Watermarks,
    matcher: matcher::Matcher,
    next_id: i64,
    holder: String,
    epoch: i64,
    lease: i64,
    /// The latest position and event time of each partition.
    positions: BTreeMap<(Side, String), (u64, i64)>,
    /// The last day closed, per channel.
    closed: BTreeMap<String, NaiveDate>,
    /// The first day with records, per channel (where closing starts).
    first_day: BTreeMap<String, NaiveDate>,
    latencies: Latencies,
    figures: Figures,
}

/// Decision latencies in a fixed histogram of 1 ms steps up to a minute (the memory of a run
/// never grows with its volume).
struct Latencies {
    counts: Vec<u64>,
    n: u64,
}

impl Latencies {
    const STEPS: usize = 60_000;

    fn new() -> Latencies {
        Latencies {
            counts: vec![0; Self::STEPS + 1],
            n: 0,
        }
    }

    fn add(&mut self, micros: i64) {
        let ms = usize::try_from(micros.max(0) / 1000).unwrap_or(Self::STEPS);
        self.counts[ms.min(Self::STEPS)] += 1;
        self.n += 1;
    }

    /// The `p` quantile in milliseconds (the step's upper edge).
    fn quantile(&self, p: f64) -> Option<f64> {
        if self.n == 0 {
            return None;
        }
        let want = ((self.n as f64) * p).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (ms, c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= want {
                return Some((ms + 1) as f64);
            }
        }
        Some(Self::STEPS as f64)
    }
}

impl<'a> Stream<'a> {
    /// Opens the state, takes the lease (waiting as a standby while another consumer holds
    /// it) and resumes the pool and watermarks.
    pub async fn open(config: &'a Config, run: &RunOptions) -> Result<Stream<'a>> {
        let options = options(config)?;
        let database = options.database.as_deref().unwrap_or(DEFAULT_DATABASE);
        let state = State::open(database, &config.base_dir).await?;
        let holder = run.holder.clone().unwrap_or_else(|| {
            let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
                .map(|h| h.trim().to_string())
                .unwrap_or_else(|_| "host".into());
            format!("{host}-{}", std::process::id())
        });
        let lease = secs(options.lease_secs);
        let mut waiting = false;
        let epoch = loop {
            let now = now_micros();
            if let Some(epoch) = state.lease(&holder, now, now + lease).await? {
                break epoch;
            }
            if !waiting {
                tracing::info!(holder = %holder, "another consumer holds the stream's lease: standing by");
                waiting = true;
            }
            tokio::time::sleep(Duration::from_micros((lease / 3).max(100_000) as u64)).await;
        };
        tracing::info!(holder = %holder, epoch, "holding the stream's lease");
        let resumed = state.resume().await?;
        let now = now_micros();
        let mut marks = Watermarks::new(
            secs(options.lateness_secs),
            secs(options.idle_after_secs),
            secs(options.max_lag_secs),
            now,
        );
        let mut positions = BTreeMap::new();
        for (side, partition, max_event) in &resumed.marks {
            marks.resume(*side, partition, *max_event, now);
            if let Some(next) = resumed.positions.get(&(*side, partition.clone())) {
                positions.insert((*side, partition.clone()), (*next, *max_event));
            }
        }
        // The open records wait again, each knowing the key's other records in the state.
        let keys: Vec<Key> = resumed.open.iter().map(|(k, _)| k.clone()).collect();
        let mut others: HashMap<Key, Vec<(Side, String)>> = HashMap::new();
        let open_ids: std::collections::HashSet<i64> =
            resumed.open.iter().map(|(_, o)| o.id).collect();
        for (k, p) in state.priors(&keys).await? {
            if !open_ids.contains(&p.id) {
                others.entry(k).or_default().push((p.side, p.fingerprint));
            }
        }
        let mut pool = Pool::default();
        for (key, open) in resumed.open {
            let o = others.remove(&key).unwrap_or_default();
            pool.insert(key, open, o);
        }
        let channels = config
            .channels
            .iter()
            .map(|c| (c.name.clone(), c))
            .collect();
        let sql = crate::sql::SqlDir::for_config(config)?;
        Ok(Stream {
            config,
            channels,
            state,
            pool,
            marks,
            matcher: matcher::Matcher::new(&sql)?,
            next_id: resumed.next_id,
            holder,
            epoch,
            lease,
            positions,
            closed: resumed.closed,
            first_day: BTreeMap::new(),
            latencies: Latencies::new(),
            figures: Figures::default(),
        })
    }

    /// The positions to start the source at.
    pub fn resume_positions(&self) -> BTreeMap<(Side, String), u64> {
        self.positions
            .iter()
            .map(|(k, (next, _))| (k.clone(), *next))
            .collect()
    }

    /// Runs until stopped (SIGTERM, Ctrl-C) or, with `exit_when_idle`, until quiet.
    pub async fn run(mut self, run: &RunOptions) -> Result<Figures> {
        let options = options(self.config)?;
        let subjects = Subjects {
            platform: options.platform.clone(),
            channel: options.channel.clone(),
        };
        let mut source = Source::connect(
            &options.broker,
            &subjects,
            &options,
            &self.resume_positions(),
        )
        .await?;
        tracing::info!(source = %source.describe, open = self.pool.len(), "stream started");
        let started = std::time::Instant::now();
        let mut last_arrival = std::time::Instant::now();
        let mut last_report = std::time::Instant::now();
        let wait = Duration::from_millis(options.batch_wait_ms);
        let mut stop = Box::pin(crate::stream::stopping());
        let mut closer = close::Closer::new(self.config, &options.broker).await?;
        loop {
            let reading = std::time::Instant::now();
            let deliveries = tokio::select! {
                got = source.next(options.batch_max, wait) => got?,
                _ = &mut stop => {
                    tracing::info!("stopping: the batch in hand is committed, the lease given up");
                    break;
                }
            };
            self.figures.phases.reading += reading.elapsed().as_secs_f64();
            if !deliveries.is_empty() {
                last_arrival = std::time::Instant::now();
            }
            self.step(deliveries).await?;
            let closing = std::time::Instant::now();
            let closed = self.close_due(&mut closer).await?;
            self.figures.phases.closing += closing.elapsed().as_secs_f64();
            if last_report.elapsed() >= Duration::from_secs(10) {
                last_report = std::time::Instant::now();
                tracing::info!(
                    records = self.figures.records,
                    pairs = self.figures.pairs,
                    open = self.pool.len(),
                    provisional = self.figures.provisional,
                    rejected = self.figures.rejected,
                    "stream progress"
                );
            }
            if let Some(idle) = run.exit_when_idle {
                if closed == 0 && last_arrival.elapsed() >= idle && !self.day_due() {
                    tracing::info!("quiet for {} s: stopping", idle.as_secs());
                    break;
                }
            }
        }
        self.state.release(&self.holder).await?;
        self.figures.elapsed_secs = started.elapsed().as_secs_f64();
        self.figures.pool_open = self.pool.len();
        self.figures.latency_ms_p50 = self.latencies.quantile(0.50);
        self.figures.latency_ms_p99 = self.latencies.quantile(0.99);
        Ok(self.figures)
    }

    /// One micro-batch: takes `deliveries` in, pairs, expires, and commits.
    pub async fn step(&mut self, deliveries: Vec<Delivery>) -> Result<()> {
        let now = now_micros();
        let mut clock = std::time::Instant::now();
        let mut lap = |phase: &mut f64| {
            let t = std::time::Instant::now();
            *phase += (t - clock).as_secs_f64();
            clock = t;
        };
        let mut commit = Commit {
            now,
            ..Default::default()
        };
        self.figures.batches += 1;
        self.figures.messages += deliveries.len() as u64;
        // Parse; note positions and event times.
        let mut parsed: Vec<(Delivery, Record, Option<String>)> = Vec::new();
        for d in deliveries {
            let entry = self
                .positions
                .entry((d.side, d.position.partition.clone()))
                .or_insert((0, i64::MIN));
            entry.0 = entry.0.max(d.position.offset + 1);
            let raw = || {
                String::from_utf8_lossy(&d.payload)
                    .chars()
                    .take(65_536)
                    .collect()
            };
            let record = match record::parse(d.side, &d.payload) {
                Ok(r) => r,
                Err(why) => {
                    commit
                        .rejected
                        .push((d.side, d.position.clone(), why, raw()));
                    continue;
                }
            };
            let Some(channel) = self.channels.get(&record.channel) else {
                let why = format!(
                    "channel {:?} is not in the config (channels: {})",
                    record.channel,
                    self.channels.keys().cloned().collect::<Vec<_>>().join(", ")
                );
                commit
                    .rejected
                    .push((d.side, d.position.clone(), why, raw()));
                continue;
            };
            entry.1 = entry.1.max(record.event_micros());
            // Quiet time counts from when this consumer read the record (a backlog it is
            // still reading is not quiet, however old its messages).
            self.marks
                .observe(d.side, &d.position.partition, record.event_micros(), now);
            let key = record.match_key(&channel.match_key);
            parsed.push((d, record, key));
        }
        commit.positions = self.positions.clone();
        self.figures.rejected += commit.rejected.len() as u64;
        lap(&mut self.figures.phases.parsing);
        // What the state knows of keys the pool does not hold.
        let unknown: Vec<Key> = {
            let mut v: Vec<Key> = parsed
                .iter()
                .filter_map(|(_, r, k)| Some((r.channel.clone(), k.clone()?)))
                .filter(|k| self.pool.get(k).is_none())
                .collect();
            v.sort();
            v.dedup();
            v
        };
        let mut priors: HashMap<Key, Vec<Prior>> = HashMap::new();
        if !unknown.is_empty() {
            for (k, p) in self.state.priors(&unknown).await? {
                priors.entry(k).or_default().push(p);
            }
        }
        lap(&mut self.figures.phases.lookup);
        // Decide each record in arrival order.
        let mut taken_at: HashMap<i64, usize> = HashMap::new();
        let mut pairs: Vec<(Open, Open)> = Vec::new();
        // The records of each key this batch took in: (side, fingerprint).
        let mut batch_seen: HashMap<Key, Vec<(Side, String)>> = HashMap::new();
        for (d, record, key) in parsed {
            let channel = self.channels[&record.channel];
            let tz = channel.rules.tz;
            let (body, fingerprint) = record.canonical();
            let side = record.side;
            let mut day = record.day(tz);
            let closed = self.closed.get(&record.channel).copied();
            let late = closed.is_some_and(|c| day <= c);
            if let (true, Some(c)) = (late, closed) {
                // Its day is closed: it joins the first open day, as a bill's late row would.
                day = c.succ_opt().unwrap_or(c);
            }
            self.first_day
                .entry(record.channel.clone())
                .and_modify(|f| *f = (*f).min(day))
                .or_insert(day);
            let arrived = d.published.unwrap_or(now).min(now);
            let wait = secs(channel.stream.window_secs + channel.stream.grace_secs);
            let deadline = record.event_micros().saturating_add(wait);
            let mut open = Open {
                id: self.next_id,
                record: record.into(),
                fingerprint,
                position: d.position,
                arrived,
                deadline,
            };
            let Some(k) = key else {
                // No key: nothing can ever pair with it.
                open.deadline = i64::MIN;
                let o = self.provisional(&open, None, now);
                self.take_in(&mut commit, &mut taken_at, (open, body), day, None, o, late);
                continue;
            };
            let pool_key: Key = (open.record.channel.clone(), k.clone());
            let waiting = self.pool.get(&pool_key);
            let earlier = priors.get(&pool_key).map(Vec::as_slice).unwrap_or(&[]);
            let this_batch = batch_seen.get(&pool_key).map(Vec::as_slice).unwrap_or(&[]);
            let beside_waiting = self.pool.others(&pool_key);
            let same_side = |fp: Option<&str>| {
                waiting
                    .iter()
                    .filter(|w| w.record.side == side)
                    .map(|w| w.fingerprint.as_str())
                    .chain(
                        earlier
                            .iter()
                            .filter(|p| p.side == side)
                            .map(|p| p.fingerprint.as_str()),
                    )
                    .chain(
                        this_batch
                            .iter()
                            .chain(beside_waiting)
                            .filter(|(s, _)| *s == side)
                            .map(|(_, f)| f.as_str()),
                    )
                    .any(|f| fp.is_none_or(|fp| fp == f))
            };
            if same_side(Some(&open.fingerprint)) {
                commit.redelivered += 1;
                self.figures.redelivered += 1;
                continue;
            }
            let duplicate = same_side(None);
            let pairs_with_waiting = waiting.is_some_and(|w| w.record.side != side);
            batch_seen
                .entry(pool_key.clone())
                .or_default()
                .push((side, open.fingerprint.clone()));
            if duplicate {
                let category = match side {
                    Side::Channel => reckon_udfs::Category::DuplicateInChannel,
                    Side::Platform => reckon_udfs::Category::DuplicateInPlatform,
                };
                let o = decided(
                    category,
                    self.reason(category, &open, None, channel),
                    None,
                    now,
                    None,
                );
                let o = Outcome {
                    state: RecordState::Duplicate,
                    ..o
                };
                // The key's waiting record (if any) keeps it, for its copies in later batches.
                self.pool.note(&pool_key, side, open.fingerprint.clone());
                self.take_in(
                    &mut commit,
                    &mut taken_at,
                    (open, body),
                    day,
                    Some(k),
                    o,
                    late,
                );
                continue;
            }
            // Taken in open: it pairs with the record waiting in the pool, clears a provisional
            // one of the state, or waits itself.
            self.take_in(
                &mut commit,
                &mut taken_at,
                (open.clone(), body),
                day,
                Some(k),
                Outcome::open(),
                late,
            );
            if pairs_with_waiting {
                let other = self.pool.take(&pool_key).ok_or_else(|| {
                    Error::Other("stream: a waiting record vanished from the pool".into())
                })?;
                // The state was not asked about this key (the pool held it when the batch
                // began): the records of it still to come in this batch learn of the one
                // taken from the pool here and of those beside it, or a copy of one would be
                // taken in a second time.
                let seen = batch_seen.entry(pool_key.clone()).or_default();
                seen.push((other.open.record.side, other.open.fingerprint.clone()));
                seen.extend(other.others);
                pairs.push((open, other.open));
                continue;
            }
            if let Some(p) = earlier
                .iter()
                .find(|p| p.side != side && p.state == RecordState::Provisional)
            {
                // A late counterpart: it clears the provisional difference.
                commit.events.push(event(
                    p.id,
                    now,
                    "cleared",
                    None,
                    format!(
                        "cleared by the {} record at {} {}",
                        side.as_str(),
                        open.position.partition,
                        open.position.offset
                    ),
                ));
                self.figures.cleared += 1;
                let other = Open {
                    id: p.id,
                    record: p.record.clone(),
                    fingerprint: p.fingerprint.clone(),
                    position: p.position.clone(),
                    arrived: p.arrived,
                    deadline: p.deadline,
                };
                pairs.push((open, other));
                continue;
            }
            // It waits knowing the key's other records: the state is not asked about a key
            // the pool holds.
            let mut others: Vec<(Side, String)> = earlier
                .iter()
                .map(|p| (p.side, p.fingerprint.clone()))
                .collect();
            others.extend(
                batch_seen
                    .get(&pool_key)
                    .into_iter()
                    .flatten()
                    .filter(|(s, f)| !(*s == side && *f == open.fingerprint))
                    .cloned(),
            );
            self.pool.insert(pool_key, open, others);
        }
        lap(&mut self.figures.phases.deciding);
        // Classify the pairs, a day of a channel at a time.
        let mut pair_arrivals = Vec::new();
        let mut by_day: BTreeMap<(String, NaiveDate), Vec<(Open, Open)>> = BTreeMap::new();
        for (a, b) in pairs {
            let (c, p) = match a.record.side {
                Side::Channel => (a, b),
                Side::Platform => (b, a),
            };
            let tz = self.channels[&c.record.channel].rules.tz;
            by_day
                .entry((c.record.channel.clone(), c.record.day(tz)))
                .or_default()
                .push((c, p));
        }
        for ((name, day), group) in by_day {
            let channel = self.channels[&name];
            let sided: Vec<_> = group
                .iter()
                .map(|(c, p)| ((&*c.record, &c.position), (&*p.record, &p.position)))
                .collect();
            let verdicts = self.matcher.classify(channel, day, &sided).await?;
            let decided_at = now_micros();
            for (c, p) in &group {
                let key = c.record.match_key(&channel.match_key).unwrap_or_default();
                let v = verdicts.get(&key).ok_or_else(|| {
                    Error::Config(format!(
                        "reconcile.sql returned no row for the pair {key} of {name} on {day}"
                    ))
                })?;
                let latency = decided_at - c.arrived.max(p.arrived);
                pair_arrivals.push(c.arrived.max(p.arrived));
                self.figures.pairs += 1;
                for (me, other) in [(c, p), (p, c)] {
                    let o = Outcome {
                        state: RecordState::Decided,
                        category: Some(v.category.clone()),
                        reason: v.reason.clone(),
                        pair_id: Some(other.id),
                        decided_at: Some(decided_at),
                        latency_us: Some(latency),
                    };
                    set_outcome(&mut commit, &taken_at, me.id, o);
                }
            }
        }
        lap(&mut self.figures.phases.classifying);
        // Expire what waited past its deadline.
        let marks = &self.marks;
        let expired = self.pool.expire(|s| marks.side(s, now));
        for open in expired {
            let o = self.provisional(
                &open,
                open.record
                    .match_key(&self.channels[&open.record.channel].match_key),
                now,
            );
            commit.events.push(event(
                open.id,
                now,
                "provisional",
                Some(&o),
                o.reason.clone().unwrap_or_default(),
            ));
            set_outcome(&mut commit, &taken_at, open.id, o);
        }
        self.figures.records += commit.records.len() as u64;
        self.figures.pool_open_max = self.figures.pool_open_max.max(self.pool.len());
        lap(&mut self.figures.phases.deciding);
        self.state
            .commit(commit, &self.holder, self.epoch, now + self.lease)
            .await?;
        lap(&mut self.figures.phases.committing);
        // A decision counts once it is committed.
        let done = now_micros();
        for arrived in pair_arrivals {
            self.latencies.add(done - arrived);
        }
        Ok(())
    }

    /// Puts a new record (and its text, `Record::canonical`) into the commit with its outcome.
    #[allow(clippy::too_many_arguments)]
    fn take_in(
        &mut self,
        commit: &mut Commit,
        taken_at: &mut HashMap<i64, usize>,
        (open, body): (Open, String),
        day: NaiveDate,
        match_key: Option<String>,
        outcome: Outcome,
        late: bool,
    ) {
        let id = open.id;
        self.next_id += 1;
        if late {
            self.figures.late += 1;
            commit.events.push(event(
                id,
                commit.now,
                "late",
                None,
                format!(
                    "its event day {} was closed already: taken into {day}",
                    open.record
                        .day(self.channels[&open.record.channel].rules.tz)
                ),
            ));
        }
        if outcome.state == RecordState::Provisional {
            commit.events.push(event(
                id,
                commit.now,
                "provisional",
                Some(&outcome),
                outcome.reason.clone().unwrap_or_default(),
            ));
        }
        taken_at.insert(id, commit.records.len());
        commit.records.push(Taken {
            id,
            day,
            match_key,
            open,
            body,
            outcome,
        });
    }

    /// A one-sided record past its deadline: missing on the other side, for now.
    fn provisional(&mut self, open: &Open, key: Option<String>, now: i64) -> Outcome {
        self.figures.provisional += 1;
        let category = match open.record.side {
            Side::Channel => reckon_udfs::Category::MissingInPlatform,
            Side::Platform => reckon_udfs::Category::MissingInChannel,
        };
        let channel = self.channels[&open.record.channel];
        let reason = format!(
            "{} (provisional: no {} record by the stream's deadline; a late one clears it)",
            self.reason(category, open, key.as_deref(), channel),
            open.record.side.other().as_str()
        );
        let o = decided(category, reason, None, now, None);
        Outcome {
            state: RecordState::Provisional,
            ..o
        }
    }

    /// The batch job's sentence for a one-sided `category` of `open`.
    fn reason(
        &self,
        category: reckon_udfs::Category,
        open: &Open,
        key: Option<&str>,
        channel: &Channel,
    ) -> String {
        let mantissa = |d: rust_decimal::Decimal| {
            let mut d = d;
            d.rescale(2);
            d.mantissa()
        };
        let key = key
            .map(str::to_string)
            .or_else(|| open.record.match_key(&channel.match_key));
        let (c, p) = match open.record.side {
            Side::Channel => (Some(&open.record), None),
            Side::Platform => (None, Some(&open.record)),
        };
        reckon_udfs::reason(
            category,
            &reckon_udfs::ReasonFacts {
                match_key: key.as_deref(),
                channel_amount: c.map(|r| mantissa(r.amount)),
                platform_amount: p.map(|r| mantissa(r.amount)),
                channel_status: c.map(|r| r.status.as_str()),
                platform_status: p.map(|r| r.status.as_str()),
                channel_fee: c.and_then(|r| r.fee).map(mantissa),
                ..Default::default()
            },
        )
    }

    /// Whether some channel's next day is due to close.
    fn day_due(&self) -> bool {
        let now = now_micros();
        self.channels
            .values()
            .any(|c| self.next_to_close(c, now).is_some())
    }

    /// The channel's next day to close, when both watermarks have passed its end plus grace.
    fn next_to_close(&self, channel: &Channel, now: i64) -> Option<NaiveDate> {
        let next = match self.closed.get(&channel.name) {
            Some(c) => c.succ_opt()?,
            None => *self.first_day.get(&channel.name)?,
        };
        let end = reckon_udfs::end_of_day_micros(next, channel.rules.tz)?
            .saturating_add(secs(channel.stream.grace_secs));
        (self.marks.both(now)? > end).then_some(next)
    }

    /// Closes every day that is due; how many.
    async fn close_due(&mut self, closer: &mut close::Closer<'_>) -> Result<usize> {
        let mut n = 0;
        let names: Vec<String> = self.channels.keys().cloned().collect();
        for name in names {
            let channel = self.channels[&name];
            while let Some(day) = self.next_to_close(channel, now_micros()) {
                let run_id = closer.close(channel, day, &self.state).await?;
                self.state.closed(&name, day, now_micros(), &run_id).await?;
                self.closed.insert(name.clone(), day);
                self.figures.days_closed.push(format!("{name} {day}"));
                tracing::info!(channel = %name, %day, run_id = %run_id, "day closed");
                n += 1;
            }
        }
        Ok(n)
    }
}

/// An entry of a record's history at `at`, with the category of `o` when given.
fn event(
    record_id: i64,
    at: i64,
    event: &'static str,
    o: Option<&Outcome>,
    detail: String,
) -> Event {
    Event {
        record_id,
        at,
        event,
        category: o.and_then(|o| o.category.clone()),
        detail,
    }
}

/// A decided outcome.
fn decided(
    category: reckon_udfs::Category,
    reason: String,
    pair_id: Option<i64>,
    now: i64,
    latency: Option<i64>,
) -> Outcome {
    Outcome {
        state: RecordState::Decided,
        category: Some(category.as_str().to_string()),
        reason: Some(reason),
        pair_id,
        decided_at: Some(now),
        latency_us: latency,
    }
}

/// Sets record `id`'s outcome: in the batch's new records when it is one, else as a change.
fn set_outcome(commit: &mut Commit, taken_at: &HashMap<i64, usize>, id: i64, o: Outcome) {
    match taken_at.get(&id) {
        Some(i) => commit.records[*i].outcome = o,
        None => commit.changed.push((id, o)),
    }
}

/// The `[stream]` table, or a configuration error saying how to add it.
pub fn options(config: &Config) -> Result<StreamOptions> {
    config.stream.clone().ok_or_else(|| {
        Error::Config(
            "reckon stream needs a [stream] table in the config: broker = \"nats://HOST:PORT\" (or \"kafka://HOST:PORT\"), platform = SUBJECT, channel = SUBJECT"
                .into(),
        )
    })
}

/// Resolves when the process is asked to stop (SIGTERM or Ctrl-C).
pub async fn stopping() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = term => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}
