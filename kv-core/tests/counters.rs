//! Server-side counters whose acknowledgements are lost, against a real nats-server: a re-sent
//! increment is recognised by its message id, never counted twice, and a caller whose
//! increment's fate cannot be learned is told so.

#![allow(clippy::unwrap_used)] // test helpers panic on failure by design

use kvtk_core::{Counters, ErrorKind, Kv};
use kvtk_tests::{client, until, within, FaultProxy, NatsServer};

mod common;
use common::{with_acks_lost, LOST_ACK_LATENCY};

/// The counter set `name` through a fault proxy (short request timeouts), and the same set
/// on a direct client that sees what landed.
async fn proxied_counters(server: &NatsServer, name: &str) -> (FaultProxy, Counters, Counters) {
    let proxy = FaultProxy::start(&server.client_url()).await;
    let proxied = Kv::new(client::short_timeouts(proxy.url()).await);
    let direct = Kv::new(server.connect().await);
    let direct = direct.counters(name).await.unwrap();
    (proxy, proxied.counters(name).await.unwrap(), direct)
}

/// Waits until counter `key` holds at least `n` on the direct client.
async fn landed(direct: &Counters, key: &str, n: i64) -> bool {
    direct.get(key).await.is_ok_and(|v| v >= n)
}

#[tokio::test]
async fn combined_increments_with_lost_acks_count_once_each() {
    let server = NatsServer::start().await;
    let (proxy, counters, direct) = proxied_counters(&server, "lost").await;
    let hits = counters.counter("hits").unwrap();
    let adds = futures::future::join_all((0..8).map(|_| {
        let hits = hits.clone();
        async move { hits.add(1).await }
    }));
    // The first combined write lands and its ack comes after its request timed out: the
    // worker re-sends it with the same message id, and the server does not count it again.
    let results = with_acks_lost(&proxy, adds, || landed(&direct, "hits", 1)).await;
    let mut seen: Vec<i64> = results.into_iter().map(Result::unwrap).collect();
    seen.sort_unstable();
    assert_eq!(seen, (1..=8).collect::<Vec<_>>(), "each caller's own value");
    assert_eq!(direct.get("hits").await.unwrap(), 8);
}

#[tokio::test]
async fn an_increment_cut_off_from_its_ack_is_counted_once() {
    let server = NatsServer::start().await;
    let (proxy, counters, direct) = proxied_counters(&server, "cut").await;
    assert_eq!(counters.add("n", 5).await.unwrap(), 5);
    proxy.set_latency(LOST_ACK_LATENCY);
    let add = tokio::spawn({
        let counters = counters.clone();
        async move { counters.add("n", 1).await }
    });
    until("the increment to land", || landed(&direct, "n", 6)).await;
    // The connection dies with the ack on it; the client reconnects and re-sends.
    proxy.cut();
    until("the proxied connection to close", || async {
        proxy.connections() == 0
    })
    .await;
    proxy.heal();
    let got = within("the re-sent increment", add).await.unwrap();
    assert_eq!(got.unwrap(), 6, "the value right after this increment");
    assert_eq!(direct.get("n").await.unwrap(), 6);
    assert_eq!(counters.add("n", 1).await.unwrap(), 7);
}

#[tokio::test]
async fn an_unlearnable_fate_is_reported_as_unknown() {
    let server = NatsServer::start().await;
    let (proxy, counters, direct) = proxied_counters(&server, "unknown").await;
    // Every re-send ends (by its request timeout) before the first reply could come back.
    let counters = counters.with_resend_timeout(client::REQUEST_TIMEOUT);
    proxy.set_latency(LOST_ACK_LATENCY);
    let e = within("the add to give up", counters.add("n", 1))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::OutcomeUnknown, "{e}");
    assert!(e.outcome_unknown() && !e.is_transient());
    proxy.heal();
    // It was in fact applied, once: exactly what "unknown" warned about.
    until("the increment to land", || landed(&direct, "n", 1)).await;
    assert_eq!(direct.get("n").await.unwrap(), 1, "counted once");
}

#[tokio::test]
async fn a_recovered_increment_whose_value_was_replaced_says_so() {
    let server = NatsServer::start().await;
    let (proxy, counters, direct) = proxied_counters(&server, "replaced").await;
    proxy.set_latency(LOST_ACK_LATENCY);
    let add = tokio::spawn({
        let counters = counters.clone();
        async move { counters.add("n", 1).await }
    });
    until("the increment to land", || landed(&direct, "n", 1)).await;
    // Another writer's increment replaces the stored message before the re-send reads it.
    assert_eq!(direct.add("n", 10).await.unwrap(), 11);
    proxy.heal();
    let e = within("the re-sent increment", add)
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::ValueUnknown, "{e}");
    assert_eq!(direct.get("n").await.unwrap(), 11, "counted once");
}
