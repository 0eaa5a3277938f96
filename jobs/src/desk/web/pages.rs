//! The desk's pages (Overview, Differences, Detail, Runs) and the changes posted from them.
//! Each handler reads through the desk's typed parts and hands its template values ready to
//! print: amounts and dates are formatted here, never in a template.

use std::collections::BTreeMap;

use askama::Template;
use axum::extract::{Path, RawQuery, State};
use axum::response::{IntoResponse, Redirect, Response};
use axum::Json;
use chrono::NaiveDate;
use clap::ValueEnum;
use rust_decimal::Decimal;
use serde::Deserialize;

use super::auth::{Caller, Posted};
use super::{html, Shared, WebError};
use crate::desk::query::{differences as list, Filter, Keys, Page, Sort};
use crate::desk::{detail as one, overview as view, runs as days, Action, Role, Status};
use crate::records::DayStatus;
use reckon_udfs::Category;

type Web<T> = std::result::Result<T, WebError>;

/// What every page's frame shows: who is logged in, the CSRF token, a message.
pub struct Chrome {
    pub user: String,
    pub role: &'static str,
    pub csrf: String,
    pub flash: Option<String>,
}

impl Chrome {
    pub fn of(c: &Caller, flash: Option<String>) -> Chrome {
        Chrome {
            user: c.user.name.clone(),
            role: c.user.role.name(),
            csrf: c.csrf.clone(),
            flash,
        }
    }
}

fn show(d: Option<Decimal>) -> String {
    d.map_or_else(String::new, |d| d.to_string())
}

fn parse_date(s: &str, what: &str) -> Web<NaiveDate> {
    crate::config::parse_date(s.trim()).map_err(|e| WebError::bad(format!("{what}: {e}")))
}

/// The latest day any channel has a run for (the pages' default end), else today (UTC).
async fn latest_day(app: &Shared) -> Web<NaiveDate> {
    let mut latest = None;
    for ch in &app.channels {
        let dates = app.store.dates("runs", ch).await?;
        latest = latest.max(dates.into_iter().max());
    }
    Ok(latest.unwrap_or_else(|| chrono::Utc::now().date_naive()))
}

/// The page's last day: `to` when given, else [`latest_day`].
async fn to_or_latest(app: &Shared, to: Option<&str>) -> Web<NaiveDate> {
    match to.map(str::trim).filter(|s| !s.is_empty()) {
        Some(s) => parse_date(s, "to"),
        None => latest_day(app).await,
    }
}

#[derive(Deserialize)]
pub struct OverviewQuery {
    to: Option<String>,
    days: Option<u32>,
}

