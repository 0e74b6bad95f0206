//! Saga definitions: what a life event sets in motion, as data.
//!
//! One TOML file per life event (see `sagas/definitions/`) lists the steps of its saga. The
//! engine only ever sees a [`Definition`] that passed validation: every id,
//! field path, duration, list and dependency is checked at load time, with a typed
//! [`DefinitionError`] naming the culprit, so a bad file fails at start-up and never halfway
//! through a citizen's saga.
//!
//! ```toml
//! name = "birth"
//! version = 1
//! life_event = "birth"
//! person = "child.insz"                                   # whose saga this is
//! municipality = "registered_address.municipality_nis_code"
//! on_death = "stop"                                       # cancel | stop | park
//! facts = ["holds_resident_parking_card"]                 # supplied at start, for conditions
//!
//! [defaults]
//! timeout = "30s"
//! retry = { max_attempts = 5, backoff_base = "1s", backoff_max = "5min", jitter = 0.2 }
//!
//! [lists]
//! birth-premium = ["11002", "44021"]                      # NIS codes that take part
//!
//! [windows]                                               # date ranges, for waits
//! voter-list-freeze = [{ from = "2029-03-01", until = "2029-06-11" }]
//!
//! [handlers."groeipakket.startbedrag"]                    # the target system's limits
//! system = "Groeipakket"
//! max_rate_per_second = 20
//! max_in_flight = 40
//!
//! [[steps]]
//! id = "birth-premium"
//! handler = "gemeente.geboortepremie"                     # kind = "task" by default
//! needs = ["check-enrolment"]
//! condition = { field = "registered_address.municipality_nis_code", in_list = "birth-premium" }
//! required = false
//! entitled = ["child.insz", "mother.insz"]
//! compensation = "gemeente.geboortepremie.recover"        # or { handler, timeout, retry }
//! retry = { max_attempts = 8 }                            # the rest from [defaults]
//! timeout = "1min"
//!
//! [[steps]]
//! id = "boekstart-at-6-months"
//! kind = "wait"                                           # task | wait | human | settle-other-sagas
//! needs = ["check-enrolment"]
//! wait = { duration = "6 months", from = "child.date_of_birth" }
//! ```
//!
//! Step kinds:
//! - `task`: a handler in a target system does the work; may declare a compensation.
//! - `wait`: a durable wait for a duration (from a date field, or from when the wait
//!   starts), until a date field, or until the end of a named window (an election freeze)
//!   if the saga is inside one.
//! - `human`: a person completes it (a counter clerk hands over a licence); `timeout` with
//!   `on_timeout = "fail"` (the step fails) or `"escalate"` (an incident, and it keeps
//!   waiting).
//! - `settle-other-sagas`: death sagas only: the orchestrator cancels or parks the person's
//!   other running sagas, as each of their definitions says (`on_death`).
//!
//! `only_if_succeeded` / `only_if_failed` (each a subset of `needs`) make a step depend on
//! how another step ended, e.g. destroy a card only if its hand-over failed. Those steps are
//! skipped (by the engine, recorded as `StepSkipped`) when the guard does not hold.
//!
//! Integrators' handlers join a definition at run time through [`Definition::add_step`],
//! which runs the same validation as the loader.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;

use chrono::{DateTime, Utc};
use levensloop_proto::v1;
use serde::Deserialize;

use crate::condition::{Condition, RawCondition};
use crate::fields::LifeEventKind;
use crate::time::{Span, parse_date, start_of};

/// Why a definition was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DefinitionError {
    /// Not valid TOML, a missing key, or an unknown key (every table refuses unknown keys).
    #[error("not a valid definition: {0}")]
    Parse(String),
    #[error(
        "unknown life event `{0}`: expected birth, death, change-of-address or driving-exam-passed"
    )]
    UnknownLifeEvent(String),
    #[error("version must be at least 1")]
    BadVersion,
    /// An id (definition, step, list, window, fact or handler) that is empty or has
    /// characters outside `a-z A-Z 0-9 . _ -` (ids end up in idempotency keys and subjects).
    #[error("invalid {what} id {id:?}: use letters, digits, `.`, `_` and `-`")]
    BadId { what: &'static str, id: String },
    #[error("the definition has no steps")]
    NoSteps,
    #[error("duplicate step id `{step}`")]
    DuplicateStep { step: String },
    #[error("step `{step}` needs unknown step `{need}`")]
    UnknownStep { step: String, need: String },
    /// The `needs` form a cycle; the steps in order, the first repeated at the end.
    #[error("the steps' needs form a cycle: {}", .cycle.join(" -> "))]
    Cycle { cycle: Vec<String> },
    #[error("{location}: unknown field `{field}` for a {life_event} event")]
    UnknownField {
        location: String,
        field: String,
        life_event: LifeEventKind,
    },
    #[error("{location}: unknown list `{list}`")]
    UnknownList { location: String, list: String },
    #[error("step `{step}`: unknown window `{window}`")]
    UnknownWindow { step: String, window: String },
    #[error("step `{step}`: `{guard}` is in only_if_succeeded/only_if_failed but not in needs")]
    GuardNotANeed { step: String, guard: String },
    #[error("compensation for unknown step `{step}`")]
    CompensationOfUnknownStep { step: String },
    #[error("step `{step}` is a {kind} step: only task steps can be compensated")]
    CompensationOnNonTaskStep { step: String, kind: &'static str },
    #[error("{location}: bad duration {value:?}: {reason}")]
    BadDuration {
        location: String,
        value: String,
        reason: String,
    },
    #[error("{location}: bad retry policy: {reason}")]
    BadRetry { location: String, reason: String },
    #[error("{location}: bad condition: {reason}")]
    BadCondition { location: String, reason: String },
    /// A step whose keys do not fit its kind (a wait with a handler, a task without one).
    #[error("step `{step}`: {reason}")]
    BadStep { step: String, reason: String },
    #[error("limits for handler `{handler}`, which no step uses")]
    UnknownHandler { handler: String },
    #[error("handler `{handler}`: {reason}")]
    BadLimits { handler: String, reason: String },
    #[error("window `{window}`: {reason}")]
    BadWindow { window: String, reason: String },
    /// A catalog already holds another definition under this name and version.
    #[error("definition {name} v{version} is already loaded")]
    DuplicateVersion { name: String, version: u32 },
}

/// What a death of the saga's person does to this saga (see `settle-other-sagas`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OnDeath {
    /// Compensate what was done, as defined, then end Cancelled (a move, a licence).
    #[default]
    Cancel,
    /// End Cancelled without compensating: what was done stays done, what was pending is
    /// dropped (a birth: the Boekstart timers stop, the birth grant is not recovered).
    Stop,
    /// Hold the saga until an operator resumes or cancels it.
    Park,
}

