//! Bucket handles: [`ReadOnlyBucket`] (reads, history, keys, watch, status) and [`Bucket`]
//! (all of that plus writes).

use std::future::{Future, IntoFuture};
use std::ops::Deref;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::stream;
use async_nats::HeaderMap;
use bytes::Bytes;
use tracing::Instrument as _;

use crate::client::ServerVersion;
use crate::entry::{
    batch_of, classify, expected_of, lease_of, Entry, Op, KV_LEASE, KV_OPERATION, NATS_TTL,
};
use crate::error::{Error, ErrorKind, Operation};
use crate::js::{
    Js, StoredMsg, EXPECTED_LAST_SUBJECT_SEQ, EXPECTED_LAST_SUBJECT_SEQ_SUBJECT, ROLLUP,
    TOO_MANY_RESULTS,
};
use crate::key::{Key, KeyFilter};
use crate::revision::{Expect, Revision, Ttl};
use crate::watch::{Include, WatchBuilder};

/// How often `create` re-reads and retries when the key's tombstone keeps changing under it.
const CREATE_ATTEMPTS: usize = 5;

/// Shared state of a bucket handle.
#[derive(Debug)]
pub(crate) struct Inner {
    pub(crate) js: Js,
    pub(crate) name: String,
    /// The name again, shared by every entry read from this bucket (no copy per entry).
    pub(crate) shared_name: std::sync::Arc<str>,
    pub(crate) stream: String,
    pub(crate) read_prefix: String,
    pub(crate) write_prefix: String,
    pub(crate) direct: bool,
    pub(crate) atomic: bool,
    /// The origin's stream (`KV_<origin>`) when the bucket is a mirror.
    pub(crate) mirror_of: Option<String>,
}

impl Inner {
    pub(crate) fn entry_from(&self, m: StoredMsg, delta: u64) -> Option<Entry> {
        let key = key_of_subject(&m.subject)?;
        let (op, removal, ttl) = classify(m.headers.as_ref());
        let batch = batch_of(m.headers.as_ref());
        let revision = Revision::new(m.seq)?;
        Some(Entry {
            bucket: self.shared_name.clone(),
            key: Key::from_server(key),
            value: m.payload,
            lease: lease_of(m.headers.as_ref(), revision),
            expected: expected_of(m.headers.as_ref()),
            revision,
            created: m.time,
            delta,
            op,
            removal,
            ttl,
            batch,
        })
    }

    async fn last_msg(&self, key: &Key) -> Result<Option<StoredMsg>, Error> {
        let subject = format!("{}{}", self.read_prefix, key);
        if self.direct {
            self.js.direct_last(&self.stream, &subject).await
        } else {
            self.leader_last(key).await
        }
    }

    async fn leader_last(&self, key: &Key) -> Result<Option<StoredMsg>, Error> {
        let subject = format!("{}{}", self.read_prefix, key);
        self.js
            .leader_get(&self.stream, serde_json::json!({ "last_by_subj": subject }))
            .await
    }

    /// Sends one write and returns the new revision.
    pub(crate) async fn write(
        &self,
        op: Op,
        key: &Key,
        value: Bytes,
        expect: Option<Expect>,
        ttl: Option<Ttl>,
    ) -> Result<Revision, Error> {
        self.write_on(op, key, value, expect, None, ttl, None).await
    }

