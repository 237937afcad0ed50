#![doc = include_str!("../README.md")]
//!
//! ## Sources
//! [`Source::document`] keeps the whole document under one key (JSON, or `Format::Toml` /
//! `Format::Yaml` with the `toml` / `yaml` features). [`Source::prefix`] keeps one field per
//! key: `app.db.pool_size = 10` under prefix `app` is `{"db":{"pool_size":10}}`; values are
//! JSON, and a value that is not JSON is taken as a string (`"123"` with quotes for a
//! numeric-looking string).
//!
//! ## Layers and precedence
//! Lowest first: code defaults ([`ConfigBuilder::defaults`]) < optional local file
//! ([`ConfigBuilder::local_file`]) < the KV < environment ([`ConfigBuilder::env_prefix`]).
//! Objects merge field by field; scalars and arrays replace whole. Environment rules
//! ([`env_path`]): `PREFIX__A__B_C=v` sets `a.b_c` — the prefix matches case-sensitively and is
//! followed by `__`, segments are split on `__` and lowercased, and names with an empty
//! segment are ignored; values parse as JSON when they can, else are strings. The file and
//! the environment are read once, at start.
//!
//! ## Candidates, rejections and last-known-good
//! Every change is decoded and checked to the side: malformed data, wrong types, unknown
//! fields in [strict](ConfigBuilder::strict) mode, a failing validator and a deleted document
//! key are each a [`Rejection`] (with the rejected KV revision) sent as
//! [`ConfigEvent::Rejected`] and kept in [`Health::rejected`]; the running value stays.
//! A [`ConfigEvent::Changed`] is sent only when the decoded value differs (compared as
//! re-serialized JSON), with old and new snapshots, the revision and the changed paths.
//!
//! In prefix mode a deleted field key just removes that field (lower layers show through);
//! deleting every key gives the defaults.
//!
//! ## Multi-key updates
//! [`ConfigWriter`] writes a prefix-mode change of several fields as one kvtk-core transaction
//! (the bucket needs `atomic_batches(true)`). Every entry of it carries the transaction's id and
//! position ([`kvtk_core::Entry::batch`]) and the last one its commit flag; readers apply only at
//! quiet points of their watch and never between a transaction's first entry and its commit,
//! so no reader sees half of an update.
//!
//! ## Offline start and resync
//! With a [snapshot file](ConfigBuilder::snapshot_file) every accepted value is persisted
//! atomically. When the KV cannot be reached within the
//! [start timeout](ConfigBuilder::start_timeout) the reader starts from that file, flagged
//! [stale](Snapshot::is_stale) — or fails with [`ErrorKind::Unavailable`] under
//! [`require_fresh`](ConfigBuilder::require_fresh). Use a [`Connector`] so the reader can
//! connect later. After a reconnect or restart kvtk-core's watch resumes without gap; a lost
//! history ([`kvtk_core::ErrorKind::HistoryGone`]) triggers a full re-read. Either way at most
//! one change is emitted for whatever happened while away.
//!
//! ## Fleet visibility
//! A reader with an [`instance`](ConfigBuilder::instance) name publishes [`Applied`] under
//! `_applied.<config>.<instance>` (per-key TTL, refreshed while it lives);
//! [`ConfigWriter::wait_applied`] waits until enough instances have applied a revision.
//!
//! ## Reading from a mirror
//! A fleet far from the origin bucket reads a mirror next to it — a bucket on a leaf node
//! that mirrors the origin in the hub's JetStream domain — while writers write to the
//! origin. Build the reader with [`ConfigBuilder::read_only`] on the mirror's handle:
//!
//! ```no_run
//! # #[allow(dead_code)]
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use kvtk_config::{ConfigReader, Source};
//! use kvtk_core::{nats, BucketConfig, Kv};
//!
//! #[derive(serde::Deserialize, serde::Serialize, Clone, Debug)]
//! struct App { workers: u32 }
//!
//! // Once, on the leaf node: a mirror of the hub's `app` bucket.
//! let leaf = Kv::connect("nats://leaf.local:4222").await?;
//! let mirror = leaf
//!     .create_or_open(BucketConfig::new("app").mirror(nats::Source {
//!         name: "app".into(),
//!         domain: Some("hub".into()),
//!         ..Default::default()
//!     }))
//!     .await?;
//! let reader = ConfigReader::<App>::builder(Source::document("app.config"))
//!     .read_only(mirror.read_only())
//!     .start()
//!     .await?;
//! println!("{:?} at revision {:?}", reader.current().value(), reader.revision());
//! # Ok(()) }
//! ```
//!
//! What holds on a mirror, verified against nats-server 2.15.1 on a leaf node:
//! - **The same revisions.** A mirror stores every message at its origin's stream sequence,
//!   with its key, value, tombstone, purge or expiry marker, so [`ConfigReader::revision`]
//!   on the mirror compares directly with the revision the writer got.
//! - **No silent skip, last-known-good, validation before apply**: unchanged. While the link
//!   to the origin is cut the reader keeps its value and sees nothing new; when the link
//!   heals the mirror catches up in order and the reader applies the newest state (states in
//!   one catch-up burst may fold into one change, as after any reconnect).
//! - **Freshness is the mirror's.** A write acknowledged by the origin reaches the reader
//!   once the mirror has copied it; a reader started after that write may start from an
//!   older value. [`kvtk_core::Status`]'s `stream_info.mirror` reports the mirror's lag.
//! - **No transactions.** The server strips the atomic-batch headers from what it copies,
//!   so a prefix-mode configuration on a mirror fails at start with
//!   [`ErrorKind::Unsupported`] rather than risk applying half of a multi-key change
//!   (through a [`Connector::Lazy`] the mirror is seen only once connected: the reader then
//!   never reads it, and start fails as for an unreachable KV, naming that error);
//!   document-mode configurations (one key) are whole by construction.
//! - **No writes.** A reader on a read-only handle publishes no fleet acknowledgement
//!   ([`ConfigBuilder::instance`] is refused).
//!
//! ## Tasks and tracing
//! Each reader owns one background task (the watch loop); it stops when the last
//! [`ConfigReader`] clone is dropped or on [`ConfigReader::shutdown`]. Spans
//! `kvtk_config.load`, `kvtk_config.apply` and `kvtk_config.write`; accepted and rejected values are
//! logged at `info` and `warn`.
//!
//! ## Permissions
//! A read-only reader of document `doc` in bucket `b` needs no write right at all: stream
//! info, direct gets of `$KV.b.doc` and a watch confined to it (as data:
//! `kvtk_tests::recipes::config_reader`; a writer adds publish on `$KV.b.doc`). See the
//! workspace's docs/deployment.md; [`Connector::connect_with`] takes a
//! [`kvtk_core::Connect`] with credentials and TLS.
//!
//! ## Metrics
//! Applied and rejected values, the age and revision lag of the value in use, through the
//! `metrics` facade: see [`metrics`] and the workspace's docs/metrics.md table.
#![doc(test(attr(deny(warnings))))]
// docs.rs (nightly) marks items that need a feature.
#![cfg_attr(docsrs, feature(doc_cfg))]

mod error;
mod fleet;
mod format;
mod layer;
pub mod metrics;
mod persist;
mod pipeline;
mod reader;
mod snapshot;
mod source;
mod writer;

pub use error::{Error, ErrorKind, RejectKind, Rejection};
pub use fleet::{Applied, DEFAULT_ACK_TTL};
pub use format::Format;
pub use layer::{diff_paths, env_layer, env_path, flatten, merge, ENV_SEPARATOR};
pub use pipeline::Validate;
pub use reader::{ConfigBuilder, ConfigEvents, ConfigReader};
pub use snapshot::{Change, ConfigEvent, Health, Origin, Snapshot};
pub use source::{Connector, Source};
pub use writer::{ConfigWriter, Version, Written, DEFAULT_ATTEMPTS};
