//! The saga engine: a pure, deterministic state machine.
//!
//! ```text
//! decide(&state, input) -> Decision { events, commands }     // what happens now
//! evolve(state, &event) -> state                             // fold one stored event
//! ```
//!
//! The engine does no I/O, reads no clock and draws no random numbers: the time (`now`) and
//! the jitter for backoff come in with each [`Input`]; task ids are UUID v5 of the saga id,
//! the step and the attempt. The same events folded over the same [`SagaState::new`] give
//! the same state, so an orchestrator can crash at any instant, rebuild a saga from its
//! stream ([`rebuild`]) and carry on: [`SagaState::pending_work`] re-dispatches what was in
//! flight (same task ids), [`SagaState::timers`] re-arms the durable timers.
//!
//! `decide` never changes the state it is given. It computes the events, applies them to a
//! copy with the very `evolve` that replay uses, and derives the commands from the
//! difference between before and after (new tasks in flight → dispatch; new timers →
//! schedule; timers gone → cancel). Live dispatch and recovery therefore cannot disagree.
//! The orchestrator stores the events (with optimistic concurrency), then executes the
//! commands.
//!
//! # Semantics
//!
//! - **Start.** Conditions are evaluated once; `SagaStarted.planned_steps` records the plan.
//!   Steps not planned are never scheduled and count as done for the steps that need them.
//!   An administrative re-addressing (street renamed, municipalities merged, renumbering,
//!   correction) is not a move and starts no saga ([`NoSaga`]).
//! - **Fan-out.** Every planned step whose needs have all ended is scheduled at once: tasks
//!   in parallel, each attempt with a deadline.
//! - **Retries.** A retryable failure or a timeout ends the attempt; the next one is due
//!   after exponential backoff with jitter (`StepRetryScheduled`, durable), up to
//!   `max_attempts`. A `StepFailed` or `StepTimedOut` not followed by `StepRetryScheduled`
//!   in the same decision means the step failed for good.
//! - **Optional steps.** An optional step's failure does not fail the saga, and the steps
//!   that need it still run (it ended; `only_if_succeeded` is there for steps that care
//!   how). The saga completes when every planned step succeeded, was skipped, or failed
//!   while optional.
//! - **Compensation.** When a required step fails for good, nothing new starts; pending
//!   retries, waits and human steps are withdrawn (`StepSkipped` by `engine`); tasks in
//!   flight that have a compensation are awaited (they may still succeed, and must then be
//!   undone too); then the succeeded steps with a compensation are undone one at a time in
//!   reverse order of completion, with their own retries. All undone: `SagaCompensated`.
//!   A compensation that fails for good: `IncidentRaised` and `SagaFailed`.
//! - **Cancellation.** An operator's cancel, or a death under `on_death = "cancel"`,
//!   records `SagaCancelled` at once and compensates the same way; the saga is Cancelled
//!   when that is done (closed by `SagaCompensated` with an empty `failed_step_id`, or by
//!   `SagaCancelled` alone when there was nothing to undo). `on_death = "stop"` cancels
//!   without compensating; `on_death = "park"` parks. An operator may also cancel a
//!   *completed* saga, to reverse it (a death registered by mistake).
//! - **Parking.** A parked saga starts nothing new (no steps, retries or compensations);
//!   results and timeouts of work in flight are still recorded. `Resume` catches up.
//! - **Idempotence.** A result is matched by task id to the attempt in flight; a duplicate,
//!   a result for an older attempt, for a step that already ended, or after the saga ended
//!   yields no events ([`Decision::ignored`] says why), so nothing is counted twice.
//!   Timers are checked against the state: a stale or early timer does nothing.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::fmt;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use levensloop_proto::v1;
use levensloop_proto::v1::saga_event::Event;
use uuid::Uuid;

use crate::condition::Inputs;
use crate::definition::{Definition, OnDeath, OnTimeout, Step, StepKind, Wait};
use crate::fields::{EventData, LifeEventKind, event_data};
use crate::time::{from_timestamp, parse_date, start_of, to_timestamp};

/// The actor named in events the engine decides by itself.
pub const ENGINE_ACTOR: &str = "engine";

/// What the engine is asked to handle.
#[derive(Debug, Clone, PartialEq)]
pub enum Input {
    /// Start the saga. `facts` are the definition's declared facts (`facts.<name>` in
    /// conditions), looked up by the orchestrator in reference data at this moment; they are
    /// only used to plan, and the plan is stored.
    Start {
        now: DateTime<Utc>,
        facts: BTreeMap<String, String>,
    },
    /// A handler's answer. `jitter` is a random draw in [0, 1) for the backoff, should the
    /// answer be a retryable failure.
    TaskResult {
        result: v1::TaskResult,
        now: DateTime<Utc>,
        jitter: f64,
    },
    /// A durable timer went off. The engine checks what is actually due at `now`, so a stale
    /// or early timer is harmless; `step_id` and `kind` only name the cause in the events.
    TimerFired {
        step_id: String,
        kind: TimerKind,
        now: DateTime<Utc>,
        jitter: f64,
    },
    /// An operator retries a step now: one that failed (optional, for good), one waiting for
    /// its retry, one whose task seems lost, or a compensation waiting for its retry.
    /// Retrying after the attempts ran out grants a fresh set of attempts.
    RetryStep {
        step_id: String,
        actor: String,
        reason: String,
        now: DateTime<Utc>,
    },
    /// An operator skips a step that has not succeeded (it counts as done), or a
    /// compensation that cannot be done (it is not undone).
    SkipStep {
        step_id: String,
        actor: String,
        reason: String,
        now: DateTime<Utc>,
    },
    /// An operator cancels the saga: compensate what was done, end Cancelled.
    Cancel {
        actor: String,
        reason: String,
        now: DateTime<Utc>,
    },
    /// A person completes a human step.
    CompleteHuman {
        step_id: String,
        actor: String,
        note: String,
        now: DateTime<Utc>,
    },
    /// A person ends a human step negatively (the police found the person does not live
    /// there): the step fails for good.
    RejectHuman {
        step_id: String,
        actor: String,
        reason: String,
        now: DateTime<Utc>,
    },
    /// The saga's person died (the orchestrator executing [`Command::SettleOtherSagas`] of
    /// the death saga `cause_saga_id`): cancel, stop or park, as this saga's definition says
    /// (`on_death`).
    PersonDied {
        cause_saga_id: Uuid,
        now: DateTime<Utc>,
    },
    /// Hold the saga: nothing new starts until [`Input::Resume`].
    Park {
        reason: String,
        cause_saga_id: Option<Uuid>,
        now: DateTime<Utc>,
    },
    Resume {
        actor: String,
        reason: String,
        now: DateTime<Utc>,
    },
}

/// Which durable timer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum TimerKind {
    /// A step attempt's deadline (a human step's deadline too).
    Timeout,
    /// A retry's due time.
    Retry,
    /// The end of a wait step.
    Wait,
    CompensationTimeout,
    CompensationRetry,
}

impl TimerKind {
    pub fn name(self) -> &'static str {
        match self {
            Self::Timeout => "timeout",
            Self::Retry => "retry",
            Self::Wait => "wait",
            Self::CompensationTimeout => "compensation-timeout",
            Self::CompensationRetry => "compensation-retry",
        }
    }
}

impl fmt::Display for TimerKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A durable timer the orchestrator keeps: fire [`Input::TimerFired`] at `due_at`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timer {
    pub step_id: String,
    pub kind: TimerKind,
    pub attempt: u32,
    pub due_at: DateTime<Utc>,
}

impl Timer {
    /// A stable key within the saga, e.g. `police-check/timeout/1`.
    pub fn key(&self) -> String {
        format!("{}/{}/{}", self.step_id, self.kind, self.attempt)
    }
}

/// What the orchestrator must do once the decision's events are stored.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    /// Publish the task on its handler's work queue, with `task_id` as the message id. Also
    /// for compensations (`task.compensation` set).
    DispatchTask(v1::Task),
    /// Put a human step on its work list (`task.handler`) for a person to complete.
    AwaitHuman(v1::Task),
    /// A death saga's step: cancel, stop or park every other non-terminal saga of
    /// `person_insz` (send each [`Input::PersonDied`]), then answer `task` with a
    /// [`v1::TaskResult`] like any handler.
    SettleOtherSagas {
        task: v1::Task,
        person_insz: String,
        cause_saga_id: Uuid,
    },
    ScheduleTimer(Timer),
    /// Drop a timer that has not fired and is no longer needed.
    CancelTimer(Timer),
    /// Something only a person can resolve.
    RaiseIncident {
        incident_id: Uuid,
        step_id: String,
        reason: String,
    },
}

