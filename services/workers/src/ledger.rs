//! The idempotency ledger: what each simulated target system has done, once per
//! idempotency key.
//!
//! Delivery is at least once; the ledger makes the effect once. It is a JetStream key-value
//! bucket, [`LEDGER_BUCKET`], with one key per `(handler, idempotency key)`, written with
//! `create` ("must not exist"): the first successful create *is* the effect, and a task that
//! arrives again (a redelivery, a retry with a new task id, a second worker racing the first)
//! finds the recorded [`Effect`] and answers with it. A failed call records nothing.
//!
//! Keys: `fx.<handler>.<saga id>.<hash of the idempotency key>` (dots in the handler name
//! written as `=`; the saga id is the key's first `/` segment when it is a UUID, `_`
//! otherwise), so the effects of one handler or of one saga are one subject filter away.
//! Malformed task messages are kept under `malformed.<handler>.<stream sequence>`.
//!
//! The ledger is queryable, so tests, the demo and the fault-injection suites can count
//! effects: [`Ledger::count`], [`Ledger::counts`], [`Ledger::effects_for_saga`],
//! [`Ledger::has_effect`].

use async_nats::jetstream::{self, consumer, kv};
use chrono::{DateTime, Utc};
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::Duration;
use uuid::Uuid;

pub const LEDGER_BUCKET: &str = "levensloop_ledger";
const EFFECTS: &str = "fx";
const MALFORMED: &str = "malformed";
/// A scan that has not finished in this time has failed (the server is gone).
const SCAN_TIMEOUT: Duration = Duration::from_secs(60);

/// What went wrong with the ledger.
#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    /// NATS could not be reached or refused the operation; safe to retry.
    #[error("ledger unavailable: {context}: {source}")]
    Unavailable {
        context: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// An entry that is not an effect (written by hand, or by another version).
    #[error("unreadable ledger entry {key}: {reason}")]
    Corrupt { key: String, reason: String },
}

fn unavailable(
    context: impl Into<String>,
) -> impl FnOnce(Box<dyn std::error::Error + Send + Sync>) -> LedgerError {
    let context = context.into();
    move |source| LedgerError::Unavailable { context, source }
}

/// One effect a target system had, recorded once per idempotency key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Effect {
    pub handler: String,
    pub idempotency_key: String,
    pub saga_id: String,
    pub step_id: String,
    /// The effect undoes a step (a compensation).
    pub compensation: bool,
    /// The task, and its attempt, that caused it.
    pub task_id: String,
    pub attempt: u32,
    /// The worker instance that recorded it.
    pub worker: String,
    pub recorded_at: DateTime<Utc>,
    /// What the target answered; every repeat of the task is answered with this.
    pub result: serde_json::Map<String, serde_json::Value>,
}

/// The outcome of [`Ledger::record`].
#[derive(Debug, Clone, PartialEq)]
pub enum Recorded {
    /// This call recorded the effect.
    First(Effect),
    /// The effect was already there (this is a repeat); the recorded one.
    Already(Effect),
}

impl Recorded {
    pub fn effect(&self) -> &Effect {
        match self {
            Self::First(e) | Self::Already(e) => e,
        }
    }

    pub fn into_effect(self) -> Effect {
        match self {
            Self::First(e) | Self::Already(e) => e,
        }
    }

    pub fn is_first(&self) -> bool {
        matches!(self, Self::First(_))
    }
}

/// A task message a worker could not use; acknowledged with `Term` and kept here.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MalformedTask {
    /// The queue it arrived on.
    pub handler: String,
    pub subject: String,
    pub stream_sequence: u64,
    pub reason: String,
    /// When the message decoded far enough to have one.
    pub task_id: Option<String>,
    pub worker: String,
    pub received_at: DateTime<Utc>,
}

/// A handler name as one key token: `.` becomes `=`, which handler names never contain.
fn handler_token(handler: &str) -> String {
    handler.replace('.', "=")
}

fn handler_of_token(token: &str) -> String {
    token.replace('=', ".")
}

/// The saga an idempotency key belongs to (`saga-id/step-id[/compensate]`), as a key token.
fn saga_token(idempotency_key: &str) -> String {
    idempotency_key
        .split('/')
        .next()
        .and_then(|s| Uuid::parse_str(s).ok())
        .map_or_else(|| "_".to_owned(), |u| u.hyphenated().to_string())
}

fn key_hash(handler: &str, idempotency_key: &str) -> String {
    let namespace = Uuid::new_v5(
        &Uuid::NAMESPACE_URL,
        b"https://levensloop.vlaanderen.be/ledger",
    );
    let mut name = Vec::with_capacity(handler.len() + 1 + idempotency_key.len());
    name.extend_from_slice(handler.as_bytes());
    name.push(b'\n');
    name.extend_from_slice(idempotency_key.as_bytes());
    Uuid::new_v5(&namespace, &name).simple().to_string()
}

