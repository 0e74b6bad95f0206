//! The engine's behaviours, one at a time.

// Helpers outside #[test] functions unwrap too: a panic is a test failure here.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeSet;
use std::sync::Arc;

use chrono::{TimeDelta, TimeZone, Utc};
use common::*;
use levensloop_proto::v1;
use levensloop_proto::v1::saga_event::Event;
use levensloop_sagas::{
    Catalog, Command, Definition, DefinitionError, EngineError, Ignored, Input, NoSaga, SagaState,
    SagaStatus, StepPhase, TimerKind, decide, rebuild,
};

const HEAD: &str = r#"
name = "test"
version = 1
life_event = "death"
person = "deceased.insz"
municipality = "registered_address.municipality_nis_code"
facts = ["flag"]
[defaults]
timeout = "10s"
retry = { max_attempts = 3, backoff_base = "1s", backoff_max = "4s", jitter = 0.5 }
[windows]
freeze = [{ from = "2026-03-01", until = "2026-04-01" }]
"#;

fn world(steps: &str) -> World {
    World::from_toml(
        &format!("{HEAD}\n{steps}"),
        death("dabs-1", "50010100123", "1950-01-01", "44021"),
    )
}

fn started(steps: &str) -> World {
    let mut w = world(steps);
    w.start(facts(&[])).unwrap();
    w
}

fn dispatched(d: &levensloop_sagas::Decision) -> Vec<v1::Task> {
    d.commands
        .iter()
        .filter_map(|c| match c {
            Command::DispatchTask(t) => Some(t.clone()),
            _ => None,
        })
        .collect()
}

#[test]
fn start_plans_by_condition_fans_out_and_minimises_data() {
    let mut w = world(
        r#"
[[steps]]
id = "a"
handler = "h.a"
entitled = ["deceased.insz"]
[[steps]]
id = "b"
handler = "h.b"
entitled = ["date_of_death", "registered_address.municipality_nis_code"]
[[steps]]
id = "c"
handler = "h.c"
condition = { field = "facts.flag", equals = true }
[[steps]]
id = "d"
handler = "h.d"
needs = ["a", "b", "c"]
"#,
    );
    let d = w.start(facts(&[("flag", "false")])).unwrap();
    assert_eq!(
        summary(&d.events),
        ["SagaStarted", "StepScheduled(a)", "StepScheduled(b)"]
    );
    let Some(Event::SagaStarted(s)) = &d.events[0].event else {
        panic!()
    };
    assert_eq!(s.planned_steps, ["a", "b", "d"]);
    assert_eq!(s.definition, "test");
    assert_eq!(s.definition_version, 1);
    assert_eq!(s.person_insz, "50010100123");
    assert_eq!(s.municipality_nis_code, "44021");
    assert_eq!(s.life_event_type, "be.vlaanderen.levensloop.death.v1");
    assert_eq!(d.events[0].causation_id, "dabs-1");

    let tasks = dispatched(&d);
    assert_eq!(tasks.len(), 2, "both roots at once");
    let a = &tasks[0];
    assert_eq!(a.step_id, "a");
    assert_eq!(a.handler, "h.a");
    assert_eq!(a.attempt, 1);
    assert!(!a.compensation);
    assert_eq!(a.idempotency_key, format!("{}/a", w.state.saga_id()));
    assert_eq!(a.data.keys().collect::<Vec<_>>(), ["deceased.insz"]);
    assert_eq!(a.data["deceased.insz"], "50010100123");
    let b_keys: BTreeSet<_> = tasks[1].data.keys().cloned().collect();
    assert_eq!(
        b_keys,
        BTreeSet::from([
            "date_of_death".to_owned(),
            "registered_address.municipality_nis_code".to_owned()
        ])
    );
    // Deadlines are durable timers.
    let deadline = t0() + TimeDelta::seconds(10);
    assert_eq!(
        a.deadline,
        Some(levensloop_sagas::time::to_timestamp(deadline))
    );
    assert_eq!(w.timer("a", TimerKind::Timeout).due_at, deadline);
    assert_eq!(w.timers.len(), 2);

    w.advance(1);
    let d = w.succeed("a");
    assert_eq!(summary(&d.events), ["StepSucceeded(a)"]);
    assert!(
        d.commands
            .iter()
            .any(|c| matches!(c, Command::CancelTimer(t) if t.step_id == "a")),
        "the timeout is cancelled: {:?}",
        d.commands
    );
    let d = w.succeed("b");
    assert_eq!(
        summary(&d.events),
        ["StepSucceeded(b)", "StepScheduled(d)"],
        "c is not planned, so d is ready"
    );
    let d_task = w.current("d");
    let d = w.succeed("d");
    assert_eq!(summary(&d.events), ["StepSucceeded(d)", "SagaCompleted"]);
    assert_eq!(w.state.status(), SagaStatus::Completed);
    assert!(w.state.timers().is_empty() && w.state.pending_work().is_empty());
    assert!(w.steps_with("StepScheduled").iter().all(|s| s != "c"));

    // Duplicates and late results change nothing.
    let d = w.result(completed(&d_task)).unwrap();
    assert_eq!(d.ignored, Some(Ignored::Terminal));
    assert!(d.events.is_empty());
}

#[test]
fn duplicate_results_are_counted_once() {
    let mut w =
        started("[[steps]]\nid = \"a\"\nhandler = \"h\"\n[[steps]]\nid = \"b\"\nhandler = \"h\"");
    let a = w.current("a");
    assert_eq!(
        summary(&w.result(completed(&a)).unwrap().events),
        ["StepSucceeded(a)"]
    );
    for _ in 0..3 {
        let d = w.result(completed(&a)).unwrap();
        assert_eq!(d.ignored, Some(Ignored::StaleResult));
        assert!(d.events.is_empty() && d.commands.is_empty());
    }
    // A failure for a step that already succeeded is late too.
    assert_eq!(
        w.result(failed(&a, false)).unwrap().ignored,
        Some(Ignored::StaleResult)
    );
    assert_eq!(w.steps_with("StepSucceeded"), ["a"]);
}

