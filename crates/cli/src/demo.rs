//! `levensloop demo`: watch four life events become government action.
//!
//! Publishes one birth (in Gent, which pays a municipal birth premium), one death, one move
//! and one passed driving exam through the gateway, as a registry would, with fresh people
//! each run. Then it follows each saga in the store and prints its timeline as it happens:
//! the act verified, the birth premium granted, the police check answered, the card
//! ordered. Where the sagas then wait for dates months away (the Boekstart package at six
//! months, the inheritance deadline at four), `--advance auto` moves the sagas' shared
//! clock forward to the last of those dates — honoured only by an orchestrator started
//! with `--time-travel`, as `infra/just up` starts it — and the demo prints the rest until
//! every saga has completed.

use crate::Output;
use crate::render;
use crate::saga::line;
use anyhow::Context as _;
use levensloop_bus::ClockOffset;
use levensloop_cli::generate::{Generator, Kind};
use levensloop_proto::stored;
use levensloop_proto::v1::ingest_service_client::IngestServiceClient;
use levensloop_proto::v1::{
    self, PublishOutcome, PublishRequest, publish_request, saga_event::Event,
};
use levensloop_store::{EventStore, JetStreamStore, ReadFrom, StoreError, StreamName, Version};
use prost::Message;
use std::io::Write;
use std::time::{Duration, Instant};

const SOURCE: &str = "urn:be:levensloop:demo";
/// How often the store is read for new saga events.
const POLL: Duration = Duration::from_millis(200);
/// A saga with no new event for this long is waiting (for a date or a person).
const QUIET: Duration = Duration::from_secs(2);

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Advance {
    /// Move the sagas' clock to the last date the demo's sagas wait for.
    Auto,
    /// Leave the clock alone: the sagas wait for their dates in real time.
    Off,
}

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The gateway's gRPC address.
    #[arg(
        long,
        env = "LEVENSLOOP_GATEWAY_URL",
        default_value = "http://127.0.0.1:50051"
    )]
    gateway_url: String,
    /// Whether to move the sagas' shared clock past the dates they wait for.
    #[arg(long, value_enum, default_value_t = Advance::Auto)]
    advance: Advance,
    /// How long to follow the sagas before giving up, in seconds.
    #[arg(long, default_value_t = 90)]
    timeout_s: u64,
    /// Seed for the sample people (a new one each run by default).
    #[arg(long)]
    seed: Option<u64>,
}

/// One sample saga being followed.
struct Followed {
    label: &'static str,
    event: v1::LifeEvent,
    saga: uuid::Uuid,
    events: Vec<v1::SagaEvent>,
    version: Option<Version>,
    last_change: Instant,
    terminal: Option<String>,
}

impl Followed {
    /// Waits started and not yet over: (step, until).
    fn open_waits(&self) -> Vec<(String, chrono::DateTime<chrono::Utc>)> {
        let mut open = Vec::new();
        for e in &self.events {
            match &e.event {
                Some(Event::WaitStarted(w)) => {
                    if let Some(until) = w
                        .until
                        .as_ref()
                        .and_then(|t| chrono::DateTime::from_timestamp(t.seconds, 0))
                    {
                        open.push((w.step_id.clone(), until));
                    }
                }
                Some(Event::WaitElapsed(w)) => open.retain(|(s, _)| *s != w.step_id),
                _ => {}
            }
        }
        open
    }
}

/// The four samples: fresh, valid people; the birth in Gent, which pays a birth premium, and
/// the death in Gent, whose library may have registered a handler.
fn samples(seed: u64) -> Vec<(&'static str, v1::LifeEvent)> {
    let today = chrono::Utc::now().date_naive();
    let day = today.pred_opt().unwrap_or(today);
    let mut generator = Generator::new(seed, day, SOURCE.to_owned());
    let gent = |number: &str| v1::Address {
        thoroughfare: "Korenmarkt".into(),
        house_number: number.into(),
        post_code: "9000".into(),
        municipality_name: "Gent".into(),
        municipality_nis_code: "44021".into(),
        country_code: "BE".into(),
        ..Default::default()
    };
    let mut birth = generator.valid(Kind::Birth);
    if let Some(v1::life_event::Payload::Birth(b)) = birth.payload.as_mut() {
        b.registered_address = Some(gent("12"));
        b.place_of_birth_nis_code = "44021".into();
    }
    // A death in Gent too: where the example integrator (Gent's library) takes part.
    let mut death = generator.valid(Kind::Death);
    if let Some(v1::life_event::Payload::Death(d)) = death.payload.as_mut() {
        d.registered_address = Some(gent("31"));
    }
    vec![
        ("birth", birth),
        ("death", death),
        ("move", generator.valid(Kind::Move)),
        ("licence", generator.valid(Kind::DrivingExam)),
    ]
}

