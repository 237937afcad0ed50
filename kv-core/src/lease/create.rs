//! Creating leases: [`CreateLease`] (one key, with lost-ack adoption) and [`create_all`]
//! (several keys in one transaction).

use std::future::{Future, IntoFuture};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::time::Instant;

use super::clock::LeaseConfig;
use super::held::Lease;
use super::keeper::Keeper;
use super::state::{Created, State, ATTEMPTS};
use crate::bucket::Bucket;
use crate::entry::{Entry, LeaseTag};
use crate::error::{Error, ErrorKind, Operation};
use crate::key::{Key, KeyArg, KeyFilter};
use crate::retry::{Backoff, Retrying};
use crate::revision::{Expect, Revision, Ttl};
use mine::Mine;
use unsure::Unsure;

mod mine;
mod unsure;

impl Keeper {
    /// Starts creating a lease on `key` holding `value`; `.await` it. See [`CreateLease`].
    /// A [`Key`] given is shared by the lease, not copied.
    pub fn lease(&self, key: impl Into<KeyArg>, value: impl Into<Bytes>) -> CreateLease {
        CreateLease::new(self.clone(), key.into(), value.into())
    }
}

/// A pending lease creation; `.await` it.
///
/// The creating write is `put(key, value).ttl(ttl)`, conditional on the expectation given,
/// or else on the key's own state (see [`previous`](Self::previous)): every write of a
/// creation is conditional, so a delayed duplicate can never land after another. When an
/// outcome is unknown (timeout, connection lost), the stream leader is asked whether our
/// write was applied — it carries our nonce — before retrying, so a lost acknowledgement
/// never leaves an orphaned lease behind nor creates a second one.
///
/// # Cancel safety
/// Not cancel safe: the creating write may be applied although the future was dropped. The
/// key then expires after its TTL, as nobody renews it; a lease bound to a session has no
/// TTL, and its entry is removed in the background instead, once a renewal of the session
/// (sent at once) shows that no write of ours can land any more (a task of the keeper, which
/// [`Keeper::shutdown`] waits for). The same holds when the creation fails after a write
/// whose outcome it could not learn.
#[must_use = "a lease is not created until awaited"]
#[derive(Debug)]
pub struct CreateLease {
    keeper: Keeper,
    /// `None` once taken (see `take_key`).
    key: Option<Result<Key, Error>>,
    value: Bytes,
    config: Option<LeaseConfig>,
    expect: Option<Expect>,
    expect_on: Option<Result<KeyFilter, Error>>,
    tombstone_ttl: Option<Duration>,
    previous: Option<Revision>,
    nonce: Option<u128>,
    format: Option<u32>,
    /// The session's lease state, for a lease bound to it.
    parent: Option<Arc<State>>,
}

impl CreateLease {
    fn new(keeper: Keeper, key: KeyArg, value: Bytes) -> CreateLease {
        CreateLease {
            keeper,
            key: Some(key.0),
            value,
            config: None,
            expect: None,
            expect_on: None,
            tombstone_ttl: None,
            previous: None,
            nonce: None,
            format: None,
            parent: None,
        }
    }

    /// Without [`expect`](Self::expect): the key's revision as far as the caller knows
    /// (e.g. the tombstone of its previous lease on the key), which saves a read. The
    /// creation then replaces whatever the key holds, always conditionally.
    pub fn previous(mut self, revision: Option<Revision>) -> Self {
        self.previous = revision;
        self
    }

    /// The lease's timing (default: the keeper's).
    pub fn config(mut self, config: LeaseConfig) -> Self {
        self.config = Some(config);
        self
    }

    /// Makes the creating write conditional on the key's latest revision.
    pub fn expect(mut self, expect: impl Into<Expect>) -> Self {
        self.expect = Some(expect.into());
        self
    }

    /// Makes the creating write conditional on another key or a filter (see
    /// [`Write::expect_on`](crate::Write::expect_on)).
    pub fn expect_on(mut self, key_or_filter: impl AsRef<str>, expect: impl Into<Expect>) -> Self {
        self.expect_on = Some(KeyFilter::new(key_or_filter.as_ref()));
        self.expect = Some(expect.into());
        self
    }

    /// Gives the release's tombstone a TTL, so released keys disappear from the bucket.
    pub fn tombstone_ttl(mut self, ttl: Duration) -> Self {
        self.tombstone_ttl = Some(ttl);
        self
    }