/// Why an input produced nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ignored {
    AlreadyStarted,
    /// A duplicate, a result for an older attempt, or for a step that already ended.
    StaleResult,
    /// The saga has ended.
    Terminal,
    /// A timer fired but nothing was due (stale, or early).
    NothingDue,
    AlreadyParked,
    NotParked,
    AlreadyCancelled,
    /// The saga is compensating already; a cancel or death changes nothing.
    AlreadyCompensating,
    /// A human step completed twice.
    AlreadyDone,
}

/// The outcome of [`decide`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Decision {
    /// To append to the saga's stream, in order, as one commit.
    pub events: Vec<v1::SagaEvent>,
    /// To execute after the events are stored.
    pub commands: Vec<Command>,
    /// Set when the input changed nothing, and why.
    pub ignored: Option<Ignored>,
}

impl Decision {
    fn nothing(why: Ignored) -> Self {
        Self {
            ignored: Some(why),
            ..Self::default()
        }
    }
}

/// Why a life event starts no saga.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NoSaga {
    #[error("administrative re-addressing ({reason}): not a move, no saga")]
    NotAMove { reason: String },
    #[error("the event does not meet `applies_when` of definition {definition}")]
    DoesNotApply { definition: String },
}

/// Why an input was refused. Nothing was decided; the state is unchanged.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum EngineError {
    #[error("the saga has not started")]
    NotStarted,
    #[error("no definition for life event {life_event:?}")]
    NoDefinition { life_event: String },
    #[error("a {got:?} event cannot start a {expected} saga")]
    WrongLifeEvent {
        expected: LifeEventKind,
        got: Option<LifeEventKind>,
    },
    #[error(transparent)]
    NoSaga(#[from] NoSaga),
    #[error("unknown step `{step}`")]
    UnknownStep { step: String },
    #[error("step `{step}` is not planned for this saga")]
    StepNotPlanned { step: String },
    #[error("cannot {action} step `{step}` while it is {phase}")]
    NotAllowed {
        action: &'static str,
        step: String,
        phase: String,
    },
    #[error("the saga is {status}")]
    Terminal { status: SagaStatus },
    #[error("cannot {action} while the saga is {status}")]
    NotNow {
        action: &'static str,
        status: SagaStatus,
    },
    #[error("result for task {task_id:?} does not fit: {reason}")]
    BadResult { task_id: String, reason: String },
    #[error("cannot rebuild the saga: {0}")]
    Rebuild(String),
}

/// Where a saga stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SagaStatus {
    NotStarted,
    Running,
    Parked,
    /// A required step failed for good; undoing what was done.
    Compensating,
    /// Cancelled; undoing what was done.
    Cancelling,
    Completed,
    Compensated,
    /// A compensation failed for good; an incident is open.
    Failed,
    Cancelled,
}

impl SagaStatus {
    /// Whether the saga has ended (an operator may still cancel a Completed saga).
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            Self::Completed | Self::Compensated | Self::Failed | Self::Cancelled
        )
    }

    /// The status as the operations API shows it.
    pub fn to_proto(self) -> v1::SagaStatus {
        match self {
            Self::NotStarted => v1::SagaStatus::Unspecified,
            Self::Running => v1::SagaStatus::Running,
            Self::Parked => v1::SagaStatus::Parked,
            Self::Compensating | Self::Cancelling => v1::SagaStatus::Compensating,
            Self::Completed => v1::SagaStatus::Completed,
            Self::Compensated => v1::SagaStatus::Compensated,
            Self::Failed => v1::SagaStatus::Failed,
            Self::Cancelled => v1::SagaStatus::Cancelled,
        }
    }
}

impl fmt::Display for SagaStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = match self {
            Self::NotStarted => "not started",
            Self::Running => "running",
            Self::Parked => "parked",
            Self::Compensating => "compensating",
            Self::Cancelling => "cancelling",
            Self::Completed => "completed",
            Self::Compensated => "compensated",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
        };
        f.write_str(s)
    }
}

/// Where one step stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StepPhase {
    /// Not started (waiting for its needs, or never planned).
    Pending,
    /// An attempt in flight: a task, a human step on a work list, or a settle-other-sagas.
    Running {
        task_id: Uuid,
        deadline: Option<DateTime<Utc>>,
    },
    RetryPending {
        next_attempt: u32,
        due_at: DateTime<Utc>,
    },
    Waiting {
        until: DateTime<Utc>,
    },
    Succeeded,
    /// Failed for good.
    Failed,
    Skipped,
    Compensating {
        task_id: Uuid,
        deadline: DateTime<Utc>,
    },
    CompensationRetryPending {
        next_attempt: u32,
        due_at: DateTime<Utc>,
    },
    Compensated,
    /// The compensation failed for good.
    CompensationFailed,
    /// An operator skipped the compensation: the step stays done.
    CompensationSkipped,
}

impl StepPhase {
    fn in_compensation(self) -> bool {
        matches!(
            self,
            Self::Compensating { .. }
                | Self::CompensationRetryPending { .. }
                | Self::Compensated
                | Self::CompensationFailed
                | Self::CompensationSkipped
        )
    }

    /// The phase as the operations API shows it.
    pub fn to_proto(self) -> v1::StepStatus {
        match self {
            Self::Pending => v1::StepStatus::Pending,
            Self::Running { .. } => v1::StepStatus::Running,
            Self::RetryPending { .. } | Self::Waiting { .. } => v1::StepStatus::Waiting,
            Self::Succeeded | Self::CompensationSkipped => v1::StepStatus::Succeeded,
            Self::Failed => v1::StepStatus::Failed,
            Self::Skipped => v1::StepStatus::Skipped,
            Self::Compensating { .. } | Self::CompensationRetryPending { .. } => {
                v1::StepStatus::Compensating
            }
            Self::Compensated => v1::StepStatus::Compensated,
            Self::CompensationFailed => v1::StepStatus::Failed,
        }
    }

    fn describe(self) -> String {
        match self {
            Self::Pending => "pending",
            Self::Running { .. } => "running",
            Self::RetryPending { .. } => "waiting for a retry",
            Self::Waiting { .. } => "waiting",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
            Self::Skipped => "skipped",
            Self::Compensating { .. } => "compensating",
            Self::CompensationRetryPending { .. } => "waiting to retry its compensation",
            Self::Compensated => "compensated",
            Self::CompensationFailed => "failed to compensate",
            Self::CompensationSkipped => "done (compensation skipped)",
        }
        .to_owned()
    }
}

/// One step's state within a saga.
#[derive(Debug, Clone, PartialEq)]
pub struct StepState {
    pub phase: StepPhase,
    /// The last attempt scheduled (0: none yet).
    pub attempt: u32,
    /// The last compensation attempt scheduled.
    pub compensation_attempt: u32,
    /// The first attempt of the current retry budget (an operator's retry after the
    /// attempts ran out starts a new budget).
    budget_from: u32,
    compensation_budget_from: u32,
    /// A human step whose deadline raised an incident.
    pub escalated: bool,
    /// The last failure's reason.
    pub last_error: String,
}

impl StepState {
    fn new() -> Self {
        Self {
            phase: StepPhase::Pending,
            attempt: 0,
            compensation_attempt: 0,
            budget_from: 1,
            compensation_budget_from: 1,
            escalated: false,
            last_error: String::new(),
        }
    }
}

/// What a saga is about, fixed before its first event: the definition version and the life
/// event's data. Replay needs both, and neither is in the saga's own events (the life event
/// is in the store under its own stream).
#[derive(Debug, PartialEq)]
struct Context {
    definition: Arc<Definition>,
    saga_id: Uuid,
    life_event_id: String,
    life_event_source: String,
    life_event_type: String,
    data: EventData,
    person_insz: String,
    municipality: String,
}