#[test]
fn retries_back_off_exponentially_and_stop_at_max_attempts() {
    let mut w = started("[[steps]]\nid = \"a\"\nhandler = \"h\"");
    let first = w.current("a");
    let d = w.fail("a", true);
    assert_eq!(
        summary(&d.events),
        ["StepFailed(a)", "StepRetryScheduled(a)"]
    );
    let retry = w.timer("a", TimerKind::Retry);
    assert_eq!(retry.due_at, t0() + TimeDelta::seconds(1));
    assert_eq!(retry.attempt, 2);

    // A timer that fires early (or twice) does nothing.
    let d = w
        .input(Input::TimerFired {
            step_id: "a".into(),
            kind: TimerKind::Retry,
            now: w.now,
            jitter: 0.0,
        })
        .unwrap();
    assert_eq!(d.ignored, Some(Ignored::NothingDue));

    let d = w.fire(&retry).unwrap();
    assert_eq!(summary(&d.events), ["StepScheduled(a)"]);
    let second = w.current("a");
    assert_eq!(second.attempt, 2);
    assert_ne!(second.task_id, first.task_id);
    assert_eq!(
        second.idempotency_key, first.idempotency_key,
        "same effect key"
    );
    // The first attempt's late answer is ignored.
    assert_eq!(
        w.result(completed(&first)).unwrap().ignored,
        Some(Ignored::StaleResult)
    );

    w.fail("a", true);
    let retry = w.timer("a", TimerKind::Retry);
    assert_eq!(retry.due_at, w.now + TimeDelta::seconds(2), "doubled");
    w.fire(&retry).unwrap();
    let d = w.fail("a", true);
    assert_eq!(
        summary(&d.events),
        ["StepFailed(a)", "SagaCompensated"],
        "third attempt of three: failed for good, nothing to undo"
    );
    let Some(Event::SagaCompensated(c)) = &d.events[1].event else {
        panic!()
    };
    assert_eq!(c.failed_step_id, "a");
    assert_eq!(w.state.status(), SagaStatus::Compensated);
    assert_eq!(w.state.step("a").unwrap().attempt, 3);
}

#[test]
fn jitter_shortens_the_backoff_by_at_most_its_fraction() {
    let w = started("[[steps]]\nid = \"a\"\nhandler = \"h\"");
    let t = w.current("a");
    let d = decide(
        &w.state,
        Input::TaskResult {
            result: failed(&t, true),
            now: w.now,
            jitter: 0.5,
        },
    )
    .unwrap();
    let Some(Event::StepRetryScheduled(r)) = &d.events[1].event else {
        panic!()
    };
    // base 1s, jitter fraction 0.5, draw 0.5: 1s × (1 − 0.25).
    assert_eq!(
        r.due_at,
        Some(levensloop_sagas::time::to_timestamp(
            w.now + TimeDelta::milliseconds(750)
        ))
    );
}

#[test]
fn a_timeout_is_a_failed_attempt() {
    let mut w = started("[[steps]]\nid = \"a\"\nhandler = \"h\"");
    let first = w.current("a");
    let timeout = w.timer("a", TimerKind::Timeout);
    let d = w.fire(&timeout).unwrap();
    assert_eq!(
        summary(&d.events),
        ["StepTimedOut(a)", "StepRetryScheduled(a)"]
    );
    assert_eq!(
        w.result(completed(&first)).unwrap().ignored,
        Some(Ignored::StaleResult),
        "the timed-out attempt's answer comes too late"
    );
    // The timeout timer firing again changes nothing.
    assert_eq!(w.fire(&timeout).unwrap().ignored, Some(Ignored::NothingDue));
    let retry = w.timer("a", TimerKind::Retry);
    w.fire(&retry).unwrap();
    let d = w.succeed("a");
    assert_eq!(summary(&d.events), ["StepSucceeded(a)", "SagaCompleted"]);
}

#[test]
fn an_optional_failure_is_not_fatal_and_its_dependents_still_run() {
    let mut w = started(
        r#"
[[steps]]
id = "a"
handler = "h"
required = false
retry = { max_attempts = 1 }
[[steps]]
id = "b"
handler = "h"
needs = ["a"]
[[steps]]
id = "c"
handler = "h"
needs = ["a"]
only_if_succeeded = ["a"]
[[steps]]
id = "d"
handler = "h"
needs = ["a"]
only_if_failed = ["a"]
"#,
    );
    let d = w.fail("a", true);
    assert_eq!(
        summary(&d.events),
        [
            "StepFailed(a)",
            "StepScheduled(b)",
            "StepSkipped(c)",
            "StepScheduled(d)"
        ]
    );
    let Some(Event::StepSkipped(s)) = &d.events[2].event else {
        panic!()
    };
    assert_eq!(s.actor, "engine");
    w.succeed("b");
    let d = w.succeed("d");
    assert_eq!(summary(&d.events), ["StepSucceeded(d)", "SagaCompleted"]);
}

const THREE_AND_A_FINAL: &str = r#"
[[steps]]
id = "a"
handler = "h.a"
compensation = "h.a.undo"
[[steps]]
id = "b"
handler = "h.b"
compensation = "h.b.undo"
[[steps]]
id = "c"
handler = "h.c"
compensation = "h.c.undo"
[[steps]]
id = "n"
handler = "h.n"
[[steps]]
id = "d"
handler = "h.d"
needs = ["a", "b", "c", "n"]
retry = { max_attempts = 1 }
"#;

#[test]
fn a_required_failure_compensates_in_reverse_order_of_completion_one_at_a_time() {
    let mut w = started(THREE_AND_A_FINAL);
    w.succeed("b");
    w.succeed("c");
    w.succeed("n");
    w.succeed("a");
    let d = w.fail("d", false);
    assert_eq!(
        summary(&d.events),
        ["StepFailed(d)", "StepCompensationScheduled(a)"]
    );
    let comp = dispatched(&d).remove(0);
    assert!(comp.compensation);
    assert_eq!(comp.handler, "h.a.undo");
    assert_eq!(
        comp.idempotency_key,
        format!("{}/a/compensate", w.state.saga_id())
    );
    assert_eq!(w.state.status(), SagaStatus::Compensating);
    let d = w.succeed("a");
    assert_eq!(
        summary(&d.events),
        ["StepCompensated(a)", "StepCompensationScheduled(c)"]
    );
    w.succeed("c");
    let d = w.succeed("b");
    assert_eq!(
        summary(&d.events),
        ["StepCompensated(b)", "SagaCompensated"]
    );
    assert_eq!(w.steps_with("StepCompensated"), ["a", "c", "b"]);
    assert_eq!(w.state.status(), SagaStatus::Compensated);
    assert_eq!(w.max_compensations_in_flight, 1);
    assert_eq!(
        w.state.step("n").unwrap().phase,
        StepPhase::Succeeded,
        "no compensation"
    );
}

