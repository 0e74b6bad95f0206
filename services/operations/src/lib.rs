//! The operators' view of the sagas.
//!
//! - [`summary`]: one saga's events folded into what an operator needs to see (status,
//!   steps, last error, incidents), with no saga definition at hand;
//!
//! The read model is derived: the event store is the truth, and a rebuild replays it.

pub mod summary;
