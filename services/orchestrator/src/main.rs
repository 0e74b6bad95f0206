//! `levensloop-orchestrator`: the orchestrator as a process. Runs until SIGINT or SIGTERM;
//! any number of instances can run side by side.

use clap::Parser;
use levensloop_orchestrator::clock::Clock;
use levensloop_orchestrator::{OrchestratorConfig, start};
use levensloop_sagas::Catalog;
use levensloop_store::JetStreamConfig;
use tracing_subscriber::EnvFilter;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Debug, Parser)]
#[command(
    name = "levensloop-orchestrator",
    version,
    about = "Levensloop orchestrator: one saga per life event, run to completion exactly once"
)]
struct Args {
    /// NATS server(s), comma-separated.
    #[arg(
        long,
        env = "LEVENSLOOP_NATS_URL",
        default_value = "nats://127.0.0.1:14222"
    )]
    nats_url: String,
    /// Replicas of the streams (3 on a cluster).
    #[arg(long, env = "LEVENSLOOP_REPLICAS", default_value_t = 1)]
    replicas: usize,
    /// Sagas handled side by side (each saga's inputs one at a time).
    #[arg(long, env = "LEVENSLOOP_ORCHESTRATOR_SHARDS", default_value_t = 32)]
    shards: usize,
    /// Sagas whose state is kept in memory.
    #[arg(long, env = "LEVENSLOOP_ORCHESTRATOR_CACHE", default_value_t = 100_000)]
    cache: usize,
    /// Life events and results handled at once.
    #[arg(
        long,
        env = "LEVENSLOOP_ORCHESTRATOR_CONCURRENCY",
        default_value_t = 512
    )]
    concurrency: usize,
    /// Run saga time this many times faster than the wall clock (a demo's six-month wait in
    /// seconds). Every date the sagas store is on that clock: use it only with a store of
    /// its own.
    #[arg(long, env = "LEVENSLOOP_TIME_SCALE", default_value_t = 1.0)]
    time_scale: f64,
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
    let catalog = Catalog::builtin()?;
    let orchestrator = start(
        OrchestratorConfig {
            nats_url: args.nats_url,
            store: JetStreamConfig {
                replicas: args.replicas,
                ..JetStreamConfig::default()
            },
            shards: args.shards,
            cache_capacity: args.cache,
            concurrency: args.concurrency,
            clock: if args.time_scale > 1.0 {
                Clock::scaled(args.time_scale)
            } else {
                Clock::system()
            },
        },
        catalog,
    )
    .await?;
    println!(
        "orchestrator: running ({} running sagas recovered)",
        orchestrator.recovered
    );
    shutdown_signal().await;
    tracing::info!("stopping");
    orchestrator.shutdown().await;
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
