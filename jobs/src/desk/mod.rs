//! The review desk's state (issue #20): the decisions people take on differences, their
//! comments, and the audit of every change. A difference is followed by its channel and its
//! ageing key (`stages::ageing`), which does not change across days or reruns, so a decision
//! stays with its difference. The differences themselves are read from the committed Parquet,
//! never copied here.
//!
//! Every change runs in one write transaction ([`crate::db::Db::write`]): it checks the version the
//! person saw (optimistic concurrency: a second person deciding at once is refused and shown
//! the first decision), writes the change, and appends its audit entry ([`audit`]).

pub mod access;
pub mod audit;
pub mod detail;
pub mod exchange;
pub mod overview;
pub mod query;
pub mod runs;
pub mod snapshot;
pub mod web;

use std::fmt;
use std::path::Path;
use std::str::FromStr;

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::db::{self, Db, Tx, Value};
use crate::error::{Error, Result};

/// What a person decides about a difference.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    PlatformWins,
    ChannelWins,
    WriteOff,
    SupportedTiming,
    Ignore,
    Reopen,
}

impl Action {
    pub const ALL: [Action; 6] = [
        Action::PlatformWins,
        Action::ChannelWins,
        Action::WriteOff,
        Action::SupportedTiming,
        Action::Ignore,
        Action::Reopen,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Action::PlatformWins => "platform_wins",
            Action::ChannelWins => "channel_wins",
            Action::WriteOff => "write_off",
            Action::SupportedTiming => "supported_timing",
            Action::Ignore => "ignore",
            Action::Reopen => "reopen",
        }
    }

    /// What the action means, shown before it is submitted.
    pub fn meaning(self) -> &'static str {
        match self {
            Action::PlatformWins => "The platform's record is right: the channel's side is corrected or claimed back outside reckon. The difference closes.",
            Action::ChannelWins => "The channel's record is right: the platform's order is corrected to match it. The difference closes.",
            Action::WriteOff => "The difference is accepted as a loss or gain and booked as such. The difference closes.",
            Action::SupportedTiming => "The other side is expected on a later day (a timing difference with evidence). The difference closes; it is reopened by hand if the record never comes.",
            Action::Ignore => "The difference is not a real one (a test order, a known data issue). The difference closes.",
            Action::Reopen => "The earlier decision is withdrawn: the difference is open again.",
        }
    }

    /// Whether the difference is closed by this action (all but `reopen`).
    pub fn closes(self) -> bool {
        self != Action::Reopen
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Action {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        named(s, &Action::ALL, Action::name, "action")
    }
}

/// The one of `all` whose `name` is `s`, or why not (naming `what` and every choice).
fn named<T: Copy>(
    s: &str,
    all: &[T],
    name: fn(T) -> &'static str,
    what: &str,
) -> std::result::Result<T, String> {
    all.iter()
        .copied()
        .find(|v| name(*v) == s.trim())
        .ok_or_else(|| {
            let choices: Vec<&str> = all.iter().map(|v| name(*v)).collect();
            format!("unknown {what} {s:?}: one of {}", choices.join(", "))
        })
}

/// What a user may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Reads every page.
    Viewer,
    /// Also decides, comments and assigns.
    Resolver,
    /// Also approves or rejects another person's decision above the four-eyes amount.
    Approver,
    /// Everything.
    Admin,
}

impl Role {
    pub const ALL: [Role; 4] = [Role::Viewer, Role::Resolver, Role::Approver, Role::Admin];

    pub fn name(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Resolver => "resolver",
            Role::Approver => "approver",
            Role::Admin => "admin",
        }
    }
}

impl FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        named(s, &Role::ALL, Role::name, "role")
    }
}

/// Who is acting.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct User {
    pub name: String,
    pub role: Role,
}

impl User {
    /// Whether the user's role is `needs` or above; the refusal if not.
    pub fn may(&self, needs: Role) -> Outcome<()> {
        if self.role >= needs {
            Ok(())
        } else {
            Err(Refusal::NotAllowed {
                role: self.role,
                needs,
            })
        }
    }
}

