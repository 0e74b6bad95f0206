//! The library side of the `levensloop` command line: the registry simulator's event
//! generator, shared with the ingest benchmark.

pub mod generate;