    /// Sends one write whose expectation may apply to another key or a filter.
    #[allow(
        clippy::too_many_arguments,
        reason = "one private call site per write kind"
    )]
    pub(crate) async fn write_on(
        &self,
        op: Op,
        key: &Key,
        value: Bytes,
        expect: Option<Expect>,
        expect_on: Option<&KeyFilter>,
        ttl: Option<Ttl>,
        lease: Option<&str>,
    ) -> Result<Revision, Error> {
        let mut headers = self.write_headers(op, expect, ttl)?;
        if let Some(tag) = lease {
            headers.insert(KV_LEASE, tag);
        }
        if let Some(f) = expect_on {
            headers.insert(
                EXPECTED_LAST_SUBJECT_SEQ_SUBJECT,
                format!("{}{}", self.write_prefix, f).as_str(),
            );
        }
        let ack = self
            .js
            .publish(format!("{}{}", self.write_prefix, key), headers, value)
            .await?;
        Revision::new(ack.seq)
            .ok_or_else(|| Error::new(ErrorKind::Server, "server acknowledged sequence 0"))
    }

    pub(crate) fn write_headers(
        &self,
        op: Op,
        expect: Option<Expect>,
        ttl: Option<Ttl>,
    ) -> Result<HeaderMap, Error> {
        let mut h = HeaderMap::new();
        match op {
            Op::Put => {}
            Op::Delete => h.insert(KV_OPERATION, "DEL"),
            Op::Purge => {
                h.insert(KV_OPERATION, "PURGE");
                h.insert(ROLLUP, "sub");
            }
        }
        if let Some(e) = expect {
            h.insert(
                EXPECTED_LAST_SUBJECT_SEQ,
                e.header_value().to_string().as_str(),
            );
        }
        if let Some(t) = ttl {
            self.js
                .server_version()
                .require(ServerVersion::PER_KEY_TTL, "per-key TTL")?;
            h.insert(NATS_TTL, t.header_value().as_str());
        }
        Ok(h)
    }

    /// `create`: only if the key holds no live value. Over a tombstone or expiry marker it
    /// writes with the tombstone's revision as the expectation, keeping the TTL.
    async fn create(&self, key: &Key, value: Bytes, ttl: Option<Ttl>) -> Result<Revision, Error> {
        let mut expect = Expect::NoMessage;
        for _ in 0..CREATE_ATTEMPTS {
            match self
                .write(Op::Put, key, value.clone(), Some(expect), ttl)
                .await
            {
                Ok(rev) => return Ok(rev),
                Err(e) if e.is_conflict() => {}
                Err(e) => return Err(e),
            }
            // Something is there. A live value means "exists"; a tombstone may be replaced.
            // The leader answers, so a lagging replica cannot show us a stale tombstone.
            match self.leader_last(key).await? {
                None => expect = Expect::NoMessage,
                Some(m) => {
                    let (op, _, _) = classify(m.headers.as_ref());
                    let rev = Revision::new(m.seq);
                    if op == Op::Put {
                        return Err(Error::new(ErrorKind::AlreadyExists, "key already exists")
                            .with_current(rev));
                    }
                    expect = rev.map(Expect::Revision).unwrap_or(Expect::NoMessage);
                }
            }
        }
        Err(Error::new(
            ErrorKind::Conflict,
            "key kept changing while creating it",
        ))
    }
}

/// `$KV.<bucket>.<key>` → `<key>` (mirrored buckets keep their origin's bucket token).
pub(crate) fn key_of_subject(subject: &str) -> Option<String> {
    let rest = subject.strip_prefix("$KV.")?;
    let (_, key) = rest.split_once('.')?;
    Some(key.to_string())
}

/// Converts a key argument, remembering a validation failure for when the call is awaited.
fn to_key(key: impl AsRef<str>) -> Result<Key, Error> {
    Key::new(key.as_ref())
}

/// A read-only bucket handle (the seed's `RoKV`): reads, history, keys, watch and status;
/// no write methods exist on this type. Cheap to clone.
#[derive(Debug, Clone)]
pub struct ReadOnlyBucket {
    pub(crate) inner: Arc<Inner>,
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
    pub storage: crate::config::Storage,
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
        let key = to_key(key).map_err(|e| e.with_op(Operation::Get))?;
        let span = tracing::debug_span!("kv.get", bucket = %self.inner.name, key = %key, revision = tracing::field::Empty);
        async {
            let m = self.inner.last_msg(&key).await;
            let m = m.map_err(|e| e.with_op(Operation::Get).with_key(key.as_str()))?;
            let e = m.and_then(|m| self.inner.entry_from(m, 0));
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
        let key = to_key(key).map_err(|e| e.with_op(Operation::Get))?;
        let m = self
            .inner
            .leader_last(&key)
            .await
            .map_err(|e| e.with_op(Operation::Get).with_key(key.as_str()))?;
        Ok(m.and_then(|m| self.inner.entry_from(m, 0)))
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
        let key = to_key(key).map_err(|e| e.with_op(Operation::Get))?;
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
        Ok(m.and_then(|m| inner.entry_from(m, 0))
            .filter(|e| e.key == key))
    }