struct ChannelView {
    name: String,
    points: String,
    dots: Vec<(String, String, String)>,
    low: String,
    last_rate: Option<String>,
    latest: Option<NaiveDate>,
    open: Vec<OpenView>,
    ageing: Vec<(&'static str, u64)>,
    oldest: Option<String>,
    missing: Vec<(NaiveDate, String)>,
}

struct OpenView {
    category: String,
    count: u64,
    channel_amount: Decimal,
    platform_amount: Decimal,
    from: NaiveDate,
    to: NaiveDate,
}

#[derive(Template)]
#[template(path = "overview.html")]
struct OverviewPage {
    chrome: Chrome,
    from: NaiveDate,
    to: NaiveDate,
    days: u32,
    chart_w: u32,
    chart_h: u32,
    channels: Vec<ChannelView>,
}

fn percent(rate: f64) -> String {
    format!("{:.2}%", rate * 100.0)
}

/// `GET /`: per channel, the match rate over the days (an SVG line), its open differences by
/// category and age, the oldest, and the days not reconciled.
pub async fn overview(
    State(app): State<Shared>,
    caller: Caller,
    axum::extract::Query(q): axum::extract::Query<OverviewQuery>,
) -> Web<Response> {
    let to = to_or_latest(&app, q.to.as_deref()).await?;
    let days = q.days.unwrap_or(14).clamp(1, 366);
    let from = to - chrono::Duration::days(i64::from(days) - 1);
    let (w, h) = (420u32, 140u32);
    let all = view::overview(&app.store, &app.ctx, &app.channels, to, days).await?;
    let channels = all
        .into_iter()
        .map(|c| {
            let rates: Vec<(usize, NaiveDate, f64)> = (c.days.iter().enumerate())
                .filter_map(|(i, d)| d.match_rate.map(|r| (i, d.date, r)))
                .collect();
            // The chart's floor: the lowest rate, rounded down to a percent, at most 99%.
            let low = (rates.iter().map(|r| r.2).fold(0.99f64, f64::min) * 100.0).floor() / 100.0;
            let x = |i: usize| {
                let span = c.days.len().saturating_sub(1).max(1) as f64;
                5.0 + (f64::from(w) - 10.0) * i as f64 / span
            };
            let y = |r: f64| 5.0 + (f64::from(h) - 10.0) * (1.0 - (r - low) / (1.0 - low));
            let dots: Vec<(String, String, String)> = rates
                .iter()
                .map(|(i, d, r)| {
                    (
                        format!("{:.1}", x(*i)),
                        format!("{:.1}", y(*r)),
                        format!("{d}: {}", percent(*r)),
                    )
                })
                .collect();
            let points = dots
                .iter()
                .map(|(x, y, _)| format!("{x},{y}"))
                .collect::<Vec<_>>()
                .join(" ");
            let open_view = |o: &view::Open| OpenView {
                category: o.category.clone(),
                count: o.count,
                channel_amount: o.channel_amount,
                platform_amount: o.platform_amount,
                from: c.latest.unwrap_or(to),
                to: c.latest.unwrap_or(to),
            };
            ChannelView {
                name: c.channel.clone(),
                points,
                dots,
                low: percent(low),
                last_rate: rates.last().map(|r| percent(r.2)),
                latest: c.latest,
                open: c.open.iter().map(open_view).collect(),
                ageing: view::AGE_BUCKETS
                    .iter()
                    .copied()
                    .zip(c.ageing.iter().copied())
                    .collect(),
                oldest: c.oldest.as_ref().map(|o| {
                    format!(
                        "{} since {} ({})",
                        o.category,
                        o.first_seen,
                        o.diff_id.as_deref().unwrap_or(&o.ageing_key)
                    )
                }),
                missing: c
                    .not_reconciled()
                    .map(|d| {
                        let why = d
                            .error
                            .as_deref()
                            .map_or(String::new(), |e| format!(": {e}"));
                        (d.date, format!("{}{why}", d.status.as_str()))
                    })
                    .collect(),
            }
        })
        .collect();
    Ok(html(OverviewPage {
        chrome: Chrome::of(&caller, None),
        from,
        to,
        days,
        chart_w: w,
        chart_h: h,
        channels,
    }))
}

/// The list's filters as the URL and the form carry them.
#[derive(Debug, Clone, Default)]
pub struct ListForm {
    pub from: String,
    pub to: String,
    pub channels: Vec<String>,
    pub categories: Vec<String>,
    pub states: Vec<String>,
    pub age: String,
    pub min: String,
    pub max: String,
    pub assignee: String,
    pub decided: String,
    pub q: String,
    pub sort: String,
    pub desc: bool,
    pub page: usize,
    pub size: usize,
    /// The first of each list, for the form's selects.
    pub channel: String,
    pub category: String,
    pub state: String,
}

/// `bill-date`, … : the sort's name in the URL.
fn sort_name(s: Sort) -> String {
    s.to_possible_value()
        .map_or_else(String::new, |v| v.get_name().to_string())
}

impl ListForm {
    /// From a query string (repeated keys are lists; empty values are absent).
    pub fn parse(query: &str) -> ListForm {
        let mut f = ListForm {
            size: 50,
            ..ListForm::default()
        };
        for (k, v) in url::form_urlencoded::parse(query.as_bytes()) {
            let v = v.trim().to_string();
            if v.is_empty() {
                continue;
            }
            match k.as_ref() {
                "from" => f.from = v,
                "to" => f.to = v,
                "channel" => f.channels.push(v),
                "category" => f.categories.push(v),
                "state" => f.states.push(v),
                "age" => f.age = v,
                "min" => f.min = v,
                "max" => f.max = v,
                "assignee" => f.assignee = v,
                "decided" => f.decided = v,
                "q" => f.q = v,
                "sort" => f.sort = v,
                "desc" => f.desc = v != "0",
                "page" => f.page = v.parse().unwrap_or(0),
                "size" => f.size = v.parse().unwrap_or(50),
                _ => {}
            }
        }
        f.size = f.size.clamp(1, 1000);
        f.channel = f.channels.first().cloned().unwrap_or_default();
        f.category = f.categories.first().cloned().unwrap_or_default();
        f.state = f.states.first().cloned().unwrap_or_default();
        f
    }

