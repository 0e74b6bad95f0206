//! `levensloop-workers`: the built-in, simulated target systems as a process.
//!
//! Serves every task and compensation handler of the built-in saga definitions (or the
//! `--handlers` subset) until SIGINT or SIGTERM, then finishes the tasks in progress.
//! `levensloop-workers ledger` prints what the ledger holds.

use clap::{Parser, Subcommand};
use levensloop_sagas::Catalog;
use levensloop_telemetry::metrics;
use levensloop_workers::sim::{Behaviour, HandlerSpec};
use levensloop_workers::{Ledger, Workers, WorkersConfig};
use std::net::SocketAddr;
use std::time::Duration;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Debug, Parser)]
#[command(
    name = "levensloop-workers",
    version,
    about = "Levensloop built-in workers: simulated target systems with an idempotency ledger"
)]
struct Args {
    /// NATS server(s), comma-separated.
    #[arg(
        long,
        global = true,
        env = "LEVENSLOOP_NATS_URL",
        default_value = "nats://127.0.0.1:14222"
    )]
    nats_url: String,
    /// Replicas of the queues and buckets (3 on a cluster).
    #[arg(long, global = true, env = "LEVENSLOOP_REPLICAS", default_value_t = 1)]
    replicas: usize,
    /// Export spans over OTLP/gRPC to this collector (e.g. http://127.0.0.1:4317); none when
    /// empty.
    #[arg(long, global = true, env = "OTEL_EXPORTER_OTLP_ENDPOINT")]
    otlp_endpoint: Option<String>,
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Debug, clap::Args)]
struct RunArgs {
    /// Handlers to serve, comma-separated (default: every task and compensation handler of
    /// the built-in definitions).
    #[arg(long, env = "LEVENSLOOP_WORKER_HANDLERS", value_delimiter = ',')]
    handlers: Vec<String>,
    /// Also answer the human work lists (police findings, licence hand-overs) as a
    /// simulated clerk who says yes: for demos, tests and benchmarks, never in production.
    #[arg(long, env = "LEVENSLOOP_WORKER_CLERK")]
    clerk: bool,
    /// Least latency of a simulated call, in milliseconds.
    #[arg(long, env = "LEVENSLOOP_WORKER_LATENCY_MS", default_value_t = 20.0)]
    latency_ms: f64,
    /// Up to this many milliseconds more, uniformly.
    #[arg(long, env = "LEVENSLOOP_WORKER_JITTER_MS", default_value_t = 30.0)]
    jitter_ms: f64,
    /// Share of calls answered with a retryable failure (0 to 1).
    #[arg(long, env = "LEVENSLOOP_WORKER_TRANSIENT_RATE", default_value_t = 0.0)]
    transient_rate: f64,
    /// Share of calls answered with a permanent failure (0 to 1).
    #[arg(long, env = "LEVENSLOOP_WORKER_PERMANENT_RATE", default_value_t = 0.0)]
    permanent_rate: f64,
    /// Per-handler settings, repeatable (`;`-separated in the environment):
    /// `HANDLER:key=value,…` with keys latency_ms, jitter_ms, transient, permanent, stall_ms,
    /// rate (per second; off), in_flight, concurrency.
    /// E.g. `gemeente.geboortepremie:permanent=0.5,latency_ms=200`.
    #[arg(
        long = "handler-config",
        env = "LEVENSLOOP_WORKER_HANDLER_CONFIG",
        value_delimiter = ';'
    )]
    handler_config: Vec<HandlerSpec>,
    /// Ignore the definitions' rate limits (benchmarks of the platform itself); in-flight
    /// limits still hold.
    #[arg(long, env = "LEVENSLOOP_WORKER_IGNORE_RATE_LIMITS")]
    ignore_rate_limits: bool,
    /// Tasks this process works on at once per handler (default: the handler's in-flight
    /// limit).
    #[arg(long, env = "LEVENSLOOP_WORKER_CONCURRENCY")]
    concurrency: Option<usize>,
    /// How long a worker may hold a task before it goes to another worker, in milliseconds.
    /// Keep it equal to the orchestrator's (both ensure the queues).
    #[arg(long, env = "LEVENSLOOP_WORKER_ACK_WAIT_MS", default_value_t = 30_000)]
    ack_wait_ms: u64,
    /// This process's name in the ledger and the logs (default: worker-<pid>).
    #[arg(long, env = "LEVENSLOOP_WORKER_ID")]
    instance: Option<String>,
    /// Seed of the simulated latencies and failures, for reproducible runs.
    #[arg(long, env = "LEVENSLOOP_WORKER_SEED")]
    seed: Option<u64>,
    /// Where Prometheus scrapes `/metrics` (port 0 picks a free one).
    #[arg(
        long,
        env = "LEVENSLOOP_WORKER_METRICS",
        default_value = "127.0.0.1:9103"
    )]
    metrics_addr: SocketAddr,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Print the ledger: effects per handler, or one saga's or one handler's effects (JSON
    /// lines).
    Ledger {
        /// Only this saga's effects.
        #[arg(long)]
        saga: Option<String>,
        /// Only this handler's effects.
        #[arg(long, conflicts_with = "saga")]
        handler: Option<String>,
    },
}