/// Where a decision stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Above the four-eyes amount: waits for an approver other than its author.
    PendingApproval,
    /// In force.
    Effective,
    /// An approver refused it.
    Rejected,
    /// A later decision on the same difference replaced it.
    Superseded,
}

impl Status {
    pub const ALL: [Status; 4] = [
        Status::PendingApproval,
        Status::Effective,
        Status::Rejected,
        Status::Superseded,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Status::PendingApproval => "pending_approval",
            Status::Effective => "effective",
            Status::Rejected => "rejected",
            Status::Superseded => "superseded",
        }
    }
}

impl FromStr for Status {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        named(s, &Status::ALL, Status::name, "decision status")
    }
}

/// The difference a person decides, as the desk showed it (what a rerun may later change).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Difference {
    pub channel: String,
    pub ageing_key: String,
    pub category: String,
    /// Its records' match key (what places it in a bucket of the reconciliation), if any.
    pub match_key: Option<String>,
    pub channel_amount: Option<Decimal>,
    pub platform_amount: Option<Decimal>,
}

impl Difference {
    /// The amount the four-eyes rule weighs: the larger side, by size.
    pub fn weight(&self) -> Decimal {
        [self.channel_amount, self.platform_amount]
            .into_iter()
            .flatten()
            .map(|a| a.abs())
            .max()
            .unwrap_or_default()
    }
}

/// One decision of many ([`Desk::decide_all`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub diff: Difference,
    /// The version the person saw; None (a bulk decision): any, if it is not decided yet.
    pub seen: Option<i64>,
    pub action: Action,
    pub comment: String,
}

/// A decision, as kept.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Decision {
    pub id: i64,
    pub channel: String,
    pub ageing_key: String,
    pub action: Action,
    pub comment: String,
    pub decided_by: String,
    pub decided_at: String,
    pub status: Status,
    pub reviewed_by: Option<String>,
    pub reviewed_at: Option<String>,
    /// The difference when it was decided.
    pub category: String,
    pub match_key: Option<String>,
    pub channel_amount: Option<Decimal>,
    pub platform_amount: Option<Decimal>,
}

/// A comment on a difference.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Comment {
    pub id: i64,
    pub author: String,
    pub at: String,
    pub text: String,
}

/// A difference's place on the desk.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Default)]
pub struct State {
    /// Changes made to it so far (0: never touched). A change names the version it was made
    /// on; another one in between refuses it.
    pub version: i64,
    /// The decision it stands under: the last one taken, whatever its status.
    pub decision: Option<Decision>,
    pub assignee: Option<String>,
}

impl State {
    /// Its decision waits for an approver.
    pub fn pending(&self) -> bool {
        self.decision
            .as_ref()
            .is_some_and(|d| d.status == Status::PendingApproval)
    }

    /// Closed by a decision in force.
    pub fn decided(&self) -> bool {
        self.decision
            .as_ref()
            .is_some_and(|d| d.status == Status::Effective && d.action.closes())
    }
}

