//! Property tests: random definitions and the shipped ones, driven through random
//! interleavings of successes, retryable and permanent failures, duplicates, late results,
//! timers (on time and early), restarts (state rebuilt from the stored events), human
//! answers, parking, cancellation and deaths. Then every saga is driven to its end, and the
//! stored history must show:
//!
//! - the saga ended (Completed, Compensated, Cancelled or Failed) and its end fits its
//!   steps;
//! - each step succeeded at most once and was compensated at most once;
//! - compensations ran one at a time, in the reverse order of the successes, and nothing
//!   new started once compensation or cancellation began;
//! - no step had more attempts than its `max_attempts` (a fresh set per operator retry);
//! - every task carried only the fields its step is entitled to, for planned steps only;
//! - replaying the stored events gives the live state, at every point.

// Helpers outside #[test] functions unwrap too: a panic is a test failure here.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use common::*;
use levensloop_proto::v1;
use levensloop_proto::v1::saga_event::Event;
use levensloop_sagas::{
    Catalog, Command, Definition, EngineError, Input, LifeEventKind, SagaStatus, StepKind,
    StepPhase,
};
use proptest::prelude::*;

#[derive(Debug, Clone)]
struct GenStep {
    /// 0..=6 task, 7 wait, 8 human, 9 settle-other-sagas.
    kind: u8,
    needs: u32,
    required: bool,
    compensation: bool,
    max_attempts: u32,
    compensation_attempts: u32,
    condition: Option<(u8, bool)>,
    /// 0 none, 1 only_if_succeeded, 2 only_if_failed (on the first need).
    guard: u8,
    /// Human steps: 0 no deadline, 1 fail, 2 escalate.
    deadline: u8,
    entitled: u8,
}

fn gen_step() -> impl Strategy<Value = GenStep> {
    (
        (
            0u8..10,
            any::<u32>(),
            prop::bool::weighted(0.6),
            prop::bool::weighted(0.5),
        ),
        (
            1u32..=3,
            1u32..=3,
            prop::option::weighted(0.2, (0u8..3, any::<bool>())),
        ),
        (0u8..6, 0u8..3, any::<u8>()),
    )
        .prop_map(
            |(
                (kind, needs, required, compensation),
                (max_attempts, compensation_attempts, condition),
                (guard, deadline, entitled),
            )| GenStep {
                kind,
                needs,
                required,
                compensation,
                max_attempts,
                compensation_attempts,
                condition,
                guard: if guard < 3 { guard } else { 0 },
                deadline,
                entitled,
            },
        )
}

const FIELDS: [&str; 4] = [
    "deceased.insz",
    "date_of_death",
    "registered_address.municipality_nis_code",
    "act.act_reference",
];

