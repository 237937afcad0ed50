//! Metric 2: uncontended lock acquire + release.

use std::time::{Duration, Instant};

use bytes::Bytes;
use kvtk_core::{BucketConfig, Kv};
use kvtk_locks::Locks;

use crate::harness::stats::{Lat, Report, Row};
use crate::harness::{BoxError, Env, Sync};
use crate::systems::jetstream::{raw_headers, raw_write};

pub(crate) const METRIC: &str = "lock_acquire_release";
pub(crate) const TTL_S: u64 = 10;
pub(crate) const FLOOR: &str = "raw JetStream floor (2 writes)";
pub(crate) const TOOLKIT: &str = "toolkit (kvtk-locks)";
pub(crate) const ETCD: &str = "etcd Lock/Unlock";
pub(crate) const REDIS: &str = "redis Redlock (rslock)";

pub(crate) fn sizes(env: &Env) -> (usize, usize) {
    (env.size.pick(500, 5000), env.size.pick(50, 300))
}

pub(crate) async fn run(env: &Env, report: &mut Report) -> Result<(), BoxError> {
    let (n, warm) = sizes(env);
    for sync in [Sync::Default, Sync::Always] {
        env.progress(&format!("metric 2: raw JetStream floor ({})", sync.short()));
        let lat = raw_floor(env, sync, n, warm).await?;
        report.push(Row::new(
            METRIC,
            FLOOR,
            &lat,
            env.nats_config(sync, Some(TTL_S)),
        ));
        env.progress(&format!("metric 2: kvtk-locks ({})", sync.short()));
        let lat = toolkit(env, sync, n, warm).await?;
        report.push(Row::new(
            METRIC,
            TOOLKIT,
            &lat,
            env.nats_config(sync, Some(TTL_S)),
        ));
    }
    #[cfg(feature = "etcd")]
    if env.etcd.is_some() {
        env.progress("metric 2: etcd Lock/Unlock");
        let lat = crate::systems::etcd::lock_uncontended(env, n, warm, TTL_S).await?;
        report.push(Row::new(METRIC, ETCD, &lat, env.etcd_config(Some(TTL_S))));
    }
    #[cfg(feature = "redis")]
    if env.redis.is_some() {
        env.progress("metric 2: redis Redlock");
        let lat = crate::systems::redis::lock_uncontended(env, n, warm, TTL_S).await?;
        report.push(Row::new(METRIC, REDIS, &lat, env.redis_config(Some(TTL_S))));
    }
    Ok(())
}

/// Metric 2: lock + release of one mutex, uncontended, TTL 10 s.
async fn toolkit(env: &Env, sync: Sync, n: usize, warm: usize) -> Result<Lat, BoxError> {
    let kv = Kv::connect(&env.url(sync)).await?;
    let locks = Locks::open(&kv, "bench_locks").await?;
    let m = locks.mutex("uncontended")?;
    let ttl = Duration::from_secs(TTL_S);
    let mut lat = Lat::new();
    for i in 0..warm + n {
        let t0 = Instant::now();
        let g = m.lock().ttl(ttl).await?;
        g.release().await?;
        if i >= warm {
            lat.record(t0.elapsed());
        }
    }
    locks.shutdown().await;
    Ok(lat)
}

/// Lock + unlock as two conditional writes on one key: acquire expects the tombstone left by
/// the previous release (0 on the fresh key) and carries the TTL, release is a delete that
/// expects the acquisition's revision and whose ack gives the next tombstone's revision.
async fn raw_floor(env: &Env, sync: Sync, n: usize, warm: usize) -> Result<Lat, BoxError> {
    let url = env.url(sync);
    let kv = Kv::connect(&url).await?;
    let name = "bench_lock_floor";
    kv.create_or_open(
        BucketConfig::new(name)
            .history(1)
            .per_key_ttl(Duration::from_secs(1)),
    )
    .await?;
    let client = async_nats::connect(&url).await?;
    let subject = format!("$KV.{name}.floor");
    let mut tomb = 0u64;
    let mut lat = Lat::new();
    for i in 0..warm + n {
        let t0 = Instant::now();
        let rev = raw_write(
            &client,
            subject.clone(),
            raw_headers(tomb, Some(TTL_S), false),
            Bytes::from_static(b"holder"),
        )
        .await?;
        tomb = raw_write(
            &client,
            subject.clone(),
            raw_headers(rev, None, true),
            Bytes::new(),
        )
        .await?;
        if i >= warm {
            lat.record(t0.elapsed());
        }
    }
    kv.delete_bucket(name).await?;
    Ok(lat)
}

/// The ratios of metric 2, once every side has run.
pub(crate) fn ratios(report: &mut Report) {
    let p50 = |sys: &str, fsync: &str| {
        report
            .rows
            .iter()
            .find(|r| r.metric == METRIC && r.system == sys && r.config["fsync"] == fsync)
            .map(|r| r.p50_us)
    };
    let ours_d = p50(TOOLKIT, "default");
    let ours_a = p50(TOOLKIT, "sync-always");
    let floor_d = p50(FLOOR, "default");
    let etcd = p50(ETCD, "fsync-every-write");
    let div = |a: Option<f64>, b: Option<f64>| Some(a? / b?);
    report.ratio(
        "lock_vs_floor_p50",
        div(ours_d, floor_d),
        "<=",
        1.15,
        "p50(kvtk-locks lock+release) / p50(raw floor: 2 conditional writes), both on nats default sync, TTL 10 s",
    );
    report.ratio(
        "etcd_lock_vs_ours_p50_default",
        div(etcd, ours_d),
        ">=",
        3.0,
        "p50(etcd Lock+Unlock, fsync every write: etcd's default) / p50(kvtk-locks, nats default periodic sync): each at its default durability",
    );
    report.ratio(
        "etcd_lock_vs_ours_p50_matched",
        div(etcd, ours_a),
        ">=",
        1.2,
        "p50(etcd Lock+Unlock, fsync every write) / p50(kvtk-locks, nats sync_interval: always): both fsync every write",
    );
}
