use crate::connect::auth::{Auth, Secret};
use crate::connect::builder::Connect;
use crate::connect::servers::{parse_servers, redact_url};
use crate::error::ErrorKind;

#[test]
fn urls_split_on_commas_and_lose_their_credentials() {
    let c = Connect::new().servers(["nats://a:1, nats://b:2", "c:3"]);
    assert_eq!(c.servers, vec!["nats://a:1", "nats://b:2", "c:3"]);
    let (addrs, auth) = parse_servers(&[
        "nats://al%40ice:p%2Fw@h:4222".into(),
        "nats://h2:4222".into(),
    ])
    .unwrap();
    assert_eq!(addrs[0].as_url_str(), "nats://h:4222");
    assert_eq!(
        auth,
        Some(Auth::UserPassword("al@ice".into(), Secret("p/w".into())))
    );
    let (_, auth) = parse_servers(&["nats://tok@h".into()]).unwrap();
    assert_eq!(auth, Some(Auth::Token(Secret("tok".into()))));
}

#[test]
fn conflicting_url_credentials_are_refused_without_showing_them() {
    let e = parse_servers(&["nats://u:pw1@a".into(), "nats://u:pw2@b".into()]).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidArgument);
    assert!(!format!("{e} {e:?}").contains("pw1"));
    let e = parse_servers(&["bogus://u:pw1@a".into()]).unwrap_err();
    assert!(!format!("{e} {e:?}").contains("pw1"), "{e:?}");
}

#[test]
fn debug_redacts_every_secret() {
    let c = Connect::new()
        .server("nats://u:hunter2@h")
        .token("tok-42")
        .nkey_seed("SUSEED")
        .user_password("u", "pw-9");
    let d = format!("{c:?}");
    for secret in ["hunter2", "tok-42", "SUSEED", "pw-9"] {
        assert!(!d.contains(secret), "{d}");
    }
}

#[test]
fn redacts_urls() {
    assert_eq!(redact_url("nats://u:p@h:1"), "nats://h:1");
    assert_eq!(redact_url("tok@h"), "h");
    assert_eq!(redact_url("nats://h"), "nats://h");
}
