//! The orchestrator against a real nats-server and gateway: one saga per life event, run to
//! completion; compensation in reverse order; a restart in the middle loses nothing; a retry
//! due while the orchestrator is down happens after it restarts.

// A failed unwrap is a failed test, with the error in its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use futures::StreamExt;
use levensloop_bus::{Bus, QueueLimits, decode_task};
use levensloop_gateway::corpus;
use levensloop_gateway::server::{GatewayConfig, RunningGateway};
use levensloop_orchestrator::clock::Clock;
use levensloop_orchestrator::{OrchestratorConfig, RunningOrchestrator, start};
use levensloop_proto::saga_id;
use levensloop_proto::v1::ingest_service_client::IngestServiceClient;
use levensloop_proto::v1::{self, PublishOutcome, PublishRequest, saga_event::Event};
use levensloop_sagas::{Catalog, Definition};
use levensloop_store::{EventStore, JetStreamConfig, JetStreamStore, ReadFrom, StreamName};
use levensloop_testing::NatsServer;
use prost::Message;
use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use uuid::Uuid;

const WAIT: Duration = Duration::from_secs(60);

/// A short licence saga: three steps in a chain, the first two undoable.
const LICENCE: &str = r#"
name = "driving-exam-passed"
version = 1
life_event = "driving-exam-passed"
person = "candidate.insz"
municipality = "residence_municipality_nis_code"
on_death = "cancel"

[defaults]
timeout = "20s"
retry = { max_attempts = 3, backoff_base = "1s", backoff_max = "2s", jitter = 0.0 }

[[steps]]
id = "prefill"
handler = "test.prefill"
entitled = ["candidate.insz"]
compensation = "test.prefill.void"

[[steps]]
id = "payment"
handler = "test.payment"
needs = ["prefill"]
entitled = ["candidate.insz"]
compensation = "test.payment.refund"

[[steps]]
id = "order"
handler = "test.order"
needs = ["payment"]
entitled = ["candidate.insz", "licence_category"]
"#;

const HANDLERS: [&str; 5] = [
    "test.prefill",
    "test.prefill.void",
    "test.payment",
    "test.payment.refund",
    "test.order",
];

/// The licence saga with a wait of six months between the prefill and the order.
const LICENCE_WITH_WAIT: &str = r#"
name = "driving-exam-passed"
version = 1
life_event = "driving-exam-passed"
person = "candidate.insz"
municipality = "residence_municipality_nis_code"

[defaults]
timeout = "20s"
retry = { max_attempts = 3, backoff_base = "1s", backoff_max = "2s", jitter = 0.0 }

[[steps]]
id = "prefill"
handler = "test.prefill"
entitled = ["candidate.insz"]

[[steps]]
id = "six-months"
kind = "wait"
needs = ["prefill"]
wait = { duration = "6 months" }

[[steps]]
id = "order"
handler = "test.order"
needs = ["six-months"]
entitled = ["candidate.insz"]
"#;

/// The licence saga with the hand-over at the counter, done by a person.
const LICENCE_WITH_HAND_OVER: &str = r#"
name = "driving-exam-passed"
version = 1
life_event = "driving-exam-passed"
person = "candidate.insz"
municipality = "residence_municipality_nis_code"

[defaults]
timeout = "20s"
retry = { max_attempts = 3, backoff_base = "1s", backoff_max = "2s", jitter = 0.0 }

[[steps]]
id = "order"
handler = "test.order"
entitled = ["candidate.insz"]

[[steps]]
id = "hand-over"
kind = "human"
handler = "test.counter"
needs = ["order"]
timeout = "3 months"
on_timeout = "fail"
entitled = ["candidate.insz", "candidate.family_name"]
"#;

fn catalog() -> Catalog {
    catalog_of(LICENCE)
}

fn catalog_of(definition: &str) -> Catalog {
    let mut catalog = Catalog::new();
    catalog
        .insert(Definition::from_toml_str(definition).unwrap())
        .unwrap();
    catalog
}

