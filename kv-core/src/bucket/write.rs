//! [`Bucket`]: the read-write handle (every read through `Deref` to [`ReadOnlyBucket`]) and
//! [`Write`], the awaitable builder of one write.

use std::future::{Future, IntoFuture};
use std::ops::Deref;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::future::Either;
use futures::FutureExt as _;
use tracing::Instrument as _;

use crate::bucket::inner::{Inner, Marks, WriteSubject};
use crate::bucket::read::ReadOnlyBucket;
use crate::entry::Op;
use crate::error::{Error, Operation};
use crate::key::{Key, KeyFilter};
use crate::revision::{Expect, Revision, Ttl};
use crate::txn::Txn;

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

    /// The same bucket with every request of the new handle bounded by `timeout` instead of
    /// its [`Kv`](crate::Kv)'s: a bucket made or opened with a generous timeout, say, then
    /// used with a short one so that a lost reply shows quickly. Sends nothing; the new handle
    /// is another handle ([`same_handle`](ReadOnlyBucket::same_handle) says `false`).
    pub fn with_timeout(&self, timeout: Duration) -> Bucket {
        let mut inner = Inner::clone(&self.ro.inner);
        inner.js.timeout = timeout;
        Bucket::from_inner(Arc::new(inner))
    }

    pub(crate) fn inner(&self) -> &Arc<Inner> {
        &self.ro.inner
    }

    fn write(&self, kind: WriteKind, key: impl AsRef<str>, value: Bytes) -> Write<'_> {
        self.write_on(kind, self.ro.inner.write_subject(key.as_ref()), value)
    }

    fn write_on(
        &self,
        kind: WriteKind,
        subject: Result<WriteSubject, Error>,
        value: Bytes,
    ) -> Write<'_> {
        Write {
            inner: &self.ro.inner,
            kind,
            subject,
            value,
            expect: None,
            expect_on: None,
            ttl: None,
            lease: None,
            format: None,
        }
    }

    /// Writes `value` under `key` unconditionally. Add `.ttl(d)` for a per-key TTL or
    /// `.expect(..)` to make it conditional.
    pub fn put(&self, key: impl AsRef<str>, value: impl Into<Bytes>) -> Write<'_> {
        self.write(WriteKind::Put, key, value.into())
    }

    /// As [`put`](Self::put), on a key that was checked already (the lease layer's, which
    /// writes its key at every creation, renewal and release).
    pub(crate) fn put_key(&self, key: &Key, value: Bytes) -> Write<'_> {
        let subject = self.ro.inner.key_subject(key.as_str());
        self.write_on(WriteKind::Put, Ok(subject), value)
    }

    /// As [`delete`](Self::delete), on a key that was checked already.
    pub(crate) fn delete_key(&self, key: &Key) -> Write<'_> {
        let subject = self.ro.inner.key_subject(key.as_str());
        self.write_on(WriteKind::Delete, Ok(subject), Bytes::new())
    }

    /// Writes `value` only if `key` holds no live value — never written, or deleted, purged or
    /// expired. A `.ttl(d)` is kept in every case, also over a tombstone. Fails with
    /// [`ErrorKind::AlreadyExists`](crate::ErrorKind::AlreadyExists) otherwise, and with
    /// [`ErrorKind::InvalidArgument`](crate::ErrorKind::InvalidArgument) (nothing sent) when
    /// given an `.expect(..)` or `.expect_on(..)`.
    pub fn create(&self, key: impl AsRef<str>, value: impl Into<Bytes>) -> Write<'_> {
        self.write(WriteKind::Create, key, value.into())
    }

    /// Writes `value` only if the key's latest revision is `revision` (which may be a
    /// tombstone's). Fails with [`ErrorKind::Conflict`](crate::ErrorKind::Conflict) otherwise.
    /// With `.ttl(d)` this is the lease-renewal primitive.
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
    pub fn txn(&self) -> Txn {
        Txn::new(self.inner().clone())
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
    /// The key, checked, as the subject it is written on.
    subject: Result<WriteSubject, Error>,
    value: Bytes,
    expect: Option<Expect>,
    /// The key or filter of the expectation, checked, as its subject.
    expect_on: Option<Result<String, Error>>,
    ttl: Option<Duration>,
    /// The `Kv-Lease` mark of a lease's own write (crate-internal).
    lease: Option<String>,
    /// The `Kv-Format` header: a recipe's format version (see [`crate::format`]).
    format: Option<u32>,
}

