//! `OperationsService`: lists and filters sagas from the read model, shows one saga's full
//! timeline from the store (the truth, never behind), streams changes, and steers sagas
//! through the orchestrators. Every call is authenticated (see [`crate::auth`]); actions need
//! the `operator` role and are stored in the saga's stream with the caller's name.

use crate::auth::{AuthError, Caller, Operators};
use crate::readmodel::{self, ReadModel, ReadModelError};
use crate::rejected::{RejectedError, RejectedReader};
use crate::steer::{SteerError, Steering};
use crate::summary::{SagaRecord, StepRecord, mask_insz, to_timestamp};
use futures::{Stream, StreamExt};
use levensloop_proto::stored::SAGA_CATEGORY;
use levensloop_proto::v1::{
    self, SagaCommandOutcome, operations_service_server::OperationsService, saga_command::Action,
    saga_event::Event,
};
use levensloop_store::{EventStore, ReadFrom, StoreError, StreamName};
use prost::Message;
use std::pin::Pin;
use std::sync::Arc;
use tokio::sync::broadcast;
use tokio_stream::wrappers::{BroadcastStream, errors::BroadcastStreamRecvError};
use tonic::{Request, Response, Status};
use uuid::Uuid;

/// Everything the service reads from and steers through.
#[derive(Clone)]
pub struct OperationsApi {
    pub model: Arc<ReadModel>,
    pub store: Arc<dyn EventStore>,
    pub steering: Steering,
    pub rejected: RejectedReader,
    pub operators: Operators,
    /// Changed sagas, as the projection announced them.
    pub changes: broadcast::Sender<Arc<SagaRecord>>,
}

impl std::fmt::Debug for OperationsApi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OperationsApi").finish_non_exhaustive()
    }
}

