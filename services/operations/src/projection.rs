//! The projection: follows every saga's events through a durable subscription and applies
//! them to the read model in batches (one transaction per batch, acknowledged after it
//! commits), then announces the changed sagas on a core NATS subject that every operations
//! instance follows for `WatchSagas` and the dashboard's live updates.
//!
//! The subscription's name is kept in the read model (`subscription`), so a rebuild — empty the
//! read model, forget the old subscription, start a new one from the first commit — survives
//! a crash halfway: the next start finds the new name and resumes it.

use crate::readmodel::{ReadModel, SagaCommit};
use crate::summary::SagaRecord;
use levensloop_proto::stored::SAGA_CATEGORY;
use levensloop_proto::v1;
use levensloop_store::{Delivery, EventStore};
use prost::Message;
use std::sync::Arc;
use std::time::Duration;
use uuid::Uuid;

/// Core NATS subject on which the projection announces each changed saga (its record, JSON).
pub const CHANGED_SUBJECT: &str = "levensloop.operations.changed";
const SUBSCRIPTION_KEY: &str = "subscription";
const DEFAULT_SUBSCRIPTION: &str = "operations";
/// Commits applied in one transaction at most.
const BATCH: usize = 512;

/// The durable subscription the read model follows.
pub async fn subscription_name(model: &ReadModel) -> anyhow::Result<String> {
    Ok(model
        .meta(SUBSCRIPTION_KEY)
        .await?
        .unwrap_or_else(|| DEFAULT_SUBSCRIPTION.to_owned()))
}

/// Empties the read model and starts it over from the store's first saga event.
pub async fn rebuild(store: &dyn EventStore, model: &ReadModel) -> anyhow::Result<()> {
    let old = subscription_name(model).await?;
    let new = format!("operations-{}", Uuid::new_v4().simple());
    model.reset().await?;
    // The new name first: a crash from here on resumes the rebuild, never the old position.
    model.set_meta(SUBSCRIPTION_KEY, &new).await?;
    store.unsubscribe(&old).await?;
    tracing::info!(subscription = %new, "read model emptied; rebuilding from the store");
    Ok(())
}

/// Follows the saga events for ever; `announce` publishes changes (None: no announcements).
pub async fn run(
    store: Arc<dyn EventStore>,
    model: Arc<ReadModel>,
    announce: Option<async_nats::Client>,
) {
    // One projector per database; the others wait here, ready to take over.
    let _lock = loop {
        match model.projector_lock().await {
            Ok(lock) => break lock,
            Err(e) => {
                tracing::warn!(error = %e, "cannot take the projector lock; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    };
    tracing::info!("projecting the saga events into the read model");
    loop {
        if let Err(e) = follow(&*store, &model, announce.as_ref()).await {
            tracing::warn!(error = %e, "projection interrupted; resuming");
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
}

async fn follow(
    store: &dyn EventStore,
    model: &ReadModel,
    announce: Option<&async_nats::Client>,
) -> anyhow::Result<()> {
    let name = subscription_name(model).await?;
    let mut subscription = store.subscribe(SAGA_CATEGORY, &name).await?;
    let mut caught_up_logged = false;
    loop {
        // One delivery awaited; then whatever is already waiting, up to a batch.
        let mut deliveries = vec![subscription.next().await?];
        while deliveries.len() < BATCH && deliveries.last().is_some_and(|d| d.pending > 0) {
            deliveries.push(subscription.next().await?);
        }
        let commits: Vec<SagaCommit> = deliveries.iter().filter_map(commit_of).collect();
        let began = std::time::Instant::now();
        let changed = model.apply(&commits).await?;
        let pending = deliveries.last().map_or(0, |d| d.pending);
        levensloop_telemetry::metrics::operations().batch(commits.len(), began.elapsed(), pending);
        let caught_up = pending == 0;
        for delivery in deliveries {
            delivery.ack().await?;
        }
        if let Some(client) = announce {
            for record in &changed {
                announce_change(client, record).await;
            }
        }
        if caught_up && !caught_up_logged {
            tracing::info!(subscription = %name, "read model caught up; following live");
            caught_up_logged = true;
        }
    }
}

async fn announce_change(client: &async_nats::Client, record: &SagaRecord) {
    match serde_json::to_vec(record) {
        Ok(json) => {
            if let Err(e) = client.publish(CHANGED_SUBJECT, json.into()).await {
                tracing::debug!(error = %e, "change not announced");
            }
        }
        Err(e) => tracing::warn!(error = %e, "change not announced"),
    }
}

/// The saga commit a delivery holds; an event that does not decode is logged and left out
/// (it is in the store, where `levensloop timeline` shows it) rather than stopping the model.
fn commit_of(delivery: &Delivery) -> Option<SagaCommit> {
    let Ok(saga_id) = Uuid::parse_str(delivery.stream.id()) else {
        tracing::error!(stream = %delivery.stream, "a saga stream whose id is not a UUID skipped");
        return None;
    };
    let events = delivery
        .events
        .iter()
        .filter_map(|recorded| match v1::SagaEvent::decode(recorded.data.as_ref()) {
            Ok(event) => Some(event),
            Err(e) => {
                tracing::error!(stream = %recorded.stream, version = %recorded.version, error = %e,
                    "an undecodable saga event left out of the read model");
                None
            }
        })
        .collect();
    Some(SagaCommit {
        saga_id,
        version: delivery.version.as_u64(),
        events,
    })
}
