//! Bucket administration: every bucket with its settings and state ([`Kv::buckets`]),
//! changing a bucket's settings where the server allows it ([`Kv::update_bucket`]), and
//! removing old delete markers ([`Bucket::compact`]).
//!
//! ```no_run
//! # async fn demo(kv: kvtk_core::Kv) -> Result<(), kvtk_core::Error> {
//! use std::time::Duration;
//! use kvtk_core::BucketUpdate;
//! for b in kv.buckets().await? {
//!     println!("{}: history {}, {} keys, {} bytes", b.name, b.history, b.keys, b.bytes);
//! }
//! kv.update_bucket("app", BucketUpdate::new().history(5).max_age(Some(Duration::from_secs(86_400))))
//!     .await?;
//! let done = kv.open("app").await?.compact(Duration::from_secs(30 * 60)).await?;
//! println!("removed {} delete markers", done.markers_removed);
//! # Ok(()) }
//! ```

use std::time::Duration;

use async_nats::jetstream::stream;
use bytes::Bytes;
use serde::Serialize;
use serde_json::{json, Value};
use tracing::Instrument as _;

use crate::bucket::Bucket;
use crate::client::Kv;
use crate::config::{consumer_limit, validate_bucket_name, Storage, MAX_HISTORY};
use crate::error::{Error, ErrorKind, Operation};
use crate::version::ServerVersion;

/// A bucket's settings and state, as [`Kv::buckets`] and [`Kv::update_bucket`] report them.
/// Serialises to JSON with durations in seconds.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[non_exhaustive]
pub struct BucketInfo {
    /// The bucket name.
    pub name: String,
    /// Its description.
    pub description: Option<String>,
    /// Revisions kept per key.
    pub history: i64,
    /// The maximum age of every entry; `None` for no limit.
    #[serde(serialize_with = "secs")]
    pub max_age: Option<Duration>,
    /// The largest total size in bytes; `None` for no limit.
    pub max_bytes: Option<i64>,
    /// The largest value in bytes; `None` for no limit.
    pub max_value_size: Option<i64>,
    /// The most consumers (watches) the stream accepts; `None` when it sets no limit of its
    /// own and the server's default applies (1,000 on nats-server 2.15; see
    /// [`BucketConfig::max_consumers`](crate::BucketConfig::max_consumers)).
    pub max_consumers: Option<i64>,
    /// Consumers on the stream now: live watches, and those of dropped watches not yet
    /// deleted.
    pub consumers: u64,
    /// Replicas.
    pub replicas: usize,
    /// Storage backend.
    pub storage: Storage,
    /// Whether stored values are compressed (S2).
    pub compression: bool,
    /// Per-key TTLs: how long expiry and removal markers stay; `None` when per-key TTLs are off.
    #[serde(serialize_with = "secs")]
    pub marker_ttl: Option<Duration>,
    /// Whether atomic multi-key batches (transactions) are enabled.
    pub atomic_batches: bool,
    /// The origin bucket when this is a mirror.
    pub mirror_of: Option<String>,
    /// Placement: the cluster asked for.
    pub placement_cluster: Option<String>,
    /// Placement: the server tags asked for.
    pub placement_tags: Vec<String>,
    /// Messages stored (values, tombstones and markers, every kept revision).
    pub values: u64,
    /// Bytes stored.
    pub bytes: u64,
    /// Keys with at least one stored message (live or not).
    pub keys: u64,
    /// The oldest revision still stored (0 when empty).
    pub first_revision: u64,
    /// The newest revision.
    pub last_revision: u64,
    /// In a cluster: the cluster's name.
    pub cluster: Option<String>,
    /// In a cluster: the server leading the bucket's stream.
    pub leader: Option<String>,
    /// In a cluster: the other servers holding a replica.
    pub followers: Vec<Follower>,
}

/// A server holding a replica of a bucket, besides its stream leader.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[non_exhaustive]
pub struct Follower {
    /// The server's name.
    pub name: String,
    /// Whether it is up to date.
    pub current: bool,
    /// Whether it is offline.
    pub offline: bool,
    /// Operations it lags behind, when known.
    pub lag: Option<u64>,
}

fn secs<S: serde::Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
    match d {
        Some(d) => s.serialize_some(&d.as_secs_f64()),
        None => s.serialize_none(),
    }
}

