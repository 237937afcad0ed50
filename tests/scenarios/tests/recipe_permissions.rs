//! Every recipe runs under exactly the permissions `kvtk_tests::recipes` gives it (the table in
//! docs/deployment.md, checked here too): a candidate leads, an observer observes, a config
//! writer writes, a read-only config reader reads, a member joins and lists — and a step outside
//! the set is refused with `PermissionDenied`.

#![allow(clippy::unwrap_used)] // test helpers panic on failure by design

use std::time::Duration;

use futures::StreamExt as _;
use kvtk_config::{ConfigReader, ConfigWriter, Source};
use kvtk_core::{BucketConfig, Connect, ErrorKind, Kv};
use kvtk_leader::{Election, Observed};
use kvtk_membership::{LeaveReason, Membership, MembershipEvent};
use kvtk_tests::{recipes, within, Account, NatsServer, Permissions};

async fn server_with(user: Permissions) -> NatsServer {
    let account = Account::admin_and_user(user);
    NatsServer::builder().account(account).start().await
}

async fn kv_as(server: &NatsServer, user: &str) -> Kv {
    Connect::new()
        .server(server.client_url_as(user))
        .request_timeout(Duration::from_secs(2))
        .connect()
        .await
        .unwrap()
}

/// Asserts that an error whose kvtk-core kind is `core_kind` is a permission refusal.
fn assert_denied(core_kind: Option<ErrorKind>, err: &dyn std::fmt::Debug) {
    assert_eq!(core_kind, Some(ErrorKind::PermissionDenied), "{err:?}");
}

/// Runs `campaign`, which the server must refuse for lack of permission.
async fn refused(campaign: kvtk_leader::Campaign) {
    let err = within("the refused campaign", campaign).await.unwrap_err();
    assert_denied(err.core_kind(), &err);
}

#[tokio::test]
async fn the_deployment_doc_table_is_the_data() {
    let doc = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../docs/deployment.md"
    ))
    .unwrap();
    let table = recipes::markdown_table();
    assert!(
        doc.contains(&table),
        "docs/deployment.md's table differs from kvtk_tests::recipes; it should read:\n{table}"
    );
}

#[tokio::test]
async fn election_candidate_and_observer() {
    let server = server_with(recipes::election_candidate("el", "sched")).await;
    let admin = kv_as(&server, "admin").await;
    admin
        .create_or_open(Election::bucket_config("el"))
        .await
        .unwrap();
    let kv = kv_as(&server, "user").await;
    let bucket = kv.open("el").await.unwrap();
    let election = Election::new(bucket.clone(), "sched", Duration::from_secs(3)).unwrap();
    let leadership = within("n1's election", election.campaign("n1").value("addr"))
        .await
        .unwrap();
    assert!(election.leader().await.unwrap().is_some());
    let other = Election::new(bucket, "other", Duration::from_secs(3)).unwrap();
    refused(other.campaign("n1")).await;
    drop(server);

    let server = server_with(recipes::election_observer("el", "sched")).await;
    let admin = kv_as(&server, "admin").await;
    let b = admin
        .create_or_open(Election::bucket_config("el"))
        .await
        .unwrap();
    let leader = Election::new(b, "sched", Duration::from_secs(3)).unwrap();
    let _held = leader.campaign("n1").await.unwrap();
    let kv = kv_as(&server, "user").await;
    let bucket = kv.open("el").await.unwrap();
    let election = Election::new(bucket.clone(), "sched", Duration::from_secs(3)).unwrap();
    let mut observer = election.observe().await.unwrap();
    let seen = kvtk_tests::next("the observed leader", &mut observer).await;
    assert!(matches!(seen, Observed::Leader(_)), "{seen:?}");
    let err = bucket.put("sched.leader", "me").await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::PermissionDenied);
    drop(leadership);
}

#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct App {
    size: u32,
}

