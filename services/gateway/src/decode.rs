//! Decoding what registries send into a [`v1::LifeEvent`], for both doors.
//!
//! - NATS ([`decode_nats`]): a CloudEvent published on `levensloop.ingest.<kind>`, in
//!   *binary* mode (attributes in `ce-*` headers, `content-type` `application/json` or
//!   `application/protobuf`, the body the payload message alone, e.g. a `v1::Birth`) or in
//!   *structured* mode (`content-type: application/cloudevents+json`, the body a JSON
//!   CloudEvent whose `data` is the payload as JSON, or whose `data_base64` is the payload as
//!   base64 protobuf).
//! - gRPC ([`decode_raw`]): a `RawCloudEvent`, either a structured JSON CloudEvent or a
//!   protobuf-encoded `v1::LifeEvent`.
//!
//! Only what is needed to build the event is checked here: the size (first, on the raw
//! bytes), the content type, the CloudEvents attributes, the subject against the type, and
//! that the payload decodes. The rules about the content live in [`crate::validate`].
//! Nothing here panics on any input; every failure is a [`Rejection`].

use crate::rejection::{Limits, Reason, Rejection, Violation};
use chrono::{DateTime, Utc};
use levensloop_proto::{types, v1};
use prost::Message;
use serde_json::{Map, Value};
use v1::life_event::Payload;

/// A structured-mode JSON CloudEvent.
pub const CONTENT_TYPE_CLOUDEVENTS_JSON: &str = "application/cloudevents+json";
/// A payload in proto3 JSON.
pub const CONTENT_TYPE_JSON: &str = "application/json";
/// A payload (binary mode) or a whole `v1::LifeEvent` (gRPC raw) in protobuf.
pub const CONTENT_TYPE_PROTOBUF: &str = "application/protobuf";
/// The only CloudEvents version spoken.
pub const SPECVERSION: &str = "1.0";
/// Registries publish on `<prefix>.<kind>`.
pub const SUBJECT_PREFIX: &str = "levensloop.ingest";

/// The known life event types, for lookups.
const TYPES: [v1::LifeEventType; 4] = [
    v1::LifeEventType::Birth,
    v1::LifeEventType::Death,
    v1::LifeEventType::ChangeOfAddress,
    v1::LifeEventType::DrivingExamPassed,
];

/// The subject token of each type (also the `type` label of the metrics).
pub fn kind(t: v1::LifeEventType) -> Option<&'static str> {
    match t {
        v1::LifeEventType::Unspecified => None,
        v1::LifeEventType::Birth => Some("birth"),
        v1::LifeEventType::Death => Some("death"),
        v1::LifeEventType::ChangeOfAddress => Some("change-of-address"),
        v1::LifeEventType::DrivingExamPassed => Some("driving-exam-passed"),
    }
}

/// Subject kind per type: birth, death, change-of-address, driving-exam-passed;
/// `levensloop.ingest.<kind>`.
pub fn subject_for(t: v1::LifeEventType) -> Option<String> {
    kind(t).map(|k| format!("{SUBJECT_PREFIX}.{k}"))
}

/// The type a subject `levensloop.ingest.<kind>` is for; `None` for any other subject.
pub fn kind_of_subject(subject: &str) -> Option<v1::LifeEventType> {
    let rest = subject.strip_prefix(SUBJECT_PREFIX)?.strip_prefix('.')?;
    TYPES.into_iter().find(|t| kind(*t) == Some(rest))
}

/// The oneof field name of each type's payload, the root of its field paths.
pub fn payload_field(t: v1::LifeEventType) -> Option<&'static str> {
    match t {
        v1::LifeEventType::Unspecified => None,
        v1::LifeEventType::Birth => Some("birth"),
        v1::LifeEventType::Death => Some("death"),
        v1::LifeEventType::ChangeOfAddress => Some("change_of_address"),
        v1::LifeEventType::DrivingExamPassed => Some("driving_exam_passed"),
    }
}

/// The refusal of `len` bytes over the limit.
pub fn too_large(len: usize, limits: &Limits) -> Rejection {
    Rejection::single(
        "data",
        Reason::PayloadTooLarge,
        format!(
            "the payload is {len} bytes, more than the limit of {} bytes",
            limits.max_payload_bytes
        ),
    )
}

/// A value for a description: quoted, escaped, and cut short, since it may be anything a
/// sender wrote.
pub(crate) fn quote(value: &str) -> String {
    const MAX: usize = 64;
    if value.chars().count() <= MAX {
        format!("{value:?}")
    } else {
        let cut: String = value.chars().take(MAX).collect();
        format!("{cut:?}…")
    }
}

/// What a content type says, by its essence (type/subtype, lowercased, parameters dropped).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Media {
    CloudEventsJson,
    Json,
    Protobuf,
}