impl BucketInfo {
    /// Reads a bucket's stream info; `None` for a stream that is not a bucket.
    pub(crate) fn from_stream(info: &stream::Info) -> Option<BucketInfo> {
        let c = &info.config;
        let name = c.name.strip_prefix("KV_")?.to_string();
        let positive = |n: i64| (n > 0).then_some(n);
        let cluster = info.cluster.as_ref();
        Some(BucketInfo {
            name,
            description: c.description.clone(),
            history: c.max_messages_per_subject,
            max_age: (!c.max_age.is_zero()).then_some(c.max_age),
            max_bytes: positive(c.max_bytes),
            max_value_size: positive(i64::from(c.max_message_size)),
            max_consumers: positive(i64::from(c.max_consumers)),
            consumers: info.state.consumer_count as u64,
            replicas: c.num_replicas,
            storage: match c.storage {
                stream::StorageType::Memory => Storage::Memory,
                stream::StorageType::File => Storage::File,
            },
            compression: matches!(c.compression, Some(stream::Compression::S2)),
            marker_ttl: c
                .allow_message_ttl
                .then(|| c.subject_delete_marker_ttl.unwrap_or_default()),
            atomic_batches: c.allow_atomic_publish,
            mirror_of: c
                .mirror
                .as_ref()
                .map(|m| m.name.trim_start_matches("KV_").to_string()),
            placement_cluster: c.placement.as_ref().and_then(|p| p.cluster.clone()),
            placement_tags: c
                .placement
                .as_ref()
                .map(|p| p.tags.clone())
                .unwrap_or_default(),
            values: info.state.messages,
            bytes: info.state.bytes,
            keys: info.state.subjects_count,
            first_revision: info.state.first_sequence,
            last_revision: info.state.last_sequence,
            cluster: cluster.and_then(|c| c.name.clone()),
            leader: cluster.and_then(|c| c.leader.clone()),
            followers: cluster
                .map(|c| c.replicas.iter().map(follower).collect())
                .unwrap_or_default(),
        })
    }
}

fn follower(p: &stream::PeerInfo) -> Follower {
    Follower {
        name: p.name.clone(),
        current: p.current,
        offline: p.offline,
        lag: p.lag,
    }
}

/// Changes to a bucket's settings, for [`Kv::update_bucket`]. Each setting left out stays
/// as it is.
///
/// The server refuses some changes, and the error says so: the storage backend never
/// changes; per-key TTLs, once on, cannot be turned off; more than one replica needs a
/// cluster; a mirror takes no per-key TTLs. Turning per-key TTLs on keeps existing keys as
/// they are (nats-server 2.11.3 stopped keys from expiring after such an edit, #6920: check
/// expiry after editing on a server that old).
#[derive(Debug, Clone, Default, PartialEq)]
#[non_exhaustive]
pub struct BucketUpdate {
    /// New history depth (1..=64).
    pub history: Option<i64>,
    /// New maximum age (`Some(None)`: no limit).
    pub max_age: Option<Option<Duration>>,
    /// New size limit in bytes (`Some(None)`: no limit).
    pub max_bytes: Option<Option<i64>>,
    /// New value size limit in bytes (`Some(None)`: no limit).
    pub max_value_size: Option<Option<i32>>,
    /// New consumer limit (`Some(None)`: the server's default).
    pub max_consumers: Option<Option<u32>>,
    /// New replica count.
    pub replicas: Option<usize>,
    /// Turns per-key TTLs on, or changes their marker TTL (≥ 1 s).
    pub marker_ttl: Option<Duration>,
    /// Turns compression on or off.
    pub compression: Option<bool>,
    /// Turns atomic batches on or off.
    pub atomic_batches: Option<bool>,
    /// New description.
    pub description: Option<String>,
}

impl BucketUpdate {
    /// No change yet.
    pub fn new() -> BucketUpdate {
        BucketUpdate::default()
    }
    /// Revisions kept per key (1..=64).
    pub fn history(mut self, history: i64) -> Self {
        self.history = Some(history);
        self
    }
    /// The maximum age of every entry (`None`: no limit).
    pub fn max_age(mut self, age: Option<Duration>) -> Self {
        self.max_age = Some(age);
        self
    }
    /// The largest total size in bytes (`None`: no limit).
    pub fn max_bytes(mut self, bytes: Option<i64>) -> Self {
        self.max_bytes = Some(bytes);
        self
    }
    /// The most consumers (watches) the stream accepts (`None`: the server's default, 1,000
    /// on nats-server 2.15); see [`BucketConfig::max_consumers`](crate::BucketConfig::max_consumers).
    /// The server keeps the consumers already there when the limit is lowered below them.
    pub fn max_consumers(mut self, n: Option<u32>) -> Self {
        self.max_consumers = Some(n);
        self
    }
    /// The largest value in bytes (`None`: no limit).
    pub fn max_value_size(mut self, bytes: Option<i32>) -> Self {
        self.max_value_size = Some(bytes);
        self
    }
    /// Replicas (1, 3 or 5 in a cluster).
    pub fn replicas(mut self, replicas: usize) -> Self {
        self.replicas = Some(replicas);
        self
    }
    /// Per-key TTLs on, with markers kept for `marker_ttl` (≥ 1 s).
    pub fn per_key_ttl(mut self, marker_ttl: Duration) -> Self {
        self.marker_ttl = Some(marker_ttl);
        self
    }
    /// S2 compression of stored values.
    pub fn compression(mut self, on: bool) -> Self {
        self.compression = Some(on);
        self
    }
    /// Atomic multi-key batches.
    pub fn atomic_batches(mut self, on: bool) -> Self {
        self.atomic_batches = Some(on);
        self
    }
    /// A description.
    pub fn description(mut self, d: impl Into<String>) -> Self {
        self.description = Some(d.into());
        self
    }

