//! The NATS bus between the orchestrator and the handlers.
//!
//! - **Tasks**: JetStream stream `LEVENSLOOP_TASKS` (work queue, file storage), one subject per
//!   handler: `levensloop.tasks.<handler>`. A task is a protobuf `levensloop.v1.Task` published
//!   with its task id as `Nats-Msg-Id`, so a re-dispatch after a crash is one message. Each
//!   handler has one durable pull consumer that every worker of that handler shares; its
//!   `max_ack_pending` is the handler's in-flight limit, enforced by the server across all
//!   workers and all orchestrator instances.
//! - **Results**: stream `LEVENSLOOP_RESULTS` (work queue), subject
//!   `levensloop.results.<handler>`, a protobuf `levensloop.v1.TaskResult` with the task id as
//!   `Nats-Msg-Id`. The orchestrators share the durable consumer `orchestrator`.
//!
//! A worker acknowledges its task only after its result is captured, so a worker that dies
//! mid-task has the task delivered again after the ack wait (its idempotency key keeps the
//! effect once).
//!
//! - **Rates**: [`RateGate`] (module [`rate`]), a handler's requests-per-second limit shared
//!   by every process that calls its target system, through the key-value bucket
//!   [`RATES_BUCKET`].
//! - **Time travel**: [`ClockOffset`] (module [`clock`]), how far a demo's or a test's sagas'
//!   clock runs ahead of the wall clock.

use async_nats::HeaderMap;
use async_nats::jetstream::{self, consumer, stream};
use levensloop_proto::v1;
use prost::Message;
use std::time::Duration;

pub mod clock;
pub mod rate;
pub use clock::{CLOCK_BUCKET, ClockOffset};
pub use rate::{LATENESS_BUDGET, RATES_BUCKET, RateGate, Slot, slot_interval};

pub const TASKS_STREAM: &str = "LEVENSLOOP_TASKS";
pub const TASKS_PREFIX: &str = "levensloop.tasks";
pub const RESULTS_STREAM: &str = "LEVENSLOOP_RESULTS";
pub const RESULTS_PREFIX: &str = "levensloop.results";
/// The durable consumer of the results stream, shared by every orchestrator instance.
pub const RESULTS_CONSUMER: &str = "orchestrator";
/// W3C trace context headers carried on tasks and results.
pub const TRACEPARENT: &str = "traceparent";
pub const TRACESTATE: &str = "tracestate";
/// A re-dispatched task (same id) within this window is stored once.
pub const DUPLICATE_WINDOW: Duration = Duration::from_secs(15 * 60);

/// What went wrong on the bus.
#[derive(Debug, thiserror::Error)]
pub enum BusError {
    /// A handler name that cannot be a subject token sequence.
    #[error("invalid handler name {name:?}: {reason}")]
    InvalidHandler { name: String, reason: &'static str },
    /// NATS could not be reached or refused the operation; safe to retry.
    #[error("bus unavailable: {context}: {source}")]
    Unavailable {
        context: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A message on the bus that is not what its subject promises.
    #[error("malformed message on {subject}: {reason}")]
    Malformed { subject: String, reason: String },
}

fn unavailable(
    context: impl Into<String>,
) -> impl FnOnce(Box<dyn std::error::Error + Send + Sync>) -> BusError {
    let context = context.into();
    move |source| BusError::Unavailable { context, source }
}

/// Opens a file-backed key-value bucket, creating it on first use (another process may
/// create it at the same moment; then its bucket is opened).
pub async fn open_bucket(
    js: &jetstream::Context,
    bucket: &str,
    description: &str,
    history: i64,
    replicas: usize,
) -> Result<jetstream::kv::Store, BusError> {
    if let Ok(kv) = js.get_key_value(bucket).await {
        return Ok(kv);
    }
    let created = js
        .create_key_value(jetstream::kv::Config {
            bucket: bucket.to_owned(),
            description: description.to_owned(),
            history,
            storage: jetstream::stream::StorageType::File,
            num_replicas: replicas.max(1),
            ..jetstream::kv::Config::default()
        })
        .await;
    match created {
        Ok(kv) => Ok(kv),
        Err(e) => js
            .get_key_value(bucket)
            .await
            .map_err(|_| unavailable(format!("create bucket {bucket}"))(Box::new(e))),
    }
}

/// Checks that a handler name is usable as subject tokens: lower-case letters, digits, `-`,
/// `_`, separated by single dots (`groeipakket.startbedrag`).
pub fn check_handler(name: &str) -> Result<(), BusError> {
    match levensloop_proto::handler_name_problem(name) {
        None => Ok(()),
        Some(reason) => Err(BusError::InvalidHandler {
            name: name.to_owned(),
            reason,
        }),
    }
}

pub fn task_subject(handler: &str) -> String {
    format!("{TASKS_PREFIX}.{handler}")
}

pub fn result_subject(handler: &str) -> String {
    format!("{RESULTS_PREFIX}.{handler}")
}

/// The durable consumer of a handler's queue. Consumer names hold no dots: `_` is doubled
/// and `.` becomes `_`, so two handlers never share a consumer (`a.b_c` and `a_b.c` differ).
pub fn consumer_name(handler: &str) -> String {
    format!("handler-{}", handler.replace('_', "__").replace('.', "_"))
}

/// How a handler's queue delivers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueLimits {
    /// Tasks delivered and not yet acknowledged, across every worker of the handler.
    pub max_in_flight: u32,
    /// How long a worker may hold a task before it goes to another worker.
    pub ack_wait: Duration,
}

impl Default for QueueLimits {
    fn default() -> Self {
        Self {
            max_in_flight: 64,
            ack_wait: Duration::from_secs(30),
        }
    }
}

/// A connection to the bus.
#[derive(Debug, Clone)]
pub struct Bus {
    client: async_nats::Client,
    js: jetstream::Context,
    replicas: usize,
}

impl Bus {
    /// Connects and ensures both streams.
    pub async fn connect(url: &str, replicas: usize) -> Result<Self, BusError> {
        let client = async_nats::connect(url)
            .await
            .map_err(|e| unavailable(format!("connect to {url}"))(Box::new(e)))?;
        Self::new(client, replicas).await
    }