/// The ledger key of an effect.
pub fn effect_key(handler: &str, idempotency_key: &str) -> String {
    format!(
        "{EFFECTS}.{}.{}.{}",
        handler_token(handler),
        saga_token(idempotency_key),
        key_hash(handler, idempotency_key)
    )
}

/// The idempotency ledger of the built-in workers.
#[derive(Clone)]
pub struct Ledger {
    client: async_nats::Client,
    kv: kv::Store,
}

impl std::fmt::Debug for Ledger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ledger")
            .field("bucket", &LEDGER_BUCKET)
            .finish_non_exhaustive()
    }
}

impl Ledger {
    /// Opens the ledger bucket, creating it on first use.
    pub async fn open(client: async_nats::Client, replicas: usize) -> Result<Self, LedgerError> {
        let js = jetstream::new(client.clone());
        let kv = levensloop_bus::open_bucket(
            &js,
            LEDGER_BUCKET,
            "Levensloop: effects of the built-in workers, once per idempotency key",
            1,
            replicas,
        )
        .await
        .map_err(|e| unavailable(format!("open bucket {LEDGER_BUCKET}"))(Box::new(e)))?;
        Ok(Self { client, kv })
    }

    /// Records an effect unless one is recorded for its handler and idempotency key; either
    /// way returns the recorded one.
    pub async fn record(&self, effect: Effect) -> Result<Recorded, LedgerError> {
        let key = effect_key(&effect.handler, &effect.idempotency_key);
        let body = serde_json::to_vec(&effect).map_err(|e| LedgerError::Corrupt {
            key: key.clone(),
            reason: e.to_string(),
        })?;
        match self.kv.create(&key, body.into()).await {
            Ok(_) => Ok(Recorded::First(effect)),
            Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => {
                match self.get(&key).await? {
                    Some(existing) => Ok(Recorded::Already(existing)),
                    // Only a hand-deleted entry leads here.
                    None => Err(LedgerError::Corrupt {
                        key,
                        reason: "exists but cannot be read".into(),
                    }),
                }
            }
            Err(e) => Err(unavailable(format!("record {key}"))(Box::new(e))),
        }
    }

    /// The effect recorded for a handler and idempotency key.
    pub async fn effect(
        &self,
        handler: &str,
        idempotency_key: &str,
    ) -> Result<Option<Effect>, LedgerError> {
        self.get(&effect_key(handler, idempotency_key)).await
    }

    /// Whether the handler has had an effect for this idempotency key.
    pub async fn has_effect(
        &self,
        handler: &str,
        idempotency_key: &str,
    ) -> Result<bool, LedgerError> {
        Ok(self.effect(handler, idempotency_key).await?.is_some())
    }

    async fn get(&self, key: &str) -> Result<Option<Effect>, LedgerError> {
        let entry = self
            .kv
            .entry(key)
            .await
            .map_err(|e| unavailable(format!("read {key}"))(Box::new(e)))?;
        match entry {
            Some(entry) if entry.operation == kv::Operation::Put => {
                decode(key, &entry.value).map(Some)
            }
            _ => Ok(None),
        }
    }

    /// How many effects a handler has had.
    pub async fn count(&self, handler: &str) -> Result<usize, LedgerError> {
        let filter = format!("{EFFECTS}.{}.>", handler_token(handler));
        Ok(self.scan(&filter, true).await?.len())
    }

    /// How many effects each handler has had (handlers without any are absent).
    pub async fn counts(&self) -> Result<BTreeMap<String, usize>, LedgerError> {
        let mut out = BTreeMap::new();
        for (key, _) in self.scan(&format!("{EFFECTS}.>"), true).await? {
            if let Some(token) = key.split('.').nth(1) {
                *out.entry(handler_of_token(token)).or_insert(0) += 1;
            }
        }
        Ok(out)
    }

    /// Every effect of a handler.
    pub async fn effects(&self, handler: &str) -> Result<Vec<Effect>, LedgerError> {
        self.effects_matching(&format!("{EFFECTS}.{}.>", handler_token(handler)))
            .await
    }

    /// Every effect, of every handler, for one saga.
    pub async fn effects_for_saga(&self, saga_id: &str) -> Result<Vec<Effect>, LedgerError> {
        let token = Uuid::parse_str(saga_id)
            .map_or_else(|_| "_".to_owned(), |u| u.hyphenated().to_string());
        self.effects_matching(&format!("{EFFECTS}.*.{token}.*"))
            .await
    }

    /// Every effect in the ledger.
    pub async fn all_effects(&self) -> Result<Vec<Effect>, LedgerError> {
        self.effects_matching(&format!("{EFFECTS}.>")).await
    }

    async fn effects_matching(&self, filter: &str) -> Result<Vec<Effect>, LedgerError> {
        let mut out = Vec::new();
        for (key, value) in self.scan(filter, false).await? {
            out.push(decode(&key, &value)?);
        }
        out.sort_by(|a, b| {
            (a.recorded_at, &a.idempotency_key).cmp(&(b.recorded_at, &b.idempotency_key))
        });
        Ok(out)
    }

