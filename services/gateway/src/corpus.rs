//! Known inputs, good and bad, for tests of both doors and for the registry simulator.
//!
//! - [`valid_birth`], [`valid_death`], [`valid_change_of_address`], [`valid_driving_exam`]:
//!   realistic life events with valid INSZ numbers and current NIS codes, all dated before
//!   2026-11-01.
//! - The encoders ([`encode_binary_json`], [`encode_binary_protobuf`], [`encode_structured`],
//!   …) turn an event into what a registry sends over NATS or gRPC.
//! - [`bad_inputs`]: the bad-input corpus, each case with the field and [`Reason`] of the
//!   first violation it must produce; [`good_inputs`]: inputs that must pass (every valid
//!   event in every encoding, bis numbers, edge cases at the limits).
//!
//! The expectations hold at [`fixed_now`] (2026-11-22T12:00:00Z) with [`Limits::default`].
//! [`check`] runs an input through the gateway's pure path: decode, then validate.

use crate::decode::{
    CONTENT_TYPE_CLOUDEVENTS_JSON, CONTENT_TYPE_JSON, CONTENT_TYPE_PROTOBUF, base64_encode,
    decode_nats, decode_raw, subject_for, timestamp,
};
use crate::rejection::{Limits, Reason, Rejection};
use crate::validate::validate;
use chrono::{DateTime, NaiveDate, SecondsFormat, Utc};
use levensloop_proto::{event_types, types, v1};
use prost::Message;
use serde_json::Value;
use v1::life_event::Payload;

/// The "now" the corpus expectations hold at: 2026-11-22T12:00:00Z.
pub fn fixed_now() -> DateTime<Utc> {
    DateTime::from_timestamp(1_795_348_800, 0).unwrap_or_default()
}

/// A UTC time as a protobuf Timestamp.
fn at(y: i32, m: u32, d: u32, h: u32, min: u32) -> Option<types::Timestamp> {
    NaiveDate::from_ymd_opt(y, m, d)
        .and_then(|date| date.and_hms_opt(h, min, 0))
        .map(|t| timestamp(t.and_utc()))
}

fn person(insz: &str, given: &[&str], family: &str, born: &str, gender: v1::Gender) -> v1::Person {
    v1::Person {
        insz: insz.to_owned(),
        given_names: given.iter().map(|s| (*s).to_owned()).collect(),
        family_name: family.to_owned(),
        date_of_birth: born.to_owned(),
        gender: gender as i32,
        nationalities: vec!["BE".to_owned()],
    }
}

fn address(street: &str, number: &str, post_code: &str, name: &str, nis: &str) -> v1::Address {
    v1::Address {
        thoroughfare: street.to_owned(),
        house_number: number.to_owned(),
        box_number: String::new(),
        post_code: post_code.to_owned(),
        municipality_name: name.to_owned(),
        municipality_nis_code: nis.to_owned(),
        country_code: "BE".to_owned(),
        address_register_id: String::new(),
        full_address: format!("{street} {number}, {post_code} {name}"),
    }
}

/// A birth in Gent: Lars Peeters, born 2026-10-15, declared by his parents.
pub fn valid_birth() -> v1::LifeEvent {
    v1::LifeEvent {
        id: "dabs-birth-2026-044021-000731".to_owned(),
        source: "urn:be:dabs".to_owned(),
        r#type: event_types::BIRTH.to_owned(),
        specversion: "1.0".to_owned(),
        time: at(2026, 10, 19, 9, 42),
        subject: "26101512372".to_owned(),
        datacontenttype: CONTENT_TYPE_PROTOBUF.to_owned(),
        dataschema: String::new(),
        payload: Some(Payload::Birth(v1::Birth {
            act: Some(v1::CivilStatusAct {
                act_reference: "DABS/44021/2026/G/000731".to_owned(),
                registering_municipality_nis_code: "44021".to_owned(),
                registration_date: "2026-10-19".to_owned(),
            }),
            child: Some(person(
                "26101512372",
                &["Lars", "Pieter"],
                "Peeters",
                "2026-10-15",
                v1::Gender::Male,
            )),
            place_of_birth_nis_code: "44021".to_owned(),
            time_of_birth: "04:17".to_owned(),
            mother: Some(person(
                "94031224631",
                &["Sofie"],
                "Janssens",
                "1994-03-12",
                v1::Gender::Female,
            )),
            other_parent: Some(person(
                "92080511772",
                &["Tom"],
                "Peeters",
                "1992-08-05",
                v1::Gender::Male,
            )),
            registered_address: Some(address(
                "Kortrijksesteenweg",
                "112",
                "9000",
                "Gent",
                "44021",
            )),
            multiple_birth_index: 1,
        })),
    }
}

/// The `i`-th of a family of distinct valid births (for bulk and concurrency tests): each has
/// its own id and its own child, born on one of the days before 2026-10-15 with a valid INSZ.
pub fn numbered_birth(i: u32) -> v1::LifeEvent {
    let mut event = valid_birth();
    let base = NaiveDate::from_ymd_opt(2026, 10, 15).unwrap_or_default();
    let born = base - chrono::Days::new(u64::from(i / 998));
    let serial = (i % 998) as u16 + 1;
    let insz = levensloop_reference::Insz::generate(born, serial)
        .map(|n| n.to_string())
        .unwrap_or_default();
    let gender = if serial % 2 == 1 {
        v1::Gender::Male
    } else {
        v1::Gender::Female
    };
    event.id = format!("dabs-birth-bulk-{i:07}");
    event.subject = insz.clone();
    if let Some(Payload::Birth(birth)) = &mut event.payload {
        if let Some(act) = &mut birth.act {
            act.act_reference = format!("DABS/44021/2026/G/B{i:07}");
        }
        if let Some(child) = &mut birth.child {
            child.insz = insz;
            child.date_of_birth = born.format("%Y-%m-%d").to_string();
            child.gender = gender as i32;
        }
    }
    event
}

/// A death in Gent: Maria Vermeulen of Deinze, born 1941-05-03, died 2026-10-25.
pub fn valid_death() -> v1::LifeEvent {
    v1::LifeEvent {
        id: "dabs-death-2026-044021-002218".to_owned(),
        source: "urn:be:dabs".to_owned(),
        r#type: event_types::DEATH.to_owned(),
        specversion: "1.0".to_owned(),
        time: at(2026, 10, 26, 14, 5),
        subject: "41050328437".to_owned(),
        datacontenttype: CONTENT_TYPE_PROTOBUF.to_owned(),
        dataschema: String::new(),
        payload: Some(Payload::Death(v1::Death {
            act: Some(v1::CivilStatusAct {
                act_reference: "DABS/44021/2026/O/002218".to_owned(),
                registering_municipality_nis_code: "44021".to_owned(),
                registration_date: "2026-10-26".to_owned(),
            }),
            deceased: Some(person(
                "41050328437",
                &["Maria", "Josephina"],
                "Vermeulen",
                "1941-05-03",
                v1::Gender::Female,
            )),
            date_of_death: "2026-10-25".to_owned(),
            place_of_death_nis_code: "44021".to_owned(),
            declaring_doctor_riziv: "1-23456-78-910".to_owned(),
            registered_address: Some(address("Markt", "7", "9800", "Deinze", "44083")),
        })),
    }
}