/// A saga's state: its context plus the fold of its events.
#[derive(Debug, Clone, PartialEq)]
pub struct SagaState {
    ctx: Arc<Context>,
    started: bool,
    planned: Vec<bool>,
    steps: Vec<StepState>,
    /// Step indices in order of success: compensation goes the other way.
    completed: Vec<usize>,
    /// The required step whose failure is being compensated.
    cause: Option<usize>,
    parked: bool,
    /// Set by SagaCancelled: whether the cancel compensates.
    cancel: Option<bool>,
    terminal: Option<SagaStatus>,
    incidents: Vec<String>,
    applied: u64,
}

impl SagaState {
    /// The empty saga (no events yet) of `life_event` under `definition`.
    pub fn new(
        definition: Arc<Definition>,
        life_event: &v1::LifeEvent,
    ) -> Result<Self, EngineError> {
        let kind = LifeEventKind::of(life_event);
        if kind != Some(definition.life_event()) {
            return Err(EngineError::WrongLifeEvent {
                expected: definition.life_event(),
                got: kind,
            });
        }
        let data = event_data(life_event);
        let get = |field: &str| data.get(field).cloned().unwrap_or_default();
        let n = definition.steps().len();
        let ctx = Context {
            saga_id: levensloop_proto::saga_id(&life_event.source, &life_event.id),
            life_event_id: life_event.id.clone(),
            life_event_source: life_event.source.clone(),
            life_event_type: definition
                .life_event()
                .proto()
                .cloudevents_type()
                .unwrap_or_default()
                .to_owned(),
            person_insz: get(definition.person_field()),
            municipality: get(definition.municipality_field()),
            data,
            definition,
        };
        Ok(Self {
            ctx: Arc::new(ctx),
            started: false,
            planned: vec![false; n],
            steps: vec![StepState::new(); n],
            completed: Vec::new(),
            cause: None,
            parked: false,
            cancel: None,
            terminal: None,
            incidents: Vec::new(),
            applied: 0,
        })
    }

    pub fn saga_id(&self) -> Uuid {
        self.ctx.saga_id
    }

    /// The definition (and version) the saga runs under.
    pub fn definition(&self) -> &Arc<Definition> {
        &self.ctx.definition
    }

    pub fn life_event_id(&self) -> &str {
        &self.ctx.life_event_id
    }

    pub fn life_event_source(&self) -> &str {
        &self.ctx.life_event_source
    }

    /// The INSZ of the person the saga is about.
    pub fn person_insz(&self) -> &str {
        &self.ctx.person_insz
    }

    /// The NIS code of the municipality the saga acts for.
    pub fn municipality(&self) -> &str {
        &self.ctx.municipality
    }

    /// The life event's flattened data.
    pub fn data(&self) -> &EventData {
        &self.ctx.data
    }

    /// How many events have been folded in (the stream's length, for optimistic
    /// concurrency).
    pub fn events_applied(&self) -> u64 {
        self.applied
    }

    pub fn status(&self) -> SagaStatus {
        if let Some(t) = self.terminal {
            t
        } else if !self.started {
            SagaStatus::NotStarted
        } else if self.cancel.is_some() {
            SagaStatus::Cancelling
        } else if self.parked {
            SagaStatus::Parked
        } else if self.cause.is_some() {
            SagaStatus::Compensating
        } else {
            SagaStatus::Running
        }
    }

    pub fn is_terminal(&self) -> bool {
        self.status().is_terminal()
    }

    /// Whether the step is in the saga's plan (`None` for an unknown step).
    pub fn is_planned(&self, step_id: &str) -> Option<bool> {
        self.index(step_id).map(|i| self.planned[i])
    }

    pub fn step(&self, step_id: &str) -> Option<&StepState> {
        self.index(step_id).map(|i| &self.steps[i])
    }

    /// Every step, in definition order, with whether it is planned and its state.
    pub fn steps(&self) -> impl Iterator<Item = (&Step, bool, &StepState)> {
        self.def()
            .steps()
            .iter()
            .zip(&self.planned)
            .zip(&self.steps)
            .map(|((d, p), s)| (d, *p, s))
    }

    /// The steps that succeeded, in order of success.
    pub fn completion_order(&self) -> Vec<&str> {
        self.completed
            .iter()
            .map(|&i| self.def().steps()[i].id.as_str())
            .collect()
    }

    /// The incidents raised so far.
    pub fn incidents(&self) -> &[String] {
        &self.incidents
    }

    /// Everything in flight, as commands: after a restart, execute them again (the task ids
    /// are the same, so the work queue's dedupe and the idempotency keys absorb repeats).
    pub fn pending_work(&self) -> Vec<Command> {
        if self.terminal.is_some() {
            return Vec::new();
        }
        (0..self.steps.len()).filter_map(|i| self.work(i)).collect()
    }

    /// The task id in flight for step `i`, if any.
    fn in_flight(&self, i: usize) -> Option<Uuid> {
        match self.steps[i].phase {
            StepPhase::Running { task_id, .. } | StepPhase::Compensating { task_id, .. } => {
                Some(task_id)
            }
            _ => None,
        }
    }

    /// The command that (re-)dispatches step `i`'s work in flight, if any.
    fn work(&self, i: usize) -> Option<Command> {
        let st = &self.steps[i];
        match st.phase {
            StepPhase::Running { deadline, .. } => {
                let task = self.task(i, st.attempt, false, deadline);
                Some(match &self.def().steps()[i].kind {
                    StepKind::Human { .. } => Command::AwaitHuman(task),
                    StepKind::SettleOtherSagas { .. } => Command::SettleOtherSagas {
                        task,
                        person_insz: self.ctx.person_insz.clone(),
                        cause_saga_id: self.ctx.saga_id,
                    },
                    _ => Command::DispatchTask(task),
                })
            }
            StepPhase::Compensating { deadline, .. } => Some(Command::DispatchTask(self.task(
                i,
                st.compensation_attempt,
                true,
                Some(deadline),
            ))),
            _ => None,
        }
    }

    /// The durable timers the saga needs now: after a restart, arm them again.
    pub fn timers(&self) -> Vec<Timer> {
        if self.terminal.is_some() {
            return Vec::new();
        }
        let mut out = Vec::new();
        for (i, st) in self.steps.iter().enumerate() {
            let step_id = &self.def().steps()[i].id;
            let timer = |kind, attempt, due_at| Timer {
                step_id: step_id.clone(),
                kind,
                attempt,
                due_at,
            };
            match st.phase {
                StepPhase::Running {
                    deadline: Some(d), ..
                } if !st.escalated => out.push(timer(TimerKind::Timeout, st.attempt, d)),
                StepPhase::RetryPending {
                    next_attempt,
                    due_at,
                } => out.push(timer(TimerKind::Retry, next_attempt, due_at)),
                StepPhase::Waiting { until } => out.push(timer(TimerKind::Wait, 1, until)),
                StepPhase::Compensating { deadline, .. } => out.push(timer(
                    TimerKind::CompensationTimeout,
                    st.compensation_attempt,
                    deadline,
                )),
                StepPhase::CompensationRetryPending {
                    next_attempt,
                    due_at,
                } => out.push(timer(TimerKind::CompensationRetry, next_attempt, due_at)),
                _ => {}
            }
        }
        out
    }

