//! Shared by the read model's tests: a fresh database of either backend, and synthetic sagas
//! whose outcome, handlers and latencies are known in advance.
#![allow(dead_code)]

use chrono::{DateTime, Duration, Utc};
use levensloop_operations::readmodel::{ReadModel, SagaCommit};
use levensloop_proto::types::Timestamp;
use levensloop_proto::v1;
use levensloop_proto::v1::saga_event::Event;
use sqlx::Connection;
use uuid::Uuid;

/// Where the PostgreSQL tests create their databases.
pub const POSTGRES_ENV: &str = "LEVENSLOOP_TEST_POSTGRES";
pub const POSTGRES_DEFAULT: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// A fresh, empty database for one test; dropped (PostgreSQL) or deleted (SQLite) with it.
pub enum TestDb {
    Sqlite {
        dir: tempfile::TempDir,
        url: String,
    },
    Postgres {
        admin_url: String,
        name: String,
        url: String,
    },
}

impl TestDb {
    pub fn sqlite() -> Self {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let url = format!("sqlite://{}", dir.path().join("readmodel.db").display());
        TestDb::Sqlite { dir, url }
    }

    /// A new database on the test server. Fails the test, saying why, when the server cannot
    /// be reached: these tests are never skipped.
    pub async fn postgres() -> Self {
        let admin_url = std::env::var(POSTGRES_ENV).unwrap_or_else(|_| POSTGRES_DEFAULT.into());
        let mut admin = sqlx::PgConnection::connect(&admin_url)
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "PostgreSQL is needed for this test and is not reachable at {admin_url} ({e}); \
                 start it, or point {POSTGRES_ENV} at one where this user may create databases"
                )
            });
        let name = format!("levensloop_test_{}", Uuid::new_v4().simple());
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut admin)
            .await
            .unwrap_or_else(|e| panic!("cannot create database {name} at {admin_url}: {e}"));
        admin.close().await.ok();
        let url = with_database(&admin_url, &name);
        TestDb::Postgres {
            admin_url,
            name,
            url,
        }
    }

    pub fn url(&self) -> &str {
        match self {
            TestDb::Sqlite { url, .. } | TestDb::Postgres { url, .. } => url,
        }
    }

    pub async fn open(&self) -> ReadModel {
        ReadModel::open(self.url())
            .await
            .unwrap_or_else(|e| panic!("opening {}: {e}", self.url()))
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let TestDb::Postgres {
            admin_url, name, ..
        } = self
        else {
            return;
        };
        let (admin_url, name) = (admin_url.clone(), name.clone());
        // Drop runs outside any runtime we could block on: use a thread with its own.
        let dropped = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?;
            rt.block_on(async {
                let mut admin = sqlx::PgConnection::connect(&admin_url)
                    .await
                    .map_err(|e| e.to_string())?;
                sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                    .execute(&mut admin)
                    .await
                    .map_err(|e| e.to_string())?;
                Ok::<_, String>(())
            })
        })
        .join();
        if let Ok(Err(e)) = dropped {
            eprintln!("could not drop a test database: {e}");
        }
    }
}

/// `url` with its database name replaced.
fn with_database(url: &str, name: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let scheme_end = base.find("://").map_or(0, |i| i + 3);
    let host_part = &base[scheme_end..];
    let host = host_part.split('/').next().unwrap_or(host_part);
    let mut out = format!("{}{}/{}", &base[..scheme_end], host, name);
    if let Some(q) = query {
        out.push('?');
        out.push_str(q);
    }
    out
}

/// Runs a test body against a fresh database of each backend.
#[macro_export]
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        $(
            mod $name {
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn sqlite() {
                    let db = $crate::common::TestDb::sqlite();
                    super::$name(&db).await;
                }

                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn postgres() {
                    let db = $crate::common::TestDb::postgres().await;
                    super::$name(&db).await;
                }
            }
        )*
    };
}

/// A small deterministic random generator (SplitMix64): the same sagas on every run.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n`.
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

pub const MUNICIPALITIES: [&str; 20] = [
    "11002", "44021", "24062", "31005", "71016", "12025", "13040", "23088", "34022", "35013",
    "36015", "37015", "41002", "42006", "43014", "45041", "46021", "57081", "62063", "73042",
];

/// A step of a synthetic definition: its id, handler and compensation handler, if any.
pub struct StepDef {
    pub id: &'static str,
    pub handler: &'static str,
    pub compensation: Option<&'static str>,
    /// The handler's typical latency, in milliseconds.
    pub typical_ms: f64,
}

