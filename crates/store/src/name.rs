//! Stream names: `category-id`, e.g. `saga-3f2a…` or `person-85073003328`.

use crate::StoreError;
use std::fmt;
use std::str::FromStr;

const MAX_PART: usize = 128;

/// The name of an event stream: a category (what kind of thing) and an id (which one).
///
/// Both parts become one token of a NATS subject, so they are restricted to characters that
/// are safe there: the category to `[a-z0-9_]`, the id to `[A-Za-z0-9_:=@+-]`. The category
/// cannot hold `-`, which separates it from the id in the textual form.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct StreamName {
    category: String,
    id: String,
}

impl StreamName {
    pub fn new(category: impl Into<String>, id: impl Into<String>) -> Result<Self, StoreError> {
        let category = category.into();
        let id = id.into();
        validate_category(&category)?;
        validate_id(&category, &id)?;
        Ok(Self { category, id })
    }

    pub fn category(&self) -> &str {
        &self.category
    }

    pub fn id(&self) -> &str {
        &self.id
    }
}

/// Checks that a category name is well-formed.
pub(crate) fn validate_category(category: &str) -> Result<(), StoreError> {
    let invalid = |reason: &str| StoreError::InvalidName {
        name: category.to_owned(),
        reason: reason.to_owned(),
    };
    if category.is_empty() {
        return Err(invalid("the category is empty"));
    }
    if category.len() > MAX_PART {
        return Err(invalid("the category is longer than 128 characters"));
    }
    if !category
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
    {
        return Err(invalid("a category holds only a-z, 0-9 and _"));
    }
    Ok(())
}

fn validate_id(category: &str, id: &str) -> Result<(), StoreError> {
    let invalid = |reason: &str| StoreError::InvalidName {
        name: format!("{category}-{id}"),
        reason: reason.to_owned(),
    };
    if id.is_empty() {
        return Err(invalid("the id is empty"));
    }
    if id.len() > MAX_PART {
        return Err(invalid("the id is longer than 128 characters"));
    }
    if !id
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"_:=@+-".contains(&b))
    {
        return Err(invalid("an id holds only A-Z, a-z, 0-9 and _ : = @ + -"));
    }
    Ok(())
}

impl fmt::Display for StreamName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.category, self.id)
    }
}

impl FromStr for StreamName {
    type Err = StoreError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.split_once('-') {
            Some((category, id)) => Self::new(category, id),
            None => Err(StoreError::InvalidName {
                name: s.to_owned(),
                reason: "expected category-id".to_owned(),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_through_text() {
        let name = StreamName::new("saga", "6f1c2a8e-0d4b-5c1e-9a57-2b6f0e3d4c21").unwrap();
        assert_eq!(
            name.to_string(),
            "saga-6f1c2a8e-0d4b-5c1e-9a57-2b6f0e3d4c21"
        );
        assert_eq!(name.to_string().parse::<StreamName>().unwrap(), name);
    }

    #[test]
    fn refuses_names_that_would_break_a_subject() {
        for (category, id) in [
            ("", "x"),
            ("saga", ""),
            ("Saga", "x"),
            ("sa-ga", "x"),
            ("saga", "a.b"),
            ("saga", "a*"),
            ("saga", "a>"),
            ("saga", "a b"),
        ] {
            let err = StreamName::new(category, id).unwrap_err();
            assert!(
                matches!(err, StoreError::InvalidName { .. }),
                "{category}/{id}"
            );
        }
        let long = "x".repeat(129);
        assert!(StreamName::new("saga", long).is_err());
        assert!("nodash".parse::<StreamName>().is_err());
    }
}