/// Why a change was not made (the person is told; nothing was written).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "refused", rename_all = "snake_case")]
pub enum Refusal {
    /// Someone changed the difference since this person saw it: here is what it is now.
    Stale { seen: i64, current: Box<State> },
    /// A comment is required.
    NoComment,
    /// The user's role does not allow it.
    NotAllowed { role: Role, needs: Role },
    /// Four eyes: the author of a decision cannot approve it.
    OwnDecision,
    /// The decision is not waiting for approval.
    NotPending { status: Status },
    /// No such decision.
    NoDecision { id: i64 },
    /// Nothing to reopen: the difference is open.
    NothingToReopen,
    /// A bulk decision leaves a decided difference (or one waiting for approval) alone.
    AlreadyDecided { current: Box<State> },
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::Stale { seen, current } => write!(
                f,
                "changed by someone else since you saw it (version {seen}, now {}){}",
                current.version,
                current.decision.as_ref().map_or(String::new(), |d| format!(
                    ": {} by {} at {} ({})",
                    d.action,
                    d.decided_by,
                    d.decided_at,
                    d.status.name()
                ))
            ),
            Refusal::NoComment => f.write_str("a comment is required"),
            Refusal::NotAllowed { role, needs } => write!(
                f,
                "a {} may not do this: it needs the {} role",
                role.name(),
                needs.name()
            ),
            Refusal::OwnDecision => f.write_str(
                "four eyes: a decision must be approved by someone other than its author",
            ),
            Refusal::NotPending { status } => {
                write!(
                    f,
                    "the decision is not waiting for approval (it is {})",
                    status.name()
                )
            }
            Refusal::NoDecision { id } => write!(f, "no decision {id}"),
            Refusal::NothingToReopen => f.write_str("the difference is open: nothing to reopen"),
            Refusal::AlreadyDecided { current } => write!(
                f,
                "already decided{}",
                current.decision.as_ref().map_or(String::new(), |d| format!(
                    ": {} by {} ({})",
                    d.action,
                    d.decided_by,
                    d.status.name()
                ))
            ),
        }
    }
}

/// A change the desk made or refused.
pub type Outcome<T> = std::result::Result<T, Refusal>;

/// `channel/ageing key`: what the audit names a difference by.
pub fn subject(channel: &str, ageing_key: &str) -> String {
    format!("{channel}/{ageing_key}")
}

/// Now, RFC 3339 in UTC with microseconds.
pub fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

fn money(v: &Value) -> Result<Option<Decimal>> {
    v.text()
        .map(|t| {
            Decimal::from_str(t)
                .map_err(|e| Error::Other(format!("desk database: amount {t:?}: {e}")))
        })
        .transpose()
}

const DECISION_COLUMNS: &str = "id, channel, ageing_key, action, comment, decided_by, decided_at, \
     status, reviewed_by, reviewed_at, category, match_key, channel_amount, platform_amount";

fn decision(r: &[Value]) -> Result<Decision> {
    let text = |i: usize| r[i].text().unwrap_or_default().to_string();
    let opt = |i: usize| r[i].text().map(str::to_string);
    Ok(Decision {
        id: r[0].int().unwrap_or_default(),
        channel: text(1),
        ageing_key: text(2),
        action: text(3).parse().map_err(Error::Other)?,
        comment: text(4),
        decided_by: text(5),
        decided_at: text(6),
        status: text(7).parse().map_err(Error::Other)?,
        reviewed_by: opt(8),
        reviewed_at: opt(9),
        category: text(10),
        match_key: opt(11),
        channel_amount: money(&r[12])?,
        platform_amount: money(&r[13])?,
    })
}

/// The desk's SQLite file beside the config, when `[desk] database` is not set.
pub const DEFAULT_DATABASE: &str = "desk.sqlite";

/// The desk's settings (`[desk]` in reckon.toml).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeskConfig {
    /// A SQLite file (a path, relative to the config file; default `desk.sqlite` beside it) or
    /// a `postgres://user@host:port/db` URL (the password from `PGPASSWORD`).
    pub database: Option<String>,
    /// Decisions on a difference larger than this amount (either side, by size) need a second
    /// person's approval before they take effect. Absent: none do.
    pub four_eyes_above: Option<Decimal>,
    /// Connect timeout for PostgreSQL, in seconds (default 10).
    pub timeout_secs: Option<u64>,
    /// The users file (`name:role:argon2 hash` lines; default `desk-users` beside the
    /// config). `reckon desk user add` writes it.
    pub users: Option<String>,
    /// The API tokens file (`name:role:sha256` lines; default `desk-tokens` beside the
    /// config). `reckon desk token add` writes it.
    pub tokens: Option<String>,
    /// Addresses of reverse proxies whose user header is believed (default: none).
    #[serde(default)]
    pub trusted_proxies: Vec<std::net::IpAddr>,
    /// The header such a proxy names its user in (default `X-Forwarded-User`).
    pub proxy_header: Option<String>,
    /// Where `reckon serve` listens (default `127.0.0.1:8080`).
    pub listen: Option<String>,
    /// How long a login lasts, in hours (default 12).
    pub session_hours: Option<u64>,
}