    /// The query string of this filter at `page`.
    pub fn url(&self, path: &str, page: usize) -> String {
        let mut q = url::form_urlencoded::Serializer::new(String::new());
        q.append_pair("from", &self.from)
            .append_pair("to", &self.to);
        for (k, vs) in [
            ("channel", &self.channels),
            ("category", &self.categories),
            ("state", &self.states),
        ] {
            for v in vs {
                q.append_pair(k, v);
            }
        }
        for (k, v) in [
            ("age", &self.age),
            ("min", &self.min),
            ("max", &self.max),
            ("assignee", &self.assignee),
            ("decided", &self.decided),
            ("q", &self.q),
            ("sort", &self.sort),
        ] {
            if !v.is_empty() {
                q.append_pair(k, v);
            }
        }
        if self.desc {
            q.append_pair("desc", "1");
        }
        if self.size != 50 {
            q.append_pair("size", &self.size.to_string());
        }
        q.append_pair("page", &page.to_string());
        format!("{path}?{}", q.finish())
    }

    /// The typed filter (`latest`: the default last day), with the desk's key sets resolved.
    pub async fn filter(&mut self, app: &Shared) -> Web<Filter> {
        let to = to_or_latest(app, Some(&self.to)).await?;
        let from = if self.from.is_empty() {
            to - chrono::Duration::days(6)
        } else {
            parse_date(&self.from, "from")?
        };
        (self.from, self.to) = (from.to_string(), to.to_string());
        let amount = |s: &str, what: &str| -> Web<Option<Decimal>> {
            (!s.is_empty())
                .then(|| s.parse::<Decimal>())
                .transpose()
                .map_err(|e| WebError::bad(format!("{what} {s:?}: {e}")))
        };
        let first_seen_by = if self.age.is_empty() {
            None
        } else {
            let days: i64 = self
                .age
                .parse()
                .map_err(|e| WebError::bad(format!("age {:?}: {e}", self.age)))?;
            Some(to - chrono::Duration::days(days.max(1) - 1))
        };
        let sort = if self.sort.is_empty() {
            Sort::BillDate
        } else {
            Sort::from_str(&self.sort, true).map_err(|e| WebError::bad(format!("sort: {e}")))?
        };
        let decided = match self.decided.as_str() {
            "" => None,
            "yes" => Some(true),
            "no" => Some(false),
            other => return Err(WebError::bad(format!("decided {other:?}: one of yes, no"))),
        };
        let keys = if self.assignee.is_empty() && decided.is_none() {
            None
        } else {
            let assignee = (!self.assignee.is_empty()).then_some(self.assignee.as_str());
            // Undecided: every difference except those closed by a decision in force.
            let (wanted, include) = match decided {
                Some(false) if assignee.is_none() => (Some(true), false),
                other => (other, true),
            };
            let keys = app.desk.keys(&app.channels, assignee, wanted).await?;
            Some(Keys { keys, include })
        };
        Ok(Filter {
            channels: self.channels.clone(),
            from,
            to,
            categories: self.categories.clone(),
            states: self.states.clone(),
            min_amount: amount(&self.min, "min")?,
            max_amount: amount(&self.max, "max")?,
            first_seen_by,
            search: (!self.q.is_empty()).then(|| self.q.clone()),
            keys,
            sort,
            descending: self.desc,
            page: self.page,
            page_size: self.size,
        })
    }
}

struct RowView {
    href: String,
    /// What a bulk selection names it by: channel/date/diff_id.
    pick: String,
    short_id: String,
    channel: String,
    bill_date: NaiveDate,
    category: String,
    state: String,
    first_seen: String,
    channel_amount: String,
    platform_amount: String,
    delta: String,
    order: String,
}

#[derive(Template)]
#[template(path = "differences.html")]
struct ListPage {
    chrome: Chrome,
    f: ListForm,
    channels: Vec<String>,
    categories: Vec<&'static str>,
    states: Vec<&'static str>,
    sorts: Vec<String>,
    total: u64,
    channel_sum: Decimal,
    platform_sum: Decimal,
    delta_sum: Decimal,
    not_committed: String,
    ms: u128,
    rows: Vec<RowView>,
    page: usize,
    pages: u64,
    prev: Option<String>,
    next: Option<String>,
    may_decide: bool,
    /// The filter's query string (no page), for the bulk form.
    query: String,
    export_csv: String,
    export_xlsx: String,
    actions: Vec<(&'static str, &'static str)>,
    first_meaning: &'static str,
}

/// The page of the list a query string asks for.
async fn page_of(app: &Shared, query: Option<String>) -> Web<(ListForm, Page, u128)> {
    let mut form = ListForm::parse(query.as_deref().unwrap_or(""));
    let filter = form.filter(app).await?;
    let started = std::time::Instant::now();
    let page = list(&app.store, &app.ctx, &app.channels, &filter).await?;
    Ok((form, page, started.elapsed().as_millis()))
}

/// `GET /differences`: the list, its filters in the URL.
pub async fn differences(
    State(app): State<Shared>,
    caller: Caller,
    RawQuery(query): RawQuery,
) -> Web<Response> {
    let (f, page, ms) = page_of(&app, query).await?;
    let pages = page.total.div_ceil(f.size as u64).max(1);
    let rows = page
        .rows
        .iter()
        .map(|r| RowView {
            href: format!("/difference/{}/{}/{}", r.channel, r.bill_date, r.diff_id),
            pick: format!("{}/{}/{}", r.channel, r.bill_date, r.diff_id),
            short_id: r.diff_id.chars().take(12).collect(),
            channel: r.channel.clone(),
            bill_date: r.bill_date,
            category: r.category.clone(),
            state: r.state.clone().unwrap_or_default(),
            first_seen: r.first_seen.map_or_else(String::new, |d| d.to_string()),
            channel_amount: show(r.channel_amount),
            platform_amount: show(r.platform_amount),
            delta: show(r.amount_delta),
            order: (r.merchant_order_id.clone())
                .or_else(|| r.platform_order_id.clone())
                .or_else(|| r.channel_txn_id.clone())
                .unwrap_or_default(),
        })
        .collect();
    let not_committed = (page.not_committed.iter())
        .map(|(c, d)| format!("{c} {d}"))
        .collect::<Vec<_>>()
        .join(", ");
    let query = f.url("", 0);
    let query = query
        .trim_start_matches('?')
        .trim_end_matches("&page=0")
        .to_string();
    Ok(html(ListPage {
        chrome: Chrome::of(&caller, None),
        may_decide: caller.user.role >= Role::Resolver,
        export_csv: format!("/differences/export.csv?{query}"),
        export_xlsx: format!("/differences/export.xlsx?{query}"),
        query,
        actions: Action::ALL
            .iter()
            .map(|a| (a.name(), a.meaning()))
            .collect(),
        first_meaning: Action::ALL[0].meaning(),
        prev: (f.page > 0).then(|| f.url("/differences", f.page - 1)),
        next: ((f.page as u64 + 1) < pages).then(|| f.url("/differences", f.page + 1)),
        page: f.page + 1,
        pages,
        channels: app.channels.clone(),
        categories: Category::ALL.iter().map(|c| c.as_str()).collect(),
        states: vec!["new", "persisting", "resolved"],
        sorts: Sort::value_variants()
            .iter()
            .map(|s| sort_name(*s))
            .collect(),
        total: page.total,
        channel_sum: page.channel_sum,
        platform_sum: page.platform_sum,
        delta_sum: page.delta_sum,
        not_committed,
        ms,
        rows,
        f,
    }))
}

/// `GET /api/differences`: the same page as JSON (for scripts, with an API token).
pub async fn differences_json(
    State(app): State<Shared>,
    _caller: Caller,
    RawQuery(query): RawQuery,
) -> Web<Response> {
    let (_, page, ms) = page_of(&app, query).await?;
    Ok(Json(serde_json::json!({ "page": page, "milliseconds": ms })).into_response())
}

struct DetailView {
    href: String,
    diff_id: String,
    short_id: String,
    channel: String,
    bill_date: NaiveDate,
    category: String,
    state: String,
    first_seen: Option<NaiveDate>,
    reason: Option<String>,
    pairs: Vec<one::Pair>,
    source: String,
    fields: Vec<(String, String)>,
    ageing_key: Option<String>,
    version: i64,
    assignee: String,
    desk_state: String,
    may_decide: bool,
    may_comment: bool,
    may_approve: bool,
    decisions: Vec<DecisionView>,
    comments: Vec<(String, String, String)>,
    history: Vec<(NaiveDate, String, String, String, String, String, String)>,
}

struct DecisionView {
    id: i64,
    action: String,
    by: String,
    at: String,
    status: &'static str,
    reviewed: String,
    comment: String,
    pending: bool,
}

#[derive(Template)]
#[template(path = "detail.html")]
struct DetailPage {
    chrome: Chrome,
    d: DetailView,
    actions: Vec<(&'static str, &'static str)>,
    first_meaning: &'static str,
}

#[derive(Deserialize)]
pub struct DetailQuery {
    #[serde(default)]
    flash: Option<String>,
}

/// The difference a path names, or 404.
async fn find(app: &Shared, channel: &str, date: &str, diff_id: &str) -> Web<one::Detail> {
    if !app.channels.iter().any(|c| c == channel) {
        return Err(WebError::not_found(format!("no channel {channel:?}")));
    }
    let day = parse_date(date, "the bill date")?;
    one::detail(&app.store, &app.ctx, channel, day, diff_id, 90)
        .await?
        .ok_or_else(|| {
            WebError::not_found(format!(
                "no difference {diff_id} in {channel}'s committed {day}"
            ))
        })
}

/// `GET /difference/{channel}/{date}/{diff_id}`: both records side by side, the reason, the
/// bill row, the decisions, comments and the history.
pub async fn detail(
    State(app): State<Shared>,
    caller: Caller,
    Path((channel, date, diff_id)): Path<(String, String, String)>,
    axum::extract::Query(q): axum::extract::Query<DetailQuery>,
) -> Web<Response> {
    let d = find(&app, &channel, &date, &diff_id).await?;
    let (state, decisions, comments) = match &d.difference {
        Some(diff) => (
            app.desk.state(&channel, &diff.ageing_key).await?,
            app.desk.decisions(&channel, &diff.ageing_key).await?,
            app.desk.comments(&channel, &diff.ageing_key).await?,
        ),
        None => Default::default(),
    };
    let desk_state = match &state.decision {
        None => "open: no decision".to_string(),
        Some(x) => format!(
            "{}: {} by {} ({})",
            if state.decided() { "decided" } else { "open" },
            x.action,
            x.decided_by,
            x.status.name()
        ),
    };
    let source = match (d.field("source_file"), d.field("source_line")) {
        (Some(f), Some(l)) => format!("{f}, line {l}"),
        (Some(f), None) => f.to_string(),
        _ => "none (the platform's record alone)".to_string(),
    };
    let user = &caller.user;
    let view = DetailView {
        href: format!("/difference/{channel}/{}/{diff_id}", d.bill_date),
        short_id: diff_id.chars().take(12).collect(),
        category: d.field("category").unwrap_or_default().to_string(),
        state: d.field("state").unwrap_or_default().to_string(),
        reason: d.field("reason").map(str::to_string),
        diff_id: d.diff_id.clone(),
        channel: d.channel.clone(),
        bill_date: d.bill_date,
        first_seen: d.first_seen,
        pairs: d.pairs.clone(),
        source,
        fields: d.fields.clone(),
        ageing_key: d.difference.as_ref().map(|x| x.ageing_key.clone()),
        version: state.version,
        assignee: state.assignee.clone().unwrap_or_default(),
        desk_state,
        may_decide: user.role >= Role::Resolver,
        may_comment: user.role >= Role::Resolver,
        may_approve: user.role >= Role::Approver,
        decisions: decisions
            .iter()
            .map(|x| DecisionView {
                id: x.id,
                action: x.action.to_string(),
                by: x.decided_by.clone(),
                at: x.decided_at.clone(),
                status: x.status.name(),
                reviewed: match (&x.reviewed_by, &x.reviewed_at) {
                    (Some(b), Some(a)) => format!("{b} at {a}"),
                    _ => String::new(),
                },
                comment: x.comment.clone(),
                pending: x.status == Status::PendingApproval && x.decided_by != user.name,
            })
            .collect(),
        comments: comments
            .iter()
            .map(|c| (c.author.clone(), c.at.clone(), c.text.clone()))
            .collect(),
        history: d
            .history
            .iter()
            .map(|h| {
                (
                    h.date,
                    h.state.clone(),
                    h.category.clone(),
                    show(h.channel_amount),
                    show(h.platform_amount),
                    h.resolved_by.clone().unwrap_or_default(),
                    match (&h.decision, &h.decision_review) {
                        (Some(a), Some(r)) => format!("{a} ({r})"),
                        (Some(a), None) => a.clone(),
                        _ => String::new(),
                    },
                )
            })
            .collect(),
    };
    let flash = q.flash.as_deref().and_then(flash_text).map(str::to_string);
    Ok(html(DetailPage {
        chrome: Chrome::of(&caller, flash),
        d: view,
        actions: Action::ALL
            .iter()
            .map(|a| (a.name(), a.meaning()))
            .collect(),
        first_meaning: Action::ALL[0].meaning(),
    }))
}

/// The message a redirect's `flash` code shows (a code, so a link cannot put text on a page).
fn flash_text(code: &str) -> Option<&'static str> {
    Some(match code {
        "decided" => "Decision recorded.",
        "pending" => "Decision recorded: it waits for an approver (four eyes).",
        "commented" => "Comment added.",
        "assigned" => "Assignment saved.",
        "approved" => "Decision approved: it is in force.",
        "rejected" => "Decision rejected.",
        _ => return None,
    })
}

