//! A shard: one task that owns a slice of the sagas (by saga id) and handles their inputs one
//! at a time, so a saga never sees two inputs at once, while the shards run side by side and
//! their appends pipeline.
//!
//! For each input: load the saga (bounded cache, else rebuilt from the store), `decide`,
//! append the decision's events with optimistic concurrency, fold them in, and only then
//! execute the commands: publish tasks (outbox by derivation), arm or drop timers, settle a
//! deceased person's other sagas. A conflict (another instance moved the saga) drops the
//! cached state and decides again on the stored one.

use crate::clock::Clock;
use crate::facts;
use crate::index::RunningIndex;
use crate::io;
use crate::metrics::{self, StepClock};
use crate::registry::RegistryView;
use crate::trace::{self, SagaTrace};
use chrono::{DateTime, Utc};
use levensloop_bus::Bus;
use levensloop_proto::{saga_id, v1};
use levensloop_sagas::{
    Catalog, Command, EngineError, Input, LifeEventKind, Registry, SagaState, SagaStatus, Timer,
};
use levensloop_store::{EventStore, ExpectedVersion, StoreError, Version};
use lru::LruCache;
use std::collections::BTreeSet;
use std::num::NonZeroUsize;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tracing::Instrument;
use uuid::Uuid;

/// Why an input could not be handled.
#[derive(Debug, thiserror::Error)]
pub enum OrchestratorError {
    /// The store or the bus is unavailable: nothing was decided; the input comes again.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The engine refused the input (an operator action that does not fit, a malformed result).
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// The saga does not exist.
    #[error("saga {0} not found")]
    NotFound(Uuid),
    /// Other instances kept moving the saga; the input comes again.
    #[error("saga {0} kept changing under concurrent writers")]
    Contended(Uuid),
}

type Reply = oneshot::Sender<Result<Option<SagaStatus>, OrchestratorError>>;

/// What a shard is asked to do.
#[derive(Debug)]
pub enum Msg {
    /// Start the saga of an accepted life event.
    Start {
        event: Box<v1::LifeEvent>,
        /// The handler registry as read after the life event arrived (read outside the shard,
        /// so a shard never waits on the store for it).
        registry: Arc<Registry>,
        done: Reply,
    },
    /// An input for a running saga; `now` and jitter are filled in when it is handled.
    Input {
        saga: Uuid,
        input: SagaInput,
        done: Option<Reply>,
    },
    /// Re-dispatch a saga's pending work and re-arm its timers (after a restart).
    Recover { saga: Uuid, done: Reply },
    /// A message handled inside a span (its trace continues; only when spans are exported).
    Traced { span: tracing::Span, msg: Box<Msg> },
}

/// An input without its clock and dice.
#[derive(Debug, Clone)]
pub enum SagaInput {
    TaskResult(v1::TaskResult),
    PersonDied {
        cause_saga_id: Uuid,
    },
    RetryStep {
        step_id: String,
        actor: String,
        reason: String,
    },
    SkipStep {
        step_id: String,
        actor: String,
        reason: String,
    },
    Cancel {
        actor: String,
        reason: String,
    },
    CompleteHuman {
        step_id: String,
        actor: String,
        note: String,
    },
    Resume {
        actor: String,
        reason: String,
    },
}

impl SagaInput {
    /// The engine input at `now`; `None` when there is nothing to decide.
    fn at(self, state: &SagaState, now: DateTime<Utc>) -> Option<Input> {
        let jitter = rand::random::<f64>();
        Some(match self {
            Self::TaskResult(result) => {
                return human_answer(state, &result, now).unwrap_or(Some(Input::TaskResult {
                    result,
                    now,
                    jitter,
                }));
            }
            Self::PersonDied { cause_saga_id } => Input::PersonDied { cause_saga_id, now },
            Self::RetryStep {
                step_id,
                actor,
                reason,
            } => Input::RetryStep {
                step_id,
                actor,
                reason,
                now,
            },
            Self::SkipStep {
                step_id,
                actor,
                reason,
            } => Input::SkipStep {
                step_id,
                actor,
                reason,
                now,
            },
            Self::Cancel { actor, reason } => Input::Cancel { actor, reason, now },
            Self::CompleteHuman {
                step_id,
                actor,
                note,
            } => Input::CompleteHuman {
                step_id,
                actor,
                note,
                now,
            },
            Self::Resume { actor, reason } => Input::Resume { actor, reason, now },
        })
    }
}