impl DeskConfig {
    /// Who may use the desk: the users and tokens files and the trusted proxies.
    pub fn access(&self, base_dir: &Path) -> Result<access::Access> {
        access::Access::load(
            &self.users_file(base_dir),
            &self.tokens_file(base_dir),
            self.trusted_proxies.clone(),
            self.proxy_header
                .as_deref()
                .unwrap_or(access::DEFAULT_PROXY_HEADER),
        )
    }

    /// The users file's path.
    pub fn users_file(&self, base_dir: &Path) -> std::path::PathBuf {
        access::beside(base_dir, self.users.as_deref(), access::DEFAULT_USERS)
    }

    /// The tokens file's path.
    pub fn tokens_file(&self, base_dir: &Path) -> std::path::PathBuf {
        access::beside(base_dir, self.tokens.as_deref(), access::DEFAULT_TOKENS)
    }
}

/// Where a reconcile takes the decisions in force from.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Source {
    /// The desk's database, when there is one (a configured `[desk] database`, or the default
    /// SQLite file once it exists).
    #[default]
    Desk,
    /// The `decisions.parquet` a committed day recorded (a replay), or none.
    Recorded(Option<std::path::PathBuf>),
}

/// The desk: its database and its rules.
#[derive(Debug, Clone)]
pub struct Desk {
    db: Db,
    four_eyes_above: Option<Decimal>,
}

impl Desk {
    /// Opens the desk the config names (creating its tables the first time).
    pub async fn open(cfg: &DeskConfig, base_dir: &Path) -> Result<Desk> {
        let database = cfg.database.as_deref().unwrap_or(DEFAULT_DATABASE);
        let timeout = cfg.timeout_secs.unwrap_or(10);
        let db = Db::open(database, base_dir, timeout, crate::db::DESK).await?;
        Ok(Desk {
            db,
            four_eyes_above: cfg.four_eyes_above,
        })
    }

    /// The desk a config names, if it has one: a configured database, or the default SQLite
    /// file when it exists (a reconcile never creates a desk).
    pub async fn existing(cfg: &DeskConfig, base_dir: &Path) -> Result<Option<Desk>> {
        if cfg.database.is_none() && !base_dir.join(DEFAULT_DATABASE).exists() {
            return Ok(None);
        }
        Desk::open(cfg, base_dir).await.map(Some)
    }

    /// The amount above which a decision needs approval.
    pub fn four_eyes_above(&self) -> Option<Decimal> {
        self.four_eyes_above
    }

    /// A difference's state.
    pub async fn state(&self, channel: &str, key: &str) -> Result<State> {
        let mut tx = self.db.read().await?;
        let s = state_in(&mut tx, channel, key).await;
        tx.rollback().await;
        s
    }

    /// Every decision taken on a difference, oldest first.
    pub async fn decisions(&self, channel: &str, key: &str) -> Result<Vec<Decision>> {
        let sql = format!(
            "SELECT {DECISION_COLUMNS} FROM desk_decisions
             WHERE channel = $1 AND ageing_key = $2 ORDER BY id"
        );
        (self.select(&sql, &[channel.into(), key.into()]).await?)
            .iter()
            .map(|r| decision(r))
            .collect()
    }

