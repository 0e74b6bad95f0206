//! Handlers that integrators register at run time, and the definitions that include them.
//!
//! A registration ("on every death in Gent, close the library account") becomes one task step
//! of the sagas of the life events it joins: its id is the handler's name, it needs the steps
//! it sits after, and when it is blocking the steps after those wait for it. The registry is
//! folded from stored [`v1::HandlerChanged`] events; deciding a change checks it against the
//! catalog and the other registrations with the loader's rules, so a registration that would
//! make a bad definition is refused with a precise [`RegistrationError`].
//!
//! A saga records the registrations it includes in its `SagaStarted`, so it keeps them, as
//! they were, for its whole life: an update or a deregistration only changes new sagas.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use levensloop_proto::v1;

use crate::catalog::Catalog;
use crate::definition::{Compensation, Definition, DefinitionError, RetryPolicy, Step, StepKind};
use crate::fields::{EventData, LifeEventKind};
use crate::time::Span;

/// The longest a registered step's attempt may take before it times out.
pub const MAX_TIMEOUT: Span = Span::from_secs(24 * 3600);
/// The most attempts a registration may ask for.
pub const MAX_ATTEMPTS: u32 = 100;

/// Why a registration, update or deregistration was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RegistrationError {
    #[error("invalid handler name {name:?}: {reason}")]
    BadName { name: String, reason: &'static str },
    #[error("handler name `{name}` is already taken{by}")]
    NameTaken { name: String, by: String },
    #[error("no handler `{0}` is registered")]
    NotRegistered(String),
    #[error("handler `{0}` is deregistered; register it again")]
    Deregistered(String),
    #[error("handler `{name}` is at version {actual}, not {expected}")]
    VersionConflict {
        name: String,
        expected: u32,
        actual: u32,
    },
    #[error("the owner is missing")]
    NoOwner,
    #[error("no life-event type to join")]
    NoLifeEvent,
    #[error(
        "unknown life-event type {0}: expected BIRTH, DEATH, CHANGE_OF_ADDRESS or DRIVING_EXAM_PASSED"
    )]
    UnknownLifeEvent(i32),
    #[error("no saga definition for {0} events")]
    NoDefinition(LifeEventKind),
    #[error("unknown step `{step}` to attach after in the {life_event} saga")]
    UnknownStep {
        life_event: LifeEventKind,
        step: String,
    },
    #[error("in the {life_event} saga the steps would form a cycle: {}", .cycle.join(" -> "))]
    Cycle {
        life_event: LifeEventKind,
        cycle: Vec<String>,
    },
    #[error("the handler may not see `{field}`: {reason}")]
    FieldNotPermitted { field: String, reason: String },
    #[error("bad retry policy: {0}")]
    BadRetry(String),
    #[error("bad timeout: {0}")]
    BadTimeout(String),
    #[error("bad webhook URL {url:?}: {reason}")]
    BadWebhook { url: String, reason: &'static str },
    #[error("bad municipality {0:?}: a REFNIS code has 5 digits")]
    BadMunicipality(String),
    /// Any other way the step would break the saga's definition.
    #[error("in the {life_event} saga: {error}")]
    Definition {
        life_event: LifeEventKind,
        error: DefinitionError,
    },
}

/// Every handler's current registration, deregistered ones included, by name.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Registry {
    handlers: BTreeMap<String, v1::HandlerRegistration>,
}

impl Registry {
    pub fn new() -> Self {
        Self::default()
    }

    /// Folds one stored change in.
    pub fn apply(&mut self, change: &v1::HandlerChanged) {
        if let Some(registration) = &change.registration
            && let Some(spec) = &registration.spec
        {
            self.handlers
                .insert(spec.name.clone(), registration.clone());
        }
    }

    /// A handler's registration, deregistered or not.
    pub fn get(&self, name: &str) -> Option<&v1::HandlerRegistration> {
        self.handlers.get(name)
    }

    /// The registrations, by name.
    pub fn list(&self, include_deregistered: bool) -> Vec<v1::HandlerRegistration> {
        self.handlers
            .values()
            .filter(|r| include_deregistered || !r.deregistered)
            .cloned()
            .collect()
    }

