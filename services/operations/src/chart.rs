//! A saga's timeline as a chart: one row per step, one bar per attempt (or wait, or
//! compensation), from when it was scheduled to when it ended, with the state it ended in;
//! and marks for what happened at an instant (an operator's action, an incident, a skip, the
//! saga parked or ended). The dashboard draws it as a Gantt-like picture.
//!
//! It is folded from the saga's events as [`crate::grpc::OperationsApi::detail`] returns them
//! (the store's, never the read model's), so it is as current as the timeline beside it.

use chrono::{DateTime, Utc};
use levensloop_proto::v1;
use levensloop_proto::v1::saga_event::Event;
use serde::Serialize;

use crate::summary::to_datetime;

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Chart {
    /// The saga's first event; `None` for a saga without events.
    pub start: Option<DateTime<Utc>>,
    /// Its last event once it has finished; while it runs, now (bars still open run to here).
    pub end: Option<DateTime<Utc>>,
    /// The saga has not finished: open bars are still going on.
    pub open: bool,
    pub rows: Vec<Row>,
    /// What concerns the saga as a whole (cancelled, parked, ended, an action on it).
    pub marks: Vec<Mark>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Row {
    pub step_id: String,
    pub handler: String,
    /// The step's status now, as the summary says it (`running`, `failed`, …).
    pub status: String,
    pub attempts: u32,
    pub bars: Vec<Bar>,
    pub marks: Vec<Mark>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum BarKind {
    /// An attempt out with the step's handler.
    Attempt,
    /// Waiting for the next attempt (a retry's back-off).
    RetryWait,
    /// A wait step waiting for its date.
    Wait,
    /// An attempt to undo the step.
    Compensation,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum BarState {
    Running,
    Waiting,
    Succeeded,
    Failed,
    Skipped,
    Compensating,
    Compensated,
    /// Left behind: an operator retried it while it ran, or the saga ended without it.
    Abandoned,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Bar {
    pub kind: BarKind,
    pub attempt: u32,
    pub start: DateTime<Utc>,
    /// `None` while it goes on.
    pub end: Option<DateTime<Utc>>,
    /// When a wait is due (a retry's back-off, a wait step's date).
    pub until: Option<DateTime<Utc>>,
    pub state: BarState,
    /// Why it ended so (a failure's reason).
    pub note: String,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Mark {
    pub at: DateTime<Utc>,
    /// `operator`, `skipped`, `incident`, `human`, `parked`, `resumed`, `cancelled`,
    /// `completed`, `compensated` or `failed`.
    pub kind: String,
    /// What to show: the operator's action (`retry-step`), …
    pub label: String,
    pub actor: String,
    pub reason: String,
}

/// The short, lower-case name of a step status (`STEP_STATUS_RUNNING` → `running`).
pub fn step_status_name(status: i32) -> String {
    v1::StepStatus::try_from(status)
        .unwrap_or(v1::StepStatus::Unspecified)
        .as_str_name()
        .trim_start_matches("STEP_STATUS_")
        .to_ascii_lowercase()
}

impl Row {
    fn open_bar(&mut self) -> Option<&mut Bar> {
        self.bars.last_mut().filter(|b| b.end.is_none())
    }

    /// Ends the bar going on, if one is, in `state`.
    fn finish(&mut self, at: DateTime<Utc>, state: BarState, note: &str) {
        if let Some(bar) = self.open_bar() {
            bar.end = Some(at);
            bar.state = state;
            if !note.is_empty() {
                bar.note = note.to_owned();
            }
        }
    }

    /// Starts a bar, closing whatever was going on: a back-off has simply elapsed (an
    /// instantaneous one, an operator's retry, is dropped); an attempt still out was left.
    fn begin(&mut self, bar: Bar) {
        let at = bar.start;
        if let Some(open) = self.open_bar() {
            open.end = Some(at);
            if open.kind == BarKind::RetryWait {
                if open.start == at {
                    self.bars.pop();
                }
            } else {
                open.state = BarState::Abandoned;
            }
        }
        self.bars.push(bar);
    }

    fn mark(&mut self, mark: Mark) {
        self.marks.push(mark);
    }
}

fn mark(at: DateTime<Utc>, kind: &str, label: &str, actor: &str, reason: &str) -> Mark {
    Mark {
        at,
        kind: kind.to_owned(),
        label: label.to_owned(),
        actor: actor.to_owned(),
        reason: reason.to_owned(),
    }
}

fn bar(kind: BarKind, attempt: u32, start: DateTime<Utc>, state: BarState) -> Bar {
    Bar {
        kind,
        attempt,
        start,
        end: None,
        until: None,
        state,
        note: String::new(),
    }
}

/// The row of `step_id`, added (pending, no handler known) for a step the detail does not
/// list.
fn row<'a>(rows: &'a mut Vec<Row>, step_id: &str) -> &'a mut Row {
    let i = match rows.iter().position(|r| r.step_id == step_id) {
        Some(i) => i,
        None => {
            rows.push(Row {
                step_id: step_id.to_owned(),
                handler: String::new(),
                status: "pending".to_owned(),
                attempts: 0,
                bars: Vec::new(),
                marks: Vec::new(),
            });
            rows.len() - 1
        }
    };
    &mut rows[i]
}

/// The chart of a saga's detail; `now` ends the bars of a saga still running.
pub fn chart(detail: &v1::SagaDetail, now: DateTime<Utc>) -> Chart {
    let mut rows: Vec<Row> = detail
        .steps
        .iter()
        .map(|s| Row {
            step_id: s.step_id.clone(),
            handler: s.handler.clone(),
            status: step_status_name(s.status),
            attempts: s.attempts,
            bars: Vec::new(),
            marks: Vec::new(),
        })
        .collect();
    let mut marks = Vec::new();
    let mut start = None;
    let mut last = None;
    for entry in &detail.timeline {
        let Some(event) = entry.event.as_ref() else {
            continue;
        };
        let Some(at) = entry
            .at
            .as_ref()
            .or(event.occurred_at.as_ref())
            .and_then(to_datetime)
        else {
            continue;
        };
        start.get_or_insert(at);
        last = Some(at);
        let Some(event) = event.event.as_ref() else {
            continue;
        };
        match event {
            Event::SagaStarted(_) => {}
            Event::StepScheduled(s) => {
                let r = row(&mut rows, &s.step_id);
                if r.handler.is_empty() {
                    r.handler = s.handler.clone();
                }
                r.begin(bar(BarKind::Attempt, s.attempt, at, BarState::Running));
            }
            Event::StepSucceeded(s) => {
                row(&mut rows, &s.step_id).finish(at, BarState::Succeeded, "")
            }
            Event::StepFailed(s) => {
                let note = if s.retryable {
                    format!("{} (retryable)", s.reason)
                } else {
                    s.reason.clone()
                };
                row(&mut rows, &s.step_id).finish(at, BarState::Failed, &note);
            }
            Event::StepTimedOut(s) => {
                row(&mut rows, &s.step_id).finish(at, BarState::Failed, "timed out")
            }
            Event::StepRetryScheduled(s) => {
                let mut wait = bar(BarKind::RetryWait, s.next_attempt, at, BarState::Waiting);
                wait.until = s.due_at.as_ref().and_then(to_datetime);
                row(&mut rows, &s.step_id).begin(wait);
            }
            Event::StepSkipped(s) => {
                let r = row(&mut rows, &s.step_id);
                r.finish(at, BarState::Skipped, &s.reason);
                r.mark(mark(at, "skipped", "skipped", &s.actor, &s.reason));
            }
            Event::StepCompensationScheduled(s) => row(&mut rows, &s.step_id).begin(bar(
                BarKind::Compensation,
                s.attempt,
                at,
                BarState::Compensating,
            )),
            Event::StepCompensated(s) => {
                row(&mut rows, &s.step_id).finish(at, BarState::Compensated, "")
            }
            Event::CompensationFailed(s) => {
                row(&mut rows, &s.step_id).finish(at, BarState::Failed, &s.reason);
            }
            Event::WaitStarted(s) => {
                let mut wait = bar(BarKind::Wait, 1, at, BarState::Waiting);
                wait.until = s.until.as_ref().and_then(to_datetime);
                row(&mut rows, &s.step_id).begin(wait);
            }
            Event::WaitElapsed(s) => row(&mut rows, &s.step_id).finish(at, BarState::Succeeded, ""),
            Event::HumanTaskCompleted(h) => {
                let r = row(&mut rows, &h.step_id);
                r.finish(at, BarState::Succeeded, &h.note);
                r.mark(mark(at, "human", "completed by hand", &h.actor, &h.note));
            }
            Event::IncidentRaised(i) => {
                let m = mark(at, "incident", "incident", "", &i.reason);
                if i.step_id.is_empty() {
                    marks.push(m);
                } else {
                    row(&mut rows, &i.step_id).mark(m);
                }
            }
            Event::OperatorActed(a) => {
                let m = mark(at, "operator", &a.action, &a.actor, &a.reason);
                if a.step_id.is_empty() {
                    marks.push(m);
                } else {
                    row(&mut rows, &a.step_id).mark(m);
                }
            }
            Event::SagaParked(p) => marks.push(mark(at, "parked", "parked", "", &p.reason)),
            Event::SagaResumed(r) => {
                marks.push(mark(at, "resumed", "resumed", &r.actor, &r.reason));
            }
            Event::SagaCancelled(c) => {
                marks.push(mark(at, "cancelled", "cancelled", &c.actor, &c.reason));
            }
            Event::SagaCompleted(_) => end_saga(&mut rows, &mut marks, at, "completed", ""),
            Event::SagaCompensated(c) => {
                end_saga(&mut rows, &mut marks, at, "compensated", &c.failed_step_id);
            }
            Event::SagaFailed(f) => end_saga(&mut rows, &mut marks, at, "failed", &f.reason),
        }
    }
    let finished = detail
        .summary
        .as_ref()
        .is_some_and(|s| s.finished_at.is_some());
    let end = if finished {
        last
    } else {
        last.map(|l| l.max(now))
    };
    Chart {
        start,
        end,
        open: !finished,
        rows,
        marks,
    }
}

/// The saga ended: the engine ignores whatever was still out.
fn end_saga(rows: &mut [Row], marks: &mut Vec<Mark>, at: DateTime<Utc>, kind: &str, reason: &str) {
    for r in rows {
        if let Some(open) = r.open_bar() {
            open.end = Some(at);
            open.state = BarState::Abandoned;
        }
    }
    marks.push(mark(at, kind, kind, "", reason));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::summary::to_timestamp;

    fn t(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_790_000_000 + secs, 0).unwrap()
    }

    fn entry(secs: i64, event: Event) -> v1::TimelineEntry {
        v1::TimelineEntry {
            at: Some(to_timestamp(t(secs))),
            event: Some(v1::SagaEvent {
                saga_id: "6f1c2a4e-0c4b-5d0e-9a77-3f8f1b2d9c10".into(),
                occurred_at: Some(to_timestamp(t(secs))),
                event: Some(event),
                ..Default::default()
            }),
        }
    }

    fn step(id: &str, status: v1::StepStatus) -> v1::StepSummary {
        v1::StepSummary {
            step_id: id.into(),
            handler: String::new(),
            status: status as i32,
            attempts: 0,
        }
    }

    fn scheduled(secs: i64, step: &str, attempt: u32) -> v1::TimelineEntry {
        entry(
            secs,
            Event::StepScheduled(v1::StepScheduled {
                step_id: step.into(),
                handler: format!("h.{step}"),
                attempt,
                ..Default::default()
            }),
        )
    }

    #[test]
    fn each_attempt_is_a_bar_ending_in_its_state_and_actions_are_marks() {
        let detail = v1::SagaDetail {
            summary: Some(v1::SagaSummary::default()),
            steps: vec![
                step("verify", v1::StepStatus::Succeeded),
                step("premium", v1::StepStatus::Running),
            ],
            timeline: vec![
                entry(0, Event::SagaStarted(v1::SagaStarted::default())),
                scheduled(0, "verify", 1),
                entry(
                    2,
                    Event::StepSucceeded(v1::StepSucceeded {
                        step_id: "verify".into(),
                        attempt: 1,
                        ..Default::default()
                    }),
                ),
                scheduled(2, "premium", 1),
                entry(
                    3,
                    Event::StepFailed(v1::StepFailed {
                        step_id: "premium".into(),
                        attempt: 1,
                        reason: "refused".into(),
                        ..Default::default()
                    }),
                ),
                entry(
                    10,
                    Event::OperatorActed(v1::OperatorActed {
                        actor: "an.peeters".into(),
                        action: "retry-step".into(),
                        step_id: "premium".into(),
                        reason: "service back".into(),
                    }),
                ),
                // An operator's retry: due at once, scheduled at once.
                entry(
                    10,
                    Event::StepRetryScheduled(v1::StepRetryScheduled {
                        step_id: "premium".into(),
                        next_attempt: 2,
                        due_at: Some(to_timestamp(t(10))),
                    }),
                ),
                scheduled(10, "premium", 2),
            ],
        };
        let chart = chart(&detail, t(12));
        assert_eq!(chart.start, Some(t(0)));
        assert_eq!(chart.end, Some(t(12)), "a running saga's chart runs to now");
        assert!(chart.open);
        let verify = &chart.rows[0];
        assert_eq!(verify.status, "succeeded");
        assert_eq!(verify.handler, "h.verify");
        assert_eq!(verify.bars.len(), 1);
        assert_eq!(verify.bars[0].state, BarState::Succeeded);
        assert_eq!(verify.bars[0].end, Some(t(2)));
        let premium = &chart.rows[1];
        let states: Vec<_> = premium
            .bars
            .iter()
            .map(|b| (b.kind, b.attempt, b.state))
            .collect();
        assert_eq!(
            states,
            [
                (BarKind::Attempt, 1, BarState::Failed),
                (BarKind::Attempt, 2, BarState::Running)
            ],
            "the operator's instant back-off leaves no bar"
        );
        assert_eq!(premium.bars[0].note, "refused");
        assert_eq!(premium.bars[1].end, None);
        assert_eq!(premium.marks.len(), 1);
        assert_eq!(premium.marks[0].label, "retry-step");
        assert_eq!(premium.marks[0].actor, "an.peeters");
    }

    #[test]
    fn back_offs_waits_and_compensations_have_bars_and_an_end_closes_what_was_out() {
        let detail = v1::SagaDetail {
            summary: Some(v1::SagaSummary {
                finished_at: Some(to_timestamp(t(40))),
                ..Default::default()
            }),
            steps: vec![step("a", v1::StepStatus::Compensated)],
            timeline: vec![
                scheduled(0, "a", 1),
                entry(
                    1,
                    Event::StepFailed(v1::StepFailed {
                        step_id: "a".into(),
                        attempt: 1,
                        retryable: true,
                        reason: "down".into(),
                        ..Default::default()
                    }),
                ),
                entry(
                    1,
                    Event::StepRetryScheduled(v1::StepRetryScheduled {
                        step_id: "a".into(),
                        next_attempt: 2,
                        due_at: Some(to_timestamp(t(5))),
                    }),
                ),
                scheduled(5, "a", 2),
                entry(
                    6,
                    Event::StepSucceeded(v1::StepSucceeded {
                        step_id: "a".into(),
                        ..Default::default()
                    }),
                ),
                entry(
                    7,
                    Event::WaitStarted(v1::WaitStarted {
                        step_id: "w".into(),
                        until: Some(to_timestamp(t(1000))),
                    }),
                ),
                entry(
                    20,
                    Event::StepCompensationScheduled(v1::StepCompensationScheduled {
                        step_id: "a".into(),
                        attempt: 1,
                        ..Default::default()
                    }),
                ),
                entry(
                    21,
                    Event::StepCompensated(v1::StepCompensated {
                        step_id: "a".into(),
                        ..Default::default()
                    }),
                ),
                entry(40, Event::SagaCompensated(v1::SagaCompensated::default())),
            ],
        };
        let chart = chart(&detail, t(100));
        assert!(!chart.open);
        assert_eq!(
            chart.end,
            Some(t(40)),
            "a finished saga's chart ends with it"
        );
        let a: Vec<_> = chart.rows[0]
            .bars
            .iter()
            .map(|b| (b.kind, b.state, b.start, b.end))
            .collect();
        assert_eq!(
            a,
            [
                (BarKind::Attempt, BarState::Failed, t(0), Some(t(1))),
                (BarKind::RetryWait, BarState::Waiting, t(1), Some(t(5))),
                (BarKind::Attempt, BarState::Succeeded, t(5), Some(t(6))),
                (
                    BarKind::Compensation,
                    BarState::Compensated,
                    t(20),
                    Some(t(21))
                ),
            ]
        );
        assert_eq!(chart.rows[0].bars[0].note, "down (retryable)");
        assert_eq!(chart.rows[0].bars[1].until, Some(t(5)));
        let w = &chart.rows[1];
        assert_eq!(w.step_id, "w", "a step first seen in the events gets a row");
        assert_eq!(w.bars[0].kind, BarKind::Wait);
        assert_eq!(w.bars[0].until, Some(t(1000)));
        assert_eq!(
            (w.bars[0].state, w.bars[0].end),
            (BarState::Abandoned, Some(t(40))),
            "the end of the saga leaves the wait"
        );
        assert_eq!(chart.marks[0].kind, "compensated");
    }
}
