//! Run as leader (client-go style): campaign, run the work while leading, stop it before the
//! lease can run out, release, campaign again.

use std::future::{Future, IntoFuture};
use std::pin::Pin;
use std::time::Duration;

use std::sync::Arc;

use futures::StreamExt;
use kvtk_core::{Backoff, Retrying};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::campaign::Campaign;
use crate::error::{Error, ErrorKind};
use crate::health::Health;
use crate::leadership::{Fencing, Leadership, LostSignal};
use crate::lost::LostReason;
use crate::observe::Observer;
use crate::record::{Observed, Term};
use crate::shared::Shared;

/// Why an elector stopped leading.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum StopReason {
    /// The lease was about to run out (renewals kept failing): the work was cancelled
    /// `stop_timeout` before the local deadline.
    LeaseExpiring,
    /// Leadership was lost outright (someone else wrote the leader key, or the process
    /// stalled past the deadline).
    Lost(LostReason),
    /// The work returned by itself; the elector resigns and `run` returns.
    WorkFinished,
    /// The work panicked; the elector resigns and `run` returns an error.
    WorkPanicked,
    /// The shutdown signal fired; the elector resigns and `run` returns.
    Shutdown,
}

/// What an elector reports through [`ElectorBuilder::on_event`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ElectorEvent {
    /// We won an election; the work is about to start.
    StartedLeading {
        /// The term.
        term: Term,
    },
    /// The work has stopped and leadership has been released (or lost). Sent exactly once
    /// after each `StartedLeading`, never without one.
    StoppedLeading {
        /// The term that ended.
        term: Term,
        /// Why.
        reason: StopReason,
    },
    /// The election's leader changed (any candidate, including us, or nobody).
    NewLeader(Observed),
}

/// What the work gets while leading.
#[derive(Debug, Clone)]
pub struct LeaderContext {
    term: Term,
    id: String,
    token: CancellationToken,
    fencing: Fencing,
}

impl LeaderContext {
    /// The term (fencing token).
    pub fn term(&self) -> Term {
        self.term
    }

    /// Our identity.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Resolves when the work must stop (leadership ending, or shutdown).
    ///
    /// # Cancel safety
    /// Cancel safe.
    pub async fn cancelled(&self) {
        self.token.cancelled().await
    }

    /// Whether the work must stop.
    pub fn is_cancelled(&self) -> bool {
        self.token.is_cancelled()
    }

    /// The cancellation token itself (to hand to sub-tasks).
    pub fn token(&self) -> CancellationToken {
        self.token.clone()
    }

    /// Guarded writes that the server rejects once this term is over.
    pub fn fencing(&self) -> &Fencing {
        &self.fencing
    }
}

type EventFn = Box<dyn FnMut(&ElectorEvent) + Send>;

/// An elector being configured; see [`Election::elector`](crate::Election::elector).
#[must_use = "call run()"]
pub struct ElectorBuilder {
    shared: Arc<Shared>,
    id: String,
    value: String,
    /// `None`: the lease margin, known once the bucket was checked.
    stop_timeout: Option<Duration>,
    on_event: Option<EventFn>,
    health: Health,
}

impl std::fmt::Debug for ElectorBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ElectorBuilder")
            .field("id", &self.id)
            .field("value", &self.value)
            .field("stop_timeout", &self.stop_timeout)
            .finish_non_exhaustive()
    }
}

impl ElectorBuilder {
    pub(crate) fn new(shared: Arc<Shared>, id: String) -> ElectorBuilder {
        ElectorBuilder {
            shared,
            id,
            value: String::new(),
            stop_timeout: None,
            on_event: None,
            health: Health::default(),
        }
    }

    /// The value to publish while leading.
    pub fn value(mut self, value: impl Into<String>) -> Self {
        self.value = value.into();
        self
    }

    /// How long the work gets to stop once cancelled (default: the lease margin). When
    /// renewals keep failing, the work is cancelled this long before the local deadline and
    /// aborted at the deadline, so it has stopped before the server can expire the lease.
    /// On shutdown it gets the same time before it is aborted.
    pub fn stop_timeout(mut self, d: Duration) -> Self {
        self.stop_timeout = Some(d);
        self
    }

    /// A callback for [`ElectorEvent`]s, called in order from the elector's future.
    pub fn on_event(mut self, f: impl FnMut(&ElectorEvent) + Send + 'static) -> Self {
        self.on_event = Some(Box::new(f));
        self
    }

    /// A readiness signal: ready while this elector leads with a fresh lease.
    pub fn health(&self) -> Health {
        self.health.clone()
    }

