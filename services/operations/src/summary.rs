//! One saga as an operator sees it, folded from its events alone.
//!
//! [`SagaRecord::apply`] is the evolve function of the read model: pure and deterministic, so
//! the same events always give the same record and the read model can be rebuilt from the
//! store. It needs no saga definition: everything it shows comes from the events, which is
//! also its limit. A required step that failed for good shows as Failed while the saga stays
//! Running until the engine's first compensation event says the saga is compensating; and a
//! cancelled saga shows Cancelled from its `SagaCancelled` on, Compensating while one of its
//! steps is being undone (the engine records the cancel first, then compensates, and closes
//! with `SagaCompensated`), and Cancelled again once that is done.

use std::collections::BTreeSet;
use std::fmt;

use chrono::{DateTime, Utc};
use levensloop_proto::types::Timestamp;
use levensloop_proto::v1;
use levensloop_proto::v1::saga_event::Event;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// A saga's operator summary: what it is about, where it stands, what went wrong.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SagaRecord {
    pub saga_id: Uuid,
    /// The life event's type as `SagaStarted` names it: its CloudEvents type
    /// (`be.vlaanderen.levensloop.birth.v1`); see [`SagaRecord::life_event`].
    pub life_event_type: String,
    pub life_event_id: String,
    pub life_event_source: String,
    pub municipality_nis_code: String,
    /// The person's INSZ, unmasked: masking is the API's job ([`mask_insz`]).
    pub person_insz: String,
    pub definition: String,
    pub definition_version: u32,
    pub status: v1::SagaStatus,
    /// The planned steps in plan order, then any other step as it first appears.
    pub steps: Vec<StepRecord>,
    /// When the saga started (its `SagaStarted`, or else its first event).
    pub started_at: DateTime<Utc>,
    /// When its last event happened.
    pub updated_at: DateTime<Utc>,
    /// When it reached its present final status; `None` while it is not final.
    pub finished_at: Option<DateTime<Utc>>,
    /// The latest failure, whatever its kind.
    pub last_error: Option<LastError>,
    /// Every incident raised, open or resolved.
    pub incidents: Vec<IncidentRecord>,
    /// Set by `SagaCancelled`.
    pub cancellation: Option<Cancellation>,
    /// Set by `SagaParked`, cleared by `SagaResumed` (and by a cancel).
    pub parking: Option<Parking>,
    /// The stream version of the last commit applied (set by whoever applies commits).
    pub version: u64,
    /// How many of the saga's events were folded in.
    pub events: u64,
    /// A compensation (not caused by a cancel) has started.
    compensating: bool,
    /// The final status, once an event closes the saga.
    terminal: Option<v1::SagaStatus>,
}

/// One step of a saga.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepRecord {
    pub step_id: String,
    /// The handler of its last attempt; empty for a wait or a step never scheduled.
    pub handler: String,
    pub status: v1::StepStatus,
    /// Attempts scheduled so far (the last attempt's number).
    pub attempts: u32,
    /// When its current attempt (or compensation attempt) was scheduled, or its wait began.
    pub scheduled_at: Option<DateTime<Utc>>,
    /// When that attempt ended or the step settled; `None` while it is in progress.
    pub finished_at: Option<DateTime<Utc>>,
    /// The handler that undoes it, once its compensation was scheduled.
    pub compensation_handler: String,
    pub compensation_attempts: u32,
    /// The reason of its last failure.
    pub last_error: String,
    /// Its compensation has been scheduled: later retries and skips concern the compensation.
    in_compensation: bool,
    /// An attempt (or compensation attempt) is out with a handler.
    in_flight: bool,
}

/// The latest failure of a saga.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LastError {
    pub at: DateTime<Utc>,
    /// The step it concerns; empty for the saga as a whole.
    pub step_id: String,
    /// The handler's machine-readable code, when it gave one.
    pub error_code: String,
    pub reason: String,
}

impl fmt::Display for LastError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if !self.step_id.is_empty() {
            write!(f, "{}: ", self.step_id)?;
        }
        f.write_str(&self.reason)?;
        if !self.error_code.is_empty() {
            write!(f, " [{}]", self.error_code)?;
        }
        Ok(())
    }
}

