//! The operators' view of the sagas.
//!
//! - [`summary`]: one saga's events folded into what an operator needs to see (status,
//!   steps, last error, incidents), with no saga definition at hand;
//! - [`readmodel`]: those summaries kept in a database (SQLite by default, PostgreSQL for a
//!   shared deployment), indexed so that filtering and paging stay cheap at millions of sagas.
//!
//! - [`projection`]: follows the saga events into the read model and announces changes;
//! - [`grpc`]: `OperationsService` — list, show, watch, steer (through [`steer`]), incidents,
//!   [`rejected`] inputs, statistics — for callers [`auth`]enticated by role;
//! - [`http`]: the operators' web dashboard and its JSON API, over the same [`grpc`] logic,
//!   with each saga's timeline as a [`chart`] and the overview's [`throughput`];
//! - [`service`]: all of it as one running service.
//!
//! The read model is derived: the event store is the truth, and a rebuild replays it.

pub mod auth;
pub mod chart;
pub mod grpc;
pub mod http;
pub mod projection;
pub mod readmodel;
pub mod rejected;
pub mod service;
pub mod steer;
pub mod summary;
pub mod throughput;