    /// The ageing keys of the differences assigned to `assignee` and, with `decided`, of
    /// those closed by a decision in force (`Some(true)`) or not (`Some(false)`: every
    /// difference the desk holds that is not closed; one it never saw is not listed).
    pub async fn keys(
        &self,
        channels: &[String],
        assignee: Option<&str>,
        decided: Option<bool>,
    ) -> Result<Vec<String>> {
        let closed = format!(
            "(d.status = '{}' AND d.action <> '{}')",
            Status::Effective.name(),
            Action::Reopen.name()
        );
        let mut sql = String::from(
            "SELECT s.ageing_key, s.channel FROM desk_state s
             LEFT JOIN desk_decisions d ON d.id = s.decision_id WHERE 1 = 1",
        );
        let mut params: Vec<Value> = Vec::new();
        if let Some(a) = assignee {
            params.push(a.into());
            sql.push_str(&format!(" AND s.assignee = ${}", params.len()));
        }
        match decided {
            Some(true) => sql.push_str(&format!(" AND {closed}")),
            Some(false) => sql.push_str(&format!(" AND NOT COALESCE({closed}, FALSE)")),
            None => {}
        }
        Ok(self
            .select(&sql, &params)
            .await?
            .iter()
            .filter(|r| channels.iter().any(|c| Some(c.as_str()) == r[1].text()))
            .filter_map(|r| r[0].text().map(str::to_string))
            .collect())
    }

    /// Every difference of `channel` the desk holds, by ageing key (one never touched is
    /// absent: its state is the default).
    pub async fn states(&self, channel: &str) -> Result<std::collections::HashMap<String, State>> {
        let columns: Vec<String> = DECISION_COLUMNS
            .split(", ")
            .map(|c| format!("d.{c}"))
            .collect();
        let sql = format!(
            "SELECT s.ageing_key, s.version, s.assignee, {} FROM desk_state s
             LEFT JOIN desk_decisions d ON d.id = s.decision_id WHERE s.channel = $1",
            columns.join(", ")
        );
        let mut out = std::collections::HashMap::new();
        for r in self.select(&sql, &[channel.into()]).await? {
            let decision = match r[3].int() {
                Some(_) => Some(decision(&r[3..])?),
                None => None,
            };
            let state = State {
                version: r[1].int().unwrap_or_default(),
                decision,
                assignee: r[2].text().map(str::to_string),
            };
            out.insert(r[0].text().unwrap_or_default().to_string(), state);
        }
        Ok(out)
    }

    /// The rows of one query, in a transaction of its own.
    async fn select(&self, sql: &str, params: &[Value]) -> Result<Vec<db::Row>> {
        let mut tx = self.db.read().await?;
        let rows = tx.query(sql, params).await;
        tx.rollback().await;
        rows
    }

    /// Decides `diff`, seen at version `seen`.
    pub async fn decide(
        &self,
        user: &User,
        diff: &Difference,
        seen: i64,
        action: Action,
        comment: &str,
    ) -> Result<Outcome<Decision>> {
        let mut tx = self.db.write().await?;
        let done = self
            .decide_in(&mut tx, user, diff, Some(seen), action, comment)
            .await?;
        if done.is_ok() {
            tx.commit().await?;
        }
        Ok(done)
    }

    /// Makes many decisions at once (a bulk decision, an import) in one transaction: each
    /// change is checked as [`Desk::decide`] checks one, a refused one writes nothing, and the
    /// rest go ahead. Its outcomes, in the order of `changes`.
    pub async fn decide_all(
        &self,
        user: &User,
        changes: &[Change],
    ) -> Result<Vec<Outcome<Decision>>> {
        let mut tx = self.db.write().await?;
        let mut out = Vec::with_capacity(changes.len());
        for c in changes {
            out.push(
                self.decide_in(&mut tx, user, &c.diff, c.seen, c.action, &c.comment)
                    .await?,
            );
        }
        if out.iter().any(|o| o.is_ok()) {
            tx.commit().await?;
        }
        Ok(out)
    }