/// A human step's task is on a work list for people; the answer from that list (the
/// back-office application, or the simulated clerks of the demo) completes or rejects the
/// step. `None` when the result is not for a human step; `Some(None)` for an answer that
/// decides nothing (a retryable failure: the step keeps waiting for a person).
fn human_answer(
    state: &SagaState,
    result: &v1::TaskResult,
    now: DateTime<Utc>,
) -> Option<Option<Input>> {
    let step_id = result.idempotency_key.split('/').nth(1)?;
    let step = state.definition().step(step_id)?;
    if !matches!(step.kind, levensloop_sagas::StepKind::Human { .. }) {
        return None;
    }
    let actor = |r: &Option<levensloop_proto::types::Struct>| {
        r.as_ref()
            .and_then(|s| s.fields.get("actor"))
            .and_then(|v| match &v.kind {
                Some(levensloop_proto::types::value::Kind::StringValue(s)) => Some(s.clone()),
                _ => None,
            })
            .unwrap_or_else(|| "work-list".to_owned())
    };
    Some(match &result.outcome {
        Some(v1::task_result::Outcome::Completed(c)) => Some(Input::CompleteHuman {
            step_id: step_id.to_owned(),
            actor: actor(&c.result),
            note: String::new(),
            now,
        }),
        Some(v1::task_result::Outcome::Failed(f)) if !f.retryable => Some(Input::RejectHuman {
            step_id: step_id.to_owned(),
            actor: "work-list".to_owned(),
            reason: f.reason.clone(),
            now,
        }),
        _ => None,
    })
}

/// Sends messages to the shard that owns a saga.
#[derive(Debug, Clone)]
pub struct Router {
    shards: Arc<Vec<mpsc::UnboundedSender<Msg>>>,
}

impl Router {
    pub fn new(shards: Vec<mpsc::UnboundedSender<Msg>>) -> Self {
        Self {
            shards: Arc::new(shards),
        }
    }

    fn shard_of(&self, saga: Uuid) -> &mpsc::UnboundedSender<Msg> {
        let n = self.shards.len().max(1);
        let h = u64::from_le_bytes(saga.as_bytes()[..8].try_into().unwrap_or([0; 8]));
        &self.shards[(h % n as u64) as usize]
    }

    /// Queues a message; `false` if the shard has stopped.
    pub fn send(&self, saga: Uuid, msg: Msg) -> bool {
        self.shard_of(saga).send(msg).is_ok()
    }

    /// Queues a message and waits for its answer.
    pub async fn ask(
        &self,
        saga: Uuid,
        make: impl FnOnce(Reply) -> Msg,
    ) -> Result<Option<SagaStatus>, OrchestratorError> {
        let (tx, rx) = oneshot::channel();
        if !self.send(saga, make(tx)) {
            return Err(StoreError::Unavailable {
                reason: "the orchestrator is stopping".to_owned(),
                source: None,
            }
            .into());
        }
        rx.await.map_err(|_| {
            OrchestratorError::Store(StoreError::Unavailable {
                reason: "the orchestrator is stopping".to_owned(),
                source: None,
            })
        })?
    }
}

/// What every shard shares.
#[derive(Clone)]
pub struct Shared {
    pub store: Arc<dyn EventStore>,
    pub bus: Bus,
    pub index: RunningIndex,
    pub catalog: Arc<Catalog>,
    pub router: Router,
    pub clock: Clock,
    pub registry: Arc<RegistryView>,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared").finish_non_exhaustive()
    }
}

impl std::fmt::Debug for Shard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shard")
            .field("cached", &self.cache.len())
            .field("timers", &self.timers.len())
            .finish_non_exhaustive()
    }
}

struct Entry {
    state: SagaState,
    version: Version,
    /// Dropped from the running-saga index since it was cached: late results of a finished
    /// saga cost no further index writes.
    unindexed: bool,
    /// When its running steps were scheduled (for the step duration metric).
    steps: StepClock,
    /// The saga's trace, continued by its timers.
    trace: SagaTrace,
}

pub struct Shard {
    shared: Shared,
    cache: LruCache<Uuid, Entry>,
    timers: BTreeSet<(DateTime<Utc>, Uuid, Timer)>,
}

/// How often an input is decided again after losing an optimistic-concurrency race.
const ATTEMPTS: usize = 16;