fn essence(content_type: &str) -> String {
    content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase()
}

fn media(content_type: &str) -> Option<Media> {
    match essence(content_type).as_str() {
        CONTENT_TYPE_CLOUDEVENTS_JSON => Some(Media::CloudEventsJson),
        CONTENT_TYPE_JSON => Some(Media::Json),
        CONTENT_TYPE_PROTOBUF => Some(Media::Protobuf),
        _ => None,
    }
}

fn unsupported(field: &str, content_type: &str, allowed: &str) -> Violation {
    Violation::new(
        field,
        Reason::UnsupportedContentType,
        format!(
            "content type {} is not supported; use {allowed}",
            quote(content_type)
        ),
    )
}

/// A NATS message: headers as (name, value) pairs (names case-insensitive), body bytes.
pub fn decode_nats(
    subject: &str,
    headers: &[(String, String)],
    body: &[u8],
    limits: &Limits,
) -> Result<v1::LifeEvent, Rejection> {
    // Before anything else: an oversized body costs nothing more than its length.
    if body.len() > limits.max_payload_bytes {
        return Err(too_large(body.len(), limits));
    }
    let mut violations = Vec::new();
    let content_type = header(headers, "content-type", &mut violations);
    if let Some(rejection) = Rejection::from_violations(violations) {
        return Err(rejection);
    }
    let Some(content_type) = content_type else {
        return Err(Rejection::single(
            "content-type",
            Reason::MissingAttribute,
            format!(
                "the content-type header is required: {CONTENT_TYPE_JSON} or \
                 {CONTENT_TYPE_PROTOBUF} (binary mode) or {CONTENT_TYPE_CLOUDEVENTS_JSON} \
                 (structured mode)"
            ),
        ));
    };
    match media(content_type) {
        Some(Media::CloudEventsJson) => {
            let event = decode_structured(body)?;
            let t = v1::LifeEventType::from_cloudevents_type(&event.r#type)
                .unwrap_or(v1::LifeEventType::Unspecified);
            match check_subject(subject, t) {
                Some(v) => Err(v.into()),
                None => Ok(event),
            }
        }
        Some(media @ (Media::Json | Media::Protobuf)) => {
            decode_binary(subject, headers, media, body)
        }
        None => Err(unsupported(
            "content-type",
            content_type,
            &format!(
                "{CONTENT_TYPE_JSON} or {CONTENT_TYPE_PROTOBUF} (binary mode) or \
                 {CONTENT_TYPE_CLOUDEVENTS_JSON} (structured mode)"
            ),
        )
        .into()),
    }
}

/// gRPC `RawCloudEvent`: a structured JSON CloudEvent (`application/cloudevents+json`), or a
/// protobuf-encoded `v1::LifeEvent` (`application/protobuf`).
pub fn decode_raw(
    content_type: &str,
    data: &[u8],
    limits: &Limits,
) -> Result<v1::LifeEvent, Rejection> {
    if data.len() > limits.max_payload_bytes {
        return Err(too_large(data.len(), limits));
    }
    if content_type.trim().is_empty() {
        return Err(Rejection::single(
            "content_type",
            Reason::MissingAttribute,
            format!(
                "content_type is required: {CONTENT_TYPE_CLOUDEVENTS_JSON} or \
                 {CONTENT_TYPE_PROTOBUF}"
            ),
        ));
    }
    match media(content_type) {
        Some(Media::CloudEventsJson) => decode_structured(data),
        Some(Media::Protobuf) => {
            if data.is_empty() {
                return Err(empty_data());
            }
            let mut event = v1::LifeEvent::decode(data).map_err(|e| {
                Rejection::single(
                    "data",
                    Reason::MalformedProtobuf,
                    format!("data is not a protobuf levensloop.v1.LifeEvent: {e}"),
                )
            })?;
            // The payload arrived as protobuf, whatever the sender wrote in this attribute.
            event.datacontenttype = CONTENT_TYPE_PROTOBUF.to_owned();
            Ok(event)
        }
        Some(Media::Json) | None => Err(unsupported(
            "content_type",
            content_type,
            &format!("{CONTENT_TYPE_CLOUDEVENTS_JSON} or {CONTENT_TYPE_PROTOBUF}"),
        )
        .into()),
    }
}

fn empty_data() -> Rejection {
    Rejection::single(
        "data",
        Reason::MissingField,
        "the data is empty: a life event payload is required",
    )
}

/// The one value of a header (names compared case-insensitively, values trimmed). An empty
/// value counts as absent; several different values are a violation.
fn header<'a>(
    headers: &'a [(String, String)],
    name: &str,
    violations: &mut Vec<Violation>,
) -> Option<&'a str> {
    let mut found: Option<&'a str> = None;
    for (n, value) in headers {
        if !n.trim().eq_ignore_ascii_case(name) {
            continue;
        }
        let value = value.trim();
        match found {
            None => found = Some(value),
            Some(first) if first == value => {}
            Some(first) => {
                violations.push(Violation::new(
                    name,
                    Reason::InvalidAttribute,
                    format!(
                        "header {name} is given more than once with different values ({} and {})",
                        quote(first),
                        quote(value)
                    ),
                ));
                return None;
            }
        }
    }
    found.filter(|v| !v.is_empty())
}