fn millis(ms: f64, what: &str) -> anyhow::Result<Duration> {
    anyhow::ensure!(
        ms.is_finite() && ms >= 0.0,
        "{what} must be a non-negative number of milliseconds"
    );
    Ok(Duration::from_secs_f64(ms / 1000.0))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let telemetry = levensloop_telemetry::init("workers", args.otlp_endpoint.as_deref())?;
    if let Some(Command::Ledger { saga, handler }) = args.command {
        let client = async_nats::connect(args.nats_url.as_str()).await?;
        let ledger = Ledger::open(client, args.replicas).await?;
        let effects = match (saga, handler) {
            (Some(saga), _) => ledger.effects_for_saga(&saga).await?,
            (_, Some(handler)) => ledger.effects(&handler).await?,
            (None, None) => {
                println!("{}", serde_json::to_string(&ledger.counts().await?)?);
                return Ok(());
            }
        };
        for effect in effects {
            println!("{}", serde_json::to_string(&effect)?);
        }
        return Ok(());
    }

    let run = args.run;
    let metrics = metrics::serve(run.metrics_addr, metrics::Service::Workers).await?;
    println!("workers: metrics on {}", metrics.addr());
    let defaults = WorkersConfig::default();
    let config = WorkersConfig {
        handlers: run.handlers,
        clerk: run.clerk,
        behaviour: Behaviour {
            latency: millis(run.latency_ms, "--latency-ms")?,
            jitter: millis(run.jitter_ms, "--jitter-ms")?,
            transient_rate: run.transient_rate,
            permanent_rate: run.permanent_rate,
            stall_after_effect: Duration::ZERO,
        },
        ack_wait: Duration::from_millis(run.ack_wait_ms.max(1)),
        rate_limits: !run.ignore_rate_limits,
        concurrency: run.concurrency,
        instance: run.instance.unwrap_or(defaults.instance.clone()),
        seed: run.seed,
        ..defaults
    }
    .with_specs(run.handler_config);
    let catalog = Catalog::builtin()?;
    let workers = Workers::connect(&args.nats_url, args.replicas, &catalog, config).await?;
    for plan in workers.plans() {
        tracing::debug!(
            handler = %plan.handler,
            in_flight = plan.limits.max_in_flight,
            rate = ?plan.rate_per_second,
            concurrency = plan.concurrency,
            "serving"
        );
    }
    println!("workers: serving {} handlers", workers.plans().len());
    shutdown_signal().await;
    tracing::info!("stopping: finishing the tasks in progress");
    let stats = workers.shutdown().await;
    println!(
        "workers: stopped; completed {} ({} from the ledger), failed {} transient, {} permanent, \
         {} malformed; {} effects recorded",
        stats.completed,
        stats.replayed,
        stats.failed_transient,
        stats.failed_permanent,
        stats.malformed,
        stats.effects
    );
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
