//! The lease on a channel-date: two runs of the same channel and date at once would race on
//! its manifest and outputs, so a run first takes `runs/channel=C/dt=D/lease.json` on the
//! storage root, with a conditional put: created only if absent (`If-None-Match: *` on S3, a
//! hard link locally), renewed and taken over only at the version the taker read
//! (`If-Match: <etag>` on S3, under a `flock` locally), so of two processes on any two hosts
//! only one holds it. A finished run marks it released the same way. A holder that crashed
//! blocks nobody for long: its lease expires, and on the same host a holder whose process is
//! gone is stale at once.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::store::{Expect, Root, Store, Version};

/// Who holds a lease, until when.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Holder {
    /// The host name.
    pub host: String,
    /// The process id on that host.
    pub pid: u32,
    /// This process's invocation id (see [`invocation_id`]).
    pub invocation: String,
    /// When the lease was taken (UTC, RFC 3339).
    pub acquired_at: String,
    /// When it expires unless renewed (UTC, RFC 3339).
    pub expires_at: String,
    /// The run ended and let it go.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub released: bool,
}

impl Holder {
    fn describe(&self) -> String {
        format!(
            "{}:{} (invocation {}, since {}, lease until {})",
            self.host, self.pid, self.invocation, self.acquired_at, self.expires_at
        )
    }

    fn expired(&self, now: DateTime<Utc>) -> bool {
        self.released
            || DateTime::parse_from_rfc3339(&self.expires_at)
                .map(|t| t.with_timezone(&Utc) <= now)
                .unwrap_or(true)
    }

    /// A holder on this host whose process is gone.
    fn dead_here(&self) -> bool {
        self.host == host_name()
            && self.pid != std::process::id()
            && !Path::new(&format!("/proc/{}", self.pid)).exists()
    }
}

/// This machine's name.
pub fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "unknown-host".into())
}

/// One id per reckon process: it names the process in leases and log lines.
pub fn invocation_id() -> &'static str {
    static ID: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    ID.get_or_init(|| {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        use sha2::Digest;
        let digest =
            sha2::Sha256::digest(format!("{}-{}-{nanos}", host_name(), std::process::id()));
        hex::encode(&digest[..6])
    })
}

/// How long a lease lasts and how long to wait for one.
#[derive(Debug, Clone, Copy)]
pub struct LeasePolicy {
    /// A lease not renewed for this long is stale.
    pub ttl: Duration,
    /// How long to wait for a held lease before giving up (exit 75).
    pub wait: Duration,
}

/// A held lease: renewed in the background until [`Lease::release`] (or drop, which stops the
/// renewals and lets it expire).
pub struct Lease {
    root: Root,
    rel: String,
    me: Holder,
    version: Arc<tokio::sync::Mutex<Version>>,
    stop: Arc<AtomicBool>,
    renewer: Option<tokio::task::JoinHandle<()>>,
}

/// How long taking a lease keeps trying a store it cannot reach, when it may not wait longer.
const LOOK_AGAIN: Duration = Duration::from_secs(30);

