//! The webhook connector: handlers registered with a URL instead of a worker.
//!
//! Each such handler's queue is served here: its task is POSTed as JSON (the proto3 JSON
//! form of `levensloop.v1.Task`) with an `Idempotency-Key` header, and the answer becomes the
//! saga's result:
//!
//! | answer                                        | result                              |
//! |-----------------------------------------------|-------------------------------------|
//! | 2xx                                           | done (a JSON object body is kept)   |
//! | 409 Conflict                                  | done before: success                |
//! | 408, 429                                      | retry with the step's backoff       |
//! | any other 4xx                                 | permanent failure                   |
//! | 5xx, timeout, connection refused              | retry with the step's backoff       |
//!
//! At most `max_in_flight` requests per handler are open at once (across every instance,
//! through the queue's shared consumer), each cut off after the step's timeout.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, AckKind};
use futures::StreamExt;
use levensloop_bus::{Bus, QueueLimits};
use levensloop_proto::v1::{self, task_result::Outcome};
use levensloop_store::{PULL_EXPIRY, PULL_HEARTBEAT};
use levensloop_telemetry::metrics;
use levensloop_telemetry::propagation::{self, TraceFields};
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;
use tracing::Instrument;

use crate::registry::RegistryStore;

/// Requests open at once per handler when its registration does not say.
pub const DEFAULT_CONCURRENCY: u32 = 16;
/// A request's timeout when the registration does not say.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
/// How often the registry is read even without an announcement of a change.
pub const REFRESH: Duration = Duration::from_secs(5);

/// Error codes of webhook failures, as the saga records them.
pub mod codes {
    pub const REJECTED: &str = "WEBHOOK_REJECTED";
    pub const UNAVAILABLE: &str = "WEBHOOK_UNAVAILABLE";
    pub const UNREACHABLE: &str = "WEBHOOK_UNREACHABLE";
}

