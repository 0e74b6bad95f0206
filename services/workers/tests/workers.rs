//! The built-in workers against a real nats-server: answers on the results stream, one
//! effect per idempotency key however often a task arrives (retries, redeliveries after a
//! worker died, racing deliveries), shared queues, the in-flight and rate limits across
//! instances, failure kinds, malformed messages.

// A failed unwrap is a failed test, with the error in its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use levensloop_bus::{Bus, TASKS_STREAM, consumer_name, slot_interval, task_subject};
use levensloop_proto::v1;
use levensloop_sagas::Catalog;
use levensloop_testing::NatsServer;
use levensloop_workers::sim::HandlerSpec;
use levensloop_workers::{Outcome, WorkerEvent, Workers, WorkersConfig, case_number, error_codes};
use prost::Message;
use std::collections::HashSet;
use std::time::{Duration, Instant, SystemTime};
use uuid::Uuid;

fn spec(s: &str) -> HandlerSpec {
    s.parse().unwrap()
}

async fn start(bus: &Bus, config: WorkersConfig) -> Workers {
    Workers::start(bus.clone(), &Catalog::builtin().unwrap(), config)
        .await
        .unwrap()
}

#[tokio::test]
async fn tasks_are_answered_on_the_results_stream_and_recorded() {
    let server = NatsServer::start().unwrap();
    let bus = Bus::connect(&server.url(), 1).await.unwrap();
    let premium = "gemeente.geboortepremie";
    let recover = "gemeente.geboortepremie.recover";
    // The catalog's limits (5/s for the birth premium) apply.
    let workers = start(&bus, config(&[premium, recover], "w1")).await;
    assert_eq!(workers.plans()[0].rate_per_second, Some(5.0));
    let results_consumer = bus.results_consumer().await.unwrap();

    let sagas: Vec<Uuid> = (0..4).map(|_| Uuid::new_v4()).collect();
    let mut tasks: Vec<v1::Task> = sagas
        .iter()
        .map(|s| task(premium, *s, "municipal-birth-premium", 1, false))
        .collect();
    tasks.push(task(recover, sagas[0], "municipal-birth-premium", 1, true));
    for t in &tasks {
        bus.publish_task(t).await.unwrap();
    }
    let results = results(&results_consumer, tasks.len()).await;
    for t in &tasks {
        let r = results.iter().find(|r| r.task_id == t.task_id).unwrap();
        assert_eq!(r.idempotency_key, t.idempotency_key);
        assert_eq!(r.attempt, 1);
        assert!(completed(r).is_some(), "{r:?}");
        assert_eq!(
            field(r, "case_number").unwrap(),
            case_number(&t.handler, &t.idempotency_key)
        );
        let action = if t.compensation { "undone" } else { "done" };
        assert_eq!(field(r, "action").unwrap(), action);
    }

    let ledger = workers.ledger();
    assert_eq!(ledger.count(premium).await.unwrap(), 4);
    assert_eq!(ledger.count(recover).await.unwrap(), 1);
    let counts = ledger.counts().await.unwrap();
    assert_eq!(counts.get(premium), Some(&4));
    assert_eq!(counts.get(recover), Some(&1));
    assert_eq!(counts.len(), 2);
    for t in &tasks {
        assert!(
            ledger
                .has_effect(&t.handler, &t.idempotency_key)
                .await
                .unwrap()
        );
    }
    assert!(
        !ledger
            .has_effect(premium, &tasks[4].idempotency_key)
            .await
            .unwrap(),
        "the compensation's key is not the step's"
    );
    let first_saga = ledger
        .effects_for_saga(&sagas[0].to_string())
        .await
        .unwrap();
    assert_eq!(first_saga.len(), 2);
    assert!(
        first_saga
            .iter()
            .any(|e| e.compensation && e.handler == recover)
    );
    assert!(first_saga.iter().all(|e| e.worker == "w1"));
    assert_eq!(ledger.effects(premium).await.unwrap().len(), 4);

    let stats = workers.shutdown().await;
    assert_eq!((stats.completed, stats.effects, stats.replayed), (5, 5, 0));
}

