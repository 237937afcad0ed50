//! A [`Lease`]: creation, the renewal step the keeper drives, guarded writes and release.

use std::future::{Future, IntoFuture};
use std::pin::Pin;
use std::sync::{Arc, Mutex as StdMutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::clock::{LeaseClock, LeaseConfig, Next};
use super::keeper::Keeper;
use crate::bucket::Bucket;
use crate::entry::{Entry, LeaseTag, Removal};
use crate::error::{Error, ErrorKind, Operation};
use crate::key::{Key, KeyFilter};
use crate::metrics::LeaseLabels;
use crate::retry::Backoff;
use crate::revision::{Expect, Revision};

/// How often a write whose outcome stays unknown is retried before giving up.
const ATTEMPTS: usize = 8;

/// Why a lease ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum LostReason {
    /// No renewal was acknowledged before the local deadline: cut off from the server, the
    /// stream had no leader for too long, or the runtime stalled past the deadline.
    Deadline,
    /// The server expired the key (an expiry marker stands where the lease was).
    Expired,
    /// Someone else deleted, purged or rewrote the key: a forced release, an operator, or a
    /// writer that ignores the protocol.
    Taken,
    /// The lease was released by its holder.
    Released,
    /// The server refused the renewal for lack of permission (revoked, or never granted for
    /// this key): reported at once, not at the deadline. Needs a [`Kv`](crate::Kv) built by
    /// [`Connect`](crate::Connect), which hears the server's permission errors; otherwise
    /// the refusal looks like a timeout and the loss is [`LostReason::Deadline`].
    Permission,
}

impl std::fmt::Display for LostReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            LostReason::Deadline => "no renewal was acknowledged before the lease deadline",
            LostReason::Expired => "the lease key expired on the server",
            LostReason::Taken => "the lease key was removed or rewritten by someone else",
            LostReason::Released => "the lease was released",
            LostReason::Permission => "the server refused the renewal for lack of permission",
        })
    }
}

/// What the holder's side of one lease knows. Only one write of the lease is in flight at a
/// time (`busy`): the keeper's renewal, a value change or the release.
#[derive(Debug)]
struct Live {
    rev: Revision,
    value: Bytes,
    clock: LeaseClock,
    /// Send time of the first write whose outcome is unknown (it may have been applied).
    ambiguous_since: Option<Instant>,
    busy: bool,
    timer: bool,
    stopped: bool,
    reason: Option<LostReason>,
    on_end: EndHooks,
}

/// What runs when the lease ends ([`Lease::on_end`]).
#[derive(Default)]
struct EndHooks(Vec<Box<dyn FnOnce(LostReason) + Send>>);

impl std::fmt::Debug for EndHooks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} hook(s)", self.0.len())
    }
}

/// One lease, shared by its handle and the keeper task.
#[derive(Debug)]
pub(crate) struct State {
    key: Key,
    nonce: u128,
    origin: Revision,
    ttl: Duration,
    tombstone_ttl: Option<Duration>,
    live: StdMutex<Live>,
    lost: CancellationToken,
    settled: Notify,
    labels: Arc<LeaseLabels>,
}

impl State {
    fn live(&self) -> MutexGuard<'_, Live> {
        // A poisoned lock only means a panic elsewhere while holding it; the data is plain.
        self.live.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn tag(&self) -> String {
        LeaseTag::header_value(self.nonce, Some(self.origin))
    }

    fn is_ours(&self, e: &Entry) -> bool {
        e.lease().is_some_and(|t| t.nonce() == self.nonce)
    }

    /// The keeper's question: when to renew next (`None`: the lease is finished).
    pub(super) fn next(&self, now: Instant) -> Option<Next> {
        let mut l = self.live();
        if l.stopped || l.reason.is_some() || l.timer {
            return None;
        }
        let next = l.clock.next(now);
        l.timer = matches!(next, Next::RenewAt(_));
        Some(next)
    }

    /// The keeper's timer fired: claims the lease's one write slot for a renewal.
    pub(super) fn begin_renewal(self: &Arc<Self>) -> bool {
        let mut l = self.live();
        l.timer = false;
        if l.stopped || l.reason.is_some() || l.busy {
            // A value change or release is writing; it hands the lease back when done.
            return false;
        }
        if !l.clock.is_valid(Instant::now()) {
            drop(l);
            self.lose(LostReason::Deadline);
            return false;
        }
        l.busy = true;
        true
    }