/// What a human step's deadline does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OnTimeout {
    /// The step fails (a card not collected in time).
    #[default]
    Fail,
    /// An incident is raised and the step keeps waiting (a police check that is late).
    Escalate,
}

/// Retries of a failed or timed-out attempt: exponential backoff with jitter.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryPolicy {
    /// Attempts in all, the first included (1: no retry).
    pub max_attempts: u32,
    /// The delay after the first failure; doubled after each further failure.
    pub backoff_base: Span,
    /// The delay never exceeds this.
    pub backoff_max: Span,
    /// Fraction in [0, 1] by which a delay may be shortened at random, so that a burst of
    /// failures does not come back as a burst of retries.
    pub jitter: f64,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 5,
            backoff_base: Span::from_secs(1),
            backoff_max: Span::from_secs(300),
            jitter: 0.2,
        }
    }
}

impl RetryPolicy {
    /// The delay before the next attempt after the `failures`-th failure (1-based) of the
    /// current budget; `u` is the caller's random draw in [0, 1).
    pub fn backoff(&self, failures: u32, u: f64) -> Span {
        let exp = failures.saturating_sub(1).min(62);
        let raw = self.backoff_base.millis().saturating_mul(1u64 << exp);
        let capped = raw.min(self.backoff_max.millis());
        let u = if u.is_finite() {
            u.clamp(0.0, 1.0)
        } else {
            0.0
        };
        let factor = 1.0 - self.jitter.clamp(0.0, 1.0) * u;
        Span::from_millis((capped as f64 * factor).round() as u64)
    }

    fn validate(&self, location: &str) -> Result<(), DefinitionError> {
        let bad = |reason: &str| DefinitionError::BadRetry {
            location: location.to_owned(),
            reason: reason.to_owned(),
        };
        if self.max_attempts == 0 {
            return Err(bad("max_attempts must be at least 1"));
        }
        if !(0.0..=1.0).contains(&self.jitter) {
            return Err(bad("jitter is a fraction between 0 and 1"));
        }
        if !self.backoff_base.is_exact() || !self.backoff_max.is_exact() {
            return Err(bad("backoff is counted in exact time, not months"));
        }
        if self.backoff_base > self.backoff_max {
            return Err(bad("backoff_base is larger than backoff_max"));
        }
        Ok(())
    }
}

/// The step that undoes a task step.
#[derive(Debug, Clone, PartialEq)]
pub struct Compensation {
    pub handler: String,
    pub timeout: Span,
    pub retry: RetryPolicy,
}

/// How long a wait step waits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Wait {
    /// For a span after the date in `from` (a date field of the event), or after the wait
    /// starts when `from` is absent or the field is empty.
    For { span: Span, from: Option<String> },
    /// Until the date in a field (elapsed at once when the field is empty or past).
    Until { field: String },
    /// Until the end of the window the saga is in when the wait starts; no wait outside one.
    UntilEndOf { window: String },
}

/// What a step is.
#[derive(Debug, Clone, PartialEq)]
pub enum StepKind {
    Task {
        handler: String,
        compensation: Option<Compensation>,
    },
    Wait(Wait),
    Human {
        /// The operators' work list the step appears on, e.g. `balie.rijbewijs-uitreiking`.
        handler: String,
        on_timeout: OnTimeout,
    },
    /// Cancel or park the person's other running sagas (death sagas only).
    SettleOtherSagas {
        handler: String,
    },
}

impl StepKind {
    /// `task`, `wait`, `human` or `settle-other-sagas`.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Task { .. } => "task",
            Self::Wait(_) => "wait",
            Self::Human { .. } => "human",
            Self::SettleOtherSagas { .. } => "settle-other-sagas",
        }
    }
}

/// One step of a saga.
#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    pub id: String,
    pub description: String,
    pub kind: StepKind,
    /// Steps that must have ended (succeeded, skipped, or failed while optional) first.
    pub needs: Vec<String>,
    /// Run only if all of these (a subset of `needs`) succeeded; otherwise skipped.
    pub only_if_succeeded: Vec<String>,
    /// Run only if all of these (a subset of `needs`) failed; otherwise skipped.
    pub only_if_failed: Vec<String>,
    /// Evaluated when the saga starts; a step whose condition fails is not planned.
    pub condition: Option<Condition>,
    /// A required step's permanent failure compensates the saga; an optional one's does not.
    pub required: bool,
    pub retry: RetryPolicy,
    /// Per attempt. `None` only for waits and for human steps without a deadline.
    pub timeout: Option<Span>,
    /// The event fields the handler may see; nothing else is sent (data minimisation).
    pub entitled: Vec<String>,
}

impl Step {
    /// The handler the step's tasks go to (`None` for a wait).
    pub fn handler(&self) -> Option<&str> {
        match &self.kind {
            StepKind::Task { handler, .. }
            | StepKind::Human { handler, .. }
            | StepKind::SettleOtherSagas { handler } => Some(handler),
            StepKind::Wait(_) => None,
        }
    }

    /// The step's compensation, if it has one.
    pub fn compensation(&self) -> Option<&Compensation> {
        match &self.kind {
            StepKind::Task { compensation, .. } => compensation.as_ref(),
            _ => None,
        }
    }
}

/// A target system's limits, enforced by the orchestrator across all its instances.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct HandlerLimits {
    /// The organisation or system behind the handler, for people reading the file.
    pub system: String,
    /// Tasks started per second, at most.
    pub max_rate_per_second: Option<f64>,
    /// Tasks dispatched and not yet answered, at most.
    pub max_in_flight: Option<u32>,
}

/// A date range `[from, until)`: `until` is the first day outside it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub from: DateTime<Utc>,
    pub until: DateTime<Utc>,
}

/// The defaults a step takes when it does not say.
#[derive(Debug, Clone, PartialEq)]
pub struct Defaults {
    pub timeout: Span,
    pub retry: RetryPolicy,
}

impl Default for Defaults {
    fn default() -> Self {
        Self {
            timeout: Span::from_secs(30),
            retry: RetryPolicy::default(),
        }
    }
}

/// A validated saga definition. Immutable once loaded except through [`Self::add_step`] and
/// [`Self::set_compensation`], which keep it valid.
#[derive(Debug, Clone, PartialEq)]
pub struct Definition {
    name: String,
    version: u32,
    life_event: LifeEventKind,
    description: String,
    person_field: String,
    municipality_field: String,
    on_death: OnDeath,
    applies_when: Option<Condition>,
    facts: BTreeSet<String>,
    defaults: Defaults,
    lists: BTreeMap<String, BTreeSet<String>>,
    windows: BTreeMap<String, Vec<Window>>,
    handlers: BTreeMap<String, HandlerLimits>,
    steps: Vec<Step>,
    index: HashMap<String, usize>,
    /// The integrators' handlers added to the file's steps, in the order they were added
    /// (see [`crate::registry`]); a saga's `SagaStarted` records them.
    registrations: Vec<v1::HandlerRegistration>,
}