#[test]
fn compensation_waits_for_compensable_work_in_flight() {
    let mut w = started(
        r#"
[[steps]]
id = "a"
handler = "h.a"
compensation = "h.a.undo"
[[steps]]
id = "b"
handler = "h.b"
compensation = "h.b.undo"
[[steps]]
id = "c"
handler = "h.c"
retry = { max_attempts = 1 }
[[steps]]
id = "slow"
handler = "h.slow"
required = false
"#,
    );
    w.succeed("a");
    let d = w.fail("c", false);
    assert_eq!(
        summary(&d.events),
        ["StepFailed(c)"],
        "b is in flight and may still succeed: wait for it"
    );
    let d = w.fail("b", true);
    assert_eq!(
        summary(&d.events),
        ["StepFailed(b)", "StepCompensationScheduled(a)"],
        "no retries while compensating; b never happened"
    );
    w.succeed("a");
    assert_eq!(w.state.status(), SagaStatus::Compensated);
    // The step without a compensation that was still in flight is not waited for, and its
    // late answer is ignored.
    let slow = w
        .tasks
        .iter()
        .find(|t| t.step_id == "slow")
        .unwrap()
        .clone();
    assert_eq!(
        w.result(completed(&slow)).unwrap().ignored,
        Some(Ignored::Terminal)
    );

    // And when the work in flight succeeds, it is undone first: it finished last.
    let mut w = started(
        r#"
[[steps]]
id = "a"
handler = "h.a"
compensation = "h.a.undo"
[[steps]]
id = "b"
handler = "h.b"
compensation = "h.b.undo"
[[steps]]
id = "c"
handler = "h.c"
retry = { max_attempts = 1 }
"#,
    );
    w.succeed("a");
    w.fail("c", false);
    let d = w.succeed("b");
    assert_eq!(
        summary(&d.events),
        ["StepSucceeded(b)", "StepCompensationScheduled(b)"]
    );
    w.succeed("b");
    w.succeed("a");
    assert_eq!(w.steps_with("StepCompensated"), ["b", "a"]);
}

#[test]
fn a_compensation_that_fails_for_good_raises_an_incident_and_fails_the_saga() {
    let mut w = started(
        r#"
[[steps]]
id = "a"
handler = "h.a"
compensation = { handler = "h.a.undo", retry = { max_attempts = 3 } }
[[steps]]
id = "b"
handler = "h.b"
needs = ["a"]
retry = { max_attempts = 1 }
"#,
    );
    w.succeed("a");
    w.fail("b", false);
    let d = w.fail("a", true);
    assert_eq!(
        summary(&d.events),
        ["CompensationFailed(a)", "StepRetryScheduled(a)"]
    );
    let retry = w.timer("a", TimerKind::CompensationRetry);
    assert_eq!(
        summary(&w.fire(&retry).unwrap().events),
        ["StepCompensationScheduled(a)"]
    );
    assert_eq!(w.current("a").attempt, 2);
    // A compensation can time out too.
    let timeout = w.timer("a", TimerKind::CompensationTimeout);
    assert_eq!(
        summary(&w.fire(&timeout).unwrap().events),
        ["StepTimedOut(a)", "StepRetryScheduled(a)"]
    );
    let retry = w.timer("a", TimerKind::CompensationRetry);
    w.fire(&retry).unwrap();
    let d = w.fail("a", true);
    assert_eq!(
        summary(&d.events),
        ["CompensationFailed(a)", "IncidentRaised(a)", "SagaFailed"]
    );
    assert!(
        d.commands
            .iter()
            .any(|c| matches!(c, Command::RaiseIncident { step_id, .. } if step_id == "a"))
    );
    assert_eq!(w.state.status(), SagaStatus::Failed);
    assert_eq!(
        w.state.step("a").unwrap().phase,
        StepPhase::CompensationFailed
    );
    assert_eq!(w.incidents.len(), 1);
    assert!(matches!(
        w.input(Input::RetryStep {
            step_id: "a".into(),
            actor: "op".into(),
            reason: "fixed".into(),
            now: w.now
        }),
        Err(EngineError::Terminal {
            status: SagaStatus::Failed
        })
    ));
}

#[test]
fn an_operator_cancel_withdraws_waits_compensates_and_ends_cancelled() {
    let mut w = started(
        r#"
[[steps]]
id = "a"
handler = "h.a"
compensation = "h.a.undo"
[[steps]]
id = "w"
kind = "wait"
needs = ["a"]
wait = { duration = "1h" }
[[steps]]
id = "b"
handler = "h.b"
needs = ["w"]
"#,
    );
    w.succeed("a");
    assert!(w.timers.values().any(|t| t.kind == TimerKind::Wait));
    let d = w
        .input(Input::Cancel {
            actor: "clerk-17".into(),
            reason: "registered in error".into(),
            now: w.now,
        })
        .unwrap();
    assert_eq!(
        summary(&d.events),
        [
            "OperatorActed",
            "SagaCancelled",
            "StepSkipped(w)",
            "StepCompensationScheduled(a)"
        ]
    );
    assert_eq!(d.events[0].causation_id, "operator:clerk-17");
    let Some(Event::OperatorActed(acted)) = &d.events[0].event else {
        panic!("the audit record comes first")
    };
    assert_eq!(
        (
            acted.actor.as_str(),
            acted.action.as_str(),
            acted.step_id.as_str(),
            acted.reason.as_str()
        ),
        ("clerk-17", "cancel", "", "registered in error")
    );
    assert!(
        d.commands
            .iter()
            .any(|c| matches!(c, Command::CancelTimer(t) if t.kind == TimerKind::Wait))
    );
    assert_eq!(w.state.status(), SagaStatus::Cancelling);
    let d = w.succeed("a");
    assert_eq!(
        summary(&d.events),
        ["StepCompensated(a)", "SagaCompensated"]
    );
    let Some(Event::SagaCompensated(c)) = &d.events[1].event else {
        panic!()
    };
    assert_eq!(c.failed_step_id, "", "a cancellation, not a failure");
    assert_eq!(w.state.status(), SagaStatus::Cancelled);
    let again = w.input(Input::Cancel {
        actor: "clerk-17".into(),
        reason: "again".into(),
        now: w.now,
    });
    assert_eq!(again.unwrap().ignored, Some(Ignored::AlreadyCancelled));
}

#[test]
fn a_cancel_with_nothing_to_undo_ends_at_once() {
    let mut w = started("[[steps]]\nid = \"a\"\nhandler = \"h\"");
    let d = w
        .input(Input::Cancel {
            actor: "op".into(),
            reason: "duplicate registration".into(),
            now: w.now,
        })
        .unwrap();
    assert_eq!(summary(&d.events), ["OperatorActed", "SagaCancelled"]);
    assert!(
        d.commands
            .iter()
            .any(|c| matches!(c, Command::CancelTimer(t) if t.step_id == "a"))
    );
    assert_eq!(w.state.status(), SagaStatus::Cancelled);
}

