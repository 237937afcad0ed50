//! Leases against a real nats-server: renewal keeps a key alive past its TTL, loss when
//! someone else takes the key, guarded writes, transactions conditional on a lease, and a
//! release whose acknowledgement was lost recognising its own tombstone.

#![allow(clippy::unwrap_used)] // test helpers panic on failure by design

use std::time::Duration;

use kvtk_core::format::FormatMark;
use kvtk_core::lease::{Keeper, LostReason};
use kvtk_core::{Bucket, BucketConfig, ErrorKind, Expect, Kv};
use kvtk_tests::{until, within, NatsServer};

mod common;
use common::{lease_cfg, next_entry, proxied_bucket, with_acks_lost};

fn cfg() -> BucketConfig {
    BucketConfig::new("leases")
        .history(1)
        .per_key_ttl(Duration::from_secs(60))
        .atomic_batches(true)
}

async fn bucket(kv: &Kv) -> Bucket {
    kv.create_or_open(cfg()).await.unwrap()
}

#[tokio::test]
async fn a_format_version_is_carried_by_writes_creates_and_every_write_of_a_lease() {
    let server = NatsServer::start().await;
    let b = bucket(&Kv::new(server.connect().await)).await;
    b.put("plain", "x").format(7).await.unwrap();
    b.create("created", "3").format(1).await.unwrap();
    let e = b.get_from_leader("plain").await.unwrap().unwrap();
    assert_eq!(e.format(), Some(FormatMark::Version(7)));
    assert_eq!(
        kvtk_core::format::check_header(&e, "x").unwrap_err().kind(),
        ErrorKind::Codec
    );
    let e = b.get_from_leader("created").await.unwrap().unwrap();
    assert_eq!(e.format(), Some(FormatMark::Version(1)));
    kvtk_core::format::check_header(&e, "x").unwrap();
    // A lease's renewals keep the header (a member's metadata is versioned by it).
    let keeper = Keeper::new(&b, lease_cfg(1)).unwrap();
    let mut w = b.watch(["m.a"]).await.unwrap();
    let lease = keeper.lease("m.a", "meta").format(1).await.unwrap();
    let created = next_entry(&mut w).await;
    assert_eq!(
        (created.revision(), created.format()),
        (lease.origin(), Some(FormatMark::Version(1)))
    );
    let renewed = next_entry(&mut w).await;
    assert!(renewed.is_value() && renewed.revision() > lease.origin());
    assert_eq!(renewed.format(), Some(FormatMark::Version(1)));
    lease.release().await.unwrap();
}

#[tokio::test]
async fn renewals_keep_the_key_past_its_ttl_and_carry_the_origin() {
    let server = NatsServer::start().await;
    let b = bucket(&Kv::new(server.connect().await)).await;
    let keeper = Keeper::new(&b, lease_cfg(1)).unwrap();
    let lease = keeper.lease("workers.w1", "alive").await.unwrap();
    let origin = lease.origin();
    assert_eq!(lease.revision(), origin);
    // The server's whole-second TTL clock is what is under test: 1 s TTL, 2.5 s of wall time.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert!(lease.is_held());
    let e = b.get_from_leader("workers.w1").await.unwrap().unwrap();
    assert!(e.is_value());
    assert!(e.revision() > origin, "renewed at least once");
    let tag = e.lease().expect("lease tag on the renewal");
    assert_eq!(tag.origin(), origin);
    assert_eq!(tag.nonce(), lease.nonce());
    let r = lease.release().await.unwrap();
    assert!(r.was_held);
    let tomb = b.get_from_leader("workers.w1").await.unwrap().unwrap();
    assert!(!tomb.is_value());
    assert_eq!(Some(tomb.revision()), r.tombstone);
}

