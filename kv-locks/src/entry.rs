//! Our own queue entry (renewal, removal) and the view of a lock's queue.

use std::sync::Arc;

use kv_core::{Entry, ErrorKind as CoreKind, Expect, Revision};
use tokio::time::Instant;

use crate::error::{Error, ErrorKind};
use crate::lease::{LeaseClock, LeaseConfig};
use crate::shared::{Shared, Slot};
use crate::stats::Stat;
use crate::value::QueueValue;

/// Our own live queue entry and its lease.
#[derive(Debug)]
pub(crate) struct OwnEntry {
    pub(crate) shared: Arc<Shared>,
    pub(crate) cfg: LeaseConfig,
    pub(crate) clock: LeaseClock,
    /// The entry's latest revision as far as we know.
    pub(crate) rev: Revision,
    /// The revision of the write that entered the queue: the fencing token.
    pub(crate) ticket: Revision,
    pub(crate) attempt: String,
    /// Send time of the first renewal whose outcome is unknown (timeout, connection lost).
    ambiguous_since: Option<Instant>,
}

/// The outcome of one renewal attempt.
#[derive(Debug)]
pub(crate) enum Renewal {
    /// Renewed; the lease clock moved.
    Renewed,
    /// A transient failure: retry (the clock decides until when).
    Retry(Error),
    /// Someone else wrote our key, or it expired: the entry is gone.
    Gone(String),
}

/// Whether an error leaves the outcome of a write unknown (it may have been applied).
pub(crate) fn is_ambiguous(e: &kv_core::Error) -> bool {
    !matches!(
        e.kind(),
        CoreKind::Conflict
            | CoreKind::AlreadyExists
            | CoreKind::InvalidKey
            | CoreKind::InvalidTtl
            | CoreKind::InvalidArgument
            | CoreKind::ValueTooLarge
            | CoreKind::FeatureDisabled
            | CoreKind::ServerTooOld
    )
}

impl OwnEntry {
    pub(crate) fn new(
        shared: Arc<Shared>,
        cfg: LeaseConfig,
        sent_at: Instant,
        rev: Revision,
        ticket: Revision,
        attempt: String,
    ) -> OwnEntry {
        OwnEntry {
            shared,
            cfg,
            clock: LeaseClock::new(cfg, sent_at),
            rev,
            ticket,
            attempt,
            ambiguous_since: None,
        }
    }

    fn value(&self) -> bytes::Bytes {
        QueueValue {
            holder: self.shared.holder.clone(),
            attempt: self.attempt.clone(),
            ticket: Some(self.ticket.get()),
        }
        .encode()
    }

    /// One renewal: `update(own_key, value, rev).ttl(ttl)`.
    ///
    /// Not cancel safe: a dropped renewal may still be applied; the next attempt then
    /// conflicts and recognises it (see below).
    pub(crate) async fn renew(&mut self) -> Renewal {
        let s = self.shared.clone();
        let sent = Instant::now();
        let slack = self.clock.slack(sent);
        s.bump(Stat::Renewal);
        let res = s
            .bucket
            .update(&s.own_key, self.value(), self.rev)
            .ttl(self.cfg.ttl().as_duration())
            .await;
        match res {
            Ok(rev) => {
                self.rev = rev;
                // A CAS on our last known revision succeeded, so none of the earlier
                // unacknowledged renewals was applied: this send time is the one that counts.
                self.ambiguous_since = None;
                self.clock.renewed(sent);
                tracing::debug!(lock = %s.name, revision = rev.get(), slack_ms = slack.as_millis() as u64, "renewed");
                Renewal::Renewed
            }
            Err(e) if e.is_conflict() && self.ambiguous_since.is_some() => {
                // An earlier renewal whose ack we never saw may have been applied: our key
                // then holds our own attempt nonce at a newer revision.
                match self.read_own().await {
                    Ok(Some((rev, true))) => {
                        let since = self.ambiguous_since.take().unwrap_or(sent);
                        self.rev = rev;
                        self.clock.renewed(since);
                        tracing::debug!(lock = %s.name, revision = rev.get(), "an unacknowledged renewal had been applied");
                        Renewal::Renewed
                    }
                    Ok(_) => Renewal::Gone(format!(
                        "our queue entry was removed or expired (revision {})",
                        e.current_revision().map_or(0, Revision::get)
                    )),
                    Err(e) => {
                        self.clock.renewal_failed();
                        Renewal::Retry(e)
                    }
                }
            }
            Err(e) if e.is_conflict() => Renewal::Gone(format!(
                "our queue entry was removed or expired (now at revision {})",
                e.current_revision().map_or(0, Revision::get)
            )),
            Err(e) if is_ambiguous(&e) => {
                self.ambiguous_since.get_or_insert(sent);
                self.clock.renewal_failed();
                tracing::debug!(lock = %s.name, error = %e, slack_ms = slack.as_millis() as u64, "renewal failed, will retry");
                Renewal::Retry(e.into())
            }
            Err(e) => {
                self.clock.renewal_failed();
                Renewal::Retry(e.into())
            }
        }
    }

    /// Reads our key from the leader: its revision and whether it is a live value carrying
    /// our attempt nonce.
    async fn read_own(&self) -> Result<Option<(Revision, bool)>, Error> {
        read_own(&self.shared, &self.attempt).await
    }

