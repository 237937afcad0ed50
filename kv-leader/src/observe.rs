//! Observing an election: a stream of leader changes, including "no leader".

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use futures::stream::{BoxStream, Stream, StreamExt};
use kvtk_core::{Backoff, Expect, Include, ReadOnlyBucket, Revision, Watch, WatchEvent};

use crate::error::Error;
use crate::names::validate_name;
use crate::record::Observed;
use crate::shared::Shared;
use crate::stats::Counters;

/// A stream of leader changes of one election.
///
/// The first item is the state when observation started ([`Observed::NoLeader`] if nobody
/// leads). After that, one item per change: a new term, a new published value, a pending
/// transfer, or "no leader" after a resignation or expiry. Renewals are not changes.
///
/// # Recovery
/// It rests on a kvtk-core watch of the leader key: while connected it sees the key's
/// revisions in order, and it reports a term from any write of it (creation, renewal,
/// proclamation), so it reports every term in order — except a term whose every write the
/// server had already replaced when the observer's consumer reached it. Election buckets keep
/// history 1, so that happens only to a term that began and ended within the consumer's lag:
/// on one server practically never; on a replicated bucket, whose follower may apply a
/// creation, its resignation and the next creation in one batch, to terms of a few
/// milliseconds (measured on R3: 2–3% of the terms of candidates that resign right after
/// winning). Such a skip is never silent: every write of the leader key carries the revision
/// it replaced, so the observer notices revisions it never saw, counts them in
/// [`Observer::gaps`] and logs them. See kvtk-core's watch docs, "Pacing". After a reconnect or server restart the watch
/// resumes with the key's latest revision, so the observer resyncs to the present leader
/// (terms that began *and* ended while it was away are skipped). If the key vanished
/// without a trace while it was away (an expiry marker that itself expired), it re-reads the
/// key from the stream leader.
///
/// ```no_run
/// # async fn demo(election: kvtk_leader::Election) -> Result<(), kvtk_leader::Error> {
/// use futures::StreamExt;
/// use kvtk_leader::Observed;
/// let mut observer = election.observe().await?;
/// while let Some(change) = observer.next().await {
///     match change {
///         Observed::Leader(l) => println!("{} leads (term {}) at {}", l.id, l.term, l.value),
///         Observed::NoLeader => println!("nobody leads"),
///     }
/// }
/// # Ok(()) }
/// ```
pub struct Observer {
    inner: BoxStream<'static, Observed>,
    current: Option<Observed>,
    gaps: Arc<AtomicU64>,
    refused: Refusal,
}

/// Why an observer's stream ended early: a leader record of a format version this library
/// does not know.
type Refusal = Arc<std::sync::Mutex<Option<kvtk_core::Error>>>;

impl std::fmt::Debug for Observer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Observer")
            .field("current", &self.current)
            .field("gaps", &self.gaps())
            .finish_non_exhaustive()
    }
}

struct State {
    bucket: ReadOnlyBucket,
    leader_key: String,
    watch: Watch,
    last_rev: Option<Revision>,
    last: Option<Observed>,
    gaps: Arc<AtomicU64>,
    refused: Refusal,
}

impl Observer {
    pub(crate) async fn start(shared: Arc<Shared>) -> Result<Observer, Error> {
        let observer =
            Observer::watch(shared.bucket.read_only(), shared.leader_key.clone()).await?;
        Counters::bump(&shared.counters.watches);
        Ok(observer)
    }

    /// Observes the election `name` in a read-only bucket: typically a mirror of the
    /// election's bucket on a leaf node near the observers, in another JetStream domain,
    /// while candidates campaign on the origin.
    ///
    /// A mirror keeps the origin's revisions, so terms are the origin's. The observer is as
    /// fresh as the mirror: while the link to the origin is cut it reports nothing new (the
    /// mirror does not expire the leader key on its own clock; the origin's expiry marker
    /// arrives when the link heals), so a leader it reports may be gone by then — decide
    /// nothing from it that fencing does not check.
    ///
    /// ```no_run
    /// # async fn demo(kv_on_leaf: kvtk_core::Kv) -> Result<(), Box<dyn std::error::Error>> {
    /// use futures::StreamExt;
    /// let mirror = kv_on_leaf.open_read_only("elections").await?;
    /// let mut observer = kvtk_leader::Observer::on(&mirror, "scheduler").await?;
    /// if let Some(state) = observer.next().await {
    ///     println!("{state:?}");
    /// }
    /// # Ok(()) }
    /// ```
    ///
    /// # Cancel safety
    /// Cancel safe: dropping the future leaves at most an idle consumer the server removes.
    pub async fn on(bucket: &ReadOnlyBucket, name: &str) -> Result<Observer, Error> {
        validate_name("election name", name)?;
        Observer::watch(bucket.clone(), format!("{name}.leader")).await
    }

