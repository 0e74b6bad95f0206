use super::*;

const ID: &str = "6f1c2a4e-0c4b-5d0e-9a77-3f8f1b2d9c10";

fn saga_id() -> Uuid {
    Uuid::parse_str(ID).unwrap()
}

fn t(secs: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(1_790_000_000 + secs, 0).unwrap()
}

fn ev(secs: i64, event: Event) -> v1::SagaEvent {
    v1::SagaEvent {
        saga_id: ID.into(),
        occurred_at: Some(to_timestamp(t(secs))),
        causation_id: String::new(),
        correlation_id: "dabs-1".into(),
        event: Some(event),
    }
}

fn started(secs: i64, steps: &[&str]) -> v1::SagaEvent {
    ev(
        secs,
        Event::SagaStarted(v1::SagaStarted {
            life_event_id: "dabs-1".into(),
            life_event_source: "urn:be:dabs".into(),
            life_event_type: levensloop_proto::event_types::DEATH.into(),
            definition: "death".into(),
            definition_version: 3,
            planned_steps: steps.iter().map(|s| (*s).to_owned()).collect(),
            person_insz: "85073003328".into(),
            municipality_nis_code: "44021".into(),
            handlers: Vec::new(),
        }),
    )
}

fn scheduled(secs: i64, step: &str, handler: &str, attempt: u32) -> v1::SagaEvent {
    ev(
        secs,
        Event::StepScheduled(v1::StepScheduled {
            step_id: step.into(),
            handler: handler.into(),
            attempt,
            ..Default::default()
        }),
    )
}

fn succeeded(secs: i64, step: &str) -> v1::SagaEvent {
    ev(
        secs,
        Event::StepSucceeded(v1::StepSucceeded {
            step_id: step.into(),
            ..Default::default()
        }),
    )
}

fn failed(secs: i64, step: &str, retryable: bool, code: &str) -> v1::SagaEvent {
    ev(
        secs,
        Event::StepFailed(v1::StepFailed {
            step_id: step.into(),
            retryable,
            reason: format!("{step} said no"),
            error_code: code.into(),
            ..Default::default()
        }),
    )
}

fn retry(secs: i64, step: &str, next_attempt: u32) -> v1::SagaEvent {
    ev(
        secs,
        Event::StepRetryScheduled(v1::StepRetryScheduled {
            step_id: step.into(),
            next_attempt,
            due_at: Some(to_timestamp(t(secs + 30))),
        }),
    )
}

fn compensate(secs: i64, step: &str, handler: &str, attempt: u32) -> v1::SagaEvent {
    ev(
        secs,
        Event::StepCompensationScheduled(v1::StepCompensationScheduled {
            step_id: step.into(),
            handler: handler.into(),
            attempt,
            ..Default::default()
        }),
    )
}

fn compensated(secs: i64, step: &str) -> v1::SagaEvent {
    ev(
        secs,
        Event::StepCompensated(v1::StepCompensated {
            step_id: step.into(),
            ..Default::default()
        }),
    )
}

fn cancelled(secs: i64) -> v1::SagaEvent {
    ev(
        secs,
        Event::SagaCancelled(v1::SagaCancelled {
            reason: "registered by mistake".into(),
            actor: "op-7".into(),
            cause_saga_id: String::new(),
        }),
    )
}

fn saga_compensated(secs: i64, failed_step_id: &str) -> v1::SagaEvent {
    ev(
        secs,
        Event::SagaCompensated(v1::SagaCompensated {
            failed_step_id: failed_step_id.into(),
        }),
    )
}

/// Folds events one by one, collecting the attempts that ended.
fn fold(events: &[v1::SagaEvent]) -> (SagaRecord, Vec<(String, i64)>) {
    let mut record = SagaRecord::new(saga_id());
    let mut ended = Vec::new();
    for e in events {
        if let Some(a) = record.apply(e) {
            ended.push((a.handler, a.duration_micros / 1_000_000));
        }
    }
    (record, ended)
}

fn statuses(record: &SagaRecord) -> Vec<(&str, v1::StepStatus)> {
    record
        .steps
        .iter()
        .map(|s| (s.step_id.as_str(), s.status))
        .collect()
}

fn current(record: &SagaRecord) -> Vec<&str> {
    record.current_steps().map(|s| s.step_id.as_str()).collect()
}

