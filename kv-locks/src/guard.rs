//! A held lock: the [`Guard`], its renewal task and its release.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex as StdMutex};
use std::time::Duration;

use bytes::Bytes;
use kv_core::{Expect, Revision};
use tokio::sync::{watch, OwnedMutexGuard};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::entry::{OwnEntry, Renewal};
use crate::error::{Error, ErrorKind};
use crate::lease::Next;
use crate::shared::{Shared, Slot};
use crate::token::Token;

/// How a release went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Released {
    /// The lock was held until the release, and our entry was removed.
    Released,
    /// The lock had already been lost (loss was signalled before the release): work done
    /// under it may have overlapped with another holder's. Nothing of another holder's was
    /// touched.
    AlreadyLost,
}

/// What the guard and its renewal task share.
#[derive(Debug)]
pub(crate) struct HeldView {
    rev: watch::Sender<Revision>,
    deadline: StdMutex<Instant>,
    renewed: AtomicBool,
    lost: CancellationToken,
    reason: StdMutex<Option<String>>,
}

impl HeldView {
    fn lose(&self, why: String) {
        if self.lost.is_cancelled() {
            return;
        }
        if let Ok(mut r) = self.reason.lock() {
            r.get_or_insert(why.clone());
        }
        tracing::warn!(reason = %why, "lock lost");
        self.lost.cancel();
    }

    fn deadline(&self) -> Instant {
        self.deadline
            .lock()
            .map(|d| *d)
            .unwrap_or_else(|p| *p.into_inner())
    }
}

type TaskOut = (OwnEntry, OwnedMutexGuard<Slot>);

/// The held entry and the handle's slot. The renewal task locks the cell only while it
/// renews; a release takes the state out at once when the task is idle (the common case)
/// instead of waiting for the task to be scheduled and return it.
type Cell = Arc<tokio::sync::Mutex<Option<TaskOut>>>;

/// A held lock (or semaphore permit). Dropping it releases in the background; prefer
/// [`release`](Guard::release), which reports how it went.
///
/// The guard keeps the lease alive: a task owned by it renews the entry every
/// `renew_every`, and reports loss (see [`lost`](Guard::lost)) at the latest at the lease
/// deadline — the send time of the last successful write + TTL − margin on the monotonic
/// clock — also when the network is gone, and at once when the entry turns out to have been
/// removed or expired. A runtime stalled past the deadline sees loss when it wakes; it never
/// renews late.
#[must_use = "dropping the guard releases the lock at once"]
#[derive(Debug)]
pub struct Guard {
    shared: Arc<Shared>,
    token: Token,
    alone: Option<Revision>,
    view: Arc<HeldView>,
    stop: CancellationToken,
    task: Option<JoinHandle<()>>,
    cell: Cell,
    acquired_at: Instant,
}

impl Guard {
    pub(crate) fn start(
        entry: OwnEntry,
        slot: OwnedMutexGuard<Slot>,
        alone: Option<Revision>,
    ) -> Guard {
        let shared = entry.shared.clone();
        let (rev, _) = watch::channel(entry.rev);
        let view = Arc::new(HeldView {
            rev,
            deadline: StdMutex::new(entry.clock.deadline()),
            renewed: AtomicBool::new(false),
            lost: CancellationToken::new(),
            reason: StdMutex::new(None),
        });
        let stop = CancellationToken::new();
        let token = Token::new(entry.ticket);
        // Owned by the guard (the release stops and aborts it), not by the tracker:
        // `Locks::shutdown` waits for background releases, not for locks still held.
        let cell: Cell = Arc::new(tokio::sync::Mutex::new(Some((entry, slot))));
        let task = tokio::spawn(keep_alive(cell.clone(), stop.clone(), view.clone()));
        Guard {
            shared,
            token,
            alone,
            view,
            stop,
            task: Some(task),
            cell,
            acquired_at: Instant::now(),
        }
    }

    /// The fencing token: pass it with every write to the protected resource, which rejects
    /// tokens lower than the highest it has seen ([`Fence`](crate::Fence)).
    pub fn token(&self) -> Token {
        self.token
    }

    /// The lock's name.
    pub fn name(&self) -> &str {
        self.shared.name.as_str()
    }

    /// Whether the lock is still held: loss has not been signalled and the lease deadline
    /// (monotonic clock) has not passed — checked here, so it is right even while the
    /// renewal task is starved.
    pub fn is_held(&self) -> bool {
        !self.view.lost.is_cancelled() && Instant::now() < self.view.deadline()
    }

