//! Revisions, expectations and per-key TTLs.
//!
//! [`Revision`] and [`Expect`] (`seq.rs`) depend on nothing, so the error type can carry a
//! revision; [`Ttl`] (`ttl.rs`) validates into that error type.

pub(crate) mod seq;
mod ttl;

pub use seq::{Expect, Revision};
pub use ttl::Ttl;
