//! `levensloop demo`: sample life events through the event store.
//!
//! Appends one birth, one death, one move and one passed driving exam, each to its own stream
//! keyed by the saga id (UUID v5 of source and id) with "must not exist"; reads each back; and
//! follows the `lifeevent` category through a durable subscription. Run it twice: the second
//! time every event is recognised as already stored (once-only), and the subscription has
//! nothing new.

use crate::Output;
use crate::render::{self, LIFE_EVENT};
use levensloop_proto::types::Timestamp;
use levensloop_proto::{event_types, saga_id, v1};
use levensloop_store::{
    Commit, EventData, EventStore, ExpectedVersion, ReadFrom, StoreError, StreamName,
};
use prost::Message;
use std::io::Write;
use std::time::Duration;

/// The category of the streams that hold accepted life events.
pub use levensloop_proto::stored::LIFE_EVENT_CATEGORY;

const SOURCE: &str = "urn:be:levensloop:demo";

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The durable subscription the demo follows the life events with.
    #[arg(long, default_value = "demo-projection")]
    subscription: String,
}

fn person(insz: &str, given: &str, family: &str, born: &str, gender: v1::Gender) -> v1::Person {
    v1::Person {
        insz: insz.to_owned(),
        given_names: vec![given.to_owned()],
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
        post_code: post_code.to_owned(),
        municipality_name: name.to_owned(),
        municipality_nis_code: nis.to_owned(),
        country_code: "BE".to_owned(),
        ..Default::default()
    }
}

fn envelope(
    id: &str,
    ce_type: &str,
    subject: &str,
    payload: v1::life_event::Payload,
) -> v1::LifeEvent {
    v1::LifeEvent {
        id: id.to_owned(),
        source: SOURCE.to_owned(),
        r#type: ce_type.to_owned(),
        specversion: "1.0".to_owned(),
        // 2026-11-20T09:00:00Z: a fixed time, so the samples are the same on every run.
        time: Some(Timestamp {
            seconds: 1_795_165_200,
            nanos: 0,
        }),
        subject: subject.to_owned(),
        datacontenttype: "application/protobuf".to_owned(),
        dataschema: String::new(),
        payload: Some(payload),
    }
}

/// Four sample life events with valid INSZ numbers and real municipality codes.
pub fn samples() -> Vec<v1::LifeEvent> {
    use v1::life_event::Payload;
    let birth = v1::Birth {
        act: Some(v1::CivilStatusAct {
            act_reference: "DABS-44021-2026-000731".to_owned(),
            registering_municipality_nis_code: "44021".to_owned(),
            registration_date: "2026-01-16".to_owned(),
        }),
        child: Some(person(
            "26011400164",
            "Lars",
            "Peeters",
            "2026-01-14",
            v1::Gender::Male,
        )),
        place_of_birth_nis_code: "44021".to_owned(),
        time_of_birth: "06:42".to_owned(),
        mother: Some(person(
            "94051220289",
            "Sofie",
            "Janssens",
            "1994-05-12",
            v1::Gender::Female,
        )),
        other_parent: Some(person(
            "93022111756",
            "Pieter",
            "Peeters",
            "1993-02-21",
            v1::Gender::Male,
        )),
        registered_address: Some(address("Korenmarkt", "12", "9000", "Gent", "44021")),
        multiple_birth_index: 1,
    };
    let death = v1::Death {
        act: Some(v1::CivilStatusAct {
            act_reference: "DABS-24062-2026-004410".to_owned(),
            registering_municipality_nis_code: "24062".to_owned(),
            registration_date: "2026-11-20".to_owned(),
        }),
        deceased: Some(person(
            "52030904225",
            "Maria",
            "Claes",
            "1952-03-09",
            v1::Gender::Female,
        )),
        date_of_death: "2026-11-19".to_owned(),
        place_of_death_nis_code: "24062".to_owned(),
        declaring_doctor_riziv: "1-23456-78-901".to_owned(),
        registered_address: Some(address("Naamsestraat", "80", "3000", "Leuven", "24062")),
    };
    let mover = person(
        "91072316340",
        "Tom",
        "Wouters",
        "1991-07-23",
        v1::Gender::Male,
    );
    let change = v1::ChangeOfAddress {
        person: Some(mover),
        previous_address: Some(address("Meir", "50", "2000", "Antwerpen", "11002")),
        new_address: Some(address("IJzerenleen", "7", "2800", "Mechelen", "12025")),
        declaration_date: "2026-11-18".to_owned(),
        move_date: "2026-11-15".to_owned(),
        declaring_municipality_nis_code: "12025".to_owned(),
        household_member_insz: vec![],
        reason: v1::ChangeOfAddressReason::Move as i32,
    };
    let exam = v1::DrivingExamPassed {
        candidate: Some(person(
            "08050608861",
            "Emma",
            "De Smet",
            "2008-05-06",
            v1::Gender::Female,
        )),
        exam_centre: Some(v1::ExamCentre {
            code: "GOCA-KTB".to_owned(),
            name: "Examencentrum Kortenberg".to_owned(),
            municipality_nis_code: "24055".to_owned(),
        }),
        exam_date: "2026-11-18".to_owned(),
        licence_category: v1::LicenceCategory::B as i32,
        exam_type: v1::ExamType::Practical as i32,
        exam_reference: "KTB-2026-118-0042".to_owned(),
        residence_municipality_nis_code: "24055".to_owned(),
    };
    vec![
        envelope(
            "demo-birth-1",
            event_types::BIRTH,
            "26011400164",
            Payload::Birth(birth),
        ),
        envelope(
            "demo-death-1",
            event_types::DEATH,
            "52030904225",
            Payload::Death(death),
        ),
        envelope(
            "demo-move-1",
            event_types::CHANGE_OF_ADDRESS,
            "91072316340",
            Payload::ChangeOfAddress(change),
        ),
        envelope(
            "demo-driving-exam-1",
            event_types::DRIVING_EXAM_PASSED,
            "08050608861",
            Payload::DrivingExamPassed(exam),
        ),
    ]
}