    /// The one place a lease ends: records why, counts the loss, runs the end hooks, then
    /// wakes `lost()`.
    pub(super) fn lose(&self, reason: LostReason) {
        let hooks = {
            let mut l = self.live();
            if l.reason.is_some() {
                return;
            }
            l.reason = Some(reason);
            std::mem::take(&mut l.on_end.0)
        };
        if reason != LostReason::Released {
            tracing::warn!(key = %self.key, origin = self.origin.get(), %reason, "lease lost");
        }
        self.labels.lost(reason);
        for hook in hooks {
            hook(reason);
        }
        self.lost.cancel();
    }

    fn finish_write(&self) {
        self.live().busy = false;
        self.settled.notify_waiters();
    }

    /// Waits until no write of the lease is in flight, then claims the slot.
    async fn claim(&self) {
        loop {
            let settled = self.settled.notified();
            {
                let mut l = self.live();
                if !l.busy {
                    l.busy = true;
                    return;
                }
            }
            settled.await;
        }
    }

    fn deadline(&self) -> Instant {
        self.live().clock.deadline()
    }

    fn is_valid(&self) -> bool {
        let l = self.live();
        l.reason.is_none() && l.clock.is_valid(Instant::now())
    }
}

/// The outcome of one write of the lease's key.
enum Step {
    Written,
    Retry,
    Gone(LostReason),
}

/// One renewal, driven by the keeper: a CAS on our revision, bounded by the deadline.
/// Returns the state for rescheduling.
pub(super) async fn renew(bucket: Bucket, st: Arc<State>) -> Arc<State> {
    let deadline = st.deadline();
    let step = tokio::time::timeout_at(deadline, write_own(&bucket, &st, None)).await;
    st.finish_write();
    match step {
        Ok(Step::Written | Step::Retry) => {}
        Ok(Step::Gone(why)) => st.lose(why),
        // The write may still land; a release recognises it by our nonce.
        Err(_) => st.lose(LostReason::Deadline),
    }
    st
}

/// Rewrites our key (with `value`, or the current value) conditional on our revision,
/// recognising an earlier write of ours whose acknowledgement was lost. The caller holds
/// the write slot.
async fn write_own(bucket: &Bucket, st: &State, value: Option<Bytes>) -> Step {
    let (rev, value) = {
        let mut l = st.live();
        if let Some(v) = value {
            l.value = v;
        }
        (l.rev, l.value.clone())
    };
    let sent = Instant::now();
    let res = bucket
        .update(&st.key, value, rev)
        .ttl(st.ttl)
        .lease_tag(st.tag())
        .await;
    let recheck = {
        let mut l = st.live();
        match res {
            Ok(r) => {
                st.labels
                    .renewal_slack(l.clock.deadline().saturating_duration_since(Instant::now()));
                l.rev = r;
                // A CAS on our last known revision succeeded, so none of the earlier
                // unacknowledged writes was applied: this send time is the one that counts.
                l.ambiguous_since = None;
                l.clock.renewed(sent);
                tracing::trace!(key = %st.key, revision = r.get(), "lease renewed");
                return Step::Written;
            }
            Err(e) if e.kind() == ErrorKind::PermissionDenied => {
                tracing::warn!(key = %st.key, error = %e, "lease renewal refused");
                return Step::Gone(LostReason::Permission);
            }
            // Also without a pending write of ours: on a replicated stream the server may
            // refuse a renewal with a conflict although the key is still at our revision
            // (nats-server #7281), so the stream leader says whether it really moved.
            Err(e) if e.is_conflict() => l.ambiguous_since.unwrap_or(sent),
            Err(e) => {
                if e.outcome_unknown() {
                    l.ambiguous_since.get_or_insert(sent);
                }
                l.clock.renewal_failed();
                tracing::debug!(key = %st.key, error = %e, "lease renewal failed, will retry");
                return Step::Retry;
            }
        }
    };
    recognise(bucket, st, recheck, rev).await
}