#[test]
fn a_completed_saga_can_be_reversed_by_cancelling_it() {
    let mut w = started(THREE_AND_A_FINAL);
    for s in ["a", "b", "c", "n", "d"] {
        w.succeed(s);
    }
    assert_eq!(w.state.status(), SagaStatus::Completed);
    let d = w
        .input(Input::Cancel {
            actor: "op".into(),
            reason: "death registered by mistake".into(),
            now: w.now,
        })
        .unwrap();
    assert_eq!(
        summary(&d.events),
        [
            "OperatorActed",
            "SagaCancelled",
            "StepCompensationScheduled(c)"
        ]
    );
    w.succeed("c");
    w.succeed("b");
    w.succeed("a");
    assert_eq!(w.state.status(), SagaStatus::Cancelled);
    assert_eq!(w.steps_with("StepCompensated"), ["c", "b", "a"]);
}

#[test]
fn waits_for_a_duration_a_date_or_the_end_of_a_window() {
    let mut w = started(
        r#"
[[steps]]
id = "four-months"
kind = "wait"
wait = { duration = "4 months", from = "date_of_death" }
[[steps]]
id = "after"
handler = "h"
needs = ["four-months"]
[[steps]]
id = "date-passed"
kind = "wait"
wait = { until = "date_of_death" }
[[steps]]
id = "freeze"
kind = "wait"
wait = { until_end_of = "freeze" }
"#,
    );
    let events = summary(&w.store);
    assert!(
        events.contains(&"WaitElapsed(date-passed)".to_owned()),
        "{events:?}"
    );
    let four = w.timer("four-months", TimerKind::Wait);
    assert_eq!(
        four.due_at,
        Utc.with_ymd_and_hms(2026, 7, 1, 0, 0, 0).unwrap()
    );
    let freeze = w.timer("freeze", TimerKind::Wait);
    assert_eq!(
        freeze.due_at,
        Utc.with_ymd_and_hms(2026, 4, 1, 0, 0, 0).unwrap()
    );
    assert_eq!(
        w.state.step("four-months").unwrap().phase,
        StepPhase::Waiting { until: four.due_at }
    );

    assert_eq!(
        summary(&w.fire(&freeze).unwrap().events),
        ["WaitElapsed(freeze)"]
    );
    // Months later, after a restart: the wait fires once.
    w.restart();
    let d = w.fire(&four).unwrap();
    assert_eq!(
        summary(&d.events),
        ["WaitElapsed(four-months)", "StepScheduled(after)"]
    );
    assert_eq!(w.fire(&four).unwrap().ignored, Some(Ignored::NothingDue));
    w.succeed("after");
    assert_eq!(w.state.status(), SagaStatus::Completed);

    // Outside the window there is nothing to wait for.
    let mut w =
        world("[[steps]]\nid = \"freeze\"\nkind = \"wait\"\nwait = { until_end_of = \"freeze\" }");
    w.now = Utc.with_ymd_and_hms(2026, 5, 1, 0, 0, 0).unwrap();
    let d = w.start(facts(&[])).unwrap();
    assert_eq!(
        summary(&d.events),
        [
            "SagaStarted",
            "WaitStarted(freeze)",
            "WaitElapsed(freeze)",
            "SagaCompleted"
        ]
    );
}

const HUMAN: &str = r#"
[[steps]]
id = "hand-over"
kind = "human"
handler = "desk"
timeout = "3 months"
required = false
entitled = ["deceased.insz"]
[[steps]]
id = "retire"
handler = "h"
needs = ["hand-over"]
only_if_succeeded = ["hand-over"]
[[steps]]
id = "destroy"
handler = "h"
needs = ["hand-over"]
only_if_failed = ["hand-over"]
"#;

#[test]
fn a_human_step_is_completed_by_a_person() {
    let mut w = world(HUMAN);
    let d = w.start(facts(&[])).unwrap();
    let human = d
        .commands
        .iter()
        .find_map(|c| match c {
            Command::AwaitHuman(t) => Some(t.clone()),
            _ => None,
        })
        .expect("on the desk's work list");
    assert_eq!(human.handler, "desk");
    assert_eq!(human.data.keys().collect::<Vec<_>>(), ["deceased.insz"]);
    assert_eq!(
        w.timer("hand-over", TimerKind::Timeout).due_at,
        Utc.with_ymd_and_hms(2026, 6, 2, 9, 0, 0).unwrap()
    );
    let complete = Input::CompleteHuman {
        step_id: "hand-over".into(),
        actor: "clerk-3".into(),
        note: "provisional licence handed in".into(),
        now: w.now,
    };
    let d = w.input(complete.clone()).unwrap();
    assert_eq!(
        summary(&d.events),
        [
            "OperatorActed",
            "HumanTaskCompleted(hand-over)",
            "StepScheduled(retire)",
            "StepSkipped(destroy)"
        ]
    );
    assert_eq!(
        w.input(complete).unwrap().ignored,
        Some(Ignored::AlreadyDone)
    );
    assert!(matches!(
        w.input(Input::CompleteHuman {
            step_id: "retire".into(),
            actor: "x".into(),
            note: String::new(),
            now: w.now
        }),
        Err(EngineError::NotAllowed { .. })
    ));
}

#[test]
fn a_human_step_past_its_deadline_fails_or_escalates() {
    let mut w = started(HUMAN);
    let deadline = w.timer("hand-over", TimerKind::Timeout);
    let d = w.fire(&deadline).unwrap();
    assert_eq!(
        summary(&d.events),
        [
            "StepTimedOut(hand-over)",
            "StepSkipped(retire)",
            "StepScheduled(destroy)"
        ],
        "a card not collected in time is destroyed"
    );

    let mut w = started(
        r#"
[[steps]]
id = "police-check"
kind = "human"
handler = "desk"
timeout = "30 days"
on_timeout = "escalate"
"#,
    );
    let deadline = w.timer("police-check", TimerKind::Timeout);
    let d = w.fire(&deadline).unwrap();
    assert_eq!(summary(&d.events), ["IncidentRaised(police-check)"]);
    assert!(w.state.timers().is_empty(), "escalated once");
    assert_eq!(
        w.fire(&deadline).unwrap().ignored,
        Some(Ignored::NothingDue)
    );
    w.restart();
    assert!(w.timers.is_empty(), "still escalated after a restart");
    assert!(matches!(w.state.pending_work()[0], Command::AwaitHuman(_)));
    let d = w
        .input(Input::CompleteHuman {
            step_id: "police-check".into(),
            actor: "agent".into(),
            note: String::new(),
            now: w.now,
        })
        .unwrap();
    assert_eq!(
        summary(&d.events),
        [
            "OperatorActed",
            "HumanTaskCompleted(police-check)",
            "SagaCompleted"
        ]
    );
}