impl<'a> Write<'a> {
    /// A per-key TTL: whole seconds, at least one; anything else fails with
    /// [`ErrorKind::InvalidTtl`](crate::ErrorKind::InvalidTtl) when awaited. The bucket needs
    /// per-key TTLs enabled ([`BucketConfig::per_key_ttl`](crate::BucketConfig::per_key_ttl));
    /// on a bucket without them the write fails with
    /// [`ErrorKind::FeatureDisabled`](crate::ErrorKind::FeatureDisabled).
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = Some(ttl);
        self
    }

    /// As [`ttl`](Self::ttl), when there is one.
    pub(crate) fn ttl_opt(mut self, ttl: Option<Duration>) -> Self {
        self.ttl = ttl;
        self
    }

    /// Makes the write conditional on the key's latest revision. Not for
    /// [`create`](Bucket::create), which already expects the key to hold no live value: a
    /// create with an expectation fails with
    /// [`ErrorKind::InvalidArgument`](crate::ErrorKind::InvalidArgument).
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
        self.expect_on = Some(self.inner.expect_subject(key_or_filter.as_ref()));
        self.expect = Some(expect.into());
        self
    }

    /// As [`expect_on`](Self::expect_on), with a filter that was checked already.
    pub(crate) fn expect_on_filter(mut self, filter: &KeyFilter, expect: Expect) -> Self {
        self.expect_on = Some(Ok(self.inner.subject_of(filter.as_str())));
        self.expect = Some(expect);
        self
    }

    /// Shorthand for `.expect(Expect::Revision(revision))`, for deletes and purges.
    pub fn revision(self, revision: Revision) -> Self {
        self.expect(Expect::Revision(revision))
    }

    /// Writes a recipe's format version into the `Kv-Format` header, for values whose own
    /// bytes cannot carry one (see [`crate::format`]).
    pub fn format(mut self, version: u32) -> Self {
        self.format = Some(version);
        self
    }

    /// As [`format`](Self::format), when there is one.
    pub(crate) fn format_opt(mut self, version: Option<u32>) -> Self {
        self.format = version;
        self
    }

    /// Marks the write as a lease's own (see [`crate::lease`]).
    pub(crate) fn lease_tag(mut self, tag: String) -> Self {
        self.lease = Some(tag);
        self
    }

    /// The operation this write is, as errors and traces name it.
    fn operation(&self) -> Operation {
        match (self.kind, self.expect) {
            (WriteKind::Create, _) => Operation::Create,
            (WriteKind::Put, Some(_)) => Operation::Update,
            (WriteKind::Put, None) => Operation::Put,
            (WriteKind::Delete, _) => Operation::Delete,
            (WriteKind::Purge, _) => Operation::Purge,
        }
    }

    /// The write with its arguments validated; nothing is sent when one is invalid.
    fn check(self, op: Operation) -> Result<Checked<'a>, Error> {
        let subject = self.subject.map_err(|e| e.with_op(op))?;
        let at_key = |e: Error| e.with_op(op).with_key(subject.key());
        let expect_on = self.expect_on.transpose().map_err(at_key)?;
        if self.expect.is_some() && self.kind == WriteKind::Create {
            return Err(at_key(Error::invalid_argument(
                "create takes no expectation (it expects no live value); \
                 use put().expect() or put().expect_on()",
            )));
        }
        let ttl = self.ttl.map(Ttl::new).transpose().map_err(at_key)?;
        Ok(Checked {
            inner: self.inner,
            kind: self.kind,
            subject,
            value: self.value,
            expect: self.expect,
            expect_on,
            ttl,
            lease: self.lease,
            format: self.format,
        })
    }

    /// The write, sent, as a future of its own (unboxed: for a caller whose future is boxed
    /// already, or lives on a stack). Its arguments are checked and its headers made first:
    /// nothing is sent when one is invalid, and the future holds little more than the
    /// request (combinators, not an async block that would hold the write twice).
    pub(crate) fn send(self) -> impl Future<Output = Result<Revision, Error>> + Send + 'a {
        let op = self.operation();
        match self.check(op) {
            Ok(write) => Either::Left(write.run(op)),
            Err(e) => Either::Right(std::future::ready(Err(e))),
        }
    }
}

/// A [`Write`] whose arguments are valid: ready to send.
struct Checked<'a> {
    inner: &'a Inner,
    kind: WriteKind,
    subject: WriteSubject,
    value: Bytes,
    expect: Option<Expect>,
    expect_on: Option<String>,
    ttl: Option<Ttl>,
    lease: Option<String>,
    format: Option<u32>,
}

impl<'a> Checked<'a> {
    /// Sends the write in its span; returns the new revision.
    fn run(self, op: Operation) -> impl Future<Output = Result<Revision, Error>> + Send + 'a {
        let span = tracing::debug_span!(
            "kv.write",
            op = %op,
            bucket = %self.inner.name,
            key = %self.subject.key(),
            expect = self.expect.map(|e| e.header_value()),
            ttl_s = self.ttl.map(Ttl::as_secs),
            revision = tracing::field::Empty,
        );
        let Checked {
            inner,
            kind,
            subject,
            value,
            expect,
            expect_on,
            ttl,
            lease,
            format,
        } = self;
        let op_kind = match kind {
            // Boxed: a create may read and write again, and its future would make every
            // write's as large as itself.
            WriteKind::Create => {
                let create = inner.create(subject.clone(), value, ttl, format);
                return Either::Left(finish(Box::pin(create), span, subject, op));
            }
            WriteKind::Put => Op::Put,
            WriteKind::Delete => Op::Delete,
            WriteKind::Purge => Op::Purge,
        };
        let marks = Marks { lease, format };
        let write = inner.write_on(op_kind, &subject, value, expect, expect_on, ttl, marks);
        Either::Right(finish(write, span, subject, op))
    }
}

/// `sending` in `span`, whose revision it records; an error names the operation and key.
fn finish<'a>(
    sending: impl Future<Output = Result<Revision, Error>> + Send + 'a,
    span: tracing::Span,
    subject: WriteSubject,
    op: Operation,
) -> impl Future<Output = Result<Revision, Error>> + Send + 'a {
    sending.instrument(span.clone()).map(move |res| {
        match &res {
            Ok(r) => {
                span.record("revision", r.get());
            }
            Err(e) => tracing::debug!(parent: &span, error = %e, "write failed"),
        }
        res.map_err(|e| e.with_op(op).with_key(subject.key()))
    })
}

impl<'a> IntoFuture for Write<'a> {
    type Output = Result<Revision, Error>;
    type IntoFuture = Pin<Box<dyn Future<Output = Self::Output> + Send + 'a>>;
    fn into_future(self) -> Self::IntoFuture {
        Box::pin(self.send())
    }
}
