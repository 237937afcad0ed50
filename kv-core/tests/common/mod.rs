//! Shared helpers of the kvtk-core real-server tests (the kit, `kvtk_tests`, has the rest:
//! `T`, `within`, `next`, `until`).
#![allow(dead_code)]

use std::future::{Future, IntoFuture};
use std::time::Duration;

use kvtk_core::lease::LeaseConfig;
use kvtk_core::{Bucket, BucketConfig, Entry, Kv, Watch, WatchEvent};
use kvtk_tests::{client, until, within, FaultProxy, NatsServer};

/// A link this slow loses every acknowledgement: a reply cannot come back before its request
/// timed out (`client::REQUEST_TIMEOUT`), however loaded the machine is.
pub(crate) const LOST_ACK_LATENCY: Duration = client::REQUEST_TIMEOUT.saturating_mul(2);

/// The next event of `w`, within the kit's `T`.
///
/// # Panics
///
/// When no event comes within `T`, the watch ends or reports an error.
pub(crate) async fn next_event(w: &mut Watch) -> WatchEvent {
    kvtk_tests::next("a watch event", w)
        .await
        .expect("watch item ok")
}

/// Runs `fut`, whose writes go through `proxy` on a client with `client::REQUEST_TIMEOUT`,
/// with their acknowledgements lost: the link is slowed past the request timeout, so a write
/// lands but its reply comes after its request timed out, however late `fut` sends it. Once
/// `landed` says the write is in the bucket (read on another client), the link heals and
/// `fut` finishes, recognising its own write.
pub(crate) async fn with_acks_lost<F, L>(
    proxy: &FaultProxy,
    fut: F,
    landed: impl FnMut() -> L,
) -> F::Output
where
    F: IntoFuture,
    L: Future<Output = bool>,
{
    proxy.set_latency(LOST_ACK_LATENCY);
    let heal = async {
        until("the write to land", landed).await;
        proxy.heal();
    };
    within("the writes with their acknowledgements lost", async {
        tokio::join!(fut.into_future(), heal).0
    })
    .await
}

/// The next entry of `w`, skipping the initial-values marker.
///
/// # Panics
///
/// As [`next_event`].
pub(crate) async fn next_entry(w: &mut Watch) -> Entry {
    loop {
        if let WatchEvent::Entry(e) = next_event(w).await {
            return e;
        }
    }
}

/// A bucket `config` behind a fault proxy, with short request timeouts (so a cut or slowed
/// link turns writes into unknown outcomes quickly).
pub(crate) async fn proxied_bucket(
    server: &NatsServer,
    config: BucketConfig,
) -> (FaultProxy, Bucket) {
    let proxy = FaultProxy::start(&server.client_url()).await;
    let kv = Kv::new(client::short_timeouts(proxy.url()).await);
    let b = kv.create_or_open(config).await.expect("bucket");
    (proxy, b)
}

/// A lease of `ttl` whole seconds with the default timing.
pub(crate) fn lease_cfg(ttl: u64) -> LeaseConfig {
    LeaseConfig::new(Duration::from_secs(ttl)).expect("lease config")
}