/// Something only a person can resolve.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IncidentRecord {
    pub incident_id: String,
    pub step_id: String,
    pub reason: String,
    pub raised_at: DateTime<Utc>,
    /// When its step moved on (a late human step completed, a step skipped); `None` while
    /// it is open. A compensation that failed for good ends the saga, so its incident stays
    /// open.
    pub resolved_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cancellation {
    pub at: DateTime<Utc>,
    /// An operator's id, or `engine` when another saga caused it.
    pub actor: String,
    pub reason: String,
    pub cause_saga_id: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Parking {
    pub at: DateTime<Utc>,
    pub reason: String,
    pub cause_saga_id: String,
}

/// An attempt that ended (succeeded, failed or timed out), for the per-handler latency
/// histograms. Compensation attempts count under their compensation handler.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttemptEnded {
    pub step_id: String,
    pub handler: String,
    /// From its scheduling to its end, in microseconds (never negative).
    pub duration_micros: i64,
    pub compensation: bool,
}

impl SagaRecord {
    /// The record of a saga no event has been folded into yet.
    pub fn new(saga_id: Uuid) -> Self {
        Self {
            saga_id,
            life_event_type: String::new(),
            life_event_id: String::new(),
            life_event_source: String::new(),
            municipality_nis_code: String::new(),
            person_insz: String::new(),
            definition: String::new(),
            definition_version: 0,
            status: v1::SagaStatus::Running,
            steps: Vec::new(),
            started_at: DateTime::UNIX_EPOCH,
            updated_at: DateTime::UNIX_EPOCH,
            finished_at: None,
            last_error: None,
            incidents: Vec::new(),
            cancellation: None,
            parking: None,
            version: 0,
            events: 0,
            compensating: false,
            terminal: None,
        }
    }

