//! `levensloop-bench`: benchmarks that start their own nats-server on this machine and end by
//! printing one JSON line of figures (progress goes to stderr).
//!
//! - `store`: the event store's pipelined, optimistic-concurrency append rate against the raw
//!   JetStream publish rate of the same server, payload size and pipelining, in the standard
//!   and the strict profile.

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
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let line = match cli.command {
        Command::Store(args) => store::run(args).await?,
    };
    println!("{line}");
    Ok(())
}