    /// Folds one stored event into the state. Total: an event that does not fit (another
    /// saga's, an unknown step) changes nothing but the event count.
    pub fn apply(&mut self, event: &v1::SagaEvent) {
        self.applied += 1;
        if event.saga_id != self.ctx.saga_id.to_string() {
            return;
        }
        let Some(e) = &event.event else { return };
        match e {
            Event::SagaStarted(s) => {
                self.started = true;
                let planned: HashSet<&str> = s.planned_steps.iter().map(String::as_str).collect();
                for (i, step) in self.ctx.definition.steps().iter().enumerate() {
                    self.planned[i] = planned.contains(step.id.as_str());
                }
            }
            Event::StepScheduled(s) => {
                let Some(i) = self.index(&s.step_id) else {
                    return;
                };
                let task_id = task_id(self.ctx.saga_id, &s.step_id, s.attempt, false);
                let st = &mut self.steps[i];
                st.attempt = s.attempt;
                st.escalated = false;
                st.phase = StepPhase::Running {
                    task_id,
                    deadline: s.deadline.as_ref().and_then(from_timestamp),
                };
            }
            Event::StepSucceeded(s) => {
                if let Some(i) = self.index(&s.step_id) {
                    self.succeed(i);
                }
            }
            Event::HumanTaskCompleted(s) => {
                if let Some(i) = self.index(&s.step_id) {
                    self.succeed(i);
                }
            }
            Event::WaitElapsed(s) => {
                if let Some(i) = self.index(&s.step_id) {
                    self.succeed(i);
                }
            }
            Event::StepFailed(s) => {
                if let Some(i) = self.index(&s.step_id) {
                    self.steps[i].last_error = s.reason.clone();
                    self.fail(i);
                }
            }
            Event::StepTimedOut(s) => {
                if let Some(i) = self.index(&s.step_id) {
                    if matches!(self.steps[i].phase, StepPhase::Compensating { .. }) {
                        self.steps[i].phase = StepPhase::CompensationFailed;
                        self.steps[i].last_error = "compensation timed out".into();
                    } else {
                        self.steps[i].last_error = "timed out".into();
                        self.fail(i);
                    }
                }
            }
            Event::StepRetryScheduled(s) => {
                let Some(i) = self.index(&s.step_id) else {
                    return;
                };
                let due_at = s
                    .due_at
                    .as_ref()
                    .and_then(from_timestamp)
                    .unwrap_or_default();
                let step = &self.ctx.definition.steps()[i];
                let st = &mut self.steps[i];
                if st.phase.in_compensation() {
                    let max = step.compensation().map_or(1, |c| c.retry.max_attempts);
                    if s.next_attempt.saturating_sub(st.compensation_budget_from) >= max {
                        st.compensation_budget_from = s.next_attempt;
                    }
                    st.phase = StepPhase::CompensationRetryPending {
                        next_attempt: s.next_attempt,
                        due_at,
                    };
                } else {
                    if s.next_attempt.saturating_sub(st.budget_from) >= step.retry.max_attempts {
                        st.budget_from = s.next_attempt;
                    }
                    st.phase = StepPhase::RetryPending {
                        next_attempt: s.next_attempt,
                        due_at,
                    };
                    if self.cause == Some(i) {
                        self.cause = None;
                    }
                }
            }
            Event::StepSkipped(s) => {
                if let Some(i) = self.index(&s.step_id) {
                    let st = &mut self.steps[i];
                    st.phase = if st.phase.in_compensation() {
                        StepPhase::CompensationSkipped
                    } else {
                        StepPhase::Skipped
                    };
                    // An operator skipping the failed required step of a parked saga,
                    // before any compensation started, lets it go on instead.
                    if self.cause == Some(i) {
                        self.cause = None;
                    }
                }
            }
            Event::StepCompensationScheduled(s) => {
                if let Some(i) = self.index(&s.step_id) {
                    let task_id = task_id(self.ctx.saga_id, &s.step_id, s.attempt, true);
                    let st = &mut self.steps[i];
                    st.compensation_attempt = s.attempt;
                    st.phase = StepPhase::Compensating {
                        task_id,
                        deadline: s
                            .deadline
                            .as_ref()
                            .and_then(from_timestamp)
                            .unwrap_or_default(),
                    };
                }
            }
            Event::StepCompensated(s) => {
                if let Some(i) = self.index(&s.step_id) {
                    self.steps[i].phase = StepPhase::Compensated;
                }
            }
            Event::CompensationFailed(s) => {
                if let Some(i) = self.index(&s.step_id) {
                    self.steps[i].phase = StepPhase::CompensationFailed;
                    self.steps[i].last_error = s.reason.clone();
                }
            }
            Event::WaitStarted(s) => {
                if let Some(i) = self.index(&s.step_id) {
                    self.steps[i].attempt = 1;
                    self.steps[i].phase = StepPhase::Waiting {
                        until: s
                            .until
                            .as_ref()
                            .and_then(from_timestamp)
                            .unwrap_or_default(),
                    };
                }
            }
            Event::SagaParked(_) => self.parked = true,
            Event::SagaResumed(_) => self.parked = false,
            Event::SagaCancelled(c) => {
                // A cancel caused by another saga (a death) follows this definition's
                // `on_death`; an operator's cancel always compensates.
                let compensate =
                    c.cause_saga_id.is_empty() || self.ctx.definition.on_death() != OnDeath::Stop;
                self.cancel = Some(compensate);
                self.parked = false;
                self.terminal = if compensate && self.has_work_to_undo() {
                    None
                } else {
                    Some(SagaStatus::Cancelled)
                };
            }
            Event::SagaCompleted(_) => self.terminal = Some(SagaStatus::Completed),
            Event::SagaCompensated(_) => {
                self.terminal = Some(if self.cancel.is_some() {
                    SagaStatus::Cancelled
                } else {
                    SagaStatus::Compensated
                });
            }
            Event::SagaFailed(_) => self.terminal = Some(SagaStatus::Failed),
            Event::IncidentRaised(r) => {
                self.incidents.push(r.incident_id.clone());
                if let Some(i) = self.index(&r.step_id)
                    && matches!(self.steps[i].phase, StepPhase::Running { .. })
                {
                    self.steps[i].escalated = true;
                }
            }
            // Audit only: what it led to follows as events of its own.
            Event::OperatorActed(_) => {}
        }
    }

    fn def(&self) -> &Definition {
        &self.ctx.definition
    }

    fn index(&self, step_id: &str) -> Option<usize> {
        self.ctx.definition.step_index(step_id)
    }

    fn succeed(&mut self, i: usize) {
        self.steps[i].phase = StepPhase::Succeeded;
        if !self.completed.contains(&i) {
            self.completed.push(i);
        }
    }

    fn fail(&mut self, i: usize) {
        self.steps[i].phase = StepPhase::Failed;
        let step = &self.ctx.definition.steps()[i];
        if step.required && self.planned[i] && self.cause.is_none() && self.cancel.is_none() {
            self.cause = Some(i);
        }
    }

    /// Whether compensation has anything to wait for or undo.
    fn has_work_to_undo(&self) -> bool {
        self.steps.iter().enumerate().any(|(i, st)| {
            let compensable = self.def().steps()[i].compensation().is_some();
            match st.phase {
                StepPhase::Running { .. } | StepPhase::Succeeded => compensable,
                StepPhase::Compensating { .. } | StepPhase::CompensationRetryPending { .. } => true,
                _ => false,
            }
        })
    }

    /// Whether a step's needs have all ended (unplanned needs count as ended).
    fn needs_ended(&self, i: usize) -> bool {
        self.def().steps()[i].needs.iter().all(|n| {
            self.index(n).is_none_or(|j| {
                !self.planned[j]
                    || matches!(
                        self.steps[j].phase,
                        StepPhase::Succeeded | StepPhase::Skipped | StepPhase::Failed
                    )
            })
        })
    }

    /// Why a step with `only_if_*` guards must be skipped, if it must.
    fn guard_fails(&self, i: usize) -> Option<String> {
        let step = &self.def().steps()[i];
        for g in &step.only_if_succeeded {
            if self.step(g).map(|s| s.phase) != Some(StepPhase::Succeeded) {
                return Some(format!("`{g}` did not succeed"));
            }
        }
        for g in &step.only_if_failed {
            if self.step(g).map(|s| s.phase) != Some(StepPhase::Failed) {
                return Some(format!("`{g}` did not fail"));
            }
        }
        None
    }

    fn task(
        &self,
        i: usize,
        attempt: u32,
        compensation: bool,
        deadline: Option<DateTime<Utc>>,
    ) -> v1::Task {
        let step = &self.def().steps()[i];
        let handler = if compensation {
            step.compensation().map(|c| c.handler.as_str())
        } else {
            step.handler()
        };
        let data = step
            .entitled
            .iter()
            .filter_map(|f| self.ctx.data.get(f).map(|v| (f.clone(), v.clone())))
            .collect();
        v1::Task {
            task_id: task_id(self.ctx.saga_id, &step.id, attempt, compensation).to_string(),
            saga_id: self.ctx.saga_id.to_string(),
            step_id: step.id.clone(),
            handler: handler.unwrap_or_default().to_owned(),
            attempt,
            idempotency_key: idempotency_key(self.ctx.saga_id, &step.id, compensation),
            deadline: deadline.map(to_timestamp),
            data,
            compensation,
            traceparent: String::new(),
            tracestate: String::new(),
        }
    }
}