#[test]
fn a_completed_saga() {
    let mut events = vec![started(0, &["validate", "pension", "waste"])];
    let (r, _) = fold(&events);
    assert_eq!(r.status, v1::SagaStatus::Running);
    assert_eq!(r.life_event(), v1::LifeEventType::Death);
    assert_eq!(r.person_insz, "85073003328");
    assert_eq!((r.definition.as_str(), r.definition_version), ("death", 3));
    assert!(r.steps.iter().all(|s| s.status == v1::StepStatus::Pending));
    assert!(current(&r).is_empty(), "pending steps are not in progress");

    events.extend([
        scheduled(1, "validate", "magda.validate", 1),
        succeeded(3, "validate"),
        scheduled(3, "pension", "pension.observe", 1),
        scheduled(3, "waste", "diftar.close", 1),
    ]);
    let (r, _) = fold(&events);
    assert_eq!(current(&r), ["pension", "waste"]);
    assert_eq!(r.step("pension").unwrap().scheduled_at, Some(t(3)));
    assert_eq!(r.step("validate").unwrap().finished_at, Some(t(3)));

    events.extend([
        succeeded(4, "pension"),
        succeeded(10, "waste"),
        ev(10, Event::SagaCompleted(v1::SagaCompleted {})),
    ]);
    let (r, ended) = fold(&events);
    assert_eq!(r.status, v1::SagaStatus::Completed);
    assert_eq!(r.started_at, t(0));
    assert_eq!(r.updated_at, t(10));
    assert_eq!(r.finished_at, Some(t(10)));
    assert_eq!(r.events, 8);
    assert!(r.last_error.is_none());
    assert!(
        r.steps
            .iter()
            .all(|s| s.status == v1::StepStatus::Succeeded && s.attempts == 1)
    );
    assert!(current(&r).is_empty());
    assert_eq!(
        ended,
        [
            ("magda.validate".to_owned(), 2),
            ("pension.observe".to_owned(), 1),
            ("diftar.close".to_owned(), 7)
        ]
    );
    assert_eq!(
        r.handlers().into_iter().collect::<Vec<_>>(),
        ["diftar.close", "magda.validate", "pension.observe"]
    );
}

#[test]
fn a_retry_waits_then_runs_the_next_attempt() {
    let events = vec![
        started(0, &["premium"]),
        scheduled(0, "premium", "gemeente.premie", 1),
        failed(2, "premium", true, "TARGET_UNAVAILABLE"),
        retry(2, "premium", 2),
    ];
    let (r, ended) = fold(&events);
    let step = r.step("premium").unwrap();
    assert_eq!(step.status, v1::StepStatus::Waiting);
    assert_eq!(step.attempts, 1);
    assert_eq!(current(&r), ["premium"]);
    assert_eq!(r.status, v1::SagaStatus::Running);
    let error = r.last_error.clone().unwrap();
    assert_eq!(error.at, t(2));
    assert_eq!(
        error.to_string(),
        "premium: premium said no [TARGET_UNAVAILABLE]"
    );
    assert_eq!(ended, [("gemeente.premie".to_owned(), 2)]);

    let mut events = events;
    events.extend([
        scheduled(32, "premium", "gemeente.premie", 2),
        ev(
            45,
            Event::StepTimedOut(v1::StepTimedOut {
                step_id: "premium".into(),
                attempt: 2,
                task_id: String::new(),
            }),
        ),
        retry(45, "premium", 3),
        scheduled(75, "premium", "gemeente.premie", 3),
    ]);
    let (r, _) = fold(&events);
    let step = r.step("premium").unwrap();
    assert_eq!(
        (
            step.status,
            step.attempts,
            step.scheduled_at,
            step.finished_at
        ),
        (v1::StepStatus::Running, 3, Some(t(75)), None)
    );
    assert_eq!(r.last_error.as_ref().unwrap().reason, "attempt 2 timed out");

    events.push(succeeded(76, "premium"));
    let (r, ended) = fold(&events);
    assert_eq!(r.step("premium").unwrap().status, v1::StepStatus::Succeeded);
    // Each attempt counts from its own scheduling, backoff excluded.
    assert_eq!(
        ended,
        [
            ("gemeente.premie".to_owned(), 2),
            ("gemeente.premie".to_owned(), 13),
            ("gemeente.premie".to_owned(), 1)
        ]
    );
}

