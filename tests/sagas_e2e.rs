//! Each built-in saga end to end, with every part a real process: nats-server, the gateway,
//! the orchestrator (following the shared clock offset) and the built-in workers (with a
//! clerk answering the police check and the licence hand-over).
//!
//! What it proves:
//!
//! - A birth (in Gent, which has a municipal birth premium, and in Brussels, which has neither
//!   a premium nor Boekstart), a death, a move and a passed driving exam, each published
//!   through the gateway, run to Completed, and the workers' ledger holds exactly the effects
//!   the definition and the event's data call for: one per (handler, step), written out below
//!   with the reason for each step that has none (its condition does not hold, or a guard
//!   skips it), and nothing else for that saga — no compensation, no second effect.
//! - The Boekstart waits of a birth hold the saga until the sagas' clock passes them (the
//!   clock is moved two years ahead mid-test), and only then is the package sent.
//! - Every task on the wire carries exactly the step's entitled fields of the event (the
//!   ledger does not keep task data, so a plain subscription beside the queues reads them).
//! - A transient failure is retried after a backoff and then succeeds, with one effect.
//! - A required step's permanent failure undoes the completed compensatable steps in reverse
//!   order of completion and ends Compensated; the failed step has no effect.
//! - An optional step's permanent failure leaves the saga Completed, the step Failed and the
//!   steps after it running.
//!
//! Failures are injected through the workers' own flags (`--handler-config`). Nothing sleeps
//! to synchronise: the suite follows the saga streams and waits for the events it needs.

// A failed unwrap is a failed test, with the error in its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use levensloop_gateway::corpus;
use levensloop_proto::v1::{self, PublishOutcome, saga_event::Event};
use levensloop_sagas::{Catalog, Definition, SagaStatus, StepKind, StepPhase, idempotency_key};
use levensloop_testing::ServiceProcess;
use levensloop_tests::world::{self, SagaWatch, TWO_YEARS_S, TaskTap, World};
use levensloop_workers::Effect;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};
use uuid::Uuid;

/// How long a saga may take before the test fails naming what is missing (a debug build on 2
/// cores shared with the rest of the suite).
const DEADLINE: Duration = Duration::from_secs(90);

// ---------------------------------------------------------------------------------------------
// What each saga must do, read from sagas/definitions/*.toml and the event's data
// ---------------------------------------------------------------------------------------------

/// The expected outcome of one saga, step by step. Every step of the definition is named once.
#[derive(Debug)]
struct Expected {
    definition: &'static str,
    /// (handler, step): the steps that act on a target system (or a person's work list),
    /// each with exactly one effect in the ledger.
    effects: &'static [(&'static str, &'static str)],
    /// Steps that succeed without a target system: waits, settling the person's other sagas.
    internal: &'static [&'static str],
    /// Steps whose condition does not hold for this event: never planned, no effect.
    not_planned: &'static [&'static str],
    /// Steps skipped at run time by an `only_if_*` guard: no effect.
    skipped: &'static [&'static str],
}

/// A birth in Gent (44021): Gent is on the `municipal-birth-premium` list and its NIS code
/// starts with 4, so the premium and both Boekstart steps are planned. No step has a
/// condition that fails, and none has a guard.
const BIRTH_IN_GENT: Expected = Expected {
    definition: "birth",
    effects: &[
        ("dabs.verify-birth-act", "verify-act"),
        ("magda.household", "household"),
        ("bevolkingsregister.check-enrolment", "check-enrolment"),
        ("groeipakket.startbedrag", "groeipakket-startbedrag"),
        ("gemeente.geboortepremie", "municipal-birth-premium"),
        ("mutualiteit.affiliation-request", "mutuality"),
        ("berichtencentrum.welcome-message", "welcome-message"),
        ("bibliotheek.boekstart", "boekstart-package"),
        ("bibliotheek.boekstart", "library-invitation"),
    ],
    internal: &["boekstart-at-6-months", "library-at-15-months"],
    not_planned: &[],
    skipped: &[],
};

/// A birth in Brussels (21004): not on the premium list, and 21… is none of the Flemish
/// provinces' prefixes (1, 23, 24, 3, 4, 7), so no premium and no Boekstart.
const BIRTH_IN_BRUSSELS: Expected = Expected {
    definition: "birth",
    effects: &[
        ("dabs.verify-birth-act", "verify-act"),
        ("magda.household", "household"),
        ("bevolkingsregister.check-enrolment", "check-enrolment"),
        ("groeipakket.startbedrag", "groeipakket-startbedrag"),
        ("mutualiteit.affiliation-request", "mutuality"),
        ("berichtencentrum.welcome-message", "welcome-message"),
    ],
    internal: &[],
    not_planned: &[
        "municipal-birth-premium",
        "boekstart-at-6-months",
        "boekstart-package",
        "library-at-15-months",
        "library-invitation",
    ],
    skipped: &[],
};

/// The INSZ of the deceased in [`death`]: born 1941-05-03 like the corpus's Maria Vermeulen,
/// but a person the stand-in register knows with a disability parking card and a library
/// account, without a reserved parking space or a resident parking card.
const DECEASED: &str = "41050303493";
const DECEASED_FACTS: [(&str, bool); 4] = [
    ("holds_disability_parking_card", true),
    ("has_reserved_disability_parking_space", false),
    ("holds_resident_parking_card", false),
    ("has_library_account", true),
];

