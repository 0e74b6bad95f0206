//! The life-event types and the field paths a definition may name.
//!
//! A definition refers to event data by path (`child.insz`,
//! `registered_address.municipality_nis_code`): in conditions, in the fields a step is
//! entitled to, and in waits. The loader checks every path against [`LifeEventKind::fields`],
//! so a typo is a load error rather than a step that silently receives nothing. The list
//! follows the payload messages of `levensloop/v1/life_event.proto` field by field (a test
//! compares it with the compiled descriptor), plus the CloudEvents envelope under `event.`.
//!
//! [`event_data`] flattens a [`v1::LifeEvent`] into exactly those paths; the engine filters
//! that map per step, so a task carries only what its handler is entitled to.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::LazyLock;

use levensloop_proto::v1;
use serde::{Deserialize, Serialize};

/// The flattened data of one life event: path → value. Empty proto fields are absent, so
/// "present" means "the registry sent it". Repeated fields are joined with `,`; enums are
/// their proto names (`LICENCE_CATEGORY_B`); the envelope time is RFC 3339.
pub type EventData = BTreeMap<String, String>;

/// The four life events a saga can be started for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LifeEventKind {
    Birth,
    Death,
    ChangeOfAddress,
    DrivingExamPassed,
}

impl LifeEventKind {
    /// All kinds, in proto order.
    pub const ALL: [LifeEventKind; 4] = [
        Self::Birth,
        Self::Death,
        Self::ChangeOfAddress,
        Self::DrivingExamPassed,
    ];

    /// The name used in definition files (`life_event = "change-of-address"`).
    pub fn name(self) -> &'static str {
        match self {
            Self::Birth => "birth",
            Self::Death => "death",
            Self::ChangeOfAddress => "change-of-address",
            Self::DrivingExamPassed => "driving-exam-passed",
        }
    }

    /// The kind for a definition-file name.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.name() == name)
    }

    /// The proto enum value.
    pub fn proto(self) -> v1::LifeEventType {
        match self {
            Self::Birth => v1::LifeEventType::Birth,
            Self::Death => v1::LifeEventType::Death,
            Self::ChangeOfAddress => v1::LifeEventType::ChangeOfAddress,
            Self::DrivingExamPassed => v1::LifeEventType::DrivingExamPassed,
        }
    }

    /// The kind of a proto enum value; `None` for `UNSPECIFIED`.
    pub fn from_proto(t: v1::LifeEventType) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.proto() == t)
    }

    /// The kind of the payload a life event carries (not its `type` attribute, which the
    /// gateway has already checked against the payload).
    pub fn of(event: &v1::LifeEvent) -> Option<Self> {
        Self::from_proto(event.payload_type())
    }

    /// Every field path of this life event that a definition may name.
    pub fn fields(self) -> &'static BTreeSet<String> {
        &FIELDS[self as usize]
    }

    /// Whether `path` names a field of this life event.
    pub fn is_field(self, path: &str) -> bool {
        self.fields().contains(path)
    }
}

impl fmt::Display for LifeEventKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

const ENVELOPE: &[&str] = &["id", "source", "type", "time", "subject"];
const PERSON: &[&str] = &[
    "insz",
    "given_names",
    "family_name",
    "date_of_birth",
    "gender",
    "nationalities",
];
const ADDRESS: &[&str] = &[
    "thoroughfare",
    "house_number",
    "box_number",
    "post_code",
    "municipality_name",
    "municipality_nis_code",
    "country_code",
    "address_register_id",
    "full_address",
];
const ACT: &[&str] = &[
    "act_reference",
    "registering_municipality_nis_code",
    "registration_date",
];
const EXAM_CENTRE: &[&str] = &["code", "name", "municipality_nis_code"];

