//! One handler's worker: pulls tasks from the handler's shared queue and answers them.
//!
//! For each task: decode and check it (a malformed message is recorded, answered with a
//! permanent failure when it has a task id, and acknowledged with `Term`); if the ledger
//! already holds the effect of its idempotency key, answer with that (the target is not
//! called again); otherwise wait for a rate slot, call the simulated target, record the
//! effect on success (the first `create` wins), publish the result, and only then
//! acknowledge the task. A worker that dies before the acknowledgement has the task
//! delivered again after the ack wait; the ledger keeps the effect once.
//!
//! The task is pulled *before* the rate slot is reserved, not after: a slot reserved before a
//! pull that then waits for work would be used late, bunched with later slots. The cost is
//! that a task waiting for its slot counts against the in-flight limit; it is kept alive
//! with progress acknowledgements while it waits.

use crate::ledger::{Effect, Ledger, MalformedTask, Recorded};
use crate::sim::{Behaviour, Draw};
use crate::{Outcome, Stats, WorkerEvent};
use async_nats::jetstream::{self, AckKind, consumer::PullConsumer};
use chrono::Utc;
use futures::StreamExt;
use levensloop_bus::{Bus, RateGate, decode_task};
use levensloop_proto::{types, v1};
use levensloop_telemetry::metrics;
use levensloop_telemetry::propagation::{self, TraceFields};
use rand::prelude::*;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};
use tokio::sync::{Semaphore, broadcast, watch};
use tokio::task::JoinSet;
use tracing::Instrument;

/// Error codes of the results the built-in workers publish.
pub mod error_codes {
    /// A simulated transient failure: retry.
    pub const TARGET_UNAVAILABLE: &str = "TARGET_UNAVAILABLE";
    /// A simulated permanent refusal.
    pub const TARGET_REFUSED: &str = "TARGET_REFUSED";
    /// The task message could not be used.
    pub const MALFORMED_TASK: &str = "MALFORMED_TASK";
}

/// A task left unacknowledged for a later delivery comes back after this long (the ledger or
/// the bus was unavailable).
const NAK_DELAY: Duration = Duration::from_secs(1);
/// How long after its expiry a pull is waited for before it is taken as lost.
const PULL_GRACE: Duration = Duration::from_millis(500);
/// The most tasks asked for in one pull.
const MAX_BATCH: usize = 256;

/// Everything one handler's worker needs.
pub(crate) struct HandlerWorker {
    pub handler: String,
    pub bus: Bus,
    pub consumer: PullConsumer,
    pub ledger: Ledger,
    pub gate: Option<RateGate>,
    pub behaviour: Behaviour,
    pub concurrency: usize,
    pub ack_wait: Duration,
    pub fetch_expiry: Duration,
    pub instance: String,
    pub events: broadcast::Sender<WorkerEvent>,
    pub stats: Arc<Stats>,
    pub rng: Mutex<StdRng>,
}

impl std::fmt::Debug for HandlerWorker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HandlerWorker")
            .field("handler", &self.handler)
            .field("concurrency", &self.concurrency)
            .finish_non_exhaustive()
    }
}

/// The answer to a task.
enum Answer {
    Completed {
        effect: Effect,
        replayed: bool,
    },
    Failed {
        retryable: bool,
        reason: String,
        code: &'static str,
    },
}

