//! Observability shared by every Levensloop service.
//!
//! - **Logs**: [`init`] installs the subscriber every binary uses: human-readable lines on
//!   stderr, filtered by `RUST_LOG` (default `info`).
//! - **Traces**: when an OTLP endpoint is configured (`--otlp-endpoint`, or the standard
//!   `OTEL_EXPORTER_OTLP_ENDPOINT`), the services' spans are exported over OTLP/gRPC with the
//!   resource attribute `service.name` (`levensloop-gateway`, …). W3C trace context
//!   (`traceparent`, `tracestate`) travels with a life event from the registry's message
//!   through the gateway (stored with the life event), the orchestrator, each task and its
//!   result ([`propagation`]), so one trace shows one life event's whole journey. Without an
//!   endpoint no span of the saga path is created and nothing is propagated: the cost is one
//!   relaxed atomic load per message ([`enabled`]).
//! - **Metrics**: Prometheus metrics in the OpenMetrics text format on `/metrics`
//!   ([`metrics`]), one typed set of families per service.

pub mod metrics;
pub mod propagation;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::trace::{BatchConfigBuilder, BatchSpanProcessor, SdkTracerProvider};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer, filter};

pub use propagation::{TRACEPARENT, TRACESTATE};

/// The environment variable the flag `--otlp-endpoint` falls back to (the OpenTelemetry one).
pub const OTLP_ENDPOINT_ENV: &str = "OTEL_EXPORTER_OTLP_ENDPOINT";
/// How long finished spans wait before they are sent, unless `OTEL_BSP_SCHEDULE_DELAY`
/// (milliseconds) says otherwise: short, so an operator sees a life event's trace while it
/// is still fresh.
pub const DEFAULT_EXPORT_DELAY: Duration = Duration::from_secs(1);
/// How long the guard waits at shutdown for the last spans to be sent.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(5);

static TRACING: AtomicBool = AtomicBool::new(false);

/// Whether spans are exported (an OTLP endpoint is configured). The saga path creates its
/// spans and propagates trace context only then.
#[inline]
pub fn enabled() -> bool {
    TRACING.load(Ordering::Relaxed)
}

/// Flushes and stops the span exporter when dropped (at the end of `main`).
#[derive(Debug)]
#[must_use = "dropping the guard stops exporting spans"]
pub struct TelemetryGuard {
    provider: Option<SdkTracerProvider>,
}

impl TelemetryGuard {
    /// Sends the spans finished so far, now.
    pub fn flush(&self) {
        if let Some(provider) = &self.provider
            && let Err(e) = provider.force_flush()
        {
            tracing::warn!(error = %e, "could not flush spans");
        }
    }
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        if let Some(provider) = self.provider.take() {
            TRACING.store(false, Ordering::Relaxed);
            if let Err(e) = provider.shutdown_with_timeout(SHUTDOWN_TIMEOUT) {
                eprintln!("telemetry: the last spans were not all exported: {e}");
            }
        }
    }
}

/// Installs the global subscriber of a service binary: log lines on stderr filtered by
/// `RUST_LOG` (default `info`), and, with an OTLP endpoint (`http://host:4317`), spans
/// exported over OTLP/gRPC as `service.name` = `levensloop-<service>`. An empty endpoint is
/// none. Call it once, inside the Tokio runtime (the exporter's gRPC channel runs on it).
pub fn init(service: &str, otlp_endpoint: Option<&str>) -> anyhow::Result<TelemetryGuard> {
    let endpoint = otlp_endpoint.map(str::trim).filter(|e| !e.is_empty());
    let logs = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")));
    let Some(endpoint) = endpoint else {
        tracing_subscriber::registry().with(logs).try_init()?;
        return Ok(TelemetryGuard { provider: None });
    };

    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_endpoint(endpoint)
        .with_timeout(Duration::from_secs(5))
        .build()?;
    let mut batch = BatchConfigBuilder::default();
    if std::env::var_os("OTEL_BSP_SCHEDULE_DELAY").is_none() {
        batch = batch.with_scheduled_delay(DEFAULT_EXPORT_DELAY);
    }
    let processor = BatchSpanProcessor::builder(exporter)
        .with_batch_config(batch.build())
        .build();
    let service_name = service_name(service);
    let provider = SdkTracerProvider::builder()
        .with_span_processor(processor)
        .with_resource(
            opentelemetry_sdk::Resource::builder()
                .with_service_name(service_name.clone())
                .build(),
        )
        .build();
    let tracer = provider.tracer(service_name);
    // Only the project's own spans are exported (not every library's), at info and above,
    // whatever RUST_LOG says about the log lines.
    let spans = tracing_opentelemetry::layer()
        .with_tracer(tracer)
        .with_filter(filter::Targets::new().with_target("levensloop", tracing::Level::INFO));
    tracing_subscriber::registry()
        .with(logs)
        .with(spans)
        .try_init()?;
    TRACING.store(true, Ordering::Relaxed);
    tracing::info!(%endpoint, "exporting spans over OTLP");
    Ok(TelemetryGuard {
        provider: Some(provider),
    })
}

/// `levensloop-<service>`, unless the name already says so.
pub fn service_name(service: &str) -> String {
    if service.starts_with("levensloop") {
        service.to_owned()
    } else {
        format!("levensloop-{service}")
    }
}
