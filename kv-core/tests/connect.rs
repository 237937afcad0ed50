//! `Connect` against servers that require each connection method: it works with the right
//! credentials, fails clearly without them, honours credentials embedded in URLs, reads `nats`
//! CLI contexts, and never shows a secret in an error's Display or Debug.

#![allow(clippy::unwrap_used)] // test helpers panic on failure by design

use std::error::Error as _;
use std::time::Duration;

use kvtk_core::{BucketConfig, Connect, ErrorKind, Kv};
use kvtk_tests::{Account, NatsServer, NkeyUser, TestOperator, TestPki, User};

const PASSWORD: &str = "pw-Zq81x";
const TOKEN: &str = "tok-Hq72y";

/// Every text an error shows, through its whole source chain, in Display and Debug.
fn all_text(e: &kvtk_core::Error) -> String {
    let mut out = format!("{e}\n{e:?}\n");
    let mut cur: Option<&dyn std::error::Error> = e.source();
    while let Some(c) = cur {
        out.push_str(&format!("{c}\n{c:?}\n"));
        cur = c.source();
    }
    out
}

fn assert_no_secret(e: &kvtk_core::Error, secrets: &[&str]) {
    let text = all_text(e);
    for s in secrets {
        assert!(!text.contains(s), "secret {s:?} shown in: {text}");
    }
}

/// The connection works: a bucket can be created and written.
async fn works(kv: Kv) {
    let b = kv.create_or_open(BucketConfig::new("conn")).await.unwrap();
    b.put("k", "v").await.unwrap();
    assert_eq!(b.get("k").await.unwrap().unwrap().value(), "v".as_bytes());
}

/// Connects with `c` and checks that the connection works.
async fn connects(c: Connect) {
    works(c.connect().await.unwrap()).await;
}

/// Connects with `c`, which must fail; the error.
async fn fails(c: Connect) -> kvtk_core::Error {
    c.connect().await.unwrap_err()
}

/// Connects with `c`, whose credentials the server must refuse, never showing `secrets`.
async fn refused(c: Connect, secrets: &[&str]) {
    let e = fails(c).await;
    assert!(e.to_string().contains("refused the credentials"), "{e}");
    assert_no_secret(&e, secrets);
}

fn quick() -> Connect {
    Connect::new().options(|o| o.connection_timeout(Duration::from_secs(2)))
}

async fn password_server() -> NatsServer {
    NatsServer::builder()
        .account(
            Account::new("APP")
                .jetstream()
                .user(User::password("app", PASSWORD)),
        )
        .start()
        .await
}

#[tokio::test]
async fn user_and_password() {
    let server = password_server().await;
    let url = server.client_url();
    connects(quick().server(&url).user_password("app", PASSWORD)).await;

    let e = fails(quick().server(&url)).await;
    assert_eq!(e.kind(), ErrorKind::Connection);
    assert!(e.to_string().contains("refused the credentials"), "{e}");
    refused(
        quick().server(&url).user_password("app", "wrong-Pw"),
        &["wrong-Pw"],
    )
    .await;
}

#[tokio::test]
async fn credentials_in_the_url_are_used_never_dropped_or_shown() {
    let server = password_server().await;
    let port = server.port();
    let with = |pass: &str| format!("nats://app:{pass}@127.0.0.1:{port}");
    works(Kv::connect(&with(PASSWORD)).await.unwrap()).await;

    let e = Kv::connect(&with("wrong-Pw")).await.unwrap_err();
    assert!(e.to_string().contains("refused the credentials"), "{e}");
    assert_no_secret(&e, &["wrong-Pw"]);

    // In a URL and as an option: refused, not silently resolved either way.
    let e = fails(quick().server(with(PASSWORD)).token(TOKEN)).await;
    assert_eq!(e.kind(), ErrorKind::InvalidArgument);
    assert_no_secret(&e, &[PASSWORD, TOKEN]);

    let token_server = NatsServer::builder().token(TOKEN).start().await;
    let url = format!("nats://{TOKEN}@127.0.0.1:{}", token_server.port());
    works(Kv::connect(&url).await.unwrap()).await;
}

#[tokio::test]
async fn token() {
    let server = NatsServer::builder().token(TOKEN).start().await;
    connects(quick().server(server.client_url()).token(TOKEN)).await;
    refused(
        quick().server(server.client_url()).token("tok-Wrong"),
        &["tok-Wrong"],
    )
    .await;
}