fn toml_for(steps: &[GenStep]) -> String {
    let mut out = String::from(
        r#"
name = "prop"
version = 1
life_event = "death"
person = "deceased.insz"
municipality = "registered_address.municipality_nis_code"
facts = ["f0", "f1", "f2"]
[defaults]
timeout = "10s"
retry = { max_attempts = 3, backoff_base = "1s", backoff_max = "8s", jitter = 0.3 }
"#,
    );
    for (i, s) in steps.iter().enumerate() {
        out.push_str(&format!("\n[[steps]]\nid = \"s{i}\"\n"));
        let needs: Vec<String> = (0..i)
            .filter(|j| s.needs & (1 << (j % 32)) != 0 && (s.needs >> 20) % 3 != 0)
            .map(|j| format!("\"s{j}\""))
            .collect();
        if !needs.is_empty() {
            out.push_str(&format!("needs = [{}]\n", needs.join(", ")));
            match s.guard {
                1 => out.push_str(&format!("only_if_succeeded = [{}]\n", needs[0])),
                2 => out.push_str(&format!("only_if_failed = [{}]\n", needs[0])),
                _ => {}
            }
        }
        if let Some((fact, value)) = s.condition {
            out.push_str(&format!(
                "condition = {{ field = \"facts.f{fact}\", equals = {value} }}\n"
            ));
        }
        out.push_str(&format!("required = {}\n", s.required));
        let entitled: Vec<String> = FIELDS
            .iter()
            .enumerate()
            .filter(|(k, _)| s.entitled & (1 << k) != 0)
            .map(|(_, f)| format!("\"{f}\""))
            .collect();
        let entitled = format!("entitled = [{}]\n", entitled.join(", "));
        match s.kind {
            7 => {
                let wait = if s.entitled % 2 == 0 {
                    "{ duration = \"1h\" }"
                } else {
                    "{ duration = \"2 months\", from = \"date_of_death\" }"
                };
                out.push_str(&format!("kind = \"wait\"\nwait = {wait}\n"));
            }
            8 => {
                out.push_str(&format!("kind = \"human\"\nhandler = \"desk\"\n{entitled}"));
                match s.deadline {
                    1 => out.push_str("timeout = \"1d\"\non_timeout = \"fail\"\n"),
                    2 => out.push_str("timeout = \"1d\"\non_timeout = \"escalate\"\n"),
                    _ => {}
                }
            }
            9 => {
                out.push_str(&format!(
                    "kind = \"settle-other-sagas\"\n{entitled}retry = {{ max_attempts = {} }}\n",
                    s.max_attempts
                ));
            }
            _ => {
                out.push_str(&format!(
                    "handler = \"h{i}\"\n{entitled}retry = {{ max_attempts = {} }}\n",
                    s.max_attempts
                ));
                if s.compensation {
                    out.push_str(&format!(
                        "compensation = {{ handler = \"h{i}.undo\", retry = {{ max_attempts = {} }} }}\n",
                        s.compensation_attempts
                    ));
                }
            }
        }
    }
    out
}

#[derive(Debug, Clone)]
enum Action {
    /// Answer a task: one in flight (`current`) or any ever sent (late results).
    Deliver {
        current: bool,
        pick: usize,
        outcome: u8,
        secs: u8,
    },
    /// Send an earlier answer again.
    Redeliver(usize),
    Fire(usize),
    FireEarly(usize),
    Restart,
    Human {
        pick: usize,
        approve: bool,
    },
    Cancel,
    Died,
    Park,
    Resume,
    /// An operator skips, or retries, a step (refused when it does not fit).
    Skip(usize),
    Retry(usize),
}

fn action() -> impl Strategy<Value = Action> {
    prop_oneof![
        12 => (prop::bool::weighted(0.8), any::<usize>(), 0u8..10, 0u8..5).prop_map(
            |(current, pick, outcome, secs)| Action::Deliver { current, pick, outcome, secs }
        ),
        3 => any::<usize>().prop_map(Action::Redeliver),
        4 => any::<usize>().prop_map(Action::Fire),
        1 => any::<usize>().prop_map(Action::FireEarly),
        2 => Just(Action::Restart),
        2 => (any::<usize>(), prop::bool::weighted(0.8))
            .prop_map(|(pick, approve)| Action::Human { pick, approve }),
        1 => prop_oneof![Just(Action::Park), Just(Action::Resume)],
        1 => prop_oneof![
            any::<usize>().prop_map(Action::Skip),
            any::<usize>().prop_map(Action::Retry),
        ],
    ]
}

/// Random actions, and in about a third of the runs a cancel or a death somewhere among
/// them (more would cut most runs short).
fn actions(max: usize) -> impl Strategy<Value = Vec<Action>> {
    (
        prop::collection::vec(action(), 0..max),
        prop::option::weighted(0.35, (any::<usize>(), any::<bool>())),
    )
        .prop_map(|(mut actions, end)| {
            if let Some((at, died)) = end {
                let at = at % (actions.len() + 1);
                actions.insert(at, if died { Action::Died } else { Action::Cancel });
            }
            actions
        })
}

