//! All-or-nothing multi-lock: several named locks taken in one transaction, or none.
//!
//! A multi-lock never holds part of its set, so clients asking for overlapping sets cannot
//! deadlock: when every lock of the set has an empty queue, one atomic transaction creates
//! our entry in each of them, each write conditional on its lock's keys being unchanged
//! since the revision at which its queue was seen empty (the single lock's fast path, for
//! all locks at once). If any lock is busy, or the transaction conflicts, nothing was
//! written; we watch the busy locks and look again when one of their entries goes.
//!
//! The price of never holding part of a set is fairness: a multi-lock does not queue, so a
//! lock that is never free (a steady stream of single-lock waiters) starves it.

use std::future::{Future, IntoFuture};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use kvtk_core::lease::{create_all, Lease, LeaseConfig, LostReason};
use kvtk_core::{Revision, WatchEvent};
use tokio::sync::OwnedMutexGuard;
use tokio::time::Instant;

use crate::acquire::{holds_now, new_entry, sleep_until_opt};
use crate::error::{Error, ErrorKind};
use crate::guard::{Guard, Released};
use crate::locks::check_kind;
use crate::queue::{view, View};
use crate::shared::{Shared, Slot};
use crate::stats::Stat;
use crate::token::Token;

/// The most locks one multi-lock may take (one transaction).
pub const MAX_MULTI: usize = 64;

/// A handle on a set of mutexes taken together. Cheap to clone.
///
/// ```no_run
/// # async fn demo(locks: kvtk_locks::Locks) -> Result<(), kvtk_locks::Error> {
/// let accounts = locks.multi(["accounts.alice", "accounts.bob"])?;
/// let both = accounts.lock().await?; // both, or (until then) neither
/// for (name, token) in both.tokens() {
///     println!("{name}: {token}");
/// }
/// both.release().await?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct MultiLock {
    /// One mutex handle per name, sorted by name (the local locking order).
    handles: Arc<[Arc<Shared>]>,
}

impl MultiLock {
    pub(crate) fn new(mut handles: Vec<Arc<Shared>>) -> Result<MultiLock, Error> {
        handles.sort_by(|a, b| a.name.as_str().cmp(b.name.as_str()));
        handles.dedup_by(|a, b| a.name == b.name);
        if handles.is_empty() || handles.len() > MAX_MULTI {
            return Err(Error::new(
                ErrorKind::InvalidArgument,
                format!(
                    "a multi-lock takes 1 to {MAX_MULTI} locks, got {}",
                    handles.len()
                ),
            ));
        }
        Ok(MultiLock {
            handles: handles.into(),
        })
    }

    /// The locks' names, sorted.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.handles.iter().map(|s| s.name.as_str())
    }

    /// Starts taking every lock of the set; `.await` it. See [`AcquireAll`].
    pub fn lock(&self) -> AcquireAll {
        AcquireAll {
            multi: self.clone(),
            ttl: None,
            timeout: None,
        }
    }

    /// Takes every lock if all are free now, else returns `None`.
    ///
    /// # Cancel safety
    /// As for [`AcquireAll`].
    pub async fn try_lock(&self) -> Result<Option<MultiGuard>, Error> {
        let cfg = self.handles[0].lease;
        take(&self.handles, cfg, true).await
    }
}

/// A pending multi-lock acquisition; `.await` it.
///
/// # Cancel safety
/// Dropping it before it completes leaves nothing held: either the transaction did not
/// commit, or its leases are dropped with the future and released in the background.
#[must_use = "an acquisition does nothing until awaited"]
#[derive(Debug)]
pub struct AcquireAll {
    multi: MultiLock,
    ttl: Option<Duration>,
    timeout: Option<Duration>,
}