/// How the stand-in target systems answer: per handler and attempt.
type Script = Arc<dyn Fn(&str, u32) -> Option<v1::task_result::Outcome> + Send + Sync>;

fn completed() -> Option<v1::task_result::Outcome> {
    Some(v1::task_result::Outcome::Completed(
        v1::TaskCompleted::default(),
    ))
}

fn failed(retryable: bool) -> Option<v1::task_result::Outcome> {
    Some(v1::task_result::Outcome::Failed(v1::TaskFailed {
        retryable,
        reason: "scripted".to_owned(),
        error_code: "SCRIPTED".to_owned(),
    }))
}

/// What the stand-in target systems saw, in order: (handler, idempotency key, attempt).
type Seen = Arc<Mutex<Vec<(String, String, u32)>>>;

/// Stand-in target systems: answer every task of the test handlers as scripted.
fn responders(bus: &Bus, script: Script, seen: Seen) -> Vec<tokio::task::JoinHandle<()>> {
    responders_for(bus, &HANDLERS.map(str::to_owned), script, seen)
}

/// Stand-in target systems for these handlers.
fn responders_for(
    bus: &Bus,
    handlers: &[String],
    script: Script,
    seen: Seen,
) -> Vec<tokio::task::JoinHandle<()>> {
    handlers
        .iter()
        .map(|handler| {
            let (bus, script, seen) = (bus.clone(), script.clone(), seen.clone());
            let handler = handler.clone();
            tokio::spawn(async move {
                let consumer = bus
                    .handler_queue(&handler, QueueLimits::default())
                    .await
                    .unwrap();
                let mut messages = consumer.messages().await.unwrap();
                while let Some(Ok(message)) = messages.next().await {
                    let task = decode_task(&message).unwrap();
                    seen.lock().unwrap().push((
                        task.handler.clone(),
                        task.idempotency_key.clone(),
                        task.attempt,
                    ));
                    // No outcome: this target (a person) does not answer.
                    let Some(outcome) = script(&task.handler, task.attempt) else {
                        message.ack().await.unwrap();
                        continue;
                    };
                    let result = v1::TaskResult {
                        task_id: task.task_id.clone(),
                        idempotency_key: task.idempotency_key.clone(),
                        attempt: task.attempt,
                        outcome: Some(outcome),
                    };
                    bus.publish_result(&handler, &result, &task.traceparent, &task.tracestate)
                        .await
                        .unwrap();
                    message.ack().await.unwrap();
                }
            })
        })
        .collect()
}

struct World {
    server: NatsServer,
    gateway: RunningGateway,
    bus: Bus,
    store: JetStreamStore,
}

impl World {
    async fn start() -> Self {
        let server = NatsServer::start().unwrap();
        let gateway = levensloop_gateway::server::start(GatewayConfig {
            nats_url: server.url(),
            grpc_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            fixed_now: Some(corpus::fixed_now()),
            ..GatewayConfig::default()
        })
        .await
        .unwrap();
        let bus = Bus::connect(&server.url(), 1).await.unwrap();
        let store = JetStreamStore::connect(&server.url(), JetStreamConfig::default())
            .await
            .unwrap();
        Self {
            server,
            gateway,
            bus,
            store,
        }
    }

    async fn orchestrator(&self) -> RunningOrchestrator {
        self.orchestrator_with(catalog(), Clock::system()).await
    }

    async fn orchestrator_with(&self, catalog: Catalog, clock: Clock) -> RunningOrchestrator {
        start(
            OrchestratorConfig {
                nats_url: self.server.url(),
                shards: 8,
                clock,
                ..OrchestratorConfig::default()
            },
            catalog,
        )
        .await
        .unwrap()
    }

