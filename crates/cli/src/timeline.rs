//! One readable line per saga event: the timelines of `levensloop saga show`, `levensloop
//! timeline` and the demo all read the same.

use levensloop_proto::v1::{self, saga_event::Event};

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