#[test]
fn parking_holds_new_work_and_resume_catches_up() {
    let mut w = started(
        r#"
[[steps]]
id = "a"
handler = "h"
[[steps]]
id = "r"
handler = "h"
[[steps]]
id = "b"
handler = "h"
needs = ["a"]
"#,
    );
    w.fail("r", true);
    let park = Input::Park {
        reason: "investigation".into(),
        cause_saga_id: None,
        now: w.now,
    };
    assert_eq!(
        summary(&w.input(park.clone()).unwrap().events),
        ["SagaParked"]
    );
    assert_eq!(w.input(park).unwrap().ignored, Some(Ignored::AlreadyParked));
    assert_eq!(w.state.status(), SagaStatus::Parked);
    let d = w.succeed("a");
    assert_eq!(
        summary(&d.events),
        ["StepSucceeded(a)"],
        "recorded; b waits"
    );
    let retry = w.timer("r", TimerKind::Retry);
    assert_eq!(w.fire(&retry).unwrap().ignored, Some(Ignored::NothingDue));
    let d = w
        .input(Input::Resume {
            actor: "op".into(),
            reason: "cleared".into(),
            now: w.now,
        })
        .unwrap();
    assert_eq!(
        summary(&d.events),
        [
            "OperatorActed",
            "SagaResumed",
            "StepScheduled(r)",
            "StepScheduled(b)"
        ]
    );
    w.succeed("r");
    w.succeed("b");
    assert_eq!(w.state.status(), SagaStatus::Completed);
}

#[test]
fn operators_retry_and_skip_steps() {
    let mut w = started(
        r#"
[[steps]]
id = "opt"
handler = "h"
required = false
retry = { max_attempts = 1 }
[[steps]]
id = "a"
handler = "h"
[[steps]]
id = "b"
handler = "h"
needs = ["a"]
[[steps]]
id = "c"
handler = "h"
needs = ["b"]
"#,
    );
    w.fail("opt", true);
    assert_eq!(w.state.step("opt").unwrap().phase, StepPhase::Failed);
    let retry = Input::RetryStep {
        step_id: "opt".into(),
        actor: "op".into(),
        reason: "target fixed".into(),
        now: w.now,
    };
    let d = w.input(retry.clone()).unwrap();
    assert_eq!(
        summary(&d.events),
        [
            "OperatorActed",
            "StepRetryScheduled(opt)",
            "StepScheduled(opt)"
        ]
    );
    assert_eq!(
        w.current("opt").attempt,
        2,
        "a fresh attempt after they ran out"
    );
    let d = w.fail("opt", true);
    assert_eq!(
        summary(&d.events),
        ["StepFailed(opt)"],
        "and only one: max_attempts = 1"
    );

    let d = w
        .input(Input::SkipStep {
            step_id: "b".into(),
            actor: "op".into(),
            reason: "done by hand".into(),
            now: w.now,
        })
        .unwrap();
    assert_eq!(
        summary(&d.events),
        ["OperatorActed", "StepSkipped(b)", "StepScheduled(c)"],
        "a skipped step counts as done"
    );
    let d = w.succeed("a");
    assert_eq!(summary(&d.events), ["StepSucceeded(a)"]);
    assert!(matches!(
        w.input(Input::RetryStep {
            step_id: "a".into(),
            actor: "op".into(),
            reason: String::new(),
            now: w.now
        }),
        Err(EngineError::NotAllowed {
            action: "retry",
            ..
        })
    ));
    assert!(matches!(
        w.input(Input::SkipStep {
            step_id: "zzz".into(),
            actor: "op".into(),
            reason: String::new(),
            now: w.now
        }),
        Err(EngineError::UnknownStep { .. })
    ));
    // The operator's retry of a step stuck in flight starts a new attempt now.
    let stuck = w.current("c");
    let d = w
        .input(Input::RetryStep {
            step_id: "c".into(),
            actor: "op".into(),
            reason: "lost".into(),
            now: w.now,
        })
        .unwrap();
    assert_eq!(
        summary(&d.events),
        ["OperatorActed", "StepRetryScheduled(c)", "StepScheduled(c)"]
    );
    assert_eq!(
        w.result(completed(&stuck)).unwrap().ignored,
        Some(Ignored::StaleResult)
    );
    let d = w.succeed("c");
    assert_eq!(
        summary(&d.events),
        ["StepSucceeded(c)", "SagaCompleted"],
        "the optional step failed, which does not stop the saga"
    );
    assert!(matches!(
        w.input(Input::SkipStep {
            step_id: "opt".into(),
            actor: "op".into(),
            reason: "not needed".into(),
            now: w.now,
        }),
        Err(EngineError::Terminal { .. })
    ));
}

#[test]
fn an_operator_can_skip_a_compensation_that_cannot_be_done() {
    let mut w = started(THREE_AND_A_FINAL);
    for s in ["a", "b", "c", "n"] {
        w.succeed(s);
    }
    w.fail("d", false);
    let d = w
        .input(Input::SkipStep {
            step_id: "c".into(),
            actor: "op".into(),
            reason: "account already closed by hand".into(),
            now: w.now,
        })
        .unwrap();
    assert_eq!(
        summary(&d.events),
        [
            "OperatorActed",
            "StepSkipped(c)",
            "StepCompensationScheduled(b)"
        ]
    );
    assert_eq!(
        w.state.step("c").unwrap().phase,
        StepPhase::CompensationSkipped
    );
    w.succeed("b");
    w.succeed("a");
    assert_eq!(w.state.status(), SagaStatus::Compensated);
}

#[test]
fn results_that_do_not_fit_are_refused() {
    let mut w = started("[[steps]]\nid = \"a\"\nhandler = \"h\"");
    let t = w.current("a");
    let mut r = completed(&t);
    r.idempotency_key = "someone-else/a".into();
    assert!(matches!(w.result(r), Err(EngineError::BadResult { .. })));
    let mut r = completed(&t);
    r.task_id = "not-a-uuid".into();
    assert!(matches!(w.result(r), Err(EngineError::BadResult { .. })));
    let mut r = completed(&t);
    r.outcome = None;
    assert!(matches!(w.result(r), Err(EngineError::BadResult { .. })));
    let mut r = completed(&t);
    r.attempt = 7;
    assert!(matches!(w.result(r), Err(EngineError::BadResult { .. })));
    // Empty key and attempt are accepted (a minimal webhook answer).
    let mut r = completed(&t);
    r.idempotency_key.clear();
    r.attempt = 0;
    assert!(w.result(r).unwrap().ignored.is_none());
}

#[test]
fn inputs_before_the_start_and_wrong_events_are_refused() {
    let w = world("[[steps]]\nid = \"a\"\nhandler = \"h\"");
    assert_eq!(
        decide(
            &w.state,
            Input::Resume {
                actor: "x".into(),
                reason: String::new(),
                now: t0()
            }
        ),
        Err(EngineError::NotStarted)
    );
    let mut w = started("[[steps]]\nid = \"a\"\nhandler = \"h\"");
    assert_eq!(
        w.start(facts(&[])).unwrap().ignored,
        Some(Ignored::AlreadyStarted)
    );
    assert!(matches!(
        SagaState::new(w.definition.clone(), &birth("b", "44021")),
        Err(EngineError::WrongLifeEvent { .. })
    ));
}