#[test]
fn a_permanent_failure_is_compensated_in_reverse() {
    let mut events = vec![
        started(0, &["a", "b", "c"]),
        scheduled(0, "a", "h.a", 1),
        succeeded(1, "a"),
        scheduled(1, "b", "h.b", 1),
        succeeded(2, "b"),
        scheduled(2, "c", "h.c", 1),
        failed(3, "c", false, "REFUSED"),
    ];
    let (r, _) = fold(&events);
    // The events alone cannot tell a required step from an optional one: the saga goes on
    // running until the engine starts compensating.
    assert_eq!(r.status, v1::SagaStatus::Running);
    assert_eq!(r.step("c").unwrap().status, v1::StepStatus::Failed);

    events.push(compensate(3, "b", "h.b.undo", 1));
    let (r, _) = fold(&events);
    assert_eq!(r.status, v1::SagaStatus::Compensating);
    assert!(r.finished_at.is_none());
    assert_eq!(current(&r), ["b"]);
    assert_eq!(r.step("b").unwrap().handler, "h.b");
    assert_eq!(r.step("b").unwrap().compensation_handler, "h.b.undo");

    events.extend([
        compensated(5, "b"),
        compensate(5, "a", "h.a.undo", 1),
        compensated(9, "a"),
        saga_compensated(9, "c"),
    ]);
    let (r, ended) = fold(&events);
    assert_eq!(r.status, v1::SagaStatus::Compensated);
    assert_eq!(r.finished_at, Some(t(9)));
    assert_eq!(
        statuses(&r),
        [
            ("a", v1::StepStatus::Compensated),
            ("b", v1::StepStatus::Compensated),
            ("c", v1::StepStatus::Failed)
        ]
    );
    assert_eq!(r.last_error.as_ref().unwrap().step_id, "c");
    let undone: Vec<_> = ended.iter().skip(3).cloned().collect();
    assert_eq!(
        undone,
        [("h.b.undo".to_owned(), 2), ("h.a.undo".to_owned(), 4)]
    );
    assert!(r.handlers().contains("h.a.undo"));
}

#[test]
fn a_cancel_compensates_then_ends_cancelled() {
    let mut events = vec![
        started(0, &["a", "b", "c"]),
        scheduled(0, "a", "h.a", 1),
        succeeded(1, "a"),
        scheduled(1, "b", "h.b", 1),
        scheduled(1, "c", "h.c", 1),
        // b is out with its handler and has a compensation: the engine records the cancel at
        // once and waits for b before undoing anything.
        cancelled(2),
    ];
    let (r, _) = fold(&events);
    assert_eq!(r.status, v1::SagaStatus::Cancelled);
    let cancellation = r.cancellation.clone().unwrap();
    assert_eq!(
        (cancellation.actor.as_str(), cancellation.at),
        ("op-7", t(2))
    );

    events.extend([succeeded(4, "b"), compensate(4, "b", "h.b.undo", 1)]);
    let (r, _) = fold(&events);
    assert_eq!(r.status, v1::SagaStatus::Compensating);
    assert!(r.finished_at.is_none());
    assert_eq!(current(&r), ["b", "c"]);

    events.extend([
        compensated(6, "b"),
        compensate(6, "a", "h.a.undo", 1),
        compensated(7, "a"),
        saga_compensated(7, ""),
    ]);
    let (r, _) = fold(&events);
    assert_eq!(r.status, v1::SagaStatus::Cancelled);
    assert_eq!(r.finished_at, Some(t(7)));
    assert!(current(&r).is_empty(), "a finished saga does nothing more");
    assert_eq!(r.step("c").unwrap().status, v1::StepStatus::Running);
}

#[test]
fn a_cancel_with_nothing_to_undo_ends_at_once() {
    let events = vec![
        started(0, &["a"]),
        scheduled(0, "a", "h.a", 1),
        cancelled(5),
    ];
    let (r, _) = fold(&events);
    assert_eq!(r.status, v1::SagaStatus::Cancelled);
    assert_eq!(r.finished_at, Some(t(5)));
}

