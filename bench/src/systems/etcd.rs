//! The etcd side (feature `etcd`): etcd 3.4 through etcd-client.

use std::time::{Duration, Instant};

use etcd_client::{Client, EventType, LockOptions, ResignOptions};
use tokio::sync::mpsc;
use tokio_util::task::AbortOnDropHandle;

use crate::harness::child::{self, Cleanup};
use crate::harness::contended::{finish_with, Outcome, Shared};
use crate::harness::stats::Lat;
use crate::harness::{BoxError, Env};
use crate::metrics::failover::RESIGN_WARM;

fn endpoint(env: &Env) -> Result<String, BoxError> {
    Ok(env.etcd.as_ref().ok_or("etcd not running")?.0.clone())
}

async fn connect(ep: &str) -> Result<Client, BoxError> {
    Ok(Client::connect([ep], None).await?)
}

/// A lease with a keep-alive task that renews it every TTL/3 (what etcd's Go `Session` does).
pub(crate) struct Session {
    pub id: i64,
    _keeper: AbortOnDropHandle<()>,
}

impl Session {
    pub(crate) async fn grant(client: &mut Client, ttl_s: u64) -> Result<Session, BoxError> {
        let id = client.lease_grant(ttl_s as i64, None).await?.id();
        let (mut keeper, mut stream) = client.lease_keep_alive(id).await?;
        let keeper = tokio::spawn(async move {
            loop {
                if keeper.keep_alive().await.is_err() {
                    return;
                }
                if stream.message().await.is_err() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(ttl_s * 1000 / 3)).await;
            }
        });
        Ok(Session {
            id,
            _keeper: AbortOnDropHandle::new(keeper),
        })
    }

    pub(crate) async fn close(self, client: &mut Client) {
        let id = self.id;
        drop(self);
        let _ = client.lease_revoke(id).await;
    }
}

/// Metric 2: Lock + Unlock with one session's lease, uncontended.
pub(crate) async fn lock_uncontended(
    env: &Env,
    n: usize,
    warm: usize,
    ttl_s: u64,
) -> Result<Lat, BoxError> {
    let mut c = connect(&endpoint(env)?).await?;
    let s = Session::grant(&mut c, ttl_s).await?;
    let mut lat = Lat::new();
    for i in 0..warm + n {
        let t0 = Instant::now();
        let r = c
            .lock("bench-lock", Some(LockOptions::new().with_lease(s.id)))
            .await?;
        c.unlock(r.key()).await?;
        if i >= warm {
            lat.record(t0.elapsed());
        }
    }
    s.close(&mut c).await;
    Ok(lat)
}

/// Metric 3: `waiters` clients, each with its own connection and session, loop Lock → Unlock.
pub(crate) async fn handoff(
    env: &Env,
    waiters: usize,
    target: u64,
    limit: Duration,
    ttl_s: u64,
) -> Result<Outcome, BoxError> {
    let ep = endpoint(env)?;
    let name = format!("bench-handoff-{waiters}-{}", std::process::id());
    let shared = Shared::new(waiters);
    let mut clients = Vec::new();
    for _ in 0..waiters {
        let mut c = connect(&ep).await?;
        let s = Session::grant(&mut c, ttl_s).await?;
        clients.push((c, s));
    }
    let started = Instant::now();
    let mut tasks = Vec::new();
    let mut sessions = Vec::new();
    for (id, (c, s)) in clients.into_iter().enumerate() {
        let lease = s.id;
        sessions.push((c.clone(), s));
        let shared = shared.clone();
        let name = name.clone();
        let mut c = c;
        tasks.push(tokio::spawn(async move {
            loop {
                let Ok(r) = c
                    .lock(name.as_str(), Some(LockOptions::new().with_lease(lease)))
                    .await
                else {
                    return;
                };
                shared.acquired(id);
                shared.tracker.releasing();
                if c.unlock(r.key()).await.is_err() {
                    return;
                }
                shared.tracker.released(Instant::now());
            }
        }));
    }
    // Revoking the sessions first deletes every waiter's key, so the blocked Lock calls end
    // on the server instead of being cancelled half-way.
    let o = finish_with(&shared, tasks, started, target, limit, false, async move {
        for (mut c, s) in sessions {
            s.close(&mut c).await;
        }
    })
    .await;
    Ok(o)
}

/// The child role of an etcd leader that gets SIGKILLed.
pub(crate) const CHILD: &str = "etcd-leader";

/// The child of a crash sample: campaigns, then keeps its lease alive until killed.
pub(crate) async fn lead(ep: &str, name: &str, ttl_s: u64) -> Result<(), BoxError> {
    let mut c = connect(ep).await?;
    let s = Session::grant(&mut c, ttl_s).await?;
    c.campaign(name, "child", s.id).await?;
    child::ready_until_killed().await
}

