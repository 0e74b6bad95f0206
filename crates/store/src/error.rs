//! The store's typed errors.

use crate::{ExpectedVersion, StreamName, Version};

type Source = Box<dyn std::error::Error + Send + Sync>;

/// Everything an [`crate::EventStore`] call can fail with.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The stream was not at the expected version; nothing was written.
    #[error("version conflict on {stream}: expected {expected}, stream is at {}", actual.map_or_else(|| "an unknown version".to_owned(), |v| format!("version {v}")))]
    VersionConflict {
        stream: StreamName,
        expected: ExpectedVersion,
        /// The stream's actual version when the backend reports it; `None` when the stream does
        /// not exist or the backend cannot tell.
        actual: Option<Version>,
    },
    #[error("stream {stream} not found")]
    StreamNotFound { stream: StreamName },
    #[error("invalid name {name:?}: {reason}")]
    InvalidName { name: String, reason: String },
    #[error("commit to {stream} is {size} bytes, above the limit of {limit}")]
    CommitTooLarge {
        stream: StreamName,
        size: usize,
        limit: usize,
    },
    #[error("a commit must hold at least one event")]
    EmptyCommit,
    #[error("stored data in {location} cannot be decoded: {reason}")]
    Corrupt { location: String, reason: String },
    /// The backend could not be reached or did not answer in time. The operation may or may not
    /// have taken effect: retry an append with the same commit id.
    #[error("event store unavailable: {reason}")]
    Unavailable {
        reason: String,
        #[source]
        source: Option<Source>,
    },
}

impl StoreError {
    pub(crate) fn unavailable(reason: impl Into<String>, source: impl Into<Source>) -> Self {
        Self::Unavailable {
            reason: reason.into(),
            source: Some(source.into()),
        }
    }

    /// True for errors worth retrying unchanged (the backend was unavailable).
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Unavailable { .. })
    }
}
