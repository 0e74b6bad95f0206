//! Prometheus metrics: each service's typed metric families, and the `/metrics` endpoint that
//! serves them in the OpenMetrics text format.
//!
//! Every name starts with `levensloop_`; counters end in `_total`, durations are histograms in
//! seconds. The families are process-wide ([`gateway`], [`orchestrator`], [`workers`],
//! [`handlers`], [`store`]): a service records into them with one label lookup (the family's
//! shared read lock; no allocation for static label values, one for a handler's name), and
//! [`serve`] exposes those of one [`Service`].
//!
//! | metric | labels | service |
//! | --- | --- | --- |
//! | `levensloop_build_info` | `service`, `version` | all |
//! | `levensloop_life_events_accepted_total` | `type`, `door` | gateway |
//! | `levensloop_life_events_duplicate_total` | `type`, `door` | gateway |
//! | `levensloop_inputs_rejected_total` | `reason`, `door` | gateway |
//! | `levensloop_store_append_duration_seconds` | `category` | gateway, orchestrator |
//! | `levensloop_sagas_started_total` | `type` | orchestrator |
//! | `levensloop_sagas_ended_total` | `type`, `status` | orchestrator |
//! | `levensloop_step_duration_seconds` | `handler` | orchestrator |
//! | `levensloop_step_retries_total` | `handler` | orchestrator |
//! | `levensloop_step_failures_total` | `handler`, `kind` | orchestrator |
//! | `levensloop_queue_depth` | `handler` | orchestrator |
//! | `levensloop_queue_in_flight` | `handler` | orchestrator |
//! | `levensloop_worker_tasks_total` | `handler`, `outcome` | workers |
//! | `levensloop_worker_effects_recorded_total` | `handler` | workers |
//! | `levensloop_worker_effects_duplicate_total` | `handler` | workers |
//! | `levensloop_handler_tasks_delivered_total` | `handler`, `via`, `outcome` | handlers |
//! | `levensloop_handler_workers_connected` | `handler` | handlers |
//! | `levensloop_readmodel_commits_applied_total` | | operations |
//! | `levensloop_readmodel_batch_duration_seconds` | | operations |
//! | `levensloop_readmodel_lag_commits` | | operations |
//! | `levensloop_operator_actions_total` | `action`, `outcome` | operations |

use axum::Router;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::{Family, MetricConstructor};
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::{Registry, Unit};
use std::borrow::Cow;
use std::net::SocketAddr;
use std::sync::{Arc, LazyLock};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// The content type of the OpenMetrics text format.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
/// The prefix of every metric name.
pub const PREFIX: &str = "levensloop";

/// A label value: static for the known values (types, statuses, reason codes), owned for
/// names that come from data (handlers of integrators' registrations).
pub type Value = Cow<'static, str>;

