//! Multi-key transactions: compare revisions of several keys and write several keys,
//! all or nothing, in one round trip (JetStream atomic batch, nats-server ≥ 2.12).
//!
//! ```no_run
//! # async fn demo(bucket: kvtk_core::Bucket, rev_a: kvtk_core::Revision) -> Result<(), kvtk_core::Error> {
//! let committed = bucket
//!     .txn()
//!     .update("account.a", "90", rev_a)   // only if account.a is still at rev_a
//!     .create("audit.1", "moved 10")      // only if audit.1 has no message yet
//!     .put("account.b", "110")
//!     .commit()
//!     .await?;
//! println!("committed at {:?}", committed.revision("account.b"));
//! # Ok(()) }
//! ```
//!
//! Cost: one round trip, but on **file** storage the server syncs the batch to disk before it
//! acknowledges the commit — about 11 ms per transaction on our test machine, against ~0.2 ms
//! for a single write (memory storage: ~0.1 ms). Use transactions where atomicity matters,
//! not on hot paths.
//!
//! Every write may carry its own expectation. A compare-only [`check`](Txn::check) rides on
//! a write to another key (`Nats-Expected-Last-Subject-Sequence-Subject`), so a transaction
//! needs at least as many unconditional writes as it has compare-only checks.
//!
//! A watcher sees a transaction's entries with contiguous revisions, each carrying
//! [`Entry::batch`](crate::Entry::batch); the last one has `commit` set. Apply on the commit
//! entry to never observe half a transaction.
//!
//! On a conflict the error has kind [`ErrorKind::Conflict`]; its [`Error::key`] names the
//! key whose expectation failed (found by re-reading the expected keys from the stream
//! leader, as the server's answer does not say which message failed).

use std::sync::Arc;
use std::time::Duration;

use async_nats::HeaderMap;
use bytes::Bytes;
use tracing::Instrument as _;

use crate::bucket::inner::{Inner, Marks};
use crate::entry::Op;
use crate::error::{Error, ErrorKind, Operation};
use crate::js::name::{BATCH_COMMIT, BATCH_ID, BATCH_SEQ};
use crate::js::{parse_api, PubAck};
use crate::key::{Key, KeyFilter};
use crate::revision::{Expect, Revision, Ttl};
use crate::version::ServerVersion;

/// The most messages one atomic batch may hold (server limit).
pub const MAX_TXN_OPS: usize = 1000;

#[derive(Debug, Clone)]
struct TxnOp {
    key: Key,
    op: Op,
    value: Bytes,
    expect: Option<Expect>,
    ttl: Option<Duration>,
    /// The expectation applies to this key or filter instead of the written key.
    expect_on: Option<KeyFilter>,
    /// The `Kv-Lease` mark of a lease's creating write.
    lease: Option<String>,
    /// The `Kv-Format` header of a lease's creating write (see [`crate::format`]).
    format: Option<u32>,
}

/// A compare-only check: a key and what it must be at for the transaction to commit.
type Check = (Key, Expect);

/// A transaction being built. Nothing is sent until [`commit`](Txn::commit).
#[must_use = "a transaction does nothing until committed"]
#[derive(Debug)]
pub struct Txn {
    inner: Arc<Inner>,
    ops: Vec<TxnOp>,
    checks: Vec<Check>,
    error: Option<Error>,
}

/// A committed transaction: the revision each write got.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Committed {
    revisions: Vec<(Key, Revision)>,
}

impl Committed {
    /// The revision written for `key`.
    pub fn revision(&self, key: &str) -> Option<Revision> {
        self.revisions
            .iter()
            .find(|(k, _)| k.as_str() == key)
            .map(|(_, r)| *r)
    }
    /// Every write's key and revision, in order (revisions are contiguous).
    pub fn revisions(&self) -> &[(Key, Revision)] {
        &self.revisions
    }
    /// The last revision of the transaction.
    pub fn last_revision(&self) -> Option<Revision> {
        self.revisions.last().map(|(_, r)| *r)
    }
}

impl Txn {
    pub(crate) fn new(inner: Arc<Inner>) -> Txn {
        Txn {
            inner,
            ops: Vec::new(),
            checks: Vec::new(),
            error: None,
        }
    }

    fn add(mut self, key: &str, op: Op, value: Bytes, expect: Option<Expect>) -> Self {
        match Key::new(key) {
            Ok(key) => self.ops.push(TxnOp {
                key,
                op,
                value,
                expect,
                ttl: None,
                expect_on: None,
                lease: None,
                format: None,
            }),
            Err(e) => {
                self.error.get_or_insert(e);
            }
        }
        self
    }