#[tokio::test]
async fn the_same_key_has_one_effect_however_often_the_task_arrives() {
    let server = NatsServer::start().unwrap();
    let bus = Bus::connect(&server.url(), 1).await.unwrap();
    let h = "test.once";
    let a = start(&bus, config(&[h], "a")).await;
    let b = start(&bus, config(&[h], "b")).await;
    let (mut ea, mut eb) = (a.events(), b.events());
    let results_consumer = bus.results_consumer().await.unwrap();

    // Ten attempts of one step (new task ids, the same idempotency key), and attempt 1
    // dispatched twice (stored once: same message id).
    let saga = Uuid::new_v4();
    let attempts: Vec<v1::Task> = (1..=10).map(|n| task(h, saga, "step", n, false)).collect();
    for t in attempts.iter().chain(attempts.first()) {
        bus.publish_task(t).await.unwrap();
    }
    let results = results(&results_consumer, 10).await;
    let numbers: HashSet<String> = results
        .iter()
        .map(|r| field(r, "case_number").unwrap())
        .collect();
    assert_eq!(numbers.len(), 1, "every attempt gets the recorded answer");
    let ids: HashSet<&str> = results.iter().map(|r| r.task_id.as_str()).collect();
    assert_eq!(ids.len(), 10, "each attempt answered under its own task id");

    assert_eq!(a.ledger().count(h).await.unwrap(), 1);
    let effect = a
        .ledger()
        .effect(h, &attempts[0].idempotency_key)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(effect.saga_id, saga.to_string());
    let (sa, sb) = (a.shutdown().await, b.shutdown().await);
    assert_eq!(sa.effects + sb.effects, 1);
    assert_eq!(sa.completed + sb.completed, 10);
    assert_eq!(sa.replayed + sb.replayed, 9);
    let mut recorded = 0;
    for events in [&mut ea, &mut eb] {
        while let Ok(e) = events.try_recv() {
            recorded += usize::from(matches!(e, WorkerEvent::EffectRecorded { .. }));
        }
    }
    assert_eq!(recorded, 1);
    assert_eq!(results_left(&bus).await, 0);
}

#[tokio::test]
async fn a_worker_that_dies_after_the_effect_leaves_one_effect() {
    let server = NatsServer::start().unwrap();
    let bus = Bus::connect(&server.url(), 1).await.unwrap();
    let h = "test.dies";
    let ack_wait = Duration::from_millis(800);
    // A acts, then hangs before answering; it is killed there.
    let doomed = start(
        &bus,
        WorkersConfig {
            ack_wait,
            ..config(&[h], "doomed")
        }
        .with_specs([spec("test.dies:stall_ms=60000")]),
    )
    .await;
    let mut events = doomed.events();
    let results_consumer = bus.results_consumer().await.unwrap();
    let t = task(h, Uuid::new_v4(), "step", 1, false);
    bus.publish_task(&t).await.unwrap();
    wait_for(&mut events, |e| {
        matches!(e, WorkerEvent::EffectRecorded { task_id, .. } if *task_id == t.task_id)
            .then_some(())
    })
    .await;
    doomed.crash();

    // The task comes back after the ack wait; the survivor answers from the ledger.
    let survivor = start(
        &bus,
        WorkersConfig {
            ack_wait,
            ..config(&[h], "survivor")
        },
    )
    .await;
    let mut events = survivor.events();
    let replayed = wait_for(&mut events, |e| match e {
        WorkerEvent::Answered {
            task_id, replayed, ..
        } if *task_id == t.task_id => Some(*replayed),
        _ => None,
    })
    .await;
    assert!(replayed, "answered from the ledger, not a second effect");
    let result = results(&results_consumer, 1).await.remove(0);
    assert_eq!(result.task_id, t.task_id);
    assert_eq!(
        field(&result, "case_number").unwrap(),
        case_number(h, &t.idempotency_key)
    );
    let effects = survivor.ledger().effects(h).await.unwrap();
    assert_eq!(effects.len(), 1);
    assert_eq!(effects[0].worker, "doomed");
    let stats = survivor.shutdown().await;
    assert_eq!((stats.effects, stats.replayed), (0, 1));
}

