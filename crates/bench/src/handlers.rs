//! `bench handlers`: tasks through integrators' gRPC workers against the built-in workers.
//!
//! Real processes on this machine: a nats-server of its own, the handlers service and one
//! built-in workers process (instant, no rate limit). The bench registers a handler and runs
//! `grpc_workers` Work streams against it (in this process: each answers every task at once,
//! so what is measured is the path, not an integrator's work). It puts tasks on each
//! handler's queue as the orchestrator does and follows the results stream (no orchestrator
//! runs) in two phases per handler:
//!
//! 1. throughput: `tasks` tasks as fast as the queue takes them; tasks per second from the
//!    first publish to the last result;
//! 2. latency: `latency_tasks` tasks at `rate` per second; percentiles of publish → result
//!    stored.
//!
//! The built-in path includes its ledger write (one KV create per task); the gRPC path the
//! handlers service's hop (queue → gRPC stream → answer → result).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use futures::StreamExt;
use levensloop_bus::{Bus, RESULTS_STREAM};
use levensloop_proto::v1::{
    self, WorkRequest, handler_service_client::HandlerServiceClient, work_request, work_response,
};
use levensloop_testing::NatsServer;
use prost::Message;
use serde_json::json;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use crate::sagas::{percentile, start, usage};

/// The registered handler the gRPC workers serve.
const GRPC_HANDLER: &str = "bench.grpc";
/// A built-in handler the workers process serves.
const BUILTIN_HANDLER: &str = "bibliotheek.boekstart";

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Tasks per handler in the throughput phase.
    #[arg(long, default_value_t = 20_000)]
    tasks: usize,
    /// Tasks per handler in the latency phase.
    #[arg(long, default_value_t = 5_000)]
    latency_tasks: usize,
    /// Tasks per second in the latency phase.
    #[arg(long, default_value_t = 500.0)]
    rate: f64,
    /// gRPC Work streams on the registered handler.
    #[arg(long, default_value_t = 4)]
    grpc_workers: usize,
    /// Credits each gRPC worker gives.
    #[arg(long, default_value_t = 64)]
    credits: u32,
}

/// When each task was published, and when its result was stored.
#[derive(Default)]
struct Clock {
    published: HashMap<String, Instant>,
    answered: HashMap<String, Instant>,
}

type Shared = Arc<Mutex<Clock>>;