impl HandlerWorker {
    /// Pulls and works until `stop` turns true (or its sender is dropped); then finishes the
    /// pull under way and the tasks in progress.
    pub async fn run(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        let permits = Arc::new(Semaphore::new(self.concurrency.max(1)));
        let mut in_progress = JoinSet::new();
        loop {
            while in_progress.try_join_next().is_some() {}
            // A dropped sender (the `Workers` dropped) stops too, rather than waking the loop
            // forever.
            if *stop.borrow() || stop.has_changed().is_err() {
                break;
            }
            // Ask for as many tasks as this process can start now, at least one: whatever is
            // delivered is worked on at once, never buffered (a buffered task would count
            // against the in-flight limit and its ack wait while nobody works on it).
            let first = tokio::select! {
                permit = permits.clone().acquire_owned() => match permit {
                    Ok(p) => p,
                    Err(_) => break,
                },
                _ = stop.changed() => continue,
            };
            let mut held = vec![first];
            while held.len() < MAX_BATCH {
                match permits.clone().try_acquire_owned() {
                    Ok(p) => held.push(p),
                    Err(_) => break,
                }
            }
            let batch = self
                .consumer
                .batch()
                .max_messages(held.len())
                .expires(self.fetch_expiry)
                .messages()
                .await;
            let mut batch = match batch {
                Ok(b) => b,
                Err(e) => {
                    tracing::warn!(handler = %self.handler, error = %e, "pull failed, retrying");
                    // Back off so a server that is down is not asked in a tight loop.
                    tokio::select! {
                        _ = tokio::time::sleep(NAK_DELAY) => {}
                        _ = stop.changed() => {}
                    }
                    continue;
                }
            };
            // The pull ends when it is filled or expires (within `fetch_expiry`), so a stop
            // waits for it and every delivered task is worked on. A pull the server forgot (it
            // restarted) never reports its expiry; the client library would wait five more
            // seconds, so it is given up shortly after the server would have ended it.
            let deadline = tokio::time::Instant::now() + self.fetch_expiry + PULL_GRACE;
            loop {
                let message = match tokio::time::timeout_at(deadline, batch.next()).await {
                    Ok(Some(message)) => message,
                    Ok(None) => break,
                    Err(_) => {
                        tracing::debug!(handler = %self.handler, "pull unanswered, asking again");
                        break;
                    }
                };
                match message {
                    Ok(message) => {
                        let Some(permit) = held.pop() else {
                            // More than asked for: cannot happen; leave it for redelivery.
                            tracing::warn!(handler = %self.handler, "unrequested delivery");
                            continue;
                        };
                        let me = self.clone();
                        in_progress.spawn(async move {
                            me.handle(message).await;
                            drop(permit);
                        });
                    }
                    Err(e) => {
                        tracing::debug!(handler = %self.handler, error = %e, "pull ended");
                        break;
                    }
                }
            }
        }
        while in_progress.join_next().await.is_some() {}
    }

    fn emit(&self, event: WorkerEvent) {
        // Nobody listening is fine.
        let _ = self.events.send(event);
    }

    async fn handle(&self, message: jetstream::Message) {
        let task = match decode_task(&message) {
            Ok(task) => task,
            Err(e) => return self.malformed(&message, None, e.to_string()).await,
        };
        if let Err(reason) = self.check(&task) {
            return self.malformed(&message, Some(&task), reason).await;
        }
        let span = tracing::info_span!(
            "task",
            handler = %self.handler,
            task_id = %task.task_id,
            key = %task.idempotency_key,
            attempt = task.attempt,
            traceparent = %task.traceparent,
        );
        // The handling continues the trace the orchestrator published the task in.
        propagation::set_parent_fields(&span, &task.traceparent, &task.tracestate);
        self.work(&message, &task).instrument(span).await;
    }

    fn check(&self, task: &v1::Task) -> Result<(), String> {
        if task.handler != self.handler {
            return Err(format!(
                "task for handler {:?} on the queue of {}",
                task.handler, self.handler
            ));
        }
        if task.task_id.is_empty() {
            return Err("no task id".into());
        }
        if task.idempotency_key.is_empty() {
            return Err("no idempotency key".into());
        }
        if task.idempotency_key.len() > 1024 {
            return Err("idempotency key longer than 1024 bytes".into());
        }
        Ok(())
    }

    async fn work(&self, message: &jetstream::Message, task: &v1::Task) {
        let key = &task.idempotency_key;
        // A repeat of a task whose effect happened: the recorded answer, no second call. A
        // first attempt delivered for the first time has no effect yet save after a re-dispatch
        // outside the queue's duplicate window; that rare case costs a second call of the
        // target, never a second effect (recording is create-only), so first deliveries skip
        // the lookup and the server a round trip per task.
        let first_sight =
            task.attempt <= 1 && message.info().map(|i| i.delivered <= 1).unwrap_or(false);
        let known = if first_sight {
            Ok(None)
        } else {
            self.ledger.effect(&self.handler, key).await
        };
        match known {
            Ok(Some(effect)) => {
                let answer = Answer::Completed {
                    effect,
                    replayed: true,
                };
                return self.answer(message, task, answer).await;
            }
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(error = %e, "ledger unavailable, task left for later");
                return nak(message).await;
            }
        }

        let slot = match &self.gate {
            None => None,
            Some(gate) => match self.wait_for_slot(gate, message).await {
                Ok(slot) => Some(slot.at),
                Err(e) => {
                    // Fail closed: no slot, no call.
                    tracing::warn!(error = %e, "rate gate unavailable, task left for later");
                    return nak(message).await;
                }
            },
        };

