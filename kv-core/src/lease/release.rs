//! Releasing a lease: [`Release`], a fenced delete of our own key (or a hand-over in its
//! place) that recognises its own tombstone when the acknowledgement was lost.

use std::future::{Future, IntoFuture};
use std::ops::ControlFlow;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::time::Instant;

use super::keeper::Keeper;
use super::state::{LostReason, State, ATTEMPTS};
use crate::bucket::Write;
use crate::entry::{Entry, LeaseTag};
use crate::error::{Error, ErrorKind, Operation};
use crate::retry::Backoff;
use crate::revision::{Expect, Revision};

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
/// A lease bound to a session has no TTL: its release keeps trying while the session lives
/// (a stream-leader election takes seconds), and one whose future is dropped before its
/// outcome is known is finished in the background, so that no entry stays bound to a live
/// session after its holder let it go.
///
/// # Cancel safety
/// Not cancel safe: the delete may be applied although the future was dropped; if not, the
/// key expires with its TTL — or, bound to a session, is removed in the background while
/// the session lives (a task of the lease's keeper, which [`Keeper::shutdown`] waits for).
#[must_use = "a release does nothing until awaited"]
#[derive(Debug)]
pub struct Release {
    st: Arc<State>,
    keeper: Keeper,
    first: Option<(Arc<str>, Expect)>,
    hand_over: Option<HandOver>,
    completed: bool,
    /// A session's close: waits first for its bound leases' releases under way.
    after_bound: bool,
}

/// What a release leaves in place of its tombstone.
#[derive(Debug)]
struct HandOver {
    value: Bytes,
    /// The value's TTL; `None`: bound to the session `to`.
    ttl: Option<Duration>,
    /// The nonce (session id) of the value's mark; `None`: our own.
    to: Option<u128>,
}

impl HandOver {
    /// Whether `e` is this hand-over, as written.
    fn is(&self, st: &State, e: &Entry) -> bool {
        let nonce = self.to.unwrap_or(st.nonce());
        e.is_value() && e.value() == &self.value && e.lease().is_some_and(|t| t.nonce() == nonce)
    }
}

impl Release {
    /// A release of `st`'s key on its `keeper`'s bucket, with no options yet.
    pub(super) fn new(st: Arc<State>, keeper: Keeper) -> Release {
        Release {
            st,
            keeper,
            first: None,
            hand_over: None,
            completed: false,
            after_bound: false,
        }
    }

    /// Waits first, up to a bound, for the releases under way of the leases bound to this
    /// one (a session's close; see `State::bound_released`).
    pub(super) fn after_bound_releases(mut self) -> Self {
        self.after_bound = true;
        self
    }

    /// Marks the tombstone as the end of a lease that did its work (e.g. a lock holder's
    /// release, as opposed to a waiter giving up its place): readers see
    /// [`LeaseTag::completed`](crate::LeaseTag::completed). A lock's next waiter takes the
    /// lock on that mark alone, without reading the queue again.
    pub fn completed(mut self) -> Self {
        self.completed = true;
        self
    }

    /// Tries first a delete conditional on `filter`'s last revision instead of our key's
    /// (e.g. proving a lock's queue empty); falls back to the plain fenced delete when that
    /// conflicts.
    pub fn first_expect_on(mut self, filter: impl Into<Arc<str>>, expect: Expect) -> Self {
        self.first = Some((filter.into(), expect));
        self
    }

    /// Leaves `value` with a TTL of `ttl` in place of the tombstone: a hand-over that a
    /// successor takes by a write conditional on its revision, and that expires by itself
    /// otherwise. `value` must differ from the lease's value (it is how a hand-over whose
    /// acknowledgement was lost is recognised).
    pub fn hand_over(mut self, value: impl Into<Bytes>, ttl: Duration) -> Self {
        self.hand_over = Some(HandOver {
            value: value.into(),
            ttl: Some(ttl),
            to: None,
        });
        self
    }

    /// Leaves `value` without a TTL, marked with `nonce` (a session's id) and no origin, in
    /// place of the tombstone: [`Release::hand_over_bound`].
    pub(super) fn hand_over_to(mut self, value: Bytes, nonce: u128) -> Self {
        self.hand_over = Some(HandOver {
            value,
            ttl: None,
            to: Some(nonce),
        });
        self
    }

    /// The release as a future of its own, unboxed (`.await` boxes it): for a caller whose
    /// own future is boxed already or lives on a stack, such as a lock guard's release.
    pub fn send(self) -> impl Future<Output = Result<Released, Error>> + Send {
        self.run()
    }

