//! Metric 4: leader failover after a crash (the leader's process is SIGKILLed) with lease TTLs
//! of 2 s and 5 s, and hand-off on a graceful resign.

use std::time::{Duration, Instant};

use kvtk_core::Kv;
use kvtk_leader::Election;
use serde_json::json;

use crate::harness::child::{self, Cleanup};
use crate::harness::stats::{median, Lat, Report, Row};
use crate::harness::{BoxError, Env, Sync};

pub(crate) const CRASH: &str = "leader_failover_crash";
pub(crate) const RESIGN: &str = "leader_resign_handoff";
pub(crate) const TOOLKIT: &str = "toolkit (kvtk-leader)";
pub(crate) const ETCD: &str = "etcd election (Campaign/Resign)";
pub(crate) const TTLS: [u64; 2] = [2, 5];
/// The child role of a kvtk-leader leader that gets SIGKILLed.
pub(crate) const CHILD: &str = "nats-leader";
const BUCKET: &str = "bench_elect";

async fn election(url: &str, name: &str, ttl_s: u64) -> Result<Election, BoxError> {
    let kv = Kv::connect(url).await?;
    let bucket = kv.create_or_open(Election::bucket_config(BUCKET)).await?;
    Ok(Election::new(bucket, name, Duration::from_secs(ttl_s))?)
}

/// The child of a crash sample: wins, then leads (renewing in the background) until killed.
pub(crate) async fn lead(url: &str, name: &str, ttl_s: u64) -> Result<(), BoxError> {
    let e = election(url, name, ttl_s).await?;
    let _leadership = e.campaign("child").await?;
    child::ready_until_killed().await
}

async fn failover_crash(env: &Env, ttl_s: u64) -> Result<Vec<f64>, BoxError> {
    let url = env.url(Sync::Default);
    child::crash_failovers(CHILD, &url, ttl_s, samples(env), |name| {
        let url = url.clone();
        async move {
            let leadership = election(&url, &name, ttl_s)
                .await?
                .campaign("standby")
                .await?;
            Ok(Box::pin(async move {
                let _ = leadership.resign().await;
            }) as Cleanup)
        }
    })
    .await
}

pub(crate) fn samples(env: &Env) -> usize {
    env.size.pick(3, 8)
}

/// Failover times in ms → a row (µs histogram) plus the median excess over the TTL.
pub(crate) fn push_crash(
    report: &mut Report,
    system: &str,
    cfg: serde_json::Value,
    ttl_s: u64,
    failovers_ms: &[f64],
) {
    let mut lat = Lat::new();
    for f in failovers_ms {
        lat.record_us((f * 1000.0) as u64);
    }
    let mut v = failovers_ms.to_vec();
    let med = median(&mut v);
    report.push(Row::new(CRASH, system, &lat, cfg).extra(json!({
        "median_failover_ms": med,
        "median_excess_over_ttl_ms": med.map(|m| m - ttl_s as f64 * 1000.0),
        "samples_ms": failovers_ms,
    })));
}

pub(crate) async fn run(env: &Env, report: &mut Report) -> Result<(), BoxError> {
    let sync = Sync::Default;
    // Toolkit and etcd crash samples could share the wall clock; they run one after the
    // other so neither steals the other's CPU at the moment that is measured.
    for ttl in TTLS {
        env.progress(&format!(
            "metric 4: kvtk-leader crash failover, TTL {ttl} s"
        ));
        let f = failover_crash(env, ttl).await?;
        push_crash(report, TOOLKIT, env.nats_config(sync, Some(ttl)), ttl, &f);
    }
    env.progress("metric 4: kvtk-leader resign hand-off");
    let lat = resign_handoff(env, env.size.pick(40, 200), 10).await?;
    report.push(Row::new(
        RESIGN,
        TOOLKIT,
        &lat,
        env.nats_config(sync, Some(10)),
    ));
    #[cfg(feature = "etcd")]
    if env.etcd.is_some() {
        for ttl in TTLS {
            env.progress(&format!("metric 4: etcd crash failover, lease TTL {ttl} s"));
            let f = crate::systems::etcd::failover_crash(env, ttl, samples(env)).await?;
            push_crash(
                report,
                ETCD,
                crate::harness::with(env.etcd_config(Some(ttl)), json!({"ttl_s": ttl})),
                ttl,
                &f,
            );
        }
        env.progress("metric 4: etcd resign hand-off");
        let lat = crate::systems::etcd::resign_handoff(env, env.size.pick(40, 200), 10).await?;
        report.push(Row::new(RESIGN, ETCD, &lat, env.etcd_config(Some(10))));
    }
    Ok(())
}

/// Resign hand-offs that open each run and are not recorded (connections and watches warm up).
pub(crate) const RESIGN_WARM: usize = 5;

/// Two candidates on separate connections take turns. A sample runs from the start of the
/// leader's resign call to the waiting candidate's campaign returning: a start both sides
/// share, as the standby is often elected before the resign's acknowledgement is back.
pub(crate) async fn resign_handoff(env: &Env, n: usize, ttl_s: u64) -> Result<Lat, BoxError> {
    let url = env.url(Sync::Default);
    let es = [
        election(&url, "resign", ttl_s).await?,
        election(&url, "resign", ttl_s).await?,
    ];
    let mut lat = Lat::new();
    let mut leader = es[0].campaign("c0").await?;
    let mut cur = 0usize;
    for i in 0..n + RESIGN_WARM {
        let other = 1 - cur;
        let campaign = es[other].campaign(format!("c{other}"));
        let waiting = tokio::spawn(async move { (campaign.await, Instant::now()) });
        // Let the standby start watching before the leader resigns.
        tokio::time::sleep(Duration::from_millis(30)).await;
        let start = Instant::now();
        leader.resign().await?;
        let (won, at) = tokio::time::timeout(Duration::from_secs(10), waiting).await??;
        leader = won?;
        if i >= RESIGN_WARM {
            lat.record(at.saturating_duration_since(start));
        }
        cur = other;
    }
    leader.resign().await?;
    Ok(lat)
}

pub(crate) fn ratios(report: &mut Report) {
    let mut excess = Vec::new();
    for r in report
        .rows
        .iter()
        .filter(|r| r.metric == CRASH && r.system == TOOLKIT)
    {
        if let Some(x) = r.extra["median_excess_over_ttl_ms"].as_f64() {
            excess.push(x);
        }
    }
    let worst = excess.iter().copied().reduce(f64::max);
    report.ratio(
        "failover_crash_excess_ms",
        worst,
        "<=",
        250.0,
        "kvtk-leader: median(time from SIGKILL of the leader's process to a standby's election) − TTL, worst of TTL 2 s and 5 s; nats default sync",
    );
    let p99 = report.find(RESIGN, TOOLKIT).map(|r| r.p99_us);
    report.ratio(
        "resign_handoff_p99_us",
        p99,
        "<=",
        2000.0,
        "kvtk-leader: p99 of the resign call's start → standby elected (a start both sides share), nats default sync (µs)",
    );
}
