//! Metric 4: leader failover after a crash (the leader's process is SIGKILLed) with lease TTLs
//! of 2 s and 5 s, and hand-off on a graceful resign.

use crate::common::{BoxError, Env};
use crate::stats::{median, Lat, Report, Row};
use serde_json::json;

pub const CRASH: &str = "leader_failover_crash";
pub const RESIGN: &str = "leader_resign_handoff";
pub const TOOLKIT: &str = "toolkit (kv-leader)";
pub const ETCD: &str = "etcd election (Campaign/Resign)";
pub const TTLS: [u64; 2] = [2, 5];

pub fn samples(env: &Env) -> usize {
    env.size.pick(3, 8)
}

/// Failover times in ms → a row (µs histogram) plus the median excess over the TTL.
pub fn push_crash(
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

pub async fn run(env: &Env, report: &mut Report) -> Result<(), BoxError> {
    let sync = crate::common::Sync::Default;
    // Toolkit and etcd crash samples could share the wall clock; they run one after the
    // other so neither steals the other's CPU at the moment that is measured.
    for ttl in TTLS {
        env.progress(&format!("metric 4: kv-leader crash failover, TTL {ttl} s"));
        let f = crate::leader::failover_crash(env, ttl, samples(env)).await?;
        push_crash(report, TOOLKIT, env.nats_config(sync, Some(ttl)), ttl, &f);
    }
    env.progress("metric 4: kv-leader resign hand-off");
    let lat = crate::leader::resign_handoff(env, env.size.pick(40, 200), 10).await?;
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
            let f = crate::etcd::failover_crash(env, ttl, samples(env)).await?;
            push_crash(
                report,
                ETCD,
                crate::common::with(env.etcd_config(Some(ttl)), json!({"ttl_s": ttl})),
                ttl,
                &f,
            );
        }
        env.progress("metric 4: etcd resign hand-off");
        let lat = crate::etcd::resign_handoff(env, env.size.pick(40, 200), 10).await?;
        report.push(Row::new(RESIGN, ETCD, &lat, env.etcd_config(Some(10))));
    }
    let _ = (env, &report);
    Ok(())
}

pub fn ratios(report: &mut Report) {
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
        "kv-leader: median(time from SIGKILL of the leader's process to a standby's election) − TTL, worst of TTL 2 s and 5 s; nats default sync",
    );
    let p99 = report.find(RESIGN, TOOLKIT).map(|r| r.p99_us);
    report.ratio(
        "resign_handoff_p99_us",
        p99,
        "<=",
        20000.0,
        "kv-leader: p99 of resign acknowledged → standby elected, nats default sync (µs)",
    );
}
