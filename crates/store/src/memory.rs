//! The in-memory backend, for unit tests of everything above the store.
//!
//! It keeps one global log of commits; a commit's version is its position in that log, so
//! versions are opaque and increasing, as in the JetStream backend. Commit ids are remembered
//! for the life of the store (JetStream remembers them for its duplicate window).

use crate::subscription::Settle;
use crate::{
    Appended, Commit, Delivery, EventStore, ExpectedVersion, ReadFrom, RecordedEvent, StoreError,
    StreamName, StreamSlice, Subscription, Version, name::validate_category,
};
use async_trait::async_trait;
use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::SystemTime;
use tokio::sync::watch;
use uuid::Uuid;

#[derive(Debug)]
struct Entry {
    stream: StreamName,
    commit: Commit,
    recorded_at: SystemTime,
}

#[derive(Debug, Default)]
struct SubscriptionState {
    category: String,
    /// Positions acknowledged so far.
    acked: BTreeSet<u64>,
    /// How often each position has been delivered.
    deliveries: HashMap<u64, u64>,
}

#[derive(Debug, Default)]
struct State {
    /// Position `p` (1-based) is `log[p - 1]`.
    log: Vec<Entry>,
    streams: HashMap<StreamName, Vec<u64>>,
    commits: HashMap<Uuid, Version>,
    subscriptions: HashMap<String, SubscriptionState>,
}

impl State {
    fn entry(&self, position: u64) -> &Entry {
        &self.log[(position - 1) as usize]
    }

    fn recorded(&self, position: u64) -> Vec<RecordedEvent> {
        let entry = self.entry(position);
        entry
            .commit
            .events
            .iter()
            .enumerate()
            .map(|(index, e)| RecordedEvent {
                stream: entry.stream.clone(),
                version: Version(position),
                index: index as u32,
                commit_id: entry.commit.id,
                event_type: e.event_type.clone(),
                data: e.data.clone(),
                metadata: e.metadata.clone(),
                recorded_at: entry.recorded_at,
            })
            .collect()
    }
}