pub async fn run(
    store: &JetStreamStore,
    args: Args,
    output: Output,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    let table = output == Output::Table;
    let seed = args.seed.unwrap_or_else(rand::random);
    let mut gateway = IngestServiceClient::connect(args.gateway_url.clone())
        .await
        .with_context(|| {
            format!(
                "cannot reach the gateway at {}; is it running? `infra/just up` starts it",
                args.gateway_url
            )
        })?;
    if table {
        writeln!(out, "== publishing four life events through the gateway")?;
    }
    let mut followed = Vec::new();
    for (label, event) in samples(seed) {
        let description = render::describe(&event);
        let answer = gateway
            .publish(PublishRequest {
                event: Some(publish_request::Event::LifeEvent(event.clone())),
                sequence: 0,
            })
            .await;
        let response = match answer {
            Ok(r) => r.into_inner(),
            Err(status) => {
                writeln!(out, "  {label:<8} refused: {}", status.message())?;
                continue;
            }
        };
        let outcome =
            PublishOutcome::try_from(response.outcome).unwrap_or(PublishOutcome::Unspecified);
        if table {
            writeln!(
                out,
                "  {label:<8} {description}: {} → saga {}",
                outcome
                    .as_str_name()
                    .trim_start_matches("PUBLISH_OUTCOME_")
                    .to_lowercase(),
                response.saga_id
            )?;
        }
        let Ok(saga) = response.saga_id.parse() else {
            continue;
        };
        followed.push(Followed {
            label,
            event,
            saga,
            events: Vec::new(),
            version: None,
            last_change: Instant::now(),
            terminal: None,
        });
    }
    anyhow::ensure!(!followed.is_empty(), "the gateway accepted no sample event");

    if table {
        writeln!(out, "\n== the sagas, as they happen")?;
    }
    let clock = ClockOffset::open(&async_nats::jetstream::new(store.client().clone()), 1).await?;
    let deadline = Instant::now() + Duration::from_secs(args.timeout_s);
    let mut advanced = false;
    let mut hinted = false;
    while followed.iter().any(|f| f.terminal.is_none()) {
        anyhow::ensure!(
            Instant::now() < deadline,
            "not done after {} s: {}; is the orchestrator running (with --time-travel), and the \
             workers (with --clerk)? `infra/just up` starts both",
            args.timeout_s,
            followed
                .iter()
                .filter(|f| f.terminal.is_none())
                .map(|f| format!("{} saga {}", f.label, f.saga))
                .collect::<Vec<_>>()
                .join(", ")
        );
        for f in followed.iter_mut().filter(|f| f.terminal.is_none()) {
            for e in read_new(store, f).await? {
                if table {
                    writeln!(out, "  {:<8} {}", f.label, timeline_line(&e))?;
                }
                if let Some(end) = terminal(&e) {
                    f.terminal = Some(end);
                }
                f.events.push(e);
                f.last_change = Instant::now();
            }
        }
        let running: Vec<&Followed> = followed.iter().filter(|f| f.terminal.is_none()).collect();
        let quiet = !running.is_empty() && running.iter().all(|f| f.last_change.elapsed() > QUIET);
        if quiet {
            let last_wait = running
                .iter()
                .flat_map(|f| f.open_waits())
                .map(|(_, u)| u)
                .max();
            match last_wait {
                Some(until) if args.advance == Advance::Auto && !advanced => {
                    let offset = clock.get().await?;
                    let sagas_now = chrono::Utc::now() + chrono::Duration::seconds(offset);
                    let ahead = (until - sagas_now).num_seconds() + 60;
                    if ahead > 0 {
                        let total = clock.advance(ahead).await?;
                        if table {
                            writeln!(
                                out,
                                "\n== the sagas now wait for dates up to {}: moving their clock \
                                 forward {} days (it now runs {} days ahead)\n",
                                until.format("%Y-%m-%d"),
                                ahead / 86_400,
                                total / 86_400
                            )?;
                        }
                    }
                    advanced = true;
                }
                _ if !hinted => {
                    hinted = true;
                    if table {
                        writeln!(
                            out,
                            "  … waiting{}",
                            if advanced {
                                " (if this lasts, the orchestrator is not following the \
                                 shared clock: start it with --time-travel)"
                            } else {
                                " (for a date, or for a person on a work list: start the \
                                 workers with --clerk to answer those)"
                            }
                        )?;
                    }
                }
                _ => {}
            }
        }
        tokio::time::sleep(POLL).await;
    }

    if table {
        writeln!(out, "\n== outcome")?;
    }
    for f in &followed {
        let steps = f
            .events
            .iter()
            .filter(|e| matches!(e.event, Some(Event::StepSucceeded(_))))
            .count();
        match output {
            Output::Table => {
                writeln!(
                    out,
                    "  {:<8} {} — {} after {} steps (saga {})",
                    f.label,
                    render::describe(&f.event),
                    f.terminal.as_deref().unwrap_or("running"),
                    steps,
                    f.saga
                )?;
                if let Some(premium) = premium(&f.events) {
                    writeln!(
                        out,
                        "           the municipal birth premium: granted, {premium}"
                    )?;
                }
            }
            Output::Json => writeln!(
                out,
                "{}",
                serde_json::json!({
                    "life_event": f.label,
                    "event_id": f.event.id,
                    "saga_id": f.saga.to_string(),
                    "status": f.terminal,
                    "steps_succeeded": steps,
                    "events": f.events.len(),
                })
            )?,
        }
    }
    if table {
        writeln!(
            out,
            "\n  `levensloop saga show ID` prints a saga's timeline (`levensloop timeline ID` from the store alone)."
        )?;
    }
    Ok(())
}