        self.emit(WorkerEvent::Calling {
            handler: self.handler.clone(),
            task_id: task.task_id.clone(),
            idempotency_key: key.clone(),
            slot,
            at: SystemTime::now(),
            instant: Instant::now(),
        });
        tracing::debug!(slot = ?slot, "calling the target");
        let (latency, draw) = {
            let mut rng = self.rng.lock().unwrap_or_else(|p| p.into_inner());
            let latency = self.behaviour.latency(rng.random::<f64>());
            (latency, self.behaviour.draw(rng.random::<f64>()))
        };
        if !latency.is_zero() {
            tokio::time::sleep(latency).await;
        }

        let answer = match draw {
            Draw::Transient => Answer::Failed {
                retryable: true,
                reason: format!("{} is temporarily unavailable (simulated)", self.handler),
                code: error_codes::TARGET_UNAVAILABLE,
            },
            Draw::Permanent => Answer::Failed {
                retryable: false,
                reason: format!("{} refused the request (simulated)", self.handler),
                code: error_codes::TARGET_REFUSED,
            },
            Draw::Succeed => match self.ledger.record(self.effect_of(task)).await {
                Ok(Recorded::First(effect)) => {
                    tracing::debug!("effect recorded");
                    self.stats.effect();
                    self.emit(WorkerEvent::EffectRecorded {
                        handler: self.handler.clone(),
                        task_id: task.task_id.clone(),
                        idempotency_key: key.clone(),
                    });
                    if !self.behaviour.stall_after_effect.is_zero() {
                        tokio::time::sleep(self.behaviour.stall_after_effect).await;
                    }
                    Answer::Completed {
                        effect,
                        replayed: false,
                    }
                }
                // Another delivery of the same key got there first: its effect stands.
                Ok(Recorded::Already(effect)) => Answer::Completed {
                    effect,
                    replayed: true,
                },
                Err(e) => {
                    tracing::warn!(error = %e, "ledger unavailable, task left for later");
                    return nak(message).await;
                }
            },
        };
        self.answer(message, task, answer).await;
    }

    /// Reserves a rate slot and waits for it, keeping the task alive if the wait is long.
    async fn wait_for_slot(
        &self,
        gate: &RateGate,
        message: &jetstream::Message,
    ) -> Result<levensloop_bus::Slot, levensloop_bus::BusError> {
        let acquire = gate.acquire();
        tokio::pin!(acquire);
        let every = (self.ack_wait / 3).max(Duration::from_millis(100));
        let mut progress = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        loop {
            tokio::select! {
                slot = &mut acquire => return slot,
                _ = progress.tick() => {
                    if let Err(e) = message.ack_with(AckKind::Progress).await {
                        tracing::debug!(error = %e, "progress ack failed");
                    }
                }
            }
        }
    }

    fn effect_of(&self, task: &v1::Task) -> Effect {
        let now = Utc::now();
        let mut result = serde_json::Map::new();
        result.insert(
            "case_number".into(),
            case_number(&self.handler, &task.idempotency_key).into(),
        );
        result.insert("handler".into(), self.handler.clone().into());
        result.insert(
            "action".into(),
            if task.compensation { "undone" } else { "done" }.into(),
        );
        result.insert("recorded_at".into(), now.to_rfc3339().into());
        result.insert("simulated".into(), true.into());
        Effect {
            handler: self.handler.clone(),
            idempotency_key: task.idempotency_key.clone(),
            saga_id: task.saga_id.clone(),
            step_id: task.step_id.clone(),
            compensation: task.compensation,
            task_id: task.task_id.clone(),
            attempt: task.attempt,
            worker: self.instance.clone(),
            recorded_at: now,
            result,
        }
    }

    /// Publishes the result, then acknowledges the task; a result that cannot be published
    /// leaves the task for another delivery.
    async fn answer(&self, message: &jetstream::Message, task: &v1::Task, answer: Answer) {
        let (outcome, replayed, result) = match answer {
            Answer::Completed { effect, replayed } => {
                let result = serde_json::from_value::<types::Struct>(serde_json::Value::Object(
                    effect.result,
                ))
                .unwrap_or_default();
                (
                    Outcome::Completed,
                    replayed,
                    v1::task_result::Outcome::Completed(v1::TaskCompleted {
                        result: Some(result),
                    }),
                )
            }
            Answer::Failed {
                retryable,
                reason,
                code,
            } => (
                if retryable {
                    Outcome::FailedTransient
                } else {
                    Outcome::FailedPermanent
                },
                false,
                v1::task_result::Outcome::Failed(v1::TaskFailed {
                    retryable,
                    reason,
                    error_code: code.to_owned(),
                }),
            ),
        };
        let result = v1::TaskResult {
            task_id: task.task_id.clone(),
            idempotency_key: task.idempotency_key.clone(),
            attempt: task.attempt,
            outcome: Some(result),
        };
        // The result carries this handling's span (when spans are exported), else the task's
        // own trace context, so the orchestrator continues the same trace.
        let own = TraceFields::current();
        let (traceparent, tracestate) = if own.is_empty() {
            (task.traceparent.as_str(), task.tracestate.as_str())
        } else {
            (own.traceparent.as_str(), own.tracestate.as_str())
        };
        if let Err(e) = self
            .bus
            .publish_result(&self.handler, &result, traceparent, tracestate)
            .await
        {
            tracing::warn!(error = %e, "result not published, task left for later");
            return nak(message).await;
        }
        self.stats.answered(outcome, replayed);
        let m = metrics::workers();
        m.task(&self.handler, outcome.label());
        if outcome == Outcome::Completed {
            m.effect(&self.handler, !replayed);
        }
        tracing::debug!(?outcome, replayed, "answered");
        // Before the ack, so that a listener measuring work in progress never sees more than
        // the server lets through.
        self.emit(WorkerEvent::Answered {
            handler: self.handler.clone(),
            task_id: task.task_id.clone(),
            idempotency_key: task.idempotency_key.clone(),
            outcome,
            replayed,
            instant: Instant::now(),
        });
        if let Err(e) = message.ack().await {
            // The result is out; a redelivery is answered from the ledger or deduplicated.
            tracing::warn!(error = %e, "ack failed");
        }
    }

    /// Records a message that is not a usable task, answers it when it names a task, and
    /// acknowledges it with `Term` so it is never delivered again.
    async fn malformed(
        &self,
        message: &jetstream::Message,
        task: Option<&v1::Task>,
        reason: String,
    ) {
        let task_id = task.map(|t| t.task_id.clone()).filter(|id| !id.is_empty());
        tracing::warn!(handler = %self.handler, subject = %message.subject, task_id = ?task_id, %reason, "malformed task");
        let stream_sequence = message.info().map(|i| i.stream_sequence).unwrap_or(0);
        let record = MalformedTask {
            handler: self.handler.clone(),
            subject: message.subject.to_string(),
            stream_sequence,
            reason: reason.clone(),
            task_id: task_id.clone(),
            worker: self.instance.clone(),
            received_at: Utc::now(),
        };
        if let Err(e) = self.ledger.record_malformed(&record).await {
            tracing::error!(error = %e, "malformed task not recorded");
        }
        // A task that names itself gets an answer, so its saga need not wait for a timeout.
        if let (Some(task), Some(task_id)) = (task, &task_id) {
            let result = v1::TaskResult {
                task_id: task_id.clone(),
                idempotency_key: task.idempotency_key.clone(),
                attempt: task.attempt,
                outcome: Some(v1::task_result::Outcome::Failed(v1::TaskFailed {
                    retryable: false,
                    reason: format!("malformed task: {reason}"),
                    error_code: error_codes::MALFORMED_TASK.to_owned(),
                })),
            };
            if let Err(e) = self
                .bus
                .publish_result(&self.handler, &result, &task.traceparent, &task.tracestate)
                .await
            {
                tracing::warn!(error = %e, "answer to a malformed task not published");
            }
        }
        self.stats.malformed();
        metrics::workers().task(&self.handler, "malformed");
        self.emit(WorkerEvent::Malformed {
            handler: self.handler.clone(),
            task_id,
            reason,
        });
        if let Err(e) = message.ack_with(AckKind::Term).await {
            tracing::warn!(error = %e, "term failed");
        }
    }
}

async fn nak(message: &jetstream::Message) {
    if let Err(e) = message.ack_with(AckKind::Nak(Some(NAK_DELAY))).await {
        tracing::debug!(error = %e, "nak failed; the ack wait redelivers");
    }
}

/// A case number the simulated target gives, the same for every delivery of a key:
/// the handler's first segment and ten hex digits of a hash of handler and key, e.g.
/// `GEMEENTE-3F2A9C1D0B`.
pub fn case_number(handler: &str, idempotency_key: &str) -> String {
    let namespace = uuid::Uuid::new_v5(
        &uuid::Uuid::NAMESPACE_URL,
        b"https://levensloop.vlaanderen.be/case",
    );
    let hash = uuid::Uuid::new_v5(
        &namespace,
        format!("{handler}\n{idempotency_key}").as_bytes(),
    )
    .simple()
    .to_string();
    let prefix = handler.split('.').next().unwrap_or(handler).to_uppercase();
    format!("{prefix}-{}", hash[..10].to_uppercase())
}
