//! Config: a prefix-mode document of two fields written together in one transaction; one
//! write in five is invalid. Readers must apply only whole, valid revisions.

use std::time::Duration;

use futures::StreamExt;
use kvtk_config::{ConfigEvent, ConfigReader, Source};
use kvtk_core::{Bucket, Committed};
use kvtk_tests::history::{History, Op};
use rand::Rng;
use serde::{Deserialize, Serialize};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::{bounded, settle};

const PREFIX: &str = "cfg";
const WRITE_EVERY: Duration = Duration::from_millis(20);

/// The configuration: valid when both fields are equal and not negative.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct Cfg {
    a: i64,
    b: i64,
}

impl Cfg {
    fn describe(&self) -> String {
        format!("a={},b={}", self.a, self.b)
    }
}

fn validate(c: &Cfg) -> Result<(), String> {
    if c.a != c.b || c.a < 0 {
        return Err(format!("invalid {}", c.describe()));
    }
    Ok(())
}

/// Writes the first configuration, starts the readers on it (a reader refuses to start on an
/// invalid configuration), then starts the writer.
///
/// # Cancel safety
///
/// Cancelling may leave started readers without their tasks; they stop when dropped.
pub(crate) async fn start(
    tasks: &mut JoinSet<()>,
    writer: Bucket,
    readers: Vec<Bucket>,
    history: &History,
    stop: &CancellationToken,
) {
    write_one(&writer, 0, true, history, stop).await;
    for (i, bucket) in readers.into_iter().enumerate() {
        let client = format!("reader-{i}");
        let start = ConfigReader::<Cfg>::builder(Source::prefix(PREFIX))
            .bucket(bucket)
            .validate(validate)
            .start();
        match bounded(stop, start).await {
            Some(Ok(reader)) => {
                tasks.spawn(read(reader, client, history.clone(), stop.clone()));
            }
            _ => tracing::error!("{client}: reader did not start"),
        }
    }
    tasks.spawn(write(writer, history.clone(), stop.clone()));
}

async fn write(bucket: Bucket, history: History, stop: CancellationToken) {
    let mut n = 1;
    while !stop.is_cancelled() {
        let valid = rand::rng().random_range(0..5) != 0;
        write_one(&bucket, n, valid, &history, &stop).await;
        n += 1;
        tokio::time::sleep(WRITE_EVERY).await;
    }
}

async fn write_one(
    bucket: &Bucket,
    n: i64,
    valid: bool,
    history: &History,
    stop: &CancellationToken,
) {
    let v = if valid { n } else { -n };
    let cfg = Cfg { a: v, b: v };
    let op = history.invoke(
        "config-writer",
        Op::ConfigWrite {
            value: cfg.describe(),
            valid,
        },
    );
    let txn = bucket
        .txn()
        .put(&format!("{PREFIX}.a"), v.to_string())
        .put(&format!("{PREFIX}.b"), v.to_string());
    let out = bounded(stop, txn.commit()).await;
    settle(op, out, |c: &Committed| c.last_revision().map(|r| r.get()));
}

async fn read(
    reader: ConfigReader<Cfg>,
    client: String,
    history: History,
    stop: CancellationToken,
) {
    let mut events = reader.events();
    let first = reader.current();
    let apply = |c: &Cfg, rev: Option<kvtk_core::Revision>| {
        let op = Op::ConfigApply {
            value: c.describe(),
        };
        history.instant(&client, op, rev.map(|r| r.get()));
    };
    apply(first.value(), first.revision());
    loop {
        let event = tokio::select! {
            e = events.next() => e,
            () = stop.cancelled() => break,
        };
        match event {
            Some(ConfigEvent::Changed(c)) => apply(c.new.value(), c.revision),
            Some(_) => {}
            None => break,
        }
    }
    reader.shutdown().await;
}
