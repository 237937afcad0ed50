//! A won election: the [`Leadership`] handle and the task that renews it.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use kv_core::lease::{LeaseClock, Next};
use kv_core::{Entry, Revision, Watch, WatchEvent};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;

use crate::campaign::{backoff, is_transient, next_watch_event};
use crate::election::{validate_name, Shared};
use crate::error::{Error, ErrorKind};
use crate::health::Health;
use crate::record::{Record, Term};

/// Why a leadership ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum LostReason {
    /// The local lease deadline passed without a confirmed renewal (cut off, stalled, or the
    /// bucket's stream was unavailable for too long).
    Expired,
    /// Someone else wrote the leader key: a renewal conflict, or a foreign revision on the
    /// watch.
    Overwritten,
    /// We resigned (explicitly, or by dropping the handle).
    Resigned,
    /// We handed leadership over to another candidate.
    Transferred,
    /// The [`Election`](crate::Election) handle was shut down.
    Shutdown,
}

/// The shared view of one leadership, published by its task.
#[derive(Debug, Clone)]
pub(crate) struct LeaseState {
    pub(crate) term: Term,
    pub(crate) revision: Revision,
    pub(crate) deadline: Instant,
    pub(crate) value: String,
    pub(crate) ended: Option<LostReason>,
}

impl LeaseState {
    pub(crate) fn is_valid(&self, now: Instant) -> bool {
        self.ended.is_none() && now < self.deadline
    }
}

/// A cloneable, `'static` view of whether a leadership still holds; see
/// [`Leadership::lost_signal`].
///
/// It compares the lease deadline with the monotonic clock itself, so it reports loss at
/// the deadline even when the renewal task is starved.
#[derive(Debug, Clone)]
pub struct LostSignal {
    rx: watch::Receiver<LeaseState>,
}

impl LostSignal {
    /// Whether leadership is lost (or no longer trustworthy) now.
    pub fn is_lost(&self) -> bool {
        !self.rx.borrow().is_valid(Instant::now())
    }

    /// The local deadline: the lease must be considered lost from this instant on unless a
    /// renewal moves it.
    pub fn deadline(&self) -> Instant {
        self.rx.borrow().deadline
    }

    /// Resolves when leadership is lost: at once on a renewal conflict, a foreign write,
    /// resignation or transfer; at the latest at the local deadline.
    ///
    /// # Cancel safety
    /// Cancel safe.
    pub async fn lost(&self) -> LostReason {
        loop {
            if let Some(r) = self.until(Duration::ZERO).await {
                return r;
            }
        }
    }

    /// Resolves with `None` once the deadline is less than `lead` away, or with the reason
    /// once leadership is lost.
    pub(crate) async fn until(&self, lead: Duration) -> Option<LostReason> {
        let mut rx = self.rx.clone();
        loop {
            let (deadline, ended) = {
                let s = rx.borrow_and_update();
                (s.deadline, s.ended)
            };
            if let Some(r) = ended {
                return Some(r);
            }
            let at = deadline.checked_sub(lead).unwrap_or(deadline);
            if Instant::now() >= deadline {
                return Some(LostReason::Expired);
            }
            if Instant::now() >= at {
                return None;
            }
            tokio::select! {
                r = rx.changed() => {
                    if r.is_err() {
                        // The task ended without saying why (it panicked): not leading.
                        let ended = rx.borrow().ended;
                        return Some(ended.unwrap_or(LostReason::Expired));
                    }
                }
                _ = tokio::time::sleep_until(at) => {}
            }
        }
    }
}

/// What guarded writes need: the leader key and our current revision of it.
///
/// A write made with [`Fencing::put`] is conditional on the leader key still being at our
/// revision (`Nats-Expected-Last-Subject-Sequence-Subject`): the server rejects it once
/// anyone else has written the leader key, however late the write arrives.
#[derive(Debug, Clone)]
pub struct Fencing {
    shared: Arc<Shared>,
    term: Term,
    rx: watch::Receiver<LeaseState>,
}

impl Fencing {
    /// The term (fencing token) of this leadership.
    pub fn term(&self) -> Term {
        self.term
    }

    /// The leader key (`<election>.leader`).
    pub fn leader_key(&self) -> &str {
        &self.shared.leader_key
    }

