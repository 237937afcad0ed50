//! Shared helpers of the kv-config integration tests.
#![allow(dead_code)]

use std::time::Duration;

use futures::StreamExt;
use kv_config::{ConfigEvent, ConfigEvents, Source};
use kv_core::{Bucket, BucketConfig, Kv};
use kv_tests::NatsServer;
use serde::{Deserialize, Serialize};

/// Generous bound for anything that should happen "soon".
pub(crate) const T: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct App {
    pub name: String,
    pub pool_size: u32,
    #[serde(default)]
    pub db: Db,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Db {
    pub host: String,
    pub port: u16,
}

impl Default for Db {
    fn default() -> Self {
        Db {
            host: "localhost".into(),
            port: 5432,
        }
    }
}

impl Default for App {
    fn default() -> Self {
        App {
            name: "default".into(),
            pool_size: 4,
            db: Db::default(),
        }
    }
}

pub(crate) fn app(name: &str, pool_size: u32) -> App {
    App {
        name: name.into(),
        pool_size,
        db: Db::default(),
    }
}

pub(crate) fn validate(a: &App) -> Result<(), String> {
    if !(1..=100).contains(&a.pool_size) {
        return Err(format!("pool_size {} is not in 1..=100", a.pool_size));
    }
    Ok(())
}

pub(crate) fn bucket_config(name: &str) -> BucketConfig {
    BucketConfig::new(name)
        .history(10)
        .per_key_ttl(Duration::from_secs(1))
        .atomic_batches(true)
}

pub(crate) async fn bucket(server: &NatsServer, name: &str) -> Bucket {
    Kv::new(server.connect().await)
        .create_or_open(bucket_config(name))
        .await
        .expect("bucket")
}

pub(crate) fn doc() -> Source {
    Source::document("app.config")
}

pub(crate) fn json(a: &App) -> Vec<u8> {
    serde_json::to_vec(a).expect("encodes")
}

/// The next event, under the timeout.
pub(crate) async fn next_event<T>(events: &mut ConfigEvents<T>) -> ConfigEvent<T> {
    tokio::time::timeout(T, events.next())
        .await
        .expect("event in time")
        .expect("events not closed")
}

/// The number of consumers on the bucket's stream, fresh from the server
/// (`$JS.API.STREAM.INFO`'s `state.consumer_count`).
pub(crate) async fn consumers(b: &Bucket) -> usize {
    b.status()
        .await
        .expect("stream info")
        .stream_info
        .state
        .consumer_count
}

/// Polls the consumer count until it is `n`, under the timeout.
pub(crate) async fn wait_consumers(b: &Bucket, n: usize) {
    tokio::time::timeout(T, async {
        while consumers(b).await != n {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("consumer count did not reach {n} in time"));
}
