//! What the worker tests share: tasks as the orchestrator builds them, reading results,
//! awaiting worker events.

#![allow(dead_code)]

use async_nats::jetstream::consumer::PullConsumer;
use futures::StreamExt;
use levensloop_bus::{Bus, decode_result};
use levensloop_proto::v1;
use levensloop_sagas::{idempotency_key, task_id};
use levensloop_workers::sim::Behaviour;
use levensloop_workers::{WorkerEvent, WorkersConfig};
use std::time::Duration;
use tokio::sync::broadcast;
use uuid::Uuid;

/// Anything awaited longer than this is a failure, not a hang.
pub const TIMEOUT: Duration = Duration::from_secs(30);

/// A task as the orchestrator dispatches it.
pub fn task(handler: &str, saga: Uuid, step: &str, attempt: u32, compensation: bool) -> v1::Task {
    v1::Task {
        task_id: task_id(saga, step, attempt, compensation).to_string(),
        saga_id: saga.to_string(),
        step_id: step.to_owned(),
        handler: handler.to_owned(),
        attempt,
        idempotency_key: idempotency_key(saga, step, compensation),
        deadline: None,
        data: [("child.insz".to_owned(), "24010100123".to_owned())].into(),
        compensation,
        traceparent: String::new(),
        tracestate: String::new(),
    }
}

/// Test workers: instant, serving `handlers`, with a short pull so stops are quick.
pub fn config(handlers: &[&str], instance: &str) -> WorkersConfig {
    WorkersConfig {
        handlers: handlers.iter().map(|h| (*h).to_owned()).collect(),
        behaviour: Behaviour::instant(),
        instance: instance.to_owned(),
        seed: Some(7),
        fetch_expiry: Duration::from_millis(500),
        ..WorkersConfig::default()
    }
}

/// Takes `n` results off the results stream (the orchestrators' consumer; no orchestrator
/// runs in these tests).
pub async fn results(consumer: &PullConsumer, n: usize) -> Vec<v1::TaskResult> {
    let mut out = Vec::new();
    let mut messages = consumer.messages().await.unwrap();
    tokio::time::timeout(TIMEOUT, async {
        while out.len() < n {
            let message = messages.next().await.unwrap().unwrap();
            out.push(decode_result(&message).unwrap());
            message.ack().await.unwrap();
        }
    })
    .await
    .unwrap_or_else(|_| panic!("{} of {n} results", out.len()));
    out
}

/// The results waiting on the stream now (none expected after `results` took its share).
pub async fn results_left(bus: &Bus) -> u64 {
    let mut consumer = bus.results_consumer().await.unwrap();
    consumer.info().await.unwrap().num_pending
}

/// Waits for the first event that `pick` maps to something.
pub async fn wait_for<T>(
    events: &mut broadcast::Receiver<WorkerEvent>,
    mut pick: impl FnMut(&WorkerEvent) -> Option<T>,
) -> T {
    tokio::time::timeout(TIMEOUT, async {
        loop {
            let event = events.recv().await.unwrap();
            if let Some(t) = pick(&event) {
                return t;
            }
        }
    })
    .await
    .expect("the awaited worker event")
}

pub fn completed(result: &v1::TaskResult) -> Option<&v1::TaskCompleted> {
    match result.outcome.as_ref() {
        Some(v1::task_result::Outcome::Completed(c)) => Some(c),
        _ => None,
    }
}

pub fn failed(result: &v1::TaskResult) -> Option<&v1::TaskFailed> {
    match result.outcome.as_ref() {
        Some(v1::task_result::Outcome::Failed(f)) => Some(f),
        _ => None,
    }
}

/// A string field of a completed result.
pub fn field(result: &v1::TaskResult, name: &str) -> Option<String> {
    let value = completed(result)?.result.as_ref()?.fields.get(name)?;
    match value.kind.as_ref()? {
        levensloop_proto::types::value::Kind::StringValue(s) => Some(s.clone()),
        _ => None,
    }
}

/// The events of several instances on one channel, tagged with the instance's index.
pub fn merge(
    receivers: Vec<broadcast::Receiver<WorkerEvent>>,
) -> tokio::sync::mpsc::UnboundedReceiver<(usize, WorkerEvent)> {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    for (i, mut events) in receivers.into_iter().enumerate() {
        let tx = tx.clone();
        tokio::spawn(async move {
            while let Ok(event) = events.recv().await {
                if tx.send((i, event)).is_err() {
                    break;
                }
            }
        });
    }
    rx
}