    /// The leader key's revision as of our last confirmed write (changes with renewals).
    pub fn revision(&self) -> Revision {
        self.rx.borrow().revision
    }

    /// Writes `value` under `key` in the election's bucket, only while this leadership
    /// lasts. A conflict caused by our own concurrent renewal is retried; a conflict caused
    /// by anyone else fails with [`ErrorKind::Lost`].
    ///
    /// # Cancel safety
    /// Not cancel safe: the write may take effect after the future is dropped (but only
    /// while the leader key is still at our revision).
    pub async fn put(&self, key: &str, value: impl Into<Bytes>) -> Result<Revision, Error> {
        let value = value.into();
        let mut rx = self.rx.clone();
        for _ in 0..8 {
            let (rev, valid, deadline) = {
                let s = rx.borrow_and_update();
                (s.revision, s.is_valid(Instant::now()), s.deadline)
            };
            if !valid {
                return Err(Error::lost("leadership lost; write not sent"));
            }
            match self
                .shared
                .bucket
                .put(key, value.clone())
                .expect_on(&self.shared.leader_key, rev)
                .await
            {
                Ok(r) => return Ok(r),
                Err(e) if e.is_conflict() => {
                    // Either our renewal moved the key (its acknowledgement is on the way) or
                    // someone else took it (our watch reports that at once). Wait for either.
                    let changed = tokio::time::timeout_at(deadline, rx.changed()).await;
                    if !matches!(changed, Ok(Ok(()))) || !rx.borrow().is_valid(Instant::now()) {
                        return Err(Error::lost(format!(
                            "leadership lost; guarded write to {key:?} rejected"
                        )));
                    }
                }
                Err(e) => return Err(e.into()),
            }
        }
        Err(Error::lost(
            "the leader key kept changing under a guarded write",
        ))
    }
}

pub(crate) enum Cmd {
    Resign(oneshot::Sender<Result<(), Error>>),
    Proclaim(String, oneshot::Sender<Result<(), Error>>),
    Transfer(String, oneshot::Sender<Result<(), Error>>),
}

/// A won election. Renewed in the background until it is lost, resigned, transferred or
/// dropped.
///
/// - [`term`](Self::term) is the fencing token; [`fencing`](Self::fencing) makes writes
///   that the server rejects once this leadership is over.
/// - [`lost`](Self::lost) resolves at the local deadline (send time of the last confirmed
///   write + TTL − margin, on the monotonic clock) unless renewed, and at once when a renewal
///   conflicts or someone else writes the leader key.
/// - Dropping the handle resigns in the background (revision-fenced, never blind); call
///   [`resign`](Self::resign) to wait for it.
#[must_use = "dropping a Leadership resigns at once"]
#[derive(Debug)]
pub struct Leadership {
    shared: Arc<Shared>,
    id: String,
    term: Term,
    rx: watch::Receiver<LeaseState>,
    cmd: mpsc::Sender<Cmd>,
}

impl Leadership {
    /// Our identity.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The term (fencing token): strictly greater than every earlier term of this election.
    pub fn term(&self) -> Term {
        self.term
    }

    /// The leader key's current revision (changes with every renewal).
    pub fn revision(&self) -> Revision {
        self.rx.borrow().revision
    }

    /// The value we publish.
    pub fn value(&self) -> String {
        self.rx.borrow().value.clone()
    }

    /// The local deadline of the lease (moves with every renewal).
    pub fn deadline(&self) -> Instant {
        self.rx.borrow().deadline
    }

    /// Whether we still lead: not lost, resigned or transferred, and before the deadline.
    pub fn is_leader(&self) -> bool {
        self.rx.borrow().is_valid(Instant::now())
    }

    /// Resolves when leadership is lost; see [`LostSignal::lost`].
    ///
    /// # Cancel safety
    /// Cancel safe.
    pub async fn lost(&self) -> LostReason {
        self.lost_signal().lost().await
    }

    /// A cloneable `'static` loss signal to hand to the work done while leading.
    pub fn lost_signal(&self) -> LostSignal {
        LostSignal {
            rx: self.rx.clone(),
        }
    }

    /// Guarded writes for the work done while leading.
    pub fn fencing(&self) -> Fencing {
        Fencing {
            shared: self.shared.clone(),
            term: self.term,
            rx: self.rx.clone(),
        }
    }

