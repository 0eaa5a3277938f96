//! The lease on a channel-date: two runs of the same channel and date at once would race on
//! its manifest and outputs, so a run first takes `runs/channel=C/dt=D/lease.json`. The file
//! is created with its content in one step (a hard link of a finished sibling, which fails if
//! the lease exists), renewed while the run works, and removed when it ends. A holder that
//! crashed blocks nobody for long: its lease expires, and on the same host a holder whose
//! process is gone is stale at once. Taking over a stale lease renames it away first, so of two
//! runs that find it stale only one takes it.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::store::{write_atomic, Store};

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
}

impl Holder {
    fn describe(&self) -> String {
        format!(
            "{}:{} (invocation {}, since {}, lease until {})",
            self.host, self.pid, self.invocation, self.acquired_at, self.expires_at
        )
    }

    fn expired(&self, now: DateTime<Utc>) -> bool {
        DateTime::parse_from_rfc3339(&self.expires_at)
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

/// A held lease; released on drop.
pub struct Lease {
    path: PathBuf,
    me: Holder,
    stop: Arc<AtomicBool>,
    renewer: Option<std::thread::JoinHandle<()>>,
}

fn read_holder(path: &Path) -> Option<Holder> {
    let bytes = std::fs::read(path).ok()?;
    serde_json::from_slice(&bytes).ok()
}

fn stamp(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

impl Lease {
    /// Takes the lease of `channel` on `date`, waiting up to `policy.wait` for its holder;
    /// `Err(NotReady)` names the holder when it is still held.
    pub fn acquire(
        store: &Store,
        channel: &str,
        date: chrono::NaiveDate,
        policy: LeasePolicy,
    ) -> Result<Lease> {
        let dir = store.area("runs", channel, date);
        std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
        let path = dir.join("lease.json");
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
            };
            // Written aside, then linked into place: the lease never exists half written.
            let aside = dir.join(format!(".lease-{}-{}.json", me.pid, me.invocation));
            std::fs::write(&aside, serde_json::to_vec_pretty(&me)?)
                .map_err(|e| Error::io(&aside, e))?;
            let linked = std::fs::hard_link(&aside, &path);
            let _ = std::fs::remove_file(&aside);
            match linked {
                Ok(()) => {
                    tracing::debug!(channel, %date, "lease taken");
                    return Ok(Lease::start(path, me, policy.ttl));
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(Error::io(&path, e)),
            }
            let holder = read_holder(&path);
            let stale = match &holder {
                Some(h) => h.expired(now) || h.dead_here(),
                // Unreadable (written by hand, or a foreign tool): stale once old enough.
                None => std::fs::metadata(&path)
                    .and_then(|m| m.modified())
                    .map(|t| t.elapsed().unwrap_or_default() > policy.ttl)
                    .unwrap_or(false),
            };
            if stale {
                // Only one taker wins the rename; the others find the lease gone or new.
                let away = dir.join(format!(".lease-stale-{}-{}", me.pid, me.invocation));
                if std::fs::rename(&path, &away).is_ok() {
                    tracing::warn!(
                        channel, %date,
                        holder = holder.as_ref().map(Holder::describe).unwrap_or_default(),
                        "took over a stale lease"
                    );
                    let _ = std::fs::remove_file(&away);
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
                    path.display()
                )));
            }
            std::thread::sleep(Duration::from_millis(500).min(policy.wait));
        }
    }