impl Definition {
    /// Parses and validates a definition file.
    pub fn from_toml_str(text: &str) -> Result<Self, DefinitionError> {
        let raw: RawDefinition =
            toml::from_str(text).map_err(|e| DefinitionError::Parse(e.to_string()))?;
        let mut def = raw.build()?;
        def.validate()?;
        Ok(def)
    }

    /// The definition's name, e.g. `birth`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The version a saga keeps for its whole life.
    pub fn version(&self) -> u32 {
        self.version
    }

    /// A copy under another version, e.g. after integrators' steps were added.
    pub fn with_version(mut self, version: u32) -> Self {
        self.version = version;
        self
    }

    pub fn life_event(&self) -> LifeEventKind {
        self.life_event
    }

    pub fn description(&self) -> &str {
        &self.description
    }

    /// The field naming the person the saga is about (`child.insz`).
    pub fn person_field(&self) -> &str {
        &self.person_field
    }

    /// The field naming the municipality the saga acts for.
    pub fn municipality_field(&self) -> &str {
        &self.municipality_field
    }

    pub fn on_death(&self) -> OnDeath {
        self.on_death
    }

    /// A condition on the event for the saga to start at all (e.g. a practical exam).
    pub fn applies_when(&self) -> Option<&Condition> {
        self.applies_when.as_ref()
    }

    /// The facts (`facts.<name>` in conditions) the orchestrator supplies at start.
    pub fn facts(&self) -> &BTreeSet<String> {
        &self.facts
    }

    pub fn defaults(&self) -> &Defaults {
        &self.defaults
    }

    pub fn lists(&self) -> &BTreeMap<String, BTreeSet<String>> {
        &self.lists
    }

    pub fn windows(&self) -> &BTreeMap<String, Vec<Window>> {
        &self.windows
    }

    /// The steps, in the order of the file.
    pub fn steps(&self) -> &[Step] {
        &self.steps
    }

    pub fn step(&self, id: &str) -> Option<&Step> {
        self.index.get(id).map(|&i| &self.steps[i])
    }

    /// The position of a step in [`Self::steps`].
    pub fn step_index(&self, id: &str) -> Option<usize> {
        self.index.get(id).copied()
    }

    /// The declared limits of a handler (`None`: no limits declared here).
    pub fn handler_limits(&self, handler: &str) -> Option<&HandlerLimits> {
        self.handlers.get(handler)
    }

    /// Every handler with declared limits.
    pub fn limits(&self) -> &BTreeMap<String, HandlerLimits> {
        &self.handlers
    }

    /// Every handler the saga may send tasks to, compensations included: one work queue
    /// each.
    pub fn handlers(&self) -> BTreeSet<&str> {
        let mut out = BTreeSet::new();
        for step in &self.steps {
            out.extend(step.handler());
            out.extend(step.compensation().map(|c| c.handler.as_str()));
        }
        out
    }

    /// A task step with this definition's defaults, for [`Self::add_step`].
    pub fn task_step(&self, id: impl Into<String>, handler: impl Into<String>) -> Step {
        Step {
            id: id.into(),
            description: String::new(),
            kind: StepKind::Task {
                handler: handler.into(),
                compensation: None,
            },
            needs: Vec::new(),
            only_if_succeeded: Vec::new(),
            only_if_failed: Vec::new(),
            condition: None,
            required: false,
            retry: self.defaults.retry,
            timeout: Some(self.defaults.timeout),
            entitled: Vec::new(),
        }
    }

    /// A compensation with this definition's defaults.
    pub fn compensation(&self, handler: impl Into<String>) -> Compensation {
        Compensation {
            handler: handler.into(),
            timeout: self.defaults.timeout,
            retry: self.defaults.retry,
        }
    }

    /// Adds a step (an integrator's handler, "after steps X"), with the loader's checks; on
    /// error the definition is unchanged.
    pub fn add_step(&mut self, step: Step) -> Result<(), DefinitionError> {
        self.steps.push(step);
        if let Err(e) = self.validate() {
            self.steps.pop();
            self.reindex();
            return Err(e);
        }
        Ok(())
    }

    /// The integrators' handlers this definition includes, in the order they were added.
    pub fn registrations(&self) -> &[v1::HandlerRegistration] {
        &self.registrations
    }

    /// Adds an integrator's handler as a step, with the loader's checks; on error the
    /// definition is unchanged. A `blocking` step is also needed by the steps that need any
    /// of its own needs (with no needs of its own: by the steps that need nothing), so those
    /// wait for it.
    pub fn include_handler(
        &mut self,
        step: Step,
        blocking: bool,
        registration: v1::HandlerRegistration,
    ) -> Result<(), DefinitionError> {
        let mut next = self.clone();
        if blocking {
            for other in &mut next.steps {
                let waits = if step.needs.is_empty() {
                    other.needs.is_empty()
                } else {
                    other.needs.iter().any(|n| step.needs.contains(n))
                };
                if waits {
                    other.needs.push(step.id.clone());
                }
            }
        }
        next.steps.push(step);
        next.validate()?;
        next.registrations.push(registration);
        *self = next;
        Ok(())
    }

    /// Gives an existing task step a compensation, with the loader's checks.
    pub fn set_compensation(
        &mut self,
        step: &str,
        compensation: Compensation,
    ) -> Result<(), DefinitionError> {
        let i = self
            .step_index(step)
            .ok_or_else(|| DefinitionError::CompensationOfUnknownStep { step: step.into() })?;
        let previous = match &mut self.steps[i].kind {
            StepKind::Task {
                compensation: c, ..
            } => c.replace(compensation),
            other => {
                return Err(DefinitionError::CompensationOnNonTaskStep {
                    step: step.into(),
                    kind: other.name(),
                });
            }
        };
        if let Err(e) = self.validate() {
            if let StepKind::Task {
                compensation: c, ..
            } = &mut self.steps[i].kind
            {
                *c = previous;
            }
            return Err(e);
        }
        Ok(())
    }

    fn reindex(&mut self) {
        self.index = self
            .steps
            .iter()
            .enumerate()
            .map(|(i, s)| (s.id.clone(), i))
            .collect();
    }