/// After a conflict: asks the stream leader whether the key really moved.
///
/// Only a write of ours *newer than the revision we expected* is one of our unacknowledged
/// writes: an older one means the read was stale (an outdated leader may answer during an
/// election), and taking it for a renewal would extend the deadline past the server's expiry;
/// the key still at the revision we expected means the conflict was spurious. Both retry,
/// without extending the deadline.
async fn recognise(bucket: &Bucket, st: &State, since: Instant, expected: Revision) -> Step {
    match bucket.get_from_leader(&st.key).await {
        Ok(Some(e)) if st.is_ours(&e) && e.revision() <= expected => {
            tracing::debug!(key = %st.key, revision = e.revision().get(), "stale read of the lease key, retrying");
            st.live().clock.renewal_failed();
            Step::Retry
        }
        Ok(Some(e)) if e.is_value() && st.is_ours(&e) => {
            let mut l = st.live();
            l.rev = e.revision();
            l.ambiguous_since = None;
            l.clock.renewed(since);
            tracing::debug!(key = %st.key, revision = e.revision().get(), "an unacknowledged lease write had been applied");
            Step::Written
        }
        Ok(e) => Step::Gone(reason_of(e.as_ref())),
        Err(e) => {
            tracing::debug!(key = %st.key, error = %e, "could not read the lease key back");
            st.live().clock.renewal_failed();
            Step::Retry
        }
    }
}

