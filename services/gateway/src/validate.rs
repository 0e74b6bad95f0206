//! The rules a decoded life event must meet before it is stored, shared by both doors.
//!
//! [`validate`] checks the CloudEvents envelope (required attributes, `specversion` 1.0, a
//! known `type` that matches the payload, a `time` not in the future, a `subject` that is the
//! person's INSZ), then the payload: every person's INSZ (all the reference crate's rules,
//! and its encoded birth date against `date_of_birth`), dates (well-formed, not in the
//! future, death not before birth, a driving exam not before the 17th birthday),
//! municipality NIS codes (current; a merged-away code is answered with its successor) and
//! the fields each life event requires. It collects every violation, in the order of the
//! fields in the .proto files, so a registry can fix everything in one go.
//!
//! Pure: "now" is a parameter.

use crate::decode::{payload_field, quote, unknown_type};
use crate::rejection::{Limits, Reason, Rejection, Violation};
use chrono::{DateTime, Datelike, Months, NaiveDate, NaiveTime, Utc};
use levensloop_proto::v1;
use levensloop_reference::{Insz, InszError, MunicipalityError, municipality};
use prost::Message;
use v1::life_event::Payload;

/// The minimum age for a driving exam, in years.
pub const MINIMUM_EXAM_AGE_YEARS: u32 = 17;

/// Checks a decoded life event; every violation found, or nothing.
pub fn validate(
    event: &v1::LifeEvent,
    now: DateTime<Utc>,
    limits: &Limits,
) -> Result<(), Rejection> {
    let mut c = Checker {
        horizon: now
            .checked_add_signed(limits.future_tolerance)
            .unwrap_or(DateTime::<Utc>::MAX_UTC),
        tolerance: limits.future_tolerance,
        violations: Vec::new(),
    };
    // A gRPC caller can hand a decoded event that never passed the decoder's size check.
    let size = event.encoded_len();
    if size > limits.max_payload_bytes {
        return Err(crate::decode::too_large(size, limits));
    }
    c.envelope(event);
    match &event.payload {
        None => {
            let field = v1::LifeEventType::from_cloudevents_type(&event.r#type)
                .and_then(payload_field)
                .unwrap_or("payload");
            c.push(field, Reason::MissingField, "the event carries no payload");
        }
        Some(Payload::Birth(b)) => c.birth(b),
        Some(Payload::Death(d)) => c.death(d),
        Some(Payload::ChangeOfAddress(m)) => c.change_of_address(m),
        Some(Payload::DrivingExamPassed(x)) => c.driving_exam(x),
    }
    match Rejection::from_violations(c.violations) {
        Some(rejection) => Err(rejection),
        None => Ok(()),
    }
}

/// The person the event is about and the path to them.
fn primary_person(event: &v1::LifeEvent) -> Option<(&v1::Person, &'static str)> {
    match event.payload.as_ref()? {
        Payload::Birth(b) => b.child.as_ref().map(|p| (p, "birth.child")),
        Payload::Death(d) => d.deceased.as_ref().map(|p| (p, "death.deceased")),
        Payload::ChangeOfAddress(m) => m.person.as_ref().map(|p| (p, "change_of_address.person")),
        Payload::DrivingExamPassed(x) => x
            .candidate
            .as_ref()
            .map(|p| (p, "driving_exam_passed.candidate")),
    }
}

/// What is known of a person's birth: the full date, or at least the year.
#[derive(Debug, Clone, Copy, Default)]
struct Birth {
    date: Option<NaiveDate>,
    year: Option<i32>,
}

impl Birth {
    /// The earliest day the person can have been born.
    fn earliest(self) -> Option<NaiveDate> {
        self.date
            .or_else(|| self.year.and_then(|y| NaiveDate::from_ymd_opt(y, 1, 1)))
    }
}

/// Whether a field must be given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Need {
    Required,
    Optional,
}

struct Checker {
    /// Now plus the tolerance: anything after this is in the future.
    horizon: DateTime<Utc>,
    tolerance: chrono::Duration,
    violations: Vec<Violation>,
}

impl Checker {
    fn push(&mut self, field: impl Into<String>, reason: Reason, description: impl Into<String>) {
        self.violations
            .push(Violation::new(field, reason, description));
    }

    fn missing(&mut self, field: &str) {
        self.push(field, Reason::MissingField, format!("{field} is required"));
    }

    // ---- envelope ----

