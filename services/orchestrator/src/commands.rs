//! Operators' commands (retry a step, skip it, cancel the saga, complete a human step, resume
//! a parked saga), served on the NATS request subject `levensloop.saga.command` by every
//! orchestrator instance (one queue group: any instance may take one; the saga's optimistic
//! concurrency settles a race with another instance). The engine stores each action with
//! who did it and why before what it led to, so the audit trail is the saga's own stream.

use crate::OrchestratorError;
use crate::shard::{Msg, Router, SagaInput};
use futures::StreamExt;
use levensloop_proto::stored::{SAGA_COMMAND_QUEUE, SAGA_COMMAND_SUBJECT};
use levensloop_proto::v1::{self, SagaCommandOutcome, saga_command::Action};
use levensloop_sagas::{EngineError, SagaStatus};
use prost::Message;
use std::time::Duration;
use uuid::Uuid;

/// Serves commands until the connection closes for good.
pub async fn serve(client: async_nats::Client, router: Router) {
    loop {
        let mut requests = match client
            .queue_subscribe(SAGA_COMMAND_SUBJECT, SAGA_COMMAND_QUEUE.to_owned())
            .await
        {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "cannot serve operators' commands; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        while let Some(request) = requests.next().await {
            let client = client.clone();
            let router = router.clone();
            tokio::spawn(async move {
                let Some(reply_to) = request.reply.clone() else {
                    tracing::warn!("an operator's command without a reply subject ignored");
                    return;
                };
                let reply = answer(&router, &request.payload).await;
                if let Err(e) = client.publish(reply_to, reply.encode_to_vec().into()).await {
                    tracing::warn!(error = %e, "the answer to an operator's command was lost");
                }
            });
        }
    }
}

/// Decodes, checks and applies one command.
async fn answer(router: &Router, payload: &[u8]) -> v1::SagaCommandReply {
    let (saga, input) = match parse(payload) {
        Ok(parsed) => parsed,
        Err(why) => return refused(SagaCommandOutcome::Invalid, why),
    };
    let result = router
        .ask(saga, |done| Msg::Input {
            saga,
            input,
            done: Some(done),
        })
        .await;
    match result {
        Ok(Some(status)) => v1::SagaCommandReply {
            outcome: SagaCommandOutcome::Applied.into(),
            status: status_name(status).to_owned(),
            error: String::new(),
        },
        Ok(None) | Err(OrchestratorError::NotFound(_)) => {
            refused(SagaCommandOutcome::NotFound, format!("no saga {saga}"))
        }
        Err(OrchestratorError::Engine(e)) => {
            let outcome = match e {
                EngineError::UnknownStep { .. } | EngineError::StepNotPlanned { .. } => {
                    SagaCommandOutcome::NotFound
                }
                _ => SagaCommandOutcome::NotAllowed,
            };
            refused(outcome, e.to_string())
        }
        Err(e @ (OrchestratorError::Store(_) | OrchestratorError::Contended(_))) => {
            refused(SagaCommandOutcome::Unavailable, e.to_string())
        }
    }
}

fn refused(outcome: SagaCommandOutcome, error: impl Into<String>) -> v1::SagaCommandReply {
    v1::SagaCommandReply {
        outcome: outcome.into(),
        status: String::new(),
        error: error.into(),
    }
}

/// A command as the saga's input, or why it is malformed.
fn parse(payload: &[u8]) -> Result<(Uuid, SagaInput), String> {
    let command =
        v1::SagaCommand::decode(payload).map_err(|e| format!("not a SagaCommand: {e}"))?;
    let saga = Uuid::parse_str(&command.saga_id)
        .map_err(|e| format!("saga_id {:?} is not a UUID: {e}", command.saga_id))?;
    let actor = command.actor.trim().to_owned();
    if actor.is_empty() {
        return Err("actor is required: every operator action names who did it".to_owned());
    }
    let reason = command.reason;
    let step = |step_id: String| {
        if step_id.trim().is_empty() {
            Err("step_id is required".to_owned())
        } else {
            Ok(step_id)
        }
    };
    let input = match command.action {
        None => return Err("no action".to_owned()),
        Some(Action::RetryStep(a)) => SagaInput::RetryStep {
            step_id: step(a.step_id)?,
            actor,
            reason,
        },
        Some(Action::SkipStep(a)) => {
            if reason.trim().is_empty() {
                return Err("a skip needs a reason".to_owned());
            }
            SagaInput::SkipStep {
                step_id: step(a.step_id)?,
                actor,
                reason,
            }
        }
        Some(Action::Cancel(_)) => {
            if reason.trim().is_empty() {
                return Err("a cancellation needs a reason".to_owned());
            }
            SagaInput::Cancel { actor, reason }
        }
        Some(Action::CompleteHumanStep(a)) => SagaInput::CompleteHuman {
            step_id: step(a.step_id)?,
            actor,
            note: reason,
        },
        Some(Action::Resume(_)) => SagaInput::Resume { actor, reason },
    };
    Ok((saga, input))
}

/// The status as operators read it.
pub fn status_name(status: SagaStatus) -> &'static str {
    match status {
        SagaStatus::NotStarted => "not-started",
        SagaStatus::Running => "running",
        SagaStatus::Parked => "parked",
        SagaStatus::Compensating => "compensating",
        SagaStatus::Cancelling => "cancelling",
        SagaStatus::Completed => "completed",
        SagaStatus::Compensated => "compensated",
        SagaStatus::Failed => "failed",
        SagaStatus::Cancelled => "cancelled",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn command(action: Option<Action>, actor: &str, reason: &str) -> Vec<u8> {
        v1::SagaCommand {
            saga_id: Uuid::nil().to_string(),
            actor: actor.to_owned(),
            reason: reason.to_owned(),
            action,
        }
        .encode_to_vec()
    }

    #[test]
    fn malformed_commands_are_refused_with_the_reason() {
        let skip = Some(Action::SkipStep(v1::SkipStepAction {
            step_id: "a".into(),
        }));
        assert_eq!(
            parse(b"\xff\xff")
                .err()
                .map(|e| e.starts_with("not a SagaCommand")),
            Some(true)
        );
        assert_eq!(
            parse(&command(skip.clone(), " ", "why")).err().as_deref(),
            Some("actor is required: every operator action names who did it")
        );
        assert_eq!(
            parse(&command(skip, "op", "")).err().as_deref(),
            Some("a skip needs a reason")
        );
        assert_eq!(
            parse(&command(None, "op", "why")).err().as_deref(),
            Some("no action")
        );
        let retry = Some(Action::RetryStep(v1::RetryStepAction {
            step_id: String::new(),
        }));
        assert_eq!(
            parse(&command(retry, "op", "")).err().as_deref(),
            Some("step_id is required")
        );
        let mut bad = v1::SagaCommand::decode(command(None, "op", "").as_slice()).unwrap();
        bad.saga_id = "nope".into();
        assert!(
            parse(&bad.encode_to_vec())
                .err()
                .is_some_and(|e| e.starts_with("saga_id \"nope\" is not a UUID"))
        );
    }

    #[test]
    fn a_well_formed_retry_becomes_the_sagas_input() {
        let retry = Some(Action::RetryStep(v1::RetryStepAction {
            step_id: "premium".into(),
        }));
        let (saga, input) = parse(&command(retry, "an.peeters", "target back up")).unwrap();
        assert_eq!(saga, Uuid::nil());
        assert!(matches!(
            input,
            SagaInput::RetryStep { step_id, actor, reason }
                if step_id == "premium" && actor == "an.peeters" && reason == "target back up"
        ));
    }
}