/// One entry of a payload's layout: a scalar field, or a nested message with its fields.
enum Part {
    Leaf(&'static str),
    Nested(&'static str, &'static [&'static str]),
}

use Part::{Leaf, Nested};

const BIRTH: &[Part] = &[
    Nested("act", ACT),
    Nested("child", PERSON),
    Leaf("place_of_birth_nis_code"),
    Leaf("time_of_birth"),
    Nested("mother", PERSON),
    Nested("other_parent", PERSON),
    Nested("registered_address", ADDRESS),
    Leaf("multiple_birth_index"),
];
const DEATH: &[Part] = &[
    Nested("act", ACT),
    Nested("deceased", PERSON),
    Leaf("date_of_death"),
    Leaf("place_of_death_nis_code"),
    Leaf("declaring_doctor_riziv"),
    Nested("registered_address", ADDRESS),
];
const CHANGE_OF_ADDRESS: &[Part] = &[
    Nested("person", PERSON),
    Nested("previous_address", ADDRESS),
    Nested("new_address", ADDRESS),
    Leaf("declaration_date"),
    Leaf("move_date"),
    Leaf("declaring_municipality_nis_code"),
    Leaf("household_member_insz"),
    Leaf("reason"),
];
const DRIVING_EXAM_PASSED: &[Part] = &[
    Nested("candidate", PERSON),
    Nested("exam_centre", EXAM_CENTRE),
    Leaf("exam_date"),
    Leaf("licence_category"),
    Leaf("exam_type"),
    Leaf("exam_reference"),
    Leaf("residence_municipality_nis_code"),
];

static FIELDS: LazyLock<[BTreeSet<String>; 4]> = LazyLock::new(|| {
    LifeEventKind::ALL.map(|kind| {
        let layout = match kind {
            LifeEventKind::Birth => BIRTH,
            LifeEventKind::Death => DEATH,
            LifeEventKind::ChangeOfAddress => CHANGE_OF_ADDRESS,
            LifeEventKind::DrivingExamPassed => DRIVING_EXAM_PASSED,
        };
        let mut set: BTreeSet<String> = ENVELOPE.iter().map(|f| format!("event.{f}")).collect();
        for part in layout {
            match part {
                Leaf(name) => {
                    set.insert((*name).to_owned());
                }
                Nested(prefix, fields) => {
                    set.extend(fields.iter().map(|f| format!("{prefix}.{f}")));
                }
            }
        }
        set
    })
});

/// Collects non-empty values under their paths.
struct Flat(EventData);

impl Flat {
    fn put(&mut self, path: impl Into<String>, value: impl Into<String>) {
        let value = value.into();
        if !value.is_empty() {
            self.0.insert(path.into(), value);
        }
    }

    fn list(&mut self, path: &str, values: &[String]) {
        self.put(path, values.join(","));
    }

    fn person(&mut self, prefix: &str, p: Option<&v1::Person>) {
        let Some(p) = p else { return };
        self.put(format!("{prefix}.insz"), p.insz.as_str());
        self.list(&format!("{prefix}.given_names"), &p.given_names);
        self.put(format!("{prefix}.family_name"), p.family_name.as_str());
        self.put(format!("{prefix}.date_of_birth"), p.date_of_birth.as_str());
        if let Ok(g) = v1::Gender::try_from(p.gender)
            && g != v1::Gender::Unspecified
        {
            self.put(format!("{prefix}.gender"), g.as_str_name());
        }
        self.list(&format!("{prefix}.nationalities"), &p.nationalities);
    }

    fn address(&mut self, prefix: &str, a: Option<&v1::Address>) {
        let Some(a) = a else { return };
        let fields = [
            ("thoroughfare", &a.thoroughfare),
            ("house_number", &a.house_number),
            ("box_number", &a.box_number),
            ("post_code", &a.post_code),
            ("municipality_name", &a.municipality_name),
            ("municipality_nis_code", &a.municipality_nis_code),
            ("country_code", &a.country_code),
            ("address_register_id", &a.address_register_id),
            ("full_address", &a.full_address),
        ];
        for (name, value) in fields {
            self.put(format!("{prefix}.{name}"), value.as_str());
        }
    }

    fn act(&mut self, a: Option<&v1::CivilStatusAct>) {
        let Some(a) = a else { return };
        self.put("act.act_reference", a.act_reference.as_str());
        self.put(
            "act.registering_municipality_nis_code",
            a.registering_municipality_nis_code.as_str(),
        );
        self.put("act.registration_date", a.registration_date.as_str());
    }

    fn enumeration(&mut self, path: &str, name: Option<&'static str>) {
        // The zero value of every proto enum is UNSPECIFIED: the registry did not say.
        if let Some(name) = name
            && !name.ends_with("_UNSPECIFIED")
        {
            self.put(path, name);
        }
    }
}

/// Flattens a life event into its field paths (see [`EventData`]).
pub fn event_data(event: &v1::LifeEvent) -> EventData {
    use v1::life_event::Payload;
    let mut f = Flat(EventData::new());
    f.put("event.id", event.id.as_str());
    f.put("event.source", event.source.as_str());
    f.put("event.type", event.r#type.as_str());
    if let Some(t) = &event.time
        && let Some(t) = crate::time::from_timestamp(t)
    {
        f.put("event.time", t.to_rfc3339());
    }
    f.put("event.subject", event.subject.as_str());
    match &event.payload {
        None => {}
        Some(Payload::Birth(b)) => {
            f.act(b.act.as_ref());
            f.person("child", b.child.as_ref());
            f.put(
                "place_of_birth_nis_code",
                b.place_of_birth_nis_code.as_str(),
            );
            f.put("time_of_birth", b.time_of_birth.as_str());
            f.person("mother", b.mother.as_ref());
            f.person("other_parent", b.other_parent.as_ref());
            f.address("registered_address", b.registered_address.as_ref());
            if b.multiple_birth_index != 0 {
                f.put("multiple_birth_index", b.multiple_birth_index.to_string());
            }
        }
        Some(Payload::Death(d)) => {
            f.act(d.act.as_ref());
            f.person("deceased", d.deceased.as_ref());
            f.put("date_of_death", d.date_of_death.as_str());
            f.put(
                "place_of_death_nis_code",
                d.place_of_death_nis_code.as_str(),
            );
            f.put("declaring_doctor_riziv", d.declaring_doctor_riziv.as_str());
            f.address("registered_address", d.registered_address.as_ref());
        }
        Some(Payload::ChangeOfAddress(m)) => {
            f.person("person", m.person.as_ref());
            f.address("previous_address", m.previous_address.as_ref());
            f.address("new_address", m.new_address.as_ref());
            f.put("declaration_date", m.declaration_date.as_str());
            f.put("move_date", m.move_date.as_str());
            f.put(
                "declaring_municipality_nis_code",
                m.declaring_municipality_nis_code.as_str(),
            );
            f.list("household_member_insz", &m.household_member_insz);
            f.enumeration(
                "reason",
                v1::ChangeOfAddressReason::try_from(m.reason)
                    .ok()
                    .map(|r| r.as_str_name()),
            );
        }
        Some(Payload::DrivingExamPassed(x)) => {
            f.person("candidate", x.candidate.as_ref());
            if let Some(c) = &x.exam_centre {
                f.put("exam_centre.code", c.code.as_str());
                f.put("exam_centre.name", c.name.as_str());
                f.put(
                    "exam_centre.municipality_nis_code",
                    c.municipality_nis_code.as_str(),
                );
            }
            f.put("exam_date", x.exam_date.as_str());
            f.enumeration(
                "licence_category",
                v1::LicenceCategory::try_from(x.licence_category)
                    .ok()
                    .map(|c| c.as_str_name()),
            );
            f.enumeration(
                "exam_type",
                v1::ExamType::try_from(x.exam_type)
                    .ok()
                    .map(|t| t.as_str_name()),
            );
            f.put("exam_reference", x.exam_reference.as_str());
            f.put(
                "residence_municipality_nis_code",
                x.residence_municipality_nis_code.as_str(),
            );
        }
    }
    f.0
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use prost::Message;

    fn person(seed: &str) -> v1::Person {
        v1::Person {
            insz: format!("{seed}-insz"),
            given_names: vec!["A".into(), "B".into()],
            family_name: "F".into(),
            date_of_birth: "2000-01-01".into(),
            gender: v1::Gender::X as i32,
            nationalities: vec!["BE".into()],
        }
    }

    fn address() -> v1::Address {
        v1::Address {
            thoroughfare: "Veldstraat".into(),
            house_number: "1".into(),
            box_number: "2".into(),
            post_code: "9000".into(),
            municipality_name: "Gent".into(),
            municipality_nis_code: "44021".into(),
            country_code: "BE".into(),
            address_register_id: "https://data.vlaanderen.be/id/adres/1".into(),
            full_address: "Veldstraat 1 bus 2, 9000 Gent".into(),
        }
    }

    fn act() -> v1::CivilStatusAct {
        v1::CivilStatusAct {
            act_reference: "A".into(),
            registering_municipality_nis_code: "44021".into(),
            registration_date: "2026-01-02".into(),
        }
    }

    /// A life event of `kind` with every field set: its flattening must hit every path.
    pub(crate) fn full_event(kind: LifeEventKind) -> v1::LifeEvent {
        use v1::life_event::Payload;
        let payload = match kind {
            LifeEventKind::Birth => Payload::Birth(v1::Birth {
                act: Some(act()),
                child: Some(person("child")),
                place_of_birth_nis_code: "44021".into(),
                time_of_birth: "10:00".into(),
                mother: Some(person("mother")),
                other_parent: Some(person("other")),
                registered_address: Some(address()),
                multiple_birth_index: 1,
            }),
            LifeEventKind::Death => Payload::Death(v1::Death {
                act: Some(act()),
                deceased: Some(person("deceased")),
                date_of_death: "2026-01-01".into(),
                place_of_death_nis_code: "44021".into(),
                declaring_doctor_riziv: "1".into(),
                registered_address: Some(address()),
            }),
            LifeEventKind::ChangeOfAddress => Payload::ChangeOfAddress(v1::ChangeOfAddress {
                person: Some(person("person")),
                previous_address: Some(address()),
                new_address: Some(address()),
                declaration_date: "2026-01-02".into(),
                move_date: "2026-01-01".into(),
                declaring_municipality_nis_code: "44021".into(),
                household_member_insz: vec!["1".into(), "2".into()],
                reason: v1::ChangeOfAddressReason::Move as i32,
            }),
            LifeEventKind::DrivingExamPassed => Payload::DrivingExamPassed(v1::DrivingExamPassed {
                candidate: Some(person("candidate")),
                exam_centre: Some(v1::ExamCentre {
                    code: "C".into(),
                    name: "N".into(),
                    municipality_nis_code: "44021".into(),
                }),
                exam_date: "2026-01-01".into(),
                licence_category: v1::LicenceCategory::B as i32,
                exam_type: v1::ExamType::Practical as i32,
                exam_reference: "R".into(),
                residence_municipality_nis_code: "44021".into(),
            }),
        };
        v1::LifeEvent {
            id: "id".into(),
            source: "urn:test".into(),
            r#type: kind.proto().cloudevents_type().unwrap_or_default().into(),
            specversion: "1.0".into(),
            time: Some(levensloop_proto::types::Timestamp {
                seconds: 1_767_225_600,
                nanos: 0,
            }),
            subject: "subject".into(),
            datacontenttype: "application/protobuf".into(),
            dataschema: String::new(),
            payload: Some(payload),
        }
    }

    #[test]
    fn flattening_a_full_event_yields_exactly_the_known_paths() {
        for kind in LifeEventKind::ALL {
            let data = event_data(&full_event(kind));
            let keys: BTreeSet<String> = data.keys().cloned().collect();
            assert_eq!(&keys, kind.fields(), "{kind}");
        }
        let data = event_data(&full_event(LifeEventKind::DrivingExamPassed));
        assert_eq!(data["licence_category"], "LICENCE_CATEGORY_B");
        assert_eq!(data["candidate.given_names"], "A,B");
        assert_eq!(data["event.time"], "2026-01-01T00:00:00+00:00");
    }

    #[test]
    fn empty_fields_are_absent() {
        let mut event = full_event(LifeEventKind::Death);
        if let Some(v1::life_event::Payload::Death(d)) = &mut event.payload {
            d.date_of_death.clear();
            d.registered_address = None;
        }
        let data = event_data(&event);
        assert!(!data.contains_key("date_of_death"));
        assert!(!data.keys().any(|k| k.starts_with("registered_address.")));
    }

    /// The hand-written layout must follow the proto payload messages, field by field.
    #[test]
    fn the_field_list_matches_the_proto_descriptor() {
        let fds =
            prost_types::FileDescriptorSet::decode(levensloop_proto::FILE_DESCRIPTOR_SET).unwrap();
        let messages: BTreeMap<String, &prost_types::DescriptorProto> = fds
            .file
            .iter()
            .filter(|f| f.package() == "levensloop.v1")
            .flat_map(|f| f.message_type.iter())
            .map(|m| (format!(".levensloop.v1.{}", m.name()), m))
            .collect();
        fn walk(
            messages: &BTreeMap<String, &prost_types::DescriptorProto>,
            name: &str,
            prefix: &str,
            out: &mut BTreeSet<String>,
        ) {
            use prost_types::field_descriptor_proto::Type;
            for field in &messages[name].field {
                let path = format!("{prefix}{}", field.name());
                if field.r#type() == Type::Message {
                    walk(messages, field.type_name(), &format!("{path}."), out);
                } else {
                    out.insert(path);
                }
            }
        }
        let payloads = [
            (LifeEventKind::Birth, "Birth"),
            (LifeEventKind::Death, "Death"),
            (LifeEventKind::ChangeOfAddress, "ChangeOfAddress"),
            (LifeEventKind::DrivingExamPassed, "DrivingExamPassed"),
        ];
        for (kind, message) in payloads {
            let mut expected: BTreeSet<String> =
                ENVELOPE.iter().map(|f| format!("event.{f}")).collect();
            walk(
                &messages,
                &format!(".levensloop.v1.{message}"),
                "",
                &mut expected,
            );
            assert_eq!(kind.fields(), &expected, "{kind}");
        }
    }

    #[test]
    fn kinds_map_to_names_and_proto() {
        for kind in LifeEventKind::ALL {
            assert_eq!(LifeEventKind::from_name(kind.name()), Some(kind));
            assert_eq!(LifeEventKind::from_proto(kind.proto()), Some(kind));
        }
        assert_eq!(LifeEventKind::from_name("marriage"), None);
    }
}