#[test]
fn replay_gives_the_same_state_and_recovery_redispatches_the_same_tasks() {
    let mut w = started(THREE_AND_A_FINAL);
    w.succeed("a");
    w.fail("b", true);
    let before: Vec<String> = w
        .state
        .pending_work()
        .iter()
        .map(|c| format!("{c:?}"))
        .collect();
    w.restart();
    let after: Vec<String> = w
        .state
        .pending_work()
        .iter()
        .map(|c| format!("{c:?}"))
        .collect();
    assert_eq!(before, after);
    assert_eq!(
        w.state
            .timers()
            .iter()
            .map(|t| t.kind)
            .collect::<BTreeSet<_>>(),
        BTreeSet::from([TimerKind::Timeout, TimerKind::Retry])
    );
    // A stream from another definition version is refused.
    let v2 = Arc::new((*w.definition).clone().with_version(2));
    assert!(matches!(
        rebuild(v2, &w.life_event, &w.store),
        Err(EngineError::Rebuild(_))
    ));
}

// --- The shipped definitions ---------------------------------------------------------

fn catalog() -> Catalog {
    Catalog::builtin().unwrap()
}

fn builtin_world(life_event: v1::LifeEvent) -> World {
    let kind = levensloop_sagas::LifeEventKind::of(&life_event).unwrap();
    World::new(catalog().for_kind(kind).unwrap(), life_event)
}

/// Runs a saga with every task succeeding, every human step completed and every timer
/// fired, until it ends.
fn drive_to_the_end(w: &mut World) {
    for _ in 0..500 {
        if w.state.is_terminal() {
            return;
        }
        let work = w.state.pending_work();
        if let Some(c) = work.first() {
            match c {
                Command::AwaitHuman(t) => {
                    w.input(Input::CompleteHuman {
                        step_id: t.step_id.clone(),
                        actor: "clerk".into(),
                        note: String::new(),
                        now: w.now,
                    })
                    .unwrap();
                }
                Command::DispatchTask(t) | Command::SettleOtherSagas { task: t, .. } => {
                    w.result(completed(t)).unwrap();
                }
                _ => unreachable!(),
            }
        } else if let Some(t) = w.timers.values().min_by_key(|t| t.due_at).cloned() {
            w.fire(&t).unwrap();
        } else {
            break;
        }
    }
    panic!("did not end: {:#?}", w.state);
}

#[test]
fn the_shipped_definitions_load_and_complete_when_everything_succeeds() {
    let c = catalog();
    assert_eq!(c.definitions().count(), 4);
    for (event, facts_) in [
        (birth("b1", "44021"), facts(&[])),
        (
            death("d1", "40010100123", "1940-01-01", "44021"),
            facts(&[
                ("holds_disability_parking_card", "true"),
                ("has_library_account", "true"),
            ]),
        ),
        (
            moved(
                "m1",
                "85050500123",
                "24062",
                "44021",
                v1::ChangeOfAddressReason::Move,
            ),
            facts(&[("has_registered_vehicle", "true")]),
        ),
        (
            exam("e1", "07010100123", v1::ExamType::Practical),
            facts(&[]),
        ),
    ] {
        let mut w = builtin_world(event);
        w.start(facts_).unwrap();
        drive_to_the_end(&mut w);
        assert_eq!(
            w.state.status(),
            SagaStatus::Completed,
            "{}",
            w.definition.name()
        );
        assert_eq!(w.steps_with("StepFailed"), Vec::<String>::new());
    }
}

#[test]
fn conditions_follow_the_event_and_the_facts() {
    // Gent has a birth premium and is in Flanders; Brussels (21004) neither.
    let mut w = builtin_world(birth("b1", "44021"));
    w.start(facts(&[])).unwrap();
    assert!(w.planned().contains("municipal-birth-premium"));
    assert!(w.planned().contains("boekstart-at-6-months"));
    let mut w = builtin_world(birth("b2", "21004"));
    w.start(facts(&[])).unwrap();
    assert!(!w.planned().contains("municipal-birth-premium"));
    assert!(!w.planned().contains("boekstart-package"));

    // Death of a minor: Groeipakket, no pension; of an older person: the reverse.
    let mut w = builtin_world(death("d1", "10010100123", "2010-01-01", "44021"));
    w.start(facts(&[])).unwrap();
    assert!(w.planned().contains("groeipakket") && !w.planned().contains("pension"));
    assert!(!w.planned().contains("resident-parking-card"));
    let mut w = builtin_world(death("d2", "40010100123", "1940-01-01", "44021"));
    w.start(facts(&[("holds_resident_parking_card", "true")]))
        .unwrap();
    assert!(!w.planned().contains("groeipakket") && w.planned().contains("pension"));
    assert!(w.planned().contains("resident-parking-card"));

    // The Boekstart wait counts six months from the date of birth.
    let mut w = builtin_world(birth("b3", "44021"));
    w.start(facts(&[])).unwrap();
    drive_until_waiting(&mut w, "boekstart-at-6-months");
    assert_eq!(
        w.timer("boekstart-at-6-months", TimerKind::Wait).due_at,
        Utc.with_ymd_and_hms(2026, 8, 28, 0, 0, 0).unwrap()
    );
}

/// Succeeds tasks until `step` is waiting.
fn drive_until_waiting(w: &mut World, step: &str) {
    for _ in 0..100 {
        if matches!(w.state.step(step).unwrap().phase, StepPhase::Waiting { .. }) {
            return;
        }
        let Some(Command::DispatchTask(t)) = w
            .state
            .pending_work()
            .into_iter()
            .find(|c| matches!(c, Command::DispatchTask(_)))
        else {
            panic!("stuck before `{step}`: {:#?}", w.state);
        };
        w.result(completed(&t)).unwrap();
    }
}

