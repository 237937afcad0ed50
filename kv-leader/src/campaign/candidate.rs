//! One candidate's campaign: register, follow the leader key and the registrations on one
//! watch, and race one conditional write for the key when the rule says it is our turn.

mod bound;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use kvtk_core::lease::{Lease, SessionBook, SessionId, SESSION_PREFIX};
use kvtk_core::{Backoff, Entry, Expect, Include, Retrying, Revision, Watch, WatchEvent};
use tokio::time::Instant;

use super::rule::{decide, Decision, KeyView, Turn};
use crate::error::{Error, ErrorKind};
use crate::leadership::Leadership;
use crate::line::Line;
use crate::record::{CandidateRecord, Record};
use crate::shared::Shared;
use crate::stats::Counters;

/// One candidate's campaign: its registration, the watch of the leader key and the
/// registrations, what it knows of both, and its timers.
pub(crate) struct Candidate {
    shared: Arc<Shared>,
    id: String,
    value: String,
    cand_key: String,
    /// `E.cand.`: the registrations' keys start with it.
    cand_prefix: String,
    /// The candidate registration, a lease kept alive by the election's keeper.
    registration: Option<Lease>,
    /// Failed registrations in a row.
    reg_retry: Retrying,
    /// When to retry a registration that failed.
    reg_due: Instant,
    /// The leader key's latest entry as far as we know (`None`: no message).
    view: Option<Entry>,
    /// Whether `view` is complete: the watch delivered its initial state, or we read the
    /// key from the stream leader.
    known: bool,
    /// The live candidate registrations, from the same watch.
    line: Line,
    /// When we first saw the key free (since it last held a live value).
    free_since: Option<Instant>,
    /// When our turn comes if the key stays free.
    turn_at: Option<Instant>,
    watch: Option<Watch>,
    /// Failed watch starts in a row.
    watch_retry: Retrying,
    /// When to retry a watch that failed to start.
    watch_due: Instant,
    /// The last expectation that failed; not retried until the view changes.
    tried: Option<Expect>,
    /// Read the key from the stream leader (the watch cannot tell us what we need).
    need_read: bool,
    /// Leader reads that failed, or found a write failed without cause, in a row.
    read_retry: Retrying,
    /// Retry the expectation in `tried` at this instant (after a spurious conflict or an
    /// ambiguous failure).
    retry_at: Option<Instant>,
    /// A registration of a format version this library does not know: the campaign ends.
    refused: Option<kvtk_core::Error>,
    /// With registrations bound to sessions: the sessions of the bucket as the watch shows
    /// them (alive or ended).
    sessions: SessionBook,
    /// The live registrations' latest entries, by candidate id.
    regs: HashMap<String, Entry>,
    /// Revisions of bound entries already judged (removed, or found alive).
    checked: HashSet<Revision>,
    /// The revision our step-down left (a campaign prepared by a leader stepping down).
    stepped_down: Option<Revision>,
}

impl Drop for Candidate {
    fn drop(&mut self) {
        // A campaign that ends without winning leaves its registration to expire, as
        // documented; a winning one handed it to the leadership.
        if let Some(reg) = self.registration.take() {
            self.shared.drop_registration(reg);
        }
    }
}

impl std::fmt::Debug for Candidate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Candidate")
            .field("id", &self.id)
            .field("registered", &self.registered())
            .field("watching", &self.watch.is_some())
            .finish_non_exhaustive()
    }
}

impl Candidate {
    pub(crate) fn new(
        shared: Arc<Shared>,
        id: String,
        value: String,
        registration: Option<Lease>,
    ) -> Candidate {
        let line = Line::with_led(shared.led.lock().unwrap_or_else(|p| p.into_inner()).clone());
        Candidate {
            cand_key: shared.candidate_key(&id),
            cand_prefix: shared.candidate_key(""),
            shared,
            id,
            value,
            registration,
            reg_retry: Backoff::DEFAULT.start(),
            reg_due: Instant::now(),
            view: None,
            known: false,
            line,
            free_since: None,
            turn_at: None,
            watch: None,
            watch_retry: Backoff::DEFAULT.start(),
            watch_due: Instant::now(),
            tried: None,
            need_read: false,
            read_retry: Backoff::DEFAULT.start(),
            retry_at: None,
            refused: None,
            sessions: SessionBook::new(),
            regs: HashMap::new(),
            checked: HashSet::new(),
            stepped_down: None,
        }
    }

    pub(crate) async fn run(&mut self) -> Result<Leadership, Error> {
        loop {
            if self.shared.closing.is_cancelled() {
                return Err(Error::new(ErrorKind::Closed, "the election was shut down"));
            }
            let now = Instant::now();
            if !self.registered() && now >= self.reg_due {
                self.register().await?;
            }
            if self.watch.is_none() && now >= self.watch_due {
                self.start_watch().await?;
            }
            if self.need_read {
                self.read_from_leader().await?;
            }
            if self.known && self.shared.bind {
                if let Some(l) = self.adopt().await? {
                    return Ok(l);
                }
                self.reap_dead().await;
            }
            if self.retry_at.is_some_and(|t| Instant::now() >= t) {
                self.retry_at = None;
                self.tried = None;
            }
            self.turn_at = None;
            if self.known {
                match self.decision()? {
                    Decision::Take(expect) if self.tried != Some(expect) => {
                        if let Some(l) = self.attempt(expect).await? {
                            return Ok(l);
                        }
                        continue;
                    }
                    Decision::Later(left) => self.turn_at = Some(Instant::now() + left),
                    Decision::Take(_) | Decision::Wait => {}
                }
            }
            self.wait().await;
        }
    }