/// The CloudEvents attributes as found, before checking.
#[derive(Debug, Default)]
struct Attributes<'a> {
    specversion: Option<&'a str>,
    id: Option<&'a str>,
    source: Option<&'a str>,
    r#type: Option<&'a str>,
    time: Option<&'a str>,
    subject: Option<&'a str>,
    dataschema: Option<&'a str>,
}

/// The checked envelope.
#[derive(Debug)]
struct Envelope {
    event: v1::LifeEvent,
    kind: v1::LifeEventType,
}

/// Checks the attributes; `prefix` makes the field names (`ce-` for binary-mode headers).
/// Returns the envelope only when no violation was found.
fn envelope(
    attrs: &Attributes<'_>,
    prefix: &str,
    violations: &mut Vec<Violation>,
) -> Option<Envelope> {
    let before = violations.len();
    let field = |name: &str| format!("{prefix}{name}");
    // An attribute already refused as invalid (wrong JSON type, conflicting headers) is not
    // reported missing as well.
    let required = |name: &str, value: Option<&str>, violations: &mut Vec<Violation>| {
        if value.is_none() && !violations.iter().any(|v| v.field == field(name)) {
            violations.push(Violation::new(
                field(name),
                Reason::MissingAttribute,
                format!("the CloudEvents attribute {} is required", field(name)),
            ));
        }
    };
    required("specversion", attrs.specversion, violations);
    if let Some(v) = attrs.specversion
        && v != SPECVERSION
    {
        violations.push(Violation::new(
            field("specversion"),
            Reason::UnsupportedSpecversion,
            format!(
                "specversion {} is not supported; only CloudEvents {SPECVERSION} is",
                quote(v)
            ),
        ));
    }
    required("id", attrs.id, violations);
    required("source", attrs.source, violations);
    required("type", attrs.r#type, violations);
    let kind = attrs
        .r#type
        .and_then(v1::LifeEventType::from_cloudevents_type);
    if let (Some(t), None) = (attrs.r#type, kind) {
        violations.push(unknown_type(&field("type"), t));
    }
    let time = attrs.time.and_then(|t| match parse_time(t) {
        Ok(ts) => Some(ts),
        Err(why) => {
            violations.push(Violation::new(
                field("time"),
                Reason::InvalidAttribute,
                format!("time {} is not an RFC 3339 timestamp: {why}", quote(t)),
            ));
            None
        }
    });
    if violations.len() > before {
        return None;
    }
    let kind = kind?;
    Some(Envelope {
        event: v1::LifeEvent {
            id: attrs.id.unwrap_or_default().to_owned(),
            source: attrs.source.unwrap_or_default().to_owned(),
            r#type: attrs.r#type.unwrap_or_default().to_owned(),
            specversion: attrs.specversion.unwrap_or_default().to_owned(),
            time,
            subject: attrs.subject.unwrap_or_default().to_owned(),
            datacontenttype: String::new(),
            dataschema: attrs.dataschema.unwrap_or_default().to_owned(),
            payload: None,
        },
        kind,
    })
}

pub(crate) fn unknown_type(field: &str, t: &str) -> Violation {
    Violation::new(
        field,
        Reason::UnknownType,
        format!(
            "type {} is not a known life event; known: {}, {}, {}, {}",
            quote(t),
            levensloop_proto::event_types::BIRTH,
            levensloop_proto::event_types::DEATH,
            levensloop_proto::event_types::CHANGE_OF_ADDRESS,
            levensloop_proto::event_types::DRIVING_EXAM_PASSED
        ),
    )
}

/// An RFC 3339 time as a protobuf Timestamp.
fn parse_time(value: &str) -> Result<types::Timestamp, String> {
    let t = DateTime::parse_from_rfc3339(value).map_err(|e| e.to_string())?;
    Ok(timestamp(t.with_timezone(&Utc)))
}

/// A chrono time as a protobuf Timestamp.
pub fn timestamp(t: DateTime<Utc>) -> types::Timestamp {
    types::Timestamp {
        seconds: t.timestamp(),
        // chrono writes a leap second as nanoseconds ≥ 10⁹, which protobuf does not allow.
        nanos: t.timestamp_subsec_nanos().min(999_999_999) as i32,
    }
}

/// The NATS subject must name the type's kind.
fn check_subject(subject: &str, t: v1::LifeEventType) -> Option<Violation> {
    match kind_of_subject(subject) {
        None => Some(Violation::new(
            "subject",
            Reason::UnknownType,
            format!(
                "NATS subject {} is not {SUBJECT_PREFIX}.<kind> with kind birth, death, \
                 change-of-address or driving-exam-passed",
                quote(subject)
            ),
        )),
        Some(k) if k != t => Some(Violation::new(
            "subject",
            Reason::TypePayloadMismatch,
            format!(
                "NATS subject {} is for {} events, but the type is {}",
                quote(subject),
                kind(k).unwrap_or("other"),
                t.cloudevents_type().unwrap_or("unknown")
            ),
        )),
        Some(_) => None,
    }
}

/// Binary mode: attributes from `ce-*` headers, the body the payload alone.
fn decode_binary(
    subject: &str,
    headers: &[(String, String)],
    media: Media,
    body: &[u8],
) -> Result<v1::LifeEvent, Rejection> {
    let mut violations = Vec::new();
    let attrs = Attributes {
        specversion: header(headers, "ce-specversion", &mut violations),
        id: header(headers, "ce-id", &mut violations),
        source: header(headers, "ce-source", &mut violations),
        r#type: header(headers, "ce-type", &mut violations),
        time: header(headers, "ce-time", &mut violations),
        subject: header(headers, "ce-subject", &mut violations),
        dataschema: header(headers, "ce-dataschema", &mut violations),
    };
    let envelope = envelope(&attrs, "ce-", &mut violations);
    if let Some(envelope) = &envelope
        && let Some(v) = check_subject(subject, envelope.kind)
    {
        violations.push(v);
    }
    if let Some(rejection) = Rejection::from_violations(violations) {
        return Err(rejection);
    }
    let Some(Envelope { mut event, kind }) = envelope else {
        // Unreachable: no envelope always comes with a violation. Say so rather than panic.
        return Err(Rejection::single(
            "ce-type",
            Reason::MissingAttribute,
            "the CloudEvents attributes are incomplete",
        ));
    };
    if body.is_empty() {
        return Err(empty_data());
    }
    event.payload = Some(match media {
        Media::Protobuf => payload_from_protobuf(kind, body, "data")?,
        Media::Json | Media::CloudEventsJson => payload_from_json_bytes(kind, body, "data")?,
    });
    event.datacontenttype = match media {
        Media::Protobuf => CONTENT_TYPE_PROTOBUF,
        Media::Json | Media::CloudEventsJson => CONTENT_TYPE_JSON,
    }
    .to_owned();
    Ok(event)
}

fn malformed_json(field: &str, kind: v1::LifeEventType, e: &serde_json::Error) -> Rejection {
    Rejection::single(
        field,
        Reason::MalformedJson,
        format!(
            "{field} is not a valid JSON {} payload: {e}",
            payload_message(kind)
        ),
    )
}

fn payload_message(kind: v1::LifeEventType) -> &'static str {
    match kind {
        v1::LifeEventType::Unspecified => "life event",
        v1::LifeEventType::Birth => "levensloop.v1.Birth",
        v1::LifeEventType::Death => "levensloop.v1.Death",
        v1::LifeEventType::ChangeOfAddress => "levensloop.v1.ChangeOfAddress",
        v1::LifeEventType::DrivingExamPassed => "levensloop.v1.DrivingExamPassed",
    }
}

