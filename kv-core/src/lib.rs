#![doc = include_str!("../README.md")]
//!
//! ## Errors
//! Every operation returns [`Error`]; match on [`Error::kind`]. A compare-and-set mismatch
//! is always [`ErrorKind::Conflict`] (server `err_code` 10071, or 10164 on replicated
//! streams).
//!
//! A read-only handle has no write methods at all:
//!
//! ```compile_fail
//! # async fn demo(kv: kvtk_core::Kv) -> Result<(), kvtk_core::Error> {
//! let ro = kv.open_read_only("app").await?;
//! ro.put("greeting", "hello").await?; // no such method on ReadOnlyBucket
//! # Ok(()) }
//! ```
//!
//! ## Consistency
//! Writes go through the stream leader and are linearizable per bucket. Plain reads use
//! direct get, which any replica may answer: on replicated buckets a read can lag a write
//! made by another client. Decide ownership from conditional-write results (or
//! [`ReadOnlyBucket::get_from_leader`]), never from a plain read.
//!
//! ## Connecting and permissions
//! [`Connect`] reaches production servers: several URLs, creds file, NKey, token or
//! user/password, TLS and mutual TLS, `nats` CLI contexts; credentials in URLs are used, never
//! dropped, and never shown. A [`Kv`] it builds reports the server's permission violations as
//! [`ErrorKind::PermissionDenied`] at once, and leases refused for permission are lost with
//! [`lease::LostReason::Permission`]. Watches create consumers through the named, filtered
//! create subject so permissions can confine a reader. The permissions each recipe needs and
//! the trust model are in the workspace's docs/deployment.md, "Security and deployment".
//!
//! ## Metrics
//! Lease renewal slack and losses, watch resumes and `HistoryGone`, through the `metrics`
//! facade: see [`metrics`] (the names) and the workspace's docs/metrics.md table.
// Doc examples define `async fn demo(..)` bodies that are compiled, not called.
#![doc(test(attr(deny(warnings), allow(dead_code))))]
// docs.rs (nightly) marks items that need a feature.
#![cfg_attr(docsrs, feature(doc_cfg))]

mod admin;
mod bucket;
mod client;
mod codec;
mod combine;
mod config;
mod connect;
mod counters;
mod entry;
mod error;
pub mod format;
mod info;
mod js;
mod key;
pub mod lease;
pub mod metrics;
pub mod object;
mod permission;
mod retry;
mod revision;
mod rmw;
mod txn;
mod version;
pub mod watch;

pub use admin::{BucketInfo, BucketUpdate, Compacted, Follower};
pub use bucket::{Bucket, ReadOnlyBucket, Snapshot, Status, Write};
pub use client::{Kv, OPEN_WAIT};
pub use codec::{Codec, Json, Raw, Utf8};
pub use config::{BucketConfig, Storage, MAX_HISTORY};
pub use connect::Connect;
pub use counters::{CounterHandle, Counters};
pub use entry::{Batch, Entry, LeaseTag, Op, Removal};
pub use error::{Error, ErrorKind, Operation};
pub use key::{
    Base64KeyCodec, Key, KeyArg, KeyCodec, KeyFilter, KeyFilterArg, KeyRule, MAX_KEY_LEN,
};
pub use retry::{Backoff, Retrying, Transient};
pub use revision::{Expect, Revision, Ttl};
pub use rmw::{Counter, Outcome, Rmw, DEFAULT_ATTEMPTS};
pub use txn::{Committed, Txn, MAX_TXN_OPS};
pub use version::ServerVersion;
pub use watch::{Include, Watch, WatchBuilder, WatchEvent};

/// Re-exports of async-nats types used in bucket options.
pub mod nats {
    pub use async_nats::jetstream::stream::{External, Placement, Republish, Source};
    pub use async_nats::Client;
}