// ---------------------------------------------------------------------------------------------
// Label sets
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TypeDoor {
    pub r#type: &'static str,
    pub door: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonDoor {
    pub reason: &'static str,
    pub door: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Category {
    pub category: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SagaType {
    pub r#type: Value,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SagaEnd {
    pub r#type: Value,
    pub status: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HandlerLabel {
    pub handler: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HandlerKind {
    pub handler: String,
    pub kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HandlerOutcome {
    pub handler: String,
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Delivery {
    pub handler: String,
    pub via: &'static str,
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ActionOutcome {
    pub action: &'static str,
    pub outcome: &'static str,
}

/// Builds histograms with fixed buckets (a family needs a constructor, not a closure type).
#[derive(Clone, Copy, Debug)]
pub struct Buckets {
    start: f64,
    factor: f64,
    count: u16,
}

impl MetricConstructor<Histogram> for Buckets {
    fn new_metric(&self) -> Histogram {
        Histogram::new(exponential_buckets(self.start, self.factor, self.count))
    }
}

/// Step durations: 5 ms to about 80 s (a simulated call takes tens of milliseconds, a
/// webhook up to its timeout); a person's work list lands in `+Inf`.
pub const STEP_BUCKETS: Buckets = Buckets {
    start: 0.005,
    factor: 2.0,
    count: 15,
};
/// Store appends: 100 µs to about 1.6 s.
pub const APPEND_BUCKETS: Buckets = Buckets {
    start: 0.0001,
    factor: 2.0,
    count: 15,
};

// ---------------------------------------------------------------------------------------------
// The services' families
// ---------------------------------------------------------------------------------------------

/// The event store, as seen by its writers (gateway, orchestrator).
#[derive(Debug)]
pub struct StoreMetrics {
    pub append_duration: Family<Category, Histogram, Buckets>,
}

impl StoreMetrics {
    fn new() -> Self {
        Self {
            append_duration: Family::new_with_constructor(APPEND_BUCKETS),
        }
    }

    fn register(&self, registry: &mut Registry) {
        registry.register_with_unit(
            "store_append_duration",
            "Time until the event store acknowledged an append, by stream category",
            Unit::Seconds,
            self.append_duration.clone(),
        );
    }

    /// One append to a stream of `category` (`lifeevent`, `person`, `saga`, …) took `took`.
    pub fn append(&self, category: &'static str, took: Duration) {
        self.append_duration
            .get_or_create(&Category { category })
            .observe(took.as_secs_f64());
    }
}

/// The ingest gateway.
#[derive(Debug)]
pub struct GatewayMetrics {
    pub accepted: Family<TypeDoor, Counter>,
    pub duplicates: Family<TypeDoor, Counter>,
    pub rejected: Family<ReasonDoor, Counter>,
}

impl GatewayMetrics {
    fn new() -> Self {
        Self {
            accepted: Family::default(),
            duplicates: Family::default(),
            rejected: Family::default(),
        }
    }

    fn register(&self, registry: &mut Registry) {
        registry.register(
            "life_events_accepted",
            "Life events stored for the first time, by type (birth, death, change-of-address, driving-exam-passed) and door (grpc, nats)",
            self.accepted.clone(),
        );
        registry.register(
            "life_events_duplicate",
            "Life events sent again and recognised as stored before, by type and door",
            self.duplicates.clone(),
        );
        registry.register(
            "inputs_rejected",
            "Inputs refused, by reason code (INSZ_CHECK_DIGITS, …) and door",
            self.rejected.clone(),
        );
    }

    /// A life event was stored (`duplicate`: it had been before).
    pub fn accepted(&self, r#type: &'static str, door: &'static str, duplicate: bool) {
        let family = if duplicate {
            &self.duplicates
        } else {
            &self.accepted
        };
        family.get_or_create(&TypeDoor { r#type, door }).inc();
    }

    /// An input was refused for `reason` (its code).
    pub fn rejected(&self, reason: &'static str, door: &'static str) {
        self.rejected
            .get_or_create(&ReasonDoor { reason, door })
            .inc();
    }
}

/// The orchestrator.
#[derive(Debug)]
pub struct OrchestratorMetrics {
    pub sagas_started: Family<SagaType, Counter>,
    pub sagas_ended: Family<SagaEnd, Counter>,
    pub step_duration: Family<HandlerLabel, Histogram, Buckets>,
    pub step_retries: Family<HandlerLabel, Counter>,
    pub step_failures: Family<HandlerKind, Counter>,
    pub queue_depth: Family<HandlerLabel, Gauge>,
    pub queue_in_flight: Family<HandlerLabel, Gauge>,
}

impl OrchestratorMetrics {
    fn new() -> Self {
        Self {
            sagas_started: Family::default(),
            sagas_ended: Family::default(),
            step_duration: Family::new_with_constructor(STEP_BUCKETS),
            step_retries: Family::default(),
            step_failures: Family::default(),
            queue_depth: Family::default(),
            queue_in_flight: Family::default(),
        }
    }

    fn register(&self, registry: &mut Registry) {
        registry.register(
            "sagas_started",
            "Sagas started, by type (the life event's)",
            self.sagas_started.clone(),
        );
        registry.register(
            "sagas_ended",
            "Sagas ended, by type and status (completed, compensated, failed, cancelled)",
            self.sagas_ended.clone(),
        );
        registry.register_with_unit(
            "step_duration",
            "Time from a step's task being scheduled to its result being stored, by handler",
            Unit::Seconds,
            self.step_duration.clone(),
        );
        registry.register(
            "step_retries",
            "Step retries scheduled after a retryable failure or a timeout, by handler",
            self.step_retries.clone(),
        );
        registry.register(
            "step_failures",
            "Step attempts that failed, by handler and kind (retryable, permanent, timeout)",
            self.step_failures.clone(),
        );
        registry.register(
            "queue_depth",
            "Tasks waiting in a handler's work queue, not yet delivered (sampled)",
            self.queue_depth.clone(),
        );
        registry.register(
            "queue_in_flight",
            "Tasks delivered to a handler's workers and not yet answered (sampled)",
            self.queue_in_flight.clone(),
        );
    }

    pub fn saga_started(&self, r#type: Value) {
        self.sagas_started.get_or_create(&SagaType { r#type }).inc();
    }

    pub fn saga_ended(&self, r#type: Value, status: &'static str) {
        self.sagas_ended
            .get_or_create(&SagaEnd { r#type, status })
            .inc();
    }

    pub fn step_finished(&self, handler: &str, took: Duration) {
        self.step_duration
            .get_or_create(&HandlerLabel {
                handler: handler.to_owned(),
            })
            .observe(took.as_secs_f64());
    }

    pub fn step_retry(&self, handler: &str) {
        self.step_retries
            .get_or_create(&HandlerLabel {
                handler: handler.to_owned(),
            })
            .inc();
    }

    pub fn step_failed(&self, handler: &str, kind: &'static str) {
        self.step_failures
            .get_or_create(&HandlerKind {
                handler: handler.to_owned(),
                kind,
            })
            .inc();
    }

    /// A handler queue's sampled backlog.
    pub fn queue(&self, handler: &str, waiting: u64, in_flight: u64) {
        let label = HandlerLabel {
            handler: handler.to_owned(),
        };
        self.queue_depth
            .get_or_create(&label)
            .set(i64::try_from(waiting).unwrap_or(i64::MAX));
        self.queue_in_flight
            .get_or_create(&label)
            .set(i64::try_from(in_flight).unwrap_or(i64::MAX));
    }
}

/// The built-in workers.
#[derive(Debug)]
pub struct WorkerMetrics {
    pub tasks: Family<HandlerOutcome, Counter>,
    pub effects_recorded: Family<HandlerLabel, Counter>,
    pub effects_duplicate: Family<HandlerLabel, Counter>,
}

impl WorkerMetrics {
    fn new() -> Self {
        Self {
            tasks: Family::default(),
            effects_recorded: Family::default(),
            effects_duplicate: Family::default(),
        }
    }

    fn register(&self, registry: &mut Registry) {
        registry.register(
            "worker_tasks",
            "Tasks answered, by handler and outcome (completed, failed_transient, failed_permanent, malformed)",
            self.tasks.clone(),
        );
        registry.register(
            "worker_effects_recorded",
            "Effects recorded in the idempotency ledger for the first time, by handler",
            self.effects_recorded.clone(),
        );
        registry.register(
            "worker_effects_duplicate",
            "Tasks whose effect had happened before, answered from the ledger, by handler",
            self.effects_duplicate.clone(),
        );
    }

    pub fn task(&self, handler: &str, outcome: &'static str) {
        self.tasks
            .get_or_create(&HandlerOutcome {
                handler: handler.to_owned(),
                outcome,
            })
            .inc();
    }

    pub fn effect(&self, handler: &str, first: bool) {
        let family = if first {
            &self.effects_recorded
        } else {
            &self.effects_duplicate
        };
        family
            .get_or_create(&HandlerLabel {
                handler: handler.to_owned(),
            })
            .inc();
    }
}

/// The handlers service (integrators' Work streams and webhooks).
#[derive(Debug)]
pub struct HandlersMetrics {
    pub delivered: Family<Delivery, Counter>,
    pub workers_connected: Family<HandlerLabel, Gauge>,
}

impl HandlersMetrics {
    fn new() -> Self {
        Self {
            delivered: Family::default(),
            workers_connected: Family::default(),
        }
    }

    fn register(&self, registry: &mut Registry) {
        registry.register(
            "handler_tasks_delivered",
            "Tasks delivered to integrators, by handler, way (work, webhook) and outcome (completed, failed_retryable, failed_permanent, handed_back, ignored)",
            self.delivered.clone(),
        );
        registry.register(
            "handler_workers_connected",
            "Integrators' workers connected over Work streams, by handler",
            self.workers_connected.clone(),
        );
    }

    pub fn delivered(&self, handler: &str, via: &'static str, outcome: &'static str) {
        self.delivered
            .get_or_create(&Delivery {
                handler: handler.to_owned(),
                via,
                outcome,
            })
            .inc();
    }

    /// A worker connected (`+1`) or went away (`-1`).
    pub fn worker_connected(&self, handler: &str, delta: i64) {
        self.workers_connected
            .get_or_create(&HandlerLabel {
                handler: handler.to_owned(),
            })
            .inc_by(delta);
    }
}

/// The operations service: its read model's projection and the operators' actions.
#[derive(Debug)]
pub struct OperationsMetrics {
    pub commits_applied: Counter,
    pub batch_duration: Histogram,
    pub lag: Gauge,
    pub actions: Family<ActionOutcome, Counter>,
}

impl OperationsMetrics {
    fn new() -> Self {
        Self {
            commits_applied: Counter::default(),
            batch_duration: APPEND_BUCKETS.new_metric(),
            lag: Gauge::default(),
            actions: Family::default(),
        }
    }

    fn register(&self, registry: &mut Registry) {
        registry.register(
            "readmodel_commits_applied",
            "Saga commits applied to the operators' read model",
            self.commits_applied.clone(),
        );
        registry.register_with_unit(
            "readmodel_batch_duration",
            "Time to apply one batch of commits to the read model (one transaction)",
            Unit::Seconds,
            self.batch_duration.clone(),
        );
        registry.register(
            "readmodel_lag_commits",
            "Saga commits stored but not yet in the read model, as of the last batch",
            self.lag.clone(),
        );
        registry.register(
            "operator_actions",
            "Operators' actions, by action (retry-step, skip-step, cancel) and outcome (applied, invalid, not_found, not_allowed, unavailable, denied)",
            self.actions.clone(),
        );
    }

    /// A batch of `commits` applied in `took`, with `pending` commits still to come.
    pub fn batch(&self, commits: usize, took: Duration, pending: u64) {
        self.commits_applied.inc_by(commits as u64);
        self.batch_duration.observe(took.as_secs_f64());
        self.lag.set(i64::try_from(pending).unwrap_or(i64::MAX));
    }

    pub fn action(&self, action: &'static str, outcome: &'static str) {
        self.actions
            .get_or_create(&ActionOutcome { action, outcome })
            .inc();
    }
}

static STORE: LazyLock<StoreMetrics> = LazyLock::new(StoreMetrics::new);
static GATEWAY: LazyLock<GatewayMetrics> = LazyLock::new(GatewayMetrics::new);
static ORCHESTRATOR: LazyLock<OrchestratorMetrics> = LazyLock::new(OrchestratorMetrics::new);
static WORKERS: LazyLock<WorkerMetrics> = LazyLock::new(WorkerMetrics::new);
static HANDLERS: LazyLock<HandlersMetrics> = LazyLock::new(HandlersMetrics::new);
static OPERATIONS: LazyLock<OperationsMetrics> = LazyLock::new(OperationsMetrics::new);

pub fn store() -> &'static StoreMetrics {
    &STORE
}

pub fn gateway() -> &'static GatewayMetrics {
    &GATEWAY
}

pub fn orchestrator() -> &'static OrchestratorMetrics {
    &ORCHESTRATOR
}

pub fn workers() -> &'static WorkerMetrics {
    &WORKERS
}

pub fn handlers() -> &'static HandlersMetrics {
    &HANDLERS
}

pub fn operations() -> &'static OperationsMetrics {
    &OPERATIONS
}

// ---------------------------------------------------------------------------------------------
// The endpoint
// ---------------------------------------------------------------------------------------------

/// Which service's families an endpoint serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Service {
    Gateway,
    Orchestrator,
    Workers,
    Handlers,
    Operations,
}

impl Service {
    pub fn name(self) -> &'static str {
        match self {
            Self::Gateway => "gateway",
            Self::Orchestrator => "orchestrator",
            Self::Workers => "workers",
            Self::Handlers => "handlers",
            Self::Operations => "operations",
        }
    }

    /// A registry with `levensloop_build_info` and this service's families.
    pub fn registry(self) -> Registry {
        let mut registry = Registry::with_prefix(PREFIX);
        registry.register(
            "build",
            "The running service and its version",
            Info::new([
                ("service", self.name()),
                ("version", env!("CARGO_PKG_VERSION")),
            ]),
        );
        match self {
            Self::Gateway => {
                gateway().register(&mut registry);
                store().register(&mut registry);
            }
            Self::Orchestrator => {
                orchestrator().register(&mut registry);
                store().register(&mut registry);
            }
            Self::Workers => workers().register(&mut registry),
            Self::Handlers => handlers().register(&mut registry),
            Self::Operations => operations().register(&mut registry),
        }
        registry
    }
}

/// The registry as OpenMetrics text.
pub fn encode(registry: &Registry) -> String {
    let mut out = String::with_capacity(4096);
    // Writing into a String cannot fail.
    let _ = prometheus_client::encoding::text::encode(&mut out, registry);
    out
}

/// A running `/metrics` endpoint; dropping it stops it.
#[derive(Debug)]
pub struct MetricsServer {
    addr: SocketAddr,
    task: JoinHandle<()>,
}

impl MetricsServer {
    /// Where it listens (the port it picked when asked for port 0).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for MetricsServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Serves `service`'s metrics on `http://<addr>/metrics` (port 0 picks a free one).
pub async fn serve(addr: SocketAddr, service: Service) -> std::io::Result<MetricsServer> {
    serve_registry(addr, service.registry()).await
}

/// Serves a registry on `http://<addr>/metrics`.
pub async fn serve_registry(
    addr: SocketAddr,
    registry: Registry,
) -> std::io::Result<MetricsServer> {
    let listener = TcpListener::bind(addr).await?;
    let addr = listener.local_addr()?;
    let registry = Arc::new(registry);
    let app = Router::new().route(
        "/metrics",
        get(move || {
            let registry = registry.clone();
            async move {
                (
                    StatusCode::OK,
                    [(header::CONTENT_TYPE, CONTENT_TYPE)],
                    encode(&registry),
                )
                    .into_response()
            }
        }),
    );
    let task = tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::warn!(error = %e, "the metrics endpoint stopped");
        }
    });
    Ok(MetricsServer { addr, task })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_carry_the_prefix_units_and_total() {
        orchestrator().saga_started(Cow::Borrowed("birth"));
        orchestrator().saga_ended(Cow::Borrowed("birth"), "completed");
        orchestrator().step_finished("dabs.verify-birth-act", Duration::from_millis(30));
        store().append("saga", Duration::from_micros(700));
        let text = encode(&Service::Orchestrator.registry());
        for line in [
            "levensloop_build_info{service=\"orchestrator\",version=",
            "levensloop_sagas_started_total{type=\"birth\"} 1",
            "levensloop_sagas_ended_total{type=\"birth\",status=\"completed\"} 1",
            "levensloop_step_duration_seconds_bucket{le=\"0.04\",handler=\"dabs.verify-birth-act\"} 1",
            "levensloop_store_append_duration_seconds_count{category=\"saga\"} 1",
            "# EOF",
        ] {
            assert!(text.contains(line), "{line} in\n{text}");
        }
        gateway().rejected("INSZ_CHECK_DIGITS", "nats");
        let text = encode(&Service::Gateway.registry());
        assert!(
            text.contains(
                "levensloop_inputs_rejected_total{reason=\"INSZ_CHECK_DIGITS\",door=\"nats\"} 1"
            ),
            "{text}"
        );
        assert!(!text.contains("sagas_started"), "{text}");
    }

    /// Every metric the Grafana dashboard and the README name exists.
    #[test]
    fn the_dashboard_names_only_metrics_that_exist() {
        let label: Value = Cow::Borrowed("dashboard-check");
        let handler = "dashboard.check";
        store().append("dashboard-check", Duration::ZERO);
        gateway().accepted("dashboard-check", "grpc", false);
        gateway().accepted("dashboard-check", "grpc", true);
        gateway().rejected("DASHBOARD_CHECK", "grpc");
        let o = orchestrator();
        o.saga_started(label.clone());
        o.saga_ended(label, "completed");
        o.step_finished(handler, Duration::ZERO);
        o.step_retry(handler);
        o.step_failed(handler, "retryable");
        o.queue(handler, 0, 0);
        workers().task(handler, "completed");
        workers().effect(handler, true);
        workers().effect(handler, false);
        handlers().delivered(handler, "webhook", "completed");
        handlers().worker_connected(handler, 0);
        operations().batch(0, Duration::ZERO, 0);
        operations().action("dashboard-check", "applied");
        let exposed: std::collections::BTreeSet<String> = [
            Service::Gateway,
            Service::Orchestrator,
            Service::Workers,
            Service::Handlers,
            Service::Operations,
        ]
        .into_iter()
        .flat_map(|s| {
            encode(&s.registry())
                .lines()
                .filter(|l| !l.starts_with('#'))
                .filter_map(|l| l.split(['{', ' ']).next().map(str::to_owned))
                .collect::<Vec<_>>()
        })
        .collect();
        let readme = include_str!("../../../README.md");
        let observability = readme
            .split("\n## Observability")
            .nth(1)
            .and_then(|s| s.split("\n## ").next())
            .unwrap_or_default();
        let table: String = include_str!("metrics.rs")
            .lines()
            .filter(|l| l.starts_with("//! | `"))
            .collect();
        for (what, text) in [
            (
                "infra/grafana/levensloop.json",
                include_str!("../../../infra/grafana/levensloop.json"),
            ),
            ("the README's Observability section", observability),
            ("the table of this module", table.as_str()),
        ] {
            let mut named = 0;
            for (i, _) in text.match_indices("levensloop_") {
                let name: String = text[i..]
                    .chars()
                    .take_while(|c| c.is_ascii_lowercase() || *c == '_')
                    .collect();
                // The prefix alone, and crate paths (`levensloop_telemetry::metrics`), are not
                // metrics.
                if name == "levensloop_" || text[i + name.len()..].starts_with("::") {
                    continue;
                }
                named += 1;
                assert!(
                    exposed.contains(&name) || exposed.contains(&format!("{name}_bucket")),
                    "{what} names {name}, which no service exposes: {exposed:?}"
                );
            }
            assert!(named > 5, "{what} names metrics");
        }
    }
}
