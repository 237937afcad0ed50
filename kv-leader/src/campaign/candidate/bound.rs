//! A candidate of an election whose registrations are bound to sessions
//! ([`ElectionBuilder::bind_to_session`](crate::ElectionBuilder::bind_to_session)): it follows
//! the bucket's sessions, the first in line removes what ended sessions left (and a
//! handed-over leader key whose registration is gone), a leader key handed to us is taken
//! over without a write, and a leader stepping down chooses whom to hand it to.

use std::collections::HashSet;
use std::time::Duration;

use kvtk_core::lease::{remove_if_dead, remove_marked, Lease, Reaped, SessionId};
use kvtk_core::{Entry, Revision};
use tokio::time::Instant;

use super::{next_event, Candidate};
use crate::error::Error;
use crate::leadership::Leadership;
use crate::record::{CandidateRecord, Record};
use crate::shared::Shared;
use crate::stats::Counters;

/// Where a registration stands in line: its lease's origin.
fn reg_origin(e: &Entry) -> Revision {
    e.lease().map_or(e.revision(), |t| t.origin())
}

impl Candidate {
    /// A write `e` of session `id`'s key: alive while it holds a value (of a format we know:
    /// else the campaign ends, refused). An ended session's registrations leave the line at
    /// once (their removal follows).
    pub(super) fn session_seen(&mut self, id: SessionId, e: &Entry) {
        match self.sessions.see(e) {
            Ok(Some((_, state))) if state.is_alive() => return,
            Ok(_) => {}
            Err(refused) => {
                self.refused.get_or_insert(refused);
                return;
            }
        }
        // Past KNOWN_ENDED ended sessions, those no registration we know is bound to are
        // forgotten (an entry of a session we did not see alive is judged from the leader).
        let bound: HashSet<SessionId> =
            self.regs.values().filter_map(SessionId::bound_by).collect();
        self.sessions.forget_ended(|s| bound.contains(&s));
        self.checked.clear();
        let gone: Vec<String> = self
            .regs
            .iter()
            .filter(|(_, r)| SessionId::bound_by(r) == Some(id))
            .map(|(cand, _)| cand.clone())
            .collect();
        for cand in gone {
            self.line.gone(&cand, e.revision());
        }
    }

    /// A write of candidate `id`'s registration; one bound to a session that ended is not
    /// in line.
    pub(super) fn registration_seen(&mut self, id: &str, e: Entry) {
        if !e.is_value() {
            self.regs.remove(id);
            self.checked.clear();
            return;
        }
        let ended = SessionId::bound_by(&e).is_some_and(|s| self.sessions.get(s) == Some(false));
        if ended {
            self.line.gone(id, e.revision());
        }
        self.regs.insert(id.to_string(), e);
    }

    /// The session of bound entry `e` if we did not see it alive.
    fn maybe_dead(&self, e: &Entry) -> Option<SessionId> {
        let id = SessionId::bound_by(e)?;
        (self.sessions.get(id) != Some(true)).then_some(id)
    }

    /// Whether leader-key entry `v` is a hand-over whose registration our watch shows gone.
    fn orphaned(&self, v: &Entry) -> Option<Record> {
        let rec = Record::from_entry(v).ok().flatten()?;
        let origin = rec.registration?;
        let live = self.regs.get(&rec.id);
        live.is_none_or(|r| reg_origin(r).get() != origin)
            .then_some(rec)
    }

    /// Whether we stand first in line: only the first removes what ended sessions left.
    fn first_in_line(&self) -> bool {
        let origin = self.registration.as_ref().map(Lease::origin);
        self.registered() && self.line.rank(&self.id, origin) == 0
    }

    /// The first in line removes the registrations and the leader key of sessions it did
    /// not see alive (if the stream leader says they ended), and a handed-over leader key
    /// whose registration is gone; each entry is judged once until a session or
    /// registration ends, and a failure is tried again later.
    pub(super) async fn reap_dead(&mut self) {
        if !self.first_in_line() {
            return;
        }
        let leader = self.view.as_ref().filter(|v| v.is_value());
        let suspects: Vec<(Entry, Option<Record>)> = (self.regs.values().chain(leader))
            .filter(|e| !self.checked.contains(&e.revision()))
            .filter_map(|e| {
                let orphan = (e.key().as_str() == self.shared.leader_key)
                    .then(|| self.orphaned(e))
                    .flatten();
                let suspect = orphan.is_some() || self.maybe_dead(e).is_some();
                suspect.then(|| (e.clone(), orphan))
            })
            .collect();
        for (e, orphan) in suspects {
            match reap(&self.shared, &e, orphan).await {
                Ok(()) => {
                    self.checked.insert(e.revision());
                }
                Err(err) => {
                    tracing::debug!(key = %e.key(), error = %err, "could not judge an entry of an ended session yet");
                    self.retry_later();
                }
            }
        }
    }

