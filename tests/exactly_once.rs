//! Exactly once through crashes, with every part a real process: nats-server, the gateway,
//! the orchestrator and the workers (the built-in definitions, a clerk answering the human
//! work lists, the sagas' clock two years ahead so every calendar wait is already due).
//!
//! - 2,000 life events in flight, the orchestrator killed with SIGKILL at three random
//!   moments and restarted each time;
//! - 500 life events with nats-server killed with SIGKILL mid-run and restarted (every
//!   service must ride it out by itself: one that exits fails the test);
//! - 500 life events with a worker process killed mid-task and a second one taking over
//!   after the task's ack wait.
//!
//! Each ends with every saga Completed, each step that succeeded recorded once in its saga,
//! and the workers' ledger holding exactly one effect per (saga, step) that succeeded and no
//! other. The random moments come from a seed printed at the start (`CRASH_SEED` replays
//! one).

// A failed unwrap is a failed test, with the error in its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use futures::StreamExt;
use levensloop_bus::ClockOffset;
use levensloop_cli::generate::{Generator, Mix};
use levensloop_proto::stored::SAGA_CATEGORY;
use levensloop_proto::v1::ingest_service_client::IngestServiceClient;
use levensloop_proto::v1::{
    self, PublishOutcome, PublishRequest, publish_request, saga_event::Event,
};
use levensloop_sagas::{Catalog, StepKind};
use levensloop_store::{EventStore, JetStreamConfig, JetStreamStore};
use levensloop_testing::{NatsServer, ServiceProcess, workspace_binary};
use levensloop_workers::Ledger;
use prost::Message;
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::TcpListener;
use std::path::Path;
use std::time::{Duration, Instant};
use uuid::Uuid;

/// How long a scenario may take before it fails, naming what is missing (generous: a debug
/// build on 2 cores shared with the rest of the suite).
const DEADLINE: Duration = Duration::from_secs(360);
const TWO_YEARS_S: i64 = 2 * 365 * 86_400;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    /// SIGKILL the orchestrator at three moments, restarting it each time.
    Orchestrator,
    /// SIGKILL nats-server once and restart it.
    NatsServer,
    /// SIGKILL the worker process once mid-task; a second one takes over.
    Worker,
}