/// A death on 2026-10-25 of a woman born 1941-05-03 (85: the pension steps are planned, the
/// Groeipakket step for a minor is not), living in Deinze (44083, not on the DIFTAR list: no
/// waste account to close, so the refund's guard skips it), with the facts above. The
/// inheritance deadline (four months after the death) is past on the sagas' clock.
const DEATH: Expected = Expected {
    definition: "death",
    effects: &[
        ("dabs.verify-death-act", "verify-act"),
        ("fpd.pension-stop", "pension"),
        ("fpd.recover-overpayment", "pension-recovery"),
        ("fod-sz.parking-card.deactivate", "disability-parking-card"),
        ("bibliotheek.close-account", "library"),
        ("gemeente.belastingen.stop", "municipal-taxes"),
        ("vlabel.inheritance-notice", "inheritance-notice"),
        ("vlabel.inheritance-deadline-check", "inheritance-check"),
        ("berichtencentrum.redirect-to-heirs", "redirect-messages"),
    ],
    internal: &["settle-other-sagas", "inheritance-deadline"],
    not_planned: &[
        "groeipakket",
        "disability-parking-space",
        "waste-account",
        "resident-parking-card",
    ],
    skipped: &["waste-refund"],
};

/// The corpus's Jonas Claes (85073003328), moving from Gent (44021) to Leuven (24062): Leuven
/// has resident parking and DIFTAR, Gent has DIFTAR; the stand-in register knows him with a
/// registered vehicle and a library account, without a reserved disability parking space.
/// The clerk reports the police check positive; the voter list is not frozen on the sagas'
/// clock (two years ahead: November 2028).
const MOVE_FACTS: [(&str, bool); 3] = [
    ("has_registered_vehicle", true),
    ("has_reserved_disability_parking_space", false),
    ("has_library_account", true),
];
const MOVE: Expected = Expected {
    definition: "change-of-address",
    effects: &[
        ("adressenregister.validate", "validate-address"),
        ("politie.woonstvaststelling.request", "request-police-check"),
        ("gemeente.bevolking.woonstvaststelling", "police-check"),
        (
            "gemeente.bewonerskaart.provisional",
            "provisional-parking-card",
        ),
        (
            "diftar.open-provisional-account",
            "provisional-waste-account",
        ),
        ("diftar.confirm-account", "confirm-waste-account"),
        ("diftar.close-account", "close-old-waste-account"),
        ("diftar.refund-balance", "waste-refund"),
        (
            "gemeente.bewonerskaart.definitive",
            "definitive-parking-card",
        ),
        ("bibliotheek.update-address", "library"),
        ("gemeente.klantendossier.update", "municipal-customer-file"),
        ("gemeente.kiezerslijst.update", "voter-list"),
        ("gemeente.afspraken.eid-address", "eid-appointment"),
    ],
    internal: &["voter-list-freeze"],
    not_planned: &["disability-parking-space"],
    skipped: &[],
};

/// The corpus's Emma De Smet, a practical exam for category B: every step up to the hand-over
/// (the clerk hands the card over), then the provisional licence is retired; the card is not
/// destroyed (its guard wants a failed hand-over).
const DRIVING_EXAM: Expected = Expected {
    definition: "driving-exam-passed",
    effects: &[
        ("kruispuntbank-rijbewijzen.match", "match-candidate"),
        ("kruispuntbank-rijbewijzen.check-bans", "check-driving-bans"),
        ("kruispuntbank-rijbewijzen.prefill", "prefill-application"),
        ("gemeente.betaalverzoek.rijbewijs", "payment"),
        ("kaartproducent.production-order", "production-order"),
        (
            "gemeente.afspraken.rijbewijs-afhalen",
            "collection-appointment",
        ),
        ("gemeente.balie.rijbewijs-uitreiking", "hand-over"),
        (
            "kruispuntbank-rijbewijzen.retire-provisional",
            "retire-provisional-licence",
        ),
    ],
    internal: &[],
    not_planned: &[],
    skipped: &["destroy-uncollected-card"],
};

fn birth_in_brussels() -> v1::LifeEvent {
    let mut event = corpus::numbered_birth(1);
    event.id = "dabs-birth-2026-021004-000042".to_owned();
    if let Some(v1::life_event::Payload::Birth(b)) = &mut event.payload {
        if let Some(act) = &mut b.act {
            act.act_reference = "DABS/21004/2026/G/000042".to_owned();
            act.registering_municipality_nis_code = "21004".to_owned();
        }
        b.place_of_birth_nis_code = "21004".to_owned();
        b.registered_address = Some(v1::Address {
            thoroughfare: "Grote Markt".to_owned(),
            house_number: "1".to_owned(),
            post_code: "1000".to_owned(),
            municipality_name: "Brussel".to_owned(),
            municipality_nis_code: "21004".to_owned(),
            country_code: "BE".to_owned(),
            full_address: "Grote Markt 1, 1000 Brussel".to_owned(),
            ..v1::Address::default()
        });
    }
    event
}

