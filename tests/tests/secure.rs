//! The kit's secured servers: accounts, users, permissions, TLS, tokens, NKeys, domains, leaf
//! nodes and reloads, checked with plain async-nats clients.

use std::time::Duration;

use async_nats::ConnectOptions;
use futures::StreamExt as _;
use kvtk_tests::{
    within_for, Account, LeafRemote, NatsServer, NkeyUser, Permissions, TestPki, User,
    READY_TIMEOUT,
};

/// How long a connection, a message or a permission violation may take here.
const SHORT: Duration = Duration::from_secs(2);

async fn try_connect(
    server: &NatsServer,
    opts: ConnectOptions,
) -> Result<async_nats::Client, String> {
    opts.connection_timeout(SHORT)
        .max_reconnects(Some(1))
        .connect(server.client_url())
        .await
        .map_err(|e| e.to_string())
}

/// Options that report the server's permission violations on a channel.
fn reporting_violations(
    opts: ConnectOptions,
) -> (ConnectOptions, tokio::sync::mpsc::UnboundedReceiver<String>) {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let opts = opts.event_callback(move |e| {
        let tx = tx.clone();
        async move {
            if let async_nats::Event::ServerError(e) = e {
                let _ = tx.send(e.to_string());
            }
        }
    });
    (opts, rx)
}

async fn next_violation(rx: &mut tokio::sync::mpsc::UnboundedReceiver<String>) -> String {
    let find = async {
        loop {
            match rx.recv().await {
                Some(e) if e.contains("Permissions Violation") => return e,
                Some(_) => continue,
                None => panic!("event channel closed"),
            }
        }
    };
    within_for("a permission violation", SHORT, find).await
}

async fn js_works(client: async_nats::Client) -> bool {
    async_nats::jetstream::new(client)
        .query_account()
        .await
        .is_ok()
}

#[tokio::test]
async fn accounts_users_and_permissions() {
    let server = NatsServer::builder()
        .account(
            Account::new("APP")
                .jetstream()
                .user(User::password("admin", "pw-admin"))
                .user(
                    User::password("narrow", "pw-narrow").permissions(
                        Permissions::new()
                            .publish_allow(["allowed.>"])
                            .subscribe_allow(["_INBOX.>", "allowed.>"]),
                    ),
                ),
        )
        .start()
        .await;
    assert!(
        try_connect(&server, ConnectOptions::new()).await.is_err(),
        "anonymous refused"
    );
    let wrong = ConnectOptions::with_user_and_password("admin".into(), "nope".into());
    assert!(
        try_connect(&server, wrong).await.is_err(),
        "wrong password refused"
    );
    let admin = server
        .connect_with(ConnectOptions::with_user_and_password(
            "admin".into(),
            "pw-admin".into(),
        ))
        .await;
    assert!(js_works(admin).await);

    let (opts, mut rx) = reporting_violations(ConnectOptions::with_user_and_password(
        "narrow".into(),
        "pw-narrow".into(),
    ));
    let narrow = server.connect_with(opts).await;
    let mut sub = narrow.subscribe("allowed.x").await.unwrap();
    narrow.publish("allowed.x", "hi".into()).await.unwrap();
    narrow.publish("denied.x", "no".into()).await.unwrap();
    let got = within_for("the allowed message", SHORT, sub.next())
        .await
        .unwrap();
    assert_eq!(&got.payload[..], b"hi");
    let event = next_violation(&mut rx).await;
    assert!(event.contains("denied.x"), "{event}");
}

#[tokio::test]
async fn token_and_nkey_users() {
    let server = NatsServer::builder().token("tok-secret").start().await;
    assert!(try_connect(&server, ConnectOptions::new()).await.is_err());
    let c = server
        .connect_with(ConnectOptions::with_token("tok-secret".into()))
        .await;
    assert!(js_works(c).await);
    assert!(!format!("{:?}", NatsServer::builder().token("tok-secret")).contains("tok-secret"));

    let key = NkeyUser::generate();
    let other = NkeyUser::generate();
    let server = NatsServer::builder().user(key.user()).start().await;
    assert!(
        try_connect(&server, ConnectOptions::with_nkey(other.seed.clone()))
            .await
            .is_err()
    );
    let c = server
        .connect_with(ConnectOptions::with_nkey(key.seed.clone()))
        .await;
    assert!(js_works(c).await);
}

#[tokio::test]
async fn tls_mutual_tls_and_tls_first() {
    let pki = TestPki::generate();
    let server = NatsServer::builder().tls(&pki).start().await;
    let trusted = || ConnectOptions::new().add_root_certificates(pki.ca_file());
    assert!(js_works(server.connect_with(trusted()).await).await);
    let untrusted = ConnectOptions::new().add_root_certificates(pki.unrelated_ca_file());
    assert!(try_connect(&server, untrusted).await.is_err());

    let mutual = NatsServer::builder().tls(&pki).tls_verify().start().await;
    assert!(
        try_connect(&mutual, trusted()).await.is_err(),
        "no client certificate"
    );
    let with_cert = trusted().add_client_certificate(pki.client_cert_file(), pki.client_key_file());
    assert!(js_works(mutual.connect_with(with_cert).await).await);

    let first = NatsServer::builder()
        .tls(&pki)
        .tls_handshake_first()
        .start()
        .await;
    assert!(js_works(first.connect_with(trusted().tls_first()).await).await);
}

#[tokio::test]
async fn leaf_node_reaches_the_hub_domain() {
    let hub = NatsServer::builder()
        .server_name("hub")
        .jetstream_domain("hub")
        .leafnode_listener()
        .start()
        .await;
    let leaf = NatsServer::builder()
        .server_name("leaf")
        .jetstream_domain("leaf")
        .leaf_remote(LeafRemote::new(hub.leafnode_url().unwrap()))
        .start()
        .await;
    leaf.wait_leaf_connected(READY_TIMEOUT).await;
    hub.wait_leaf_connected(READY_TIMEOUT).await;
    let client = leaf.connect().await;
    let hub_info = async_nats::jetstream::with_domain(client.clone(), "hub")
        .query_account()
        .await
        .unwrap();
    let leaf_info = async_nats::jetstream::new(client)
        .query_account()
        .await
        .unwrap();
    assert_eq!(hub_info.domain.as_deref(), Some("hub"));
    assert_eq!(leaf_info.domain.as_deref(), Some("leaf"));
}

#[tokio::test]
async fn reload_changes_permissions_of_live_connections() {
    let user = |allowed: &str| {
        Account::new("APP").jetstream().user(
            User::password("u", "pw").permissions(
                Permissions::new()
                    .publish_allow([allowed])
                    .subscribe_allow(["_INBOX.>", "a", "b"]),
            ),
        )
    };
    let mut server = NatsServer::builder().account(user("a")).start().await;
    let (opts, mut rx) = reporting_violations(ConnectOptions::with_user_and_password(
        "u".into(),
        "pw".into(),
    ));
    let client = server.connect_with(opts).await;
    let mut sub_a = client.subscribe("a").await.unwrap();
    let mut sub_b = client.subscribe("b").await.unwrap();
    client.publish("a", "1".into()).await.unwrap();
    within_for("the message on a", SHORT, sub_a.next()).await;

    server.reload(|b| b.account(user("b"))).await;
    client.publish("b", "2".into()).await.unwrap();
    within_for("the message on b after the reload", SHORT, sub_b.next()).await;
    client.publish("a", "3".into()).await.unwrap();
    let event = next_violation(&mut rx).await;
    assert!(event.contains("Publish to \"a\""), "{event}");
}