#[tokio::test]
async fn config_writer_and_read_only_reader() {
    let server = server_with(recipes::config_writer("cfg", "app")).await;
    let admin = kv_as(&server, "admin").await;
    admin
        .create_or_open(BucketConfig::new("cfg").history(5))
        .await
        .unwrap();
    let kv = kv_as(&server, "user").await;
    let bucket = kv.open("cfg").await.unwrap();
    let writer =
        ConfigWriter::<App>::new(bucket.clone(), Source::document("app")).defaults(App { size: 1 });
    writer.update(|a| a.size = 7).await.unwrap();
    let err = bucket.put("other", "{}").await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::PermissionDenied);
    drop(server);

    let server = server_with(recipes::config_reader("cfg", "app")).await;
    let admin = kv_as(&server, "admin").await;
    let b = admin
        .create_or_open(BucketConfig::new("cfg").history(5))
        .await
        .unwrap();
    b.put("app", r#"{"size":3}"#).await.unwrap();
    let kv = kv_as(&server, "user").await;
    let ro = kv.open("cfg").await.unwrap();
    let mut reader = ConfigReader::<App>::builder(Source::document("app"))
        .bucket(ro.clone())
        .await
        .unwrap();
    assert_eq!(reader.current().size, 3);
    b.put("app", r#"{"size":4}"#).await.unwrap();
    let snap = within("the reader's change", reader.changed()).await;
    assert_eq!(snap.size, 4);
    let err = ro.put("app", r#"{"size":5}"#).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::PermissionDenied);
    // A watch beyond its key is refused when its consumer is created.
    let err = ro.watch([">"]).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::PermissionDenied, "{err}");
}

#[tokio::test]
async fn membership_member() {
    let server = server_with(recipes::member("mem", "api")).await;
    let admin = kv_as(&server, "admin").await;
    admin
        .create_or_open(Membership::bucket_config("mem"))
        .await
        .unwrap();
    let kv = kv_as(&server, "user").await;
    let membership = Membership::open(&kv, "mem").await.unwrap();
    let api = membership.group("api").unwrap();
    let me = api
        .join("i-1", "10.0.0.1")
        .ttl(Duration::from_secs(3))
        .await
        .unwrap();
    let members = api.members().await.unwrap();
    assert_eq!(members.len(), 1);
    let mut events = api.watch().await.unwrap();
    kvtk_tests::next("the membership watch's first event", &mut events)
        .await
        .expect("a member may watch its group");
    let err = membership
        .group("web")
        .unwrap()
        .join("i-1", "x")
        .await
        .unwrap_err();
    assert_denied(err.core_kind(), &err);
    me.leave().await.unwrap();
}

/// A bound election in bucket `el` as the server's user, and the same election as the
/// admin (to list its candidates).
async fn bound_election(server: &NatsServer) -> (Election, Election) {
    let admin = kv_as(server, "admin").await;
    let b = admin
        .create_or_open(Election::bucket_config("el"))
        .await
        .unwrap();
    let bucket = kv_as(server, "user").await.open("el").await.unwrap();
    let user = Election::builder(bucket, "sched")
        .ttl(Duration::from_secs(3))
        .bind_to_session()
        .build()
        .unwrap();
    (
        user,
        Election::new(b, "sched", Duration::from_secs(3)).unwrap(),
    )
}

#[tokio::test]
async fn recipes_bound_to_sessions_run_with_the_session_owner_set_added() {
    let user = recipes::bound(recipes::election_candidate("el", "sched"), "el");
    let server = server_with(user).await;
    let (election, admin) = bound_election(&server).await;
    let first = within("n1 to lead", election.campaign("n1")).await.unwrap();
    let second = tokio::spawn(std::future::IntoFuture::into_future(
        election.campaign("n2"),
    ));
    kvtk_tests::until("two candidates", || async {
        admin.candidates().await.unwrap().len() == 2
    })
    .await;
    let again = first.step_down().await;
    let next = within("n2 handed the leadership", second)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(next.id(), "n2");
    next.resign().await.unwrap();
    drop(again);
    drop(server);

    // Without the session set, the bound candidate's session is refused at once.
    let server = server_with(recipes::election_candidate("el", "sched")).await;
    let (election, _) = bound_election(&server).await;
    refused(election.campaign("n1")).await;
    drop(server);

    let server = server_with(recipes::bound(recipes::lock_user("lk", "a"), "lk")).await;
    let admin = kv_as(&server, "admin").await;
    kvtk_locks::Locks::open(&admin, "lk").await.unwrap();
    let kv = kv_as(&server, "user").await;
    let locks = kvtk_locks::Locks::open(&kv, "lk")
        .await
        .unwrap()
        .bind_to_session();
    let guard = within("the bound lock", locks.mutex("a").unwrap().lock())
        .await
        .unwrap();
    guard.release().await.unwrap();
}

/// Group `api` of a membership bound to sessions in bucket `mem` (made by "admin"), as
/// "user" of `server`.
async fn bound_group(server: &NatsServer) -> kvtk_membership::Group {
    let admin = kv_as(server, "admin").await;
    admin
        .create_or_open(Membership::bucket_config("mem"))
        .await
        .unwrap();
    let kv = kv_as(server, "user").await;
    let membership = Membership::open(&kv, "mem").await.unwrap();
    membership.bind_to_session().group("api").unwrap()
}

#[tokio::test]
async fn a_member_bound_to_a_session_runs_with_the_session_owner_set_added() {
    let server = server_with(recipes::bound(recipes::member("mem", "api"), "mem")).await;
    let api = bound_group(&server).await;
    let me = within("the bound join", api.join("i-1", "10.0.0.1"))
        .await
        .unwrap();
    assert!(me.session().is_some());
    me.update("10.0.0.2").await.unwrap();
    let members = api.members().await.unwrap();
    assert_eq!(members.len(), 1);
    assert_eq!(members[0].session(), me.session());
    let mut events = api.watch().await.unwrap();
    for _ in 0..2 {
        // Present(i-1), then InitialDone: the watch follows the session keys too.
        kvtk_tests::next("the membership watch's snapshot", &mut events)
            .await
            .expect("a bound member may watch its group and the sessions");
    }
    me.leave().await.unwrap();
    drop(server);

    // Without the session set, the member's session is refused.
    let server = server_with(recipes::member("mem", "api")).await;
    let api = bound_group(&server).await;
    let err = within("the refused join", api.join("i-1", "x"))
        .await
        .unwrap_err();
    assert_denied(err.core_kind(), &err);
}

/// A member `i-9` of group `api` in bucket `mem`, bound to a session of the admin's that
/// the caller closes (its member then leaves as `Expired`), and the member's entry.
async fn admins_bound_member(
    server: &NatsServer,
) -> (kvtk_core::lease::Session, kvtk_core::lease::Lease) {
    let admin = kv_as(server, "admin").await;
    let bucket = admin
        .create_or_open(Membership::bucket_config("mem"))
        .await
        .unwrap();
    let cfg = kvtk_core::lease::LeaseConfig::new(Duration::from_secs(10)).unwrap();
    let keeper = kvtk_core::lease::Keeper::new(&bucket, cfg).unwrap();
    let session = keeper.session().await.unwrap();
    let bound = session
        .bind("api.i-9", "10.0.0.9")
        .format(kvtk_core::format::RECIPE_FORMAT);
    let member = bound.await.unwrap();
    (session, member)
}

/// Group `api` of bucket `mem` as "user" of `server`, not bound to a session.
async fn users_group(server: &NatsServer) -> kvtk_membership::Group {
    let kv = kv_as(server, "user").await;
    let membership = Membership::open(&kv, "mem").await.unwrap();
    membership.group("api").unwrap()
}

/// An observer of a group with members bound to sessions sees them leave (`Expired`) when
/// their session ends — with the member set and the session set (docs/deployment.md). With
/// the member set alone it may not watch `_session.*`: its watch says so
/// (`PermissionDenied`) and ends, rather than go on listing a dead session's member.
#[tokio::test]
async fn an_observer_of_bound_members_needs_the_session_set_and_is_told_so_without_it() {
    let server = server_with(recipes::bound(recipes::member("mem", "api"), "mem")).await;
    let (session, _member) = admins_bound_member(&server).await;
    let api = users_group(&server).await;
    let mut events = api.watch().await.unwrap();
    let present = kvtk_tests::next("the bound member", &mut events).await;
    assert!(matches!(present, Ok(MembershipEvent::Present(m)) if m.id() == "i-9"));
    let done = kvtk_tests::next("the snapshot's end", &mut events).await;
    assert!(matches!(done, Ok(MembershipEvent::InitialDone)));
    session.close().await.unwrap();
    match kvtk_tests::next("the member's leave", &mut events).await {
        Ok(MembershipEvent::Left { member, reason, .. }) => {
            assert_eq!((member.id(), reason), ("i-9", LeaveReason::Expired));
        }
        other => panic!("expected i-9 to leave, got {other:?}"),
    }
    assert!(api.members().await.unwrap().is_empty());
    drop(server);

    let server = server_with(recipes::member("mem", "api")).await;
    let _bound = admins_bound_member(&server).await;
    let api = users_group(&server).await;
    let mut events = api.watch().await.unwrap();
    let err = kvtk_tests::next("the refused session watch", &mut events)
        .await
        .unwrap_err();
    assert_denied(err.core_kind(), &err);
    let rest: Vec<_> = within("the watch's end", events.collect()).await;
    assert!(rest.iter().all(Result::is_ok), "{rest:?}");
}
