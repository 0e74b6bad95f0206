//! The Levensloop event store.
//!
//! Everything Levensloop knows is an event in a stream: a life event, a person's facts, a
//! saga's progress. This crate is the one place that stores them. It offers one trait,
//! [`EventStore`], and two backends that pass the same contract suite:
//!
//! - [`JetStreamStore`]: NATS JetStream (nats-server 2.12+). One JetStream stream holds every
//!   event stream, one subject per event stream; a commit (one or more events) is one message,
//!   so it is atomic; optimistic concurrency is `Nats-Expected-Last-Subject-Sequence`, commit
//!   dedupe is `Nats-Msg-Id`, subscriptions are durable pull consumers.
//! - [`MemoryStore`]: in-process, for unit tests of everything above the store.
//!
//! Versions are opaque: an append returns the stream's new [`Version`], and the next append
//! passes it back as [`ExpectedVersion::Exact`]. Appends take `&self` and only wait for their
//! own acknowledgement, so a caller that issues many appends concurrently pipelines them.
//!
//! The store knows nothing of sagas or life events: an event is a type name, bytes and
//! string metadata.

mod codec;
mod error;
mod jetstream;
mod memory;
mod name;
mod subscription;

pub use error::StoreError;
pub use jetstream::{JetStreamConfig, JetStreamStore, PULL_EXPIRY, PULL_HEARTBEAT};
pub use memory::MemoryStore;
pub use name::StreamName;
pub use subscription::{Delivery, Subscription};

use async_trait::async_trait;
use bytes::Bytes;
use std::collections::BTreeMap;
use std::fmt;
use std::time::SystemTime;
use uuid::Uuid;

/// The position of a stream after a commit. Opaque: compare two versions of the same stream
/// for order, hand one back as [`ExpectedVersion::Exact`], store it as a number with
/// [`Version::as_u64`] and [`Version::from_u64`]; do not count events with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Version(u64);

impl Version {
    pub fn as_u64(self) -> u64 {
        self.0
    }

    pub fn from_u64(raw: u64) -> Self {
        Self(raw)
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// What the caller believes about the stream it appends to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExpectedVersion {
    /// Append whatever the stream holds.
    Any,
    /// The stream must not exist yet: the append creates it.
    NoStream,
    /// The stream's current version must be exactly this one.
    Exact(Version),
}

impl fmt::Display for ExpectedVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExpectedVersion::Any => f.write_str("any"),
            ExpectedVersion::NoStream => f.write_str("no stream"),
            ExpectedVersion::Exact(v) => write!(f, "version {v}"),
        }
    }
}

/// One event to append.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventData {
    /// The event's type name, e.g. `levensloop.v1.SagaStarted`.
    pub event_type: String,
    /// The encoded event.
    pub data: Bytes,
    /// String metadata carried with the event (content type, trace context, causation).
    pub metadata: BTreeMap<String, String>,
}

impl EventData {
    pub fn new(event_type: impl Into<String>, data: impl Into<Bytes>) -> Self {
        Self {
            event_type: event_type.into(),
            data: data.into(),
            metadata: BTreeMap::new(),
        }
    }

    pub fn with_metadata(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.metadata.insert(key.into(), value.into());
        self
    }
}

/// One or more events appended atomically: all are stored or none is.
///
/// The id makes the append idempotent: the same commit appended again with the same
/// expectation (a retry after a lost acknowledgement) is stored once and answered with the
/// original version and `duplicate: true`. With an expected version, the retry is recognised
/// while the commit is still the stream's last one; later, the expectation itself refuses it
/// as a conflict. With `Any`, it is recognised within the backend's dedupe window.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Commit {
    pub id: Uuid,
    pub events: Vec<EventData>,
}

impl Commit {
    pub fn new(id: Uuid, events: Vec<EventData>) -> Self {
        Self { id, events }
    }

    /// The bytes a backend stores for this commit (one protobuf message), e.g. to size a
    /// benchmark's raw publishes like the store's.
    pub fn encoded(&self) -> Bytes {
        codec::encode(self)
    }

    /// A commit of one event with a fresh random id.
    pub fn single(event: EventData) -> Self {
        Self {
            id: Uuid::new_v4(),
            events: vec![event],
        }
    }
}

/// The answer to an append.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Appended {
    /// The stream's version after the commit.
    pub version: Version,
    /// True when the commit id had been stored before and nothing new was written.
    pub duplicate: bool,
}

/// An event as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedEvent {
    pub stream: StreamName,
    /// The stream's version after the commit that holds this event.
    pub version: Version,
    /// The event's place within its commit.
    pub index: u32,
    pub commit_id: Uuid,
    pub event_type: String,
    pub data: Bytes,
    pub metadata: BTreeMap<String, String>,
    /// When the store recorded the commit.
    pub recorded_at: SystemTime,
}

/// Where a read starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadFrom {
    /// From the stream's first event.
    Start,
    /// The commits stored after this version.
    After(Version),
}

/// A stream's events from some point on, and its current version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamSlice {
    pub version: Version,
    pub events: Vec<RecordedEvent>,
}

/// The event store. Every backend passes the contract suite in `tests/contract.rs`.
#[async_trait]
pub trait EventStore: Send + Sync + 'static {
    /// Appends a commit to a stream if the stream is at the expected version; returns the new
    /// version. A mismatch is [`StoreError::VersionConflict`], never a partial write.
    async fn append(
        &self,
        stream: &StreamName,
        expected: ExpectedVersion,
        commit: Commit,
    ) -> Result<Appended, StoreError>;

    /// Reads a stream's events in order. A stream with no events is
    /// [`StoreError::StreamNotFound`]; a stream with nothing after `from` is an empty slice.
    async fn read(&self, stream: &StreamName, from: ReadFrom) -> Result<StreamSlice, StoreError>;

    /// A stream's current version, `None` if it does not exist: one cheap question, for a
    /// reader that only needs to know whether a stream moved since it last read it.
    async fn version(&self, stream: &StreamName) -> Result<Option<Version>, StoreError> {
        match self.read(stream, ReadFrom::Start).await {
            Ok(slice) => Ok(Some(slice.version)),
            Err(StoreError::StreamNotFound { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Opens the durable subscription `name` to every stream of `category`. A new name starts
    /// at the category's first commit; an existing name resumes after the last commit it
    /// acknowledged. It delivers the stored commits (catch-up) and then new ones as they are
    /// appended (live). Delivery is at least once: an unacknowledged commit comes again.
    async fn subscribe(
        &self,
        category: &str,
        name: &str,
    ) -> Result<Box<dyn Subscription>, StoreError>;

    /// Forgets the durable subscription `name` and its position (a projection rebuilt from
    /// the start drops its old one). A name that does not exist is not an error.
    async fn unsubscribe(&self, name: &str) -> Result<(), StoreError>;
}
