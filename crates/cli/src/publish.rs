//! `levensloop publish` and `levensloop simulate`: a registry's side of the two doors.
//!
//! Over gRPC, each event is a `Publish` (or, for the simulator, one `PublishStream`); over
//! NATS, a JetStream publish on `levensloop.ingest.<kind>` (binary-mode CloudEvent, protobuf
//! payload) whose acknowledgement means "captured", with the gateway's verdict asked for on a
//! reply subject in the `Levensloop-Reply-To` header.

use crate::Output;
use anyhow::Context as _;
use futures::StreamExt;
use levensloop_cli::generate::{Generator, Kind, Mix};
use levensloop_gateway::corpus::{Input, encode_binary_protobuf};
use levensloop_gateway::nats::REPLY_TO_HEADER;
use levensloop_proto::v1::{
    self, PublishOutcome, PublishRequest, PublishResponse,
    ingest_service_client::IngestServiceClient, publish_request,
};
use std::collections::HashMap;
use std::io::Write;
use std::time::{Duration, Instant};
use tonic::transport::Channel;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Via {
    Grpc,
    Nats,
}

/// Where the gateway listens.
#[derive(Debug, clap::Args)]
pub struct Doors {
    /// Publish over gRPC or NATS.
    #[arg(long, value_enum, default_value_t = Via::Grpc)]
    via: Via,
    /// The gateway's gRPC address.
    #[arg(
        long,
        env = "LEVENSLOOP_GATEWAY_URL",
        default_value = "http://127.0.0.1:50051"
    )]
    gateway_url: String,
}

#[derive(Debug, clap::Args)]
pub struct PublishArgs {
    /// birth, death, move or driving-exam.
    kind: Kind,
    #[command(flatten)]
    doors: Doors,
    /// The event's id (CloudEvents `id`); a fresh one by default.
    #[arg(long)]
    id: Option<String>,
    /// The registry (CloudEvents `source`).
    #[arg(long, default_value = "urn:be:levensloop:cli")]
    source: String,
    /// The person's INSZ (the child, the deceased, the mover, the candidate).
    #[arg(long)]
    insz: Option<String>,
    /// Their date of birth, YYYY-MM-DD (keep it consistent with --insz).
    #[arg(long)]
    date_of_birth: Option<String>,
    /// Seed of the generated details, for a reproducible event.
    #[arg(long)]
    seed: Option<u64>,
}

#[derive(Debug, clap::Args)]
pub struct SimulateArgs {
    #[command(flatten)]
    doors: Doors,
    /// Events per second (0: as fast as the gateway takes them).
    #[arg(long, default_value_t = 100)]
    rate: u64,
    /// How many events to send.
    #[arg(long, default_value_t = 1_000)]
    count: u64,
    /// Share of each kind, e.g. birth=25,death=25,move=40,driving-exam=10.
    #[arg(long, default_value = "birth=25,death=25,move=40,driving-exam=10")]
    mix: Mix,
    /// Share (0–1) of events sent again as exact duplicates.
    #[arg(long, default_value_t = 0.0)]
    duplicates: f64,
    /// Share (0–1) of events broken in a realistic way (wrong check digit, merged municipality…).
    #[arg(long, default_value_t = 0.0)]
    invalid: f64,
    /// Seed of the generator; the same seed sends the same events.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// The registry (CloudEvents `source`).
    #[arg(long, default_value = "urn:be:levensloop:simulator")]
    source: String,
    /// Events in flight at once.
    #[arg(long, default_value_t = 256)]
    in_flight: usize,
}

/// The gateway's answer, whichever door it came through.
#[derive(Debug, Clone)]
pub struct Verdict {
    pub event_id: String,
    pub outcome: PublishOutcome,
    pub saga_id: String,
    pub reason_code: String,
    pub reason: String,
    pub field: String,
    pub note: String,
}