#[tokio::test]
async fn a_worker_that_dies_before_the_effect_leaves_the_effect_to_the_next() {
    let server = NatsServer::start().unwrap();
    let bus = Bus::connect(&server.url(), 1).await.unwrap();
    let h = "test.dies-early";
    let ack_wait = Duration::from_millis(800);
    let doomed = start(
        &bus,
        WorkersConfig {
            ack_wait,
            ..config(&[h], "doomed")
        }
        .with_specs([spec("test.dies-early:latency_ms=60000")]),
    )
    .await;
    let mut events = doomed.events();
    let t = task(h, Uuid::new_v4(), "step", 1, false);
    bus.publish_task(&t).await.unwrap();
    wait_for(&mut events, |e| {
        matches!(e, WorkerEvent::Calling { .. }).then_some(())
    })
    .await;
    doomed.crash();

    let survivor = start(
        &bus,
        WorkersConfig {
            ack_wait,
            ..config(&[h], "survivor")
        },
    )
    .await;
    let mut events = survivor.events();
    let replayed = wait_for(&mut events, |e| match e {
        WorkerEvent::Answered { replayed, .. } => Some(*replayed),
        _ => None,
    })
    .await;
    assert!(!replayed);
    let effects = survivor.ledger().effects(h).await.unwrap();
    assert_eq!(effects.len(), 1);
    assert_eq!(effects[0].worker, "survivor");
    survivor.shutdown().await;
}

#[tokio::test]
async fn a_redelivery_racing_a_slow_first_delivery_has_one_effect() {
    let server = NatsServer::start().unwrap();
    let bus = Bus::connect(&server.url(), 1).await.unwrap();
    let h = "test.slow";
    // The call takes longer than the ack wait: the task is delivered again while the first
    // worker is still on it.
    let slow = |instance| {
        WorkersConfig {
            ack_wait: Duration::from_millis(600),
            ..config(&[h], instance)
        }
        .with_specs([spec("test.slow:latency_ms=1000")])
    };
    let a = start(&bus, slow("a")).await;
    let b = start(&bus, slow("b")).await;
    let (mut ea, mut eb) = (a.events(), b.events());
    let t = task(h, Uuid::new_v4(), "step", 1, false);
    bus.publish_task(&t).await.unwrap();

    let mut answers = Vec::new();
    let mut calls = 0;
    tokio::time::timeout(TIMEOUT, async {
        while answers.len() < 2 {
            let event = tokio::select! {
                e = ea.recv() => e.unwrap(),
                e = eb.recv() => e.unwrap(),
            };
            match event {
                WorkerEvent::Calling { .. } => calls += 1,
                WorkerEvent::Answered { replayed, .. } => answers.push(replayed),
                _ => {}
            }
        }
    })
    .await
    .unwrap();
    assert!(calls >= 2, "delivered again while in progress");
    answers.sort();
    assert_eq!(
        answers,
        [false, true],
        "one effect, the other answered from the ledger"
    );
    assert_eq!(a.ledger().count(h).await.unwrap(), 1);
    let (sa, sb) = (a.shutdown().await, b.shutdown().await);
    assert_eq!(sa.effects + sb.effects, 1);
    // Both answers carry the task id: the results stream stored one.
    let results_consumer = bus.results_consumer().await.unwrap();
    let result = results(&results_consumer, 1).await.remove(0);
    assert_eq!(result.task_id, t.task_id);
    assert_eq!(results_left(&bus).await, 0);
}

#[tokio::test]
async fn two_instances_share_one_queue() {
    let server = NatsServer::start().unwrap();
    let bus = Bus::connect(&server.url(), 1).await.unwrap();
    let h = "test.shared";
    let shared = |instance| {
        config(&[h], instance).with_specs([spec("test.shared:in_flight=4,latency_ms=20")])
    };
    let a = start(&bus, shared("a")).await;
    let b = start(&bus, shared("b")).await;
    let results_consumer = bus.results_consumer().await.unwrap();
    for n in 0..40 {
        bus.publish_task(&task(h, Uuid::new_v4(), &format!("step-{n}"), 1, false))
            .await
            .unwrap();
    }
    let results = results(&results_consumer, 40).await;
    assert!(results.iter().all(|r| completed(r).is_some()));
    let (sa, sb) = (a.shutdown().await, b.shutdown().await);
    eprintln!(
        "shared queue: a answered {}, b answered {}",
        sa.completed, sb.completed
    );
    assert_eq!(sa.completed + sb.completed, 40);
    assert!(sa.completed > 0 && sb.completed > 0, "both took work");
    let effects = bus_ledger_count(&bus, h).await;
    assert_eq!(effects, 40);
}