    fn registered(&self) -> bool {
        self.registration.as_ref().is_some_and(Lease::is_held)
    }

    /// Applies the rule to what we know now; refuses (touching nothing more) a leader key or
    /// registration of a format version this library does not know.
    fn decision(&mut self) -> Result<Decision, Error> {
        if let Some(e) = self.refused.take() {
            return Err(e.into());
        }
        let view = KeyView::of(self.view.as_ref())?;
        let now = Instant::now();
        let since = match view {
            KeyView::Absent | KeyView::Removed(_) => *self.free_since.get_or_insert(now),
            KeyView::Live(..) => {
                self.free_since = None;
                now
            }
        };
        let origin = self
            .registration
            .as_ref()
            .filter(|l| l.is_held())
            .map(Lease::origin);
        let turn = Turn {
            rank: self.line.rank(&self.id, origin),
            waited: now - since,
        };
        Ok(decide(&view, &self.id, turn, self.shared.pace()))
    }

    /// Waits for the next watch event, timer, or the loss of our registration.
    async fn wait(&mut self) {
        let mut wake = Instant::now() + self.shared.lease().ttl().as_duration();
        if !self.registered() {
            wake = wake.min(self.reg_due);
        }
        if self.watch.is_none() {
            wake = wake.min(self.watch_due);
        }
        for t in [self.retry_at, self.turn_at].into_iter().flatten() {
            wake = wake.min(t);
        }
        let closing = self.shared.closing.clone();
        let reg_lost = self.registration.as_ref().map(Lease::lost);
        let reg_lost = async {
            match reg_lost {
                Some(lost) => {
                    lost.await;
                }
                None => std::future::pending().await,
            }
        };
        let ev = tokio::select! {
            ev = next_event(&mut self.watch) => ev,
            _ = tokio::time::sleep_until(wake) => return,
            _ = closing.cancelled() => return,
            _ = reg_lost => return,
        };
        self.on_event(ev);
    }

    /// Takes one event of the watch (`None`: it ended).
    fn on_event(&mut self, ev: Option<Result<WatchEvent, kvtk_core::Error>>) {
        match ev {
            Some(Ok(WatchEvent::Entry(e))) => self.see(e),
            Some(Ok(WatchEvent::InitialDone)) => self.known = true,
            Some(Err(e)) if e.kind() == kvtk_core::ErrorKind::HistoryGone => self.need_read = true,
            Some(Err(e)) => tracing::debug!(error = %e, "leader watch error"),
            None => {
                self.watch = None;
                self.known = false;
            }
        }
    }

    fn see(&mut self, e: Entry) {
        if let Some(id) = SessionId::from_key(e.key().as_str()) {
            self.session_seen(id, &e);
        } else if let Some(id) = e.key().as_str().strip_prefix(&self.cand_prefix) {
            if let Err(refused) = CandidateRecord::from_entry(&e) {
                self.refused.get_or_insert(refused);
            }
            let id = id.to_string();
            self.line.registration(&id, &e);
            self.registration_seen(&id, e);
        } else if self
            .view
            .as_ref()
            .is_none_or(|v| e.revision() > v.revision())
        {
            self.set_view(Some(e));
        }
    }

    /// Records that we led until `revision` (our resignation's tombstone).
    pub(crate) fn stepped_down(&mut self, revision: Revision) {
        self.stepped_down = Some(revision);
        let id = self.id.clone();
        self.led(&id, revision);
    }

    /// Remembers that `id` led until `revision`, here and for later campaigns of the handle.
    fn led(&mut self, id: &str, revision: Revision) {
        self.line.led(id, revision);
        self.remember_led(id, revision);
    }

    /// Remembers that `id` led until `revision` for later campaigns of the handle.
    fn remember_led(&self, id: &str, revision: Revision) {
        let mut all = self.shared.led.lock().unwrap_or_else(|p| p.into_inner());
        let last = all.entry(id.to_string()).or_insert(revision);
        *last = (*last).max(revision);
    }

    /// Takes `e` as the leader key's latest entry, remembering who led.
    fn set_view(&mut self, e: Option<Entry>) {
        // The leader that just left (or handed over) stands in line from the moment it left.
        let before = self.line.last_leader().map(str::to_string);
        if let Some((id, revision)) = e.as_ref().and_then(|e| self.line.leader_key(e)) {
            self.remember_led(&id, revision);
            if let Some(before) = before.filter(|b| *b != id) {
                self.remember_led(&before, revision);
            }
        }
        self.view = e;
    }