    /// Writes a recipe's format version into the `Kv-Format` header of every write of the
    /// lease that leaves a value (creation, renewals, hand-over), for values whose own bytes
    /// cannot carry one (see [`crate::format`]).
    pub fn format(mut self, version: u32) -> Self {
        self.format = Some(version);
        self
    }

    /// Gives the new lease the identity (nonce) of `other`, a lease of ours on another key,
    /// so that readers can tell from any write of either that one owner holds both (an
    /// election's leader key names the candidate registration of its leader this way).
    pub fn same_owner_as(mut self, other: &Lease) -> Self {
        self.nonce = Some(other.nonce());
        self
    }

    /// Uses a given nonce instead of a random one (tests that simulate lost writes). Only
    /// with the `testing` feature.
    #[cfg(feature = "testing")]
    pub fn nonce(self, nonce: u128) -> Self {
        self.with_nonce(nonce)
    }

    /// Uses `nonce` as the lease's identity (a session, whose key is named by it).
    pub(super) fn with_nonce(mut self, nonce: u128) -> Self {
        self.nonce = Some(nonce);
        self
    }

    /// Binds the lease to the session whose lease state is `parent` and whose id is `nonce`:
    /// written without a TTL, with the session's mark, never renewed, ended with the session.
    pub(super) fn bound_to(mut self, parent: Arc<State>, nonce: u128) -> Self {
        self.parent = Some(parent);
        self.with_nonce(nonce)
    }

    /// The TTL of the creating write: the lease's, or none when bound to a session.
    fn write_ttl(&self, cfg: &LeaseConfig) -> Option<Duration> {
        self.parent.is_none().then(|| cfg.ttl().as_duration())
    }

    /// The key, taken out of the builder (it is consumed once; no error is made in its
    /// place, which would cost allocations at every creation).
    fn take_key(&mut self) -> Result<Key, Error> {
        self.key
            .take()
            .unwrap_or_else(|| Err(Error::new(ErrorKind::Internal, "lease key taken twice")))
            .map_err(|e| e.with_op(Operation::Lease))
    }

    /// The lease's timing and nonce: the caller's, else the keeper's timing and a new nonce.
    fn timing_and_nonce(&self) -> (LeaseConfig, u128) {
        let cfg = self.config.unwrap_or(self.keeper.inner.config);
        // The thread's CSPRNG (seeded from the OS, reseeded by itself): 128 random bits
        // without a system call per lease, where a v4 UUID asks the kernel each time.
        let nonce = self.nonce.unwrap_or_else(rand::random::<u128>);
        (cfg, nonce)
    }

    /// Checks the builder's parts and fixes the creation's key, filter, timing and nonce.
    fn plan(&mut self) -> Result<Plan, Error> {
        let key = self.take_key()?;
        let expect_on = self
            .expect_on
            .take()
            .transpose()
            .map_err(|e| e.with_op(Operation::Lease).with_key(key.as_str()))?;
        self.check_tombstone(&key)?;
        let (cfg, nonce) = self.timing_and_nonce();
        Ok(Plan {
            key,
            expect_on,
            cfg,
            nonce,
        })
    }

    /// The creation as a future of its own, unboxed (`.await` boxes it): for a caller whose
    /// own future is boxed already or lives on a stack, such as a lock's acquisition.
    pub fn send(self) -> impl Future<Output = Result<Lease, Error>> + Send {
        self.run()
    }

    async fn run(mut self) -> Result<Lease, Error> {
        let plan = self.plan()?;
        if self.parent.is_some() {
            self.keeper.inner.sweeps.clear(&plan.key).await;
        }
        let mut creating = Creating::new(&self, &plan);
        for _ in 0..ATTEMPTS {
            self.check_session(&plan.key)?;
            if let Some(created) = creating.attempt().await? {
                creating.unsure.settled();
                return Ok(self.finish(created, plan.cfg));
            }
        }
        Err(Error::new(
            ErrorKind::Timeout,
            "could not create the lease: its key kept changing or its writes went unanswered",
        )
        .with_op(Operation::Lease)
        .with_key(plan.key.as_str()))
    }