    /// Every revision the bucket still holds for `key`, oldest first (including tombstones).
    ///
    /// # Cancel safety
    /// Cancel safe: dropping the future removes the temporary consumer.
    pub async fn history(&self, key: impl AsRef<str>) -> Result<Vec<Entry>, Error> {
        let key = to_key(key).map_err(|e| e.with_op(Operation::History))?;
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

    /// The latest revision of every key matching `filter` — values, tombstones and markers —
    /// in one request (direct get batch, nats-server ≥ 2.11), and the revision the snapshot
    /// is consistent at.
    ///
    /// Like [`get`](Self::get) it may be answered by a lagging replica on replicated buckets:
    /// the snapshot is consistent, but possibly older than the latest write.
    ///
    /// # Cancel safety
    /// Cancel safe: it only reads.
    pub async fn snapshot(&self, filter: impl AsRef<str>) -> Result<Snapshot, Error> {
        let filter = KeyFilter::new(filter.as_ref()).map_err(|e| e.with_op(Operation::Get))?;
        let span = tracing::debug_span!("kv.snapshot", bucket = %self.inner.name, filter = %filter);
        async {
            let subject = format!("{}{}", self.inner.read_prefix, filter);
            let (msgs, as_of) = match self.snapshot_msgs(&subject).await {
                Err(e) if e.server_code() == Some(u64::from(TOO_MANY_RESULTS)) => {
                    return self.snapshot_by_watch(filter).await;
                }
                other => other.map_err(|e| e.with_op(Operation::Get))?,
            };
            let entries = msgs
                .into_iter()
                .filter_map(|m| self.inner.entry_from(m, 0))
                .collect();
            Ok(Snapshot { entries, as_of })
        }
        .instrument(span)
        .await
    }

    /// A snapshot too large for one direct-get answer (more than 1,024 keys match): the last
    /// value per key from a consumer instead, consistent at least as of the stream's last
    /// revision read before it started.
    async fn snapshot_by_watch(&self, filter: KeyFilter) -> Result<Snapshot, Error> {
        let info: stream::Info = self
            .inner
            .js
            .api(&format!("STREAM.INFO.{}", self.inner.stream), Bytes::new())
            .await
            .map_err(|e| e.with_op(Operation::Get))?;
        let entries = WatchBuilder::new(self.inner.clone(), Ok(vec![filter]))
            .include(Include::LastPerKey)
            .snapshot()
            .await?;
        Ok(Snapshot {
            entries,
            as_of: Revision::new(info.state.last_sequence),
        })
    }

    /// The last message of every subject matching `subject`, and the revision that is
    /// consistent at. When nothing matches, the answer carries no revision: then the stream's
    /// last sequence is read and the question asked again up to it, so the resume point
    /// covers writes that landed in between.
    async fn snapshot_msgs(
        &self,
        subject: &str,
    ) -> Result<(Vec<StoredMsg>, Option<Revision>), Error> {
        let js = &self.inner.js;
        let first = js
            .direct_multi_last(&self.inner.stream, subject, None)
            .await?;
        if first.1.is_some() {
            return Ok(first);
        }
        let info: stream::Info = js
            .api(&format!("STREAM.INFO.{}", self.inner.stream), Bytes::new())
            .await?;
        let Some(last) = Revision::new(info.state.last_sequence) else {
            return Ok((Vec::new(), None));
        };
        let (msgs, as_of) = js
            .direct_multi_last(&self.inner.stream, subject, Some(last))
            .await?;
        Ok((msgs, as_of.or(Some(last))))
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
        let info: stream::Info = self
            .inner
            .js
            .api(&format!("STREAM.INFO.{}", self.inner.stream), Bytes::new())
            .await
            .map_err(|e| e.with_op(Operation::Status))?;
        let c = &info.config;
        Ok(Status {
            bucket: self.inner.name.clone(),
            values: info.state.messages,
            history: c.max_messages_per_subject,
            ttl: c.max_age,
            storage: match c.storage {
                stream::StorageType::Memory => crate::config::Storage::Memory,
                _ => crate::config::Storage::File,
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

/// The latest revision of each key under a filter, as of one point in the bucket's history.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Snapshot {
    /// The latest entry of each matching key (values, tombstones and markers), by revision.
    pub entries: Vec<Entry>,
    /// The bucket's last revision when the snapshot was taken: nothing written up to it is
    /// missing. Set also when no key matches; `None` only for a bucket that was never
    /// written to.
    pub as_of: Option<Revision>,
}

impl Snapshot {
    /// The highest revision among the entries: the last revision under the filter.
    pub fn last_revision(&self) -> Option<Revision> {
        self.entries.iter().map(Entry::revision).max()
    }
}

/// A key filter argument: `&str`, `String`, [`Key`] or [`KeyFilter`]. Validation errors
/// surface when the watch starts.
#[derive(Debug)]
pub struct KeyFilterArg(Result<KeyFilter, Error>);

impl From<&str> for KeyFilterArg {
    fn from(s: &str) -> Self {
        KeyFilterArg(KeyFilter::new(s))
    }
}
impl From<String> for KeyFilterArg {
    fn from(s: String) -> Self {
        KeyFilterArg(KeyFilter::new(s))
    }
}
impl From<&String> for KeyFilterArg {
    fn from(s: &String) -> Self {
        KeyFilterArg(KeyFilter::new(s.as_str()))
    }
}
impl From<KeyFilter> for KeyFilterArg {
    fn from(f: KeyFilter) -> Self {
        KeyFilterArg(Ok(f))
    }
}
impl From<Key> for KeyFilterArg {
    fn from(k: Key) -> Self {
        KeyFilterArg(Ok(k.into()))
    }
}
impl From<&Key> for KeyFilterArg {
    fn from(k: &Key) -> Self {
        KeyFilterArg(Ok(k.clone().into()))
    }
}

/// A bucket handle with reads and writes. Cheap to clone. Every read of
/// [`ReadOnlyBucket`] is available through `Deref`.
///
/// ```no_run
/// # async fn demo(bucket: kvtk_core::Bucket) -> Result<(), kvtk_core::Error> {
/// use std::time::Duration;
/// let rev = bucket.create("jobs.lock", "me").ttl(Duration::from_secs(10)).await?;
/// let rev = bucket.update("jobs.lock", "me", rev).ttl(Duration::from_secs(10)).await?;
/// bucket.delete("jobs.lock").revision(rev).await?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct Bucket {
    ro: ReadOnlyBucket,
}

impl Deref for Bucket {
    type Target = ReadOnlyBucket;
    fn deref(&self) -> &ReadOnlyBucket {
        &self.ro
    }
}

impl Bucket {
    pub(crate) fn from_inner(inner: Arc<Inner>) -> Bucket {
        Bucket {
            ro: ReadOnlyBucket::from_inner(inner),
        }
    }

    /// A read-only handle on the same bucket.
    pub fn read_only(&self) -> ReadOnlyBucket {
        self.ro.clone()
    }

    pub(crate) fn inner(&self) -> &Arc<Inner> {
        &self.ro.inner
    }

    fn write(&self, kind: WriteKind, key: impl AsRef<str>, value: Bytes) -> Write<'_> {
        Write {
            inner: &self.ro.inner,
            kind,
            key: to_key(key),
            value,
            expect: None,
            expect_on: None,
            ttl: None,
            lease: None,
        }
    }

    /// Writes `value` under `key` unconditionally. Add `.ttl(d)` for a per-key TTL or
    /// `.expect(..)` to make it conditional.
    pub fn put(&self, key: impl AsRef<str>, value: impl Into<Bytes>) -> Write<'_> {
        self.write(WriteKind::Put, key, value.into())
    }

    /// Writes `value` only if `key` holds no live value — never written, or deleted, purged or
    /// expired. A `.ttl(d)` is kept in every case, also over a tombstone. Fails with
    /// [`ErrorKind::AlreadyExists`] otherwise, and with [`ErrorKind::InvalidArgument`] (nothing
    /// sent) when given an `.expect(..)` or `.expect_on(..)`.
    pub fn create(&self, key: impl AsRef<str>, value: impl Into<Bytes>) -> Write<'_> {
        self.write(WriteKind::Create, key, value.into())
    }

    /// Writes `value` only if the key's latest revision is `revision` (which may be a
    /// tombstone's). Fails with [`ErrorKind::Conflict`] otherwise. With `.ttl(d)` this is the
    /// lease-renewal primitive.
    pub fn update(
        &self,
        key: impl AsRef<str>,
        value: impl Into<Bytes>,
        revision: Revision,
    ) -> Write<'_> {
        let mut w = self.write(WriteKind::Put, key, value.into());
        w.expect = Some(Expect::Revision(revision));
        w
    }

