//! `bench sagas`: life events through gateway → orchestrator → workers, to each saga's end.
//!
//! Everything runs on this machine as real processes: its own nats-server, the gateway, the
//! orchestrator (following a clock two years ahead, so every calendar wait of the built-in
//! sagas is already due) and the workers (instant, no rate limits, a clerk answering the
//! human work lists). Two phases:
//!
//! 1. throughput: `events` life events (40 % moves, 25 % births, 25 % deaths, 10 % driving
//!    exams, distinct people) over `streams` gRPC `PublishStream` calls as fast as the
//!    gateway takes them; sagas per second from the first acceptance to the last end;
//! 2. latency: `latency_events` more at half the measured rate; percentiles of acceptance →
//!    end.
//!
//! Acceptance is when the gateway's answer arrives; a saga's end is when its key leaves the
//! running-saga index, which the orchestrator does right after storing the saga's last event
//! (both on this machine's clock). Afterwards: how each saga ended and its steps, read from
//! the store; the raw JetStream append rate of the same server; the peak memory and CPU time
//! of each process.

use crate::store::raw_append_rate;
use anyhow::Context as _;
use futures::StreamExt;
use levensloop_bus::ClockOffset;
use levensloop_cli::generate::{Generator, Mix};
use levensloop_orchestrator::index::RUNNING_BUCKET;
use levensloop_proto::stored::SAGA_CATEGORY;
use levensloop_proto::v1::{
    self, PublishOutcome, PublishRequest, ingest_service_client::IngestServiceClient,
    publish_request, saga_event::Event,
};
use levensloop_store::{EventStore, JetStreamConfig, JetStreamStore, ReadFrom, StreamName};
use levensloop_testing::{NatsServer, ServiceProcess, workspace_binary};
use prost::Message;
use serde_json::json;
use std::collections::{BTreeMap, HashMap};
use std::net::TcpListener;
use std::path::Path;
use std::time::{Duration, Instant, SystemTime};
use tokio::sync::mpsc;
use uuid::Uuid;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Life events in the throughput phase.
    #[arg(long, default_value_t = 20_000)]
    events: usize,
    /// Life events in the latency phase, sent at half the throughput phase's rate.
    #[arg(long, default_value_t = 10_000)]
    latency_events: usize,
    /// Concurrent gRPC `PublishStream` calls in the throughput phase.
    #[arg(long, default_value_t = 4)]
    streams: usize,
    /// The mix of life events.
    #[arg(long, default_value = "move=40,birth=25,death=25,driving-exam=10")]
    mix: Mix,
    /// The orchestrator's `--shards`.
    #[arg(long, default_value_t = 32)]
    shards: usize,
    /// The orchestrator's `--concurrency`.
    #[arg(long, default_value_t = 512)]
    concurrency: usize,
    /// How long to wait for every saga to end, in seconds.
    #[arg(long, default_value_t = 600)]
    timeout_s: u64,
    /// Also count every message through the server by kind of subject and print the counts
    /// per saga: where the server's work goes. The counting subscriber costs the server a
    /// copy of each message, so the speed figures of such a run are not the benchmark's.
    #[arg(long)]
    traffic: bool,
}

/// A saga that ended, and when its key left the running-saga index (right after the store
/// recorded its last event).
type Seen = (Uuid, SystemTime);

/// The sagas that ended so far.
#[derive(Debug, Default)]
struct Ends {
    ended: HashMap<Uuid, SystemTime>,
}

