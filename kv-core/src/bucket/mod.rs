//! Bucket handles: [`ReadOnlyBucket`] (reads, history, keys, watch, status) and [`Bucket`]
//! (all of that plus writes).
//!
//! By role: `inner.rs` holds `Inner`, what every handle on one opened bucket
//! shares, with the one-message reads and writes the rest of the crate builds on; `read.rs`
//! the read-only handle, `snapshot.rs` its snapshots, `write.rs` the read-write handle and the
//! [`Write`] builder.

pub(crate) mod inner;
mod read;
mod snapshot;
mod write;

pub use read::{ReadOnlyBucket, Status};
pub use snapshot::Snapshot;
pub use write::{Bucket, Write};