    /// Uses an existing connection and ensures both streams.
    pub async fn new(client: async_nats::Client, replicas: usize) -> Result<Self, BusError> {
        let js = jetstream::new(client.clone());
        let bus = Self {
            client,
            js,
            replicas: replicas.max(1),
        };
        bus.ensure_stream(
            TASKS_STREAM,
            TASKS_PREFIX,
            "tasks for handlers, one subject per handler",
        )
        .await?;
        bus.ensure_stream(RESULTS_STREAM, RESULTS_PREFIX, "handlers' answers to tasks")
            .await?;
        Ok(bus)
    }

    pub fn client(&self) -> &async_nats::Client {
        &self.client
    }

    pub fn jetstream(&self) -> &jetstream::Context {
        &self.js
    }

    async fn ensure_stream(
        &self,
        name: &str,
        prefix: &str,
        description: &str,
    ) -> Result<(), BusError> {
        self.js
            .create_or_update_stream(stream::Config {
                name: name.to_owned(),
                description: Some(format!("Levensloop: {description}")),
                subjects: vec![format!("{prefix}.>")],
                retention: stream::RetentionPolicy::WorkQueue,
                storage: stream::StorageType::File,
                num_replicas: self.replicas,
                duplicate_window: DUPLICATE_WINDOW,
                ..stream::Config::default()
            })
            .await
            .map_err(|e| unavailable(format!("ensure stream {name}"))(Box::new(e)))?;
        Ok(())
    }

    /// The handler's shared queue consumer, created or updated with these limits.
    pub async fn handler_queue(
        &self,
        handler: &str,
        limits: QueueLimits,
    ) -> Result<consumer::PullConsumer, BusError> {
        check_handler(handler)?;
        let name = consumer_name(handler);
        let stream = self
            .js
            .get_stream(TASKS_STREAM)
            .await
            .map_err(|e| unavailable(format!("open stream {TASKS_STREAM}"))(Box::new(e)))?;
        let config = consumer::pull::Config {
            durable_name: Some(name.clone()),
            description: Some(format!("workers of {handler}")),
            filter_subject: task_subject(handler),
            ack_policy: consumer::AckPolicy::Explicit,
            ack_wait: limits.ack_wait,
            max_ack_pending: i64::from(limits.max_in_flight.max(1)),
            // A task delivered this often without an answer is still retried by the saga's
            // own timeout; the queue stops redelivering it.
            max_deliver: 20,
            ..consumer::pull::Config::default()
        };
        // create_consumer updates the limits of an existing durable consumer as well.
        stream
            .create_consumer(config)
            .await
            .map_err(|e| unavailable(format!("handler queue {name}"))(Box::new(e)))
    }

