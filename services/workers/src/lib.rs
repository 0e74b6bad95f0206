//! The built-in workers: simulated target systems for the demo, the tests and the benchmark.
//!
//! Each handler named in the saga definitions (the municipal birth premium, DIFTAR, the
//! Kruispuntbank Rijbewijzen, …) gets a worker that takes tasks from the handler's shared
//! work queue on the bus ([`levensloop_bus`]), pretends to be the target system, and answers
//! on the results stream:
//!
//! - **Limits.** The queue's in-flight limit (the server's `max_ack_pending`, across every
//!   worker) and the handler's rate limit (a [`levensloop_bus::RateGate`] shared by every
//!   process) come from the catalog, so several worker processes on one handler together
//!   never exceed what the target system accepts.
//! - **Behaviour.** Latency (base plus jitter) and transient / permanent failure rates, set
//!   globally and per handler ([`sim`]).
//! - **Once-only effects.** An idempotency [`ledger`] records each effect once per
//!   idempotency key however often the task arrives, answers repeats with the recorded
//!   outcome, and can be queried to count effects.
//! - **Robustness.** A malformed task message is recorded and acknowledged with `Term`; a
//!   task is acknowledged only after its result is published, so a worker that dies mid-task
//!   has it redelivered.
//!
//! [`Workers::start`] runs them in a process; the `levensloop-workers` binary is a thin CLI
//! around it.

pub mod ledger;
pub mod sim;
pub mod worker;

use levensloop_bus::{Bus, BusError, QueueLimits, check_handler};
use levensloop_sagas::{Catalog, StepKind};
use rand::SeedableRng;
use rand::rngs::StdRng;
use sim::{Behaviour, HandlerOverrides, HandlerSpec};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};
use tokio::sync::{broadcast, watch};
use tokio::task::JoinHandle;

pub use ledger::{Effect, LEDGER_BUCKET, Ledger, LedgerError, MalformedTask, Recorded};
pub use worker::{case_number, error_codes};

/// What went wrong starting the workers.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error(transparent)]
    Bus(#[from] BusError),
    #[error(transparent)]
    Ledger(#[from] LedgerError),
    #[error("invalid worker configuration: {0}")]
    Config(String),
}

/// Every handler of the catalog that built-in workers serve: the task steps' handlers and
/// their compensations' (not human work lists, and not the orchestrator's own
/// settle-other-sagas step).
pub fn builtin_handlers(catalog: &Catalog) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for definition in catalog.definitions() {
        for step in definition.steps() {
            if let StepKind::Task {
                handler,
                compensation,
            } = &step.kind
            {
                out.insert(handler.clone());
                if let Some(c) = compensation {
                    out.insert(c.handler.clone());
                }
            }
        }
    }
    out
}

/// The human work lists of the catalog (a police officer's finding, a counter clerk's
/// hand-over): served only by a simulated clerk ([`WorkersConfig::clerk`]).
pub fn human_handlers(catalog: &Catalog) -> BTreeSet<String> {
    catalog
        .definitions()
        .flat_map(|d| d.steps())
        .filter_map(|s| match &s.kind {
            StepKind::Human { handler, .. } => Some(handler.clone()),
            _ => None,
        })
        .collect()
}

/// How the workers of one process run.
#[derive(Debug, Clone)]
pub struct WorkersConfig {
    /// The handlers to serve; empty: every one of [`builtin_handlers`] (and of
    /// [`human_handlers`] with `clerk`).
    pub handlers: Vec<String>,
    /// Also stand in for the people behind the human work lists, answering each task
    /// positively (the police finds the person at the new address, the licence is
    /// collected) with the configured latency and failure rates. For demos, tests and the
    /// benchmark: in production a person answers.
    pub clerk: bool,
    /// The behaviour of every simulated target system.
    pub behaviour: Behaviour,
    /// Per-handler departures from `behaviour` and from the catalog's limits.
    pub overrides: BTreeMap<String, HandlerOverrides>,
    /// How long a worker may hold a task before it goes to another worker. The orchestrator
    /// ensures the same queues: keep both at [`QueueLimits::default`] outside tests.
    pub ack_wait: Duration,
    /// Apply the catalog's rate limits (off for a benchmark of the platform itself).
    pub rate_limits: bool,
    /// Tasks this process works on at once per handler; default: the handler's in-flight
    /// limit.
    pub concurrency: Option<usize>,
    /// This process's name in the ledger and the logs.
    pub instance: String,
    /// Seeds the simulated latencies and failures (reproducible runs).
    pub seed: Option<u64>,
    /// How long one pull waits for tasks; also the longest a graceful stop waits for it.
    pub fetch_expiry: Duration,
}

