//! Accounts, users and permissions for a [`crate::NatsServer`], rendered into its config file.

use std::fmt::Write as _;

/// Publish or subscribe rules: subjects allowed and denied (NATS wildcards `*` and `>`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rule {
    /// Subjects allowed. Empty means "everything not denied".
    pub allow: Vec<String>,
    /// Subjects denied, also where an allow rule matches.
    pub deny: Vec<String>,
}

/// A user's permissions, as in the server's `permissions { publish subscribe }` block.
///
/// ```
/// let p = kvtk_tests::Permissions::new()
///     .publish_allow(["$KV.app.>"])
///     .subscribe_allow(["_INBOX.>"]);
/// assert_eq!(p.publish.allow, vec!["$KV.app.>".to_string()]);
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[must_use]
pub struct Permissions {
    /// What the user may publish to.
    pub publish: Rule,
    /// What the user may subscribe to.
    pub subscribe: Rule,
}

fn strings<I: IntoIterator<Item = S>, S: Into<String>>(it: I) -> Vec<String> {
    it.into_iter().map(Into::into).collect()
}

impl Permissions {
    /// No rule at all (everything allowed) until rules are added.
    pub fn new() -> Permissions {
        Permissions::default()
    }

    /// Adds subjects the user may publish to.
    pub fn publish_allow<I: IntoIterator<Item = S>, S: Into<String>>(mut self, s: I) -> Self {
        self.publish.allow.extend(strings(s));
        self
    }

    /// Adds subjects the user may not publish to.
    pub fn publish_deny<I: IntoIterator<Item = S>, S: Into<String>>(mut self, s: I) -> Self {
        self.publish.deny.extend(strings(s));
        self
    }

    /// Adds subjects the user may subscribe to.
    pub fn subscribe_allow<I: IntoIterator<Item = S>, S: Into<String>>(mut self, s: I) -> Self {
        self.subscribe.allow.extend(strings(s));
        self
    }

    /// Adds subjects the user may not subscribe to.
    pub fn subscribe_deny<I: IntoIterator<Item = S>, S: Into<String>>(mut self, s: I) -> Self {
        self.subscribe.deny.extend(strings(s));
        self
    }

    fn render(&self) -> String {
        let rule = |r: &Rule| {
            let mut parts = Vec::new();
            if !r.allow.is_empty() {
                parts.push(format!("allow: {}", quoted_list(&r.allow)));
            }
            if !r.deny.is_empty() {
                parts.push(format!("deny: {}", quoted_list(&r.deny)));
            }
            format!("{{ {} }}", parts.join(", "))
        };
        format!(
            "{{ publish: {}, subscribe: {} }}",
            rule(&self.publish),
            rule(&self.subscribe)
        )
    }
}

/// How a [`User`] proves who it is.
#[derive(Clone, PartialEq, Eq)]
enum Identity {
    Password { user: String, password: String },
    Nkey { public: String },
}

/// A user of the server or of an [`Account`]: a name and password, or an NKey.
#[derive(Clone, PartialEq, Eq)]
#[must_use]
pub struct User {
    identity: Identity,
    permissions: Option<Permissions>,
}

impl std::fmt::Debug for User {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The password stays out, like everywhere a secret could be printed.
        let mut d = f.debug_struct("User");
        match &self.identity {
            Identity::Password { user, .. } => d.field("user", user).field("password", &"***"),
            Identity::Nkey { public } => d.field("nkey", public),
        };
        d.field("permissions", &self.permissions).finish()
    }
}

impl User {
    /// A user who logs in with a name and a password.
    pub fn password(user: impl Into<String>, password: impl Into<String>) -> User {
        User {
            identity: Identity::Password {
                user: user.into(),
                password: password.into(),
            },
            permissions: None,
        }
    }

    /// A user whose password is its name followed by `-pw`, for tests that connect as several
    /// users: [`NatsServer::client_url_as`](crate::NatsServer::client_url_as) builds their URLs.
    pub fn named(user: &str) -> User {
        User::password(user, test_password(user))
    }

    /// A user who logs in by signing the server's nonce with the NKey whose public key
    /// (`U…`) this is; see [`NkeyUser`].
    pub fn nkey(public_key: impl Into<String>) -> User {
        User {
            identity: Identity::Nkey {
                public: public_key.into(),
            },
            permissions: None,
        }
    }

    /// Restricts what the user may publish and subscribe to (default: everything).
    pub fn permissions(mut self, permissions: Permissions) -> User {
        self.permissions = Some(permissions);
        self
    }

    /// The permissions, when restricted.
    pub fn current_permissions(&self) -> Option<&Permissions> {
        self.permissions.as_ref()
    }

    fn render(&self) -> String {
        let who = match &self.identity {
            Identity::Password { user, password } => {
                format!("user: {}, password: {}", quote(user), quote(password))
            }
            Identity::Nkey { public } => format!("nkey: {}", quote(public)),
        };
        match &self.permissions {
            Some(p) => format!("{{ {who}, permissions: {} }}", p.render()),
            None => format!("{{ {who} }}"),
        }
    }
}

/// A generated NKey user key pair: the seed for the client, the public key for the server.
#[derive(Clone)]
pub struct NkeyUser {
    /// The seed (`SU…`), secret: what the client signs with.
    pub seed: String,
    /// The public key (`U…`): what the server config lists.
    pub public: String,
}

