//! Throughput for the dashboard's overview: sagas finished per minute over the last minutes.
//!
//! How it is measured: every few seconds the server reads the read model's counters (the
//! same per type and status counts `Stats` returns: a handful of rows, no saga counted) and
//! adds up the sagas in a final status. What that total grew by since the previous sample is
//! put in the minute of the sample. This was chosen over counting the changes announced on
//! the broadcast because:
//! - it costs one small query per interval, whatever the load (the broadcast can carry
//!   hundreds of changes a second, and a lagging receiver loses some);
//! - it counts every saga once, whichever instance projected it, and never twice: a saga
//!   that moves from one final status to another (a completed saga cancelled) leaves the
//!   total as it was;
//! - it needs no memory per saga.
//!
//! Its limits: a minute is as exact as the sampling interval (a saga finished a few seconds
//! before a minute's end may count in the next), the series starts when the server starts,
//! and while a rebuilt read model catches up its replay shows as a burst. A total that went
//! down (the read model was reset) counts nothing and starts over from the new total.

use crate::readmodel::ReadModel;
use crate::summary::is_final;
use chrono::{DateTime, DurationRound, TimeDelta, Utc};
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The minutes shown.
pub const WINDOW_MINUTES: i64 = 15;
/// How often the counters are read.
pub const SAMPLE_EVERY: Duration = Duration::from_secs(5);

/// Sagas finished per minute, from samples of the finished total.
#[derive(Debug, Default)]
pub struct Throughput {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    /// The first sample's time.
    since: Option<DateTime<Utc>>,
    last_total: Option<u64>,
    /// Finished per minute (the minute's start), the last [`WINDOW_MINUTES`] kept.
    minutes: BTreeMap<DateTime<Utc>, u64>,
}

/// What the overview shows.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ThroughputView {
    pub window_minutes: i64,
    /// Since when the server has been counting; `None` before its first sample.
    pub since: Option<DateTime<Utc>>,
    /// Oldest first, one per minute since counting began (at most the window), the current
    /// minute last (still going on).
    pub minutes: Vec<MinuteCount>,
    /// The mean over the whole minutes shown; `None` before one has passed.
    pub per_minute: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MinuteCount {
    pub minute: DateTime<Utc>,
    pub finished: u64,
    /// The current minute: not over yet.
    pub partial: bool,
}

fn minute_of(at: DateTime<Utc>) -> DateTime<Utc> {
    at.duration_trunc(TimeDelta::minutes(1)).unwrap_or(at)
}

impl Throughput {
    /// One sample: `finished_total` sagas in a final status at `at`.
    pub fn record(&self, at: DateTime<Utc>, finished_total: u64) {
        let Ok(mut state) = self.state.lock() else {
            return;
        };
        state.since.get_or_insert(at);
        let minute = minute_of(at);
        let grew = state
            .last_total
            .map_or(0, |last| finished_total.saturating_sub(last));
        *state.minutes.entry(minute).or_insert(0) += grew;
        state.last_total = Some(finished_total);
        let oldest = minute - TimeDelta::minutes(WINDOW_MINUTES - 1);
        state.minutes = state.minutes.split_off(&oldest);
    }

    pub fn view(&self, now: DateTime<Utc>) -> ThroughputView {
        let Ok(state) = self.state.lock() else {
            return ThroughputView {
                window_minutes: WINDOW_MINUTES,
                since: None,
                minutes: Vec::new(),
                per_minute: None,
            };
        };
        let current = minute_of(now);
        let mut minutes = Vec::new();
        if let Some(since) = state.since {
            let first = minute_of(since).max(current - TimeDelta::minutes(WINDOW_MINUTES - 1));
            let mut minute = first;
            while minute <= current {
                minutes.push(MinuteCount {
                    minute,
                    finished: state.minutes.get(&minute).copied().unwrap_or(0),
                    partial: minute == current,
                });
                minute += TimeDelta::minutes(1);
            }
        }
        // Whole minutes only: the first minute counted from the first sample on is partial
        // too, unless counting began at its start.
        let whole: Vec<u64> = minutes
            .iter()
            .filter(|m| !m.partial && state.since.is_some_and(|s| minute_of(s) < m.minute))
            .map(|m| m.finished)
            .collect();
        let per_minute =
            (!whole.is_empty()).then(|| whole.iter().sum::<u64>() as f64 / whole.len() as f64);
        ThroughputView {
            window_minutes: WINDOW_MINUTES,
            since: state.since,
            minutes,
            per_minute,
        }
    }
}

/// Samples the read model's finished total for ever.
pub async fn sample(model: Arc<ReadModel>, throughput: Arc<Throughput>) {
    let mut every = tokio::time::interval(SAMPLE_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        match model.stats().await {
            Ok(stats) => {
                let finished = stats
                    .by_status
                    .iter()
                    .filter(|c| is_final(c.status))
                    .map(|c| c.count)
                    .sum();
                throughput.record(Utc::now(), finished);
            }
            Err(e) => tracing::debug!(error = %e, "throughput not sampled"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(minute: i64, second: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_790_000_040 + minute * 60 + second, 0).unwrap()
    }

    #[test]
    fn growth_of_the_finished_total_counts_in_the_minute_it_was_seen() {
        let t = Throughput::default();
        assert_eq!(t.view(at(0, 0)).minutes, []);
        t.record(at(0, 10), 100); // the baseline: nothing counted
        t.record(at(0, 40), 103);
        t.record(at(1, 5), 110);
        t.record(at(1, 35), 105); // reset: counts nothing, starts over
        t.record(at(1, 50), 106);
        t.record(at(3, 0), 116);
        let view = t.view(at(3, 20));
        let counts: Vec<(u64, bool)> = view
            .minutes
            .iter()
            .map(|m| (m.finished, m.partial))
            .collect();
        assert_eq!(counts, [(3, false), (8, false), (0, false), (10, true)]);
        assert_eq!(view.minutes[0].minute, minute_of(at(0, 10)));
        assert_eq!(view.since, Some(at(0, 10)));
        // The first minute (counting began within it) and the current one are left out.
        assert_eq!(view.per_minute, Some(4.0));
    }

    #[test]
    fn only_the_window_is_kept() {
        let t = Throughput::default();
        for m in 0..40 {
            t.record(at(m, 0), (m as u64) * 2);
        }
        let view = t.view(at(39, 30));
        assert_eq!(view.minutes.len(), WINDOW_MINUTES as usize);
        assert!(view.minutes.iter().all(|m| m.finished == 2));
        assert_eq!(view.per_minute, Some(2.0));
        assert_eq!(
            t.state.lock().unwrap().minutes.len(),
            WINDOW_MINUTES as usize
        );
    }
}