fn outcome(task: &v1::Task, outcome: u8) -> v1::TaskResult {
    match outcome {
        0..=5 => completed(task),
        6..=8 => failed(task, true),
        _ => failed(task, false),
    }
}

fn in_flight(w: &World) -> Vec<v1::Task> {
    w.state
        .pending_work()
        .into_iter()
        .filter_map(|c| match c {
            Command::DispatchTask(t) | Command::SettleOtherSagas { task: t, .. } => Some(t),
            _ => None,
        })
        .collect()
}

fn humans(w: &World) -> Vec<v1::Task> {
    w.state
        .pending_work()
        .into_iter()
        .filter_map(|c| match c {
            Command::AwaitHuman(t) => Some(t),
            _ => None,
        })
        .collect()
}

/// An operator's input may be refused (the saga ended, the step moved on): that is fine.
fn operator(w: &mut World, input: Input) {
    match w.input(input) {
        Ok(_)
        | Err(
            EngineError::Terminal { .. }
            | EngineError::NotNow { .. }
            | EngineError::NotAllowed { .. },
        ) => {}
        Err(e) => panic!("unexpected refusal: {e}"),
    }
}

fn act(w: &mut World, a: &Action) {
    match a {
        Action::Deliver {
            current,
            pick,
            outcome: o,
            secs,
        } => {
            w.advance(i64::from(*secs));
            let pool = if *current {
                in_flight(w)
            } else {
                w.tasks.clone()
            };
            if pool.is_empty() {
                return;
            }
            let task = pool[pick % pool.len()].clone();
            w.result(outcome(&task, *o)).unwrap();
        }
        Action::Redeliver(pick) => {
            if w.results.is_empty() {
                return;
            }
            let r = w.results[pick % w.results.len()].clone();
            w.result(r).unwrap();
        }
        Action::Fire(pick) => {
            if w.timers.is_empty() {
                return;
            }
            let t = w
                .timers
                .values()
                .nth(pick % w.timers.len())
                .cloned()
                .unwrap();
            w.fire(&t).unwrap();
        }
        Action::FireEarly(pick) => {
            if w.timers.is_empty() {
                return;
            }
            let t = w
                .timers
                .values()
                .nth(pick % w.timers.len())
                .cloned()
                .unwrap();
            let now = w.now;
            w.input(Input::TimerFired {
                step_id: t.step_id,
                kind: t.kind,
                now,
                jitter: 0.5,
            })
            .unwrap();
        }
        Action::Restart => w.restart(),
        Action::Human { pick, approve } => {
            let hs = humans(w);
            if hs.is_empty() {
                return;
            }
            let step_id = hs[pick % hs.len()].step_id.clone();
            let now = w.now;
            let input = if *approve {
                Input::CompleteHuman {
                    step_id,
                    actor: "clerk".into(),
                    note: String::new(),
                    now,
                }
            } else {
                Input::RejectHuman {
                    step_id,
                    actor: "clerk".into(),
                    reason: "no".into(),
                    now,
                }
            };
            operator(w, input);
        }
        Action::Cancel => {
            let now = w.now;
            operator(
                w,
                Input::Cancel {
                    actor: "op".into(),
                    reason: "test".into(),
                    now,
                },
            );
        }
        Action::Died => {
            let now = w.now;
            operator(
                w,
                Input::PersonDied {
                    cause_saga_id: uuid::Uuid::from_u128(7),
                    now,
                },
            );
        }
        Action::Park => {
            let now = w.now;
            operator(
                w,
                Input::Park {
                    reason: "test".into(),
                    cause_saga_id: None,
                    now,
                },
            );
        }
        Action::Resume => {
            let now = w.now;
            operator(
                w,
                Input::Resume {
                    actor: "op".into(),
                    reason: "test".into(),
                    now,
                },
            );
        }
        Action::Skip(pick) | Action::Retry(pick) => {
            let steps = w.definition.steps();
            let step_id = steps[pick % steps.len()].id.clone();
            let (actor, reason, now) = ("op".to_owned(), "test".to_owned(), w.now);
            let retry = matches!(a, Action::Retry(_));
            let input = if retry {
                Input::RetryStep {
                    step_id: step_id.clone(),
                    actor,
                    reason,
                    now,
                }
            } else {
                Input::SkipStep {
                    step_id: step_id.clone(),
                    actor,
                    reason,
                    now,
                }
            };
            match w.input(input) {
                Ok(_) => {
                    if retry {
                        *w.operator_retries.entry(step_id).or_default() += 1;
                    }
                }
                Err(
                    EngineError::Terminal { .. }
                    | EngineError::NotNow { .. }
                    | EngineError::NotAllowed { .. }
                    | EngineError::StepNotPlanned { .. },
                ) => {}
                Err(e) => panic!("unexpected refusal: {e}"),
            }
        }
    }
}