/// A change the desk refused, as a page: what happened and a way back (409).
fn refused(refusal: &crate::desk::Refusal, back: String) -> WebError {
    WebError {
        status: axum::http::StatusCode::CONFLICT,
        message: format!("Not saved: {refusal}."),
        back: Some(back),
    }
}

#[derive(Deserialize)]
pub struct ChangeForm {
    #[serde(default)]
    version: i64,
    #[serde(default)]
    action: Option<String>,
    #[serde(default)]
    comment: String,
    #[serde(default)]
    text: String,
    #[serde(default)]
    assignee: String,
}

/// `POST /difference/{channel}/{date}/{diff_id}/{decide|comment|assign}`.
pub async fn change(
    State(app): State<Shared>,
    Path((channel, date, diff_id, change)): Path<(String, String, String, String)>,
    posted: Posted<ChangeForm>,
) -> Web<Response> {
    let d = find(&app, &channel, &date, &diff_id).await?;
    let back = format!("/difference/{channel}/{}/{diff_id}", d.bill_date);
    let diff = d.difference.ok_or_else(|| {
        WebError::bad("this difference has no ledger entry: it cannot be decided")
    })?;
    let (user, f) = (&posted.caller.user, posted.form);
    let flash = match change.as_str() {
        "decide" => {
            let action: Action = f
                .action
                .as_deref()
                .unwrap_or_default()
                .parse()
                .map_err(WebError::bad)?;
            let done = app
                .desk
                .decide(user, &diff, f.version, action, &f.comment)
                .await?
                .map_err(|r| refused(&r, back.clone()))?;
            tracing::info!(user = %user.name, %channel, key = %diff.ageing_key, %action, "decided");
            if done.status == Status::PendingApproval {
                "pending"
            } else {
                "decided"
            }
        }
        "comment" => {
            app.desk
                .comment(user, &channel, &diff.ageing_key, &f.text)
                .await?
                .map_err(|r| refused(&r, back.clone()))?;
            "commented"
        }
        "assign" => {
            let to = f.assignee.trim();
            app.desk
                .assign(
                    user,
                    &channel,
                    &diff.ageing_key,
                    f.version,
                    (!to.is_empty()).then_some(to),
                )
                .await?
                .map_err(|r| refused(&r, back.clone()))?;
            "assigned"
        }
        other => return Err(WebError::not_found(format!("no change {other:?}"))),
    };
    Ok(Redirect::to(&format!("{back}?flash={flash}")).into_response())
}