pub async fn run(args: Args) -> anyhow::Result<serde_json::Value> {
    anyhow::ensure!(
        args.tasks > 0 && args.grpc_workers > 0 && args.rate > 0.0,
        "nothing to do"
    );
    let server = NatsServer::start()?;
    let url = server.url();
    let logs = server.dir().join("logs");
    let grpc = format!(
        "127.0.0.1:{}",
        std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port()
    );
    let mut processes = vec![
        start(
            "handlers",
            "levensloop-handlers",
            &["--nats-url", &url, "--grpc-addr", &grpc],
            "handlers: gRPC on",
            &logs,
        )?,
        start(
            "workers",
            "levensloop-workers",
            &[
                "--nats-url",
                &url,
                "--handlers",
                BUILTIN_HANDLER,
                "--ignore-rate-limits",
                "--latency-ms",
                "0",
                "--jitter-ms",
                "0",
            ],
            "workers: serving",
            &logs,
        )?,
    ];
    let bus = Bus::connect(&url, 1).await?;
    let endpoint = format!("http://{grpc}");
    let mut client = HandlerServiceClient::connect(endpoint.clone()).await?;
    client
        .register_handler(v1::RegisterHandlerRequest {
            spec: Some(v1::HandlerSpec {
                name: GRPC_HANDLER.to_owned(),
                owner: "bench".to_owned(),
                life_event_types: vec![v1::LifeEventType::Death as i32],
                after_steps: vec!["verify-act".to_owned()],
                permitted_fields: vec!["deceased.insz".to_owned()],
                max_in_flight: 4096,
                ..v1::HandlerSpec::default()
            }),
        })
        .await
        .context("register the bench handler")?;
    let mut workers = Vec::new();
    for n in 0..args.grpc_workers {
        workers.push(tokio::spawn(grpc_worker(
            endpoint.clone(),
            format!("bench-{n}"),
            args.credits,
        )));
    }

    let clock: Shared = Arc::default();
    let follower = tokio::spawn(follow_results(bus.clone(), clock.clone()));

    let mut figures = serde_json::Map::new();
    for (label, handler) in [("grpc", GRPC_HANDLER), ("builtin", BUILTIN_HANDLER)] {
        eprintln!("{label}: {} tasks as fast as they go …", args.tasks);
        let ids = publish(&bus, handler, args.tasks, None, &clock).await?;
        await_answers(&clock, &ids).await?;
        let (first, last) = {
            let c = clock
                .lock()
                .map_err(|_| anyhow::anyhow!("clock poisoned"))?;
            let first = ids.iter().filter_map(|i| c.published.get(i)).min().copied();
            let last = ids.iter().filter_map(|i| c.answered.get(i)).max().copied();
            (first, last)
        };
        let seconds = last
            .zip(first)
            .map(|(l, f)| l.duration_since(f).as_secs_f64())
            .unwrap_or_default();
        let per_s = args.tasks as f64 / seconds.max(1e-9);
        eprintln!("  {per_s:.0} tasks/s");

        eprintln!("{label}: {} tasks at {}/s …", args.latency_tasks, args.rate);
        let ids = publish(&bus, handler, args.latency_tasks, Some(args.rate), &clock).await?;
        await_answers(&clock, &ids).await?;
        let mut latencies: Vec<f64> = {
            let c = clock
                .lock()
                .map_err(|_| anyhow::anyhow!("clock poisoned"))?;
            ids.iter()
                .filter_map(|i| {
                    Some(
                        c.answered
                            .get(i)?
                            .duration_since(*c.published.get(i)?)
                            .as_secs_f64()
                            * 1000.0,
                    )
                })
                .collect()
        };
        latencies.sort_by(f64::total_cmp);
        let (p50, p99) = (percentile(&latencies, 0.50), percentile(&latencies, 0.99));
        eprintln!("  p50 {p50:.1} ms, p99 {p99:.1} ms");
        figures.insert(
            label.to_owned(),
            json!({
                "tasks_per_s": per_s.round(),
                "p50_ms": (p50 * 10.0).round() / 10.0,
                "p99_ms": (p99 * 10.0).round() / 10.0,
            }),
        );
    }
    let (peak_rss_mb, cpu_s) = usage(&server, &processes);
    follower.abort();
    for w in &workers {
        w.abort();
    }
    for p in &mut processes {
        let _ = p.terminate();
    }
    let get = |l: &str, k: &str| figures[l][k].as_f64().unwrap_or_default();
    Ok(json!({
        "grpc_workers": args.grpc_workers,
        "grpc": figures["grpc"],
        "builtin": figures["builtin"],
        "added_p50_ms": ((get("grpc", "p50_ms") - get("builtin", "p50_ms")) * 10.0).round() / 10.0,
        "added_p99_ms": ((get("grpc", "p99_ms") - get("builtin", "p99_ms")) * 10.0).round() / 10.0,
        "latency_rate_per_s": args.rate,
        "cpu_s": cpu_s,
        "peak_rss_mb": peak_rss_mb,
    }))
}

