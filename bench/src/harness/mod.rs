//! The harness: the run's servers and size, child processes, contended runs, statistics, wire
//! counts and the report.

pub mod child;
pub mod contended;
pub mod env;
pub mod report;
pub mod stats;
pub mod wire;

pub use env::{with, BoxError, Env, Size, Sync};