#[derive(Deserialize)]
pub struct ReviewForm {
    verdict: String,
    #[serde(default)]
    reason: String,
    #[serde(default)]
    version: i64,
    #[serde(default)]
    back: String,
}

/// `POST /decisions/{id}/review`: an approver approves or rejects a pending decision.
pub async fn review(
    State(app): State<Shared>,
    Path(id): Path<i64>,
    posted: Posted<ReviewForm>,
) -> Web<Response> {
    let (user, f) = (&posted.caller.user, posted.form);
    let back = if f.back.starts_with("/difference/") {
        f.back.clone()
    } else {
        "/differences".to_string()
    };
    let approve = match f.verdict.as_str() {
        "approve" => true,
        "reject" => false,
        other => {
            return Err(WebError::bad(format!(
                "verdict {other:?}: approve or reject"
            )))
        }
    };
    app.desk
        .review(user, id, f.version, approve, &f.reason)
        .await?
        .map_err(|r| refused(&r, back.clone()))?;
    tracing::info!(user = %user.name, decision = id, approve, "reviewed");
    let flash = if approve { "approved" } else { "rejected" };
    Ok(Redirect::to(&format!("{back}?flash={flash}")).into_response())
}

#[derive(Deserialize)]
pub struct RunsQuery {
    from: Option<String>,
    to: Option<String>,
}

