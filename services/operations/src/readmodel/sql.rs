//! SQL text built next to the values bound to its parameters, so the two cannot drift
//! apart. PostgreSQL gets numbered parameters (`$1`); SQLite plain `?`, which it binds in
//! order: with numbered ones, binding a statement of n parameters costs n² in SQLite (each
//! name is looked up in a list), and a batch of rows has thousands.

use std::fmt::Write as _;

use sqlx::any::{Any, AnyArguments};
use sqlx::query::Query;

use super::Backend;

/// A value bound to a parameter.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Arg {
    Int(i64),
    OptInt(Option<i64>),
    Text(String),
}

impl From<i64> for Arg {
    fn from(v: i64) -> Self {
        Arg::Int(v)
    }
}

impl From<Option<i64>> for Arg {
    fn from(v: Option<i64>) -> Self {
        Arg::OptInt(v)
    }
}

impl From<&str> for Arg {
    fn from(v: &str) -> Self {
        Arg::Text(v.to_owned())
    }
}

impl From<String> for Arg {
    fn from(v: String) -> Self {
        Arg::Text(v)
    }
}

#[derive(Debug, Clone)]
pub(crate) struct Sql {
    pub text: String,
    pub args: Vec<Arg>,
    backend: Backend,
}

impl Sql {
    pub fn new(backend: Backend, text: &str) -> Self {
        Self {
            text: text.to_owned(),
            args: Vec::new(),
            backend,
        }
    }

    pub fn push(&mut self, text: &str) -> &mut Self {
        self.text.push_str(text);
        self
    }

    /// Appends a parameter and binds `value` to it.
    pub fn bind(&mut self, value: impl Into<Arg>) -> &mut Self {
        self.args.push(value.into());
        match self.backend {
            Backend::Sqlite => self.text.push('?'),
            Backend::Postgres => {
                let _ = write!(self.text, "${}", self.args.len());
            }
        }
        self
    }

    /// Appends `(…), (…)` with one parameter per value of each row.
    pub fn values(&mut self, rows: impl IntoIterator<Item = Vec<Arg>>) -> &mut Self {
        for (r, row) in rows.into_iter().enumerate() {
            self.push(if r == 0 { "(" } else { ", (" });
            for (c, value) in row.into_iter().enumerate() {
                if c > 0 {
                    self.push(", ");
                }
                self.bind(value);
            }
            self.push(")");
        }
        self
    }

    /// Appends `(…)` with one parameter per value.
    pub fn list(&mut self, values: impl IntoIterator<Item = Arg>) -> &mut Self {
        self.push("(");
        for (i, value) in values.into_iter().enumerate() {
            if i > 0 {
                self.push(", ");
            }
            self.bind(value);
        }
        self.push(")")
    }

    pub fn query(&self) -> Query<'_, Any, AnyArguments<'_>> {
        let mut query = sqlx::query(&self.text);
        for arg in &self.args {
            query = match arg {
                Arg::Int(v) => query.bind(*v),
                Arg::OptInt(v) => query.bind(*v),
                Arg::Text(v) => query.bind(v.as_str()),
            };
        }
        query
    }
}