#[tokio::test]
async fn a_taken_key_ends_the_lease_and_fences_guarded_writes() {
    let server = NatsServer::start().await;
    let b = bucket(&Kv::new(server.connect().await)).await;
    let keeper = Keeper::new(&b, lease_cfg(3)).unwrap();
    let lease = keeper.lease("lock.a", "me").await.unwrap();
    lease.put_guarded("data.x", "1").await.unwrap();
    let txn_ok = b.txn().put("data.y", "1").if_held(&lease).commit().await;
    assert!(txn_ok.is_ok(), "{txn_ok:?}");

    // An operator's forced removal, conditional on the lease's revision.
    b.delete("lock.a").revision(lease.revision()).await.unwrap();
    let err = lease.put_guarded("data.x", "2").await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::LeaseLost);
    let txn = b.txn().put("data.y", "2").if_held(&lease).commit().await;
    assert_eq!(txn.unwrap_err().kind(), ErrorKind::Conflict);
    // The next renewal conflicts: loss is reported well before the deadline.
    let why = within("the lease's loss", lease.lost()).await;
    assert_eq!(why, LostReason::Taken);
    let r = lease.release().await.unwrap();
    assert!(!r.was_held);
    assert_eq!(
        b.get("data.x").await.unwrap().unwrap().value().as_ref(),
        b"1"
    );
}

#[tokio::test]
async fn create_respects_its_expectation() {
    let server = NatsServer::start().await;
    let b = bucket(&Kv::new(server.connect().await)).await;
    let keeper = Keeper::new(&b, lease_cfg(3)).unwrap();
    let first = keeper
        .lease("leader", "a")
        .expect(Expect::NoMessage)
        .await
        .unwrap();
    let second = keeper.lease("leader", "b").expect(Expect::NoMessage).await;
    assert_eq!(second.unwrap_err().kind(), ErrorKind::Conflict);
    assert!(first.is_held());
    first.set_value("a2").await.unwrap();
    assert_eq!(
        b.get_from_leader("leader")
            .await
            .unwrap()
            .unwrap()
            .value()
            .as_ref(),
        b"a2"
    );
}

#[tokio::test]
async fn a_value_change_whose_ack_was_lost_is_recognised_and_a_refused_one_changes_nothing() {
    let server = NatsServer::start().await;
    let (proxy, b) = proxied_bucket(&server, cfg().max_value_size(1024)).await;
    let keeper = Keeper::new(&b, lease_cfg(3)).unwrap();
    let lease = keeper.lease("member.a", "v1").await.unwrap();
    let direct = bucket(&Kv::new(server.connect().await)).await;
    let value = || async {
        let e = direct.get_from_leader("member.a").await.unwrap().unwrap();
        (e.value().clone(), e.revision())
    };

    // Refused for good: the server's error at once, and the renewals keep the old value.
    let refused = lease.set_value(vec![b'x'; 2048]).await.unwrap_err();
    assert_eq!(refused.kind(), ErrorKind::ValueTooLarge, "{refused}");
    let before = lease.revision();
    until("a renewal after the refused change", || async {
        value().await.1 > before
    })
    .await;
    assert_eq!(value().await.0.as_ref(), b"v1");
    assert!(lease.is_held());

    // Applied after its request timed out: the change tries again, recognises its own write,
    // and answers with its revision.
    let changed = with_acks_lost(&proxy, lease.set_value("v2"), || async {
        value().await.0.as_ref() == b"v2"
    })
    .await
    .unwrap();
    let (now, rev) = value().await;
    assert_eq!(now.as_ref(), b"v2");
    assert!(
        rev >= changed && changed > before,
        "{changed:?} in ({before:?}, {rev:?}]"
    );
    assert!(lease.is_held());
    assert!(lease.release().await.unwrap().was_held);
}

#[tokio::test]
async fn a_release_whose_ack_was_lost_recognises_its_own_tombstone() {
    let server = NatsServer::start().await;
    let (proxy, b) = proxied_bucket(&server, cfg()).await;
    let keeper = Keeper::new(&b, lease_cfg(10)).unwrap();
    let lease = keeper.lease("lock.b", "me").await.unwrap();
    let direct = bucket(&Kv::new(server.connect().await)).await;

    // The delete is applied after its request timed out.
    let r = with_acks_lost(&proxy, lease.release(), || async {
        let e = direct.get_from_leader("lock.b").await.unwrap().unwrap();
        !e.is_value()
    })
    .await
    .unwrap();
    assert!(r.was_held, "the applied delete is ours: {r:?}");
    let tomb = direct.get_from_leader("lock.b").await.unwrap().unwrap();
    assert!(!tomb.is_value());
}