    /// [`Desk::decide`] in the transaction `tx` (nothing written when refused). `seen` None:
    /// any version, as long as the difference is not decided (a bulk decision).
    async fn decide_in(
        &self,
        tx: &mut Tx<'_>,
        user: &User,
        diff: &Difference,
        seen: Option<i64>,
        action: Action,
        comment: &str,
    ) -> Result<Outcome<Decision>> {
        if let Err(r) = user.may(Role::Resolver) {
            return Ok(Err(r));
        }
        if comment.trim().is_empty() {
            return Ok(Err(Refusal::NoComment));
        }
        let current = state_in(tx, &diff.channel, &diff.ageing_key).await?;
        let seen = match seen {
            Some(seen) => seen,
            None if current.decided() || current.pending() => {
                return Ok(Err(Refusal::AlreadyDecided {
                    current: Box::new(current),
                }))
            }
            None => current.version,
        };
        if current.version != seen {
            return Ok(Err(Refusal::Stale {
                seen,
                current: Box::new(current),
            }));
        }
        let open = !current.decided() && !current.pending();
        if action == Action::Reopen && open {
            return Ok(Err(Refusal::NothingToReopen));
        }
        let status = match self.four_eyes_above {
            Some(limit) if action.closes() && diff.weight() > limit => Status::PendingApproval,
            _ => Status::Effective,
        };
        let decided = Decision {
            id: next_id(tx, "desk_decisions").await?,
            channel: diff.channel.clone(),
            ageing_key: diff.ageing_key.clone(),
            action,
            comment: comment.to_string(),
            decided_by: user.name.clone(),
            decided_at: now(),
            status,
            reviewed_by: None,
            reviewed_at: None,
            category: diff.category.clone(),
            match_key: diff.match_key.clone(),
            channel_amount: diff.channel_amount,
            platform_amount: diff.platform_amount,
        };
        let values = decision_values(&decided);
        let seq = audit::append(
            tx,
            &decided.decided_at,
            &user.name,
            "decide",
            &subject(&diff.channel, &diff.ageing_key),
            &audit::detail(&[
                ("decision", decided.id.into()),
                ("action", action.name().into()),
                ("comment", comment.into()),
                ("status", status.name().into()),
                ("version", (seen + 1).into()),
                ("category", diff.category.as_str().into()),
                ("channel_amount", text_of(diff.channel_amount)),
                ("platform_amount", text_of(diff.platform_amount)),
            ]),
        )
        .await?;
        if let Some(prev) = &current.decision {
            if matches!(prev.status, Status::Effective | Status::PendingApproval) {
                tx.exec(
                    "UPDATE desk_decisions SET status = $1 WHERE id = $2",
                    &[Status::Superseded.name().into(), prev.id.into()],
                )
                .await?;
            }
        }
        tx.exec(
            &format!(
                "INSERT INTO desk_decisions ({DECISION_COLUMNS}, audit_seq)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)"
            ),
            &[values, vec![seq.into()]].concat(),
        )
        .await?;
        let (channel, key) = (&diff.channel, &diff.ageing_key);
        set_state(tx, channel, key, seen, Some(decided.id), seq).await?;
        Ok(Ok(decided))
    }

    /// An approver approves (or rejects) decision `id`, pending since version `seen` of its
    /// difference.
    pub async fn review(
        &self,
        user: &User,
        id: i64,
        seen: i64,
        approve: bool,
        comment: &str,
    ) -> Result<Outcome<Decision>> {
        if let Err(r) = user.may(Role::Approver) {
            return Ok(Err(r));
        }
        if !approve && comment.trim().is_empty() {
            return Ok(Err(Refusal::NoComment));
        }
        let mut tx = self.db.write().await?;
        let Some(d) = decision_by_id(&mut tx, id).await? else {
            return Ok(Err(Refusal::NoDecision { id }));
        };
        let current = state_in(&mut tx, &d.channel, &d.ageing_key).await?;
        if current.version != seen {
            return Ok(Err(Refusal::Stale {
                seen,
                current: Box::new(current),
            }));
        }
        if d.status != Status::PendingApproval {
            return Ok(Err(Refusal::NotPending { status: d.status }));
        }
        if d.decided_by == user.name {
            return Ok(Err(Refusal::OwnDecision));
        }
        let status = if approve {
            Status::Effective
        } else {
            Status::Rejected
        };
        let at = now();
        let subject = subject(&d.channel, &d.ageing_key);
        let seq = audit::append(
            &mut tx,
            &at,
            &user.name,
            if approve { "approve" } else { "reject" },
            &subject,
            &audit::detail(&[
                ("decision", id.into()),
                ("comment", comment.into()),
                ("version", (seen + 1).into()),
            ]),
        )
        .await?;
        tx.exec(
            "UPDATE desk_decisions SET status = $1, reviewed_by = $2, reviewed_at = $3 WHERE id = $4",
            &[
                status.name().into(),
                user.name.as_str().into(),
                at.as_str().into(),
                id.into(),
            ],
        )
        .await?;
        set_state(&mut tx, &d.channel, &d.ageing_key, seen, Some(id), seq).await?;
        tx.commit().await?;
        Ok(Ok(Decision {
            status,
            reviewed_by: Some(user.name.clone()),
            reviewed_at: Some(at),
            ..d
        }))
    }