    /// The active registrations a new saga of `kind` includes, by name; with `municipality`,
    /// only those that act there.
    pub fn for_saga(
        &self,
        kind: LifeEventKind,
        municipality: Option<&str>,
    ) -> Vec<v1::HandlerRegistration> {
        self.handlers
            .values()
            .filter(|r| !r.deregistered)
            .filter(|r| {
                r.spec.as_ref().is_some_and(|s| {
                    joins(s, kind)
                        && (s.municipality_nis_codes.is_empty()
                            || municipality
                                .is_some_and(|m| s.municipality_nis_codes.iter().any(|c| c == m)))
                })
            })
            .cloned()
            .collect()
    }

    /// Decides a new registration (or a registration again after a deregistration).
    pub fn register(
        &self,
        catalog: &Catalog,
        spec: v1::HandlerSpec,
        now: DateTime<Utc>,
    ) -> Result<v1::HandlerChanged, RegistrationError> {
        let version = match self.handlers.get(&spec.name) {
            Some(existing) if !existing.deregistered => {
                return Err(RegistrationError::NameTaken {
                    name: spec.name,
                    by: format!(
                        " by {}",
                        existing.spec.as_ref().map_or("", |s| s.owner.as_str())
                    ),
                });
            }
            Some(existing) => existing.version + 1,
            None => 1,
        };
        self.check(catalog, &spec)?;
        Ok(change(spec, version, now, false, "registered", ""))
    }

    /// Decides an update of an active registration at `expected_version`.
    pub fn update(
        &self,
        catalog: &Catalog,
        spec: v1::HandlerSpec,
        expected_version: u32,
        now: DateTime<Utc>,
    ) -> Result<v1::HandlerChanged, RegistrationError> {
        let existing = self.active(&spec.name)?;
        if existing.version != expected_version {
            return Err(RegistrationError::VersionConflict {
                name: spec.name,
                expected: expected_version,
                actual: existing.version,
            });
        }
        let version = existing.version + 1;
        self.check(catalog, &spec)?;
        Ok(change(spec, version, now, false, "updated", ""))
    }

    /// Decides a deregistration: new sagas no longer include the handler; sagas that do
    /// finish with it.
    pub fn deregister(
        &self,
        name: &str,
        reason: &str,
        now: DateTime<Utc>,
    ) -> Result<v1::HandlerChanged, RegistrationError> {
        let existing = self.active(name)?;
        let spec = existing.spec.clone().unwrap_or_default();
        Ok(change(
            spec,
            existing.version + 1,
            now,
            true,
            "deregistered",
            reason,
        ))
    }

    fn active(&self, name: &str) -> Result<&v1::HandlerRegistration, RegistrationError> {
        match self.handlers.get(name) {
            None => Err(RegistrationError::NotRegistered(name.to_owned())),
            Some(r) if r.deregistered => Err(RegistrationError::Deregistered(name.to_owned())),
            Some(r) => Ok(r),
        }
    }

    /// The spec on its own, then each saga it joins with every other active registration.
    fn check(&self, catalog: &Catalog, spec: &v1::HandlerSpec) -> Result<(), RegistrationError> {
        check_name(&spec.name)?;
        for definition in catalog.definitions() {
            let taken = definition.steps().iter().any(|s| s.id == spec.name)
                || definition.handlers().contains(spec.name.as_str());
            if taken {
                return Err(RegistrationError::NameTaken {
                    name: spec.name.clone(),
                    by: format!(" by a step of the {} saga", definition.name()),
                });
            }
        }
        if spec.owner.trim().is_empty() {
            return Err(RegistrationError::NoOwner);
        }
        if spec.life_event_types.is_empty() {
            return Err(RegistrationError::NoLifeEvent);
        }
        if !spec.webhook_url.is_empty() {
            check_webhook(&spec.webhook_url)?;
        }
        for code in &spec.municipality_nis_codes {
            if code.len() != 5 || !code.bytes().all(|b| b.is_ascii_digit()) {
                return Err(RegistrationError::BadMunicipality(code.clone()));
            }
        }
        for &t in &spec.life_event_types {
            let kind = v1::LifeEventType::try_from(t)
                .ok()
                .and_then(LifeEventKind::from_proto)
                .ok_or(RegistrationError::UnknownLifeEvent(t))?;
            let base = catalog
                .for_kind(kind)
                .ok_or(RegistrationError::NoDefinition(kind))?;
            for field in &spec.permitted_fields {
                if !kind.is_field(field) {
                    return Err(RegistrationError::FieldNotPermitted {
                        field: field.clone(),
                        reason: format!("{kind} events have no such field"),
                    });
                }
            }
            // Every other active registration of the kind, whatever its municipalities: a
            // saga may include any of them.
            let mut others: Vec<v1::HandlerRegistration> = self
                .handlers
                .values()
                .filter(|r| !r.deregistered)
                .filter(|r| {
                    r.spec
                        .as_ref()
                        .is_some_and(|s| s.name != spec.name && joins(s, kind))
                })
                .cloned()
                .collect();
            others.push(v1::HandlerRegistration {
                spec: Some(spec.clone()),
                version: 0,
                registered_at: None,
                deregistered: false,
            });
            include(&base, &others)?;
        }
        Ok(())
    }
}

