//! `levensloop timeline ID`: one saga's timeline, read from the store alone (it works with
//! nothing but nats-server running); and the one-line rendering of saga events that every
//! timeline uses.

use crate::Output;
use crate::render;
use anyhow::Context as _;
use levensloop_proto::stored;
use levensloop_proto::v1::{self, saga_event::Event};
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

/// One readable line per saga event.
pub fn line(e: &v1::SagaEvent) -> String {
    match &e.event {
        Some(Event::SagaStarted(s)) => format!(
            "started      {} v{}: {}",
            s.definition,
            s.definition_version,
            s.planned_steps.join(", ")
        ),
        Some(Event::StepScheduled(s)) => {
            format!(
                "scheduled    {} → {} (attempt {})",
                s.step_id, s.handler, s.attempt
            )
        }
        Some(Event::StepSucceeded(s)) => {
            format!("succeeded    {} (attempt {})", s.step_id, s.attempt)
        }
        Some(Event::StepFailed(s)) => format!(
            "failed       {} (attempt {}, {}): {} {}",
            s.step_id,
            s.attempt,
            if s.retryable {
                "retryable"
            } else {
                "permanent"
            },
            s.error_code,
            s.reason
        ),
        Some(Event::StepRetryScheduled(s)) => {
            format!(
                "retry        {} (attempt {} due)",
                s.step_id, s.next_attempt
            )
        }
        Some(Event::StepTimedOut(s)) => {
            format!("timed out    {} (attempt {})", s.step_id, s.attempt)
        }
        Some(Event::StepSkipped(s)) => {
            format!("skipped      {} by {}: {}", s.step_id, s.actor, s.reason)
        }
        Some(Event::StepCompensationScheduled(s)) => {
            format!(
                "compensating {} → {} (attempt {})",
                s.step_id, s.handler, s.attempt
            )
        }
        Some(Event::StepCompensated(s)) => format!("compensated  {}", s.step_id),
        Some(Event::CompensationFailed(s)) => {
            format!("compensation of {} failed: {}", s.step_id, s.reason)
        }
        Some(Event::WaitStarted(s)) => format!(
            "waiting      {} until {}",
            s.step_id,
            s.until
                .as_ref()
                .and_then(|t| chrono::DateTime::from_timestamp(t.seconds, 0))
                .map(|t| t.format("%Y-%m-%d").to_string())
                .unwrap_or_default()
        ),
        Some(Event::WaitElapsed(s)) => format!("wait over    {}", s.step_id),
        Some(Event::HumanTaskCompleted(s)) => format!("done by hand {} by {}", s.step_id, s.actor),
        Some(Event::SagaParked(s)) => format!("parked       {}", s.reason),
        Some(Event::SagaResumed(s)) => format!("resumed      by {}: {}", s.actor, s.reason),
        Some(Event::SagaCancelled(s)) => format!("cancelled    by {}: {}", s.actor, s.reason),
        Some(Event::SagaCompleted(_)) => "COMPLETED".to_owned(),
        Some(Event::SagaCompensated(s)) => {
            format!("COMPENSATED  after {} failed", s.failed_step_id)
        }
        Some(Event::SagaFailed(s)) => format!("FAILED       {}", s.reason),
        Some(Event::IncidentRaised(s)) => format!("INCIDENT     {}: {}", s.step_id, s.reason),
        Some(Event::OperatorActed(s)) if s.step_id.is_empty() => {
            format!("operator     {} {}: {}", s.actor, s.action, s.reason)
        }
        Some(Event::OperatorActed(s)) => {
            format!(
                "operator     {} {} {}: {}",
                s.actor, s.action, s.step_id, s.reason
            )
        }
        None => "(empty event)".to_owned(),
    }
}