impl AcquireAll {
    /// The lease TTL of every entry (default: the handles').
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = Some(ttl);
        self
    }

    /// Gives up after `timeout` with [`ErrorKind::Timeout`].
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    async fn run(self) -> Result<MultiGuard, Error> {
        let first = &self.multi.handles[0];
        let cfg = match self.ttl {
            Some(t) => LeaseConfig::new(t)?,
            None => first.lease,
        };
        crate::locks::check_marker(cfg.ttl().as_duration(), first.marker_ttl)?;
        let deadline = self.timeout.map(|t| Instant::now() + t);
        let work = take(&self.multi.handles, cfg, false);
        tokio::select! {
            _ = sleep_until_opt(deadline) => Err(Error::new(ErrorKind::Timeout, format!("multi-lock not acquired within {:?}", self.timeout.unwrap_or_default()))),
            r = work => r?.ok_or_else(|| Error::new(ErrorKind::Internal, "multi-lock ended without the locks")),
        }
    }
}

impl IntoFuture for AcquireAll {
    type Output = Result<MultiGuard, Error>;
    type IntoFuture = Pin<Box<dyn Future<Output = Self::Output> + Send>>;
    fn into_future(self) -> Self::IntoFuture {
        Box::pin(self.run())
    }
}

/// Takes the handles' slots in name order, then looks and commits until all are held.
async fn take(
    handles: &[Arc<Shared>],
    cfg: LeaseConfig,
    try_only: bool,
) -> Result<Option<MultiGuard>, Error> {
    let mut slots = Vec::with_capacity(handles.len());
    for s in handles {
        slots.push(s.slot.clone().lock_owned().await);
    }
    // The newest revision we know of: a snapshot older than it (from a lagging replica) is
    // taken again, so a lock we saw busy does not look free.
    let mut seen = None;
    let mut pauses = kvtk_core::Backoff::DEFAULT.delays();
    loop {
        let mut views = Vec::with_capacity(handles.len());
        for s in handles {
            let v = view(s, seen).await?;
            check_kind(s, &v)?;
            views.push(v);
        }
        if views.iter().all(|v| v.queue.is_empty()) {
            match commit(handles, &views, cfg).await {
                Ok(leases) if confirmed(handles, &leases).await? => {
                    return Ok(Some(MultiGuard::new(handles, leases, slots)))
                }
                // Another entry got in ahead of ours (see `confirmed`): give all back and
                // look again at least as late as our entries, where that entry shows.
                Ok(leases) => {
                    seen = leases.iter().map(Lease::revision).max().max(seen);
                    release_all(leases).await;
                    if try_only {
                        return Ok(None);
                    }
                }
                Err(e)
                    if e.kind() == ErrorKind::Kv
                        && e.core_kind() == Some(kvtk_core::ErrorKind::Conflict) => {}
                // Nobody answered (a stream between leaders): nothing was written.
                Err(e) if e.core_kind() == Some(kvtk_core::ErrorKind::Unavailable) => {
                    let pause = pauses.next().unwrap_or(kvtk_core::Backoff::DEFAULT.max());
                    tokio::time::sleep(pause).await;
                }
                Err(e) => return Err(e),
            }
            continue;
        }
        if try_only {
            return Ok(None);
        }
        wait_for_a_departure(handles, &views).await?;
    }
}

/// One transaction: our entry in every lock, each conditional on its queue still empty.
async fn commit(
    handles: &[Arc<Shared>],
    views: &[View],
    cfg: LeaseConfig,
) -> Result<Vec<kvtk_core::lease::Lease>, Error> {
    let creates = handles
        .iter()
        .zip(views)
        .map(|(s, v)| {
            s.bump(Stat::AcquireWrite);
            new_entry(s, cfg).expect_on(s.name.all_filter(), v.expect_empty())
        })
        .collect();
    Ok(create_all(creates).await?)
}

/// Whether every entry of ours holds its lock by the rule. On a replicated bucket a
/// transaction's wildcard expectations are checked against stored messages only, so a single
/// lock's queue entry still in flight may have got in ahead of ours.
async fn confirmed(handles: &[Arc<Shared>], leases: &[Lease]) -> Result<bool, Error> {
    for (s, lease) in handles.iter().zip(leases) {
        if s.replicated && !holds_now(s, lease).await? {
            tracing::debug!(lock = %s.name, "an entry got in ahead of the multi-lock; giving all back");
            return Ok(false);
        }
    }
    Ok(true)
}

