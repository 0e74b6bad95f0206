//! The operators' view of the sagas.
//!
//! - [`summary`]: one saga's events folded into what an operator needs to see (status,
//!   steps, last error, incidents), with no saga definition at hand;
//! - [`readmodel`]: those summaries kept in a database (SQLite by default, PostgreSQL for a
//!   shared deployment), indexed so that filtering and paging stay cheap at millions of sagas.
//!
//! The read model is derived: the event store is the truth, and a rebuild replays it.

pub mod readmodel;
pub mod summary;
