//! Format versions against a real nats-server: a member whose metadata carries a format
//! version this library does not know (its `Kv-Format` header) is refused (kvtk-core's
//! `ErrorKind::Codec`) by `members()` and the watch, which write nothing; a member this
//! library writes carries version 1, and one without a version is read as version 1.

use futures::StreamExt;
use kvtk_core::format::FormatMark;
use kvtk_core::{Bucket, Kv, Revision};
use kvtk_membership::{Error, ErrorKind, Membership, MembershipEvent};
use kvtk_tests::{within, NatsServer};

async fn membership(server: &NatsServer) -> Membership {
    let kv = Kv::new(kvtk_tests::client::short_timeouts(server.client_url()).await);
    kv.create_or_open(Membership::bucket_config("fmt"))
        .await
        .expect("bucket");
    Membership::open(&kv, "fmt").await.expect("membership")
}

/// Every key of the bucket with its latest revision.
async fn revisions(b: &Bucket) -> Vec<(String, Revision)> {
    b.snapshot(">").await.expect("snapshot").key_revisions()
}

fn refused(e: &Error) {
    assert_eq!(e.kind(), ErrorKind::Kv, "{e}");
    assert_eq!(e.core_kind(), Some(kvtk_core::ErrorKind::Codec), "{e:?}");
}

#[tokio::test]
async fn a_member_of_an_unknown_version_is_refused_and_nothing_is_written() {
    let server = NatsServer::start().await;
    let m = membership(&server).await;
    let b = m.bucket().clone();
    let web = m.group("web").expect("group");
    b.put("web.future", "meta")
        .format(99)
        .await
        .expect("raw put");
    let before = revisions(&b).await;

    refused(&web.members().await.expect_err("refused"));
    let mut watch = web.watch().await.expect("watch");
    let first = within("the watch's first item", watch.next()).await;
    refused(&first.expect("an item").expect_err("refused"));
    assert!(within("the watch's end", watch.next()).await.is_none());
    assert_eq!(revisions(&b).await, before);
}

#[tokio::test]
async fn members_carry_version_1_and_members_without_one_are_read() {
    let server = NatsServer::start().await;
    let m = membership(&server).await;
    let b = m.bucket().clone();
    let web = m.group("web").expect("group");
    let member = web.join("a", "meta-a").await.expect("join");
    let e = b
        .get_from_leader("web.a")
        .await
        .expect("read")
        .expect("member");
    assert_eq!(e.format(), Some(FormatMark::Version(1)));
    b.put("web.old", "meta-old").await.expect("raw put");
    let ids: Vec<String> = web
        .members()
        .await
        .expect("members")
        .iter()
        .map(|i| i.id().to_string())
        .collect();
    assert_eq!(ids, ["a", "old"]);
    let mut watch = web.watch().await.expect("watch");
    let first = within("the watch's first item", watch.next()).await;
    assert!(
        matches!(first, Some(Ok(MembershipEvent::Present(_)))),
        "{first:?}"
    );
    member.leave().await.expect("leave");
}