/// The saga events stored since the last read.
async fn read_new(store: &JetStreamStore, f: &mut Followed) -> anyhow::Result<Vec<v1::SagaEvent>> {
    let stream = StreamName::new(stored::SAGA_CATEGORY, f.saga.to_string())?;
    let from = f.version.map_or(ReadFrom::Start, ReadFrom::After);
    let slice = match store.read(&stream, from).await {
        Ok(slice) => slice,
        // The orchestrator has not started it yet.
        Err(StoreError::StreamNotFound { .. }) => return Ok(Vec::new()),
        Err(e) => return Err(e.into()),
    };
    f.version = Some(slice.version);
    slice
        .events
        .iter()
        .map(|r| v1::SagaEvent::decode(r.data.as_ref()))
        .collect::<Result<Vec<_>, _>>()
        .context("a stored saga event does not decode")
}

/// A timeline line with the saga's time and, for a success, what the handler reported.
fn timeline_line(e: &v1::SagaEvent) -> String {
    let when = e
        .occurred_at
        .as_ref()
        .and_then(|t| chrono::DateTime::from_timestamp(t.seconds, t.nanos.max(0) as u32))
        .map(|t| t.format("%Y-%m-%d %H:%M:%S%.3f").to_string())
        .unwrap_or_default();
    let mut text = format!("{when}  {}", line(e));
    if let Some(Event::StepSucceeded(s)) = &e.event
        && let Some(case) = case_number(s)
    {
        text.push_str(&format!("  [{case}]"));
    }
    text
}

/// The saga's end, if `e` ends it.
fn terminal(e: &v1::SagaEvent) -> Option<String> {
    match &e.event {
        Some(Event::SagaCompleted(_)) => Some("COMPLETED".into()),
        Some(Event::SagaCompensated(s)) => Some(format!("COMPENSATED after {}", s.failed_step_id)),
        Some(Event::SagaFailed(s)) => Some(format!("FAILED: {}", s.reason)),
        Some(Event::SagaCancelled(s)) => Some(format!("CANCELLED: {}", s.reason)),
        _ => None,
    }
}

/// The case number a handler reported for a step.
fn case_number(s: &v1::StepSucceeded) -> Option<String> {
    match &s.result.as_ref()?.fields.get("case_number")?.kind {
        Some(levensloop_proto::types::value::Kind::StringValue(c)) => Some(c.clone()),
        _ => None,
    }
}

/// The case number of a granted municipal birth premium.
fn premium(events: &[v1::SagaEvent]) -> Option<String> {
    events.iter().find_map(|e| match &e.event {
        Some(Event::StepSucceeded(s)) if s.step_id == "municipal-birth-premium" => Some(
            case_number(s)
                .map_or_else(|| "no case number reported".into(), |c| format!("case {c}")),
        ),
        _ => None,
    })
}