fn no_payload_type(field: &str) -> Rejection {
    Rejection::single(
        field,
        Reason::UnknownType,
        "no known type to decode the payload as",
    )
}

fn payload_from_json_bytes(
    kind: v1::LifeEventType,
    bytes: &[u8],
    field: &str,
) -> Result<Payload, Rejection> {
    let decoded = match kind {
        v1::LifeEventType::Unspecified => return Err(no_payload_type(field)),
        v1::LifeEventType::Birth => serde_json::from_slice(bytes).map(Payload::Birth),
        v1::LifeEventType::Death => serde_json::from_slice(bytes).map(Payload::Death),
        v1::LifeEventType::ChangeOfAddress => {
            serde_json::from_slice(bytes).map(Payload::ChangeOfAddress)
        }
        v1::LifeEventType::DrivingExamPassed => {
            serde_json::from_slice(bytes).map(Payload::DrivingExamPassed)
        }
    };
    decoded.map_err(|e| malformed_json(field, kind, &e))
}

fn payload_from_json_value(
    kind: v1::LifeEventType,
    value: Value,
    field: &str,
) -> Result<Payload, Rejection> {
    let decoded = match kind {
        v1::LifeEventType::Unspecified => return Err(no_payload_type(field)),
        v1::LifeEventType::Birth => serde_json::from_value(value).map(Payload::Birth),
        v1::LifeEventType::Death => serde_json::from_value(value).map(Payload::Death),
        v1::LifeEventType::ChangeOfAddress => {
            serde_json::from_value(value).map(Payload::ChangeOfAddress)
        }
        v1::LifeEventType::DrivingExamPassed => {
            serde_json::from_value(value).map(Payload::DrivingExamPassed)
        }
    };
    decoded.map_err(|e| malformed_json(field, kind, &e))
}

