//! `levensloop-orchestrator`: the orchestrator as a process. Runs until SIGINT or SIGTERM;
//! any number of instances can run side by side.

use clap::Parser;
use levensloop_orchestrator::clock::Clock;
use levensloop_orchestrator::{OrchestratorConfig, start};
use levensloop_sagas::Catalog;
use levensloop_store::JetStreamConfig;
use levensloop_telemetry::metrics;
use std::net::SocketAddr;

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
    #[arg(
        long,
        env = "LEVENSLOOP_TIME_SCALE",
        default_value_t = 1.0,
        conflicts_with = "time_travel"
    )]
    time_scale: f64,
    /// Follow the shared clock offset (`levensloop clock advance "6 months"`): the sagas'
    /// time is the wall clock plus that offset, so a demo or a test environment can let
    /// months-long waits end while retries and timeouts keep real time. Never in production.
    #[arg(long, env = "LEVENSLOOP_TIME_TRAVEL")]
    time_travel: bool,
    /// Where Prometheus scrapes `/metrics` (port 0 picks a free one).
    #[arg(
        long,
        env = "LEVENSLOOP_ORCHESTRATOR_METRICS",
        default_value = "127.0.0.1:9102"
    )]
    metrics_addr: SocketAddr,
    /// Export spans over OTLP/gRPC to this collector (e.g. http://127.0.0.1:4317); none when
    /// empty.
    #[arg(long, env = "OTEL_EXPORTER_OTLP_ENDPOINT")]
    otlp_endpoint: Option<String>,
}

/// An offset clock that follows the shared offset from now on.
async fn time_travel_clock(nats_url: &str, replicas: usize) -> anyhow::Result<Clock> {
    use futures::StreamExt;
    let client = async_nats::connect(nats_url).await?;
    let shared =
        levensloop_bus::ClockOffset::open(&async_nats::jetstream::new(client), replicas).await?;
    let offset = shared.get().await?;
    let clock = Clock::offset(chrono::Duration::seconds(offset));
    let mut changes = shared.watch().await?;
    let follower = clock.clone();
    tokio::spawn(async move {
        while let Some(offset) = changes.next().await {
            if follower.set_offset(chrono::Duration::seconds(offset)) {
                tracing::info!(offset_s = offset, now = %follower.now(), "the sagas' clock moved forward");
            }
        }
        tracing::warn!("stopped following the shared clock offset");
    });
    tracing::info!(offset_s = offset, now = %clock.now(), "time travel enabled");
    Ok(clock)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let telemetry = levensloop_telemetry::init("orchestrator", args.otlp_endpoint.as_deref())?;
    let metrics = metrics::serve(args.metrics_addr, metrics::Service::Orchestrator).await?;
    println!("orchestrator: metrics on {}", metrics.addr());
    let catalog = Catalog::builtin()?;
    let clock = if args.time_travel {
        time_travel_clock(&args.nats_url, args.replicas).await?
    } else if args.time_scale > 1.0 {
        Clock::scaled(args.time_scale)
    } else {
        Clock::system()
    };
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
            clock,
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
