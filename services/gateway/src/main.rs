//! `levensloop-gateway`: the ingest gateway as a process.
//!
//! Serves `IngestService` over gRPC and consumes CloudEvents from `levensloop.ingest.>`
//! (JetStream) until SIGINT or SIGTERM.

use clap::Parser;
use levensloop_gateway::rejection::Limits;
use levensloop_gateway::server::{GatewayConfig, start};
use levensloop_store::JetStreamConfig;
use std::net::SocketAddr;
use tracing_subscriber::EnvFilter;

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
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
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