impl Verdict {
    fn from_response(event_id: &str, r: PublishResponse) -> Self {
        let first = r.violations.first().cloned().unwrap_or_default();
        Self {
            event_id: if r.event_id.is_empty() {
                event_id.to_owned()
            } else {
                r.event_id
            },
            outcome: PublishOutcome::try_from(r.outcome).unwrap_or(PublishOutcome::Unspecified),
            saga_id: r.saga_id,
            reason_code: r.reason_code,
            reason: first.description,
            field: first.field,
            note: r.note,
        }
    }

    fn from_status(event_id: &str, status: &tonic::Status) -> Self {
        let violations = levensloop_gateway::grpc::violations_of(status);
        let first = violations.first().cloned().unwrap_or_default();
        Self {
            event_id: event_id.to_owned(),
            outcome: PublishOutcome::Rejected,
            saga_id: String::new(),
            reason_code: if first.reason.is_empty() {
                format!("{:?}", status.code())
            } else {
                first.reason
            },
            reason: if first.description.is_empty() {
                status.message().to_owned()
            } else {
                first.description
            },
            field: first.field,
            note: String::new(),
        }
    }

    fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "event_id": self.event_id,
            "outcome": self.outcome.as_str_name().trim_start_matches("PUBLISH_OUTCOME_"),
            "saga_id": self.saga_id,
            "reason_code": self.reason_code,
            "field": self.field,
            "reason": self.reason,
            "note": self.note,
        })
    }
}

/// A connection to one of the gateway's doors.
enum Door {
    Grpc(IngestServiceClient<Channel>),
    Nats {
        client: async_nats::Client,
        inbox: String,
        verdicts: async_nats::Subscriber,
    },
}

impl Door {
    async fn connect(doors: &Doors, nats_url: &str) -> anyhow::Result<Self> {
        Ok(match doors.via {
            Via::Grpc => Door::Grpc(
                IngestServiceClient::connect(doors.gateway_url.clone())
                    .await
                    .with_context(|| {
                        format!(
                            "cannot reach the gateway at {}; is it running? `infra/just up`",
                            doors.gateway_url
                        )
                    })?,
            ),
            Via::Nats => {
                let client = async_nats::connect(nats_url).await?;
                let inbox = client.new_inbox();
                let verdicts = client.subscribe(inbox.clone()).await?;
                Door::Nats {
                    client,
                    inbox,
                    verdicts,
                }
            }
        })
    }
}

/// Sends events through a door and collects the verdicts, `in_flight` at a time.
async fn send_all(
    door: Door,
    events: impl futures::Stream<Item = v1::LifeEvent> + Send + 'static,
    in_flight: usize,
    mut on_verdict: impl FnMut(Verdict),
) -> anyhow::Result<()> {
    match door {
        Door::Grpc(mut client) => {
            let ids = std::sync::Arc::new(std::sync::Mutex::new(HashMap::new()));
            let ids_in = ids.clone();
            let requests = events.enumerate().map(move |(i, event)| {
                if let Ok(mut ids) = ids_in.lock() {
                    ids.insert(i as u64, event.id.clone());
                }
                PublishRequest {
                    event: Some(publish_request::Event::LifeEvent(event)),
                    sequence: i as u64,
                }
            });
            let mut answers = client.publish_stream(requests).await?.into_inner();
            while let Some(answer) = answers.next().await {
                let answer = answer?;
                let id = ids
                    .lock()
                    .ok()
                    .and_then(|mut ids| ids.remove(&answer.sequence))
                    .unwrap_or_default();
                on_verdict(Verdict::from_response(&id, answer));
            }
        }
        Door::Nats {
            client,
            inbox,
            mut verdicts,
        } => {
            let js = async_nats::jetstream::new(client.clone());
            let mut events = Box::pin(events);
            let mut outstanding = 0usize;
            let mut done = false;
            loop {
                // Keep up to `in_flight` events awaiting their verdict.
                while !done && outstanding < in_flight {
                    let Some(event) = events.next().await else {
                        done = true;
                        break;
                    };
                    let Input::Nats {
                        subject,
                        headers,
                        body,
                    } = encode_binary_protobuf(&event)
                    else {
                        anyhow::bail!("a life event always encodes as a NATS message");
                    };
                    let mut map = async_nats::HeaderMap::new();
                    for (name, value) in headers {
                        map.append(name.as_str(), value.as_str());
                    }
                    map.insert(REPLY_TO_HEADER, inbox.as_str());
                    js.publish_with_headers(subject, map, body.into())
                        .await?
                        .await
                        .context("the ingest stream did not acknowledge the capture")?;
                    outstanding += 1;
                }
                if outstanding == 0 {
                    break;
                }
                let message = tokio::time::timeout(Duration::from_secs(30), verdicts.next())
                    .await
                    .context("no verdict from the gateway within 30 s; is it running?")?
                    .context("the verdict subscription closed")?;
                let response: PublishResponse = serde_json::from_slice(&message.payload)?;
                outstanding -= 1;
                on_verdict(Verdict::from_response("", response));
            }
        }
    }
    Ok(())
}

