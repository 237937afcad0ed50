//! Shared helpers of the kv-leader real-server tests.
#![allow(dead_code)]

use std::future::IntoFuture;
use std::time::Duration;

use futures::StreamExt;
use kv_core::{Bucket, Kv};
use kv_leader::{Election, Observed, Observer};

/// Upper bound for any wait on an event.
pub(crate) const T: Duration = Duration::from_secs(20);

/// A client with short request timeouts (fault tests must not wait 5 s per request).
pub(crate) async fn client(url: impl async_nats::ToServerAddrs) -> async_nats::Client {
    async_nats::ConnectOptions::new()
        .request_timeout(Some(Duration::from_millis(750)))
        .connection_timeout(Duration::from_secs(1))
        .retry_on_initial_connect()
        .connect(url)
        .await
        .expect("connect")
}

/// A bucket fit for elections, over `client`.
pub(crate) async fn bucket(client: async_nats::Client, name: &str) -> Bucket {
    Kv::new(client)
        .with_timeout(Duration::from_millis(750))
        .create_or_open(Election::bucket_config(name))
        .await
        .expect("bucket")
}

/// An election `name` with `ttl` in bucket `bucket` reached through `url`.
pub(crate) async fn election(url: &str, bucket_name: &str, name: &str, ttl: Duration) -> Election {
    let b = bucket(client(url).await, bucket_name).await;
    Election::new(b, name, ttl).expect("election")
}

/// Awaits `f` for at most [`T`].
pub(crate) async fn within<F: IntoFuture>(what: &str, f: F) -> F::Output {
    tokio::time::timeout(T, f.into_future())
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
}

/// The next observed change.
pub(crate) async fn next(o: &mut Observer) -> Observed {
    within("an observed change", o.next())
        .await
        .expect("observer ended")
}

/// Skips changes until `pred` holds.
pub(crate) async fn until(o: &mut Observer, mut pred: impl FnMut(&Observed) -> bool) -> Observed {
    loop {
        let ev = next(o).await;
        if pred(&ev) {
            return ev;
        }
    }
}

/// Percentile of sorted durations.
pub(crate) fn pct(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

/// Waits until the registered candidates' ids satisfy `pred`; returns them.
pub(crate) async fn candidates_until(
    el: &Election,
    mut pred: impl FnMut(&[String]) -> bool,
) -> Vec<String> {
    within("candidate registrations", async {
        loop {
            let ids: Vec<String> = el
                .candidates()
                .await
                .expect("candidates")
                .into_iter()
                .map(|c| c.id)
                .collect();
            if pred(&ids) {
                return ids;
            }
            tokio::task::yield_now().await;
        }
    })
    .await
}