#[test]
fn an_administrative_readdressing_starts_no_saga() {
    let c = catalog();
    for reason in [
        v1::ChangeOfAddressReason::StreetRenamed,
        v1::ChangeOfAddressReason::MunicipalityMerger,
        v1::ChangeOfAddressReason::Renumbering,
        v1::ChangeOfAddressReason::Correction,
    ] {
        let event = moved("m", "85050500123", "44021", "44021", reason);
        assert!(
            matches!(
                c.start(&event, facts(&[]), t0()),
                Err(EngineError::NoSaga(NoSaga::NotAMove { .. }))
            ),
            "{reason:?}"
        );
    }
    for reason in [
        v1::ChangeOfAddressReason::Move,
        v1::ChangeOfAddressReason::Unspecified,
    ] {
        let event = moved("m", "85050500123", "24062", "44021", reason);
        let (_, d) = c.start(&event, facts(&[]), t0()).unwrap();
        assert_eq!(kind(&d.events[0]), "SagaStarted");
    }
    // A theory exam does not lead to this saga either.
    let event = exam("e", "07010100123", v1::ExamType::Theory);
    assert!(matches!(
        c.start(&event, facts(&[]), t0()),
        Err(EngineError::NoSaga(NoSaga::DoesNotApply { .. }))
    ));
}

#[test]
fn a_negative_police_check_revokes_the_provisional_actions() {
    let mut w = builtin_world(moved(
        "m1",
        "85050500123",
        "24062",
        "44021",
        v1::ChangeOfAddressReason::Move,
    ));
    w.start(facts(&[("has_registered_vehicle", "true")]))
        .unwrap();
    w.succeed("validate-address");
    w.succeed("provisional-waste-account");
    w.succeed("provisional-parking-card");
    w.succeed("request-police-check");
    let d = w
        .input(Input::RejectHuman {
            step_id: "police-check".into(),
            actor: "agent-44".into(),
            reason: "nobody lives there".into(),
            now: w.now,
        })
        .unwrap();
    assert_eq!(
        summary(&d.events),
        [
            "OperatorActed",
            "StepFailed(police-check)",
            "StepCompensationScheduled(provisional-parking-card)"
        ]
    );
    let d = w.succeed("provisional-parking-card");
    assert_eq!(
        summary(&d.events),
        [
            "StepCompensated(provisional-parking-card)",
            "StepCompensationScheduled(provisional-waste-account)"
        ]
    );
    assert_eq!(
        dispatched(&d)[0].handler,
        "diftar.cancel-provisional-account"
    );
    w.succeed("provisional-waste-account");
    assert_eq!(w.state.status(), SagaStatus::Compensated);
}

#[test]
fn a_death_cancels_a_waiting_move_and_stops_a_birth() {
    let insz = "85050500123";
    let mut mv = builtin_world(moved(
        "m1",
        insz,
        "24062",
        "44021",
        v1::ChangeOfAddressReason::Move,
    ));
    mv.start(facts(&[("has_registered_vehicle", "true")]))
        .unwrap();
    for s in [
        "validate-address",
        "provisional-parking-card",
        "provisional-waste-account",
        "request-police-check",
    ] {
        mv.succeed(s);
    }
    assert!(matches!(
        mv.state.step("police-check").unwrap().phase,
        StepPhase::Running { .. }
    ));

    // The death saga's first steps: verify the act, then settle the person's other sagas.
    let mut dth = builtin_world(death("d1", insz, "1985-05-05", "44021"));
    dth.start(facts(&[])).unwrap();
    let d = dth.succeed("verify-act");
    let (person, cause) = d
        .commands
        .iter()
        .find_map(|c| match c {
            Command::SettleOtherSagas {
                person_insz,
                cause_saga_id,
                ..
            } => Some((person_insz.clone(), *cause_saga_id)),
            _ => None,
        })
        .expect("settle the person's other sagas");
    assert_eq!(person, insz);
    assert_eq!(cause, dth.state.saga_id());

    // The orchestrator finds the move saga and tells it.
    let d = mv
        .input(Input::PersonDied {
            cause_saga_id: cause,
            now: mv.now,
        })
        .unwrap();
    assert_eq!(
        summary(&d.events),
        [
            "SagaCancelled",
            "StepSkipped(police-check)",
            "StepCompensationScheduled(provisional-waste-account)"
        ]
    );
    let Some(Event::SagaCancelled(c)) = &d.events[0].event else {
        panic!()
    };
    assert_eq!(c.actor, "engine");
    assert_eq!(c.cause_saga_id, cause.to_string());
    mv.succeed("provisional-waste-account");
    mv.succeed("provisional-parking-card");
    assert_eq!(mv.state.status(), SagaStatus::Cancelled);
    assert_eq!(
        mv.steps_with("StepCompensated"),
        ["provisional-waste-account", "provisional-parking-card"]
    );
    // … and answers the death saga's step.
    let d = dth.succeed("settle-other-sagas");
    assert!(summary(&d.events).contains(&"StepSucceeded(settle-other-sagas)".to_owned()));

    // A birth saga is stopped, not compensated: the premium is not recovered.
    let mut b = builtin_world(birth("b1", "44021"));
    b.start(facts(&[])).unwrap();
    for _ in 0..10 {
        let work = b.state.pending_work();
        let Some(Command::DispatchTask(t)) = work.first() else {
            break;
        };
        b.result(completed(t)).unwrap();
    }
    assert_eq!(
        b.state.step("municipal-birth-premium").unwrap().phase,
        StepPhase::Succeeded
    );
    let waits_before = b.timers.len();
    assert!(waits_before > 0);
    let d = b
        .input(Input::PersonDied {
            cause_saga_id: cause,
            now: b.now,
        })
        .unwrap();
    assert_eq!(summary(&d.events), ["SagaCancelled"]);
    assert_eq!(b.state.status(), SagaStatus::Cancelled);
    assert!(b.timers.is_empty(), "the Boekstart timers are cancelled");
    assert_eq!(
        b.input(Input::PersonDied {
            cause_saga_id: cause,
            now: b.now
        })
        .unwrap()
        .ignored,
        Some(Ignored::Terminal)
    );
}

#[test]
fn on_death_park_parks_the_saga() {
    let text = format!(
        "{}\n[[steps]]\nid = \"a\"\nhandler = \"h\"",
        HEAD.replace(
            "facts = [\"flag\"]",
            "facts = [\"flag\"]\non_death = \"park\""
        )
    );
    let mut w = World::from_toml(&text, death("d", "1", "1950-01-01", "44021"));
    w.start(facts(&[])).unwrap();
    let cause = uuid::Uuid::nil();
    let d = w
        .input(Input::PersonDied {
            cause_saga_id: cause,
            now: w.now,
        })
        .unwrap();
    assert_eq!(summary(&d.events), ["SagaParked"]);
    assert_eq!(w.state.status(), SagaStatus::Parked);
}

