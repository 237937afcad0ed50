//! Metric 5: config propagation, put → the new value visible in every one of 1, 10, 100
//! readers. Each sample is the time from the put's send to the last reader seeing it.

use std::time::Instant;

use futures::StreamExt;
use kvtk_core::{BucketConfig, Kv};
use serde_json::json;
use tokio::sync::mpsc;

use crate::harness::propagation::{drive, payload, version_of, CONNECTIONS};
use crate::harness::stats::{Lat, Report, Row};
use crate::harness::{with, BoxError, Env, Sync};

pub(crate) const METRIC: &str = "config_propagation";
/// The configuration document the readers follow.
pub(crate) const KEY: &str = "app.config";
pub(crate) const READERS: [usize; 3] = [1, 10, 100];
pub(crate) const TOOLKIT: &str = "toolkit (kvtk-config reader)";
pub(crate) const RAW: &str = "raw async-nats watch (1 per reader)";
pub(crate) const ETCD: &str = "etcd watch (1 per reader)";

pub(crate) fn push(
    report: &mut Report,
    system: &str,
    cfg: serde_json::Value,
    readers: usize,
    lat: &Lat,
) {
    let cfg = with(
        cfg,
        json!({ "readers": readers, "connections": readers.min(CONNECTIONS) }),
    );
    report.push(Row::new(METRIC, system, lat, cfg));
}

pub(crate) async fn run(env: &Env, report: &mut Report) -> Result<(), BoxError> {
    let sync = Sync::Default;
    for r in READERS {
        env.progress(&format!("metric 5: kvtk-config readers, {r} readers"));
        let lat = toolkit(env, sync, r).await?;
        push(report, TOOLKIT, env.nats_config(sync, None), r, &lat);
        env.progress(&format!("metric 5: raw async-nats watch, {r} readers"));
        let lat = raw_watch(env, sync, r).await?;
        push(report, RAW, env.nats_config(sync, None), r, &lat);
    }
    #[cfg(feature = "etcd")]
    if env.etcd.is_some() {
        for r in READERS {
            env.progress(&format!("metric 5: etcd watch, {r} readers"));
            let lat = crate::systems::etcd::watch_propagation(
                env,
                r,
                crate::harness::propagation::puts(env),
            )
            .await?;
            push(report, ETCD, env.etcd_config(None), r, &lat);
        }
    }
    Ok(())
}

/// One async-nats KV watch per reader (updates only), readers spread over 10 connections;
/// a reader reports the version number inside the value it saw.
async fn raw_watch(env: &Env, sync: Sync, readers: usize) -> Result<Lat, BoxError> {
    let url = env.url(sync);
    let kv = Kv::connect(&url).await?;
    let name = format!("bench_cfg_raw_{readers}");
    let bucket = kv
        .create_or_open(BucketConfig::new(&name).history(1))
        .await?;
    bucket.put(KEY, payload(0)).await?;
    let mut stores = Vec::new();
    for _ in 0..readers.min(CONNECTIONS) {
        let c = async_nats::connect(&url).await?;
        stores.push(async_nats::jetstream::new(c).get_key_value(&name).await?);
    }
    let (tx, mut rx) = mpsc::unbounded_channel();
    let mut tasks = Vec::new();
    for i in 0..readers {
        let store = stores[i % stores.len()].clone();
        let mut w = store.watch(KEY).await?;
        let tx = tx.clone();
        tasks.push(tokio::spawn(async move {
            while let Some(Ok(e)) = w.next().await {
                let t = Instant::now();
                if let Some(v) = version_of(&e.value) {
                    let _ = tx.send((v, t));
                }
            }
        }));
    }
    let lat = drive(env, &mut rx, readers, |i| {
        let b = bucket.clone();
        async move { b.put(KEY, payload(i)).await.map(|_| ()).map_err(Into::into) }
    })
    .await?;
    for t in tasks {
        t.abort();
    }
    kv.delete_bucket(&name).await?;
    Ok(lat)
}

pub(crate) fn ratios(report: &mut Report) {
    let p99 = |sys: &str, readers: u64| {
        report
            .rows
            .iter()
            .find(|r| r.metric == METRIC && r.system == sys && r.config["readers"] == readers)
            .map(|r| r.p99_us)
    };
    let ours = p99(TOOLKIT, 100);
    let raw = p99(RAW, 100);
    let etcd = p99(ETCD, 100);
    report.ratio(
        "config_p99_us_100",
        ours,
        "<=",
        5000.0,
        "kvtk-config: p99 of put → validated snapshot visible in all 100 readers (10 connections), nats default sync (µs)",
    );
    report.ratio(
        "config_vs_raw_watch_p99",
        (|| Some(ours? / raw?))(),
        "<=",
        1.2,
        "p99(kvtk-config, 100 readers) / p99(raw async-nats watch, 100 watchers on 10 connections), nats default sync",
    );
    report.ratio(
        "etcd_watch_vs_config_p99_100",
        (|| Some(etcd? / ours?))(),
        ">=",
        1.5,
        "p99(etcd watch, 100 watchers on 10 clients, fsync every write) / p99(kvtk-config, 100 readers, nats default sync)",
    );
}

/// The typed configuration the kvtk-config readers decode and validate.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub(crate) struct AppConfig {
    pub version: usize,
    pub pool_size: u32,
    pub timeout_ms: u32,
    pub feature_flags: Vec<String>,
    pub endpoint: String,
}

/// The readers' validator.
pub(crate) fn check(c: &AppConfig) -> Result<(), String> {
    if c.pool_size == 0 {
        return Err("pool_size must be positive".into());
    }
    if !c.endpoint.starts_with("https://") {
        return Err("endpoint must be https".into());
    }
    Ok(())
}

/// kvtk-config readers (typed decode + validation + snapshot swap), spread over 10 connections;
/// each waits on `changed()` and reports the version of the validated snapshot.
pub(crate) async fn toolkit(env: &Env, sync: Sync, readers: usize) -> Result<Lat, BoxError> {
    use kvtk_config::{ConfigReader, Source};
    let url = env.url(sync);
    let kv = Kv::connect(&url).await?;
    let name = format!("bench_cfg_kit_{readers}");
    let bucket = kv
        .create_or_open(BucketConfig::new(&name).history(1))
        .await?;
    bucket.put(KEY, payload(0)).await?;
    let mut buckets = Vec::new();
    for _ in 0..readers.min(CONNECTIONS) {
        buckets.push(Kv::connect(&url).await?.open(&name).await?);
    }
    let (tx, mut rx) = mpsc::unbounded_channel();
    let mut tasks = Vec::new();
    let mut handles = Vec::new();
    for i in 0..readers {
        let mut reader = ConfigReader::<AppConfig>::builder(Source::document(KEY))
            .bucket(buckets[i % buckets.len()].clone())
            .validate(check)
            .start()
            .await?;
        handles.push(reader.clone());
        let tx = tx.clone();
        tasks.push(tokio::spawn(async move {
            loop {
                let snap = reader.changed().await;
                let t = Instant::now();
                if tx.send((snap.version, t)).is_err() {
                    return;
                }
            }
        }));
    }
    let lat = drive(env, &mut rx, readers, |i| {
        let b = bucket.clone();
        async move { b.put(KEY, payload(i)).await.map(|_| ()).map_err(Into::into) }
    })
    .await?;
    for t in tasks {
        t.abort();
    }
    for h in handles {
        h.shutdown().await;
    }
    kv.delete_bucket(&name).await?;
    Ok(lat)
}
