//! Shared helpers of the kvtk-leader real-server tests.
#![allow(dead_code)]

use std::time::Duration;

use kvtk_core::{Bucket, Kv};
use kvtk_leader::{Election, Observed, Observer};
use std::cell::RefCell;

use kvtk_tests::until;

/// The request timeout of these tests' clients (fault tests must not wait 5 s per request).
pub(crate) const REQUEST_TIMEOUT: Duration = Duration::from_millis(750);

/// A client with short timeouts, made also while its server or link is down.
pub(crate) async fn client(url: impl async_nats::ToServerAddrs) -> async_nats::Client {
    kvtk_tests::client::options(REQUEST_TIMEOUT)
        .retry_on_initial_connect()
        .connect(url)
        .await
        .expect("connect")
}

/// A bucket fit for elections, over `client`, whose requests time out after
/// [`REQUEST_TIMEOUT`]. Made or opened with the kit's setup timeout: at load 18 a create or
/// open of a bucket took longer than 750 ms with nothing wrong.
pub(crate) async fn bucket(client: async_nats::Client, name: &str) -> Bucket {
    Kv::new(client)
        .with_timeout(kvtk_tests::client::QUORUM_TIMEOUT)
        .create_or_open(Election::bucket_config(name))
        .await
        .expect("bucket")
        .with_timeout(REQUEST_TIMEOUT)
}

/// An election `name` with `ttl` in bucket `bucket` reached through `url`.
pub(crate) async fn election(url: &str, bucket_name: &str, name: &str, ttl: Duration) -> Election {
    let b = bucket(client(url).await, bucket_name).await;
    Election::new(b, name, ttl).expect("election")
}

/// The next observed change.
pub(crate) async fn next(o: &mut Observer) -> Observed {
    kvtk_tests::next("an observed change", o).await
}

/// Skips changes until one for which `pred` holds; returns it.
pub(crate) async fn skip_until(
    o: &mut Observer,
    mut pred: impl FnMut(&Observed) -> bool,
) -> Observed {
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
    pred: impl FnMut(&[String]) -> bool,
) -> Vec<String> {
    let (pred, ids) = (RefCell::new(pred), RefCell::new(Vec::new()));
    until("candidate registrations", || async {
        // This read only observes the test's state; with the tests' 750 ms request timeout
        // it can time out on a loaded machine, which is the next poll's business, not a
        // failure of what is under test (any other error is).
        let now: Vec<String> = match el.candidates().await {
            Ok(list) => list.into_iter().map(|c| c.id).collect(),
            Err(e) if e.is_transient() => return false,
            Err(e) => panic!("candidates: {e}"),
        };
        let holds = (pred.borrow_mut())(&now);
        *ids.borrow_mut() = now;
        holds
    })
    .await;
    ids.into_inner()
}
