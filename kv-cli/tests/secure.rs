//! kvtk against servers that require each way to connect (TLS with a CA, mutual TLS, a creds
//! file, an NKey, a token, a user and password, a `nats` context naming creds and TLS): each
//! works with the right flag and fails with exit 69 and one line without it, and no run
//! prints a secret. A refused permission exits 69 at once, saying so.

#![allow(clippy::unwrap_used)] // test helpers panic on failure by design

mod common;

use std::path::Path;
use std::process::Output;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{code, one_line_error, Kvtk};
use kvtk_tests::{recipes, Account, NatsServer, NkeyUser, TestOperator, TestPki, User};

const PASSWORD: &str = "pw-Rb71kQ";
const WRONG_PASSWORD: &str = "pw-Wr0ng9x";
const TOKEN: &str = "tok-Lm38dZ";
const WRONG_TOKEN: &str = "tok-Wr0ng4y";

/// kvtk with the connection `flags` (and a 3 s timeout) before `args`.
fn run(kvtk: &Kvtk, flags: &[&str], args: &[&str]) -> Output {
    kvtk.cmd()
        .args(flags)
        .args(["--timeout", "3s"])
        .args(args)
        .output()
        .unwrap()
}

fn assert_no_secret(out: &Output, secrets: &[String]) {
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    for s in secrets {
        assert!(!text.contains(s.as_str()), "a secret is shown: {text}");
    }
}

/// With `flags`, kvtk creates a bucket, writes a key and reads it back, printing no secret.
fn works(kvtk: &Kvtk, flags: &[&str], secrets: &[String]) {
    let steps: [&[&str]; 3] = [
        &["kv", "add", "sec"],
        &["kv", "put", "sec", "k", "v"],
        &["kv", "get", "sec", "k"],
    ];
    for args in steps {
        let out = run(kvtk, flags, args);
        assert!(out.status.success(), "{args:?}: {out:?}");
        assert_no_secret(&out, secrets);
        if args[1] == "get" {
            assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "v");
        }
    }
}

/// With `flags`, kvtk cannot connect: exit 69 and one line, printing no secret. Returns it.
fn refused(kvtk: &Kvtk, flags: &[&str], secrets: &[String]) -> String {
    let out = run(kvtk, flags, &["kv", "ls"]);
    assert_eq!(code(&out), 69, "{out:?}");
    assert_no_secret(&out, secrets);
    let line = one_line_error(&out);
    assert!(line.contains("cannot connect"), "{line}");
    line
}

/// The secret lines of a `.creds` file or a PEM key: everything but the armour and the notice.
fn secret_lines(text: &str) -> Vec<String> {
    text.lines()
        .map(str::trim)
        .filter(|l| l.len() > 20 && !l.starts_with('-') && !l.contains(' '))
        .map(str::to_string)
        .collect()
}