/// Drives the saga to its end: every task succeeds, every human step is completed, every
/// timer fires, a parked saga is resumed.
fn drain(w: &mut World) {
    for _ in 0..2_000 {
        if w.state.is_terminal() {
            return;
        }
        if let Some(t) = in_flight(w).first() {
            w.result(completed(t)).unwrap();
        } else if let Some(h) = humans(w).first() {
            let now = w.now;
            operator(
                w,
                Input::CompleteHuman {
                    step_id: h.step_id.clone(),
                    actor: "clerk".into(),
                    note: String::new(),
                    now,
                },
            );
        } else if w.state.status() == SagaStatus::Parked {
            let now = w.now;
            operator(
                w,
                Input::Resume {
                    actor: "op".into(),
                    reason: "drain".into(),
                    now,
                },
            );
        } else if let Some(t) = w.timers.values().min_by_key(|t| t.due_at).cloned() {
            w.fire(&t).unwrap();
        } else if let Some(t) = w.state.timers().into_iter().min_by_key(|t| t.due_at) {
            // A timer the world dropped (it fired while the saga was parked): re-arm it from
            // the state, as a restarted orchestrator would.
            w.fire(&t).unwrap();
        } else {
            break;
        }
    }
    panic!(
        "the saga did not end: {:?}\n{:#?}",
        summary(&w.store),
        w.state
    );
}

fn successes(w: &World) -> Vec<String> {
    w.store
        .iter()
        .filter(|e| {
            matches!(
                e.event,
                Some(
                    Event::StepSucceeded(_) | Event::HumanTaskCompleted(_) | Event::WaitElapsed(_)
                )
            )
        })
        .filter_map(|e| step_of(e).map(str::to_owned))
        .collect()
}

