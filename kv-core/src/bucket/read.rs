//! [`ReadOnlyBucket`]: reads, history, keys, watches and status; no write methods exist on
//! it. Snapshots are in `snapshot.rs`.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::stream;
use tracing::Instrument as _;

use crate::bucket::inner::Inner;
use crate::config::Storage;
use crate::entry::Entry;
use crate::error::{Error, Operation};
use crate::key::{Key, KeyFilter, KeyFilterArg};
use crate::revision::Revision;
use crate::version::ServerVersion;
use crate::watch::{Include, WatchBuilder};

/// A read-only bucket handle (the seed's `RoKV`): reads, history, keys, watch and status;
/// no write methods exist on this type. Cheap to clone.
#[derive(Debug, Clone)]
pub struct ReadOnlyBucket {
    pub(super) inner: Arc<Inner>,
}

/// Bucket status, fresh from the server.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Status {
    /// Bucket name.
    pub bucket: String,
    /// Messages stored (values, tombstones and markers).
    pub values: u64,
    /// Revisions kept per key.
    pub history: i64,
    /// Bucket TTL (max age); zero for none.
    pub ttl: Duration,
    /// Storage backend.
    pub storage: Storage,
    /// Replicas.
    pub replicas: usize,
    /// Whether values are compressed.
    pub compression: bool,
    /// Bytes stored.
    pub bytes: u64,
    /// Whether per-key TTLs are enabled, and the marker TTL.
    pub per_key_ttl: Option<Duration>,
    /// Whether atomic batches (transactions) are enabled.
    pub atomic_batches: bool,
    /// The backing stream's name (`KV_<bucket>`).
    pub backing_stream: String,
    /// The whole stream info.
    pub stream_info: stream::Info,
}

impl ReadOnlyBucket {
    pub(crate) fn from_inner(inner: Arc<Inner>) -> ReadOnlyBucket {
        ReadOnlyBucket { inner }
    }

