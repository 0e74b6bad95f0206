//! Durable subscriptions to a category of streams.

use crate::{RecordedEvent, StoreError, StreamName, Version};
use async_trait::async_trait;
use std::fmt;

/// A durable, named subscription: catch-up, then live, resumable after a restart.
#[async_trait]
pub trait Subscription: Send {
    /// Waits for the next commit of the category. Commits of one stream arrive in order.
    async fn next(&mut self) -> Result<Delivery, StoreError>;
}

/// Settles one delivery with its backend.
#[async_trait]
pub(crate) trait Settle: Send + Sync {
    async fn ack(&self) -> Result<(), StoreError>;
}

/// One delivered commit. Acknowledge it once it has been handled: the subscription resumes
/// after the last acknowledged commit, and an unacknowledged one is delivered again.
///
/// There is deliberately no "deliver again later": redelivering one commit after newer ones
/// would break the per-stream order that projections rely on. A subscriber that cannot handle
/// a commit yet retries it itself, or drops the subscription and resumes.
pub struct Delivery {
    pub stream: StreamName,
    pub version: Version,
    pub events: Vec<RecordedEvent>,
    /// How many commits of the category are stored after this one and not yet delivered to
    /// this subscription: 0 means it has caught up and is following live.
    pub pending: u64,
    /// 1 on the first delivery, more when the commit is delivered again.
    pub delivery_count: u64,
    pub(crate) settle: Box<dyn Settle>,
}

impl Delivery {
    /// Marks the commit handled. Returns once the backend has recorded it, so a process that
    /// exits right after does not see the commit again.
    pub async fn ack(self) -> Result<(), StoreError> {
        self.settle.ack().await
    }
}

impl fmt::Debug for Delivery {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Delivery")
            .field("stream", &self.stream)
            .field("version", &self.version)
            .field("events", &self.events.len())
            .field("pending", &self.pending)
            .field("delivery_count", &self.delivery_count)
            .finish_non_exhaustive()
    }
}