impl OperationsApi {
    fn caller<T>(&self, request: &Request<T>) -> Result<Caller, Status> {
        let header = request
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok());
        self.operators
            .authenticate(header)
            .map_err(|e: AuthError| Status::unauthenticated(e.to_string()))
    }

    fn actor<T>(&self, request: &Request<T>) -> Result<Caller, Status> {
        let caller = self.caller(request)?;
        if !caller.role.may_act() {
            return Err(Status::permission_denied(format!(
                "{} may look but not act (role {:?})",
                caller.name, caller.role
            )));
        }
        Ok(caller)
    }

    /// One saga as the store has it: its record and its events.
    pub async fn saga_from_store(
        &self,
        saga: Uuid,
    ) -> Result<(SagaRecord, Vec<v1::SagaEvent>), Status> {
        let stream = StreamName::new(SAGA_CATEGORY, saga.to_string())
            .map_err(|e| Status::internal(e.to_string()))?;
        let slice = match self.store.read(&stream, ReadFrom::Start).await {
            Ok(slice) => slice,
            Err(StoreError::StreamNotFound { .. }) => {
                return Err(Status::not_found(format!("no saga {saga}")));
            }
            Err(e) => return Err(Status::unavailable(e.to_string())),
        };
        let mut events = Vec::with_capacity(slice.events.len());
        for recorded in &slice.events {
            match v1::SagaEvent::decode(recorded.data.as_ref()) {
                Ok(e) => events.push(e),
                Err(e) => {
                    tracing::error!(%saga, version = %recorded.version, error = %e, "undecodable saga event");
                }
            }
        }
        let record = SagaRecord::from_events(saga, &events);
        Ok((record, events))
    }

    pub async fn detail(&self, saga: Uuid, caller: &Caller) -> Result<v1::SagaDetail, Status> {
        let (record, events) = self.saga_from_store(saga).await?;
        Ok(v1::SagaDetail {
            summary: Some(summary(&record, caller)),
            steps: record.steps.iter().map(step).collect(),
            timeline: events
                .into_iter()
                .map(|mut e| {
                    // The start names the person: as masked as the summary.
                    if let Some(Event::SagaStarted(started)) = &mut e.event
                        && !caller.role.sees_insz()
                    {
                        started.person_insz = mask_insz(&started.person_insz);
                    }
                    v1::TimelineEntry {
                        at: e.occurred_at,
                        event: Some(e),
                    }
                })
                .collect(),
        })
    }

    async fn steer(
        &self,
        caller: Caller,
        saga_id: &str,
        reason: String,
        action: Action,
    ) -> Result<Response<v1::SagaDetail>, Status> {
        let name = match &action {
            Action::RetryStep(_) => "retry-step",
            Action::SkipStep(_) => "skip-step",
            Action::Cancel(_) => "cancel",
            Action::CompleteHumanStep(_) => "complete-human",
            Action::Resume(_) => "resume",
        };
        let outcome = self.steer_once(&caller, saga_id, reason, action).await;
        let label = match &outcome {
            Ok(_) => "applied",
            Err(status) => match status.code() {
                tonic::Code::InvalidArgument => "invalid",
                tonic::Code::NotFound => "not_found",
                tonic::Code::FailedPrecondition => "not_allowed",
                _ => "unavailable",
            },
        };
        levensloop_telemetry::metrics::operations().action(name, label);
        let saga = outcome?;
        Ok(Response::new(self.detail(saga, &caller).await?))
    }

    async fn steer_once(
        &self,
        caller: &Caller,
        saga_id: &str,
        reason: String,
        action: Action,
    ) -> Result<Uuid, Status> {
        let saga = parse_saga_id(saga_id)?;
        let command = v1::SagaCommand {
            saga_id: saga.to_string(),
            actor: caller.name.clone(),
            reason,
            action: Some(action),
        };
        let reply = self.steering.send(&command).await.map_err(|e| match e {
            SteerError::NoOrchestrator | SteerError::TimedOut(_) | SteerError::Transport(_) => {
                Status::unavailable(e.to_string())
            }
            SteerError::BadAnswer(_) => Status::internal(e.to_string()),
        })?;
        match reply.outcome() {
            SagaCommandOutcome::Applied => {}
            SagaCommandOutcome::Invalid => return Err(Status::invalid_argument(reply.error)),
            SagaCommandOutcome::NotFound => return Err(Status::not_found(reply.error)),
            SagaCommandOutcome::NotAllowed => {
                return Err(Status::failed_precondition(reply.error));
            }
            SagaCommandOutcome::Unavailable | SagaCommandOutcome::Unspecified => {
                return Err(Status::unavailable(reply.error));
            }
        }
        tracing::info!(%saga, actor = %caller.name, status = %reply.status, "operator action applied");
        Ok(saga)
    }
}

fn parse_saga_id(s: &str) -> Result<Uuid, Status> {
    Uuid::parse_str(s.trim())
        .map_err(|_| Status::invalid_argument(format!("saga_id {s:?} is not a UUID")))
}

fn model_error(e: ReadModelError) -> Status {
    match e {
        ReadModelError::BadPageToken => Status::invalid_argument(e.to_string()),
        ReadModelError::OutOfRange(_) => Status::invalid_argument(e.to_string()),
        _ => Status::unavailable(e.to_string()),
    }
}