async fn bus_ledger_count(bus: &Bus, handler: &str) -> usize {
    levensloop_workers::Ledger::open(bus.client().clone(), 1)
        .await
        .unwrap()
        .count(handler)
        .await
        .unwrap()
}

#[tokio::test]
async fn the_in_flight_limit_holds_across_instances() {
    const LIMIT: usize = 3;
    const TASKS: usize = 45;
    let server = NatsServer::start().unwrap();
    let h = "test.limited";
    let mut instances = Vec::new();
    for name in ["a", "b", "c"] {
        // One connection each, as separate processes would have.
        let bus = Bus::connect(&server.url(), 1).await.unwrap();
        let config = config(&[h], name).with_specs([spec(&format!(
            "{h}:in_flight={LIMIT},latency_ms=20,jitter_ms=20"
        ))]);
        let workers = start(&bus, config).await;
        let events = workers.events();
        instances.push((workers, events));
    }
    let bus = Bus::connect(&server.url(), 1).await.unwrap();
    for n in 0..TASKS {
        bus.publish_task(&task(h, Uuid::new_v4(), &format!("step-{n}"), 1, false))
            .await
            .unwrap();
    }
    // Work in progress: from the call to the answer (both inside delivery..ack).
    let mut marks: Vec<(Instant, i32)> = Vec::new();
    let mut answered = 0;
    let mut per_instance = vec![0; instances.len()];
    let (instances, receivers): (Vec<_>, Vec<_>) = instances.into_iter().unzip();
    let mut events = merge(receivers);
    tokio::time::timeout(TIMEOUT, async {
        while answered < TASKS {
            let (i, event) = events.recv().await.unwrap();
            match event {
                WorkerEvent::Calling { instant, .. } => marks.push((instant, 1)),
                WorkerEvent::Answered { instant, .. } => {
                    marks.push((instant, -1));
                    answered += 1;
                    per_instance[i] += 1;
                }
                _ => {}
            }
        }
    })
    .await
    .unwrap();
    // Ends before starts at the same instant: a slot freed and retaken is not an overlap.
    marks.sort_by_key(|(at, delta)| (*at, *delta));
    let mut now = 0;
    let mut most = 0;
    for (_, delta) in &marks {
        now += delta;
        most = most.max(now);
    }
    eprintln!("in flight: at most {most} of {LIMIT} at once; per instance {per_instance:?}");
    assert!(most <= LIMIT as i32, "{most} tasks in progress at once");
    assert_eq!(
        most, LIMIT as i32,
        "the limit was reached, so the test tested it"
    );
    for workers in instances {
        workers.shutdown().await;
    }
}

/// The most timestamps in any half-open one-second window.
fn max_per_second(times: &[SystemTime]) -> usize {
    let mut times = times.to_vec();
    times.sort();
    let (mut best, mut start) = (0, 0);
    for end in 0..times.len() {
        while times[end].duration_since(times[start]).unwrap() >= Duration::from_secs(1) {
            start += 1;
        }
        best = best.max(end - start + 1);
    }
    best
}