#[tokio::test]
async fn nkey_seed_and_nkey_file() {
    let key = NkeyUser::generate();
    let stranger = NkeyUser::generate();
    let server = NatsServer::builder()
        .account(Account::new("APP").jetstream().user(key.user()))
        .start()
        .await;
    let url = server.client_url();
    connects(quick().server(&url).nkey_seed(&key.seed)).await;

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("user.nk");
    std::fs::write(&file, format!("{}\n", key.seed)).unwrap();
    connects(quick().server(&url).nkey_file(&file)).await;

    refused(
        quick().server(&url).nkey_seed(&stranger.seed),
        &[&stranger.seed],
    )
    .await;
    let e = fails(quick().server(&url).nkey_seed("SUnot-a-seed")).await;
    assert_eq!(e.kind(), ErrorKind::Connection, "{e}");
    assert_no_secret(&e, &["SUnot-a-seed"]);
    let e = fails(
        quick()
            .server(&url)
            .nkey_file(dir.path().join("missing.nk")),
    )
    .await;
    assert_eq!(e.kind(), ErrorKind::InvalidArgument);
}

#[tokio::test]
async fn tls_with_a_ca_mutual_tls_and_tls_first() {
    let pki = TestPki::generate();
    let tls = NatsServer::builder().tls(&pki).start().await;
    let url = tls.client_url();
    connects(quick().server(&url).tls_ca(pki.ca_file())).await;
    let e = fails(quick().server(&url).tls_ca(pki.unrelated_ca_file())).await;
    assert_eq!(e.kind(), ErrorKind::Connection);
    assert!(e.to_string().contains("TLS"), "{}", all_text(&e));

    let mutual = NatsServer::builder().tls(&pki).tls_verify().start().await;
    let url = mutual.client_url();
    let with_cert = quick()
        .server(&url)
        .tls_ca(pki.ca_file())
        .tls_client_cert(pki.client_cert_file(), pki.client_key_file());
    connects(with_cert).await;
    let e = fails(quick().server(&url).tls_ca(pki.ca_file())).await;
    assert_eq!(e.kind(), ErrorKind::Connection, "{e}");

    let first = NatsServer::builder()
        .tls(&pki)
        .tls_handshake_first()
        .start()
        .await;
    let c = quick()
        .server(first.client_url())
        .tls_ca(pki.ca_file())
        .tls_first();
    connects(c).await;

    let plain = NatsServer::start().await;
    let e = fails(quick().server(plain.client_url()).require_tls(true)).await;
    assert_eq!(e.kind(), ErrorKind::Connection, "{e}");
}

#[tokio::test]
async fn comma_separated_urls_are_a_server_list() {
    let server = NatsServer::start().await;
    // Port 1 refuses; the list goes on to the live server.
    let list = format!("nats://127.0.0.1:1, {}", server.client_url());
    works(Kv::connect(&list).await.unwrap()).await;
}

#[tokio::test]
async fn nats_cli_contexts() {
    let pki = TestPki::generate();
    let server = NatsServer::builder()
        .tls(&pki)
        .account(
            Account::new("APP")
                .jetstream()
                .user(User::password("app", PASSWORD)),
        )
        .start()
        .await;
    let home = tempfile::tempdir().unwrap();
    let dir = home.path().join("nats/context");
    std::fs::create_dir_all(&dir).unwrap();
    let ctx = serde_json::json!({
        "description": "test",
        "url": server.client_url(),
        "user": "app",
        "password": PASSWORD,
        "ca": pki.ca_file(),
        "tls_first": false,
    });
    std::fs::write(dir.join("prod.json"), ctx.to_string()).unwrap();
    std::fs::write(home.path().join("nats/context.txt"), "prod\n").unwrap();
    // Each test runs in its own process under nextest, so the variable is ours alone.
    std::env::set_var("XDG_CONFIG_HOME", home.path());

    connects(Connect::from_context(Some("prod")).unwrap()).await;
    connects(Connect::from_context(None).unwrap()).await;
    works(Connect::new().context("prod").connect().await.unwrap()).await;
    let c = Connect::from_context(Some("prod")).unwrap();
    assert!(!format!("{c:?}").contains(PASSWORD));

    let e = Connect::from_context(Some("missing")).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidArgument);
    assert!(e.to_string().contains("missing.json"), "{e}");
    let e = Connect::from_context(Some("../prod")).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidArgument);
    std::fs::write(
        dir.join("bad.json"),
        format!("{{\"password\": \"{PASSWORD}\""),
    )
    .unwrap();
    let e = Connect::from_context(Some("bad")).unwrap_err();
    assert_no_secret(&e, &[PASSWORD]);
    // A value of the wrong type is not quoted either (serde_json's own message would).
    std::fs::write(
        dir.join("typo.json"),
        serde_json::json!({ "tls_first": PASSWORD }).to_string(),
    )
    .unwrap();
    let e = Connect::from_context(Some("typo")).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidArgument);
    assert_no_secret(&e, &[PASSWORD]);

    // Credentials as file:// URIs are files; secret-store URIs are refused by name.
    let creds_ctx = |creds: &str| serde_json::json!({ "url": server.client_url(), "creds": creds });
    std::fs::write(
        dir.join("uri.json"),
        creds_ctx("file:///nonexistent/app.creds").to_string(),
    )
    .unwrap();
    let e = quick().context("uri").connect().await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidArgument);
    assert!(e.to_string().contains(" /nonexistent/app.creds"), "{e}");
    std::fs::write(
        dir.join("vault.json"),
        creds_ctx("op://vault/item/creds").to_string(),
    )
    .unwrap();
    let e = Connect::from_context(Some("vault")).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidArgument);
    assert!(e.to_string().contains("op://"), "{e}");
}

