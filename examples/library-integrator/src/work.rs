//! Serving the handler's tasks on a `HandlerService.Work` stream.
//!
//! The worker opens a bidirectional stream and says hello (which handler, how many tasks it
//! can take: its credits). Levensloop streams tasks, each with a lease; the worker answers
//! each with `complete` or `fail` before the lease ends (or extends it), then gives one credit
//! back for the next task. Levensloop acknowledges every answer; an `ignored` ack means the
//! answer was late: the lease had expired and the task had gone to another worker.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use prost_types::value::Kind;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_stream::wrappers::ReceiverStream;
use tracing::{Instrument, debug, info, info_span, warn};

use crate::Client;
use crate::effects::{Effects, Key};
use crate::pb::work_request::{self, Complete, Credit, ExtendLease, Fail, Hello};
use crate::pb::work_response::{self, TaskAssigned};
use crate::pb::{Task, WorkRequest};

/// How this worker serves its tasks.
#[derive(Debug)]
pub struct Options {
    pub handler: String,
    pub worker_id: String,
    pub credits: u32,
    /// How long closing an account takes (the tests' way to kill a worker mid-task).
    pub work: Duration,
    /// Extend the lease while the work outlasts half of it.
    pub extend: bool,
    /// Refuse every task for good (to test a saga's compensation).
    pub fail_permanently: bool,
}

/// What the spawned task handlers share.
#[derive(Debug)]
struct Worker {
    options: Options,
    effects: Effects,
}

/// Serves tasks until the process stops: when the stream ends or fails, it reconnects and
/// says hello again. The keys done stay in memory (and in the effects file) across
/// reconnections, so a task redelivered meanwhile is not done twice.
pub async fn serve(mut client: Client, options: Options, effects: Effects) {
    let worker = Arc::new(Worker { options, effects });
    let mut backoff = Backoff::default();
    loop {
        match session(&mut client, &worker, &mut backoff).await {
            Ok(()) => warn!("the work stream ended"),
            Err(error) => warn!(error = %format!("{error:#}"), "the work stream failed"),
        }
        let wait = backoff.next_wait();
        info!(?wait, "reconnecting");
        tokio::time::sleep(wait).await;
    }
}

/// One Work stream, from hello to its end.
async fn session(
    client: &mut Client,
    worker: &Arc<Worker>,
    backoff: &mut Backoff,
) -> anyhow::Result<()> {
    let options = &worker.options;
    // Every request (hello, answers, credits, extensions) goes through this one channel: the
    // spawned task handlers each hold a sender, and the receiver is the request stream.
    let (requests, outgoing) = mpsc::channel(64 + options.credits as usize * 4);
    requests
        .send(request(work_request::Message::Hello(Hello {
            handler: options.handler.clone(),
            credits: options.credits,
            worker_id: options.worker_id.clone(),
        })))
        .await?;
    let mut incoming = client
        .work(ReceiverStream::new(outgoing))
        .await?
        .into_inner();
    crate::say(&format!(
        "library-integrator: serving {} as {}",
        options.handler, options.worker_id
    ))?;
    backoff.reset();

    while let Some(response) = incoming.message().await? {
        match response.message {
            Some(work_response::Message::Task(assigned)) => {
                // Concurrently: a slow task must not hold up the others the credits allow.
                tokio::spawn(handle(Arc::clone(worker), requests.clone(), assigned));
            }
            Some(work_response::Message::Ack(ack)) if ack.ignored => warn!(
                task_id = %ack.task_id,
                "answer ignored: it came after the lease expired and the task went to another worker"
            ),
            Some(work_response::Message::Ack(ack)) => {
                debug!(task_id = %ack.task_id, "answer taken")
            }
            None => debug!("skipping an empty WorkResponse (from a newer server?)"),
        }
    }
    Ok(())
}

/// Handles one task: answers it, then asks for the next.
async fn handle(worker: Arc<Worker>, requests: mpsc::Sender<WorkRequest>, assigned: TaskAssigned) {
    let Some(task) = assigned.task else {
        warn!("skipping a TaskAssigned without a task");
        return;
    };
    // The lease as Levensloop gave it; an extension asks for as much again.
    let lease = assigned
        .lease_deadline
        .and_then(|deadline| {
            chrono::DateTime::from_timestamp(
                deadline.seconds,
                u32::try_from(deadline.nanos).unwrap_or(0),
            )
        })
        .and_then(|deadline| (deadline - chrono::Utc::now()).to_std().ok())
        .unwrap_or_default();
    let span = info_span!(
        "task",
        task_id = %task.task_id,
        saga_id = %task.saga_id,
        attempt = task.attempt,
        compensation = task.compensation,
    );
    async move {
        info!(?lease, "task received");
        let answer = worker.answer(&task, lease, &requests).await;
        // The answer first, then the credit: the next task comes only once this one is done.
        let credit = request(work_request::Message::Credit(Credit { credits: 1 }));
        if requests.send(answer).await.is_err() || requests.send(credit).await.is_err() {
            // The stream this task came on is gone. Levensloop redelivers the task when its
            // lease ends, and the idempotency key keeps the effect from happening twice.
            warn!("the work stream closed before the answer was sent");
        }
    }
    .instrument(span)
    .await;
}

