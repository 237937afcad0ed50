//! Shared helpers of the kvtk-config integration tests (the kit, `kvtk_tests`, has the rest).
#![allow(dead_code)]

use std::cell::RefCell;
use std::time::Duration;

use kvtk_config::{ConfigEvent, ConfigEvents, ConfigReader, ConfigWriter, Source, Written};
use kvtk_core::{Bucket, BucketConfig, Kv};
use kvtk_tests::NatsServer;
use serde::{Deserialize, Serialize};

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

/// A reader of [`doc`] in `b` that validates with [`validate`].
pub(crate) async fn validated_reader(b: &Bucket) -> ConfigReader<App> {
    ConfigReader::<App>::builder(doc())
        .bucket(b.clone())
        .validate(validate)
        .await
        .expect("reader starts")
}

pub(crate) fn doc() -> Source {
    Source::document("app.config")
}

pub(crate) fn json(a: &App) -> Vec<u8> {
    serde_json::to_vec(a).expect("encodes")
}

/// The next event, under the timeout.
pub(crate) async fn next_event<T>(events: &mut ConfigEvents<T>) -> ConfigEvent<T> {
    kvtk_tests::next("a config event", events).await
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

/// Writes `value` with `w` once its connection is back (after a server restart the client
/// reconnects by itself), trying again until then, under the timeout.
pub(crate) async fn set_when_back(w: &ConfigWriter<App>, value: &App) -> Written {
    let written = RefCell::new(None);
    kvtk_tests::until("a write after the restart", || async {
        let done = w.set(value).await.ok();
        let back = done.is_some();
        *written.borrow_mut() = done;
        back
    })
    .await;
    written.into_inner().expect("written")
}

/// Polls the consumer count until it is `n`, under the timeout.
pub(crate) async fn wait_consumers(b: &Bucket, n: usize) {
    kvtk_tests::until(&format!("{n} consumers"), || async {
        consumers(b).await == n
    })
    .await;
}
