//! Decisions on many differences: a bulk decision on the list's selection or on everything
//! its filter matches (the count the person confirmed is checked again), and the export and
//! import of decisions as CSV or Excel ([`crate::desk::exchange`]).

use std::collections::BTreeMap;

use askama::Template;
use axum::extract::{Multipart, RawQuery, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use chrono::NaiveDate;
use serde::Deserialize;

use super::auth::{Caller, Posted};
use super::pages::{Chrome, ListForm};
use super::{html, Shared, WebError};
use crate::desk::exchange::{self, Checked, Tally, Verdict};
use crate::desk::query::{differences as list, Row};
use crate::desk::{Action, Change, Decision, Difference, Outcome, Role, Status};

type Web<T> = std::result::Result<T, WebError>;

/// Refuses a caller who may not decide (a viewer).
fn may_decide(caller: &Caller) -> Web<()> {
    caller.user.may(Role::Resolver).map_err(|r| WebError {
        status: axum::http::StatusCode::FORBIDDEN,
        message: format!("Not allowed: {r}."),
        back: None,
    })
}

/// The most differences one bulk decision changes.
pub const BULK_LIMIT: usize = 10_000;

/// Every row the filter of `query` matches, up to `limit` (more: an error saying so).
async fn all_rows(app: &Shared, query: &str, limit: usize) -> Web<(ListForm, u64, Vec<Row>)> {
    let mut form = ListForm::parse(query);
    let mut filter = form.filter(app).await?;
    filter.page = 0;
    filter.page_size = limit + 1;
    let page = list(&app.store, &app.ctx, &app.channels, &filter).await?;
    if page.total as usize > limit {
        return Err(WebError::bad(format!(
            "the filter matches {} differences; at most {limit} at once: narrow it",
            page.total
        )));
    }
    Ok((form, page.total, page.rows))
}

/// The differences named by (channel, bill date, diff_id), from their days' ledgers; the ones
/// not found are returned apart.
async fn differences_named(
    app: &Shared,
    named: Vec<(String, NaiveDate, String)>,
) -> Web<(Vec<(String, Difference)>, Vec<String>)> {
    let mut by_day: BTreeMap<(String, NaiveDate), Vec<String>> = BTreeMap::new();
    for (ch, d, id) in named {
        by_day.entry((ch, d)).or_default().push(id);
    }
    let (mut found, mut missing) = (Vec::new(), Vec::new());
    for ((ch, d), ids) in by_day {
        let mut diffs =
            crate::desk::detail::differences_of(&app.store, &app.ctx, &ch, d, &ids).await?;
        for id in ids {
            match diffs.remove(&id) {
                Some(diff) => found.push((format!("/difference/{ch}/{d}/{id}"), diff)),
                None => missing.push(format!("/difference/{ch}/{d}/{id}")),
            }
        }
    }
    Ok((found, missing))
}

#[derive(Deserialize)]
pub struct BulkForm {
    #[serde(default)]
    filter: String,
    #[serde(default)]
    expect: u64,
    scope: String,
    action: String,
    #[serde(default)]
    comment: String,
}

#[derive(Template)]
#[template(path = "bulk.html")]
struct BulkPage {
    chrome: Chrome,
    action: Action,
    decided: usize,
    pending: usize,
    /// (link, shown as, why)
    refused: Vec<(String, String, String)>,
    back: String,
}

/// `POST /differences/bulk`: one decision on the selected differences (`pick`), or on all
/// the filter matches when their count is still the one the person confirmed.
pub async fn bulk(State(app): State<Shared>, posted: Posted<BulkForm>) -> Web<Response> {
    let user = &posted.caller.user;
    let f = &posted.form;
    let action: Action = f.action.parse().map_err(WebError::bad)?;
    let back = format!("/differences?{}", f.filter);
    may_decide(&posted.caller)?;
    let named: Vec<(String, NaiveDate, String)> = match f.scope.as_str() {
        "all" => {
            let (_, total, rows) = all_rows(&app, &f.filter, BULK_LIMIT).await?;
            if total != f.expect {
                return Err(WebError {
                    status: axum::http::StatusCode::CONFLICT,
                    message: format!(
                        "Not saved: the filter matches {total} differences now, not the {} you confirmed. Look at the list again.",
                        f.expect
                    ),
                    back: Some(back),
                });
            }
            rows.into_iter()
                .map(|r| (r.channel, r.bill_date, r.diff_id))
                .collect()
        }
        "selected" => {
            let mut named = Vec::new();
            for (k, v) in &posted.pairs {
                if k != "pick" {
                    continue;
                }
                let mut parts = v.splitn(3, '/');
                let (Some(ch), Some(d), Some(id)) = (parts.next(), parts.next(), parts.next())
                else {
                    return Err(WebError::bad(format!(
                        "a selection {v:?}: not channel/date/id"
                    )));
                };
                let d = d
                    .parse()
                    .map_err(|e| WebError::bad(format!("a selection {v:?}: {e}")))?;
                named.push((ch.to_string(), d, id.to_string()));
            }
            if named.is_empty() {
                return Err(WebError {
                    back: Some(back),
                    ..WebError::bad("nothing selected: tick the differences to decide")
                });
            }
            if named.len() > BULK_LIMIT {
                return Err(WebError::bad(format!("at most {BULK_LIMIT} at once")));
            }
            named
        }
        other => return Err(WebError::bad(format!("scope {other:?}: selected or all"))),
    };
    let (found, missing) = differences_named(&app, named).await?;
    let changes: Vec<Change> = found
        .iter()
        .map(|(_, diff)| Change {
            diff: diff.clone(),
            seen: None,
            action,
            comment: f.comment.clone(),
        })
        .collect();
    let outcomes = app.desk.decide_all(user, &changes).await?;
    let mut page = BulkPage {
        chrome: Chrome::of(&posted.caller, None),
        action,
        decided: 0,
        pending: 0,
        refused: missing
            .into_iter()
            .map(|m| (m.clone(), m, "not in its day's ledger".to_string()))
            .collect(),
        back,
    };
    for ((href, diff), outcome) in found.iter().zip(outcomes) {
        match outcome {
            Ok(d) if d.status == Status::PendingApproval => page.pending += 1,
            Ok(_) => page.decided += 1,
            Err(r) => page
                .refused
                .push((href.clone(), diff.ageing_key.clone(), r.to_string())),
        }
    }
    tracing::info!(
        user = %user.name,
        %action,
        decided = page.decided,
        pending = page.pending,
        refused = page.refused.len(),
        "bulk decision"
    );
    Ok(html(page))
}

/// `GET /differences/export.csv` and `export.xlsx`: the filter's differences, with each one's
/// version and empty `action` and `comment` columns to fill in.
pub async fn export(
    State(app): State<Shared>,
    caller: Caller,
    axum::extract::Path(file): axum::extract::Path<String>,
    RawQuery(query): RawQuery,
) -> Web<Response> {
    let (form, _, rows) =
        all_rows(&app, query.as_deref().unwrap_or(""), exchange::MAX_ROWS).await?;
    let states = exchange::states_of(&app.desk, &rows).await?;
    let name = format!("reckon-differences-{}-{}", form.from, form.to);
    let (kind, bytes, ext) = match file.as_str() {
        "export.csv" => (
            "text/csv; charset=utf-8",
            exchange::csv(&rows, &states)?,
            "csv",
        ),
        "export.xlsx" => (
            "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
            exchange::xlsx(&rows, &states)?,
            "xlsx",
        ),
        other => return Err(WebError::not_found(format!("no {other}"))),
    };
    tracing::info!(user = %caller.user.name, rows = rows.len(), format = ext, "exported differences");
    Ok((
        [
            (header::CONTENT_TYPE, kind.to_string()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{name}.{ext}\""),
            ),
        ],
        bytes,
    )
        .into_response())
}

