//! Printing stored events for people (a line each) and for scripts (JSON lines).

use crate::Output;
use levensloop_proto::v1;
use levensloop_store::RecordedEvent;
use prost::Message;
use std::io::Write;

/// The event type under which life events are stored.
pub use levensloop_proto::stored::LIFE_EVENT_TYPE as LIFE_EVENT;

/// A stored event decoded to JSON where its type is known, else its size.
fn body(event: &RecordedEvent) -> serde_json::Value {
    match event.event_type.as_str() {
        LIFE_EVENT => match v1::LifeEvent::decode(event.data.as_ref()) {
            Ok(life_event) => serde_json::to_value(&life_event)
                .unwrap_or_else(|e| serde_json::json!({ "unprintable": e.to_string() })),
            Err(e) => serde_json::json!({ "undecodable": e.to_string() }),
        },
        _ => serde_json::json!({ "bytes": event.data.len() }),
    }
}

/// One line that says what a life event is about.
pub fn describe(event: &v1::LifeEvent) -> String {
    use v1::life_event::Payload;
    let name = |p: &Option<v1::Person>| {
        p.as_ref().map_or_else(
            || "an unnamed person".to_owned(),
            |p| format!("{} {}", p.given_names.join(" "), p.family_name),
        )
    };
    match &event.payload {
        Some(Payload::Birth(b)) => format!(
            "birth of {} in {}",
            name(&b.child),
            b.place_of_birth_nis_code
        ),
        Some(Payload::Death(d)) => format!(
            "death of {} on {} in {}",
            name(&d.deceased),
            d.date_of_death,
            d.place_of_death_nis_code
        ),
        Some(Payload::ChangeOfAddress(m)) => format!(
            "{} moves from {} to {}",
            name(&m.person),
            m.previous_address
                .as_ref()
                .map_or("?", |a| a.municipality_name.as_str()),
            m.new_address
                .as_ref()
                .map_or("?", |a| a.municipality_name.as_str())
        ),
        Some(Payload::DrivingExamPassed(x)) => format!(
            "{} passed the driving exam ({}) at {}",
            name(&x.candidate),
            v1::LicenceCategory::try_from(x.licence_category).map_or("?", |c| c
                .as_str_name()
                .trim_start_matches("LICENCE_CATEGORY_")),
            x.exam_centre.as_ref().map_or("?", |c| c.name.as_str())
        ),
        None => "no payload".to_owned(),
    }
}

pub fn event(event: &RecordedEvent, output: Output, out: &mut impl Write) -> std::io::Result<()> {
    match output {
        Output::Json => {
            let line = serde_json::json!({
                "stream": event.stream.to_string(),
                "version": event.version.as_u64(),
                "index": event.index,
                "commit_id": event.commit_id.to_string(),
                "event_type": event.event_type,
                "recorded_at": chrono::DateTime::<chrono::Utc>::from(event.recorded_at).to_rfc3339(),
                "metadata": event.metadata,
                "data": body(event),
            });
            writeln!(out, "{line}")
        }
        Output::Table => {
            let at = chrono::DateTime::<chrono::Utc>::from(event.recorded_at)
                .format("%Y-%m-%d %H:%M:%S");
            let what = match event.event_type.as_str() {
                LIFE_EVENT => v1::LifeEvent::decode(event.data.as_ref())
                    .map_or_else(|e| format!("undecodable: {e}"), |e| describe(&e)),
                _ => format!("{} bytes", event.data.len()),
            };
            writeln!(
                out,
                "{:<52} v{:<8} {at}  {:<24} {what}",
                event.stream.to_string(),
                event.version,
                event.event_type
            )
        }
    }
}