#[test]
fn a_compensation_that_fails_for_good_raises_an_open_incident() {
    let events = vec![
        started(0, &["a", "b"]),
        scheduled(0, "a", "h.a", 1),
        succeeded(1, "a"),
        scheduled(1, "b", "h.b", 1),
        failed(2, "b", false, "REFUSED"),
        compensate(2, "a", "h.a.undo", 1),
        ev(
            3,
            Event::CompensationFailed(v1::CompensationFailed {
                step_id: "a".into(),
                attempt: 1,
                reason: "account locked".into(),
            }),
        ),
        retry(3, "a", 2),
    ];
    let (r, _) = fold(&events);
    // A compensation waiting for its retry is still being undone.
    assert_eq!(r.step("a").unwrap().status, v1::StepStatus::Compensating);
    assert_eq!(r.status, v1::SagaStatus::Compensating);

    let mut events = events;
    events.extend([
        compensate(33, "a", "h.a.undo", 2),
        ev(
            93,
            Event::StepTimedOut(v1::StepTimedOut {
                step_id: "a".into(),
                attempt: 2,
                task_id: String::new(),
            }),
        ),
        ev(
            93,
            Event::CompensationFailed(v1::CompensationFailed {
                step_id: "a".into(),
                attempt: 2,
                reason: "timed out".into(),
            }),
        ),
        ev(
            93,
            Event::IncidentRaised(v1::IncidentRaised {
                incident_id: "inc-1".into(),
                step_id: "a".into(),
                reason: "the compensation of `a` failed for good".into(),
            }),
        ),
        ev(
            93,
            Event::SagaFailed(v1::SagaFailed {
                reason: "the compensation of `a` failed for good".into(),
            }),
        ),
    ]);
    let (r, ended) = fold(&events);
    assert_eq!(r.status, v1::SagaStatus::Failed);
    assert_eq!(r.finished_at, Some(t(93)));
    assert_eq!(r.step("a").unwrap().status, v1::StepStatus::Failed);
    assert_eq!(r.step("a").unwrap().compensation_attempts, 2);
    let open: Vec<_> = r.open_incidents().collect();
    assert_eq!(open.len(), 1);
    assert_eq!(
        (
            open[0].incident_id.as_str(),
            open[0].step_id.as_str(),
            open[0].raised_at
        ),
        ("inc-1", "a", t(93))
    );
    let error = r.last_error.unwrap();
    assert_eq!((error.step_id.as_str(), error.at), ("", t(93)));
    assert_eq!(error.reason, "the compensation of `a` failed for good");
    // The timed-out compensation attempt counts once, though two events end it.
    let undo: Vec<_> = ended.iter().filter(|(h, _)| h == "h.a.undo").collect();
    assert_eq!(
        undo,
        [&("h.a.undo".to_owned(), 1), &("h.a.undo".to_owned(), 60)]
    );
}

#[test]
fn a_late_human_step_raises_an_incident_its_completion_resolves() {
    let mut events = vec![
        started(0, &["hand-over"]),
        scheduled(0, "hand-over", "counter.hand-over", 1),
        ev(
            100,
            Event::IncidentRaised(v1::IncidentRaised {
                incident_id: "inc-late".into(),
                step_id: "hand-over".into(),
                reason: "not completed by its deadline".into(),
            }),
        ),
    ];
    let (r, _) = fold(&events);
    assert_eq!(r.status, v1::SagaStatus::Running);
    assert_eq!(r.open_incidents().count(), 1);
    assert_eq!(r.step("hand-over").unwrap().status, v1::StepStatus::Running);

    events.push(ev(
        150,
        Event::HumanTaskCompleted(v1::HumanTaskCompleted {
            step_id: "hand-over".into(),
            actor: "clerk-3".into(),
            note: String::new(),
        }),
    ));
    let (r, ended) = fold(&events);
    assert_eq!(r.open_incidents().count(), 0);
    assert_eq!(r.incidents[0].resolved_at, Some(t(150)));
    assert_eq!(
        r.step("hand-over").unwrap().status,
        v1::StepStatus::Succeeded
    );
    assert_eq!(ended, [("counter.hand-over".to_owned(), 150)]);
}

