//! Event time: per-partition watermarks, and the two sides' watermarks made of them.
//!
//! A partition's watermark is the latest event time it has shown, less the lateness the
//! config allows (records of a partition may arrive that far out of order). A side's watermark
//! is the least of its partitions': one slow region holds the side back, as it must.
//!
//! A partition that has been quiet for `idle_after` (wall time) stops holding its side back:
//! its watermark follows the stream's event clock less `max_lag`, the longest a producer may
//! take to publish a record after its event time. The event clock is the latest event time
//! any partition has shown, advanced by the wall time since it arrived. So a silent source
//! never holds a day open forever (the clock moves on), and never closes it early either (a
//! record it may still publish is at most `max_lag` behind the clock).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::record::Side;

/// One partition's marks, in microseconds (event times since the epoch; wall times too).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mark {
    /// The latest event time seen.
    pub max_event: i64,
    /// When (wall clock) a record last arrived.
    pub last_arrival: i64,
}

/// The watermarks of every partition of both sides.
#[derive(Debug, Clone)]
pub struct Watermarks {
    parts: BTreeMap<(Side, String), Mark>,
    /// The latest event time of all, and when it arrived.
    clock: Option<Mark>,
    /// When this process started watching: a side with no partition yet is quiet since then.
    started: i64,
    lateness: i64,
    idle_after: i64,
    max_lag: i64,
}

/// Seconds as microseconds.
pub fn secs(s: u64) -> i64 {
    i64::try_from(s).unwrap_or(i64::MAX / 1_000_000) * 1_000_000
}

impl Watermarks {
    /// No partitions yet; `now` is the wall clock (microseconds).
    pub fn new(lateness: i64, idle_after: i64, max_lag: i64, now: i64) -> Watermarks {
        Watermarks {
            parts: BTreeMap::new(),
            clock: None,
            started: now,
            lateness,
            idle_after,
            max_lag,
        }
    }

    /// The marks as kept in the state (to resume with).
    pub fn marks(&self) -> impl Iterator<Item = (&(Side, String), &Mark)> {
        self.parts.iter()
    }

    /// Resumes a partition's marks from the state. Its quiet time counts from `now`: the
    /// process was not watching while it was down.
    pub fn resume(&mut self, side: Side, partition: &str, max_event: i64, now: i64) {
        if max_event == i64::MIN {
            // A partition that has shown no record yet (only messages that did not parse).
            return;
        }
        let m = Mark {
            max_event,
            last_arrival: now,
        };
        self.parts.insert((side, partition.to_string()), m);
        if self.clock.is_none_or(|c| c.max_event < max_event) {
            self.clock = Some(m);
        }
    }

    /// A record of `side` with event time `event` arrived on `partition` at `now`.
    pub fn observe(&mut self, side: Side, partition: &str, event: i64, now: i64) {
        let m = self
            .parts
            .entry((side, partition.to_string()))
            .or_insert(Mark {
                max_event: event,
                last_arrival: now,
            });
        m.max_event = m.max_event.max(event);
        m.last_arrival = now;
        if self.clock.is_none_or(|c| c.max_event <= event) {
            self.clock = Some(Mark {
                max_event: event,
                last_arrival: now,
            });
        }
    }

    /// The stream's event clock at `now`: the latest event time, moved on by the wall time
    /// since it arrived. `None` before any record.
    pub fn clock(&self, now: i64) -> Option<i64> {
        self.clock.map(|c| {
            c.max_event
                .saturating_add(now.saturating_sub(c.last_arrival).max(0))
        })
    }

    fn quiet_mark(&self, now: i64) -> Option<i64> {
        self.clock(now).map(|c| c.saturating_sub(self.max_lag))
    }

    /// A partition's watermark at `now`.
    fn of(&self, m: &Mark, now: i64) -> i64 {
        let own = m.max_event.saturating_sub(self.lateness);
        if now.saturating_sub(m.last_arrival) >= self.idle_after {
            own.max(self.quiet_mark(now).unwrap_or(i64::MIN))
        } else {
            own
        }
    }

    /// `side`'s watermark at `now`: every record of it still to come has an event time after
    /// this (within the configured lateness and lag). `None` while nothing can be said.
    pub fn side(&self, side: Side, now: i64) -> Option<i64> {
        let mut marks = self
            .parts
            .iter()
            .filter(|((s, _), _)| *s == side)
            .map(|(_, m)| self.of(m, now))
            .peekable();
        if marks.peek().is_none() {
            // Nothing from this side yet: quiet since the process started.
            return if now.saturating_sub(self.started) >= self.idle_after {
                self.quiet_mark(now)
            } else {
                None
            };
        }
        marks.min()
    }

    /// The least of both sides' watermarks at `now`.
    pub fn both(&self, now: i64) -> Option<i64> {
        Some(
            self.side(Side::Platform, now)?
                .min(self.side(Side::Channel, now)?),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: i64 = 1_000_000;

    #[test]
    fn the_slowest_partition_holds_its_side_until_it_goes_quiet() {
        // 5 s lateness, quiet after 10 s, producers at most 60 s behind.
        let mut w = Watermarks::new(5 * S, 10 * S, 60 * S, 0);
        w.observe(Side::Platform, "east", 1_000 * S, 0);
        w.observe(Side::Platform, "west", 900 * S, 0);
        w.observe(Side::Channel, "all", 1_000 * S, 0);
        assert_eq!(w.side(Side::Platform, S), Some(895 * S), "west holds it");
        assert_eq!(w.both(S), Some(895 * S));
        // East keeps publishing; west goes quiet: after 10 s it follows the clock less the lag.
        w.observe(Side::Platform, "east", 1_020 * S, 20 * S);
        w.observe(Side::Channel, "all", 1_020 * S, 20 * S);
        assert_eq!(w.clock(20 * S), Some(1_020 * S));
        assert_eq!(w.side(Side::Platform, 20 * S), Some(960 * S));
        // The clock moves with the wall even when nothing arrives: a silent stream closes
        // days eventually, never earlier than the lag allows.
        assert_eq!(w.side(Side::Channel, 100 * S), Some(1_040 * S));
    }

    #[test]
    fn a_side_never_heard_from_waits_for_the_quiet_time_then_follows_the_clock() {
        let mut w = Watermarks::new(0, 10 * S, 60 * S, 0);
        w.observe(Side::Platform, "p", 500 * S, 0);
        assert_eq!(w.side(Side::Channel, 5 * S), None);
        assert_eq!(w.both(5 * S), None);
        assert_eq!(w.side(Side::Channel, 10 * S), Some(450 * S));
        // Resumed marks start their quiet time at the resume.
        let mut r = Watermarks::new(0, 10 * S, 60 * S, 100 * S);
        r.resume(Side::Channel, "c", 700 * S, 100 * S);
        assert_eq!(r.side(Side::Channel, 105 * S), Some(700 * S));
        assert_eq!(r.side(Side::Channel, 120 * S), Some(700 * S));
        assert_eq!(r.side(Side::Channel, 200 * S), Some(740 * S));
    }
}
