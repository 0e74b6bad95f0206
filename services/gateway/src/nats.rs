//! The NATS door: CloudEvents on `levensloop.ingest.<kind>`, captured by JetStream first.
//!
//! Stream `LEVENSLOOP_INGEST` (work-queue retention, file storage) captures every message on
//! `levensloop.ingest.>`, so a registry's publish is durable before the gateway reads it, and a
//! gateway that is down loses nothing. A registry publishing with JetStream gets the stream's
//! acknowledgement ("captured"); to also get the gateway's verdict it names a reply subject in
//! the `Levensloop-Reply-To` header (a plain NATS reply subject is answered by JetStream with
//! its acknowledgement, and is not stored with the message). The verdict is a JSON
//! `levensloop.v1.PublishResponse`: accepted, duplicate, or rejected with the reason.
//!
//! A refused message goes, unchanged, to the rejected stream with the reason in headers; a
//! message that meets an unavailable store is not acknowledged and comes again.

use crate::decode::{decode_nats, kind_of_subject, subject_for};
use crate::grpc::{accepted, rejected_response};
use crate::ingest::{IngestError, Ingestor};
use crate::rejected::RejectedLog;
use async_nats::jetstream::{self, AckKind, consumer, stream};
use futures::StreamExt;
use levensloop_store::StoreError;
use levensloop_telemetry::{metrics, propagation};
use std::time::Duration;
use tracing::Instrument;

pub const INGEST_STREAM: &str = "LEVENSLOOP_INGEST";
pub const INGEST_PREFIX: &str = "levensloop.ingest";
/// The durable consumer the gateways share (several instances split the work).
pub const CONSUMER: &str = "gateway";
/// Where a registry wants the gateway's verdict sent.
pub const REPLY_TO_HEADER: &str = "Levensloop-Reply-To";
/// How long a message waits before it comes again after the store was unavailable.
const RETRY_DELAY: Duration = Duration::from_secs(1);

/// Ensures the ingest stream.
pub async fn ensure_ingest_stream(
    js: &jetstream::Context,
    replicas: usize,
) -> Result<stream::Stream, StoreError> {
    js.create_or_update_stream(stream::Config {
        name: INGEST_STREAM.to_owned(),
        description: Some("Levensloop: life events as registries published them".to_owned()),
        subjects: vec![format!("{INGEST_PREFIX}.>")],
        retention: stream::RetentionPolicy::WorkQueue,
        storage: stream::StorageType::File,
        // Registries resend after a lost acknowledgement; the window makes that one message.
        duplicate_window: Duration::from_secs(600),
        num_replicas: replicas,
        ..stream::Config::default()
    })
    .await
    .map_err(|e| StoreError::Unavailable {
        reason: format!("cannot ensure stream {INGEST_STREAM}"),
        source: Some(Box::new(e)),
    })?;
    js.get_stream(INGEST_STREAM)
        .await
        .map_err(|e| StoreError::Unavailable {
            reason: format!("cannot open stream {INGEST_STREAM}"),
            source: Some(Box::new(e)),
        })
}

/// Consumes the ingest stream until the connection closes, `concurrency` messages at a time.
pub async fn run(
    client: async_nats::Client,
    ingestor: Ingestor,
    rejected: RejectedLog,
    concurrency: usize,
    replicas: usize,
) -> Result<(), StoreError> {
    let js = jetstream::new(client.clone());
    let stream = ensure_ingest_stream(&js, replicas).await?;
    let consumer: consumer::PullConsumer = stream
        .get_or_create_consumer(
            CONSUMER,
            consumer::pull::Config {
                durable_name: Some(CONSUMER.to_owned()),
                ack_policy: consumer::AckPolicy::Explicit,
                ack_wait: Duration::from_secs(30),
                max_ack_pending: (concurrency * 4) as i64,
                ..consumer::pull::Config::default()
            },
        )
        .await
        .map_err(|e| StoreError::Unavailable {
            reason: "cannot open the gateway consumer".to_owned(),
            source: Some(Box::new(e)),
        })?;
    // Large pull batches: one pull request per thousand events rather than per few hundred.
    let messages = consumer
        .stream()
        .max_messages_per_batch(1_000)
        // A pull forgotten by a restarted nats-server is replaced within seconds.
        .expires(levensloop_store::PULL_EXPIRY)
        .heartbeat(levensloop_store::PULL_HEARTBEAT)
        .messages()
        .await
        .map_err(|e| StoreError::Unavailable {
            reason: "cannot follow the ingest stream".to_owned(),
            source: Some(Box::new(e)),
        })?;
    // Each message is its own task (bounded by `concurrency`), so decoding and validation
    // spread over every core rather than sharing one task.
    let limit = std::sync::Arc::new(tokio::sync::Semaphore::new(concurrency.max(1)));
    let mut messages = messages;
    while let Some(message) = messages.next().await {
        let message = match message {
            Ok(message) => message,
            Err(e) => {
                tracing::warn!(error = %e, "ingest consumer hiccup");
                continue;
            }
        };
        let Ok(permit) = limit.clone().acquire_owned().await else {
            break;
        };
        let (client, ingestor, rejected) = (client.clone(), ingestor.clone(), rejected.clone());
        let span = ingest_span(&message);
        tokio::spawn(
            async move {
                let _permit = permit;
                handle(&client, &ingestor, &rejected, message).await;
            }
            .instrument(span),
        );
    }
    Ok(())
}