    async fn run(self) -> Result<Released, Error> {
        let st = &self.st;
        if self.after_bound {
            // Boxed: only a session's close waits so, and every release's future would grow.
            Box::pin(st.bound_released()).await;
        }
        let slot = st.claim().await;
        let was_held = st.is_valid();
        st.stop();
        st.lose(LostReason::Released);
        let unsettled = Unsettled(Some(&self));
        let res = self.remove().await;
        unsettled.settled();
        drop(slot);
        match &res {
            Ok(r) => {
                tracing::debug!(key = %st.key, origin = st.origin.get(), was_held, tombstone = r.tombstone.map(Revision::get), "lease released")
            }
            Err(e) if st.is_bound() => {
                tracing::warn!(key = %st.key, error = %e, "bound lease release failed; the entry ends with its session")
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

    /// Deletes our key (or leaves the hand-over value): first with the caller's
    /// expectation, else conditional on our revision; after a conflict or a failure, the
    /// fenced write's retries. The caller holds the write slot.
    async fn remove(&self) -> Result<Released, Error> {
        let rev = self.st.revision();
        let (write, first) = match &self.first {
            Some((filter, expect)) => (self.write().expect_on(&**filter, *expect), true),
            None => (self.write().revision(rev), false),
        };
        let (rev, failed) = match write.send().await {
            Ok(t) => return Ok(done(Some(t), first)),
            Err(e) => after_first(e, first, rev)?,
        };
        // Boxed: the fallback's future (retries, leader reads) would otherwise make every
        // release's future, allocated and moved at each call, as large as itself.
        Box::pin(self.fenced(rev, failed)).await
    }

    /// The removing write (a delete, or the hand-over value), before its condition.
    fn write(&self) -> Write<'_> {
        let mut tag = match self.hand_over.as_ref().and_then(|h| h.to) {
            Some(to) => LeaseTag::header_value(to, None),
            None => self.st.tag(),
        };
        if self.completed && self.hand_over.is_none() {
            tag.push_str(crate::entry::COMPLETED);
        }
        let w = match &self.hand_over {
            Some(h) => self
                .keeper
                .bucket()
                .put_key(&self.st.key, h.value.clone())
                .ttl_opt(h.ttl)
                .format_opt(self.st.format),
            None => self.keeper.bucket().delete_key(&self.st.key),
        }
        .lease_tag(tag);
        match (self.st.tombstone_ttl(), &self.hand_over) {
            (Some(t), None) => w.ttl(t),
            _ => w,
        }
    }

    /// The fenced write at our revision (`None`: ask the stream leader for it first),
    /// retried after a conflict or a transient failure while the key may still be ours — a
    /// stream-leader election takes seconds — and at least [`ATTEMPTS`] times: until the
    /// lease's deadline, which for a bound lease is its session's, moving on with each of
    /// the session's renewals. `failed`: the transient failure of a first attempt made
    /// already, which counts as one and is followed by the retries' pause.
    async fn fenced(
        &self,
        mut rev: Option<Revision>,
        failed: Option<Error>,
    ) -> Result<Released, Error> {
        let mut retrying = Backoff::DEFAULT.start();
        let mut attempts = usize::from(failed.is_some());
        let mut last_err = failed;
        if last_err.is_some() {
            retrying.pause().await;
        }
        while attempts < ATTEMPTS || Instant::now() < self.st.deadline() {
            attempts += 1;
            let r = match rev {
                Some(r) => r,
                None => match self.look().await {
                    Ok(ControlFlow::Continue(r)) => r,
                    Ok(ControlFlow::Break(released)) => return Ok(released),
                    Err(e) => {
                        last_err = Some(e);
                        retrying.pause().await;
                        continue;
                    }
                },
            };
            match self.write().revision(r).send().await {
                Ok(t) => return Ok(done(Some(t), false)),
                Err(e) if e.is_conflict() => rev = None,
                Err(e) if e.is_transient() => {
                    last_err = Some(e);
                    rev = None;
                    retrying.pause().await;
                }
                Err(e) => return Err(e.with_op(Operation::Lease)),
            }
        }
        Err(last_err
            .unwrap_or_else(|| Error::new(ErrorKind::Internal, "lease release made no attempt"))
            .with_op(Operation::Lease))
    }

    /// Asks the stream leader what our key holds: our revision to remove (continue), or the
    /// release's outcome (break).
    async fn look(&self) -> Result<ControlFlow<Released, Revision>, Error> {
        let found = self.keeper.bucket().get_from_leader(&self.st.key).await?;
        Ok(judge(&self.st, self.hand_over.as_ref(), found))
    }
}

/// A release whose removal is not settled yet. Dropped armed — the release's future was
/// dropped before its outcome was known — it finishes a bound lease's removal in the
/// background ([`Release::finish_later`]).
struct Unsettled<'a>(Option<&'a Release>);

impl Unsettled<'_> {
    /// The removal's outcome is known: the lease leaves its session's bound set.
    fn settled(mut self) {
        if let Some(r) = self.0.take() {
            r.st.settle();
        }
    }
}

