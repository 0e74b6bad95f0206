//! `bench ingest`: life events per second through the gateway's two doors.
//!
//! `events` realistic life events (the registry simulator's mix: births, deaths, moves,
//! driving exams), of which a share are exact duplicates of earlier ones, go through:
//! - gRPC: `streams` concurrent `PublishStream` calls, as a bulk loader would use them;
//! - NATS: JetStream publishes on `levensloop.ingest.<kind>` (binary CloudEvents, protobuf
//!   body), each asking for its verdict on a reply subject.
//!
//! A door's rate is events divided by the time from the first send to the last verdict.
//! Each door runs against its own fresh nats-server and an in-process gateway; the raw
//! JetStream publish rate of the same encoded events, on the same kind of fresh server, is
//! measured in the same run for comparison.

use anyhow::Context as _;
use async_nats::jetstream::{self, stream};
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use levensloop_cli::generate::{Generator, Mix};
use levensloop_gateway::corpus::{Input, encode_binary_protobuf};
use levensloop_gateway::nats::REPLY_TO_HEADER;
use levensloop_gateway::server::{GatewayConfig, start};
use levensloop_proto::v1::{
    self, PublishOutcome, PublishRequest, PublishResponse,
    ingest_service_client::IngestServiceClient, publish_request,
};
use levensloop_testing::NatsServer;
use prost::Message;
use rand::{RngExt, SeedableRng};
use serde_json::json;
use std::net::SocketAddr;
use std::time::Instant;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Life events sent through each door.
    #[arg(long, default_value_t = 100_000)]
    events: usize,
    /// Share of the events that are exact duplicates of an earlier one.
    #[arg(long, default_value_t = 0.10)]
    duplicates: f64,
    /// Concurrent gRPC `PublishStream` calls.
    #[arg(long, default_value_t = 4)]
    streams: usize,
    /// NATS publishes awaiting their verdict at once.
    #[arg(long, default_value_t = 4_096)]
    in_flight: usize,
    /// NATS messages the gateway processes at once.
    #[arg(long, default_value_t = 512)]
    gateway_concurrency: usize,
}

/// What one door did.
#[derive(Debug, Default)]
struct Tally {
    accepted: u64,
    duplicate: u64,
    rejected: u64,
    seconds: f64,
}

impl Tally {
    fn count(&mut self, outcome: PublishOutcome) {
        match outcome {
            PublishOutcome::Accepted => self.accepted += 1,
            PublishOutcome::Duplicate => self.duplicate += 1,
            _ => self.rejected += 1,
        }
    }

    fn rate(&self) -> f64 {
        (self.accepted + self.duplicate + self.rejected) as f64 / self.seconds
    }

    fn json(&self) -> serde_json::Value {
        json!({
            "accepted": self.accepted, "duplicate": self.duplicate, "rejected": self.rejected,
            "seconds": (self.seconds * 100.0).round() / 100.0,
        })
    }
}

pub async fn run(args: Args) -> anyhow::Result<serde_json::Value> {
    anyhow::ensure!(
        (0.0..1.0).contains(&args.duplicates),
        "--duplicates is a share in [0, 1)"
    );
    anyhow::ensure!(
        args.streams > 0 && args.in_flight > 0,
        "nothing to send with"
    );
    let grpc_events = workload(&args, 1, "urn:be:levensloop:bench:grpc");
    let nats_events = workload(&args, 2, "urn:be:levensloop:bench:nats");

    eprintln!(
        "raw JetStream publishes of {} encoded events …",
        args.events
    );
    let raw = raw_rate(&args, &nats_events).await?;
    eprintln!("  {raw:.0}/s");
    eprintln!(
        "gRPC: {} events over {} PublishStream calls …",
        args.events, args.streams
    );
    let grpc = grpc_run(&args, grpc_events).await?;
    eprintln!("  {:.0}/s {}", grpc.rate(), grpc.json());
    eprintln!(
        "NATS: {} events, {} awaiting a verdict …",
        args.events, args.in_flight
    );
    let nats = nats_run(&args, nats_events).await?;
    eprintln!("  {:.0}/s {}", nats.rate(), nats.json());

    for (door, tally) in [("gRPC", &grpc), ("NATS", &nats)] {
        // A benchmark whose events were refused measured the wrong thing.
        anyhow::ensure!(
            tally.rejected == 0,
            "{door}: {} events rejected",
            tally.rejected
        );
    }
    Ok(json!({
        "grpc_events_per_s": grpc.rate().round(),
        "nats_events_per_s": nats.rate().round(),
        "raw_appends_per_s": raw.round(),
        "events": args.events,
        "duplicates": args.duplicates,
        "grpc": grpc.json(),
        "nats": nats.json(),
    }))
}

/// The simulator's mix; a share of the list are exact repeats of earlier events, placed
/// after their original.
fn workload(args: &Args, seed: u64, source: &str) -> Vec<v1::LifeEvent> {
    let today = chrono::Utc::now().date_naive();
    let mut generator = Generator::new(seed, today.pred_opt().unwrap_or(today), source.to_owned());
    let mut dice = rand::rngs::StdRng::seed_from_u64(seed ^ 0xbe7c);
    let mix = Mix::default();
    let mut events: Vec<v1::LifeEvent> = Vec::with_capacity(args.events);
    while events.len() < args.events {
        if !events.is_empty() && dice.random_bool(args.duplicates) {
            let earlier = dice.random_range(0..events.len());
            events.push(events[earlier].clone());
        } else {
            let kind = generator.kind(&mix);
            events.push(generator.valid(kind));
        }
    }
    events
}

