//! `reckon status`: each channel's state for a date, from the manifests (and leases) on the
//! storage root, so any process on any host sees the same thing.

use chrono::NaiveDate;
use serde_json::{json, Value};

use crate::config::Config;
use crate::error::Result;
use crate::pipeline::store;
use crate::records::{DayStatus, Stage};

/// The state of each of `channels` (all when empty) on `date`, as JSON objects.
/// Besides the working state, each says what readers see: the committed run and when.
pub async fn states(config: &Config, channels: &[String], date: NaiveDate) -> Result<Vec<Value>> {
    let store = store(config)?;
    // The replica's lag (days queued on the primary and the oldest one's age), when it is
    // eventual; a strong replica is never behind a committed day.
    let replica_lag = match crate::replica::Replica::of(config)? {
        Some(r) => {
            let lag = match r.mode {
                crate::config::ReplicaMode::Eventual => crate::replica::lag(&store).await?,
                crate::config::ReplicaMode::Strong => crate::replica::Lag::default(),
            };
            json!({ "root": r.store.display(), "mode": r.mode, "lag": lag })
        }
        None => Value::Null,
    };
    let mut out = Vec::new();
    for name in config.channel_names(channels)? {
        let m = store.manifest(&name, date).await?;
        let committed = store.committed(&name, date).await?;
        let stages: serde_json::Map<String, Value> = Stage::ALL
            .iter()
            .map(|s| {
                let v = match (m.stages.state(*s), m.stages.finished_at(*s)) {
                    (Some(state), Some((finished_at, duration_ms))) => json!({
                        "state": state,
                        "finished_at": finished_at,
                        "duration_ms": duration_ms,
                    }),
                    _ => json!({ "state": "pending" }),
                };
                (s.to_string(), v)
            })
            .collect();
        let lease = crate::lease::holder(&store, &name, date).await;
        let status = if m.stages.is_empty() && m.status == DayStatus::NeverRun {
            "never run".to_string()
        } else {
            m.status.to_string()
        };
        out.push(json!({
            "replica": replica_lag.clone(),
            "channel": name,
            "bill_date": date.to_string(),
            "status": status,
            "run_id": m.run_id,
            "stages": stages,
            "error": m.error,
            "committed": committed.map(|c| json!({
                "run_id": c.run_id, "committed_at": c.committed_at,
                "pointer": store.committed_path(&name, date),
            })),
            "running": lease.map(|h| json!({
                "host": h.host, "pid": h.pid, "invocation": h.invocation,
                "since": h.acquired_at, "lease_until": h.expires_at,
            })),
        }));
    }
    Ok(out)
}

/// The states as a table.
pub fn render(states: &[Value]) -> String {
    use std::fmt::Write;
    let text = |v: &Value| v.as_str().unwrap_or("-").to_string();
    let mut s = format!("{:<12} {:<11}", "channel", "status");
    for st in Stage::ALL {
        let _ = write!(s, " {:<10}", st.as_str());
    }
    s.push_str(" run_id\n");
    for v in states {
        let _ = write!(s, "{:<12} {:<11}", text(&v["channel"]), text(&v["status"]));
        for st in Stage::ALL {
            let _ = write!(s, " {:<10}", text(&v["stages"][st.as_str()]["state"]));
        }
        let _ = writeln!(s, " {}", text(&v["run_id"]));
        if let Some(r) = v["running"].as_object() {
            let _ = writeln!(
                s,
                "  running now: {}:{} since {} (lease until {})",
                r["host"].as_str().unwrap_or("?"),
                r["pid"],
                r["since"].as_str().unwrap_or("?"),
                r["lease_until"].as_str().unwrap_or("?")
            );
        }
        if let Some(e) = v["error"].as_str() {
            let _ = writeln!(s, "  {e}");
        }
        // What readers see, when it is not the run above (a rerun not committed yet).
        if let Some(c) = v["committed"].as_object() {
            if c["run_id"] != v["run_id"] {
                let _ = writeln!(
                    s,
                    "  readers see run {} (committed {})",
                    c["run_id"].as_str().unwrap_or("-"),
                    c["committed_at"].as_str().unwrap_or("?")
                );
            }
        }
        if let Some(r) = v["replica"].as_object() {
            let lag = &r["lag"];
            let _ = writeln!(
                s,
                "  replica {} ({}): {} days behind{}",
                r["root"].as_str().unwrap_or("?"),
                r["mode"].as_str().unwrap_or("?"),
                lag["days"],
                match lag["oldest"].as_str() {
                    Some(o) => format!(", the oldest {o} queued {} s ago", lag["age_secs"]),
                    None => String::new(),
                }
            );
        }
    }
    s
}