#[test]
fn a_card_not_collected_within_three_months_is_destroyed() {
    let mut w = builtin_world(exam("e1", "07010100123", v1::ExamType::Practical));
    w.start(facts(&[])).unwrap();
    for s in [
        "match-candidate",
        "check-driving-bans",
        "prefill-application",
        "payment",
        "production-order",
        "collection-appointment",
    ] {
        w.succeed(s);
    }
    let deadline = w.timer("hand-over", TimerKind::Timeout);
    assert_eq!(
        deadline.due_at,
        w.now + TimeDelta::days(92),
        "three months from March"
    );
    w.restart();
    let d = w.fire(&deadline).unwrap();
    assert_eq!(
        summary(&d.events),
        [
            "StepTimedOut(hand-over)",
            "StepSkipped(retire-provisional-licence)",
            "StepScheduled(destroy-uncollected-card)"
        ]
    );
    w.succeed("destroy-uncollected-card");
    assert_eq!(w.state.status(), SagaStatus::Completed);
}

#[test]
fn the_catalog_keeps_every_version() {
    let mut c = catalog();
    let event = birth("b1", "44021");
    let (mut state, d) = c.start(&event, facts(&[]), t0()).unwrap();
    for e in &d.events {
        state.apply(e);
    }
    let v2 = (*c.latest("birth").unwrap()).clone().with_version(2);
    c.insert(v2.clone()).unwrap();
    assert_eq!(
        c.insert(v2),
        Err(DefinitionError::DuplicateVersion {
            name: "birth".into(),
            version: 2
        })
    );
    // The running saga keeps version 1; a new one starts under version 2.
    let rebuilt = c.rebuild(&event, &d.events).unwrap();
    assert_eq!(rebuilt.definition().version(), 1);
    assert_eq!(rebuilt, state);
    let (fresh, _) = c.start(&birth("b2", "44021"), facts(&[]), t0()).unwrap();
    assert_eq!(fresh.definition().version(), 2);

    let limits = c.handler_limits("groeipakket.startbedrag").unwrap();
    assert_eq!(limits.max_rate_per_second, Some(20.0));
    assert_eq!(limits.max_in_flight, Some(40));
    assert!(c.handler_limits("no.such.handler").is_none());
}

#[test]
fn integrator_steps_join_a_definition_at_run_time() {
    let mut def: Definition = (*catalog().latest("death").unwrap()).clone();
    let mut step = def.task_step("gent-library", "gent.library.close-account");
    step.needs = vec!["settle-other-sagas".into()];
    step.entitled = vec!["deceased.insz".into(), "secret.field".into()];
    assert!(matches!(
        def.add_step(step.clone()),
        Err(DefinitionError::UnknownField { .. })
    ));
    step.entitled.pop();
    def.add_step(step).unwrap();
    def.set_compensation("gent-library", def.compensation("gent.library.reopen"))
        .unwrap();
    let def = Arc::new(def.with_version(2));
    let mut w = World::new(def, death("d1", "40010100123", "1940-01-01", "44021"));
    w.start(facts(&[])).unwrap();
    drive_to_the_end(&mut w);
    assert!(
        w.steps_with("StepSucceeded")
            .contains(&"gent-library".to_owned())
    );
}

#[test]
fn skipping_a_failed_required_step_of_a_parked_saga_lets_it_go_on() {
    let mut w = started(
        r#"
[[steps]]
id = "a"
handler = "h.a"
compensation = "h.a.undo"
[[steps]]
id = "b"
handler = "h.b"
retry = { max_attempts = 1 }
[[steps]]
id = "c"
handler = "h.c"
needs = ["a", "b"]
"#,
    );
    w.succeed("a");
    w.input(Input::Park {
        reason: "check".into(),
        cause_saga_id: None,
        now: w.now,
    })
    .unwrap();
    let d = w.fail("b", false);
    assert_eq!(
        summary(&d.events),
        ["StepFailed(b)"],
        "parked: no compensation yet"
    );
    assert_eq!(w.state.status(), SagaStatus::Parked);
    w.input(Input::SkipStep {
        step_id: "b".into(),
        actor: "op".into(),
        reason: "done by hand at the counter".into(),
        now: w.now,
    })
    .unwrap();
    let d = w
        .input(Input::Resume {
            actor: "op".into(),
            reason: "checked".into(),
            now: w.now,
        })
        .unwrap();
    assert_eq!(
        summary(&d.events),
        ["OperatorActed", "SagaResumed", "StepScheduled(c)"]
    );
    w.succeed("c");
    assert_eq!(w.state.status(), SagaStatus::Completed);

    // Once compensation has begun, the failed step can no longer be skipped.
    let mut w = started(THREE_AND_A_FINAL);
    for s in ["a", "b", "c", "n"] {
        w.succeed(s);
    }
    w.fail("d", false);
    assert!(matches!(
        w.input(Input::SkipStep {
            step_id: "d".into(),
            actor: "op".into(),
            reason: String::new(),
            now: w.now,
        }),
        Err(EngineError::NotAllowed { action: "skip", .. })
    ));
}

#[test]
fn a_registered_handler_is_a_step_the_saga_keeps_through_a_rebuild() {
    let catalog = Catalog::builtin().unwrap();
    let spec = v1::HandlerSpec {
        name: "gent.library.close-account".into(),
        owner: "Stad Gent".into(),
        life_event_types: vec![v1::LifeEventType::Death as i32],
        after_steps: vec!["verify-act".into()],
        blocking: true,
        permitted_fields: vec!["deceased.insz".into()],
        ..Default::default()
    };
    let mut registry = levensloop_sagas::Registry::new();
    registry.apply(&registry.register(&catalog, spec, t0()).unwrap());
    let event = death("d-reg", "85010112345", "1985-01-01", "44021");
    let base = catalog.base_for(&event).unwrap();
    let (definition, left_out) = levensloop_sagas::registry::include_each(
        &base,
        &registry.for_saga(levensloop_sagas::LifeEventKind::Death, Some("44021")),
    );
    assert!(left_out.is_empty());
    let mut world = World::new(Arc::new(definition), event.clone());
    world.start(Default::default()).unwrap();
    let Some(Event::SagaStarted(started)) = world.store[0].event.as_ref() else {
        panic!("SagaStarted first");
    };
    assert_eq!(started.handlers.len(), 1);
    assert!(
        started
            .planned_steps
            .contains(&"gent.library.close-account".to_owned())
    );

    // The handler's task carries only its permitted field, and the steps after `verify-act`
    // wait for it.
    world.succeed("verify-act");
    let task = world.current("gent.library.close-account");
    assert_eq!(task.data.keys().collect::<Vec<_>>(), vec!["deceased.insz"]);
    assert!(world.settles.is_empty(), "settling waits for the handler");

    // A rebuild from the stored events keeps the step, even with the registry gone.
    let rebuilt = catalog.rebuild(&event, &world.store).unwrap();
    assert!(
        rebuilt
            .definition()
            .step("gent.library.close-account")
            .is_some()
    );
    world.succeed("gent.library.close-account");
    assert!(
        !world.settles.is_empty(),
        "then the person's other sagas are settled"
    );
}