    /// Checks the values without contacting the server.
    fn validate(&self) -> Result<(), Error> {
        if let Some(h) = self.history.filter(|h| !(1..=MAX_HISTORY).contains(h)) {
            return Err(Error::invalid_argument(format!(
                "history must be between 1 and {MAX_HISTORY}, got {h}"
            )));
        }
        if let Some(r) = self.replicas.filter(|r| !(1..=5).contains(r)) {
            return Err(Error::invalid_argument(format!(
                "replicas must be between 1 and 5, got {r}"
            )));
        }
        if let Some(t) = self.marker_ttl {
            crate::revision::Ttl::new(t)?;
        }
        if matches!(self.max_bytes, Some(Some(n)) if n < 1)
            || matches!(self.max_value_size, Some(Some(n)) if n < 1)
        {
            return Err(Error::invalid_argument("size limits must be positive"));
        }
        if let Some(Some(n)) = self.max_consumers {
            consumer_limit(n)?;
        }
        Ok(())
    }

    /// Applies the changes to the stream configuration as the server sent it (unknown
    /// fields are kept as they are).
    fn apply(&self, cfg: &mut serde_json::Map<String, Value>) {
        let nanos = |d: Duration| json!(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
        let mut set = |k: &str, v: Value| {
            cfg.insert(k.to_string(), v);
        };
        if let Some(h) = self.history {
            set("max_msgs_per_subject", json!(h));
        }
        if let Some(a) = self.max_age {
            set("max_age", nanos(a.unwrap_or_default()));
        }
        if let Some(b) = self.max_bytes {
            set("max_bytes", json!(b.unwrap_or(-1)));
        }
        if let Some(b) = self.max_value_size {
            set("max_msg_size", json!(b.unwrap_or(-1)));
        }
        if let Some(n) = self.max_consumers {
            set("max_consumers", json!(n.map_or(-1, i64::from)));
        }
        if let Some(r) = self.replicas {
            set("num_replicas", json!(r));
        }
        if let Some(t) = self.marker_ttl {
            set("allow_msg_ttl", json!(true));
            set("subject_delete_marker_ttl", nanos(t));
        }
        if let Some(c) = self.compression {
            set("compression", json!(if c { "s2" } else { "none" }));
        }
        if let Some(a) = self.atomic_batches {
            set("allow_atomic", json!(a));
        }
        if let Some(d) = &self.description {
            set("description", json!(d));
        }
    }
}

impl Kv {
    /// Every bucket on the server with its settings and state, sorted by name: the streams
    /// named `KV_<bucket>` (mirrors included), read in pages of the server's stream list.
    ///
    /// # Cancel safety
    /// Cancel safe: it only reads.
    pub async fn buckets(&self) -> Result<Vec<BucketInfo>, Error> {
        #[derive(serde::Deserialize)]
        struct Page {
            total: usize,
            #[serde(default)]
            streams: Option<Vec<stream::Info>>,
        }
        let span = tracing::debug_span!("kv.buckets");
        async {
            let mut out = Vec::new();
            let mut offset = 0;
            loop {
                let body = json!({ "offset": offset });
                let page: Page = self
                    .js()
                    .api("STREAM.LIST", Bytes::from(body.to_string()))
                    .await
                    .map_err(|e| e.with_op(Operation::Bucket))?;
                let streams = page.streams.unwrap_or_default();
                offset += streams.len();
                out.extend(streams.iter().filter_map(BucketInfo::from_stream));
                if streams.is_empty() || offset >= page.total {
                    break;
                }
            }
            out.sort_by(|a, b| a.name.cmp(&b.name));
            Ok(out)
        }
        .instrument(span)
        .await
    }

