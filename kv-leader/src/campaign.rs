//! Campaigning: wait on the leader key's watch until it is free and it is our turn, then race
//! one conditional write for it — the creation of the leader lease.
//!
//! The same watch follows the candidate registrations `E.cand.*`, whose lease origins form
//! the line ([`Line`]): the first in line races at once, each further place one grace period
//! later, so a failover costs one write instead of one per candidate.

use std::future::{Future, IntoFuture};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use kvtk_core::lease::Lease;
use kvtk_core::{Backoff, Entry, Expect, Include, Revision, Watch, WatchEvent};
use tokio::time::Instant;

use crate::election::{validate_name, Counters, Shared};
use crate::error::{Error, ErrorKind};
use crate::leadership::Leadership;
use crate::line::{Line, Pace};
use crate::record::{CandidateRecord, Record};

/// What a candidate does about the leader key it sees.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Decision {
    /// Race for it with this expectation.
    Take(Expect),
    /// Someone leads (or a transfer to someone else is pending): wait for a change.
    Wait,
    /// The key is free but candidates before us go first: decide again after this long (or
    /// at the next change).
    Later(Duration),
}

/// Where a candidate stands while the key is free.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Turn {
    /// How many live candidates are before us in line.
    pub(crate) rank: usize,
    /// How long we have seen the key free.
    pub(crate) waited: Duration,
}

/// What the leader key holds, as far as the election rule cares.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum KeyView {
    /// No message at all (never written, or a marker that expired).
    Absent,
    /// A tombstone, purge or expiry marker at this revision.
    Removed(kvtk_core::Revision),
    /// A live value at this revision (`None`: undecodable).
    Live(kvtk_core::Revision, Option<Record>),
}

impl KeyView {
    pub(crate) fn of(e: Option<&Entry>) -> KeyView {
        match e {
            None => KeyView::Absent,
            Some(e) if !e.is_value() => KeyView::Removed(e.revision()),
            Some(e) => KeyView::Live(e.revision(), Record::from_entry(e)),
        }
    }
}

/// The pure election rule: a free key is raced for once our turn is due (at once for the
/// first in line, one grace later per place behind it); a live value is only taken when it
/// is a hand-over to us, at once. (Our own write whose acknowledgement was lost is recognised
/// by the lease creation itself, from its nonce.)
pub(crate) fn decide(view: &KeyView, id: &str, turn: Turn, pace: Pace) -> Decision {
    let free = match view {
        KeyView::Absent => Expect::NoMessage,
        KeyView::Removed(rev) => Expect::Revision(*rev),
        KeyView::Live(rev, Some(r)) if r.transfer_to.as_deref() == Some(id) => {
            return Decision::Take(Expect::Revision(*rev))
        }
        KeyView::Live(..) => return Decision::Wait,
    };
    match pace.due(turn.rank).checked_sub(turn.waited) {
        Some(left) if !left.is_zero() => Decision::Later(left),
        _ => Decision::Take(free),
    }
}

/// A campaign being configured; await it to wait until elected.
///
/// ```no_run
/// # async fn demo(election: kvtk_leader::Election) -> Result<(), kvtk_leader::Error> {
/// let leadership = election.campaign("node-1").value("10.0.0.1:8080").await?;
/// # drop(leadership);
/// # Ok(()) }
/// ```
///
/// # Cancel safety
/// Dropping a waiting campaign stops it; its registration is no longer renewed and expires
/// within one TTL. If the campaign is dropped while its winning write is in flight, that
/// write may take the leader key with nobody to renew it: nobody acts as leader, and the key
/// expires within one TTL as after a crash.
#[must_use = "a campaign does nothing until awaited"]
#[derive(Debug)]
pub struct Campaign {
    shared: Arc<Shared>,
    id: String,
    value: String,
    /// A campaign prepared by a leader stepping down: its registration and a watch opened
    /// before the resignation.
    prepared: Option<Box<Candidate>>,
}