    /// The orchestrators' shared consumer of every handler's results.
    pub async fn results_consumer(&self) -> Result<consumer::PullConsumer, BusError> {
        let stream = self
            .js
            .get_stream(RESULTS_STREAM)
            .await
            .map_err(|e| unavailable(format!("open stream {RESULTS_STREAM}"))(Box::new(e)))?;
        stream
            .get_or_create_consumer(
                RESULTS_CONSUMER,
                consumer::pull::Config {
                    durable_name: Some(RESULTS_CONSUMER.to_owned()),
                    ack_policy: consumer::AckPolicy::Explicit,
                    ack_wait: Duration::from_secs(30),
                    max_ack_pending: 4_096,
                    ..consumer::pull::Config::default()
                },
            )
            .await
            .map_err(|e| unavailable("results consumer")(Box::new(e)))
    }

    /// Publishes a task to its handler's queue and waits until it is stored. The same task
    /// id within [`DUPLICATE_WINDOW`] is stored once.
    pub async fn publish_task(&self, task: &v1::Task) -> Result<(), BusError> {
        check_handler(&task.handler)?;
        let mut headers = HeaderMap::new();
        headers.insert(async_nats::header::NATS_MESSAGE_ID, task.task_id.as_str());
        trace_headers(&mut headers, &task.traceparent, &task.tracestate);
        self.publish(task_subject(&task.handler), headers, task.encode_to_vec())
            .await
    }

    /// Publishes a handler's answer and waits until it is stored.
    pub async fn publish_result(
        &self,
        handler: &str,
        result: &v1::TaskResult,
        traceparent: &str,
        tracestate: &str,
    ) -> Result<(), BusError> {
        check_handler(handler)?;
        let mut headers = HeaderMap::new();
        headers.insert(async_nats::header::NATS_MESSAGE_ID, result.task_id.as_str());
        trace_headers(&mut headers, traceparent, tracestate);
        self.publish(result_subject(handler), headers, result.encode_to_vec())
            .await
    }

    async fn publish(
        &self,
        subject: String,
        headers: HeaderMap,
        body: Vec<u8>,
    ) -> Result<(), BusError> {
        let context = format!("publish on {subject}");
        self.js
            .publish_with_headers(subject, headers, body.into())
            .await
            .map_err(|e| unavailable(context.clone())(Box::new(e)))?
            .await
            .map_err(|e| unavailable(context)(Box::new(e)))?;
        Ok(())
    }
}

fn trace_headers(headers: &mut HeaderMap, traceparent: &str, tracestate: &str) {
    if !traceparent.is_empty() {
        headers.insert(TRACEPARENT, traceparent);
    }
    if !tracestate.is_empty() {
        headers.insert(TRACESTATE, tracestate);
    }
}

/// Decodes a task from its queue message.
pub fn decode_task(message: &jetstream::Message) -> Result<v1::Task, BusError> {
    v1::Task::decode(message.payload.as_ref()).map_err(|e| BusError::Malformed {
        subject: message.subject.to_string(),
        reason: e.to_string(),
    })
}

/// Decodes a result from the results stream.
pub fn decode_result(message: &jetstream::Message) -> Result<v1::TaskResult, BusError> {
    v1::TaskResult::decode(message.payload.as_ref()).map_err(|e| BusError::Malformed {
        subject: message.subject.to_string(),
        reason: e.to_string(),
    })
}

/// The handler a results subject is for.
pub fn handler_of_result_subject(subject: &str) -> Option<&str> {
    subject
        .strip_prefix(RESULTS_PREFIX)
        .and_then(|s| s.strip_prefix('.'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handler_names_become_subjects_and_consumer_names() {
        assert!(check_handler("groeipakket.startbedrag").is_ok());
        assert!(check_handler("gemeente.geboortepremie.recover").is_ok());
        for bad in ["", "a..b", ".a", "a.", "A.b", "a b", "a.*", "a.>"] {
            assert!(check_handler(bad).is_err(), "{bad:?}");
        }
        assert_eq!(
            task_subject("diftar.close"),
            "levensloop.tasks.diftar.close"
        );
        assert_eq!(consumer_name("diftar.close"), "handler-diftar_close");
        assert_ne!(consumer_name("a.b_c"), consumer_name("a_b.c"));
        assert_eq!(
            handler_of_result_subject("levensloop.results.diftar.close"),
            Some("diftar.close")
        );
    }
}
