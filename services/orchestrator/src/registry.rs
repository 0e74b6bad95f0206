//! The orchestrator's view of the handler registry (see `levensloop_sagas::registry`): the
//! integrators' handlers a new saga includes.
//!
//! A registration counts from the moment it is stored: a life event stored after it must
//! start a saga that includes it. So before a saga starts, the view makes sure it has read
//! the registry at some moment after the life event arrived: one cheap question to the store
//! (the registry stream's version) covers every life event received before it was asked, so
//! under load one question serves a whole burst.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use levensloop_proto::stored::{HANDLER_CATEGORY, HANDLER_REGISTRY_ID};
use levensloop_proto::v1;
use levensloop_sagas::registry::{include_each, municipality_of};
use levensloop_sagas::{Catalog, Definition, EngineError, LifeEventKind, Registry, event_data};
use levensloop_store::{EventStore, ReadFrom, StoreError, StreamName, Version};
use prost::Message;
use tokio::time::Instant;

#[derive(Debug, Default)]
struct Snapshot {
    registry: Arc<Registry>,
    version: Option<Version>,
    /// When the last completed check began: it covers everything received before.
    checked_from: Option<Instant>,
}

/// Which definition a saga starts under: the base definition and the registrations included.
type DefinitionKey = (String, u32, Vec<(String, u32)>);

pub struct RegistryView {
    store: Arc<dyn EventStore>,
    snapshot: Mutex<Snapshot>,
    /// One check at a time; callers that waited usually find theirs covered.
    checking: tokio::sync::Mutex<()>,
    definitions: Mutex<HashMap<DefinitionKey, Arc<Definition>>>,
}

impl std::fmt::Debug for RegistryView {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistryView").finish_non_exhaustive()
    }
}

impl RegistryView {
    pub fn new(store: Arc<dyn EventStore>) -> Self {
        Self {
            store,
            snapshot: Mutex::new(Snapshot::default()),
            checking: tokio::sync::Mutex::new(()),
            definitions: Mutex::new(HashMap::new()),
        }
    }

    fn covered(&self, received: Instant) -> Option<Arc<Registry>> {
        let snapshot = self.snapshot.lock().unwrap_or_else(|p| p.into_inner());
        snapshot
            .checked_from
            .is_some_and(|from| from >= received)
            .then(|| snapshot.registry.clone())
    }

    /// The registry as stored at some moment after `received`.
    pub async fn current(&self, received: Instant) -> Result<Arc<Registry>, StoreError> {
        if let Some(registry) = self.covered(received) {
            return Ok(registry);
        }
        let _one = self.checking.lock().await;
        if let Some(registry) = self.covered(received) {
            return Ok(registry);
        }
        let began = Instant::now();
        let stream = StreamName::new(HANDLER_CATEGORY, HANDLER_REGISTRY_ID)?;
        let known = self
            .snapshot
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .version;
        let now = self.store.version(&stream).await?;
        if now != known {
            let slice = self
                .store
                .read(&stream, known.map_or(ReadFrom::Start, ReadFrom::After))
                .await?;
            let mut registry = (*self
                .snapshot
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .registry)
                .clone();
            for recorded in &slice.events {
                let change = v1::HandlerChanged::decode(recorded.data.as_ref()).map_err(|e| {
                    StoreError::Corrupt {
                        location: format!("{} v{}", recorded.stream, recorded.version),
                        reason: e.to_string(),
                    }
                })?;
                registry.apply(&change);
            }
            let mut snapshot = self.snapshot.lock().unwrap_or_else(|p| p.into_inner());
            snapshot.registry = Arc::new(registry);
            snapshot.version = Some(slice.version);
            tracing::info!(version = %slice.version, "handler registry read");
        }
        let mut snapshot = self.snapshot.lock().unwrap_or_else(|p| p.into_inner());
        snapshot.checked_from = Some(began);
        Ok(snapshot.registry.clone())
    }

    /// The definition a new saga of `event` starts under: the catalog's, with the active
    /// registrations for its life event and municipality (one that no longer fits is left
    /// out, logged).
    pub fn definition_for(
        &self,
        catalog: &Catalog,
        registry: &Registry,
        event: &v1::LifeEvent,
    ) -> Result<Arc<Definition>, EngineError> {
        let base = catalog.base_for(event)?;
        let Some(kind) = LifeEventKind::of(event) else {
            return Ok(base);
        };
        let data = event_data(event);
        let included = registry.for_saga(kind, municipality_of(&base, &data));
        if included.is_empty() {
            return Ok(base);
        }
        let key: DefinitionKey = (
            base.name().to_owned(),
            base.version(),
            included
                .iter()
                .map(|r| {
                    (
                        r.spec.as_ref().map(|s| s.name.clone()).unwrap_or_default(),
                        r.version,
                    )
                })
                .collect(),
        );
        let mut cache = self.definitions.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(definition) = cache.get(&key) {
            return Ok(definition.clone());
        }
        let (definition, left_out) = include_each(&base, &included);
        for (handler, why) in left_out {
            tracing::warn!(%handler, definition = base.name(), error = %why, "registered handler left out of new sagas");
        }
        let definition = Arc::new(definition);
        // Registrations change rarely; a bound keeps a flood of updates from growing it.
        if cache.len() > 1024 {
            cache.clear();
        }
        cache.insert(key, definition.clone());
        Ok(definition)
    }
}
