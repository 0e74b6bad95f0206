//! The orchestrator: one saga per accepted life event, run to completion.
//!
//! - Follows accepted life events (durable subscription `orchestrator` to the `lifeevent`
//!   category) and starts exactly one saga each: the saga id is the life event's, its stream is
//!   created with "must not exist".
//! - Follows task results (the bus's results stream, shared consumer `orchestrator`).
//! - Routes every input to the [`shard`] that owns the saga: many sagas run side by side, each
//!   saga's inputs are handled one at a time, and appends from the shards pipeline.
//! - Publishes a task only after the events that schedule it are stored; on start it reads the
//!   [`index`] of running sagas and re-dispatches their pending steps (same task ids) and
//!   re-arms their timers, so retries and timeouts due while it was down happen after it
//!   restarts.
//! - Serves operators' [`commands`] (retry, skip, cancel, complete a human step, resume) on a
//!   NATS request subject shared by every instance.
//! - Leaves each handler's queue consumer, with the target system's in-flight limit, to the
//!   side that delivers to the target (the workers): tasks wait in the stream until then.

pub mod clock;
pub mod commands;
pub mod facts;
pub mod index;
pub mod io;
pub mod metrics;
pub mod registry;
pub mod shard;
pub mod trace;

use futures::StreamExt;
use index::RunningIndex;
use levensloop_bus::Bus;
use levensloop_sagas::Catalog;
use levensloop_store::{EventStore, JetStreamConfig, JetStreamStore};
use registry::RegistryView;
use shard::{Msg, Router, SagaInput, Shard, Shared};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinSet;

pub use shard::OrchestratorError;

/// The durable subscription name of the orchestrators (shared by every instance).
pub const SUBSCRIPTION: &str = "orchestrator";

#[derive(Debug, Clone)]
pub struct OrchestratorConfig {
    pub nats_url: String,
    pub store: JetStreamConfig,
    /// Shards: sagas handled side by side.
    pub shards: usize,
    /// Sagas whose state is kept in memory, across all shards.
    pub cache_capacity: usize,
    /// Life events and results handled at once.
    pub concurrency: usize,
    /// What "now" is for the sagas (the system clock unless a test or demo says otherwise).
    pub clock: clock::Clock,
}

impl Default for OrchestratorConfig {
    fn default() -> Self {
        Self {
            nats_url: "nats://127.0.0.1:14222".to_owned(),
            store: JetStreamConfig::default(),
            shards: 32,
            cache_capacity: 100_000,
            concurrency: 512,
            clock: clock::Clock::system(),
        }
    }
}

/// A running orchestrator.
#[derive(Debug)]
pub struct RunningOrchestrator {
    router: Router,
    tasks: JoinSet<()>,
    /// Sagas re-dispatched at start.
    pub recovered: usize,
}

impl RunningOrchestrator {
    /// Stops taking input; sagas continue in the next instance from the store.
    pub async fn shutdown(mut self) {
        self.tasks.abort_all();
        while self.tasks.join_next().await.is_some() {}
    }

    /// Sends an operator's or a person's input to a saga and waits for its new status.
    pub async fn send(
        &self,
        saga: uuid::Uuid,
        input: SagaInput,
    ) -> Result<Option<levensloop_sagas::SagaStatus>, OrchestratorError> {
        self.router
            .ask(saga, |done| Msg::Input {
                saga,
                input,
                done: Some(done),
            })
            .await
    }
}

/// Connects, recovers the running sagas and starts following life events and results.
pub async fn start(
    config: OrchestratorConfig,
    catalog: Catalog,
) -> anyhow::Result<RunningOrchestrator> {
    let store = JetStreamStore::connect(&config.nats_url, config.store.clone()).await?;
    let client = store.client().clone();
    let replicas = config.store.replicas;
    let bus = Bus::new(client.clone(), replicas).await?;
    let catalog = Arc::new(catalog);
    let index = RunningIndex::open(&async_nats::jetstream::new(client.clone()), replicas).await?;
    let store: Arc<dyn EventStore> = Arc::new(store);

    let shards = config.shards.max(1);
    let (senders, inboxes): (Vec<_>, Vec<_>) =
        (0..shards).map(|_| mpsc::unbounded_channel()).unzip();
    let router = Router::new(senders);
    let shared = Shared {
        store: store.clone(),
        bus: bus.clone(),
        index: index.clone(),
        catalog,
        router: router.clone(),
        clock: config.clock.clone(),
        registry: Arc::new(RegistryView::new(store.clone())),
    };
    let mut tasks = JoinSet::new();
    for inbox in inboxes {
        let shard = Shard::new(shared.clone(), config.cache_capacity / shards);
        tasks.spawn(shard.run(inbox));
    }

    // Recovery first, so a saga's pending work is in motion before new input arrives.
    let running = index.all().await?;
    let recovered = running.len();
    let answers = futures::stream::iter(running)
        .map(|saga| {
            let router = router.clone();
            async move {
                (
                    saga,
                    router.ask(saga, |done| Msg::Recover { saga, done }).await,
                )
            }
        })
        .buffer_unordered(config.concurrency.max(1))
        .collect::<Vec<_>>()
        .await;
    for (saga, answer) in answers {
        if let Err(e) = answer {
            tracing::warn!(%saga, error = %e, "saga not recovered; its next input retries");
        }
    }
    if recovered > 0 {
        tracing::info!(recovered, "running sagas recovered");
    }

    tasks.spawn(follow_life_events(
        store,
        shared.registry.clone(),
        router.clone(),
        config.concurrency,
    ));
    tasks.spawn(metrics::sample_queues(bus.clone()));
    tasks.spawn(follow_results(bus, router.clone(), config.concurrency));
    tasks.spawn(commands::serve(client, router.clone()));
    Ok(RunningOrchestrator {
        router,
        tasks,
        recovered,
    })
}