    /// Publishes `n` driving exams through the gateway; returns their saga ids.
    async fn publish_exams(&self, n: usize, tag: &str) -> Vec<Uuid> {
        let mut client = IngestServiceClient::connect(format!("http://{}", self.gateway.grpc_addr))
            .await
            .unwrap();
        let mut sagas = Vec::new();
        for i in 0..n {
            let mut event = corpus::valid_driving_exam();
            event.id = format!("exam-{tag}-{i}");
            let ack = client
                .publish(PublishRequest {
                    event: Some(v1::publish_request::Event::LifeEvent(event.clone())),
                    sequence: 0,
                })
                .await
                .unwrap()
                .into_inner();
            assert_eq!(ack.outcome(), PublishOutcome::Accepted);
            sagas.push(saga_id(&event.source, &event.id));
        }
        sagas
    }

    /// Waits until every saga has ended; returns each one's stored events.
    async fn await_ended(&self, sagas: &[Uuid]) -> BTreeMap<Uuid, Vec<v1::SagaEvent>> {
        let mut subscription = self
            .store
            .subscribe("saga", &format!("watch-{}", Uuid::new_v4().simple()))
            .await
            .unwrap();
        let mut ended = std::collections::BTreeSet::new();
        while ended.len() < sagas.len() {
            let delivery = tokio::time::timeout(WAIT, subscription.next())
                .await
                .expect("every saga ends within the timeout")
                .unwrap();
            for recorded in &delivery.events {
                let event = v1::SagaEvent::decode(recorded.data.as_ref()).unwrap();
                if matches!(
                    event.event,
                    Some(
                        Event::SagaCompleted(_) | Event::SagaCompensated(_) | Event::SagaFailed(_)
                    )
                ) {
                    ended.insert(Uuid::parse_str(&event.saga_id).unwrap());
                }
            }
            delivery.ack().await.unwrap();
        }
        let mut out = BTreeMap::new();
        for saga in sagas {
            let slice = self
                .store
                .read(
                    &StreamName::new("saga", saga.to_string()).unwrap(),
                    ReadFrom::Start,
                )
                .await
                .unwrap();
            let events = slice
                .events
                .iter()
                .map(|r| v1::SagaEvent::decode(r.data.as_ref()).unwrap())
                .collect();
            out.insert(*saga, events);
        }
        out
    }
}

/// Follows the saga category until `n` events match.
async fn await_events(store: &JetStreamStore, name: &str, n: usize, pick: impl Fn(&Event) -> bool) {
    let mut subscription = store.subscribe("saga", name).await.unwrap();
    let mut matched = 0;
    while matched < n {
        let delivery = tokio::time::timeout(WAIT, subscription.next())
            .await
            .expect("the awaited saga events within the timeout")
            .unwrap();
        for r in &delivery.events {
            let e = v1::SagaEvent::decode(r.data.as_ref()).unwrap();
            if e.event.as_ref().is_some_and(&pick) {
                matched += 1;
            }
        }
        delivery.ack().await.unwrap();
    }
}