/// The task id of an attempt: UUID v5, in the saga id's namespace, of
/// `<step>/<attempt>` (or `<step>/compensation/<attempt>`). Step ids contain no `/`.
pub fn task_id(saga_id: Uuid, step_id: &str, attempt: u32, compensation: bool) -> Uuid {
    let name = if compensation {
        format!("{step_id}/compensation/{attempt}")
    } else {
        format!("{step_id}/{attempt}")
    };
    Uuid::new_v5(&saga_id, name.as_bytes())
}

/// The idempotency key of a step, the same for every attempt: `saga-id/step-id`, and
/// `saga-id/step-id/compensate` for its compensation.
pub fn idempotency_key(saga_id: Uuid, step_id: &str, compensation: bool) -> String {
    if compensation {
        format!("{saga_id}/{step_id}/compensate")
    } else {
        format!("{saga_id}/{step_id}")
    }
}

/// Folds one event: `evolve(state, &event)` is [`SagaState::apply`] by value.
pub fn evolve(mut state: SagaState, event: &v1::SagaEvent) -> SagaState {
    state.apply(event);
    state
}

/// Rebuilds a saga from its stored events. `definition` must be the name and version its
/// `SagaStarted` names (see [`crate::Catalog::rebuild`], which looks it up).
pub fn rebuild(
    definition: Arc<Definition>,
    life_event: &v1::LifeEvent,
    events: &[v1::SagaEvent],
) -> Result<SagaState, EngineError> {
    let mut state = SagaState::new(definition, life_event)?;
    if let Some(first) = events.first() {
        let Some(Event::SagaStarted(s)) = &first.event else {
            return Err(EngineError::Rebuild(
                "the first event is not SagaStarted".into(),
            ));
        };
        let def = state.def();
        if s.definition != def.name() || s.definition_version != def.version() {
            return Err(EngineError::Rebuild(format!(
                "the saga started under {} v{}, not {def}",
                s.definition, s.definition_version
            )));
        }
    }
    let saga_id = state.saga_id().to_string();
    for e in events {
        if e.saga_id != saga_id {
            return Err(EngineError::Rebuild(format!(
                "event of saga {} in the stream of saga {saga_id}",
                e.saga_id
            )));
        }
        state.apply(e);
    }
    Ok(state)
}

/// Whether a life event starts a saga under `definition`: an administrative re-addressing
/// never does, and the definition's `applies_when` must hold.
pub fn starts_saga(
    definition: &Definition,
    data: &EventData,
    facts: &BTreeMap<String, String>,
    now: DateTime<Utc>,
) -> Result<(), NoSaga> {
    if definition.life_event() == LifeEventKind::ChangeOfAddress
        && let Some(reason) = data.get("reason")
        && reason != "CHANGE_OF_ADDRESS_REASON_MOVE"
    {
        // Absent (UNSPECIFIED) counts as a move, as the gateway counts it.
        return Err(NoSaga::NotAMove {
            reason: reason.clone(),
        });
    }
    if let Some(c) = definition.applies_when()
        && !c.eval(&Inputs {
            data,
            facts,
            lists: definition.lists(),
            today: now.date_naive(),
        })
    {
        return Err(NoSaga::DoesNotApply {
            definition: definition.to_string(),
        });
    }
    Ok(())
}

impl Input {
    /// The audit record of an operator's input; `None` for every other input.
    fn audit(&self) -> Option<v1::OperatorActed> {
        let (action, actor, step_id, reason) = match self {
            Self::RetryStep {
                step_id,
                actor,
                reason,
                ..
            } => ("retry-step", actor, step_id.as_str(), reason),
            Self::SkipStep {
                step_id,
                actor,
                reason,
                ..
            } => ("skip-step", actor, step_id.as_str(), reason),
            Self::Cancel { actor, reason, .. } => ("cancel", actor, "", reason),
            Self::CompleteHuman {
                step_id,
                actor,
                note,
                ..
            } => ("complete-human", actor, step_id.as_str(), note),
            Self::RejectHuman {
                step_id,
                actor,
                reason,
                ..
            } => ("reject-human", actor, step_id.as_str(), reason),
            Self::Resume { actor, reason, .. } => ("resume", actor, "", reason),
            _ => return None,
        };
        Some(v1::OperatorActed {
            actor: actor.clone(),
            action: action.to_owned(),
            step_id: step_id.to_owned(),
            reason: reason.clone(),
        })
    }
}

/// Decides what an input means for a saga: the events to store and the commands to run.
/// The state is not changed; fold the events with [`evolve`] once they are stored.
pub fn decide(state: &SagaState, input: Input) -> Result<Decision, EngineError> {
    let before = state;
    let (now, causation, jitter) = match &input {
        Input::Start { now, .. } => (*now, state.ctx.life_event_id.clone(), 0.0),
        Input::TaskResult {
            result,
            now,
            jitter,
        } => (*now, result.task_id.clone(), *jitter),
        Input::TimerFired {
            step_id,
            kind,
            now,
            jitter,
        } => (*now, format!("timer:{step_id}:{kind}"), *jitter),
        Input::RetryStep { actor, now, .. }
        | Input::SkipStep { actor, now, .. }
        | Input::Cancel { actor, now, .. }
        | Input::CompleteHuman { actor, now, .. }
        | Input::RejectHuman { actor, now, .. }
        | Input::Resume { actor, now, .. } => (*now, format!("operator:{actor}"), 0.0),
        Input::PersonDied { cause_saga_id, now } => (*now, cause_saga_id.to_string(), 0.0),
        Input::Park {
            cause_saga_id, now, ..
        } => (
            *now,
            cause_saga_id.map_or_else(|| "operator".to_owned(), |c| c.to_string()),
            0.0,
        ),
    };
    let audit = input.audit();
    let mut run = Run {
        s: state.clone(),
        now,
        causation,
        jitter,
        events: Vec::new(),
        incidents: Vec::new(),
    };
    if let Some(why) = run.handle(input)? {
        return Ok(Decision::nothing(why));
    }
    if let Some(acted) = audit {
        // First, so the timeline reads "who, what, why" before what it led to; it changes no
        // state, so its place in the fold does not matter.
        let event = run.envelope(Event::OperatorActed(acted));
        run.events.insert(0, event);
    }
    Ok(run.finish(before))
}

/// One decision in progress: a working copy of the state and the events so far.
struct Run {
    s: SagaState,
    now: DateTime<Utc>,
    causation: String,
    jitter: f64,
    events: Vec<v1::SagaEvent>,
    incidents: Vec<Command>,
}

/// How an attempt ended badly.
enum Failure {
    Failed {
        retryable: bool,
        reason: String,
        error_code: String,
    },
    TimedOut,
}

impl Run {
    fn def(&self) -> Arc<Definition> {
        self.s.ctx.definition.clone()
    }

    fn envelope(&self, event: Event) -> v1::SagaEvent {
        v1::SagaEvent {
            saga_id: self.s.ctx.saga_id.to_string(),
            occurred_at: Some(to_timestamp(self.now)),
            causation_id: self.causation.clone(),
            correlation_id: self.s.ctx.life_event_id.clone(),
            event: Some(event),
        }
    }

    fn emit(&mut self, event: Event) {
        let e = self.envelope(event);
        self.s.apply(&e);
        self.events.push(e);
    }

    fn step_index(&self, step_id: &str) -> Result<usize, EngineError> {
        let i = self
            .s
            .index(step_id)
            .ok_or_else(|| EngineError::UnknownStep {
                step: step_id.to_owned(),
            })?;
        if !self.s.planned[i] {
            return Err(EngineError::StepNotPlanned {
                step: step_id.to_owned(),
            });
        }
        Ok(i)
    }

    fn not_allowed(&self, action: &'static str, i: usize) -> EngineError {
        EngineError::NotAllowed {
            action,
            step: self.def().steps()[i].id.clone(),
            phase: self.s.steps[i].phase.describe(),
        }
    }

