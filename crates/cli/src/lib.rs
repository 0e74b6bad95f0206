//! The library side of the `levensloop` command line: the registry simulator's event
//! generator, shared with the ingest benchmark, and the timeline's wording, shared with the
//! tests of its output.

pub mod generate;
pub mod timeline;