fn s(path: &Path) -> &str {
    path.to_str().unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn tls_with_a_ca() {
    let pki = TestPki::generate();
    let server = NatsServer::builder().tls(&pki).start().await;
    let kvtk = Kvtk::new(server.client_url());
    let line = refused(&kvtk, &[], &[]);
    assert!(line.contains("TLS"), "{line}");
    refused(&kvtk, &["--tlsca", s(&pki.unrelated_ca_file())], &[]);
    works(&kvtk, &["--tlsca", s(&pki.ca_file())], &[]);
}

#[tokio::test(flavor = "multi_thread")]
async fn mutual_tls() {
    let pki = TestPki::generate();
    let server = NatsServer::builder().tls(&pki).tls_verify().start().await;
    let kvtk = Kvtk::new(server.client_url());
    let key = secret_lines(&std::fs::read_to_string(pki.client_key_file()).unwrap());
    assert!(!key.is_empty());
    let (ca_file, cert_file, key_file) =
        (pki.ca_file(), pki.client_cert_file(), pki.client_key_file());
    let ca = ["--tlsca", s(&ca_file)];
    refused(&kvtk, &ca, &key);
    let cert = ["--tlscert", s(&cert_file), "--tlskey", s(&key_file)];
    works(&kvtk, &[&ca[..], &cert[..]].concat(), &key);
    let half = run(&kvtk, &[&ca[..], &cert[..2]].concat(), &["kv", "ls"]);
    assert_eq!(code(&half), 2, "--tlscert needs --tlskey: {half:?}");
    assert!(one_line_error(&half).contains("--tlskey"));
}

#[tokio::test(flavor = "multi_thread")]
async fn creds_file() {
    let op = Arc::new(TestOperator::generate());
    let server = NatsServer::builder().operator(&op).start().await;
    let kvtk = Kvtk::new(server.client_url());
    let creds = op.user_creds("app", None);
    let foreign = TestOperator::generate().user_creds("app", None);
    let secrets = [secret_lines(&creds), secret_lines(&foreign)].concat();
    assert_eq!(secrets.len(), 4, "a JWT and a seed in each");
    std::fs::write(kvtk.path("app.creds"), &creds).unwrap();
    std::fs::write(kvtk.path("foreign.creds"), &foreign).unwrap();
    let line = refused(&kvtk, &[], &secrets);
    assert!(line.contains("refused the credentials"), "{line}");
    refused(
        &kvtk,
        &["--creds", s(&kvtk.path("foreign.creds"))],
        &secrets,
    );
    works(&kvtk, &["--creds", s(&kvtk.path("app.creds"))], &secrets);
}

#[tokio::test(flavor = "multi_thread")]
async fn nkey() {
    let user = NkeyUser::generate();
    let other = NkeyUser::generate();
    let server = NatsServer::builder().user(user.user()).start().await;
    let kvtk = Kvtk::new(server.client_url());
    std::fs::write(kvtk.path("user.nk"), format!("{}\n", user.seed)).unwrap();
    std::fs::write(kvtk.path("other.nk"), format!("{}\n", other.seed)).unwrap();
    let secrets = [user.seed.clone(), other.seed.clone()];
    refused(&kvtk, &[], &secrets);
    refused(&kvtk, &["--nkey", s(&kvtk.path("other.nk"))], &secrets);
    works(&kvtk, &["--nkey", s(&kvtk.path("user.nk"))], &secrets);
}

#[tokio::test(flavor = "multi_thread")]
async fn token() {
    let server = NatsServer::builder().token(TOKEN).start().await;
    let kvtk = Kvtk::new(server.client_url());
    let secrets = [TOKEN.to_string(), WRONG_TOKEN.to_string()];
    refused(&kvtk, &[], &secrets);
    refused(&kvtk, &["--token", WRONG_TOKEN], &secrets);
    works(&kvtk, &["--token", TOKEN], &secrets);
    // Through the environment as well; the variable's value stays out of --help.
    let out = kvtk
        .cmd()
        .env("NATS_TOKEN", TOKEN)
        .args(["kv", "get", "sec", "k"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let help = kvtk
        .cmd()
        .env("NATS_TOKEN", TOKEN)
        .arg("--help")
        .output()
        .unwrap();
    assert_no_secret(&help, &secrets);
}

#[tokio::test(flavor = "multi_thread")]
async fn user_and_password() {
    let server = NatsServer::builder()
        .account(
            Account::new("APP")
                .jetstream()
                .user(User::password("app", PASSWORD)),
        )
        .start()
        .await;
    let kvtk = Kvtk::new(server.client_url());
    let secrets = [PASSWORD.to_string(), WRONG_PASSWORD.to_string()];
    refused(&kvtk, &[], &secrets);
    refused(
        &kvtk,
        &["--user", "app", "--password", WRONG_PASSWORD],
        &secrets,
    );
    works(&kvtk, &["--user", "app", "--password", PASSWORD], &secrets);
    let alone = run(&kvtk, &["--password", PASSWORD], &["kv", "ls"]);
    assert_eq!(code(&alone), 2, "--password needs --user: {alone:?}");
    assert!(one_line_error(&alone).contains("--user"));
    assert_no_secret(&alone, &secrets);
}

/// A `nats` context that names a creds file and a CA: used when named and when selected; a
/// flag still wins over it; without it nothing connects.
#[tokio::test(flavor = "multi_thread")]
async fn nats_context_with_creds_and_tls() {
    let pki = TestPki::generate();
    let op = Arc::new(TestOperator::generate());
    let server = NatsServer::builder().operator(&op).tls(&pki).start().await;
    let kvtk = Kvtk::new(server.client_url());
    let creds = op.user_creds("app", None);
    let secrets = secret_lines(&creds);
    std::fs::write(kvtk.path("app.creds"), &creds).unwrap();
    let nats = kvtk.dir().join("cfg/nats");
    std::fs::create_dir_all(nats.join("context")).unwrap();
    let ctx = serde_json::json!({
        "description": "secured",
        "url": server.client_url(),
        "creds": format!("file://{}", s(&kvtk.path("app.creds"))),
        "ca": pki.ca_file(),
    });
    std::fs::write(nats.join("context/prod.json"), ctx.to_string()).unwrap();
    // The context's URL is what the server list comes from: no NATS_URL.
    let ctx_run = |args: &[&str]| {
        let mut c = kvtk.cmd();
        c.env_remove("NATS_URL")
            .args(["--timeout", "3s"])
            .args(args);
        c.output().unwrap()
    };

    let out = ctx_run(&["-s", &server.client_url(), "kv", "ls"]);
    assert_eq!(code(&out), 69, "no context selected yet: {out:?}");
    one_line_error(&out);
    let out = ctx_run(&["--context", "prod", "kv", "add", "sec"]);
    assert!(out.status.success(), "{out:?}");
    assert_no_secret(&out, &secrets);
    std::fs::write(nats.join("context.txt"), "prod\n").unwrap();
    let out = ctx_run(&["kv", "put", "sec", "k", "v"]);
    assert!(out.status.success(), "the selected context: {out:?}");
    assert_no_secret(&out, &secrets);
    // A flag wins over the context: an unrelated CA makes TLS fail.
    let out = ctx_run(&["--tlsca", s(&pki.unrelated_ca_file()), "kv", "ls"]);
    assert_eq!(code(&out), 69, "{out:?}");
    assert!(one_line_error(&out).contains("TLS"));
    assert_no_secret(&out, &secrets);
    // A selected context whose file is gone is ignored (the server then refuses us).
    std::fs::write(nats.join("context.txt"), "gone\n").unwrap();
    let out = ctx_run(&["-s", &server.client_url(), "kv", "ls"]);
    assert_eq!(code(&out), 69, "{out:?}");
    assert!(one_line_error(&out).contains("cannot connect"));
}

/// A user allowed only lock `a` runs a command under `a`; `lock b` is refused at once with
/// exit 69 and a line that says permission denied and names the subject, not the password.
#[tokio::test(flavor = "multi_thread")]
async fn a_refused_lock_exits_69_at_once() {
    let server = NatsServer::builder()
        .account(
            Account::new("APP")
                .jetstream()
                .user(User::password("admin", WRONG_PASSWORD))
                .user(
                    User::password("locker", PASSWORD)
                        .permissions(recipes::lock_user("locks", "a")),
                ),
        )
        .start()
        .await;
    let kvtk = Kvtk::new(server.client_url());
    let secrets = [PASSWORD.to_string(), WRONG_PASSWORD.to_string()];
    let admin = ["--user", "admin", "--password", WRONG_PASSWORD];
    let locker = ["--user", "locker", "--password", PASSWORD];
    // The administrator creates the bucket (a lock user may not).
    let out = run(&kvtk, &admin, &["lock", "a", "--", "true"]);
    assert!(out.status.success(), "{out:?}");
    let out = run(&kvtk, &locker, &["lock", "a", "--", "true"]);
    assert!(out.status.success(), "lock a is allowed: {out:?}");
    assert_no_secret(&out, &secrets);

    let started = Instant::now();
    let out = run(&kvtk, &locker, &["lock", "b", "--", "true"]);
    let took = started.elapsed();
    assert_eq!(code(&out), 69, "{out:?}");
    assert_no_secret(&out, &secrets);
    let line = one_line_error(&out);
    assert!(line.contains("permission denied"), "{line}");
    assert!(
        line.contains("$KV.locks.b."),
        "names the refused subject: {line}"
    );
    eprintln!("refused lock: exit 69 after {took:?}: {line}");
    assert!(
        took < Duration::from_secs(2),
        "refused at once, not after the 3 s request timeout: {took:?}"
    );
}