impl std::fmt::Debug for NkeyUser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NkeyUser")
            .field("public", &self.public)
            .finish_non_exhaustive()
    }
}

impl NkeyUser {
    /// Generates a fresh user key pair.
    ///
    /// # Panics
    ///
    /// When the key pair cannot be encoded (does not happen for a freshly generated key).
    pub fn generate() -> NkeyUser {
        let kp = nkeys::KeyPair::new_user();
        NkeyUser {
            seed: kp.seed().expect("kvtk-tests: a new key pair has a seed"),
            public: kp.public_key(),
        }
    }

    /// The server-side [`User`] for this key.
    pub fn user(&self) -> User {
        User::nkey(self.public.clone())
    }
}

/// An account: an isolated subject space with its own users and, optionally, JetStream.
///
/// ```
/// use kvtk_tests::{Account, Permissions, User};
/// let acct = Account::new("APP")
///     .jetstream()
///     .user(User::password("admin", "s3cret"))
///     .user(User::password("reader", "r").permissions(Permissions::new().publish_allow(["$JS.API.>"])));
/// assert_eq!(acct.name(), "APP");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use]
pub struct Account {
    name: String,
    jetstream: bool,
    users: Vec<User>,
    extra: Vec<String>,
}

impl Account {
    /// An account without users and without JetStream.
    pub fn new(name: impl Into<String>) -> Account {
        Account {
            name: name.into(),
            jetstream: false,
            users: Vec::new(),
            extra: Vec::new(),
        }
    }

    /// Enables JetStream for the account (unlimited).
    pub fn jetstream(mut self) -> Account {
        self.jetstream = true;
        self
    }

    /// Adds a user.
    pub fn user(mut self, user: User) -> Account {
        self.users.push(user);
        self
    }

    /// The set-up of a permission test: account `APP` with JetStream, an unrestricted
    /// [`User::named`]`("admin")` and a `User::named("user")` limited to `permissions`.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// use kvtk_tests::{Account, NatsServer, Permissions};
    ///
    /// let none = Permissions::new().publish_deny([">"]);
    /// let server = NatsServer::builder()
    ///     .account(Account::admin_and_user(none))
    ///     .start()
    ///     .await;
    /// let admin = async_nats::ConnectOptions::with_user_and_password("admin".into(), "admin-pw".into());
    /// let admin = server.connect_with(admin).await;
    /// assert!(admin.request("$JS.API.INFO", "".into()).await.is_ok());
    /// assert!(server.client_url_as("user").starts_with("nats://user:user-pw@127.0.0.1:"));
    /// # }
    /// ```
    pub fn admin_and_user(permissions: Permissions) -> Account {
        Account::new("APP")
            .jetstream()
            .user(User::named("admin"))
            .user(User::named("user").permissions(permissions))
    }

    /// Adds a raw line to the account block (`exports`, `imports`, `mappings`, …).
    pub fn raw(mut self, line: impl Into<String>) -> Account {
        self.extra.push(line.into());
        self
    }

    /// The account's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    pub(crate) fn render(&self) -> String {
        let mut s = format!("  {}: {{\n", quote(&self.name));
        if self.jetstream {
            s.push_str("    jetstream: enabled\n");
        }
        let users: Vec<String> = self.users.iter().map(User::render).collect();
        let _ = writeln!(s, "    users: [\n      {}\n    ]", users.join("\n      "));
        for line in &self.extra {
            let _ = writeln!(s, "    {line}");
        }
        s.push_str("  }\n");
        s
    }
}

/// The server-wide `authorization` block: users without accounts, or a token.
pub(crate) fn render_authorization(users: &[User], token: Option<&str>) -> Option<String> {
    if let Some(t) = token {
        return Some(format!("authorization {{ token: {} }}\n", quote(t)));
    }
    if users.is_empty() {
        return None;
    }
    let users: Vec<String> = users.iter().map(User::render).collect();
    Some(format!(
        "authorization {{\n  users: [\n    {}\n  ]\n}}\n",
        users.join("\n    ")
    ))
}

/// A JSON string is a valid quoted string in the server's config syntax.
pub(crate) fn quote(s: &str) -> String {
    serde_json::Value::from(s).to_string()
}

fn quoted_list(items: &[String]) -> String {
    let q: Vec<String> = items.iter().map(|s| quote(s)).collect();
    format!("[{}]", q.join(", "))
}

/// The password of [`User::named`]`(user)`.
pub(crate) fn test_password(user: &str) -> String {
    format!("{user}-pw")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_hides_passwords_and_seeds() {
        let u = User::password("alice", "hunter2");
        assert!(!format!("{u:?}").contains("hunter2"));
        let n = NkeyUser::generate();
        assert!(!format!("{n:?}").contains(&n.seed));
        assert!(n.public.starts_with('U'));
    }

    #[test]
    fn renders_permissions() {
        let p = Permissions::new()
            .publish_allow(["a.>"])
            .subscribe_deny(["b"]);
        assert_eq!(
            p.render(),
            r#"{ publish: { allow: ["a.>"] }, subscribe: { deny: ["b"] } }"#
        );
        let p = Permissions::new().publish_allow(["a"]).publish_deny(["b"]);
        assert_eq!(
            p.render(),
            r#"{ publish: { allow: ["a"], deny: ["b"] }, subscribe: {  } }"#
        );
    }
}