const fn step(
    id: &'static str,
    handler: &'static str,
    compensation: Option<&'static str>,
    typical_ms: f64,
) -> StepDef {
    StepDef {
        id,
        handler,
        compensation,
        typical_ms,
    }
}

pub fn definition(kind: v1::LifeEventType) -> &'static [StepDef] {
    const BIRTH: &[StepDef] = &[
        step("validate", "magda.validate", None, 40.0),
        step(
            "premium",
            "gemeente.premie",
            Some("gemeente.premie.recover"),
            900.0,
        ),
        step(
            "mutuality",
            "mutualiteit.notify",
            Some("mutualiteit.retract"),
            300.0,
        ),
        step("welcome", "ebox.message", None, 150.0),
    ];
    const DEATH: &[StepDef] = &[
        step("validate", "magda.validate", None, 40.0),
        step("pension", "pensioen.observe", None, 2_000.0),
        step("waste", "diftar.close", Some("diftar.reopen"), 700.0),
        step("library", "bib.close", Some("bib.reopen"), 120.0),
        step("message", "ebox.message", None, 150.0),
    ];
    const MOVE: &[StepDef] = &[
        step("validate", "adres.validate", None, 25.0),
        step("police", "politie.check", None, 86_400_000.0),
        step("parking", "parking.card", Some("parking.revoke"), 500.0),
        step("message", "ebox.message", None, 150.0),
    ];
    const DRIVING: &[StepDef] = &[
        step("match", "magda.validate", None, 40.0),
        step(
            "prefill",
            "rijbewijs.prefill",
            Some("rijbewijs.void"),
            250.0,
        ),
        step(
            "payment",
            "betaling.charge",
            Some("betaling.refund"),
            1_200.0,
        ),
        step("message", "ebox.message", None, 150.0),
    ];
    match kind {
        v1::LifeEventType::Birth => BIRTH,
        v1::LifeEventType::Death => DEATH,
        v1::LifeEventType::ChangeOfAddress => MOVE,
        _ => DRIVING,
    }
}

pub const TYPES: [v1::LifeEventType; 4] = [
    v1::LifeEventType::Birth,
    v1::LifeEventType::Death,
    v1::LifeEventType::ChangeOfAddress,
    v1::LifeEventType::DrivingExamPassed,
];

/// How a synthetic saga goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Completed,
    /// A step is out with its handler.
    Running,
    /// A step failed and waits for its retry.
    Retrying,
    Parked,
    /// A step failed for good; the last done step is being undone.
    Compensating,
    Compensated,
    /// A compensation failed for good: incident, saga failed.
    Failed,
    Cancelled,
}

impl Outcome {
    pub fn status(self) -> v1::SagaStatus {
        match self {
            Outcome::Completed => v1::SagaStatus::Completed,
            Outcome::Running | Outcome::Retrying => v1::SagaStatus::Running,
            Outcome::Parked => v1::SagaStatus::Parked,
            Outcome::Compensating => v1::SagaStatus::Compensating,
            Outcome::Compensated => v1::SagaStatus::Compensated,
            Outcome::Failed => v1::SagaStatus::Failed,
            Outcome::Cancelled => v1::SagaStatus::Cancelled,
        }
    }
}

