//! Conditions on event data: whether a step is planned for this saga.
//!
//! Conditions are evaluated once, when the saga starts, and the result is recorded in
//! `SagaStarted.planned_steps`: a saga never changes its plan because reference data changed
//! under it, and replaying its events never re-evaluates anything.
//!
//! In a definition a condition is a small TOML table: a test on one field, or `all`, `any`,
//! `not` over other conditions.
//!
//! ```toml
//! condition = { field = "registered_address.municipality_nis_code", in_list = "birth-premium" }
//! condition = { field = "deceased.date_of_birth", younger_than_years = 18, on = "date_of_death" }
//! condition = { all = [
//!     { field = "facts.holds_resident_parking_card", equals = true },
//!     { not = { field = "new_address.country_code", present = true } },
//! ] }
//! ```
//!
//! Fields are event paths (see [`crate::LifeEventKind::fields`]) or `facts.<name>`: a fact
//! the definition declares and the orchestrator supplies at start from reference data (does
//! the person hold a resident parking card?). An absent field fails every positive test
//! (`equals`, `one_of`, `in_list`, `starts_with`, ages) and passes the negative ones
//! (`not_equals`, `not_in_list`).

use std::collections::{BTreeMap, BTreeSet};

use chrono::{Datelike, NaiveDate};
use serde::Deserialize;

use crate::definition::DefinitionError;
use crate::fields::EventData;
use crate::time::parse_date;

/// A condition on the event data and facts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Condition {
    /// Every condition holds (true when empty).
    All(Vec<Condition>),
    /// At least one condition holds (false when empty).
    Any(Vec<Condition>),
    Not(Box<Condition>),
    /// A test on one field.
    Test {
        field: String,
        test: Test,
    },
}

/// The test applied to one field's value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Test {
    Equals(String),
    NotEquals(String),
    OneOf(Vec<String>),
    /// The value is in the named list of the definition (`[lists]`).
    InList(String),
    NotInList(String),
    /// The value starts with one of these prefixes (NIS codes of a province or region).
    StartsWith(Vec<String>),
    /// Whether the field is present at all.
    Present(bool),
    /// The field is a date of birth, and the person is younger than `years` on the date in
    /// field `on` (or on the day the saga starts).
    YoungerThan {
        years: u32,
        on: Option<String>,
    },
    /// The field is a date of birth, and the person is at least `years` old on `on`.
    AtLeast {
        years: u32,
        on: Option<String>,
    },
}

/// What a condition is evaluated against.
#[derive(Debug, Clone, Copy)]
pub struct Inputs<'a> {
    pub data: &'a EventData,
    pub facts: &'a BTreeMap<String, String>,
    pub lists: &'a BTreeMap<String, BTreeSet<String>>,
    /// The day the saga starts, for ages without `on`.
    pub today: NaiveDate,
}

impl Inputs<'_> {
    fn value(&self, field: &str) -> Option<&str> {
        let v = match field.strip_prefix("facts.") {
            Some(fact) => self.facts.get(fact),
            None => self.data.get(field),
        };
        v.map(String::as_str).filter(|v| !v.is_empty())
    }

    fn age(&self, field: &str, on: Option<&str>) -> Option<u32> {
        let born = parse_date(self.value(field)?)?;
        let on = match on {
            Some(f) => parse_date(self.value(f)?)?,
            None => self.today,
        };
        let mut years = on.year() - born.year();
        if (on.month(), on.day()) < (born.month(), born.day()) {
            years -= 1;
        }
        u32::try_from(years).ok()
    }
}

impl Condition {
    /// Whether the condition holds.
    pub fn eval(&self, inputs: &Inputs<'_>) -> bool {
        match self {
            Self::All(cs) => cs.iter().all(|c| c.eval(inputs)),
            Self::Any(cs) => cs.iter().any(|c| c.eval(inputs)),
            Self::Not(c) => !c.eval(inputs),
            Self::Test { field, test } => {
                let value = inputs.value(field);
                let in_list = |list: &str| {
                    value.is_some_and(|v| inputs.lists.get(list).is_some_and(|l| l.contains(v)))
                };
                match test {
                    Test::Equals(x) => value == Some(x.as_str()),
                    Test::NotEquals(x) => value != Some(x.as_str()),
                    Test::OneOf(xs) => value.is_some_and(|v| xs.iter().any(|x| x == v)),
                    Test::InList(list) => in_list(list),
                    Test::NotInList(list) => !in_list(list),
                    Test::StartsWith(ps) => {
                        value.is_some_and(|v| ps.iter().any(|p| v.starts_with(p.as_str())))
                    }
                    Test::Present(p) => value.is_some() == *p,
                    Test::YoungerThan { years, on } => inputs
                        .age(field, on.as_deref())
                        .is_some_and(|age| age < *years),
                    Test::AtLeast { years, on } => inputs
                        .age(field, on.as_deref())
                        .is_some_and(|age| age >= *years),
                }
            }
        }
    }