impl Campaign {
    pub(crate) fn new(shared: Arc<Shared>, id: String) -> Campaign {
        Campaign {
            shared,
            id,
            value: String::new(),
            prepared: None,
        }
    }

    /// The campaign of a leader about to step down, keeping its `registration`. Its watch
    /// opens now, before the resignation, so it sees every term that follows (a watch opened
    /// later shows only the latest, and the line would misplace whoever led in between).
    pub(crate) async fn before_step_down(
        shared: Arc<Shared>,
        id: String,
        value: String,
        registration: Option<Lease>,
    ) -> Campaign {
        let mut c = Candidate::new(shared.clone(), id.clone(), value.clone(), registration);
        if let Err(e) = c.start_watch().await {
            // The campaign opens it again when it runs.
            tracing::debug!(error = %e, "watch before stepping down failed");
        }
        Campaign {
            shared,
            id,
            value,
            prepared: Some(Box::new(c)),
        }
    }

    /// Records that we led until `revision` (our resignation's tombstone).
    pub(crate) fn stepped_down(mut self, revision: Revision) -> Campaign {
        if let Some(c) = self.prepared.as_mut() {
            let id = c.id.clone();
            c.led(&id, revision);
        }
        self
    }

    /// The value to publish while leading (an address, metadata as JSON, ...).
    pub fn value(mut self, value: impl Into<String>) -> Self {
        self.value = value.into();
        self
    }

    async fn run(self) -> Result<Leadership, Error> {
        validate_name("candidate id", &self.id)?;
        let shared = self.shared;
        if shared.closing.is_cancelled() {
            return Err(Error::new(ErrorKind::Closed, "the election was shut down"));
        }
        shared.check_bucket().await?;
        let mut c = match self.prepared {
            Some(c) => *c,
            None => Candidate::new(shared, self.id, self.value, None),
        };
        c.run().await
    }
}

impl IntoFuture for Campaign {
    type Output = Result<Leadership, Error>;
    type IntoFuture = Pin<Box<dyn Future<Output = Self::Output> + Send>>;
    fn into_future(self) -> Self::IntoFuture {
        Box::pin(self.run())
    }
}

struct Candidate {
    shared: Arc<Shared>,
    id: String,
    value: String,
    cand_key: String,
    /// `E.cand.`: the registrations' keys start with it.
    cand_prefix: String,
    /// The candidate registration, a lease kept alive by the election's keeper.
    registration: Option<Lease>,
    reg_failures: u32,
    /// When to retry a registration that failed.
    reg_retry: Instant,
    /// The leader key's latest entry as far as we know (`None`: no message).
    view: Option<Entry>,
    /// Whether `view` is complete: the watch delivered its initial state, or we read the
    /// key from the stream leader.
    known: bool,
    /// The live candidate registrations, from the same watch.
    line: Line,
    /// Who wrote the leader key's live value we saw last.
    last_leader: Option<String>,
    /// When we first saw the key free (since it last held a live value).
    free_since: Option<Instant>,
    /// When our turn comes if the key stays free.
    turn_at: Option<Instant>,
    watch: Option<Watch>,
    watch_failures: u32,
    watch_retry: Instant,
    /// The last expectation that failed; not retried until the view changes.
    tried: Option<Expect>,
    /// Read the key from the stream leader (the watch cannot tell us what we need).
    need_read: bool,
    read_failures: u32,
    /// Retry the expectation in `tried` at this instant (after a spurious conflict or an
    /// ambiguous failure).
    retry_at: Option<Instant>,
}

