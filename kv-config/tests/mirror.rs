//! Config readers on a leaf node's mirror of the hub's bucket.

#![allow(clippy::unwrap_used)] // test helpers panic on failure by design

mod common;

use std::time::Duration;

use common::{app, doc, next_event, validate, App};
use kvtk_config::{ConfigEvent, ConfigReader, ConfigWriter, ErrorKind, Source};
use kvtk_core::{Bucket, BucketConfig, Kv, ReadOnlyBucket, Revision};
use kvtk_tests::{within, HubAndLeaf};

/// The origin on the hub, its mirror on the leaf.
async fn mirrored(net: &HubAndLeaf) -> (Bucket, ReadOnlyBucket) {
    let origin = Kv::new(net.hub.connect().await)
        .create_bucket(
            BucketConfig::new("app")
                .history(10)
                .per_key_ttl(Duration::from_secs(60))
                .atomic_batches(true),
        )
        .await
        .unwrap();
    let mirror = Kv::new(net.leaf.connect().await)
        .create_bucket(
            BucketConfig::new("app")
                .history(10)
                .mirror(HubAndLeaf::hub_source("app")),
        )
        .await
        .unwrap();
    (origin, mirror.read_only())
}

/// Waits for the reader's next applied change and returns its revision.
async fn next_change(events: &mut kvtk_config::ConfigEvents<App>) -> Revision {
    match next_event(events).await {
        ConfigEvent::Changed(c) => c.revision.expect("a change from the KV"),
        other => panic!("expected a change, got {other:?}"),
    }
}

#[tokio::test]
async fn a_reader_on_a_leaf_mirror_follows_the_hub_across_link_cuts() {
    let net = HubAndLeaf::start().await;
    let (origin, mirror) = mirrored(&net).await;
    let writer = ConfigWriter::<App>::new(origin, doc()).validate(validate);
    let r1 = writer.set(&app("one", 1)).await.unwrap().revision.unwrap();

    // Defaults: a mirror created just now may not hold the document yet.
    let reader = ConfigReader::<App>::builder(doc())
        .read_only(mirror)
        .defaults(App::default())
        .validate(validate)
        .start()
        .await
        .unwrap();
    let mut events = reader.events();
    // A leaf reader starts from what the mirror holds (the defaults, if it has not copied
    // the document yet), then follows it, with the origin's revisions.
    if reader.revision() != Some(r1) {
        assert_eq!(next_change(&mut events).await, r1);
    }
    assert_eq!(reader.current().value(), &app("one", 1));

    net.link.cut();
    let mut written = Vec::new();
    for i in 2..5 {
        written.push(writer.set(&app("cut", i)).await.unwrap().revision.unwrap());
    }
    // The leaf is alone: its reader keeps the last good value and reports nothing new.
    assert_eq!(reader.revision(), Some(r1));
    assert!(reader.health().is_healthy());
    net.link.heal();
    // The mirror catches up in order; the reader applies newer states only, ending at the
    // hub's last revision with its value (one catch-up burst may fold into one change).
    let mut applied = vec![r1];
    while applied.last() != written.last() {
        let rev = next_change(&mut events).await;
        assert!(
            applied.last() < Some(&rev),
            "revisions only grow: {applied:?} then {rev}"
        );
        assert!(written.contains(&rev), "{rev} is a revision the writer got");
        applied.push(rev);
    }
    assert_eq!(reader.current().value(), &app("cut", 4));

    // A bad value written on the hub is refused on the leaf; the last good one stays.
    let bad = writer
        .bucket()
        .put("app.config", serde_json::to_vec(&app("bad", 0)).unwrap())
        .await
        .unwrap();
    match next_event(&mut events).await {
        ConfigEvent::Rejected(r) => assert_eq!(r.revision(), Some(bad)),
        other => panic!("expected a rejection, got {other:?}"),
    }
    assert_eq!(reader.current().value(), &app("cut", 4));
    assert_eq!(reader.revision(), written.last().copied());
    let fixed = writer
        .set(&app("fixed", 7))
        .await
        .unwrap()
        .revision
        .unwrap();
    assert_eq!(next_change(&mut events).await, fixed);
    within("the reader's shutdown", reader.shutdown()).await;
}

#[tokio::test]
async fn a_mirror_refuses_what_it_cannot_keep() {
    let net = HubAndLeaf::start().await;
    let (_origin, mirror) = mirrored(&net).await;
    // A prefix-mode configuration: transaction boundaries are not mirrored.
    let err = ConfigReader::<App>::builder(Source::prefix("app"))
        .read_only(mirror.clone())
        .start()
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unsupported, "{err}");
    // Acknowledgements need a writable bucket.
    let err = ConfigReader::<App>::builder(doc())
        .read_only(mirror)
        .instance("leaf-1")
        .start()
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{err}");
}
