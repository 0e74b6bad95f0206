//! `levensloop-handlers`: the handlers service as a process.
//!
//! Serves `HandlerService` over gRPC (with health checking and reflection) and runs the
//! webhook connectors until SIGINT or SIGTERM.

use std::net::SocketAddr;
use std::time::Duration;

use clap::Parser;
use levensloop_handlers::{HandlersConfig, start};
use levensloop_store::JetStreamConfig;
use levensloop_telemetry::metrics;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Debug, Parser)]
#[command(
    name = "levensloop-handlers",
    version,
    about = "Levensloop handlers: integrators register handlers and serve their tasks over gRPC or webhooks"
)]
struct Args {
    /// NATS server(s), comma-separated.
    #[arg(
        long,
        env = "LEVENSLOOP_NATS_URL",
        default_value = "nats://127.0.0.1:14222"
    )]
    nats_url: String,
    /// Where HandlerService (and health, reflection) listens.
    #[arg(
        long,
        env = "LEVENSLOOP_HANDLERS_GRPC",
        default_value = "127.0.0.1:50052"
    )]
    grpc_addr: SocketAddr,
    /// Seconds a worker holds a task before it goes to another worker, unless it extends
    /// the lease.
    #[arg(long, env = "LEVENSLOOP_LEASE_S", default_value_t = 30.0)]
    lease_s: f64,
    /// Replicas of the streams (3 on a cluster).
    #[arg(long, env = "LEVENSLOOP_REPLICAS", default_value_t = 1)]
    replicas: usize,
    /// Where Prometheus scrapes `/metrics` (port 0 picks a free one).
    #[arg(
        long,
        env = "LEVENSLOOP_HANDLERS_METRICS",
        default_value = "127.0.0.1:9104"
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
    let telemetry = levensloop_telemetry::init("handlers", args.otlp_endpoint.as_deref())?;
    anyhow::ensure!(
        args.lease_s.is_finite() && args.lease_s >= 0.1,
        "--lease-s must be at least 0.1"
    );
    let config = HandlersConfig {
        nats_url: args.nats_url,
        grpc_addr: args.grpc_addr,
        lease: Duration::from_secs_f64(args.lease_s),
        store: JetStreamConfig {
            replicas: args.replicas,
            ..JetStreamConfig::default()
        },
    };
    let metrics = metrics::serve(args.metrics_addr, metrics::Service::Handlers).await?;
    println!("handlers: metrics on {}", metrics.addr());
    let running = start(config).await?;
    println!("handlers: gRPC on {}", running.grpc_addr);
    shutdown_signal().await;
    tracing::info!("stopping");
    running.shutdown().await;
    drop(telemetry);
    Ok(())
}

async fn shutdown_signal() {
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
