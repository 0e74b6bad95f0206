//! Levensloop's sagas: what each life event sets in motion, and the engine that runs it.
//!
//! - [`definition`]: saga definitions as data, one TOML file per life event under
//!   `sagas/definitions/`: steps with their target-system handler, needs (a DAG),
//!   conditions, retries, timeouts, entitled fields, compensations, waits, human steps, and
//!   each target system's limits. The loader refuses a bad file with a typed
//!   [`DefinitionError`].
//! - [`catalog`]: the definitions by name and version (a running saga keeps its version),
//!   with the four shipped ones embedded.
//! - [`engine`]: the pure, deterministic saga engine: [`decide`]`(state, input)` → events
//!   and commands, [`evolve`]`(state, event)` → state. No I/O, no clock, no randomness: time
//!   and jitter are inputs, ids are UUID v5.
//! - [`fields`]: the life-event field paths definitions may name, and the flattening of a
//!   [`levensloop_proto::v1::LifeEvent`] into them.
//! - [`registry`]: handlers integrators register at run time, checked against the catalog,
//!   and the definitions that include them as steps.
//! - [`condition`], [`time`]: conditions on event data; calendar-aware durations.
//!
//! An orchestrator's loop, in short:
//!
//! ```no_run
//! # use levensloop_sagas::*;
//! # fn store(_: &[levensloop_proto::v1::SagaEvent]) {}
//! # fn run(_: &[Command]) {}
//! # fn demo(catalog: &Catalog, event: &levensloop_proto::v1::LifeEvent, now: chrono::DateTime<chrono::Utc>) -> Result<(), EngineError> {
//! let (mut state, decision) = catalog.start(event, Default::default(), now)?;
//! store(&decision.events);                       // append, "stream must not exist"
//! for e in &decision.events { state.apply(e); }
//! run(&decision.commands);                       // dispatch tasks, arm timers
//! // … later, for each task result, timer or operator action:
//! // let decision = decide(&state, Input::TaskResult { result, now, jitter })?;
//! // after a crash: let state = catalog.rebuild(event, &stored_events)?;
//! //                run(&state.pending_work()); re-arm state.timers()
//! # Ok(()) }
//! ```

pub mod catalog;
pub mod condition;
pub mod definition;
pub mod engine;
pub mod fields;
pub mod registry;
pub mod time;

pub use catalog::{BUILTIN, Catalog};
pub use condition::Condition;
pub use definition::{
    Compensation, Definition, DefinitionError, HandlerLimits, OnDeath, OnTimeout, RetryPolicy,
    Step, StepKind, Wait,
};
pub use engine::{
    Command, Decision, ENGINE_ACTOR, EngineError, Ignored, Input, NoSaga, SagaState, SagaStatus,
    StepPhase, StepState, Timer, TimerKind, decide, evolve, idempotency_key, rebuild, starts_saga,
    task_id,
};
pub use fields::{EventData, LifeEventKind, event_data};
pub use registry::{RegistrationError, Registry};
pub use time::Span;