fn death() -> v1::LifeEvent {
    let mut event = corpus::valid_death();
    event.subject = DECEASED.to_owned();
    if let Some(v1::life_event::Payload::Death(d)) = &mut event.payload
        && let Some(p) = &mut d.deceased
    {
        p.insz = DECEASED.to_owned();
    }
    event
}

/// The stand-in register still answers what the expectations above assume.
fn assert_facts(definition: &Definition, insz: &str, facts: &[(&str, bool)]) {
    let looked_up = levensloop_orchestrator::facts::lookup(definition, insz);
    let assumed: BTreeMap<String, String> = facts
        .iter()
        .map(|(f, v)| ((*f).to_owned(), v.to_string()))
        .collect();
    assert_eq!(
        looked_up, assumed,
        "the stand-in register's facts for {insz} changed: update the expectation"
    );
}

// ---------------------------------------------------------------------------------------------
// A run: nats-server, gateway, orchestrator, workers
// ---------------------------------------------------------------------------------------------

struct Run {
    catalog: Catalog,
    watch: SagaWatch,
    tap: TaskTap,
    gateway_url: String,
    gateway: ServiceProcess,
    orchestrator: ServiceProcess,
    workers: Vec<ServiceProcess>,
    world: World,
}

impl Run {
    /// Starts everything; the sagas' clock is `offset_s` ahead of the wall clock from the
    /// start. `workers` are the workers processes to start, as (instance, extra arguments).
    async fn start(label: &str, offset_s: i64, workers: &[(&str, Vec<String>)]) -> Self {
        let world = World::start(label).await;
        if offset_s != 0 {
            world.advance_clock(offset_s).await;
        }
        let watch = world.watch().await;
        let tap = world.tap_tasks().await;
        let (gateway, gateway_url) = world.gateway();
        let orchestrator = world.orchestrator();
        let workers = workers
            .iter()
            .map(|(instance, extra)| {
                let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
                world.workers(instance, &extra)
            })
            .collect();
        Self {
            catalog: Catalog::builtin().unwrap(),
            watch,
            tap,
            gateway_url,
            gateway,
            orchestrator,
            workers,
            world,
        }
    }

    /// One workers process serving every handler, a clerk answering the work lists, and
    /// these extra arguments.
    async fn with_workers(label: &str, offset_s: i64, extra: &[&str]) -> Self {
        let mut args = vec!["--clerk".to_owned()];
        args.extend(extra.iter().map(|s| (*s).to_owned()));
        Self::start(label, offset_s, &[("workers", args)]).await
    }

    /// Publishes through the gateway; every event is accepted and starts a saga.
    async fn publish(&self, events: &[v1::LifeEvent]) -> Vec<Uuid> {
        world::publish(&self.gateway_url, events)
            .await
            .into_iter()
            .map(|ack| {
                assert_eq!(
                    ack.outcome(),
                    PublishOutcome::Accepted,
                    "the gateway accepts {}: {ack:?}",
                    ack.event_id
                );
                assert!(ack.starts_saga, "{} starts a saga: {ack:?}", ack.event_id);
                ack.saga_id.parse().unwrap()
            })
            .collect()
    }

    fn definition(&self, name: &str) -> Arc<Definition> {
        self.catalog.latest(name).unwrap()
    }

    /// The saga's ledger effects.
    async fn effects(&self, saga: Uuid) -> Vec<Effect> {
        self.world
            .ledger()
            .await
            .effects_for_saga(&saga.to_string())
            .await
            .unwrap()
    }

    fn assert_services_running(&mut self) {
        let logs = self.world.logs.path().display().to_string();
        assert!(
            self.gateway.is_running(),
            "the gateway exited; logs in {logs}"
        );
        assert!(
            self.orchestrator.is_running(),
            "the orchestrator exited; logs in {logs}"
        );
        for w in &mut self.workers {
            assert!(w.is_running(), "{} exited; logs in {logs}", w.name());
        }
    }

    /// Every task of the saga on the wire carried exactly its step's entitled fields of the
    /// event (data minimisation), and each of the saga's effects came from a task seen.
    async fn assert_tasks_minimised(&self, saga: Uuid, event: &v1::LifeEvent, effects: &[Effect]) {
        let definition = self
            .catalog
            .for_kind(levensloop_sagas::LifeEventKind::of(event).unwrap())
            .unwrap();
        let data = levensloop_sagas::event_data(event);
        let wanted: BTreeSet<String> = effects.iter().map(|e| e.task_id.clone()).collect();
        let started = Instant::now();
        let tasks = loop {
            let tasks: Vec<v1::Task> = self
                .tap
                .tasks()
                .into_iter()
                .filter(|t| t.saga_id == saga.to_string())
                .collect();
            let seen: BTreeSet<String> = tasks.iter().map(|t| t.task_id.clone()).collect();
            let missing: Vec<&String> = wanted.difference(&seen).collect();
            if missing.is_empty() {
                break tasks;
            }
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "saga {saga}: the tasks {missing:?} that caused effects were never seen on the wire"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        for task in &tasks {
            let step = definition
                .step(&task.step_id)
                .unwrap_or_else(|| panic!("a task for an unknown step: {task:?}"));
            let expected: BTreeMap<String, String> = step
                .entitled
                .iter()
                .filter_map(|f| data.get(f).map(|v| (f.clone(), v.clone())))
                .collect();
            let carried: BTreeMap<String, String> = task.data.clone().into_iter().collect();
            assert_eq!(
                carried, expected,
                "the {} task of step {} (compensation: {}) carries exactly the entitled fields {:?}",
                task.handler, task.step_id, task.compensation, step.entitled
            );
        }
    }
}

fn events_of<'a, T>(
    events: &'a [v1::SagaEvent],
    pick: impl Fn(&'a Event) -> Option<&'a T>,
) -> Vec<&'a T> {
    events
        .iter()
        .filter_map(|e| e.event.as_ref().and_then(&pick))
        .collect()
}

