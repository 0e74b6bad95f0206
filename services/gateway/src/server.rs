//! Running the gateway: both doors over one store connection.

use crate::grpc::IngestApi;
use crate::ingest::Ingestor;
use crate::rejected::RejectedLog;
use crate::rejection::Limits;
use levensloop_store::{JetStreamConfig, JetStreamStore, StoreError};
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// What a gateway needs to run.
#[derive(Debug, Clone)]
pub struct GatewayConfig {
    /// NATS server(s), comma-separated.
    pub nats_url: String,
    /// Where the gRPC door listens; port 0 picks a free one.
    pub grpc_addr: SocketAddr,
    pub limits: Limits,
    /// NATS messages processed at once.
    pub nats_concurrency: usize,
    pub store: JetStreamConfig,
    /// Pins the clock that dates are checked against (tests and replays); `None` is the
    /// system clock.
    pub fixed_now: Option<chrono::DateTime<chrono::Utc>>,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        Self {
            nats_url: "nats://127.0.0.1:14222".to_owned(),
            grpc_addr: SocketAddr::from(([127, 0, 0, 1], 50051)),
            limits: Limits::default(),
            nats_concurrency: 256,
            store: JetStreamConfig::default(),
            fixed_now: None,
        }
    }
}

/// A running gateway; dropping it does not stop it, [`RunningGateway::shutdown`] does.
#[derive(Debug)]
pub struct RunningGateway {
    pub grpc_addr: SocketAddr,
    stop: oneshot::Sender<()>,
    grpc: JoinHandle<Result<(), tonic::transport::Error>>,
    nats: JoinHandle<Result<(), StoreError>>,
}

impl RunningGateway {
    /// Stops the gRPC server gracefully and the NATS consumer at once.
    pub async fn shutdown(self) {
        let _ = self.stop.send(());
        let _ = self.grpc.await;
        self.nats.abort();
        let _ = self.nats.await;
    }
}

/// Connects, ensures the streams and starts both doors.
pub async fn start(config: GatewayConfig) -> anyhow::Result<RunningGateway> {
    let store = JetStreamStore::connect(&config.nats_url, config.store.clone()).await?;
    let client = store.client().clone();
    let rejected = RejectedLog::new(client.clone(), config.store.replicas).await?;
    let mut ingestor = Ingestor::new(Arc::new(store), config.limits.clone());
    if let Some(now) = config.fixed_now {
        ingestor = ingestor.with_clock(move || now);
    }

    let nats = tokio::spawn(crate::nats::run(
        client,
        ingestor.clone(),
        rejected.clone(),
        config.nats_concurrency,
        config.store.replicas,
    ));

    let (health_reporter, health_service) = tonic_health::server::health_reporter();
    health_reporter
        .set_serving::<levensloop_proto::v1::ingest_service_server::IngestServiceServer<IngestApi>>(
        )
        .await;
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(levensloop_proto::FILE_DESCRIPTOR_SET)
        .build_v1()?;
    let listener = TcpListener::bind(config.grpc_addr).await?;
    let grpc_addr = listener.local_addr()?;
    let (stop, stopped) = oneshot::channel::<()>();
    let api = IngestApi::new(ingestor, Some(rejected));
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
    tracing::info!(%grpc_addr, nats = %config.nats_url, "gateway serving");
    Ok(RunningGateway {
        grpc_addr,
        stop,
        grpc,
        nats,
    })
}