impl Default for WorkersConfig {
    fn default() -> Self {
        Self {
            handlers: Vec::new(),
            clerk: false,
            behaviour: Behaviour::default(),
            overrides: BTreeMap::new(),
            ack_wait: QueueLimits::default().ack_wait,
            rate_limits: true,
            concurrency: None,
            instance: format!("worker-{}", std::process::id()),
            seed: None,
            fetch_expiry: Duration::from_secs(1),
        }
    }
}

impl WorkersConfig {
    /// Adds per-handler specs; later specs for a handler override earlier ones.
    pub fn with_specs(mut self, specs: impl IntoIterator<Item = HandlerSpec>) -> Self {
        for spec in specs {
            self.overrides
                .entry(spec.handler)
                .or_default()
                .merge(&spec.overrides);
        }
        self
    }
}

/// How a task ended for the worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    Completed,
    FailedTransient,
    FailedPermanent,
}

impl Outcome {
    /// The `outcome` label of `levensloop_worker_tasks_total`.
    pub fn label(self) -> &'static str {
        match self {
            Self::Completed => "completed",
            Self::FailedTransient => "failed_transient",
            Self::FailedPermanent => "failed_permanent",
        }
    }
}

/// What the workers do, for tests and the demo to await (instead of sleeping) and measure.
#[derive(Debug, Clone)]
pub enum WorkerEvent {
    /// The simulated target is being called (after the rate slot, if any).
    Calling {
        handler: String,
        task_id: String,
        idempotency_key: String,
        /// The reserved rate slot.
        slot: Option<SystemTime>,
        at: SystemTime,
        instant: Instant,
    },
    /// The effect was recorded, the first time for its key.
    EffectRecorded {
        handler: String,
        task_id: String,
        idempotency_key: String,
    },
    /// The result is published; the task is acknowledged right after.
    Answered {
        handler: String,
        task_id: String,
        idempotency_key: String,
        outcome: Outcome,
        /// Answered from the ledger: the effect had happened before.
        replayed: bool,
        instant: Instant,
    },
    /// A message that is not a usable task was recorded and terminated.
    Malformed {
        handler: String,
        task_id: Option<String>,
        reason: String,
    },
}

/// Counters of one process's workers.
#[derive(Debug, Default)]
pub struct Stats {
    completed: AtomicU64,
    replayed: AtomicU64,
    failed_transient: AtomicU64,
    failed_permanent: AtomicU64,
    malformed: AtomicU64,
    effects: AtomicU64,
}

/// A reading of [`Stats`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StatsSnapshot {
    /// Tasks answered as completed, replays included.
    pub completed: u64,
    /// Of those, answered from the ledger.
    pub replayed: u64,
    pub failed_transient: u64,
    pub failed_permanent: u64,
    pub malformed: u64,
    /// Effects this process recorded first.
    pub effects: u64,
}