/// Runs a connector for every registration with a URL, deregistered ones included (sagas that
/// include them still send tasks), and restarts it when the registration changes.
pub async fn supervise(bus: Bus, registry: Arc<RegistryStore>) {
    let mut changes = match bus
        .client()
        .subscribe(levensloop_proto::stored::HANDLER_REGISTRY_CHANGED_SUBJECT)
        .await
    {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::warn!(error = %e, "no registry announcements; reading periodically");
            None
        }
    };
    let mut running: HashMap<String, (u32, JoinHandle<()>)> = HashMap::new();
    let mut tick = tokio::time::interval(REFRESH);
    loop {
        match registry.refresh().await {
            Ok(current) => {
                let wanted: HashMap<String, v1::HandlerRegistration> = current
                    .list(true)
                    .into_iter()
                    .filter_map(|r| {
                        let spec = r.spec.as_ref()?;
                        (!spec.webhook_url.is_empty()).then(|| (spec.name.clone(), r.clone()))
                    })
                    .collect();
                running.retain(|name, (version, task)| {
                    let keep = wanted.get(name).is_some_and(|r| r.version == *version)
                        && !task.is_finished();
                    if !keep {
                        task.abort();
                    }
                    keep
                });
                for (name, registration) in wanted {
                    if running.contains_key(&name) {
                        continue;
                    }
                    let Some(spec) = registration.spec.clone() else {
                        continue;
                    };
                    tracing::info!(handler = %name, version = registration.version, url = %spec.webhook_url, "webhook connector started");
                    let task = tokio::spawn(connect(bus.clone(), spec));
                    running.insert(name, (registration.version, task));
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot read the handler registry"),
        }
        match changes.as_mut() {
            Some(changes) => {
                tokio::select! {
                    _ = changes.next() => {}
                    _ = tick.tick() => {}
                }
            }
            None => {
                tick.tick().await;
            }
        }
    }
}

fn duration_of(d: Option<&pbjson_types::Duration>) -> Option<Duration> {
    let d = d?;
    let secs = u64::try_from(d.seconds).ok()?;
    let nanos = u32::try_from(d.nanos).ok()?;
    Some(Duration::new(secs, nanos)).filter(|d| !d.is_zero())
}

/// Serves one webhook handler's queue until aborted.
async fn connect(bus: Bus, spec: v1::HandlerSpec) {
    let concurrency = if spec.max_in_flight > 0 {
        spec.max_in_flight
    } else {
        DEFAULT_CONCURRENCY
    };
    let timeout = duration_of(spec.timeout.as_ref()).unwrap_or(DEFAULT_TIMEOUT);
    let http = match reqwest::Client::builder().timeout(timeout).build() {
        Ok(http) => http,
        Err(e) => {
            tracing::error!(handler = %spec.name, error = %e, "no HTTP client");
            return;
        }
    };
    let limits = QueueLimits {
        max_in_flight: concurrency,
        // Longer than a request may take, so a slow answer is not raced by a redelivery.
        ack_wait: timeout + Duration::from_secs(5),
    };
    let slots = Arc::new(Semaphore::new(concurrency as usize));
    let spec = Arc::new(spec);
    loop {
        let consumer = match bus.handler_queue(&spec.name, limits).await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(handler = %spec.name, error = %e, "queue unavailable; trying again");
                // A pause before asking an unavailable server again.
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        let messages = consumer
            .stream()
            .max_messages_per_batch(concurrency as usize)
            .expires(PULL_EXPIRY)
            .heartbeat(PULL_HEARTBEAT)
            .messages()
            .await;
        let mut messages = match messages {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(handler = %spec.name, error = %e, "cannot pull tasks; trying again");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        while let Some(message) = messages.next().await {
            let message = match message {
                Ok(m) => m,
                Err(e) => {
                    tracing::debug!(handler = %spec.name, error = %e, "pull interrupted");
                    continue;
                }
            };
            let Ok(slot) = slots.clone().acquire_owned().await else {
                return;
            };
            let (bus, http, spec) = (bus.clone(), http.clone(), spec.clone());
            tokio::spawn(async move {
                deliver(&bus, &http, &spec, message).await;
                drop(slot);
            });
        }
    }
}

/// POSTs one task and stores its result.
async fn deliver(
    bus: &Bus,
    http: &reqwest::Client,
    spec: &v1::HandlerSpec,
    message: jetstream::Message,
) {
    let task = match levensloop_bus::decode_task(&message) {
        Ok(task) if !task.task_id.is_empty() => task,
        _ => {
            tracing::warn!(handler = %spec.name, "malformed task terminated");
            let _ = message.ack_with(AckKind::Term).await;
            return;
        }
    };
    let span = if levensloop_telemetry::enabled() {
        let span = tracing::info_span!("handlers.webhook", handler = %spec.name, task_id = %task.task_id, attempt = task.attempt);
        propagation::set_parent_fields(&span, &task.traceparent, &task.tracestate);
        span
    } else {
        tracing::Span::none()
    };
    deliver_traced(bus, http, spec, message, task)
        .instrument(span)
        .await;
}

async fn deliver_traced(
    bus: &Bus,
    http: &reqwest::Client,
    spec: &v1::HandlerSpec,
    message: jetstream::Message,
    task: v1::Task,
) {
    let outcome = post(http, &spec.webhook_url, &task).await;
    tracing::debug!(handler = %spec.name, task_id = %task.task_id, ?outcome, "webhook answered");
    let label = crate::work::outcome_label(&outcome);
    let result = v1::TaskResult {
        task_id: task.task_id.clone(),
        idempotency_key: task.idempotency_key.clone(),
        attempt: task.attempt,
        outcome: Some(outcome),
    };
    let own = TraceFields::current();
    let (traceparent, tracestate) = if own.is_empty() {
        (task.traceparent.as_str(), task.tracestate.as_str())
    } else {
        (own.traceparent.as_str(), own.tracestate.as_str())
    };
    if let Err(e) = bus
        .publish_result(&spec.name, &result, traceparent, tracestate)
        .await
    {
        tracing::warn!(handler = %spec.name, error = %e, "result not stored; task handed back");
        let _ = message.ack_with(AckKind::Nak(None)).await;
        metrics::handlers().delivered(&spec.name, "webhook", "handed_back");
        return;
    }
    metrics::handlers().delivered(&spec.name, "webhook", label);
    if let Err(e) = message.ack().await {
        tracing::warn!(error = %e, "ack failed");
    }
}

/// One POST, its answer read as the table in the module docs says.
pub async fn post(http: &reqwest::Client, url: &str, task: &v1::Task) -> Outcome {
    let mut request = http
        .post(url)
        .header("Idempotency-Key", &task.idempotency_key)
        .json(task);
    // The webhook continues the delivery's span when spans are exported, else the task's
    // own trace.
    let own = TraceFields::current();
    let (traceparent, tracestate) = if own.is_empty() {
        (task.traceparent.as_str(), task.tracestate.as_str())
    } else {
        (own.traceparent.as_str(), own.tracestate.as_str())
    };
    if !traceparent.is_empty() {
        request = request.header(levensloop_bus::TRACEPARENT, traceparent);
    }
    if !tracestate.is_empty() {
        request = request.header(levensloop_bus::TRACESTATE, tracestate);
    }
    let failed = |retryable: bool, reason: String, code: &str| {
        Outcome::Failed(v1::TaskFailed {
            retryable,
            reason,
            error_code: code.to_owned(),
        })
    };
    let response = match request.send().await {
        Ok(r) => r,
        Err(e) => {
            let why = if e.is_timeout() {
                "timed out".to_owned()
            } else if e.is_connect() {
                format!("cannot connect: {e}")
            } else {
                e.to_string()
            };
            return failed(true, format!("POST {url}: {why}"), codes::UNREACHABLE);
        }
    };
    let status = response.status();
    let body = response.bytes().await.unwrap_or_default();
    let snippet: String = String::from_utf8_lossy(&body).chars().take(200).collect();
    if status.is_success() || status == reqwest::StatusCode::CONFLICT {
        let result = serde_json::from_slice::<pbjson_types::Struct>(&body).ok();
        return Outcome::Completed(v1::TaskCompleted { result });
    }
    let reason = format!("POST {url}: HTTP {status}: {snippet}");
    let retryable = status.is_server_error()
        || status == reqwest::StatusCode::REQUEST_TIMEOUT
        || status == reqwest::StatusCode::TOO_MANY_REQUESTS;
    if retryable {
        failed(true, reason, codes::UNAVAILABLE)
    } else {
        failed(false, reason, codes::REJECTED)
    }
}