fn succeeded_of<'a>(events: &'a [v1::SagaEvent], step: &str) -> Vec<&'a v1::StepSucceeded> {
    events_of(events, |e| match e {
        Event::StepSucceeded(s) if s.step_id == step => Some(s),
        _ => None,
    })
}

/// (handler, step, compensation) → how many effects the ledger holds for it.
fn effect_counts(effects: &[Effect]) -> BTreeMap<(String, String, bool), usize> {
    let mut out = BTreeMap::new();
    for e in effects {
        *out.entry((e.handler.clone(), e.step_id.clone(), e.compensation))
            .or_default() += 1;
    }
    out
}

/// A completed saga did exactly what `expected` says, in the store and in the ledger.
async fn assert_completed_as_expected(
    run: &Run,
    saga: Uuid,
    event: &v1::LifeEvent,
    expected: &Expected,
) {
    let definition = run.definition(expected.definition);
    // The expectation names every step of the definition once, with the step's handler.
    let mut named: Vec<&str> = expected
        .effects
        .iter()
        .map(|(_, s)| *s)
        .chain(expected.internal.iter().copied())
        .chain(expected.not_planned.iter().copied())
        .chain(expected.skipped.iter().copied())
        .collect();
    named.sort_unstable();
    let mut steps: Vec<&str> = definition.steps().iter().map(|s| s.id.as_str()).collect();
    steps.sort_unstable();
    assert_eq!(
        named, steps,
        "the expectation covers each step of {} once",
        expected.definition
    );
    for (handler, step) in expected.effects {
        assert_eq!(
            definition.step(step).unwrap().handler(),
            Some(*handler),
            "step {step}'s handler"
        );
    }

    // The store: one start, completed, each acting step succeeded once, nothing failed or
    // undone.
    let events = run.world.saga_events(saga).await;
    let state = run.catalog.rebuild(event, &events).unwrap();
    assert_eq!(
        state.status(),
        SagaStatus::Completed,
        "saga {saga} ({}) completed; its events: {events:#?}",
        expected.definition
    );
    assert!(
        matches!(
            events.first().and_then(|e| e.event.as_ref()),
            Some(Event::SagaStarted(_))
        ),
        "saga {saga} starts with SagaStarted"
    );
    assert!(
        matches!(
            events.last().and_then(|e| e.event.as_ref()),
            Some(Event::SagaCompleted(_))
        ),
        "saga {saga} ends with SagaCompleted"
    );
    let unexpected: Vec<&Event> = events
        .iter()
        .filter_map(|e| e.event.as_ref())
        .filter(|e| {
            matches!(
                e,
                Event::StepFailed(_)
                    | Event::StepTimedOut(_)
                    | Event::StepRetryScheduled(_)
                    | Event::StepCompensationScheduled(_)
                    | Event::StepCompensated(_)
                    | Event::CompensationFailed(_)
                    | Event::IncidentRaised(_)
                    | Event::SagaParked(_)
                    | Event::SagaCancelled(_)
            )
        })
        .collect();
    assert!(
        unexpected.is_empty(),
        "saga {saga}: nothing failed, retried or was undone: {unexpected:#?}"
    );
    for (_, step) in expected.effects {
        let human = matches!(definition.step(step).unwrap().kind, StepKind::Human { .. });
        let done = if human {
            events_of(&events, |e| match e {
                Event::HumanTaskCompleted(h) if h.step_id == *step => Some(h),
                _ => None,
            })
            .len()
        } else {
            succeeded_of(&events, step).len()
        };
        assert_eq!(done, 1, "saga {saga}: step {step} succeeded once");
    }
    for step in expected
        .effects
        .iter()
        .map(|(_, s)| s)
        .chain(expected.internal)
    {
        assert_eq!(
            state.step(step).map(|s| s.phase),
            Some(StepPhase::Succeeded),
            "saga {saga}: step {step}"
        );
    }
    for step in expected.not_planned {
        assert_eq!(
            state.is_planned(step),
            Some(false),
            "saga {saga}: step {step}'s condition does not hold"
        );
    }
    for step in expected.skipped {
        assert_eq!(
            state.step(step).map(|s| s.phase),
            Some(StepPhase::Skipped),
            "saga {saga}: step {step} is skipped by its guard"
        );
    }

    // The ledger: exactly the expected effects, once each, nothing else for this saga.
    let effects = run.effects(saga).await;
    let counts = effect_counts(&effects);
    let want: BTreeMap<(String, String, bool), usize> = expected
        .effects
        .iter()
        .map(|(h, s)| (((*h).to_owned(), (*s).to_owned(), false), 1))
        .collect();
    assert_eq!(
        counts, want,
        "saga {saga} ({}): the ledger holds exactly one effect per expected (handler, step), \
         and nothing else",
        expected.definition
    );
    for effect in &effects {
        assert_eq!(
            effect.idempotency_key,
            idempotency_key(saga, &effect.step_id, false)
        );
        assert_eq!(effect.saga_id, saga.to_string());
        if let [succeeded] = succeeded_of(&events, &effect.step_id)[..] {
            assert_eq!(
                (effect.task_id.as_str(), effect.attempt),
                (succeeded.task_id.as_str(), succeeded.attempt),
                "saga {saga}: the effect of {} is the attempt that succeeded",
                effect.step_id
            );
        }
    }
    run.assert_tasks_minimised(saga, event, &effects).await;
}