    /// Removes our entry: `delete(own_key).revision(rev)` (never a blind delete), retried on
    /// unknown outcomes. With `alone`, first tries `expect_on(<name>.*.*, alone)`: success
    /// proves the queue is empty afterwards, so the tombstone's revision feeds the fast path.
    ///
    /// Returns whether our entry was still there to be removed.
    pub(crate) async fn remove(
        &mut self,
        slot: &mut Slot,
        alone: Option<Revision>,
    ) -> Result<bool, Error> {
        let s = self.shared.clone();
        let tomb_ttl = s.tombstone_ttl;
        slot.fast = None;
        if let Some(a) = alone {
            s.bump(Stat::ReleaseWrite);
            let res = s
                .bucket
                .delete(&s.own_key)
                .ttl(tomb_ttl)
                .expect_on(s.name.all_filter(), Expect::Revision(a))
                .await;
            match res {
                Ok(t) => {
                    slot.own_last = Some(t);
                    slot.fast = Some(Expect::Revision(t));
                    return Ok(true);
                }
                Err(e) if e.is_conflict() => {}
                // Unknown outcome: the CAS path below recognises an applied delete.
                Err(e) if is_ambiguous(&e) => {}
                Err(e) => return Err(e.into()),
            }
        }
        remove_own(&s, slot, &self.attempt, Some(self.rev)).await
    }
}

/// Reads our own key from the stream leader.
pub(crate) async fn read_own(s: &Shared, attempt: &str) -> Result<Option<(Revision, bool)>, Error> {
    s.bump(Stat::LeaderRead);
    let e = s.bucket.get_from_leader(&s.own_key).await?;
    Ok(e.map(|e| {
        let ours =
            e.is_value() && QueueValue::decode(e.value()).is_some_and(|v| v.attempt == attempt);
        (e.revision(), ours)
    }))
}

/// Deletes our own entry of attempt `attempt`, conditional on its revision. `known` is the
/// revision we believe it has; when unknown or wrong, the leader tells. Returns whether an
/// entry of ours was there to delete.
pub(crate) async fn remove_own(
    s: &Shared,
    slot: &mut Slot,
    attempt: &str,
    known: Option<Revision>,
) -> Result<bool, Error> {
    let mut rev = known;
    let mut last_err = None;
    for _ in 0..4 {
        let r = match rev {
            Some(r) => r,
            None => match read_own(s, attempt).await {
                Ok(Some((r, true))) => r,
                Ok(other) => {
                    // Already gone (or never written): nothing of ours to remove.
                    slot.own_last = other.map(|(r, _)| r);
                    return Ok(false);
                }
                Err(e) => {
                    last_err = Some(e);
                    continue;
                }
            },
        };
        s.bump(Stat::ReleaseWrite);
        match s
            .bucket
            .delete(&s.own_key)
            .ttl(s.tombstone_ttl)
            .revision(r)
            .await
        {
            Ok(t) => {
                slot.own_last = Some(t);
                return Ok(true);
            }
            // Not at the revision we thought: maybe an unacknowledged write of ours moved
            // it, maybe it expired. Ask the leader.
            Err(e) if e.is_conflict() => rev = None,
            Err(e) if is_ambiguous(&e) => {
                last_err = Some(e.into());
                rev = None;
            }
            Err(e) => return Err(e.into()),
        }
    }
    slot.own_last = None;
    Err(last_err.unwrap_or_else(|| Error::new(ErrorKind::Kv, "could not remove our queue entry")))
}

/// The ticket of a live queue entry: the one stored in its value once it has been renewed,
/// else its revision.
pub(crate) fn ticket_of(e: &Entry) -> Revision {
    QueueValue::decode(e.value())
        .and_then(|v| v.ticket)
        .and_then(Revision::new)
        .filter(|t| *t <= e.revision())
        .unwrap_or(e.revision())
}

/// One live queue entry.
#[derive(Debug, Clone)]
pub(crate) struct Live {
    pub(crate) key: String,
    pub(crate) ticket: Revision,
}

/// A lock's keys at one revision.
#[derive(Debug)]
pub(crate) struct View {
    /// Live queue entries, lowest ticket first.
    pub(crate) live: Vec<Live>,
    /// The lock's last revision (over all its keys): the fast path's expectation.
    pub(crate) last: Option<Revision>,
    pub(crate) as_of: Option<Revision>,
    /// The permit count stored for the lock, if any.
    pub(crate) permits: Option<Entry>,
}

impl View {
    pub(crate) fn expect_empty(&self) -> Expect {
        self.last.map_or(Expect::NoMessage, Expect::Revision)
    }
}

/// Takes a snapshot of the lock's keys, consistent at a revision ≥ `at_least` (a lagging
/// replica's older snapshot is retried).
pub(crate) async fn view(s: &Shared, at_least: Option<Revision>) -> Result<View, Error> {
    let mut delay = std::time::Duration::from_millis(5);
    loop {
        s.bump(Stat::Snapshot);
        let snap = s.bucket.snapshot(s.name.all_filter()).await?;
        let fresh = match (at_least, snap.as_of) {
            (None, _) => true,
            (Some(w), Some(a)) => a >= w,
            (Some(_), None) => false,
        };
        if !fresh {
            tracing::debug!(lock = %s.name, "snapshot from a lagging replica, retrying");
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(std::time::Duration::from_millis(200));
            continue;
        }
        let last = snap.last_revision();
        let prefix = s.name.queue_prefix();
        let permits_key = s.name.permits_key();
        let mut live = Vec::new();
        let mut permits = None;
        for e in snap.entries {
            let key = e.key().as_str();
            if key == permits_key {
                permits = Some(e);
                continue;
            }
            if !key.starts_with(&prefix) || !e.is_value() {
                continue;
            }
            let ticket = ticket_of(&e);
            live.push(Live {
                key: key.to_string(),
                ticket,
            });
        }
        live.sort_by_key(|l| l.ticket);
        return Ok(View {
            live,
            last,
            as_of: snap.as_of,
            permits,
        });
    }
}