    /// The current lease deadline: after it the lock must be considered lost.
    pub fn deadline(&self) -> Instant {
        self.view.deadline()
    }

    /// Why the lock was lost, once it was.
    pub fn loss_reason(&self) -> Option<String> {
        self.view.reason.lock().ok().and_then(|r| r.clone())
    }

    /// Completes when the lock is lost.
    ///
    /// # Cancel safety
    /// Cancel safe.
    pub fn lost(&self) -> impl Future<Output = ()> + Send + 'static {
        self.view.lost.clone().cancelled_owned()
    }

    /// A token cancelled when the lock is lost or the guard is released or dropped: hand it
    /// to work that must stop then.
    pub fn cancellation_token(&self) -> CancellationToken {
        self.view.lost.child_token()
    }

    /// Runs `work` while the lock is held: returns its output, or [`ErrorKind::Lost`] (and
    /// drops `work`) as soon as the lock is lost.
    ///
    /// # Cancel safety
    /// Cancel safe as far as the lock goes; `work` is dropped with it.
    pub async fn run_while_held<F: Future>(&self, work: F) -> Result<F::Output, Error> {
        if !self.is_held() {
            return Err(self.lost_error());
        }
        let deadline_watch = async {
            // Loss is signalled by the renewal task; the deadline check covers a starved one.
            loop {
                tokio::time::sleep_until(self.view.deadline()).await;
                if !self.is_held() {
                    return;
                }
            }
        };
        tokio::select! {
            biased;
            _ = self.view.lost.cancelled() => Err(self.lost_error()),
            _ = deadline_watch => Err(self.lost_error()),
            out = work => Ok(out),
        }
    }

    fn lost_error(&self) -> Error {
        Error::new(
            ErrorKind::Lost,
            format!(
                "lock {} lost: {}",
                self.shared.name,
                self.loss_reason()
                    .unwrap_or_else(|| "lease deadline passed".to_string())
            ),
        )
    }

    /// Writes `key` only while we still hold the lock: the write is conditional on our own
    /// queue entry's revision (`expect_on`), so after our entry was removed or expired — even
    /// if we did not notice yet — it fails with [`ErrorKind::Lost`]. Retried once when our
    /// own renewal changed the revision meanwhile.
    ///
    /// The key must not be one of the lock's own keys.
    ///
    /// # Cancel safety
    /// Not cancel safe: the write may be applied even if the future is dropped.
    pub async fn put_guarded(
        &self,
        key: impl AsRef<str>,
        value: impl Into<Bytes>,
    ) -> Result<Revision, Error> {
        let value = value.into();
        let key = key.as_ref();
        let mut rx = self.view.rev.subscribe();
        for _ in 0..3 {
            if !self.is_held() {
                return Err(self.lost_error());
            }
            let rev = *rx.borrow_and_update();
            let res = self
                .shared
                .bucket
                .put(key, value.clone())
                .expect_on(&self.shared.own_key, Expect::Revision(rev))
                .await;
            match res {
                Ok(r) => return Ok(r),
                Err(e) if e.is_conflict() => {
                    // A renewal of ours may be in flight: wait (briefly) for its ack.
                    let wait = self
                        .view
                        .deadline()
                        .saturating_duration_since(Instant::now())
                        .min(Duration::from_secs(2));
                    let changed = tokio::time::timeout(wait, rx.wait_for(|r| *r != rev)).await;
                    if !matches!(changed, Ok(Ok(_))) {
                        return Err(self.lost_error());
                    }
                }
                Err(e) => return Err(e.into()),
            }
        }
        Err(self.lost_error())
    }

    /// Releases the lock: stops renewing and deletes our entry, conditional on its revision
    /// (never a blind delete; another holder's entry cannot be touched). Idempotent in effect:
    /// an entry that is already gone is reported as [`Released::AlreadyLost`].
    ///
    /// # Cancel safety
    /// Not cancel safe: the delete may be applied even if the future is dropped; the handle's
    /// next acquisition copes with either outcome.
    pub async fn release(mut self) -> Result<Released, Error> {
        let Some(task) = self.task.take() else {
            return Ok(Released::AlreadyLost);
        };
        release(
            self.shared.clone(),
            task,
            self.cell.clone(),
            self.stop.clone(),
            self.view.clone(),
            self.alone,
            self.token,
            self.acquired_at,
        )
        .await
    }
}