struct LineView {
    line: usize,
    diff: String,
    action: String,
    comment: String,
    verdict: String,
    class: &'static str,
}

#[derive(Template)]
#[template(path = "import.html")]
struct ImportPage {
    chrome: Chrome,
    tally: Option<Tally>,
    lines: Vec<LineView>,
    carried: String,
    applied: bool,
    done: usize,
    failed: usize,
}

fn import_page(caller: &Caller, checked: &[Checked], carried: String) -> ImportPage {
    ImportPage {
        chrome: Chrome::of(caller, None),
        tally: Some(Tally::of(checked)),
        lines: checked
            .iter()
            .map(|c| {
                let (verdict, class) = match &c.verdict {
                    Verdict::Decide { action } => (format!("will decide: {action}"), "decide"),
                    Verdict::Unchanged => ("unchanged: already so".to_string(), "unchanged"),
                    Verdict::Blank => ("no action: left alone".to_string(), "blank"),
                    Verdict::Problem { why } => (why.clone(), "problem"),
                };
                LineView {
                    line: c.line.line,
                    diff: c.line.diff_id.clone(),
                    action: c.line.action.clone(),
                    comment: c.line.comment.clone(),
                    verdict,
                    class,
                }
            })
            .collect(),
        carried,
        applied: false,
        done: 0,
        failed: 0,
    }
}

