//! The wire format of a commit: one protobuf message per commit, so a commit of several
//! events is one JetStream message and is stored atomically.

use crate::{Commit, EventData, StoreError};
use bytes::Bytes;
use prost::Message;

#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct CommitRecord {
    #[prost(bytes = "vec", tag = "1")]
    pub id: Vec<u8>,
    #[prost(message, repeated, tag = "2")]
    pub events: Vec<EventRecord>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct EventRecord {
    #[prost(string, tag = "1")]
    pub event_type: String,
    #[prost(bytes = "bytes", tag = "2")]
    pub data: Bytes,
    #[prost(btree_map = "string, string", tag = "3")]
    pub metadata: std::collections::BTreeMap<String, String>,
}

pub(crate) fn encode(commit: &Commit) -> Bytes {
    let record = CommitRecord {
        id: commit.id.as_bytes().to_vec(),
        events: commit
            .events
            .iter()
            .map(|e| EventRecord {
                event_type: e.event_type.clone(),
                data: e.data.clone(),
                metadata: e.metadata.clone(),
            })
            .collect(),
    };
    Bytes::from(record.encode_to_vec())
}

pub(crate) fn decode(bytes: &[u8], location: &dyn Fn() -> String) -> Result<Commit, StoreError> {
    let corrupt = |reason: String| StoreError::Corrupt {
        location: location(),
        reason,
    };
    let record = CommitRecord::decode(bytes).map_err(|e| corrupt(e.to_string()))?;
    let id = uuid::Uuid::from_slice(&record.id).map_err(|e| corrupt(e.to_string()))?;
    Ok(Commit {
        id,
        events: record
            .events
            .into_iter()
            .map(|e| EventData {
                event_type: e.event_type,
                data: e.data,
                metadata: e.metadata,
            })
            .collect(),
    })
}
