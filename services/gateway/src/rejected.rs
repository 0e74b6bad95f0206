//! The rejected stream: everything the gateway refused, kept with its reason.
//!
//! JetStream stream `LEVENSLOOP_REJECTED` captures `levensloop.rejected.>`. A refused NATS
//! message is republished there unchanged (its headers and body) with the reason added in
//! `Levensloop-*` headers; a refused gRPC request is kept as its protobuf encoding. Operators
//! list it (`levensloop rejected`, and `ListRejected` later); nothing a registry sends is
//! silently lost.

use crate::rejection::Rejection;
use async_nats::HeaderMap;
use async_nats::jetstream::{self, stream};
use bytes::Bytes;
use levensloop_store::StoreError;
use std::time::Duration;

// Shared with the operations service, which lists the stream.
pub use levensloop_proto::stored::{
    HEADER_FIELD, HEADER_ORIGIN, HEADER_REASON, HEADER_REASON_CODE, HEADER_VIOLATIONS,
    REJECTED_PREFIX, REJECTED_STREAM,
};

/// Writes refusals to the rejected stream.
#[derive(Debug, Clone)]
pub struct RejectedLog {
    js: jetstream::Context,
}

impl RejectedLog {
    /// Ensures the stream (file storage, kept 400 days: long enough for a yearly audit).
    pub async fn new(client: async_nats::Client, replicas: usize) -> Result<Self, StoreError> {
        let js = jetstream::new(client);
        js.create_or_update_stream(stream::Config {
            name: REJECTED_STREAM.to_owned(),
            description: Some("Levensloop: inputs the gateway refused, with the reason".to_owned()),
            subjects: vec![format!("{REJECTED_PREFIX}.>")],
            storage: stream::StorageType::File,
            max_age: Duration::from_secs(400 * 24 * 3600),
            allow_direct: true,
            num_replicas: replicas,
            ..stream::Config::default()
        })
        .await
        .map_err(|e| StoreError::Unavailable {
            reason: format!("cannot ensure stream {REJECTED_STREAM}"),
            source: Some(Box::new(e)),
        })?;
        Ok(Self { js })
    }

    /// Records one refusal. `kind` is the life-event kind when known (`birth`, …) or
    /// `unknown`; `dedupe_id` makes a redelivered input recorded once.
    pub async fn record(
        &self,
        kind: &str,
        origin: &str,
        rejection: &Rejection,
        original_headers: &[(String, String)],
        body: Bytes,
        dedupe_id: &str,
    ) -> Result<(), StoreError> {
        let mut headers = HeaderMap::new();
        for (name, value) in original_headers {
            headers.append(name.as_str(), value.as_str());
        }
        let first = rejection.violations.first();
        headers.insert(HEADER_REASON_CODE, rejection.reason().code());
        headers.insert(
            HEADER_REASON,
            single_line(first.map_or("", |v| v.description.as_str())),
        );
        headers.insert(
            HEADER_FIELD,
            single_line(first.map_or("", |v| v.field.as_str())),
        );
        let violations: Vec<_> = rejection
            .violations
            .iter()
            .map(|v| serde_json::json!({"field": v.field, "reason": v.reason.code(), "description": v.description}))
            .collect();
        headers.insert(
            HEADER_VIOLATIONS,
            serde_json::Value::from(violations).to_string(),
        );
        headers.insert(HEADER_ORIGIN, single_line(origin));
        headers.insert(async_nats::header::NATS_MESSAGE_ID, dedupe_id);
        let subject = format!("{REJECTED_PREFIX}.{kind}");
        self.js
            .publish_with_headers(subject, headers, body)
            .await
            .map_err(|e| StoreError::Unavailable {
                reason: "record a rejection".to_owned(),
                source: Some(Box::new(e)),
            })?
            .await
            .map_err(|e| StoreError::Unavailable {
                reason: "record a rejection: no acknowledgement".to_owned(),
                source: Some(Box::new(e)),
            })?;
        Ok(())
    }
}

/// Header values cannot hold line breaks.
fn single_line(s: &str) -> String {
    s.replace(['\r', '\n'], " ")
}