/// Metric 4: `samples` crash failovers (see [`child::crash_failovers`]).
pub(crate) async fn failover_crash(
    env: &Env,
    ttl_s: u64,
    samples: usize,
) -> Result<Vec<f64>, BoxError> {
    let ep = endpoint(env)?;
    child::crash_failovers(CHILD, &ep, ttl_s, samples, |name| {
        let ep = ep.clone();
        async move {
            let mut c = connect(&ep).await?;
            let s = Session::grant(&mut c, ttl_s).await?;
            c.campaign(name.as_str(), "standby", s.id).await?;
            Ok(Box::pin(async move { s.close(&mut c).await }) as Cleanup)
        }
    })
    .await
}

/// Metric 4: two candidates take turns; each sample is resign acknowledged → the waiting
/// candidate's Campaign returns.
pub(crate) async fn resign_handoff(env: &Env, n: usize, ttl_s: u64) -> Result<Lat, BoxError> {
    let ep = endpoint(env)?;
    let name = format!("bench-resign-{}", std::process::id());
    let mut cs = Vec::new();
    for _ in 0..2 {
        let mut c = connect(&ep).await?;
        let s = Session::grant(&mut c, ttl_s).await?;
        cs.push((c, s));
    }
    let mut lat = Lat::new();
    let lease0 = cs[0].1.id;
    let mut leader_key = cs[0].0.campaign(name.as_str(), "0", lease0).await?;
    let mut cur = 0usize;
    for i in 0..n + RESIGN_WARM {
        let other = 1 - cur;
        let mut c2 = cs[other].0.clone();
        let (lease, n2) = (cs[other].1.id, name.clone());
        let waiting = tokio::spawn(async move {
            let r = c2.campaign(n2.as_str(), "x", lease).await;
            (r, Instant::now())
        });
        // Let the standby's campaign register before the leader resigns.
        tokio::time::sleep(Duration::from_millis(30)).await;
        let lk = leader_key
            .leader()
            .ok_or("campaign without leader key")?
            .clone();
        // From the resign call's start, as for kvtk-leader (see `failover::resign_handoff`).
        let start = Instant::now();
        cs[cur]
            .0
            .resign(Some(ResignOptions::new().with_leader(lk)))
            .await?;
        let (won, at) = tokio::time::timeout(Duration::from_secs(10), waiting).await??;
        leader_key = won?;
        if i >= RESIGN_WARM {
            lat.record(at.saturating_duration_since(start));
        }
        cur = other;
    }
    for (mut c, s) in cs {
        s.close(&mut c).await;
    }
    Ok(lat)
}

/// Metric 5: `readers` watchers over 10 clients, one put at a time from another client.
pub(crate) async fn watch_propagation(
    env: &Env,
    readers: usize,
    _puts: usize,
) -> Result<Lat, BoxError> {
    let ep = endpoint(env)?;
    let key = format!("bench-cfg-{readers}-{}", std::process::id());
    let mut writer = connect(&ep).await?;
    writer
        .put(
            key.as_str(),
            crate::harness::propagation::payload(0).to_vec(),
            None,
        )
        .await?;
    let mut clients = Vec::new();
    for _ in 0..readers.min(crate::harness::propagation::CONNECTIONS) {
        clients.push(connect(&ep).await?);
    }
    let (tx, mut rx) = mpsc::unbounded_channel();
    let mut tasks = Vec::new();
    for i in 0..readers {
        let mut c = clients[i % clients.len()].clone();
        let mut w = c.watch(key.as_str(), None).await?;
        let tx = tx.clone();
        tasks.push(tokio::spawn(async move {
            while let Ok(Some(resp)) = w.message().await {
                let t = Instant::now();
                for ev in resp.events() {
                    if ev.event_type() != EventType::Put {
                        continue;
                    }
                    if let Some(v) = ev
                        .kv()
                        .and_then(|kv| crate::harness::propagation::version_of(kv.value()))
                    {
                        let _ = tx.send((v, t));
                    }
                }
            }
        }));
    }
    let k2 = key.clone();
    let lat = crate::harness::propagation::drive(env, &mut rx, readers, move |i| {
        let mut w = writer.clone();
        let k = k2.clone();
        async move {
            w.put(
                k.as_str(),
                crate::harness::propagation::payload(i).to_vec(),
                None,
            )
            .await
            .map(|_| ())
            .map_err(Into::into)
        }
    })
    .await?;
    for t in tasks {
        t.abort();
    }
    Ok(lat)
}