fn check_history(w: &World) -> Result<(), TestCaseError> {
    let def = &w.definition;
    let status = w.state.status();
    prop_assert!(status.is_terminal(), "not terminal: {status}");

    // Each step's success counts once; each compensation once.
    let succ = successes(w);
    let mut count: HashMap<&str, usize> = HashMap::new();
    for s in &succ {
        *count.entry(s).or_default() += 1;
    }
    prop_assert!(count.values().all(|&n| n == 1), "succeeded twice: {succ:?}");
    let compensated = w.steps_with("StepCompensated");
    let mut count: HashMap<&str, usize> = HashMap::new();
    for s in &compensated {
        *count.entry(s).or_default() += 1;
    }
    prop_assert!(
        count.values().all(|&n| n == 1),
        "compensated twice: {compensated:?}"
    );

    // At most max_attempts attempts per step (no operator retries in these runs).
    let scheduled = w.steps_with("StepScheduled");
    let comp_scheduled = w.steps_with("StepCompensationScheduled");
    for step in def.steps() {
        // An operator's retry may grant a fresh set of attempts.
        let grants = 1 + w.operator_retries.get(&step.id).copied().unwrap_or(0);
        let n = scheduled.iter().filter(|s| **s == step.id).count() as u32;
        prop_assert!(
            n <= step.retry.max_attempts * grants,
            "`{}` scheduled {n} times, max {} × {grants}",
            step.id,
            step.retry.max_attempts
        );
        let n = comp_scheduled.iter().filter(|s| **s == step.id).count() as u32;
        let max = step.compensation().map_or(0, |c| c.retry.max_attempts) * grants;
        prop_assert!(
            n <= max,
            "`{}` compensation scheduled {n} times, max {max}",
            step.id
        );
        if w.state.is_planned(&step.id) == Some(false) {
            prop_assert!(
                !w.store.iter().any(|e| step_of(e) == Some(step.id.as_str())),
                "unplanned step `{}` has events",
                step.id
            );
        }
    }

    // Compensation: the reverse of the order of completion, one at a time.
    let mut first_comp: Vec<String> = Vec::new();
    for s in &comp_scheduled {
        if !first_comp.contains(s) {
            first_comp.push(s.clone());
        }
    }
    let mut expected: Vec<String> = succ
        .iter()
        .filter(|s| first_comp.contains(s))
        .cloned()
        .collect();
    expected.reverse();
    prop_assert_eq!(&first_comp, &expected, "compensation order");
    prop_assert!(w.max_compensations_in_flight <= 1);

    // Nothing new starts once compensation or cancellation has begun.
    let unwinding_from = w.store.iter().position(|e| {
        matches!(
            e.event,
            Some(Event::StepCompensationScheduled(_) | Event::SagaCancelled(_))
        )
    });
    if let Some(from) = unwinding_from {
        let later = summary(&w.store[from..]);
        prop_assert!(
            !later
                .iter()
                .any(|e| e.starts_with("StepScheduled") || e.starts_with("WaitStarted")),
            "forward work after compensation began: {later:?}"
        );
    }

    // Time never goes back.
    let times: Vec<i64> = w
        .store
        .iter()
        .map(|e| e.occurred_at.as_ref().map_or(0, |t| t.seconds))
        .collect();
    prop_assert!(times.windows(2).all(|p| p[0] <= p[1]));

    // The end fits the steps.
    let phases: BTreeMap<&str, StepPhase> = w
        .state
        .steps()
        .filter(|(_, planned, _)| *planned)
        .map(|(s, _, st)| (s.id.as_str(), st.phase))
        .collect();
    let compensable_done_not_undone = w
        .state
        .steps()
        .any(|(s, _, st)| s.compensation().is_some() && st.phase == StepPhase::Succeeded);
    match status {
        SagaStatus::Completed => {
            for (s, _, st) in w.state.steps().filter(|(_, p, _)| *p) {
                let ok = match st.phase {
                    StepPhase::Succeeded | StepPhase::Skipped => true,
                    StepPhase::Failed => !s.required,
                    _ => false,
                };
                prop_assert!(ok, "completed with `{}` {:?}", s.id, st.phase);
            }
        }
        SagaStatus::Compensated => {
            let Some(Event::SagaCompensated(c)) = w.store.last().and_then(|e| e.event.as_ref())
            else {
                return Err(TestCaseError::fail(
                    "Compensated without SagaCompensated last",
                ));
            };
            let failed = def.step(&c.failed_step_id);
            prop_assert!(
                failed.is_some_and(|s| s.required),
                "failed_step_id {:?}",
                c.failed_step_id
            );
            prop_assert_eq!(
                phases.get(c.failed_step_id.as_str()),
                Some(&StepPhase::Failed)
            );
            prop_assert!(!compensable_done_not_undone, "left undone: {phases:?}");
        }
        SagaStatus::Cancelled => {
            // An operator's cancel compensates; a death's follows `on_death`.
            let stopped = w.store.iter().any(|e| {
                matches!(&e.event, Some(Event::SagaCancelled(c)) if !c.cause_saga_id.is_empty())
            }) && def.on_death() == levensloop_sagas::OnDeath::Stop;
            if stopped {
                prop_assert!(comp_scheduled.is_empty(), "a stop compensates nothing");
            } else {
                prop_assert!(!compensable_done_not_undone, "left undone: {phases:?}");
            }
        }
        SagaStatus::Failed => {
            prop_assert!(!w.state.incidents().is_empty());
            prop_assert!(phases.values().any(|p| *p == StepPhase::CompensationFailed));
        }
        other => return Err(TestCaseError::fail(format!("status {other}"))),
    }
    Ok(())
}