/// The API's filter as the read model's; a value that cannot match is refused, not ignored.
pub fn filter_of(filter: Option<v1::SagaFilter>) -> Result<readmodel::SagaFilter, Status> {
    let f = filter.unwrap_or_default();
    let statuses = f
        .statuses
        .iter()
        .map(|s| match v1::SagaStatus::try_from(*s) {
            Ok(v1::SagaStatus::Unspecified) | Err(_) => Err(Status::invalid_argument(format!(
                "filter.statuses: {s} is not a saga status"
            ))),
            Ok(status) => Ok(status),
        })
        .collect::<Result<Vec<_>, _>>()?;
    let types = f
        .types
        .iter()
        .map(|t| match v1::LifeEventType::try_from(*t) {
            Ok(v1::LifeEventType::Unspecified) | Err(_) => Err(Status::invalid_argument(format!(
                "filter.types: {t} is not a life event type"
            ))),
            Ok(t) => Ok(t),
        })
        .collect::<Result<Vec<_>, _>>()?;
    let person = f.person_insz.trim();
    let person = if person.is_empty() {
        None
    } else {
        let digits: String = person.chars().filter(char::is_ascii_digit).collect();
        if digits.len() != 11 {
            return Err(Status::invalid_argument(
                "filter.person_insz: an INSZ has 11 digits",
            ));
        }
        Some(digits)
    };
    let time = |t: Option<levensloop_proto::types::Timestamp>, field: &str| {
        t.map(|t| {
            crate::summary::to_datetime(&t)
                .ok_or_else(|| Status::invalid_argument(format!("filter.{field}: out of range")))
        })
        .transpose()
    };
    let non_empty = |s: String| {
        let s = s.trim().to_owned();
        (!s.is_empty()).then_some(s)
    };
    Ok(readmodel::SagaFilter {
        statuses,
        types,
        municipality_nis_code: non_empty(f.municipality_nis_code),
        handler: non_empty(f.handler),
        started_after: time(f.started_after, "started_after")?,
        started_before: time(f.started_before, "started_before")?,
        person_insz: person,
    })
}

/// A saga as an operator may see it.
pub fn summary(record: &SagaRecord, caller: &Caller) -> v1::SagaSummary {
    v1::SagaSummary {
        saga_id: record.saga_id.to_string(),
        r#type: record.life_event().into(),
        life_event_id: record.life_event_id.clone(),
        life_event_source: record.life_event_source.clone(),
        municipality_nis_code: record.municipality_nis_code.clone(),
        person_insz: if caller.role.sees_insz() {
            record.person_insz.clone()
        } else {
            mask_insz(&record.person_insz)
        },
        status: record.status.into(),
        current_steps: record.current_steps().map(step).collect(),
        started_at: Some(to_timestamp(record.started_at)),
        updated_at: Some(to_timestamp(record.updated_at)),
        finished_at: record.finished_at.map(to_timestamp),
        last_error: record
            .last_error
            .as_ref()
            .map(ToString::to_string)
            .unwrap_or_default(),
    }
}

fn step(s: &StepRecord) -> v1::StepSummary {
    v1::StepSummary {
        step_id: s.step_id.clone(),
        handler: s.handler.clone(),
        status: s.status.into(),
        attempts: s.attempts,
    }
}

type WatchStream = Pin<Box<dyn Stream<Item = Result<v1::SagaSummary, Status>> + Send>>;

#[tonic::async_trait]
impl OperationsService for OperationsApi {
    async fn list_sagas(
        &self,
        request: Request<v1::ListSagasRequest>,
    ) -> Result<Response<v1::ListSagasResponse>, Status> {
        let caller = self.caller(&request)?;
        let r = request.into_inner();
        let filter = filter_of(r.filter)?;
        let token = (!r.page_token.is_empty()).then_some(r.page_token.as_str());
        let page = self
            .model
            .list(&filter, r.page_size, token)
            .await
            .map_err(model_error)?;
        Ok(Response::new(v1::ListSagasResponse {
            sagas: page.sagas.iter().map(|s| summary(s, &caller)).collect(),
            next_page_token: page.next_page_token.unwrap_or_default(),
        }))
    }

    async fn get_saga(
        &self,
        request: Request<v1::GetSagaRequest>,
    ) -> Result<Response<v1::SagaDetail>, Status> {
        let caller = self.caller(&request)?;
        let saga = parse_saga_id(&request.get_ref().saga_id)?;
        Ok(Response::new(self.detail(saga, &caller).await?))
    }

    type WatchSagasStream = WatchStream;

