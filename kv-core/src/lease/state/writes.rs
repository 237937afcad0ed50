//! What a write of the lease's own key leads to (a renewal, a value change): the outcome of
//! the write, the stream leader's answer after a conflict, and a guarded write's wait for a
//! renewal in flight. Pure, like the rest of `state.rs`.

use bytes::Bytes;
use tokio::time::Instant;

use super::{AfterWrite, LostReason, Renewal, State, Step, RENEWAL_WAIT};
use crate::entry::{Entry, Removal};
use crate::error::{Error, ErrorKind};
use crate::revision::Revision;

impl State {
    /// A renewal the keeper drove ended: with its step, or `None` when the deadline passed
    /// first (the write may still land; a release recognises it by our nonce).
    pub(in crate::lease) fn renewal_done(&self, step: Option<Step>) {
        self.finish_write();
        match step {
            Some(Step::Written | Step::Retry) => {}
            Some(Step::Gone(why)) => self.lose(why),
            None => self.lose(LostReason::Deadline),
        }
    }

    /// Before a write of our key (the caller holds the slot): takes the new value, if any,
    /// and returns the revision to expect and the value to write (a bound lease keeps no
    /// value: only a value change writes one).
    pub(in crate::lease) fn to_write(&self, value: Option<Bytes>) -> (Revision, Bytes) {
        let rev = self.revision();
        let Some(own) = self.own() else {
            return (rev, value.unwrap_or_default());
        };
        let mut r = own.renewal();
        if let Some(v) = value {
            r.value = v;
        }
        (rev, r.value.clone())
    }

    /// The value the lease keeps and its renewals carry (`None` for a bound lease).
    pub(in crate::lease) fn kept_value(&self) -> Option<Bytes> {
        self.own().map(|own| own.renewal().value.clone())
    }

    /// The server refused a write of our key for good (see [`refused_for_good`]): the
    /// lease keeps `kept`, the value it had before a refused value change, so that its
    /// renewals do not carry the refused one; a refused renewal is retried like a failed one.
    pub(in crate::lease) fn refused(&self, kept: Option<Bytes>, e: &Error) {
        tracing::warn!(key = %self.key, error = %e, "a write of the lease key was refused");
        self.renewal(|r| {
            if let Some(v) = kept {
                r.value = v;
            }
            r.clock.renewal_failed();
        });
    }

    /// A write of our key sent at `sent`, conditional on our revision, came back with `res`.
    pub(in crate::lease) fn written(
        &self,
        res: Result<Revision, Error>,
        sent: Instant,
    ) -> AfterWrite {
        match res {
            Ok(r) => {
                self.live().rev = r;
                // A CAS on our last known revision succeeded, so none of the earlier
                // unacknowledged writes was applied: this send time is the one that counts.
                let slack = self.renewal(|r| {
                    let slack = r.clock.slack(Instant::now());
                    confirmed(r, sent).then_some(slack)
                });
                let slack = match slack {
                    Some(None) => return AfterWrite::Done(Step::Gone(LostReason::Deadline)),
                    Some(Some(slack)) => slack,
                    // A bound lease's value change: the slack of its session's deadline.
                    None => self.deadline().saturating_duration_since(Instant::now()),
                };
                self.labels().renewal_slack(slack);
                tracing::trace!(key = %self.key, revision = r.get(), "lease renewed");
                AfterWrite::Done(Step::Written)
            }
            Err(e) if e.kind() == ErrorKind::PermissionDenied => {
                tracing::warn!(key = %self.key, error = %e, "lease renewal refused");
                AfterWrite::Done(Step::Gone(LostReason::Permission))
            }
            // Also without a pending write of ours: on a replicated stream the server may
            // refuse a renewal with a conflict although the key is still at our revision
            // (nats-server #7281), so the stream leader says whether it really moved.
            Err(e) if e.is_conflict() => AfterWrite::AskLeader {
                since: self
                    .renewal(|r| r.ambiguous_since)
                    .flatten()
                    .unwrap_or(sent),
            },
            Err(e) => {
                self.renewal(|r| {
                    if e.outcome_unknown() {
                        r.ambiguous_since.get_or_insert(sent);
                    }
                    r.clock.renewal_failed();
                });
                tracing::debug!(key = %self.key, error = %e, "lease renewal failed, will retry");
                AfterWrite::Done(Step::Retry)
            }
        }
    }