impl Shard {
    pub fn new(shared: Shared, cache_capacity: usize) -> Self {
        Self {
            shared,
            cache: LruCache::new(
                NonZeroUsize::new(cache_capacity.max(1)).unwrap_or(NonZeroUsize::MIN),
            ),
            timers: BTreeSet::new(),
        }
    }

    /// Handles messages and fires timers until every sender is gone.
    pub async fn run(mut self, mut inbox: mpsc::UnboundedReceiver<Msg>) {
        let mut clock_changed = self.shared.clock.subscribe();
        loop {
            let next_due = self.timers.first().map(|(due, _, _)| *due);
            // A manual clock has no wall-clock wait: its timers fire when it is advanced.
            let wait = next_due.and_then(|due| self.shared.clock.real_wait(due));
            tokio::select! {
                msg = inbox.recv() => match msg {
                    Some(msg) => self.handle(msg).await,
                    None => return,
                },
                () = async { if let Some(w) = wait { tokio::time::sleep(w).await } }, if wait.is_some() => {
                    self.fire_due().await;
                }
                changed = clock_changed.changed() => {
                    if changed.is_ok() {
                        self.fire_due().await;
                    }
                }
            }
        }
    }

    async fn handle(&mut self, msg: Msg) {
        match msg {
            Msg::Traced { span, msg } => self.handle_one(*msg).instrument(span).await,
            msg => self.handle_one(msg).await,
        }
    }

    async fn handle_one(&mut self, msg: Msg) {
        match msg {
            // Never nested: `trace::traced` wraps a plain message once.
            Msg::Traced { msg, .. } => Box::pin(self.handle_one(*msg)).await,
            Msg::Start {
                event,
                registry,
                done,
            } => {
                let _ = done.send(self.start(*event, &registry).await);
            }
            Msg::Input { saga, input, done } => {
                let result = self.input(saga, input).await;
                if let Err(e) = &result {
                    tracing::warn!(%saga, error = %e, "input not handled");
                }
                if let Some(done) = done {
                    let _ = done.send(result);
                }
            }
            Msg::Recover { saga, done } => {
                let _ = done.send(self.recover(saga).await);
            }
        }
    }

    async fn fire_due(&mut self) {
        let now = self.shared.clock.now();
        while let Some(first) = self.timers.first().cloned() {
            if first.0 > now {
                break;
            }
            self.timers.remove(&first);
            let (_, saga, timer) = first;
            let input = Input::TimerFired {
                step_id: timer.step_id.clone(),
                kind: timer.kind,
                now,
                jitter: rand::random::<f64>(),
            };
            let span = match self.cache.peek(&saga) {
                Some(entry) => entry
                    .trace
                    .timer_span(saga, &timer.step_id, timer.kind.name()),
                None => tracing::Span::none(),
            };
            if let Err(e) = self
                .decide_and_store(saga, |_, _| Some(input.clone()))
                .instrument(span)
                .await
            {
                tracing::warn!(%saga, timer = %timer.key(), error = %e, "timer not handled; trying again shortly");
                // Durable anyway (the saga's events hold it); retry soon rather than lose it.
                let retry = Timer {
                    due_at: now + chrono::Duration::seconds(1),
                    ..timer
                };
                self.timers.insert((retry.due_at, saga, retry));
            }
        }
    }