/// The selected context is optional: nothing selected, or a selection whose file is gone,
/// adds nothing; a selected one that exists is merged under the builder's own settings.
#[tokio::test]
async fn the_selected_context_is_used_when_there_is_one() {
    let pki = TestPki::generate();
    let server = NatsServer::builder()
        .tls(&pki)
        .account(
            Account::new("APP")
                .jetstream()
                .user(User::password("app", PASSWORD)),
        )
        .start()
        .await;
    let home = tempfile::tempdir().unwrap();
    let nats = home.path().join("nats");
    std::fs::create_dir_all(nats.join("context")).unwrap();
    // Each test runs in its own process under nextest, so the variable is ours alone.
    std::env::set_var("XDG_CONFIG_HOME", home.path());
    let explicit = || {
        quick()
            .server(server.client_url())
            .tls_ca(pki.ca_file())
            .user_password("app", PASSWORD)
    };

    // No context.txt, then one naming a context whose file is gone: the defaults.
    for selection in [None, Some("gone\n")] {
        if let Some(text) = selection {
            std::fs::write(nats.join("context.txt"), text).unwrap();
        }
        let c = Connect::from_context(None).unwrap();
        assert!(format!("{c:?}").contains("servers: []"), "{c:?}");
        works(explicit().selected_context().connect().await.unwrap()).await;
    }
    let e = Connect::from_context(Some("gone")).unwrap_err();
    assert_eq!(
        e.kind(),
        ErrorKind::InvalidArgument,
        "a named one must exist"
    );

    // A selected context that exists supplies what the builder leaves unset...
    let ctx = serde_json::json!({
        "url": server.client_url(),
        "user": "app",
        "password": PASSWORD,
        "ca": pki.ca_file(),
    });
    std::fs::write(nats.join("context/prod.json"), ctx.to_string()).unwrap();
    std::fs::write(nats.join("context.txt"), "prod\n").unwrap();
    works(quick().selected_context().connect().await.unwrap()).await;
    // ...and the builder's settings win over it.
    let e = quick()
        .selected_context()
        .user_password("app", "wrong-pw")
        .connect()
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Connection, "{e}");
    assert_no_secret(&e, &[PASSWORD, "wrong-pw"]);
}

#[tokio::test]
async fn a_missing_creds_file_is_a_clear_error() {
    let server = NatsServer::start().await;
    let e = fails(
        quick()
            .server(server.client_url())
            .creds_file("/nonexistent/app.creds"),
    )
    .await;
    assert_eq!(e.kind(), ErrorKind::InvalidArgument);
    assert!(e.to_string().contains("/nonexistent/app.creds"), "{e}");
}

#[tokio::test]
async fn creds_file_in_operator_mode() {
    let op = std::sync::Arc::new(TestOperator::generate());
    let server = NatsServer::builder().operator(&op).start().await;
    let dir = tempfile::tempdir().unwrap();
    let creds = dir.path().join("app.creds");
    let text = op.user_creds("app", None);
    std::fs::write(&creds, &text).unwrap();
    connects(quick().server(server.client_url()).creds_file(&creds)).await;

    refused(quick().server(server.client_url()), &[]).await;
    // A user signed by an account the server does not know is refused, its seed unshown.
    let stranger = TestOperator::generate().user_creds("app", None);
    std::fs::write(&creds, &stranger).unwrap();
    let seed = stranger.lines().find(|l| l.starts_with("SU")).unwrap();
    refused(
        quick().server(server.client_url()).creds_file(&creds),
        &[seed],
    )
    .await;
}