    /// Registers as a candidate: a lease on `E.cand.<id>`, renewed by the election's keeper.
    async fn register(&mut self) -> Result<(), Error> {
        if let Some(old) = self.registration.take() {
            old.orphan();
        }
        let rec = CandidateRecord {
            id: self.id.clone(),
            value: self.value.clone(),
        };
        let create = match self.shared.sessions().await? {
            Some(s) => s.binding(&self.cand_key, rec.to_bytes()).await,
            None => Ok(self
                .shared
                .keeper()
                .await?
                .lease(&self.cand_key, rec.to_bytes())),
        };
        let created = match create {
            Ok(c) => c.tombstone_ttl(Duration::from_secs(1)).await,
            Err(e) => Err(e),
        };
        match created {
            Ok(l) => {
                self.registration = Some(l);
                self.reg_retry.reset();
            }
            Err(e) if e.is_transient() => {
                tracing::debug!(error = %e, "candidate registration failed, retrying");
                self.reg_due = self.reg_retry.next_attempt();
            }
            Err(e) => return Err(e.into()),
        }
        Ok(())
    }

    pub(crate) async fn start_watch(&mut self) -> Result<(), Error> {
        let mut keys = vec![
            self.shared.leader_key.clone(),
            format!("{}*", self.cand_prefix),
        ];
        if self.shared.bind {
            keys.push(format!("{SESSION_PREFIX}*"));
        }
        let started = self
            .shared
            .bucket
            .watch(keys)
            .include(Include::LastPerKey)
            .await;
        Counters::bump(&self.shared.counters.watches);
        match started {
            Ok(w) => {
                self.watch = Some(w);
                self.watch_retry.reset();
            }
            Err(e) if e.is_transient() => {
                self.watch_due = self.watch_retry.next_attempt();
                // Without a watch we only learn about the key by reading it.
                self.need_read = true;
            }
            Err(e) => return Err(e.into()),
        }
        Ok(())
    }

    async fn read_from_leader(&mut self) -> Result<(), Error> {
        match self
            .shared
            .bucket
            .get_from_leader(&self.shared.leader_key)
            .await
        {
            Ok(read) => {
                self.need_read = false;
                self.read_retry.reset();
                let read_rev = read.as_ref().map(Entry::revision);
                let view_rev = self.view.as_ref().map(Entry::revision);
                if read_rev.is_none() || read_rev >= view_rev {
                    self.set_view(read);
                }
                self.known = true;
                let now_expect = match &self.view {
                    None => Expect::NoMessage,
                    Some(e) => Expect::Revision(e.revision()),
                };
                if self.tried == Some(now_expect) {
                    // The key is where our write expected it, yet the write failed: a spurious
                    // conflict (nats-server #7281) or a lost request. Retry after a pause.
                    self.retry_later();
                }
            }
            Err(e) if e.is_transient() => self.retry_later(),
            Err(e) => return Err(e.into()),
        }
        Ok(())
    }

    fn retry_later(&mut self) {
        self.retry_at = Some(self.read_retry.next_attempt());
    }

    /// One conditional write for the leader key: the creation of the leader lease. `Some`
    /// when it won.
    async fn attempt(&mut self, expect: Expect) -> Result<Option<Leadership>, Error> {
        let shared = self.shared.clone();
        let body = Record {
            id: self.id.clone(),
            value: self.value.clone(),
            transfer_to: None,
            registration: None,
        }
        .to_bytes();
        let keeper = shared.keeper().await?;
        Counters::bump(&shared.counters.cas_attempts);
        let mut create = keeper.lease(&shared.leader_key, body).expect(expect);
        // A bound registration's nonce is its session's, shared by the session's entries.
        if let Some(reg) = self
            .registration
            .as_ref()
            .filter(|r| r.is_held() && !r.is_bound())
        {
            create = create.same_owner_as(reg);
        }
        match create.await {
            Ok(lease) => {
                tracing::debug!(id = %self.id, term = lease.origin().get(), "elected");
                Counters::bump(&shared.counters.terms_won);
                Ok(Some(Leadership::new(
                    shared,
                    self.id.clone(),
                    self.value.clone(),
                    lease,
                    self.registration.take(),
                )))
            }
            Err(e) if e.is_conflict() => {
                Counters::bump(&shared.counters.cas_conflicts);
                self.tried = Some(expect);
                let newer = match (e.current_revision(), &self.view) {
                    (Some(cur), Some(v)) => cur > v.revision(),
                    (Some(_), None) => true,
                    (None, _) => false,
                };
                // The server named a newer revision: the watch brings it. Otherwise (a marker
                // that expired, a replicated stream's 10164) ask the stream leader.
                if !newer {
                    self.need_read = true;
                }
                Ok(None)
            }
            Err(e) if e.is_transient() => {
                tracing::debug!(error = %e, "campaign write failed, outcome unknown");
                self.tried = Some(expect);
                self.need_read = true;
                Ok(None)
            }
            Err(e) => Err(e.into()),
        }
    }
}

async fn next_event(w: &mut Option<Watch>) -> Option<Result<WatchEvent, kvtk_core::Error>> {
    match w.as_mut() {
        Some(w) => w.next().await,
        None => std::future::pending().await,
    }
}