    fn envelope(&mut self, event: &v1::LifeEvent) {
        if event.specversion.is_empty() {
            self.missing_attribute("specversion");
        } else if event.specversion != crate::decode::SPECVERSION {
            self.push(
                "specversion",
                Reason::UnsupportedSpecversion,
                format!(
                    "specversion {} is not supported; only CloudEvents 1.0 is",
                    quote(&event.specversion)
                ),
            );
        }
        if event.id.trim().is_empty() {
            self.missing_attribute("id");
        }
        if event.source.trim().is_empty() {
            self.missing_attribute("source");
        }
        if event.r#type.is_empty() {
            self.missing_attribute("type");
        } else {
            match v1::LifeEventType::from_cloudevents_type(&event.r#type) {
                None => self.violations.push(unknown_type("type", &event.r#type)),
                Some(t) => {
                    let carried = event.payload_type();
                    if carried != v1::LifeEventType::Unspecified && carried != t {
                        self.push(
                            "type",
                            Reason::TypePayloadMismatch,
                            format!(
                                "type {} does not match the payload, which is a {}",
                                event.r#type,
                                payload_field(carried).unwrap_or("other payload")
                            ),
                        );
                    }
                }
            }
        }
        if let Some(ts) = &event.time {
            let time = u32::try_from(ts.nanos)
                .ok()
                .filter(|n| *n < 1_000_000_000)
                .and_then(|n| DateTime::from_timestamp(ts.seconds, n));
            match time {
                None => self.push(
                    "time",
                    Reason::InvalidAttribute,
                    format!(
                        "time (seconds {}, nanos {}) is not a valid timestamp",
                        ts.seconds, ts.nanos
                    ),
                ),
                Some(t) if t > self.horizon => self.push(
                    "time",
                    Reason::DateInFuture,
                    format!(
                        "time {} is in the future (more than {} after now)",
                        t.to_rfc3339(),
                        tolerance_text(self.tolerance)
                    ),
                ),
                Some(_) => {}
            }
        }
        if !event.subject.is_empty()
            && let Some((person, path)) = primary_person(event)
            && !person.insz.is_empty()
            && !same_insz(&event.subject, &person.insz)
        {
            // Neither number goes in the description: both identify people.
            self.push(
                "subject",
                Reason::SubjectMismatch,
                format!("subject is set but is not the INSZ of {path} (leave it empty or set it to that INSZ)"),
            );
        }
    }

    fn missing_attribute(&mut self, name: &str) {
        self.push(
            name,
            Reason::MissingAttribute,
            format!("the CloudEvents attribute {name} is required"),
        );
    }

    // ---- payloads ----

    fn birth(&mut self, b: &v1::Birth) {
        if let Some(act) = &b.act {
            self.act("birth.act", act);
        }
        match &b.child {
            None => self.missing("birth.child"),
            Some(child) => {
                self.person("birth.child", child, Need::Required, Need::Required);
            }
        }
        self.nis(
            "birth.place_of_birth_nis_code",
            &b.place_of_birth_nis_code,
            Need::Required,
        );
        if !b.time_of_birth.is_empty()
            && NaiveTime::parse_from_str(&b.time_of_birth, "%H:%M").is_err()
        {
            self.push(
                "birth.time_of_birth",
                Reason::InvalidField,
                format!(
                    "time_of_birth {} is not a time of day HH:MM",
                    quote(&b.time_of_birth)
                ),
            );
        }
        if let Some(mother) = &b.mother {
            self.person("birth.mother", mother, Need::Optional, Need::Optional);
        }
        if let Some(parent) = &b.other_parent {
            self.person("birth.other_parent", parent, Need::Optional, Need::Optional);
        }
        if let Some(address) = &b.registered_address {
            self.address("birth.registered_address", address, Need::Optional);
        }
    }

    fn death(&mut self, d: &v1::Death) {
        if let Some(act) = &d.act {
            self.act("death.act", act);
        }
        let birth = match &d.deceased {
            None => {
                self.missing("death.deceased");
                Birth::default()
            }
            Some(p) => self.person("death.deceased", p, Need::Required, Need::Optional),
        };
        if let Some(died) = self.date("death.date_of_death", &d.date_of_death, Need::Required)
            && let Some(born) = birth.earliest()
            && died < born
        {
            self.push(
                "death.date_of_death",
                Reason::DeathBeforeBirth,
                format!(
                    "date_of_death {died} is before the date of birth {}",
                    birth_text(birth)
                ),
            );
        }
        self.nis(
            "death.place_of_death_nis_code",
            &d.place_of_death_nis_code,
            Need::Optional,
        );
        if let Some(address) = &d.registered_address {
            self.address("death.registered_address", address, Need::Optional);
        }
    }

    fn change_of_address(&mut self, m: &v1::ChangeOfAddress) {
        match &m.person {
            None => self.missing("change_of_address.person"),
            Some(p) => {
                self.person(
                    "change_of_address.person",
                    p,
                    Need::Required,
                    Need::Optional,
                );
            }
        }
        if let Some(previous) = &m.previous_address {
            self.address(
                "change_of_address.previous_address",
                previous,
                Need::Optional,
            );
        }
        match &m.new_address {
            None => self.missing("change_of_address.new_address"),
            Some(new) => self.address("change_of_address.new_address", new, Need::Required),
        }
        self.date(
            "change_of_address.declaration_date",
            &m.declaration_date,
            Need::Optional,
        );
        self.date("change_of_address.move_date", &m.move_date, Need::Required);
        self.nis(
            "change_of_address.declaring_municipality_nis_code",
            &m.declaring_municipality_nis_code,
            Need::Optional,
        );
        for (i, insz) in m.household_member_insz.iter().enumerate() {
            let field = format!("change_of_address.household_member_insz[{i}]");
            if insz.is_empty() {
                self.missing(&field);
            } else {
                self.insz(&field, insz);
            }
        }
        if v1::ChangeOfAddressReason::try_from(m.reason).is_err() {
            self.unknown_enum("change_of_address.reason", m.reason);
        }
    }

    fn driving_exam(&mut self, x: &v1::DrivingExamPassed) {
        let birth = match &x.candidate {
            None => {
                self.missing("driving_exam_passed.candidate");
                Birth::default()
            }
            Some(p) => self.person(
                "driving_exam_passed.candidate",
                p,
                Need::Required,
                Need::Optional,
            ),
        };
        if let Some(centre) = &x.exam_centre {
            self.nis(
                "driving_exam_passed.exam_centre.municipality_nis_code",
                &centre.municipality_nis_code,
                Need::Optional,
            );
        }
        if let Some(exam) = self.date(
            "driving_exam_passed.exam_date",
            &x.exam_date,
            Need::Required,
        ) {
            // With only the birth year known, the earliest possible birthday is 1 January:
            // only an exam certainly too early is refused.
            let birthday = birth
                .earliest()
                .and_then(|b| b.checked_add_months(Months::new(12 * MINIMUM_EXAM_AGE_YEARS)));
            if let Some(birthday) = birthday
                && exam < birthday
            {
                self.push(
                    "driving_exam_passed.exam_date",
                    Reason::ExamBeforeMinimumAge,
                    format!(
                        "exam_date {exam} is before the candidate's {MINIMUM_EXAM_AGE_YEARS}th \
                         birthday ({birthday}; born {})",
                        birth_text(birth)
                    ),
                );
            }
        }
        match v1::LicenceCategory::try_from(x.licence_category) {
            Ok(v1::LicenceCategory::Unspecified) => self.push(
                "driving_exam_passed.licence_category",
                Reason::MissingField,
                "driving_exam_passed.licence_category is required (e.g. LICENCE_CATEGORY_B)",
            ),
            Ok(_) => {}
            Err(_) => {
                self.unknown_enum("driving_exam_passed.licence_category", x.licence_category);
            }
        }
        if v1::ExamType::try_from(x.exam_type).is_err() {
            self.unknown_enum("driving_exam_passed.exam_type", x.exam_type);
        }
        self.nis(
            "driving_exam_passed.residence_municipality_nis_code",
            &x.residence_municipality_nis_code,
            Need::Optional,
        );
    }

    // ---- building blocks ----

    fn unknown_enum(&mut self, field: &str, value: i32) {
        self.push(
            field,
            Reason::InvalidField,
            format!("{field} has the unknown value {value}"),
        );
    }

    fn act(&mut self, path: &str, act: &v1::CivilStatusAct) {
        self.nis(
            &format!("{path}.registering_municipality_nis_code"),
            &act.registering_municipality_nis_code,
            Need::Optional,
        );
        self.date(
            &format!("{path}.registration_date"),
            &act.registration_date,
            Need::Optional,
        );
    }

    /// Checks a person; returns what is known of their birth (from the payload, else from
    /// the INSZ) for the rules that depend on it.
    fn person(&mut self, path: &str, p: &v1::Person, insz: Need, dob: Need) -> Birth {
        let insz_field = format!("{path}.insz");
        let number = if p.insz.is_empty() {
            if insz == Need::Required {
                self.missing(&insz_field);
            }
            None
        } else {
            self.insz(&insz_field, &p.insz)
        };
        let dob_field = format!("{path}.date_of_birth");
        let date_of_birth = self.date(&dob_field, &p.date_of_birth, dob);
        if v1::Gender::try_from(p.gender).is_err() {
            self.unknown_enum(&format!("{path}.gender"), p.gender);
        }
        let encoded = number.map(encoded_birth);
        match (encoded, date_of_birth) {
            (Some(enc), Some(date)) => {
                if !enc.matches(date) {
                    self.push(
                        insz_field,
                        Reason::InszBirthDateMismatch,
                        format!(
                            "the INSZ{} encodes the birth date {}, but date_of_birth is {date}",
                            if enc.bis { " (a bis number)" } else { "" },
                            enc.text()
                        ),
                    );
                }
                Birth {
                    date: Some(date),
                    year: Some(date.year()),
                }
            }
            (Some(enc), None) => {
                // No usable date of birth: the INSZ is all there is, and its century comes
                // from the check digits alone, so a birth "in the future" means a typo.
                let birth = Birth {
                    date: enc.date(),
                    year: Some(enc.year),
                };
                if p.date_of_birth.is_empty()
                    && let Some(earliest) = birth.earliest()
                    && self.is_future(earliest)
                {
                    self.push(
                        insz_field,
                        Reason::DateInFuture,
                        format!(
                            "the INSZ encodes the birth date {}, which is in the future",
                            enc.text()
                        ),
                    );
                    // Nothing else can be judged against a birth that has not happened.
                    return Birth::default();
                }
                birth
            }
            (None, Some(date)) => Birth {
                date: Some(date),
                year: Some(date.year()),
            },
            (None, None) => Birth::default(),
        }
    }

    /// Checks an INSZ: 11 bare digits, then every rule of the reference crate.
    fn insz(&mut self, field: &str, value: &str) -> Option<Insz> {
        // Separators are refused, although the reference parser accepts them: the INSZ keys
        // the person's stream, so one person must have exactly one spelling.
        if !value.bytes().all(|b| b.is_ascii_digit()) {
            self.push(
                field,
                Reason::InszNotDigits,
                "an INSZ is written as 11 digits, without separators or other characters",
            );
            return None;
        }
        match Insz::parse(value) {
            Ok(insz) => Some(insz),
            Err(e) => {
                let reason = match e {
                    InszError::WrongLength { .. } => Reason::InszLength,
                    InszError::NotDigits => Reason::InszNotDigits,
                    InszError::CheckDigits { .. } => Reason::InszCheckDigits,
                    InszError::InvalidDate { .. } | InszError::YearOutOfRange { .. } => {
                        Reason::InszInvalidDate
                    }
                    InszError::SerialOutOfRange { .. } => Reason::InszSerial,
                };
                let description = match e {
                    // Not the crate's wording, which names the digits that would make the
                    // number valid: after a typo that invites "fixing" it into someone
                    // else's number.
                    InszError::CheckDigits { found, .. } => format!(
                        "invalid INSZ: check digits {found:02} fit neither the rule for a birth \
                         before 2000 nor the rule for a birth in 2000 or later; the number is \
                         probably mistyped"
                    ),
                    other => format!("invalid INSZ: {other}"),
                };
                self.push(field, reason, description);
                None
            }
        }
    }

    /// Checks a date field: `YYYY-MM-DD`, a real date, not in the future.
    fn date(&mut self, field: &str, value: &str, need: Need) -> Option<NaiveDate> {
        if value.is_empty() {
            if need == Need::Required {
                self.missing(field);
            }
            return None;
        }
        let Some(date) = parse_date(value) else {
            let why = if has_date_shape(value) {
                "is not a date in the calendar"
            } else {
                "is not a date in the form YYYY-MM-DD"
            };
            self.push(
                field,
                Reason::MalformedDate,
                format!("{} {why}", quote(value)),
            );
            return None;
        };
        if self.is_future(date) {
            self.push(
                field,
                Reason::DateInFuture,
                format!(
                    "{date} is in the future (it starts more than {} after now, Belgian time)",
                    tolerance_text(self.tolerance)
                ),
            );
        }
        Some(date)
    }

    /// A date is in the future when it starts, in Belgium, after now plus the tolerance.
    fn is_future(&self, date: NaiveDate) -> bool {
        belgian_start_of_day(date).is_some_and(|start| start > self.horizon)
    }

    /// Checks a NIS code: 5 digits and a current municipality.
    fn nis(&mut self, field: &str, code: &str, need: Need) {
        if code.is_empty() {
            if need == Need::Required {
                self.missing(field);
            }
            return;
        }
        if let Err(e) = municipality::lookup(code) {
            let reason = match e {
                MunicipalityError::Malformed { .. } => Reason::MunicipalityMalformed,
                MunicipalityError::Unknown { .. } => Reason::MunicipalityUnknown,
                MunicipalityError::MergedAway { .. } => Reason::MunicipalityMerged,
            };
            self.push(field, reason, e.to_string());
        }
    }

    /// Checks an address; `municipality` says whether the municipality must be given (the
    /// NIS code for a Belgian address, the name for one abroad).
    fn address(&mut self, path: &str, a: &v1::Address, municipality: Need) {
        let country = a.country_code.trim();
        let alpha_2 = country.len() == 2 && country.bytes().all(|b| b.is_ascii_alphabetic());
        if !country.is_empty() && !alpha_2 {
            self.push(
                format!("{path}.country_code"),
                Reason::InvalidField,
                format!(
                    "country_code {} is not an ISO 3166-1 alpha-2 code",
                    quote(&a.country_code)
                ),
            );
            return;
        }
        if country.is_empty() || country.eq_ignore_ascii_case("BE") {
            self.nis(
                &format!("{path}.municipality_nis_code"),
                &a.municipality_nis_code,
                municipality,
            );
        } else if municipality == Need::Required && a.municipality_name.trim().is_empty() {
            self.missing(&format!("{path}.municipality_name"));
        }
    }
}

/// The birth date as an INSZ encodes it; month or day may be unknown (`None`).
#[derive(Debug, Clone, Copy)]
struct Encoded {
    year: i32,
    month: Option<u32>,
    day: Option<u32>,
    bis: bool,
}

impl Encoded {
    fn date(self) -> Option<NaiveDate> {
        NaiveDate::from_ymd_opt(self.year, self.month?, self.day?)
    }