pub async fn run(args: Args) -> anyhow::Result<serde_json::Value> {
    anyhow::ensure!(args.events > 0 && args.streams > 0, "nothing to send");
    let server = NatsServer::start()?;
    let url = server.url();
    let logs = server.dir().join("logs");
    let client = async_nats::connect(&url).await?;
    // Two years ahead: every wait of months is due the moment it starts.
    ClockOffset::open(&async_nats::jetstream::new(client.clone()), 1)
        .await?
        .advance(2 * 365 * 86_400)
        .await?;

    let grpc = format!(
        "127.0.0.1:{}",
        TcpListener::bind("127.0.0.1:0")?.local_addr()?.port()
    );
    let shards = args.shards.to_string();
    let concurrency = args.concurrency.to_string();
    let mut processes = vec![
        start(
            "gateway",
            "levensloop-gateway",
            &["--nats-url", &url, "--grpc-addr", &grpc],
            "gateway: gRPC on",
            &logs,
        )?,
        start(
            "orchestrator",
            "levensloop-orchestrator",
            &[
                "--nats-url",
                &url,
                "--time-travel",
                "--shards",
                &shards,
                "--concurrency",
                &concurrency,
            ],
            "orchestrator: running",
            &logs,
        )?,
        start(
            "workers",
            "levensloop-workers",
            &[
                "--nats-url",
                &url,
                "--clerk",
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

    let traffic = if args.traffic {
        Some(count_traffic(async_nats::connect(&url).await?))
    } else {
        None
    };
    // Follow the saga streams from the start, on a task of its own.
    let store = JetStreamStore::connect(&url, JetStreamConfig::default()).await?;
    let (ends_tx, mut ends_rx) = mpsc::unbounded_channel();
    let follower = tokio::spawn(follow(client.clone(), ends_tx));

    let today = chrono::Utc::now().date_naive();
    let mut generator = Generator::new(
        0x5a6a,
        today.pred_opt().unwrap_or(today),
        "urn:be:levensloop:bench:sagas".to_owned(),
    );
    let gateway = format!("http://{grpc}");

    eprintln!(
        "throughput: {} life events over {} PublishStream calls …",
        args.events, args.streams
    );
    let events = workload(&mut generator, &args.mix, args.events);
    let accepted = publish(&gateway, events, args.streams, None).await?;
    let mut ends = Ends::default();
    await_ends(&mut ends_rx, &mut ends, &accepted, args.timeout_s).await?;
    let first = accepted
        .values()
        .min()
        .copied()
        .context("nothing accepted")?;
    let last = accepted
        .keys()
        .filter_map(|s| ends.ended.get(s).copied())
        .max()
        .context("nothing ended")?;
    let seconds = last.duration_since(first).unwrap_or_default().as_secs_f64();
    let sagas_per_s = accepted.len() as f64 / seconds;
    let full_rate = latencies(&accepted, &ends);
    eprintln!(
        "  {} sagas in {seconds:.1} s: {sagas_per_s:.0} sagas/s; p50 {:.0} ms, p99 {:.0} ms",
        accepted.len(),
        percentile(&full_rate, 0.50),
        percentile(&full_rate, 0.99)
    );

    let half = sagas_per_s / 2.0;
    eprintln!(
        "latency: {} life events at {half:.0}/s …",
        args.latency_events
    );
    let events = workload(&mut generator, &args.mix, args.latency_events);
    let paced = publish(&gateway, events, 1, Some(half)).await?;
    await_ends(&mut ends_rx, &mut ends, &paced, args.timeout_s).await?;
    let at_half = latencies(&paced, &ends);
    eprintln!(
        "  p50 {:.0} ms, p95 {:.0} ms, p99 {:.0} ms",
        percentile(&at_half, 0.50),
        percentile(&at_half, 0.95),
        percentile(&at_half, 0.99)
    );

    eprintln!("reading how {} sagas ended …", ends.ended.len());
    let (statuses, steps) = outcomes(&store, ends.ended.keys().copied()).await?;
    let sagas = ends.ended.len() as f64;
    let steps_per_saga = steps as f64 / sagas;

    // Memory and CPU before anything stops; the raw yardstick after the sagas, on the same
    // server.
    let (peak_rss_mb, cpu_s) = usage(&server, &processes);
    follower.abort();
    let traffic = match traffic {
        Some((counts, counter)) => {
            counter.abort();
            let counts = counts.lock().map(|c| c.clone()).unwrap_or_default();
            let per_saga: BTreeMap<String, f64> = counts
                .into_iter()
                .map(|(kind, n)| (kind, (n as f64 / sagas * 10.0).round() / 10.0))
                .filter(|(_, n)| *n > 0.0)
                .collect();
            eprintln!("messages per saga, by subject: {per_saga:#?}");
            Some(per_saga)
        }
        None => None,
    };
    for p in &mut processes {
        let _ = p.terminate();
    }
    eprintln!("raw JetStream appends on the same server …");
    let raw = raw_append_rate(&server, 0).await?;

    Ok(json!({
        "sagas_per_s": sagas_per_s.round(),
        "p50_ms": percentile(&at_half, 0.50).round(),
        "p95_ms": percentile(&at_half, 0.95).round(),
        "p99_ms": percentile(&at_half, 0.99).round(),
        "steps_per_saga": (steps_per_saga * 10.0).round() / 10.0,
        "raw_appends_per_s": raw.round(),
        "peak_rss_mb": peak_rss_mb,
        "cpu_s": cpu_s,
        "full_rate_p50_ms": percentile(&full_rate, 0.50).round(),
        "full_rate_p99_ms": percentile(&full_rate, 0.99).round(),
        "half_rate_per_s": half.round(),
        "sagas": sagas,
        "statuses": statuses,
        "traffic_per_saga": traffic,
    }))
}

pub(crate) fn start(
    name: &str,
    binary: &str,
    args: &[&str],
    ready: &str,
    logs: &Path,
) -> anyhow::Result<ServiceProcess> {
    let program = workspace_binary(binary)?;
    ServiceProcess::start_with_env(
        name,
        program,
        args.iter().copied(),
        [("RUST_LOG", "warn")],
        ready,
        logs,
    )
    .with_context(|| format!("starting {name} (`infra/just bench` builds it first)"))
}

fn workload(generator: &mut Generator, mix: &Mix, n: usize) -> Vec<v1::LifeEvent> {
    (0..n)
        .map(|_| {
            let kind = generator.kind(mix);
            generator.valid(kind)
        })
        .collect()
}

/// Publishes over `streams` PublishStream calls (paced at `rate` per second when given);
/// returns each started saga with the moment its acceptance arrived.
async fn publish(
    gateway: &str,
    events: Vec<v1::LifeEvent>,
    streams: usize,
    rate: Option<f64>,
) -> anyhow::Result<HashMap<Uuid, SystemTime>> {
    let mut shares: Vec<Vec<v1::LifeEvent>> = vec![Vec::new(); streams];
    for (n, event) in events.into_iter().enumerate() {
        shares[n % streams].push(event);
    }
    let mut callers = Vec::new();
    for share in shares {
        let mut client = IngestServiceClient::connect(gateway.to_owned()).await?;
        callers.push(tokio::spawn(async move {
            let requests: Vec<PublishRequest> = share
                .into_iter()
                .enumerate()
                .map(|(n, event)| PublishRequest {
                    event: Some(publish_request::Event::LifeEvent(event)),
                    sequence: n as u64,
                })
                .collect();
            let requests = pace(requests, rate);
            let mut answers = client.publish_stream(requests).await?.into_inner();
            let mut accepted = HashMap::new();
            while let Some(answer) = answers.next().await {
                let answer = answer?;
                let at = SystemTime::now();
                if answer.outcome() == PublishOutcome::Accepted && answer.starts_saga {
                    accepted.insert(answer.saga_id.parse::<Uuid>()?, at);
                }
            }
            anyhow::Ok(accepted)
        }));
    }
    let mut all = HashMap::new();
    for caller in callers {
        all.extend(caller.await??);
    }
    Ok(all)
}

/// Lets the requests through at `rate` per second (all at once without one), from a task
/// of its own.
fn pace(
    requests: Vec<PublishRequest>,
    rate: Option<f64>,
) -> futures::channel::mpsc::UnboundedReceiver<PublishRequest> {
    let (tx, rx) = futures::channel::mpsc::unbounded();
    tokio::spawn(async move {
        let start = tokio::time::Instant::now();
        let interval = rate.map(|r| Duration::from_secs_f64(1.0 / r.max(1.0)));
        for (n, request) in requests.into_iter().enumerate() {
            if let Some(interval) = interval {
                // Request n leaves n intervals after the start.
                tokio::time::sleep_until(start + interval * n as u32).await;
            }
            if tx.unbounded_send(request).is_err() {
                return;
            }
        }
    });
    rx
}

/// Reports each saga's end as its key leaves the running-saga index. Cheaper than following
/// every saga event (two index entries per saga, on a bucket of its own), so measuring takes
/// little from the 2 cores it measures.
async fn follow(
    client: async_nats::Client,
    ends: mpsc::UnboundedSender<Seen>,
) -> anyhow::Result<()> {
    use async_nats::jetstream::kv::Operation;
    let kv = async_nats::jetstream::new(client)
        .get_key_value(RUNNING_BUCKET)
        .await?;
    let mut entries = kv.watch_all().await?;
    while let Some(entry) = entries.next().await {
        let entry = entry?;
        if !matches!(entry.operation, Operation::Purge | Operation::Delete) {
            continue;
        }
        if let Some(saga) = entry
            .key
            .rsplit('.')
            .next()
            .and_then(|k| Uuid::parse_str(k).ok())
        {
            let _ = ends.send((saga, SystemTime::from(entry.created)));
        }
    }
    Ok(())
}

/// A subject without its ids: the API call, the stream acknowledged, the bucket, the inbox.
fn subject_kind(subject: &str) -> String {
    let tokens: Vec<&str> = subject.split('.').collect();
    let keep = match tokens.first().copied() {
        Some("$JS") if tokens.get(1) == Some(&"API") => match tokens.get(2).copied() {
            Some("CONSUMER" | "STREAM" | "DIRECT") => 5,
            _ => 4,
        },
        Some("$JS") => 3,
        Some("$KV") => 2,
        Some(t) if t.starts_with("_INBOX") => 1,
        _ => 3,
    };
    tokens[..keep.min(tokens.len())].join(".")
}

/// Message counts by kind of subject, shared with the task that counts them.
type Traffic = std::sync::Arc<std::sync::Mutex<BTreeMap<String, u64>>>;

/// Counts every message the server routes, by [`subject_kind`], until aborted.
fn count_traffic(client: async_nats::Client) -> (Traffic, tokio::task::JoinHandle<()>) {
    let counts = Traffic::default();
    let shared = counts.clone();
    let task = tokio::spawn(async move {
        let Ok(mut all) = client.subscribe(">").await else {
            return;
        };
        while let Some(message) = all.next().await {
            if let Ok(mut counts) = shared.lock() {
                *counts.entry(subject_kind(&message.subject)).or_default() += 1;
            }
        }
    });
    (counts, task)
}
/// How each saga ended and how many of its steps succeeded, read from the store after the
/// measurement.
async fn outcomes(
    store: &JetStreamStore,
    sagas: impl Iterator<Item = Uuid>,
) -> anyhow::Result<(BTreeMap<&'static str, u64>, u64)> {
    let results: Vec<anyhow::Result<(&'static str, u64)>> = futures::stream::iter(sagas)
        .map(|saga| async move {
            let name = StreamName::new(SAGA_CATEGORY, saga.to_string())?;
            let slice = store.read(&name, ReadFrom::Start).await?;
            let mut status = "running";
            let mut steps = 0;
            for recorded in &slice.events {
                match v1::SagaEvent::decode(recorded.data.as_ref())?.event {
                    Some(Event::StepSucceeded(_) | Event::HumanTaskCompleted(_)) => steps += 1,
                    Some(Event::SagaCompleted(_)) => status = "completed",
                    Some(Event::SagaCompensated(_)) => status = "compensated",
                    Some(Event::SagaFailed(_)) => status = "failed",
                    Some(Event::SagaCancelled(_)) => status = "cancelled",
                    _ => {}
                }
            }
            Ok((status, steps))
        })
        .buffer_unordered(64)
        .collect()
        .await;
    let mut statuses = BTreeMap::new();
    let mut steps = 0;
    for result in results {
        let (status, n) = result?;
        *statuses.entry(status).or_default() += 1;
        steps += n;
    }
    Ok((statuses, steps))
}

async fn await_ends(
    rx: &mut mpsc::UnboundedReceiver<Seen>,
    ends: &mut Ends,
    sagas: &HashMap<Uuid, SystemTime>,
    timeout_s: u64,
) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(timeout_s);
    let mut last_report = Instant::now();
    loop {
        let missing = sagas.keys().filter(|s| !ends.ended.contains_key(s)).count();
        if missing == 0 {
            return Ok(());
        }
        if last_report.elapsed() > Duration::from_secs(5) {
            eprintln!("  … {missing} sagas still running");
            last_report = Instant::now();
        }
        let next = tokio::time::timeout_at(deadline, rx.recv())
            .await
            .map_err(|_| anyhow::anyhow!("{missing} sagas did not end within {timeout_s} s"))?
            .context("the saga follower stopped")?;
        let (saga, at) = next;
        ends.ended.insert(saga, at);
    }
}

/// Acceptance → end of each saga, in milliseconds, sorted.
fn latencies(sagas: &HashMap<Uuid, SystemTime>, ends: &Ends) -> Vec<f64> {
    let mut out: Vec<f64> = sagas
        .iter()
        .filter_map(|(saga, accepted)| {
            let ended = ends.ended.get(saga)?;
            Some(
                ended
                    .duration_since(*accepted)
                    .unwrap_or_default()
                    .as_secs_f64()
                    * 1000.0,
            )
        })
        .collect();
    out.sort_by(f64::total_cmp);
    out
}

/// Peak memory (MB) and CPU time (s) so far of nats-server, each service and this process.
pub(crate) fn usage(
    server: &NatsServer,
    processes: &[ServiceProcess],
) -> (
    serde_json::Map<String, serde_json::Value>,
    serde_json::Map<String, serde_json::Value>,
) {
    let mut peak_rss_mb = serde_json::Map::new();
    let mut cpu_s = serde_json::Map::new();
    let mut pids: Vec<(String, Option<u32>)> = vec![("nats-server".into(), server.pid())];
    pids.extend(processes.iter().map(|p| (p.name().to_owned(), p.pid())));
    pids.push(("bench".into(), Some(std::process::id())));
    for (name, pid) in pids {
        if let Some(pid) = pid {
            peak_rss_mb.insert(name.clone(), json!(peak_rss_mb_of(pid)));
            cpu_s.insert(name, json!(cpu_seconds_of(pid)));
        }
    }
    (peak_rss_mb, cpu_s)
}

pub(crate) fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

/// A process's peak resident memory (`VmHWM`), in MB.
fn peak_rss_mb_of(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kb| (kb / 1024.0 * 10.0).round() / 10.0)
}

/// A process's CPU time so far (user + system), in seconds.
fn cpu_seconds_of(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces) start at the last ')'.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    // utime and stime are fields 14 and 15 (1-based), 12 and 13 after the name.
    let ticks: f64 = [11, 12]
        .iter()
        .filter_map(|i| fields.get(*i).and_then(|v| v.parse::<f64>().ok()))
        .sum();
    (ticks / 100.0 * 10.0).round() / 10.0
}
