//! W3C trace context (`traceparent`, `tracestate`) in and out of the carriers a life event
//! travels in: NATS headers, the event store's metadata (a string map), the fields of a
//! protobuf `Task`, and gRPC metadata.
//!
//! Every function is a no-op unless spans are exported ([`crate::enabled`]): without an OTLP
//! endpoint nothing is read, written or allocated.

pub use opentelemetry::Context;
use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::TraceContextExt;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use std::collections::BTreeMap;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// The W3C header (and metadata key) of the trace and parent span.
pub const TRACEPARENT: &str = "traceparent";
/// The W3C header of vendor-specific trace state.
pub const TRACESTATE: &str = "tracestate";
/// The CloudEvents distributed-tracing extension in NATS binary mode.
const CE_TRACEPARENT: &str = "ce-traceparent";
const CE_TRACESTATE: &str = "ce-tracestate";

/// A span's trace context as the two W3C strings (empty when there is none).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TraceFields {
    pub traceparent: String,
    pub tracestate: String,
}

impl TraceFields {
    /// The trace context of `span`; empty when spans are not exported or it has none.
    pub fn of(span: &tracing::Span) -> Self {
        if !crate::enabled() {
            return Self::default();
        }
        let mut fields = Self::default();
        TraceContextPropagator::new().inject_context(&span.context(), &mut fields);
        fields
    }

    /// The trace context of the current span.
    pub fn current() -> Self {
        Self::of(&tracing::Span::current())
    }

    pub fn new(traceparent: impl Into<String>, tracestate: impl Into<String>) -> Self {
        Self {
            traceparent: traceparent.into(),
            tracestate: tracestate.into(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.traceparent.is_empty()
    }

    /// The context these fields describe; `None` when they hold no valid trace.
    pub fn context(&self) -> Option<Context> {
        if self.traceparent.is_empty() {
            return None;
        }
        valid(TraceContextPropagator::new().extract(self))
    }

    /// The trace id, 32 lower-case hex digits, when the fields hold a valid trace.
    pub fn trace_id(&self) -> Option<String> {
        self.context()
            .map(|cx| cx.span().span_context().trace_id().to_string())
    }
}

impl Injector for TraceFields {
    fn set(&mut self, key: &str, value: String) {
        match key {
            TRACEPARENT => self.traceparent = value,
            TRACESTATE => self.tracestate = value,
            _ => {}
        }
    }
}

impl Extractor for TraceFields {
    fn get(&self, key: &str) -> Option<&str> {
        match key {
            TRACEPARENT => Some(self.traceparent.as_str()),
            TRACESTATE => Some(self.tracestate.as_str()),
            _ => None,
        }
        .filter(|v| !v.is_empty())
    }

    fn keys(&self) -> Vec<&str> {
        vec![TRACEPARENT, TRACESTATE]
    }
}

fn valid(cx: Context) -> Option<Context> {
    cx.span().span_context().is_valid().then_some(cx)
}

/// Makes `parent` the parent of `span` (which must not have been entered yet). A no-op when
/// spans are not exported or `parent` is `None`.
pub fn set_parent(span: &tracing::Span, parent: Option<Context>) {
    if let Some(parent) = parent
        && crate::enabled()
    {
        // Only fails when the span is disabled or already started: then it keeps its own.
        let _ = span.set_parent(parent);
    }
}

/// Makes the trace context in `fields` the parent of `span`.
pub fn set_parent_fields(span: &tracing::Span, traceparent: &str, tracestate: &str) {
    if !crate::enabled() || traceparent.is_empty() {
        return;
    }
    set_parent(span, TraceFields::new(traceparent, tracestate).context());
}

// ---------------------------------------------------------------------------------------------
// NATS headers
// ---------------------------------------------------------------------------------------------

struct NatsHeaders<'a>(&'a async_nats::HeaderMap);

impl Extractor for NatsHeaders<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(|v| v.as_str())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.iter().map(|(k, _)| k.as_ref()).collect()
    }
}

struct NatsHeadersMut<'a>(&'a mut async_nats::HeaderMap);