fn gateway_config(server: &NatsServer, args: &Args) -> GatewayConfig {
    GatewayConfig {
        nats_url: server.url(),
        grpc_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
        nats_concurrency: args.gateway_concurrency,
        ..GatewayConfig::default()
    }
}

async fn grpc_run(args: &Args, events: Vec<v1::LifeEvent>) -> anyhow::Result<Tally> {
    let server = NatsServer::start()?;
    let gateway = start(gateway_config(&server, args)).await?;
    let url = format!("http://{}", gateway.grpc_addr);
    let mut shares: Vec<Vec<v1::LifeEvent>> = vec![Vec::new(); args.streams];
    for (n, event) in events.into_iter().enumerate() {
        shares[n % args.streams].push(event);
    }
    let started = Instant::now();
    let callers: Vec<_> = shares
        .into_iter()
        .map(|share| {
            let url = url.clone();
            tokio::spawn(async move {
                let mut client = IngestServiceClient::connect(url).await?;
                let requests =
                    futures::stream::iter(share.into_iter().enumerate().map(|(n, event)| {
                        PublishRequest {
                            event: Some(publish_request::Event::LifeEvent(event)),
                            sequence: n as u64,
                        }
                    }));
                let mut answers = client.publish_stream(requests).await?.into_inner();
                let mut tally = Tally::default();
                while let Some(answer) = answers.next().await {
                    tally.count(answer?.outcome());
                }
                anyhow::Ok(tally)
            })
        })
        .collect();
    let mut total = Tally::default();
    for caller in callers {
        let t = caller.await??;
        total.accepted += t.accepted;
        total.duplicate += t.duplicate;
        total.rejected += t.rejected;
    }
    total.seconds = started.elapsed().as_secs_f64();
    gateway.shutdown().await;
    Ok(total)
}

async fn nats_run(args: &Args, events: Vec<v1::LifeEvent>) -> anyhow::Result<Tally> {
    let server = NatsServer::start()?;
    let gateway = start(gateway_config(&server, args)).await?;
    let client = async_nats::connect(server.url()).await?;
    // Room for every capture acknowledgement the window can hold, so publishing never waits
    // on an acknowledgement this loop has not polled yet.
    let js = jetstream::context::ContextBuilder::new()
        .max_ack_inflight(args.in_flight + 1)
        .build(client.clone());
    let mut verdicts = client.subscribe("bench.verdict.>").await?;
    let total = events.len();
    let messages: Vec<_> = events
        .iter()
        .enumerate()
        .map(|(n, event)| {
            let Input::Nats {
                subject,
                headers,
                body,
            } = encode_binary_protobuf(event)
            else {
                unreachable!("a binary CloudEvent is a NATS message")
            };
            let mut map = async_nats::HeaderMap::new();
            for (name, value) in headers {
                map.append(name.as_str(), value.as_str());
            }
            map.insert(REPLY_TO_HEADER, format!("bench.verdict.{n}").as_str());
            (subject, map, bytes::Bytes::from(body))
        })
        .collect();

    let mut tally = Tally::default();
    let started = Instant::now();
    let mut captures = FuturesUnordered::new();
    let mut outstanding = 0usize;
    let mut messages = messages.into_iter();
    let mut answered = 0usize;
    while answered < total {
        // Keep the window full: publish (captured by JetStream), then wait for verdicts.
        while outstanding < args.in_flight {
            let Some((subject, headers, body)) = messages.next() else {
                break;
            };
            let ack = js.publish_with_headers(subject, headers, body).await?;
            captures.push(ack.into_future());
            outstanding += 1;
        }
        tokio::select! {
            Some(capture) = captures.next(), if !captures.is_empty() => {
                capture.context("the ingest stream did not capture a message")?;
            }
            verdict = verdicts.next() => {
                let verdict = verdict.context("verdict subscription closed")?;
                let response: PublishResponse = serde_json::from_slice(&verdict.payload)?;
                tally.count(response.outcome());
                outstanding -= 1;
                answered += 1;
            }
        }
    }
    tally.seconds = started.elapsed().as_secs_f64();
    gateway.shutdown().await;
    Ok(tally)
}

/// Raw JetStream publishes of the same encoded events (protobuf), same window, fresh server.
async fn raw_rate(args: &Args, events: &[v1::LifeEvent]) -> anyhow::Result<f64> {
    let server = NatsServer::start()?;
    let client = async_nats::connect(server.url()).await?;
    let js = jetstream::context::ContextBuilder::new()
        .max_ack_inflight(args.in_flight + 1)
        .build(client);
    js.create_stream(stream::Config {
        name: "RAW".to_owned(),
        subjects: vec!["raw.>".to_owned()],
        storage: stream::StorageType::File,
        ..stream::Config::default()
    })
    .await?;
    let bodies: Vec<bytes::Bytes> = events.iter().map(|e| e.encode_to_vec().into()).collect();
    let started = Instant::now();
    let mut acks = FuturesUnordered::new();
    for (n, body) in bodies.into_iter().enumerate() {
        let ack = js.publish(format!("raw.{}", n % 10_000), body).await?;
        acks.push(ack.into_future());
        while acks.len() >= args.in_flight {
            if let Some(ack) = acks.next().await {
                ack?;
            }
        }
    }
    while let Some(ack) = acks.next().await {
        ack?;
    }
    Ok(events.len() as f64 / started.elapsed().as_secs_f64())
}
