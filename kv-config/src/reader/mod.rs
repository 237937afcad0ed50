//! The hot-reloading reader: [`ConfigBuilder`] and [`ConfigReader`].
//!
//! `builder.rs` holds the options and their checks, `start.rs` the start (first state, the
//! value to start with, the spawned loop), `handle.rs` the handle its clones share,
//! `shared.rs` the state the handles share with the loop, `core.rs` the loop (evaluate →
//! layer → validate to the side → swap → notify) and `feed.rs` the watch shared by the
//! readers of one configuration on one bucket handle.

mod builder;
mod core;
mod feed;
mod handle;
mod shared;
mod start;

pub use builder::ConfigBuilder;
pub use handle::{ConfigEvents, ConfigReader};