fn payload_from_protobuf(
    kind: v1::LifeEventType,
    bytes: &[u8],
    field: &str,
) -> Result<Payload, Rejection> {
    let decoded = match kind {
        v1::LifeEventType::Unspecified => return Err(no_payload_type(field)),
        v1::LifeEventType::Birth => v1::Birth::decode(bytes).map(Payload::Birth),
        v1::LifeEventType::Death => v1::Death::decode(bytes).map(Payload::Death),
        v1::LifeEventType::ChangeOfAddress => {
            v1::ChangeOfAddress::decode(bytes).map(Payload::ChangeOfAddress)
        }
        v1::LifeEventType::DrivingExamPassed => {
            v1::DrivingExamPassed::decode(bytes).map(Payload::DrivingExamPassed)
        }
    };
    decoded.map_err(|e| {
        Rejection::single(
            field,
            Reason::MalformedProtobuf,
            format!(
                "{field} is not a protobuf {} payload: {e}",
                payload_message(kind)
            ),
        )
    })
}

/// A string attribute of a structured event: absent, `null` and `""` are all "not given";
/// any other JSON type is a violation.
fn string_attr<'a>(
    object: &'a Map<String, Value>,
    name: &str,
    violations: &mut Vec<Violation>,
) -> Option<&'a str> {
    match object.get(name) {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if s.is_empty() => None,
        Some(Value::String(s)) => Some(s.as_str()),
        Some(other) => {
            violations.push(Violation::new(
                name,
                Reason::InvalidAttribute,
                format!(
                    "the CloudEvents attribute {name} must be a string, not {}",
                    json_kind(other)
                ),
            ));
            None
        }
    }
}

fn json_kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Structured mode: the body is a JSON CloudEvent.
fn decode_structured(body: &[u8]) -> Result<v1::LifeEvent, Rejection> {
    let value: Value = serde_json::from_slice(body).map_err(|e| {
        Rejection::single(
            "data",
            Reason::MalformedJson,
            format!("the body is not a valid JSON CloudEvent: {e}"),
        )
    })?;
    let Value::Object(mut object) = value else {
        return Err(Rejection::single(
            "data",
            Reason::MalformedJson,
            format!(
                "a JSON CloudEvent is an object, this body is {}",
                json_kind(&value)
            ),
        ));
    };
    let mut violations = Vec::new();
    let attrs = Attributes {
        specversion: string_attr(&object, "specversion", &mut violations),
        id: string_attr(&object, "id", &mut violations),
        source: string_attr(&object, "source", &mut violations),
        r#type: string_attr(&object, "type", &mut violations),
        time: string_attr(&object, "time", &mut violations),
        subject: string_attr(&object, "subject", &mut violations),
        dataschema: string_attr(&object, "dataschema", &mut violations),
    };
    let datacontenttype = string_attr(&object, "datacontenttype", &mut violations)
        .unwrap_or(CONTENT_TYPE_JSON)
        .to_owned();
    let envelope = envelope(&attrs, "", &mut violations);
    let payload_media = match media(&datacontenttype) {
        Some(m @ (Media::Json | Media::Protobuf)) => Some(m),
        Some(Media::CloudEventsJson) | None => {
            violations.push(unsupported(
                "datacontenttype",
                &datacontenttype,
                &format!(
                    "{CONTENT_TYPE_JSON} (in data) or {CONTENT_TYPE_PROTOBUF} (in data_base64)"
                ),
            ));
            None
        }
    };
    if let Some(rejection) = Rejection::from_violations(violations) {
        return Err(rejection);
    }
    let (Some(Envelope { mut event, kind }), Some(payload_media)) = (envelope, payload_media)
    else {
        // Unreachable: each `None` above came with a violation. Say so rather than panic.
        return Err(Rejection::single(
            "type",
            Reason::MissingAttribute,
            "the CloudEvents attributes are incomplete",
        ));
    };
    let data = object.remove("data").filter(|v| !v.is_null());
    let data_base64 = object.remove("data_base64").filter(|v| !v.is_null());
    let payload = match (data, data_base64, payload_media) {
        (Some(_), Some(_), _) => {
            return Err(Rejection::single(
                "data_base64",
                Reason::InvalidAttribute,
                "a CloudEvent carries data or data_base64, not both",
            ));
        }
        (None, None, _) => {
            return Err(Rejection::single(
                "data",
                Reason::MissingField,
                "the CloudEvent has no data: a life event payload is required",
            ));
        }
        (Some(data), None, Media::Json) => payload_from_json_value(kind, data, "data")?,
        (Some(_), None, _) => {
            return Err(Rejection::single(
                "data",
                Reason::InvalidAttribute,
                format!("a {CONTENT_TYPE_PROTOBUF} payload goes in data_base64, not in data"),
            ));
        }
        (None, Some(encoded), media) => {
            let bytes = base64_attr(encoded)?;
            if bytes.is_empty() {
                return Err(Rejection::single(
                    "data_base64",
                    Reason::MissingField,
                    "data_base64 is empty: a life event payload is required",
                ));
            }
            match media {
                Media::Protobuf => payload_from_protobuf(kind, &bytes, "data_base64")?,
                Media::Json | Media::CloudEventsJson => {
                    payload_from_json_bytes(kind, &bytes, "data_base64")?
                }
            }
        }
    };
    event.payload = Some(payload);
    event.datacontenttype = match payload_media {
        Media::Protobuf => CONTENT_TYPE_PROTOBUF,
        Media::Json | Media::CloudEventsJson => CONTENT_TYPE_JSON,
    }
    .to_owned();
    Ok(event)
}