    /// The bucket name.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// Whether `other` is a clone of this handle (the same opened bucket on the same
    /// connection), as opposed to another `open` of it. Lets a caller share per-handle work,
    /// such as one watch for many readers.
    pub fn same_handle(&self, other: &ReadOnlyBucket) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
    }

    /// The origin's stream (`KV_<origin>`) when this bucket is a mirror, as it was when the
    /// handle was opened.
    ///
    /// A mirror keeps its origin's revisions, keys, values, tombstones, purges and expiry
    /// markers, so every read and watch works on it and names the origin's revisions. It
    /// lags the origin (by a lot while the link to it is down), takes no writes, and the
    /// server strips the atomic-batch headers from what it copies: entries read from a mirror
    /// have no [`Entry::batch`], so a reader cannot tell where a transaction ends.
    pub fn mirror_of(&self) -> Option<&str> {
        self.inner.mirror_of.as_deref()
    }

    /// The version of the server the handle's client is connected to.
    pub fn server_version(&self) -> ServerVersion {
        self.inner.js.server_version()
    }

    /// The latest value of `key`; `None` if it never existed or was deleted, purged or expired.
    ///
    /// Reads are served by any replica and may lag on replicated buckets (no
    /// read-after-write guarantee across clients): use [`get_from_leader`](Self::get_from_leader)
    /// or a conditional write when it matters.
    ///
    /// # Cancel safety
    /// Cancel safe: it only reads.
    pub async fn get(&self, key: impl AsRef<str>) -> Result<Option<Entry>, Error> {
        Ok(self.entry(key).await?.filter(Entry::is_value))
    }

    /// The latest revision of `key` whatever it is: a value, a tombstone or an expiry marker.
    ///
    /// # Cancel safety
    /// Cancel safe: it only reads.
    pub async fn entry(&self, key: impl AsRef<str>) -> Result<Option<Entry>, Error> {
        let key = Key::new(key.as_ref()).map_err(|e| e.with_op(Operation::Get))?;
        let span = tracing::debug_span!("kv.get", bucket = %self.inner.name, key = %key, revision = tracing::field::Empty);
        async {
            let m = self.inner.last_msg(&key).await;
            let m = m.map_err(|e| e.with_op(Operation::Get).with_key(key.as_str()))?;
            let e = m.and_then(|m| self.inner.entry_from(m));
            if let Some(e) = &e {
                tracing::Span::current().record("revision", e.revision.get());
            }
            Ok(e)
        }
        .instrument(span)
        .await
    }

    /// Like [`entry`](Self::entry), but answered by the stream leader: never stale, at the
    /// cost of going through the leader.
    ///
    /// # Cancel safety
    /// Cancel safe: it only reads.
    pub async fn get_from_leader(&self, key: impl AsRef<str>) -> Result<Option<Entry>, Error> {
        let key = Key::new(key.as_ref()).map_err(|e| e.with_op(Operation::Get))?;
        let m = self
            .inner
            .leader_last(&key)
            .await
            .map_err(|e| e.with_op(Operation::Get).with_key(key.as_str()))?;
        Ok(m.and_then(|m| self.inner.entry_from(m)))
    }

    /// The entry of `key` at exactly `revision`, if that revision exists and belongs to `key`.
    ///
    /// # Cancel safety
    /// Cancel safe: it only reads.
    pub async fn entry_at(
        &self,
        key: impl AsRef<str>,
        revision: Revision,
    ) -> Result<Option<Entry>, Error> {
        let key = Key::new(key.as_ref()).map_err(|e| e.with_op(Operation::Get))?;
        let inner = &self.inner;
        let m = if inner.direct {
            inner.js.direct_seq(&inner.stream, revision.get()).await
        } else {
            inner
                .js
                .leader_get(&inner.stream, serde_json::json!({ "seq": revision.get() }))
                .await
        };
        let m = m.map_err(|e| e.with_op(Operation::Get).with_key(key.as_str()))?;
        Ok(m.and_then(|m| inner.entry_from(m)).filter(|e| e.key == key))
    }

    /// Every revision the bucket still holds for `key`, oldest first (including tombstones).
    ///
    /// # Cancel safety
    /// Cancel safe: dropping the future removes the temporary consumer.
    pub async fn history(&self, key: impl AsRef<str>) -> Result<Vec<Entry>, Error> {
        let key = Key::new(key.as_ref()).map_err(|e| e.with_op(Operation::History))?;
        let span = tracing::debug_span!("kv.history", bucket = %self.inner.name, key = %key);
        self.watch([KeyFilter::from(key)])
            .include(Include::AllHistory)
            .snapshot()
            .instrument(span)
            .await
            .map_err(|e| e.with_op(Operation::History))
    }

    /// The keys matching `filter` that hold a live value (not deleted, purged or expired).
    ///
    /// # Cancel safety
    /// Cancel safe: dropping the future removes the temporary consumer.
    pub async fn keys(&self, filter: impl AsRef<str>) -> Result<Vec<Key>, Error> {
        let filter = KeyFilter::new(filter.as_ref()).map_err(|e| e.with_op(Operation::History))?;
        let entries = self
            .watch([filter])
            .meta_only()
            .snapshot()
            .await
            .map_err(|e| e.with_op(Operation::History))?;
        Ok(entries
            .into_iter()
            .filter(Entry::is_value)
            .map(|e| e.key)
            .collect())
    }

    /// Starts building a watch of the keys matching any of `filters` (an empty list means all
    /// keys). See [`WatchBuilder`] for the options and [`crate::watch`] for recovery.
    pub fn watch<I, F>(&self, filters: I) -> WatchBuilder
    where
        I: IntoIterator<Item = F>,
        F: Into<KeyFilterArg>,
    {
        let filters: Result<Vec<KeyFilter>, Error> =
            filters.into_iter().map(|f| f.into().0).collect();
        WatchBuilder::new(self.inner.clone(), filters)
    }

    /// Watches every key of the bucket.
    pub fn watch_all(&self) -> WatchBuilder {
        WatchBuilder::new(self.inner.clone(), Ok(vec![]))
    }

    /// The bucket's status, fresh from the server.
    ///
    /// # Cancel safety
    /// Cancel safe: it only reads.
    pub async fn status(&self) -> Result<Status, Error> {
        let info = self.inner.stream_info().await;
        let info = info.map_err(|e| e.with_op(Operation::Status))?;
        let c = &info.config;
        Ok(Status {
            bucket: self.inner.name.clone(),
            values: info.state.messages,
            history: c.max_messages_per_subject,
            ttl: c.max_age,
            storage: match c.storage {
                stream::StorageType::Memory => Storage::Memory,
                _ => Storage::File,
            },
            replicas: c.num_replicas,
            compression: c
                .compression
                .as_ref()
                .is_some_and(|x| *x != stream::Compression::None),
            bytes: info.state.bytes,
            per_key_ttl: c
                .allow_message_ttl
                .then(|| c.subject_delete_marker_ttl.unwrap_or_default()),
            atomic_batches: c.allow_atomic_publish,
            backing_stream: c.name.clone(),
            stream_info: info.clone(),
        })
    }
}
