//! kvtk-core: a bucket, put/get, a compare-and-set conflict, a transaction and a watch.
//!
//! Run with `cargo run -p kvtk-core --example basics`. Uses `NATS_URL` when set, else a
//! throwaway nats-server; the bucket it creates is deleted at the end.

use std::time::Duration;

use futures::StreamExt;
use kvtk_core::{BucketConfig, ErrorKind, Kv, WatchEvent};

type Res<T = ()> = Result<T, Box<dyn std::error::Error>>;

const BUCKET: &str = "example-basics";

#[tokio::main]
async fn main() -> Res {
    let (_server, url) = match std::env::var("NATS_URL") {
        Ok(url) => (None, url),
        Err(_) => {
            let server = kvtk_tests::NatsServer::start().await;
            let url = server.client_url();
            (Some(server), url)
        }
    };
    let kv = Kv::connect(&url).await?;
    let result = tour(&kv).await;
    kv.delete_bucket(BUCKET).await?;
    result
}

async fn tour(kv: &Kv) -> Res {
    let bucket = kv
        .create_or_open(BucketConfig::new(BUCKET).atomic_batches(true))
        .await?;

    let rev = bucket.put("greeting", "hello").await?;
    let entry = bucket.get("greeting").await?.ok_or("greeting is missing")?;
    println!(
        "put greeting at revision {rev}; get reads {:?}",
        std::str::from_utf8(entry.value())?
    );

    // A write expecting a revision that is no longer current is refused, never applied.
    bucket.update("greeting", "hi", rev).await?;
    match bucket.update("greeting", "hey", rev).await {
        Err(e) if e.kind() == ErrorKind::Conflict => {
            println!(
                "a stale update conflicts (the key is at {:?})",
                e.current_revision()
            )
        }
        other => return Err(format!("expected a conflict, got {other:?}").into()),
    }

    // Several keys, all or nothing, in one round trip.
    let mut watch = bucket.watch(["acct.>"]).await?;
    let committed = bucket
        .txn()
        .put("acct.alice", "90")
        .put("acct.bob", "10")
        .commit()
        .await?;
    println!("a transaction wrote {} keys", committed.revisions().len());

    // The watch delivers both entries of the transaction, in order.
    let mut seen = Vec::new();
    while seen.len() < 2 {
        match tokio::time::timeout(Duration::from_secs(5), watch.next()).await? {
            Some(Ok(WatchEvent::Entry(e))) => seen.push(e.key().to_string()),
            Some(Ok(_)) => {}
            Some(Err(e)) => return Err(e.into()),
            None => return Err("the watch ended".into()),
        }
    }
    println!("the watch saw {seen:?}");
    Ok(())
}
