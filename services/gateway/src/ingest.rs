//! Once-only storage of validated life events, shared by both doors.
//!
//! - One stored life event per `(source, id)`: the event goes to stream
//!   `lifeevent-<saga id>` with "must not exist", where the saga id is UUID v5 of source and id.
//!   The commit id is derived from the saga id and the event's content, so an identical retry
//!   is answered "duplicate" by the store itself; a different event under the same
//!   `(source, id)` conflicts, is compared with the stored one, and is refused as a
//!   conflicting duplicate (the first event stands).
//! - Person invariants, per INSZ, in stream `person-<uuid v5 of the INSZ>` (no national
//!   number in a subject name) with optimistic concurrency: a person who died cannot die again
//!   or move afterwards; a move to the address the person already has is accepted as a no-op
//!   that starts no saga. The fact is written before the life event, tagged with the saga id,
//!   so a retry of the same event finds its own fact and goes on.
//! - An administrative re-addressing (street renamed, municipalities merged) is stored and
//!   updates the person's address, but starts no saga.

use crate::rejection::Limits;
use crate::rejection::{Reason, Rejection};
use crate::validate::validate;
use chrono::{DateTime, Utc};
use levensloop_proto::{saga_id, v1};
use levensloop_store::{
    Commit, EventData, EventStore, ExpectedVersion, ReadFrom, StoreError, StreamName,
};
use prost::Message;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use uuid::Uuid;

pub use levensloop_proto::stored::{
    LIFE_EVENT_CATEGORY, LIFE_EVENT_TYPE, META_NO_SAGA_REASON, META_STARTS_SAGA, PERSON_CATEGORY,
};
/// Metadata: the content type the event arrived in, and the door it came through.
pub const META_CONTENT_TYPE: &str = "levensloop-received-content-type";
pub const META_ORIGIN: &str = "levensloop-origin";

/// How often the person check is retried when a concurrent writer got there first.
const PERSON_ATTEMPTS: usize = 8;

/// What happened to an event that was not refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ack {
    pub event_id: String,
    pub source: String,
    pub saga_id: Uuid,
    /// True when the same event had been stored before; nothing new was written.
    pub duplicate: bool,
    /// False for an event that is stored but starts no saga (see `note`).
    pub starts_saga: bool,
    pub note: String,
}

/// Why an event was not stored.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    /// The event was refused; the registry must fix it. Record it on the rejected stream.
    #[error("rejected: {0}")]
    Rejected(Rejection),
    /// The store could not be reached; nothing was decided. Retry the same event.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<Rejection> for IngestError {
    fn from(r: Rejection) -> Self {
        Self::Rejected(r)
    }
}

/// A fact about a person that an invariant depends on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "fact", rename_all = "snake_case")]
enum PersonFact {
    Died {
        saga_id: Uuid,
        date_of_death: String,
    },
    Moved {
        saga_id: Uuid,
        address: String,
        move_date: String,
    },
}

impl PersonFact {
    fn event_type(&self) -> &'static str {
        match self {
            PersonFact::Died { .. } => "levensloop.person.Died",
            PersonFact::Moved { .. } => "levensloop.person.Moved",
        }
    }
}

/// What the person stream says so far.
#[derive(Debug, Default)]
struct PersonState {
    died: Option<(Uuid, String)>,
    address: Option<String>,
    /// Facts already written by this saga (a retry of the same event).
    sagas: Vec<Uuid>,
}

/// The shared ingest path: validate, check the person, store once.
#[derive(Clone)]
pub struct Ingestor {
    store: Arc<dyn EventStore>,
    limits: Limits,
    clock: Arc<dyn Fn() -> DateTime<Utc> + Send + Sync>,
}

impl std::fmt::Debug for Ingestor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ingestor")
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

impl Ingestor {
    pub fn new(store: Arc<dyn EventStore>, limits: Limits) -> Self {
        Self {
            store,
            limits,
            clock: Arc::new(Utc::now),
        }
    }