fn run(
    w: &mut World,
    facts_: BTreeMap<String, String>,
    actions: &[Action],
) -> Result<(), TestCaseError> {
    match w.start(facts_) {
        Ok(_) => {}
        Err(EngineError::NoSaga(_)) => return Ok(()),
        Err(e) => return Err(TestCaseError::fail(e.to_string())),
    }
    for a in actions {
        act(w, a);
        let rebuilt =
            levensloop_sagas::rebuild(w.definition.clone(), &w.life_event, &w.store).unwrap();
        prop_assert_eq!(&rebuilt, &w.state, "replay differs after {:?}", a);
    }
    drain(w);
    w.restart();
    check_history(w)
}

fn facts_from(bits: u8) -> BTreeMap<String, String> {
    (0..3)
        .map(|i| (format!("f{i}"), (bits & (1 << i) != 0).to_string()))
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn random_definitions_always_end_well(
        steps in prop::collection::vec(gen_step(), 1..8),
        facts_bits in any::<u8>(),
        actions in actions(80),
    ) {
        let text = toml_for(&steps);
        let def = Definition::from_toml_str(&text)
            .map_err(|e| TestCaseError::fail(format!("{e}\n{text}")))?;
        let mut w = World::new(
            Arc::new(def),
            death("dabs-p", "50010100123", "1950-01-01", "44021"),
        );
        run(&mut w, facts_from(facts_bits), &actions)?;
    }
}

fn builtin_event(kind: LifeEventKind, nis: &str, young: bool) -> v1::LifeEvent {
    let dob = if young { "2012-04-04" } else { "1944-04-04" };
    match kind {
        LifeEventKind::Birth => birth("b-p", nis),
        LifeEventKind::Death => death("d-p", "44040400123", dob, nis),
        LifeEventKind::ChangeOfAddress => moved(
            "m-p",
            "44040400123",
            "24062",
            nis,
            if young {
                v1::ChangeOfAddressReason::Move
            } else {
                v1::ChangeOfAddressReason::Unspecified
            },
        ),
        LifeEventKind::DrivingExamPassed => exam("e-p", "07010100123", v1::ExamType::Practical),
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    #[test]
    fn the_shipped_definitions_always_end_well(
        kind in prop::sample::select(LifeEventKind::ALL.to_vec()),
        nis in prop::sample::select(vec!["44021", "21004", "24062", "11002", "71072"]),
        young in any::<bool>(),
        fact_bits in any::<u8>(),
        actions in actions(120),
    ) {
        let catalog = Catalog::builtin().unwrap();
        let def = catalog.for_kind(kind).unwrap();
        let facts_: BTreeMap<String, String> = def
            .facts()
            .iter()
            .enumerate()
            .map(|(i, f)| (f.clone(), (fact_bits & (1 << i) != 0).to_string()))
            .collect();
        // Settle steps and human steps exist in these definitions: the world answers both.
        prop_assert!(def.steps().iter().all(|s| !matches!(s.kind, StepKind::Wait(_)) || s.handler().is_none()));
        let mut w = World::new(def, builtin_event(kind, nis, young));
        run(&mut w, facts_, &actions)?;
    }
}
