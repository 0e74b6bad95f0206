//! `bench store`: how close the event store comes to raw JetStream.
//!
//! Store: `events` appends spread over `streams` streams, each append with optimistic
//! concurrency (`Exact(previous version)`), every stream's chain running concurrently, so
//! appends are pipelined up to the store's in-flight limit. Raw: the same number of JetStream
//! publishes of the same payload size to as many subjects, with the same in-flight limit, with
//! no store code. Both run against the same fresh nats-server, once per profile.

use anyhow::Context as _;
use async_nats::jetstream::{self, stream};
use bytes::Bytes;
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use levensloop_store::{
    Commit, EventData, EventStore, ExpectedVersion, JetStreamConfig, JetStreamStore, StreamName,
};
use levensloop_testing::{NatsServer, Profile};
use serde_json::json;
use std::time::Instant;
use uuid::Uuid;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Appends per profile.
    #[arg(long, default_value_t = 200_000)]
    events: usize,
    /// Streams the appends are spread over.
    #[arg(long, default_value_t = 10_000)]
    streams: usize,
    /// Bytes of event data per append (a life event encoded as protobuf is a few hundred).
    #[arg(long, default_value_t = 300)]
    payload: usize,
    /// Appends (or publishes) awaiting their acknowledgement at once.
    #[arg(long, default_value_t = 4_096)]
    in_flight: usize,
    /// Producer tasks, for both the store and the raw run.
    #[arg(long, default_value_t = 4)]
    tasks: usize,
    /// Rounds per profile; each round runs raw, raw with the header, then the store, and the
    /// median of each is reported (the order inside a round does not favour the store: it
    /// runs last, on the fullest server).
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Rounds in the strict profile, where each round takes about a minute (fsync-bound).
    #[arg(long, default_value_t = 1)]
    strict_rounds: usize,
    /// Skip the strict profile (for profiling the standard one alone).
    #[arg(long)]
    standard_only: bool,
}

struct Figures {
    store: f64,
    raw: f64,
    raw_occ: f64,
}

pub async fn run(args: Args) -> anyhow::Result<serde_json::Value> {
    anyhow::ensure!(
        args.streams > 0 && args.events >= args.streams,
        "need events >= streams > 0"
    );
    let standard = profile(&args, Profile::Standard).await?;
    let strict = if args.standard_only {
        Figures {
            store: f64::NAN,
            raw: f64::NAN,
            raw_occ: f64::NAN,
        }
    } else {
        profile(&args, Profile::Strict).await?
    };
    let whole = |x: f64| x.round();
    Ok(json!({
        "store_appends_per_s": whole(standard.store),
        "raw_appends_per_s": whole(standard.raw),
        "ratio": (standard.store / standard.raw * 100.0).round() / 100.0,
        "strict_store_appends_per_s": whole(strict.store),
        "strict_raw_appends_per_s": whole(strict.raw),
        "strict_ratio": (strict.store / strict.raw * 100.0).round() / 100.0,
        "raw_occ_appends_per_s": whole(standard.raw_occ),
        "strict_raw_occ_appends_per_s": whole(strict.raw_occ),
        "events": args.events,
        "streams": args.streams,
        "payload_bytes": args.payload,
        "in_flight": args.in_flight,
    }))
}