    /// A readiness signal: ready while this lease is fresh.
    pub fn health(&self) -> Health {
        Health::of(self.rx.clone())
    }

    pub(crate) fn state(&self) -> watch::Receiver<LeaseState> {
        self.rx.clone()
    }

    async fn call(
        &self,
        make: impl FnOnce(oneshot::Sender<Result<(), Error>>) -> Cmd,
    ) -> Option<Result<(), Error>> {
        let (tx, rx) = oneshot::channel();
        self.cmd.send(make(tx)).await.ok()?;
        rx.await.ok()
    }

    /// Publishes a new value while leading: a conditional write on our revision, retried on
    /// transient errors until the local deadline. Fails with [`ErrorKind::Lost`] if
    /// leadership is (or gets) lost.
    ///
    /// # Cancel safety
    /// Not cancel safe: the value may be published (now or with the next renewal) even if
    /// the future is dropped.
    pub async fn proclaim(&self, value: impl Into<String>) -> Result<(), Error> {
        let value = value.into();
        self.call(|tx| Cmd::Proclaim(value, tx))
            .await
            .unwrap_or_else(|| Err(Error::lost("leadership already ended")))
    }

    /// Resigns: marks the leadership lost, then deletes the leader key if it is still at our
    /// revision. Candidates see the tombstone at once and the next one takes over within
    /// milliseconds. Resigning a lost leadership does nothing and succeeds.
    ///
    /// Stop the work done while leading *before* resigning.
    ///
    /// # Cancel safety
    /// Cancel safe: the resignation goes on in the background.
    pub async fn resign(self) -> Result<(), Error> {
        self.call(Cmd::Resign).await.unwrap_or(Ok(()))
    }

    /// Hands leadership over to candidate `id`, which must be campaigning. Only `id` can take
    /// the key; if it does not within the transfer TTL, the key expires and the normal race
    /// resumes. Our leadership ends (as [`LostReason::Transferred`]) before the hand-over is
    /// written. Stop the work done while leading *before* transferring.
    ///
    /// Fails with [`ErrorKind::NotCampaigning`] (and we keep leading) when `id` has no fresh
    /// registration, and with [`ErrorKind::Lost`] when leadership was already lost. After a
    /// successful transfer this handle reports [`LostReason::Transferred`].
    ///
    /// # Cancel safety
    /// Cancel safe: the hand-over goes on in the background.
    pub async fn transfer_to(&self, id: impl Into<String>) -> Result<(), Error> {
        let id = id.into();
        validate_name("transfer target", &id)?;
        if id == self.id {
            return Err(Error::invalid("cannot transfer leadership to ourselves"));
        }
        self.call(|tx| Cmd::Transfer(id, tx))
            .await
            .unwrap_or_else(|| Err(Error::lost("leadership already ended")))
    }
}

/// The task behind a [`Leadership`]: renews the lease, watches the leader key, runs commands.
pub(crate) struct Lead {
    shared: Arc<Shared>,
    id: String,
    value: String,
    nonce: String,
    term: Term,
    revision: Revision,
    clock: LeaseClock,
    watch: Option<Watch>,
    tx: watch::Sender<LeaseState>,
    cmd: mpsc::Receiver<Cmd>,
    cand_key: String,
    cand_next: Instant,
}

enum Outcome {
    Written,
    /// Someone else holds the key.
    Lost,
    /// The deadline passed before the write was confirmed (a late acknowledgement never
    /// revives a lease that observers may already have seen expire).
    Expired,
    Failed,
}

impl Lead {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn spawn(
        shared: Arc<Shared>,
        id: String,
        value: String,
        nonce: String,
        term: Term,
        revision: Revision,
        clock: LeaseClock,
        watch: Option<Watch>,
    ) -> Leadership {
        let (tx, rx) = watch::channel(LeaseState {
            term,
            revision,
            deadline: clock.deadline(),
            value: value.clone(),
            ended: None,
        });
        let (cmd_tx, cmd_rx) = mpsc::channel(4);
        let lead = Lead {
            cand_key: shared.candidate_key(&id),
            cand_next: Instant::now() + shared.lease.renew_every(),
            shared: shared.clone(),
            id: id.clone(),
            value,
            nonce,
            term,
            revision,
            clock,
            watch,
            tx,
            cmd: cmd_rx,
        };
        // The Election's tracker owns the task once the handle is gone: it ends by itself
        // after resigning (bounded by the lease deadline), and Election::shutdown waits.
        shared.tracker.spawn(lead.run());
        Leadership {
            shared,
            id,
            term,
            rx,
            cmd: cmd_tx,
        }
    }