    /// Deletes `key`, keeping history (a tombstone). Add `.revision(r)` to delete only if
    /// the key is at `r`. Returns the tombstone's revision.
    pub fn delete(&self, key: impl AsRef<str>) -> Write<'_> {
        self.write(WriteKind::Delete, key, Bytes::new())
    }

    /// Purges `key`: removes its history, leaving one purge marker. Add `.revision(r)` to
    /// purge only if the key is at `r`, and `.ttl(d)` to let the marker itself expire.
    pub fn purge(&self, key: impl AsRef<str>) -> Write<'_> {
        self.write(WriteKind::Purge, key, Bytes::new())
    }

    /// Starts a multi-key transaction. See [`crate::Txn`].
    pub fn txn(&self) -> crate::txn::Txn {
        crate::txn::Txn::new(self.inner().clone())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum WriteKind {
    Put,
    Create,
    Delete,
    Purge,
}

/// A pending write; await it to send. Returns the new revision.
///
/// # Cancel safety
/// Not cancel safe: once sent, the write may take effect even if the future is dropped
/// before the acknowledgement arrives. Conditional writes make a retry safe.
#[must_use = "a write does nothing until awaited"]
#[derive(Debug)]
pub struct Write<'a> {
    inner: &'a Inner,
    kind: WriteKind,
    key: Result<Key, Error>,
    value: Bytes,
    expect: Option<Expect>,
    expect_on: Option<Result<KeyFilter, Error>>,
    ttl: Option<Duration>,
    /// The `Kv-Lease` mark of a lease's own write (crate-internal).
    lease: Option<String>,
}