    async fn watch(bucket: ReadOnlyBucket, leader_key: String) -> Result<Observer, Error> {
        let watch = bucket
            .watch([leader_key.as_str()])
            .include(Include::LastPerKey)
            .await?;
        let gaps = Arc::new(AtomicU64::new(0));
        let refused = Refusal::default();
        let state = State {
            bucket,
            leader_key,
            watch,
            last_rev: None,
            last: None,
            gaps: gaps.clone(),
            refused: refused.clone(),
        };
        let inner = futures::stream::unfold(state, |mut s| async move {
            let item = s.next().await?;
            Some((item, s))
        })
        .boxed();
        Ok(Observer {
            inner,
            current: None,
            gaps,
            refused,
        })
    }

    /// Why the stream ended, when it ended because the leader key held a record of a format
    /// version this library does not know (kvtk-core's
    /// [`ErrorKind::Codec`](kvtk_core::ErrorKind::Codec)): the observer reports nothing it
    /// cannot read. `None` otherwise.
    pub fn take_refusal(&self) -> Option<Error> {
        let mut r = self.refused.lock().unwrap_or_else(|p| p.into_inner());
        r.take().map(Error::from)
    }

    /// How many times this observer found revisions of the leader key it never saw: the
    /// server had replaced them before the observer's consumer reached them (see
    /// [Recovery](Observer#recovery)), so terms may have begun and ended unseen there. Each
    /// is also logged at `warn` level. Zero means no term was skipped.
    pub fn gaps(&self) -> u64 {
        self.gaps.load(Ordering::Relaxed)
    }

    /// The state as of the last item this observer yielded (`None` before the first).
    pub fn current(&self) -> Option<&Observed> {
        self.current.as_ref()
    }
}

impl Stream for Observer {
    type Item = Observed;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Observed>> {
        let r = self.inner.poll_next_unpin(cx);
        if let Poll::Ready(Some(o)) = &r {
            self.current = Some(o.clone());
        }
        r
    }
}

impl State {
    /// What an entry of the leader key means; `None` (the stream ends) for a record of an
    /// unknown format version, kept for [`Observer::take_refusal`].
    fn meaning(&self, e: &kvtk_core::Entry) -> Option<Observed> {
        match Observed::from_entry(e) {
            Ok(o) => Some(o),
            Err(err) => {
                tracing::error!(key = %self.leader_key, error = %err, "observation ends");
                let mut r = self.refused.lock().unwrap_or_else(|p| p.into_inner());
                *r = Some(err);
                None
            }
        }
    }

    fn emit(&mut self, o: Observed) -> Option<Observed> {
        if self.last.as_ref().is_none_or(|l| l.differs(&o)) {
            self.last = Some(o.clone());
            return Some(o);
        }
        None
    }

    async fn next(&mut self) -> Option<Observed> {
        loop {
            match self.watch.next().await? {
                Ok(WatchEvent::Entry(e)) => {
                    if self.last_rev.is_some_and(|r| e.revision() <= r) {
                        continue;
                    }
                    self.check_gap(&e);
                    self.last_rev = Some(e.revision());
                    let o = self.meaning(&e)?;
                    if let Some(o) = self.emit(o) {
                        return Some(o);
                    }
                }
                Ok(WatchEvent::InitialDone) => {
                    if self.last.is_none() {
                        if let Some(o) = self.emit(Observed::NoLeader) {
                            return Some(o);
                        }
                    }
                }
                Err(e) if e.kind() == kvtk_core::ErrorKind::HistoryGone => {
                    if let Some(o) = self.reread().await {
                        return Some(o);
                    }
                }
                Err(e) => tracing::debug!(error = %e, "observer watch error"),
            }
        }
    }

    /// Counts a gap when `e`'s write replaced a revision of the key newer than the last one
    /// we saw (or expected no message at all after we had seen one).
    fn check_gap(&self, e: &kvtk_core::Entry) {
        let Some(last) = self.last_rev else { return };
        let missed = match e.expected() {
            Some(Expect::Revision(replaced)) => replaced > last,
            Some(Expect::NoMessage) => true,
            None => false,
        };
        if missed {
            self.gaps.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(key = %self.leader_key, after = last.get(), at = e.revision().get(), "leader-key revisions were replaced before this observer saw them: terms may have been skipped");
        }
    }

    /// Reads the key from the stream leader after the watch lost track of it (at most ten
    /// attempts).
    async fn reread(&mut self) -> Option<Observed> {
        let mut retry = Backoff::DEFAULT.start();
        while retry.failures() < 10 {
            match self.bucket.get_from_leader(&self.leader_key).await {
                Ok(e) => {
                    let o = match &e {
                        Some(e) => self.meaning(e)?,
                        None => Observed::NoLeader,
                    };
                    if let Some(e) = &e {
                        self.last_rev = Some(e.revision()).max(self.last_rev);
                    }
                    return self.emit(o);
                }
                Err(_) => retry.pause().await,
            }
        }
        None
    }
}
