//! The index of running sagas: a JetStream key-value bucket, one key per running saga,
//! `<person key>.<saga id>`, where the person key is a UUID v5 of the INSZ (no national number
//! in a key).
//!
//! It is what a restarting orchestrator reads to find the sagas whose pending steps it must
//! re-dispatch and whose timers it must re-arm, and what a death saga reads to find the
//! person's other sagas. A key is written before the saga's stream is created and deleted
//! after its terminal event is stored, so a saga is never missing from it (an extra key, left
//! by a crash after the terminal event, is dropped on the next recovery).

use async_nats::jetstream::{self, kv};
use futures::StreamExt;
use levensloop_store::StoreError;
use uuid::Uuid;

pub const RUNNING_BUCKET: &str = "levensloop_running";
/// Sagas without a person (none today) are filed under this key.
const NO_PERSON: &str = "none";

fn unavailable(context: &str, e: impl std::error::Error + Send + Sync + 'static) -> StoreError {
    StoreError::Unavailable {
        reason: context.to_owned(),
        source: Some(Box::new(e)),
    }
}

/// The person key of an INSZ, as the gateway keys its person streams.
pub fn person_key(insz: &str) -> String {
    if insz.is_empty() {
        return NO_PERSON.to_owned();
    }
    levensloop_proto::stored::person_id(insz)
        .simple()
        .to_string()
}

#[derive(Clone)]
pub struct RunningIndex {
    kv: kv::Store,
    client: async_nats::Client,
}

impl std::fmt::Debug for RunningIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunningIndex").finish_non_exhaustive()
    }
}

impl RunningIndex {
    pub async fn open(js: &jetstream::Context, replicas: usize) -> Result<Self, StoreError> {
        let kv = js
            .create_key_value(kv::Config {
                bucket: RUNNING_BUCKET.to_owned(),
                description: "Levensloop: running sagas, by person".to_owned(),
                history: 1,
                storage: jetstream::stream::StorageType::File,
                num_replicas: replicas.max(1),
                ..kv::Config::default()
            })
            .await
            .map_err(|e| unavailable("open the running-saga index", e))?;
        Ok(Self {
            kv,
            client: js.client(),
        })
    }

    fn key(insz: &str, saga: Uuid) -> String {
        format!("{}.{}", person_key(insz), saga.simple())
    }

    pub async fn insert(
        &self,
        insz: &str,
        saga: Uuid,
        life_event_type: &str,
    ) -> Result<(), StoreError> {
        self.kv
            .put(Self::key(insz, saga), life_event_type.to_owned().into())
            .await
            .map_err(|e| unavailable("index a running saga", e))?;
        Ok(())
    }

    pub async fn remove(&self, insz: &str, saga: Uuid) -> Result<(), StoreError> {
        self.kv
            .purge(Self::key(insz, saga))
            .await
            .map_err(|e| unavailable("unindex a finished saga", e))?;
        Ok(())
    }

    /// Every running saga.
    pub async fn all(&self) -> Result<Vec<Uuid>, StoreError> {
        self.matching(|_| true).await
    }

    /// The running sagas of a person. The server filters the keys by the person's prefix:
    /// listing every running saga for each death made a burst of deaths quadratic.
    pub async fn of_person(&self, insz: &str) -> Result<Vec<Uuid>, StoreError> {
        use async_nats::jetstream::consumer::{DeliverPolicy, ReplayPolicy, push};
        let consumer = self
            .kv
            .stream
            .create_consumer(push::OrderedConfig {
                deliver_subject: self.client.new_inbox(),
                description: Some("running sagas of one person".to_owned()),
                filter_subject: format!("{}{}.*", self.kv.prefix, person_key(insz)),
                headers_only: true,
                replay_policy: ReplayPolicy::Instant,
                deliver_policy: DeliverPolicy::LastPerSubject,
                ..Default::default()
            })
            .await
            .map_err(|e| unavailable("list a person's running sagas", e))?;
        let mut out = Vec::new();
        if consumer.cached_info().num_pending == 0 {
            return Ok(out);
        }
        let mut messages = consumer
            .messages()
            .await
            .map_err(|e| unavailable("list a person's running sagas", e))?;
        while let Some(message) = messages.next().await {
            let message = message.map_err(|e| unavailable("list a person's running sagas", e))?;
            let pending = message.info().map(|i| i.pending).unwrap_or(0);
            // A purged or deleted key is a saga that ended.
            let removed = message
                .headers
                .as_ref()
                .and_then(|h| h.get("KV-Operation"))
                .is_some_and(|op| op.as_str() != "PUT");
            if !removed
                && let Some(saga) = message
                    .subject
                    .rsplit('.')
                    .next()
                    .and_then(|s| Uuid::parse_str(s).ok())
            {
                out.push(saga);
            }
            if pending == 0 {
                break;
            }
        }
        Ok(out)
    }

    async fn matching(&self, keep: impl Fn(&str) -> bool) -> Result<Vec<Uuid>, StoreError> {
        let mut keys = self
            .kv
            .keys()
            .await
            .map_err(|e| unavailable("list running sagas", e))?;
        let mut out = Vec::new();
        while let Some(key) = keys.next().await {
            let key = key.map_err(|e| unavailable("list running sagas", e))?;
            if !keep(&key) {
                continue;
            }
            if let Some(saga) = key.rsplit('.').next().and_then(|s| Uuid::parse_str(s).ok()) {
                out.push(saga);
            }
        }
        Ok(out)
    }
}
