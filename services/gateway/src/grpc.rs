//! The gRPC door: `levensloop.v1.IngestService`.
//!
//! `Publish` answers one event: an acknowledgement (accepted or duplicate, with the saga id),
//! or `INVALID_ARGUMENT` with `google.rpc.BadRequest` field violations, or `UNAVAILABLE` when
//! the store is down (retry the same event). `PublishStream` answers each item in order, up
//! to 64 of them processed at once, and a refused item is answered, not fatal to the stream.

use crate::decode::decode_raw;
use crate::ingest::{Ack, IngestError, Ingestor};
use crate::rejected::RejectedLog;
use crate::rejection::Rejection;
use bytes::Bytes;
use futures::{Stream, StreamExt};
use levensloop_proto::v1::{
    FieldViolation, PublishOutcome, PublishRequest, PublishResponse, ingest_service_server,
    publish_request,
};
use levensloop_telemetry::{metrics, propagation};
use prost::Message;
use std::pin::Pin;
use tonic::{Code, Request, Response, Status, Streaming};
use tonic_types::{ErrorDetails, StatusExt};
use tracing::Instrument;

/// How many items of one `PublishStream` are in progress at once (answers stay in order).
pub const STREAM_CONCURRENCY: usize = 64;

/// The `IngestService` implementation.
#[derive(Debug, Clone)]
pub struct IngestApi {
    ingestor: Ingestor,
    rejected: Option<RejectedLog>,
}

impl IngestApi {
    pub fn new(ingestor: Ingestor, rejected: Option<RejectedLog>) -> Self {
        Self { ingestor, rejected }
    }

    pub fn into_service(self) -> ingest_service_server::IngestServiceServer<Self> {
        ingest_service_server::IngestServiceServer::new(self)
            .max_decoding_message_size(4 * 1024 * 1024)
    }

    /// Decodes, ingests and records a refusal; the verdict as a response or an error status.
    async fn handle(&self, request: PublishRequest) -> Result<PublishResponse, Verdict> {
        let sequence = request.sequence;
        let original = Bytes::from(request.encode_to_vec());
        let decoded = match request.event {
            Some(publish_request::Event::LifeEvent(event)) => {
                if event.encoded_len() > self.ingestor.limits().max_payload_bytes {
                    Err(crate::decode::too_large(
                        event.encoded_len(),
                        self.ingestor.limits(),
                    ))
                } else {
                    Ok(event)
                }
            }
            Some(publish_request::Event::Raw(raw)) => {
                decode_raw(&raw.content_type, &raw.data, self.ingestor.limits())
            }
            None => Err(Rejection::single(
                "event",
                crate::rejection::Reason::MissingField,
                "the request carries no event",
            )),
        };
        let mut kind = "unknown";
        let result = match decoded {
            Ok(event) => {
                kind = crate::decode::kind(event.payload_type()).unwrap_or(kind);
                self.ingestor.ingest(event, "grpc").await
            }
            Err(rejection) => Err(IngestError::Rejected(rejection)),
        };
        match result {
            Ok(ack) => {
                metrics::gateway().accepted(kind, "grpc", ack.duplicate);
                Ok(accepted(&ack, sequence))
            }
            Err(IngestError::Rejected(rejection)) => {
                metrics::gateway().rejected(rejection.reason().code(), "grpc");
                if let Some(log) = &self.rejected {
                    let id = uuid::Uuid::new_v4().to_string();
                    let headers = [("Content-Type".to_owned(), "application/protobuf".to_owned())];
                    if let Err(e) = log
                        .record("grpc", "grpc", &rejection, &headers, original, &id)
                        .await
                    {
                        // The caller still gets the precise refusal; the record is best effort
                        // here because the caller holds the input and can send it again.
                        tracing::warn!(error = %e, "could not record a rejection");
                    }
                }
                Err(Verdict::Rejected(rejection, sequence))
            }
            Err(IngestError::Store(e)) => Err(Verdict::Unavailable(e.to_string())),
        }
    }
}

/// The span of one request (or stream item), continuing the caller's trace when its metadata
/// carries one; none when spans are not exported.
fn ingest_span(parent: Option<&propagation::Context>, method: &'static str) -> tracing::Span {
    if !levensloop_telemetry::enabled() {
        return tracing::Span::none();
    }
    let span = tracing::info_span!("gateway.ingest", door = "grpc", method);
    propagation::set_parent(&span, parent.cloned());
    span
}