/// A synthetic saga: its facts, its events, and what a correct read model must say of it.
#[derive(Debug, Clone)]
pub struct Synthetic {
    pub saga_id: Uuid,
    pub kind: v1::LifeEventType,
    pub municipality: &'static str,
    pub person: String,
    pub started_at: DateTime<Utc>,
    pub outcome: Outcome,
    pub events: Vec<v1::SagaEvent>,
    /// Every handler given work (steps and compensations).
    pub handlers: Vec<&'static str>,
    /// Every attempt that ended: (handler, duration in microseconds).
    pub attempts: Vec<(&'static str, i64)>,
    /// Incidents left open: (id, raised at).
    pub open_incidents: Vec<(String, DateTime<Utc>)>,
}

impl Synthetic {
    pub fn commit(&self) -> SagaCommit {
        SagaCommit {
            saga_id: self.saga_id,
            version: self.events.len() as u64,
            events: self.events.clone(),
        }
    }
}

pub fn epoch() -> DateTime<Utc> {
    DateTime::from_timestamp(1_767_225_600, 0).expect("2026-01-01")
}

pub fn timestamp(at: DateTime<Utc>) -> Timestamp {
    levensloop_operations::summary::to_timestamp(at)
}

/// Builds saga number `i` of a data set of `persons` people: about 60 % complete, the rest
/// running, retrying, parked, compensating, compensated, failed or cancelled; start times on
/// whole minutes over a year, so some sagas share one.
pub fn synthetic(rng: &mut Rng, i: u64, persons: u64) -> Synthetic {
    let saga_id = Uuid::new_v5(&Uuid::NAMESPACE_OID, format!("saga-{i}").as_bytes());
    let kind = TYPES[rng.below(4) as usize];
    let municipality = MUNICIPALITIES[rng.below(20) as usize];
    let person = format!("{:011}", 80_000_000_000u64 + rng.below(persons));
    let started_at = epoch() + Duration::minutes(rng.below(365 * 24 * 60) as i64);
    let roll = rng.below(100);
    let outcome = match roll {
        0..60 => Outcome::Completed,
        60..70 => Outcome::Running,
        70..73 => Outcome::Retrying,
        73..76 => Outcome::Parked,
        76..79 => Outcome::Compensating,
        79..86 => Outcome::Compensated,
        86..89 => Outcome::Failed,
        _ => Outcome::Cancelled,
    };
    let steps = definition(kind);
    let mut b = Builder {
        saga_id,
        at: started_at,
        events: Vec::new(),
        handlers: Vec::new(),
        attempts: Vec::new(),
        open_incidents: Vec::new(),
    };
    b.push(Event::SagaStarted(v1::SagaStarted {
        life_event_id: format!("le-{i}"),
        life_event_source: "urn:be:test".into(),
        life_event_type: kind.cloudevents_type().unwrap_or_default().into(),
        definition: format!("{kind:?}").to_lowercase(),
        definition_version: 1,
        planned_steps: steps.iter().map(|s| s.id.to_owned()).collect(),
        person_insz: person.clone(),
        municipality_nis_code: municipality.into(),
        handlers: Vec::new(),
    }));
    // How many steps succeed first: all for a completed saga; for the others at least one
    // with a compensation (so there is something to undo) and never all.
    let first_compensable = steps
        .iter()
        .position(|s| s.compensation.is_some())
        .unwrap_or(0);
    let done = match outcome {
        Outcome::Completed => steps.len(),
        Outcome::Compensating | Outcome::Compensated | Outcome::Failed => {
            first_compensable + 1 + rng.below((steps.len() - first_compensable - 1) as u64) as usize
        }
        _ => rng.below(steps.len() as u64) as usize,
    };
    for s in &steps[..done] {
        b.attempt(rng, s, Ok(()));
    }
    let undo = |b: &mut Builder, rng: &mut Rng, fail_last: bool| {
        let to_undo: Vec<&StepDef> = steps[..done]
            .iter()
            .rev()
            .filter(|s| s.compensation.is_some())
            .collect();
        for (k, s) in to_undo.iter().enumerate() {
            let fail = fail_last && k == 0;
            b.compensation(rng, s, fail);
            if fail {
                return;
            }
        }
    };
    match outcome {
        Outcome::Completed => b.push(Event::SagaCompleted(v1::SagaCompleted {})),
        Outcome::Running => b.schedule(&steps[done], 1),
        Outcome::Retrying => {
            b.attempt(rng, &steps[done], Err(true));
        }
        Outcome::Parked => {
            b.schedule(&steps[done], 1);
            b.push(Event::SagaParked(v1::SagaParked {
                reason: "the person died".into(),
                cause_saga_id: Uuid::nil().to_string(),
            }));
        }
        Outcome::Compensating | Outcome::Compensated | Outcome::Failed => {
            b.attempt(rng, &steps[done], Err(false));
            match outcome {
                Outcome::Compensating => {
                    let last = steps[..done]
                        .iter()
                        .rev()
                        .find(|s| s.compensation.is_some())
                        .expect("a compensable step is done");
                    b.push(Event::StepCompensationScheduled(
                        v1::StepCompensationScheduled {
                            step_id: last.id.into(),
                            handler: last.compensation.unwrap_or_default().into(),
                            attempt: 1,
                            ..Default::default()
                        },
                    ));
                    b.handlers.extend(last.compensation);
                }
                Outcome::Compensated => {
                    undo(&mut b, rng, false);
                    b.push(Event::SagaCompensated(v1::SagaCompensated {
                        failed_step_id: steps[done].id.into(),
                    }));
                }
                _ => undo(&mut b, rng, true),
            }
        }
        Outcome::Cancelled => {
            b.push(Event::SagaCancelled(v1::SagaCancelled {
                reason: "registered by mistake".into(),
                actor: "op-1".into(),
                cause_saga_id: String::new(),
            }));
            if steps[..done].iter().any(|s| s.compensation.is_some()) {
                undo(&mut b, rng, false);
                b.push(Event::SagaCompensated(v1::SagaCompensated {
                    failed_step_id: String::new(),
                }));
            }
        }
    }
    let mut handlers = b.handlers;
    handlers.sort_unstable();
    handlers.dedup();
    Synthetic {
        saga_id,
        kind,
        municipality,
        person,
        started_at,
        outcome,
        events: b.events,
        handlers,
        attempts: b.attempts,
        open_incidents: b.open_incidents,
    }
}

struct Builder {
    saga_id: Uuid,
    at: DateTime<Utc>,
    events: Vec<v1::SagaEvent>,
    handlers: Vec<&'static str>,
    attempts: Vec<(&'static str, i64)>,
    open_incidents: Vec<(String, DateTime<Utc>)>,
}

impl Builder {
    fn push(&mut self, event: Event) {
        self.events.push(v1::SagaEvent {
            saga_id: self.saga_id.to_string(),
            occurred_at: Some(timestamp(self.at)),
            causation_id: String::new(),
            correlation_id: String::new(),
            event: Some(event),
        });
    }