    fn end(&self, reason: LostReason) {
        self.tx.send_modify(|s| {
            if s.ended.is_none() {
                s.ended = Some(reason);
            }
        });
        tracing::debug!(id = %self.id, term = %self.term, ?reason, "leadership ended");
    }

    fn ended(&self) -> bool {
        self.tx.borrow().ended.is_some()
    }

    async fn run(mut self) {
        let closing = self.shared.closing.clone();
        loop {
            let renew_at = match self.clock.next(Instant::now()) {
                Next::Lost => {
                    // Do not delete the key: our work may still be stopping, and the server
                    // expires the key no earlier than `margin` after our deadline.
                    self.end(LostReason::Expired);
                    return;
                }
                Next::RenewAt(t) => t,
            };
            tokio::select! {
                biased;
                _ = closing.cancelled() => {
                    self.resign(LostReason::Shutdown).await;
                    return;
                }
                cmd = self.cmd.recv() => match cmd {
                    // The handle was dropped: resign.
                    None => {
                        self.resign(LostReason::Resigned).await;
                        return;
                    }
                    Some(Cmd::Resign(reply)) => {
                        self.resign(LostReason::Resigned).await;
                        let _ = reply.send(Ok(()));
                        return;
                    }
                    Some(Cmd::Proclaim(value, reply)) => {
                        let r = self.proclaim(value).await;
                        let _ = reply.send(r);
                    }
                    Some(Cmd::Transfer(to, reply)) => {
                        let r = self.transfer(&to).await;
                        let _ = reply.send(r);
                    }
                },
                ev = next_watch_event(&mut self.watch) => self.on_watch(ev).await,
                _ = tokio::time::sleep_until(renew_at) => {
                    let rec = self.record(None);
                    let ttl = self.shared.lease.ttl().as_duration();
                    match self.write(rec, ttl).await {
                        Outcome::Lost => self.end(LostReason::Overwritten),
                        Outcome::Expired => self.end(LostReason::Expired),
                        Outcome::Written | Outcome::Failed => {}
                    }
                }
                _ = tokio::time::sleep_until(self.cand_next) => self.register().await,
            }
            if self.ended() {
                return;
            }
        }
    }

    fn record(&self, transfer_to: Option<String>) -> Record {
        Record {
            id: self.id.clone(),
            value: self.value.clone(),
            term: Some(self.term.get()),
            nonce: self.nonce.clone(),
            transfer_to,
        }
    }

    /// Whether a leader-key entry is one of our own writes of this term.
    fn is_ours(&self, e: &Entry) -> bool {
        Record::from_entry(e).is_some_and(|r| r.nonce == self.nonce && r.term_of(e) == self.term)
    }

    fn set_revision(&mut self, rev: Revision) {
        if rev > self.revision {
            self.revision = rev;
            self.tx.send_modify(|s| s.revision = rev);
        }
    }

    async fn on_watch(&mut self, ev: Option<Result<WatchEvent, kv_core::Error>>) {
        match ev {
            Some(Ok(WatchEvent::Entry(e))) if e.revision() > self.revision => {
                if self.is_ours(&e) {
                    // A write of ours whose acknowledgement has not arrived (or was lost).
                    self.set_revision(e.revision());
                } else {
                    self.end(LostReason::Overwritten);
                }
            }
            Some(Ok(_)) => {}
            Some(Err(e)) if e.kind() == kv_core::ErrorKind::HistoryGone => {
                // The key vanished while the watch was away: nobody holds it any more.
                self.end(LostReason::Overwritten);
            }
            Some(Err(e)) => tracing::debug!(error = %e, "leader watch error while leading"),
            None => self.watch = None,
        }
    }

