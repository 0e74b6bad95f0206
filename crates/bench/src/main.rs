//! `levensloop-bench`: benchmarks that start their own nats-server on this machine and end by
//! printing one JSON line of figures (progress goes to stderr).
//!
//! - `store`: the event store's pipelined, optimistic-concurrency append rate against the raw
//!   JetStream publish rate of the same server, payload size and pipelining, in the standard
//!   and the strict profile.
//! - `ingest`: life events per second through the gateway's gRPC and NATS doors, with the raw
//!   JetStream rate of the same events.
//! - `sagas`: life events through gateway → orchestrator → workers (real processes) to each
//!   saga's end: sagas per second, latency percentiles at half that rate, steps per saga,
//!   raw appends, peak memory and CPU time per process.
//! - `handlers`: tasks through integrators' gRPC workers (the handlers service's Work streams)
//!   against the built-in workers: tasks per second and latency per step.

mod handlers;
mod ingest;
mod sagas;
mod store;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "levensloop-bench", about = "Levensloop benchmarks", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Event store appends vs raw JetStream publishes, standard and strict profile.
    Store(store::Args),
    /// Life events through the gateway, over gRPC and over NATS, against raw JetStream.
    Ingest(ingest::Args),
    /// Life events to the end of their sagas, through real processes.
    Sagas(sagas::Args),
    /// Tasks through gRPC workers against the built-in workers.
    Handlers(handlers::Args),
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let line = match cli.command {
        Command::Store(args) => store::run(args).await?,
        Command::Ingest(args) => ingest::run(args).await?,
        Command::Sagas(args) => sagas::run(args).await?,
        Command::Handlers(args) => handlers::run(args).await?,
    };
    println!("{line}");
    Ok(())
}