struct RunView {
    channel: String,
    date: NaiveDate,
    status: &'static str,
    run_id: String,
    committed: String,
    rows_read: String,
    rejected: String,
    diffs: String,
    rate: String,
}

impl RunView {
    fn of(r: &days::Run) -> RunView {
        let n = |v: Option<u64>| v.map_or_else(String::new, |v| v.to_string());
        RunView {
            channel: r.channel.clone(),
            date: r.date,
            status: r.status.as_str(),
            run_id: r.run_id.clone().unwrap_or_default(),
            committed: r.committed_at.clone().unwrap_or_else(|| "no".into()),
            rows_read: n(r.rows_read),
            rejected: n(r.rows_rejected),
            diffs: n(r.diff_rows),
            rate: r.match_rate.map_or_else(String::new, percent),
        }
    }
}

#[derive(Template)]
#[template(path = "runs.html")]
struct RunsPage {
    chrome: Chrome,
    from: NaiveDate,
    to: NaiveDate,
    runs: Vec<RunView>,
}

/// `GET /runs`: each channel-day of a range and where it stands.
pub async fn runs(
    State(app): State<Shared>,
    caller: Caller,
    axum::extract::Query(q): axum::extract::Query<RunsQuery>,
) -> Web<Response> {
    let to = to_or_latest(&app, q.to.as_deref()).await?;
    let from = match q.from.as_deref().filter(|s| !s.is_empty()) {
        Some(s) => parse_date(s, "from")?,
        None => to - chrono::Duration::days(13),
    };
    if (to - from).num_days() > 366 {
        return Err(WebError::bad("at most 366 days at once"));
    }
    let all = days::runs(&app.store, &app.channels, from, to).await?;
    Ok(html(RunsPage {
        chrome: Chrome::of(&caller, None),
        from,
        to,
        runs: all.iter().map(RunView::of).collect(),
    }))
}

