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

/// Encodes a commit as a [`CommitRecord`] straight from the borrowed commit: the append path
/// runs tens of thousands of times a second, so it avoids copying the events into owned
/// records first. The `round_trip` test pins this to the derived decoder.
pub(crate) fn encode(commit: &Commit) -> Bytes {
    use prost::encoding::{WireType, btree_map, bytes, encode_key, encode_varint, string};
    let metadata_len = |e: &EventData| {
        btree_map::encoded_len(string::encoded_len, string::encoded_len, 3, &e.metadata)
    };
    // proto3 leaves empty scalar fields out, as the derived encoder does.
    let event_len = |e: &EventData| {
        let kind = if e.event_type.is_empty() {
            0
        } else {
            string::encoded_len(1, &e.event_type)
        };
        let data = if e.data.is_empty() {
            0
        } else {
            bytes::encoded_len(2, &e.data)
        };
        kind + data + metadata_len(e)
    };
    let id = commit.id.as_bytes();
    let total = prost::encoding::key_len(1)
        + 1
        + id.len()
        + commit
            .events
            .iter()
            .map(|e| {
                let len = event_len(e);
                prost::encoding::key_len(2) + prost::encoding::encoded_len_varint(len as u64) + len
            })
            .sum::<usize>();
    let mut buf = Vec::with_capacity(total);
    encode_key(1, WireType::LengthDelimited, &mut buf);
    encode_varint(id.len() as u64, &mut buf);
    buf.extend_from_slice(id);
    for e in &commit.events {
        encode_key(2, WireType::LengthDelimited, &mut buf);
        encode_varint(event_len(e) as u64, &mut buf);
        if !e.event_type.is_empty() {
            string::encode(1, &e.event_type, &mut buf);
        }
        if !e.data.is_empty() {
            bytes::encode(2, &e.data, &mut buf);
        }
        btree_map::encode(
            string::encode,
            string::encoded_len,
            string::encode,
            string::encoded_len,
            3,
            &e.metadata,
            &mut buf,
        );
    }
    Bytes::from(buf)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let commit = Commit::new(
            uuid::Uuid::new_v4(),
            vec![
                EventData::new("A", "first")
                    .with_metadata("k", "v")
                    .with_metadata("x", "y"),
                EventData::new("B", Bytes::new()),
                EventData::new("", vec![0u8; 300]),
            ],
        );
        let bytes = encode(&commit);
        assert_eq!(decode(&bytes, &|| "test".to_owned()).unwrap(), commit);
        // Byte-for-byte what the derived encoder writes.
        let derived = CommitRecord {
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
        assert_eq!(bytes.as_ref(), derived.encode_to_vec().as_slice());
    }

    #[test]
    fn garbage_is_a_typed_error() {
        let err = decode(b"\xff\xff\xff", &|| "here".to_owned()).unwrap_err();
        assert!(matches!(err, StoreError::Corrupt { ref location, .. } if location == "here"));
    }
}
