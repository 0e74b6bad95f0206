//! The handlers service: how integrators add a handler to the sagas without redeploying.
//!
//! - [`grpc`]: `levensloop.v1.HandlerService`: register, update, deregister and list
//!   handlers (stored as events in the registry stream, see [`registry`]), and `Work`
//!   streams on which integrators' workers take tasks ([`work`]).
//! - [`webhook`]: handlers registered with a URL: each task is POSTed to it.
//!
//! The orchestrators read the same registry: from the moment a registration is stored, new
//! sagas of its life events include its step. Tasks reach this service through the same
//! per-handler work queues the built-in workers use, so nothing else changes for them.

pub mod grpc;
pub mod registry;
pub mod webhook;
pub mod work;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use levensloop_bus::Bus;
use levensloop_sagas::Catalog;
use levensloop_store::{JetStreamConfig, JetStreamStore};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::grpc::HandlerApi;
use crate::registry::RegistryStore;

/// What the service needs to run.
#[derive(Debug, Clone)]
pub struct HandlersConfig {
    pub nats_url: String,
    /// Port 0 picks a free one.
    pub grpc_addr: SocketAddr,
    /// How long a worker holds a task before it goes to another worker (unless extended).
    pub lease: Duration,
    pub store: JetStreamConfig,
}

impl Default for HandlersConfig {
    fn default() -> Self {
        Self {
            nats_url: "nats://127.0.0.1:14222".to_owned(),
            grpc_addr: SocketAddr::from(([127, 0, 0, 1], 50052)),
            lease: Duration::from_secs(30),
            store: JetStreamConfig::default(),
        }
    }
}

/// A running service; [`RunningHandlers::shutdown`] stops it.
#[derive(Debug)]
pub struct RunningHandlers {
    pub grpc_addr: SocketAddr,
    stop: oneshot::Sender<()>,
    grpc: JoinHandle<Result<(), tonic::transport::Error>>,
    webhooks: JoinHandle<()>,
}

impl RunningHandlers {
    pub async fn shutdown(self) {
        let _ = self.stop.send(());
        let _ = self.grpc.await;
        self.webhooks.abort();
        let _ = self.webhooks.await;
    }
}

/// Connects, reads the registry and starts the gRPC service and the webhook connectors.
pub async fn start(config: HandlersConfig) -> anyhow::Result<RunningHandlers> {
    let store = JetStreamStore::connect(&config.nats_url, config.store.clone()).await?;
    let client = store.client().clone();
    let bus = Bus::new(client.clone(), config.store.replicas).await?;
    let catalog = Arc::new(Catalog::builtin()?);
    let registry = Arc::new(RegistryStore::new(Arc::new(store), client, catalog));
    registry.refresh().await?;

    let webhooks = tokio::spawn(webhook::supervise(bus.clone(), registry.clone()));

    let (health_reporter, health_service) = tonic_health::server::health_reporter();
    health_reporter
        .set_serving::<levensloop_proto::v1::handler_service_server::HandlerServiceServer<HandlerApi>>()
        .await;
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(levensloop_proto::FILE_DESCRIPTOR_SET)
        .build_v1()?;
    let listener = TcpListener::bind(config.grpc_addr).await?;
    let grpc_addr = listener.local_addr()?;
    let (stop, stopped) = oneshot::channel::<()>();
    let api = HandlerApi::new(registry, bus, config.lease);
    let grpc = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(health_service)
            .add_service(reflection)
            .add_service(api.into_service())
            .serve_with_incoming_shutdown(
                // Small messages both ways on long-lived streams: without TCP_NODELAY each
                // answer waits on the peer's delayed acknowledgement (tens of milliseconds).
                tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true)),
                async {
                    let _ = stopped.await;
                },
            ),
    );
    tracing::info!(%grpc_addr, nats = %config.nats_url, "handlers serving");
    Ok(RunningHandlers {
        grpc_addr,
        stop,
        grpc,
        webhooks,
    })
}