/// A move from Gent to Leuven: Jonas Claes, with his daughter, on 2026-10-20.
pub fn valid_change_of_address() -> v1::LifeEvent {
    v1::LifeEvent {
        id: "rrn-move-2026-24062-010455".to_owned(),
        source: "urn:be:rrn".to_owned(),
        r#type: event_types::CHANGE_OF_ADDRESS.to_owned(),
        specversion: "1.0".to_owned(),
        time: at(2026, 10, 27, 11, 30),
        subject: "85073003328".to_owned(),
        datacontenttype: CONTENT_TYPE_PROTOBUF.to_owned(),
        dataschema: String::new(),
        payload: Some(Payload::ChangeOfAddress(v1::ChangeOfAddress {
            person: Some(person(
                "85073003328",
                &["Jonas"],
                "Claes",
                "1985-07-30",
                v1::Gender::Male,
            )),
            previous_address: Some(address(
                "Sint-Pietersnieuwstraat",
                "41",
                "9000",
                "Gent",
                "44021",
            )),
            new_address: Some(v1::Address {
                box_number: "0102".to_owned(),
                ..address("Naamsestraat", "22", "3000", "Leuven", "24062")
            }),
            declaration_date: "2026-10-22".to_owned(),
            move_date: "2026-10-20".to_owned(),
            declaring_municipality_nis_code: "24062".to_owned(),
            household_member_insz: vec!["19040221485".to_owned()],
            reason: v1::ChangeOfAddressReason::Move as i32,
        })),
    }
}

/// A practical exam for category B passed in Gent: Emma De Smet of Deinze, born 2008-06-14.
pub fn valid_driving_exam() -> v1::LifeEvent {
    v1::LifeEvent {
        id: "goca-exam-2026-SDW-118734".to_owned(),
        source: "urn:be:goca:examencentra".to_owned(),
        r#type: event_types::DRIVING_EXAM_PASSED.to_owned(),
        specversion: "1.0".to_owned(),
        time: at(2026, 10, 28, 15, 12),
        subject: "08061416245".to_owned(),
        datacontenttype: CONTENT_TYPE_PROTOBUF.to_owned(),
        dataschema: String::new(),
        payload: Some(Payload::DrivingExamPassed(v1::DrivingExamPassed {
            candidate: Some(person(
                "08061416245",
                &["Emma"],
                "De Smet",
                "2008-06-14",
                v1::Gender::Female,
            )),
            exam_centre: Some(v1::ExamCentre {
                code: "SDW".to_owned(),
                name: "Examencentrum Sint-Denijs-Westrem".to_owned(),
                municipality_nis_code: "44021".to_owned(),
            }),
            exam_date: "2026-10-28".to_owned(),
            licence_category: v1::LicenceCategory::B as i32,
            exam_type: v1::ExamType::Practical as i32,
            exam_reference: "SDW-2026-118734".to_owned(),
            residence_municipality_nis_code: "44083".to_owned(),
        })),
    }
}

/// The four valid events.
pub fn valid_events() -> Vec<v1::LifeEvent> {
    vec![
        valid_birth(),
        valid_death(),
        valid_change_of_address(),
        valid_driving_exam(),
    ]
}

/// An input to the gateway, as one of its doors receives it.
#[derive(Debug, Clone, PartialEq)]
// Built a few hundred times in tests; matching on a plain `LifeEvent` reads better than a box.
#[allow(clippy::large_enum_variant)]
pub enum Input {
    /// A NATS message.
    Nats {
        subject: String,
        headers: Vec<(String, String)>,
        body: Vec<u8>,
    },
    /// A gRPC `RawCloudEvent`.
    Raw { content_type: String, data: Vec<u8> },
    /// A gRPC decoded `LifeEvent` (nothing to decode).
    Event(v1::LifeEvent),
}

/// Decodes an input as its door would.
pub fn decode(input: &Input, limits: &Limits) -> Result<v1::LifeEvent, Rejection> {
    match input {
        Input::Nats {
            subject,
            headers,
            body,
        } => decode_nats(subject, headers, body, limits),
        Input::Raw { content_type, data } => decode_raw(content_type, data, limits),
        Input::Event(event) => Ok(event.clone()),
    }
}

/// Decodes and validates an input: the gateway's pure path, without storage.
pub fn check(
    input: &Input,
    now: DateTime<Utc>,
    limits: &Limits,
) -> Result<v1::LifeEvent, Rejection> {
    let event = decode(input, limits)?;
    validate(&event, now, limits)?;
    Ok(event)
}

/// A bad input and the first violation it must produce.
#[derive(Debug, Clone)]
pub struct Case {
    pub name: &'static str,
    pub input: Input,
    /// The field of the first violation; `""` when not checked.
    pub field: &'static str,
    pub reason: Reason,
}

/// An input that must be accepted.
#[derive(Debug, Clone)]
pub struct GoodCase {
    pub name: String,
    pub input: Input,
}

// ---- encoders ----