    /// Writes `value` under `key`.
    pub fn put(self, key: &str, value: impl Into<Bytes>) -> Self {
        self.add(key, Op::Put, value.into(), None)
    }
    /// Writes `value` only if `key` has no message at all ([`Expect::NoMessage`]). Unlike
    /// [`crate::Bucket::create`], a tombstone counts as a message here: to re-create a deleted
    /// key inside a transaction, use [`update`](Txn::update) with the tombstone's revision.
    pub fn create(self, key: &str, value: impl Into<Bytes>) -> Self {
        self.add(key, Op::Put, value.into(), Some(Expect::NoMessage))
    }
    /// Writes `value` only if `key` is at `revision`.
    pub fn update(self, key: &str, value: impl Into<Bytes>, revision: Revision) -> Self {
        self.add(key, Op::Put, value.into(), Some(Expect::Revision(revision)))
    }
    /// Deletes `key`.
    pub fn delete(self, key: &str) -> Self {
        self.add(key, Op::Delete, Bytes::new(), None)
    }
    /// Deletes `key` only if it is at `revision`.
    pub fn delete_if(self, key: &str, revision: Revision) -> Self {
        self.add(
            key,
            Op::Delete,
            Bytes::new(),
            Some(Expect::Revision(revision)),
        )
    }
    /// Purges `key`.
    pub fn purge(self, key: &str) -> Self {
        self.add(key, Op::Purge, Bytes::new(), None)
    }
    /// A lease's creating write: `put` with a TTL, an expectation (on the key itself or on
    /// `expect_on`) and the lease's mark.
    pub(crate) fn lease_write(
        mut self,
        key: Key,
        value: Bytes,
        ttl: Option<Duration>,
        expect: Option<(Option<KeyFilter>, Expect)>,
        (tag, format): (String, Option<u32>),
    ) -> Self {
        let (expect_on, expect) = match expect {
            Some((on, e)) => (on, Some(e)),
            None => (None, None),
        };
        self.ops.push(TxnOp {
            key,
            op: Op::Put,
            value,
            expect,
            ttl,
            expect_on,
            lease: Some(tag),
            format,
        });
        self
    }

    /// Gives the write added last a per-key TTL.
    pub fn ttl(mut self, ttl: Duration) -> Self {
        match self.ops.last_mut() {
            Some(op) => op.ttl = Some(ttl),
            None => {
                self.error
                    .get_or_insert(Error::invalid_argument("ttl() needs a write before it"));
            }
        }
        self
    }
    /// Commits only if `key` meets `expect`, without writing `key`.
    pub fn check(mut self, key: &str, expect: impl Into<Expect>) -> Self {
        match Key::new(key) {
            Ok(k) => self.checks.push((k, expect.into())),
            Err(e) => {
                self.error.get_or_insert(e);
            }
        }
        self
    }

    /// Plans the messages: (key, headers, value) in order.
    fn plan(&self) -> Result<Vec<(Key, HeaderMap, Bytes)>, Error> {
        self.validate()?;
        let (ops, riders) = self.merge_checks()?;
        let mut riders = riders.into_iter();
        let mut out = Vec::with_capacity(ops.len());
        for o in &ops {
            let h = self.headers(o, &mut riders)?;
            out.push((o.key.clone(), h, o.value.clone()));
        }
        if riders.next().is_some() {
            return Err(Error::invalid_argument(
                "more compare-only checks than unconditional writes to carry them",
            ));
        }
        Ok(out)
    }

    /// Refuses, before anything is sent, a transaction built with an invalid argument, one
    /// with no write or more than the server takes, and one that writes a key twice.
    fn validate(&self) -> Result<(), Error> {
        if let Some(e) = &self.error {
            return Err(Error::new(e.kind(), e.to_string()));
        }
        if self.ops.is_empty() {
            return Err(Error::invalid_argument(
                "a transaction needs at least one write",
            ));
        }
        if self.ops.len() > MAX_TXN_OPS {
            return Err(Error::invalid_argument(format!(
                "a transaction holds at most {MAX_TXN_OPS} writes, got {}",
                self.ops.len()
            )));
        }
        for (i, a) in self.ops.iter().enumerate() {
            if self.ops[..i].iter().any(|b| b.key == a.key) {
                return Err(Error::invalid_argument(format!(
                    "key {:?} is written twice in one transaction",
                    a.key.as_str()
                )));
            }
        }
        Ok(())
    }

    /// The writes with the checks on written keys merged into their own expectation, and the
    /// compare-only checks left to ride on other writes.
    fn merge_checks(&self) -> Result<(Vec<TxnOp>, Vec<Check>), Error> {
        let mut ops = self.ops.clone();
        let mut riders = Vec::new();
        for (k, e) in &self.checks {
            match ops.iter_mut().find(|o| &o.key == k) {
                Some(o) => match o.expect {
                    None => o.expect = Some(*e),
                    Some(x) if x == *e => {}
                    Some(_) => {
                        return Err(Error::invalid_argument(format!(
                            "key {:?} has two different expectations",
                            k.as_str()
                        )))
                    }
                },
                None => riders.push((k.clone(), *e)),
            }
        }
        Ok((ops, riders))
    }