    /// Every field the condition reads (tested fields and `on` dates), for validation.
    pub fn fields(&self) -> Vec<&str> {
        let mut out = Vec::new();
        self.visit(&mut |c| {
            if let Self::Test { field, test } = c {
                out.push(field.as_str());
                if let Test::YoungerThan { on: Some(on), .. } | Test::AtLeast { on: Some(on), .. } =
                    test
                {
                    out.push(on.as_str());
                }
            }
        });
        out
    }

    /// Every list the condition names, for validation.
    pub fn lists(&self) -> Vec<&str> {
        let mut out = Vec::new();
        self.visit(&mut |c| {
            if let Self::Test {
                test: Test::InList(l) | Test::NotInList(l),
                ..
            } = c
            {
                out.push(l.as_str());
            }
        });
        out
    }

    fn visit<'a>(&'a self, f: &mut impl FnMut(&'a Condition)) {
        f(self);
        match self {
            Self::All(cs) | Self::Any(cs) => cs.iter().for_each(|c| c.visit(f)),
            Self::Not(c) => c.visit(f),
            Self::Test { .. } => {}
        }
    }
}

/// A scalar as TOML writes it: `equals = true` and `equals = "true"` mean the same.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub(crate) enum Scalar {
    Text(String),
    Bool(bool),
    Int(i64),
}

impl Scalar {
    fn into_text(self) -> String {
        match self {
            Self::Text(s) => s,
            Self::Bool(b) => b.to_string(),
            Self::Int(i) => i.to_string(),
        }
    }
}

/// A condition as written in TOML, before its shape is checked.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawCondition {
    all: Option<Vec<RawCondition>>,
    any: Option<Vec<RawCondition>>,
    not: Option<Box<RawCondition>>,
    field: Option<String>,
    equals: Option<Scalar>,
    not_equals: Option<Scalar>,
    one_of: Option<Vec<Scalar>>,
    in_list: Option<String>,
    not_in_list: Option<String>,
    starts_with: Option<Vec<String>>,
    present: Option<bool>,
    younger_than_years: Option<u32>,
    at_least_years: Option<u32>,
    on: Option<String>,
}

