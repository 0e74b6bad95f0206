//! A small world around the engine for tests: it stores events, keeps timers, remembers
//! every task it was asked to dispatch, and checks what every decision hands out.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use chrono::{DateTime, TimeDelta, TimeZone, Utc};
use levensloop_proto::v1;
use levensloop_proto::v1::saga_event::Event;
use levensloop_sagas::{
    Command, Decision, Definition, EngineError, Input, SagaState, Timer, TimerKind, decide,
    idempotency_key, rebuild, task_id,
};

pub fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 3, 2, 9, 0, 0).unwrap()
}

pub fn person(insz: &str, dob: &str) -> v1::Person {
    v1::Person {
        insz: insz.into(),
        given_names: vec!["Lotte".into()],
        family_name: "Peeters".into(),
        date_of_birth: dob.into(),
        gender: v1::Gender::Female as i32,
        nationalities: vec!["BE".into()],
    }
}

pub fn address(nis: &str) -> v1::Address {
    v1::Address {
        thoroughfare: "Veldstraat".into(),
        house_number: "12".into(),
        box_number: String::new(),
        post_code: "9000".into(),
        municipality_name: "Gent".into(),
        municipality_nis_code: nis.into(),
        country_code: "BE".into(),
        address_register_id: format!("https://data.vlaanderen.be/id/adres/{nis}-12"),
        full_address: "Veldstraat 12, 9000 Gent".into(),
    }
}

fn envelope(id: &str, kind: &str, payload: v1::life_event::Payload) -> v1::LifeEvent {
    v1::LifeEvent {
        id: id.into(),
        source: "urn:test:registry".into(),
        r#type: format!("be.vlaanderen.levensloop.{kind}.v1"),
        specversion: "1.0".into(),
        time: Some(levensloop_proto::types::Timestamp {
            seconds: t0().timestamp(),
            nanos: 0,
        }),
        subject: String::new(),
        datacontenttype: "application/protobuf".into(),
        dataschema: String::new(),
        payload: Some(payload),
    }
}

pub fn birth(id: &str, nis: &str) -> v1::LifeEvent {
    envelope(
        id,
        "birth",
        v1::life_event::Payload::Birth(v1::Birth {
            act: Some(v1::CivilStatusAct {
                act_reference: "DABS-1".into(),
                registering_municipality_nis_code: nis.into(),
                registration_date: "2026-03-01".into(),
            }),
            child: Some(person("26022800123", "2026-02-28")),
            place_of_birth_nis_code: nis.into(),
            time_of_birth: "08:15".into(),
            mother: Some(person("90010100234", "1990-01-01")),
            other_parent: Some(person("89020200345", "1989-02-02")),
            registered_address: Some(address(nis)),
            multiple_birth_index: 1,
        }),
    )
}

pub fn death(id: &str, insz: &str, dob: &str, nis: &str) -> v1::LifeEvent {
    envelope(
        id,
        "death",
        v1::life_event::Payload::Death(v1::Death {
            act: Some(v1::CivilStatusAct {
                act_reference: "DABS-2".into(),
                registering_municipality_nis_code: nis.into(),
                registration_date: "2026-03-01".into(),
            }),
            deceased: Some(person(insz, dob)),
            date_of_death: "2026-03-01".into(),
            place_of_death_nis_code: nis.into(),
            declaring_doctor_riziv: "12345678901".into(),
            registered_address: Some(address(nis)),
        }),
    )
}

pub fn moved(
    id: &str,
    insz: &str,
    from: &str,
    to: &str,
    reason: v1::ChangeOfAddressReason,
) -> v1::LifeEvent {
    envelope(
        id,
        "change-of-address",
        v1::life_event::Payload::ChangeOfAddress(v1::ChangeOfAddress {
            person: Some(person(insz, "1985-05-05")),
            previous_address: Some(address(from)),
            new_address: Some(address(to)),
            declaration_date: "2026-03-01".into(),
            move_date: "2026-02-27".into(),
            declaring_municipality_nis_code: to.into(),
            household_member_insz: vec![],
            reason: reason as i32,
        }),
    )
}