/// Starts a saga for each accepted life event; acknowledges it once the saga is stored.
async fn follow_life_events(
    store: Arc<dyn EventStore>,
    registry: Arc<RegistryView>,
    router: Router,
    concurrency: usize,
) {
    let limit = Arc::new(Semaphore::new(concurrency.max(1)));
    loop {
        let mut subscription = match store.subscribe(io::LIFE_EVENT_CATEGORY, SUBSCRIPTION).await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "cannot follow life events; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        loop {
            let delivery = match subscription.next().await {
                Ok(d) => d,
                Err(e) => {
                    tracing::warn!(error = %e, "life event subscription interrupted; reopening");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    break;
                }
            };
            let received = tokio::time::Instant::now();
            let Ok(permit) = limit.clone().acquire_owned().await else {
                return;
            };
            let router = router.clone();
            let registry = registry.clone();
            tokio::spawn(async move {
                let _permit = permit;
                let Some(first) = delivery.events.first() else {
                    let _ = delivery.ack().await;
                    return;
                };
                let starts =
                    first.metadata.get(io::META_STARTS_SAGA).map(String::as_str) != Some("false");
                let event = match io::decode_life_event(&first.data, &delivery.stream.to_string()) {
                    Ok(event) => event,
                    Err(e) => {
                        // Not a life event the gateway wrote; nothing can start from it.
                        tracing::error!(stream = %delivery.stream, error = %e, "undecodable life event skipped");
                        let _ = delivery.ack().await;
                        return;
                    }
                };
                if starts {
                    let saga = levensloop_proto::saga_id(&event.source, &event.id);
                    // The integrators' handlers registered before the life event arrived.
                    let registry = match registry.current(received).await {
                        Ok(r) => r,
                        Err(e) => {
                            tracing::warn!(%saga, error = %e, "handler registry unreadable; saga start deferred");
                            return;
                        }
                    };
                    let span = trace::start_span(saga, &first.metadata);
                    let answer = router
                        .ask(saga, |done| {
                            trace::traced(
                                Msg::Start {
                                    event: Box::new(event),
                                    registry,
                                    done,
                                },
                                span,
                            )
                        })
                        .await;
                    match answer {
                        Ok(_) => {}
                        Err(OrchestratorError::Engine(e)) => {
                            tracing::error!(%saga, error = %e, "saga could not start");
                        }
                        // Not acknowledged: the life event comes again.
                        Err(e) => {
                            tracing::warn!(%saga, error = %e, "saga start deferred");
                            return;
                        }
                    }
                }
                if let Err(e) = delivery.ack().await {
                    tracing::warn!(error = %e, "life event not acknowledged; it comes again");
                }
            });
        }
    }
}

/// Feeds each handler's answer to its saga; acknowledges it once the saga has stored it.
async fn follow_results(bus: Bus, router: Router, concurrency: usize) {
    loop {
        let messages = match bus.results_consumer().await {
            // Short pulls with frequent heartbeats, so a pull forgotten by a restarted
            // nats-server is replaced within seconds.
            Ok(consumer) => {
                consumer
                    .stream()
                    .expires(levensloop_store::PULL_EXPIRY)
                    .heartbeat(levensloop_store::PULL_HEARTBEAT)
                    .messages()
                    .await
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot follow results; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        let messages = match messages {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(error = %e, "cannot follow results; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        messages
            .for_each_concurrent(concurrency.max(1), |message| {
                let router = router.clone();
                async move {
                    let message = match message {
                        Ok(m) => m,
                        Err(e) => {
                            tracing::warn!(error = %e, "results consumer hiccup");
                            return;
                        }
                    };
                    let result = match levensloop_bus::decode_result(&message) {
                        Ok(r) => r,
                        Err(e) => {
                            tracing::error!(error = %e, "malformed result dropped");
                            let _ = message.ack_with(async_nats::jetstream::AckKind::Term).await;
                            return;
                        }
                    };
                    let saga = result
                        .idempotency_key
                        .split('/')
                        .next()
                        .and_then(|s| uuid::Uuid::parse_str(s).ok());
                    let Some(saga) = saga else {
                        tracing::error!(key = %result.idempotency_key, "result without a saga id dropped");
                        let _ = message.ack_with(async_nats::jetstream::AckKind::Term).await;
                        return;
                    };
                    let span = trace::result_span(&message, &result);
                    let answer = router
                        .ask(saga, |done| {
                            trace::traced(
                                Msg::Input {
                                    saga,
                                    input: SagaInput::TaskResult(result),
                                    done: Some(done),
                                },
                                span,
                            )
                        })
                        .await;
                    match answer {
                        Ok(_) | Err(OrchestratorError::Engine(_)) | Err(OrchestratorError::NotFound(_)) => {
                            let _ = message.ack().await;
                        }
                        Err(e) => {
                            tracing::warn!(%saga, error = %e, "result deferred");
                            let _ = message
                                .ack_with(async_nats::jetstream::AckKind::Nak(Some(Duration::from_millis(500))))
                                .await;
                        }
                    }
                }
            })
            .await;
    }
}
