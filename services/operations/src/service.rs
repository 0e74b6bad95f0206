//! The operations service as a whole: the projection, the gRPC API (with health checking and
//! reflection), the feed of changes for watchers, and the web dashboard over HTTP.

use crate::auth::Operators;
use crate::grpc::OperationsApi;
use crate::http::{self, Dashboard};
use crate::projection::{self, CHANGED_SUBJECT};
use crate::readmodel::ReadModel;
use crate::rejected::RejectedReader;
use crate::steer::Steering;
use crate::summary::SagaRecord;
use crate::throughput::{self, Throughput};
use futures::StreamExt;
use levensloop_proto::v1::operations_service_server::OperationsServiceServer;
use levensloop_store::{EventStore, JetStreamConfig, JetStreamStore};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::{broadcast, oneshot};
use tokio::task::JoinSet;

#[derive(Debug, Clone)]
pub struct OperationsConfig {
    pub nats_url: String,
    pub store: JetStreamConfig,
    /// `sqlite:…` (embedded, the default) or `postgres://…`.
    pub database_url: String,
    pub grpc_addr: SocketAddr,
    /// Where the dashboard and its JSON API listen; `None`: no HTTP server.
    pub http_addr: Option<SocketAddr>,
    /// The operators file; `None` opens the service to local callers (see `auth`).
    pub operators: Option<PathBuf>,
    /// Run the projection here. With several instances on one PostgreSQL database, one
    /// projects at a time (an advisory lock); the others stand by to take over.
    pub project: bool,
    /// Empty the read model and rebuild it from the store before serving.
    pub rebuild: bool,
    /// How long an operator's action may wait for the orchestrator.
    pub command_timeout: Duration,
}

/// A running operations service.
#[derive(Debug)]
pub struct RunningOperations {
    pub grpc_addr: SocketAddr,
    /// Where the dashboard listens, when it does.
    pub http_addr: Option<SocketAddr>,
    pub api: OperationsApi,
    stop: oneshot::Sender<()>,
    tasks: JoinSet<()>,
}

impl RunningOperations {
    pub async fn shutdown(mut self) {
        let _ = self.stop.send(());
        self.tasks.abort_all();
        while self.tasks.join_next().await.is_some() {}
    }
}

pub async fn start(config: OperationsConfig) -> anyhow::Result<RunningOperations> {
    let operators = match &config.operators {
        Some(path) => Operators::load(path)?,
        None => {
            tracing::warn!(
                "no --operators file: every caller is the local operator (INSZ masked); \
                 configure operators before exposing this service"
            );
            Operators::open()
        }
    };
    let store = JetStreamStore::connect(&config.nats_url, config.store.clone()).await?;
    let client = store.client().clone();
    let store: Arc<dyn EventStore> = Arc::new(store);
    let model = Arc::new(ReadModel::open(&config.database_url).await?);
    if config.rebuild {
        projection::rebuild(&*store, &model).await?;
    }

    let mut tasks = JoinSet::new();
    let (changes, _) = broadcast::channel::<Arc<SagaRecord>>(4096);
    // Every instance hears every change, whichever instance projected it.
    let mut announced = client.subscribe(CHANGED_SUBJECT).await?;
    let feed = changes.clone();
    tasks.spawn(async move {
        while let Some(message) = announced.next().await {
            match serde_json::from_slice::<SagaRecord>(&message.payload) {
                Ok(record) => {
                    let _ = feed.send(Arc::new(record));
                }
                Err(e) => tracing::warn!(error = %e, "an unreadable change announcement ignored"),
            }
        }
    });
    if config.project {
        tasks.spawn(projection::run(
            store.clone(),
            model.clone(),
            Some(client.clone()),
        ));
    }

    let api = OperationsApi {
        model,
        store,
        steering: Steering::new(client.clone(), config.command_timeout),
        rejected: RejectedReader::new(client),
        operators,
        changes,
    };
    let (health_reporter, health_service) = tonic_health::server::health_reporter();
    health_reporter
        .set_serving::<OperationsServiceServer<OperationsApi>>()
        .await;
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(levensloop_proto::FILE_DESCRIPTOR_SET)
        .build_v1()?;
    let listener = TcpListener::bind(config.grpc_addr).await?;
    let grpc_addr = listener.local_addr()?;
    let (stop, stopped) = oneshot::channel::<()>();
    let server = tonic::transport::Server::builder()
        .add_service(health_service)
        .add_service(reflection)
        .add_service(OperationsServiceServer::new(api.clone()))
        .serve_with_incoming_shutdown(
            tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true)),
            async {
                let _ = stopped.await;
            },
        );
    tasks.spawn(async move {
        if let Err(e) = server.await {
            tracing::error!(error = %e, "the gRPC server stopped");
        }
    });
    let http_addr = match config.http_addr {
        Some(addr) => {
            let listener = TcpListener::bind(addr).await?;
            let http_addr = listener.local_addr()?;
            let throughput = Arc::new(Throughput::default());
            tasks.spawn(throughput::sample(api.model.clone(), throughput.clone()));
            // Further routes (the telemetry's `/metrics`) are merged into this router.
            let app = http::router(Dashboard {
                api: api.clone(),
                throughput,
            });
            tasks.spawn(async move {
                if let Err(e) = axum::serve(listener, app).await {
                    tracing::error!(error = %e, "the dashboard's HTTP server stopped");
                }
            });
            tracing::info!(%http_addr, "dashboard serving");
            Some(http_addr)
        }
        None => None,
    };
    tracing::info!(%grpc_addr, database = %redact(&config.database_url), "operations serving");
    Ok(RunningOperations {
        grpc_addr,
        http_addr,
        api,
        stop,
        tasks,
    })
}

/// A database URL without its password, for logs.
fn redact(url: &str) -> String {
    match (url.find("://"), url.find('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let credentials = &url[scheme + 3..at];
            match credentials.find(':') {
                Some(colon) => format!(
                    "{}{}:***{}",
                    &url[..scheme + 3],
                    &credentials[..colon],
                    &url[at..]
                ),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}
