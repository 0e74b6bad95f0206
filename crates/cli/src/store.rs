//! `levensloop store …`: read a stream, follow a category.

use crate::Output;
use crate::render;
use anyhow::Context as _;
use levensloop_store::{EventStore, ReadFrom, StreamName, Version};
use std::io::Write;

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Print a stream's events in order.
    Read {
        /// The stream, as category-id (e.g. lifeevent-6f1c…).
        stream: String,
        /// Only the commits after this version.
        #[arg(long)]
        after: Option<u64>,
    },
    /// Follow every stream of a category through a durable subscription.
    Tail {
        /// The category (e.g. lifeevent).
        category: String,
        /// The subscription's name; it resumes where that name left off.
        #[arg(long, default_value = "cli-tail")]
        name: String,
        /// Keep following live commits instead of stopping once caught up.
        #[arg(long, short)]
        follow: bool,
    },
}

pub async fn run(
    store: &dyn EventStore,
    command: Command,
    output: Output,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    match command {
        Command::Read { stream, after } => {
            let name: StreamName = stream.parse()?;
            let from = after.map_or(ReadFrom::Start, |v| ReadFrom::After(Version::from_u64(v)));
            let slice = store.read(&name, from).await?;
            for event in &slice.events {
                render::event(event, output, out)?;
            }
            if output == Output::Table {
                writeln!(
                    out,
                    "{} event(s), stream at version {}",
                    slice.events.len(),
                    slice.version
                )?;
            }
        }
        Command::Tail {
            category,
            name,
            follow,
        } => {
            let mut subscription = store.subscribe(&category, &name).await?;
            loop {
                let delivery = subscription.next().await.context("subscription")?;
                for event in &delivery.events {
                    render::event(event, output, out)?;
                }
                let caught_up = delivery.pending == 0;
                delivery.ack().await?;
                if caught_up && !follow {
                    break;
                }
            }
        }
    }
    Ok(())
}
