//! Belgian reference data and identifiers: INSZ numbers and NIS municipality codes.
//!
//! Pure and I/O-free: the reference tables are embedded in the binary at compile time.
//!
//! - [`insz`]: the INSZ (national register number or bis number) — parse and validate what
//!   registries send, generate valid numbers for the simulator, mask them for read models.
//! - [`municipality`]: the 565 municipalities valid on 2025-01-01 by NIS code, with the 2025
//!   mergers, and a population-weighted draw for generating test traffic.

pub mod insz;
pub mod municipality;

pub use insz::{BisKind, Insz, InszError, Sex};
pub use municipality::{Municipality, MunicipalityError, NisCode, Region};
