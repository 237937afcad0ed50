//! Locks under least-privilege users: the documented permissions of a lock user
//! (`kvtk_tests::recipes::lock_user`) are enough to lock its lock, refuse other locks with
//! `PermissionDenied` within the request timeout, and a revoked holder loses its lock at once
//! with the permission reason while the next waiter takes over.

#![allow(clippy::unwrap_used)] // test helpers panic on failure by design

use std::future::IntoFuture;
use std::time::{Duration, Instant};

use kvtk_core::lease::LostReason;
use kvtk_core::Connect;
use kvtk_locks::{ErrorKind, LeaseConfig, Locks};
use kvtk_tests::{recipes, within, Account, NatsServer, Permissions, User, T};

const BUCKET: &str = "locks";
const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);
fn account(alice: Permissions) -> Account {
    Account::new("APP")
        .jetstream()
        .user(User::named("admin"))
        .user(User::named("alice").permissions(alice))
        .user(User::named("bob").permissions(recipes::lock_user(BUCKET, "a")))
}

async fn locks_as(server: &NatsServer, user: &str) -> Locks {
    let kv = Connect::new()
        .server(server.client_url_as(user))
        .request_timeout(REQUEST_TIMEOUT)
        .connect()
        .await
        .unwrap();
    let lease = LeaseConfig::new(Duration::from_secs(3)).unwrap();
    Locks::open(&kv, BUCKET)
        .await
        .unwrap()
        .lease(lease)
        .unwrap()
}

#[tokio::test]
async fn a_lock_user_locks_its_lock_and_is_refused_others_at_once() {
    let server = NatsServer::builder()
        .account(account(recipes::lock_user(BUCKET, "a")))
        .start()
        .await;
    let admin = locks_as(&server, "admin").await;
    let alice = locks_as(&server, "alice").await;

    let guard = alice.mutex("a").unwrap().lock().await.unwrap();
    guard.release().await.unwrap();

    let started = Instant::now();
    let err = alice
        .mutex("b")
        .unwrap()
        .lock()
        .timeout(T)
        .await
        .unwrap_err();
    let took = started.elapsed();
    assert_eq!(err.kind(), ErrorKind::PermissionDenied, "{err:?}");
    assert!(took < REQUEST_TIMEOUT, "refused after {took:?}");
    let core = std::error::Error::source(&err).unwrap().to_string();
    assert!(core.contains("$KV.locks.b."), "{core}");
    println!("lock b refused after {took:?}: {core}");

    // Someone else's queue entry of another lock: alice cannot delete it.
    let held = admin.mutex("b").unwrap().lock().await.unwrap();
    let info = admin.inspect("b").await.unwrap();
    let key = info.holders[0].key.clone();
    let err = alice.bucket().delete(key.as_str()).await.unwrap_err();
    assert_eq!(err.kind(), kvtk_core::ErrorKind::PermissionDenied, "{err}");
    assert!(held.is_held());
    held.release().await.unwrap();
}

#[tokio::test]
async fn a_revoked_holder_loses_at_once_and_the_next_waiter_takes_over() {
    let mut server = NatsServer::builder()
        .account(account(recipes::lock_user(BUCKET, "a")))
        .start()
        .await;
    let _admin = locks_as(&server, "admin").await; // creates the bucket
    let alice = locks_as(&server, "alice").await;
    let bob = locks_as(&server, "bob").await;
    let guard = alice.mutex("a").unwrap().lock().await.unwrap();
    let waiter = tokio::spawn({
        let m = bob.mutex("a").unwrap();
        async move { m.lock().timeout(T).await }
    });

    // Alice may now only read: every renewal of her queue entry is refused.
    let read_only = Permissions::new()
        .publish_allow(recipes::lock_user(BUCKET, "a").publish.allow)
        .publish_deny([format!("$KV.{BUCKET}.>")])
        .subscribe_allow(["_INBOX.>"]);
    let revoked = Instant::now();
    server.reload(|b| b.account(account(read_only))).await;
    let why = within("the revoked holder's loss", guard.lost()).await;
    let lost_after = revoked.elapsed();
    assert_eq!(why, LostReason::Permission);
    // Renewals run every TTL/3 (1 s): the loss comes at the next one, not at the deadline.
    assert!(
        lost_after < Duration::from_secs(2),
        "lost after {lost_after:?}"
    );

    let next = within("the next holder", waiter).await.unwrap().unwrap();
    let took_over = revoked.elapsed();
    assert!(next.is_held());
    println!("permission loss after {lost_after:?}, next holder after {took_over:?}");
    next.release().await.unwrap();
}

/// With owner ids and the "lock owner" permissions, a user can queue for and take its lock
/// but cannot remove or overwrite another user's place in the queue.
#[tokio::test]
async fn an_owner_cannot_touch_another_owners_queue_entry() {
    let server = NatsServer::builder()
        .account(
            Account::new("APP")
                .jetstream()
                .user(User::password("admin", "admin-pw"))
                .user(
                    User::password("alice", "alice-pw")
                        .permissions(recipes::lock_owner(BUCKET, "a", "alice")),
                )
                .user(
                    User::password("bob", "bob-pw")
                        .permissions(recipes::lock_owner(BUCKET, "a", "bob")),
                ),
        )
        .start()
        .await;
    let _admin = locks_as(&server, "admin").await; // creates the bucket
    let alice = locks_as(&server, "alice").await.owner("alice").unwrap();
    let bob = locks_as(&server, "bob").await.owner("bob").unwrap();

    let held = bob.mutex("a").unwrap().lock().await.unwrap();
    let key = "a._q.bob".to_string();
    assert_eq!(bob.inspect("a").await.unwrap().holders[0].key, key);
    for attempt in [
        alice.bucket().delete(key.as_str()).into_future(),
        alice.bucket().purge(key.as_str()).into_future(),
        alice.bucket().put(key.as_str(), "forged").into_future(),
    ] {
        let err = attempt.await.unwrap_err();
        assert_eq!(err.kind(), kvtk_core::ErrorKind::PermissionDenied, "{err}");
    }
    assert!(held.is_held());

    // Alice waits in line on her own key and gets the lock after Bob.
    let waiter = tokio::spawn({
        let m = alice.mutex("a").unwrap();
        async move { m.lock().timeout(T).await }
    });
    let bob_token = held.token();
    held.release().await.unwrap();
    let next = within("alice's turn", waiter).await.unwrap().unwrap();
    assert!(next.token() > bob_token);
    assert_eq!(
        alice.inspect("a").await.unwrap().holders[0].key,
        "a._q.alice"
    );
    next.release().await.unwrap();
}