#[derive(Template)]
#[template(path = "run.html")]
struct RunPage {
    chrome: Chrome,
    r: RunView,
    error: Option<String>,
    inputs: Vec<(String, String)>,
    rejected: Vec<days::Rejected>,
    shown: u64,
    total_rejected: u64,
}

/// The rejected rows a run page shows at most.
const REJECTED_SHOWN: usize = 500;

/// `GET /runs/{channel}/{date}`: a channel-day's inputs and hashes, and its rejected rows.
pub async fn run(
    State(app): State<Shared>,
    caller: Caller,
    Path((channel, date)): Path<(String, String)>,
) -> Web<Response> {
    if !app.channels.iter().any(|c| c == &channel) {
        return Err(WebError::not_found(format!("no channel {channel:?}")));
    }
    let day = parse_date(&date, "the bill date")?;
    let r = days::run(&app.store, &channel, day).await?;
    let rejected = days::rejected(&app.store, &app.ctx, &r, REJECTED_SHOWN).await?;
    let inputs: BTreeMap<String, String> = r.inputs.clone();
    Ok(html(RunPage {
        chrome: Chrome::of(&caller, None),
        error: r
            .error
            .clone()
            .filter(|_| r.status != DayStatus::Reconciled),
        shown: rejected.len() as u64,
        total_rejected: r.rows_rejected.unwrap_or(rejected.len() as u64),
        r: RunView::of(&r),
        inputs: inputs.into_iter().collect(),
        rejected,
    }))
}