impl Injector for NatsHeadersMut<'_> {
    fn set(&mut self, key: &str, value: String) {
        self.0.insert(key, value.as_str());
    }
}

/// Writes the trace context of `span` into NATS headers.
pub fn inject_headers(span: &tracing::Span, headers: &mut async_nats::HeaderMap) {
    if !crate::enabled() {
        return;
    }
    TraceContextPropagator::new().inject_context(&span.context(), &mut NatsHeadersMut(headers));
}

/// The trace context in NATS headers: `traceparent` / `tracestate`, or the CloudEvents
/// extension's `ce-traceparent` / `ce-tracestate` of a registry's binary-mode message.
/// `None` when spans are not exported or the headers carry no valid trace.
pub fn extract_headers(headers: Option<&async_nats::HeaderMap>) -> Option<Context> {
    if !crate::enabled() {
        return None;
    }
    let headers = headers?;
    if headers.get(TRACEPARENT).is_some() {
        return valid(TraceContextPropagator::new().extract(&NatsHeaders(headers)));
    }
    let traceparent = headers.get(CE_TRACEPARENT)?.as_str();
    let tracestate = headers.get(CE_TRACESTATE).map_or("", |v| v.as_str());
    TraceFields::new(traceparent, tracestate).context()
}

// ---------------------------------------------------------------------------------------------
// String maps (the event store's metadata)
// ---------------------------------------------------------------------------------------------

struct MapMut<'a>(&'a mut BTreeMap<String, String>);

impl Injector for MapMut<'_> {
    fn set(&mut self, key: &str, value: String) {
        self.0.insert(key.to_owned(), value);
    }
}

struct Map<'a>(&'a BTreeMap<String, String>);

impl Extractor for Map<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str)
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(String::as_str).collect()
    }
}

/// Writes the trace context of `span` into a string map (`traceparent`, `tracestate`).
pub fn inject_map(span: &tracing::Span, map: &mut BTreeMap<String, String>) {
    if !crate::enabled() {
        return;
    }
    TraceContextPropagator::new().inject_context(&span.context(), &mut MapMut(map));
}

/// The trace context in a string map; `None` when spans are not exported or there is none.
pub fn extract_map(map: &BTreeMap<String, String>) -> Option<Context> {
    if !crate::enabled() || !map.contains_key(TRACEPARENT) {
        return None;
    }
    valid(TraceContextPropagator::new().extract(&Map(map)))
}

// ---------------------------------------------------------------------------------------------
// gRPC metadata
// ---------------------------------------------------------------------------------------------

struct Metadata<'a>(&'a tonic::metadata::MetadataMap);

impl Extractor for Metadata<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0
            .keys()
            .filter_map(|k| match k {
                tonic::metadata::KeyRef::Ascii(k) => Some(k.as_str()),
                tonic::metadata::KeyRef::Binary(_) => None,
            })
            .collect()
    }
}

/// The trace context in a gRPC request's metadata.
pub fn extract_metadata(metadata: &tonic::metadata::MetadataMap) -> Option<Context> {
    if !crate::enabled() || metadata.get(TRACEPARENT).is_none() {
        return None;
    }
    valid(TraceContextPropagator::new().extract(&Metadata(metadata)))
}

#[cfg(test)]
mod tests {
    use super::*;

    const PARENT: &str = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";

    #[test]
    fn fields_read_a_w3c_traceparent() {
        let fields = TraceFields::new(PARENT, "vendor=1");
        assert_eq!(
            fields.trace_id().as_deref(),
            Some("0af7651916cd43dd8448eb211c80319c")
        );
        assert!(TraceFields::new("00-garbage", "").context().is_none());
        assert!(TraceFields::default().context().is_none());
    }

    #[test]
    fn nothing_is_propagated_while_spans_are_not_exported() {
        assert!(!crate::enabled());
        let mut headers = async_nats::HeaderMap::new();
        headers.insert(TRACEPARENT, PARENT);
        assert!(extract_headers(Some(&headers)).is_none());
        let mut map = BTreeMap::new();
        inject_map(&tracing::Span::current(), &mut map);
        assert!(map.is_empty());
        assert!(TraceFields::current().is_empty());
    }
}