    /// Emits the input's events; `Some` when it is to be ignored.
    fn handle(&mut self, input: Input) -> Result<Option<Ignored>, EngineError> {
        if let Input::Start { facts, .. } = &input {
            return self.start(facts);
        }
        if !self.s.started {
            return Err(EngineError::NotStarted);
        }
        let status = self.s.status();
        match input {
            Input::Start { .. } => Ok(Some(Ignored::AlreadyStarted)),
            Input::TaskResult { result, .. } => {
                if status.is_terminal() {
                    return Ok(Some(Ignored::Terminal));
                }
                self.task_result(&result)
            }
            Input::TimerFired { .. } => {
                if status.is_terminal() {
                    return Ok(Some(Ignored::Terminal));
                }
                self.process_due();
                self.advance();
                Ok(self.events.is_empty().then_some(Ignored::NothingDue))
            }
            Input::RetryStep { step_id, .. } => {
                if status.is_terminal() {
                    return Err(EngineError::Terminal { status });
                }
                self.retry_step(&step_id)?;
                Ok(None)
            }
            Input::SkipStep {
                step_id,
                actor,
                reason,
                ..
            } => {
                if status.is_terminal() {
                    return Err(EngineError::Terminal { status });
                }
                self.skip_step(&step_id, actor, reason)?;
                Ok(None)
            }
            Input::Cancel { actor, reason, .. } => match status {
                SagaStatus::Cancelled | SagaStatus::Cancelling => {
                    Ok(Some(Ignored::AlreadyCancelled))
                }
                SagaStatus::Compensated | SagaStatus::Failed => {
                    Err(EngineError::Terminal { status })
                }
                SagaStatus::Compensating => Err(EngineError::NotNow {
                    action: "cancel",
                    status,
                }),
                _ => {
                    self.emit(Event::SagaCancelled(v1::SagaCancelled {
                        reason,
                        actor,
                        cause_saga_id: String::new(),
                    }));
                    self.advance();
                    Ok(None)
                }
            },
            Input::CompleteHuman {
                step_id,
                actor,
                note,
                ..
            } => {
                let i = self.human_step(&step_id, status)?;
                match self.s.steps[i].phase {
                    StepPhase::Running { .. } => {
                        self.emit(Event::HumanTaskCompleted(v1::HumanTaskCompleted {
                            step_id,
                            actor,
                            note,
                        }));
                        self.advance();
                        Ok(None)
                    }
                    StepPhase::Succeeded => Ok(Some(Ignored::AlreadyDone)),
                    _ => Err(self.not_allowed("complete", i)),
                }
            }
            Input::RejectHuman {
                step_id,
                actor,
                reason,
                ..
            } => {
                let i = self.human_step(&step_id, status)?;
                if !matches!(self.s.steps[i].phase, StepPhase::Running { .. }) {
                    return Err(self.not_allowed("reject", i));
                }
                self.fail_attempt(
                    i,
                    Failure::Failed {
                        retryable: false,
                        reason: format!("rejected by {actor}: {reason}"),
                        error_code: "REJECTED".into(),
                    },
                );
                self.advance();
                Ok(None)
            }
            Input::PersonDied { cause_saga_id, .. } => match status {
                s if s.is_terminal() => Ok(Some(Ignored::Terminal)),
                SagaStatus::Cancelling => Ok(Some(Ignored::AlreadyCancelled)),
                SagaStatus::Compensating => Ok(Some(Ignored::AlreadyCompensating)),
                _ => {
                    if self.def().on_death() == OnDeath::Park {
                        if status == SagaStatus::Parked {
                            return Ok(Some(Ignored::AlreadyParked));
                        }
                        self.emit(Event::SagaParked(v1::SagaParked {
                            reason: "the person died".into(),
                            cause_saga_id: cause_saga_id.to_string(),
                        }));
                    } else {
                        self.emit(Event::SagaCancelled(v1::SagaCancelled {
                            reason: "the person died".into(),
                            actor: ENGINE_ACTOR.into(),
                            cause_saga_id: cause_saga_id.to_string(),
                        }));
                        self.advance();
                    }
                    Ok(None)
                }
            },
            Input::Park {
                reason,
                cause_saga_id,
                ..
            } => match status {
                SagaStatus::Running => {
                    self.emit(Event::SagaParked(v1::SagaParked {
                        reason,
                        cause_saga_id: cause_saga_id.map(|c| c.to_string()).unwrap_or_default(),
                    }));
                    Ok(None)
                }
                SagaStatus::Parked => Ok(Some(Ignored::AlreadyParked)),
                s if s.is_terminal() => Ok(Some(Ignored::Terminal)),
                SagaStatus::Cancelling => Ok(Some(Ignored::AlreadyCancelled)),
                _ => Ok(Some(Ignored::AlreadyCompensating)),
            },
            Input::Resume { actor, reason, .. } => {
                if !self.s.parked || status.is_terminal() {
                    return Ok(Some(Ignored::NotParked));
                }
                self.emit(Event::SagaResumed(v1::SagaResumed { actor, reason }));
                self.process_due();
                self.advance();
                Ok(None)
            }
        }
    }

    fn start(&mut self, facts: &BTreeMap<String, String>) -> Result<Option<Ignored>, EngineError> {
        if self.s.started {
            return Ok(Some(Ignored::AlreadyStarted));
        }
        let def = self.def();
        starts_saga(&def, &self.s.ctx.data, facts, self.now)?;
        let inputs = Inputs {
            data: &self.s.ctx.data,
            facts,
            lists: def.lists(),
            today: self.now.date_naive(),
        };
        let planned_steps = def
            .steps()
            .iter()
            .filter(|s| s.condition.as_ref().is_none_or(|c| c.eval(&inputs)))
            .map(|s| s.id.clone())
            .collect();
        let ctx = self.s.ctx.clone();
        self.emit(Event::SagaStarted(v1::SagaStarted {
            life_event_id: ctx.life_event_id.clone(),
            life_event_source: ctx.life_event_source.clone(),
            life_event_type: ctx.life_event_type.clone(),
            definition: def.name().to_owned(),
            definition_version: def.version(),
            planned_steps,
            person_insz: ctx.person_insz.clone(),
            municipality_nis_code: ctx.municipality.clone(),
            handlers: def.registrations().to_vec(),
        }));
        self.advance();
        Ok(None)
    }

    fn task_result(&mut self, result: &v1::TaskResult) -> Result<Option<Ignored>, EngineError> {
        let bad = |reason: &str| EngineError::BadResult {
            task_id: result.task_id.clone(),
            reason: reason.to_owned(),
        };
        let id = Uuid::parse_str(&result.task_id).map_err(|_| bad("the task id is not a UUID"))?;
        let found = self
            .s
            .steps
            .iter()
            .enumerate()
            .find_map(|(i, st)| match st.phase {
                StepPhase::Running { task_id, .. } if task_id == id => Some((i, false)),
                StepPhase::Compensating { task_id, .. } if task_id == id => Some((i, true)),
                _ => None,
            });
        let Some((i, compensation)) = found else {
            return Ok(Some(Ignored::StaleResult));
        };
        let def = self.def();
        let step = &def.steps()[i];
        let expected_key = idempotency_key(self.s.ctx.saga_id, &step.id, compensation);
        if !result.idempotency_key.is_empty() && result.idempotency_key != expected_key {
            return Err(bad(&format!(
                "idempotency key {:?}, expected {expected_key:?}",
                result.idempotency_key
            )));
        }
        let st = &self.s.steps[i];
        let attempt = if compensation {
            st.compensation_attempt
        } else {
            st.attempt
        };
        if result.attempt != 0 && result.attempt != attempt {
            return Err(bad(&format!(
                "attempt {}, but the task is attempt {attempt}",
                result.attempt
            )));
        }
        use v1::task_result::Outcome;
        let outcome = result.outcome.as_ref().ok_or_else(|| bad("no outcome"))?;
        match (outcome, compensation) {
            (Outcome::Completed(c), false) => self.emit(Event::StepSucceeded(v1::StepSucceeded {
                step_id: step.id.clone(),
                attempt,
                task_id: result.task_id.clone(),
                result: c.result.clone(),
            })),
            (Outcome::Failed(f), false) => self.fail_attempt(
                i,
                Failure::Failed {
                    retryable: f.retryable,
                    reason: f.reason.clone(),
                    error_code: f.error_code.clone(),
                },
            ),
            (Outcome::Completed(_), true) => {
                self.emit(Event::StepCompensated(v1::StepCompensated {
                    step_id: step.id.clone(),
                    attempt,
                    task_id: result.task_id.clone(),
                }));
            }
            (Outcome::Failed(f), true) => {
                self.fail_compensation(i, f.retryable, f.reason.clone(), false);
            }
        }
        self.advance();
        Ok(None)
    }