#[tokio::test]
async fn a_creation_whose_ack_was_lost_is_adopted_with_its_origin() {
    let server = NatsServer::start().await;
    let (proxy, b) = proxied_bucket(&server, cfg()).await;
    let keeper = Keeper::new(&b, lease_cfg(10)).unwrap();
    let observer = bucket(&Kv::new(server.connect().await)).await;

    // The creating write is applied after its request timed out: the creation must adopt
    // it, not write a second entry.
    let creation = keeper.lease("queue.me", "v").expect(Expect::NoMessage);
    let lease = with_acks_lost(&proxy, creation, || async {
        let e = observer.get_from_leader("queue.me").await.unwrap();
        e.is_some()
    })
    .await
    .unwrap();
    let e = observer.get_from_leader("queue.me").await.unwrap().unwrap();
    assert_eq!(e.lease().unwrap().nonce(), lease.nonce());
    assert_eq!(lease.origin(), e.lease().unwrap().origin());
    assert!(lease.is_held());
    lease.release().await.unwrap();
}

#[tokio::test]
async fn a_hand_over_replaces_the_key_and_an_orphan_expires() {
    let server = NatsServer::start().await;
    let b = bucket(&Kv::new(server.connect().await)).await;
    let keeper = Keeper::new(&b, lease_cfg(1)).unwrap();

    // A shared release with a hand-over: the key holds the hand-over value, conditional on
    // our revision, with its own TTL; renewals have stopped.
    let lease = keeper.lease("leader", "me").await.unwrap();
    let r = lease
        .release_shared()
        .hand_over("to-b", Duration::from_secs(1))
        .await
        .unwrap();
    assert!(r.was_held && !lease.is_held());
    let e = b.get_from_leader("leader").await.unwrap().unwrap();
    assert_eq!(
        (e.value().as_ref(), Some(e.revision())),
        (&b"to-b"[..], r.tombstone)
    );
    assert_eq!(e.lease().map(|t| t.origin()), Some(lease.origin()));
    let err = lease.put_guarded("data", "x").await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::LeaseLost);

    // An orphaned lease is no longer renewed: the server expires its key.
    let orphan = keeper.lease("worker", "w").await.unwrap();
    orphan.orphan();
    let mut watch = b.watch(["leader", "worker"]).await.unwrap();
    let mut expired = std::collections::BTreeSet::new();
    while expired.len() < 2 {
        let item = kvtk_tests::next("the expiry of both keys", &mut watch).await;
        if let Ok(kvtk_core::WatchEvent::Entry(e)) = item {
            if e.removal() == Some(kvtk_core::Removal::Expired) {
                expired.insert(e.key().as_str().to_string());
            }
        }
    }
    drop(lease);
}

#[tokio::test]
async fn a_lease_due_sooner_than_the_keepers_next_look_is_renewed_in_time() {
    let server = NatsServer::start().await;
    let b = bucket(&Kv::new(server.connect().await)).await;
    // The keeper's first lease is due in 20 s (TTL 60 s, renewed every 20 s), so its task
    // plans to look at new leases then; one due in 0.33 s must wake it sooner.
    let keeper = Keeper::new(&b, lease_cfg(60)).unwrap();
    let slow = keeper.lease("workers.slow", "alive").await.unwrap();
    let fast = keeper
        .lease("workers.fast", "alive")
        .config(lease_cfg(1))
        .await
        .unwrap();
    let origin = fast.origin();
    until("the 1 s lease's first renewal", || async {
        fast.revision() != origin
    })
    .await;
    assert!(fast.is_held(), "renewed before its deadline");
    // The server's whole-second TTL clock is what is under test: past the first TTL.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(fast.is_held());
    assert!(b
        .get_from_leader("workers.fast")
        .await
        .unwrap()
        .unwrap()
        .is_value());
    slow.release().await.unwrap();
    fast.release().await.unwrap();
}
