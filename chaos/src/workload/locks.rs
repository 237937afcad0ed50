//! Locks: workers on two mutexes, a semaphore and a read-write lock, and on a mutex alone in a
//! quiet bucket; fenced writes under the mutexes and the write lock.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use kvtk_core::Bucket;
use kvtk_locks::{Acquire, Guard, KvFence, Locks, Mutex, Released, RwLock, Semaphore};
use kvtk_tests::history::{History, Mode, Op};
use rand::Rng;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::{bounded, settle};

/// Release outcomes, for the report.
#[derive(Debug, Default)]
pub(crate) struct Counts {
    /// Releases answered `Released`.
    pub released: AtomicU64,
    /// Releases answered `AlreadyLost` although the client saw no loss before releasing.
    pub already_lost: AtomicU64,
}

/// A lock the workers contend for.
#[derive(Debug, Clone)]
enum Target {
    Mutex(String),
    Semaphore(String, u32),
    /// Workers read (three times in four) or write.
    RwLock(String),
}

/// A worker's handle on its lock, kept for the whole run: what a handle remembers between
/// acquisitions (its fast path's expectations, its quiet-bucket bets) is under test too.
enum Handle {
    Mutex(Mutex),
    Semaphore(Semaphore, u32),
    RwLock(RwLock),
}

impl Handle {
    fn open(locks: &Locks, target: &Target) -> Result<(String, Handle), kvtk_locks::Error> {
        Ok(match target {
            Target::Mutex(name) => (name.clone(), Handle::Mutex(locks.mutex(name)?)),
            Target::Semaphore(name, n) => (
                name.clone(),
                Handle::Semaphore(locks.semaphore(name, *n)?, *n),
            ),
            Target::RwLock(name) => (name.clone(), Handle::RwLock(locks.rwlock(name)?)),
        })
    }

    fn acquire(&self) -> (Mode, Acquire) {
        match self {
            Handle::Mutex(m) => (Mode::Mutex, m.lock()),
            Handle::Semaphore(s, n) => (Mode::Semaphore(*n), s.acquire()),
            Handle::RwLock(rw) if rand::rng().random_range(0..4) == 0 => (Mode::Write, rw.write()),
            Handle::RwLock(rw) => (Mode::Read, rw.read()),
        }
    }
}

/// Starts `per_lock` workers on each lock, one `Locks` handle (connection) per worker.
pub(crate) fn start(
    tasks: &mut JoinSet<()>,
    handles: Vec<Locks>,
    per_lock: usize,
    (history, stop): (&History, &CancellationToken),
    counts: &Arc<Counts>,
) {
    let targets = [
        Target::Mutex("m0".into()),
        Target::Mutex("m1".into()),
        Target::Semaphore("s0".into(), 2),
        Target::RwLock("rw0".into()),
    ];
    let mut n = 0;
    for target in targets {
        for _ in 0..per_lock {
            let Some(locks) = handles.get(n % handles.len().max(1)) else {
                return;
            };
            let fence = locks.bucket().clone();
            let client = format!("lock-{n}");
            let w = Worker::new(locks, &target, client, fence, (history, stop), counts);
            n += 1;
            match w {
                Ok(w) => tasks.spawn(w.run()),
                Err(e) => return tracing::error!("lock handle: {e}"),
            };
        }
    }
}

/// Starts one worker per `Locks` handle on mutex `q0` of a bucket nothing else writes to,
/// pausing up to [`THINK_MS`] between holds: a worker whose last lock + release saw the
/// bucket quiet bets that it still is, and loses the bet to the others, to session renewals
/// and to faults. Fenced writes go to `fence` (another bucket: in this one they would lose
/// every bet).
pub(crate) fn start_quiet(
    tasks: &mut JoinSet<()>,
    handles: &[Locks],
    fence: &Bucket,
    (history, stop): (&History, &CancellationToken),
    counts: &Arc<Counts>,
) {
    let target = Target::Mutex("q0".into());
    for (i, locks) in handles.iter().enumerate() {
        let client = format!("quiet-{i}");
        match Worker::new(
            locks,
            &target,
            client,
            fence.clone(),
            (history, stop),
            counts,
        ) {
            Ok(w) => tasks.spawn(w.thinking(THINK_MS).run()),
            Err(e) => return tracing::error!("lock handle: {e}"),
        };
    }
}

/// The longest pause of a quiet-bucket worker between holds, in milliseconds.
const THINK_MS: u64 = 300;