fn reason_of(e: Option<&Entry>) -> LostReason {
    match e.and_then(Entry::removal) {
        Some(Removal::Expired) => LostReason::Expired,
        _ => LostReason::Taken,
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
/// key then expires after its TTL, as nobody renews it.
#[must_use = "a lease is not created until awaited"]
#[derive(Debug)]
pub struct CreateLease {
    keeper: Keeper,
    key: Result<Key, Error>,
    value: Bytes,
    config: Option<LeaseConfig>,
    expect: Option<Expect>,
    expect_on: Option<Result<KeyFilter, Error>>,
    tombstone_ttl: Option<Duration>,
    previous: Option<Revision>,
    nonce: Option<u128>,
}

impl CreateLease {
    pub(super) fn new(keeper: Keeper, key: &str, value: Bytes) -> CreateLease {
        CreateLease {
            keeper,
            key: Key::new(key),
            value,
            config: None,
            expect: None,
            expect_on: None,
            tombstone_ttl: None,
            previous: None,
            nonce: None,
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
    pub fn nonce(mut self, nonce: u128) -> Self {
        self.nonce = Some(nonce);
        self
    }

    async fn run(mut self) -> Result<Lease, Error> {
        let key = std::mem::replace(&mut self.key, Err(Error::new(ErrorKind::Internal, "taken")))
            .map_err(|e| e.with_op(Operation::Lease))?;
        let expect_on = self
            .expect_on
            .take()
            .transpose()
            .map_err(|e| e.with_op(Operation::Lease).with_key(key.as_str()))?;
        let cfg = self.config.unwrap_or(self.keeper.inner.config);
        if let Some(t) = self.tombstone_ttl {
            crate::revision::Ttl::new(t).map_err(|e| e.with_key(key.as_str()))?;
        }
        let nonce = self.nonce.unwrap_or_else(|| uuid::Uuid::new_v4().as_u128());
        let bucket = self.keeper.bucket().clone();
        // Every write of a creation is conditional, so that a write delayed in the network
        // (buffered across a reconnect, or held by a stalled server) can never be applied
        // after a later one of ours: such a late duplicate would carry another revision, and
        // with it another origin — another queue position. Without an expectation of the
        // caller's, the key's own state is the expectation: `previous`, else "no message",
        // re-learned from the stream leader after a conflict or an unknown outcome.
        let replace = self.expect.is_none();
        let mut expect = self
            .expect
            .unwrap_or(self.previous.map_or(Expect::NoMessage, Expect::Revision));
        let mut ambiguous_since = None;
        let mut delays = Backoff::DEFAULT.delays();
        for _ in 0..ATTEMPTS {
            let sent = Instant::now();
            let w = bucket
                .put(&key, self.value.clone())
                .ttl(cfg.ttl().as_duration())
                .lease_tag(LeaseTag::header_value(nonce, None));
            let w = match &expect_on {
                Some(f) => w.expect_on(f.as_str(), expect),
                None => w.expect(expect),
            };
            let e = match w.await {
                Ok(rev) => {
                    let since = ambiguous_since.unwrap_or(sent);
                    return Ok(self.finish(key, nonce, rev, rev, since, cfg));
                }
                Err(e) if e.is_conflict() || e.outcome_unknown() => e,
                // Nobody answered for the bucket (a replicated stream between leaders, or one
                // so new that its interest has not reached this server yet): nothing was
                // written, so the same conditional write again after a pause.
                Err(e) if e.is_transient() => {
                    tokio::time::sleep(delays.next().unwrap_or(Backoff::DEFAULT.max())).await;
                    continue;
                }
                Err(e) => return Err(e.with_op(Operation::Lease)),
            };
            if e.outcome_unknown() {
                ambiguous_since.get_or_insert(sent);
                tokio::time::sleep(delays.next().unwrap_or(Backoff::DEFAULT.max())).await;
            } else if !replace && ambiguous_since.is_none() {
                // The caller's expectation failed, and no earlier write of ours is pending.
                return Err(e.with_op(Operation::Lease));
            }
            let found = match bucket.get_from_leader(&key).await {
                Ok(found) => found,
                Err(_) if e.outcome_unknown() => continue,
                Err(read) => return Err(read.with_op(Operation::Lease)),
            };
            match found {
                Some(f) if f.is_value() && f.lease().is_some_and(|t| t.nonce() == nonce) => {
                    let origin = f.lease().map_or(f.revision(), |t| t.origin());
                    let since = ambiguous_since.unwrap_or(sent);
                    return Ok(self.finish(key, nonce, origin, f.revision(), since, cfg));
                }
                found if replace => {
                    expect = found.map_or(Expect::NoMessage, |f| Expect::Revision(f.revision()))
                }
                _ if e.is_conflict() => return Err(e.with_op(Operation::Lease)),
                // Unknown and not applied (yet): the same conditional write again.
                _ => {}
            }
        }
        Err(Error::new(
            ErrorKind::Timeout,
            "could not create the lease: its key kept changing or its writes went unanswered",
        )
        .with_op(Operation::Lease)
        .with_key(key.as_str()))
    }

    fn finish(
        self,
        key: Key,
        nonce: u128,
        origin: Revision,
        rev: Revision,
        sent: Instant,
        cfg: LeaseConfig,
    ) -> Lease {
        let st = Arc::new(State {
            key,
            nonce,
            origin,
            ttl: cfg.ttl().as_duration(),
            tombstone_ttl: self.tombstone_ttl,
            live: StdMutex::new(Live {
                rev,
                value: self.value,
                clock: LeaseClock::new(cfg, sent),
                ambiguous_since: None,
                busy: false,
                timer: false,
                stopped: false,
                reason: None,
                on_end: EndHooks::default(),
            }),
            lost: CancellationToken::new(),
            settled: Notify::new(),
            labels: self.keeper.inner.labels.clone(),
        });
        self.keeper.track(st.clone());
        Lease {
            st,
            keeper: self.keeper,
            released: false,
        }
    }
}

/// Creates every lease of `leases` in one transaction (an atomic batch): all of them, or —
/// when any expectation fails — none ([`ErrorKind::Conflict`], naming the key). All must
/// come from the same keeper. When the commit's outcome is unknown, the stream leader is
/// asked whether our writes (marked with our nonces) were applied.
///
/// # Cancel safety
/// Not cancel safe: the transaction may commit although the future was dropped; the keys
/// then expire after their TTL, as nobody renews them.
pub async fn create_all(leases: Vec<CreateLease>) -> Result<Vec<Lease>, Error> {
    let Some(keeper) = leases.first().map(|l| l.keeper.clone()) else {
        return Ok(Vec::new());
    };
    let mut parts = Vec::with_capacity(leases.len());
    for mut l in leases {
        let key = std::mem::replace(&mut l.key, Err(Error::new(ErrorKind::Internal, "taken")))
            .map_err(|e| e.with_op(Operation::Lease))?;
        let on = l.expect_on.take().transpose()?;
        let cfg = l.config.unwrap_or(keeper.inner.config);
        let nonce = l.nonce.unwrap_or_else(|| uuid::Uuid::new_v4().as_u128());
        parts.push((l, key, on, cfg, nonce));
    }
    let bucket = keeper.bucket().clone();
    let mut txn = bucket.txn();
    for (l, key, on, cfg, nonce) in &parts {
        let expect = l.expect.map(|e| (on.clone(), e));
        let tag = LeaseTag::header_value(*nonce, None);
        txn = txn.lease_write(
            key.clone(),
            l.value.clone(),
            cfg.ttl().as_duration(),
            expect,
            tag,
        );
    }
    let sent = Instant::now();
    let revisions: Vec<Revision> = match txn.commit().await {
        Ok(c) => c.revisions().iter().map(|(_, r)| *r).collect(),
        Err(e) if e.outcome_unknown() => adopt_all(&bucket, &parts).await.map_err(|_| e)?,
        Err(e) => return Err(e.with_op(Operation::Lease)),
    };
    Ok(parts
        .into_iter()
        .zip(revisions)
        .map(|((l, key, _, cfg, nonce), rev)| l.finish(key, nonce, rev, rev, sent, cfg))
        .collect())
}

type Part = (CreateLease, Key, Option<KeyFilter>, LeaseConfig, u128);

/// After a transaction with an unknown outcome: the revisions of our writes if it was
/// applied (every key carries our nonce), else an error.
async fn adopt_all(bucket: &Bucket, parts: &[Part]) -> Result<Vec<Revision>, Error> {
    let mut out = Vec::with_capacity(parts.len());
    for (_, key, _, _, nonce) in parts {
        match bucket.get_from_leader(key).await? {
            Some(e) if e.is_value() && e.lease().is_some_and(|t| t.nonce() == *nonce) => {
                out.push(e.revision())
            }
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

impl IntoFuture for CreateLease {
    type Output = Result<Lease, Error>;
    type IntoFuture = Pin<Box<dyn Future<Output = Self::Output> + Send>>;
    fn into_future(self) -> Self::IntoFuture {
        Box::pin(self.run())
    }
}

/// A key this process keeps alive (see the [module docs](crate::lease)). Dropping it
/// releases it in the background (a task owned by the [`Keeper`]); prefer
/// [`release`](Lease::release), which reports how it went.
#[must_use = "dropping a lease releases it"]
#[derive(Debug)]
pub struct Lease {
    st: Arc<State>,
    keeper: Keeper,
    released: bool,
}

impl Lease {
    /// The lease's key.
    pub fn key(&self) -> &Key {
        &self.st.key
    }

    /// The revision of the write that created the lease: a fencing token that strictly
    /// increases between leases on the bucket.
    pub fn origin(&self) -> Revision {
        self.st.origin
    }

    /// The key's latest revision as far as we know (changes with every renewal).
    pub fn revision(&self) -> Revision {
        self.st.live().rev
    }

    /// The lease's random identity, carried on each of its writes.
    pub fn nonce(&self) -> u128 {
        self.st.nonce
    }

    /// The local deadline (monotonic clock): after it the lease must be considered lost.
    pub fn deadline(&self) -> Instant {
        self.st.deadline()
    }

    /// Whether the lease is still held: no loss was signalled and the deadline has not
    /// passed (checked here, so it is right even while the keeper is starved).
    pub fn is_held(&self) -> bool {
        self.st.is_valid()
    }

    /// Why the lease ended, once it did.
    pub fn loss_reason(&self) -> Option<LostReason> {
        self.st.live().reason
    }

    /// Completes when the lease is lost or released — at the latest at its deadline, also
    /// while the keeper is starved.
    ///
    /// # Cancel safety
    /// Cancel safe.
    pub fn lost(&self) -> impl Future<Output = LostReason> + Send + 'static {
        let st = self.st.clone();
        async move {
            loop {
                let deadline = st.deadline();
                tokio::select! {
                    _ = st.lost.cancelled() => break,
                    _ = tokio::time::sleep_until(deadline) => {
                        if !st.live().clock.is_valid(Instant::now()) {
                            st.lose(LostReason::Deadline);
                            break;
                        }
                    }
                }
            }
            st.live().reason.unwrap_or(LostReason::Deadline)
        }
    }

    /// A token cancelled when the lease is lost or released: hand it to work that must
    /// stop then.
    pub fn cancellation_token(&self) -> CancellationToken {
        self.st.lost.child_token()
    }

    /// Runs `hook` once, with the reason, when the lease ends — lost or released — before
    /// [`lost`](Lease::lost) completes; at once if it has already ended. It runs on whichever
    /// task notices the end (often the keeper's), so it must be quick and must not block:
    /// update a gauge, send on a channel. A lease whose deadline passed ends when the keeper
    /// or a `lost()` waiter notices, at the latest at its next renewal time.
    pub fn on_end(&self, hook: impl FnOnce(LostReason) + Send + 'static) {
        let mut l = self.st.live();
        let Some(reason) = l.reason else {
            l.on_end.0.push(Box::new(hook));
            return;
        };
        drop(l);
        hook(reason);
    }

    /// Rewrites the lease's value now (conditional on our revision, like a renewal, which it
    /// also is); later renewals carry the new value.
    ///
    /// # Cancel safety
    /// Not cancel safe: the write may be applied although the future was dropped; the next
    /// renewal then recognises it.
    pub async fn set_value(&self, value: impl Into<Bytes>) -> Result<Revision, Error> {
        self.st.claim().await;
        let step = if self.st.is_valid() {
            write_own(self.keeper.bucket(), &self.st, Some(value.into())).await
        } else {
            Step::Gone(self.st.live().reason.unwrap_or(LostReason::Deadline))
        };
        self.st.finish_write();
        // The keeper skipped a timer that fired while we wrote: hand the lease back.
        self.keeper.track(self.st.clone());
        match step {
            Step::Written => Ok(self.revision()),
            Step::Gone(why) => {
                self.st.lose(why);
                Err(self.lost_error())
            }
            Step::Retry => Err(Error::new(
                ErrorKind::Timeout,
                "the lease value change was not acknowledged; a renewal will carry it",
            )
            .with_op(Operation::Lease)
            .with_key(self.st.key.as_str())),
        }
    }

    fn lost_error(&self) -> Error {
        let why = self.loss_reason().unwrap_or(LostReason::Deadline);
        Error::new(ErrorKind::LeaseLost, format!("lease lost: {why}"))
            .with_op(Operation::Lease)
            .with_key(self.st.key.as_str())
    }

    /// Writes `key` only while the lease is held: the write is conditional on the lease
    /// key's revision, so once the lease was removed or expired — even before we noticed —
    /// it fails with [`ErrorKind::LeaseLost`]. A renewal landing in between is waited for and
    /// the write retried.
    ///
    /// # Cancel safety
    /// Not cancel safe: the write may be applied even if the future is dropped.
    pub async fn put_guarded(
        &self,
        key: impl AsRef<str>,
        value: impl Into<Bytes>,
    ) -> Result<Revision, Error> {
        let value = value.into();
        let key = key.as_ref();
        for _ in 0..3 {
            if !self.is_held() {
                return Err(self.lost_error());
            }
            let rev = self.revision();
            let res = self
                .keeper
                .bucket()
                .put(key, value.clone())
                .expect_on(self.st.key.as_str(), Expect::Revision(rev))
                .await;
            match res {
                Err(e) if e.is_conflict() => {
                    if !self.wait_for_renewal(rev).await {
                        return Err(self.lost_error());
                    }
                }
                other => return other,
            }
        }
        Err(self.lost_error())
    }

    /// After a guarded write conflicted at `rev`: whether our own renewal moved the key
    /// (waiting for one in flight, up to the deadline).
    async fn wait_for_renewal(&self, rev: Revision) -> bool {
        let give_up = self.deadline().min(Instant::now() + Duration::from_secs(2));
        loop {
            let settled = self.st.settled.notified();
            {
                let l = self.st.live();
                if l.rev != rev {
                    return true;
                }
                if !l.busy {
                    return false;
                }
            }
            if tokio::time::timeout_at(give_up, settled).await.is_err() {
                return false;
            }
        }
    }

    /// Starts releasing the lease; `.await` it. See [`Release`].
    pub fn release(mut self) -> Release {
        self.released = true;
        self.release_shared()
    }

    /// Starts releasing a lease that is shared (behind an `Arc`); `.await` it. Renewals stop
    /// at once, even if the release is never awaited. Afterwards the lease is not held, its
    /// guarded writes fail, and dropping it does nothing more.
    pub fn release_shared(&self) -> Release {
        self.st.live().stopped = true;
        Release {
            st: self.st.clone(),
            bucket: self.keeper.bucket().clone(),
            first: None,
            hand_over: None,
            completed: false,
        }
    }

    /// Stops renewing the lease without removing its key, which the server then expires
    /// after its TTL (etcd's `Orphan`).
    pub fn orphan(mut self) {
        self.released = true;
        self.st.live().stopped = true;
        self.st.lose(LostReason::Released);
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if self.released || self.st.live().stopped {
            return;
        }
        let release = self.release_shared();
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => {
                self.keeper.inner.tracker.spawn_on(
                    async move {
                        let _ = release.await;
                    },
                    &rt,
                );
            }
            // No runtime: nothing renews it any more; the key expires by its TTL.
            Err(_) => self.st.lose(LostReason::Released),
        }
    }
}

impl crate::txn::Txn {
    /// Commits only while `lease` is still held: the transaction is conditional on the
    /// lease key being at our revision (etcd's `IsOwner`). A renewal landing between this
    /// call and the commit makes the commit conflict; build the transaction again then.
    pub fn if_held(self, lease: &Lease) -> Self {
        self.check(lease.key().as_str(), Expect::Revision(lease.revision()))
    }
}

/// How a release went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Released {
    /// The lease was held until the release (no loss had been signalled) and our key was
    /// removed by it.
    pub was_held: bool,
    /// The tombstone our release left, when it left one.
    pub tombstone: Option<Revision>,
    /// The release's first expectation ([`Release::first_expect_on`]) was met.
    pub first_expectation_met: bool,
}

/// A pending release; `.await` it.
///
/// Stops the renewals (waiting for one in flight), then deletes the key conditional on our
/// revision — never a blind delete: another holder's key cannot be touched. When the
/// acknowledgement of that delete is lost, the stream leader shows our own tombstone
/// (marked with our nonce) and the release reports success.
///
/// # Cancel safety
/// Not cancel safe: the delete may be applied although the future was dropped; if not, the
/// key expires with its TTL.
#[must_use = "a release does nothing until awaited"]
#[derive(Debug)]
pub struct Release {
    st: Arc<State>,
    bucket: Bucket,
    first: Option<(String, Expect)>,
    hand_over: Option<(Bytes, Duration)>,
    completed: bool,
}

impl Release {
    /// Marks the tombstone as the end of a lease that did its work (e.g. a lock holder's
    /// release, as opposed to a waiter giving up its place): readers see
    /// [`LeaseTag::completed`]. A lock's next waiter takes the lock on that mark alone,
    /// without reading the queue again.
    pub fn completed(mut self) -> Self {
        self.completed = true;
        self
    }

    /// Tries first a delete conditional on `filter`'s last revision instead of our key's
    /// (e.g. proving a lock's queue empty); falls back to the plain fenced delete when that
    /// conflicts.
    pub fn first_expect_on(mut self, filter: impl Into<String>, expect: Expect) -> Self {
        self.first = Some((filter.into(), expect));
        self
    }

    /// Leaves `value` with a TTL of `ttl` in place of the tombstone: a hand-over that a
    /// successor takes by a write conditional on its revision, and that expires by itself
    /// otherwise. `value` must differ from the lease's value (it is how a hand-over whose
    /// acknowledgement was lost is recognised).
    pub fn hand_over(mut self, value: impl Into<Bytes>, ttl: Duration) -> Self {
        self.hand_over = Some((value.into(), ttl));
        self
    }

    async fn run(self) -> Result<Released, Error> {
        let st = self.st;
        st.claim().await;
        let was_held = st.is_valid();
        {
            let mut l = st.live();
            l.stopped = true;
        }
        st.lose(LostReason::Released);
        let ending = Ending {
            first: self.first,
            hand_over: self.hand_over,
            completed: self.completed,
        };
        let res = remove(&self.bucket, &st, ending).await;
        st.finish_write();
        match &res {
            Ok(r) => {
                tracing::debug!(key = %st.key, origin = st.origin.get(), was_held, tombstone = r.tombstone.map(Revision::get), "lease released")
            }
            Err(e) => {
                tracing::warn!(key = %st.key, error = %e, "lease release failed; the key expires with its ttl")
            }
        }
        res.map(|r| Released {
            was_held: was_held && r.tombstone.is_some(),
            ..r
        })
    }
}

impl IntoFuture for Release {
    type Output = Result<Released, Error>;
    type IntoFuture = Pin<Box<dyn Future<Output = Self::Output> + Send>>;
    fn into_future(self) -> Self::IntoFuture {
        Box::pin(self.run())
    }
}

/// How a release ends its key: see [`Release`]'s options.
struct Ending {
    first: Option<(String, Expect)>,
    hand_over: Option<(Bytes, Duration)>,
    completed: bool,
}

/// Deletes our key (or leaves the hand-over value): first with the caller's expectation,
/// then conditional on our revision, asking the leader after a conflict or an unknown
/// outcome.
async fn remove(bucket: &Bucket, st: &State, ending: Ending) -> Result<Released, Error> {
    let Ending {
        first,
        hand_over,
        completed,
    } = ending;
    let mut rev = Some(st.live().rev);
    let mut tag = st.tag();
    if completed && hand_over.is_none() {
        tag.push_str(crate::entry::COMPLETED);
    }
    let is_final = |e: &Entry| match &hand_over {
        None => !e.is_value(),
        Some((v, _)) => e.is_value() && e.value() == v,
    };
    let delete = |expect_on: Option<(&str, Expect)>, r: Revision| {
        let mut w = match &hand_over {
            Some((v, ttl)) => bucket.put(&st.key, v.clone()).ttl(*ttl),
            None => bucket.delete(&st.key),
        }
        .lease_tag(tag.clone());
        if let (Some(t), None) = (st.tombstone_ttl, &hand_over) {
            w = w.ttl(t);
        }
        match expect_on {
            Some((f, e)) => w.expect_on(f, e),
            None => w.revision(r),
        }
    };
    if let (Some((f, e)), Some(r)) = (&first, rev) {
        match delete(Some((f.as_str(), *e)), r).await {
            Ok(t) => return Ok(done(Some(t), true)),
            Err(e) if e.is_conflict() => {}
            Err(e) if e.outcome_unknown() => rev = None,
            Err(e) => return Err(e.with_op(Operation::Lease)),
        }
    }
    let mut last_err = None;
    let mut delays = Backoff::DEFAULT.delays();
    // Keep trying while the key may still be ours (a stream-leader election takes seconds),
    // and at least a few times.
    let until = st.deadline();
    let mut attempt = 0;
    while attempt < ATTEMPTS || Instant::now() < until {
        attempt += 1;
        let r = match rev {
            Some(r) => r,
            None => match bucket.get_from_leader(&st.key).await {
                // Our own tombstone (or hand-over): applied, its ack lost.
                Ok(Some(e)) if st.is_ours(&e) && is_final(&e) => {
                    return Ok(done(Some(e.revision()), false))
                }
                Ok(Some(e)) if st.is_ours(&e) && e.is_value() => e.revision(),
                // Expired, taken, or gone: nothing of ours to remove.
                Ok(_) => return Ok(done(None, false)),
                Err(e) => {
                    last_err = Some(e);
                    tokio::time::sleep(delays.next().unwrap_or(Backoff::DEFAULT.max())).await;
                    continue;
                }
            },
        };
        match delete(None, r).await {
            Ok(t) => return Ok(done(Some(t), false)),
            Err(e) if e.is_conflict() => rev = None,
            Err(e) if e.is_transient() => {
                last_err = Some(e);
                rev = None;
                tokio::time::sleep(delays.next().unwrap_or(Backoff::DEFAULT.max())).await;
            }
            Err(e) => return Err(e.with_op(Operation::Lease)),
        }
    }
    Err(last_err
        .unwrap_or_else(|| Error::new(ErrorKind::Internal, "lease release made no attempt"))
        .with_op(Operation::Lease))
}

fn done(tombstone: Option<Revision>, first: bool) -> Released {
    Released {
        was_held: true,
        tombstone,
        first_expectation_met: first,
    }
}
