//! The handler registry as stored: one event stream (`handler-registry`) of
//! `HandlerChanged` events, folded into a [`Registry`].
//!
//! A change is decided against the registry as stored and appended at the version it was
//! decided on; a concurrent change (another instance) makes the append conflict, and the
//! change is decided again on the newer registry. After a change is stored it is announced
//! on a core NATS subject, so the orchestrators and the other instances read it at once.

use std::sync::Arc;

use chrono::Utc;
use levensloop_proto::stored::{
    HANDLER_CATEGORY, HANDLER_CHANGED_TYPE, HANDLER_REGISTRY_CHANGED_SUBJECT, HANDLER_REGISTRY_ID,
};
use levensloop_proto::v1;
use levensloop_sagas::{Catalog, RegistrationError, Registry};
use levensloop_store::{
    Commit, EventData, EventStore, ExpectedVersion, ReadFrom, StoreError, StreamName, Version,
};
use prost::Message;
use tokio::sync::RwLock;
use uuid::Uuid;

/// Why a registry operation failed.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error(transparent)]
    Refused(#[from] RegistrationError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the registry changed {0} times while this change was decided; try again")]
    Contended(usize),
}

/// How often a change is decided again after losing a race with another instance.
const ATTEMPTS: usize = 8;

/// The registry stream's name.
pub fn stream() -> Result<StreamName, StoreError> {
    StreamName::new(HANDLER_CATEGORY, HANDLER_REGISTRY_ID)
}

/// The registry as stored, with the version it was read at, kept current by [`Self::refresh`].
pub struct RegistryStore {
    store: Arc<dyn EventStore>,
    client: async_nats::Client,
    catalog: Arc<Catalog>,
    current: RwLock<(Registry, Option<Version>)>,
}

impl std::fmt::Debug for RegistryStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistryStore").finish_non_exhaustive()
    }
}

impl RegistryStore {
    pub fn new(
        store: Arc<dyn EventStore>,
        client: async_nats::Client,
        catalog: Arc<Catalog>,
    ) -> Self {
        Self {
            store,
            client,
            catalog,
            current: RwLock::new((Registry::new(), None)),
        }
    }

    /// Reads what was stored since the last read; answers the registry as it is now.
    pub async fn refresh(&self) -> Result<Registry, StoreError> {
        let mut current = self.current.write().await;
        let (registry, version) = &mut *current;
        let from = version.map_or(ReadFrom::Start, ReadFrom::After);
        match self.store.read(&stream()?, from).await {
            Ok(slice) => {
                for recorded in &slice.events {
                    let change =
                        v1::HandlerChanged::decode(recorded.data.as_ref()).map_err(|e| {
                            StoreError::Corrupt {
                                location: format!("{} v{}", recorded.stream, recorded.version),
                                reason: e.to_string(),
                            }
                        })?;
                    registry.apply(&change);
                }
                *version = Some(slice.version);
            }
            Err(StoreError::StreamNotFound { .. }) => {}
            Err(e) => return Err(e),
        }
        Ok(registry.clone())
    }

    /// The registry as last read (without reading).
    pub async fn cached(&self) -> Registry {
        self.current.read().await.0.clone()
    }

    /// Decides a change on the current registry and stores it; decided again after a race.
    pub async fn change(
        &self,
        decide: impl Fn(&Registry, &Catalog) -> Result<v1::HandlerChanged, RegistrationError>,
    ) -> Result<v1::HandlerChanged, RegistryError> {
        for _ in 0..ATTEMPTS {
            let registry = self.refresh().await?;
            let version = self.current.read().await.1;
            let change = decide(&registry, &self.catalog)?;
            let expected = version.map_or(ExpectedVersion::NoStream, ExpectedVersion::Exact);
            let event = EventData::new(HANDLER_CHANGED_TYPE, change.encode_to_vec());
            match self
                .store
                .append(
                    &stream()?,
                    expected,
                    Commit::new(Uuid::new_v4(), vec![event]),
                )
                .await
            {
                Ok(_) => {
                    // Followers also check periodically: a lost announcement only delays them.
                    if let Err(e) = self
                        .client
                        .publish(HANDLER_REGISTRY_CHANGED_SUBJECT, Vec::new().into())
                        .await
                    {
                        tracing::warn!(error = %e, "registry change not announced");
                    }
                    self.refresh().await?;
                    return Ok(change);
                }
                Err(StoreError::VersionConflict { .. }) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(RegistryError::Contended(ATTEMPTS))
    }

    /// Registers a handler.
    pub async fn register(
        &self,
        spec: v1::HandlerSpec,
    ) -> Result<v1::HandlerChanged, RegistryError> {
        self.change(|registry, catalog| registry.register(catalog, spec.clone(), Utc::now()))
            .await
    }

    /// Updates a handler at the version the caller read.
    pub async fn update(
        &self,
        spec: v1::HandlerSpec,
        expected_version: u32,
    ) -> Result<v1::HandlerChanged, RegistryError> {
        self.change(|registry, catalog| {
            registry.update(catalog, spec.clone(), expected_version, Utc::now())
        })
        .await
    }

    /// Deregisters a handler.
    pub async fn deregister(
        &self,
        name: &str,
        reason: &str,
    ) -> Result<v1::HandlerChanged, RegistryError> {
        self.change(|registry, _| registry.deregister(name, reason, Utc::now()))
            .await
    }
}