    /// Sets the work: `work(ctx)` is spawned on each won election and must return soon after
    /// `ctx.cancelled()` resolves. Await the result (optionally
    /// [`with_graceful_shutdown`](Run::with_graceful_shutdown)) to run.
    pub fn run<F, Fut>(self, work: F) -> Run<F>
    where
        F: FnMut(LeaderContext) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        Run {
            b: self,
            work,
            shutdown: None,
        }
    }
}

/// A configured elector; await it to run until shutdown, until the work returns, or until
/// an error that retrying cannot fix.
///
/// ```no_run
/// # async fn demo(election: kvtk_leader::Election) -> Result<(), kvtk_leader::Error> {
/// election
///     .elector("node-1")
///     .value("10.0.0.1:8080")
///     .on_event(|ev| println!("{ev:?}"))
///     .run(|ctx| async move {
///         // Work while leading; stop when told.
///         ctx.cancelled().await;
///     })
///     .with_graceful_shutdown(async {
///         let _ = tokio::signal::ctrl_c().await;
///     })
///     .await
/// # }
/// ```
///
/// # Cancel safety
/// Dropping the future aborts the work at its next await point and drops the leadership,
/// which resigns in the background. Prefer the shutdown signal: it waits for the work to
/// stop before resigning.
#[must_use = "an elector does nothing until awaited"]
pub struct Run<F> {
    b: ElectorBuilder,
    work: F,
    shutdown: Option<Pin<Box<dyn Future<Output = ()> + Send>>>,
}

impl<F> std::fmt::Debug for Run<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Run")
            .field("elector", &self.b)
            .finish_non_exhaustive()
    }
}

impl<F, Fut> Run<F>
where
    F: FnMut(LeaderContext) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    /// Stops gracefully when `signal` resolves: cancel the work, wait for it (at most the
    /// stop timeout), resign, report `StoppedLeading`, return `Ok(())`.
    pub fn with_graceful_shutdown(
        mut self,
        signal: impl Future<Output = ()> + Send + 'static,
    ) -> Self {
        self.shutdown = Some(Box::pin(signal));
        self
    }

    async fn run(self) -> Result<(), Error> {
        let mut elector = Elector::new(self).await?;
        while let Some(leadership) = elector.campaign().await? {
            match elector.lead(leadership).await {
                StopReason::Shutdown | StopReason::WorkFinished => return Ok(()),
                StopReason::WorkPanicked => {
                    return Err(Error::new(
                        ErrorKind::WorkPanicked,
                        "the leader work panicked",
                    ))
                }
                StopReason::LeaseExpiring | StopReason::Lost(_) => {}
            }
        }
        // The shutdown signal fired while campaigning.
        Ok(())
    }
}

impl<F, Fut> IntoFuture for Run<F>
where
    F: FnMut(LeaderContext) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    type Output = Result<(), Error>;
    type IntoFuture = Pin<Box<dyn Future<Output = Self::Output> + Send>>;
    fn into_future(self) -> Self::IntoFuture {
        Box::pin(self.run())
    }
}

/// A running elector: what its campaign and lead steps share.
struct Elector<F> {
    shared: Arc<Shared>,
    id: String,
    value: String,
    stop_timeout: Duration,
    events: Events,
    health: Health,
    shutdown: Pin<Box<dyn Future<Output = ()> + Send>>,
    /// Leader changes are only watched when someone listens.
    observer: ObserverSlot,
    work: F,
}

