//! One `Work` stream: an integrator's worker takes a handler's tasks from its queue.
//!
//! The worker gives credits (how many tasks it can hold); a puller fetches that many from
//! the handler's shared queue consumer, so several workers (on any instance) share the load
//! and the consumer's `max_ack_pending` bounds the tasks in flight across all of them. Each
//! task is leased for the queue's ack wait: `ExtendLease` renews it (and tells the server the
//! task is in progress); a lease that runs out, or a worker that goes away, hands the task
//! back to the queue at once for another worker. An answer is taken only while its lease
//! holds: a late answer is acknowledged as ignored, so a task's result counts once.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_nats::jetstream::{self, AckKind, consumer::PullConsumer};
use futures::StreamExt;
use levensloop_bus::Bus;
use levensloop_proto::v1::{
    self, WorkRequest, WorkResponse, task_result::Outcome, work_request, work_response,
};
use levensloop_store::{PULL_EXPIRY, PULL_HEARTBEAT};
use levensloop_telemetry::metrics;
use tokio::sync::{Semaphore, mpsc};
use tokio::time::Instant;
use tonic::{Status, Streaming};

/// Credits beyond this per stream are ignored: a worker cannot hoard a queue.
pub const MAX_CREDITS: u32 = 1024;

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("handler", &self.handler)
            .field("worker_id", &self.worker_id)
            .finish_non_exhaustive()
    }
}

/// A task a worker holds.
struct Lease {
    message: jetstream::Message,
    task: v1::Task,
    until: Instant,
}

/// One worker's stream, from its Hello to its end.
pub struct Session {
    pub bus: Bus,
    pub handler: String,
    pub worker_id: String,
    pub lease: Duration,
    pub consumer: PullConsumer,
    pub responses: mpsc::Sender<Result<WorkResponse, Status>>,
}

impl Session {
    /// Serves the stream until the worker ends it; hands back every task still held.
    pub async fn run(self, mut requests: Streaming<WorkRequest>, credits: u32) {
        let credits = Arc::new(Semaphore::new(credits.min(MAX_CREDITS) as usize));
        let (tasks_tx, mut tasks) = mpsc::channel::<jetstream::Message>(64);
        let puller = tokio::spawn(pull(self.consumer.clone(), credits.clone(), tasks_tx));
        let mut leases: HashMap<String, Lease> = HashMap::new();
        tracing::info!(handler = %self.handler, worker = %self.worker_id, "worker connected");
        metrics::handlers().worker_connected(&self.handler, 1);
        loop {
            let next_expiry = leases.values().map(|l| l.until).min();
            tokio::select! {
                request = requests.message() => match request {
                    Ok(Some(WorkRequest { message: Some(m) })) => {
                        if !self.handle(m, &mut leases, &credits).await {
                            break;
                        }
                    }
                    Ok(Some(WorkRequest { message: None })) => {}
                    Ok(None) => break,
                    Err(e) => {
                        tracing::info!(worker = %self.worker_id, error = %e, "worker stream broke");
                        break;
                    }
                },
                Some(message) = tasks.recv() => {
                    if !self.assign(message, &mut leases).await {
                        break;
                    }
                }
                () = sleep_until(next_expiry), if next_expiry.is_some() => {
                    let now = Instant::now();
                    let expired: Vec<String> = leases
                        .iter()
                        .filter(|(_, l)| l.until <= now)
                        .map(|(id, _)| id.clone())
                        .collect();
                    for task_id in expired {
                        if let Some(lease) = leases.remove(&task_id) {
                            tracing::info!(worker = %self.worker_id, %task_id, "lease expired; the task goes to another worker");
                            give_back(&lease.message).await;
                            metrics::handlers().delivered(&self.handler, "work", "handed_back");
                        }
                    }
                }
            }
        }
        puller.abort();
        // Tasks still held go back to the queue now rather than after the ack wait.
        for lease in leases.values() {
            give_back(&lease.message).await;
            metrics::handlers().delivered(&self.handler, "work", "handed_back");
        }
        metrics::handlers().worker_connected(&self.handler, -1);
        tracing::info!(handler = %self.handler, worker = %self.worker_id, returned = leases.len(), "worker gone");
    }

    /// Hands a fetched task to the worker under a lease; false once the worker is gone.
    async fn assign(
        &self,
        message: jetstream::Message,
        leases: &mut HashMap<String, Lease>,
    ) -> bool {
        let task = match levensloop_bus::decode_task(&message) {
            Ok(task) if !task.task_id.is_empty() => task,
            Ok(_) | Err(_) => {
                // Never a usable task: never delivered again.
                tracing::warn!(handler = %self.handler, subject = %message.subject, "malformed task terminated");
                let _ = message.ack_with(AckKind::Term).await;
                return true;
            }
        };
        let deadline = SystemTime::now() + self.lease;
        let assigned = WorkResponse {
            message: Some(work_response::Message::Task(work_response::TaskAssigned {
                task: Some(task.clone()),
                lease_deadline: Some(timestamp(deadline)),
            })),
        };
        if self.responses.send(Ok(assigned)).await.is_err() {
            give_back(&message).await;
            return false;
        }
        let until = Instant::now() + self.lease;
        if let Some(previous) = leases.insert(
            task.task_id.clone(),
            Lease {
                message,
                task,
                until,
            },
        ) {
            // The queue redelivered a task this worker still held: the newer delivery counts.
            drop(previous);
        }
        true
    }

