//! Multi-lock: several named locks taken together, without deadlock and in turn.
//!
//! A multi-lock enters the queue of every lock of its set in one transaction (an atomic
//! batch). The entries of one transaction get adjacent revisions, and a queue orders its
//! entries by revision, so any two participants — multi-locks or single waiters — stand in
//! the same order in every queue they share: waits only ever point from a later transaction
//! to an earlier one, so they cannot form a cycle. The multi-lock then waits, lock by lock,
//! until its entry is first in each (the same wait as a single waiter's). It is served in
//! its turn like every waiter: overlapping multi-locks and single waiters take turns in the
//! order they arrived, none starves. While it waits for one lock it may already stand first
//! in another, which then waits for it as for any holder.

use std::future::{Future, IntoFuture};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use kvtk_core::lease::{create_all, Lease, LeaseConfig, LostReason};
use kvtk_core::{Backoff, Expect, Revision};
use tokio::sync::OwnedMutexGuard;
use tokio::time::Instant;

use crate::acquire::{new_entry, sleep_until_opt};
use crate::checks::check_marker;
use crate::error::{Error, ErrorKind};
use crate::guard::{Guard, Released};
use crate::shared::{Shared, Slot};
use crate::stats::Stat;
use crate::token::Token;
use crate::wait::turn;

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
        take(&self.handles, None, true).await
    }
}

/// A pending multi-lock acquisition; `.await` it.
///
/// # Cancel safety
/// Dropping it before it completes leaves nothing held: either the transaction did not
/// commit, or its leases are dropped with the future and released in the background — also
/// when the commit's outcome was not known yet: entries bound to a session are then removed
/// by the lease keeper once they can no longer land.
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
        let cfg = self.ttl.map(LeaseConfig::new).transpose()?;
        if let Some(c) = cfg {
            check_marker(c.ttl().as_duration(), first.marker_ttl)?;
        }
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

/// Takes the handles' slots in name order, enters every queue in one transaction and waits
/// until our entry holds each lock. A try gives up (dropping the leases releases the entries)
/// when a lock is busy.
async fn take(
    handles: &[Arc<Shared>],
    cfg: Option<LeaseConfig>,
    try_only: bool,
) -> Result<Option<MultiGuard>, Error> {
    let mut slots = Vec::with_capacity(handles.len());
    for s in handles {
        slots.push(s.slot.clone().lock_owned().await);
    }
    let leases = enqueue_all(handles, &slots, cfg).await?;
    let mut alone = Vec::with_capacity(handles.len());
    for (s, lease) in handles.iter().zip(&leases) {
        s.bump(Stat::Enqueued);
        match turn(s, lease, try_only, &mut None).await? {
            Some(a) => alone.push(a),
            None => return Ok(None),
        }
    }
    Ok(Some(MultiGuard::new(handles, leases, alone, slots)))
}

/// How often the transaction is tried again after one of our own keys was not where we
/// thought (each time re-read from the stream leader).
const ATTEMPTS: usize = 8;

/// One transaction: our entry in every lock's queue, each conditional on its own key's
/// state (remembered from the last release, re-read from the stream leader after a
/// conflict), so a delayed duplicate can never move an entry.
async fn enqueue_all(
    handles: &[Arc<Shared>],
    slots: &[OwnedMutexGuard<Slot>],
    cfg: Option<LeaseConfig>,
) -> Result<Vec<Lease>, Error> {
    let mut own: Vec<Expect> = slots.iter().map(|s| expect_of(s.own_last)).collect();
    // Every entry names all the locks (sorted), kept across its renewals: operators see the
    // multi-lock from any revision of any of its entries.
    let names: Vec<String> = handles
        .iter()
        .map(|s| s.name.as_str().to_string())
        .collect();
    for _ in 0..ATTEMPTS {
        let creates = || async {
            let mut leases = Vec::with_capacity(handles.len());
            for (s, e) in handles.iter().zip(&own) {
                s.bump(Stat::AcquireWrite);
                leases.push(new_entry(s, cfg, &names).await?.expect(*e));
            }
            create_all(leases).await
        };
        match Backoff::DEFAULT.retry(creates).await {
            Ok(leases) => return Ok(leases),
            Err(e) if e.is_conflict() => own = own_states(handles).await?,
            Err(e) => return Err(e.into()),
        }
    }
    Err(Error::new(
        ErrorKind::Timeout,
        "could not enter the queues: our own queue keys kept changing",
    ))
}

fn expect_of(last: Option<Revision>) -> Expect {
    last.map_or(Expect::NoMessage, Expect::Revision)
}

/// Each handle's own queue key as the stream leader has it.
async fn own_states(handles: &[Arc<Shared>]) -> Result<Vec<Expect>, Error> {
    let mut out = Vec::with_capacity(handles.len());
    for s in handles {
        let e = Backoff::DEFAULT
            .retry(|| s.bucket.get_from_leader(s.own_key()))
            .await?;
        out.push(expect_of(e.map(|e| e.revision())));
    }
    Ok(out)
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
        leases: Vec<Lease>,
        alone: Vec<Option<Revision>>,
        slots: Vec<OwnedMutexGuard<Slot>>,
    ) -> MultiGuard {
        let guards = handles
            .iter()
            .zip(leases.into_iter().zip(alone))
            .zip(slots)
            .map(|((s, (lease, alone)), slot)| {
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
