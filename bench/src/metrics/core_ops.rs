//! Metric 1: kvtk-core operation latency against the same operation through async-nats' KV API.

use std::time::Instant;

use bytes::Bytes;
use kvtk_core::{BucketConfig, Kv, Revision};

use crate::harness::stats::{geomean, Lat, Report, Row};
use crate::harness::{BoxError, Env, Sync};

const OPS: [&str; 5] = ["get", "put", "create", "update", "delete-with-revision"];

pub(crate) async fn run(env: &Env, report: &mut Report) -> Result<(), BoxError> {
    for sync in [Sync::Default, Sync::Always] {
        run_on(env, report, sync).await?;
    }
    // The headline uses the default-durability server: the client overhead is what is compared,
    // and the sync-always rows are there to show it does not depend on the disk.
    let mut ratios = Vec::new();
    let mut worst = ("", 0.0f64);
    for op in OPS {
        let m = format!("kv_op_{op}");
        if let (Some(t), Some(r)) = (
            report.find(&m, "toolkit (kvtk-core)"),
            report.find(&m, "raw async-nats kv"),
        ) {
            if t.config["fsync"] == "default" {
                let x = t.p50_us / r.p50_us;
                ratios.push(x);
                if x > worst.1 {
                    worst = (op, x);
                }
            }
        }
    }
    report.ratio(
        "core_overhead_p50",
        geomean(&ratios),
        "<=",
        1.05,
        format!(
            "geometric mean over get/put/create/update/delete-with-revision of p50(kvtk-core)/p50(async-nats kv), same server (nats default sync), fresh keys for create and delete; worst single op: {} at {:.3}",
            worst.0, worst.1
        ),
    );
    Ok(())
}

async fn run_on(env: &Env, report: &mut Report, sync: Sync) -> Result<(), BoxError> {
    env.progress(&format!(
        "metric 1: kvtk-core vs async-nats kv ({})",
        sync.short()
    ));
    let n = env.size.pick(1500, 10_000);
    let warm = env.size.pick(200, 1000);
    let block = 50;
    let url = env.url(sync);
    let kv = Kv::connect(&url).await?;
    let bucket = kv
        .create_or_open(BucketConfig::new("bench_core").history(1))
        .await?;
    let raw_client = async_nats::connect(&url).await?;
    let js = async_nats::jetstream::new(raw_client);
    let store = js.get_key_value("bench_core").await?;
    let value = Bytes::from(vec![b'x'; 100]);

    bucket.put("g.t", value.clone()).await?;
    store.put("g.r", value.clone()).await?;
    let mut lat_t: Vec<Lat> = (0..OPS.len()).map(|_| Lat::new()).collect();
    let mut lat_r: Vec<Lat> = (0..OPS.len()).map(|_| Lat::new()).collect();
    let mut rev_t = bucket.put("u.t", value.clone()).await?;
    let mut rev_r = store.put("u.r", value.clone()).await?;
    let mut created_t: Vec<(String, Revision)> = Vec::new();
    let mut created_r: Vec<(String, u64)> = Vec::new();
    let mut key_seq = 0u64;

    // Blocks alternate between the two clients (and which goes first) so drift on a busy
    // 2-core machine hits both alike. Every op runs `warm` times unrecorded first.
    let total = warm + n;
    for (i, op) in OPS.iter().enumerate() {
        let mut done = 0;
        let mut flip = false;
        while done < total {
            let this = block.min(total - done);
            for side in [flip, !flip] {
                for j in 0..this {
                    let record = done + j >= warm;
                    let t0 = Instant::now();
                    if side {
                        match *op {
                            "get" => {
                                bucket.get("g.t").await?;
                            }
                            "put" => {
                                bucket.put("p.t", value.clone()).await?;
                            }
                            "create" => {
                                key_seq += 1;
                                let k = format!("c.t.{key_seq}");
                                let r = bucket.create(&k, value.clone()).await?;
                                created_t.push((k, r));
                            }
                            "update" => {
                                rev_t = bucket.update("u.t", value.clone(), rev_t).await?;
                            }
                            _ => {
                                let (k, r) = created_t.pop().ok_or("no created key left")?;
                                bucket.delete(&k).revision(r).await?;
                            }
                        }
                    } else {
                        match *op {
                            "get" => {
                                store.get("g.r").await?;
                            }
                            "put" => {
                                store.put("p.r", value.clone()).await?;
                            }
                            "create" => {
                                key_seq += 1;
                                let k = format!("c.r.{key_seq}");
                                let r = store.create(&k, value.clone()).await?;
                                created_r.push((k, r));
                            }
                            "update" => {
                                rev_r = store.update("u.r", value.clone(), rev_r).await?;
                            }
                            _ => {
                                let (k, r) = created_r.pop().ok_or("no created key left")?;
                                store.delete_expect_revision(&k, Some(r)).await?;
                            }
                        }
                    }
                    if record {
                        let d = t0.elapsed();
                        if side {
                            lat_t[i].record(d);
                        } else {
                            lat_r[i].record(d);
                        }
                    }
                }
            }
            flip = !flip;
            done += this;
        }
    }
    for (i, op) in OPS.iter().enumerate() {
        let cfg = env.nats_config(sync, None);
        let m = format!("kv_op_{op}");
        report.push(Row::new(&m, "toolkit (kvtk-core)", &lat_t[i], cfg.clone()));
        report.push(Row::new(&m, "raw async-nats kv", &lat_r[i], cfg));
    }
    kv.delete_bucket("bench_core").await?;
    Ok(())
}