    fn human_step(&self, step_id: &str, status: SagaStatus) -> Result<usize, EngineError> {
        if status.is_terminal() {
            return Err(EngineError::Terminal { status });
        }
        let i = self.step_index(step_id)?;
        if !matches!(self.def().steps()[i].kind, StepKind::Human { .. }) {
            return Err(EngineError::NotAllowed {
                action: "complete or reject",
                step: step_id.to_owned(),
                phase: "not a human step".into(),
            });
        }
        Ok(i)
    }

    /// Records an attempt's failure and schedules the retry if there is one.
    fn fail_attempt(&mut self, i: usize, failure: Failure) {
        // Retries only while the saga goes forward: a compensating saga stops its steps.
        let going_on = matches!(self.s.status(), SagaStatus::Running | SagaStatus::Parked);
        let def = self.def();
        let step = &def.steps()[i];
        let st = &self.s.steps[i];
        let attempt = st.attempt;
        let used = attempt.saturating_sub(st.budget_from) + 1;
        let task_id = task_id(self.s.ctx.saga_id, &step.id, attempt, false).to_string();
        let retryable = match failure {
            Failure::Failed {
                retryable,
                reason,
                error_code,
            } => {
                self.emit(Event::StepFailed(v1::StepFailed {
                    step_id: step.id.clone(),
                    attempt,
                    task_id,
                    retryable,
                    reason,
                    error_code,
                }));
                retryable
            }
            Failure::TimedOut => {
                self.emit(Event::StepTimedOut(v1::StepTimedOut {
                    step_id: step.id.clone(),
                    attempt,
                    task_id,
                }));
                true
            }
        };
        if retryable && going_on && used < step.retry.max_attempts {
            let due_at = step
                .retry
                .backoff(used, self.jitter)
                .after(self.now)
                .unwrap_or(self.now);
            self.emit(Event::StepRetryScheduled(v1::StepRetryScheduled {
                step_id: step.id.clone(),
                next_attempt: attempt + 1,
                due_at: Some(to_timestamp(due_at)),
            }));
        }
    }

    /// Records a compensation attempt's failure: retry, or give up with an incident.
    fn fail_compensation(&mut self, i: usize, retryable: bool, reason: String, timed_out: bool) {
        let def = self.def();
        let step = &def.steps()[i];
        let Some(comp) = step.compensation() else {
            return;
        };
        let st = &self.s.steps[i];
        let attempt = st.compensation_attempt;
        let used = attempt.saturating_sub(st.compensation_budget_from) + 1;
        if timed_out {
            self.emit(Event::StepTimedOut(v1::StepTimedOut {
                step_id: step.id.clone(),
                attempt,
                task_id: task_id(self.s.ctx.saga_id, &step.id, attempt, true).to_string(),
            }));
        } else {
            self.emit(Event::CompensationFailed(v1::CompensationFailed {
                step_id: step.id.clone(),
                attempt,
                reason: reason.clone(),
            }));
        }
        if retryable && used < comp.retry.max_attempts {
            let due_at = comp
                .retry
                .backoff(used, self.jitter)
                .after(self.now)
                .unwrap_or(self.now);
            self.emit(Event::StepRetryScheduled(v1::StepRetryScheduled {
                step_id: step.id.clone(),
                next_attempt: attempt + 1,
                due_at: Some(to_timestamp(due_at)),
            }));
            return;
        }
        if timed_out {
            self.emit(Event::CompensationFailed(v1::CompensationFailed {
                step_id: step.id.clone(),
                attempt,
                reason: reason.clone(),
            }));
        }
        let incident_id = Uuid::new_v5(
            &self.s.ctx.saga_id,
            format!("incident/{}/compensation/{attempt}", step.id).as_bytes(),
        );
        let reason = format!(
            "the compensation of `{}` ({}) failed for good after {attempt} attempt(s): {reason}",
            step.id, comp.handler
        );
        self.raise_incident(incident_id, &step.id, reason.clone());
        self.emit(Event::SagaFailed(v1::SagaFailed { reason }));
    }

    fn raise_incident(&mut self, incident_id: Uuid, step_id: &str, reason: String) {
        self.emit(Event::IncidentRaised(v1::IncidentRaised {
            incident_id: incident_id.to_string(),
            step_id: step_id.to_owned(),
            reason: reason.clone(),
        }));
        self.incidents.push(Command::RaiseIncident {
            incident_id,
            step_id: step_id.to_owned(),
            reason,
        });
    }

    /// Handles everything due at `now`: deadlines, retries, waits.
    fn process_due(&mut self) {
        let def = self.def();
        let now = self.now;
        for (i, step) in def.steps().iter().enumerate() {
            // Retries go out only while the saga may start work: forward retries while
            // running, compensation retries while compensating.
            let dispatching = match self.s.status() {
                SagaStatus::Running => true,
                SagaStatus::Compensating | SagaStatus::Cancelling => matches!(
                    self.s.steps[i].phase,
                    StepPhase::CompensationRetryPending { .. }
                ),
                _ => false,
            };
            let st = &self.s.steps[i];
            match st.phase {
                StepPhase::Running {
                    deadline: Some(d), ..
                } if d <= now => match step.kind {
                    StepKind::Human {
                        on_timeout: OnTimeout::Escalate,
                        ..
                    } => {
                        if !st.escalated {
                            let id = Uuid::new_v5(
                                &self.s.ctx.saga_id,
                                format!("incident/{}/deadline/{}", step.id, st.attempt).as_bytes(),
                            );
                            self.raise_incident(
                                id,
                                &step.id,
                                format!(
                                    "human step `{}` was not completed by its deadline",
                                    step.id
                                ),
                            );
                        }
                    }
                    _ => self.fail_attempt(i, Failure::TimedOut),
                },
                StepPhase::RetryPending {
                    next_attempt,
                    due_at,
                } if due_at <= now && dispatching => self.schedule(i, next_attempt),
                StepPhase::Waiting { until }
                    if until <= now
                        && matches!(self.s.status(), SagaStatus::Running | SagaStatus::Parked) =>
                {
                    self.emit(Event::WaitElapsed(v1::WaitElapsed {
                        step_id: step.id.clone(),
                    }));
                }
                StepPhase::Compensating { deadline, .. } if deadline <= now => {
                    self.fail_compensation(i, true, "timed out".into(), true);
                }
                StepPhase::CompensationRetryPending {
                    next_attempt,
                    due_at,
                } if due_at <= now && dispatching => self.schedule_compensation(i, next_attempt),
                _ => {}
            }
        }
    }

    /// Starts attempt `attempt` of step `i`.
    fn schedule(&mut self, i: usize, attempt: u32) {
        let def = self.def();
        let step = &def.steps()[i];
        let key = idempotency_key(self.s.ctx.saga_id, &step.id, false);
        let task_id = task_id(self.s.ctx.saga_id, &step.id, attempt, false).to_string();
        match &step.kind {
            StepKind::Task { handler, .. }
            | StepKind::SettleOtherSagas { handler }
            | StepKind::Human { handler, .. } => {
                let deadline = step.timeout.and_then(|t| t.after(self.now));
                self.emit(Event::StepScheduled(v1::StepScheduled {
                    step_id: step.id.clone(),
                    handler: handler.clone(),
                    attempt,
                    task_id,
                    idempotency_key: key,
                    deadline: deadline.map(to_timestamp),
                }));
            }
            StepKind::Wait(wait) => {
                let until = self.wait_until(wait);
                self.emit(Event::WaitStarted(v1::WaitStarted {
                    step_id: step.id.clone(),
                    until: Some(to_timestamp(until)),
                }));
                if until <= self.now {
                    self.emit(Event::WaitElapsed(v1::WaitElapsed {
                        step_id: step.id.clone(),
                    }));
                }
            }
        }
    }

