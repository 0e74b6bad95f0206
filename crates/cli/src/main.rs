//! `levensloop`: the command line of Levensloop.
//!
//! It runs the demo (sample life events through the gateway, their sagas followed to the end),
//! lists, shows, watches and steers sagas through the operations service (like `kubectl`),
//! inspects the store, publishes life events to the gateway and simulates a registry.

mod demo;
mod ops;
mod publish;
mod render;
mod saga;
mod store;

use clap::{Parser, Subcommand, ValueEnum};
use levensloop_store::{JetStreamConfig, JetStreamStore};

#[derive(Debug, Parser)]
#[command(
    name = "levensloop",
    version,
    about = "Levensloop: life events in, once-only government action out",
    long_about = "Levensloop records each life event once, starts one saga for it and fans out \
                  every follow-up action exactly once. This is its command line."
)]
struct Cli {
    /// NATS server(s), comma-separated.
    #[arg(
        long,
        global = true,
        env = "LEVENSLOOP_NATS_URL",
        default_value = "nats://127.0.0.1:14222"
    )]
    nats_url: String,

    /// Output format.
    #[arg(short, long, global = true, value_enum, default_value_t = Output::Table)]
    output: Output,

    #[command(flatten)]
    connection: ops::Connection,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    /// Human-readable tables and timelines.
    Table,
    /// One JSON document per line, for scripts.
    Json,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Publish a birth, a death, a move and a driving exam through the gateway and watch
    /// their sagas run to completion.
    Demo(demo::Args),
    /// Publish one life event to the gateway, over gRPC or NATS.
    Publish(publish::PublishArgs),
    /// Act as a registry: send realistic life events at a rate, with duplicates and defects.
    Simulate(publish::SimulateArgs),
    /// List sagas with filters.
    #[command(subcommand)]
    Sagas(ops::SagasCommand),
    /// Show, watch, retry, skip or cancel a saga.
    #[command(subcommand)]
    Saga(ops::SagaCommand),
    /// Sagas that need a person: open incidents.
    Incidents {
        #[arg(long, default_value_t = 50)]
        limit: u32,
    },
    /// What the gateway refused, with the reason, newest first.
    Rejected {
        #[arg(long, default_value_t = 50)]
        limit: u32,
    },
    /// The handlers integrators registered.
    Handlers {
        /// Also the deregistered ones.
        #[arg(long)]
        all: bool,
    },
    /// Sagas by status and type; step latency per handler.
    Stats,
    /// A saga's timeline read from the store alone (no operations service needed).
    Timeline { id: uuid::Uuid },
    /// Inspect the event store.
    #[command(subcommand)]
    Store(store::Command),
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("LEVENSLOOP_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let mut out = std::io::stdout().lock();
    // Publishing goes through the gateway, the operators' commands through the operations
    // service; the rest reads the store.
    let query = match &cli.command {
        Command::Incidents { limit } => Some(ops::Query::Incidents { limit: *limit }),
        Command::Rejected { limit } => Some(ops::Query::Rejected { limit: *limit }),
        Command::Handlers { all } => Some(ops::Query::Handlers { all: *all }),
        Command::Stats => Some(ops::Query::Stats),
        _ => None,
    };
    if let Some(query) = query {
        return ops::query(&cli.connection, query, cli.output, &mut out).await;
    }
    match cli.command {
        Command::Sagas(command) => {
            return ops::sagas(&cli.connection, command, cli.output, &mut out).await;
        }
        Command::Saga(command) => {
            return ops::saga(&cli.connection, command, cli.output, &mut out).await;
        }
        Command::Publish(args) => {
            return publish::publish(&cli.nats_url, args, cli.output, &mut out).await;
        }
        Command::Simulate(args) => {
            return publish::simulate(&cli.nats_url, args, cli.output, &mut out).await;
        }
        _ => {}
    }
    let store = JetStreamStore::connect(&cli.nats_url, JetStreamConfig::default())
        .await
        .map_err(|e| {
            anyhow::anyhow!("{e}\n  is nats-server running? `infra/just nats-up` starts one")
        })?;
    match cli.command {
        Command::Publish(_)
        | Command::Simulate(_)
        | Command::Sagas(_)
        | Command::Saga(_)
        | Command::Incidents { .. }
        | Command::Rejected { .. }
        | Command::Handlers { .. }
        | Command::Stats => Ok(()),
        Command::Demo(args) => demo::run(&store, args, cli.output, &mut out).await,
        Command::Store(command) => store::run(&store, command, cli.output, &mut out).await,
        Command::Timeline { id } => saga::run(&store, id, cli.output, &mut out).await,
    }
}
