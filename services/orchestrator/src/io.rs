//! Reading and writing a saga in the event store.
//!
//! A saga's events live in stream `saga-<saga id>` (one commit per decision, each event a
//! protobuf `levensloop.v1.SagaEvent`); its life event in `lifeevent-<saga id>`, where the
//! gateway stored it. Both are all a saga's state is rebuilt from.

use levensloop_proto::v1;
use levensloop_store::{
    Appended, Commit, EventData, EventStore, ExpectedVersion, ReadFrom, StoreError, StreamName,
    Version,
};
use prost::Message;
use uuid::Uuid;

pub use levensloop_proto::stored::{
    LIFE_EVENT_CATEGORY, META_STARTS_SAGA, SAGA_CATEGORY, SAGA_EVENT_TYPE,
};

pub fn saga_stream(saga: Uuid) -> Result<StreamName, StoreError> {
    StreamName::new(SAGA_CATEGORY, saga.to_string())
}

pub fn life_event_stream(saga: Uuid) -> Result<StreamName, StoreError> {
    StreamName::new(LIFE_EVENT_CATEGORY, saga.to_string())
}

fn corrupt(location: String, e: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt {
        location,
        reason: e.to_string(),
    }
}

pub fn decode_life_event(data: &[u8], location: &str) -> Result<v1::LifeEvent, StoreError> {
    v1::LifeEvent::decode(data).map_err(|e| corrupt(location.to_owned(), e))
}

/// The life event of a saga.
pub async fn life_event(store: &dyn EventStore, saga: Uuid) -> Result<v1::LifeEvent, StoreError> {
    life_event_with_metadata(store, saga)
        .await
        .map(|(event, _)| event)
}

/// The life event of a saga and the metadata it was stored with (its trace context, …).
pub async fn life_event_with_metadata(
    store: &dyn EventStore,
    saga: Uuid,
) -> Result<(v1::LifeEvent, std::collections::BTreeMap<String, String>), StoreError> {
    let stream = life_event_stream(saga)?;
    let slice = store.read(&stream, ReadFrom::Start).await?;
    let first = slice
        .events
        .into_iter()
        .next()
        .ok_or(StoreError::StreamNotFound {
            stream: stream.clone(),
        })?;
    let event = decode_life_event(&first.data, &stream.to_string())?;
    Ok((event, first.metadata))
}

/// A saga's stored events and the stream's version; `None` if it has not started.
pub async fn saga_events(
    store: &dyn EventStore,
    saga: Uuid,
) -> Result<Option<(Vec<v1::SagaEvent>, Version)>, StoreError> {
    let stream = saga_stream(saga)?;
    let slice = match store.read(&stream, ReadFrom::Start).await {
        Ok(slice) => slice,
        Err(StoreError::StreamNotFound { .. }) => return Ok(None),
        Err(e) => return Err(e),
    };
    let events = slice
        .events
        .iter()
        .map(|r| {
            v1::SagaEvent::decode(r.data.as_ref())
                .map_err(|e| corrupt(format!("{stream} version {}", r.version), e))
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Some((events, slice.version)))
}

/// Appends one decision's events as one commit. The commit id is derived from the saga, the
/// version it builds on and its first event's cause, so a retried append is recognised.
pub async fn append(
    store: &dyn EventStore,
    saga: Uuid,
    expected: ExpectedVersion,
    events: &[v1::SagaEvent],
) -> Result<Appended, StoreError> {
    let stream = saga_stream(saga)?;
    let base = match expected {
        ExpectedVersion::Exact(v) => v.as_u64(),
        _ => 0,
    };
    let cause = events.first().map_or("", |e| e.causation_id.as_str());
    let commit_id = Uuid::new_v5(&saga, format!("{base}/{cause}/{}", events.len()).as_bytes());
    let data = events
        .iter()
        .map(|e| EventData::new(SAGA_EVENT_TYPE, e.encode_to_vec()))
        .collect();
    let started = std::time::Instant::now();
    let appended = store
        .append(&stream, expected, Commit::new(commit_id, data))
        .await;
    levensloop_telemetry::metrics::store().append(SAGA_CATEGORY, started.elapsed());
    appended
}