    fn schedule_compensation(&mut self, i: usize, attempt: u32) {
        let def = self.def();
        let step = &def.steps()[i];
        let Some(comp) = step.compensation() else {
            return;
        };
        let deadline = comp.timeout.after(self.now).unwrap_or(self.now);
        self.emit(Event::StepCompensationScheduled(
            v1::StepCompensationScheduled {
                step_id: step.id.clone(),
                handler: comp.handler.clone(),
                attempt,
                task_id: task_id(self.s.ctx.saga_id, &step.id, attempt, true).to_string(),
                idempotency_key: idempotency_key(self.s.ctx.saga_id, &step.id, true),
                deadline: Some(to_timestamp(deadline)),
            },
        ));
    }

    /// When a wait that starts now ends (now, if it should not wait at all).
    fn wait_until(&self, wait: &Wait) -> DateTime<Utc> {
        let date = |field: &str| {
            self.s
                .ctx
                .data
                .get(field)
                .and_then(|v| parse_date(v))
                .map(start_of)
        };
        match wait {
            Wait::For { span, from } => {
                let base = from.as_deref().and_then(date).unwrap_or(self.now);
                span.after(base).unwrap_or(self.now)
            }
            Wait::Until { field } => date(field).unwrap_or(self.now),
            Wait::UntilEndOf { window } => self
                .def()
                .windows()
                .get(window)
                .and_then(|ws| {
                    ws.iter()
                        .find(|w| w.from <= self.now && self.now < w.until)
                        .map(|w| w.until)
                })
                .unwrap_or(self.now),
        }
    }

    /// Moves the saga on as far as it can go at `now`.
    fn advance(&mut self) {
        match self.s.status() {
            SagaStatus::Running => self.advance_forward(),
            SagaStatus::Compensating | SagaStatus::Cancelling => self.unwind(),
            _ => {}
        }
    }

    fn advance_forward(&mut self) {
        let def = self.def();
        loop {
            let mut progressed = false;
            for (i, step) in def.steps().iter().enumerate() {
                if !self.s.planned[i]
                    || self.s.steps[i].phase != StepPhase::Pending
                    || !self.s.needs_ended(i)
                {
                    continue;
                }
                progressed = true;
                if let Some(reason) = self.s.guard_fails(i) {
                    self.emit(Event::StepSkipped(v1::StepSkipped {
                        step_id: step.id.clone(),
                        reason,
                        actor: ENGINE_ACTOR.into(),
                    }));
                } else {
                    self.schedule(i, self.s.steps[i].attempt + 1);
                }
            }
            if !progressed {
                break;
            }
        }
        let all_ended = self.s.steps.iter().enumerate().all(|(i, st)| {
            !self.s.planned[i]
                || matches!(
                    st.phase,
                    StepPhase::Succeeded | StepPhase::Skipped | StepPhase::Failed
                )
        });
        if all_ended {
            self.emit(Event::SagaCompleted(v1::SagaCompleted {}));
        }
    }

    /// Compensation: withdraw what waits, await compensable work in flight, then undo the
    /// succeeded steps one at a time, last done first.
    fn unwind(&mut self) {
        let def = self.def();
        let reason = if self.s.cancel.is_some() {
            "the saga was cancelled"
        } else {
            "the saga is compensating"
        };
        for (i, step) in def.steps().iter().enumerate() {
            let withdraw = match self.s.steps[i].phase {
                StepPhase::RetryPending { .. } | StepPhase::Waiting { .. } => true,
                StepPhase::Running { .. } => matches!(step.kind, StepKind::Human { .. }),
                _ => false,
            };
            if withdraw {
                self.emit(Event::StepSkipped(v1::StepSkipped {
                    step_id: step.id.clone(),
                    reason: reason.into(),
                    actor: ENGINE_ACTOR.into(),
                }));
            }
        }
        let busy = self
            .s
            .steps
            .iter()
            .enumerate()
            .any(|(i, st)| match st.phase {
                StepPhase::Running { .. } => def.steps()[i].compensation().is_some(),
                StepPhase::Compensating { .. } | StepPhase::CompensationRetryPending { .. } => true,
                _ => false,
            });
        if busy {
            return;
        }
        let next = self.s.completed.iter().rev().copied().find(|&i| {
            self.s.steps[i].phase == StepPhase::Succeeded && def.steps()[i].compensation().is_some()
        });
        if let Some(i) = next {
            if !self.s.parked {
                self.schedule_compensation(i, self.s.steps[i].compensation_attempt + 1);
            }
            return;
        }
        let failed_step_id = match (self.s.cancel, self.s.cause) {
            (None, Some(i)) => def.steps()[i].id.clone(),
            _ => String::new(),
        };
        self.emit(Event::SagaCompensated(v1::SagaCompensated {
            failed_step_id,
        }));
    }

    fn retry_step(&mut self, step_id: &str) -> Result<(), EngineError> {
        let i = self.step_index(step_id)?;
        let def = self.def();
        let step = &def.steps()[i];
        let status = self.s.status();
        let st = &self.s.steps[i];
        let forward = matches!(status, SagaStatus::Running | SagaStatus::Parked);
        let task_like = matches!(
            step.kind,
            StepKind::Task { .. } | StepKind::SettleOtherSagas { .. }
        );
        let next = match st.phase {
            StepPhase::Failed | StepPhase::Running { .. } if forward && task_like => {
                Some((st.attempt + 1, false))
            }
            StepPhase::RetryPending { next_attempt, .. } if forward => Some((next_attempt, false)),
            StepPhase::Compensating { .. } => Some((st.compensation_attempt + 1, true)),
            StepPhase::CompensationRetryPending { next_attempt, .. } => Some((next_attempt, true)),
            _ => None,
        };
        let Some((attempt, compensation)) = next else {
            return Err(self.not_allowed("retry", i));
        };
        self.emit(Event::StepRetryScheduled(v1::StepRetryScheduled {
            step_id: step.id.clone(),
            next_attempt: attempt,
            due_at: Some(to_timestamp(self.now)),
        }));
        if !self.s.parked {
            if compensation {
                self.schedule_compensation(i, attempt);
            } else {
                self.schedule(i, attempt);
            }
        }
        self.advance();
        Ok(())
    }

    fn skip_step(
        &mut self,
        step_id: &str,
        actor: String,
        reason: String,
    ) -> Result<(), EngineError> {
        let i = self.step_index(step_id)?;
        let skippable = match self.s.steps[i].phase {
            StepPhase::Pending
            | StepPhase::Running { .. }
            | StepPhase::RetryPending { .. }
            | StepPhase::Waiting { .. }
            | StepPhase::Failed => {
                matches!(self.s.status(), SagaStatus::Running | SagaStatus::Parked)
                    || matches!(self.s.steps[i].phase, StepPhase::Running { .. })
            }
            StepPhase::Compensating { .. } | StepPhase::CompensationRetryPending { .. } => true,
            _ => false,
        };
        if !skippable {
            return Err(self.not_allowed("skip", i));
        }
        self.emit(Event::StepSkipped(v1::StepSkipped {
            step_id: step_id.to_owned(),
            reason,
            actor,
        }));
        self.advance();
        Ok(())
    }

    /// The decision: the events, and commands derived from the state before and after.
    fn finish(self, before: &SagaState) -> Decision {
        let mut commands = Vec::new();
        if self.s.terminal.is_none() {
            // Dispatch what is newly in flight: a new attempt has a new task id.
            for i in 0..self.s.steps.len() {
                if let Some(id) = self.s.in_flight(i)
                    && before.in_flight(i) != Some(id)
                {
                    commands.extend(self.s.work(i));
                }
            }
        }
        let old_timers: BTreeSet<Timer> = before.timers().into_iter().collect();
        let new_timers: BTreeSet<Timer> = self.s.timers().into_iter().collect();
        commands.extend(
            new_timers
                .difference(&old_timers)
                .cloned()
                .map(Command::ScheduleTimer),
        );
        // A timer already due has fired (or is firing): nothing to cancel.
        commands.extend(
            old_timers
                .difference(&new_timers)
                .filter(|t| t.due_at > self.now)
                .cloned()
                .map(Command::CancelTimer),
        );
        commands.extend(self.incidents);
        Decision {
            events: self.events,
            commands,
            ignored: None,
        }
    }
}
