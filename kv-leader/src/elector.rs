//! Run as leader (client-go style): campaign, run the work while leading, stop it before the
//! lease can run out, release, campaign again.

use std::future::{Future, IntoFuture};
use std::pin::Pin;
use std::time::Duration;

use futures::StreamExt;
use kvtk_core::Backoff;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::election::Election;
use crate::error::{Error, ErrorKind};
use crate::health::Health;
use crate::leadership::{Fencing, LostReason};
use crate::observe::Observer;
use crate::record::{Observed, Term};

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

/// An elector being configured; see [`Election::elector`].
#[must_use = "call run()"]
pub struct ElectorBuilder {
    election: Election,
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
    pub(crate) fn new(election: Election, id: String) -> ElectorBuilder {
        ElectorBuilder {
            election,
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
        let Run {
            b,
            mut work,
            shutdown,
        } = self;
        let ElectorBuilder {
            election,
            id,
            value,
            stop_timeout,
            mut on_event,
            health,
        } = b;
        let stop_timeout = resolve_stop_timeout(&election, stop_timeout).await?;
        let mut shutdown = shutdown.unwrap_or_else(|| Box::pin(std::future::pending()));
        // Leader changes are only watched when someone listens.
        let mut observer = ObserverSlot::new(election.clone(), on_event.is_some());
        let mut emit = |ev: ElectorEvent| {
            if let Some(f) = on_event.as_mut() {
                f(&ev)
            }
        };
        loop {
            // Campaign.
            let campaign = election
                .campaign(id.clone())
                .value(value.clone())
                .into_future();
            tokio::pin!(campaign);
            let leadership = loop {
                tokio::select! {
                    biased;
                    _ = &mut shutdown => return Ok(()),
                    r = &mut campaign => break r?,
                    o = observer.next() => emit(ElectorEvent::NewLeader(o)),
                }
            };

            // Lead.
            let term = leadership.term();
            let signal = leadership.lost_signal();
            health.set(Some(leadership.held()));
            emit(ElectorEvent::StartedLeading { term });
            let token = CancellationToken::new();
            let ctx = LeaderContext {
                term,
                id: id.clone(),
                token: token.clone(),
                fencing: leadership.fencing(),
            };
            let mut task = Owned(tokio::spawn(work(ctx)));
            let mut finished = None;
            let reason = loop {
                tokio::select! {
                    biased;
                    r = &mut task.0 => {
                        let panicked = r.as_ref().is_err_and(|e| e.is_panic());
                        finished = Some(());
                        break if panicked { StopReason::WorkPanicked } else { StopReason::WorkFinished };
                    }
                    _ = &mut shutdown => break StopReason::Shutdown,
                    l = signal.until(stop_timeout) => break match l {
                        None => StopReason::LeaseExpiring,
                        Some(r) => StopReason::Lost(r),
                    },
                    o = observer.next() => emit(ElectorEvent::NewLeader(o)),
                }
            };

            // Stop the work: not ready any more, cancel, wait (bounded), abort.
            health.set(None);
            token.cancel();
            if finished.is_none() {
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

            // Release only after the work has stopped.
            if signal.is_lost() {
                drop(leadership);
            } else if let Err(e) = leadership.resign().await {
                tracing::debug!(error = %e, "resign failed");
            }
            emit(ElectorEvent::StoppedLeading { term, reason });
            match reason {
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

/// The work's task, owned by the elector's future: aborted when that future is dropped.
struct Owned(JoinHandle<()>);

impl Drop for Owned {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The observer that feeds `NewLeader` events, started lazily and restarted after errors.
struct ObserverSlot {
    election: Election,
    wanted: bool,
    observer: Option<Observer>,
    failures: u32,
}

impl ObserverSlot {
    fn new(election: Election, wanted: bool) -> ObserverSlot {
        ObserverSlot {
            election,
            wanted,
            observer: None,
            failures: 0,
        }
    }

    /// The next leader change; pending forever when events are not wanted.
    async fn next(&mut self) -> Observed {
        if !self.wanted {
            return std::future::pending().await;
        }
        loop {
            if self.observer.is_none() {
                match self.election.observe().await {
                    Ok(o) => {
                        self.observer = Some(o);
                        self.failures = 0;
                    }
                    Err(_) => {
                        tokio::time::sleep(Backoff::DEFAULT.delay(self.failures)).await;
                        self.failures += 1;
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
async fn resolve_stop_timeout(
    election: &Election,
    given: Option<Duration>,
) -> Result<Duration, Error> {
    election.shared.check_bucket().await?;
    Ok(given.unwrap_or_else(|| election.lease_config().margin()))
}
