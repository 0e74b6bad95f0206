//! The definitions an orchestrator knows, by name and version.
//!
//! A running saga keeps the definition version it started with, so a catalog holds every
//! version still in use: a new version is added beside the old ones, never over them.
//! [`Catalog::builtin`] loads the four definitions shipped in `sagas/definitions/`, embedded
//! in the binary.

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use levensloop_proto::v1;

use crate::definition::{Definition, DefinitionError, HandlerLimits};
use crate::engine::{Decision, EngineError, Input, SagaState, decide, rebuild};
use crate::fields::LifeEventKind;
use crate::registry;

/// The shipped definition files: (file name, contents).
pub const BUILTIN: [(&str, &str); 4] = [
    ("birth.toml", include_str!("../definitions/birth.toml")),
    ("death.toml", include_str!("../definitions/death.toml")),
    (
        "change-of-address.toml",
        include_str!("../definitions/change-of-address.toml"),
    ),
    (
        "driving-exam-passed.toml",
        include_str!("../definitions/driving-exam-passed.toml"),
    ),
];

/// Definitions by name and version.
#[derive(Debug, Clone, Default)]
pub struct Catalog {
    definitions: BTreeMap<String, BTreeMap<u32, Arc<Definition>>>,
}

impl Catalog {
    /// An empty catalog.
    pub fn new() -> Self {
        Self::default()
    }

    /// The four shipped definitions.
    pub fn builtin() -> Result<Self, DefinitionError> {
        let mut catalog = Self::new();
        for (_, text) in BUILTIN {
            catalog.insert(Definition::from_toml_str(text)?)?;
        }
        Ok(catalog)
    }

    /// Adds a definition; refused if that name and version are already there.
    pub fn insert(&mut self, definition: Definition) -> Result<Arc<Definition>, DefinitionError> {
        let versions = self
            .definitions
            .entry(definition.name().to_owned())
            .or_default();
        if versions.contains_key(&definition.version()) {
            return Err(DefinitionError::DuplicateVersion {
                name: definition.name().to_owned(),
                version: definition.version(),
            });
        }
        let definition = Arc::new(definition);
        versions.insert(definition.version(), definition.clone());
        Ok(definition)
    }

    /// A definition by name and version (what a saga's `SagaStarted` names).
    pub fn get(&self, name: &str, version: u32) -> Option<Arc<Definition>> {
        self.definitions.get(name)?.get(&version).cloned()
    }

    /// The newest version of a definition.
    pub fn latest(&self, name: &str) -> Option<Arc<Definition>> {
        self.definitions.get(name)?.values().next_back().cloned()
    }

    /// Every definition, every version.
    pub fn definitions(&self) -> impl Iterator<Item = &Arc<Definition>> {
        self.definitions.values().flat_map(|v| v.values())
    }

    /// The definition a new saga for `kind` starts under: the newest version of the
    /// definition named after the life event (`birth`, `change-of-address`, …).
    pub fn for_kind(&self, kind: LifeEventKind) -> Option<Arc<Definition>> {
        self.latest(kind.name()).filter(|d| d.life_event() == kind)
    }

    /// Creates and starts the saga of a life event: the empty state under the current
    /// definition, and the decision of [`Input::Start`] (store its events, then fold them).
    /// [`EngineError::NoSaga`] for an event that starts none (a re-addressing).
    pub fn start(
        &self,
        life_event: &v1::LifeEvent,
        facts: BTreeMap<String, String>,
        now: DateTime<Utc>,
    ) -> Result<(SagaState, Decision), EngineError> {
        let definition = self.base_for(life_event)?;
        Self::start_under(definition, life_event, facts, now)
    }

    /// The definition a new saga of this life event starts from, before integrators'
    /// handlers (see [`crate::registry`]).
    pub fn base_for(&self, life_event: &v1::LifeEvent) -> Result<Arc<Definition>, EngineError> {
        let kind = LifeEventKind::of(life_event).ok_or(EngineError::NoDefinition {
            life_event: life_event.r#type.clone(),
        })?;
        self.for_kind(kind).ok_or(EngineError::NoDefinition {
            life_event: kind.name().to_owned(),
        })
    }

    /// Starts a saga under a given definition (a base one with integrators' handlers
    /// included).
    pub fn start_under(
        definition: Arc<Definition>,
        life_event: &v1::LifeEvent,
        facts: BTreeMap<String, String>,
        now: DateTime<Utc>,
    ) -> Result<(SagaState, Decision), EngineError> {
        let state = SagaState::new(definition, life_event)?;
        let decision = decide(&state, Input::Start { now, facts })?;
        Ok((state, decision))
    }

    /// Rebuilds a saga from its stored events, under the definition version its
    /// `SagaStarted` names.
    pub fn rebuild(
        &self,
        life_event: &v1::LifeEvent,
        events: &[v1::SagaEvent],
    ) -> Result<SagaState, EngineError> {
        let definition = match events.first().and_then(|e| e.event.as_ref()) {
            Some(v1::saga_event::Event::SagaStarted(s)) => {
                let base = self
                    .get(&s.definition, s.definition_version)
                    .ok_or_else(|| {
                        EngineError::Rebuild(format!(
                            "definition {} v{} is not in the catalog",
                            s.definition, s.definition_version
                        ))
                    })?;
                if s.handlers.is_empty() {
                    base
                } else {
                    // The integrators' handlers as the saga recorded them when it started.
                    Arc::new(registry::include(&base, &s.handlers).map_err(|e| {
                        EngineError::Rebuild(format!(
                            "the registered handlers of {} v{}: {e}",
                            s.definition, s.definition_version
                        ))
                    })?)
                }
            }
            Some(_) => {
                return Err(EngineError::Rebuild(
                    "the first event is not SagaStarted".into(),
                ));
            }
            None => {
                let kind = LifeEventKind::of(life_event).ok_or(EngineError::NoDefinition {
                    life_event: life_event.r#type.clone(),
                })?;
                self.for_kind(kind).ok_or(EngineError::NoDefinition {
                    life_event: kind.name().to_owned(),
                })?
            }
        };
        rebuild(definition, life_event, events)
    }

    /// A handler's limits across every definition that declares some: the strictest of
    /// each, since one target system serves all of them.
    pub fn handler_limits(&self, handler: &str) -> Option<HandlerLimits> {
        let mut out: Option<HandlerLimits> = None;
        for limits in self.definitions().filter_map(|d| d.handler_limits(handler)) {
            let merged = out.get_or_insert_with(|| HandlerLimits {
                system: limits.system.clone(),
                ..HandlerLimits::default()
            });
            merged.max_rate_per_second =
                min_opt(merged.max_rate_per_second, limits.max_rate_per_second);
            merged.max_in_flight = min_opt(merged.max_in_flight, limits.max_in_flight);
        }
        out
    }
}

fn min_opt<T: PartialOrd + Copy>(a: Option<T>, b: Option<T>) -> Option<T> {
    match (a, b) {
        (Some(a), Some(b)) => Some(if b < a { b } else { a }),
        (a, None) => a,
        (None, b) => b,
    }
}
