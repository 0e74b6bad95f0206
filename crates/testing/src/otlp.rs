//! A small in-process OTLP/gRPC trace receiver: the collector's `TraceService`, on a free port
//! of 127.0.0.1, recording every span the services export, so a test can follow one life
//! event's trace across processes. Tests wait on it ([`OtlpReceiver::wait_for`]) rather than
//! sleeping.

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// One span as received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceivedSpan {
    /// The resource's `service.name`.
    pub service: String,
    pub name: String,
    /// 32 lower-case hex digits.
    pub trace_id: String,
    /// 16 lower-case hex digits.
    pub span_id: String,
    /// Empty for a root span.
    pub parent_span_id: String,
    /// The span's attributes (the tracing span's fields), as text.
    pub attributes: BTreeMap<String, String>,
}

fn text(value: Option<&any_value::Value>) -> String {
    match value {
        Some(any_value::Value::StringValue(s)) => s.clone(),
        Some(any_value::Value::IntValue(i)) => i.to_string(),
        Some(any_value::Value::BoolValue(b)) => b.to_string(),
        Some(any_value::Value::DoubleValue(d)) => d.to_string(),
        _ => String::new(),
    }
}

#[derive(Debug, Clone)]
struct Sink {
    spans: Arc<Mutex<Vec<ReceivedSpan>>>,
    seen: Arc<watch::Sender<usize>>,
}

fn hex(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(out, "{b:02x}");
    }
    out
}

#[tonic::async_trait]
impl TraceService for Sink {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut received = Vec::new();
        for resource_spans in request.into_inner().resource_spans {
            let service = resource_spans
                .resource
                .iter()
                .flat_map(|r| r.attributes.iter())
                .find(|kv| kv.key == "service.name")
                .map(|kv| text(kv.value.as_ref().and_then(|v| v.value.as_ref())))
                .unwrap_or_default();
            for scope in resource_spans.scope_spans {
                for span in scope.spans {
                    received.push(ReceivedSpan {
                        service: service.clone(),
                        name: span.name,
                        trace_id: hex(&span.trace_id),
                        span_id: hex(&span.span_id),
                        parent_span_id: hex(&span.parent_span_id),
                        attributes: span
                            .attributes
                            .iter()
                            .map(|kv| {
                                (
                                    kv.key.clone(),
                                    text(kv.value.as_ref().and_then(|v| v.value.as_ref())),
                                )
                            })
                            .collect(),
                    });
                }
            }
        }
        let total = match self.spans.lock() {
            Ok(mut spans) => {
                spans.extend(received);
                spans.len()
            }
            Err(_) => return Err(tonic::Status::internal("the receiver's lock is poisoned")),
        };
        self.seen.send_replace(total);
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

/// A running receiver; dropping it stops it.
#[derive(Debug)]
pub struct OtlpReceiver {
    addr: SocketAddr,
    sink: Sink,
    seen: watch::Receiver<usize>,
    server: JoinHandle<()>,
}

impl OtlpReceiver {
    /// Starts listening on a free port of 127.0.0.1.
    pub async fn start() -> std::io::Result<Self> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let (seen_tx, seen) = watch::channel(0);
        let sink = Sink {
            spans: Arc::default(),
            seen: Arc::new(seen_tx),
        };
        let service = TraceServiceServer::new(sink.clone());
        let server = tokio::spawn(async move {
            let _ = tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener))
                .await;
        });
        Ok(Self {
            addr,
            sink,
            seen,
            server,
        })
    }

    /// The endpoint to give the exporters (`--otlp-endpoint`).
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Every span received so far.
    pub fn spans(&self) -> Vec<ReceivedSpan> {
        self.sink
            .spans
            .lock()
            .map(|s| s.clone())
            .unwrap_or_default()
    }

    /// Waits until `done` holds for the spans received (checked after each export), or the
    /// deadline passes; returns the spans either way, with whether `done` held.
    pub async fn wait_for(
        &self,
        deadline: Duration,
        done: impl Fn(&[ReceivedSpan]) -> bool,
    ) -> (bool, Vec<ReceivedSpan>) {
        let mut seen = self.seen.clone();
        let until = tokio::time::Instant::now() + deadline;
        loop {
            seen.borrow_and_update();
            let spans = self.spans();
            if done(&spans) {
                return (true, spans);
            }
            match tokio::time::timeout_at(until, seen.changed()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) | Err(_) => {
                    let spans = self.spans();
                    return (done(&spans), spans);
                }
            }
        }
    }
}

impl Drop for OtlpReceiver {
    fn drop(&mut self) {
        self.server.abort();
    }
}