    /// Checks the whole definition (and rebuilds the step index); see [`DefinitionError`]
    /// for what is checked.
    pub(crate) fn validate(&mut self) -> Result<(), DefinitionError> {
        check_id("definition", &self.name)?;
        if self.version == 0 {
            return Err(DefinitionError::BadVersion);
        }
        if self.steps.is_empty() {
            return Err(DefinitionError::NoSteps);
        }
        let kind = self.life_event;
        let event_field = |location: &str, field: &str| -> Result<(), DefinitionError> {
            if kind.is_field(field) {
                Ok(())
            } else {
                Err(DefinitionError::UnknownField {
                    location: location.to_owned(),
                    field: field.to_owned(),
                    life_event: kind,
                })
            }
        };
        event_field("person", &self.person_field)?;
        event_field("municipality", &self.municipality_field)?;
        for fact in &self.facts {
            check_id("fact", fact)?;
        }
        for list in self.lists.keys() {
            check_id("list", list)?;
        }
        for (name, windows) in &self.windows {
            check_id("window", name)?;
            if windows.iter().any(|w| w.from >= w.until) {
                return Err(DefinitionError::BadWindow {
                    window: name.clone(),
                    reason: "`from` must come before `until`".into(),
                });
            }
        }
        let condition_check = |location: &str, c: &Condition| -> Result<(), DefinitionError> {
            for field in c.fields() {
                let known = match field.strip_prefix("facts.") {
                    Some(fact) => self.facts.contains(fact),
                    None => kind.is_field(field),
                };
                if !known {
                    return Err(DefinitionError::UnknownField {
                        location: location.to_owned(),
                        field: field.to_owned(),
                        life_event: kind,
                    });
                }
            }
            for list in c.lists() {
                if !self.lists.contains_key(list) {
                    return Err(DefinitionError::UnknownList {
                        location: location.to_owned(),
                        list: list.to_owned(),
                    });
                }
            }
            Ok(())
        };
        if let Some(c) = &self.applies_when {
            condition_check("applies_when", c)?;
        }
        self.defaults.retry.validate("defaults")?;
        if self.defaults.timeout.is_zero() {
            return Err(DefinitionError::BadDuration {
                location: "defaults: timeout".into(),
                value: self.defaults.timeout.to_string(),
                reason: "a timeout must be longer than zero".into(),
            });
        }

        let mut ids = HashMap::new();
        for (i, step) in self.steps.iter().enumerate() {
            check_id("step", &step.id)?;
            if ids.insert(step.id.as_str(), i).is_some() {
                return Err(DefinitionError::DuplicateStep {
                    step: step.id.clone(),
                });
            }
        }
        for step in &self.steps {
            let at = |what: &str| format!("step `{}`: {what}", step.id);
            for need in &step.needs {
                if !ids.contains_key(need.as_str()) {
                    return Err(DefinitionError::UnknownStep {
                        step: step.id.clone(),
                        need: need.clone(),
                    });
                }
            }
            for guard in step.only_if_succeeded.iter().chain(&step.only_if_failed) {
                if !step.needs.contains(guard) {
                    return Err(DefinitionError::GuardNotANeed {
                        step: step.id.clone(),
                        guard: guard.clone(),
                    });
                }
            }
            if let Some(c) = &step.condition {
                condition_check(&at("condition"), c)?;
            }
            for field in &step.entitled {
                event_field(&at("entitled"), field)?;
            }
            if let Some(handler) = step.handler() {
                check_id("handler", handler)?;
            }
            step.retry.validate(&at("retry"))?;
            if let Some(t) = step.timeout
                && t.is_zero()
            {
                return Err(DefinitionError::BadDuration {
                    location: at("timeout"),
                    value: t.to_string(),
                    reason: "a timeout must be longer than zero".into(),
                });
            }
            match &step.kind {
                StepKind::Task { compensation, .. } => {
                    if step.timeout.is_none() {
                        return Err(DefinitionError::BadStep {
                            step: step.id.clone(),
                            reason: "a task step needs a timeout".into(),
                        });
                    }
                    if let Some(c) = compensation {
                        check_id("handler", &c.handler)?;
                        c.retry.validate(&at("compensation retry"))?;
                        if c.timeout.is_zero() {
                            return Err(DefinitionError::BadDuration {
                                location: at("compensation timeout"),
                                value: c.timeout.to_string(),
                                reason: "a timeout must be longer than zero".into(),
                            });
                        }
                    }
                }
                StepKind::SettleOtherSagas { .. } => {
                    if kind != LifeEventKind::Death {
                        return Err(DefinitionError::BadStep {
                            step: step.id.clone(),
                            reason: "only a death settles the person's other sagas".into(),
                        });
                    }
                    if step.timeout.is_none() {
                        return Err(DefinitionError::BadStep {
                            step: step.id.clone(),
                            reason: "a settle-other-sagas step needs a timeout".into(),
                        });
                    }
                }
                StepKind::Human { .. } => {}
                StepKind::Wait(wait) => match wait {
                    Wait::For { from, .. } => {
                        if let Some(from) = from {
                            event_field(&at("wait from"), from)?;
                        }
                    }
                    Wait::Until { field } => event_field(&at("wait until"), field)?,
                    Wait::UntilEndOf { window } => {
                        if !self.windows.contains_key(window) {
                            return Err(DefinitionError::UnknownWindow {
                                step: step.id.clone(),
                                window: window.clone(),
                            });
                        }
                    }
                },
            }
        }
        if let Some(cycle) = find_cycle(&self.steps, &ids) {
            return Err(DefinitionError::Cycle { cycle });
        }
        let used = self.handlers();
        for (handler, limits) in &self.handlers {
            if !used.contains(handler.as_str()) {
                return Err(DefinitionError::UnknownHandler {
                    handler: handler.clone(),
                });
            }
            if let Some(rate) = limits.max_rate_per_second
                && !(rate.is_finite() && rate > 0.0)
            {
                return Err(DefinitionError::BadLimits {
                    handler: handler.clone(),
                    reason: "max_rate_per_second must be a positive number".into(),
                });
            }
            if limits.max_in_flight == Some(0) {
                return Err(DefinitionError::BadLimits {
                    handler: handler.clone(),
                    reason: "max_in_flight must be at least 1".into(),
                });
            }
        }
        self.reindex();
        Ok(())
    }
}

impl fmt::Display for Definition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} v{}", self.name, self.version)
    }
}

fn check_id(what: &'static str, id: &str) -> Result<(), DefinitionError> {
    let ok = !id.is_empty()
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if ok {
        Ok(())
    } else {
        Err(DefinitionError::BadId {
            what,
            id: id.to_owned(),
        })
    }
}

