//! `levensloop timeline ID`: one saga's timeline, read from the store alone (it works with
//! nothing but nats-server running); and the one-line rendering of saga events that every
//! timeline uses.

use crate::Output;
use crate::render;
use anyhow::Context as _;
pub use levensloop_cli::timeline::line;
use levensloop_proto::stored;
use levensloop_proto::v1;
use levensloop_store::{EventStore, ReadFrom, StoreError, StreamName};
use prost::Message;
use std::io::Write;

/// Prints a saga's timeline: its life event, then every step, retry, wait and outcome.
pub async fn run(
    store: &dyn EventStore,
    id: uuid::Uuid,
    output: Output,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    let life = StreamName::new(stored::LIFE_EVENT_CATEGORY, id.to_string())?;
    let life_event = match store.read(&life, ReadFrom::Start).await {
        Ok(slice) => slice
            .events
            .first()
            .map(|e| v1::LifeEvent::decode(e.data.as_ref()))
            .transpose()
            .context("the stored life event does not decode")?,
        Err(StoreError::StreamNotFound { .. }) => None,
        Err(e) => return Err(e.into()),
    };
    let stream = StreamName::new(stored::SAGA_CATEGORY, id.to_string())?;
    let slice = match store.read(&stream, ReadFrom::Start).await {
        Ok(slice) => slice,
        Err(StoreError::StreamNotFound { .. }) => {
            anyhow::bail!(
                "no saga {id}{}",
                if life_event.is_some() {
                    " yet: its life event is stored; is the orchestrator running?"
                } else {
                    ""
                }
            )
        }
        Err(e) => return Err(e.into()),
    };
    let events = slice
        .events
        .iter()
        .map(|r| v1::SagaEvent::decode(r.data.as_ref()))
        .collect::<Result<Vec<_>, _>>()
        .context("a stored saga event does not decode")?;
    match output {
        Output::Json => {
            for e in &events {
                writeln!(out, "{}", serde_json::to_string(e)?)?;
            }
        }
        Output::Table => {
            writeln!(out, "saga {id}")?;
            if let Some(event) = &life_event {
                writeln!(
                    out,
                    "  {}  ({} from {})",
                    render::describe(event),
                    event.id,
                    event.source
                )?;
            }
            for e in &events {
                let when = e
                    .occurred_at
                    .as_ref()
                    .and_then(|t| {
                        chrono::DateTime::from_timestamp(t.seconds, t.nanos.max(0) as u32)
                    })
                    .map(|t| t.format("%Y-%m-%d %H:%M:%S%.3f").to_string())
                    .unwrap_or_default();
                writeln!(out, "  {when}  {}", line(e))?;
            }
        }
    }
    Ok(())
}