    /// The record of `saga_id` after `events`.
    pub fn from_events<'a>(
        saga_id: Uuid,
        events: impl IntoIterator<Item = &'a v1::SagaEvent>,
    ) -> Self {
        let mut record = Self::new(saga_id);
        for event in events {
            record.apply(event);
        }
        record
    }

    /// The life event type as the API names it (`Unspecified` for an unknown one).
    pub fn life_event(&self) -> v1::LifeEventType {
        life_event_type(&self.life_event_type)
    }

    /// Whether the saga reached a final status.
    pub fn is_finished(&self) -> bool {
        self.finished_at.is_some()
    }

    /// The steps in progress: running, waiting (for a retry, a date or a person) or being
    /// undone. Pending steps wait for others and settled ones are done; a finished saga has
    /// none, as the engine ignores whatever was still out when it ended.
    pub fn current_steps(&self) -> impl Iterator<Item = &StepRecord> {
        let finished = self.is_finished();
        self.steps.iter().filter(move |s| {
            !finished
                && matches!(
                    s.status,
                    v1::StepStatus::Running
                        | v1::StepStatus::Waiting
                        | v1::StepStatus::Compensating
                )
        })
    }

    /// The incidents still open.
    pub fn open_incidents(&self) -> impl Iterator<Item = &IncidentRecord> {
        self.incidents.iter().filter(|i| i.resolved_at.is_none())
    }

    /// Every handler the saga has given work to, compensations included.
    pub fn handlers(&self) -> BTreeSet<&str> {
        self.steps
            .iter()
            .flat_map(|s| [s.handler.as_str(), s.compensation_handler.as_str()])
            .filter(|h| !h.is_empty())
            .collect()
    }

    pub fn step(&self, step_id: &str) -> Option<&StepRecord> {
        self.steps.iter().find(|s| s.step_id == step_id)
    }

    /// Folds one event in. Returns the attempt it ended, if any. An event of another saga
    /// changes nothing.
    pub fn apply(&mut self, event: &v1::SagaEvent) -> Option<AttemptEnded> {
        if Uuid::parse_str(&event.saga_id).ok() != Some(self.saga_id) {
            return None;
        }
        let at = event
            .occurred_at
            .as_ref()
            .and_then(to_datetime)
            .unwrap_or(self.updated_at);
        if self.events == 0 {
            self.started_at = at;
        }
        self.events += 1;
        self.updated_at = at;
        let was_terminal = self.terminal.is_some();
        let ended = match &event.event {
            Some(e) => self.evolve(e, at),
            None => None,
        };
        self.settle_status(at, !was_terminal && self.terminal.is_some());
        ended
    }

    fn evolve(&mut self, event: &Event, at: DateTime<Utc>) -> Option<AttemptEnded> {
        if let Some(step_id) = step_of(event) {
            // A step that moves on resolves the incidents raised about it.
            for incident in &mut self.incidents {
                if incident.step_id == step_id && incident.resolved_at.is_none() {
                    incident.resolved_at = Some(at);
                }
            }
        }
        match event {
            Event::SagaStarted(s) => {
                self.started_at = at;
                self.life_event_type = s.life_event_type.clone();
                self.life_event_id = s.life_event_id.clone();
                self.life_event_source = s.life_event_source.clone();
                self.municipality_nis_code = s.municipality_nis_code.clone();
                self.person_insz = s.person_insz.clone();
                self.definition = s.definition.clone();
                self.definition_version = s.definition_version;
                for step_id in &s.planned_steps {
                    self.step_mut(step_id);
                }
                // An integrator's handler is a step named after it.
                for registration in &s.handlers {
                    if let Some(spec) = &registration.spec
                        && let Some(step) = self.steps.iter_mut().find(|x| x.step_id == spec.name)
                        && step.handler.is_empty()
                    {
                        step.handler = spec.name.clone();
                    }
                }
                None
            }
            Event::StepScheduled(s) => {
                let step = self.step_mut(&s.step_id);
                step.handler = s.handler.clone();
                step.attempts = s.attempt;
                step.begin(v1::StepStatus::Running, at);
                None
            }
            Event::StepSucceeded(s) => self.step_mut(&s.step_id).end(v1::StepStatus::Succeeded, at),
            Event::HumanTaskCompleted(s) => {
                self.step_mut(&s.step_id).end(v1::StepStatus::Succeeded, at)
            }
            Event::WaitStarted(s) => {
                let step = self.step_mut(&s.step_id);
                step.attempts = 1;
                step.begin(v1::StepStatus::Waiting, at);
                step.in_flight = false;
                None
            }
            Event::WaitElapsed(s) => self.step_mut(&s.step_id).end(v1::StepStatus::Succeeded, at),
            Event::StepFailed(s) => {
                let step = self.step_mut(&s.step_id);
                step.last_error = s.reason.clone();
                let ended = step.end(v1::StepStatus::Failed, at);
                self.fail(at, &s.step_id, &s.error_code, &s.reason);
                ended
            }
            Event::StepTimedOut(s) => {
                let step = self.step_mut(&s.step_id);
                let reason = if step.in_compensation {
                    format!("compensation attempt {} timed out", s.attempt)
                } else {
                    format!("attempt {} timed out", s.attempt)
                };
                step.last_error = reason.clone();
                let ended = step.end(v1::StepStatus::Failed, at);
                self.fail(at, &s.step_id, "", &reason);
                ended
            }
            Event::StepRetryScheduled(s) => {
                let step = self.step_mut(&s.step_id);
                // A compensation waiting for its retry is still being undone.
                step.status = if step.in_compensation {
                    v1::StepStatus::Compensating
                } else {
                    v1::StepStatus::Waiting
                };
                step.finished_at = None;
                // An attempt still out (an operator's retry of a lost task) is abandoned.
                step.in_flight = false;
                None
            }
            Event::StepSkipped(s) => {
                let step = self.step_mut(&s.step_id);
                // A skipped compensation leaves the step done.
                let status = if step.in_compensation {
                    v1::StepStatus::Succeeded
                } else {
                    v1::StepStatus::Skipped
                };
                step.in_flight = false;
                step.status = status;
                step.finished_at = Some(at);
                None
            }
            Event::StepCompensationScheduled(s) => {
                let step = self.step_mut(&s.step_id);
                step.in_compensation = true;
                step.compensation_handler = s.handler.clone();
                step.compensation_attempts = s.attempt;
                step.begin(v1::StepStatus::Compensating, at);
                if self.cancellation.is_none() {
                    self.compensating = true;
                }
                None
            }
            Event::StepCompensated(s) => self
                .step_mut(&s.step_id)
                .end(v1::StepStatus::Compensated, at),
            Event::CompensationFailed(s) => {
                let step = self.step_mut(&s.step_id);
                step.last_error = s.reason.clone();
                let ended = step.end(v1::StepStatus::Failed, at);
                self.fail(at, &s.step_id, "", &s.reason);
                ended
            }
            Event::SagaParked(p) => {
                self.parking = Some(Parking {
                    at,
                    reason: p.reason.clone(),
                    cause_saga_id: p.cause_saga_id.clone(),
                });
                None
            }
            Event::SagaResumed(_) => {
                self.parking = None;
                None
            }
            Event::SagaCancelled(c) => {
                self.cancellation = Some(Cancellation {
                    at,
                    actor: c.actor.clone(),
                    reason: c.reason.clone(),
                    cause_saga_id: c.cause_saga_id.clone(),
                });
                self.parking = None;
                None
            }
            Event::SagaCompleted(_) => {
                self.terminal = Some(v1::SagaStatus::Completed);
                None
            }
            Event::SagaCompensated(_) => {
                self.terminal = Some(if self.cancellation.is_some() {
                    v1::SagaStatus::Cancelled
                } else {
                    v1::SagaStatus::Compensated
                });
                None
            }
            Event::SagaFailed(f) => {
                self.terminal = Some(v1::SagaStatus::Failed);
                self.fail(at, "", "", &f.reason);
                None
            }
            Event::IncidentRaised(r) => {
                if !self
                    .incidents
                    .iter()
                    .any(|i| i.incident_id == r.incident_id)
                {
                    self.incidents.push(IncidentRecord {
                        incident_id: r.incident_id.clone(),
                        step_id: r.step_id.clone(),
                        reason: r.reason.clone(),
                        raised_at: at,
                        resolved_at: None,
                    });
                }
                self.fail(at, &r.step_id, "", &r.reason);
                None
            }
            // Audit only: what the action led to follows as events of its own.
            Event::OperatorActed(_) => None,
        }
    }

    /// The saga's status from what the events said, in the engine's order of precedence:
    /// final, cancelled, parked, compensating, running.
    fn settle_status(&mut self, at: DateTime<Utc>, closed_now: bool) {
        let status = if let Some(t) = self.terminal {
            t
        } else if self.cancellation.is_some() {
            if self
                .steps
                .iter()
                .any(|s| s.status == v1::StepStatus::Compensating)
            {
                v1::SagaStatus::Compensating
            } else {
                v1::SagaStatus::Cancelled
            }
        } else if self.parking.is_some() {
            v1::SagaStatus::Parked
        } else if self.compensating {
            v1::SagaStatus::Compensating
        } else {
            v1::SagaStatus::Running
        };
        if !is_final(status) {
            self.finished_at = None;
        } else if closed_now || status != self.status || self.finished_at.is_none() {
            self.finished_at = Some(at);
        }
        self.status = status;
    }

    fn fail(&mut self, at: DateTime<Utc>, step_id: &str, error_code: &str, reason: &str) {
        self.last_error = Some(LastError {
            at,
            step_id: step_id.to_owned(),
            error_code: error_code.to_owned(),
            reason: reason.to_owned(),
        });
    }

    fn step_mut(&mut self, step_id: &str) -> &mut StepRecord {
        let i = match self.steps.iter().position(|s| s.step_id == step_id) {
            Some(i) => i,
            None => {
                self.steps.push(StepRecord::new(step_id));
                self.steps.len() - 1
            }
        };
        &mut self.steps[i]
    }
}