impl RawCondition {
    /// Checks the shape: exactly one of `all`/`any`/`not`/`field`, and a field with exactly
    /// one test.
    pub(crate) fn build(self, location: &str) -> Result<Condition, DefinitionError> {
        let bad = |reason: String| DefinitionError::BadCondition {
            location: location.to_owned(),
            reason,
        };
        let shapes = [
            self.all.is_some(),
            self.any.is_some(),
            self.not.is_some(),
            self.field.is_some(),
        ];
        if shapes.iter().filter(|s| **s).count() != 1 {
            return Err(bad(
                "a condition has exactly one of `all`, `any`, `not` or `field`".into(),
            ));
        }
        let tests = [
            self.equals.is_some(),
            self.not_equals.is_some(),
            self.one_of.is_some(),
            self.in_list.is_some(),
            self.not_in_list.is_some(),
            self.starts_with.is_some(),
            self.present.is_some(),
            self.younger_than_years.is_some(),
            self.at_least_years.is_some(),
        ]
        .iter()
        .filter(|t| **t)
        .count();
        if let Some(all) = self.all {
            return all
                .into_iter()
                .map(|c| c.build(location))
                .collect::<Result<_, _>>()
                .map(Condition::All);
        }
        if let Some(any) = self.any {
            return any
                .into_iter()
                .map(|c| c.build(location))
                .collect::<Result<_, _>>()
                .map(Condition::Any);
        }
        if let Some(not) = self.not {
            return Ok(Condition::Not(Box::new(not.build(location)?)));
        }
        let field = self.field.unwrap_or_default();
        if tests != 1 {
            return Err(bad(format!(
                "the test on `{field}` needs exactly one of `equals`, `not_equals`, `one_of`, \
                 `in_list`, `not_in_list`, `starts_with`, `present`, `younger_than_years`, \
                 `at_least_years` ({tests} given)"
            )));
        }
        if self.on.is_some() && self.younger_than_years.is_none() && self.at_least_years.is_none() {
            return Err(bad(format!(
                "`on` only goes with an age test (on `{field}`)"
            )));
        }
        let test = if let Some(x) = self.equals {
            Test::Equals(x.into_text())
        } else if let Some(x) = self.not_equals {
            Test::NotEquals(x.into_text())
        } else if let Some(xs) = self.one_of {
            Test::OneOf(xs.into_iter().map(Scalar::into_text).collect())
        } else if let Some(l) = self.in_list {
            Test::InList(l)
        } else if let Some(l) = self.not_in_list {
            Test::NotInList(l)
        } else if let Some(ps) = self.starts_with {
            Test::StartsWith(ps)
        } else if let Some(p) = self.present {
            Test::Present(p)
        } else if let Some(years) = self.younger_than_years {
            Test::YoungerThan { years, on: self.on }
        } else if let Some(years) = self.at_least_years {
            Test::AtLeast { years, on: self.on }
        } else {
            return Err(bad(format!("no test on `{field}`")));
        };
        Ok(Condition::Test { field, test })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Condition, DefinitionError> {
        #[derive(Deserialize)]
        struct W {
            condition: RawCondition,
        }
        let w: W = toml::from_str(text).unwrap();
        w.condition.build("test")
    }

    fn eval(text: &str, data: &[(&str, &str)], facts: &[(&str, &str)]) -> bool {
        let data: EventData = data
            .iter()
            .map(|(k, v)| ((*k).into(), (*v).into()))
            .collect();
        let facts: BTreeMap<String, String> = facts
            .iter()
            .map(|(k, v)| ((*k).into(), (*v).into()))
            .collect();
        let lists = BTreeMap::from([(
            "premium".to_owned(),
            BTreeSet::from(["44021".to_owned(), "11002".to_owned()]),
        )]);
        parse(text).unwrap().eval(&Inputs {
            data: &data,
            facts: &facts,
            lists: &lists,
            today: NaiveDate::from_ymd_opt(2026, 6, 1).unwrap(),
        })
    }

    #[test]
    fn tests_on_fields() {
        let c = r#"condition = { field = "nis", in_list = "premium" }"#;
        assert!(eval(c, &[("nis", "44021")], &[]));
        assert!(!eval(c, &[("nis", "12021")], &[]));
        assert!(!eval(c, &[], &[]));
        let c = r#"condition = { field = "nis", not_in_list = "premium" }"#;
        assert!(eval(c, &[], &[]));
        let c = r#"condition = { field = "facts.card", equals = true }"#;
        assert!(eval(c, &[], &[("card", "true")]));
        assert!(!eval(c, &[], &[("card", "false")]));
        let c = r#"condition = { field = "nis", starts_with = ["1", "44"] }"#;
        assert!(eval(c, &[("nis", "44021")], &[]));
        assert!(!eval(c, &[("nis", "21004")], &[]));
        let c = r#"condition = { field = "cat", one_of = ["A", "B"] }"#;
        assert!(eval(c, &[("cat", "B")], &[]));
        let c = r#"condition = { field = "x", present = false }"#;
        assert!(eval(c, &[("x", "")], &[]));
    }

    #[test]
    fn ages_count_whole_years() {
        let c = r#"condition = { field = "dob", younger_than_years = 18, on = "dod" }"#;
        assert!(eval(
            c,
            &[("dob", "2008-06-02"), ("dod", "2026-06-01")],
            &[]
        ));
        assert!(!eval(
            c,
            &[("dob", "2008-06-01"), ("dod", "2026-06-01")],
            &[]
        ));
        assert!(
            !eval(c, &[("dob", "2008-06-01")], &[]),
            "no `on` date: false"
        );
        let c = r#"condition = { field = "dob", at_least_years = 18 }"#;
        assert!(
            eval(c, &[("dob", "2008-06-01")], &[]),
            "today is 2026-06-01"
        );
        assert!(!eval(c, &[("dob", "not a date")], &[]));
    }

    #[test]
    fn combinators() {
        let c = r#"condition = { all = [ { field = "a", equals = "1" }, { not = { field = "b", present = true } } ] }"#;
        assert!(eval(c, &[("a", "1")], &[]));
        assert!(!eval(c, &[("a", "1"), ("b", "x")], &[]));
        let c = r#"condition = { any = [ { field = "a", equals = "1" }, { field = "b", equals = "2" } ] }"#;
        assert!(eval(c, &[("b", "2")], &[]));
        assert!(!eval(c, &[], &[]));
    }

    #[test]
    fn malformed_conditions_are_refused() {
        for text in [
            r#"condition = { field = "a" }"#,
            r#"condition = { field = "a", equals = "1", present = true }"#,
            r#"condition = { field = "a", equals = "1", all = [] }"#,
            r#"condition = { field = "a", equals = "1", on = "b" }"#,
            r#"condition = { }"#,
        ] {
            assert!(
                matches!(parse(text), Err(DefinitionError::BadCondition { .. })),
                "{text}"
            );
        }
    }

    #[test]
    fn fields_and_lists_are_listed_for_validation() {
        let c = parse(
            r#"condition = { all = [ { field = "a", in_list = "l" }, { field = "b", at_least_years = 1, on = "c" } ] }"#,
        )
        .unwrap();
        assert_eq!(c.fields(), ["a", "b", "c"]);
        assert_eq!(c.lists(), ["l"]);
    }
}