    /// The lease, held from `created` and renewed by the keeper from now on (a bound lease:
    /// held as long as its session).
    fn finish(self, created: Created, cfg: LeaseConfig) -> Lease {
        let labels = self.keeper.inner.labels.clone();
        // Checked before the creating write (`tombstone`).
        let ends = (
            self.tombstone_ttl.and_then(|t| Ttl::new(t).ok()),
            self.format,
        );
        let st = State::new(created, self.value, cfg, ends, labels);
        if !st.is_bound() {
            self.keeper.track(st.clone());
        }
        Lease::new(st, self.keeper)
    }

    /// Refuses a tombstone TTL that is not one (whole seconds, ≥ 1 s) before anything is
    /// written.
    fn check_tombstone(&self, key: &Key) -> Result<(), Error> {
        match self.tombstone_ttl {
            Some(t) => Ttl::new(t).map(drop).map_err(|e| e.with_key(key.as_str())),
            None => Ok(()),
        }
    }

    /// Refuses to write for a session that is no longer valid.
    fn check_session(&self, key: &Key) -> Result<(), Error> {
        match &self.parent {
            Some(p) if !p.is_valid() => Err(Error::new(
                ErrorKind::LeaseLost,
                format!(
                    "session lost: {}",
                    p.reason().unwrap_or(super::state::LostReason::Deadline)
                ),
            )
            .with_op(Operation::Lease)
            .with_key(key.as_str())),
            _ => Ok(()),
        }
    }
}

/// A creation's checked parts.
struct Plan {
    key: Key,
    expect_on: Option<KeyFilter>,
    cfg: LeaseConfig,
    nonce: u128,
}

/// The state of one creation between its attempts.
///
/// Every write of a creation is conditional, so that a write delayed in the network
/// (buffered across a reconnect, or held by a stalled server) can never be applied after a
/// later one of ours: such a late duplicate would carry another revision, and with it
/// another origin — another queue position. Without an expectation of the caller's, the
/// key's own state is the expectation: `previous`, else "no message", re-learned from the
/// stream leader after a conflict or an unknown outcome.
struct Creating<'a> {
    bucket: Bucket,
    plan: &'a Plan,
    parent: Option<Arc<State>>,
    ttl: Option<Duration>,
    value: Bytes,
    format: Option<u32>,
    /// No expectation of the caller's: the creation replaces whatever the key holds.
    replace: bool,
    expect: Expect,
    /// Send time of the first write whose outcome is unknown (it may have been applied).
    ambiguous_since: Option<Instant>,
    /// The lowest revision those writes expected (0: no message): one of ours that was
    /// applied came after it.
    ambiguous_after: u64,
    retrying: Retrying,
    /// A bound creation's entry, removed in the background if we end without its outcome.
    unsure: Unsure,
}

