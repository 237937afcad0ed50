//! The toolkit side of metric 4: kv-leader elections.

use std::sync::Arc;
use std::time::{Duration, Instant};

use kv_core::Kv;
use kv_leader::Election;
use tokio::io::AsyncBufReadExt;

use crate::common::{BoxError, Env, Sync};
use crate::stats::{Handoff, Lat};

pub const BUCKET: &str = "bench_elect";

async fn election(url: &str, name: &str, ttl_s: u64) -> Result<Election, BoxError> {
    let kv = Kv::connect(url).await?;
    let bucket = kv.create_or_open(Election::bucket_config(BUCKET)).await?;
    Ok(Election::new(bucket, name, Duration::from_secs(ttl_s))?)
}

/// The child process of a crash test: campaigns, prints `LEADER`, leads (renewing in the
/// background) until it is killed.
pub async fn child_leader(url: &str, name: &str, ttl_s: u64) -> Result<(), BoxError> {
    let e = election(url, name, ttl_s).await?;
    let _leadership = e.campaign("child").await?;
    println!("LEADER");
    tokio::time::sleep(Duration::from_secs(3600)).await;
    Ok(())
}

async fn crash_once(url: String, ttl_s: u64, i: usize, phase: Duration) -> Result<f64, BoxError> {
    let name = format!("crash{ttl_s}x{i}");
    let mut child = tokio::process::Command::new(std::env::current_exe()?)
        .args(["child-nats-leader", &url, &name, &ttl_s.to_string()])
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    let out = child.stdout.take().ok_or("no child stdout")?;
    let mut lines = tokio::io::BufReader::new(out).lines();
    let line = tokio::time::timeout(Duration::from_secs(20), lines.next_line()).await??;
    if line.as_deref() != Some("LEADER") {
        return Err(format!("child did not become leader: {line:?}").into());
    }
    let e = election(&url, &name, ttl_s).await?;
    let standby = tokio::spawn(async move {
        let r = e.campaign("standby").await;
        (Instant::now(), r)
    });
    tokio::time::sleep(Duration::from_millis(300) + phase).await;
    let killed = Instant::now();
    child.start_kill()?;
    let _ = child.wait().await;
    let (won, r) = tokio::time::timeout(Duration::from_secs(ttl_s * 3 + 10), standby).await??;
    let leadership = r?;
    let ms = won.duration_since(killed).as_secs_f64() * 1000.0;
    leadership.resign().await?;
    Ok(ms)
}

/// Crash failovers, `samples` side by side on separate elections, killed at phases spread
/// over one renewal period (TTL/3).
pub async fn failover_crash(env: &Env, ttl_s: u64, samples: usize) -> Result<Vec<f64>, BoxError> {
    let url = env.url(Sync::Default);
    let mut tasks = Vec::new();
    for i in 0..samples {
        let phase = Duration::from_millis(ttl_s * 1000 / 3 * i as u64 / samples as u64);
        tasks.push(tokio::spawn(crash_once(url.clone(), ttl_s, i, phase)));
    }
    let mut out = Vec::new();
    for t in tasks {
        out.push(t.await.map_err(|e| e.to_string())??);
    }
    Ok(out)
}

/// Two candidates on separate connections take turns: resign acknowledged → the waiting
/// candidate's campaign returns.
pub async fn resign_handoff(env: &Env, n: usize, ttl_s: u64) -> Result<Lat, BoxError> {
    let url = env.url(Sync::Default);
    let es = [
        election(&url, "resign", ttl_s).await?,
        election(&url, "resign", ttl_s).await?,
    ];
    let tracker = Arc::new(Handoff::default());
    let mut leader = es[0].campaign("c0").await?;
    let mut cur = 0usize;
    for _ in 0..n + 5 {
        let other = 1 - cur;
        let campaign = es[other].campaign(format!("c{other}"));
        let tr = tracker.clone();
        let waiting = tokio::spawn(async move {
            let r = campaign.await;
            tr.acquired(Instant::now());
            r
        });
        // Let the standby start watching before the leader resigns.
        tokio::time::sleep(Duration::from_millis(30)).await;
        tracker.releasing();
        leader.resign().await?;
        tracker.released(Instant::now());
        leader = tokio::time::timeout(Duration::from_secs(10), waiting).await???;
        cur = other;
    }
    leader.resign().await?;
    Ok(tracker.lat())
}
