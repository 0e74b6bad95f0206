//! The orchestrator's metrics, read off the saga events it stores.
//!
//! After each stored decision, [`record`] counts what the events say: a saga started, a saga
//! ended (the first time its status turns terminal: completed, compensated, failed or
//! cancelled), a step's attempt finished (its duration from `StepScheduled` to the result's
//! event, both on the sagas' clock, so a restart in between still measures the real wait), a
//! retry, a failure. Each saga keeps one small array of "scheduled at" times per step
//! ([`StepClock`]), allocated once per saga, so the hot path adds no allocation beyond the
//! label lookup. [`sample_queues`] reads the handlers' work-queue backlogs every few seconds.

use levensloop_bus::{Bus, TASKS_PREFIX, TASKS_STREAM};
use levensloop_proto::v1::{self, saga_event::Event};
use levensloop_sagas::{LifeEventKind, SagaState, SagaStatus};
use levensloop_telemetry::metrics::{self, Value};
use std::borrow::Cow;
use std::time::Duration;

/// How often the work queues' backlogs are sampled.
pub const QUEUE_SAMPLE_INTERVAL: Duration = Duration::from_secs(5);

/// When each step's current attempt (and its compensation's) was scheduled, in milliseconds
/// on the sagas' clock; `UNSET` when it is not running.
#[derive(Debug, Clone, Default)]
pub struct StepClock {
    scheduled: Box<[i64]>,
}

const UNSET: i64 = i64::MIN;

impl StepClock {
    /// An empty clock for a saga's steps.
    pub fn new(state: &SagaState) -> Self {
        Self {
            scheduled: vec![UNSET; state.definition().steps().len() * 2].into_boxed_slice(),
        }
    }

    /// The clock of a saga loaded from the store: the attempts still running.
    pub fn rebuild(state: &SagaState, events: &[v1::SagaEvent]) -> Self {
        let mut clock = Self::new(state);
        for event in events {
            clock.note(state, event);
        }
        clock
    }

    fn slot(state: &SagaState, step_id: &str, compensation: bool) -> Option<usize> {
        let i = state
            .definition()
            .steps()
            .iter()
            .position(|s| s.id == step_id)?;
        Some(i * 2 + usize::from(compensation))
    }

    /// Notes a schedule; returns the time since the schedule of the attempt an event ends.
    fn note(&mut self, state: &SagaState, event: &v1::SagaEvent) -> Option<Duration> {
        let at = event
            .occurred_at
            .as_ref()
            .map(|t| t.seconds.saturating_mul(1000) + i64::from(t.nanos / 1_000_000))?;
        let (step_id, compensation, starts) = match event.event.as_ref()? {
            Event::StepScheduled(s) => (&s.step_id, false, true),
            Event::StepCompensationScheduled(s) => (&s.step_id, true, true),
            Event::StepSucceeded(s) => (&s.step_id, false, false),
            Event::StepFailed(s) => (&s.step_id, false, false),
            Event::StepTimedOut(s) => (&s.step_id, false, false),
            Event::HumanTaskCompleted(s) => (&s.step_id, false, false),
            Event::StepCompensated(s) => (&s.step_id, true, false),
            Event::CompensationFailed(s) => (&s.step_id, true, false),
            _ => return None,
        };
        let slot = self
            .scheduled
            .get_mut(Self::slot(state, step_id, compensation)?)?;
        if starts {
            *slot = at;
            return None;
        }
        let since = std::mem::replace(slot, UNSET);
        (since != UNSET).then(|| Duration::from_millis(u64::try_from(at - since).unwrap_or(0)))
    }
}

/// The `type` label of a saga: its life event's kind (`birth`, …).
pub fn saga_type(state: &SagaState) -> Value {
    let name = state.definition().name();
    match LifeEventKind::from_name(name) {
        Some(kind) => Cow::Borrowed(kind.name()),
        None => Cow::Owned(name.to_owned()),
    }
}

fn status_label(status: SagaStatus) -> Option<&'static str> {
    Some(match status {
        SagaStatus::Completed => "completed",
        SagaStatus::Compensated => "compensated",
        SagaStatus::Failed => "failed",
        SagaStatus::Cancelled => "cancelled",
        _ => return None,
    })
}

/// The handler of a step (or of its compensation).
fn handler_of<'a>(state: &'a SagaState, step_id: &str, compensation: bool) -> &'a str {
    let Some(step) = state.definition().step(step_id) else {
        return "unknown";
    };
    let handler = if compensation {
        step.compensation().map(|c| c.handler.as_str())
    } else {
        step.handler()
    };
    handler.unwrap_or("unknown")
}