impl<'a> Creating<'a> {
    fn new(c: &CreateLease, plan: &'a Plan) -> Creating<'a> {
        let mut unsure = Unsure::default();
        let session = c.parent.as_ref();
        let (key, nonce) = (&plan.key, plan.nonce);
        unsure.add(&c.keeper, key, (nonce, &c.value), session, u64::MAX);
        Creating {
            bucket: c.keeper.bucket().clone(),
            plan,
            parent: c.parent.clone(),
            ttl: c.write_ttl(&plan.cfg),
            value: c.value.clone(),
            format: c.format,
            replace: c.expect.is_none(),
            expect: c
                .expect
                .unwrap_or(c.previous.map_or(Expect::NoMessage, Expect::Revision)),
            ambiguous_since: None,
            ambiguous_after: u64::MAX,
            retrying: Backoff::DEFAULT.start(),
            unsure,
        }
    }

    /// One conditional write; after a conflict or an unknown outcome, a look at the key.
    /// `None`: try again.
    async fn attempt(&mut self) -> Result<Option<Created>, Error> {
        let sent = Instant::now();
        self.unsure.sent(after_of(Some(self.expect)));
        let res = self.write().await;
        if res.as_ref().is_err_and(|e| !e.outcome_unknown()) && self.ambiguous_since.is_none() {
            self.unsure.settled();
        }
        let e = match res {
            Ok(rev) => return Ok(Some(self.created(rev, rev, sent))),
            Err(e) if e.is_conflict() || e.outcome_unknown() => e,
            // Nobody answered for the bucket (a replicated stream between leaders, or one
            // so new that its interest has not reached this server yet): nothing was
            // written, so the same conditional write again after a pause.
            Err(e) if e.is_transient() => {
                self.retrying.pause().await;
                return Ok(None);
            }
            Err(e) => return Err(e.with_op(Operation::Lease)),
        };
        if e.outcome_unknown() {
            self.ambiguous_since.get_or_insert(sent);
            self.ambiguous_after = self.ambiguous_after.min(after_of(Some(self.expect)));
            self.retrying.pause().await;
        } else if !self.replace && self.ambiguous_since.is_none() {
            // The caller's expectation failed, and no earlier write of ours is pending.
            return Err(e.with_op(Operation::Lease));
        }
        // Boxed: the leader read after a conflict is rare, and its future would otherwise
        // make every creation's future, allocated and moved at each call, as large as itself.
        Box::pin(self.look(e, sent)).await
    }

    /// The lease our write at `rev` created, with `origin`; `sent` is the send time of the
    /// attempt that learned it. The lease is trusted from the earliest write of ours that may
    /// have been applied.
    fn created(&self, origin: Revision, rev: Revision, sent: Instant) -> Created {
        Created {
            key: self.plan.key.clone(),
            nonce: self.plan.nonce,
            origin,
            rev,
            sent: self.ambiguous_since.unwrap_or(sent),
            parent: self.parent.clone(),
        }
    }

    /// Whether `f` is this creation's write: only after a write of ours whose outcome is
    /// unknown, a value with our nonce created after what that write expected. A nonce may
    /// be shared — a bound lease's is its session's, a leader key's its registration's — so
    /// an earlier lease of the same owner on the key (one whose release failed) could
    /// carry it too: a bound creation's value must match, and the entry must not be one the
    /// session knows as its own binding ([`State::binds`]).
    fn is_ours(&self, f: &Entry) -> bool {
        let mine = Mine {
            nonce: self.plan.nonce,
            value: &self.value,
            parent: self.parent.as_deref(),
            after: self.ambiguous_after,
        };
        self.ambiguous_since.is_some() && mine.wrote(f)
    }

    /// The creating write; its key and filter were checked by the builder.
    fn write(&self) -> impl Future<Output = Result<Revision, Error>> + Send + '_ {
        let plan = self.plan;
        let w = self
            .bucket
            .put_key(&plan.key, self.value.clone())
            .ttl_opt(self.ttl)
            .lease_tag(LeaseTag::header_value(plan.nonce, None))
            .format_opt(self.format);
        match &plan.expect_on {
            Some(f) => w.expect_on_filter(f, self.expect),
            None => w.expect(self.expect),
        }
        .send()
    }

    /// After the write `e` failed: asks the stream leader whether a write of ours was
    /// applied (adopted then), and what the key holds now (the next expectation).
    async fn look(&mut self, e: Error, sent: Instant) -> Result<Option<Created>, Error> {
        let found = match self.bucket.get_from_leader(&self.plan.key).await {
            Ok(found) => found,
            Err(_) if e.outcome_unknown() => return Ok(None),
            Err(read) => return Err(read.with_op(Operation::Lease)),
        };
        match found {
            Some(f) if self.is_ours(&f) => {
                let origin = f.lease().map_or(f.revision(), |t| t.origin());
                Ok(Some(self.created(origin, f.revision(), sent)))
            }
            found if self.replace => {
                self.expect = found.map_or(Expect::NoMessage, |f| Expect::Revision(f.revision()));
                Ok(None)
            }
            _ if e.is_conflict() => Err(e.with_op(Operation::Lease)),
            // Unknown and not applied (yet): the same conditional write again.
            _ => Ok(None),
        }
    }
}

impl IntoFuture for CreateLease {
    type Output = Result<Lease, Error>;
    type IntoFuture = Pin<Box<dyn Future<Output = Self::Output> + Send>>;
    fn into_future(self) -> Self::IntoFuture {
        Box::pin(self.run())
    }
}

