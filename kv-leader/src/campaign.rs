//! Campaigning: wait on the leader key's watch until it is free, then race one conditional
//! write for it.

use std::future::{Future, IntoFuture};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use kv_core::lease::LeaseClock;
use kv_core::{Entry, Expect, Include, Watch, WatchEvent};
use tokio::time::Instant;

use crate::election::{validate_name, Counters, Shared};
use crate::error::{Error, ErrorKind};
use crate::leadership::{Lead, Leadership};
use crate::record::{CandidateRecord, Record};

/// Whether a KV error may go away by retrying (the connection, a timeout, a leader change),
/// as opposed to a bad argument or bucket.
pub(crate) fn is_transient(e: &kv_core::Error) -> bool {
    use kv_core::ErrorKind as K;
    !matches!(
        e.kind(),
        K::InvalidKey
            | K::InvalidArgument
            | K::InvalidTtl
            | K::FeatureDisabled
            | K::ValueTooLarge
            | K::Codec
            | K::ServerTooOld
    )
}

/// Backoff after `failures` consecutive failures: 50 ms doubling, at most 1 s.
pub(crate) fn backoff(failures: u32) -> Duration {
    Duration::from_millis(50)
        .saturating_mul(1u32 << failures.min(5))
        .min(Duration::from_secs(1))
}

/// What a candidate does about the leader key it sees.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Decision {
    /// Race for it with this expectation.
    Take(Expect),
    /// The live value is our own write whose acknowledgement we lost.
    Adopt,
    /// Someone leads (or a transfer to someone else is pending): wait for a change.
    Wait,
}

/// What the leader key holds, as far as the election rule cares.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum KeyView {
    /// No message at all (never written, or a marker that expired).
    Absent,
    /// A tombstone, purge or expiry marker at this revision.
    Removed(kv_core::Revision),
    /// A live value at this revision (`None`: undecodable).
    Live(kv_core::Revision, Option<Record>),
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

/// The pure election rule: free keys are raced for; a live value is only taken when it is a
/// hand-over to us, and recognised when it is our own unacknowledged write.
pub(crate) fn decide(view: &KeyView, id: &str, nonce: &str) -> Decision {
    match view {
        KeyView::Absent => Decision::Take(Expect::NoMessage),
        KeyView::Removed(rev) => Decision::Take(Expect::Revision(*rev)),
        KeyView::Live(_, Some(r)) if r.nonce == nonce => Decision::Adopt,
        KeyView::Live(rev, Some(r)) if r.transfer_to.as_deref() == Some(id) => {
            Decision::Take(Expect::Revision(*rev))
        }
        KeyView::Live(..) => Decision::Wait,
    }
}

/// A campaign being configured; await it to wait until elected.
///
/// ```no_run
/// # async fn demo(election: kv_leader::Election) -> Result<(), kv_leader::Error> {
/// let leadership = election.campaign("node-1").value("10.0.0.1:8080").await?;
/// # drop(leadership);
/// # Ok(()) }
/// ```
///
/// # Cancel safety
/// Dropping a waiting campaign stops it; its registration expires within one TTL. If the
/// campaign is dropped while its winning write is in flight, that write may take the leader
/// key with nobody to renew it: nobody acts as leader, and the key expires within one TTL
/// as after a crash.
#[must_use = "a campaign does nothing until awaited"]
#[derive(Debug)]
pub struct Campaign {
    shared: Arc<Shared>,
    id: String,
    value: String,
}

