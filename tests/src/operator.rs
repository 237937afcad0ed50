//! Operator mode (decentralised JWT authentication) for tests: an operator, a system account
//! and one JetStream account, signed at test time, and `.creds` files for their users.

use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use nkeys::KeyPair;

use crate::auth::{quote, Permissions};

/// The name of the JetStream account that [`TestOperator`] users belong to.
pub const OPERATOR_ACCOUNT: &str = "APP";

/// An operator with a system account and one JetStream account ([`OPERATOR_ACCOUNT`]),
/// generated at test time; hand it to
/// [`NatsServerBuilder::operator`](crate::NatsServerBuilder::operator) and give clients the
/// `.creds` of [`TestOperator::user_creds`].
///
/// ```
/// let op = kvtk_tests::TestOperator::generate();
/// let creds = op.user_creds("app", None);
/// assert!(creds.contains("BEGIN NATS USER JWT") && creds.contains("BEGIN USER NKEY SEED"));
/// ```
pub struct TestOperator {
    operator_jwt: String,
    system: KeyPair,
    system_jwt: String,
    account: KeyPair,
    account_jwt: String,
}

impl std::fmt::Debug for TestOperator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestOperator")
            .field("account", &self.account.public_key())
            .finish_non_exhaustive()
    }
}

impl TestOperator {
    /// Generates the operator, the system account and the JetStream account.
    pub fn generate() -> TestOperator {
        let operator = KeyPair::new_operator();
        let system = KeyPair::new_account();
        let account = KeyPair::new_account();
        let operator_jwt = sign(
            &operator,
            &operator.public_key(),
            "kvtk-tests",
            serde_json::json!({ "type": "operator", "version": 2 }),
        );
        let account_claims = |jetstream: bool| {
            let storage = if jetstream { -1 } else { 0 };
            serde_json::json!({
                "type": "account",
                "version": 2,
                "limits": {
                    "subs": -1, "data": -1, "payload": -1, "imports": -1, "exports": -1,
                    "wildcards": true, "conn": -1, "leaf": -1,
                    "mem_storage": storage, "disk_storage": storage,
                    "streams": -1, "consumer": -1,
                },
            })
        };
        let system_jwt = sign(
            &operator,
            &system.public_key(),
            "SYS",
            account_claims(false),
        );
        let account_jwt = sign(
            &operator,
            &account.public_key(),
            OPERATOR_ACCOUNT,
            account_claims(true),
        );
        TestOperator {
            operator_jwt,
            system,
            system_jwt,
            account,
            account_jwt,
        }
    }

    /// The contents of a `.creds` file for a new user of the JetStream account, with these
    /// permissions (default: everything).
    pub fn user_creds(&self, name: &str, permissions: Option<&Permissions>) -> String {
        let user = KeyPair::new_user();
        let rule = |allow: &[String], deny: &[String]| {
            let mut r = serde_json::Map::new();
            if !allow.is_empty() {
                r.insert("allow".into(), allow.into());
            }
            if !deny.is_empty() {
                r.insert("deny".into(), deny.into());
            }
            serde_json::Value::Object(r)
        };
        let (publish, subscribe) = match permissions {
            Some(p) => (
                rule(&p.publish.allow, &p.publish.deny),
                rule(&p.subscribe.allow, &p.subscribe.deny),
            ),
            None => (serde_json::json!({}), serde_json::json!({})),
        };
        let claims = serde_json::json!({
            "type": "user", "version": 2,
            "pub": publish, "sub": subscribe,
            "subs": -1, "data": -1, "payload": -1,
        });
        let jwt = sign(&self.account, &user.public_key(), name, claims);
        let seed = user.seed().unwrap_or_default();
        format!(
            "-----BEGIN NATS USER JWT-----\n{jwt}\n------END NATS USER JWT------\n\n\
             ************************* IMPORTANT *************************\n\
             NKEY Seed printed below can be used to sign and prove identity.\n\n\
             -----BEGIN USER NKEY SEED-----\n{seed}\n------END USER NKEY SEED------\n"
        )
    }

    /// The server config lines: operator, system account, preloaded account JWTs.
    pub(crate) fn render(&self) -> String {
        format!(
            "operator: {}\nsystem_account: {}\nresolver: MEMORY\nresolver_preload: {{\n  {}: {}\n  {}: {}\n}}\n",
            quote(&self.operator_jwt),
            quote(&self.system.public_key()),
            self.system.public_key(),
            quote(&self.system_jwt),
            self.account.public_key(),
            quote(&self.account_jwt),
        )
    }
}

/// A JWT (`ed25519-nkey`) with the standard NATS claims around `nats`, signed by `issuer`.
fn sign(issuer: &KeyPair, subject: &str, name: &str, nats: serde_json::Value) -> String {
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let iat = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let header = serde_json::json!({ "typ": "JWT", "alg": "ed25519-nkey" });
    let claims = serde_json::json!({
        "jti": uuid_like(),
        "iat": iat,
        "iss": issuer.public_key(),
        "name": name,
        "sub": subject,
        "nats": nats,
    });
    let signing_input = format!(
        "{}.{}",
        b64.encode(header.to_string()),
        b64.encode(claims.to_string())
    );
    let signature = issuer
        .sign(signing_input.as_bytes())
        .expect("kvtk-tests: a generated key signs");
    format!("{signing_input}.{}", b64.encode(signature))
}

/// A unique JWT id (the server does not check its form).
fn uuid_like() -> String {
    use rand::Rng as _;
    let bytes: [u8; 16] = rand::rng().random();
    bytes.iter().map(|b| format!("{b:02X}")).collect()
}