    fn start(path: PathBuf, me: Holder, ttl: Duration) -> Lease {
        let stop = Arc::new(AtomicBool::new(false));
        let (p, who, flag) = (path.clone(), me.clone(), stop.clone());
        let every = (ttl / 3).max(Duration::from_millis(100));
        let renewer = std::thread::Builder::new()
            .name("reckon-lease".into())
            .spawn(move || {
                let mut last = Instant::now();
                while !flag.load(Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_millis(50).min(every));
                    if last.elapsed() < every {
                        continue;
                    }
                    last = Instant::now();
                    match read_holder(&p) {
                        Some(h) if h.invocation == who.invocation && h.pid == who.pid => {
                            let ttl = chrono::Duration::from_std(ttl)
                                .unwrap_or(chrono::Duration::hours(1));
                            let renewed = Holder {
                                expires_at: stamp(Utc::now() + ttl),
                                ..h
                            };
                            if let Ok(bytes) = serde_json::to_vec_pretty(&renewed) {
                                let _ = write_atomic(&p, &bytes);
                            }
                        }
                        _ => {
                            tracing::error!(lease = %p.display(), "the lease was taken over while this run held it");
                            return;
                        }
                    }
                }
            })
            .ok();
        Lease {
            path,
            me,
            stop,
            renewer,
        }
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.renewer.take() {
            let _ = t.join();
        }
        if read_holder(&self.path).is_some_and(|h| h.invocation == self.me.invocation) {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// The holder of the lease of `channel` on `date`, if any.
pub fn holder(store: &Store, channel: &str, date: chrono::NaiveDate) -> Option<Holder> {
    read_holder(&store.area("runs", channel, date).join("lease.json"))
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

    #[test]
    fn a_held_lease_refuses_a_second_taker_then_frees_on_drop() {
        let tmp = tempfile::tempdir().expect("tmp");
        let store = Store::new(tmp.path());
        let d = chrono::NaiveDate::from_ymd_opt(2026, 11, 20).expect("date");
        let a = Lease::acquire(&store, "alipay", d, policy(0)).expect("first");
        let Err(Error::NotReady(why)) = Lease::acquire(&store, "alipay", d, policy(600)) else {
            panic!("a second lease while the first is held");
        };
        assert!(why.contains(&format!(":{}", std::process::id())), "{why}");
        assert!(holder(&store, "alipay", d).is_some());
        // Another channel or date is free.
        drop(Lease::acquire(&store, "wechat", d, policy(0)).expect("other channel"));
        drop(a);
        assert!(holder(&store, "alipay", d).is_none());
        drop(Lease::acquire(&store, "alipay", d, policy(0)).expect("after release"));
    }

    #[test]
    fn an_expired_or_dead_holder_is_taken_over() {
        let tmp = tempfile::tempdir().expect("tmp");
        let store = Store::new(tmp.path());
        let d = chrono::NaiveDate::from_ymd_opt(2026, 11, 20).expect("date");
        let path = store.area("runs", "alipay", d).join("lease.json");
        std::fs::create_dir_all(path.parent().expect("dir")).expect("dir");
        let old = Holder {
            host: "elsewhere".into(),
            pid: 1,
            invocation: "gone".into(),
            acquired_at: "2026-11-20T00:00:00Z".into(),
            expires_at: "2026-11-20T01:00:00Z".into(),
        };
        std::fs::write(&path, serde_json::to_vec(&old).expect("json")).expect("write");
        let l = Lease::acquire(&store, "alipay", d, policy(0)).expect("expired: taken over");
        drop(l);
        // Not expired, but its process on this host is gone.
        let dead = Holder {
            host: host_name(),
            pid: u32::MAX - 7,
            expires_at: stamp(Utc::now() + chrono::Duration::hours(1)),
            ..old
        };
        std::fs::write(&path, serde_json::to_vec(&dead).expect("json")).expect("write");
        drop(Lease::acquire(&store, "alipay", d, policy(0)).expect("dead holder: taken over"));
    }

    #[test]
    fn a_lease_is_renewed_while_held() {
        let tmp = tempfile::tempdir().expect("tmp");
        let store = Store::new(tmp.path());
        let d = chrono::NaiveDate::from_ymd_opt(2026, 11, 20).expect("date");
        let p = LeasePolicy {
            ttl: Duration::from_millis(600),
            wait: Duration::ZERO,
        };
        let l = Lease::acquire(&store, "alipay", d, p).expect("lease");
        let first = holder(&store, "alipay", d).expect("held").expires_at;
        std::thread::sleep(Duration::from_millis(900));
        let later = holder(&store, "alipay", d).expect("still held");
        assert!(
            later.expires_at > first,
            "{first} then {}",
            later.expires_at
        );
        // Past the first expiry, still refused: the renewals keep it.
        assert!(Lease::acquire(&store, "alipay", d, p).is_err());
        drop(l);
    }
}