    /// Takes over a leader key handed to us — bound to our registration's session, naming
    /// that registration, and written after we last led (a watch opened before our own
    /// step-down still shows the term we handed on) — as our leadership, without a write.
    pub(super) async fn adopt(&mut self) -> Result<Option<Leadership>, Error> {
        let (Some(v), Some(reg)) = (self.view.as_ref(), self.registration.as_ref()) else {
            return Ok(None);
        };
        let after_ours = self.stepped_down.is_none_or(|r| v.revision() > r);
        let ours = Record::from_entry(v).ok().flatten().is_some_and(|r| {
            r.id == self.id && r.registration == Some(reg.origin().get()) && reg.is_bound()
        });
        if !(after_ours && reg.is_held()) {
            return Ok(None);
        }
        if !ours || SessionId::bound_by(v).map(SessionId::get) != Some(reg.nonce()) {
            return Ok(None);
        }
        let Some(sessions) = self.shared.sessions().await? else {
            return Ok(None);
        };
        // Only the session the hand-over is bound to can adopt it: never make a new one.
        let Some(session) = sessions.try_current() else {
            return Ok(None);
        };
        let lease = match session.adopt(v) {
            Ok(lease) => lease,
            Err(e) => {
                tracing::debug!(error = %e, "could not take over the leadership handed to us");
                return Ok(None);
            }
        };
        tracing::debug!(id = %self.id, term = lease.origin().get(), "took over the leadership handed to us");
        Counters::bump(&self.shared.counters.terms_won);
        let (shared, id, value) = (self.shared.clone(), self.id.clone(), self.value.clone());
        Ok(Some(Leadership::new(
            shared,
            id,
            value,
            lease,
            self.registration.take(),
        )))
    }

    /// Waits, at most `within`, until the watch delivered the election's current state.
    pub(crate) async fn catch_up(&mut self, within: Duration) {
        let until = Instant::now() + within;
        while !self.known && self.watch.is_some() {
            let ev = tokio::select! {
                ev = next_event(&mut self.watch) => ev,
                _ = tokio::time::sleep_until(until) => return,
            };
            self.on_event(ev);
        }
    }

    /// Whom a step-down hands the leader key to: the first live candidate in line other
    /// than us whose registration is bound to a session we saw alive — its record (naming
    /// its registration's origin) and its session.
    pub(crate) fn successor(&self) -> Option<(Record, SessionId)> {
        let order = self.line.order();
        order.iter().filter(|id| **id != self.id).find_map(|id| {
            let e = self.regs.get(id)?;
            let session = SessionId::bound_by(e)?;
            if self.sessions.get(session) != Some(true) {
                return None;
            }
            let cand = CandidateRecord::from_entry(e).ok().flatten()?;
            let rec = Record {
                id: cand.id,
                value: cand.value,
                transfer_to: None,
                registration: Some(reg_origin(e).get()),
            };
            Some((rec, session))
        })
    }
}

/// Removes `e` if what it lives by ended: `orphan` (a hand-over whose registration the
/// watch shows gone) when the stream leader shows that registration gone too, else when
/// its session ended ([`remove_if_dead`]). Compare-and-set on `e`'s revision: of several
/// removers one succeeds.
async fn reap(shared: &Shared, e: &Entry, orphan: Option<Record>) -> Result<(), kvtk_core::Error> {
    let Some(rec) = orphan else {
        return remove_if_dead(&shared.bucket, e).await.map(|_| ());
    };
    let reg = shared
        .bucket
        .get_from_leader(shared.candidate_key(&rec.id))
        .await?;
    let live = reg.filter(Entry::is_value).map(|r| reg_origin(&r).get());
    if live.is_some() && live == rec.registration {
        return Ok(());
    }
    if let Reaped::Removed { .. } = remove_marked(&shared.bucket, e).await? {
        tracing::debug!(key = %e.key(), to = %rec.id, "removed a hand-over whose registration is gone");
    }
    Ok(())
}
