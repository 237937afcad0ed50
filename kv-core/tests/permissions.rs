//! `ErrorKind::PermissionDenied` against a server with per-user permissions: each refused
//! request gets it within the request timeout, concurrent allowed and refused requests are
//! told apart, a refused reply inbox refuses every request, and a `Kv::new` over a client built
//! elsewhere still sees a timeout (as documented).

#![allow(clippy::unwrap_used)] // test helpers panic on failure by design

use std::time::{Duration, Instant};

use kvtk_core::{BucketConfig, Connect, ErrorKind, Kv};
use kvtk_tests::{Account, NatsServer, Permissions};

const TIMEOUT: Duration = Duration::from_secs(2);

/// A server where `user` has `permissions` and bucket `p` exists.
async fn server(permissions: Permissions) -> NatsServer {
    let account = Account::admin_and_user(permissions);
    let server = NatsServer::builder().account(account).start().await;
    connect(&server, "admin")
        .await
        .create_or_open(BucketConfig::new("p"))
        .await
        .unwrap();
    server
}

async fn connect(server: &NatsServer, user: &str) -> Kv {
    Connect::new()
        .server(server.client_url_as(user))
        .request_timeout(TIMEOUT)
        .connect()
        .await
        .unwrap()
}

fn writer_of_ok_keys() -> Permissions {
    Permissions::new()
        .publish_allow(["$JS.API.STREAM.INFO.KV_p", "$KV.p.ok.>"])
        .subscribe_allow(["_INBOX.>"])
}

#[tokio::test]
async fn concurrent_allowed_and_refused_writes_are_told_apart() {
    let server = server(writer_of_ok_keys()).await;
    let bucket = connect(&server, "user").await.open("p").await.unwrap();
    let started = Instant::now();
    let writes = (0..40).map(|i| {
        let b = bucket.clone();
        async move {
            let key = if i % 2 == 0 {
                format!("ok.{i}")
            } else {
                format!("no.{i}")
            };
            (key.clone(), b.put(key.as_str(), "v").await)
        }
    });
    let results = futures::future::join_all(writes).await;
    let took = started.elapsed();
    for (key, res) in results {
        match res {
            Ok(_) => assert!(key.starts_with("ok."), "{key} was written"),
            Err(e) => {
                assert!(key.starts_with("no."), "{key}: {e}");
                assert_eq!(e.kind(), ErrorKind::PermissionDenied, "{key}: {e}");
                assert!(!e.is_transient());
                assert!(e.to_string().contains(&format!("$KV.p.{key}")), "{e}");
                assert!(e.to_string().starts_with("put"), "{e}");
            }
        }
    }
    assert!(took < TIMEOUT, "40 writes took {took:?}");
    println!("20 allowed and 20 refused concurrent puts in {took:?}");
}

#[tokio::test]
async fn a_refused_reply_inbox_refuses_every_request() {
    let no_inbox = Permissions::new()
        .publish_allow(["$JS.API.>", "$KV.p.>"])
        .subscribe_deny([">"]);
    let server = server(no_inbox).await;
    let kv = connect(&server, "user").await;
    let started = Instant::now();
    let e = kv.open("p").await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::PermissionDenied, "{e}");
    assert!(e.to_string().contains("subscribe to \"_INBOX."), "{e}");
    let e = kv.open("p").await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::PermissionDenied, "{e}");
    assert!(
        started.elapsed() < TIMEOUT * 2,
        "took {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn a_kv_over_a_foreign_client_sees_a_timeout() {
    let server = server(writer_of_ok_keys()).await;
    let client =
        async_nats::ConnectOptions::with_user_and_password("user".into(), "user-pw".into())
            .connect(server.client_url())
            .await
            .unwrap();
    let kv = Kv::new(client).with_timeout(Duration::from_millis(500));
    let bucket = kv.open("p").await.unwrap();
    let e = bucket.put("no.x", "v").await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Timeout, "{e}");
}