/// `GET /differences/import`: the upload form.
pub async fn import_form(caller: Caller) -> Response {
    html(ImportPage {
        tally: None,
        ..import_page(&caller, &[], String::new())
    })
}

/// `POST /differences/import` (a file upload): checks every line and shows what applying it
/// would do; nothing is written.
pub async fn import_preview(
    State(app): State<Shared>,
    caller: Caller,
    mut form: Multipart,
) -> Web<Response> {
    let (mut csrf, mut file) = (String::new(), None);
    while let Some(field) = form
        .next_field()
        .await
        .map_err(|e| WebError::bad(format!("the upload: {e}")))?
    {
        match field.name() {
            Some("csrf") => csrf = field.text().await.unwrap_or_default(),
            Some("file") => {
                let bytes = field
                    .bytes()
                    .await
                    .map_err(|e| WebError::bad(format!("the uploaded file: {e}")))?;
                file = Some(bytes);
            }
            _ => {}
        }
    }
    if !caller.csrf_ok(&app, &csrf) {
        return Ok(super::auth::stale_form());
    }
    may_decide(&caller)?;
    let bytes = file.ok_or_else(|| WebError::bad("no file was uploaded"))?;
    let lines = exchange::parse(&bytes).map_err(|e| WebError::bad(e.to_string()))?;
    let carried = exchange::to_csv(&lines)?;
    let checked = exchange::check(&app.store, &app.ctx, &app.desk, &app.channels, lines).await?;
    Ok(html(import_page(&caller, &checked, carried)))
}

#[derive(Deserialize)]
pub struct ApplyForm {
    lines: String,
}

/// `POST /differences/import/apply`: checks the previewed lines again, now, and makes the
/// decisions of those that still decide, in one transaction.
pub async fn import_apply(State(app): State<Shared>, posted: Posted<ApplyForm>) -> Web<Response> {
    may_decide(&posted.caller)?;
    let lines = exchange::parse_csv(posted.form.lines.as_bytes())
        .map_err(|e| WebError::bad(e.to_string()))?;
    let checked = exchange::check(&app.store, &app.ctx, &app.desk, &app.channels, lines).await?;
    let changes: Vec<Change> = checked.iter().filter_map(|c| c.change.clone()).collect();
    let outcomes: Vec<Outcome<Decision>> =
        app.desk.decide_all(&posted.caller.user, &changes).await?;
    let done = outcomes.iter().filter(|o| o.is_ok()).count();
    tracing::info!(
        user = %posted.caller.user.name,
        decided = done,
        refused = outcomes.len() - done,
        "imported decisions"
    );
    let mut page = import_page(&posted.caller, &checked, String::new());
    page.applied = true;
    page.done = done;
    page.failed = outcomes.len() - done;
    Ok(html(page))
}
