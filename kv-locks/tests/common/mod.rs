//! Shared helpers of the kvtk-locks real-server tests (the kit, `kvtk_tests`, has the rest).
#![allow(dead_code)]

use std::future::IntoFuture;
use std::time::Duration;

use kvtk_core::Kv;
use kvtk_locks::Locks;
use kvtk_tests::within;

/// A short lease for tests that need a renewal (and so a loss) to happen soon.
pub(crate) const SHORT_TTL: Duration = Duration::from_secs(2);

/// Locks on `bucket` over `client`, with 2 s request timeouts.
pub(crate) async fn locks_on(client: async_nats::Client, bucket: &str) -> Locks {
    let kv = Kv::new(client).with_timeout(Duration::from_secs(2));
    Locks::open(&kv, bucket).await.expect("open locks")
}

/// As [`locks_on`], the queue entries bound to a session if `bound`.
pub(crate) async fn locks_on_in(client: async_nats::Client, bound: bool, bucket: &str) -> Locks {
    let locks = locks_on(client, bucket).await;
    if bound {
        locks.bind_to_session()
    } else {
        locks
    }
}

/// Messages the connection has published: every JetStream request (write or read) is one,
/// and nothing else the client sends is a message, so this is what went over the wire.
pub(crate) fn sent(client: &async_nats::Client) -> u64 {
    client
        .statistics()
        .out_messages
        .load(std::sync::atomic::Ordering::Relaxed)
}

/// Waits until `locks` has started `n` more watches than `base` (one per waiter that
/// settled in the queue), so that waiters enter the queue in a known order.
pub(crate) async fn waiting(locks: &Locks, base: u64, n: u64) {
    within(
        "waiters to watch",
        locks.stats_handle().wait_for(|s| s.watches >= base + n),
    )
    .await;
}

/// Spawns the acquisition `acq` as a task owned by the returned handle (aborted on drop).
pub(crate) fn spawn_acquire(acq: kvtk_locks::Acquire) -> Acquiring {
    tokio_util::task::AbortOnDropHandle::new(tokio::spawn(acq.into_future()))
}

/// Releases `holder` and checks that `waiter` then takes the lock, with a later token;
/// releases that too.
pub(crate) async fn hands_over_to(holder: kvtk_locks::Guard, waiter: Acquiring) {
    let token = holder.token();
    holder.release().await.expect("the holder's release");
    let g = within("the waiter after the holder", waiter)
        .await
        .expect("the waiter's task")
        .expect("the waiter's acquisition");
    assert!(g.token() > token, "the next holder's token is later");
    g.release().await.expect("the next holder's release");
}

/// An acquisition spawned by [`spawn_acquire`].
pub(crate) type Acquiring =
    tokio_util::task::AbortOnDropHandle<Result<kvtk_locks::Guard, kvtk_locks::Error>>;