/// Why a request got no acknowledgement.
enum Verdict {
    Rejected(Rejection, u64),
    Unavailable(String),
}

/// The acknowledgement of a stored (or already stored) event.
pub fn accepted(ack: &Ack, sequence: u64) -> PublishResponse {
    PublishResponse {
        event_id: ack.event_id.clone(),
        source: ack.source.clone(),
        saga_id: ack.saga_id.to_string(),
        duplicate: ack.duplicate,
        outcome: if ack.duplicate {
            PublishOutcome::Duplicate
        } else {
            PublishOutcome::Accepted
        } as i32,
        violations: vec![],
        reason_code: String::new(),
        sequence,
        starts_saga: ack.starts_saga,
        note: ack.note.clone(),
    }
}

/// The refusal as a streamed answer.
pub fn rejected_response(rejection: &Rejection, sequence: u64) -> PublishResponse {
    PublishResponse {
        outcome: PublishOutcome::Rejected as i32,
        reason_code: rejection.reason().code().to_owned(),
        violations: rejection
            .violations
            .iter()
            .map(|v| FieldViolation {
                field: v.field.clone(),
                description: v.description.clone(),
                reason: v.reason.code().to_owned(),
            })
            .collect(),
        sequence,
        ..PublishResponse::default()
    }
}

/// The refusal as a gRPC status: INVALID_ARGUMENT with google.rpc.BadRequest.
pub fn rejection_status(rejection: &Rejection) -> Status {
    let violations: Vec<_> = rejection
        .violations
        .iter()
        .map(|v| tonic_types::FieldViolation {
            field: v.field.clone(),
            description: v.description.clone(),
            reason: v.reason.code().to_owned(),
            localized_message: None,
        })
        .collect();
    Status::with_error_details(
        Code::InvalidArgument,
        rejection.to_string(),
        ErrorDetails::with_bad_request(violations),
    )
}

type ResponseStream = Pin<Box<dyn Stream<Item = Result<PublishResponse, Status>> + Send>>;

#[tonic::async_trait]
impl ingest_service_server::IngestService for IngestApi {
    async fn publish(
        &self,
        request: Request<PublishRequest>,
    ) -> Result<Response<PublishResponse>, Status> {
        let parent = propagation::extract_metadata(request.metadata());
        let span = ingest_span(parent.as_ref(), "Publish");
        match self.handle(request.into_inner()).instrument(span).await {
            Ok(response) => Ok(Response::new(response)),
            Err(Verdict::Rejected(rejection, _)) => Err(rejection_status(&rejection)),
            Err(Verdict::Unavailable(reason)) => Err(Status::unavailable(reason)),
        }
    }

    type PublishStreamStream = ResponseStream;

    async fn publish_stream(
        &self,
        request: Request<Streaming<PublishRequest>>,
    ) -> Result<Response<Self::PublishStreamStream>, Status> {
        let api = self.clone();
        // Every item of a stream whose metadata carries a trace continues that trace.
        let parent = propagation::extract_metadata(request.metadata());
        let answers = request
            .into_inner()
            .map(move |item| {
                let api = api.clone();
                let span = ingest_span(parent.as_ref(), "PublishStream");
                async move {
                    // A request the transport could not even decode ends the stream: there is
                    // no item to answer.
                    let request = item?;
                    match api.handle(request).await {
                        Ok(response) => Ok(response),
                        Err(Verdict::Rejected(rejection, sequence)) => {
                            Ok(rejected_response(&rejection, sequence))
                        }
                        Err(Verdict::Unavailable(reason)) => Err(Status::unavailable(reason)),
                    }
                }
                .instrument(span)
            })
            .buffered(STREAM_CONCURRENCY);
        Ok(Response::new(Box::pin(answers)))
    }
}

/// Reads the field violations back from a refusal status (for clients and tests).
pub fn violations_of(status: &Status) -> Vec<tonic_types::FieldViolation> {
    status
        .get_error_details()
        .bad_request()
        .map(|b| b.field_violations.clone())
        .unwrap_or_default()
}