pub fn exam(id: &str, insz: &str, exam_type: v1::ExamType) -> v1::LifeEvent {
    envelope(
        id,
        "driving-exam-passed",
        v1::life_event::Payload::DrivingExamPassed(v1::DrivingExamPassed {
            candidate: Some(person(insz, "2007-01-01")),
            exam_centre: Some(v1::ExamCentre {
                code: "GOCA-12".into(),
                name: "Examencentrum Gent".into(),
                municipality_nis_code: "44021".into(),
            }),
            exam_date: "2026-03-01".into(),
            licence_category: v1::LicenceCategory::B as i32,
            exam_type: exam_type as i32,
            exam_reference: "EX-1".into(),
            residence_municipality_nis_code: "44021".into(),
        }),
    )
}

pub fn facts(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

pub fn completed(task: &v1::Task) -> v1::TaskResult {
    v1::TaskResult {
        task_id: task.task_id.clone(),
        idempotency_key: task.idempotency_key.clone(),
        attempt: task.attempt,
        outcome: Some(v1::task_result::Outcome::Completed(v1::TaskCompleted {
            result: None,
        })),
    }
}

pub fn failed(task: &v1::Task, retryable: bool) -> v1::TaskResult {
    v1::TaskResult {
        task_id: task.task_id.clone(),
        idempotency_key: task.idempotency_key.clone(),
        attempt: task.attempt,
        outcome: Some(v1::task_result::Outcome::Failed(v1::TaskFailed {
            retryable,
            reason: if retryable {
                "target unavailable"
            } else {
                "refused"
            }
            .into(),
            error_code: if retryable {
                "TARGET_UNAVAILABLE"
            } else {
                "REFUSED"
            }
            .into(),
        })),
    }
}

/// The name of a saga event's payload, for compact assertions.
pub fn kind(e: &v1::SagaEvent) -> &'static str {
    match e.event.as_ref() {
        None => "none",
        Some(Event::SagaStarted(_)) => "SagaStarted",
        Some(Event::StepScheduled(_)) => "StepScheduled",
        Some(Event::StepSucceeded(_)) => "StepSucceeded",
        Some(Event::StepFailed(_)) => "StepFailed",
        Some(Event::StepRetryScheduled(_)) => "StepRetryScheduled",
        Some(Event::StepTimedOut(_)) => "StepTimedOut",
        Some(Event::StepSkipped(_)) => "StepSkipped",
        Some(Event::StepCompensationScheduled(_)) => "StepCompensationScheduled",
        Some(Event::StepCompensated(_)) => "StepCompensated",
        Some(Event::CompensationFailed(_)) => "CompensationFailed",
        Some(Event::WaitStarted(_)) => "WaitStarted",
        Some(Event::WaitElapsed(_)) => "WaitElapsed",
        Some(Event::HumanTaskCompleted(_)) => "HumanTaskCompleted",
        Some(Event::SagaParked(_)) => "SagaParked",
        Some(Event::SagaResumed(_)) => "SagaResumed",
        Some(Event::SagaCancelled(_)) => "SagaCancelled",
        Some(Event::SagaCompleted(_)) => "SagaCompleted",
        Some(Event::SagaCompensated(_)) => "SagaCompensated",
        Some(Event::SagaFailed(_)) => "SagaFailed",
        Some(Event::IncidentRaised(_)) => "IncidentRaised",
        Some(Event::OperatorActed(_)) => "OperatorActed",
    }
}

/// The step an event is about, if any.
pub fn step_of(e: &v1::SagaEvent) -> Option<&str> {
    Some(match e.event.as_ref()? {
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
        Event::IncidentRaised(s) => &s.step_id,
        _ => return None,
    })
}

/// `kind(step)` of each event, e.g. `StepScheduled(a)`.
pub fn summary(events: &[v1::SagaEvent]) -> Vec<String> {
    events
        .iter()
        .map(|e| match step_of(e) {
            Some(s) => format!("{}({s})", kind(e)),
            None => kind(e).to_owned(),
        })
        .collect()
}