    async fn start(
        &mut self,
        event: v1::LifeEvent,
        registry: &Registry,
    ) -> Result<Option<SagaStatus>, OrchestratorError> {
        let saga = saga_id(&event.source, &event.id);
        if let Some(entry) = self.cache.get(&saga) {
            return Ok(Some(entry.state.status()));
        }
        let now = self.shared.clock.now();
        let person = facts::person_of(&event).to_owned();
        let known = LifeEventKind::of(&event).and_then(|kind| self.shared.catalog.for_kind(kind));
        let facts = known
            .map(|definition| facts::lookup(&definition, &person))
            .unwrap_or_default();
        // The integrators' handlers registered before the life event arrived are included.
        let started = self
            .shared
            .registry
            .definition_for(&self.shared.catalog, registry, &event)
            .and_then(|definition| Catalog::start_under(definition, &event, facts, now));
        let (mut state, decision) = match started {
            Ok(started) => started,
            Err(EngineError::NoSaga(why)) => {
                tracing::info!(%saga, %why, "no saga for this life event");
                return Ok(None);
            }
            Err(e) => return Err(e.into()),
        };
        // Indexed before the stream exists: a saga is never missing from the index.
        self.shared
            .index
            .insert(&person, saga, &event.r#type)
            .await?;
        match io::append(
            &*self.shared.store,
            saga,
            ExpectedVersion::NoStream,
            &decision.events,
        )
        .await
        {
            Ok(appended) if !appended.duplicate => {
                for e in &decision.events {
                    state.apply(e);
                }
                let mut steps = StepClock::new(&state);
                metrics::record(&state, SagaStatus::NotStarted, &mut steps, &decision.events);
                tracing::debug!(%saga, definition = state.definition().name(), "saga started");
                self.cache.put(
                    saga,
                    Entry {
                        state,
                        version: appended.version,
                        unindexed: false,
                        steps,
                        trace: SagaTrace::current(),
                    },
                );
                self.execute(saga, decision.commands).await?;
                self.after(saga).await
            }
            // Started before (a redelivered life event): make sure its work is in motion.
            Ok(_) | Err(StoreError::VersionConflict { .. }) => self.recover(saga).await,
            Err(e) => Err(e.into()),
        }
    }

    async fn input(
        &mut self,
        saga: Uuid,
        input: SagaInput,
    ) -> Result<Option<SagaStatus>, OrchestratorError> {
        self.decide_and_store(saga, move |state, now| input.clone().at(state, now))
            .await
    }

    /// Decides on the current state and stores the decision, deciding again after a lost
    /// race; then executes the commands.
    async fn decide_and_store(
        &mut self,
        saga: Uuid,
        make: impl Fn(&SagaState, DateTime<Utc>) -> Option<Input>,
    ) -> Result<Option<SagaStatus>, OrchestratorError> {
        for _ in 0..ATTEMPTS {
            self.load(saga).await?;
            let Some(entry) = self.cache.get(&saga) else {
                return Err(OrchestratorError::NotFound(saga));
            };
            let Some(input) = make(&entry.state, self.shared.clock.now()) else {
                return Ok(Some(entry.state.status()));
            };
            let decision = levensloop_sagas::decide(&entry.state, input)?;
            if decision.events.is_empty() {
                let status = entry.state.status();
                self.execute(saga, decision.commands).await?;
                return Ok(Some(status));
            }
            let expected = ExpectedVersion::Exact(entry.version);
            match io::append(&*self.shared.store, saga, expected, &decision.events).await {
                Ok(appended) if !appended.duplicate => {
                    if let Some(entry) = self.cache.get_mut(&saga) {
                        let before = entry.state.status();
                        for e in &decision.events {
                            entry.state.apply(e);
                        }
                        entry.version = appended.version;
                        metrics::record(&entry.state, before, &mut entry.steps, &decision.events);
                    }
                    self.execute(saga, decision.commands).await?;
                    return self.after(saga).await;
                }
                // Our own earlier attempt was stored: continue from what is stored.
                Ok(_) => {
                    self.cache.pop(&saga);
                    return self.recover(saga).await;
                }
                Err(StoreError::VersionConflict { .. }) => {
                    self.cache.pop(&saga);
                }
                Err(e) => return Err(e.into()),
            }
        }
        Err(OrchestratorError::Contended(saga))
    }

    /// Loads a saga into the cache if it is not there; `NotFound` if it never started.
    async fn load(&mut self, saga: Uuid) -> Result<(), OrchestratorError> {
        if self.cache.contains(&saga) {
            return Ok(());
        }
        let store = &*self.shared.store;
        let Some((events, version)) = io::saga_events(store, saga).await? else {
            return Err(OrchestratorError::NotFound(saga));
        };
        let (life_event, metadata) = io::life_event_with_metadata(store, saga).await?;
        let state = self.shared.catalog.rebuild(&life_event, &events)?;
        let steps = StepClock::rebuild(&state, &events);
        // A finished saga loaded again is unindexed once more: the purge is idempotent and
        // covers one that failed before.
        self.cache.put(
            saga,
            Entry {
                state,
                version,
                unindexed: false,
                steps,
                trace: SagaTrace::from_metadata(&metadata),
            },
        );
        Ok(())
    }

    /// After a restart (or a redelivered start): publish what is in flight again, arm the
    /// timers, and drop a finished saga from the index.
    async fn recover(&mut self, saga: Uuid) -> Result<Option<SagaStatus>, OrchestratorError> {
        self.cache.pop(&saga);
        match self.load(saga).await {
            Ok(()) => {}
            // Indexed but never stored: its life event is redelivered and starts it.
            Err(OrchestratorError::NotFound(_)) => return Ok(None),
            Err(e) => return Err(e),
        }
        let (work, timers, span) = match self.cache.get(&saga) {
            Some(entry) if !entry.state.is_terminal() => {
                // After a restart the re-dispatched tasks continue the saga's trace; a
                // redelivered start is already inside its own span.
                let span = if tracing::Span::current().is_none() {
                    entry.trace.recover_span(saga)
                } else {
                    tracing::Span::none()
                };
                (entry.state.pending_work(), entry.state.timers(), span)
            }
            _ => (Vec::new(), Vec::new(), tracing::Span::none()),
        };
        self.execute(saga, work).instrument(span).await?;
        for timer in timers {
            self.timers.insert((timer.due_at, saga, timer));
        }
        self.after(saga).await
    }

    /// Drops a finished saga from the index; answers its status.
    async fn after(&mut self, saga: Uuid) -> Result<Option<SagaStatus>, OrchestratorError> {
        let Some(entry) = self.cache.get(&saga) else {
            return Ok(None);
        };
        let status = entry.state.status();
        if entry.state.is_terminal() && !entry.unindexed {
            let person = entry.state.person_insz().to_owned();
            self.timers.retain(|(_, s, _)| *s != saga);
            self.shared.index.remove(&person, saga).await?;
            if let Some(entry) = self.cache.get_mut(&saga) {
                entry.unindexed = true;
            }
            tracing::debug!(%saga, ?status, "saga finished");
        }
        Ok(Some(status))
    }

    async fn execute(
        &mut self,
        saga: Uuid,
        commands: Vec<Command>,
    ) -> Result<(), OrchestratorError> {
        for command in commands {
            match command {
                Command::DispatchTask(task) => self.dispatch(&task).await,
                // The work list of the people who act (police, counter clerks) is the handler's
                // queue; their answer comes back as a result.
                Command::AwaitHuman(task) => {
                    tracing::info!(%saga, step = %task.step_id, handler = %task.handler, "waiting for a person");
                    self.dispatch(&task).await;
                }
                Command::SettleOtherSagas {
                    task,
                    person_insz,
                    cause_saga_id,
                } => {
                    let others = self.shared.index.of_person(&person_insz).await?;
                    for other in others.into_iter().filter(|o| *o != cause_saga_id) {
                        tracing::info!(saga = %other, cause = %cause_saga_id, "the person died: settling this saga");
                        self.shared.router.send(
                            other,
                            Msg::Input {
                                saga: other,
                                input: SagaInput::PersonDied { cause_saga_id },
                                done: None,
                            },
                        );
                    }
                    // The settle step is answered like any handler's task.
                    let result = v1::TaskResult {
                        task_id: task.task_id.clone(),
                        idempotency_key: task.idempotency_key.clone(),
                        attempt: task.attempt,
                        outcome: Some(v1::task_result::Outcome::Completed(
                            v1::TaskCompleted::default(),
                        )),
                    };
                    let span = trace::own_answer_span(saga, &task.step_id);
                    self.shared.router.send(
                        saga,
                        trace::traced(
                            Msg::Input {
                                saga,
                                input: SagaInput::TaskResult(result),
                                done: None,
                            },
                            span,
                        ),
                    );
                }
                Command::ScheduleTimer(timer) => {
                    self.timers.insert((timer.due_at, saga, timer));
                }
                Command::CancelTimer(timer) => {
                    self.timers.remove(&(timer.due_at, saga, timer));
                }
                Command::RaiseIncident {
                    incident_id,
                    step_id,
                    reason,
                } => {
                    tracing::warn!(%saga, %incident_id, step = %step_id, %reason, "incident: a person must act");
                }
            }
        }
        Ok(())
    }

    /// Publishes a task; a failure is logged, not fatal: the step's timeout brings the task
    /// back, and a restart re-dispatches it.
    async fn dispatch(&self, task: &v1::Task) {
        // The task continues the trace of the span it is published from.
        let traced = trace::with_current_context(task);
        let task = traced.as_ref().unwrap_or(task);
        let mut delay = Duration::from_millis(50);
        for attempt in 1..=5 {
            match self.shared.bus.publish_task(task).await {
                Ok(()) => return,
                Err(e) if attempt == 5 => {
                    tracing::warn!(task = %task.task_id, handler = %task.handler, error = %e, "task not published; its timeout will bring it back");
                }
                Err(_) => {
                    tokio::time::sleep(delay).await;
                    delay *= 2;
                }
            }
        }
    }
}