    /// One conditional write of the leader key on our revision, bounded by the deadline.
    async fn write(&mut self, rec: Record, ttl: Duration) -> Outcome {
        let deadline = self.clock.deadline();
        let key = self.shared.leader_key.clone();
        for _ in 0..4 {
            let sent_at = Instant::now();
            if sent_at >= deadline {
                // Never renew late (a stalled runtime wakes up here past its deadline).
                return Outcome::Expired;
            }
            let w = self
                .shared
                .bucket
                .update(&key, rec.to_bytes(), self.revision)
                .ttl(ttl);
            match tokio::time::timeout_at(deadline, w).await {
                Ok(Ok(rev)) => {
                    if Instant::now() >= deadline {
                        self.set_revision(rev);
                        return Outcome::Expired;
                    }
                    self.clock.renewed(sent_at);
                    self.revision = rev.max(self.revision);
                    let (rev, dl) = (self.revision, self.clock.deadline());
                    self.tx.send_modify(|s| {
                        s.revision = rev;
                        s.deadline = dl;
                    });
                    return Outcome::Written;
                }
                Ok(Err(e)) if e.is_conflict() => {
                    // Ours, if an earlier write whose acknowledgement we lost moved the key.
                    let read =
                        tokio::time::timeout_at(deadline, self.shared.bucket.get_from_leader(&key))
                            .await;
                    match read {
                        Ok(Ok(Some(cur)))
                            if self.is_ours(&cur) && cur.revision() > self.revision =>
                        {
                            self.set_revision(cur.revision());
                            continue;
                        }
                        Ok(Ok(_)) => return Outcome::Lost,
                        _ => {
                            self.clock.renewal_failed();
                            return Outcome::Failed;
                        }
                    }
                }
                Ok(Err(e)) => {
                    tracing::debug!(error = %e, "leader renewal failed");
                    self.clock.renewal_failed();
                    return Outcome::Failed;
                }
                Err(_) => {
                    self.clock.renewal_failed();
                    return Outcome::Failed;
                }
            }
        }
        self.clock.renewal_failed();
        Outcome::Failed
    }

    /// Repeats a write until it succeeds, is refused, or the lease runs out.
    async fn write_until_deadline(&mut self, rec: Record, ttl: Duration) -> Result<(), Error> {
        loop {
            match self.write(rec.clone(), ttl).await {
                Outcome::Written => return Ok(()),
                Outcome::Lost => {
                    self.end(LostReason::Overwritten);
                    return Err(Error::lost("someone else took the leader key"));
                }
                Outcome::Expired => {
                    self.end(LostReason::Expired);
                    return Err(Error::lost("lease expired before the write was confirmed"));
                }
                Outcome::Failed => match self.clock.next(Instant::now()) {
                    Next::Lost => {
                        self.end(LostReason::Expired);
                        return Err(Error::lost("lease expired before the write was confirmed"));
                    }
                    Next::RenewAt(t) => tokio::time::sleep_until(t).await,
                },
            }
        }
    }

    async fn proclaim(&mut self, value: String) -> Result<(), Error> {
        // Renewals carry the new value from now on, even if this write fails.
        self.value = value.clone();
        self.tx.send_modify(|s| s.value = value);
        let ttl = self.shared.lease.ttl().as_duration();
        let rec = self.record(None);
        self.write_until_deadline(rec, ttl).await
    }

    async fn transfer(&mut self, to: &str) -> Result<(), Error> {
        let deadline = self.clock.deadline();
        let target = self.shared.candidate_key(to);
        let read =
            tokio::time::timeout_at(deadline, self.shared.bucket.get_from_leader(&target)).await;
        match read {
            Ok(Ok(Some(e))) if e.is_value() => {}
            Ok(Ok(_)) => {
                return Err(Error::new(
                    ErrorKind::NotCampaigning,
                    format!("candidate {to:?} is not campaigning"),
                ))
            }
            Ok(Err(e)) => return Err(e.into()),
            Err(_) => return Err(Error::lost("lease expired while checking the target")),
        }
        // Stop being leader before anyone else can be.
        self.end(LostReason::Transferred);
        let rec = self.record(Some(to.to_string()));
        let ttl = self.shared.transfer_ttl;
        let res = self.write_until_deadline(rec, ttl).await.map_err(|e| {
            Error::lost(format!(
                "hand-over to {to:?} not confirmed, leadership given up: {e}"
            ))
        });
        self.deregister().await;
        res
    }

