//! The orchestrator's part of a life event's trace.
//!
//! - A saga's start continues the trace stored with its life event (the gateway's accepting
//!   span, in the event's metadata).
//! - Handling a result continues the trace in the result message's headers (the handler's
//!   span).
//! - A timer (a retry, a step's timeout, the end of a wait) continues the saga's own trace.
//! - Every task published from inside these spans carries the span's context in its
//!   `traceparent` / `tracestate` fields and headers, so the handler continues it.
//!
//! Nothing here runs unless spans are exported ([`levensloop_telemetry::enabled`]).

use crate::shard::Msg;
use levensloop_proto::v1;
use levensloop_telemetry::propagation::{self, TraceFields};
use std::collections::BTreeMap;
use tracing::Span;

/// A saga's own trace context, kept with its cached state: the parent of its timers' spans.
/// Empty (no allocation) unless spans are exported.
#[derive(Debug, Clone, Default)]
pub struct SagaTrace(Option<Box<TraceFields>>);

impl SagaTrace {
    /// The current span's context (a saga started in it).
    pub fn current() -> Self {
        if !levensloop_telemetry::enabled() {
            return Self::default();
        }
        let fields = TraceFields::current();
        Self((!fields.is_empty()).then(|| Box::new(fields)))
    }

    /// The context stored with the saga's life event.
    pub fn from_metadata(metadata: &BTreeMap<String, String>) -> Self {
        if !levensloop_telemetry::enabled() {
            return Self::default();
        }
        let fields = TraceFields::new(
            metadata
                .get(propagation::TRACEPARENT)
                .cloned()
                .unwrap_or_default(),
            metadata
                .get(propagation::TRACESTATE)
                .cloned()
                .unwrap_or_default(),
        );
        Self((!fields.is_empty()).then(|| Box::new(fields)))
    }

    /// The span of a timer of the saga (a retry, a timeout, the end of a wait).
    pub fn timer_span(&self, saga: uuid::Uuid, step: &str, kind: &'static str) -> Span {
        if !levensloop_telemetry::enabled() {
            return Span::none();
        }
        let span = tracing::info_span!("orchestrator.timer", %saga, step, kind);
        self.adopt(&span);
        span
    }

    /// The span of re-dispatching the saga's pending work after a restart.
    pub fn recover_span(&self, saga: uuid::Uuid) -> Span {
        if !levensloop_telemetry::enabled() {
            return Span::none();
        }
        let span = tracing::info_span!("orchestrator.recover", %saga);
        self.adopt(&span);
        span
    }

    fn adopt(&self, span: &Span) {
        if let Some(fields) = &self.0 {
            propagation::set_parent(span, fields.context());
        }
    }
}

/// Wraps a message for a shard in a span, when spans are exported.
pub fn traced(msg: Msg, span: Span) -> Msg {
    if span.is_none() {
        return msg;
    }
    Msg::Traced {
        span,
        msg: Box::new(msg),
    }
}

/// The span of a saga's start, continuing the life event's stored trace.
pub fn start_span(saga: uuid::Uuid, metadata: &BTreeMap<String, String>) -> Span {
    if !levensloop_telemetry::enabled() {
        return Span::none();
    }
    let span = tracing::info_span!("orchestrator.saga.start", %saga);
    propagation::set_parent(&span, propagation::extract_map(metadata));
    span
}

/// The span of an answer a saga gives itself (its settle step's), a child of the current span.
pub fn own_answer_span(saga: uuid::Uuid, step: &str) -> Span {
    if !levensloop_telemetry::enabled() {
        return Span::none();
    }
    tracing::info_span!("orchestrator.own-answer", %saga, step)
}

/// The span of handling a result, continuing the handler's trace from the message headers.
pub fn result_span(message: &async_nats::jetstream::Message, result: &v1::TaskResult) -> Span {
    if !levensloop_telemetry::enabled() {
        return Span::none();
    }
    let handler = levensloop_bus::handler_of_result_subject(&message.subject).unwrap_or("");
    let span = tracing::info_span!(
        "orchestrator.result",
        handler,
        task_id = %result.task_id,
        attempt = result.attempt,
    );
    propagation::set_parent(
        &span,
        propagation::extract_headers(message.headers.as_ref()),
    );
    span
}

/// The task with the current span's trace context, when spans are exported and the task does
/// not carry one yet; `None` leaves it as it is.
pub fn with_current_context(task: &v1::Task) -> Option<v1::Task> {
    if !levensloop_telemetry::enabled() || !task.traceparent.is_empty() {
        return None;
    }
    let fields = TraceFields::current();
    if fields.is_empty() {
        return None;
    }
    let mut task = task.clone();
    task.traceparent = fields.traceparent;
    task.tracestate = fields.tracestate;
    Some(task)
}