    /// Whether a full date agrees with every part the INSZ knows.
    fn matches(self, date: NaiveDate) -> bool {
        date.year() == self.year
            && self.month.is_none_or(|m| m == date.month())
            && self.day.is_none_or(|d| d == date.day())
    }

    fn text(self) -> String {
        let part = |v: Option<u32>| v.map_or("??".to_owned(), |v| format!("{v:02}"));
        format!("{:04}-{}-{}", self.year, part(self.month), part(self.day))
    }
}

fn encoded_birth(insz: Insz) -> Encoded {
    let digits = insz.to_string();
    let two = |at: usize| {
        digits
            .get(at..at + 2)
            .and_then(|s| s.parse::<u32>().ok())
            .unwrap_or(0)
    };
    // A bis number adds 20 or 40 to the month; real months are 0–12, so the remainder of 20
    // is the month either way.
    let month = two(2) % 20;
    let day = two(4);
    Encoded {
        year: insz.birth_year(),
        month: (month != 0).then_some(month),
        day: (day != 0).then_some(day),
        bis: insz.is_bis(),
    }
}

fn same_insz(subject: &str, insz: &str) -> bool {
    subject == insz || matches!((Insz::parse(subject), Insz::parse(insz)), (Ok(a), Ok(b)) if a == b)
}

fn birth_text(birth: Birth) -> String {
    match (birth.date, birth.year) {
        (Some(d), _) => d.to_string(),
        (None, Some(y)) => format!("in {y}"),
        (None, None) => "unknown".to_owned(),
    }
}

fn tolerance_text(d: chrono::Duration) -> String {
    let secs = d.num_seconds();
    if secs % 60 == 0 {
        format!("{} min", secs / 60)
    } else {
        format!("{secs} s")
    }
}

/// Parses exactly `YYYY-MM-DD` (chrono alone would accept `2026-1-5` or `+2026-01-05`).
pub fn parse_date(value: &str) -> Option<NaiveDate> {
    if !has_date_shape(value) {
        return None;
    }
    let num = |r: std::ops::Range<usize>| value.get(r).and_then(|s| s.parse::<u32>().ok());
    let year = i32::try_from(num(0..4)?).ok()?;
    NaiveDate::from_ymd_opt(year, num(5..7)?, num(8..10)?)
}

/// Whether a string looks like `YYYY-MM-DD` (ten characters, digits and two dashes).
fn has_date_shape(value: &str) -> bool {
    let b = value.as_bytes();
    b.len() == 10
        && b.iter().enumerate().all(|(i, c)| {
            if i == 4 || i == 7 {
                *c == b'-'
            } else {
                c.is_ascii_digit()
            }
        })
}

/// The last Sunday of a month (for the EU summer-time rule).
fn last_sunday(year: i32, month: u32) -> Option<NaiveDate> {
    let first_of_next = if month == 12 {
        NaiveDate::from_ymd_opt(year + 1, 1, 1)?
    } else {
        NaiveDate::from_ymd_opt(year, month + 1, 1)?
    };
    let last = first_of_next.pred_opt()?;
    let back = last.weekday().num_days_from_sunday();
    last.checked_sub_days(chrono::Days::new(u64::from(back)))
}

/// Midnight at the start of a date in Belgium (CET, CEST from the last Sunday of March to
/// the last Sunday of October), as a UTC instant. Dates in life events are Belgian dates: a
/// child born at 00:30 in Gent has today's date while it is still yesterday in UTC.
fn belgian_start_of_day(date: NaiveDate) -> Option<DateTime<Utc>> {
    // The clocks change at 02:00 or 03:00 local time, so midnight of the change day itself
    // still has the old offset.
    let summer_start = last_sunday(date.year(), 3)?;
    let summer_end = last_sunday(date.year(), 10)?;
    let offset_hours = if date > summer_start && date <= summer_end {
        2
    } else {
        1
    };
    date.and_time(NaiveTime::MIN)
        .checked_sub_signed(chrono::Duration::hours(offset_hours))
        .map(|t| t.and_utc())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::corpus::{self, fixed_now};
    use levensloop_reference::BisKind;

    fn check(event: &v1::LifeEvent) -> Result<(), Rejection> {
        validate(event, fixed_now(), &Limits::default())
    }

    fn date(y: i32, m: u32, d: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(y, m, d).unwrap()
    }

    fn birth_payload(event: &mut v1::LifeEvent) -> &mut v1::Birth {
        match event.payload.as_mut() {
            Some(Payload::Birth(b)) => b,
            _ => panic!("not a birth"),
        }
    }

    #[test]
    fn valid_events_pass() {
        for event in corpus::valid_events() {
            check(&event).unwrap_or_else(|r| panic!("{}: {r}", event.id));
        }
    }

    #[test]
    fn collects_every_violation_in_field_order() {
        let mut event = corpus::valid_birth();
        event.id.clear();
        event.specversion = "0.3".into();
        event.subject = "26101512399".into();
        let b = birth_payload(&mut event);
        b.place_of_birth_nis_code = "44012".into();
        let child = b.child.as_mut().unwrap();
        child.insz = "26101512399".into();
        child.date_of_birth = "2026-13-01".into();
        b.mother.as_mut().unwrap().insz = "1234".into();
        b.registered_address.as_mut().unwrap().municipality_nis_code = "99999".into();
        let r = check(&event).unwrap_err();
        let got: Vec<_> = r
            .violations
            .iter()
            .map(|v| (v.field.as_str(), v.reason))
            .collect();
        assert_eq!(
            got,
            [
                ("specversion", Reason::UnsupportedSpecversion),
                ("id", Reason::MissingAttribute),
                ("birth.child.insz", Reason::InszCheckDigits),
                ("birth.child.date_of_birth", Reason::MalformedDate),
                ("birth.place_of_birth_nis_code", Reason::MunicipalityMerged),
                ("birth.mother.insz", Reason::InszLength),
                (
                    "birth.registered_address.municipality_nis_code",
                    Reason::MunicipalityUnknown
                ),
            ]
        );
        let merged = &r.violations[4].description;
        assert!(merged.contains("44086 Nazareth-De Pinte"), "{merged}");
    }

    #[test]
    fn descriptions_do_not_echo_the_insz() {
        let mut event = corpus::valid_birth();
        let child = birth_payload(&mut event).child.as_mut().unwrap();
        child.date_of_birth = "2026-10-16".into();
        let insz = child.insz.clone();
        event.subject = "85073003328".into();
        let r = check(&event).unwrap_err();
        assert_eq!(r.violations.len(), 2, "{r}");
        assert!(!r.to_string().contains(&insz), "{r}");
        assert!(!r.to_string().contains("85073003328"), "{r}");
    }

    #[test]
    fn bis_numbers_are_checked_against_the_date_of_birth() {
        let born = date(1990, 4, 17);
        for kind in [BisKind::SexUnknown, BisKind::SexKnown] {
            let bis = Insz::bis(born, kind, 57).unwrap().to_string();
            let mut event = corpus::valid_change_of_address();
            let Some(Payload::ChangeOfAddress(m)) = event.payload.as_mut() else {
                panic!()
            };
            let person = m.person.as_mut().unwrap();
            person.insz = bis.clone();
            person.date_of_birth = "1990-04-17".into();
            event.subject = bis.clone();
            check(&event).unwrap();
            let Some(Payload::ChangeOfAddress(m)) = event.payload.as_mut() else {
                panic!()
            };
            m.person.as_mut().unwrap().date_of_birth = "1990-04-18".into();
            let r = check(&event).unwrap_err();
            assert_eq!(r.reason(), Reason::InszBirthDateMismatch);
            assert!(r.violations[0].description.contains("bis"), "{r}");
        }
        // A bis number with an unknown birth date only fixes the year.
        let bis = Insz::bis_unknown_birth_date(1990, BisKind::SexKnown, 58).unwrap();
        let enc = encoded_birth(bis);
        assert!(enc.matches(date(1990, 12, 31)));
        assert!(!enc.matches(date(1991, 1, 1)));
    }

    #[test]
    fn a_date_is_in_the_future_from_its_start_in_belgium() {
        let limits = Limits {
            future_tolerance: chrono::Duration::zero(),
            ..Limits::default()
        };
        let c = |now: &str| Checker {
            horizon: DateTime::parse_from_rfc3339(now).unwrap().to_utc() + limits.future_tolerance,
            tolerance: limits.future_tolerance,
            violations: vec![],
        };
        // Winter: 2026-11-23 starts at 2026-11-22T23:00Z.
        assert!(c("2026-11-22T22:59:59Z").is_future(date(2026, 11, 23)));
        assert!(!c("2026-11-22T23:00:00Z").is_future(date(2026, 11, 23)));
        // Summer: 2026-07-01 starts at 2026-06-30T22:00Z.
        assert!(c("2026-06-30T21:59:59Z").is_future(date(2026, 7, 1)));
        assert!(!c("2026-06-30T22:00:00Z").is_future(date(2026, 7, 1)));
        // The change days: 2026-03-29 and 2026-10-25 are the last Sundays.
        assert_eq!(last_sunday(2026, 3), Some(date(2026, 3, 29)));
        assert_eq!(last_sunday(2026, 10), Some(date(2026, 10, 25)));
        assert_eq!(
            belgian_start_of_day(date(2026, 3, 29))
                .unwrap()
                .to_rfc3339(),
            "2026-03-28T23:00:00+00:00"
        );
        assert_eq!(
            belgian_start_of_day(date(2026, 3, 30))
                .unwrap()
                .to_rfc3339(),
            "2026-03-29T22:00:00+00:00"
        );
        assert_eq!(
            belgian_start_of_day(date(2026, 10, 25))
                .unwrap()
                .to_rfc3339(),
            "2026-10-24T22:00:00+00:00"
        );
        assert_eq!(
            belgian_start_of_day(date(2026, 10, 26))
                .unwrap()
                .to_rfc3339(),
            "2026-10-25T23:00:00+00:00"
        );
    }

    #[test]
    fn dates_must_have_the_exact_shape() {
        assert_eq!(parse_date("2026-10-15"), Some(date(2026, 10, 15)));
        assert_eq!(parse_date("2024-02-29"), Some(date(2024, 2, 29)));
        for bad in [
            "",
            "2026-1-05",
            "2026-01-5",
            "+2026-01-05",
            "2026/01/05",
            "2026-02-29",
            "2026-13-01",
            "2026-00-10",
            "2026-01-00",
            "20260105",
            "2026-01-05T00:00",
            "２０２６-01-05",
        ] {
            assert_eq!(parse_date(bad), None, "{bad}");
        }
    }

    #[test]
    fn exam_age_uses_the_insz_when_the_date_of_birth_is_absent() {
        let mut event = corpus::valid_driving_exam();
        let Some(Payload::DrivingExamPassed(x)) = event.payload.as_mut() else {
            panic!()
        };
        x.candidate.as_mut().unwrap().date_of_birth.clear();
        check(&event).unwrap();
        let Some(Payload::DrivingExamPassed(x)) = event.payload.as_mut() else {
            panic!()
        };
        // Born 2008-06-14: the day before the 17th birthday is too early, the day itself is not.
        x.exam_date = "2025-06-13".into();
        let r = check(&event).unwrap_err();
        assert_eq!(
            (r.field(), r.reason()),
            (
                "driving_exam_passed.exam_date",
                Reason::ExamBeforeMinimumAge
            )
        );
        let Some(Payload::DrivingExamPassed(x)) = event.payload.as_mut() else {
            panic!()
        };
        x.exam_date = "2025-06-14".into();
        check(&event).unwrap();
    }

    #[test]
    fn an_oversized_decoded_event_is_refused() {
        let mut event = corpus::valid_birth();
        event.dataschema = "x".repeat(70_000);
        let r = check(&event).unwrap_err();
        assert_eq!(r.reason(), Reason::PayloadTooLarge);
    }

    #[test]
    fn foreign_addresses_need_a_name_not_a_nis_code() {
        let mut event = corpus::valid_change_of_address();
        let Some(Payload::ChangeOfAddress(m)) = event.payload.as_mut() else {
            panic!()
        };
        let new = m.new_address.as_mut().unwrap();
        new.country_code = "NL".into();
        new.municipality_nis_code.clear();
        new.municipality_name = "Maastricht".into();
        m.declaring_municipality_nis_code.clear();
        check(&event).unwrap();
        let Some(Payload::ChangeOfAddress(m)) = event.payload.as_mut() else {
            panic!()
        };
        m.new_address.as_mut().unwrap().municipality_name.clear();
        let r = check(&event).unwrap_err();
        assert_eq!(
            (r.field(), r.reason()),
            (
                "change_of_address.new_address.municipality_name",
                Reason::MissingField
            )
        );
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;
        use v1::life_event::Payload;

        /// A driving-exam candidate born on `born` (17 or older on the exam date).
        fn exam_of(insz: &str, born: NaiveDate) -> v1::LifeEvent {
            let mut event = corpus::valid_driving_exam();
            event.subject = insz.to_owned();
            if let Some(Payload::DrivingExamPassed(x)) = &mut event.payload
                && let Some(c) = x.candidate.as_mut()
            {
                c.insz = insz.to_owned();
                c.date_of_birth = born.format("%Y-%m-%d").to_string();
            }
            event
        }

        fn candidates() -> impl Strategy<Value = (NaiveDate, u16, u8)> {
            // Born between 1925 and the exam date minus 17 years.
            let first = date(1925, 1, 1);
            let days = (date(2009, 10, 1) - first).num_days();
            (0..=days, 1u16..=998, 0u8..3).prop_map(move |(d, serial, kind)| {
                (first + chrono::Days::new(d as u64), serial, kind)
            })
        }

        fn number(born: NaiveDate, serial: u16, kind: u8) -> String {
            match kind {
                0 => Insz::generate(born, serial),
                1 => Insz::bis(born, BisKind::SexUnknown, serial),
                _ => Insz::bis(born, BisKind::SexKnown, serial),
            }
            .unwrap()
            .to_string()
        }

        proptest! {
            #![proptest_config(ProptestConfig { cases: 512, failure_persistence: None, ..ProptestConfig::default() })]

            /// Every generated valid number (regular or bis) passes the gateway.
            #[test]
            fn generated_valid_numbers_pass((born, serial, kind) in candidates()) {
                let insz = number(born, serial, kind);
                prop_assert!(check(&exam_of(&insz, born)).is_ok(), "{} refused", insz);
            }

            /// Every single-digit change is refused. On its own, the mod-97 check misses one
            /// change (the year's last digit by 6 can flip the century rule); with the birth
            /// date in the payload, the gateway catches that one too.
            #[test]
            fn every_single_digit_change_is_refused((born, serial, kind) in candidates()) {
                let insz = number(born, serial, kind);
                for position in 0..insz.len() {
                    for replacement in b'0'..=b'9' {
                        let mut digits = insz.clone().into_bytes();
                        if digits[position] == replacement {
                            continue;
                        }
                        digits[position] = replacement;
                        let changed = String::from_utf8(digits).unwrap();
                        let refused = check(&exam_of(&changed, born));
                        prop_assert!(refused.is_err(), "{} (from {}) accepted", changed, insz);
                    }
                }
            }
        }
    }
}