fn seed() -> u64 {
    std::env::var("CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random)
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn service(name: &str, binary: &str, args: &[&str], ready: &str, logs: &Path) -> ServiceProcess {
    ServiceProcess::start_with_env(
        name,
        workspace_binary(binary).unwrap(),
        args.iter().copied(),
        [("RUST_LOG", "info")],
        ready,
        logs,
    )
    .unwrap()
}

fn workers(name: &str, url: &str, logs: &Path) -> ServiceProcess {
    service(
        name,
        "levensloop-workers",
        &[
            "--nats-url",
            url,
            "--clerk",
            "--ignore-rate-limits",
            "--latency-ms",
            "5",
            "--jitter-ms",
            "20",
            // A task held by a killed worker goes to another one after this.
            "--ack-wait-ms",
            "2000",
            "--instance",
            name,
        ],
        "workers: serving",
        logs,
    )
}

/// Publishes `n` valid life events of the design's mix through the gateway's stream; returns
/// the saga ids of those that start a saga (all are accepted: the people are distinct; an
/// administrative re-addressing or a move to the current address is stored but starts none).
async fn publish(gateway: &str, n: usize, seed: u64) -> Vec<Uuid> {
    let mut generator = Generator::new(
        seed,
        chrono::Utc::now().date_naive().pred_opt().unwrap(),
        "urn:be:levensloop:crash-suite".into(),
    );
    let mix: Mix = "move=40,birth=25,death=25,driving-exam=10".parse().unwrap();
    let events: Vec<v1::LifeEvent> = (0..n)
        .map(|_| {
            let kind = generator.kind(&mix);
            generator.valid(kind)
        })
        .collect();
    let mut client = IngestServiceClient::connect(gateway.to_owned())
        .await
        .unwrap();
    let requests = futures::stream::iter(events.clone().into_iter().enumerate().map(|(i, e)| {
        PublishRequest {
            event: Some(publish_request::Event::LifeEvent(e)),
            sequence: i as u64,
        }
    }));
    let mut answers = client.publish_stream(requests).await.unwrap().into_inner();
    let mut sagas = Vec::with_capacity(n);
    while let Some(answer) = answers.next().await {
        let answer = answer.unwrap();
        assert_eq!(
            answer.outcome(),
            PublishOutcome::Accepted,
            "event {} was not accepted: {answer:?}",
            answer.event_id
        );
        if answer.starts_saga {
            sagas.push(answer.saga_id.parse().unwrap());
        }
    }
    assert!(
        sagas.len() > n * 9 / 10,
        "only {} of {n} start a saga",
        sagas.len()
    );
    sagas
}

/// What the saga streams say, gathered through a durable subscription.
#[derive(Default)]
struct Seen {
    /// (stream, version, index) of every event applied: a delivery repeated after an
    /// interruption is applied once.
    applied: std::collections::HashSet<(String, u64, u32)>,
    ended: BTreeMap<Uuid, String>,
    /// (saga, step) → how often it succeeded (a task answer or a person's).
    succeeded: HashMap<(Uuid, String), usize>,
    definitions: HashMap<Uuid, (String, u32)>,
}

impl Seen {
    fn apply(&mut self, e: &v1::SagaEvent) {
        let Ok(saga) = e.saga_id.parse::<Uuid>() else {
            return;
        };
        match &e.event {
            Some(Event::SagaStarted(s)) => {
                self.definitions
                    .insert(saga, (s.definition.clone(), s.definition_version));
            }
            Some(Event::StepSucceeded(s)) => {
                *self.succeeded.entry((saga, s.step_id.clone())).or_default() += 1;
            }
            Some(Event::HumanTaskCompleted(s)) => {
                *self.succeeded.entry((saga, s.step_id.clone())).or_default() += 1;
            }
            Some(Event::SagaCompleted(_)) => {
                self.ended.insert(saga, "completed".into());
            }
            Some(Event::SagaCompensated(s)) => {
                self.ended
                    .insert(saga, format!("compensated after {}", s.failed_step_id));
            }
            Some(Event::SagaFailed(s)) => {
                self.ended.insert(saga, format!("failed: {}", s.reason));
            }
            Some(Event::SagaCancelled(s)) => {
                self.ended.insert(saga, format!("cancelled: {}", s.reason));
            }
            _ => {}
        }
    }
}

/// Prints the last events of a few sagas that did not end, to diagnose a failure.
async fn report_stuck(store: &JetStreamStore, sagas: &[Uuid], seen: &Seen) {
    for saga in sagas.iter().filter(|s| !seen.ended.contains_key(s)).take(5) {
        let name = levensloop_store::StreamName::new(SAGA_CATEGORY, saga.to_string()).unwrap();
        let Ok(slice) = store.read(&name, levensloop_store::ReadFrom::Start).await else {
            eprintln!("saga {saga}: no stream");
            continue;
        };
        eprintln!("saga {saga} did not end; its last events:");
        for r in slice.events.iter().rev().take(8).rev() {
            let e = v1::SagaEvent::decode(r.data.as_ref()).unwrap();
            eprintln!("  {:?}", e.event);
        }
    }
}

async fn scenario(fault: Fault, n: usize) {
    let seed = seed();
    eprintln!("{fault:?}: {n} life events, CRASH_SEED={seed}");
    let mut rng = StdRng::seed_from_u64(seed);
    let mut server = NatsServer::start().unwrap();
    let url = server.url();
    // Kept after the test (the server's own directory is removed with it).
    let logs = std::env::temp_dir().join(format!("levensloop-{fault:?}-{seed}"));
    let client = async_nats::connect(&url).await.unwrap();
    ClockOffset::open(&async_nats::jetstream::new(client.clone()), 1)
        .await
        .unwrap()
        .advance(TWO_YEARS_S)
        .await
        .unwrap();

    let grpc = format!("127.0.0.1:{}", free_port());
    let mut gateway = service(
        "gateway",
        "levensloop-gateway",
        &["--nats-url", &url, "--grpc-addr", &grpc],
        "gateway: gRPC on",
        &logs,
    );
    let mut orchestrator = service(
        "orchestrator",
        "levensloop-orchestrator",
        &["--nats-url", &url, "--time-travel"],
        "orchestrator: running",
        &logs,
    );
    let mut worker = workers("workers-1", &url, &logs);
    let mut second_worker = None;

    // Watch the saga streams before anything is published.
    let store = JetStreamStore::connect(&url, JetStreamConfig::default())
        .await
        .unwrap();
    let watcher = format!("crash-watch-{}", Uuid::new_v4().simple());
    let mut subscription = store.subscribe(SAGA_CATEGORY, &watcher).await.unwrap();

    let sagas = publish(&format!("http://{grpc}"), n, seed).await;
    let n = sagas.len();

    // The moments (in sagas ended) at which the fault strikes.
    let mut strikes: Vec<usize> = match fault {
        Fault::Orchestrator => (0..3)
            .map(|_| rng.random_range(n / 20..n * 4 / 5))
            .collect(),
        Fault::NatsServer => vec![rng.random_range(n / 10..n / 2)],
        // Early, while most sagas still have their steps ahead: this suite's view of the
        // sagas can lag the workers, and the second worker must have work left to take over.
        Fault::Worker => vec![rng.random_range(1..n / 20)],
    };
    strikes.sort_unstable();
    eprintln!("{fault:?}: striking after {strikes:?} sagas ended");

    let mut seen = Seen::default();
    let started = Instant::now();
    while seen.ended.len() < n {
        if started.elapsed() >= DEADLINE {
            report_stuck(&store, &sagas, &seen).await;
        }
        assert!(
            started.elapsed() < DEADLINE,
            "{fault:?} (CRASH_SEED={seed}): {} of {n} sagas ended after {DEADLINE:?}; logs in {}",
            seen.ended.len(),
            logs.display()
        );
        if strikes.first().is_some_and(|s| seen.ended.len() >= *s) {
            strikes.remove(0);
            eprintln!("{fault:?}: strike at {} sagas ended", seen.ended.len());
            tokio::task::block_in_place(|| match fault {
                Fault::Orchestrator => {
                    orchestrator.kill().unwrap();
                    orchestrator.restart().unwrap();
                }
                Fault::NatsServer => server.restart().unwrap(),
                Fault::Worker => {
                    worker.kill().unwrap();
                    second_worker = Some(workers("workers-2", &url, &logs));
                }
            });
        }
        let delivery = match tokio::time::timeout(Duration::from_secs(5), subscription.next()).await
        {
            Ok(Ok(delivery)) => delivery,
            // Nothing ended for a while (a restart in progress): look at the deadline again.
            Err(_) => continue,
            // The server went away: follow again from where the durable subscription stands
            // (repeats are harmless: `seen` is keyed by saga).
            Ok(Err(e)) => {
                eprintln!("{fault:?}: subscription interrupted ({e}); following again");
                if let Ok(s) = store.subscribe(SAGA_CATEGORY, &watcher).await {
                    subscription = s;
                }
                continue;
            }
        };
        for recorded in &delivery.events {
            let id = (
                recorded.stream.to_string(),
                recorded.version.as_u64(),
                recorded.index,
            );
            if seen.applied.insert(id) {
                seen.apply(&v1::SagaEvent::decode(recorded.data.as_ref()).unwrap());
            }
        }
        let _ = delivery.ack().await;
    }
    eprintln!(
        "{fault:?}: {n} sagas ended in {:.1} s",
        started.elapsed().as_secs_f64()
    );

    // Every service rode out the fault by itself.
    assert!(
        gateway.is_running(),
        "the gateway exited; logs in {}",
        logs.display()
    );
    assert!(
        orchestrator.is_running(),
        "the orchestrator exited; logs in {}",
        logs.display()
    );
    if let Some(w) = second_worker.as_mut() {
        assert!(w.is_running(), "the second worker exited");
    } else {
        assert!(
            worker.is_running(),
            "the worker exited; logs in {}",
            logs.display()
        );
    }

    // Every saga completed.
    let expected: BTreeSet<Uuid> = sagas.iter().copied().collect();
    let ended: BTreeSet<Uuid> = seen.ended.keys().copied().collect();
    assert_eq!(
        ended, expected,
        "the sagas that ended are the ones published"
    );
    let not_completed: Vec<_> = seen
        .ended
        .iter()
        .filter(|(_, status)| *status != "completed")
        .collect();
    assert!(not_completed.is_empty(), "{not_completed:?}");

    // Each step succeeded once in its saga.
    let twice: Vec<_> = seen.succeeded.iter().filter(|(_, n)| **n != 1).collect();
    assert!(
        twice.is_empty(),
        "steps that succeeded more than once: {twice:?}"
    );

    // The ledger: exactly one effect per (saga, step) that a handler performed, and no other.
    let catalog = Catalog::builtin().unwrap();
    let performed_by_a_handler: BTreeSet<(Uuid, String)> = seen
        .succeeded
        .keys()
        .filter(|(saga, step)| {
            let (name, version) = &seen.definitions[saga];
            let definition = catalog.get(name, *version).unwrap();
            definition.steps().iter().any(|s| {
                s.id == *step && matches!(s.kind, StepKind::Task { .. } | StepKind::Human { .. })
            })
        })
        .cloned()
        .collect();
    let ledger = Ledger::open(client, 1).await.unwrap();
    let effects = ledger.all_effects().await.unwrap();
    let mut per_step: BTreeMap<(Uuid, String), usize> = BTreeMap::new();
    for effect in &effects {
        assert!(!effect.compensation, "nothing was undone: {effect:?}");
        *per_step
            .entry((effect.saga_id.parse().unwrap(), effect.step_id.clone()))
            .or_default() += 1;
    }
    let doubled: Vec<_> = per_step.iter().filter(|(_, n)| **n != 1).collect();
    assert!(
        doubled.is_empty(),
        "steps with more than one effect: {doubled:?}"
    );
    let with_effect: BTreeSet<(Uuid, String)> = per_step.into_keys().collect();
    let missing: Vec<_> = performed_by_a_handler.difference(&with_effect).collect();
    let extra: Vec<_> = with_effect.difference(&performed_by_a_handler).collect();
    assert!(
        missing.is_empty(),
        "succeeded without an effect: {missing:?}"
    );
    assert!(
        extra.is_empty(),
        "effects of steps that did not succeed: {extra:?}"
    );
    eprintln!(
        "{fault:?}: {} effects, one per (saga, step), {:.1} steps per saga",
        effects.len(),
        effects.len() as f64 / n as f64
    );
    assert!(effects.len() >= 5 * n, "too few effects for {n} sagas");
    if fault == Fault::Worker {
        // The second worker took over the queues (the tasks the first one held among them).
        let by_second = effects.iter().filter(|e| e.worker == "workers-2").count();
        assert!(by_second > 0, "the second worker recorded no effect");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orchestrator_killed_three_times_with_2000_sagas_in_flight() {
    scenario(Fault::Orchestrator, 2_000).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_server_killed_and_restarted_mid_run() {
    scenario(Fault::NatsServer, 500).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_killed_mid_task() {
    scenario(Fault::Worker, 500).await;
}
