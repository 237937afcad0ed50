//! Multi-locks: workers take overlapping sets of two or three of a few mutexes at once, all or
//! nothing ([`kvtk_locks::MultiLock`]). Each lock of a held set is recorded as its own hold with
//! its own token, so the mutual-exclusion checker covers every lock of the set.

use std::collections::BTreeMap;
use std::time::Duration;

use kvtk_core::lease::SessionId;
use kvtk_locks::{Locks, MultiGuard};
use kvtk_tests::history::{History, Mode, Op, Pending};
use rand::seq::IndexedRandom;
use rand::Rng;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::bounded;

/// The locks the sets are drawn from; only multi-lock workers take them.
const NAMES: [&str; 4] = ["multi.a", "multi.b", "multi.c", "multi.d"];

/// Starts `workers` multi-lock workers, spread over `handles` (one connection each).
pub(crate) fn start(
    tasks: &mut JoinSet<()>,
    handles: &[Locks],
    workers: usize,
    history: &History,
    stop: &CancellationToken,
) {
    for i in 0..workers {
        let Some(locks) = handles.get(i % handles.len().max(1)).cloned() else {
            return;
        };
        let w = Worker {
            locks,
            client: format!("multi-{i}"),
            history: history.clone(),
            stop: stop.clone(),
        };
        tasks.spawn(w.run());
    }
}

struct Worker {
    locks: Locks,
    client: String,
    history: History,
    stop: CancellationToken,
}

/// Two or three distinct names of [`NAMES`].
fn draw() -> Vec<&'static str> {
    let mut rng = rand::rng();
    let n = rng.random_range(2..=3);
    NAMES.choose_multiple(&mut rng, n).copied().collect()
}

impl Worker {
    async fn run(self) {
        while !self.stop.is_cancelled() {
            let multi = match self.locks.multi(draw()) {
                Ok(m) => m,
                Err(e) => {
                    tracing::error!("multi-lock handle: {e}");
                    return;
                }
            };
            let names: Vec<String> = multi.names().map(str::to_string).collect();
            let ops = self.invoke_each(names.iter().map(|n| Op::Acquire {
                lock: n.clone(),
                mode: Mode::Mutex,
            }));
            match bounded(&self.stop, multi.lock()).await {
                Some(Ok(guard)) => {
                    let tokens: BTreeMap<String, u64> = guard
                        .tokens()
                        .map(|(n, t)| (n.to_string(), t.get()))
                        .collect();
                    for (op, name) in ops.into_iter().zip(&names) {
                        op.ok(tokens.get(name).copied());
                    }
                    self.hold(&tokens, guard).await;
                }
                Some(Err(e)) => unknown_all(ops, e).await,
                None => {
                    if !self.stop.is_cancelled() {
                        self.explain(&names).await;
                    }
                    unknown_all(ops, "timed out or stopped").await
                }
            }
        }
    }

    /// After a timed-out acquisition: what stands first in each lock's queue, and what the
    /// stream leader says of its session (the run's log shows why a waiter waited).
    async fn explain(&self, names: &[String]) {
        let bucket = self.locks.bucket();
        for name in names {
            let Ok(info) = self.locks.inspect(name).await else {
                continue;
            };
            for q in info.holders.iter().take(1) {
                let entry = bucket.get_from_leader(q.key.as_str()).await.ok().flatten();
                let session = entry.as_ref().and_then(SessionId::bound_by);
                let state = match session {
                    Some(id) => bucket.get_from_leader(id.key()).await.map(|e| {
                        e.map(|e| (e.revision().get(), e.is_value(), e.ttl(), e.created()))
                    }),
                    None => Ok(None),
                };
                tracing::warn!(client = %self.client, lock = %name, key = %q.key, token = q.token.get(), session = ?session.map(|s| s.to_string()), session_key = ?state, waiters = info.waiters.len(), "multi-lock timed out behind this holder");
            }
        }
    }

    /// One invocation per lock of the set.
    fn invoke_each(&self, ops: impl Iterator<Item = Op>) -> Vec<Pending> {
        ops.map(|op| self.history.invoke(&self.client, op))
            .collect()
    }

    async fn hold(&self, tokens: &BTreeMap<String, u64>, guard: MultiGuard) {
        let work = Duration::from_millis(rand::rng().random_range(0..30));
        let lost = tokio::select! {
            _ = guard.lost() => true,
            () = tokio::time::sleep(work) => !guard.is_held(),
        };
        if lost {
            for (lock, token) in tokens {
                let what = Op::Lost {
                    lock: lock.clone(),
                    token: *token,
                };
                self.history.instant(&self.client, what, None);
            }
        }
        let ops = self.invoke_each(tokens.iter().map(|(lock, token)| Op::Release {
            lock: lock.clone(),
            token: *token,
        }));
        match bounded(&self.stop, guard.release()).await {
            Some(Ok(_)) => ops.into_iter().for_each(|op| op.ok(None)),
            Some(Err(e)) => {
                let why = super::causes(&e);
                ops.into_iter().for_each(|op| op.unknown(&why));
            }
            None => ops
                .into_iter()
                .for_each(|op| op.unknown("timed out or stopped")),
        }
    }
}

/// Completes every lock's acquisition as unknown, then pauses: a failing cluster answers at
/// once, so do not spin.
async fn unknown_all(ops: Vec<Pending>, why: impl std::fmt::Display) {
    let why = why.to_string();
    ops.into_iter().for_each(|op| op.unknown(&why));
    tokio::time::sleep(Duration::from_millis(50)).await;
}