#[tokio::test]
async fn the_rate_limit_holds_across_instances_while_a_backlog_drains() {
    const RATE: usize = 20;
    const TASKS: usize = 50;
    let server = NatsServer::start().unwrap();
    let h = "test.rated";
    let mut instances = Vec::new();
    for name in ["a", "b"] {
        let bus = Bus::connect(&server.url(), 1).await.unwrap();
        let config =
            config(&[h], name).with_specs([spec(&format!("{h}:rate={RATE},in_flight=40"))]);
        let workers = start(&bus, config).await;
        let events = workers.events();
        instances.push((workers, events));
    }
    // The whole backlog at once.
    let bus = Bus::connect(&server.url(), 1).await.unwrap();
    for n in 0..TASKS {
        bus.publish_task(&task(h, Uuid::new_v4(), &format!("step-{n}"), 1, false))
            .await
            .unwrap();
    }
    let mut slots = Vec::new();
    let mut calls = Vec::new();
    let mut lateness = Vec::new();
    let mut per_instance = [0; 2];
    let (instances, receivers): (Vec<_>, Vec<_>) = instances.into_iter().unzip();
    let mut events = merge(receivers);
    tokio::time::timeout(TIMEOUT, async {
        while calls.len() < TASKS {
            let (i, event) = events.recv().await.unwrap();
            if let WorkerEvent::Calling { slot, at, .. } = event {
                let slot = slot.expect("a rate-limited handler calls in a slot");
                lateness.push(at.duration_since(slot).unwrap_or_default());
                slots.push(slot);
                calls.push(at);
                per_instance[i] += 1;
            }
        }
    })
    .await
    .unwrap();
    slots.sort();
    let interval = slot_interval(RATE as f64).unwrap();
    for pair in slots.windows(2) {
        assert!(pair[1].duration_since(pair[0]).unwrap() >= interval);
    }
    assert!(max_per_second(&slots) <= RATE);
    // What the target saw: the calls themselves.
    let calls_per_second = max_per_second(&calls);
    let span = {
        let mut c = calls.clone();
        c.sort();
        c[TASKS - 1].duration_since(c[0]).unwrap()
    };
    let lateness = lateness.iter().max().unwrap();
    eprintln!(
        "rate: {TASKS} calls at {RATE}/s over {span:?} (instances {per_instance:?}); most slots \
         in a second {}, most calls in a second {calls_per_second}, worst call lateness \
         {lateness:?}",
        max_per_second(&slots)
    );
    assert!(
        calls_per_second <= RATE,
        "the target saw {calls_per_second} calls in a second"
    );
    // The backlog drained at the rate: the slots span the whole schedule (the calls may
    // each lag their slot a little, so their span can be a few milliseconds shorter).
    let slot_span = slots[TASKS - 1].duration_since(slots[0]).unwrap();
    assert!(slot_span >= interval * (TASKS as u32 - 1));
    assert!(
        per_instance[0] > 0 && per_instance[1] > 0,
        "both instances called"
    );
    for workers in instances {
        workers.shutdown().await;
    }
}

#[tokio::test]
async fn failure_rates_give_the_right_result_kinds_and_no_effect() {
    let server = NatsServer::start().unwrap();
    let bus = Bus::connect(&server.url(), 1).await.unwrap();
    let (flaky, broken, fine) = ("test.flaky", "test.broken", "test.fine");
    let workers = start(
        &bus,
        config(&[flaky, broken, fine], "w").with_specs([
            spec("test.flaky:transient=1"),
            spec("test.broken:permanent=1"),
        ]),
    )
    .await;
    let results_consumer = bus.results_consumer().await.unwrap();
    let mut tasks = Vec::new();
    for h in [flaky, broken, fine] {
        for n in 0..3 {
            let t = task(h, Uuid::new_v4(), &format!("step-{n}"), 1, false);
            bus.publish_task(&t).await.unwrap();
            tasks.push(t);
        }
    }
    let results = results(&results_consumer, tasks.len()).await;
    for t in &tasks {
        let r = results.iter().find(|r| r.task_id == t.task_id).unwrap();
        match t.handler.as_str() {
            "test.flaky" => {
                let f = failed(r).unwrap();
                assert!(f.retryable);
                assert_eq!(f.error_code, error_codes::TARGET_UNAVAILABLE);
                assert!(!f.reason.is_empty());
            }
            "test.broken" => {
                let f = failed(r).unwrap();
                assert!(!f.retryable);
                assert_eq!(f.error_code, error_codes::TARGET_REFUSED);
            }
            _ => assert!(completed(r).is_some()),
        }
    }
    let counts = workers.ledger().counts().await.unwrap();
    assert_eq!(counts.get(flaky), None, "a failure records no effect");
    assert_eq!(counts.get(broken), None);
    assert_eq!(counts.get(fine), Some(&3));
    let stats = workers.shutdown().await;
    assert_eq!(
        (
            stats.failed_transient,
            stats.failed_permanent,
            stats.completed
        ),
        (3, 3, 3)
    );
}

