//! The public contract of Levensloop, compiled from `proto/levensloop/v1/*.proto`.
//!
//! - [`v1::LifeEvent`]: the CloudEvents 1.0 envelope of a life event and its payload (birth,
//!   death, change of address, driving exam passed);
//! - [`v1::SagaEvent`], [`v1::Task`], [`v1::TaskResult`]: a saga's history and its work;
//! - the gRPC services `IngestService`, `HandlerService` and `OperationsService`, with their
//!   clients and servers (`v1::ingest_service_client`, `v1::ingest_service_server`, …).
//!
//! Every message serialises to and from JSON with serde, following the proto3 JSON mapping
//! (field names as written in the .proto files). [`FILE_DESCRIPTOR_SET`] serves gRPC
//! reflection.

/// The generated code, one module per protobuf package.
pub mod levensloop {
    /// `levensloop.v1`.
    #[allow(
        missing_debug_implementations,
        clippy::all,
        clippy::pedantic,
        clippy::unwrap_used,
        clippy::expect_used
    )]
    pub mod v1 {
        include!(concat!(env!("OUT_DIR"), "/levensloop.v1.rs"));
        include!(concat!(env!("OUT_DIR"), "/levensloop.v1.serde.rs"));
    }
}

pub use levensloop::v1;

/// The well-known types (`Timestamp`, `Duration`, `Struct`) as the generated code uses them.
pub use pbjson_types as types;

/// The encoded `FileDescriptorSet` of every Levensloop .proto file, for gRPC server
/// reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/levensloop_descriptor.bin"));

/// The namespace of saga ids: UUID v5 of the URL `https://levensloop.vlaanderen.be/saga` in
/// the URL namespace.
pub fn saga_namespace() -> uuid::Uuid {
    uuid::Uuid::new_v5(
        &uuid::Uuid::NAMESPACE_URL,
        b"https://levensloop.vlaanderen.be/saga",
    )
}

/// The saga id of a life event: UUID v5, in [`saga_namespace`], of the CloudEvents `source`,
/// a line feed, and the `id`. One life event, one saga: every acknowledgement of the same
/// `(source, id)` carries this id, and anyone holding the pair can compute it.
pub fn saga_id(source: &str, id: &str) -> uuid::Uuid {
    let mut name = Vec::with_capacity(source.len() + 1 + id.len());
    name.extend_from_slice(source.as_bytes());
    name.push(b'\n');
    name.extend_from_slice(id.as_bytes());
    uuid::Uuid::new_v5(&saga_namespace(), &name)
}

/// The CloudEvents `type` of each life event.
pub mod event_types {
    pub const BIRTH: &str = "be.vlaanderen.levensloop.birth.v1";
    pub const DEATH: &str = "be.vlaanderen.levensloop.death.v1";
    pub const CHANGE_OF_ADDRESS: &str = "be.vlaanderen.levensloop.change-of-address.v1";
    pub const DRIVING_EXAM_PASSED: &str = "be.vlaanderen.levensloop.driving-exam-passed.v1";
}

impl v1::LifeEventType {
    /// The CloudEvents `type` string of this life event type.
    pub fn cloudevents_type(self) -> Option<&'static str> {
        match self {
            Self::Unspecified => None,
            Self::Birth => Some(event_types::BIRTH),
            Self::Death => Some(event_types::DEATH),
            Self::ChangeOfAddress => Some(event_types::CHANGE_OF_ADDRESS),
            Self::DrivingExamPassed => Some(event_types::DRIVING_EXAM_PASSED),
        }
    }

    /// The type for a CloudEvents `type` string; `None` for an unknown one.
    pub fn from_cloudevents_type(ce_type: &str) -> Option<Self> {
        [
            Self::Birth,
            Self::Death,
            Self::ChangeOfAddress,
            Self::DrivingExamPassed,
        ]
        .into_iter()
        .find(|t| t.cloudevents_type() == Some(ce_type))
    }
}

