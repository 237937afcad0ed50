//! The etcd side (feature `etcd`): etcd 3.4 through etcd-client.

use std::sync::Arc;
use std::time::{Duration, Instant};

use etcd_client::{Client, EventType, LockOptions, ResignOptions};
use tokio::io::AsyncBufReadExt;
use tokio::sync::mpsc;

use crate::common::{BoxError, Env};
use crate::handoff::{finish_with, Outcome, Shared};
use crate::stats::{Handoff, Lat};

fn endpoint(env: &Env) -> Result<String, BoxError> {
    Ok(env.etcd.as_ref().ok_or("etcd not running")?.0.clone())
}

async fn connect(ep: &str) -> Result<Client, BoxError> {
    Ok(Client::connect([ep], None).await?)
}

/// A lease with a keep-alive task that renews it every TTL/3 (what etcd's Go `Session` does).
pub struct Session {
    pub id: i64,
    keeper: tokio::task::JoinHandle<()>,
}

impl Session {
    pub async fn grant(client: &mut Client, ttl_s: u64) -> Result<Session, BoxError> {
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
        Ok(Session { id, keeper })
    }

    pub async fn close(self, client: &mut Client) {
        self.keeper.abort();
        let _ = client.lease_revoke(self.id).await;
    }
}

/// Metric 2: Lock + Unlock with one session's lease, uncontended.
pub async fn lock_uncontended(
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
pub async fn handoff(
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

/// The child process of a crash test: campaigns, prints `LEADER`, keeps its lease alive until
/// it is killed.
pub async fn child_leader(ep: &str, name: &str, ttl_s: u64) -> Result<(), BoxError> {
    let mut c = connect(ep).await?;
    let s = Session::grant(&mut c, ttl_s).await?;
    c.campaign(name, "child", s.id).await?;
    println!("LEADER");
    tokio::time::sleep(Duration::from_secs(3600)).await;
    Ok(())
}

/// One crash sample: a child process wins, a standby campaigns, the child is SIGKILLed at a
/// random phase of its keep-alive cycle; returns the ms from the kill to the standby's win.
async fn crash_once(ep: String, ttl_s: u64, i: usize, phase: Duration) -> Result<f64, BoxError> {
    let name = format!("bench-elect-{ttl_s}-{i}-{}", std::process::id());
    let mut child = tokio::process::Command::new(std::env::current_exe()?)
        .args(["child-etcd-leader", &ep, &name, &ttl_s.to_string()])
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    let out = child.stdout.take().ok_or("no child stdout")?;
    let mut lines = tokio::io::BufReader::new(out).lines();
    let line = tokio::time::timeout(Duration::from_secs(20), lines.next_line()).await??;
    if line.as_deref() != Some("LEADER") {
        return Err(format!("child did not become leader: {line:?}").into());
    }
    let mut c = connect(&ep).await?;
    let s = Session::grant(&mut c, ttl_s).await?;
    let mut c2 = c.clone();
    let lease = s.id;
    let n2 = name.clone();
    let standby = tokio::spawn(async move {
        let r = c2.campaign(n2.as_str(), "standby", lease).await;
        (Instant::now(), r.map(|_| ()))
    });
    tokio::time::sleep(Duration::from_millis(300) + phase).await;
    let killed = Instant::now();
    child.start_kill()?;
    let _ = child.wait().await;
    let (won, r) = tokio::time::timeout(Duration::from_secs(ttl_s * 3 + 10), standby).await??;
    r?;
    s.close(&mut c).await;
    Ok(won.duration_since(killed).as_secs_f64() * 1000.0)
}

/// Metric 4: `samples` crash failovers, run side by side on separate election names.
pub async fn failover_crash(env: &Env, ttl_s: u64, samples: usize) -> Result<Vec<f64>, BoxError> {
    let ep = endpoint(env)?;
    let mut tasks = Vec::new();
    for i in 0..samples {
        // Spread the kill over one keep-alive period (TTL/3).
        let phase = Duration::from_millis(ttl_s * 1000 / 3 * i as u64 / samples as u64);
        tasks.push(tokio::spawn(crash_once(ep.clone(), ttl_s, i, phase)));
    }
    // A sample whose standby never wins in time (seen once after the heavy Lock runs) is
    // dropped and counted, rather than failing the whole metric.
    let mut out = Vec::new();
    let mut failed = Vec::new();
    for t in tasks {
        match t.await.map_err(|e| e.to_string()) {
            Ok(Ok(ms)) => out.push(ms),
            Ok(Err(e)) => failed.push(e.to_string()),
            Err(e) => failed.push(e),
        }
    }
    if !failed.is_empty() {
        eprintln!(
            "etcd crash failover (TTL {ttl_s} s): {} of {samples} samples failed: {}",
            failed.len(),
            failed.join("; ")
        );
    }
    if out.is_empty() {
        return Err(format!("every etcd crash sample failed: {}", failed.join("; ")).into());
    }
    Ok(out)
}

/// Metric 4: two candidates take turns; each sample is resign acknowledged → the waiting
/// candidate's Campaign returns.
pub async fn resign_handoff(env: &Env, n: usize, ttl_s: u64) -> Result<Lat, BoxError> {
    let ep = endpoint(env)?;
    let name = format!("bench-resign-{}", std::process::id());
    let mut cs = Vec::new();
    for _ in 0..2 {
        let mut c = connect(&ep).await?;
        let s = Session::grant(&mut c, ttl_s).await?;
        cs.push((c, s));
    }
    let tracker = Arc::new(Handoff::default());
    let lease0 = cs[0].1.id;
    let mut leader_key = cs[0].0.campaign(name.as_str(), "0", lease0).await?;
    let mut cur = 0usize;
    for _ in 0..n + 5 {
        let other = 1 - cur;
        let mut c2 = cs[other].0.clone();
        let (lease, n2, tr) = (cs[other].1.id, name.clone(), tracker.clone());
        let waiting = tokio::spawn(async move {
            let r = c2.campaign(n2.as_str(), "x", lease).await;
            tr.acquired(Instant::now());
            r
        });
        // Let the standby's campaign register before the leader resigns.
        tokio::time::sleep(Duration::from_millis(30)).await;
        let lk = leader_key
            .leader()
            .ok_or("campaign without leader key")?
            .clone();
        tracker.releasing();
        cs[cur]
            .0
            .resign(Some(ResignOptions::new().with_leader(lk)))
            .await?;
        tracker.released(Instant::now());
        leader_key = tokio::time::timeout(Duration::from_secs(10), waiting).await???;
        cur = other;
    }
    for (mut c, s) in cs {
        s.close(&mut c).await;
    }
    // The first few samples are the warm-up; the tracker keeps all, which barely matters.
    Ok(tracker.lat())
}

/// Metric 5: `readers` watchers over 10 clients, one put at a time from another client.
pub async fn watch_propagation(env: &Env, readers: usize, _puts: usize) -> Result<Lat, BoxError> {
    let ep = endpoint(env)?;
    let key = format!("bench-cfg-{readers}-{}", std::process::id());
    let mut writer = connect(&ep).await?;
    writer
        .put(key.as_str(), crate::m5_config::payload(0).to_vec(), None)
        .await?;
    let mut clients = Vec::new();
    for _ in 0..readers.min(crate::m5_config::CONNECTIONS) {
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
                        .and_then(|kv| crate::m5_config::version_of(kv.value()))
                    {
                        let _ = tx.send((v, t));
                    }
                }
            }
        }));
    }
    let k2 = key.clone();
    let lat = crate::m5_config::drive(env, &mut rx, readers, move |i| {
        let mut w = writer.clone();
        let k = k2.clone();
        async move {
            w.put(k.as_str(), crate::m5_config::payload(i).to_vec(), None)
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