pub async fn run(
    store: &dyn EventStore,
    args: Args,
    output: Output,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    let table = output == Output::Table;
    if table {
        writeln!(out, "== appending {} sample life events", samples().len())?;
    }
    let mut streams = Vec::new();
    for event in samples() {
        let saga = saga_id(&event.source, &event.id);
        let stream = StreamName::new(LIFE_EVENT_CATEGORY, saga.to_string())?;
        let data = EventData::new(LIFE_EVENT, event.encode_to_vec())
            .with_metadata("ce-source", &event.source)
            .with_metadata("ce-id", &event.id)
            .with_metadata("ce-type", &event.r#type)
            .with_metadata("content-type", "application/protobuf");
        // The commit id is the saga id: a retry of this very append is a duplicate.
        let commit = Commit::new(saga, vec![data]);
        let outcome = match store
            .append(&stream, ExpectedVersion::NoStream, commit)
            .await
        {
            Ok(appended) if appended.duplicate => "duplicate (already stored)".to_owned(),
            Ok(appended) => format!("accepted, version {}", appended.version),
            Err(StoreError::VersionConflict { .. }) => "duplicate (already stored)".to_owned(),
            Err(e) => return Err(e.into()),
        };
        match output {
            Output::Table => writeln!(
                out,
                "  {:<22} saga {saga}  {outcome}\n  {:<22} {}",
                event.id,
                "",
                render::describe(&event)
            )?,
            Output::Json => writeln!(
                out,
                "{}",
                serde_json::json!({"event_id": event.id, "saga_id": saga.to_string(), "outcome": outcome})
            )?,
        }
        streams.push(stream);
    }

    if table {
        writeln!(out, "\n== reading the streams back")?;
    }
    for stream in &streams {
        let slice = store.read(stream, ReadFrom::Start).await?;
        for event in &slice.events {
            render::event(event, output, out)?;
        }
    }

    if table {
        writeln!(
            out,
            "\n== following category {LIFE_EVENT_CATEGORY:?} with durable subscription {:?}",
            args.subscription
        )?;
    }
    let mut subscription = store
        .subscribe(LIFE_EVENT_CATEGORY, &args.subscription)
        .await?;
    let mut delivered = 0;
    // Nothing new arrives after the demo's own appends, so a short quiet period means the
    // subscription has caught up (a second run finds nothing new at all).
    while let Ok(next) = tokio::time::timeout(Duration::from_millis(500), subscription.next()).await
    {
        let delivery = next?;
        delivered += 1;
        let caught_up = delivery.pending == 0;
        if table {
            writeln!(
                out,
                "  delivered {} at version {} ({} pending)",
                delivery.stream, delivery.version, delivery.pending
            )?;
        }
        delivery.ack().await?;
        if caught_up {
            break;
        }
    }
    if table {
        writeln!(
            out,
            "  {delivered} new commit(s); the subscription resumes after them next time"
        )?;
    }
    Ok(())
}