    /// Changes bucket `name`'s settings (see [`BucketUpdate`] for what the server refuses)
    /// and returns them as they are now. The change is one stream update of the stream's
    /// current configuration, so settings this crate does not know are kept.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidArgument`] for values out of range (before any request),
    /// [`ErrorKind::BucketNotFound`], [`ErrorKind::ServerTooOld`] for per-key TTLs or atomic
    /// batches on an older server, [`ErrorKind::Server`] with the server's reason for a
    /// change it refuses.
    ///
    /// # Cancel safety
    /// Not cancel safe: the change may be applied although the future was dropped.
    pub async fn update_bucket(
        &self,
        name: &str,
        update: BucketUpdate,
    ) -> Result<BucketInfo, Error> {
        let span = tracing::debug_span!("kv.update_bucket", bucket = %name);
        async {
            validate_bucket_name(name)?;
            update.validate()?;
            if update.marker_ttl.is_some() {
                self.server_version()
                    .require(ServerVersion::PER_KEY_TTL, "per-key TTL")?;
            }
            if update.atomic_batches == Some(true) {
                self.server_version()
                    .require(ServerVersion::ATOMIC_BATCH, "atomic batches")?;
            }
            let info: Value = self
                .js()
                .api(&format!("STREAM.INFO.KV_{name}"), Bytes::new())
                .await?;
            let Some(Value::Object(mut cfg)) = info.get("config").cloned() else {
                return Err(Error::new(
                    ErrorKind::Internal,
                    "stream info without a config",
                ));
            };
            if cfg.contains_key("mirror") && update.marker_ttl.is_some() {
                return Err(Error::invalid_argument(
                    "a mirror cannot expire keys itself: it keeps the origin's markers",
                ));
            }
            update.apply(&mut cfg);
            let body = serde_json::to_vec(&cfg)
                .map_err(|e| Error::new(ErrorKind::Internal, e.to_string()))?;
            let info: stream::Info = self
                .js()
                .api(&format!("STREAM.UPDATE.KV_{name}"), Bytes::from(body))
                .await?;
            BucketInfo::from_stream(&info).ok_or_else(|| {
                Error::new(ErrorKind::Internal, "the updated stream is not a bucket")
            })
        }
        .instrument(span)
        .await
        .map_err(|e| e.with_op(Operation::Bucket))
    }
}

/// What [`Bucket::compact`] removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct Compacted {
    /// Keys whose delete marker (tombstone, purge or expiry marker) was removed with all
    /// the key's history.
    pub markers_removed: u64,
    /// Keys whose marker was younger than the limit: kept, with the history below it
    /// removed.
    pub markers_kept: u64,
    /// Messages removed in all.
    pub messages_removed: u64,
}

impl Bucket {
    /// Removes delete markers older than `older_than`, like the Go client's purge-deletes:
    /// for each key whose latest revision is a tombstone, purge or expiry marker, the
    /// marker and everything before it go when the marker is older than `older_than` (by
    /// the server's timestamp against this process' wall clock — a retention setting, not a
    /// safety decision), else only the revisions before the marker go. Each removal is
    /// bounded by the marker's revision, so a key written again meanwhile keeps its new
    /// value.
    ///
    /// A watch keeps its promise across a compaction: a strict watch (all history, or from
    /// a revision) that needs a removed revision reports
    /// [`ErrorKind::HistoryGone`](crate::ErrorKind::HistoryGone) rather than skipping it,
    /// and a last-value watch never needed the removed revisions.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidArgument`] on a mirror (its markers are the origin's: compact the
    /// origin), or the requests' failures.
    ///
    /// # Cancel safety
    /// Not cancel safe: some keys may be compacted although the future was dropped.
    pub async fn compact(&self, older_than: Duration) -> Result<Compacted, Error> {
        let span = tracing::debug_span!("kv.compact", bucket = %self.name());
        self.compact_inner(older_than)
            .instrument(span)
            .await
            .map_err(|e| e.with_op(Operation::Purge))
    }

    async fn compact_inner(&self, older_than: Duration) -> Result<Compacted, Error> {
        if self.inner().mirror_of.is_some() {
            return Err(Error::invalid_argument(
                "a mirror keeps its origin's markers: compact the origin bucket",
            ));
        }
        let snap = self.snapshot(">").await?;
        let cutoff = time::OffsetDateTime::now_utc() - older_than;
        let mut done = Compacted::default();
        for e in snap.entries.iter().filter(|e| !e.is_value()) {
            let old = e.created() <= cutoff;
            // Purge below `seq`: with the marker itself when it is old, else only before it.
            let seq = e.revision().get() + u64::from(old);
            let body = json!({
                "filter": format!("{}{}", self.inner().read_prefix, e.key().as_str()),
                "seq": seq,
            });
            #[derive(serde::Deserialize)]
            struct Purged {
                #[serde(default)]
                purged: u64,
            }
            let p: Purged = self
                .inner()
                .js
                .api(
                    &format!("STREAM.PURGE.{}", self.inner().stream),
                    Bytes::from(body.to_string()),
                )
                .await?;
            done.messages_removed += p.purged;
            if old {
                done.markers_removed += 1;
            } else {
                done.markers_kept += 1;
            }
        }
        tracing::debug!(?done, "compacted");
        Ok(done)
    }
}