async fn release_all(leases: Vec<Lease>) {
    for r in futures::future::join_all(leases.into_iter().map(|l| l.release().into_future())).await
    {
        if let Err(e) = r {
            tracing::warn!(error = %e, "could not give a multi-lock entry back; it expires with its ttl");
        }
    }
}

/// Waits until an entry of one of the busy locks is removed (or expires).
async fn wait_for_a_departure(handles: &[Arc<Shared>], views: &[View]) -> Result<(), Error> {
    let busy: Vec<(&Arc<Shared>, &View)> = handles
        .iter()
        .zip(views)
        .filter(|(_, v)| !v.queue.is_empty())
        .collect();
    let from = busy
        .iter()
        .filter_map(|(_, v)| v.as_of)
        .min()
        .and_then(|r| Revision::new(r.get() + 1))
        .ok_or_else(|| Error::new(ErrorKind::Internal, "a queue snapshot without its revision"))?;
    let filters: Vec<String> = busy.iter().map(|(s, _)| s.name.queue_filter()).collect();
    let s = busy[0].0;
    s.bump(Stat::Watch);
    let mut watch = s
        .bucket
        .watch(filters.iter())
        .from_revision(from)
        .skip_compacted()
        .await?;
    loop {
        match watch.next().await {
            Some(Ok(WatchEvent::Entry(e))) if !e.is_value() => return Ok(()),
            Some(Ok(_)) => {}
            // A broken watch: look again.
            Some(Err(_)) | None => return Ok(()),
        }
    }
}

/// Every lock of a multi-lock, held together. Dropping it releases them all in the
/// background; prefer [`release`](MultiGuard::release).
#[must_use = "dropping the guard releases the locks at once"]
#[derive(Debug)]
pub struct MultiGuard {
    guards: Vec<Guard>,
}

impl MultiGuard {
    fn new(
        handles: &[Arc<Shared>],
        leases: Vec<kvtk_core::lease::Lease>,
        slots: Vec<OwnedMutexGuard<Slot>>,
    ) -> MultiGuard {
        let guards = handles
            .iter()
            .zip(leases)
            .zip(slots)
            .map(|((s, lease), slot)| {
                let alone = Some(lease.origin());
                s.bump(Stat::Acquired);
                Guard::new(s.clone(), lease, slot, alone)
            })
            .collect();
        MultiGuard { guards }
    }

    /// Each lock's name and fencing token (all from one transaction, so contiguous).
    pub fn tokens(&self) -> impl Iterator<Item = (&str, Token)> {
        self.guards.iter().map(|g| (g.name(), g.token()))
    }

    /// The guards, one per lock, sorted by name.
    pub fn guards(&self) -> &[Guard] {
        &self.guards
    }

    /// Whether every lock is still held.
    pub fn is_held(&self) -> bool {
        self.guards.iter().all(Guard::is_held)
    }

    /// Completes when any of the locks is lost, with its reason.
    ///
    /// # Cancel safety
    /// Cancel safe.
    pub fn lost(&self) -> impl Future<Output = LostReason> + Send + 'static {
        let all: Vec<_> = self.guards.iter().map(|g| Box::pin(g.lost())).collect();
        async move { futures::future::select_all(all).await.0 }
    }

    /// Releases every lock (each with a fenced delete). [`Released::AlreadyLost`] if any of
    /// them had been lost; the first error if any release failed (the others still ran).
    ///
    /// # Cancel safety
    /// Not cancel safe: some deletes may be applied although the future was dropped.
    pub async fn release(self) -> Result<Released, Error> {
        let results = futures::future::join_all(self.guards.into_iter().map(Guard::release)).await;
        let mut out = Released::Released;
        for r in results {
            if r? == Released::AlreadyLost {
                out = Released::AlreadyLost;
            }
        }
        Ok(out)
    }
}