/// The engine plus what an orchestrator would keep around it.
pub struct World {
    pub definition: Arc<Definition>,
    pub life_event: v1::LifeEvent,
    pub state: SagaState,
    pub store: Vec<v1::SagaEvent>,
    pub now: DateTime<Utc>,
    /// Every task ever handed out, by task id, in order.
    pub tasks: Vec<v1::Task>,
    pub humans: Vec<v1::Task>,
    pub settles: Vec<v1::Task>,
    pub timers: BTreeMap<String, Timer>,
    pub incidents: Vec<String>,
    pub results: Vec<v1::TaskResult>,
    /// Compensation tasks in flight at once, at most: must stay 1.
    pub max_compensations_in_flight: usize,
    /// Operators' accepted retries, by step.
    pub operator_retries: BTreeMap<String, u32>,
}

impl World {
    pub fn new(definition: Arc<Definition>, life_event: v1::LifeEvent) -> Self {
        let state = SagaState::new(definition.clone(), &life_event).unwrap();
        Self {
            definition,
            life_event,
            state,
            store: Vec::new(),
            now: t0(),
            tasks: Vec::new(),
            humans: Vec::new(),
            settles: Vec::new(),
            timers: BTreeMap::new(),
            incidents: Vec::new(),
            results: Vec::new(),
            max_compensations_in_flight: 0,
            operator_retries: BTreeMap::new(),
        }
    }

    pub fn from_toml(text: &str, life_event: v1::LifeEvent) -> Self {
        Self::new(
            Arc::new(Definition::from_toml_str(text).unwrap()),
            life_event,
        )
    }

    /// Decides, checks the decision, stores the events and executes the commands.
    pub fn input(&mut self, input: Input) -> Result<Decision, EngineError> {
        let decision = decide(&self.state, input.clone())?;
        // Deterministic: the same state and input decide the same.
        assert_eq!(decide(&self.state, input).unwrap(), decision);
        let saga_id = self.state.saga_id().to_string();
        for e in &decision.events {
            assert_eq!(e.saga_id, saga_id);
            assert_eq!(e.correlation_id, self.life_event.id);
            assert!(!e.causation_id.is_empty());
            assert!(e.occurred_at.is_some());
            self.state.apply(e);
            self.store.push(e.clone());
        }
        for c in &decision.commands {
            self.execute(c);
        }
        let in_flight = self
            .state
            .steps()
            .filter(|(_, _, s)| {
                matches!(
                    s.phase,
                    levensloop_sagas::StepPhase::Compensating { .. }
                        | levensloop_sagas::StepPhase::CompensationRetryPending { .. }
                )
            })
            .count();
        self.max_compensations_in_flight = self.max_compensations_in_flight.max(in_flight);
        Ok(decision)
    }

    fn check_task(&self, t: &v1::Task) {
        let step = self
            .definition
            .step(&t.step_id)
            .expect("task of a known step");
        let saga_id = self.state.saga_id();
        assert_eq!(t.saga_id, saga_id.to_string());
        assert_eq!(
            t.task_id,
            task_id(saga_id, &t.step_id, t.attempt, t.compensation).to_string()
        );
        assert_eq!(
            t.idempotency_key,
            idempotency_key(saga_id, &t.step_id, t.compensation)
        );
        for k in t.data.keys() {
            assert!(
                step.entitled.contains(k),
                "task for `{}` carries `{k}`, not entitled",
                t.step_id
            );
        }
        assert!(
            self.state.is_planned(&t.step_id) == Some(true),
            "task for unplanned step `{}`",
            t.step_id
        );
    }

    fn remember(list: &mut Vec<v1::Task>, t: &v1::Task) {
        if !list.iter().any(|x| x.task_id == t.task_id) {
            list.push(t.clone());
        }
    }