#[allow(clippy::too_many_arguments)]
async fn release(
    shared: Arc<Shared>,
    task: JoinHandle<()>,
    cell: Cell,
    stop: CancellationToken,
    view: Arc<HeldView>,
    alone: Option<Revision>,
    token: Token,
    acquired_at: Instant,
) -> Result<Released, Error> {
    stop.cancel();
    // Waits only while a renewal is in flight (the task holds the cell then): the release
    // must know the revision that renewal produced.
    let state = cell.lock().await.take();
    // Idle or finished: nothing of its work remains, it need not run again.
    task.abort();
    let (mut entry, mut slot) =
        state.ok_or_else(|| Error::new(ErrorKind::Kv, "renewal state already taken"))?;
    let was_lost = view.lost.is_cancelled() || !entry.clock.is_valid(Instant::now());
    // Wake anything tied to the guard's cancellation token.
    view.lost.cancel();
    let alone = if view.renewed.load(Ordering::SeqCst) {
        None
    } else {
        alone
    };
    let removed = entry.remove(&mut slot, alone).await;
    let held_ms = acquired_at.elapsed().as_millis() as u64;
    match removed {
        Ok(true) if !was_lost => {
            tracing::info!(lock = %shared.name, token = token.get(), held_ms, clean = alone.is_some(), "released");
            Ok(Released::Released)
        }
        Ok(_) => {
            tracing::info!(lock = %shared.name, token = token.get(), held_ms, "released after loss");
            Ok(Released::AlreadyLost)
        }
        Err(e) => {
            tracing::warn!(lock = %shared.name, token = token.get(), error = %e, "release failed; the entry expires with its ttl");
            Err(e)
        }
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        let Some(task) = self.task.take() else {
            return;
        };
        self.stop.cancel();
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            // No runtime: the renewal task is gone with it; the entry expires by its TTL.
            self.view.lost.cancel();
            return;
        };
        let fut = release(
            self.shared.clone(),
            task,
            self.cell.clone(),
            self.stop.clone(),
            self.view.clone(),
            self.alone,
            self.token,
            self.acquired_at,
        );
        self.shared.tracker.spawn_on(
            async move {
                let _ = fut.await;
            },
            &rt,
        );
    }
}

/// The renewal task: renews at the lease clock's times until stopped or lost.
async fn keep_alive(cell: Cell, stop: CancellationToken, view: Arc<HeldView>) {
    loop {
        // The state lives in the cell; a release may take it whenever we do not hold it.
        let mut guard = cell.lock().await;
        let Some((entry, _)) = guard.as_mut() else {
            return;
        };
        let at = match entry.clock.next(Instant::now()) {
            Next::Lost => {
                view.lose("the lease deadline passed before a renewal succeeded".into());
                break;
            }
            Next::RenewAt(at) => at,
        };
        drop(guard);
        tokio::select! {
            biased;
            _ = stop.cancelled() => break,
            _ = view.lost.cancelled() => break,
            _ = tokio::time::sleep_until(at) => {}
        }
        if stop.is_cancelled() {
            break;
        }
        let mut guard = cell.lock().await;
        let Some((entry, _)) = guard.as_mut() else {
            return;
        };
        // Checked after waking: a runtime stalled past the deadline reports loss and never
        // renews late.
        let now = Instant::now();
        if !entry.clock.is_valid(now) {
            let late = now - entry.clock.deadline();
            view.lose(if entry.clock.failures() > 0 && late < Duration::from_millis(100) {
                "no renewal was acknowledged before the lease deadline".to_string()
            } else {
                format!("the lease deadline passed {late:?} before the renewal could run (stalled runtime?)")
            });
            break;
        }
        let deadline = entry.clock.deadline();
        let outcome = {
            // Boxed: the renewal future is large and lives only while a renewal is in flight,
            // so a held lock's idle task stays small (memory per held lock).
            let mut renew = Box::pin(entry.renew());
            tokio::select! {
                biased;
                o = &mut renew => Some(o),
                _ = tokio::time::sleep_until(deadline) => {
                    view.lose("no renewal was acknowledged before the lease deadline".into());
                    // Let the write finish, so that the release knows our revision.
                    let _ = renew.await;
                    None
                }
            }
        };
        match outcome {
            None => break,
            Some(Renewal::Renewed) => {
                view.renewed.store(true, Ordering::SeqCst);
                if let Ok(mut d) = view.deadline.lock() {
                    *d = entry.clock.deadline();
                }
                view.rev.send_replace(entry.rev);
            }
            Some(Renewal::Retry(e)) => {
                tracing::debug!(lock = %entry.shared.name, error = %e, slack_ms = entry.clock.slack(Instant::now()).as_millis() as u64, "renewal will be retried");
            }
            Some(Renewal::Gone(why)) => {
                view.lose(why);
                break;
            }
        }
    }
}