struct Worker {
    lock: String,
    handle: Handle,
    fence: Bucket,
    client: String,
    history: History,
    stop: CancellationToken,
    counts: Arc<Counts>,
    think_ms: u64,
}

impl Worker {
    fn new(
        locks: &Locks,
        target: &Target,
        client: String,
        fence: Bucket,
        (history, stop): (&History, &CancellationToken),
        counts: &Arc<Counts>,
    ) -> Result<Worker, kvtk_locks::Error> {
        let (lock, handle) = Handle::open(locks, target)?;
        Ok(Worker {
            lock,
            handle,
            fence,
            client,
            history: history.clone(),
            stop: stop.clone(),
            counts: Arc::clone(counts),
            think_ms: 0,
        })
    }

    fn thinking(self, think_ms: u64) -> Worker {
        Worker { think_ms, ..self }
    }

    async fn run(self) {
        while !self.stop.is_cancelled() {
            let (mode, acquire) = self.handle.acquire();
            let op = self.history.invoke(
                &self.client,
                Op::Acquire {
                    lock: self.lock.clone(),
                    mode,
                },
            );
            let out = bounded(&self.stop, acquire).await;
            match settle(op, out, |g: &Guard| Some(g.token().get())) {
                Some(guard) => self.hold(&self.lock, mode, guard).await,
                // A failing cluster answers at once: do not spin.
                None => tokio::time::sleep(Duration::from_millis(50)).await,
            }
            if self.think_ms > 0 {
                let ms = rand::rng().random_range(0..self.think_ms);
                tokio::time::sleep(Duration::from_millis(ms)).await;
            }
        }
    }

    async fn hold(&self, lock: &str, mode: Mode, guard: Guard) {
        let token = guard.token().get();
        // A holder stops believing when the guard says the lock is lost, also in the middle
        // of its fenced write (which may wait out a request timeout): the loss is recorded
        // then, not when the write returns.
        let mut lost = false;
        if matches!(mode, Mode::Mutex | Mode::Write) {
            let write = self.fenced_write(lock, &guard);
            tokio::pin!(write);
            tokio::select! {
                biased;
                () = &mut write => {}
                _ = guard.lost() => {
                    self.lost(lock, token);
                    lost = true;
                    write.await;
                }
            }
        }
        if !lost {
            let work = Duration::from_millis(rand::rng().random_range(0..30));
            lost = tokio::select! {
                _ = guard.lost() => true,
                () = tokio::time::sleep(work) => !guard.is_held(),
            };
            if lost {
                self.lost(lock, token);
            }
        }
        let what = Op::Release {
            lock: lock.to_string(),
            token,
        };
        let op = self.history.invoke(&self.client, what);
        // How much of its lease the holder believed it had left: at (or near) zero, the
        // release raced the deadline; well above it, someone else ended the entry or session.
        let left = guard
            .deadline()
            .saturating_duration_since(tokio::time::Instant::now());
        match bounded(&self.stop, guard.release()).await {
            Some(Ok(Released::AlreadyLost)) if !lost => {
                tracing::warn!(
                    lock,
                    token,
                    lease_left_ms = left.as_millis() as u64,
                    "a release found the lock lost although its holder had seen no loss"
                );
                self.counts.already_lost.fetch_add(1, Ordering::Relaxed);
                op.ok(None);
            }
            Some(Ok(_)) => {
                self.counts.released.fetch_add(1, Ordering::Relaxed);
                op.ok(None);
            }
            Some(Err(e)) => op.unknown(super::causes(&e)),
            None => op.unknown("timed out or stopped"),
        }
    }

    /// Records that the holder of `lock` with `token` learned it lost the lock, now.
    fn lost(&self, lock: &str, token: u64) {
        let what = Op::Lost {
            lock: lock.to_string(),
            token,
        };
        self.history.instant(&self.client, what, None);
    }

    async fn fenced_write(&self, lock: &str, guard: &Guard) {
        let fence = KvFence::new(self.fence.clone(), format!("fence.{lock}"));
        let token = guard.token();
        let what = Op::FencedWrite {
            resource: lock.to_string(),
            token: token.get(),
        };
        let op = self.history.invoke(&self.client, what);
        let value = format!("{} {}", self.client, token.get());
        let out = bounded(
            &self.stop,
            fence.write(token, &format!("data.{lock}"), value),
        )
        .await;
        settle(op, out, |_| None);
    }
}