fn count(events: &[v1::SagaEvent], pick: impl Fn(&Event) -> bool) -> usize {
    events
        .iter()
        .filter(|e| e.event.as_ref().is_some_and(&pick))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_life_event_gets_one_saga_that_completes_each_step_once() {
    let world = World::start().await;
    let seen: Seen = Arc::default();
    let _responders = responders(&world.bus, Arc::new(|_, _| completed()), seen.clone());
    let orchestrator = world.orchestrator().await;
    let sagas = world.publish_exams(40, "happy").await;
    let histories = world.await_ended(&sagas).await;
    for (saga, events) in &histories {
        assert_eq!(
            count(events, |e| matches!(e, Event::SagaStarted(_))),
            1,
            "{saga}"
        );
        assert_eq!(
            count(events, |e| matches!(e, Event::StepSucceeded(_))),
            3,
            "{saga}"
        );
        assert_eq!(
            count(events, |e| matches!(e, Event::SagaCompleted(_))),
            1,
            "{saga}"
        );
    }
    // Each step reached its target once per saga (no retries were needed).
    let seen = seen.lock().unwrap().clone();
    let mut per_key: HashMap<String, usize> = HashMap::new();
    for (_, key, _) in &seen {
        *per_key.entry(key.clone()).or_default() += 1;
    }
    assert_eq!(per_key.len(), 40 * 3);
    assert!(
        per_key.values().all(|n| *n == 1),
        "each task delivered once"
    );
    orchestrator.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_permanent_failure_compensates_in_reverse_order_of_completion() {
    let world = World::start().await;
    let seen: Seen = Arc::default();
    let script: Script = Arc::new(|handler, _| {
        if handler == "test.order" {
            failed(false)
        } else {
            completed()
        }
    });
    let _responders = responders(&world.bus, script, seen.clone());
    let orchestrator = world.orchestrator().await;
    let sagas = world.publish_exams(5, "compensate").await;
    let histories = world.await_ended(&sagas).await;
    for (saga, events) in &histories {
        assert_eq!(
            count(events, |e| matches!(e, Event::SagaCompensated(_))),
            1,
            "{saga}"
        );
        let compensated: Vec<String> = events
            .iter()
            .filter_map(|e| match &e.event {
                Some(Event::StepCompensated(c)) => Some(c.step_id.clone()),
                _ => None,
            })
            .collect();
        assert_eq!(compensated, ["payment", "prefill"], "{saga}");
    }
    // The target systems saw the refund before the void, for every saga.
    let seen = seen.lock().unwrap().clone();
    for saga in &sagas {
        let order: Vec<&str> = seen
            .iter()
            .filter(|(_, key, _)| key.starts_with(&saga.to_string()))
            .map(|(h, _, _)| h.as_str())
            .collect();
        assert_eq!(
            order,
            [
                "test.prefill",
                "test.payment",
                "test.order",
                "test.payment.refund",
                "test.prefill.void"
            ],
            "{saga}"
        );
    }
    orchestrator.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_restart_in_the_middle_loses_nothing_and_repeats_nothing() {
    let world = World::start().await;
    // The orchestrator starts the sagas and dispatches their first tasks while no target
    // system answers; then it stops.
    let first = world.orchestrator().await;
    let sagas = world.publish_exams(30, "restart").await;
    // Stop once every saga has stored its first step (whether or not its task made it to the
    // queue before the stop: recovery re-dispatches it either way).
    await_events(&world.store, "restart-watch", sagas.len(), |e| {
        matches!(e, Event::StepScheduled(_))
    })
    .await;
    first.shutdown().await;

    // The targets answer the queued tasks while no orchestrator runs; a new one finishes.
    let seen: Seen = Arc::default();
    let _responders = responders(&world.bus, Arc::new(|_, _| completed()), seen.clone());
    let second = world.orchestrator().await;
    assert_eq!(second.recovered, 30, "every running saga recovered");
    let histories = world.await_ended(&sagas).await;
    for (saga, events) in &histories {
        assert_eq!(
            count(events, |e| matches!(e, Event::SagaCompleted(_))),
            1,
            "{saga}"
        );
        assert_eq!(
            count(events, |e| matches!(e, Event::StepSucceeded(_))),
            3,
            "{saga}"
        );
    }
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 30 * 3, "each task reached its target once");
    second.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_retry_due_while_the_orchestrator_is_down_happens_after_it_restarts() {
    let world = World::start().await;
    let seen: Seen = Arc::default();
    // The prefill fails once, retryably; the retry is due a second later.
    let script: Script = Arc::new(|handler, attempt| {
        if handler == "test.prefill" && attempt == 1 {
            failed(true)
        } else {
            completed()
        }
    });
    let _responders = responders(&world.bus, script, seen.clone());
    let first = world.orchestrator().await;
    let sagas = world.publish_exams(3, "retry").await;
    // Wait until every saga has stored its retry, then stop the orchestrator.
    await_events(&world.store, "retry-watch", sagas.len(), |e| {
        matches!(e, Event::StepRetryScheduled(_))
    })
    .await;
    first.shutdown().await;
    let second = world.orchestrator().await;
    let histories = world.await_ended(&sagas).await;
    for (saga, events) in &histories {
        assert_eq!(
            count(events, |e| matches!(e, Event::SagaCompleted(_))),
            1,
            "{saga}"
        );
        let prefill_attempts: Vec<u32> = events
            .iter()
            .filter_map(|e| match &e.event {
                Some(Event::StepScheduled(s)) if s.step_id == "prefill" => Some(s.attempt),
                _ => None,
            })
            .collect();
        assert_eq!(prefill_attempts, [1, 2], "{saga}");
    }
    second.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_wait_of_months_survives_restarts_and_fires_once() {
    let world = World::start().await;
    let seen: Seen = Arc::default();
    let _responders = responders(&world.bus, Arc::new(|_, _| completed()), seen.clone());
    let clock = Clock::manual(chrono::Utc::now());
    let first = world
        .orchestrator_with(catalog_of(LICENCE_WITH_WAIT), clock.clone())
        .await;
    let sagas = world.publish_exams(4, "wait").await;
    await_events(&world.store, "wait-watch", sagas.len(), |e| {
        matches!(e, Event::WaitStarted(_))
    })
    .await;
    first.shutdown().await;

    // Three months pass with a new orchestrator: the wait holds, nothing is ordered.
    let second = world
        .orchestrator_with(catalog_of(LICENCE_WITH_WAIT), clock.clone())
        .await;
    assert_eq!(second.recovered, sagas.len());
    clock.advance(chrono::Duration::days(91));
    second.shutdown().await;

    // Another orchestrator; the six months end while it runs.
    let third = world
        .orchestrator_with(catalog_of(LICENCE_WITH_WAIT), clock.clone())
        .await;
    clock.advance(chrono::Duration::days(92));
    let histories = world.await_ended(&sagas).await;
    for (saga, events) in &histories {
        assert_eq!(
            count(events, |e| matches!(e, Event::WaitElapsed(_))),
            1,
            "{saga}"
        );
        assert_eq!(
            count(events, |e| matches!(e, Event::SagaCompleted(_))),
            1,
            "{saga}"
        );
        let elapsed_at = events
            .iter()
            .find(|e| matches!(e.event, Some(Event::WaitElapsed(_))))
            .and_then(|e| e.occurred_at)
            .unwrap();
        let started_at = events
            .iter()
            .find(|e| matches!(e.event, Some(Event::WaitStarted(_))))
            .and_then(|e| e.occurred_at)
            .unwrap();
        let days = (elapsed_at.seconds - started_at.seconds) / 86_400;
        assert!((181..=184).contains(&days), "{saga}: waited {days} days");
    }
    let orders = seen
        .lock()
        .unwrap()
        .iter()
        .filter(|(h, _, _)| h == "test.order")
        .count();
    assert_eq!(
        orders,
        sagas.len(),
        "each order placed once, after the wait"
    );
    third.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_death_cancels_the_persons_waiting_move_and_undoes_its_provisional_steps() {
    let world = World::start().await;
    let catalog = Catalog::builtin().unwrap();
    let handlers: Vec<String> = catalog
        .definitions()
        .flat_map(|d| {
            d.handlers()
                .into_iter()
                .map(str::to_owned)
                .collect::<Vec<_>>()
        })
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    let seen: Seen = Arc::default();
    // Every target answers at once, except the police: the check is not done yet.
    let script: Script = Arc::new(|handler, _| {
        if handler == "gemeente.bevolking.woonstvaststelling" {
            None
        } else {
            completed()
        }
    });
    let _responders = responders_for(&world.bus, &handlers, script, seen.clone());
    let orchestrator = world.orchestrator_with(catalog, Clock::system()).await;
    let mut client = IngestServiceClient::connect(format!("http://{}", world.gateway.grpc_addr))
        .await
        .unwrap();
    let mut publish = async |event: v1::LifeEvent| {
        let ack = client
            .publish(PublishRequest {
                event: Some(v1::publish_request::Event::LifeEvent(event.clone())),
                sequence: 0,
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(ack.outcome(), PublishOutcome::Accepted, "{ack:?}");
        saga_id(&event.source, &event.id)
    };

    // Jonas Claes moves to Leuven; the move waits for the police check.
    let moved = corpus::valid_change_of_address();
    let move_saga = publish(moved.clone()).await;
    await_events(
        &world.store,
        "police-watch",
        1,
        |e| matches!(e, Event::StepScheduled(s) if s.step_id == "police-check"),
    )
    .await;

    // He dies before the check is done.
    let mut death = corpus::valid_death();
    death.id = "dabs-death-claes".to_owned();
    death.subject = "85073003328".to_owned();
    if let Some(v1::life_event::Payload::Death(d)) = &mut death.payload {
        d.deceased = moved.payload.as_ref().and_then(|p| match p {
            v1::life_event::Payload::ChangeOfAddress(m) => m.person.clone(),
            _ => None,
        });
        d.date_of_death = "2026-11-10".to_owned();
    }
    let death_saga = publish(death).await;

    let histories = world.await_ended(&[move_saga]).await;
    let events = &histories[&move_saga];
    let cancelled: Vec<&v1::SagaCancelled> = events
        .iter()
        .filter_map(|e| match &e.event {
            Some(Event::SagaCancelled(c)) => Some(c),
            _ => None,
        })
        .collect();
    let police: Vec<_> = seen
        .lock()
        .unwrap()
        .iter()
        .filter(|(_, k, _)| k.contains("police"))
        .cloned()
        .collect();
    assert_eq!(
        cancelled.len(),
        1,
        "the move is cancelled once; police tasks seen: {police:?}"
    );
    assert_eq!(cancelled[0].cause_saga_id, death_saga.to_string());
    let succeeded: Vec<String> = events
        .iter()
        .filter_map(|e| match &e.event {
            Some(Event::StepSucceeded(s)) => Some(s.step_id.clone()),
            _ => None,
        })
        .collect();
    let compensated: Vec<String> = events
        .iter()
        .filter_map(|e| match &e.event {
            Some(Event::StepCompensated(s)) => Some(s.step_id.clone()),
            _ => None,
        })
        .collect();
    assert!(
        compensated.iter().any(|s| s.starts_with("provisional")),
        "provisional steps undone: {compensated:?} (succeeded: {succeeded:?})"
    );
    // Undone in reverse order of completion.
    let order: Vec<&String> = succeeded
        .iter()
        .filter(|s| compensated.contains(s))
        .rev()
        .collect();
    assert_eq!(order, compensated.iter().collect::<Vec<_>>());
    // The police check never completed.
    assert!(!succeeded.contains(&"police-check".to_owned()));
    orchestrator.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_human_step_waits_on_its_work_list_until_a_person_answers() {
    let world = World::start().await;
    let seen: Seen = Arc::default();
    let handlers = ["test.order".to_owned(), "test.counter".to_owned()];
    let _responders = responders_for(
        &world.bus,
        &handlers,
        Arc::new(|_, _| completed()),
        seen.clone(),
    );
    let orchestrator = world
        .orchestrator_with(catalog_of(LICENCE_WITH_HAND_OVER), Clock::system())
        .await;
    let sagas = world.publish_exams(3, "counter").await;
    let histories = world.await_ended(&sagas).await;
    for (saga, events) in &histories {
        let completed_by: Vec<&v1::HumanTaskCompleted> = events
            .iter()
            .filter_map(|e| match &e.event {
                Some(Event::HumanTaskCompleted(h)) => Some(h),
                _ => None,
            })
            .collect();
        assert_eq!(completed_by.len(), 1, "{saga}");
        assert_eq!(completed_by[0].step_id, "hand-over");
        assert_eq!(
            count(events, |e| matches!(e, Event::SagaCompleted(_))),
            1,
            "{saga}"
        );
    }
    // The clerk's work list got each hand-over once, after the order.
    let seen = seen.lock().unwrap().clone();
    for saga in &sagas {
        let order: Vec<&str> = seen
            .iter()
            .filter(|(_, key, _)| key.starts_with(&saga.to_string()))
            .map(|(h, _, _)| h.as_str())
            .collect();
        assert_eq!(order, ["test.order", "test.counter"], "{saga}");
    }
    orchestrator.shutdown().await;
}