    /// Replaces the clock (tests pin "now").
    pub fn with_clock(mut self, clock: impl Fn() -> DateTime<Utc> + Send + Sync + 'static) -> Self {
        self.clock = Arc::new(clock);
        self
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    pub fn store(&self) -> &Arc<dyn EventStore> {
        &self.store
    }

    /// Validates and stores a decoded life event. `origin` names the door ("grpc", or the NATS
    /// subject) for the record.
    pub async fn ingest(&self, mut event: v1::LifeEvent, origin: &str) -> Result<Ack, IngestError> {
        validate(&event, (self.clock)(), &self.limits)?;
        let saga = saga_id(&event.source, &event.id);
        // The same event may arrive as JSON on one door and protobuf on the other: the content
        // type it came in is kept as metadata, not as part of what is compared.
        let received_as = std::mem::take(&mut event.datacontenttype);
        let (starts_saga, note) = self.check_person(&event, saga).await?;

        let bytes = event.encode_to_vec();
        let commit_id = Uuid::new_v5(&saga, &bytes);
        let mut data = EventData::new(LIFE_EVENT_TYPE, bytes)
            .with_metadata(META_CONTENT_TYPE, received_as)
            .with_metadata(META_ORIGIN, origin);
        if !starts_saga {
            data = data
                .with_metadata(META_STARTS_SAGA, "false")
                .with_metadata(META_NO_SAGA_REASON, note.clone());
        }
        // The accepting span's trace context goes with the life event, so the saga it starts
        // continues the same trace (nothing is written when spans are not exported).
        levensloop_telemetry::propagation::inject_map(
            &tracing::Span::current(),
            &mut data.metadata,
        );
        let stream = StreamName::new(LIFE_EVENT_CATEGORY, saga.to_string())?;
        let ack = |duplicate| Ack {
            event_id: event.id.clone(),
            source: event.source.clone(),
            saga_id: saga,
            duplicate,
            starts_saga,
            note: note.clone(),
        };
        let started = std::time::Instant::now();
        let appended = self
            .store
            .append(
                &stream,
                ExpectedVersion::NoStream,
                Commit::new(commit_id, vec![data]),
            )
            .await;
        levensloop_telemetry::metrics::store().append(LIFE_EVENT_CATEGORY, started.elapsed());
        match appended {
            Ok(appended) => Ok(ack(appended.duplicate)),
            Err(StoreError::VersionConflict { .. }) => {
                // Stored before: the same event (a duplicate) or another one under the same
                // (source, id), which is refused and the first one stands.
                let stored = self.stored_event(&stream).await?;
                if stored == event {
                    Ok(ack(true))
                } else {
                    Err(Rejection::single(
                        "id",
                        Reason::ConflictingDuplicate,
                        format!(
                            "event {:?} from {:?} was stored before with different content \
                             (saga {saga}); the first event stands",
                            event.id, event.source
                        ),
                    )
                    .into())
                }
            }
            Err(e) => Err(e.into()),
        }
    }

    async fn stored_event(&self, stream: &StreamName) -> Result<v1::LifeEvent, IngestError> {
        let slice = self.store.read(stream, ReadFrom::Start).await?;
        let first = slice
            .events
            .first()
            .ok_or_else(|| StoreError::StreamNotFound {
                stream: stream.clone(),
            })?;
        v1::LifeEvent::decode(first.data.as_ref()).map_err(|e| {
            IngestError::Store(StoreError::Corrupt {
                location: stream.to_string(),
                reason: e.to_string(),
            })
        })
    }

    /// Applies the person invariants of deaths and moves; returns whether the event starts a
    /// saga and why not.
    async fn check_person(
        &self,
        event: &v1::LifeEvent,
        saga: Uuid,
    ) -> Result<(bool, String), IngestError> {
        use v1::life_event::Payload;
        let (person, fact, field) = match &event.payload {
            Some(Payload::Death(d)) => {
                let Some(person) = &d.deceased else {
                    return Ok((true, String::new()));
                };
                let fact = PersonFact::Died {
                    saga_id: saga,
                    date_of_death: d.date_of_death.clone(),
                };
                (person, fact, "death.deceased.insz")
            }
            Some(Payload::ChangeOfAddress(m)) => {
                let Some(person) = &m.person else {
                    return Ok((true, String::new()));
                };
                let fact = PersonFact::Moved {
                    saga_id: saga,
                    address: address_key(m.new_address.as_ref()),
                    move_date: m.move_date.clone(),
                };
                (person, fact, "change_of_address.person.insz")
            }
            _ => return Ok((true, String::new())),
        };
        let stream = person_stream(&person.insz)?;
        // Most people have no facts yet: the first attempt assumes so and appends with "must
        // not exist", saving a read; a conflict means there are facts, which are then read.
        let mut known = Some((PersonState::default(), ExpectedVersion::NoStream));
        for _ in 0..PERSON_ATTEMPTS {
            let (state, expected) = match known.take() {
                Some(assumed) => assumed,
                None => self.person_state(&stream, saga).await?,
            };
            if state.sagas.contains(&saga) {
                // A retry of an event whose fact is already written.
                return Ok(self.saga_decision(event, &state, &fact));
            }
            if let Some((death_saga, date)) = &state.died {
                let what = match fact {
                    PersonFact::Died { .. } => "cannot die again",
                    PersonFact::Moved { .. } => "cannot move afterwards",
                };
                return Err(Rejection::single(
                    field,
                    Reason::PersonDeceased,
                    format!("the person died on {date} (saga {death_saga}) and {what}"),
                )
                .into());
            }
            let (starts, note) = self.saga_decision(event, &state, &fact);
            let body = serde_json::to_vec(&fact).map_err(|e| StoreError::Corrupt {
                location: stream.to_string(),
                reason: e.to_string(),
            })?;
            let commit = Commit::new(
                Uuid::new_v5(&saga, b"person-fact"),
                vec![EventData::new(fact.event_type(), body)],
            );
            let started = std::time::Instant::now();
            let appended = self.store.append(&stream, expected, commit).await;
            levensloop_telemetry::metrics::store().append(PERSON_CATEGORY, started.elapsed());
            match appended {
                Ok(_) => return Ok((starts, note)),
                // Another event about the same person got there first: look again.
                Err(StoreError::VersionConflict { .. }) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(StoreError::Unavailable {
            reason: format!("person stream {stream} kept changing under concurrent writers"),
            source: None,
        }
        .into())
    }

    fn saga_decision(
        &self,
        event: &v1::LifeEvent,
        state: &PersonState,
        fact: &PersonFact,
    ) -> (bool, String) {
        use v1::life_event::Payload;
        let Some(Payload::ChangeOfAddress(m)) = &event.payload else {
            return (true, String::new());
        };
        let reason = v1::ChangeOfAddressReason::try_from(m.reason)
            .unwrap_or(v1::ChangeOfAddressReason::Unspecified);
        if !matches!(
            reason,
            v1::ChangeOfAddressReason::Move | v1::ChangeOfAddressReason::Unspecified
        ) {
            return (
                false,
                format!(
                    "administrative re-addressing ({}): not a move, no saga",
                    reason.as_str_name()
                ),
            );
        }
        let PersonFact::Moved { address, .. } = fact else {
            return (true, String::new());
        };
        let current = state
            .address
            .clone()
            .or_else(|| m.previous_address.as_ref().map(|a| address_key(Some(a))));
        if current.as_deref() == Some(address.as_str()) {
            return (
                false,
                "the person already lives at this address: accepted as a no-op".to_owned(),
            );
        }
        (true, String::new())
    }

    /// Folds the person's facts, leaving out those written by `own` (a retry of the same
    /// event decides as it did the first time).
    async fn person_state(
        &self,
        stream: &StreamName,
        own: Uuid,
    ) -> Result<(PersonState, ExpectedVersion), IngestError> {
        let slice = match self.store.read(stream, ReadFrom::Start).await {
            Ok(slice) => slice,
            Err(StoreError::StreamNotFound { .. }) => {
                return Ok((PersonState::default(), ExpectedVersion::NoStream));
            }
            Err(e) => return Err(e.into()),
        };
        let mut state = PersonState::default();
        for recorded in &slice.events {
            let fact: PersonFact =
                serde_json::from_slice(&recorded.data).map_err(|e| StoreError::Corrupt {
                    location: format!("{stream} version {}", recorded.version),
                    reason: e.to_string(),
                })?;
            match fact {
                PersonFact::Died { saga_id, .. } | PersonFact::Moved { saga_id, .. }
                    if saga_id == own =>
                {
                    state.sagas.push(saga_id);
                }
                PersonFact::Died {
                    saga_id,
                    date_of_death,
                } => {
                    state.sagas.push(saga_id);
                    state.died = Some((saga_id, date_of_death));
                }
                PersonFact::Moved {
                    saga_id, address, ..
                } => {
                    state.sagas.push(saga_id);
                    state.address = Some(address);
                }
            }
        }
        Ok((state, ExpectedVersion::Exact(slice.version)))
    }
}

/// The person stream of an INSZ: keyed by a UUID v5 of the number, so no national number
/// appears in a subject or a stream name.
pub fn person_stream(insz: &str) -> Result<StreamName, StoreError> {
    StreamName::new(
        PERSON_CATEGORY,
        levensloop_proto::stored::person_id(insz).to_string(),
    )
}

/// An address reduced to what makes it the same place: case, spacing and the free-text
/// municipality name do not matter; the street, number, box, post code and NIS code do.
fn address_key(address: Option<&v1::Address>) -> String {
    let Some(a) = address else {
        return String::new();
    };
    let norm = |s: &str| {
        s.split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
            .to_lowercase()
    };
    format!(
        "{}|{}|{}|{}|{}",
        norm(&a.thoroughfare),
        norm(&a.house_number),
        norm(&a.box_number),
        norm(&a.post_code),
        a.municipality_nis_code.trim()
    )
}
