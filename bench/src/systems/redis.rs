//! The Redis side (feature `redis`): Redlock on one Redis through rslock.

use std::time::{Duration, Instant};

use rslock::LockManager;

use crate::harness::contended::{finish, Outcome, Shared};
use crate::harness::stats::Lat;
use crate::harness::{BoxError, Env};

fn url(env: &Env) -> Result<String, BoxError> {
    Ok(env.redis.as_ref().ok_or("redis not running")?.0.clone())
}

/// Metric 2: `lock` + `unlock`, uncontended.
pub(crate) async fn lock_uncontended(
    env: &Env,
    n: usize,
    warm: usize,
    ttl_s: u64,
) -> Result<Lat, BoxError> {
    let rl = LockManager::new(vec![url(env)?]);
    let ttl = Duration::from_secs(ttl_s);
    let mut lat = Lat::new();
    for i in 0..warm + n {
        let t0 = Instant::now();
        let l = rl
            .lock("bench-lock", ttl)
            .await
            .map_err(|e| format!("redlock: {e:?}"))?;
        rl.unlock(&l).await;
        if i >= warm {
            lat.record(t0.elapsed());
        }
    }
    Ok(lat)
}

/// Metric 3: Redlock has no way to wait for a release; `acquire` retries `lock` after random
/// delays (rslock's defaults: up to 200 ms). Measured as shipped.
pub(crate) async fn handoff(
    env: &Env,
    waiters: usize,
    target: u64,
    limit: Duration,
    ttl_s: u64,
) -> Result<Outcome, BoxError> {
    let url = url(env)?;
    let shared = Shared::new(waiters);
    let ttl = Duration::from_secs(ttl_s);
    // A fresh resource per run: aborted clients of an earlier run may still hold theirs.
    let resource = format!("bench-handoff-{waiters}-{}", std::process::id());
    let started = Instant::now();
    let mut tasks = Vec::new();
    for id in 0..waiters {
        let rl = LockManager::new(vec![url.clone()]);
        let resource = resource.clone();
        let shared = shared.clone();
        tasks.push(tokio::spawn(async move {
            loop {
                let Ok(l) = rl.acquire_no_guard(resource.as_bytes(), ttl).await else {
                    return;
                };
                shared.acquired(id);
                shared.tracker.releasing();
                rl.unlock(&l).await;
                shared.tracker.released(Instant::now());
            }
        }));
    }
    Ok(finish(&shared, tasks, started, target, limit, false).await)
}