/// A cycle in the `needs` graph, as the step ids along it with the first repeated at the end.
fn find_cycle(steps: &[Step], ids: &HashMap<&str, usize>) -> Option<Vec<String>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        New,
        OnPath,
        Done,
    }
    fn visit(
        i: usize,
        steps: &[Step],
        ids: &HashMap<&str, usize>,
        marks: &mut [Mark],
        path: &mut Vec<usize>,
    ) -> Option<Vec<String>> {
        marks[i] = Mark::OnPath;
        path.push(i);
        for need in &steps[i].needs {
            let Some(&j) = ids.get(need.as_str()) else {
                continue;
            };
            match marks[j] {
                Mark::OnPath => {
                    let start = path.iter().position(|&p| p == j).unwrap_or(0);
                    let mut cycle: Vec<String> =
                        path[start..].iter().map(|&p| steps[p].id.clone()).collect();
                    cycle.push(steps[j].id.clone());
                    return Some(cycle);
                }
                Mark::New => {
                    if let Some(c) = visit(j, steps, ids, marks, path) {
                        return Some(c);
                    }
                }
                Mark::Done => {}
            }
        }
        path.pop();
        marks[i] = Mark::Done;
        None
    }
    let mut marks = vec![Mark::New; steps.len()];
    for i in 0..steps.len() {
        if marks[i] == Mark::New
            && let Some(c) = visit(i, steps, ids, &mut marks, &mut Vec::new())
        {
            return Some(c);
        }
    }
    None
}

