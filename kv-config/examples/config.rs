//! kvtk-config: a live reload, and a bad update that leaves the running value intact.
//!
//! Run with `cargo run -p kvtk-config --example config`. Uses `NATS_URL` when set, else a
//! throwaway nats-server.

use std::time::Duration;

use futures::StreamExt;
use kvtk_config::{ConfigEvent, ConfigReader, ConfigWriter, Source};
use kvtk_core::{BucketConfig, Kv};
use serde::{Deserialize, Serialize};

#[derive(Debug, Serialize, Deserialize)]
struct App {
    name: String,
    pool_size: u32,
}

fn defaults() -> App {
    App {
        name: "demo".into(),
        pool_size: 4,
    }
}

fn check(a: &App) -> Result<(), String> {
    if !(1..=100).contains(&a.pool_size) {
        return Err(format!("pool_size {} is not in 1..=100", a.pool_size));
    }
    Ok(())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .init();
    // Keep the throwaway server alive until the end of main.
    let (_server, url) = match std::env::var("NATS_URL") {
        Ok(url) => (None, url),
        Err(_) => {
            let s = kvtk_tests::NatsServer::start().await;
            let url = s.client_url();
            (Some(s), url)
        }
    };
    let kv = Kv::connect(&url).await?;
    let bucket = kv
        .create_or_open(BucketConfig::new("example-config").history(10))
        .await?;
    let source = Source::document("demo.app");

    let writer = ConfigWriter::<App>::new(bucket.clone(), source.clone())
        .defaults(defaults())
        .validate(check);
    writer.set(&defaults()).await?;

    let mut reader = ConfigReader::<App>::builder(source.clone())
        .bucket(bucket.clone())
        .defaults(defaults())
        .validate(check)
        .await?;
    let mut events = reader.events();
    println!("running with {:?}", reader.current().value());

    // 1. A live reload.
    writer.update(|c| c.pool_size = 32).await?;
    let snap = tokio::time::timeout(Duration::from_secs(10), reader.changed()).await?;
    println!(
        "reloaded: pool_size = {} at revision {:?}",
        snap.pool_size,
        snap.revision()
    );
    if let Some(ConfigEvent::Changed(c)) = events.next().await {
        println!("  changed fields: {:?}", c.paths);
    }

    // 2. The writer refuses a bad value.
    match writer.update(|c| c.pool_size = 0).await {
        Err(err) => println!("writer refused: {err}"),
        Ok(_) => return Err("the writer accepted an invalid value".into()),
    }

    // 3. A bad value written behind the writer's back is refused by the reader.
    let bad = bucket
        .put("demo.app", r#"{"name":"demo","pool_size":0}"#)
        .await?;
    let ev = tokio::time::timeout(Duration::from_secs(10), events.next()).await?;
    if let Some(ConfigEvent::Rejected(r)) = ev {
        println!("reader rejected revision {bad}: {r}");
    }
    println!(
        "still running with pool_size = {} (revision {:?}); healthy: {}",
        reader.current().pool_size,
        reader.current().revision(),
        reader.health().is_healthy()
    );
    assert_eq!(reader.current().pool_size, 32);
    reader.shutdown().await;
    Ok(())
}