pub async fn publish(
    nats_url: &str,
    args: PublishArgs,
    output: Output,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    let seed = args.seed.unwrap_or_else(rand::random);
    let mut generator = Generator::new(seed, registry_day(), args.source.clone());
    let mut event = generator.valid(args.kind);
    if let Some(id) = args.id {
        event.id = id;
    }
    if let Some(insz) = &args.insz {
        event.subject = insz.clone();
    }
    if let Some(person) = main_person(&mut event) {
        if let Some(insz) = args.insz {
            person.insz = insz;
        }
        if let Some(date) = args.date_of_birth {
            person.date_of_birth = date;
        }
    }
    let door = Door::connect(&args.doors, nats_url).await?;
    let mut verdict = None;
    match door {
        Door::Grpc(mut client) => {
            let request = PublishRequest {
                event: Some(publish_request::Event::LifeEvent(event.clone())),
                sequence: 0,
            };
            verdict = Some(match client.publish(request).await {
                Ok(response) => Verdict::from_response(&event.id, response.into_inner()),
                Err(status) if status.code() == tonic::Code::InvalidArgument => {
                    Verdict::from_status(&event.id, &status)
                }
                Err(status) => return Err(status.into()),
            });
        }
        door @ Door::Nats { .. } => {
            let one = futures::stream::iter([event.clone()]);
            send_all(door, one, 1, |v| verdict = Some(v)).await?;
        }
    }
    let verdict = verdict.context("no verdict")?;
    match output {
        Output::Json => writeln!(out, "{}", verdict.json())?,
        Output::Table => {
            writeln!(out, "{}  {}", event.id, crate::render::describe(&event))?;
            match verdict.outcome {
                PublishOutcome::Rejected => writeln!(
                    out,
                    "REJECTED  {} {}: {}",
                    verdict.reason_code, verdict.field, verdict.reason
                )?,
                outcome => writeln!(
                    out,
                    "{}  saga {}{}",
                    outcome.as_str_name().trim_start_matches("PUBLISH_OUTCOME_"),
                    verdict.saga_id,
                    if verdict.note.is_empty() {
                        String::new()
                    } else {
                        format!("  ({})", verdict.note)
                    }
                )?,
            }
        }
    }
    Ok(())
}

/// The day the generated events are registered: yesterday, so that an event's time (office
/// hours of that day) is never in the future and the same seed makes the same events all day.
fn registry_day() -> chrono::NaiveDate {
    let today = chrono::Utc::now().date_naive();
    today.pred_opt().unwrap_or(today)
}

/// The person an event is about, to apply `--insz` and `--date-of-birth` to.
fn main_person(event: &mut v1::LifeEvent) -> Option<&mut v1::Person> {
    use v1::life_event::Payload;
    match event.payload.as_mut()? {
        Payload::Birth(b) => b.child.as_mut(),
        Payload::Death(d) => d.deceased.as_mut(),
        Payload::ChangeOfAddress(m) => m.person.as_mut(),
        Payload::DrivingExamPassed(x) => x.candidate.as_mut(),
    }
}

/// How many recent events the simulator picks its duplicates from.
const DUPLICATE_WINDOW: usize = 10_000;

