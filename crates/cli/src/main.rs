//! `levensloop`: the command line of Levensloop.
//!
//! It runs the demo (sample life events through the gateway, their sagas followed to the end),
//! shows saga timelines, inspects the store,
//! publishes life events to the gateway and simulates a registry.

mod demo;
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
    /// Show a saga's timeline.
    #[command(subcommand)]
    Saga(saga::Command),
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
    // Publishing goes through the gateway, not the store.
    match cli.command {
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
        Command::Publish(_) | Command::Simulate(_) => Ok(()),
        Command::Demo(args) => demo::run(&store, args, cli.output, &mut out).await,
        Command::Store(command) => store::run(&store, command, cli.output, &mut out).await,
        Command::Saga(command) => saga::run(&store, command, cli.output, &mut out).await,
    }
}
