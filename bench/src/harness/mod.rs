//! The harness: the run's servers and size, child processes and their /proc numbers,
//! contended runs, statistics, wire counts and the report.

pub(crate) mod child;
pub(crate) mod contended;
pub(crate) mod cost;
pub(crate) mod env;
pub(crate) mod process;
pub(crate) mod propagation;
pub(crate) mod report;
pub(crate) mod stats;
pub(crate) mod wire;

pub(crate) use env::{with, BoxError, Env, Size, Sync};