    /// Adds a comment to a difference (a resolver's; it does not change the version, so a
    /// comment never makes someone else's decision stale).
    pub async fn comment(
        &self,
        user: &User,
        channel: &str,
        key: &str,
        text: &str,
    ) -> Result<Outcome<Comment>> {
        if let Err(r) = user.may(Role::Resolver) {
            return Ok(Err(r));
        }
        if text.trim().is_empty() {
            return Ok(Err(Refusal::NoComment));
        }
        let mut tx = self.db.write().await?;
        let id = next_id(&mut tx, "desk_comments").await?;
        let at = now();
        let seq = audit::append(
            &mut tx,
            &at,
            &user.name,
            "comment",
            &subject(channel, key),
            &audit::detail(&[("comment", id.into()), ("text", text.into())]),
        )
        .await?;
        tx.exec(
            "INSERT INTO desk_comments (id, channel, ageing_key, author, at, text, audit_seq)
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
            &[
                id.into(),
                channel.into(),
                key.into(),
                user.name.as_str().into(),
                at.as_str().into(),
                text.into(),
                seq.into(),
            ],
        )
        .await?;
        tx.commit().await?;
        Ok(Ok(Comment {
            id,
            author: user.name.clone(),
            at,
            text: text.to_string(),
        }))
    }

    /// A difference's comments, oldest first.
    pub async fn comments(&self, channel: &str, key: &str) -> Result<Vec<Comment>> {
        let rows = self
            .select(
                "SELECT id, author, at, text FROM desk_comments
                 WHERE channel = $1 AND ageing_key = $2 ORDER BY id",
                &[channel.into(), key.into()],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|r| Comment {
                id: r[0].int().unwrap_or_default(),
                author: r[1].text().unwrap_or_default().to_string(),
                at: r[2].text().unwrap_or_default().to_string(),
                text: r[3].text().unwrap_or_default().to_string(),
            })
            .collect())
    }

    /// Assigns a difference seen at version `seen` to `assignee` (none: unassigned).
    pub async fn assign(
        &self,
        user: &User,
        channel: &str,
        key: &str,
        seen: i64,
        assignee: Option<&str>,
    ) -> Result<Outcome<State>> {
        if let Err(r) = user.may(Role::Resolver) {
            return Ok(Err(r));
        }
        let mut tx = self.db.write().await?;
        let current = state_in(&mut tx, channel, key).await?;
        if current.version != seen {
            return Ok(Err(Refusal::Stale {
                seen,
                current: Box::new(current),
            }));
        }
        let at = now();
        let seq = audit::append(
            &mut tx,
            &at,
            &user.name,
            "assign",
            &subject(channel, key),
            &audit::detail(&[
                ("assignee", assignee.into()),
                ("version", (seen + 1).into()),
            ]),
        )
        .await?;
        let decision = current.decision.as_ref().map(|d| d.id);
        set_state(&mut tx, channel, key, seen, decision, seq).await?;
        tx.exec(
            "UPDATE desk_state SET assignee = $1 WHERE channel = $2 AND ageing_key = $3",
            &[assignee.into(), channel.into(), key.into()],
        )
        .await?;
        let after = state_in(&mut tx, channel, key).await?;
        tx.commit().await?;
        Ok(Ok(after))
    }

    /// Checks the audit chain ([`audit::verify`]).
    pub async fn verify_audit(&self) -> Result<audit::Verdict> {
        let mut tx = self.db.read().await?;
        let v = audit::verify(&mut tx).await;
        tx.rollback().await;
        v
    }

    /// The database, for what reads it directly (the tests, `reckon audit`).
    pub fn db(&self) -> &Db {
        &self.db
    }
}