fn stamp(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

fn lease_path(store: &Store, channel: &str, date: chrono::NaiveDate) -> String {
    format!("{}/lease.json", store.area("runs", channel, date))
}

async fn read_holder(root: &Root, rel: &str) -> Result<Option<(Option<Holder>, Version)>> {
    Ok(root
        .get(rel)
        .await?
        .map(|(b, v)| (serde_json::from_slice::<Holder>(&b).ok(), v)))
}

impl Lease {
    /// Takes the lease of `channel` on `date`, waiting up to `policy.wait` for its holder;
    /// `Err(NotReady)` names the holder when it is still held.
    pub async fn acquire(
        store: &Store,
        channel: &str,
        date: chrono::NaiveDate,
        policy: LeasePolicy,
    ) -> Result<Lease> {
        let root = store.root().clone();
        let rel = lease_path(store, channel, date);
        let started = Instant::now();
        let ttl = chrono::Duration::from_std(policy.ttl).unwrap_or(chrono::Duration::hours(1));
        loop {
            let now = Utc::now();
            let me = Holder {
                host: host_name(),
                pid: std::process::id(),
                invocation: invocation_id().to_string(),
                acquired_at: stamp(now),
                expires_at: stamp(now + ttl),
                released: false,
            };
            let bytes = serde_json::to_vec_pretty(&me)?;
            let mut lost = None;
            match root.put_if(&rel, bytes.clone(), Expect::Absent).await {
                Ok(Some(v)) => {
                    tracing::debug!(channel, %date, "lease taken");
                    return Ok(Lease::start(root, rel, me, v, policy.ttl));
                }
                Ok(None) => {}
                // The store could not be reached, or the answer was lost: look again.
                Err(e) if e.is_transient() && started.elapsed() < policy.wait.max(LOOK_AGAIN) => {
                    tracing::warn!(error = %e, "taking the lease failed; looking again");
                    lost = Some(me.clone());
                }
                Err(e) => return Err(e),
            }
            let Some((holder, version)) = read_holder(&root, &rel).await? else {
                continue;
            };
            // The very put whose answer was lost went through: the lease is ours already.
            if let Some(h) = holder.as_ref().filter(|h| lost.as_ref() == Some(*h)) {
                tracing::debug!(channel, %date, "lease taken (the answer to the put was lost)");
                let mine = h.clone();
                return Ok(Lease::start(root, rel, mine, version, policy.ttl));
            }
            let stale = match &holder {
                Some(h) => h.expired(now) || h.dead_here(),
                // Unreadable (written by hand, or a foreign tool): not ours to judge.
                None => false,
            };
            if stale {
                // Only the taker whose version still matches wins; the others read again.
                let took = match root.put_if(&rel, bytes, Expect::At(version)).await {
                    Ok(took) => took,
                    // Lost on the way, or carried out with its answer lost: look again.
                    Err(e) if e.is_transient() => {
                        tracing::warn!(error = %e, "taking over the lease failed; looking again");
                        None
                    }
                    Err(e) => return Err(e),
                };
                if let Some(v) = took {
                    if let Some(h) = holder.as_ref().filter(|h| !h.released) {
                        tracing::warn!(
                            channel, %date,
                            holder = h.describe(),
                            "took over a stale lease"
                        );
                    }
                    return Ok(Lease::start(root, rel, me, v, policy.ttl));
                }
                continue;
            }
            if started.elapsed() >= policy.wait {
                let who = holder
                    .map(|h| h.describe())
                    .unwrap_or_else(|| "an unreadable lease".into());
                return Err(Error::NotReady(format!(
                    "{channel} {date} is being run by {who}; waited {} s ({}); retry later",
                    policy.wait.as_secs(),
                    root.url(&rel)
                )));
            }
            tokio::time::sleep(Duration::from_millis(500).min(policy.wait)).await;
        }
    }

    fn start(root: Root, rel: String, me: Holder, version: Version, ttl: Duration) -> Lease {
        let stop = Arc::new(AtomicBool::new(false));
        let version = Arc::new(tokio::sync::Mutex::new(version));
        let every = (ttl / 3).max(Duration::from_millis(100));
        let (r, p, who, flag, ver) = (
            root.clone(),
            rel.clone(),
            me.clone(),
            stop.clone(),
            version.clone(),
        );
        let renewer = tokio::spawn(async move {
            let ttl = chrono::Duration::from_std(ttl).unwrap_or(chrono::Duration::hours(1));
            loop {
                tokio::time::sleep(every).await;
                if flag.load(Ordering::Relaxed) {
                    return;
                }
                let renewed = Holder {
                    expires_at: stamp(Utc::now() + ttl),
                    ..who.clone()
                };
                let Ok(bytes) = serde_json::to_vec_pretty(&renewed) else {
                    return;
                };
                let mut v = ver.lock().await;
                match r.put_if(&p, bytes, Expect::At(v.clone())).await {
                    Ok(Some(next)) => *v = next,
                    Ok(None) => {
                        tracing::error!(lease = %r.url(&p), "the lease was taken over while this run held it");
                        return;
                    }
                    // The store could not be reached: try again at the next turn.
                    Err(e) => tracing::warn!(error = %e, "renewing the lease failed"),
                }
            }
        });
        Lease {
            root,
            rel,
            me,
            version,
            stop,
            renewer: Some(renewer),
        }
    }

    /// Stops the renewals and marks the lease released (only if it is still this run's).
    pub async fn release(mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.renewer.take() {
            t.abort();
            let _ = t.await;
        }
        let released = Holder {
            released: true,
            expires_at: stamp(Utc::now()),
            ..self.me.clone()
        };
        let v = self.version.lock().await.clone();
        if let Ok(bytes) = serde_json::to_vec_pretty(&released) {
            if let Err(e) = self.root.put_if(&self.rel, bytes, Expect::At(v)).await {
                tracing::warn!(error = %e, "releasing the lease failed; it expires on its own");
            }
        }
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.renewer.take() {
            t.abort();
        }
    }
}

/// The holder of the lease of `channel` on `date`, if it is held (not released).
pub async fn holder(store: &Store, channel: &str, date: chrono::NaiveDate) -> Option<Holder> {
    read_holder(store.root(), &lease_path(store, channel, date))
        .await
        .ok()
        .flatten()
        .and_then(|(h, _)| h)
        .filter(|h| !h.released)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(wait_ms: u64) -> LeasePolicy {
        LeasePolicy {
            ttl: Duration::from_secs(60),
            wait: Duration::from_millis(wait_ms),
        }
    }

    #[tokio::test]
    async fn a_held_lease_refuses_a_second_taker_then_frees_on_drop() {
        let tmp = tempfile::tempdir().expect("tmp");
        let store = Store::local(tmp.path()).expect("store");
        let d = chrono::NaiveDate::from_ymd_opt(2026, 11, 20).expect("date");
        let a = Lease::acquire(&store, "alipay", d, policy(0))
            .await
            .expect("first");
        let Err(Error::NotReady(why)) = Lease::acquire(&store, "alipay", d, policy(600)).await
        else {
            panic!("a second lease while the first is held");
        };
        assert!(why.contains(&format!(":{}", std::process::id())), "{why}");
        assert!(holder(&store, "alipay", d).await.is_some());
        // Another channel or date is free.
        drop(
            Lease::acquire(&store, "wechat", d, policy(0))
                .await
                .expect("other channel"),
        );
        a.release().await;
        assert!(holder(&store, "alipay", d).await.is_none());
        drop(
            Lease::acquire(&store, "alipay", d, policy(0))
                .await
                .expect("after release"),
        );
    }

    #[tokio::test]
    async fn an_expired_or_dead_holder_is_taken_over() {
        let tmp = tempfile::tempdir().expect("tmp");
        let store = Store::local(tmp.path()).expect("store");
        let d = chrono::NaiveDate::from_ymd_opt(2026, 11, 20).expect("date");
        let path = tmp.path().join(lease_path(&store, "alipay", d));
        std::fs::create_dir_all(path.parent().expect("dir")).expect("dir");
        let old = Holder {
            host: "elsewhere".into(),
            pid: 1,
            invocation: "gone".into(),
            acquired_at: "2026-11-20T00:00:00Z".into(),
            expires_at: "2026-11-20T01:00:00Z".into(),
            released: false,
        };
        std::fs::write(&path, serde_json::to_vec(&old).expect("json")).expect("write");
        let l = Lease::acquire(&store, "alipay", d, policy(0))
            .await
            .expect("expired: taken over");
        drop(l);
        // Not expired, but its process on this host is gone.
        let dead = Holder {
            host: host_name(),
            pid: u32::MAX - 7,
            expires_at: stamp(Utc::now() + chrono::Duration::hours(1)),
            ..old
        };
        std::fs::write(&path, serde_json::to_vec(&dead).expect("json")).expect("write");
        drop(
            Lease::acquire(&store, "alipay", d, policy(0))
                .await
                .expect("dead holder: taken over"),
        );
    }

    #[tokio::test]
    async fn a_lease_is_renewed_while_held() {
        let tmp = tempfile::tempdir().expect("tmp");
        let store = Store::local(tmp.path()).expect("store");
        let d = chrono::NaiveDate::from_ymd_opt(2026, 11, 20).expect("date");
        let p = LeasePolicy {
            ttl: Duration::from_millis(600),
            wait: Duration::ZERO,
        };
        let l = Lease::acquire(&store, "alipay", d, p).await.expect("lease");
        let first = holder(&store, "alipay", d).await.expect("held").expires_at;
        tokio::time::sleep(Duration::from_millis(900)).await;
        let later = holder(&store, "alipay", d).await.expect("still held");
        assert!(
            later.expires_at > first,
            "{first} then {}",
            later.expires_at
        );
        // Past the first expiry, still refused: the renewals keep it.
        assert!(Lease::acquire(&store, "alipay", d, p).await.is_err());
        drop(l);
    }
}