    /// One message from the worker; false once the worker is gone.
    async fn handle(
        &self,
        message: work_request::Message,
        leases: &mut HashMap<String, Lease>,
        credits: &Semaphore,
    ) -> bool {
        let (task_id, outcome) = match message {
            work_request::Message::Hello(_) => return true,
            work_request::Message::Credit(c) => {
                let room = (MAX_CREDITS as usize).saturating_sub(credits.available_permits());
                credits.add_permits((c.credits as usize).min(room));
                return true;
            }
            work_request::Message::ExtendLease(extend) => {
                if let Some(lease) = leases.get_mut(&extend.task_id) {
                    // The queue's own timer restarts at each progress signal, so a lease never
                    // outlasts it.
                    let _ = lease.message.ack_with(AckKind::Progress).await;
                    lease.until = Instant::now() + self.lease;
                }
                return true;
            }
            work_request::Message::Complete(c) => (
                c.task_id,
                Outcome::Completed(v1::TaskCompleted { result: c.result }),
            ),
            work_request::Message::Fail(f) => (
                f.task_id,
                Outcome::Failed(v1::TaskFailed {
                    retryable: f.retryable,
                    reason: f.reason,
                    error_code: f.error_code,
                }),
            ),
        };
        let label = outcome_label(&outcome);
        let ignored = match leases.remove(&task_id) {
            None => {
                tracing::info!(worker = %self.worker_id, %task_id, "late or unknown answer ignored");
                metrics::handlers().delivered(&self.handler, "work", "ignored");
                true
            }
            Some(lease) => {
                let stored = self.answer(lease, outcome).await;
                metrics::handlers().delivered(
                    &self.handler,
                    "work",
                    if stored { label } else { "handed_back" },
                );
                !stored
            }
        };
        let ack = WorkResponse {
            message: Some(work_response::Message::Ack(work_response::Ack {
                task_id,
                ignored,
            })),
        };
        self.responses.send(Ok(ack)).await.is_ok()
    }

    /// Publishes the saga's result and acknowledges the task; false if the result could not
    /// be stored (the task then goes back to the queue).
    async fn answer(&self, lease: Lease, outcome: Outcome) -> bool {
        let task = &lease.task;
        let result = v1::TaskResult {
            task_id: task.task_id.clone(),
            idempotency_key: task.idempotency_key.clone(),
            attempt: task.attempt,
            outcome: Some(outcome),
        };
        if let Err(e) = self
            .bus
            .publish_result(&self.handler, &result, &task.traceparent, &task.tracestate)
            .await
        {
            tracing::warn!(error = %e, task_id = %task.task_id, "result not stored; task handed back");
            give_back(&lease.message).await;
            return false;
        }
        if let Err(e) = lease.message.ack().await {
            // The result is stored; a redelivery's answer is a duplicate the saga ignores.
            tracing::warn!(error = %e, "ack failed");
        }
        true
    }
}

/// The `outcome` label of an answer.
pub fn outcome_label(outcome: &Outcome) -> &'static str {
    match outcome {
        Outcome::Completed(_) => "completed",
        Outcome::Failed(f) if f.retryable => "failed_retryable",
        Outcome::Failed(_) => "failed_permanent",
    }
}

/// Fetches as many tasks as the worker has credits for, as they come.
async fn pull(
    consumer: PullConsumer,
    credits: Arc<Semaphore>,
    tasks: mpsc::Sender<jetstream::Message>,
) {
    loop {
        let Ok(first) = credits.acquire().await else {
            return;
        };
        first.forget();
        let mut wanted = 1;
        let more = credits.available_permits();
        if more > 0
            && let Ok(permits) = credits.try_acquire_many(more as u32)
        {
            permits.forget();
            wanted += more;
        }
        let batch = consumer
            .batch()
            .max_messages(wanted)
            .expires(PULL_EXPIRY)
            .heartbeat(PULL_HEARTBEAT)
            .messages()
            .await;
        let mut got = 0;
        match batch {
            Ok(mut batch) => {
                while let Some(message) = batch.next().await {
                    match message {
                        Ok(message) => {
                            got += 1;
                            if tasks.send(message).await.is_err() {
                                return;
                            }
                        }
                        Err(e) => {
                            tracing::debug!(error = %e, "pull ended");
                            break;
                        }
                    }
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot pull tasks; trying again");
                // Not a synchronisation: a pause before asking an unavailable server again.
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
        credits.add_permits(wanted.saturating_sub(got));
    }
}

/// Back to the queue at once, for another worker.
async fn give_back(message: &jetstream::Message) {
    if let Err(e) = message.ack_with(AckKind::Nak(None)).await {
        tracing::debug!(error = %e, "nak failed; the queue redelivers after its ack wait");
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

pub fn timestamp(at: SystemTime) -> pbjson_types::Timestamp {
    let since = at
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default();
    pbjson_types::Timestamp {
        seconds: i64::try_from(since.as_secs()).unwrap_or(i64::MAX),
        nanos: i32::try_from(since.subsec_nanos()).unwrap_or(0),
    }
}
