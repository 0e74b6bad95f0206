//! The ingest gateway: the front door for registries.
//!
//! A life event arrives over gRPC (`IngestService`) or NATS (CloudEvents on
//! `levensloop.ingest.<kind>`, captured by JetStream first). Both doors share the same path:
//! decode ([`decode`]), validate ([`validate`]), then store once ([`ingest`]): one stored life
//! event per `(source, id)`, one saga id per event, person invariants kept per INSZ. What is
//! refused is answered with a precise, typed [`rejection::Rejection`] and kept, with its reason,
//! on the rejected stream.

pub mod corpus;
pub mod decode;
pub mod grpc;
pub mod ingest;
pub mod nats;
pub mod rejected;
pub mod rejection;
pub mod server;
pub mod validate;