    /// A latency around the handler's typical one: log-uniform within ×/÷ 8, in µs.
    fn latency(rng: &mut Rng, typical_ms: f64) -> i64 {
        let factor = 2f64.powf(rng.unit() * 6.0 - 3.0);
        (typical_ms * factor * 1000.0) as i64
    }

    fn schedule(&mut self, s: &StepDef, attempt: u32) {
        self.push(Event::StepScheduled(v1::StepScheduled {
            step_id: s.id.into(),
            handler: s.handler.into(),
            attempt,
            ..Default::default()
        }));
        self.handlers.push(s.handler);
    }

    /// One attempt of `s`: it succeeds, or fails (retryable: a retry is scheduled).
    fn attempt(&mut self, rng: &mut Rng, s: &StepDef, result: Result<(), bool>) {
        self.schedule(s, 1);
        let took = Self::latency(rng, s.typical_ms);
        self.at += Duration::microseconds(took);
        self.attempts.push((s.handler, took));
        match result {
            Ok(()) => self.push(Event::StepSucceeded(v1::StepSucceeded {
                step_id: s.id.into(),
                attempt: 1,
                ..Default::default()
            })),
            Err(retryable) => {
                self.push(Event::StepFailed(v1::StepFailed {
                    step_id: s.id.into(),
                    attempt: 1,
                    retryable,
                    reason: "target unavailable".into(),
                    error_code: "TARGET_UNAVAILABLE".into(),
                    ..Default::default()
                }));
                if retryable {
                    self.push(Event::StepRetryScheduled(v1::StepRetryScheduled {
                        step_id: s.id.into(),
                        next_attempt: 2,
                        due_at: Some(timestamp(self.at + Duration::seconds(30))),
                    }));
                }
            }
        }
    }

    /// Undoes `s`; `fail`: the compensation fails for good (incident, saga failed).
    fn compensation(&mut self, rng: &mut Rng, s: &StepDef, fail: bool) {
        let Some(handler) = s.compensation else {
            return;
        };
        self.push(Event::StepCompensationScheduled(
            v1::StepCompensationScheduled {
                step_id: s.id.into(),
                handler: handler.into(),
                attempt: 1,
                ..Default::default()
            },
        ));
        self.handlers.push(handler);
        let took = Self::latency(rng, s.typical_ms);
        self.at += Duration::microseconds(took);
        self.attempts.push((handler, took));
        if fail {
            let incident_id = Uuid::new_v5(&self.saga_id, b"incident").to_string();
            self.push(Event::CompensationFailed(v1::CompensationFailed {
                step_id: s.id.into(),
                attempt: 1,
                reason: "account locked".into(),
            }));
            self.push(Event::IncidentRaised(v1::IncidentRaised {
                incident_id: incident_id.clone(),
                step_id: s.id.into(),
                reason: format!("the compensation of `{}` failed for good", s.id),
            }));
            self.push(Event::SagaFailed(v1::SagaFailed {
                reason: format!("the compensation of `{}` failed for good", s.id),
            }));
            self.open_incidents.push((incident_id, self.at));
        } else {
            self.push(Event::StepCompensated(v1::StepCompensated {
                step_id: s.id.into(),
                attempt: 1,
                ..Default::default()
            }));
        }
    }
}

/// `count` synthetic sagas over `persons` people.
pub fn dataset(seed: u64, count: u64, persons: u64) -> Vec<Synthetic> {
    let mut rng = Rng::new(seed);
    (0..count)
        .map(|i| synthetic(&mut rng, i, persons))
        .collect()
}