/// Creates every lease of `leases` in one transaction (an atomic batch): all of them, or —
/// when any expectation fails — none ([`ErrorKind::Conflict`], naming the key). All must
/// come from the same keeper. When the commit's outcome is unknown, the stream leader is
/// asked whether our writes (marked with our nonces) were applied.
///
/// # Cancel safety
/// Not cancel safe: the transaction may commit although the future was dropped; the keys
/// then expire after their TTL, as nobody renews them — or, bound to a session, are removed
/// in the background as for [`CreateLease`] (also when the outcome stays unknown).
pub async fn create_all(leases: Vec<CreateLease>) -> Result<Vec<Lease>, Error> {
    let Some(keeper) = leases.first().map(|l| l.keeper.clone()) else {
        return Ok(Vec::new());
    };
    let parts = plan_all(leases)?;
    let mut unsure = unsure_of(&keeper, &parts).await;
    let sent = Instant::now();
    let revisions = commit_all(keeper.bucket(), &parts, &mut unsure).await?;
    Ok(parts
        .into_iter()
        .zip(revisions)
        .map(|((l, key, _, cfg, nonce), rev)| {
            let created = Created {
                key,
                nonce,
                origin: rev,
                rev,
                sent,
                parent: l.parent.clone(),
            };
            l.finish(created, cfg)
        })
        .collect())
}

/// Checks each creation's parts and fixes its key, filter, timing and nonce.
fn plan_all(leases: Vec<CreateLease>) -> Result<Vec<Part>, Error> {
    let mut parts = Vec::with_capacity(leases.len());
    for mut l in leases {
        let key = l.take_key()?;
        let on = l.expect_on.take().transpose()?;
        let (cfg, nonce) = l.timing_and_nonce();
        l.check_session(&key)?;
        l.check_tombstone(&key)?;
        parts.push((l, key, on, cfg, nonce));
    }
    Ok(parts)
}

/// What follows the bound creations of `parts`, once no removal of an abandoned creation
/// runs on their keys any more.
async fn unsure_of(keeper: &Keeper, parts: &[Part]) -> Unsure {
    let mut unsure = Unsure::default();
    for (l, key, _, _, nonce) in parts {
        if l.parent.is_some() {
            keeper.inner.sweeps.clear(key).await;
        }
        let (session, after) = (l.parent.as_ref(), after_of(l.expect));
        unsure.add(keeper, key, (*nonce, &l.value), session, after);
    }
    unsure
}

/// Commits the writes of `parts` in one transaction: their revisions, learned from the
/// stream leader when the commit's outcome is unknown.
async fn commit_all(
    bucket: &Bucket,
    parts: &[Part],
    unsure: &mut Unsure,
) -> Result<Vec<Revision>, Error> {
    let mut txn = bucket.txn();
    for (l, key, on, cfg, nonce) in parts {
        let expect = l.expect.map(|e| (on.clone(), e));
        let tag = LeaseTag::header_value(*nonce, None);
        let ends = (tag, l.format);
        txn = txn.lease_write(key.clone(), l.value.clone(), l.write_ttl(cfg), expect, ends);
    }
    // Each part's expectation was given to `unsure` with the part.
    unsure.sent(u64::MAX);
    let revisions = match txn.commit().await {
        Ok(c) => c.revisions().iter().map(|(_, r)| *r).collect(),
        // Not adopted, our writes may still land: `unsure` removes them once they cannot.
        Err(e) if e.outcome_unknown() => adopt_all(bucket, parts).await.map_err(|_| e)?,
        Err(e) => {
            unsure.settled();
            return Err(e.with_op(Operation::Lease));
        }
    };
    unsure.settled();
    Ok(revisions)
}

type Part = (CreateLease, Key, Option<KeyFilter>, LeaseConfig, u128);

/// After a transaction with an unknown outcome: the revisions of our writes if it was
/// applied (every key carries our nonce), else an error.
async fn adopt_all(bucket: &Bucket, parts: &[Part]) -> Result<Vec<Revision>, Error> {
    let mut out = Vec::with_capacity(parts.len());
    for (l, key, _, _, nonce) in parts {
        let mine = Mine {
            nonce: *nonce,
            value: &l.value,
            parent: l.parent.as_deref(),
            after: after_of(l.expect),
        };
        match bucket.get_from_leader(key).await? {
            Some(e) if mine.wrote(&e) => out.push(e.revision()),
            _ => {
                return Err(Error::new(
                    ErrorKind::Conflict,
                    "the transaction was not applied",
                ))
            }
        }
    }
    Ok(out)
}

/// The revision a write expecting `expect` follows (0: no message, or another key's).
fn after_of(expect: Option<Expect>) -> u64 {
    match expect {
        Some(Expect::Revision(r)) => r.get(),
        _ => 0,
    }
}