    /// Runs `f` on the renewal state of a lease with a TTL of its own (`None` for a bound
    /// lease, which has none).
    fn renewal<T>(&self, f: impl FnOnce(&mut Renewal) -> T) -> Option<T> {
        self.own().map(|own| f(&mut own.renewal()))
    }

    /// The stream leader's answer after a write that expected `expected` conflicted; `since`
    /// is what [`AfterWrite::AskLeader`] said.
    ///
    /// Only a write of ours *newer than the revision we expected* is one of our
    /// unacknowledged writes: an older one means the read was stale (an outdated leader may
    /// answer during an election), and taking it for a renewal would extend the deadline past
    /// the server's expiry; the key still at the revision we expected means the conflict was
    /// spurious. Both retry, without extending the deadline.
    pub(in crate::lease) fn read_back(
        &self,
        found: Result<Option<Entry>, Error>,
        since: Instant,
        expected: Revision,
    ) -> Step {
        match found {
            Ok(Some(e)) if self.is_ours(&e) && e.revision() <= expected => {
                tracing::debug!(key = %self.key, revision = e.revision().get(), "stale read of the lease key, retrying");
                self.renewal(|r| r.clock.renewal_failed());
                Step::Retry
            }
            Ok(Some(e)) if e.is_value() && self.is_ours(&e) => {
                self.live().rev = e.revision();
                tracing::debug!(key = %self.key, revision = e.revision().get(), "an unacknowledged lease write had been applied");
                match self.renewal(|r| confirmed(r, since)) {
                    Some(false) => Step::Gone(LostReason::Deadline),
                    _ => Step::Written,
                }
            }
            Ok(e) => Step::Gone(reason_of(e.as_ref())),
            Err(e) => {
                tracing::debug!(key = %self.key, error = %e, "could not read the lease key back");
                self.renewal(|r| r.clock.renewal_failed());
                Step::Retry
            }
        }
    }

    /// Whether our own write settled after a guarded write conflicted at `rev`: `Some(true)`
    /// when it moved the key, `Some(false)` when none is in flight, `None` while one is.
    fn settled_past(&self, rev: Revision) -> Option<bool> {
        let l = self.live();
        if l.rev != rev {
            return Some(true);
        }
        (!l.busy).then_some(false)
    }

    /// After a guarded write conflicted at `rev`: whether our own renewal moved the key,
    /// waiting for one in flight up to the deadline or [`RENEWAL_WAIT`].
    ///
    /// # Cancel safety
    /// Cancel safe: it only waits.
    pub(in crate::lease) async fn renewed_past(&self, rev: Revision) -> bool {
        if let Some(moved) = self.settled_past(rev) {
            return moved;
        }
        let give_up = self.deadline().min(Instant::now() + RENEWAL_WAIT);
        let waits = self.waits();
        loop {
            let notified = waits.settled.notified();
            if let Some(moved) = self.settled_past(rev) {
                return moved;
            }
            if tokio::time::timeout_at(give_up, notified).await.is_err() {
                return false;
            }
        }
    }
}

/// Whether the server refused a write of our key for what it carries (a value too large, a
/// bucket that is gone, a feature it lacks): another attempt would be refused again. Any
/// other failure may pass — a lost answer, a conflict the stream leader must judge, an
/// election — and is retried.
pub(in crate::lease) fn refused_for_good(e: &Error) -> bool {
    matches!(
        e.kind(),
        ErrorKind::ValueTooLarge
            | ErrorKind::InvalidArgument
            | ErrorKind::InvalidKey
            | ErrorKind::InvalidTtl
            | ErrorKind::Codec
            | ErrorKind::BucketNotFound
            | ErrorKind::FeatureDisabled
            | ErrorKind::ServerTooOld
    )
}

/// Why a lease whose key is no longer ours ended, from what the key holds now.
fn reason_of(e: Option<&Entry>) -> LostReason {
    match e.and_then(Entry::removal) {
        Some(Removal::Expired) => LostReason::Expired,
        _ => LostReason::Taken,
    }
}

/// Counts a write of ours sent at `sent` as acknowledged — unless the lease's deadline has
/// passed by now (`false`): a lease ends at its deadline for good, however late an
/// acknowledgement still comes. Others may have acted on that end already (a release given
/// up, a new session made in its place): a session revived by a late acknowledgement would
/// keep an entry alive that its owner let go, for as long as the session lives.
fn confirmed(r: &mut Renewal, sent: Instant) -> bool {
    if !r.clock.is_valid(Instant::now()) {
        return false;
    }
    r.ambiguous_since = None;
    r.clock.renewed(sent);
    true
}
