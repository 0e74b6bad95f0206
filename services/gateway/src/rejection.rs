//! Why the gateway refuses an input: typed, precise, and the same for both doors.
//!
//! A [`Rejection`] holds one or more [`Violation`]s, each naming the field (a path such as
//! `birth.child.insz`, or a transport attribute such as `ce-id`), the rule that failed as a
//! [`Reason`] with a stable machine-readable code (`INSZ_CHECK_DIGITS`), and a description a
//! person can act on. The gRPC door turns it into `google.rpc.BadRequest` field violations;
//! the NATS door puts it in the headers of the rejected stream. [`Limits`] holds the
//! configurable bounds the rules use.

use std::fmt;

/// The rule an input broke. Each variant has a stable [`code`](Reason::code), which clients
/// may match on: never rename a code, only add new ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Reason {
    /// The body is larger than [`Limits::max_payload_bytes`]; refused before decoding.
    PayloadTooLarge,
    /// The body (or the CloudEvent's `data`) is not valid JSON for the expected message,
    /// including an unknown field.
    MalformedJson,
    /// The body (or `data_base64`) is not a valid protobuf encoding of the expected message.
    MalformedProtobuf,
    /// A content type the gateway cannot decode.
    UnsupportedContentType,
    /// A required CloudEvents attribute (or the content type) is absent or empty.
    MissingAttribute,
    /// An attribute is present but unusable: a `time` that is not RFC 3339, an attribute
    /// given twice with different values, a non-string attribute, bad base64.
    InvalidAttribute,
    /// `specversion` is not `1.0`.
    UnsupportedSpecversion,
    /// The `type` (or the NATS subject) names no known life event.
    UnknownType,
    /// The `type`, the NATS subject and the payload do not agree on the life event.
    TypePayloadMismatch,
    /// The CloudEvents `subject` is set but is not the INSZ of the person the event is about.
    SubjectMismatch,
    /// A required payload field is absent or empty.
    MissingField,
    /// A payload field holds a value outside its allowed set (an unknown enum number, a time
    /// that is not HH:MM, a country code that is not two letters).
    InvalidField,
    /// An INSZ without exactly 11 digits.
    InszLength,
    /// An INSZ with a character other than a digit (separators are not accepted either: the
    /// INSZ is exchanged and stored as 11 bare digits).
    InszNotDigits,
    /// An INSZ whose check digits fit neither the pre-2000 nor the 2000+ rule.
    InszCheckDigits,
    /// An INSZ whose birth-date part is impossible (month, bis month or day).
    InszInvalidDate,
    /// An INSZ whose serial number is 000 or 999.
    InszSerial,
    /// The birth date encoded in the INSZ (bis numbers included) differs from the payload's
    /// `date_of_birth`.
    InszBirthDateMismatch,
    /// A date that is not a real `YYYY-MM-DD` date.
    MalformedDate,
    /// A date or time after now plus [`Limits::future_tolerance`].
    DateInFuture,
    /// The date of death is before the date of birth.
    DeathBeforeBirth,
    /// The driving exam took place before the candidate's 17th birthday.
    ExamBeforeMinimumAge,
    /// A NIS code that is not 5 digits.
    MunicipalityMalformed,
    /// A 5-digit NIS code that is no Belgian municipality.
    MunicipalityUnknown,
    /// A NIS code merged away on 2025-01-01; the description names the new municipality.
    MunicipalityMerged,
    /// The same `(source, id)` was stored before with different content; the first stands.
    ConflictingDuplicate,
    /// The person has died: they cannot die again or move afterwards.
    PersonDeceased,
}

impl Reason {
    /// Every reason, in declaration order.
    pub const ALL: [Reason; 27] = [
        Reason::PayloadTooLarge,
        Reason::MalformedJson,
        Reason::MalformedProtobuf,
        Reason::UnsupportedContentType,
        Reason::MissingAttribute,
        Reason::InvalidAttribute,
        Reason::UnsupportedSpecversion,
        Reason::UnknownType,
        Reason::TypePayloadMismatch,
        Reason::SubjectMismatch,
        Reason::MissingField,
        Reason::InvalidField,
        Reason::InszLength,
        Reason::InszNotDigits,
        Reason::InszCheckDigits,
        Reason::InszInvalidDate,
        Reason::InszSerial,
        Reason::InszBirthDateMismatch,
        Reason::MalformedDate,
        Reason::DateInFuture,
        Reason::DeathBeforeBirth,
        Reason::ExamBeforeMinimumAge,
        Reason::MunicipalityMalformed,
        Reason::MunicipalityUnknown,
        Reason::MunicipalityMerged,
        Reason::ConflictingDuplicate,
        Reason::PersonDeceased,
    ];