/// The simulator's tally.
#[derive(Debug, Default)]
struct Tally {
    sent: u64,
    accepted: u64,
    duplicate: u64,
    rejected: u64,
    by_reason: HashMap<String, u64>,
}

pub async fn simulate(
    nats_url: &str,
    args: SimulateArgs,
    output: Output,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    anyhow::ensure!(
        (0.0..=1.0).contains(&args.duplicates),
        "--duplicates is a share between 0 and 1"
    );
    anyhow::ensure!(
        (0.0..=1.0).contains(&args.invalid),
        "--invalid is a share between 0 and 1"
    );
    let door = Door::connect(&args.doors, nats_url).await?;
    let started = Instant::now();
    let (count, rate) = (args.count, args.rate);
    let mut generator = Generator::new(args.seed, registry_day(), args.source.clone());
    let mix = args.mix;
    let (duplicates, invalid) = (args.duplicates, args.invalid);
    // The decisions use their own seeded stream so the events themselves stay reproducible.
    let mut dice = <rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(args.seed ^ 0x5eed);
    let mut sent: Vec<v1::LifeEvent> = Vec::new();
    let events = futures::stream::iter(0..count).then(move |n| {
        let event = {
            use rand::RngExt;
            if !sent.is_empty() && dice.random_bool(duplicates) {
                let pick = dice.random_range(0..sent.len());
                sent[pick].clone()
            } else {
                let kind = generator.kind(&mix);
                let event = if dice.random_bool(invalid) {
                    generator.invalid(kind).0
                } else {
                    generator.valid(kind)
                };
                // Duplicates are drawn from a bounded window of recent events: a long run
                // keeps constant memory.
                if sent.len() < DUPLICATE_WINDOW {
                    sent.push(event.clone());
                } else {
                    let slot = dice.random_range(0..DUPLICATE_WINDOW);
                    sent[slot] = event.clone();
                }
                event
            }
        };
        async move {
            if rate > 0 {
                // Pace against the start, so a slow moment is caught up rather than lost.
                let due = started + Duration::from_secs_f64(n as f64 / rate as f64);
                tokio::time::sleep_until(due.into()).await;
            }
            event
        }
    });
    let mut tally = Tally::default();
    let mut last_report = Instant::now();
    let table = output == Output::Table;
    let mut progress = std::io::stderr();
    send_all(door, events, args.in_flight, |v| {
        tally.sent += 1;
        match v.outcome {
            PublishOutcome::Accepted => tally.accepted += 1,
            PublishOutcome::Duplicate => tally.duplicate += 1,
            _ => {
                tally.rejected += 1;
                *tally.by_reason.entry(v.reason_code.clone()).or_default() += 1;
            }
        }
        if table && last_report.elapsed() >= Duration::from_secs(1) {
            last_report = Instant::now();
            let _ = writeln!(
                progress,
                "  {}/{count} answered: {} accepted, {} duplicate, {} rejected",
                tally.sent, tally.accepted, tally.duplicate, tally.rejected
            );
        }
    })
    .await?;
    let elapsed = started.elapsed().as_secs_f64();
    let mut reasons: Vec<_> = tally.by_reason.iter().collect();
    reasons.sort();
    match output {
        Output::Json => writeln!(
            out,
            "{}",
            serde_json::json!({
                "sent": tally.sent, "accepted": tally.accepted, "duplicate": tally.duplicate,
                "rejected": tally.rejected, "rejected_by_reason": tally.by_reason,
                "seconds": elapsed, "events_per_s": tally.sent as f64 / elapsed,
            })
        )?,
        Output::Table => {
            writeln!(
                out,
                "{} events in {elapsed:.1} s ({:.0}/s): {} accepted, {} duplicate, {} rejected",
                tally.sent,
                tally.sent as f64 / elapsed,
                tally.accepted,
                tally.duplicate,
                tally.rejected
            )?;
            for (reason, n) in reasons {
                writeln!(out, "  rejected {reason}: {n}")?;
            }
        }
    }
    Ok(())
}