impl StepRecord {
    fn new(step_id: &str) -> Self {
        Self {
            step_id: step_id.to_owned(),
            handler: String::new(),
            status: v1::StepStatus::Pending,
            attempts: 0,
            scheduled_at: None,
            finished_at: None,
            compensation_handler: String::new(),
            compensation_attempts: 0,
            last_error: String::new(),
            in_compensation: false,
            in_flight: false,
        }
    }

    /// Whether the step will do nothing more (unless an operator retries it).
    pub fn is_settled(&self) -> bool {
        matches!(
            self.status,
            v1::StepStatus::Succeeded
                | v1::StepStatus::Failed
                | v1::StepStatus::Skipped
                | v1::StepStatus::Compensated
        )
    }

    fn begin(&mut self, status: v1::StepStatus, at: DateTime<Utc>) {
        self.status = status;
        self.scheduled_at = Some(at);
        self.finished_at = None;
        self.in_flight = true;
    }

    /// Ends the attempt out (if one is), reporting how long it took.
    fn end(&mut self, status: v1::StepStatus, at: DateTime<Utc>) -> Option<AttemptEnded> {
        self.status = status;
        self.finished_at = Some(at);
        if !std::mem::replace(&mut self.in_flight, false) {
            return None;
        }
        let scheduled_at = self.scheduled_at?;
        let handler = if self.in_compensation {
            &self.compensation_handler
        } else {
            &self.handler
        };
        if handler.is_empty() {
            return None;
        }
        let duration_micros = (at - scheduled_at).num_microseconds().unwrap_or(i64::MAX);
        Some(AttemptEnded {
            step_id: self.step_id.clone(),
            handler: handler.clone(),
            duration_micros: duration_micros.max(0),
            compensation: self.in_compensation,
        })
    }
}