    /// Ends the leadership, then deletes the key if it is still at our revision.
    async fn resign(&mut self, reason: LostReason) {
        self.end(reason);
        let key = self.shared.leader_key.clone();
        let mut failures = 0;
        loop {
            let deadline = self.clock.deadline();
            if Instant::now() >= deadline {
                // The key expires on its own no earlier than `margin` from now.
                break;
            }
            let del = self.shared.bucket.delete(&key).revision(self.revision);
            match tokio::time::timeout_at(deadline, del).await {
                Ok(Ok(_)) => break,
                Ok(Err(e)) if e.is_conflict() => {
                    let read =
                        tokio::time::timeout_at(deadline, self.shared.bucket.get_from_leader(&key))
                            .await;
                    match read {
                        Ok(Ok(Some(cur)))
                            if self.is_ours(&cur) && cur.revision() > self.revision =>
                        {
                            // A write of ours landed unacknowledged: delete that one.
                            self.revision = cur.revision();
                        }
                        Ok(Ok(_)) => break,
                        _ => failures += 1,
                    }
                }
                Ok(Err(e)) if !is_transient(&e) => break,
                _ => failures += 1,
            }
            if failures > 0 {
                let wake = (Instant::now() + backoff(failures)).min(deadline);
                tokio::time::sleep_until(wake).await;
            }
        }
        self.deregister().await;
    }

    async fn register(&mut self) {
        let rec = crate::record::CandidateRecord {
            id: self.id.clone(),
            value: self.value.clone(),
        };
        let ttl = self.shared.lease.ttl().as_duration();
        let _ = tokio::time::timeout_at(
            self.clock.deadline(),
            self.shared
                .bucket
                .put(&self.cand_key, rec.to_bytes())
                .ttl(ttl),
        )
        .await;
        self.cand_next = Instant::now() + self.shared.lease.renew_every();
    }

    /// Removes our candidate registration; the purge marker expires after a second.
    async fn deregister(&mut self) {
        let _ = tokio::time::timeout(
            Duration::from_secs(1),
            self.shared
                .bucket
                .purge(&self.cand_key)
                .ttl(Duration::from_secs(1)),
        )
        .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(deadline: Instant) -> LeaseState {
        LeaseState {
            term: Term::new(Revision::new(1).unwrap()),
            revision: Revision::new(1).unwrap(),
            deadline,
            value: String::new(),
            ended: None,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn lost_fires_at_the_deadline_even_without_the_renewal_task() {
        let t0 = Instant::now();
        let (tx, rx) = watch::channel(state(t0 + Duration::from_millis(2700)));
        let sig = LostSignal { rx };
        assert!(!sig.is_lost());
        // Early warning `lead` before the deadline.
        assert_eq!(sig.until(Duration::from_millis(200)).await, None);
        assert_eq!(Instant::now(), t0 + Duration::from_millis(2500));
        assert_eq!(sig.lost().await, LostReason::Expired);
        assert_eq!(Instant::now(), t0 + Duration::from_millis(2700));
        assert!(sig.is_lost());
        drop(tx);
    }

    #[tokio::test(start_paused = true)]
    async fn renewals_move_the_deadline_and_conflicts_end_at_once() {
        let t0 = Instant::now();
        let (tx, rx) = watch::channel(state(t0 + Duration::from_secs(1)));
        let sig = LostSignal { rx };
        let waiter = tokio::spawn({
            let sig = sig.clone();
            async move { (sig.lost().await, Instant::now()) }
        });
        tokio::time::sleep(Duration::from_millis(900)).await;
        tx.send_modify(|s| s.deadline = t0 + Duration::from_secs(3));
        tokio::time::sleep(Duration::from_millis(600)).await;
        assert!(!sig.is_lost());
        tx.send_modify(|s| s.ended = Some(LostReason::Overwritten));
        let (reason, at) = waiter.await.unwrap();
        assert_eq!(reason, LostReason::Overwritten);
        assert_eq!(at, t0 + Duration::from_millis(1500));
    }

    #[tokio::test(start_paused = true)]
    async fn a_vanished_task_counts_as_lost() {
        let t0 = Instant::now();
        let (tx, rx) = watch::channel(state(t0 + Duration::from_secs(5)));
        let sig = LostSignal { rx };
        drop(tx);
        assert_eq!(sig.lost().await, LostReason::Expired);
        assert_eq!(Instant::now(), t0, "no wait for the deadline");
    }
}