fn saga_of(event: &v1::LifeEvent) -> Uuid {
    levensloop_proto::saga_id(&event.source, &event.id)
}

// ---------------------------------------------------------------------------------------------
// Each built-in saga
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_birth_grants_the_premium_where_there_is_one_and_boekstart_once_the_months_pass() {
    // The sagas' clock starts at the wall clock: the Boekstart waits (6 and 15 months after
    // the birth) hold the Gent saga until the test moves the clock.
    let mut run = Run::with_workers("e2e-birth", 0, &[]).await;
    let (gent, brussels) = (corpus::valid_birth(), birth_in_brussels());
    let sagas = run.publish(&[gent.clone(), brussels.clone()]).await;
    assert_eq!(sagas, [saga_of(&gent), saga_of(&brussels)]);
    let (gent_saga, brussels_saga) = (sagas[0], sagas[1]);

    // Brussels plans no wait: it completes on its own.
    run.watch.until_ended(&[brussels_saga], DEADLINE).await;
    assert_completed_as_expected(&run, brussels_saga, &brussels, &BIRTH_IN_BRUSSELS).await;

    // Gent does everything but Boekstart, then waits.
    let before_waits: Vec<&str> = BIRTH_IN_GENT
        .effects
        .iter()
        .map(|(_, s)| *s)
        .filter(|s| !matches!(*s, "boekstart-package" | "library-invitation"))
        .collect();
    run.watch
        .until(DEADLINE, |w| {
            let mut missing: Vec<String> = before_waits
                .iter()
                .filter(|s| {
                    !w.has(
                        gent_saga,
                        |e| matches!(e, Event::StepSucceeded(x) if x.step_id == **s),
                    )
                })
                .map(|s| format!("{s} succeeded"))
                .collect();
            for wait in BIRTH_IN_GENT.internal {
                if !w.has(
                    gent_saga,
                    |e| matches!(e, Event::WaitStarted(x) if x.step_id == *wait),
                ) {
                    missing.push(format!("{wait} started"));
                }
            }
            (!missing.is_empty()).then(|| (missing.join(", "), vec![gent_saga]))
        })
        .await;
    let events = run.world.saga_events(gent_saga).await;
    let state = run.catalog.rebuild(&gent, &events).unwrap();
    assert_eq!(state.status(), SagaStatus::Running, "the Gent saga waits");
    let until: BTreeMap<&str, String> = events_of(&events, |e| match e {
        Event::WaitStarted(w) => Some(w),
        _ => None,
    })
    .into_iter()
    .map(|w| {
        let until = w.until.unwrap();
        let date = chrono::DateTime::from_timestamp(until.seconds, 0).unwrap();
        (w.step_id.as_str(), date.date_naive().to_string())
    })
    .collect();
    // Six and fifteen months after the child's birth on 2026-10-15 (midnight in Belgium is
    // the evening before in UTC).
    assert!(
        matches!(
            until["boekstart-at-6-months"].as_str(),
            "2027-04-14" | "2027-04-15"
        ),
        "{until:?}"
    );
    assert!(
        matches!(
            until["library-at-15-months"].as_str(),
            "2028-01-14" | "2028-01-15"
        ),
        "{until:?}"
    );
    assert!(
        !events
            .iter()
            .any(|e| matches!(e.event, Some(Event::WaitElapsed(_)))),
        "no wait has ended yet"
    );
    let boekstart_before: Vec<Effect> = run
        .effects(gent_saga)
        .await
        .into_iter()
        .filter(|e| e.handler == "bibliotheek.boekstart")
        .collect();
    assert!(
        boekstart_before.is_empty(),
        "no Boekstart package before the child is six months old: {boekstart_before:?}"
    );

    // Two years pass on the sagas' clock: both waits end, both packages go out, once.
    run.world.advance_clock(TWO_YEARS_S).await;
    run.watch.until_ended(&[gent_saga], DEADLINE).await;
    assert_completed_as_expected(&run, gent_saga, &gent, &BIRTH_IN_GENT).await;
    run.assert_services_running();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_death_stops_exactly_the_rights_and_accounts_the_person_had() {
    let mut run = Run::with_workers("e2e-death", TWO_YEARS_S, &[]).await;
    assert_facts(&run.definition("death"), DECEASED, &DECEASED_FACTS);
    let event = death();
    let sagas = run.publish(std::slice::from_ref(&event)).await;
    run.watch.until_ended(&sagas, DEADLINE).await;
    assert_completed_as_expected(&run, sagas[0], &event, &DEATH).await;
    run.assert_services_running();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_move_runs_the_provisional_and_definitive_steps_after_a_positive_police_check() {
    let mut run = Run::with_workers("e2e-move", TWO_YEARS_S, &[]).await;
    assert_facts(
        &run.definition("change-of-address"),
        "85073003328",
        &MOVE_FACTS,
    );
    let event = corpus::valid_change_of_address();
    let sagas = run.publish(std::slice::from_ref(&event)).await;
    run.watch.until_ended(&sagas, DEADLINE).await;
    assert_completed_as_expected(&run, sagas[0], &event, &MOVE).await;
    // The definitive steps came after the police's finding.
    let events = run.world.saga_events(sagas[0]).await;
    let position = |pick: &dyn Fn(&Event) -> bool| {
        events
            .iter()
            .position(|e| e.event.as_ref().is_some_and(pick))
            .unwrap()
    };
    let police =
        position(&|e| matches!(e, Event::HumanTaskCompleted(h) if h.step_id == "police-check"));
    for step in [
        "confirm-waste-account",
        "close-old-waste-account",
        "definitive-parking-card",
        "voter-list",
    ] {
        let scheduled = position(&|e| matches!(e, Event::StepScheduled(s) if s.step_id == step));
        assert!(scheduled > police, "{step} waits for the police check");
    }
    run.assert_services_running();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_passed_driving_exam_ends_with_the_card_handed_over() {
    let mut run = Run::with_workers("e2e-exam", TWO_YEARS_S, &[]).await;
    let event = corpus::valid_driving_exam();
    let sagas = run.publish(std::slice::from_ref(&event)).await;
    run.watch.until_ended(&sagas, DEADLINE).await;
    assert_completed_as_expected(&run, sagas[0], &event, &DRIVING_EXAM).await;
    run.assert_services_running();
}

// ---------------------------------------------------------------------------------------------
// Failures
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transient_failure_is_retried_after_a_backoff_and_takes_effect_once() {
    // MAGDA (the household step, required) is served by a process of its own that fails
    // every call with a retryable error; the birth's other handlers by another.
    const FLAKY: &str = "magda.household";
    let catalog = Catalog::builtin().unwrap();
    let birth = catalog.latest("birth").unwrap();
    let others: Vec<&str> = birth
        .handlers()
        .into_iter()
        .filter(|h| *h != FLAKY)
        .collect();
    let mut run = Run::start(
        "e2e-transient",
        TWO_YEARS_S,
        &[
            ("workers", vec!["--handlers".into(), others.join(",")]),
            (
                "magda-down",
                vec![
                    "--handlers".into(),
                    FLAKY.into(),
                    "--handler-config".into(),
                    format!("{FLAKY}:transient=1"),
                ],
            ),
        ],
    )
    .await;
    let event = corpus::valid_birth();
    let saga = run.publish(std::slice::from_ref(&event)).await[0];

    // The first attempt fails and a retry is scheduled; then MAGDA is back (the failing
    // process stops, a healthy one takes its queue).
    run.watch
        .until(DEADLINE, |w| {
            (!w.has(
                saga,
                |e| matches!(e, Event::StepRetryScheduled(r) if r.step_id == "household"),
            ))
            .then(|| ("the household step's retry".to_owned(), vec![saga]))
        })
        .await;
    let mut down = run.workers.pop().unwrap();
    let status = tokio::task::block_in_place(|| down.terminate()).unwrap();
    assert!(
        status.success(),
        "the failing workers stop cleanly: {status}"
    );
    let back = run.world.workers("magda-back", &["--handlers", FLAKY]);
    run.workers.push(back);

    run.watch.until_ended(&[saga], DEADLINE).await;
    let events = run.world.saga_events(saga).await;
    let state = run.catalog.rebuild(&event, &events).unwrap();
    assert_eq!(state.status(), SagaStatus::Completed, "{events:#?}");

    // The household step's history: attempt 1 fails (retryable), a retry is scheduled after a
    // backoff, the next attempt starts no earlier, …, the last attempt succeeds.
    let household: Vec<&Event> = events
        .iter()
        .filter_map(|e| e.event.as_ref())
        .filter(|e| match e {
            Event::StepScheduled(s) => s.step_id == "household",
            Event::StepFailed(s) => s.step_id == "household",
            Event::StepRetryScheduled(s) => s.step_id == "household",
            Event::StepSucceeded(s) => s.step_id == "household",
            _ => false,
        })
        .collect();
    let failures = events_of(&events, |e| match e {
        Event::StepFailed(f) if f.step_id == "household" => Some(f),
        _ => None,
    });
    assert!(!failures.is_empty(), "{household:#?}");
    let n = failures.len();
    assert_eq!(household.len(), 3 * n + 2, "{household:#?}");
    for (k, chunk) in household.chunks(3).enumerate() {
        let attempt = k as u32 + 1;
        match chunk {
            [
                Event::StepScheduled(s),
                Event::StepFailed(f),
                Event::StepRetryScheduled(r),
            ] => {
                assert_eq!(
                    (s.attempt, f.attempt, r.next_attempt),
                    (attempt, attempt, attempt + 1)
                );
                assert!(f.retryable, "{f:?}");
                assert_eq!(
                    f.error_code,
                    levensloop_workers::error_codes::TARGET_UNAVAILABLE
                );
            }
            [Event::StepScheduled(s), Event::StepSucceeded(x)] => {
                assert_eq!((s.attempt, x.attempt), (attempt, attempt));
                assert_eq!(attempt as usize, n + 1);
            }
            other => panic!("unexpected household history at attempt {attempt}: {other:#?}"),
        }
    }
    // The backoff: the first retry was due at least base × (1 − jitter) = 1.6 s after the
    // failure, and the second attempt started no earlier.
    let at = |pick: &dyn Fn(&Event) -> bool| {
        let e = events
            .iter()
            .find(|e| e.event.as_ref().is_some_and(pick))
            .unwrap();
        e.occurred_at.unwrap()
    };
    let failed_at = at(&|e| matches!(e, Event::StepFailed(f) if f.step_id == "household"));
    let retry = events_of(&events, |e| match e {
        Event::StepRetryScheduled(r) if r.step_id == "household" => Some(r),
        _ => None,
    })[0];
    let due = retry.due_at.unwrap();
    let second =
        at(&|e| matches!(e, Event::StepScheduled(s) if s.step_id == "household" && s.attempt == 2));
    let millis =
        |t: &levensloop_proto::types::Timestamp| t.seconds * 1000 + i64::from(t.nanos) / 1_000_000;
    let backoff_ms = millis(&due) - millis(&failed_at);
    assert!(
        (1_600..=2_400).contains(&backoff_ms),
        "the first retry is due 2 s ± 20 % after the failure, not {backoff_ms} ms"
    );
    assert!(
        millis(&second) >= millis(&due),
        "the second attempt starts when it is due"
    );

    // One effect, of the attempt that succeeded; the whole saga as a birth in Gent.
    assert_completed_ledger_despite_failures(&run, saga, &BIRTH_IN_GENT, &events).await;
    let effect = run
        .effects(saga)
        .await
        .into_iter()
        .find(|e| e.step_id == "household")
        .unwrap();
    assert_eq!(effect.attempt, n as u32 + 1);
    assert_eq!(effect.worker, "magda-back");
    run.assert_tasks_minimised(saga, &event, &run.effects(saga).await)
        .await;
    run.assert_services_running();
}

/// The ledger of a saga that completed after failures: exactly the expected effects.
async fn assert_completed_ledger_despite_failures(
    run: &Run,
    saga: Uuid,
    expected: &Expected,
    events: &[v1::SagaEvent],
) {
    let counts = effect_counts(&run.effects(saga).await);
    let want: BTreeMap<(String, String, bool), usize> = expected
        .effects
        .iter()
        .map(|(h, s)| (((*h).to_owned(), (*s).to_owned(), false), 1))
        .collect();
    assert_eq!(
        counts, want,
        "saga {saga}: exactly the expected effects, once each; its events: {events:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_required_steps_permanent_failure_undoes_the_completed_steps_in_reverse_order() {
    // The card producer refuses every order: production-order is required, so the saga undoes
    // what it did. Of the steps before it, prefill-application and payment declare a
    // compensation (void, refund); the candidate match and the ban check do not.
    let mut run = Run::with_workers(
        "e2e-compensate",
        TWO_YEARS_S,
        &[
            "--handler-config",
            "kaartproducent.production-order:permanent=1",
        ],
    )
    .await;
    let event = corpus::valid_driving_exam();
    let saga = run.publish(std::slice::from_ref(&event)).await[0];
    run.watch.until_ended(&[saga], DEADLINE).await;

    let events = run.world.saga_events(saga).await;
    let state = run.catalog.rebuild(&event, &events).unwrap();
    assert_eq!(state.status(), SagaStatus::Compensated, "{events:#?}");
    let ended = events_of(&events, |e| match e {
        Event::SagaCompensated(c) => Some(c),
        _ => None,
    });
    assert_eq!(ended.len(), 1);
    assert_eq!(ended[0].failed_step_id, "production-order");
    let failed = events_of(&events, |e| match e {
        Event::StepFailed(f) => Some(f),
        _ => None,
    });
    assert_eq!(failed.len(), 1, "one failure, not retried: {failed:?}");
    assert_eq!(failed[0].step_id, "production-order");
    assert!(!failed[0].retryable);
    assert!(
        events_of(&events, |e| match e {
            Event::StepRetryScheduled(r) => Some(r),
            _ => None,
        })
        .is_empty(),
        "a permanent failure is not retried"
    );

    // Completed in the order prefill → payment, undone in the reverse order.
    let succeeded: Vec<&str> = events_of(&events, |e| match e {
        Event::StepSucceeded(s) => Some(s),
        _ => None,
    })
    .into_iter()
    .map(|s| s.step_id.as_str())
    .collect();
    assert_eq!(
        succeeded,
        [
            "match-candidate",
            "check-driving-bans",
            "prefill-application",
            "payment"
        ]
    );
    let compensated: Vec<&str> = events_of(&events, |e| match e {
        Event::StepCompensated(s) => Some(s),
        _ => None,
    })
    .into_iter()
    .map(|s| s.step_id.as_str())
    .collect();
    assert_eq!(compensated, ["payment", "prefill-application"]);
    for step in ["payment", "prefill-application"] {
        assert_eq!(
            state.step(step).map(|s| s.phase),
            Some(StepPhase::Compensated)
        );
    }
    for step in ["match-candidate", "check-driving-bans"] {
        assert_eq!(
            state.step(step).map(|s| s.phase),
            Some(StepPhase::Succeeded)
        );
    }

    // The ledger: the four steps done, the refund and the void, and nothing of the failed
    // step or of anything after it.
    let effects = run.effects(saga).await;
    let counts = effect_counts(&effects);
    let want: BTreeMap<(String, String, bool), usize> = [
        ("kruispuntbank-rijbewijzen.match", "match-candidate", false),
        (
            "kruispuntbank-rijbewijzen.check-bans",
            "check-driving-bans",
            false,
        ),
        (
            "kruispuntbank-rijbewijzen.prefill",
            "prefill-application",
            false,
        ),
        ("gemeente.betaalverzoek.rijbewijs", "payment", false),
        ("gemeente.betaalverzoek.refund", "payment", true),
        (
            "kruispuntbank-rijbewijzen.void",
            "prefill-application",
            true,
        ),
    ]
    .into_iter()
    .map(|(h, s, c)| ((h.to_owned(), s.to_owned(), c), 1))
    .collect();
    assert_eq!(counts, want, "{events:#?}");
    for effect in &effects {
        assert_eq!(
            effect.idempotency_key,
            idempotency_key(saga, &effect.step_id, effect.compensation)
        );
    }
    let recorded = |handler: &str| {
        effects
            .iter()
            .find(|e| e.handler == handler)
            .unwrap()
            .recorded_at
    };
    assert!(
        recorded("gemeente.betaalverzoek.refund") < recorded("kruispuntbank-rijbewijzen.void"),
        "the refund happens before the application is voided"
    );
    assert!(
        recorded("kruispuntbank-rijbewijzen.prefill")
            < recorded("gemeente.betaalverzoek.rijbewijs")
    );
    run.assert_tasks_minimised(saga, &event, &effects).await;
    run.assert_services_running();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_optional_steps_permanent_failure_does_not_fail_the_saga() {
    // Gent's social services refuse the birth premium; the premium is optional.
    let mut run = Run::with_workers(
        "e2e-optional",
        TWO_YEARS_S,
        &["--handler-config", "gemeente.geboortepremie:permanent=1"],
    )
    .await;
    let event = corpus::valid_birth();
    let saga = run.publish(std::slice::from_ref(&event)).await[0];
    run.watch.until_ended(&[saga], DEADLINE).await;

    let events = run.world.saga_events(saga).await;
    let state = run.catalog.rebuild(&event, &events).unwrap();
    assert_eq!(state.status(), SagaStatus::Completed, "{events:#?}");
    assert_eq!(
        state.step("municipal-birth-premium").map(|s| s.phase),
        Some(StepPhase::Failed)
    );
    let failed = events_of(&events, |e| match e {
        Event::StepFailed(f) => Some(f),
        _ => None,
    });
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert_eq!(failed[0].step_id, "municipal-birth-premium");
    assert!(!failed[0].retryable);
    let undone = events
        .iter()
        .filter(|e| {
            matches!(
                e.event,
                Some(
                    Event::StepRetryScheduled(_)
                        | Event::StepCompensationScheduled(_)
                        | Event::StepCompensated(_)
                        | Event::SagaCompensated(_)
                )
            )
        })
        .count();
    assert_eq!(undone, 0, "no retry, nothing undone: {events:#?}");
    // The welcome message, which needs the premium step, still went out.
    assert_eq!(
        state.step("welcome-message").map(|s| s.phase),
        Some(StepPhase::Succeeded)
    );

    // The ledger: a birth in Gent without the premium.
    let without_premium = Expected {
        definition: "birth",
        effects: &[
            ("dabs.verify-birth-act", "verify-act"),
            ("magda.household", "household"),
            ("bevolkingsregister.check-enrolment", "check-enrolment"),
            ("groeipakket.startbedrag", "groeipakket-startbedrag"),
            ("mutualiteit.affiliation-request", "mutuality"),
            ("berichtencentrum.welcome-message", "welcome-message"),
            ("bibliotheek.boekstart", "boekstart-package"),
            ("bibliotheek.boekstart", "library-invitation"),
        ],
        internal: &[],
        not_planned: &[],
        skipped: &[],
    };
    assert_completed_ledger_despite_failures(&run, saga, &without_premium, &events).await;
    run.assert_tasks_minimised(saga, &event, &run.effects(saga).await)
        .await;
    run.assert_services_running();
}