    /// The stable machine-readable code, e.g. `INSZ_CHECK_DIGITS`.
    pub fn code(self) -> &'static str {
        match self {
            Reason::PayloadTooLarge => "PAYLOAD_TOO_LARGE",
            Reason::MalformedJson => "MALFORMED_JSON",
            Reason::MalformedProtobuf => "MALFORMED_PROTOBUF",
            Reason::UnsupportedContentType => "UNSUPPORTED_CONTENT_TYPE",
            Reason::MissingAttribute => "MISSING_ATTRIBUTE",
            Reason::InvalidAttribute => "INVALID_ATTRIBUTE",
            Reason::UnsupportedSpecversion => "UNSUPPORTED_SPECVERSION",
            Reason::UnknownType => "UNKNOWN_TYPE",
            Reason::TypePayloadMismatch => "TYPE_PAYLOAD_MISMATCH",
            Reason::SubjectMismatch => "SUBJECT_MISMATCH",
            Reason::MissingField => "MISSING_FIELD",
            Reason::InvalidField => "INVALID_FIELD",
            Reason::InszLength => "INSZ_LENGTH",
            Reason::InszNotDigits => "INSZ_NOT_DIGITS",
            Reason::InszCheckDigits => "INSZ_CHECK_DIGITS",
            Reason::InszInvalidDate => "INSZ_INVALID_DATE",
            Reason::InszSerial => "INSZ_SERIAL",
            Reason::InszBirthDateMismatch => "INSZ_BIRTH_DATE_MISMATCH",
            Reason::MalformedDate => "MALFORMED_DATE",
            Reason::DateInFuture => "DATE_IN_FUTURE",
            Reason::DeathBeforeBirth => "DEATH_BEFORE_BIRTH",
            Reason::ExamBeforeMinimumAge => "EXAM_BEFORE_MINIMUM_AGE",
            Reason::MunicipalityMalformed => "MUNICIPALITY_MALFORMED",
            Reason::MunicipalityUnknown => "MUNICIPALITY_UNKNOWN",
            Reason::MunicipalityMerged => "MUNICIPALITY_MERGED",
            Reason::ConflictingDuplicate => "CONFLICTING_DUPLICATE",
            Reason::PersonDeceased => "PERSON_DECEASED",
        }
    }

    /// The reason with this code, e.g. read back from a rejected stream's headers.
    pub fn from_code(code: &str) -> Option<Reason> {
        Reason::ALL.into_iter().find(|r| r.code() == code)
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

/// One broken rule, on one field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// Path of the field, e.g. `birth.child.insz`, `ce-id`, `change_of_address.household_member_insz[2]`.
    pub field: String,
    pub reason: Reason,
    /// What is wrong, naming the rule and (where it is not an identifier) the offending value.
    pub description: String,
}

impl Violation {
    pub fn new(field: impl Into<String>, reason: Reason, description: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            reason,
            description: description.into(),
        }
    }
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} at {}: {}",
            self.reason.code(),
            self.field,
            self.description
        )
    }
}

/// Why an input was refused: at least one violation, the most fundamental first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    /// Non-empty when built through this type's constructors.
    pub violations: Vec<Violation>,
}

impl Rejection {
    /// A rejection with one violation.
    pub fn single(
        field: impl Into<String>,
        reason: Reason,
        description: impl Into<String>,
    ) -> Self {
        Self {
            violations: vec![Violation::new(field, reason, description)],
        }
    }

    /// A rejection with these violations, or `None` when there are none (the input passed).
    pub fn from_violations(violations: Vec<Violation>) -> Option<Self> {
        if violations.is_empty() {
            None
        } else {
            Some(Self { violations })
        }
    }

    /// The reason of the first violation: the one to report when there is room for one.
    ///
    /// A hand-built rejection without violations says [`Reason::MissingField`]: something was
    /// refused without saying what, and this type's constructors never build one.
    pub fn reason(&self) -> Reason {
        self.first().map_or(Reason::MissingField, |v| v.reason)
    }

    /// The first violation.
    pub fn first(&self) -> Option<&Violation> {
        self.violations.first()
    }

    /// The field of the first violation (`""` if there is none).
    pub fn field(&self) -> &str {
        self.first().map_or("", |v| v.field.as_str())
    }
}

impl From<Violation> for Rejection {
    fn from(v: Violation) -> Self {
        Self {
            violations: vec![v],
        }
    }
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.violations.is_empty() {
            return f.write_str("rejected");
        }
        for (i, v) in self.violations.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{v}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Rejection {}

/// The configurable bounds of validation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// The largest body (NATS) or `data` (gRPC raw) accepted, in bytes; checked before any
    /// decoding. Default 64 KiB.
    pub max_payload_bytes: usize,
    /// How far in the future a date or time may be, for clocks that are a little off.
    /// Default 5 minutes.
    pub future_tolerance: chrono::Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_payload_bytes: 64 * 1024,
            future_tolerance: chrono::Duration::minutes(5),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn codes_are_unique_screaming_snake_and_round_trip() {
        let codes: HashSet<_> = Reason::ALL.iter().map(|r| r.code()).collect();
        assert_eq!(codes.len(), Reason::ALL.len());
        for r in Reason::ALL {
            assert!(
                r.code().chars().all(|c| c.is_ascii_uppercase() || c == '_'),
                "{r:?}"
            );
            assert_eq!(Reason::from_code(r.code()), Some(r));
        }
        assert_eq!(Reason::from_code("NOPE"), None);
    }

    #[test]
    fn rejection_reports_the_first_and_displays_all() {
        let r = Rejection {
            violations: vec![
                Violation::new("ce-id", Reason::MissingAttribute, "ce-id is required"),
                Violation::new(
                    "ce-source",
                    Reason::MissingAttribute,
                    "ce-source is required",
                ),
            ],
        };
        assert_eq!(r.reason(), Reason::MissingAttribute);
        assert_eq!(r.field(), "ce-id");
        assert_eq!(
            r.to_string(),
            "MISSING_ATTRIBUTE at ce-id: ce-id is required; MISSING_ATTRIBUTE at ce-source: \
             ce-source is required"
        );
        assert_eq!(Rejection::from_violations(vec![]), None);
        let single = Rejection::single("data", Reason::PayloadTooLarge, "too big");
        assert_eq!(single.violations.len(), 1);
    }

    #[test]
    fn default_limits() {
        let l = Limits::default();
        assert_eq!(l.max_payload_bytes, 65_536);
        assert_eq!(l.future_tolerance, chrono::Duration::minutes(5));
    }
}