// The file format, as serde reads it. Every table refuses unknown keys, so a misspelt key
// is an error rather than a silently ignored setting.

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDefinition {
    name: String,
    version: u32,
    life_event: String,
    #[serde(default)]
    description: String,
    person: String,
    municipality: String,
    #[serde(default)]
    on_death: OnDeath,
    applies_when: Option<RawCondition>,
    #[serde(default)]
    facts: Vec<String>,
    #[serde(default)]
    defaults: RawDefaults,
    #[serde(default)]
    lists: BTreeMap<String, Vec<String>>,
    #[serde(default)]
    windows: BTreeMap<String, Vec<RawWindow>>,
    #[serde(default)]
    handlers: BTreeMap<String, RawHandler>,
    #[serde(default)]
    steps: Vec<RawStep>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDefaults {
    timeout: Option<String>,
    retry: Option<RawRetry>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRetry {
    max_attempts: Option<u32>,
    backoff_base: Option<String>,
    backoff_max: Option<String>,
    jitter: Option<f64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWindow {
    from: String,
    until: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHandler {
    #[serde(default)]
    system: String,
    max_rate_per_second: Option<f64>,
    max_in_flight: Option<u32>,
}

#[derive(Debug, Clone, Copy, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
enum RawKind {
    #[default]
    Task,
    Wait,
    Human,
    SettleOtherSagas,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStep {
    id: String,
    #[serde(default)]
    kind: RawKind,
    handler: Option<String>,
    #[serde(default)]
    description: String,
    #[serde(default)]
    needs: Vec<String>,
    #[serde(default)]
    only_if_succeeded: Vec<String>,
    #[serde(default)]
    only_if_failed: Vec<String>,
    condition: Option<RawCondition>,
    required: Option<bool>,
    retry: Option<RawRetry>,
    timeout: Option<String>,
    #[serde(default)]
    entitled: Vec<String>,
    compensation: Option<RawCompensation>,
    wait: Option<RawWait>,
    on_timeout: Option<OnTimeout>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum RawCompensation {
    Handler(String),
    Table(RawCompensationTable),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCompensationTable {
    handler: String,
    timeout: Option<String>,
    retry: Option<RawRetry>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWait {
    duration: Option<String>,
    from: Option<String>,
    until: Option<String>,
    until_end_of: Option<String>,
}

fn span(location: &str, value: &str) -> Result<Span, DefinitionError> {
    Span::parse(value).map_err(|reason| DefinitionError::BadDuration {
        location: location.to_owned(),
        value: value.to_owned(),
        reason,
    })
}

fn date(location: &str, value: &str) -> Result<DateTime<Utc>, DefinitionError> {
    parse_date(value)
        .map(start_of)
        .ok_or_else(|| DefinitionError::BadWindow {
            window: location.to_owned(),
            reason: format!("{value:?} is not a date (YYYY-MM-DD)"),
        })
}

impl RawRetry {
    fn over(&self, base: RetryPolicy, location: &str) -> Result<RetryPolicy, DefinitionError> {
        Ok(RetryPolicy {
            max_attempts: self.max_attempts.unwrap_or(base.max_attempts),
            backoff_base: match &self.backoff_base {
                Some(v) => span(&format!("{location}: backoff_base"), v)?,
                None => base.backoff_base,
            },
            backoff_max: match &self.backoff_max {
                Some(v) => span(&format!("{location}: backoff_max"), v)?,
                None => base.backoff_max,
            },
            jitter: self.jitter.unwrap_or(base.jitter),
        })
    }
}

impl RawDefinition {
    fn build(self) -> Result<Definition, DefinitionError> {
        let life_event = LifeEventKind::from_name(&self.life_event)
            .ok_or_else(|| DefinitionError::UnknownLifeEvent(self.life_event.clone()))?;
        let mut defaults = Defaults::default();
        if let Some(t) = &self.defaults.timeout {
            defaults.timeout = span("defaults: timeout", t)?;
        }
        if let Some(r) = &self.defaults.retry {
            defaults.retry = r.over(defaults.retry, "defaults: retry")?;
        }
        let mut windows = BTreeMap::new();
        for (name, ws) in self.windows {
            let mut out = Vec::new();
            for w in ws {
                out.push(Window {
                    from: date(&name, &w.from)?,
                    until: date(&name, &w.until)?,
                });
            }
            windows.insert(name, out);
        }
        let mut steps = Vec::with_capacity(self.steps.len());
        for raw in self.steps {
            steps.push(raw.build(&defaults)?);
        }
        Ok(Definition {
            name: self.name,
            version: self.version,
            life_event,
            description: self.description,
            person_field: self.person,
            municipality_field: self.municipality,
            on_death: self.on_death,
            applies_when: self
                .applies_when
                .map(|c| c.build("applies_when"))
                .transpose()?,
            facts: self.facts.into_iter().collect(),
            defaults,
            lists: self
                .lists
                .into_iter()
                .map(|(k, v)| (k, v.into_iter().collect()))
                .collect(),
            windows,
            handlers: self
                .handlers
                .into_iter()
                .map(|(name, h)| {
                    (
                        name,
                        HandlerLimits {
                            system: h.system,
                            max_rate_per_second: h.max_rate_per_second,
                            max_in_flight: h.max_in_flight,
                        },
                    )
                })
                .collect(),
            steps,
            index: HashMap::new(),
            registrations: Vec::new(),
        })
    }
}

impl RawStep {
    fn build(self, defaults: &Defaults) -> Result<Step, DefinitionError> {
        let id = self.id;
        let at = |what: &str| format!("step `{id}`: {what}");
        let bad = |reason: &str| DefinitionError::BadStep {
            step: id.clone(),
            reason: reason.to_owned(),
        };
        let kind_name = match self.kind {
            RawKind::Task => "task",
            RawKind::Wait => "wait",
            RawKind::Human => "human",
            RawKind::SettleOtherSagas => "settle-other-sagas",
        };
        if self.compensation.is_some() && !matches!(self.kind, RawKind::Task) {
            return Err(DefinitionError::CompensationOnNonTaskStep {
                step: id.clone(),
                kind: kind_name,
            });
        }
        if self.wait.is_some() && !matches!(self.kind, RawKind::Wait) {
            return Err(bad("`wait` belongs to a step of kind = \"wait\""));
        }
        if self.on_timeout.is_some() && !matches!(self.kind, RawKind::Human) {
            return Err(bad("`on_timeout` belongs to a human step"));
        }
        let retry = match &self.retry {
            Some(r) => r.over(defaults.retry, &at("retry"))?,
            None => defaults.retry,
        };
        let timeout = self
            .timeout
            .as_deref()
            .map(|t| span(&at("timeout"), t))
            .transpose()?;
        let (kind, timeout, retry) = match self.kind {
            RawKind::Task => {
                let handler = self
                    .handler
                    .ok_or_else(|| bad("a task step needs a `handler`"))?;
                let compensation = match self.compensation {
                    None => None,
                    Some(RawCompensation::Handler(handler)) => Some(Compensation {
                        handler,
                        timeout: timeout.unwrap_or(defaults.timeout),
                        retry,
                    }),
                    Some(RawCompensation::Table(t)) => Some(Compensation {
                        handler: t.handler,
                        timeout: match &t.timeout {
                            Some(v) => span(&at("compensation timeout"), v)?,
                            None => timeout.unwrap_or(defaults.timeout),
                        },
                        retry: match &t.retry {
                            Some(r) => r.over(retry, &at("compensation retry"))?,
                            None => retry,
                        },
                    }),
                };
                (
                    StepKind::Task {
                        handler,
                        compensation,
                    },
                    Some(timeout.unwrap_or(defaults.timeout)),
                    retry,
                )
            }
            RawKind::SettleOtherSagas => (
                StepKind::SettleOtherSagas {
                    handler: self
                        .handler
                        .unwrap_or_else(|| "levensloop.settle-other-sagas".to_owned()),
                },
                Some(timeout.unwrap_or(defaults.timeout)),
                retry,
            ),
            RawKind::Human => {
                if self.retry.is_some() {
                    return Err(bad("a human step is completed by a person, not retried"));
                }
                let handler = self
                    .handler
                    .ok_or_else(|| bad("a human step needs a `handler` (its work list)"))?;
                (
                    StepKind::Human {
                        handler,
                        on_timeout: self.on_timeout.unwrap_or_default(),
                    },
                    timeout,
                    RetryPolicy {
                        max_attempts: 1,
                        ..RetryPolicy::default()
                    },
                )
            }
            RawKind::Wait => {
                if self.handler.is_some()
                    || self.retry.is_some()
                    || timeout.is_some()
                    || !self.entitled.is_empty()
                {
                    return Err(bad(
                        "a wait step has no handler, retry, timeout or entitled fields",
                    ));
                }
                let w = self
                    .wait
                    .ok_or_else(|| bad("a wait step needs `wait = { ... }`"))?;
                let wait = match (w.duration, w.until, w.until_end_of) {
                    (Some(d), None, None) => Wait::For {
                        span: span(&at("wait duration"), &d)?,
                        from: w.from,
                    },
                    (None, Some(field), None) if w.from.is_none() => Wait::Until { field },
                    (None, None, Some(window)) if w.from.is_none() => Wait::UntilEndOf { window },
                    _ => {
                        return Err(bad(
                            "`wait` takes one of `duration` (with an optional `from`), `until` \
                             or `until_end_of`",
                        ));
                    }
                };
                (
                    StepKind::Wait(wait),
                    None,
                    RetryPolicy {
                        max_attempts: 1,
                        ..RetryPolicy::default()
                    },
                )
            }
        };
        Ok(Step {
            description: self.description,
            kind,
            needs: self.needs,
            only_if_succeeded: self.only_if_succeeded,
            only_if_failed: self.only_if_failed,
            condition: self
                .condition
                .map(|c| c.build(&at("condition")))
                .transpose()?,
            required: self.required.unwrap_or(true),
            retry,
            timeout,
            entitled: self.entitled,
            id,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEAD: &str = r#"
name = "test"
version = 1
life_event = "death"
person = "deceased.insz"
municipality = "registered_address.municipality_nis_code"
facts = ["holds_card"]
[lists]
diftar = ["44021"]
[windows]
freeze = [{ from = "2029-03-01", until = "2029-06-11" }]
"#;

    fn load(steps: &str) -> Result<Definition, DefinitionError> {
        Definition::from_toml_str(&format!("{HEAD}\n{steps}"))
    }

    fn err(steps: &str) -> DefinitionError {
        match load(steps) {
            Ok(_) => panic!("accepted:\n{steps}"),
            Err(e) => e,
        }
    }

    const OK: &str = r#"
[handlers."a.h"]
max_rate_per_second = 20
max_in_flight = 5

[[steps]]
id = "a"
handler = "a.h"
entitled = ["deceased.insz"]
compensation = "a.undo"

[[steps]]
id = "b"
handler = "b.h"
needs = ["a"]
required = false
condition = { field = "registered_address.municipality_nis_code", in_list = "diftar" }
compensation = { handler = "b.undo", timeout = "2min", retry = { max_attempts = 9 } }
retry = { max_attempts = 3, backoff_base = "2s" }

[[steps]]
id = "c"
kind = "wait"
needs = ["b"]
wait = { duration = "4 months", from = "date_of_death" }

[[steps]]
id = "d"
kind = "human"
handler = "desk"
needs = ["c"]
timeout = "30 days"
on_timeout = "escalate"

[[steps]]
id = "e"
handler = "e.h"
needs = ["d"]
only_if_failed = ["d"]
"#;

    #[test]
    fn a_valid_definition_loads_with_defaults_filled_in() {
        let d = load(OK).unwrap();
        assert_eq!(d.steps().len(), 5);
        let a = d.step("a").unwrap();
        assert!(a.required);
        assert_eq!(a.timeout, Some(Span::from_secs(30)));
        assert_eq!(a.retry, RetryPolicy::default());
        assert_eq!(a.compensation().unwrap().handler, "a.undo");
        let b = d.step("b").unwrap();
        assert!(!b.required);
        assert_eq!(b.retry.max_attempts, 3);
        assert_eq!(b.retry.backoff_base, Span::from_secs(2));
        assert_eq!(b.retry.backoff_max, Span::from_secs(300));
        let bc = b.compensation().unwrap();
        assert_eq!(bc.timeout, Span::from_secs(120));
        assert_eq!(bc.retry.max_attempts, 9);
        assert_eq!(
            bc.retry.backoff_base,
            Span::from_secs(2),
            "inherits the step's"
        );
        assert_eq!(
            d.step("d").unwrap().kind,
            StepKind::Human {
                handler: "desk".into(),
                on_timeout: OnTimeout::Escalate
            }
        );
        assert_eq!(
            d.handler_limits("a.h").unwrap().max_rate_per_second,
            Some(20.0)
        );
        assert_eq!(
            d.handlers().into_iter().collect::<Vec<_>>(),
            ["a.h", "a.undo", "b.h", "b.undo", "desk", "e.h"]
        );
    }

    #[test]
    fn backoff_doubles_up_to_the_maximum_and_jitter_shortens_it() {
        let p = RetryPolicy {
            max_attempts: 10,
            backoff_base: Span::from_secs(1),
            backoff_max: Span::from_secs(10),
            jitter: 0.5,
        };
        assert_eq!(p.backoff(1, 0.0), Span::from_secs(1));
        assert_eq!(p.backoff(2, 0.0), Span::from_secs(2));
        assert_eq!(p.backoff(4, 0.0), Span::from_secs(8));
        assert_eq!(p.backoff(5, 0.0), Span::from_secs(10));
        assert_eq!(p.backoff(500, 0.0), Span::from_secs(10));
        assert_eq!(p.backoff(2, 0.5), Span::from_millis(1500));
        assert_eq!(p.backoff(2, f64::NAN), Span::from_secs(2));
    }

    #[test]
    fn duplicate_step() {
        assert_eq!(
            err(r#"
[[steps]]
id = "a"
handler = "h"
[[steps]]
id = "a"
handler = "h"
"#),
            DefinitionError::DuplicateStep { step: "a".into() }
        );
    }

    #[test]
    fn unknown_step_in_needs() {
        assert_eq!(
            err(r#"
[[steps]]
id = "a"
handler = "h"
needs = ["nope"]
"#),
            DefinitionError::UnknownStep {
                step: "a".into(),
                need: "nope".into()
            }
        );
    }

    #[test]
    fn cycle_names_its_steps() {
        assert_eq!(
            err(r#"
[[steps]]
id = "start"
handler = "h"
[[steps]]
id = "a"
handler = "h"
needs = ["start", "c"]
[[steps]]
id = "b"
handler = "h"
needs = ["a"]
[[steps]]
id = "c"
handler = "h"
needs = ["b"]
"#),
            DefinitionError::Cycle {
                cycle: vec!["a".into(), "c".into(), "b".into(), "a".into()]
            }
        );
        assert_eq!(
            err(r#"
[[steps]]
id = "a"
handler = "h"
needs = ["a"]
"#),
            DefinitionError::Cycle {
                cycle: vec!["a".into(), "a".into()]
            }
        );
    }

    #[test]
    fn unknown_fields_everywhere() {
        let unknown = |e: DefinitionError, want_field: &str, want_location: &str| match e {
            DefinitionError::UnknownField {
                field,
                location,
                life_event,
            } => {
                assert_eq!(field, want_field);
                assert_eq!(location, want_location);
                assert_eq!(life_event, LifeEventKind::Death);
            }
            other => panic!("{other:?}"),
        };
        unknown(
            err(r#"
[[steps]]
id = "a"
handler = "h"
entitled = ["child.insz"]
"#),
            "child.insz",
            "step `a`: entitled",
        );
        unknown(
            err(r#"
[[steps]]
id = "a"
handler = "h"
condition = { field = "deceased.insn", present = true }
"#),
            "deceased.insn",
            "step `a`: condition",
        );
        unknown(
            err(r#"
[[steps]]
id = "a"
handler = "h"
condition = { field = "facts.holds_car", equals = true }
"#),
            "facts.holds_car",
            "step `a`: condition",
        );
        unknown(
            err(r#"
[[steps]]
id = "a"
kind = "wait"
wait = { until = "date_of_birth" }
"#),
            "date_of_birth",
            "step `a`: wait until",
        );
        // Facts are for conditions only: they are not stored with the saga, so a task
        // cannot be entitled to one.
        unknown(
            err(r#"
[[steps]]
id = "a"
handler = "h"
entitled = ["facts.holds_card"]
"#),
            "facts.holds_card",
            "step `a`: entitled",
        );
        let e = Definition::from_toml_str(&format!(
            "{}\n[[steps]]\nid = \"a\"\nhandler = \"h\"",
            HEAD.replace("deceased.insz", "child.insz")
        ))
        .unwrap_err();
        unknown(e, "child.insz", "person");
    }

    #[test]
    fn unknown_keys_are_parse_errors() {
        match err(r#"
[[steps]]
id = "a"
handler = "h"
neeeds = ["b"]
"#)
        {
            DefinitionError::Parse(msg) => assert!(msg.contains("neeeds"), "{msg}"),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            Definition::from_toml_str("name = 3"),
            Err(DefinitionError::Parse(_))
        ));
    }

    #[test]
    fn compensation_on_a_non_task_step() {
        assert_eq!(
            err(r#"
[[steps]]
id = "a"
kind = "human"
handler = "desk"
compensation = "undo"
"#),
            DefinitionError::CompensationOnNonTaskStep {
                step: "a".into(),
                kind: "human"
            }
        );
    }

    #[test]
    fn compensation_of_a_missing_step() {
        let mut d = load(OK).unwrap();
        let c = d.compensation("x.undo");
        assert_eq!(
            d.set_compensation("missing", c.clone()),
            Err(DefinitionError::CompensationOfUnknownStep {
                step: "missing".into()
            })
        );
        assert_eq!(
            d.set_compensation("c", c.clone()),
            Err(DefinitionError::CompensationOnNonTaskStep {
                step: "c".into(),
                kind: "wait"
            })
        );
        d.set_compensation("e", c).unwrap();
        assert_eq!(
            d.step("e").unwrap().compensation().unwrap().handler,
            "x.undo"
        );
    }

    #[test]
    fn bad_durations() {
        for (steps, location) in [
            (
                "[[steps]]\nid = \"a\"\nhandler = \"h\"\ntimeout = \"5 fortnights\"",
                "step `a`: timeout",
            ),
            (
                "[[steps]]\nid = \"a\"\nhandler = \"h\"\ntimeout = \"0s\"",
                "step `a`: timeout",
            ),
            (
                "[[steps]]\nid = \"a\"\nkind = \"wait\"\nwait = { duration = \"6\" }",
                "step `a`: wait duration",
            ),
            (
                "[[steps]]\nid = \"a\"\nhandler = \"h\"\nretry = { backoff_max = \"5m\" }",
                "step `a`: retry: backoff_max",
            ),
        ] {
            match err(steps) {
                DefinitionError::BadDuration { location: l, .. } => assert_eq!(l, location),
                other => panic!("{steps}: {other:?}"),
            }
        }
    }

    #[test]
    fn bad_retry_policies() {
        for retry in [
            "{ max_attempts = 0 }",
            "{ jitter = 1.5 }",
            "{ backoff_base = \"10min\", backoff_max = \"1min\" }",
            "{ backoff_base = \"1 month\" }",
        ] {
            let e = err(&format!(
                "[[steps]]\nid = \"a\"\nhandler = \"h\"\nretry = {retry}"
            ));
            assert!(
                matches!(&e, DefinitionError::BadRetry { location, .. } if location == "step `a`: retry"),
                "{retry}: {e:?}"
            );
        }
    }

    #[test]
    fn bad_conditions_lists_windows_and_guards() {
        assert!(matches!(
            err(
                "[[steps]]\nid = \"a\"\nhandler = \"h\"\ncondition = { field = \"date_of_death\" }"
            ),
            DefinitionError::BadCondition { .. }
        ));
        assert_eq!(
            err(
                "[[steps]]\nid = \"a\"\nhandler = \"h\"\ncondition = { field = \"date_of_death\", in_list = \"nope\" }"
            ),
            DefinitionError::UnknownList {
                location: "step `a`: condition".into(),
                list: "nope".into()
            }
        );
        assert_eq!(
            err("[[steps]]\nid = \"a\"\nkind = \"wait\"\nwait = { until_end_of = \"thaw\" }"),
            DefinitionError::UnknownWindow {
                step: "a".into(),
                window: "thaw".into()
            }
        );
        assert_eq!(
            err(
                "[[steps]]\nid = \"a\"\nhandler = \"h\"\n[[steps]]\nid = \"b\"\nhandler = \"h\"\nonly_if_failed = [\"a\"]"
            ),
            DefinitionError::GuardNotANeed {
                step: "b".into(),
                guard: "a".into()
            }
        );
        let e = Definition::from_toml_str(&format!(
            "{}\n[[steps]]\nid = \"a\"\nhandler = \"h\"",
            HEAD.replace("until = \"2029-06-11\"", "until = \"2029-01-01\"")
        ))
        .unwrap_err();
        assert!(matches!(e, DefinitionError::BadWindow { .. }), "{e:?}");
    }

    #[test]
    fn steps_that_do_not_fit_their_kind() {
        for steps in [
            "[[steps]]\nid = \"a\"",
            "[[steps]]\nid = \"a\"\nkind = \"human\"",
            "[[steps]]\nid = \"a\"\nkind = \"human\"\nhandler = \"d\"\nretry = { max_attempts = 2 }",
            "[[steps]]\nid = \"a\"\nkind = \"wait\"",
            "[[steps]]\nid = \"a\"\nkind = \"wait\"\nhandler = \"h\"\nwait = { duration = \"1d\" }",
            "[[steps]]\nid = \"a\"\nkind = \"wait\"\nwait = { duration = \"1d\", until = \"date_of_death\" }",
            "[[steps]]\nid = \"a\"\nhandler = \"h\"\nwait = { duration = \"1d\" }",
            "[[steps]]\nid = \"a\"\nhandler = \"h\"\non_timeout = \"fail\"",
        ] {
            assert!(
                matches!(err(steps), DefinitionError::BadStep { .. }),
                "{steps}"
            );
        }
        // Only a death settles the person's other sagas.
        let e = Definition::from_toml_str(
            r#"
name = "x"
version = 1
life_event = "birth"
person = "child.insz"
municipality = "registered_address.municipality_nis_code"
[[steps]]
id = "a"
kind = "settle-other-sagas"
"#,
        )
        .unwrap_err();
        assert!(matches!(e, DefinitionError::BadStep { .. }), "{e:?}");
    }

    #[test]
    fn bad_ids_versions_life_events_and_empty_definitions() {
        assert_eq!(
            err("[[steps]]\nid = \"a/b\"\nhandler = \"h\""),
            DefinitionError::BadId {
                what: "step",
                id: "a/b".into()
            }
        );
        assert_eq!(
            err("[[steps]]\nid = \"a\"\nhandler = \"\""),
            DefinitionError::BadId {
                what: "handler",
                id: String::new()
            }
        );
        assert_eq!(err(""), DefinitionError::NoSteps);
        let text = format!("{HEAD}\n[[steps]]\nid = \"a\"\nhandler = \"h\"");
        assert_eq!(
            Definition::from_toml_str(&text.replace("version = 1", "version = 0")),
            Err(DefinitionError::BadVersion)
        );
        assert_eq!(
            Definition::from_toml_str(&text.replace("\"death\"", "\"marriage\"")),
            Err(DefinitionError::UnknownLifeEvent("marriage".into()))
        );
    }

    #[test]
    fn handler_limits_must_name_a_used_handler_and_be_positive() {
        assert_eq!(
            err("[handlers.nope]\nmax_in_flight = 1\n[[steps]]\nid = \"a\"\nhandler = \"h\""),
            DefinitionError::UnknownHandler {
                handler: "nope".into()
            }
        );
        for limits in [
            "max_in_flight = 0",
            "max_rate_per_second = 0",
            "max_rate_per_second = nan",
        ] {
            assert!(
                matches!(
                    err(&format!(
                        "[handlers.h]\n{limits}\n[[steps]]\nid = \"a\"\nhandler = \"h\""
                    )),
                    DefinitionError::BadLimits { .. }
                ),
                "{limits}"
            );
        }
    }

    #[test]
    fn add_step_validates_and_leaves_the_definition_unchanged_on_error() {
        let mut d = load(OK).unwrap();
        let before = d.clone();
        let mut s = d.task_step("gent-library", "gent.library.close-account");
        s.needs = vec!["missing".into()];
        assert_eq!(
            d.add_step(s.clone()),
            Err(DefinitionError::UnknownStep {
                step: "gent-library".into(),
                need: "missing".into()
            })
        );
        assert_eq!(d, before);
        let mut dup = s.clone();
        dup.id = "a".into();
        dup.needs.clear();
        assert_eq!(
            d.add_step(dup),
            Err(DefinitionError::DuplicateStep { step: "a".into() })
        );
        assert_eq!(d, before);
        s.needs = vec!["a".into()];
        s.entitled = vec!["deceased.insz".into()];
        d.add_step(s).unwrap();
        assert_eq!(d.step_index("gent-library"), Some(5));
        assert!(d.handlers().contains("gent.library.close-account"));
    }
}