/// An integrator's worker that answers every task at once.
async fn grpc_worker(endpoint: String, id: String, credits: u32) -> anyhow::Result<()> {
    // Its own connection, as separate worker processes would have.
    let channel = tonic::transport::Endpoint::from_shared(endpoint)?
        .connect()
        .await?;
    let mut client = HandlerServiceClient::new(channel);
    let (tx, rx) = mpsc::channel(1024);
    tx.send(WorkRequest {
        message: Some(work_request::Message::Hello(work_request::Hello {
            handler: GRPC_HANDLER.to_owned(),
            credits,
            worker_id: id,
        })),
    })
    .await?;
    let mut responses = client.work(ReceiverStream::new(rx)).await?.into_inner();
    while let Some(response) = responses.message().await? {
        if let Some(work_response::Message::Task(assigned)) = response.message {
            let task_id = assigned.task.map(|t| t.task_id).unwrap_or_default();
            tx.send(WorkRequest {
                message: Some(work_request::Message::Complete(work_request::Complete {
                    task_id,
                    result: None,
                })),
            })
            .await?;
            tx.send(WorkRequest {
                message: Some(work_request::Message::Credit(work_request::Credit {
                    credits: 1,
                })),
            })
            .await?;
        }
    }
    Ok(())
}

/// Puts `n` tasks on a handler's queue (at `rate` per second when given); returns their ids.
async fn publish(
    bus: &Bus,
    handler: &str,
    n: usize,
    rate: Option<f64>,
    clock: &Shared,
) -> anyhow::Result<Vec<String>> {
    let started = tokio::time::Instant::now();
    let interval = rate.map(|r| Duration::from_secs_f64(1.0 / r));
    let tasks: Vec<v1::Task> = (0..n)
        .map(|_| {
            let saga = uuid::Uuid::new_v4();
            v1::Task {
                task_id: format!("{saga}/{handler}/1"),
                saga_id: saga.to_string(),
                step_id: handler.to_owned(),
                handler: handler.to_owned(),
                attempt: 1,
                idempotency_key: format!("{saga}/{handler}"),
                data: [("deceased.insz".to_owned(), "41050328437".to_owned())].into(),
                ..v1::Task::default()
            }
        })
        .collect();
    let ids: Vec<String> = tasks.iter().map(|t| t.task_id.clone()).collect();
    let results: Vec<anyhow::Result<()>> = futures::stream::iter(tasks.into_iter().enumerate())
        .map(|(i, task)| {
            let bus = bus.clone();
            let clock = clock.clone();
            async move {
                if let Some(interval) = interval {
                    tokio::time::sleep_until(started + interval * i as u32).await;
                }
                if let Ok(mut c) = clock.lock() {
                    c.published.insert(task.task_id.clone(), Instant::now());
                }
                bus.publish_task(&task).await?;
                Ok(())
            }
        })
        .buffer_unordered(512)
        .collect()
        .await;
    for r in results {
        r?;
    }
    Ok(ids)
}

/// Records when each result is stored.
async fn follow_results(bus: Bus, clock: Shared) -> anyhow::Result<()> {
    use async_nats::jetstream::consumer;
    let stream = bus.jetstream().get_stream(RESULTS_STREAM).await?;
    let consumer: consumer::PullConsumer = stream
        .create_consumer(consumer::pull::Config {
            durable_name: Some("bench".into()),
            ack_policy: consumer::AckPolicy::Explicit,
            max_ack_pending: 100_000,
            ..Default::default()
        })
        .await?;
    let mut messages = consumer.messages().await?;
    while let Some(message) = messages.next().await {
        let message = message.map_err(|e| anyhow::anyhow!("{e}"))?;
        let at = Instant::now();
        if let Ok(result) = v1::TaskResult::decode(message.payload.as_ref())
            && let Ok(mut c) = clock.lock()
        {
            c.answered.insert(result.task_id, at);
        }
        let _ = message.ack().await;
    }
    Ok(())
}

async fn await_answers(clock: &Shared, ids: &[String]) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let missing = {
            let c = clock
                .lock()
                .map_err(|_| anyhow::anyhow!("clock poisoned"))?;
            ids.iter().filter(|i| !c.answered.contains_key(*i)).count()
        };
        if missing == 0 {
            return Ok(());
        }
        anyhow::ensure!(Instant::now() < deadline, "{missing} tasks unanswered");
        // A benchmark's progress check, not a test's synchronisation.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