/// Whether a registration joins sagas of `kind`.
fn joins(spec: &v1::HandlerSpec, kind: LifeEventKind) -> bool {
    spec.life_event_types
        .iter()
        .any(|&t| v1::LifeEventType::try_from(t).ok() == Some(kind.proto()))
}

fn change(
    spec: v1::HandlerSpec,
    version: u32,
    now: DateTime<Utc>,
    deregistered: bool,
    kind: &str,
    reason: &str,
) -> v1::HandlerChanged {
    v1::HandlerChanged {
        registration: Some(v1::HandlerRegistration {
            spec: Some(spec),
            version,
            registered_at: Some(levensloop_proto::types::Timestamp {
                seconds: now.timestamp(),
                nanos: i32::try_from(now.timestamp_subsec_nanos()).unwrap_or(0),
            }),
            deregistered,
        }),
        change: kind.to_owned(),
        reason: reason.to_owned(),
    }
}

/// A handler name is subject tokens: lower-case letters, digits, `-` and `_`, separated by
/// single dots (`gent.library.close-account`); it names the handler's queue.
pub fn check_name(name: &str) -> Result<(), RegistrationError> {
    match levensloop_proto::handler_name_problem(name) {
        None => Ok(()),
        Some(reason) => Err(RegistrationError::BadName {
            name: name.to_owned(),
            reason,
        }),
    }
}

fn check_webhook(url: &str) -> Result<(), RegistrationError> {
    let bad = |reason| {
        Err(RegistrationError::BadWebhook {
            url: url.to_owned(),
            reason,
        })
    };
    let Some(rest) = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))
    else {
        return bad("must start with http:// or https://");
    };
    let host = rest.split(['/', '?', '#']).next().unwrap_or_default();
    if host.is_empty() {
        return bad("no host");
    }
    if url.chars().any(char::is_whitespace) {
        return bad("contains white space");
    }
    Ok(())
}

fn span_of(d: &levensloop_proto::types::Duration) -> Option<Span> {
    let millis = d
        .seconds
        .checked_mul(1000)?
        .checked_add(i64::from(d.nanos) / 1_000_000)?;
    u64::try_from(millis).ok().map(Span::from_millis)
}

/// The retry policy a registration asks for, on the definition's defaults.
fn retry_of(base: &Definition, spec: &v1::HandlerSpec) -> Result<RetryPolicy, RegistrationError> {
    let mut retry = base.defaults().retry;
    let Some(asked) = &spec.retry else {
        return Ok(retry);
    };
    let bad = |reason: &str| Err(RegistrationError::BadRetry(reason.to_owned()));
    if asked.max_attempts > MAX_ATTEMPTS {
        return bad("max_attempts is at most 100");
    }
    if asked.max_attempts > 0 {
        retry.max_attempts = asked.max_attempts;
    }
    if asked.multiplier != 0.0 && asked.multiplier != 2.0 {
        return bad("the backoff doubles after each failure: multiplier must be 2 (or unset)");
    }
    if let Some(initial) = &asked.initial_backoff {
        match span_of(initial) {
            Some(s) if !s.is_zero() => retry.backoff_base = s,
            _ => return bad("initial_backoff must be positive"),
        }
    }
    if let Some(max) = &asked.max_backoff {
        match span_of(max) {
            Some(s) if !s.is_zero() => retry.backoff_max = s,
            _ => return bad("max_backoff must be positive"),
        }
    }
    if retry.backoff_base > retry.backoff_max {
        if asked.max_backoff.is_some() {
            return bad("initial_backoff is larger than max_backoff");
        }
        retry.backoff_max = retry.backoff_base;
    }
    Ok(retry)
}

