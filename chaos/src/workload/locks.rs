//! Locks: workers on two mutexes, a semaphore and a read-write lock; fenced writes under the
//! mutexes and the write lock.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use kvtk_locks::{Acquire, Guard, KvFence, Locks, Released};
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

/// Starts `per_lock` workers on each lock, one `Locks` handle (connection) per worker.
pub(crate) fn start(
    tasks: &mut JoinSet<()>,
    handles: Vec<Locks>,
    per_lock: usize,
    history: &History,
    stop: &CancellationToken,
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
            let Some(locks) = handles.get(n % handles.len().max(1)).cloned() else {
                return;
            };
            let client = format!("lock-{n}");
            n += 1;
            let w = Worker {
                locks,
                target: target.clone(),
                client,
                history: history.clone(),
                stop: stop.clone(),
                counts: Arc::clone(counts),
            };
            tasks.spawn(w.run());
        }
    }
}

struct Worker {
    locks: Locks,
    target: Target,
    client: String,
    history: History,
    stop: CancellationToken,
    counts: Arc<Counts>,
}

impl Worker {
    async fn run(self) {
        while !self.stop.is_cancelled() {
            let (lock, mode, acquire) = match self.acquire() {
                Ok(a) => a,
                Err(e) => {
                    tracing::error!("lock handle: {e}");
                    return;
                }
            };
            let op = self.history.invoke(
                &self.client,
                Op::Acquire {
                    lock: lock.clone(),
                    mode,
                },
            );
            let out = bounded(&self.stop, acquire).await;
            match settle(op, out, |g: &Guard| Some(g.token().get())) {
                Some(guard) => self.hold(&lock, mode, guard).await,
                // A failing cluster answers at once: do not spin.
                None => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    }

    fn acquire(&self) -> Result<(String, Mode, Acquire), kvtk_locks::Error> {
        Ok(match &self.target {
            Target::Mutex(name) => (name.clone(), Mode::Mutex, self.locks.mutex(name)?.lock()),
            Target::Semaphore(name, n) => (
                name.clone(),
                Mode::Semaphore(*n),
                self.locks.semaphore(name, *n)?.acquire(),
            ),
            Target::RwLock(name) => {
                let rw = self.locks.rwlock(name)?;
                if rand::rng().random_range(0..4) == 0 {
                    (name.clone(), Mode::Write, rw.write())
                } else {
                    (name.clone(), Mode::Read, rw.read())
                }
            }
        })
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
        match bounded(&self.stop, guard.release()).await {
            Some(Ok(Released::AlreadyLost)) if !lost => {
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
        let fence = KvFence::new(self.locks.bucket().clone(), format!("fence.{lock}"));
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