    /// Keeps a malformed task message.
    pub async fn record_malformed(&self, malformed: &MalformedTask) -> Result<(), LedgerError> {
        let key = format!(
            "{MALFORMED}.{}.{}",
            handler_token(&malformed.handler),
            malformed.stream_sequence
        );
        let body = serde_json::to_vec(malformed).map_err(|e| LedgerError::Corrupt {
            key: key.clone(),
            reason: e.to_string(),
        })?;
        self.kv
            .put(&key, body.into())
            .await
            .map_err(|e| unavailable(format!("record {key}"))(Box::new(e)))?;
        Ok(())
    }

    /// The malformed task messages kept for a handler, or for every handler.
    pub async fn malformed(
        &self,
        handler: Option<&str>,
    ) -> Result<Vec<MalformedTask>, LedgerError> {
        let filter = match handler {
            Some(h) => format!("{MALFORMED}.{}.*", handler_token(h)),
            None => format!("{MALFORMED}.>"),
        };
        let mut out = Vec::new();
        for (key, value) in self.scan(&filter, false).await? {
            out.push(
                serde_json::from_slice::<MalformedTask>(&value).map_err(|e| {
                    LedgerError::Corrupt {
                        key,
                        reason: e.to_string(),
                    }
                })?,
            );
        }
        out.sort_by_key(|m| m.stream_sequence);
        Ok(out)
    }

    /// The current entries under a key filter (with wildcards), read in one pass of an
    /// ordered consumer: last value per key, deleted keys left out.
    async fn scan(
        &self,
        filter: &str,
        headers_only: bool,
    ) -> Result<Vec<(String, bytes::Bytes)>, LedgerError> {
        let context = format!("scan {filter}");
        let prefix = self.kv.prefix.clone();
        let consumer = self
            .kv
            .stream
            .create_consumer(consumer::push::OrderedConfig {
                deliver_subject: self.client.new_inbox(),
                description: Some("ledger scan".to_owned()),
                filter_subject: format!("{prefix}{filter}"),
                headers_only,
                replay_policy: consumer::ReplayPolicy::Instant,
                deliver_policy: consumer::DeliverPolicy::LastPerSubject,
                ..Default::default()
            })
            .await
            .map_err(|e| unavailable(context.clone())(Box::new(e)))?;
        let mut out = Vec::new();
        if consumer.cached_info().num_pending == 0 {
            return Ok(out);
        }
        let mut messages = consumer
            .messages()
            .await
            .map_err(|e| unavailable(context.clone())(Box::new(e)))?;
        let read = async {
            while let Some(message) = messages.next().await {
                let message = message.map_err(|e| unavailable(context.clone())(Box::new(e)))?;
                let info = message
                    .info()
                    .map_err(|e| unavailable(context.clone())(e))?;
                let pending = info.pending;
                let deleted = message
                    .headers
                    .as_ref()
                    .and_then(|h| h.get("KV-Operation"))
                    .is_some_and(|op| op.as_str() != "PUT");
                if !deleted && let Some(key) = message.subject.strip_prefix(prefix.as_str()) {
                    out.push((key.to_owned(), message.payload.clone()));
                }
                if pending == 0 {
                    break;
                }
            }
            Ok::<_, LedgerError>(())
        };
        tokio::time::timeout(SCAN_TIMEOUT, read)
            .await
            .map_err(|e| unavailable(context.clone())(Box::new(e)))??;
        Ok(out)
    }
}

fn decode(key: &str, value: &[u8]) -> Result<Effect, LedgerError> {
    serde_json::from_slice(value).map_err(|e| LedgerError::Corrupt {
        key: key.to_owned(),
        reason: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_group_by_handler_and_saga() {
        let saga = "7b7f2d1e-4a57-5c3e-9d7e-0b1c2d3e4f50";
        let key = effect_key(
            "gemeente.geboortepremie",
            &format!("{saga}/municipal-birth-premium"),
        );
        let tokens: Vec<&str> = key.split('.').collect();
        assert_eq!(tokens.len(), 4, "{key}");
        assert_eq!(tokens[0], "fx");
        assert_eq!(handler_of_token(tokens[1]), "gemeente.geboortepremie");
        assert_eq!(tokens[2], saga);
        // The compensation and the step are different effects; so are two handlers.
        assert_ne!(
            key,
            effect_key(
                "gemeente.geboortepremie",
                &format!("{saga}/municipal-birth-premium/compensate")
            )
        );
        assert_ne!(
            key,
            effect_key(
                "gemeente.geboortepremie.recover",
                &format!("{saga}/municipal-birth-premium")
            )
        );
        // A key that is not saga/step still has a place.
        assert_eq!(
            effect_key("a.b", "whatever . * > key").split('.').nth(2),
            Some("_")
        );
    }
}