/// An amount as the desk keeps it: its decimal text.
fn text_of(amount: Option<Decimal>) -> Value {
    Value::from(amount.map(|a| a.to_string()))
}

/// A decision's values in [`DECISION_COLUMNS`]' order.
fn decision_values(d: &Decision) -> Vec<Value> {
    vec![
        d.id.into(),
        d.channel.as_str().into(),
        d.ageing_key.as_str().into(),
        d.action.name().into(),
        d.comment.as_str().into(),
        d.decided_by.as_str().into(),
        d.decided_at.as_str().into(),
        d.status.name().into(),
        d.reviewed_by.clone().into(),
        d.reviewed_at.clone().into(),
        d.category.as_str().into(),
        d.match_key.clone().into(),
        text_of(d.channel_amount),
        text_of(d.platform_amount),
    ]
}

/// Decision `id`, if there is one.
async fn decision_by_id(tx: &mut Tx<'_>, id: i64) -> Result<Option<Decision>> {
    let sql = format!("SELECT {DECISION_COLUMNS} FROM desk_decisions WHERE id = $1");
    let rows = tx.query(&sql, &[id.into()]).await?;
    rows.first().map(|r| decision(r)).transpose()
}

/// The next id of `table` (writes hold the writer lock, so no other transaction takes it).
async fn next_id(tx: &mut Tx<'_>, table: &str) -> Result<i64> {
    let rows = tx
        .query(&format!("SELECT MAX(id) FROM {table}"), &[])
        .await?;
    Ok(rows.first().and_then(|r| r[0].int()).unwrap_or(0) + 1)
}

async fn state_in(tx: &mut Tx<'_>, channel: &str, key: &str) -> Result<State> {
    let rows = tx
        .query(
            "SELECT version, decision_id, assignee FROM desk_state
             WHERE channel = $1 AND ageing_key = $2",
            &[channel.into(), key.into()],
        )
        .await?;
    let Some(r) = rows.first() else {
        return Ok(State::default());
    };
    let decision = match r[1].int() {
        Some(id) => decision_by_id(tx, id).await?,
        None => None,
    };
    Ok(State {
        version: r[0].int().unwrap_or_default(),
        decision,
        assignee: r[2].text().map(str::to_string),
    })
}

/// Moves a difference from version `seen` to the next, under `decision`, by the change of
/// audit entry `seq`.
async fn set_state(
    tx: &mut Tx<'_>,
    channel: &str,
    key: &str,
    seen: i64,
    decision: Option<i64>,
    seq: i64,
) -> Result<()> {
    let changed = tx
        .exec(
            "UPDATE desk_state SET version = $1, decision_id = $2, audit_seq = $3
             WHERE channel = $4 AND ageing_key = $5 AND version = $6",
            &[
                (seen + 1).into(),
                decision.into(),
                seq.into(),
                channel.into(),
                key.into(),
                seen.into(),
            ],
        )
        .await?;
    if changed == 0 {
        tx.exec(
            "INSERT INTO desk_state (channel, ageing_key, version, decision_id, assignee, audit_seq)
             VALUES ($1, $2, $3, $4, NULL, $5)",
            &[
                channel.into(),
                key.into(),
                (seen + 1).into(),
                decision.into(),
                seq.into(),
            ],
        )
        .await?;
    }
    Ok(())
}