impl Campaign {
    pub(crate) fn new(shared: Arc<Shared>, id: String) -> Campaign {
        Campaign {
            shared,
            id,
            value: String::new(),
        }
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
        let mut c = Candidate {
            nonce: uuid::Uuid::new_v4().simple().to_string(),
            cand_key: shared.candidate_key(&self.id),
            shared,
            id: self.id,
            value: self.value,
            view: None,
            known: false,
            watch: None,
            watch_failures: 0,
            watch_retry: Instant::now(),
            tried: None,
            need_read: false,
            read_failures: 0,
            retry_at: None,
            ambiguous_since: None,
            cand_next: Instant::now(),
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
    nonce: String,
    cand_key: String,
    /// The leader key's latest entry as far as we know (`None`: no message).
    view: Option<Entry>,
    /// Whether `view` is complete: the watch delivered its initial state, or we read the
    /// key from the stream leader.
    known: bool,
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
    /// Send time of the first write whose outcome we do not know.
    ambiguous_since: Option<Instant>,
    /// When to (re-)register as a candidate.
    cand_next: Instant,
}

impl Candidate {
    async fn run(&mut self) -> Result<Leadership, Error> {
        loop {
            if self.shared.closing.is_cancelled() {
                return Err(Error::new(ErrorKind::Closed, "the election was shut down"));
            }
            let now = Instant::now();
            if now >= self.cand_next {
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
            if self.known {
                match decide(&KeyView::of(self.view.as_ref()), &self.id, &self.nonce) {
                    Decision::Take(expect) if self.tried != Some(expect) => {
                        if let Some(l) = self.attempt(expect).await? {
                            return Ok(l);
                        }
                        continue;
                    }
                    Decision::Adopt => {
                        if let Some(l) = self.adopt().await {
                            return Ok(l);
                        }
                        continue;
                    }
                    _ => {}
                }
            }
            self.wait().await;
        }
    }

    /// Waits for the next watch event or timer.
    async fn wait(&mut self) {
        let mut wake = self.cand_next;
        if self.watch.is_none() {
            wake = wake.min(self.watch_retry);
        }
        if let Some(t) = self.retry_at {
            wake = wake.min(t);
        }
        let closing = self.shared.closing.clone();
        let ev = tokio::select! {
            ev = next_event(&mut self.watch) => ev,
            _ = tokio::time::sleep_until(wake) => return,
            _ = closing.cancelled() => return,
        };
        match ev {
            Some(Ok(WatchEvent::Entry(e))) => self.see(e),
            Some(Ok(WatchEvent::InitialDone)) => self.known = true,
            Some(Err(e)) if e.kind() == kv_core::ErrorKind::HistoryGone => self.need_read = true,
            Some(Err(e)) => tracing::debug!(error = %e, "leader watch error"),
            None => {
                self.watch = None;
                self.known = false;
            }
        }
    }

    fn see(&mut self, e: Entry) {
        if self
            .view
            .as_ref()
            .is_none_or(|v| e.revision() > v.revision())
        {
            self.view = Some(e);
        }
    }

    async fn register(&mut self) -> Result<(), Error> {
        let rec = CandidateRecord {
            id: self.id.clone(),
            value: self.value.clone(),
        };
        let ttl = self.shared.lease.ttl().as_duration();
        match self
            .shared
            .bucket
            .put(&self.cand_key, rec.to_bytes())
            .ttl(ttl)
            .await
        {
            Ok(_) => self.cand_next = Instant::now() + self.shared.lease.renew_every(),
            Err(e) if is_transient(&e) => {
                tracing::debug!(error = %e, "candidate registration failed, retrying");
                self.cand_next = Instant::now() + Duration::from_millis(250);
            }
            Err(e) => return Err(e.into()),
        }
        Ok(())
    }

    async fn start_watch(&mut self) -> Result<(), Error> {
        let started = self
            .shared
            .bucket
            .watch([self.shared.leader_key.as_str()])
            .include(Include::LastPerKey)
            .await;
        Counters::bump(&self.shared.counters.watches);
        match started {
            Ok(w) => {
                self.watch = Some(w);
                self.watch_failures = 0;
            }
            Err(e) if is_transient(&e) => {
                self.watch_failures += 1;
                self.watch_retry = Instant::now() + backoff(self.watch_failures);
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
                    self.view = read;
                }
                self.known = true;
                let now_expect = match &self.view {
                    None => Expect::NoMessage,
                    Some(e) => Expect::Revision(e.revision()),
                };
                if self.tried == Some(now_expect) {
                    // The key is where our write expected it, yet the write failed: a spurious
                    // conflict (nats-server #7281) or a lost request. Retry after a pause.
                    self.read_failures += 1;
                    self.retry_at = Some(Instant::now() + backoff(self.read_failures));
                }
            }
            Err(e) if is_transient(&e) => {
                self.read_failures += 1;
                self.retry_at = Some(Instant::now() + backoff(self.read_failures));
            }
            Err(e) => return Err(e.into()),
        }
        Ok(())
    }

    fn record(&self) -> Record {
        Record {
            id: self.id.clone(),
            value: self.value.clone(),
            term: None,
            nonce: self.nonce.clone(),
            transfer_to: None,
        }
    }

    /// One conditional write for the leader key. `Some` when it won.
    async fn attempt(&mut self, expect: Expect) -> Result<Option<Leadership>, Error> {
        let shared = self.shared.clone();
        let ttl = shared.lease.ttl().as_duration();
        let body = self.record().to_bytes();
        Counters::bump(&shared.counters.cas_attempts);
        let sent_at = Instant::now();
        let res = shared
            .bucket
            .put(&shared.leader_key, body)
            .expect(expect)
            .ttl(ttl)
            .await;
        match res {
            Ok(rev) => {
                tracing::debug!(id = %self.id, term = rev.get(), "elected");
                let clock = LeaseClock::new(shared.lease, sent_at);
                Ok(Some(self.lead(rev, rev, clock)))
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
            Err(e) if is_transient(&e) => {
                tracing::debug!(error = %e, "campaign write failed, outcome unknown");
                self.ambiguous_since.get_or_insert(sent_at);
                self.tried = Some(expect);
                self.need_read = true;
                Ok(None)
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Our own write took the key although we saw no acknowledgement.
    async fn adopt(&mut self) -> Option<Leadership> {
        let e = self.view.clone()?;
        let rec = Record::from_entry(&e)?;
        if let Some(since) = self.ambiguous_since {
            // Counting the lease from the first unacknowledged send is conservative.
            let clock = LeaseClock::new(self.shared.lease, since);
            if clock.is_valid(Instant::now()) {
                let term = rec.term_of(&e).revision();
                return Some(self.lead(term, e.revision(), clock));
            }
        }
        // Too late to trust it: hand it back at once (revision-fenced), then race again.
        let _ = self
            .shared
            .bucket
            .delete(&self.shared.leader_key)
            .revision(e.revision())
            .await;
        self.ambiguous_since = None;
        self.need_read = true;
        None
    }

    fn lead(
        &mut self,
        term: kv_core::Revision,
        revision: kv_core::Revision,
        clock: LeaseClock,
    ) -> Leadership {
        Counters::bump(&self.shared.counters.terms_won);
        Lead::spawn(
            self.shared.clone(),
            self.id.clone(),
            self.value.clone(),
            self.nonce.clone(),
            crate::record::Term::new(term),
            revision,
            clock,
            self.watch.take(),
        )
    }
}

async fn next_event(w: &mut Option<Watch>) -> Option<Result<WatchEvent, kv_core::Error>> {
    match w.as_mut() {
        Some(w) => w.next().await,
        None => std::future::pending().await,
    }
}

pub(crate) async fn next_watch_event(
    w: &mut Option<Watch>,
) -> Option<Result<WatchEvent, kv_core::Error>> {
    next_event(w).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use kv_core::Revision;

    fn rev(n: u64) -> Revision {
        Revision::new(n).unwrap()
    }

    fn rec(id: &str, nonce: &str, transfer_to: Option<&str>) -> Option<Record> {
        Some(Record {
            id: id.into(),
            value: String::new(),
            term: Some(3),
            nonce: nonce.into(),
            transfer_to: transfer_to.map(Into::into),
        })
    }

    #[test]
    fn free_keys_are_raced_for_with_the_exact_expectation() {
        assert_eq!(
            decide(&KeyView::Absent, "a", "n"),
            Decision::Take(Expect::NoMessage)
        );
        assert_eq!(
            decide(&KeyView::Removed(rev(9)), "a", "n"),
            Decision::Take(Expect::Revision(rev(9)))
        );
    }

    #[test]
    fn live_keys_wait_unless_handed_to_us_or_ours() {
        let other = KeyView::Live(rev(5), rec("b", "m", None));
        assert_eq!(decide(&other, "a", "n"), Decision::Wait);
        let to_c = KeyView::Live(rev(5), rec("b", "m", Some("c")));
        assert_eq!(decide(&to_c, "a", "n"), Decision::Wait);
        let to_us = KeyView::Live(rev(5), rec("b", "m", Some("a")));
        assert_eq!(
            decide(&to_us, "a", "n"),
            Decision::Take(Expect::Revision(rev(5)))
        );
        let ours = KeyView::Live(rev(5), rec("a", "n", None));
        assert_eq!(decide(&ours, "a", "n"), Decision::Adopt);
        // Same identity, other campaign (an earlier incarnation): not ours.
        let twin = KeyView::Live(rev(5), rec("a", "old", None));
        assert_eq!(decide(&twin, "a", "n"), Decision::Wait);
        assert_eq!(
            decide(&KeyView::Live(rev(5), None), "a", "n"),
            Decision::Wait
        );
    }

    #[test]
    fn backoff_is_bounded() {
        assert_eq!(backoff(1), Duration::from_millis(100));
        assert_eq!(backoff(40), Duration::from_secs(1));
    }
}