impl<F, Fut> Elector<F>
where
    F: FnMut(LeaderContext) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    /// The elector of `run`, once the bucket was checked (the stop timeout may depend on it).
    async fn new(run: Run<F>) -> Result<Elector<F>, Error> {
        let Run { b, work, shutdown } = run;
        let stop_timeout = resolve_stop_timeout(&b.shared, b.stop_timeout).await?;
        Ok(Elector {
            observer: ObserverSlot::new(b.shared.clone(), b.on_event.is_some()),
            shared: b.shared,
            id: b.id,
            value: b.value,
            stop_timeout,
            events: Events(b.on_event),
            health: b.health,
            shutdown: shutdown.unwrap_or_else(|| Box::pin(std::future::pending())),
            work,
        })
    }

    /// Campaigns until elected, reporting leader changes meanwhile; `None` when the shutdown
    /// signal fired first.
    async fn campaign(&mut self) -> Result<Option<Leadership>, Error> {
        let campaign = Campaign::new(self.shared.clone(), self.id.clone())
            .value(self.value.clone())
            .into_future();
        tokio::pin!(campaign);
        loop {
            tokio::select! {
                biased;
                _ = &mut self.shutdown => return Ok(None),
                r = &mut campaign => return r.map(Some),
                o = self.observer.next() => self.events.emit(ElectorEvent::NewLeader(o)),
            }
        }
    }

    /// Leads one term: starts the work, waits until it must stop, stops it, and only then
    /// releases the leadership. Returns why the term ended.
    async fn lead(&mut self, leadership: Leadership) -> StopReason {
        let term = leadership.term();
        let signal = leadership.lost_signal();
        self.health.set(Some(leadership.held()));
        self.events.emit(ElectorEvent::StartedLeading { term });
        let token = CancellationToken::new();
        let ctx = LeaderContext {
            term,
            id: self.id.clone(),
            token: token.clone(),
            fencing: leadership.fencing(),
        };
        let mut task = Owned(tokio::spawn((self.work)(ctx)));
        let reason = self.until_stop(&mut task, &signal).await;
        // Not ready any more, then cancel the work.
        self.health.set(None);
        token.cancel();
        if !matches!(reason, StopReason::WorkFinished | StopReason::WorkPanicked) {
            stop_work(&mut task, reason, &signal, self.stop_timeout).await;
        }
        release(leadership, &signal).await;
        self.events
            .emit(ElectorEvent::StoppedLeading { term, reason });
        reason
    }

    /// Waits until the work must stop — it returned or panicked, the shutdown signal, the
    /// lease deadline less than the stop timeout away, leadership lost — reporting leader
    /// changes meanwhile.
    async fn until_stop(&mut self, task: &mut Owned, signal: &LostSignal) -> StopReason {
        loop {
            tokio::select! {
                biased;
                r = &mut task.0 => {
                    let panicked = r.as_ref().is_err_and(|e| e.is_panic());
                    return if panicked { StopReason::WorkPanicked } else { StopReason::WorkFinished };
                }
                _ = &mut self.shutdown => return StopReason::Shutdown,
                l = signal.until(self.stop_timeout) => return match l {
                    None => StopReason::LeaseExpiring,
                    Some(r) => StopReason::Lost(r),
                },
                o = self.observer.next() => self.events.emit(ElectorEvent::NewLeader(o)),
            }
        }
    }
}

/// Waits for the cancelled work until the stop timeout (at most the lease deadline; no
/// grace once leadership was lost), then aborts it.
async fn stop_work(
    task: &mut Owned,
    reason: StopReason,
    signal: &LostSignal,
    stop_timeout: Duration,
) {
    let stop_by = match reason {
        // Someone else may lead already: no grace.
        StopReason::Lost(_) => Instant::now(),
        _ => (Instant::now() + stop_timeout).min(signal.deadline()),
    };
    if tokio::time::timeout_at(stop_by, &mut task.0).await.is_err() {
        task.0.abort();
        let _ = (&mut task.0).await;
    }
}

/// Releases the leadership once the work has stopped: resigns unless it was lost already.
async fn release(leadership: Leadership, signal: &LostSignal) {
    if signal.is_lost() {
        drop(leadership);
    } else if let Err(e) = leadership.resign().await {
        tracing::debug!(error = %e, "resign failed");
    }
}

/// The [`ElectorBuilder::on_event`] callback, if any.
struct Events(Option<EventFn>);

impl Events {
    fn emit(&mut self, ev: ElectorEvent) {
        if let Some(f) = self.0.as_mut() {
            f(&ev)
        }
    }
}

/// The work's task, owned by the elector's future: aborted when that future is dropped.
struct Owned(JoinHandle<()>);

impl Drop for Owned {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The observer that feeds `NewLeader` events, started lazily and restarted after errors.
struct ObserverSlot {
    shared: Arc<Shared>,
    wanted: bool,
    observer: Option<Observer>,
    retry: Retrying,
}

impl ObserverSlot {
    fn new(shared: Arc<Shared>, wanted: bool) -> ObserverSlot {
        ObserverSlot {
            shared,
            wanted,
            observer: None,
            retry: Backoff::DEFAULT.start(),
        }
    }

    /// The next leader change; pending forever when events are not wanted.
    async fn next(&mut self) -> Observed {
        if !self.wanted {
            return std::future::pending().await;
        }
        loop {
            if self.observer.is_none() {
                match Observer::start(self.shared.clone()).await {
                    Ok(o) => {
                        self.observer = Some(o);
                        self.retry.reset();
                    }
                    Err(_) => {
                        self.retry.pause().await;
                        continue;
                    }
                }
            }
            if let Some(o) = self.observer.as_mut() {
                match o.next().await {
                    Some(ev) => return ev,
                    None => self.observer = None,
                }
            }
        }
    }
}

/// The stop timeout given, or the margin of the election's lease, which on a bucket without
/// a TTL of its own depends on the bucket's replicas (so the bucket is checked first).
async fn resolve_stop_timeout(shared: &Shared, given: Option<Duration>) -> Result<Duration, Error> {
    shared.check_bucket().await?;
    Ok(given.unwrap_or_else(|| shared.lease_config().margin()))
}