/// Counts what one stored decision did. `state` has the events applied; `before` is the
/// saga's status before them (`NotStarted` for a new saga).
pub fn record(
    state: &SagaState,
    before: SagaStatus,
    clock: &mut StepClock,
    events: &[v1::SagaEvent],
) {
    let m = metrics::orchestrator();
    for event in events {
        let took = clock.note(state, event);
        match event.event.as_ref() {
            Some(Event::SagaStarted(_)) => m.saga_started(saga_type(state)),
            Some(Event::StepSucceeded(s)) => {
                if let Some(took) = took {
                    m.step_finished(handler_of(state, &s.step_id, false), took);
                }
            }
            Some(Event::HumanTaskCompleted(s)) => {
                if let Some(took) = took {
                    m.step_finished(handler_of(state, &s.step_id, false), took);
                }
            }
            Some(Event::StepFailed(s)) => {
                let handler = handler_of(state, &s.step_id, false);
                if let Some(took) = took {
                    m.step_finished(handler, took);
                }
                m.step_failed(
                    handler,
                    if s.retryable {
                        "retryable"
                    } else {
                        "permanent"
                    },
                );
            }
            Some(Event::StepTimedOut(s)) => {
                m.step_failed(handler_of(state, &s.step_id, false), "timeout");
            }
            Some(Event::StepRetryScheduled(s)) => {
                m.step_retry(handler_of(state, &s.step_id, false));
            }
            Some(Event::StepCompensated(s)) => {
                if let Some(took) = took {
                    m.step_finished(handler_of(state, &s.step_id, true), took);
                }
            }
            Some(Event::CompensationFailed(s)) => {
                m.step_failed(handler_of(state, &s.step_id, true), "permanent");
            }
            _ => {}
        }
    }
    let after = state.status();
    if !before.is_terminal()
        && let Some(status) = status_label(after)
    {
        m.saga_ended(saga_type(state), status);
    }
}

/// Samples every handler queue's backlog (tasks waiting, tasks delivered and unanswered)
/// from its work-queue consumer, every [`QUEUE_SAMPLE_INTERVAL`], until aborted.
pub async fn sample_queues(bus: Bus) {
    use futures::StreamExt;
    let mut tick = tokio::time::interval(QUEUE_SAMPLE_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let prefix = format!("{TASKS_PREFIX}.");
    loop {
        tick.tick().await;
        let stream = match bus.jetstream().get_stream(TASKS_STREAM).await {
            Ok(s) => s,
            Err(e) => {
                tracing::debug!(error = %e, "queue depths not sampled");
                continue;
            }
        };
        let mut consumers = stream.consumers();
        while let Some(info) = consumers.next().await {
            let info = match info {
                Ok(info) => info,
                Err(e) => {
                    tracing::debug!(error = %e, "queue depths not sampled");
                    break;
                }
            };
            if let Some(handler) = info.config.filter_subject.strip_prefix(&prefix) {
                metrics::orchestrator().queue(
                    handler,
                    info.num_pending,
                    info.num_ack_pending as u64,
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use levensloop_sagas::{Catalog, Command, Input, decide};
    use levensloop_telemetry::metrics::{Service, encode};

    /// The value of one sample of the orchestrator's metrics, 0 when absent.
    fn sample(series: &str) -> f64 {
        encode(&Service::Orchestrator.registry())
            .lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or(0.0)
    }

    fn completed(task: &v1::Task) -> v1::TaskResult {
        v1::TaskResult {
            task_id: task.task_id.clone(),
            idempotency_key: task.idempotency_key.clone(),
            attempt: task.attempt,
            outcome: Some(v1::task_result::Outcome::Completed(
                v1::TaskCompleted::default(),
            )),
        }
    }

    #[test]
    fn a_step_is_timed_from_its_schedule_to_its_result_on_the_sagas_clock() {
        let catalog = Catalog::builtin().unwrap();
        let event = levensloop_gateway::corpus::valid_driving_exam();
        let definition = catalog
            .for_kind(LifeEventKind::of(&event).unwrap())
            .unwrap();
        let t0 = chrono::Utc::now();
        let (mut state, decision) =
            Catalog::start_under(definition, &event, Default::default(), t0).unwrap();
        let started = sample("levensloop_sagas_started_total{type=\"driving-exam-passed\"}");
        for e in &decision.events {
            state.apply(e);
        }
        let mut clock = StepClock::new(&state);
        record(&state, SagaStatus::NotStarted, &mut clock, &decision.events);
        assert_eq!(
            sample("levensloop_sagas_started_total{type=\"driving-exam-passed\"}"),
            started + 1.0
        );

        let task = decision
            .commands
            .iter()
            .find_map(|c| match c {
                Command::DispatchTask(t) => Some(t.clone()),
                _ => None,
            })
            .unwrap();
        let series = format!(
            "levensloop_step_duration_seconds_sum{{handler=\"{}\"}}",
            task.handler
        );
        let count = series.replace("_sum", "_count");
        let (sum_before, count_before) = (sample(&series), sample(&count));
        // The answer comes 2.5 s later on the sagas' clock.
        let answer = decide(
            &state,
            Input::TaskResult {
                result: completed(&task),
                now: t0 + chrono::Duration::milliseconds(2_500),
                jitter: 0.0,
            },
        )
        .unwrap();
        let before = state.status();
        for e in &answer.events {
            state.apply(e);
        }
        record(&state, before, &mut clock, &answer.events);
        assert_eq!(sample(&count), count_before + 1.0);
        assert!((sample(&series) - sum_before - 2.5).abs() < 1e-6);

        // A saga loaded from the store has nothing running for that step any more: a late
        // duplicate of the answer is not timed again.
        let events: Vec<v1::SagaEvent> = decision
            .events
            .iter()
            .chain(&answer.events)
            .cloned()
            .collect();
        let mut rebuilt = StepClock::rebuild(&state, &events);
        let duplicate = v1::SagaEvent {
            occurred_at: answer.events[0].occurred_at,
            event: answer.events[0].event.clone(),
            ..v1::SagaEvent::default()
        };
        assert_eq!(rebuilt.note(&state, &duplicate), None);
    }
}