/// The type of an event: from its payload, else from its `type` attribute.
fn event_type(event: &v1::LifeEvent) -> v1::LifeEventType {
    match event.payload_type() {
        v1::LifeEventType::Unspecified => v1::LifeEventType::from_cloudevents_type(&event.r#type)
            .unwrap_or(v1::LifeEventType::Unspecified),
        t => t,
    }
}

/// The subject a registry publishes the event on.
pub fn nats_subject(event: &v1::LifeEvent) -> String {
    subject_for(event_type(event)).unwrap_or_else(|| "levensloop.ingest.unknown".to_owned())
}

fn time_text(ts: &types::Timestamp) -> Option<String> {
    let nanos = u32::try_from(ts.nanos).ok()?;
    DateTime::from_timestamp(ts.seconds, nanos)
        .map(|t| t.to_rfc3339_opts(SecondsFormat::AutoSi, true))
}

/// The `ce-*` headers of an event (empty attributes left out) and the content type.
pub fn binary_headers(event: &v1::LifeEvent, content_type: &str) -> Vec<(String, String)> {
    let mut headers = Vec::new();
    let mut add = |name: &str, value: &str| {
        if !value.is_empty() {
            headers.push((name.to_owned(), value.to_owned()));
        }
    };
    add("ce-specversion", &event.specversion);
    add("ce-id", &event.id);
    add("ce-source", &event.source);
    add("ce-type", &event.r#type);
    if let Some(time) = event.time.as_ref().and_then(time_text) {
        add("ce-time", &time);
    }
    add("ce-subject", &event.subject);
    add("ce-dataschema", &event.dataschema);
    add("content-type", content_type);
    headers
}

/// The payload alone in proto3 JSON.
pub fn payload_json(event: &v1::LifeEvent) -> Value {
    let value = match &event.payload {
        None => return Value::Null,
        Some(Payload::Birth(p)) => serde_json::to_value(p),
        Some(Payload::Death(p)) => serde_json::to_value(p),
        Some(Payload::ChangeOfAddress(p)) => serde_json::to_value(p),
        Some(Payload::DrivingExamPassed(p)) => serde_json::to_value(p),
    };
    // The generated serialisers cannot fail on these types.
    value.unwrap_or(Value::Null)
}

/// The payload alone in protobuf.
pub fn payload_protobuf(event: &v1::LifeEvent) -> Vec<u8> {
    match &event.payload {
        None => Vec::new(),
        Some(Payload::Birth(p)) => p.encode_to_vec(),
        Some(Payload::Death(p)) => p.encode_to_vec(),
        Some(Payload::ChangeOfAddress(p)) => p.encode_to_vec(),
        Some(Payload::DrivingExamPassed(p)) => p.encode_to_vec(),
    }
}

/// NATS binary mode, the payload in JSON.
pub fn encode_binary_json(event: &v1::LifeEvent) -> Input {
    let body = match event.payload {
        None => Vec::new(),
        Some(_) => payload_json(event).to_string().into_bytes(),
    };
    Input::Nats {
        subject: nats_subject(event),
        headers: binary_headers(event, CONTENT_TYPE_JSON),
        body,
    }
}

/// NATS binary mode, the payload in protobuf.
pub fn encode_binary_protobuf(event: &v1::LifeEvent) -> Input {
    Input::Nats {
        subject: nats_subject(event),
        headers: binary_headers(event, CONTENT_TYPE_PROTOBUF),
        body: payload_protobuf(event),
    }
}

/// A structured-mode JSON CloudEvent: the payload as JSON in `data`, or (`protobuf`) as
/// base64 protobuf in `data_base64`.
pub fn structured_json(event: &v1::LifeEvent, protobuf: bool) -> Value {
    let mut object = serde_json::Map::new();
    let mut add = |name: &str, value: &str| {
        if !value.is_empty() {
            object.insert(name.to_owned(), Value::String(value.to_owned()));
        }
    };
    add("specversion", &event.specversion);
    add("id", &event.id);
    add("source", &event.source);
    add("type", &event.r#type);
    if let Some(time) = event.time.as_ref().and_then(time_text) {
        add("time", &time);
    }
    add("subject", &event.subject);
    add("dataschema", &event.dataschema);
    if protobuf {
        add("datacontenttype", CONTENT_TYPE_PROTOBUF);
        if event.payload.is_some() {
            object.insert(
                "data_base64".to_owned(),
                Value::String(base64_encode(&payload_protobuf(event))),
            );
        }
    } else {
        object.insert(
            "datacontenttype".to_owned(),
            Value::String(CONTENT_TYPE_JSON.to_owned()),
        );
        if event.payload.is_some() {
            object.insert("data".to_owned(), payload_json(event));
        }
    }
    Value::Object(object)
}

/// NATS structured mode, the payload as JSON in `data`.
pub fn encode_structured(event: &v1::LifeEvent) -> Input {
    Input::Nats {
        subject: nats_subject(event),
        headers: vec![(
            "content-type".to_owned(),
            CONTENT_TYPE_CLOUDEVENTS_JSON.to_owned(),
        )],
        body: structured_json(event, false).to_string().into_bytes(),
    }
}

/// NATS structured mode, the payload as base64 protobuf in `data_base64`.
pub fn encode_structured_protobuf(event: &v1::LifeEvent) -> Input {
    Input::Nats {
        subject: nats_subject(event),
        headers: vec![(
            "content-type".to_owned(),
            CONTENT_TYPE_CLOUDEVENTS_JSON.to_owned(),
        )],
        body: structured_json(event, true).to_string().into_bytes(),
    }
}

/// gRPC `RawCloudEvent`, a structured JSON CloudEvent.
pub fn encode_raw_structured(event: &v1::LifeEvent) -> Input {
    Input::Raw {
        content_type: CONTENT_TYPE_CLOUDEVENTS_JSON.to_owned(),
        data: structured_json(event, false).to_string().into_bytes(),
    }
}

/// gRPC `RawCloudEvent`, a protobuf `LifeEvent`.
pub fn encode_raw_protobuf(event: &v1::LifeEvent) -> Input {
    Input::Raw {
        content_type: CONTENT_TYPE_PROTOBUF.to_owned(),
        data: event.encode_to_vec(),
    }
}

/// Every encoding of an event, named: the four NATS forms, the two raw gRPC forms and the
/// decoded event itself.
pub fn all_encodings(event: &v1::LifeEvent) -> Vec<(&'static str, Input)> {
    vec![
        ("nats binary json", encode_binary_json(event)),
        ("nats binary protobuf", encode_binary_protobuf(event)),
        ("nats structured json", encode_structured(event)),
        (
            "nats structured base64 protobuf",
            encode_structured_protobuf(event),
        ),
        ("grpc raw structured json", encode_raw_structured(event)),
        ("grpc raw protobuf", encode_raw_protobuf(event)),
        ("grpc life event", Input::Event(event.clone())),
    ]
}

// ---- building bad inputs ----

fn birth_with(f: impl FnOnce(&mut v1::LifeEvent, &mut v1::Birth)) -> v1::LifeEvent {
    let mut event = valid_birth();
    let mut payload = match event.payload.take() {
        Some(Payload::Birth(b)) => b,
        _ => v1::Birth::default(),
    };
    f(&mut event, &mut payload);
    event.payload = Some(Payload::Birth(payload));
    event
}

fn death_with(f: impl FnOnce(&mut v1::LifeEvent, &mut v1::Death)) -> v1::LifeEvent {
    let mut event = valid_death();
    let mut payload = match event.payload.take() {
        Some(Payload::Death(d)) => d,
        _ => v1::Death::default(),
    };
    f(&mut event, &mut payload);
    event.payload = Some(Payload::Death(payload));
    event
}

fn move_with(f: impl FnOnce(&mut v1::LifeEvent, &mut v1::ChangeOfAddress)) -> v1::LifeEvent {
    let mut event = valid_change_of_address();
    let mut payload = match event.payload.take() {
        Some(Payload::ChangeOfAddress(m)) => m,
        _ => v1::ChangeOfAddress::default(),
    };
    f(&mut event, &mut payload);
    event.payload = Some(Payload::ChangeOfAddress(payload));
    event
}

fn exam_with(f: impl FnOnce(&mut v1::LifeEvent, &mut v1::DrivingExamPassed)) -> v1::LifeEvent {
    let mut event = valid_driving_exam();
    let mut payload = match event.payload.take() {
        Some(Payload::DrivingExamPassed(x)) => x,
        _ => v1::DrivingExamPassed::default(),
    };
    f(&mut event, &mut payload);
    event.payload = Some(Payload::DrivingExamPassed(payload));
    event
}

/// Sets the person's INSZ, and the subject with it, so only the INSZ rule is at stake.
fn set_insz(event: &mut v1::LifeEvent, person: &mut Option<v1::Person>, insz: &str) {
    if let Some(p) = person.as_mut() {
        p.insz = insz.to_owned();
    }
    event.subject = insz.to_owned();
}

fn child_insz(insz: &'static str) -> v1::LifeEvent {
    birth_with(|e, b| set_insz(e, &mut b.child, insz))
}

fn mover_insz(insz: &'static str) -> v1::LifeEvent {
    move_with(|e, m| set_insz(e, &mut m.person, insz))
}

fn mover(insz: &'static str, born: &'static str) -> v1::LifeEvent {
    move_with(|e, m| {
        set_insz(e, &mut m.person, insz);
        if let Some(p) = m.person.as_mut() {
            p.date_of_birth = born.to_owned();
        }
    })
}

/// A NATS input with its headers changed.
fn with_headers(input: Input, f: impl FnOnce(&mut Vec<(String, String)>)) -> Input {
    match input {
        Input::Nats {
            subject,
            mut headers,
            body,
        } => {
            f(&mut headers);
            Input::Nats {
                subject,
                headers,
                body,
            }
        }
        other => other,
    }
}

fn without_header(input: Input, name: &'static str) -> Input {
    with_headers(input, |h| h.retain(|(n, _)| !n.eq_ignore_ascii_case(name)))
}

fn set_header(input: Input, name: &'static str, value: &'static str) -> Input {
    with_headers(input, |h| {
        h.retain(|(n, _)| !n.eq_ignore_ascii_case(name));
        h.push((name.to_owned(), value.to_owned()));
    })
}

/// A NATS input with its body changed.
fn with_body(input: Input, f: impl FnOnce(Vec<u8>) -> Vec<u8>) -> Input {
    match input {
        Input::Nats {
            subject,
            headers,
            body,
        } => Input::Nats {
            subject,
            headers,
            body: f(body),
        },
        Input::Raw { content_type, data } => Input::Raw {
            content_type,
            data: f(data),
        },
        other => other,
    }
}

fn with_subject(input: Input, new: &'static str) -> Input {
    match input {
        Input::Nats { headers, body, .. } => Input::Nats {
            subject: new.to_owned(),
            headers,
            body,
        },
        other => other,
    }
}

/// A structured CloudEvent (JSON data) changed, sent over NATS.
fn structured_nats(
    event: &v1::LifeEvent,
    f: impl FnOnce(&mut serde_json::Map<String, Value>),
) -> Input {
    let mut value = structured_json(event, false);
    if let Value::Object(object) = &mut value {
        f(object);
    }
    Input::Nats {
        subject: nats_subject(event),
        headers: vec![(
            "content-type".to_owned(),
            CONTENT_TYPE_CLOUDEVENTS_JSON.to_owned(),
        )],
        body: value.to_string().into_bytes(),
    }
}

/// A structured CloudEvent changed, sent as a gRPC raw event.
fn structured_raw(
    event: &v1::LifeEvent,
    protobuf: bool,
    f: impl FnOnce(&mut serde_json::Map<String, Value>),
) -> Input {
    let mut value = structured_json(event, protobuf);
    if let Value::Object(object) = &mut value {
        f(object);
    }
    Input::Raw {
        content_type: CONTENT_TYPE_CLOUDEVENTS_JSON.to_owned(),
        data: value.to_string().into_bytes(),
    }
}

/// One byte over the default limit.
const OVERSIZED: usize = 64 * 1024 + 1;

fn case(name: &'static str, input: Input, field: &'static str, reason: Reason) -> Case {
    Case {
        name,
        input,
        field,
        reason,
    }
}

fn ev(event: v1::LifeEvent) -> Input {
    Input::Event(event)
}

/// The bad-input corpus: each case, at [`fixed_now`] with [`Limits::default`], is refused
/// with a first violation on `field` for `reason`.
pub fn bad_inputs() -> Vec<Case> {
    use Reason as R;
    let birth = valid_birth();
    let death = valid_death();
    let exam = valid_driving_exam();
    vec![
        // ---- size, before decoding ----
        case(
            "binary json body of 64 KiB + 1",
            with_body(encode_binary_json(&birth), |_| vec![b' '; OVERSIZED]),
            "data",
            R::PayloadTooLarge,
        ),
        case(
            "structured body of 64 KiB + 1 (valid JSON padded with spaces)",
            with_body(encode_structured(&birth), |mut b| {
                b.resize(OVERSIZED, b' ');
                b
            }),
            "data",
            R::PayloadTooLarge,
        ),
        case(
            "raw protobuf life event of 64 KiB + 1",
            {
                let mut big = valid_birth();
                big.dataschema = "https://schemas.example/".to_owned();
                let base = big.encoded_len();
                // The length prefix of the field grows by a byte or two; trim to fit exactly.
                big.dataschema
                    .push_str(&"x".repeat(OVERSIZED.saturating_sub(base + 2)));
                while big.encoded_len() < OVERSIZED {
                    big.dataschema.push('x');
                }
                while big.encoded_len() > OVERSIZED {
                    big.dataschema.pop();
                }
                encode_raw_protobuf(&big)
            },
            "data",
            R::PayloadTooLarge,
        ),
        // ---- malformed JSON ----
        case(
            "binary json truncated",
            with_body(encode_binary_json(&birth), |mut b| {
                b.truncate(b.len() / 2);
                b
            }),
            "data",
            R::MalformedJson,
        ),
        case(
            "binary json with an unknown field (given_nmes)",
            with_body(encode_binary_json(&birth), |b| {
                String::from_utf8_lossy(&b)
                    .replace("\"given_names\"", "\"given_nmes\"")
                    .into_bytes()
            }),
            "data",
            R::MalformedJson,
        ),
        case(
            "binary json with an INSZ as a number",
            with_body(encode_binary_json(&birth), |_| {
                br#"{"child":{"insz":26101512372}}"#.to_vec()
            }),
            "data",
            R::MalformedJson,
        ),
        case(
            "binary json content type with a protobuf body",
            with_body(encode_binary_json(&birth), |_| payload_protobuf(&birth)),
            "data",
            R::MalformedJson,
        ),
        case(
            "binary json body that is a JSON death for a birth type",
            with_body(encode_binary_json(&birth), |_| {
                payload_json(&death).to_string().into_bytes()
            }),
            "data",
            R::MalformedJson,
        ),
        case(
            "structured body that is not JSON",
            with_body(encode_structured(&birth), |_| {
                b"{\"specversion\": \"1.0\", ".to_vec()
            }),
            "data",
            R::MalformedJson,
        ),
        case(
            "structured body that is a JSON array",
            with_body(encode_structured(&birth), |_| b"[]".to_vec()),
            "data",
            R::MalformedJson,
        ),
        case(
            "structured empty body",
            with_body(encode_structured(&birth), |_| Vec::new()),
            "data",
            R::MalformedJson,
        ),
        case(
            "raw structured with an unknown field in data",
            structured_raw(&death, false, |o| {
                if let Some(Value::Object(data)) = o.get_mut("data") {
                    data.insert("cause_of_death".to_owned(), Value::String("x".to_owned()));
                }
            }),
            "data",
            R::MalformedJson,
        ),
        // ---- malformed protobuf ----
        case(
            "binary protobuf garbage (overlong varint)",
            with_body(encode_binary_protobuf(&birth), |_| {
                vec![0x0a; 1].into_iter().chain([0xff; 11]).collect()
            }),
            "data",
            R::MalformedProtobuf,
        ),
        case(
            "binary protobuf truncated inside the first field",
            with_body(encode_binary_protobuf(&birth), |mut b| {
                b.truncate(5);
                b
            }),
            "data",
            R::MalformedProtobuf,
        ),
        case(
            "binary protobuf with invalid UTF-8 in a string",
            with_body(encode_binary_protobuf(&birth), |_| {
                // Field 3 (place_of_birth_nis_code), length 2, bytes that are not UTF-8.
                vec![0x1a, 0x02, 0xc3, 0x28]
            }),
            "data",
            R::MalformedProtobuf,
        ),
        case(
            "raw protobuf garbage",
            Input::Raw {
                content_type: CONTENT_TYPE_PROTOBUF.to_owned(),
                data: vec![0xff; 9],
            },
            "data",
            R::MalformedProtobuf,
        ),
        case(
            "structured data_base64 that is not a protobuf payload",
            structured_raw(&birth, true, |o| {
                o.insert(
                    "data_base64".to_owned(),
                    Value::String(base64_encode(&[0x12, 0x40, 0x01])),
                );
            }),
            "data_base64",
            R::MalformedProtobuf,
        ),
        // ---- content types ----
        case(
            "binary text/plain",
            set_header(encode_binary_json(&birth), "content-type", "text/plain"),
            "content-type",
            R::UnsupportedContentType,
        ),
        case(
            "raw text/plain",
            Input::Raw {
                content_type: "text/plain".to_owned(),
                data: b"a child was born".to_vec(),
            },
            "content_type",
            R::UnsupportedContentType,
        ),
        case(
            "raw application/json (needs cloudevents+json)",
            Input::Raw {
                content_type: CONTENT_TYPE_JSON.to_owned(),
                data: payload_json(&birth).to_string().into_bytes(),
            },
            "content_type",
            R::UnsupportedContentType,
        ),
        case(
            "structured datacontenttype application/xml",
            structured_nats(&birth, |o| {
                o.insert(
                    "datacontenttype".to_owned(),
                    Value::String("application/xml".to_owned()),
                );
            }),
            "datacontenttype",
            R::UnsupportedContentType,
        ),
        case(
            "binary without content-type",
            without_header(encode_binary_protobuf(&birth), "content-type"),
            "content-type",
            R::MissingAttribute,
        ),
        case(
            "raw with an empty content type",
            Input::Raw {
                content_type: String::new(),
                data: birth.encode_to_vec(),
            },
            "content_type",
            R::MissingAttribute,
        ),
        // ---- CloudEvents attributes ----
        case(
            "binary missing ce-id",
            without_header(encode_binary_json(&birth), "ce-id"),
            "ce-id",
            R::MissingAttribute,
        ),
        case(
            "binary missing ce-source",
            without_header(encode_binary_protobuf(&death), "ce-source"),
            "ce-source",
            R::MissingAttribute,
        ),
        case(
            "binary missing ce-type",
            without_header(encode_binary_json(&exam), "ce-type"),
            "ce-type",
            R::MissingAttribute,
        ),
        case(
            "binary missing ce-specversion",
            without_header(encode_binary_json(&birth), "ce-specversion"),
            "ce-specversion",
            R::MissingAttribute,
        ),
        case(
            "binary empty ce-id",
            set_header(encode_binary_json(&birth), "ce-id", "  "),
            "ce-id",
            R::MissingAttribute,
        ),
        case(
            "structured missing id",
            structured_nats(&death, |o| {
                o.remove("id");
            }),
            "id",
            R::MissingAttribute,
        ),
        case(
            "structured id that is a number",
            structured_nats(&death, |o| {
                o.insert("id".to_owned(), serde_json::json!(2218));
            }),
            "id",
            R::InvalidAttribute,
        ),
        case(
            "binary ce-specversion 0.3",
            set_header(encode_binary_json(&birth), "ce-specversion", "0.3"),
            "ce-specversion",
            R::UnsupportedSpecversion,
        ),
        case(
            "structured specversion 0.3",
            structured_nats(&birth, |o| {
                o.insert("specversion".to_owned(), Value::String("0.3".to_owned()));
            }),
            "specversion",
            R::UnsupportedSpecversion,
        ),
        case(
            "binary unknown ce-type",
            set_header(
                encode_binary_json(&birth),
                "ce-type",
                "be.vlaanderen.levensloop.marriage.v1",
            ),
            "ce-type",
            R::UnknownType,
        ),
        case(
            "raw structured unknown type",
            structured_raw(&birth, false, |o| {
                o.insert(
                    "type".to_owned(),
                    Value::String("be.vlaanderen.levensloop.birth.v2".to_owned()),
                );
            }),
            "type",
            R::UnknownType,
        ),
        case(
            "binary ce-time that is not RFC 3339",
            set_header(encode_binary_json(&birth), "ce-time", "2026-10-19 09:42"),
            "ce-time",
            R::InvalidAttribute,
        ),
        case(
            "structured time with month 13",
            structured_nats(&birth, |o| {
                o.insert(
                    "time".to_owned(),
                    Value::String("2026-13-01T00:00:00Z".to_owned()),
                );
            }),
            "time",
            R::InvalidAttribute,
        ),
        case(
            "binary ce-id given twice with different values",
            with_headers(encode_binary_json(&birth), |h| {
                h.push(("CE-ID".to_owned(), "another-id".to_owned()));
            }),
            "ce-id",
            R::InvalidAttribute,
        ),
        case(
            "structured with both data and data_base64",
            structured_nats(&birth, |o| {
                o.insert("data_base64".to_owned(), Value::String("AAAA".to_owned()));
            }),
            "data_base64",
            R::InvalidAttribute,
        ),
        case(
            "structured data_base64 that is not base64",
            structured_raw(&birth, true, |o| {
                o.insert(
                    "data_base64".to_owned(),
                    Value::String("not base64!".to_owned()),
                );
            }),
            "data_base64",
            R::InvalidAttribute,
        ),
        // ---- type, subject, payload agreement ----
        case(
            "birth published on the death subject",
            with_subject(encode_binary_json(&birth), "levensloop.ingest.death"),
            "subject",
            R::TypePayloadMismatch,
        ),
        case(
            "structured death published on the birth subject",
            with_subject(encode_structured(&death), "levensloop.ingest.birth"),
            "subject",
            R::TypePayloadMismatch,
        ),
        case(
            "published on an unknown subject",
            with_subject(encode_binary_protobuf(&birth), "levensloop.ingest.marriage"),
            "subject",
            R::UnknownType,
        ),
        case(
            "life event typed birth carrying a death",
            ev({
                let mut e = valid_death();
                e.r#type = event_types::BIRTH.to_owned();
                e
            }),
            "type",
            R::TypePayloadMismatch,
        ),
        case(
            "ce-subject that is another person's INSZ",
            set_header(encode_binary_protobuf(&birth), "ce-subject", "94031224631"),
            "subject",
            R::SubjectMismatch,
        ),
        // ---- empty payloads ----
        case(
            "binary json empty body",
            with_body(encode_binary_json(&birth), |_| Vec::new()),
            "data",
            R::MissingField,
        ),
        case(
            "binary protobuf empty body",
            with_body(encode_binary_protobuf(&death), |_| Vec::new()),
            "data",
            R::MissingField,
        ),
        case(
            "structured without data",
            structured_nats(&birth, |o| {
                o.remove("data");
            }),
            "data",
            R::MissingField,
        ),
        case(
            "raw protobuf empty",
            Input::Raw {
                content_type: CONTENT_TYPE_PROTOBUF.to_owned(),
                data: Vec::new(),
            },
            "data",
            R::MissingField,
        ),
        case(
            "binary protobuf with an empty payload message (no child)",
            with_body(encode_binary_protobuf(&birth), |_| vec![0x40, 0x01]),
            "birth.child",
            R::MissingField,
        ),
        // ---- decoded life events: the envelope ----
        case(
            "life event without id",
            ev({
                let mut e = valid_birth();
                e.id.clear();
                e
            }),
            "id",
            R::MissingAttribute,
        ),
        case(
            "life event without specversion",
            ev({
                let mut e = valid_death();
                e.specversion.clear();
                e
            }),
            "specversion",
            R::MissingAttribute,
        ),
        case(
            "life event specversion 0.3",
            ev({
                let mut e = valid_death();
                e.specversion = "0.3".to_owned();
                e
            }),
            "specversion",
            R::UnsupportedSpecversion,
        ),
        case(
            "life event with an unknown type",
            ev({
                let mut e = valid_birth();
                e.r#type = "be.vlaanderen.levensloop.adoption.v1".to_owned();
                e
            }),
            "type",
            R::UnknownType,
        ),
        case(
            "life event without payload",
            ev({
                let mut e = valid_birth();
                e.payload = None;
                e
            }),
            "birth",
            R::MissingField,
        ),
        case(
            "life event time with negative nanos",
            ev({
                let mut e = valid_birth();
                e.time = Some(types::Timestamp {
                    seconds: 1_792_000_000,
                    nanos: -1,
                });
                e
            }),
            "time",
            R::InvalidAttribute,
        ),
        case(
            "life event time an hour in the future",
            ev({
                let mut e = valid_birth();
                e.time = at(2026, 11, 22, 13, 0);
                e
            }),
            "time",
            R::DateInFuture,
        ),
        case(
            "binary ce-time ten minutes in the future",
            set_header(
                encode_binary_json(&exam),
                "ce-time",
                "2026-11-22T13:10:00+01:00",
            ),
            "time",
            R::DateInFuture,
        ),
        // ---- INSZ ----
        case(
            "wrong check digit, born before 2000",
            ev(mover_insz("85073003329")),
            "change_of_address.person.insz",
            R::InszCheckDigits,
        ),
        case(
            "wrong check digit, born in 2000 or later",
            ev(child_insz("26101512373")),
            "birth.child.insz",
            R::InszCheckDigits,
        ),
        case(
            "pre-2000 check digits on a child born in 2026",
            // 261015123 with the pre-2000 rule gives 1926-10-15, which differs from the
            // date of birth: the INSZ passes, the consistency rule does not.
            ev(child_insz("26101512343")),
            "birth.child.insz",
            R::InszBirthDateMismatch,
        ),
        case(
            "bis number with a wrong check digit",
            ev(mover("90241705737", "1990-04-17")),
            "change_of_address.person.insz",
            R::InszCheckDigits,
        ),
        case(
            "INSZ of 10 digits",
            ev(mover_insz("8507300332")),
            "change_of_address.person.insz",
            R::InszLength,
        ),
        case(
            "INSZ of 12 digits",
            ev(child_insz("261015123720")),
            "birth.child.insz",
            R::InszLength,
        ),
        case(
            "INSZ with separators",
            ev(mover_insz("85.07.30-033.28")),
            "change_of_address.person.insz",
            R::InszNotDigits,
        ),
        case(
            "INSZ with a letter",
            ev(mover_insz("8507300332B")),
            "change_of_address.person.insz",
            R::InszNotDigits,
        ),
        case(
            "INSZ with month 13",
            ev(mover("85130103367", "1985-01-01")),
            "change_of_address.person.insz",
            R::InszInvalidDate,
        ),
        case(
            "invalid bis number: month 35",
            ev(mover("85350103327", "1985-01-01")),
            "change_of_address.person.insz",
            R::InszInvalidDate,
        ),
        case(
            "INSZ with day 32",
            ev(mover("85073203365", "1985-07-30")),
            "change_of_address.person.insz",
            R::InszInvalidDate,
        ),
        case(
            "INSZ for 29 February 1900",
            ev(mover("00022900215", "1900-02-28")),
            "change_of_address.person.insz",
            R::InszInvalidDate,
        ),
        case(
            "INSZ with serial 000",
            ev(mover_insz("85073000061")),
            "change_of_address.person.insz",
            R::InszSerial,
        ),
        case(
            "INSZ with serial 999",
            ev(mover_insz("85073099932")),
            "change_of_address.person.insz",
            R::InszSerial,
        ),
        case(
            "INSZ and date of birth disagree",
            ev(mover("85073003328", "1985-07-31")),
            "change_of_address.person.insz",
            R::InszBirthDateMismatch,
        ),
        case(
            "bis number and date of birth disagree",
            ev(mover("79510230106", "1979-12-02")),
            "change_of_address.person.insz",
            R::InszBirthDateMismatch,
        ),
        case(
            "bis number with unknown birth date and another year of birth",
            ev(mover("68400041235", "1969-03-01")),
            "change_of_address.person.insz",
            R::InszBirthDateMismatch,
        ),
        case(
            "mother's INSZ with a wrong check digit",
            ev(birth_with(|_, b| {
                if let Some(m) = b.mother.as_mut() {
                    m.insz = "94031224632".to_owned();
                }
            })),
            "birth.mother.insz",
            R::InszCheckDigits,
        ),
        case(
            "household member's INSZ with a wrong check digit",
            ev(move_with(|_, m| {
                m.household_member_insz = vec!["19040221484".to_owned()];
            })),
            "change_of_address.household_member_insz[0]",
            R::InszCheckDigits,
        ),
        case(
            "INSZ whose century makes the birth 2081",
            ev(exam_with(|e, x| {
                set_insz(e, &mut x.candidate, "81073003370");
                if let Some(c) = x.candidate.as_mut() {
                    c.date_of_birth.clear();
                }
            })),
            "driving_exam_passed.candidate.insz",
            R::DateInFuture,
        ),
        // ---- dates ----
        case(
            "date of death 2026-02-30",
            ev(death_with(|_, d| d.date_of_death = "2026-02-30".to_owned())),
            "death.date_of_death",
            R::MalformedDate,
        ),
        case(
            "move date written 20/10/2026",
            ev(move_with(|_, m| m.move_date = "20/10/2026".to_owned())),
            "change_of_address.move_date",
            R::MalformedDate,
        ),
        case(
            "date of birth with a time",
            ev(birth_with(|_, b| {
                if let Some(c) = b.child.as_mut() {
                    c.date_of_birth = "2026-10-15T04:17:00Z".to_owned();
                }
            })),
            "birth.child.date_of_birth",
            R::MalformedDate,
        ),
        case(
            "act registration date 2026-9-1",
            ev(birth_with(|_, b| {
                if let Some(a) = b.act.as_mut() {
                    a.registration_date = "2026-9-1".to_owned();
                }
            })),
            "birth.act.registration_date",
            R::MalformedDate,
        ),
        case(
            "date of death in the future",
            ev(death_with(|_, d| d.date_of_death = "2026-11-24".to_owned())),
            "death.date_of_death",
            R::DateInFuture,
        ),
        case(
            "move date in the future",
            ev(move_with(|_, m| m.move_date = "2027-01-01".to_owned())),
            "change_of_address.move_date",
            R::DateInFuture,
        ),
        case(
            "death before birth",
            ev(death_with(|_, d| d.date_of_death = "1940-12-31".to_owned())),
            "death.date_of_death",
            R::DeathBeforeBirth,
        ),
        case(
            "exam at 16",
            ev(exam_with(|e, x| {
                set_insz(e, &mut x.candidate, "10030104192");
                if let Some(c) = x.candidate.as_mut() {
                    c.date_of_birth = "2010-03-01".to_owned();
                }
            })),
            "driving_exam_passed.exam_date",
            R::ExamBeforeMinimumAge,
        ),
        case(
            "exam the day before the 17th birthday, birth date from the INSZ",
            ev(exam_with(|e, x| {
                set_insz(e, &mut x.candidate, "09102900790");
                if let Some(c) = x.candidate.as_mut() {
                    c.date_of_birth.clear();
                }
            })),
            "driving_exam_passed.exam_date",
            R::ExamBeforeMinimumAge,
        ),
        // ---- municipalities ----
        case(
            "place of birth merged away: 44012 De Pinte",
            ev(birth_with(|_, b| {
                b.place_of_birth_nis_code = "44012".to_owned()
            })),
            "birth.place_of_birth_nis_code",
            R::MunicipalityMerged,
        ),
        case(
            "new address in Zwijndrecht (11056), merged away",
            ev(move_with(|_, m| {
                if let Some(a) = m.new_address.as_mut() {
                    a.municipality_nis_code = "11056".to_owned();
                }
            })),
            "change_of_address.new_address.municipality_nis_code",
            R::MunicipalityMerged,
        ),
        case(
            "place of death 44040 Melle, merged away, over NATS binary protobuf",
            encode_binary_protobuf(&death_with(|_, d| {
                d.place_of_death_nis_code = "44040".to_owned();
            })),
            "death.place_of_death_nis_code",
            R::MunicipalityMerged,
        ),
        case(
            "unknown place of death 99999",
            ev(death_with(|_, d| {
                d.place_of_death_nis_code = "99999".to_owned()
            })),
            "death.place_of_death_nis_code",
            R::MunicipalityUnknown,
        ),
        case(
            "unknown residence over gRPC raw structured",
            encode_raw_structured(&exam_with(|_, x| {
                x.residence_municipality_nis_code = "10000".to_owned();
            })),
            "driving_exam_passed.residence_municipality_nis_code",
            R::MunicipalityUnknown,
        ),
        case(
            "malformed exam centre NIS code 4402",
            ev(exam_with(|_, x| {
                if let Some(c) = x.exam_centre.as_mut() {
                    c.municipality_nis_code = "4402".to_owned();
                }
            })),
            "driving_exam_passed.exam_centre.municipality_nis_code",
            R::MunicipalityMalformed,
        ),
        case(
            "malformed declaring municipality 24O62",
            ev(move_with(|_, m| {
                m.declaring_municipality_nis_code = "24O62".to_owned();
            })),
            "change_of_address.declaring_municipality_nis_code",
            R::MunicipalityMalformed,
        ),
        // ---- required fields ----
        case(
            "birth without child",
            ev(birth_with(|e, b| {
                b.child = None;
                e.subject.clear();
            })),
            "birth.child",
            R::MissingField,
        ),
        case(
            "child without INSZ",
            ev(birth_with(|e, b| set_insz(e, &mut b.child, ""))),
            "birth.child.insz",
            R::MissingField,
        ),
        case(
            "child without date of birth",
            ev(birth_with(|_, b| {
                if let Some(c) = b.child.as_mut() {
                    c.date_of_birth.clear();
                }
            })),
            "birth.child.date_of_birth",
            R::MissingField,
        ),
        case(
            "birth without place of birth",
            ev(birth_with(|_, b| b.place_of_birth_nis_code.clear())),
            "birth.place_of_birth_nis_code",
            R::MissingField,
        ),
        case(
            "death without deceased",
            ev(death_with(|e, d| {
                d.deceased = None;
                e.subject.clear();
            })),
            "death.deceased",
            R::MissingField,
        ),
        case(
            "deceased without INSZ",
            ev(death_with(|e, d| set_insz(e, &mut d.deceased, ""))),
            "death.deceased.insz",
            R::MissingField,
        ),
        case(
            "death without date of death",
            ev(death_with(|_, d| d.date_of_death.clear())),
            "death.date_of_death",
            R::MissingField,
        ),
        case(
            "move without person",
            ev(move_with(|e, m| {
                m.person = None;
                e.subject.clear();
            })),
            "change_of_address.person",
            R::MissingField,
        ),
        case(
            "move without new address",
            ev(move_with(|_, m| m.new_address = None)),
            "change_of_address.new_address",
            R::MissingField,
        ),
        case(
            "new Belgian address without NIS code",
            ev(move_with(|_, m| {
                if let Some(a) = m.new_address.as_mut() {
                    a.municipality_nis_code.clear();
                }
            })),
            "change_of_address.new_address.municipality_nis_code",
            R::MissingField,
        ),
        case(
            "move without move date",
            ev(move_with(|_, m| m.move_date.clear())),
            "change_of_address.move_date",
            R::MissingField,
        ),
        case(
            "exam without candidate",
            ev(exam_with(|e, x| {
                x.candidate = None;
                e.subject.clear();
            })),
            "driving_exam_passed.candidate",
            R::MissingField,
        ),
        case(
            "exam without exam date",
            ev(exam_with(|_, x| x.exam_date.clear())),
            "driving_exam_passed.exam_date",
            R::MissingField,
        ),
        case(
            "exam without licence category",
            ev(exam_with(|_, x| {
                x.licence_category = v1::LicenceCategory::Unspecified as i32;
            })),
            "driving_exam_passed.licence_category",
            R::MissingField,
        ),
        // ---- values outside their set ----
        case(
            "licence category 99",
            encode_binary_protobuf(&exam_with(|_, x| x.licence_category = 99)),
            "driving_exam_passed.licence_category",
            R::InvalidField,
        ),
        case(
            "time of birth 25:61",
            ev(birth_with(|_, b| b.time_of_birth = "25:61".to_owned())),
            "birth.time_of_birth",
            R::InvalidField,
        ),
        case(
            "gender 7",
            ev(death_with(|_, d| {
                if let Some(p) = d.deceased.as_mut() {
                    p.gender = 7;
                }
            })),
            "death.deceased.gender",
            R::InvalidField,
        ),
        case(
            "country code BEL",
            ev(move_with(|_, m| {
                if let Some(a) = m.new_address.as_mut() {
                    a.country_code = "BEL".to_owned();
                }
            })),
            "change_of_address.new_address.country_code",
            R::InvalidField,
        ),
    ]
}

/// Inputs that must pass: every valid event in every encoding, bis numbers, and edge cases
/// at the limits.
pub fn good_inputs() -> Vec<GoodCase> {
    let mut good = Vec::new();
    let mut add = |name: String, input: Input| good.push(GoodCase { name, input });
    for event in valid_events() {
        for (encoding, input) in all_encodings(&event) {
            add(format!("{} as {encoding}", event.id), input);
        }
    }
    let special: Vec<(&str, v1::LifeEvent)> = vec![
        (
            "bis number, sex unknown (month + 20)",
            mover("90241705736", "1990-04-17"),
        ),
        (
            "bis number, sex known (month + 40)",
            mover("79510230106", "1979-11-02"),
        ),
        (
            "bis number with unknown birth date, date of birth in that year",
            mover("68400041235", "1968-03-01"),
        ),
        (
            "bis number with unknown birth date, no date of birth",
            mover("68400041235", ""),
        ),
        (
            "bis number of a candidate born in 2003",
            exam_with(|e, x| {
                set_insz(e, &mut x.candidate, "03422108856");
                if let Some(c) = x.candidate.as_mut() {
                    c.date_of_birth = "2003-02-21".to_owned();
                }
            }),
        ),
        (
            "bis number of the deceased, birth date only in the INSZ",
            death_with(|e, d| {
                set_insz(e, &mut d.deceased, "68400041235");
                if let Some(p) = d.deceased.as_mut() {
                    p.date_of_birth.clear();
                }
            }),
        ),
        (
            "exam on the 17th birthday",
            exam_with(|e, x| {
                set_insz(e, &mut x.candidate, "09102800921");
                if let Some(c) = x.candidate.as_mut() {
                    c.date_of_birth = "2009-10-28".to_owned();
                }
            }),
        ),
        (
            "child born today",
            birth_with(|e, b| {
                set_insz(e, &mut b.child, "26112200881");
                if let Some(c) = b.child.as_mut() {
                    c.date_of_birth = "2026-11-22".to_owned();
                }
                if let Some(a) = b.act.as_mut() {
                    a.registration_date = "2026-11-22".to_owned();
                }
                e.time = at(2026, 11, 22, 11, 0);
            }),
        ),
        ("time four minutes ahead (within the tolerance)", {
            let mut e = valid_death();
            e.time = at(2026, 11, 22, 12, 4);
            e
        }),
        (
            "died today",
            death_with(|e, d| {
                d.date_of_death = "2026-11-22".to_owned();
                e.time = at(2026, 11, 22, 11, 55);
            }),
        ),
        ("no subject", {
            let mut e = valid_birth();
            e.subject.clear();
            e
        }),
        ("no time", {
            let mut e = valid_birth();
            e.time = None;
            e
        }),
        (
            "only the required fields of a birth",
            birth_with(|_, b| {
                *b = v1::Birth {
                    child: Some(v1::Person {
                        insz: "26101512372".to_owned(),
                        date_of_birth: "2026-10-15".to_owned(),
                        ..v1::Person::default()
                    }),
                    place_of_birth_nis_code: "44021".to_owned(),
                    ..v1::Birth::default()
                };
            }),
        ),
        (
            "administrative re-addressing after the 2025 merger (accepted, no saga later)",
            move_with(|_, m| {
                m.reason = v1::ChangeOfAddressReason::MunicipalityMerger as i32;
                if let Some(a) = m.new_address.as_mut() {
                    *a = address("Dorp", "3", "9840", "Nazareth-De Pinte", "44086");
                }
            }),
        ),
        (
            "move abroad, to Maastricht",
            move_with(|_, m| {
                m.new_address = Some(v1::Address {
                    thoroughfare: "Vrijthof".to_owned(),
                    house_number: "12".to_owned(),
                    post_code: "6211 LD".to_owned(),
                    municipality_name: "Maastricht".to_owned(),
                    country_code: "NL".to_owned(),
                    ..v1::Address::default()
                });
                m.declaring_municipality_nis_code = "44021".to_owned();
            }),
        ),
        (
            "Antwerpen 11002 (kept its code in the 2025 merger)",
            move_with(|_, m| {
                if let Some(a) = m.new_address.as_mut() {
                    *a = address("Meir", "50", "2000", "Antwerpen", "11002");
                }
                m.declaring_municipality_nis_code = "11002".to_owned();
            }),
        ),
        (
            "household member born in 1987",
            move_with(|_, m| {
                m.household_member_insz.push("87010915056".to_owned());
            }),
        ),
    ];
    for (name, event) in special {
        add(format!("{name} (life event)"), Input::Event(event.clone()));
        add(
            format!("{name} (nats binary json)"),
            encode_binary_json(&event),
        );
    }
    let birth = valid_birth();
    add(
        "content type with parameters and upper-case header names".to_owned(),
        match encode_binary_json(&birth) {
            Input::Nats {
                subject,
                headers,
                body,
            } => Input::Nats {
                subject,
                headers: headers
                    .into_iter()
                    .map(|(n, v)| {
                        if n == "content-type" {
                            (
                                "Content-Type".to_owned(),
                                "application/json; charset=utf-8".to_owned(),
                            )
                        } else {
                            (n.to_ascii_uppercase(), v)
                        }
                    })
                    .collect(),
                body,
            },
            other => other,
        },
    );
    add(
        "structured with an extension attribute (traceparent)".to_owned(),
        structured_nats(&birth, |o| {
            o.insert(
                "traceparent".to_owned(),
                Value::String("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".to_owned()),
            );
        }),
    );
    add(
        "binary ce-time with an offset".to_owned(),
        set_header(
            encode_binary_protobuf(&birth),
            "ce-time",
            "2026-10-19T11:42:00.250+02:00",
        ),
    );
    add(
        "body of exactly 64 KiB".to_owned(),
        with_body(encode_structured(&birth), |mut b| {
            b.resize(64 * 1024, b' ');
            b
        }),
    );
    good
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::{BTreeSet, HashSet};

    fn run(input: &Input) -> Result<v1::LifeEvent, Rejection> {
        check(input, fixed_now(), &Limits::default())
    }

    #[test]
    fn every_bad_input_is_refused_with_the_expected_first_violation() {
        let mut failures = Vec::new();
        for case in bad_inputs() {
            match run(&case.input) {
                Ok(_) => failures.push(format!("{}: accepted", case.name)),
                Err(r) => {
                    let first = &r.violations[0];
                    if first.reason != case.reason
                        || (!case.field.is_empty() && first.field != case.field)
                    {
                        failures.push(format!(
                            "{}: expected {} at {:?}, got {r}",
                            case.name,
                            case.reason.code(),
                            case.field
                        ));
                    }
                    assert!(!first.description.is_empty(), "{}", case.name);
                }
            }
        }
        assert!(failures.is_empty(), "{}", failures.join("\n"));
    }

    #[test]
    fn every_good_input_passes() {
        let failures: Vec<_> = good_inputs()
            .iter()
            .filter_map(|g| run(&g.input).err().map(|r| format!("{}: {r}", g.name)))
            .collect();
        assert!(failures.is_empty(), "{}", failures.join("\n"));
    }

    #[test]
    fn the_corpus_is_large_named_uniquely_and_covers_every_rule() {
        let cases = bad_inputs();
        assert!(cases.len() >= 45, "{}", cases.len());
        let names: HashSet<_> = cases.iter().map(|c| c.name).collect();
        assert_eq!(names.len(), cases.len(), "duplicate case names");
        let good: HashSet<_> = good_inputs().into_iter().map(|g| g.name).collect();
        assert!(good.len() >= 28 + 2);
        let covered: BTreeSet<_> = cases.iter().map(|c| c.reason).collect();
        // These two need the store (what was stored before); the ingest tests cover them.
        let store_only = [Reason::ConflictingDuplicate, Reason::PersonDeceased];
        let missing: Vec<_> = Reason::ALL
            .into_iter()
            .filter(|r| !covered.contains(r) && !store_only.contains(r))
            .map(Reason::code)
            .collect();
        assert!(missing.is_empty(), "reasons without a case: {missing:?}");
    }

    #[test]
    fn every_door_sees_both_kinds_of_input() {
        let cases = bad_inputs();
        let count = |f: fn(&Input) -> bool| cases.iter().filter(|c| f(&c.input)).count();
        assert!(count(|i| matches!(i, Input::Nats { .. })) >= 20);
        assert!(count(|i| matches!(i, Input::Raw { .. })) >= 8);
        assert!(count(|i| matches!(i, Input::Event(_))) >= 20);
    }

    #[test]
    fn valid_events_are_dated_before_november_and_identify_their_subject() {
        let november = NaiveDate::from_ymd_opt(2026, 11, 1).unwrap();
        for event in valid_events() {
            let text = serde_json::to_string(&event).unwrap();
            for date in text.split('"').filter_map(crate::validate::parse_date) {
                assert!(date < november, "{} has {date}", event.id);
            }
            let t = event.time.as_ref().unwrap();
            assert!(t.seconds < 1_793_491_200, "{} time", event.id); // 2026-11-01T00:00Z
            assert_eq!(
                crate::decode::kind_of_subject(&nats_subject(&event)),
                Some(event.payload_type())
            );
        }
    }
}