    async fn watch_sagas(
        &self,
        request: Request<v1::WatchSagasRequest>,
    ) -> Result<Response<Self::WatchSagasStream>, Status> {
        let caller = self.caller(&request)?;
        let filter = filter_of(request.into_inner().filter)?;
        let changes = BroadcastStream::new(self.changes.subscribe());
        let stream = changes.filter_map(move |change| {
            let out = match change {
                Ok(record) => filter
                    .matches(&record)
                    .then(|| Ok(summary(&record, &caller))),
                // A slow watcher misses changes rather than slowing everyone; it is told, so
                // it can list again and re-watch.
                Err(BroadcastStreamRecvError::Lagged(missed)) => Some(Err(Status::data_loss(
                    format!("{missed} changes missed: the watcher fell behind; list again"),
                ))),
            };
            futures::future::ready(out)
        });
        Ok(Response::new(Box::pin(stream)))
    }

    async fn retry_step(
        &self,
        request: Request<v1::RetryStepRequest>,
    ) -> Result<Response<v1::SagaDetail>, Status> {
        let caller = self.actor(&request)?;
        let r = request.into_inner();
        self.steer(
            caller,
            &r.saga_id,
            r.reason,
            Action::RetryStep(v1::RetryStepAction { step_id: r.step_id }),
        )
        .await
    }

    async fn skip_step(
        &self,
        request: Request<v1::SkipStepRequest>,
    ) -> Result<Response<v1::SagaDetail>, Status> {
        let caller = self.actor(&request)?;
        let r = request.into_inner();
        self.steer(
            caller,
            &r.saga_id,
            r.reason,
            Action::SkipStep(v1::SkipStepAction { step_id: r.step_id }),
        )
        .await
    }

    async fn cancel_saga(
        &self,
        request: Request<v1::CancelSagaRequest>,
    ) -> Result<Response<v1::SagaDetail>, Status> {
        let caller = self.actor(&request)?;
        let r = request.into_inner();
        self.steer(
            caller,
            &r.saga_id,
            r.reason,
            Action::Cancel(v1::CancelSagaAction {}),
        )
        .await
    }

    async fn list_incidents(
        &self,
        request: Request<v1::ListIncidentsRequest>,
    ) -> Result<Response<v1::ListIncidentsResponse>, Status> {
        self.caller(&request)?;
        let r = request.into_inner();
        let token = (!r.page_token.is_empty()).then_some(r.page_token.as_str());
        let page = self
            .model
            .incidents(r.page_size, token)
            .await
            .map_err(model_error)?;
        Ok(Response::new(v1::ListIncidentsResponse {
            incidents: page
                .incidents
                .into_iter()
                .map(|i| v1::Incident {
                    incident_id: i.incident_id,
                    saga_id: i.saga_id.to_string(),
                    step_id: i.step_id,
                    reason: i.reason,
                    raised_at: Some(to_timestamp(i.raised_at)),
                })
                .collect(),
            next_page_token: page.next_page_token.unwrap_or_default(),
        }))
    }

    async fn list_rejected(
        &self,
        request: Request<v1::ListRejectedRequest>,
    ) -> Result<Response<v1::ListRejectedResponse>, Status> {
        self.caller(&request)?;
        let r = request.into_inner();
        let page = self
            .rejected
            .list(r.page_size, &r.page_token)
            .await
            .map_err(|e| match e {
                RejectedError::BadToken(_) => Status::invalid_argument(e.to_string()),
                RejectedError::Unavailable(_) => Status::unavailable(e.to_string()),
            })?;
        Ok(Response::new(page))
    }

    async fn stats(
        &self,
        request: Request<v1::StatsRequest>,
    ) -> Result<Response<v1::StatsResponse>, Status> {
        self.caller(&request)?;
        let stats = self.model.stats().await.map_err(model_error)?;
        Ok(Response::new(v1::StatsResponse {
            by_status: stats
                .by_status
                .into_iter()
                .map(|c| v1::StatusCount {
                    r#type: c.life_event.into(),
                    status: c.status.into(),
                    count: c.count,
                })
                .collect(),
            step_latency: stats
                .step_latency
                .into_iter()
                .map(|h| v1::HandlerLatency {
                    handler: h.handler,
                    p50_ms: h.p50_ms,
                    p95_ms: h.p95_ms,
                    p99_ms: h.p99_ms,
                })
                .collect(),
        }))
    }
}
