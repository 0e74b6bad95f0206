//! `levensloop-gateway`: the ingest gateway as a process.
//!
//! Serves `IngestService` over gRPC and consumes CloudEvents from `levensloop.ingest.>`
//! (JetStream) until SIGINT or SIGTERM.

use clap::Parser;
use levensloop_gateway::rejection::Limits;
use levensloop_gateway::server::{GatewayConfig, start};
use levensloop_store::JetStreamConfig;
use levensloop_telemetry::metrics;
use std::net::SocketAddr;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Debug, Parser)]
#[command(
    name = "levensloop-gateway",
    version,
    about = "Levensloop ingest gateway: life events in over gRPC and NATS, validated, stored once"
)]
struct Args {
    /// NATS server(s), comma-separated.
    #[arg(
        long,
        env = "LEVENSLOOP_NATS_URL",
        default_value = "nats://127.0.0.1:14222"
    )]
    nats_url: String,
    /// Where the gRPC door (IngestService, health, reflection) listens.
    #[arg(
        long,
        env = "LEVENSLOOP_GATEWAY_GRPC",
        default_value = "127.0.0.1:50051"
    )]
    grpc_addr: SocketAddr,
    /// Largest accepted payload in bytes, refused before decoding.
    #[arg(long, env = "LEVENSLOOP_MAX_PAYLOAD_BYTES", default_value_t = 64 * 1024)]
    max_payload_bytes: usize,
    /// How far in the future a date may lie, in seconds (clock skew of registries).
    #[arg(long, env = "LEVENSLOOP_FUTURE_TOLERANCE_S", default_value_t = 300)]
    future_tolerance_s: i64,
    /// NATS messages processed at once.
    #[arg(long, env = "LEVENSLOOP_GATEWAY_CONCURRENCY", default_value_t = 256)]
    concurrency: usize,
    /// Replicas of the event store stream (3 on a cluster).
    #[arg(long, env = "LEVENSLOOP_REPLICAS", default_value_t = 1)]
    replicas: usize,
    /// Where Prometheus scrapes `/metrics` (port 0 picks a free one).
    #[arg(
        long,
        env = "LEVENSLOOP_GATEWAY_METRICS",
        default_value = "127.0.0.1:9101"
    )]
    metrics_addr: SocketAddr,
    /// Export spans over OTLP/gRPC to this collector (e.g. http://127.0.0.1:4317); none when
    /// empty.
    #[arg(long, env = "OTEL_EXPORTER_OTLP_ENDPOINT")]
    otlp_endpoint: Option<String>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let telemetry = levensloop_telemetry::init("gateway", args.otlp_endpoint.as_deref())?;
    let metrics = metrics::serve(args.metrics_addr, metrics::Service::Gateway).await?;
    println!("gateway: metrics on {}", metrics.addr());
    let config = GatewayConfig {
        nats_url: args.nats_url,
        grpc_addr: args.grpc_addr,
        limits: Limits {
            max_payload_bytes: args.max_payload_bytes,
            future_tolerance: chrono::Duration::seconds(args.future_tolerance_s),
        },
        nats_concurrency: args.concurrency.max(1),
        store: JetStreamConfig {
            replicas: args.replicas,
            ..JetStreamConfig::default()
        },
        fixed_now: None,
    };
    let gateway = start(config).await?;
    println!("gateway: gRPC on {}", gateway.grpc_addr);
    shutdown_signal().await;
    tracing::info!("stopping");
    gateway.shutdown().await;
    drop(telemetry);
    Ok(())
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