impl Worker {
    async fn answer(
        &self,
        task: &Task,
        lease: Duration,
        requests: &mpsc::Sender<WorkRequest>,
    ) -> WorkRequest {
        if self.options.fail_permanently && !task.compensation {
            info!("refusing the task (--fail-permanently)");
            return fail(task, false, "the library refuses (test)", "LIBRARY_REFUSED");
        }
        let key = Key {
            idempotency_key: task.idempotency_key.clone(),
            compensation: task.compensation,
        };
        // A redelivery of a step already done (our answer was lost, or came too late):
        // report success again, without a second effect.
        if self.effects.is_done(&key) {
            info!(key = %key.idempotency_key, "already done: completing again without a second effect");
            return complete(task);
        }

        self.work(task, lease, requests).await;
        match self.effects.record(&key, &self.effect(task)) {
            Ok(true) if task.compensation => info!("library account reopened"),
            Ok(true) => info!("library account closed"),
            Ok(false) => info!("done meanwhile by another delivery: no second effect"),
            Err(error) => {
                // Not recorded means not done: a retry may do it.
                warn!(%error, "cannot record the effect");
                return fail(
                    task,
                    true,
                    &format!("cannot record the effect: {error}"),
                    "EFFECT_NOT_RECORDED",
                );
            }
        }
        complete(task)
    }

    /// Closing the account takes `--work-ms`. A lease shorter than the work would give the
    /// task to another worker, so past half of it the worker asks for another lease.
    async fn work(&self, task: &Task, lease: Duration, requests: &mpsc::Sender<WorkRequest>) {
        let started = Instant::now();
        let half = lease / 2;
        if self.options.extend && !half.is_zero() {
            let mut next = half;
            while next < self.options.work {
                tokio::time::sleep_until(started + next).await;
                let extend = request(work_request::Message::ExtendLease(ExtendLease {
                    task_id: task.task_id.clone(),
                    extension: Some(pb_duration(lease)),
                }));
                if requests.send(extend).await.is_err() {
                    break; // The stream is gone; the answer will not arrive either.
                }
                info!(?lease, "lease extended");
                next += half;
            }
        }
        tokio::time::sleep_until(started + self.options.work).await;
    }

    /// The effect line: what was done, for which task, by which worker.
    fn effect(&self, task: &Task) -> serde_json::Value {
        let data: BTreeMap<&String, &String> = task.data.iter().collect();
        serde_json::json!({
            "idempotency_key": task.idempotency_key,
            "task_id": task.task_id,
            "attempt": task.attempt,
            "step_id": task.step_id,
            "saga_id": task.saga_id,
            "compensation": task.compensation,
            "data": data,
            "worker_id": self.options.worker_id,
        })
    }
}

fn request(message: work_request::Message) -> WorkRequest {
    WorkRequest {
        message: Some(message),
    }
}

/// `complete`, with what Levensloop records with the saga's step.
fn complete(task: &Task) -> WorkRequest {
    let string = |s: &str| prost_types::Value {
        kind: Some(Kind::StringValue(s.to_owned())),
    };
    let account = if task.compensation {
        "reopened"
    } else {
        "closed"
    };
    let case: String = task.task_id.chars().take(8).collect();
    request(work_request::Message::Complete(Complete {
        task_id: task.task_id.clone(),
        result: Some(prost_types::Struct {
            fields: BTreeMap::from([
                ("library_account".to_owned(), string(account)),
                ("case".to_owned(), string(&case)),
            ]),
        }),
    }))
}

/// `fail`: `retryable` for a transient failure (retried with backoff), otherwise for good.
fn fail(task: &Task, retryable: bool, reason: &str, error_code: &str) -> WorkRequest {
    request(work_request::Message::Fail(Fail {
        task_id: task.task_id.clone(),
        retryable,
        reason: reason.to_owned(),
        error_code: error_code.to_owned(),
    }))
}

pub fn pb_duration(duration: Duration) -> prost_types::Duration {
    prost_types::Duration {
        seconds: i64::try_from(duration.as_secs()).unwrap_or(i64::MAX),
        nanos: i32::try_from(duration.subsec_nanos()).unwrap_or(0),
    }
}

/// Waits between reconnections: 1 s, doubling up to 10 s; back to 1 s once connected.
#[derive(Debug)]
pub struct Backoff(Duration);

impl Default for Backoff {
    fn default() -> Self {
        Self(Duration::from_secs(1))
    }
}

impl Backoff {
    pub fn next_wait(&mut self) -> Duration {
        let wait = self.0;
        self.0 = (self.0 * 2).min(Duration::from_secs(10));
        wait
    }

    fn reset(&mut self) {
        *self = Self::default();
    }
}