impl Drop for Unsettled<'_> {
    fn drop(&mut self) {
        if let Some(r) = self.0.take() {
            r.finish_later();
        }
    }
}

impl Release {
    /// Finishes, in a task of the keeper, the removal of a bound lease whose release was
    /// dropped mid-way: a plain fenced delete (keeping the completed mark), tried while the
    /// session lives. A lease of its own just expires with its TTL.
    fn finish_later(&self) {
        let rt = tokio::runtime::Handle::try_current();
        let Some(rt) = rt.ok().filter(|_| self.st.is_bound()) else {
            self.st.settle();
            return;
        };
        tracing::debug!(key = %self.st.key, origin = self.st.origin.get(), "finishing a dropped release of a bound lease in the background");
        let rest = Release {
            completed: self.completed,
            ..Release::new(self.st.clone(), self.keeper.clone())
        };
        self.keeper.inner.tracker.spawn_on(rest.finish(), &rt);
    }

    async fn finish(self) {
        let slot = self.st.claim().await;
        if let Err(e) = Box::pin(self.fenced(None, None)).await {
            tracing::warn!(key = %self.st.key, error = %e, "bound lease release failed; the entry ends with its session");
        }
        drop(slot);
        self.st.settle();
    }
}

impl IntoFuture for Release {
    type Output = Result<Released, Error>;
    type IntoFuture = Pin<Box<dyn Future<Output = Self::Output> + Send>>;
    fn into_future(self) -> Self::IntoFuture {
        Box::pin(self.run())
    }
}

/// What follows a first removing write that failed with `e` (`first`: the write with the
/// caller's expectation, tried before ours at `rev`): the fenced retries, starting at `rev`
/// or (`None`) at a leader read, with the transient failure to count as their first
/// attempt; or the error, when no retry can help. A transient failure of the caller's write
/// is retried like ours: a release that gave up on a server restarting ("nobody answered")
/// left a session-bound entry behind for as long as its session lived.
fn after_first(
    e: Error,
    first: bool,
    rev: Revision,
) -> Result<(Option<Revision>, Option<Error>), Error> {
    match e {
        // What the caller's expectation covers changed: our key may still be at our revision.
        e if e.is_conflict() && first => Ok((Some(rev), None)),
        e if e.is_conflict() || (first && e.outcome_unknown()) => Ok((None, None)),
        e if e.is_transient() => Ok((None, Some(e))),
        e => Err(e.with_op(Operation::Lease)),
    }
}

/// What the stream leader's answer `found` means for a release that leaves `hand_over`
/// (or a tombstone).
fn judge(
    st: &State,
    hand_over: Option<&HandOver>,
    found: Option<Entry>,
) -> ControlFlow<Released, Revision> {
    let is_final = |e: &Entry| match hand_over {
        None => st.is_ours(e) && !e.is_value(),
        Some(h) => h.is(st, e),
    };
    match found {
        // Our own tombstone (or hand-over): applied, its ack lost.
        Some(e) if is_final(&e) => ControlFlow::Break(done(Some(e.revision()), false)),
        Some(e) if st.is_ours(&e) && e.is_value() => ControlFlow::Continue(e.revision()),
        // Expired, taken, or gone: nothing of ours to remove.
        _ => ControlFlow::Break(done(None, false)),
    }
}

fn done(tombstone: Option<Revision>, first: bool) -> Released {
    Released {
        was_held: true,
        tombstone,
        first_expectation_met: first,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rev(n: u64) -> Revision {
        Revision::new(n).unwrap()
    }

    fn failed(kind: ErrorKind, first: bool) -> Result<(Option<Revision>, bool), ErrorKind> {
        after_first(Error::new(kind, "test"), first, rev(5))
            .map(|(r, e)| (r, e.is_some()))
            .map_err(|e| e.kind())
    }

    #[test]
    fn a_failed_first_write_falls_back_to_the_fenced_retries_unless_nothing_can_help() {
        use ErrorKind::*;
        // The caller's expectation failed: our key is tried at our revision next.
        assert_eq!(failed(Conflict, true), Ok((Some(rev(5)), false)));
        // Our own write conflicted, or an outcome is unknown: the leader says what is there.
        assert_eq!(failed(Conflict, false), Ok((None, false)));
        assert_eq!(failed(Timeout, true), Ok((None, false)));
        // Nobody answered (a server restarting): retried, the failure counted — also for
        // the caller's first write.
        assert_eq!(failed(Unavailable, true), Ok((None, true)));
        assert_eq!(failed(Unavailable, false), Ok((None, true)));
        assert_eq!(failed(Timeout, false), Ok((None, true)));
        // Refused for good: no retry helps.
        assert_eq!(failed(PermissionDenied, true), Err(PermissionDenied));
        assert_eq!(failed(PermissionDenied, false), Err(PermissionDenied));
    }
}