impl Write<'_> {
    /// A per-key TTL: whole seconds, at least one; anything else fails with
    /// [`ErrorKind::InvalidTtl`] when awaited. The bucket needs per-key TTLs enabled
    /// ([`BucketConfig::per_key_ttl`](crate::BucketConfig::per_key_ttl)); on a bucket without
    /// them the write fails with [`ErrorKind::FeatureDisabled`].
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = Some(ttl);
        self
    }

    /// Makes the write conditional on the key's latest revision. Not for
    /// [`create`](Bucket::create), which already expects the key to hold no live value: a
    /// create with an expectation fails with [`ErrorKind::InvalidArgument`].
    pub fn expect(mut self, expect: impl Into<Expect>) -> Self {
        self.expect = Some(expect.into());
        self
    }

    /// Makes the expectation of [`expect`](Self::expect) apply to *another* key, or to the
    /// last revision among all keys matching a filter, instead of the written key
    /// (`Nats-Expected-Last-Subject-Sequence-Subject`, nats-server ≥ 2.11).
    ///
    /// With a key this is an ownership-guarded write: write `data.x` only while `lock.a` is
    /// still at our revision. With a filter such as `lock.>` the write succeeds only if no key
    /// under `lock.` changed since the expected revision ([`Expect::NoMessage`]: none was
    /// ever written).
    ///
    /// **Replicated buckets:** the server checks a wildcard filter's expectation against the
    /// messages it has stored, not against a matching write still in flight (nats-server
    /// 2.15.1 tracks in-flight writes by exact subject): two writes can both pass. On R3, use
    /// a wildcard expectation only as an optimisation that something else confirms; an exact
    /// key's expectation is atomic.
    pub fn expect_on(mut self, key_or_filter: impl AsRef<str>, expect: impl Into<Expect>) -> Self {
        self.expect_on = Some(KeyFilter::new(key_or_filter.as_ref()));
        self.expect = Some(expect.into());
        self
    }

    /// Shorthand for `.expect(Expect::Revision(revision))`, for deletes and purges.
    pub fn revision(self, revision: Revision) -> Self {
        self.expect(Expect::Revision(revision))
    }

    /// Marks the write as a lease's own (see [`crate::lease`]).
    pub(crate) fn lease_tag(mut self, tag: String) -> Self {
        self.lease = Some(tag);
        self
    }

    async fn run(self) -> Result<Revision, Error> {
        let op = match (self.kind, self.expect) {
            (WriteKind::Create, _) => Operation::Create,
            (WriteKind::Put, Some(_)) => Operation::Update,
            (WriteKind::Put, None) => Operation::Put,
            (WriteKind::Delete, _) => Operation::Delete,
            (WriteKind::Purge, _) => Operation::Purge,
        };
        let key = self.key.map_err(|e| e.with_op(op))?;
        let expect_on = self
            .expect_on
            .transpose()
            .map_err(|e| e.with_op(op).with_key(key.as_str()))?;
        if self.expect.is_some() && self.kind == WriteKind::Create {
            return Err(Error::invalid_argument(
                "create takes no expectation (it expects no live value); \
                 use put().expect() or put().expect_on()",
            )
            .with_op(op)
            .with_key(key.as_str()));
        }
        let ttl = self
            .ttl
            .map(Ttl::new)
            .transpose()
            .map_err(|e| e.with_op(op).with_key(key.as_str()))?;
        let span = tracing::debug_span!(
            "kv.write",
            op = %op,
            bucket = %self.inner.name,
            key = %key,
            expect = self.expect.map(|e| e.header_value()),
            ttl_s = ttl.map(Ttl::as_secs),
            revision = tracing::field::Empty,
        );
        let inner = self.inner;
        let value = self.value;
        let expect = self.expect;
        let tag = self.lease;
        let res = async {
            let on = expect_on.as_ref();
            let tag = tag.as_deref();
            let res = match self.kind {
                WriteKind::Create => inner.create(&key, value, ttl).await,
                WriteKind::Put => {
                    inner
                        .write_on(Op::Put, &key, value, expect, on, ttl, tag)
                        .await
                }
                WriteKind::Delete => {
                    inner
                        .write_on(Op::Delete, &key, value, expect, on, ttl, tag)
                        .await
                }
                WriteKind::Purge => {
                    inner
                        .write_on(Op::Purge, &key, value, expect, on, ttl, tag)
                        .await
                }
            };
            match &res {
                Ok(r) => {
                    tracing::Span::current().record("revision", r.get());
                }
                Err(e) => tracing::debug!(error = %e, "write failed"),
            }
            res
        }
        .instrument(span)
        .await;
        res.map_err(|e| e.with_op(op).with_key(key.as_str()))
    }
}

impl<'a> IntoFuture for Write<'a> {
    type Output = Result<Revision, Error>;
    type IntoFuture = Pin<Box<dyn Future<Output = Self::Output> + Send + 'a>>;
    fn into_future(self) -> Self::IntoFuture {
        Box::pin(self.run())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subjects_to_keys() {
        assert_eq!(key_of_subject("$KV.b.a.b.c").as_deref(), Some("a.b.c"));
        assert_eq!(key_of_subject("$KV.b"), None);
        assert_eq!(key_of_subject("other"), None);
    }
}
