//! Metrics for Prometheus: install an exporter, take a lock, run an election term, apply a
//! configuration, and print what a Prometheus scrape would read.
//!
//! Run with `cargo run -p kv-examples --example metrics`. Uses `NATS_URL` when set, else a
//! throwaway nats-server. The toolkit emits through the `metrics` facade only; this example
//! installs `metrics-exporter-prometheus` as the recorder and renders its text format (a
//! service would serve it over HTTP with the exporter's `http-listener` feature, or from its
//! own web framework through `PrometheusHandle::render`). The names and labels are in the
//! workspace's docs/metrics.md table.

use std::time::Duration;

use futures::StreamExt;
use kvtk_config::{ConfigEvent, ConfigReader, ConfigWriter, Source};
use kvtk_core::{BucketConfig, Kv};
use kvtk_leader::Election;
use kvtk_locks::Locks;
use metrics_exporter_prometheus::PrometheusBuilder;
use serde::{Deserialize, Serialize};

#[derive(Debug, Serialize, Deserialize)]
struct App {
    pool_size: u32,
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Before anything emits: the recorder is process-wide.
    let prometheus = PrometheusBuilder::new().install_recorder()?;
    let (_server, url) = match std::env::var("NATS_URL") {
        Ok(url) => (None, url),
        Err(_) => {
            let s = kvtk_tests::NatsServer::start().await;
            let url = s.client_url();
            (Some(s), url)
        }
    };
    let kv = Kv::connect(&url).await?;

    // A lock: wait and hold times.
    let locks = Locks::open(&kv, "example-metrics-locks").await?;
    let guard = locks.mutex("jobs.report")?.lock().await?;
    tokio::time::sleep(Duration::from_millis(50)).await; // the work
    guard.release().await?;

    // An election term: the leader gauge goes to 1, and back to 0 on resign.
    let bucket = kv
        .create_or_open(Election::bucket_config("example-metrics-leader"))
        .await?;
    let election = Election::new(bucket, "scheduler", Duration::from_secs(5))?;
    let leadership = election.campaign("instance-1").await?;
    leadership.resign().await?;

    // A configuration applied, and a bad revision refused.
    let config = kv
        .create_or_open(BucketConfig::new("example-metrics-config").history(5))
        .await?;
    let source = Source::document("app");
    ConfigWriter::<App>::new(config.clone(), source.clone())
        .set(&App { pool_size: 8 })
        .await?;
    let reader = ConfigReader::<App>::builder(source)
        .bucket(config.clone())
        .validate(|a: &App| match a.pool_size {
            0 => Err("pool_size must be positive".to_string()),
            _ => Ok(()),
        })
        .await?;
    let mut events = reader.events();
    config.put("app", r#"{"pool_size":0}"#).await?;
    tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(ev) = events.next().await {
            if let ConfigEvent::Rejected(r) = ev {
                println!("# the reader refused a revision: {r}\n");
                return;
            }
        }
    })
    .await?;

    println!("{}", prometheus.render());

    reader.shutdown().await;
    locks.shutdown().await;
    election.shutdown().await;
    for b in [
        "example-metrics-locks",
        "example-metrics-leader",
        "example-metrics-config",
    ] {
        kv.delete_bucket(b).await?;
    }
    Ok(())
}
