//! Facts about a person that a definition's conditions may ask for (does the person hold a
//! disability parking card? a library account?), looked up when a saga starts.
//!
//! In production these come from the municipal and Flemish registers (parking permits,
//! library membership, vehicle registration). This build answers from a deterministic stand-in
//! register: the answer for a person and a fact is a fixed function of the INSZ, with shares
//! close to Flemish averages, so a demo or a test sees the same plan every time.

use levensloop_proto::v1;
use levensloop_sagas::Definition;
use std::collections::BTreeMap;
use uuid::Uuid;

/// The share of people for whom the stand-in register answers "true", per fact.
fn share(fact: &str) -> u32 {
    match fact {
        "has_library_account" => 45,
        "holds_resident_parking_card" => 20,
        "has_registered_vehicle" => 60,
        "holds_disability_parking_card" => 6,
        "has_reserved_disability_parking_space" => 2,
        _ => 10,
    }
}

/// The facts a definition declares, for the person of this life event.
pub fn lookup(definition: &Definition, person_insz: &str) -> BTreeMap<String, String> {
    definition
        .facts()
        .iter()
        .map(|fact| {
            let draw = Uuid::new_v5(
                &Uuid::NAMESPACE_OID,
                format!("{fact}/{person_insz}").as_bytes(),
            );
            let percent = u32::from(draw.as_bytes()[0]) * 100 / 256;
            (fact.clone(), (percent < share(fact)).to_string())
        })
        .collect()
}

/// The INSZ of the person a life event is about.
pub fn person_of(event: &v1::LifeEvent) -> &str {
    use v1::life_event::Payload;
    let person = match event.payload.as_ref() {
        Some(Payload::Birth(b)) => b.child.as_ref(),
        Some(Payload::Death(d)) => d.deceased.as_ref(),
        Some(Payload::ChangeOfAddress(m)) => m.person.as_ref(),
        Some(Payload::DrivingExamPassed(x)) => x.candidate.as_ref(),
        None => None,
    };
    person.map_or("", |p| p.insz.as_str())
}