    /// The headers of one write. A write without an expectation of its own carries the next
    /// compare-only check, as an expectation on the checked key.
    fn headers(
        &self,
        o: &TxnOp,
        riders: &mut impl Iterator<Item = Check>,
    ) -> Result<HeaderMap, Error> {
        let ttl = o.ttl.map(Ttl::new).transpose()?;
        let rider = if o.expect.is_none() {
            riders.next()
        } else {
            None
        };
        let (expect, on) = match &rider {
            Some((k, e)) => (Some(*e), Some(k.as_str())),
            None => (o.expect, o.expect_on.as_ref().map(KeyFilter::as_str)),
        };
        let marks = Marks {
            lease: o.lease.clone(),
            format: o.format,
        };
        let on = on.map(|k| self.inner.subject_of(k));
        self.inner.write_headers(o.op, expect, on, ttl, marks)
    }

    /// Sends the transaction as one atomic batch.
    ///
    /// # Cancel safety
    /// Not cancel safe: if dropped after the commit message is sent, the transaction may
    /// have committed. If dropped before, the server abandons the incomplete batch after 10 s.
    pub async fn commit(self) -> Result<Committed, Error> {
        let span = tracing::debug_span!("kv.txn", bucket = %self.inner.name, writes = self.ops.len(), checks = self.checks.len());
        let res = self.commit_inner().instrument(span).await;
        res.map_err(|e| e.with_op(Operation::Transaction))
    }

    async fn commit_inner(&self) -> Result<Committed, Error> {
        self.check_enabled()?;
        let plan = self.plan()?;
        let n = plan.len();
        let ack = self.send(plan).await?;
        self.committed(&ack, n)
    }

    /// Transactions need a server and a bucket with atomic batches.
    fn check_enabled(&self) -> Result<(), Error> {
        self.inner
            .js
            .server_version()
            .require(ServerVersion::ATOMIC_BATCH, "transactions (atomic batch)")?;
        if !self.inner.atomic {
            return Err(Error::new(
                ErrorKind::FeatureDisabled,
                "the bucket was not created with atomic batches enabled",
            ));
        }
        Ok(())
    }

    /// Sends the planned messages as one batch: all but the last without asking for a reply,
    /// the last with the commit mark, whose acknowledgement answers for the whole batch.
    async fn send(&self, plan: Vec<(Key, HeaderMap, Bytes)>) -> Result<PubAck, Error> {
        let n = plan.len();
        let batch_id = uuid::Uuid::new_v4().simple().to_string();
        let client = &self.inner.js.client;
        let mut last = None;
        for (i, (key, mut h, value)) in plan.into_iter().enumerate() {
            h.insert(BATCH_ID, batch_id.as_str());
            h.insert(BATCH_SEQ, (i + 1).to_string());
            let subject = self.inner.subject_of(key.as_str());
            if i + 1 == n {
                h.insert(BATCH_COMMIT, "1");
                last = Some((subject, h, value));
            } else {
                // No reply wanted: the whole batch is answered by the commit.
                client
                    .publish_with_headers(subject, h, value)
                    .await
                    .map_err(|e| {
                        Error::new(ErrorKind::Connection, "cannot publish").with_source(e)
                    })?;
            }
        }
        let Some((subject, h, value)) = last else {
            return Err(Error::invalid_argument(
                "a transaction needs at least one write",
            ));
        };
        let msg = self.inner.js.request(subject, Some(h), value).await?;
        match parse_api(&msg.payload) {
            Err(e) if e.is_conflict() => Err(self.name_conflict(e).await),
            other => other,
        }
    }

    /// The revision each of the `n` writes got: contiguous, the last one the commit's.
    fn committed(&self, ack: &PubAck, n: usize) -> Result<Committed, Error> {
        let n = n as u64;
        if ack.count.is_some_and(|c| c != n) {
            return Err(Error::new(
                ErrorKind::Server,
                format!("batch committed {:?} messages, sent {n}", ack.count),
            ));
        }
        let first = ack.seq.checked_sub(n.saturating_sub(1)).ok_or_else(|| {
            Error::new(
                ErrorKind::Server,
                format!("server acknowledged sequence {} for {n} writes", ack.seq),
            )
        })?;
        let revisions = self
            .ops
            .iter()
            .enumerate()
            .filter_map(|(i, o)| Revision::new(first + i as u64).map(|r| (o.key.clone(), r)))
            .collect();
        Ok(Committed { revisions })
    }

    /// Finds which expectation failed by reading the expected keys from the leader.
    async fn name_conflict(&self, err: Error) -> Error {
        let expected = self
            .ops
            .iter()
            .filter_map(|o| o.expect.map(|e| (o.key.clone(), e)))
            .chain(self.checks.iter().cloned());
        for (key, expect) in expected {
            let current = match self.inner.leader_entry(&key).await {
                Ok(c) => c,
                Err(_) => continue,
            };
            let ok = match (expect, current) {
                (Expect::NoMessage, None) => true,
                (Expect::Revision(r), Some(c)) => r == c,
                _ => false,
            };
            if !ok {
                return Error::new(
                    ErrorKind::Conflict,
                    format!(
                        "expected {key} at {}, it is at {}",
                        match expect {
                            Expect::NoMessage => "no message".to_string(),
                            Expect::Revision(r) => format!("revision {r}"),
                        },
                        current.map_or("no message".to_string(), |r| format!("revision {r}"))
                    ),
                )
                .with_key(key.as_str())
                .with_current(current)
                .with_source(err);
            }
        }
        err
    }
}