/// An event store that lives in memory. Cloning shares the same store.
#[derive(Debug, Clone)]
pub struct MemoryStore {
    state: Arc<Mutex<State>>,
    /// The log's length, so subscriptions can wait for new commits.
    appended: watch::Sender<u64>,
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryStore {
    pub fn new() -> Self {
        Self {
            state: Arc::default(),
            appended: watch::Sender::new(0),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        lock(&self.state)
    }
}

/// A poisoned lock only means another test thread panicked; the state itself stays consistent
/// because every mutation completes before the guard is dropped.
fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    state
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[async_trait]
impl EventStore for MemoryStore {
    async fn append(
        &self,
        stream: &StreamName,
        expected: ExpectedVersion,
        commit: Commit,
    ) -> Result<Appended, StoreError> {
        if commit.events.is_empty() {
            return Err(StoreError::EmptyCommit);
        }
        let mut state = self.lock();
        if let Some(&version) = state.commits.get(&commit.id) {
            return Ok(Appended {
                version,
                duplicate: true,
            });
        }
        let current = state
            .streams
            .get(stream)
            .and_then(|p| p.last())
            .map(|&p| Version(p));
        let ok = match expected {
            ExpectedVersion::Any => true,
            ExpectedVersion::NoStream => current.is_none(),
            ExpectedVersion::Exact(v) => current == Some(v),
        };
        if !ok {
            return Err(StoreError::VersionConflict {
                stream: stream.clone(),
                expected,
                actual: current,
            });
        }
        let position = state.log.len() as u64 + 1;
        state.commits.insert(commit.id, Version(position));
        state
            .streams
            .entry(stream.clone())
            .or_default()
            .push(position);
        state.log.push(Entry {
            stream: stream.clone(),
            commit,
            recorded_at: SystemTime::now(),
        });
        drop(state);
        self.appended.send_replace(position);
        Ok(Appended {
            version: Version(position),
            duplicate: false,
        })
    }

    async fn read(&self, stream: &StreamName, from: ReadFrom) -> Result<StreamSlice, StoreError> {
        let state = self.lock();
        let positions = state
            .streams
            .get(stream)
            .ok_or_else(|| StoreError::StreamNotFound {
                stream: stream.clone(),
            })?;
        let after = match from {
            ReadFrom::Start => 0,
            ReadFrom::After(v) => v.0,
        };
        let events = positions
            .iter()
            .filter(|&&p| p > after)
            .flat_map(|&p| state.recorded(p))
            .collect();
        let version = positions.last().map_or(Version(0), |&p| Version(p));
        Ok(StreamSlice { version, events })
    }

    async fn subscribe(
        &self,
        category: &str,
        name: &str,
    ) -> Result<Box<dyn Subscription>, StoreError> {
        validate_category(category)?;
        let mut state = self.lock();
        let sub = state
            .subscriptions
            .entry(name.to_owned())
            .or_insert_with(|| SubscriptionState {
                category: category.to_owned(),
                ..SubscriptionState::default()
            });
        if sub.category != category {
            return Err(StoreError::InvalidName {
                name: name.to_owned(),
                reason: format!("the subscription follows category {:?}", sub.category),
            });
        }
        Ok(Box::new(MemorySubscription {
            store: self.clone(),
            appended: self.appended.subscribe(),
            name: name.to_owned(),
            category: category.to_owned(),
            cursor: 0,
        }))
    }

    async fn unsubscribe(&self, name: &str) -> Result<(), StoreError> {
        self.lock().subscriptions.remove(name);
        Ok(())
    }
}

#[derive(Debug)]
struct MemorySubscription {
    store: MemoryStore,
    appended: watch::Receiver<u64>,
    name: String,
    category: String,
    /// The last position this subscription object delivered; a new object starts at 0 and so
    /// redelivers whatever was not acknowledged.
    cursor: u64,
}

impl MemorySubscription {
    fn try_next(&mut self) -> Option<Delivery> {
        let mut state = self.store.lock();
        let state = &mut *state;
        let sub = state.subscriptions.get_mut(&self.name)?;
        let position = ((self.cursor + 1)..=state.log.len() as u64).find(|&p| {
            !sub.acked.contains(&p)
                && state.log[(p - 1) as usize].stream.category() == self.category
        })?;
        self.cursor = position;
        let count = sub.deliveries.entry(position).or_insert(0);
        *count += 1;
        let delivery_count = *count;
        let pending = ((self.cursor + 1)..=state.log.len() as u64)
            .filter(|&p| {
                !sub.acked.contains(&p)
                    && state.log[(p - 1) as usize].stream.category() == self.category
            })
            .count() as u64;
        let entry = state.entry(position);
        Some(Delivery {
            stream: entry.stream.clone(),
            version: Version(position),
            events: state.recorded(position),
            pending,
            delivery_count,
            settle: Box::new(MemorySettle {
                store: self.store.clone(),
                name: self.name.clone(),
                position,
            }),
        })
    }
}

#[async_trait]
impl Subscription for MemorySubscription {
    async fn next(&mut self) -> Result<Delivery, StoreError> {
        loop {
            // Mark the current log length seen before looking, so an append that lands after the
            // look wakes the wait below.
            self.appended.borrow_and_update();
            if let Some(delivery) = self.try_next() {
                return Ok(delivery);
            }
            self.appended
                .changed()
                .await
                .map_err(|e| StoreError::unavailable("the in-memory store was dropped", e))?;
        }
    }
}

#[derive(Debug)]
struct MemorySettle {
    store: MemoryStore,
    name: String,
    position: u64,
}

#[async_trait]
impl Settle for MemorySettle {
    async fn ack(&self) -> Result<(), StoreError> {
        if let Some(sub) = self.store.lock().subscriptions.get_mut(&self.name) {
            sub.acked.insert(self.position);
        }
        Ok(())
    }
}