/// Decodes `data_base64` (standard or URL-safe alphabet, padding optional).
fn base64_attr(value: Value) -> Result<Vec<u8>, Rejection> {
    if !value.is_string() {
        return Err(Rejection::single(
            "data_base64",
            Reason::InvalidAttribute,
            format!("data_base64 must be a string, not {}", json_kind(&value)),
        ));
    }
    // The proto3 JSON mapping's bytes decoding (pbjson, already a dependency of the
    // contract) is the base64 decoder here; no second implementation to keep right.
    serde_json::from_value::<types::BytesValue>(value)
        .map(|b| b.value.to_vec())
        .map_err(|e| {
            Rejection::single(
                "data_base64",
                Reason::InvalidAttribute,
                format!("data_base64 is not valid base64: {e}"),
            )
        })
}

/// Encodes bytes as standard base64, for `data_base64`.
pub fn base64_encode(bytes: &[u8]) -> String {
    match serde_json::to_value(types::BytesValue {
        value: bytes.to_vec().into(),
    }) {
        Ok(Value::String(s)) => s,
        // BytesValue always serialises to a string.
        _ => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::corpus;
    use proptest::prelude::*;

    fn limits() -> Limits {
        Limits::default()
    }

    fn strip_content_type(mut e: v1::LifeEvent) -> v1::LifeEvent {
        e.datacontenttype.clear();
        e
    }

    #[test]
    fn subjects_map_both_ways() {
        for t in TYPES {
            let s = subject_for(t).unwrap();
            assert_eq!(kind_of_subject(&s), Some(t));
        }
        assert_eq!(
            subject_for(v1::LifeEventType::ChangeOfAddress).as_deref(),
            Some("levensloop.ingest.change-of-address")
        );
        assert_eq!(subject_for(v1::LifeEventType::Unspecified), None);
        for bad in [
            "",
            "levensloop.ingest",
            "levensloop.ingest.",
            "levensloop.ingest.marriage",
            "levensloop.ingestbirth",
            "levensloop.ingest.birth.x",
            "other.ingest.birth",
        ] {
            assert_eq!(kind_of_subject(bad), None, "{bad}");
        }
    }

    #[test]
    fn every_valid_encoding_decodes_to_the_event() {
        for event in corpus::valid_events() {
            let encodings = [
                (corpus::encode_binary_json(&event), CONTENT_TYPE_JSON),
                (
                    corpus::encode_binary_protobuf(&event),
                    CONTENT_TYPE_PROTOBUF,
                ),
                (corpus::encode_structured(&event), CONTENT_TYPE_JSON),
                (
                    corpus::encode_structured_protobuf(&event),
                    CONTENT_TYPE_PROTOBUF,
                ),
                (corpus::encode_raw_structured(&event), CONTENT_TYPE_JSON),
                (corpus::encode_raw_protobuf(&event), CONTENT_TYPE_PROTOBUF),
            ];
            for (input, content_type) in encodings {
                let decoded =
                    corpus::decode(&input, &limits()).unwrap_or_else(|r| panic!("{input:?}: {r}"));
                assert_eq!(decoded.datacontenttype, content_type, "{input:?}");
                assert_eq!(
                    strip_content_type(decoded),
                    strip_content_type(event.clone()),
                    "{input:?}"
                );
            }
        }
    }

    #[test]
    fn header_names_are_case_insensitive_and_parameters_allowed() {
        let event = corpus::valid_birth();
        let corpus::Input::Nats {
            subject,
            headers,
            body,
        } = corpus::encode_binary_json(&event)
        else {
            panic!()
        };
        let headers: Vec<_> = headers
            .into_iter()
            .map(|(n, v)| {
                if n == "content-type" {
                    (
                        "Content-Type".to_owned(),
                        "Application/JSON; charset=utf-8".to_owned(),
                    )
                } else {
                    (n.to_ascii_uppercase(), v)
                }
            })
            .collect();
        let decoded = decode_nats(&subject, &headers, &body, &limits()).unwrap();
        assert_eq!(strip_content_type(decoded), strip_content_type(event));
    }

    #[test]
    fn repeated_identical_headers_are_fine_different_ones_are_not() {
        let event = corpus::valid_death();
        let corpus::Input::Nats {
            subject,
            mut headers,
            body,
        } = corpus::encode_binary_protobuf(&event)
        else {
            panic!()
        };
        headers.push(("ce-id".into(), event.id.clone()));
        assert!(decode_nats(&subject, &headers, &body, &limits()).is_ok());
        headers.push(("CE-ID".into(), "other".into()));
        let r = decode_nats(&subject, &headers, &body, &limits()).unwrap_err();
        assert_eq!((r.field(), r.reason()), ("ce-id", Reason::InvalidAttribute));
    }

    #[test]
    fn binary_mode_reports_every_missing_attribute_at_once() {
        let headers = vec![("content-type".to_owned(), CONTENT_TYPE_JSON.to_owned())];
        let r = decode_nats("levensloop.ingest.birth", &headers, b"{}", &limits()).unwrap_err();
        let fields: Vec<_> = r.violations.iter().map(|v| v.field.as_str()).collect();
        assert_eq!(fields, ["ce-specversion", "ce-id", "ce-source", "ce-type"]);
        assert!(
            r.violations
                .iter()
                .all(|v| v.reason == Reason::MissingAttribute)
        );
    }

    #[test]
    fn size_is_checked_before_anything_else() {
        let limits = Limits {
            max_payload_bytes: 10,
            ..Limits::default()
        };
        // No headers at all, garbage body: the size is still what is reported.
        let r = decode_nats("x", &[], &[0xff; 11], &limits).unwrap_err();
        assert_eq!(r.reason(), Reason::PayloadTooLarge);
        assert!(r.violations[0].description.contains("11 bytes"));
        let r = decode_raw("text/plain", &[0; 11], &limits).unwrap_err();
        assert_eq!(r.reason(), Reason::PayloadTooLarge);
        // Exactly at the limit is fine as far as size goes.
        let r = decode_raw("text/plain", &[0; 10], &limits).unwrap_err();
        assert_eq!(r.reason(), Reason::UnsupportedContentType);
    }

    #[test]
    fn structured_json_payload_may_also_come_base64() {
        let event = corpus::valid_change_of_address();
        let Some(Payload::ChangeOfAddress(payload)) = &event.payload else {
            panic!()
        };
        let body = serde_json::json!({
            "specversion": "1.0",
            "id": event.id,
            "source": event.source,
            "type": event.r#type,
            "datacontenttype": "application/json",
            "data_base64": base64_encode(&serde_json::to_vec(payload).unwrap()),
            "traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        });
        let decoded = decode_raw(
            CONTENT_TYPE_CLOUDEVENTS_JSON,
            body.to_string().as_bytes(),
            &limits(),
        )
        .unwrap();
        assert_eq!(decoded.payload, event.payload);
    }

    #[test]
    fn base64_helpers_round_trip() {
        for bytes in [&b""[..], b"a", b"ab", b"abc", &[0xff, 0x00, 0xfe, 0x7f]] {
            let encoded = base64_encode(bytes);
            assert_eq!(base64_attr(Value::String(encoded)).unwrap(), bytes);
        }
        assert_eq!(base64_encode(b"Man"), "TWFu");
        assert!(base64_attr(Value::String("!!!".into())).is_err());
    }

    #[test]
    fn leap_seconds_stay_valid_timestamps() {
        let ts = parse_time("2016-12-31T23:59:60Z").unwrap();
        assert!((0..1_000_000_000).contains(&ts.nanos));
    }

    /// A header name likely to matter, or anything.
    fn header_name() -> impl Strategy<Value = String> {
        prop_oneof![
            Just("content-type".to_owned()),
            Just("ce-specversion".to_owned()),
            Just("ce-id".to_owned()),
            Just("ce-source".to_owned()),
            Just("ce-type".to_owned()),
            Just("ce-time".to_owned()),
            Just("ce-subject".to_owned()),
            ".{0,12}",
        ]
    }

    fn header_value() -> impl Strategy<Value = String> {
        prop_oneof![
            Just(CONTENT_TYPE_JSON.to_owned()),
            Just(CONTENT_TYPE_PROTOBUF.to_owned()),
            Just(CONTENT_TYPE_CLOUDEVENTS_JSON.to_owned()),
            Just("1.0".to_owned()),
            Just(levensloop_proto::event_types::BIRTH.to_owned()),
            Just(levensloop_proto::event_types::DRIVING_EXAM_PASSED.to_owned()),
            Just("2026-11-01T10:00:00Z".to_owned()),
            ".{0,40}",
        ]
    }

    fn subject() -> impl Strategy<Value = String> {
        prop_oneof![
            Just("levensloop.ingest.birth".to_owned()),
            Just("levensloop.ingest.death".to_owned()),
            Just("levensloop.ingest.change-of-address".to_owned()),
            Just("levensloop.ingest.driving-exam-passed".to_owned()),
            ".{0,30}",
        ]
    }

    /// Decoding and then validating never panics; any failure is a non-empty rejection.
    fn survives(input: &corpus::Input) {
        let limits = limits();
        match corpus::check(input, corpus::fixed_now(), &limits) {
            Ok(_) => {}
            Err(r) => assert!(!r.violations.is_empty()),
        }
    }

    fn valid_inputs() -> Vec<corpus::Input> {
        corpus::good_inputs().into_iter().map(|g| g.input).collect()
    }

    /// Replaces the bytes of a NATS body or raw data.
    fn with_bytes(input: &corpus::Input, f: impl FnOnce(&mut Vec<u8>)) -> corpus::Input {
        let mut input = input.clone();
        match &mut input {
            corpus::Input::Nats { body, .. } => f(body),
            corpus::Input::Raw { data, .. } => f(data),
            corpus::Input::Event(_) => {}
        }
        input
    }

    /// 2,000 cases per target in the test suite; `just fuzz` raises it with `FUZZ_CASES`.
    fn fuzz_config() -> ProptestConfig {
        let cases = std::env::var("FUZZ_CASES")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(2_000);
        ProptestConfig {
            cases,
            failure_persistence: None,
            ..ProptestConfig::default()
        }
    }

    proptest! {
        #![proptest_config(fuzz_config())]

        #[test]
        fn arbitrary_nats_messages_never_panic(
            subject in subject(),
            headers in proptest::collection::vec((header_name(), header_value()), 0..10),
            body in proptest::collection::vec(any::<u8>(), 0..512),
        ) {
            survives(&corpus::Input::Nats { subject, headers, body });
        }

        #[test]
        fn arbitrary_raw_events_never_panic(
            content_type in prop_oneof![
                Just(CONTENT_TYPE_PROTOBUF.to_owned()),
                Just(CONTENT_TYPE_CLOUDEVENTS_JSON.to_owned()),
                ".{0,30}",
            ],
            data in proptest::collection::vec(any::<u8>(), 0..512),
        ) {
            survives(&corpus::Input::Raw { content_type, data });
        }

        #[test]
        fn mutated_valid_encodings_never_panic(
            which in any::<prop::sample::Index>(),
            flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
            cut in any::<prop::sample::Index>(),
        ) {
            let inputs = valid_inputs();
            let input = which.get(&inputs);
            let flipped = with_bytes(input, |bytes| {
                if !bytes.is_empty() {
                    for (at, xor) in &flips {
                        let i = at.index(bytes.len());
                        bytes[i] ^= xor | 1;
                    }
                }
            });
            survives(&flipped);
            let truncated = with_bytes(input, |bytes| {
                let keep = cut.index(bytes.len() + 1);
                bytes.truncate(keep);
            });
            survives(&truncated);
        }

        #[test]
        fn arbitrary_json_cloudevents_never_panic(
            attrs in proptest::collection::vec(
                (prop_oneof![
                    Just("specversion"), Just("id"), Just("source"), Just("type"), Just("time"),
                    Just("subject"), Just("datacontenttype"), Just("data"), Just("data_base64"),
                ], prop_oneof![
                    Just(Value::Null),
                    Just(Value::Bool(true)),
                    Just(serde_json::json!(1.5)),
                    Just(serde_json::json!("1.0")),
                    Just(serde_json::json!(levensloop_proto::event_types::DEATH)),
                    Just(serde_json::json!("application/protobuf")),
                    Just(serde_json::json!({"deceased": {"insz": "41050312345"}})),
                    Just(serde_json::json!([1, 2])),
                    ".{0,20}".prop_map(Value::String),
                ]),
                0..10,
            ),
        ) {
            let object: Map<String, Value> =
                attrs.into_iter().map(|(k, v)| (k.to_owned(), v)).collect();
            let data = Value::Object(object).to_string().into_bytes();
            survives(&corpus::Input::Raw {
                content_type: CONTENT_TYPE_CLOUDEVENTS_JSON.to_owned(),
                data: data.clone(),
            });
            survives(&corpus::Input::Nats {
                subject: "levensloop.ingest.death".to_owned(),
                headers: vec![("content-type".to_owned(), CONTENT_TYPE_CLOUDEVENTS_JSON.to_owned())],
                body: data,
            });
        }
    }
}