    fn execute(&mut self, c: &Command) {
        match c {
            Command::DispatchTask(t) => {
                self.check_task(t);
                Self::remember(&mut self.tasks, t);
            }
            Command::AwaitHuman(t) => {
                self.check_task(t);
                Self::remember(&mut self.humans, t);
            }
            Command::SettleOtherSagas {
                task,
                person_insz,
                cause_saga_id,
            } => {
                self.check_task(task);
                assert_eq!(person_insz, self.state.person_insz());
                assert_eq!(*cause_saga_id, self.state.saga_id());
                Self::remember(&mut self.settles, task);
                Self::remember(&mut self.tasks, task);
            }
            Command::ScheduleTimer(t) => {
                self.timers.insert(t.key(), t.clone());
            }
            Command::CancelTimer(t) => {
                self.timers.remove(&t.key());
            }
            Command::RaiseIncident { incident_id, .. } => {
                self.incidents.push(incident_id.to_string());
            }
        }
    }

    pub fn start(&mut self, facts: BTreeMap<String, String>) -> Result<Decision, EngineError> {
        self.input(Input::Start {
            now: self.now,
            facts,
        })
    }

    pub fn result(&mut self, result: v1::TaskResult) -> Result<Decision, EngineError> {
        self.results.push(result.clone());
        self.input(Input::TaskResult {
            result,
            now: self.now,
            jitter: 0.0,
        })
    }

    /// The task in flight for a step (forward or compensation).
    pub fn current(&self, step: &str) -> v1::Task {
        self.state
            .pending_work()
            .into_iter()
            .find_map(|c| match c {
                Command::DispatchTask(t)
                | Command::AwaitHuman(t)
                | Command::SettleOtherSagas { task: t, .. }
                    if t.step_id == step =>
                {
                    Some(t)
                }
                _ => None,
            })
            .unwrap_or_else(|| panic!("no task in flight for `{step}`: {:#?}", self.state))
    }

    pub fn succeed(&mut self, step: &str) -> Decision {
        let t = self.current(step);
        self.result(completed(&t)).unwrap()
    }

    pub fn fail(&mut self, step: &str, retryable: bool) -> Decision {
        let t = self.current(step);
        self.result(failed(&t, retryable)).unwrap()
    }

    /// Fires a timer at its due time (moving the clock there if it is later).
    pub fn fire(&mut self, timer: &Timer) -> Result<Decision, EngineError> {
        self.timers.remove(&timer.key());
        self.now = self.now.max(timer.due_at);
        self.input(Input::TimerFired {
            step_id: timer.step_id.clone(),
            kind: timer.kind,
            now: self.now,
            jitter: 0.0,
        })
    }

    pub fn timer(&self, step: &str, kind: TimerKind) -> Timer {
        self.timers
            .values()
            .find(|t| t.step_id == step && t.kind == kind)
            .cloned()
            .unwrap_or_else(|| panic!("no {kind} timer for `{step}`: {:?}", self.timers))
    }

    pub fn advance(&mut self, secs: i64) {
        self.now += TimeDelta::seconds(secs);
    }

    /// Rebuilds the state from the store, as after a crash, and re-arms timers and work.
    pub fn restart(&mut self) {
        let rebuilt = rebuild(self.definition.clone(), &self.life_event, &self.store).unwrap();
        assert_eq!(rebuilt, self.state, "replay must give the live state");
        self.state = rebuilt;
        self.timers = self
            .state
            .timers()
            .into_iter()
            .map(|t| (t.key(), t))
            .collect();
        for c in self.state.pending_work() {
            if let Command::DispatchTask(t) | Command::SettleOtherSagas { task: t, .. } = &c {
                assert!(
                    self.tasks.iter().any(|x| x.task_id == t.task_id),
                    "re-dispatch of a task never dispatched: {t:?}"
                );
            }
            self.execute(&c);
        }
    }

    /// Step ids of the events of one kind, in store order.
    pub fn steps_with(&self, event_kind: &str) -> Vec<String> {
        self.store
            .iter()
            .filter(|e| kind(e) == event_kind)
            .filter_map(|e| step_of(e).map(str::to_owned))
            .collect()
    }

    pub fn planned(&self) -> BTreeSet<String> {
        self.state
            .steps()
            .filter(|(_, p, _)| *p)
            .map(|(s, _, _)| s.id.clone())
            .collect()
    }
}