/// Whether a saga status is final.
pub fn is_final(status: v1::SagaStatus) -> bool {
    matches!(
        status,
        v1::SagaStatus::Completed
            | v1::SagaStatus::Compensated
            | v1::SagaStatus::Failed
            | v1::SagaStatus::Cancelled
    )
}

/// The step an event is about, if it is about one.
fn step_of(event: &Event) -> Option<&str> {
    Some(match event {
        Event::StepScheduled(s) => &s.step_id,
        Event::StepSucceeded(s) => &s.step_id,
        Event::StepFailed(s) => &s.step_id,
        Event::StepRetryScheduled(s) => &s.step_id,
        Event::StepTimedOut(s) => &s.step_id,
        Event::StepSkipped(s) => &s.step_id,
        Event::StepCompensationScheduled(s) => &s.step_id,
        Event::StepCompensated(s) => &s.step_id,
        Event::CompensationFailed(s) => &s.step_id,
        Event::WaitStarted(s) => &s.step_id,
        Event::WaitElapsed(s) => &s.step_id,
        Event::HumanTaskCompleted(s) => &s.step_id,
        _ => return None,
    })
}

/// The API's life event type for `SagaStarted.life_event_type`: the CloudEvents type the
/// engine writes, or the short name (`birth`, `change-of-address`, …).
pub fn life_event_type(name: &str) -> v1::LifeEventType {
    if let Some(t) = v1::LifeEventType::from_cloudevents_type(name) {
        return t;
    }
    match name.replace('_', "-").as_str() {
        "birth" => v1::LifeEventType::Birth,
        "death" => v1::LifeEventType::Death,
        "change-of-address" | "move" => v1::LifeEventType::ChangeOfAddress,
        "driving-exam-passed" => v1::LifeEventType::DrivingExamPassed,
        _ => v1::LifeEventType::Unspecified,
    }
}

/// A proto timestamp as a time; `None` when it is out of range.
pub fn to_datetime(ts: &Timestamp) -> Option<DateTime<Utc>> {
    let nanos = u32::try_from(ts.nanos).ok()?;
    DateTime::from_timestamp(ts.seconds, nanos)
}

/// A time as a proto timestamp.
pub fn to_timestamp(at: DateTime<Utc>) -> Timestamp {
    Timestamp {
        seconds: at.timestamp(),
        nanos: i32::try_from(at.timestamp_subsec_nanos()).unwrap_or(0),
    }
}

/// An INSZ as operators without the right to see it get it: the birth date stays, the serial
/// number and check digits go (`85073003328` → `85.07.30-***.**`). Separators in the input
/// are ignored; anything that is not 11 digits is masked whole, and an empty one stays empty.
pub fn mask_insz(insz: &str) -> String {
    const MASKED: &str = "**.**.**-***.**";
    if insz.is_empty() {
        return String::new();
    }
    let digits: String = insz
        .chars()
        .filter(|c| !matches!(c, '.' | '-' | ' '))
        .collect();
    if digits.len() != 11 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return MASKED.to_owned();
    }
    format!(
        "{}.{}.{}-***.**",
        &digits[0..2],
        &digits[2..4],
        &digits[4..6]
    )
}

#[cfg(test)]
mod tests;
