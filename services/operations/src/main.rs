//! `levensloop-operations`: the operations service as a process. Follows the saga events
//! into its read model and serves `OperationsService` over gRPC (with health checking and
//! reflection) and the web dashboard over HTTP until SIGINT or SIGTERM.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use levensloop_operations::service::{OperationsConfig, start};
use levensloop_store::JetStreamConfig;
use levensloop_telemetry::metrics;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Debug, Parser)]
#[command(
    name = "levensloop-operations",
    version,
    about = "Levensloop operations: the operators' read model, API and saga steering"
)]
struct Args {
    /// NATS server(s), comma-separated.
    #[arg(
        long,
        env = "LEVENSLOOP_NATS_URL",
        default_value = "nats://127.0.0.1:14222"
    )]
    nats_url: String,
    /// The read model's database: `sqlite:PATH` (embedded) or `postgres://user@host/db`.
    #[arg(
        long,
        env = "LEVENSLOOP_OPERATIONS_DATABASE",
        default_value = "sqlite:.data/operations.db"
    )]
    database_url: String,
    /// Where OperationsService (and health, reflection) listens.
    #[arg(
        long,
        env = "LEVENSLOOP_OPERATIONS_GRPC",
        default_value = "127.0.0.1:50053"
    )]
    grpc_addr: SocketAddr,
    /// Where the web dashboard and its JSON API listen (port 0: any free port).
    #[arg(
        long,
        env = "LEVENSLOOP_OPERATIONS_HTTP",
        default_value = "127.0.0.1:8080"
    )]
    http_addr: SocketAddr,
    /// The operators and their roles (TOML, see the README); without it the service is open
    /// to local callers as the `local` operator.
    #[arg(long, env = "LEVENSLOOP_OPERATORS")]
    operators: Option<PathBuf>,
    /// Serve only, never project (on PostgreSQL, instances that do project elect one projector
    /// among themselves).
    #[arg(long)]
    no_projection: bool,
    /// Empty the read model and rebuild it from the store before serving.
    #[arg(long)]
    rebuild: bool,
    /// Seconds an operator's action waits for the orchestrator.
    #[arg(long, default_value_t = 10)]
    command_timeout_s: u64,
    /// Replicas of the streams (3 on a cluster).
    #[arg(long, env = "LEVENSLOOP_REPLICAS", default_value_t = 1)]
    replicas: usize,
    /// Where Prometheus scrapes `/metrics` (port 0 picks a free one).
    #[arg(
        long,
        env = "LEVENSLOOP_OPERATIONS_METRICS",
        default_value = "127.0.0.1:9105"
    )]
    metrics_addr: SocketAddr,
    /// Export traces over OTLP/gRPC to this collector (e.g. http://127.0.0.1:4317).
    #[arg(long, env = "OTEL_EXPORTER_OTLP_ENDPOINT")]
    otlp_endpoint: Option<String>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let telemetry = levensloop_telemetry::init("operations", args.otlp_endpoint.as_deref())?;
    if let Some(path) = args.database_url.strip_prefix("sqlite:")
        && let Some(dir) = std::path::Path::new(path.trim_start_matches("//")).parent()
        && !dir.as_os_str().is_empty()
    {
        std::fs::create_dir_all(dir)?;
    }
    let config = OperationsConfig {
        nats_url: args.nats_url,
        store: JetStreamConfig {
            replicas: args.replicas,
            ..JetStreamConfig::default()
        },
        database_url: args.database_url,
        grpc_addr: args.grpc_addr,
        http_addr: Some(args.http_addr),
        operators: args.operators,
        project: !args.no_projection,
        rebuild: args.rebuild,
        command_timeout: Duration::from_secs(args.command_timeout_s.max(1)),
    };
    let metrics = metrics::serve(args.metrics_addr, metrics::Service::Operations).await?;
    println!("operations: metrics on {}", metrics.addr());
    let running = start(config).await?;
    println!("operations: gRPC on {}", running.grpc_addr);
    if let Some(addr) = running.http_addr {
        println!("operations: dashboard on http://{addr}");
    }
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