impl Stats {
    fn answered(&self, outcome: Outcome, replayed: bool) {
        let counter = match outcome {
            Outcome::Completed => &self.completed,
            Outcome::FailedTransient => &self.failed_transient,
            Outcome::FailedPermanent => &self.failed_permanent,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        if replayed {
            self.replayed.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn malformed(&self) {
        self.malformed.fetch_add(1, Ordering::Relaxed);
    }

    fn effect(&self) {
        self.effects.fetch_add(1, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> StatsSnapshot {
        StatsSnapshot {
            completed: self.completed.load(Ordering::Relaxed),
            replayed: self.replayed.load(Ordering::Relaxed),
            failed_transient: self.failed_transient.load(Ordering::Relaxed),
            failed_permanent: self.failed_permanent.load(Ordering::Relaxed),
            malformed: self.malformed.load(Ordering::Relaxed),
            effects: self.effects.load(Ordering::Relaxed),
        }
    }
}

/// How one handler is served, after the catalog and the overrides.
#[derive(Debug, Clone, PartialEq)]
pub struct HandlerPlan {
    pub handler: String,
    pub behaviour: Behaviour,
    pub limits: QueueLimits,
    /// Calls per second across every process; `None`: unlimited.
    pub rate_per_second: Option<f64>,
    pub concurrency: usize,
}

/// Works out how each handler is served.
pub fn plan(catalog: &Catalog, config: &WorkersConfig) -> Result<Vec<HandlerPlan>, WorkerError> {
    config.behaviour.check().map_err(WorkerError::Config)?;
    let handlers: BTreeSet<String> = if config.handlers.is_empty() {
        let mut all = builtin_handlers(catalog);
        if config.clerk {
            all.extend(human_handlers(catalog));
        }
        all
    } else {
        config.handlers.iter().cloned().collect()
    };
    if handlers.is_empty() {
        return Err(WorkerError::Config("no handlers to serve".into()));
    }
    if let Some(unknown) = config.overrides.keys().find(|h| !handlers.contains(*h)) {
        return Err(WorkerError::Config(format!(
            "--handler-config for {unknown}, which this process does not serve"
        )));
    }
    let mut out = Vec::new();
    for handler in handlers {
        check_handler(&handler)?;
        let overrides = config.overrides.get(&handler).cloned().unwrap_or_default();
        let declared = catalog.handler_limits(&handler).unwrap_or_default();
        let behaviour = overrides.apply(config.behaviour);
        behaviour
            .check()
            .map_err(|e| WorkerError::Config(format!("{handler}: {e}")))?;
        let max_in_flight = overrides
            .max_in_flight
            .or(declared.max_in_flight)
            .unwrap_or(QueueLimits::default().max_in_flight)
            .max(1);
        let rate_per_second = match overrides.rate_per_second {
            Some(r) => Some(r),
            None if config.rate_limits => declared.max_rate_per_second,
            None => None,
        }
        .filter(|r| *r > 0.0);
        let concurrency = overrides
            .concurrency
            .or(config.concurrency)
            .unwrap_or(max_in_flight as usize)
            .clamp(1, 1024);
        out.push(HandlerPlan {
            handler,
            behaviour,
            limits: QueueLimits {
                max_in_flight,
                ack_wait: config.ack_wait,
            },
            rate_per_second,
            concurrency,
        });
    }
    Ok(out)
}

/// The running workers of one process. Dropping it stops them as [`Workers::shutdown`] does,
/// without waiting.
#[derive(Debug)]
pub struct Workers {
    plans: Vec<HandlerPlan>,
    ledger: Ledger,
    events: broadcast::Sender<WorkerEvent>,
    stats: Arc<Stats>,
    stop: watch::Sender<bool>,
    runners: Vec<JoinHandle<()>>,
}

impl Workers {
    /// Connects to NATS and starts serving.
    pub async fn connect(
        nats_url: &str,
        replicas: usize,
        catalog: &Catalog,
        config: WorkersConfig,
    ) -> Result<Self, WorkerError> {
        let bus = Bus::connect(nats_url, replicas).await?;
        Self::start(bus, catalog, config).await
    }

    /// Ensures each handler's queue with its limits, and starts a worker per handler.
    pub async fn start(
        bus: Bus,
        catalog: &Catalog,
        config: WorkersConfig,
    ) -> Result<Self, WorkerError> {
        let plans = plan(catalog, &config)?;
        let ledger = Ledger::open(bus.client().clone(), bus.replicas()).await?;
        let (events, _) = broadcast::channel(16_384);
        let stats = Arc::new(Stats::default());
        let (stop, stop_rx) = watch::channel(false);
        let base_seed = config.seed.unwrap_or_else(|| {
            let now = SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .unwrap_or_default();
            now.as_nanos() as u64 ^ u64::from(std::process::id()).rotate_left(32)
        });
        let mut runners = Vec::new();
        for (i, plan) in plans.iter().enumerate() {
            let consumer = bus.handler_queue(&plan.handler, plan.limits).await?;
            let gate = match plan.rate_per_second {
                Some(rate) => Some(bus.rate_gate(&plan.handler, rate).await?),
                None => None,
            };
            let worker = Arc::new(worker::HandlerWorker {
                handler: plan.handler.clone(),
                bus: bus.clone(),
                consumer,
                ledger: ledger.clone(),
                gate,
                behaviour: plan.behaviour,
                concurrency: plan.concurrency,
                ack_wait: plan.limits.ack_wait,
                fetch_expiry: config.fetch_expiry,
                instance: config.instance.clone(),
                events: events.clone(),
                stats: stats.clone(),
                rng: std::sync::Mutex::new(StdRng::seed_from_u64(
                    base_seed.wrapping_add((i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)),
                )),
            });
            runners.push(tokio::spawn(worker.run(stop_rx.clone())));
        }
        tracing::info!(
            instance = %config.instance,
            handlers = plans.len(),
            "workers started"
        );
        Ok(Self {
            plans,
            ledger,
            events,
            stats,
            stop,
            runners,
        })
    }

    /// How each handler is served.
    pub fn plans(&self) -> &[HandlerPlan] {
        &self.plans
    }

    /// The ledger the workers record effects in.
    pub fn ledger(&self) -> &Ledger {
        &self.ledger
    }

    /// What the workers do from now on.
    pub fn events(&self) -> broadcast::Receiver<WorkerEvent> {
        self.events.subscribe()
    }

    pub fn stats(&self) -> StatsSnapshot {
        self.stats.snapshot()
    }

    /// Stops pulling, finishes the pulls under way and every task in progress (each gets
    /// its result published and is acknowledged), then returns.
    pub async fn shutdown(self) -> StatsSnapshot {
        let _ = self.stop.send(true);
        for runner in self.runners {
            let _ = runner.await;
        }
        self.stats.snapshot()
    }

    /// Stops at once, like a killed process: tasks in progress are dropped without a
    /// result or an acknowledgement (the queue delivers them again after the ack wait).
    pub fn crash(self) {
        for runner in &self.runners {
            runner.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_handlers_are_the_task_and_compensation_handlers() {
        let catalog = Catalog::builtin().unwrap();
        let handlers = builtin_handlers(&catalog);
        assert!(handlers.contains("gemeente.geboortepremie"));
        assert!(handlers.contains("gemeente.geboortepremie.recover"));
        assert!(handlers.contains("kaartproducent.production-order"));
        // A human work list and the orchestrator's own step are not simulated.
        assert!(!handlers.contains("gemeente.bevolking.woonstvaststelling"));
        let settle: Vec<_> = catalog
            .definitions()
            .flat_map(|d| d.steps())
            .filter_map(|s| match &s.kind {
                StepKind::SettleOtherSagas { handler } | StepKind::Human { handler, .. } => {
                    Some(handler.clone())
                }
                _ => None,
            })
            .collect();
        assert!(!settle.is_empty());
        for h in settle {
            assert!(!handlers.contains(&h), "{h}");
        }
        for h in &handlers {
            check_handler(h).unwrap();
        }
    }

    #[test]
    fn a_clerk_also_serves_the_human_work_lists() {
        let catalog = Catalog::builtin().unwrap();
        let humans = human_handlers(&catalog);
        assert!(humans.contains("gemeente.bevolking.woonstvaststelling"));
        assert!(humans.contains("gemeente.balie.rijbewijs-uitreiking"));
        let served = |clerk| -> BTreeSet<String> {
            let config = WorkersConfig {
                clerk,
                ..WorkersConfig::default()
            };
            plan(&catalog, &config)
                .unwrap()
                .into_iter()
                .map(|p| p.handler)
                .collect()
        };
        assert!(served(false).is_disjoint(&humans));
        assert!(served(true).is_superset(&humans));
        assert_eq!(served(true).len(), served(false).len() + humans.len());
    }

    #[test]
    fn plans_take_the_catalog_limits_unless_overridden() {
        let catalog = Catalog::builtin().unwrap();
        let config = WorkersConfig::default().with_specs([
            "diftar.close-account:rate=off,in_flight=3".parse().unwrap(),
            "gemeente.geboortepremie:permanent=1".parse().unwrap(),
        ]);
        let plans = plan(&catalog, &config).unwrap();
        let get = |h: &str| plans.iter().find(|p| p.handler == h).unwrap();
        let premium = get("gemeente.geboortepremie");
        assert_eq!(premium.rate_per_second, Some(5.0));
        assert_eq!(premium.limits.max_in_flight, 10);
        assert_eq!(premium.concurrency, 10);
        assert_eq!(premium.behaviour.permanent_rate, 1.0);
        let diftar = get("diftar.close-account");
        assert_eq!(diftar.rate_per_second, None);
        assert_eq!(diftar.limits.max_in_flight, 3);

        let unlimited = WorkersConfig {
            rate_limits: false,
            ..WorkersConfig::default()
        };
        assert!(
            plan(&catalog, &unlimited)
                .unwrap()
                .iter()
                .all(|p| p.rate_per_second.is_none())
        );

        let typo = WorkersConfig {
            handlers: vec!["a.b".into()],
            ..WorkersConfig::default()
        }
        .with_specs(["a.c:latency_ms=1".parse().unwrap()]);
        assert!(matches!(plan(&catalog, &typo), Err(WorkerError::Config(_))));
    }

    #[test]
    fn case_numbers_are_stable_per_key() {
        let a = case_number("gemeente.geboortepremie", "s/municipal-birth-premium");
        assert_eq!(
            a,
            case_number("gemeente.geboortepremie", "s/municipal-birth-premium")
        );
        assert!(a.starts_with("GEMEENTE-"), "{a}");
        assert_eq!(a.len(), "GEMEENTE-".len() + 10);
        assert_ne!(
            a,
            case_number("gemeente.geboortepremie", "t/municipal-birth-premium")
        );
    }
}