async fn profile(args: &Args, profile: Profile) -> anyhow::Result<Figures> {
    let server = NatsServer::builder()
        .profile(profile)
        .start()
        .context("start nats-server")?;
    eprintln!(
        "bench store: {profile:?} profile, nats-server {} at {}",
        server.version(),
        server.url()
    );
    let (mut raws, mut raw_occs, mut stores) = (Vec::new(), Vec::new(), Vec::new());
    let rounds = match profile {
        Profile::Standard => args.rounds,
        Profile::Strict => args.strict_rounds,
    };
    for round in 0..rounds.max(1) {
        let raw = raw_rate(&server, args, round).await?;
        let raw_occ = raw_occ_rate(&server, args, round).await?;
        let store = store_rate(&server, args, round).await?;
        eprintln!(
            "  round {}: raw {raw:.0}/s, raw with expected-sequence header {raw_occ:.0}/s, store {store:.0}/s ({:.2} of raw)",
            round + 1,
            store / raw
        );
        raws.push(raw);
        raw_occs.push(raw_occ);
        stores.push(store);
    }
    Ok(Figures {
        store: median(stores),
        raw: median(raws),
        raw_occ: median(raw_occs),
    })
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

const EVENT_TYPE: &str = "levensloop.v1.BenchEvent";

/// Runs one chain per stream, spread over `args.tasks` producer tasks; `chain(i)` appends
/// stream `i`'s commits one after the other and returns how many. Returns commits per second.
async fn run_chains<C, F>(args: &Args, chain: C) -> anyhow::Result<f64>
where
    C: Fn(usize) -> F + Clone + Send + 'static,
    F: std::future::Future<Output = anyhow::Result<usize>> + Send + 'static,
{
    let started = Instant::now();
    let producers: Vec<_> = (0..args.tasks)
        .map(|task| {
            let chain = chain.clone();
            let mine: Vec<usize> = (task..args.streams).step_by(args.tasks).collect();
            tokio::spawn(async move {
                let mut chains: FuturesUnordered<_> = mine.into_iter().map(&chain).collect();
                let mut done = 0;
                while let Some(result) = chains.next().await {
                    done += result?;
                }
                anyhow::Ok(done)
            })
        })
        .collect();
    let mut done = 0;
    for producer in producers {
        done += producer.await??;
    }
    Ok(done as f64 / started.elapsed().as_secs_f64())
}

async fn store_rate(server: &NatsServer, args: &Args, round: usize) -> anyhow::Result<f64> {
    let config = JetStreamConfig {
        stream: format!("BENCH{round}"),
        subject_prefix: format!("bench{round}"),
        max_appends_in_flight: args.in_flight,
        ..JetStreamConfig::default()
    };
    let store = JetStreamStore::connect(&server.url(), config).await?;
    let payload = Bytes::from(vec![b'x'; args.payload]);
    let per_stream = args.events / args.streams;
    run_chains(args, move |i| {
        let (store, payload) = (store.clone(), payload.clone());
        async move {
            let name = StreamName::new("bench", format!("s{i}"))?;
            let mut expected = ExpectedVersion::NoStream;
            for _ in 0..per_stream {
                let event = EventData::new(EVENT_TYPE, payload.clone());
                let commit = Commit::new(Uuid::new_v4(), vec![event]);
                let appended = store.append(&name, expected, commit).await?;
                expected = ExpectedVersion::Exact(appended.version);
            }
            anyhow::Ok(per_stream)
        }
    })
    .await
}

/// The protocol's own cost of optimistic concurrency, for locating the store's overhead: the
/// store's pattern (a chain of expected-sequence publishes per subject) with no store code.
async fn raw_occ_rate(server: &NatsServer, args: &Args, round: usize) -> anyhow::Result<f64> {
    let js = raw_stream(
        server,
        args,
        &format!("RAWOCC{round}"),
        &format!("rawocc{round}"),
    )
    .await?;
    let payload = bench_payload(args);
    let per_subject = args.events / args.streams;
    run_chains(args, move |i| {
        let (js, payload) = (js.clone(), payload.clone());
        async move {
            let subject = format!("rawocc{round}.s{i}");
            let mut last = 0;
            for _ in 0..per_subject {
                let message = async_nats::jetstream::message::PublishMessage::build()
                    .payload(payload.clone())
                    .expected_last_subject_sequence(last);
                last = js
                    .send_publish(subject.clone(), message)
                    .await?
                    .await?
                    .sequence;
            }
            anyhow::Ok(per_subject)
        }
    })
    .await
}

/// A plain JetStream stream for the raw runs, and a context with the store's in-flight limit.
async fn raw_stream(
    server: &NatsServer,
    args: &Args,
    name: &str,
    prefix: &str,
) -> anyhow::Result<jetstream::Context> {
    let client = async_nats::connect(server.url()).await?;
    let js = jetstream::context::ContextBuilder::new()
        .max_ack_inflight(args.in_flight)
        .backpressure_on_inflight(true)
        .build(client);
    js.create_stream(stream::Config {
        name: name.to_owned(),
        subjects: vec![format!("{prefix}.>")],
        storage: stream::StorageType::File,
        ..stream::Config::default()
    })
    .await?;
    Ok(js)
}

/// The same bytes the store puts on the wire for one commit of one event.
fn bench_payload(args: &Args) -> Bytes {
    let event = EventData::new(EVENT_TYPE, vec![b'x'; args.payload]);
    Commit::new(Uuid::new_v4(), vec![event]).encoded()
}

/// The raw JetStream publish rate on `server` with this benchmark's defaults (200,000
/// publishes of 300 bytes over 10,000 subjects, 4,096 in flight): the yardstick other
/// benchmarks report beside their own figures, measured on their own server.
pub async fn raw_append_rate(server: &NatsServer, round: usize) -> anyhow::Result<f64> {
    let args = Args {
        events: 200_000,
        streams: 10_000,
        payload: 300,
        in_flight: 4_096,
        tasks: 4,
        rounds: 1,
        strict_rounds: 0,
        standard_only: true,
    };
    raw_rate(server, &args, round).await
}

async fn raw_rate(server: &NatsServer, args: &Args, round: usize) -> anyhow::Result<f64> {
    let js = raw_stream(server, args, &format!("RAW{round}"), &format!("raw{round}")).await?;
    let payload = bench_payload(args);
    let per_subject = args.events / args.streams;
    let total = per_subject * args.streams;
    // Each producer keeps its share of the window in flight, so the whole run has the same
    // number of publishes awaiting acknowledgement as the store run.
    let window = (args.in_flight / args.tasks).max(1);
    let started = Instant::now();
    let producers: Vec<_> = (0..args.tasks)
        .map(|task| {
            let js = js.clone();
            let payload = payload.clone();
            let streams = args.streams;
            let tasks = args.tasks;
            tokio::spawn(async move {
                let mut acks = FuturesUnordered::new();
                let mut done = 0;
                for n in (task..total).step_by(tasks) {
                    let subject = format!("raw{round}.s{}", n % streams);
                    let ack = js.publish(subject, payload.clone()).await?;
                    acks.push(ack.into_future());
                    while acks.len() >= window {
                        if let Some(ack) = acks.next().await {
                            ack?;
                            done += 1;
                        }
                    }
                }
                while let Some(ack) = acks.next().await {
                    ack?;
                    done += 1;
                }
                anyhow::Ok(done)
            })
        })
        .collect();
    let mut done = 0;
    for producer in producers {
        done += producer.await??;
    }
    Ok(done as f64 / started.elapsed().as_secs_f64())
}