/// The span of one registry message, continuing the registry's trace when the message
/// carries one (`traceparent`, or the CloudEvents extension's `ce-traceparent`); none when
/// spans are not exported.
fn ingest_span(message: &jetstream::Message) -> tracing::Span {
    if !levensloop_telemetry::enabled() {
        return tracing::Span::none();
    }
    let span = tracing::info_span!("gateway.ingest", door = "nats", subject = %message.subject);
    propagation::set_parent(
        &span,
        propagation::extract_headers(message.headers.as_ref()),
    );
    span
}

async fn handle(
    client: &async_nats::Client,
    ingestor: &Ingestor,
    rejected: &RejectedLog,
    message: jetstream::Message,
) {
    let subject = message.subject.to_string();
    let headers: Vec<(String, String)> = message
        .headers
        .iter()
        .flat_map(|h| h.iter())
        .flat_map(|(name, values)| {
            values
                .iter()
                .map(move |v| (name.to_string(), v.as_str().to_owned()))
        })
        .collect();
    let reply_to = headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(REPLY_TO_HEADER))
        .map(|(_, v)| v.clone());
    let stream_seq = message.info().map(|i| i.stream_sequence).unwrap_or(0);

    let mut kind = "unknown";
    let result = match decode_nats(&subject, &headers, &message.payload, ingestor.limits()) {
        Ok(event) => {
            kind = crate::decode::kind(event.payload_type()).unwrap_or(kind);
            ingestor.ingest(event, &subject).await
        }
        Err(rejection) => Err(IngestError::Rejected(rejection)),
    };
    let verdict = match result {
        Ok(ack) => {
            metrics::gateway().accepted(kind, "nats", ack.duplicate);
            accepted(&ack, 0)
        }
        Err(IngestError::Rejected(rejection)) => {
            let kind = kind_of_subject(&subject)
                .and_then(subject_for)
                .and_then(|s| s.rsplit('.').next().map(str::to_owned))
                .unwrap_or_else(|| "unknown".to_owned());
            let dedupe = format!("ingest-{stream_seq}");
            if let Err(e) = rejected
                .record(
                    &kind,
                    &subject,
                    &rejection,
                    &headers,
                    message.payload.clone(),
                    &dedupe,
                )
                .await
            {
                // Not recorded, so not acknowledged: the message comes again.
                tracing::warn!(error = %e, "could not record a rejection; will retry");
                let _ = message.ack_with(AckKind::Nak(Some(RETRY_DELAY))).await;
                return;
            }
            metrics::gateway().rejected(rejection.reason().code(), "nats");
            rejected_response(&rejection, 0)
        }
        Err(IngestError::Store(e)) => {
            tracing::warn!(error = %e, subject, "store unavailable; the message will come again");
            let _ = message.ack_with(AckKind::Nak(Some(RETRY_DELAY))).await;
            return;
        }
    };
    // A plain acknowledgement, not a confirmed one: the event is already stored, and if the
    // ack is lost the redelivered message is answered as a duplicate. Confirming each ack
    // would cost a round trip per event.
    if let Err(e) = message.ack().await {
        tracing::warn!(error = %e, "could not acknowledge an ingest message");
    }
    if let Some(reply_to) = reply_to {
        match serde_json::to_vec(&verdict) {
            Ok(body) => {
                if let Err(e) = client.publish(reply_to, body.into()).await {
                    tracing::warn!(error = %e, "could not send a verdict");
                }
            }
            Err(e) => tracing::warn!(error = %e, "could not encode a verdict"),
        }
    }
}