#[tokio::test]
async fn malformed_messages_are_terminated_recorded_and_do_not_stop_the_worker() {
    let server = NatsServer::start().unwrap();
    let bus = Bus::connect(&server.url(), 1).await.unwrap();
    let h = "test.bad";
    let workers = start(&bus, config(&[h], "w")).await;
    let mut events = workers.events();
    let results_consumer = bus.results_consumer().await.unwrap();
    let js = bus.jetstream();
    let raw = |body: Vec<u8>| async move {
        js.publish(task_subject(h), body.into())
            .await
            .unwrap()
            .await
            .unwrap();
    };
    // Not protobuf at all; a task for another handler on this queue; a task without a key.
    raw(b"\x0f\xff\xff not a task".to_vec()).await;
    let mut stray = task("test.other", Uuid::new_v4(), "step", 1, false);
    raw(stray.encode_to_vec()).await;
    stray.handler = h.to_owned();
    stray.task_id = Uuid::new_v4().to_string();
    stray.idempotency_key.clear();
    bus.publish_task(&stray).await.unwrap();
    let good = task(h, Uuid::new_v4(), "step", 1, false);
    bus.publish_task(&good).await.unwrap();

    let mut malformed = 0;
    let mut answered = false;
    while malformed < 3 || !answered {
        match wait_for(&mut events, |e| Some(e.clone())).await {
            WorkerEvent::Malformed { .. } => malformed += 1,
            WorkerEvent::Answered {
                task_id, outcome, ..
            } => {
                assert_eq!(task_id, good.task_id);
                assert_eq!(outcome, Outcome::Completed);
                answered = true;
            }
            _ => {}
        }
    }
    let kept = workers.ledger().malformed(Some(h)).await.unwrap();
    assert_eq!(kept.len(), 3);
    assert!(kept.iter().all(|m| !m.reason.is_empty() && m.handler == h));
    assert_eq!(kept.iter().filter(|m| m.task_id.is_some()).count(), 2);

    // The two that name a task are answered with a permanent failure; the good one completes.
    let results = results(&results_consumer, 3).await;
    let refused: Vec<_> = results.iter().filter_map(failed).collect();
    assert_eq!(refused.len(), 2);
    assert!(
        refused
            .iter()
            .all(|f| !f.retryable && f.error_code == error_codes::MALFORMED_TASK)
    );
    assert!(
        results
            .iter()
            .any(|r| r.task_id == good.task_id && completed(r).is_some())
    );

    // Terminated: none is waiting or in flight, none will come back.
    let mut queue = js
        .get_stream(TASKS_STREAM)
        .await
        .unwrap()
        .get_consumer::<async_nats::jetstream::consumer::pull::Config>(&consumer_name(h))
        .await
        .unwrap();
    let info = queue.info().await.unwrap();
    assert_eq!((info.num_pending, info.num_ack_pending), (0, 0));
    let stats = workers.shutdown().await;
    assert_eq!((stats.malformed, stats.completed), (3, 1));
}

#[tokio::test]
async fn workers_ride_out_a_nats_server_restart() {
    let mut server = NatsServer::start().unwrap();
    // Connection events, to await the reconnect instead of guessing its time.
    let (connected_tx, mut connected) = tokio::sync::mpsc::unbounded_channel();
    let client = async_nats::ConnectOptions::new()
        .event_callback(move |event| {
            let connected_tx = connected_tx.clone();
            async move {
                if matches!(event, async_nats::Event::Connected) {
                    let _ = connected_tx.send(());
                }
            }
        })
        .connect(server.url())
        .await
        .unwrap();
    let bus = Bus::new(client, 1).await.unwrap();
    let h = "test.restart";
    let workers = start(&bus, config(&[h], "w")).await;
    let publish = |n: usize| {
        let bus = bus.clone();
        async move {
            for i in 0..n {
                bus.publish_task(&task(h, Uuid::new_v4(), &format!("step-{i}"), 1, false))
                    .await
                    .unwrap();
            }
        }
    };
    publish(10).await;
    {
        let results_consumer = bus.results_consumer().await.unwrap();
        results(&results_consumer, 10).await;
    }
    while connected.try_recv().is_ok() {}
    server.kill().unwrap();
    server.restart().unwrap();
    tokio::time::timeout(TIMEOUT, connected.recv())
        .await
        .unwrap()
        .unwrap();
    publish(10).await;
    let results_consumer = bus.results_consumer().await.unwrap();
    let results = results(&results_consumer, 10).await;
    assert!(results.iter().all(|r| completed(r).is_some()));
    assert_eq!(workers.ledger().count(h).await.unwrap(), 20);
    workers.shutdown().await;
}