#[test]
fn parking_and_resuming() {
    let mut events = vec![
        started(0, &["wait", "move"]),
        ev(
            0,
            Event::WaitStarted(v1::WaitStarted {
                step_id: "wait".into(),
                until: Some(to_timestamp(t(1000))),
            }),
        ),
        ev(
            10,
            Event::SagaParked(v1::SagaParked {
                reason: "the person died".into(),
                cause_saga_id: "d-1".into(),
            }),
        ),
    ];
    let (r, _) = fold(&events);
    assert_eq!(r.status, v1::SagaStatus::Parked);
    assert!(r.finished_at.is_none());
    assert_eq!(r.parking.as_ref().unwrap().cause_saga_id, "d-1");
    assert_eq!(r.step("wait").unwrap().status, v1::StepStatus::Waiting);
    assert_eq!(current(&r), ["wait"]);

    events.extend([
        ev(
            20,
            Event::SagaResumed(v1::SagaResumed {
                actor: "op-1".into(),
                reason: "wrong person".into(),
            }),
        ),
        ev(
            1000,
            Event::WaitElapsed(v1::WaitElapsed {
                step_id: "wait".into(),
            }),
        ),
    ]);
    let (r, ended) = fold(&events);
    assert_eq!(r.status, v1::SagaStatus::Running);
    assert!(r.parking.is_none());
    assert_eq!(r.step("wait").unwrap().status, v1::StepStatus::Succeeded);
    assert!(ended.is_empty(), "a wait is no handler's attempt");

    // Parked again, then cancelled: a cancel unparks.
    events.push(ev(1001, Event::SagaParked(v1::SagaParked::default())));
    assert_eq!(fold(&events).0.status, v1::SagaStatus::Parked);
    events.push(cancelled(1002));
    let (r, _) = fold(&events);
    assert_eq!(r.status, v1::SagaStatus::Cancelled);
    assert!(r.parking.is_none());
}

#[test]
fn skipped_steps_and_skipped_compensations() {
    let events = vec![
        started(0, &["a", "b"]),
        scheduled(0, "a", "h.a", 1),
        succeeded(1, "a"),
        ev(
            1,
            Event::StepSkipped(v1::StepSkipped {
                step_id: "b".into(),
                reason: "condition false".into(),
                actor: "engine".into(),
            }),
        ),
        cancelled(2),
        compensate(2, "a", "h.a.undo", 1),
        ev(
            3,
            Event::StepSkipped(v1::StepSkipped {
                step_id: "a".into(),
                reason: "cannot be undone".into(),
                actor: "op-2".into(),
            }),
        ),
        saga_compensated(3, ""),
    ];
    let (r, _) = fold(&events);
    assert_eq!(
        statuses(&r),
        [
            ("a", v1::StepStatus::Succeeded),
            ("b", v1::StepStatus::Skipped)
        ]
    );
    assert_eq!(r.status, v1::SagaStatus::Cancelled);
}

#[test]
fn other_sagas_events_are_ignored_and_the_fold_is_deterministic() {
    let mut foreign = scheduled(1, "a", "h.a", 1);
    foreign.saga_id = Uuid::nil().to_string();
    let events = vec![started(0, &["a"]), foreign, scheduled(2, "a", "h.a", 1)];
    let (r, _) = fold(&events);
    assert_eq!(r.events, 2);
    assert_eq!(r.step("a").unwrap().scheduled_at, Some(t(2)));
    assert_eq!(SagaRecord::from_events(saga_id(), &events), r);

    // The record survives its storage form whole, fold state included.
    let json = serde_json::to_string(&r).unwrap();
    let back: SagaRecord = serde_json::from_str(&json).unwrap();
    assert_eq!(back, r);
    let mut a = back;
    let mut b = r;
    let next = succeeded(5, "a");
    assert_eq!(a.apply(&next), b.apply(&next));
    assert_eq!(a, b);
}

#[test]
fn life_event_types_map_from_cloudevents_and_short_names() {
    use levensloop_proto::event_types;
    assert_eq!(
        life_event_type(event_types::BIRTH),
        v1::LifeEventType::Birth
    );
    assert_eq!(
        life_event_type(event_types::DRIVING_EXAM_PASSED),
        v1::LifeEventType::DrivingExamPassed
    );
    assert_eq!(life_event_type("birth"), v1::LifeEventType::Birth);
    assert_eq!(
        life_event_type("change_of_address"),
        v1::LifeEventType::ChangeOfAddress
    );
    assert_eq!(life_event_type("wedding"), v1::LifeEventType::Unspecified);
}

#[test]
fn insz_masking() {
    assert_eq!(mask_insz("85073003328"), "85.07.30-***.**");
    assert_eq!(mask_insz("85.07.30-033.28"), "85.07.30-***.**");
    assert_eq!(mask_insz(""), "");
    for bad in [
        "8507300332",
        "850730033288",
        "85O73003328",
        "ééééééééééé",
        "-",
    ] {
        assert_eq!(mask_insz(bad), "**.**.**-***.**", "{bad}");
    }
}
