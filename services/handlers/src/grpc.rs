//! `levensloop.v1.HandlerService` over gRPC.

use std::sync::Arc;
use std::time::Duration;

use levensloop_bus::{Bus, QueueLimits};
use levensloop_proto::v1::{
    self, WorkRequest, WorkResponse,
    handler_service_server::{HandlerService, HandlerServiceServer},
    work_request,
};
use levensloop_sagas::RegistrationError;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use crate::registry::{RegistryError, RegistryStore};
use crate::work::Session;

/// In-flight tasks per handler (across its workers) when its registration does not say.
pub const DEFAULT_MAX_IN_FLIGHT: u32 = 256;

/// The service's state: the registry and the bus.
#[derive(Debug, Clone)]
pub struct HandlerApi {
    registry: Arc<RegistryStore>,
    bus: Bus,
    lease: Duration,
}

impl HandlerApi {
    pub fn new(registry: Arc<RegistryStore>, bus: Bus, lease: Duration) -> Self {
        Self {
            registry,
            bus,
            lease,
        }
    }

    pub fn into_service(self) -> HandlerServiceServer<Self> {
        HandlerServiceServer::new(self)
    }
}

/// A refusal as a gRPC status with the precise reason.
fn status_of(error: RegistryError) -> Status {
    match error {
        RegistryError::Refused(e) => match &e {
            RegistrationError::NameTaken { .. } => Status::already_exists(e.to_string()),
            RegistrationError::NotRegistered(_) => Status::not_found(e.to_string()),
            RegistrationError::Deregistered(_) | RegistrationError::VersionConflict { .. } => {
                Status::failed_precondition(e.to_string())
            }
            _ => Status::invalid_argument(e.to_string()),
        },
        RegistryError::Store(e) => Status::unavailable(e.to_string()),
        RegistryError::Contended(_) => Status::aborted(error.to_string()),
    }
}

fn registration_of(change: v1::HandlerChanged) -> Result<v1::HandlerRegistration, Status> {
    change
        .registration
        .ok_or_else(|| Status::internal("a change without its registration"))
}

#[tonic::async_trait]
impl HandlerService for HandlerApi {
    async fn register_handler(
        &self,
        request: Request<v1::RegisterHandlerRequest>,
    ) -> Result<Response<v1::HandlerRegistration>, Status> {
        let spec = request
            .into_inner()
            .spec
            .ok_or_else(|| Status::invalid_argument("spec is missing"))?;
        let change = self.registry.register(spec).await.map_err(status_of)?;
        let registration = registration_of(change)?;
        tracing::info!(handler = ?registration.spec.as_ref().map(|s| &s.name), version = registration.version, "handler registered");
        Ok(Response::new(registration))
    }

    async fn update_handler(
        &self,
        request: Request<v1::UpdateHandlerRequest>,
    ) -> Result<Response<v1::HandlerRegistration>, Status> {
        let request = request.into_inner();
        let spec = request
            .spec
            .ok_or_else(|| Status::invalid_argument("spec is missing"))?;
        let change = self
            .registry
            .update(spec, request.expected_version)
            .await
            .map_err(status_of)?;
        let registration = registration_of(change)?;
        tracing::info!(handler = ?registration.spec.as_ref().map(|s| &s.name), version = registration.version, "handler updated");
        Ok(Response::new(registration))
    }

    async fn deregister_handler(
        &self,
        request: Request<v1::DeregisterHandlerRequest>,
    ) -> Result<Response<v1::DeregisterHandlerResponse>, Status> {
        let request = request.into_inner();
        let change = self
            .registry
            .deregister(&request.name, &request.reason)
            .await
            .map_err(status_of)?;
        tracing::info!(handler = %request.name, reason = %request.reason, "handler deregistered");
        Ok(Response::new(v1::DeregisterHandlerResponse {
            registration: Some(registration_of(change)?),
        }))
    }

    async fn list_handlers(
        &self,
        request: Request<v1::ListHandlersRequest>,
    ) -> Result<Response<v1::ListHandlersResponse>, Status> {
        let registry = self
            .registry
            .refresh()
            .await
            .map_err(|e| Status::unavailable(e.to_string()))?;
        Ok(Response::new(v1::ListHandlersResponse {
            handlers: registry.list(request.into_inner().include_deregistered),
        }))
    }

    type WorkStream = ReceiverStream<Result<WorkResponse, Status>>;

    async fn work(
        &self,
        request: Request<Streaming<WorkRequest>>,
    ) -> Result<Response<Self::WorkStream>, Status> {
        let mut requests = request.into_inner();
        let hello = match requests.message().await? {
            Some(WorkRequest {
                message: Some(work_request::Message::Hello(hello)),
            }) => hello,
            _ => return Err(Status::invalid_argument("the first message must be Hello")),
        };
        let registry = self
            .registry
            .refresh()
            .await
            .map_err(|e| Status::unavailable(e.to_string()))?;
        // A deregistered handler is still served: sagas that include it finish with it.
        let spec = registry
            .get(&hello.handler)
            .and_then(|r| r.spec.clone())
            .ok_or_else(|| {
                Status::not_found(format!("no handler `{}` is registered", hello.handler))
            })?;
        if !spec.webhook_url.is_empty() {
            return Err(Status::failed_precondition(format!(
                "handler `{}` is served by its webhook, not by workers",
                spec.name
            )));
        }
        let limits = QueueLimits {
            max_in_flight: if spec.max_in_flight > 0 {
                spec.max_in_flight
            } else {
                DEFAULT_MAX_IN_FLIGHT
            },
            ack_wait: self.lease,
        };
        let consumer = self
            .bus
            .handler_queue(&spec.name, limits)
            .await
            .map_err(|e| Status::unavailable(e.to_string()))?;
        let (responses, rx) = mpsc::channel(64);
        let worker_id = if hello.worker_id.is_empty() {
            "anonymous".to_owned()
        } else {
            hello.worker_id
        };
        let session = Session {
            bus: self.bus.clone(),
            handler: spec.name,
            worker_id,
            lease: self.lease,
            consumer,
            responses,
        };
        tokio::spawn(session.run(requests, hello.credits));
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}