impl Drop for Candidate {
    fn drop(&mut self) {
        // A campaign that ends without winning leaves its registration to expire, as
        // documented; a winning one handed it to the leadership.
        if let Some(reg) = self.registration.take() {
            reg.orphan();
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
    fn new(
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
            reg_failures: 0,
            reg_retry: Instant::now(),
            view: None,
            known: false,
            line,
            last_leader: None,
            free_since: None,
            turn_at: None,
            watch: None,
            watch_failures: 0,
            watch_retry: Instant::now(),
            tried: None,
            need_read: false,
            read_failures: 0,
            retry_at: None,
        }
    }

    async fn run(&mut self) -> Result<Leadership, Error> {
        loop {
            if self.shared.closing.is_cancelled() {
                return Err(Error::new(ErrorKind::Closed, "the election was shut down"));
            }
            let now = Instant::now();
            if !self.registered() && now >= self.reg_retry {
                self.register().await?;
            }
            if self.watch.is_none() && now >= self.watch_retry {
                self.start_watch().await?;
            }
            if self.need_read {
                self.read_from_leader().await?;
            }
            if self.retry_at.is_some_and(|t| Instant::now() >= t) {
                self.retry_at = None;
                self.tried = None;
            }
            self.turn_at = None;
            if self.known {
                match self.decision() {
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

    /// Applies the rule to what we know now.
    fn decision(&mut self) -> Decision {
        let view = KeyView::of(self.view.as_ref());
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
        decide(&view, &self.id, turn, self.shared.pace())
    }

    /// Waits for the next watch event, timer, or the loss of our registration.
    async fn wait(&mut self) {
        let mut wake = Instant::now() + self.shared.lease().ttl().as_duration();
        if !self.registered() {
            wake = wake.min(self.reg_retry);
        }
        if self.watch.is_none() {
            wake = wake.min(self.watch_retry);
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
        if let Some(id) = e.key().as_str().strip_prefix(&self.cand_prefix) {
            let origin = e
                .is_value()
                .then(|| e.lease().map_or(e.revision(), |t| t.origin()));
            if let Some(t) = e.lease().filter(|_| e.is_value()) {
                self.line.owner(t.nonce(), id);
            }
            self.line.apply(id, e.revision(), origin);
        } else if self
            .view
            .as_ref()
            .is_none_or(|v| e.revision() > v.revision())
        {
            self.set_view(Some(e));
        }
    }

    /// Remembers that `id` led until `revision`, here and for later campaigns of the handle.
    fn led(&mut self, id: &str, revision: Revision) {
        self.line.led(id, revision);
        let mut all = self.shared.led.lock().unwrap_or_else(|p| p.into_inner());
        let last = all.entry(id.to_string()).or_insert(revision);
        *last = (*last).max(revision);
    }

    /// Takes `e` as the leader key's latest entry, remembering who led.
    fn set_view(&mut self, e: Option<Entry>) {
        match (&e, e.as_ref().and_then(Record::from_entry)) {
            (Some(e), Some(r)) => {
                self.led(&r.id, e.revision());
                self.last_leader = Some(r.id);
            }
            // The leader that just left stands in line from the moment it left.
            (Some(e), None) if !e.is_value() => {
                let named = e
                    .lease()
                    .and_then(|t| self.line.owner_of(t.nonce()).map(str::to_string));
                if let Some(id) = self.last_leader.take().or(named) {
                    self.led(&id, e.revision());
                }
            }
            _ => {}
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
        let created = self
            .shared
            .keeper()
            .await?
            .lease(&self.cand_key, rec.to_bytes())
            .tombstone_ttl(Duration::from_secs(1))
            .await;
        match created {
            Ok(l) => {
                self.registration = Some(l);
                self.reg_failures = 0;
            }
            Err(e) if e.is_transient() => {
                tracing::debug!(error = %e, "candidate registration failed, retrying");
                self.reg_retry = Instant::now() + Backoff::DEFAULT.delay(self.reg_failures);
                self.reg_failures += 1;
            }
            Err(e) => return Err(e.into()),
        }
        Ok(())
    }

    async fn start_watch(&mut self) -> Result<(), Error> {
        let started = self
            .shared
            .bucket
            .watch([
                self.shared.leader_key.clone(),
                format!("{}*", self.cand_prefix),
            ])
            .include(Include::LastPerKey)
            .await;
        Counters::bump(&self.shared.counters.watches);
        match started {
            Ok(w) => {
                self.watch = Some(w);
                self.watch_failures = 0;
            }
            Err(e) if e.is_transient() => {
                self.watch_retry = Instant::now() + Backoff::DEFAULT.delay(self.watch_failures);
                self.watch_failures += 1;
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
                self.read_failures = 0;
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
        self.retry_at = Some(Instant::now() + Backoff::DEFAULT.delay(self.read_failures));
        self.read_failures += 1;
    }

    /// One conditional write for the leader key: the creation of the leader lease. `Some`
    /// when it won.
    async fn attempt(&mut self, expect: Expect) -> Result<Option<Leadership>, Error> {
        let shared = self.shared.clone();
        let body = Record {
            id: self.id.clone(),
            value: self.value.clone(),
            transfer_to: None,
        }
        .to_bytes();
        let keeper = shared.keeper().await?;
        Counters::bump(&shared.counters.cas_attempts);
        let mut create = keeper.lease(&shared.leader_key, body).expect(expect);
        if let Some(reg) = self.registration.as_ref().filter(|r| r.is_held()) {
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

#[cfg(test)]
mod tests {
    use super::*;
    use kvtk_core::Revision;

    fn rev(n: u64) -> Revision {
        Revision::new(n).unwrap()
    }

    fn rec(id: &str, transfer_to: Option<&str>) -> Option<Record> {
        Some(Record {
            id: id.into(),
            value: String::new(),
            transfer_to: transfer_to.map(Into::into),
        })
    }

    const PACE: Pace = Pace {
        grace: Duration::from_millis(200),
        last_resort: Duration::from_secs(2),
    };

    fn turn(rank: usize, waited_ms: u64) -> Turn {
        Turn {
            rank,
            waited: Duration::from_millis(waited_ms),
        }
    }

    fn take(view: &KeyView, t: Turn) -> Decision {
        decide(view, "a", t, PACE)
    }

    #[test]
    fn the_first_in_line_races_for_a_free_key_at_once_with_the_exact_expectation() {
        assert_eq!(
            take(&KeyView::Absent, turn(0, 0)),
            Decision::Take(Expect::NoMessage)
        );
        assert_eq!(
            take(&KeyView::Removed(rev(9)), turn(0, 0)),
            Decision::Take(Expect::Revision(rev(9)))
        );
    }

    #[test]
    fn later_places_wait_their_turn_then_race() {
        let free = KeyView::Removed(rev(9));
        let ms = Duration::from_millis;
        let cases = [
            (turn(1, 0), Decision::Later(ms(200))),
            (turn(1, 150), Decision::Later(ms(50))),
            (turn(1, 200), Decision::Take(Expect::Revision(rev(9)))),
            (turn(3, 450), Decision::Later(ms(150))),
            (turn(3, 600), Decision::Take(Expect::Revision(rev(9)))),
            // The last resort: everyone races once a TTL has passed.
            (turn(40, 1999), Decision::Later(ms(1))),
            (turn(40, 2000), Decision::Take(Expect::Revision(rev(9)))),
        ];
        for (t, want) in cases {
            assert_eq!(take(&free, t), want, "{t:?}");
        }
    }

    #[test]
    fn live_keys_wait_unless_handed_to_us() {
        for t in [turn(0, 0), turn(5, 5000)] {
            let other = KeyView::Live(rev(5), rec("b", None));
            assert_eq!(take(&other, t), Decision::Wait);
            let to_c = KeyView::Live(rev(5), rec("b", Some("c")));
            assert_eq!(take(&to_c, t), Decision::Wait);
            // A hand-over to us is taken at once, whatever our place in line.
            let to_us = KeyView::Live(rev(5), rec("b", Some("a")));
            assert_eq!(take(&to_us, t), Decision::Take(Expect::Revision(rev(5))));
            // Our own identity on a live key (an earlier incarnation, or our own write whose
            // acknowledgement was lost) is not taken over: the lease recognises its own write.
            let ours = KeyView::Live(rev(5), rec("a", None));
            assert_eq!(take(&ours, t), Decision::Wait);
            assert_eq!(take(&KeyView::Live(rev(5), None), t), Decision::Wait);
        }
    }
}