/// The step a registration adds to `base`.
fn step_of(base: &Definition, spec: &v1::HandlerSpec) -> Result<Step, RegistrationError> {
    let retry = retry_of(base, spec)?;
    let timeout = match &spec.timeout {
        None => base.defaults().timeout,
        Some(t) => match span_of(t) {
            Some(s) if !s.is_zero() && s <= MAX_TIMEOUT => s,
            _ => {
                return Err(RegistrationError::BadTimeout(
                    "must be positive and at most 24 hours".into(),
                ));
            }
        },
    };
    let compensation = spec.supports_compensation.then(|| Compensation {
        handler: spec.name.clone(),
        timeout,
        retry,
    });
    let mut step = base.task_step(spec.name.clone(), spec.name.clone());
    step.description = format!("registered by {}", spec.owner);
    step.kind = StepKind::Task {
        handler: spec.name.clone(),
        compensation,
    };
    step.needs = spec.after_steps.clone();
    step.required = spec.required;
    step.retry = retry;
    step.timeout = Some(timeout);
    step.entitled = spec.permitted_fields.clone();
    Ok(step)
}

/// `base` with the registrations' steps, added in the given order.
pub fn include(
    base: &Definition,
    registrations: &[v1::HandlerRegistration],
) -> Result<Definition, RegistrationError> {
    let mut definition = base.clone();
    let kind = base.life_event();
    for registration in registrations {
        let Some(spec) = &registration.spec else {
            continue;
        };
        let step = step_of(base, spec)?;
        definition
            .include_handler(step, spec.blocking, registration.clone())
            .map_err(|error| match error {
                DefinitionError::UnknownStep { need, .. } => RegistrationError::UnknownStep {
                    life_event: kind,
                    step: need,
                },
                DefinitionError::Cycle { cycle } => RegistrationError::Cycle {
                    life_event: kind,
                    cycle,
                },
                DefinitionError::DuplicateStep { step } => RegistrationError::NameTaken {
                    name: step,
                    by: format!(" by a step of the {kind} saga"),
                },
                DefinitionError::UnknownField { field, .. } => {
                    RegistrationError::FieldNotPermitted {
                        field,
                        reason: format!("{kind} events have no such field"),
                    }
                }
                error => RegistrationError::Definition {
                    life_event: kind,
                    error,
                },
            })?;
    }
    Ok(definition)
}

/// `base` with each registration that still fits it: one that no longer does (its
/// after-step left a newer definition) is left out and returned with the reason, so one bad
/// registration never stops a saga.
pub fn include_each(
    base: &Definition,
    registrations: &[v1::HandlerRegistration],
) -> (Definition, Vec<(String, RegistrationError)>) {
    let mut definition = base.clone();
    let mut left_out = Vec::new();
    for registration in registrations {
        match include(&definition, std::slice::from_ref(registration)) {
            Ok(next) => definition = next,
            Err(e) => left_out.push((
                registration
                    .spec
                    .as_ref()
                    .map(|s| s.name.clone())
                    .unwrap_or_default(),
                e,
            )),
        }
    }
    (definition, left_out)
}