impl v1::LifeEvent {
    /// The type of the payload carried, whatever the `type` attribute says.
    pub fn payload_type(&self) -> v1::LifeEventType {
        use v1::life_event::Payload;
        match self.payload {
            None => v1::LifeEventType::Unspecified,
            Some(Payload::Birth(_)) => v1::LifeEventType::Birth,
            Some(Payload::Death(_)) => v1::LifeEventType::Death,
            Some(Payload::ChangeOfAddress(_)) => v1::LifeEventType::ChangeOfAddress,
            Some(Payload::DrivingExamPassed(_)) => v1::LifeEventType::DrivingExamPassed,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::v1;
    use prost::Message;

    fn birth() -> v1::LifeEvent {
        v1::LifeEvent {
            id: "dabs-2026-000123".into(),
            source: "urn:be:dabs".into(),
            r#type: super::event_types::BIRTH.into(),
            specversion: "1.0".into(),
            time: Some(pbjson_types::Timestamp {
                seconds: 1_790_000_000,
                nanos: 0,
            }),
            subject: "26010100123".into(),
            datacontenttype: "application/protobuf".into(),
            dataschema: String::new(),
            payload: Some(v1::life_event::Payload::Birth(v1::Birth {
                child: Some(v1::Person {
                    insz: "26010100123".into(),
                    given_names: vec!["Lotte".into()],
                    family_name: "Peeters".into(),
                    date_of_birth: "2026-01-01".into(),
                    gender: v1::Gender::Female as i32,
                    nationalities: vec!["BE".into()],
                }),
                place_of_birth_nis_code: "44021".into(),
                multiple_birth_index: 1,
                ..Default::default()
            })),
        }
    }

    #[test]
    fn life_events_round_trip_through_json_and_protobuf() {
        let event = birth();
        let json = serde_json::to_string(&event).unwrap();
        assert!(json.contains("\"given_names\":[\"Lotte\"]"), "{json}");
        assert!(json.contains("\"gender\":\"GENDER_FEMALE\""), "{json}");
        // Well-known types follow the proto3 JSON mapping: a Timestamp is an RFC 3339 string.
        assert!(json.contains("\"time\":\"2026-09-21T"), "{json}");
        assert!(json.contains("\"birth\":{"), "{json}");
        let back: v1::LifeEvent = serde_json::from_str(&json).unwrap();
        assert_eq!(back, event);
        let bytes = event.encode_to_vec();
        assert_eq!(v1::LifeEvent::decode(bytes.as_slice()).unwrap(), event);
    }

    #[test]
    fn json_in_lower_camel_case_is_accepted_too() {
        let person: v1::Person = serde_json::from_str(
            r#"{"insz":"26010100123","givenNames":["Lotte"],"familyName":"Peeters","gender":"GENDER_FEMALE"}"#,
        )
        .unwrap();
        assert_eq!(person.given_names, ["Lotte"]);
        assert_eq!(person.gender(), v1::Gender::Female);
    }

    #[test]
    fn unknown_json_fields_are_refused() {
        let err =
            serde_json::from_str::<v1::Person>(r#"{"insz":"1","given_nmes":["x"]}"#).unwrap_err();
        assert!(err.to_string().contains("given_nmes"), "{err}");
    }

    #[test]
    fn saga_ids_are_stable_and_separate_source_from_id() {
        let a = super::saga_id("urn:be:dabs", "123");
        assert_eq!(a, super::saga_id("urn:be:dabs", "123"));
        assert_eq!(a.get_version_num(), 5);
        assert_ne!(a, super::saga_id("urn:be:dabs1", "23"));
        assert_ne!(a, super::saga_id("urn:be:dabs", "124"));
    }

    #[test]
    fn cloudevents_types_map_both_ways() {
        for t in [
            v1::LifeEventType::Birth,
            v1::LifeEventType::Death,
            v1::LifeEventType::ChangeOfAddress,
            v1::LifeEventType::DrivingExamPassed,
        ] {
            let name = t.cloudevents_type().unwrap();
            assert_eq!(v1::LifeEventType::from_cloudevents_type(name), Some(t));
        }
        assert_eq!(v1::LifeEventType::from_cloudevents_type("be.unknown"), None);
        assert_eq!(birth().payload_type(), v1::LifeEventType::Birth);
    }

    #[test]
    fn the_descriptor_set_decodes_and_holds_the_three_services() {
        let fds = prost_types::FileDescriptorSet::decode(super::FILE_DESCRIPTOR_SET).unwrap();
        let services: Vec<String> = fds
            .file
            .iter()
            .filter(|f| f.package() == "levensloop.v1")
            .flat_map(|f| {
                f.service
                    .iter()
                    .map(|s| format!("levensloop.v1.{}", s.name()))
            })
            .collect();
        for service in [
            "levensloop.v1.IngestService",
            "levensloop.v1.HandlerService",
            "levensloop.v1.OperationsService",
        ] {
            assert!(
                services.iter().any(|s| s == service),
                "{service} missing: {services:?}"
            );
        }
        // Reflection clients must be able to resolve the imported well-known types too.
        assert!(
            fds.file
                .iter()
                .any(|f| f.name() == "google/protobuf/timestamp.proto")
        );
        // Our comments travel with the descriptor (protox keeps source info).
        assert!(
            fds.file
                .iter()
                .filter(|f| f.package() == "levensloop.v1")
                .all(|f| f.source_code_info.is_some())
        );
    }
}

/// How life events and sagas are laid out in the event store: the names the gateway writes,
/// the orchestrator follows and the command line reads.
/// What is wrong with a handler name, if anything. A handler name is subject tokens: lower-case
/// letters, digits, `-` and `_`, separated by single dots (`groeipakket.startbedrag`); it
/// names the handler's queue and, for an integrator's handler, its saga step.
pub fn handler_name_problem(name: &str) -> Option<&'static str> {
    if name.is_empty() || name.len() > 128 {
        return Some("must be 1 to 128 characters");
    }
    if name.split('.').any(str::is_empty) {
        return Some("empty segment between dots");
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '_' | '.'))
    {
        return Some("only lower-case letters, digits, '-', '_' and '.' are allowed");
    }
    None
}

pub mod stored {
    /// One stream per accepted life event: `lifeevent-<saga id>`.
    pub const LIFE_EVENT_CATEGORY: &str = "lifeevent";
    /// One stream per saga: `saga-<saga id>`.
    pub const SAGA_CATEGORY: &str = "saga";
    /// One stream of invariant facts per person: `person-<person id>`.
    pub const PERSON_CATEGORY: &str = "person";
    /// The event type of a stored `levensloop.v1.LifeEvent`.
    pub const LIFE_EVENT_TYPE: &str = "levensloop.v1.LifeEvent";
    /// The event type of a stored `levensloop.v1.SagaEvent`.
    pub const SAGA_EVENT_TYPE: &str = "levensloop.v1.SagaEvent";
    /// The handler registry's one stream, `handler-registry`: every registration, update and
    /// deregistration in order (see `levensloop_sagas::registry`).
    pub const HANDLER_CATEGORY: &str = "handler";
    pub const HANDLER_REGISTRY_ID: &str = "registry";
    /// The event type of a stored `levensloop.v1.HandlerChanged`.
    pub const HANDLER_CHANGED_TYPE: &str = "levensloop.v1.HandlerChanged";
    /// Core NATS subject on which a registry change is announced after it is stored, so
    /// followers read it at once rather than at their next periodic check.
    pub const HANDLER_REGISTRY_CHANGED_SUBJECT: &str = "levensloop.registry.changed";
    /// NATS request subject of operators' commands to the orchestrators (`v1::SagaCommand`,
    /// answered with `v1::SagaCommandReply`); the orchestrators share queue group
    /// [`SAGA_COMMAND_QUEUE`].
    pub const SAGA_COMMAND_SUBJECT: &str = "levensloop.saga.command";
    pub const SAGA_COMMAND_QUEUE: &str = "orchestrator";
    /// The JetStream stream of everything the gateway refused (`levensloop.rejected.<kind>`),
    /// each message as received with the reason in the `Levensloop-*` headers below.
    pub const REJECTED_STREAM: &str = "LEVENSLOOP_REJECTED";
    pub const REJECTED_PREFIX: &str = "levensloop.rejected";
    pub const HEADER_REASON_CODE: &str = "Levensloop-Reason-Code";
    pub const HEADER_REASON: &str = "Levensloop-Reason";
    pub const HEADER_FIELD: &str = "Levensloop-Field";
    pub const HEADER_VIOLATIONS: &str = "Levensloop-Violations";
    pub const HEADER_ORIGIN: &str = "Levensloop-Origin";
    /// Metadata on a stored life event: "false" when it starts no saga.
    pub const META_STARTS_SAGA: &str = "levensloop-starts-saga";
    /// Metadata beside [`META_STARTS_SAGA`]: why no saga starts.
    pub const META_NO_SAGA_REASON: &str = "levensloop-no-saga-reason";

    /// A person's id in stream names and keys: UUID v5 of the INSZ, so no national number
    /// appears in a subject, a stream name or a key.
    pub fn person_id(insz: &str) -> uuid::Uuid {
        let namespace = uuid::Uuid::new_v5(
            &uuid::Uuid::NAMESPACE_URL,
            b"https://levensloop.vlaanderen.be/person",
        );
        uuid::Uuid::new_v5(&namespace, insz.as_bytes())
    }
}