/// The municipality a life event acts for under `definition`, if it names one.
pub fn municipality_of<'a>(definition: &Definition, data: &'a EventData) -> Option<&'a str> {
    data.get(definition.municipality_field())
        .map(String::as_str)
        .filter(|m| !m.is_empty())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    fn catalog() -> Catalog {
        Catalog::builtin().unwrap()
    }

    fn now() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-11-23T10:00:00Z")
            .unwrap()
            .with_timezone(&Utc)
    }

    fn library() -> v1::HandlerSpec {
        v1::HandlerSpec {
            name: "gent.library.close-account".into(),
            owner: "Stad Gent".into(),
            life_event_types: vec![v1::LifeEventType::Death as i32],
            after_steps: vec!["verify-act".into()],
            permitted_fields: vec!["deceased.insz".into(), "date_of_death".into()],
            municipality_nis_codes: vec!["44021".into()],
            ..Default::default()
        }
    }

    fn registered(specs: &[v1::HandlerSpec]) -> Registry {
        let catalog = catalog();
        let mut registry = Registry::new();
        for spec in specs {
            let change = registry.register(&catalog, spec.clone(), now()).unwrap();
            registry.apply(&change);
        }
        registry
    }

    fn refusal(registry: &Registry, spec: v1::HandlerSpec) -> RegistrationError {
        registry.register(&catalog(), spec, now()).unwrap_err()
    }

    #[test]
    fn a_registration_becomes_a_step_of_the_sagas_it_joins() {
        let registry = registered(&[library()]);
        let catalog = catalog();
        let death = catalog.for_kind(LifeEventKind::Death).unwrap();
        let included = registry.for_saga(LifeEventKind::Death, Some("44021"));
        assert_eq!(included.len(), 1);
        let definition = include(&death, &included).unwrap();
        let step = definition.step("gent.library.close-account").unwrap();
        assert_eq!(step.handler(), Some("gent.library.close-account"));
        assert_eq!(step.needs, vec!["verify-act".to_owned()]);
        assert_eq!(step.entitled, vec!["deceased.insz", "date_of_death"]);
        assert!(!step.required);
        assert_eq!(definition.registrations(), &included[..]);
        // Not blocking: no other step waits for it.
        assert!(
            definition
                .steps()
                .iter()
                .all(|s| !s.needs.contains(&step.id))
        );
        // Other municipalities and other life events do not include it.
        assert!(
            registry
                .for_saga(LifeEventKind::Death, Some("11002"))
                .is_empty()
        );
        assert!(
            registry
                .for_saga(LifeEventKind::Birth, Some("44021"))
                .is_empty()
        );
    }

    #[test]
    fn a_blocking_registration_holds_the_steps_after_its_own_needs() {
        let spec = v1::HandlerSpec {
            blocking: true,
            required: true,
            supports_compensation: true,
            ..library()
        };
        let registry = registered(&[spec]);
        let catalog = catalog();
        let death = catalog.for_kind(LifeEventKind::Death).unwrap();
        let definition = include(
            &death,
            &registry.for_saga(LifeEventKind::Death, Some("44021")),
        )
        .unwrap();
        let waiting: Vec<&str> = definition
            .steps()
            .iter()
            .filter(|s| s.needs.iter().any(|n| n == "gent.library.close-account"))
            .map(|s| s.id.as_str())
            .collect();
        let after_verify: Vec<&str> = death
            .steps()
            .iter()
            .filter(|s| s.needs.iter().any(|n| n == "verify-act"))
            .map(|s| s.id.as_str())
            .collect();
        assert!(!waiting.is_empty());
        assert_eq!(waiting, after_verify);
        let step = definition.step("gent.library.close-account").unwrap();
        assert!(step.required);
        assert_eq!(
            step.compensation().map(|c| c.handler.as_str()),
            Some("gent.library.close-account")
        );
    }

    #[test]
    fn bad_registrations_are_refused_precisely() {
        let registry = registered(&[library()]);
        assert!(matches!(
            refusal(&registry, library()),
            RegistrationError::NameTaken { .. }
        ));
        assert!(matches!(
            refusal(
                &registry,
                v1::HandlerSpec {
                    name: "magda.household".into(),
                    ..library()
                }
            ),
            RegistrationError::NameTaken { .. }
        ));
        assert!(matches!(
            refusal(
                &registry,
                v1::HandlerSpec {
                    name: "library".into(),
                    ..library()
                }
            ),
            RegistrationError::NameTaken { .. }
        ));
        let fresh = || v1::HandlerSpec {
            name: "gent.other".into(),
            ..library()
        };
        assert_eq!(
            refusal(
                &registry,
                v1::HandlerSpec {
                    life_event_types: vec![0],
                    ..fresh()
                }
            ),
            RegistrationError::UnknownLifeEvent(0)
        );
        assert_eq!(
            refusal(
                &registry,
                v1::HandlerSpec {
                    life_event_types: vec![],
                    ..fresh()
                }
            ),
            RegistrationError::NoLifeEvent
        );
        assert_eq!(
            refusal(
                &registry,
                v1::HandlerSpec {
                    after_steps: vec!["no-such-step".into()],
                    ..fresh()
                }
            ),
            RegistrationError::UnknownStep {
                life_event: LifeEventKind::Death,
                step: "no-such-step".into()
            }
        );
        // Blocking after two steps where one needs the other: the later one would wait for
        // the handler, which waits for it.
        assert!(matches!(
            refusal(
                &registry,
                v1::HandlerSpec {
                    after_steps: vec!["verify-act".into(), "settle-other-sagas".into()],
                    blocking: true,
                    ..fresh()
                }
            ),
            RegistrationError::Cycle {
                life_event: LifeEventKind::Death,
                ..
            }
        ));
        assert_eq!(
            refusal(
                &registry,
                v1::HandlerSpec {
                    permitted_fields: vec!["deceased.bank_account".into()],
                    ..fresh()
                }
            ),
            RegistrationError::FieldNotPermitted {
                field: "deceased.bank_account".into(),
                reason: "death events have no such field".into()
            }
        );
        // A birth has no `deceased`: joining both makes the field one a birth's handler may
        // not see.
        assert!(matches!(
            refusal(
                &registry,
                v1::HandlerSpec {
                    life_event_types: vec![
                        v1::LifeEventType::Death as i32,
                        v1::LifeEventType::Birth as i32
                    ],
                    after_steps: vec![],
                    ..fresh()
                }
            ),
            RegistrationError::FieldNotPermitted { .. }
        ));
        assert!(matches!(
            refusal(
                &registry,
                v1::HandlerSpec {
                    name: "Gent.Library".into(),
                    ..fresh()
                }
            ),
            RegistrationError::BadName { .. }
        ));
        assert!(matches!(
            refusal(
                &registry,
                v1::HandlerSpec {
                    webhook_url: "ftp://x".into(),
                    ..fresh()
                }
            ),
            RegistrationError::BadWebhook { .. }
        ));
        assert!(matches!(
            refusal(
                &registry,
                v1::HandlerSpec {
                    municipality_nis_codes: vec!["Gent".into()],
                    ..fresh()
                }
            ),
            RegistrationError::BadMunicipality(_)
        ));
        assert!(matches!(
            refusal(
                &registry,
                v1::HandlerSpec {
                    retry: Some(v1::RetryPolicy {
                        multiplier: 3.0,
                        ..Default::default()
                    }),
                    ..fresh()
                }
            ),
            RegistrationError::BadRetry(_)
        ));
        assert_eq!(
            refusal(
                &registry,
                v1::HandlerSpec {
                    owner: " ".into(),
                    ..fresh()
                }
            ),
            RegistrationError::NoOwner
        );
    }

    #[test]
    fn two_registrations_that_wait_on_each_other_are_a_cycle() {
        let first = v1::HandlerSpec {
            name: "a.first".into(),
            after_steps: vec!["verify-act".into()],
            ..library()
        };
        let registry = registered(&[first]);
        // `b.second` after `a.first`, blocking: `a.first`'s dependents... none, so fine; but a
        // blocking step after `verify-act` makes `a.first` wait for it, and it needs `a.first`.
        let second = v1::HandlerSpec {
            name: "b.second".into(),
            after_steps: vec!["verify-act".into(), "a.first".into()],
            blocking: true,
            ..library()
        };
        assert!(matches!(
            refusal(&registry, second),
            RegistrationError::Cycle { .. }
        ));
    }

    #[test]
    fn updates_are_versioned_and_deregistration_only_changes_new_sagas() {
        let catalog = catalog();
        let mut registry = registered(&[library()]);
        assert_eq!(
            registry.get("gent.library.close-account").unwrap().version,
            1
        );
        let conflict = registry.update(&catalog, library(), 7, now()).unwrap_err();
        assert_eq!(
            conflict,
            RegistrationError::VersionConflict {
                name: "gent.library.close-account".into(),
                expected: 7,
                actual: 1
            }
        );
        let required = v1::HandlerSpec {
            required: true,
            ..library()
        };
        let change = registry.update(&catalog, required, 1, now()).unwrap();
        registry.apply(&change);
        assert_eq!(
            registry.get("gent.library.close-account").unwrap().version,
            2
        );

        let change = registry
            .deregister("gent.library.close-account", "contract ended", now())
            .unwrap();
        assert_eq!(change.reason, "contract ended");
        registry.apply(&change);
        assert!(
            registry
                .for_saga(LifeEventKind::Death, Some("44021"))
                .is_empty()
        );
        assert_eq!(registry.list(false).len(), 0);
        assert_eq!(registry.list(true).len(), 1);
        assert!(matches!(
            registry.deregister("gent.library.close-account", "", now()),
            Err(RegistrationError::Deregistered(_))
        ));
        assert!(matches!(
            registry.deregister("nobody", "", now()),
            Err(RegistrationError::NotRegistered(_))
        ));
        // Registered again: the next version.
        let change = registry.register(&catalog, library(), now()).unwrap();
        assert_eq!(change.registration.unwrap().version, 4);
    }
}
