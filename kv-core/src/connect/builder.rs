//! [`Connect`] and its settings.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use async_nats::ConnectOptions;

use crate::connect::auth::{Auth, Secret};
use crate::connect::servers::{redact_url, split_urls};

pub(super) type OptionsHook = Arc<dyn Fn(ConnectOptions) -> ConnectOptions + Send + Sync>;
pub(super) type EventHook = Arc<dyn Fn(&async_nats::Event) + Send + Sync>;

/// Connection settings for a [`Kv`](crate::Kv): servers, credentials, TLS, timeouts. Cheap to clone;
/// one `Connect` can connect many times.
///
/// ```no_run
/// # async fn demo() -> Result<(), kvtk_core::Error> {
/// use std::time::Duration;
/// use kvtk_core::Connect;
///
/// let kv = Connect::new()
///     .servers(["nats://n1:4222,nats://n2:4222", "nats://n3:4222"]) // comma-separated works too
///     .creds_file("/etc/app/app.creds")
///     .tls_ca("/etc/app/ca.pem")
///     .tls_client_cert("/etc/app/client.pem", "/etc/app/client-key.pem")
///     .request_timeout(Duration::from_secs(2))
///     .name("billing-worker")
///     .connect()
///     .await?;
/// println!("connected to nats-server {}", kv.server_version());
///
/// // Or what the `nats` CLI uses: ~/.config/nats/context/<name>.json
/// let prod = Connect::from_context(Some("prod"))?.connect().await?;
/// println!("connected to nats-server {}", prod.server_version());
/// # Ok(()) }
/// ```
///
/// # Credentials in URLs
/// `nats://user:password@host` and `nats://token@host` are honoured: the credentials are
/// taken out of the URL and sent as a user/password or token (async-nats alone would drop
/// them and connect anonymously). Credentials both in a URL and set here, or different ones in
/// two URLs, are refused with [`ErrorKind::InvalidArgument`](crate::ErrorKind::InvalidArgument).
///
/// # Secrets
/// No password, token or seed appears in an error message, a log line or this type's
/// `Debug` output; server URLs are shown without their credentials.
///
/// # Permission errors
/// The connection's event callback records the server's permission violations, so a request
/// the server refuses ends with [`ErrorKind::PermissionDenied`](crate::ErrorKind::PermissionDenied) as soon as the server says so,
/// instead of a [`ErrorKind::Timeout`](crate::ErrorKind::Timeout). A [`Kv::new`](crate::Kv::new) over a client built elsewhere does not
/// see them (async-nats has one event callback per connection, owned by whoever built it): its
/// refused requests time out. Use [`Connect::event_callback`] to see the events too; setting
/// `event_callback` inside [`Connect::options`] replaces ours and turns detection off.
#[must_use = "a Connect does nothing until `connect().await`"]
#[derive(Default, Clone)]
pub struct Connect {
    pub(super) servers: Vec<String>,
    pub(super) auth: Vec<Auth>,
    pub(super) tls_ca: Vec<PathBuf>,
    pub(super) tls_client: Option<(PathBuf, PathBuf)>,
    pub(super) tls_first: bool,
    pub(super) require_tls: Option<bool>,
    pub(super) context: Option<Option<String>>,
    pub(super) request_timeout: Option<Duration>,
    pub(super) name: Option<String>,
    pub(super) api_prefix: Option<String>,
    pub(super) inbox_prefix: Option<String>,
    pub(super) events: Option<EventHook>,
    pub(super) hooks: Vec<OptionsHook>,
}

impl fmt::Debug for Connect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let servers: Vec<String> = self.servers.iter().map(|s| redact_url(s)).collect();
        f.debug_struct("Connect")
            .field("servers", &servers)
            .field("auth", &self.auth)
            .field("tls_ca", &self.tls_ca)
            .field("tls_client", &self.tls_client)
            .field("tls_first", &self.tls_first)
            .field("require_tls", &self.require_tls)
            .field("context", &self.context)
            .field("request_timeout", &self.request_timeout)
            .field("name", &self.name)
            .field("api_prefix", &self.api_prefix)
            .field("event_callback", &self.events.is_some())
            .field("options_hooks", &self.hooks.len())
            .finish()
    }
}

impl Connect {
    /// No server yet (`nats://127.0.0.1:4222` if none is added), no credentials, no TLS
    /// requirement (TLS is used when the server asks for it or the URL says `tls://`).
    pub fn new() -> Connect {
        Connect::default()
    }

    /// Adds a server URL; a comma-separated list adds each (as `NATS_URL` holds them).
    pub fn server(mut self, url: impl AsRef<str>) -> Connect {
        self.servers.extend(split_urls(url.as_ref()));
        self
    }

    /// Adds server URLs; each item may itself be comma-separated.
    pub fn servers<I, S>(mut self, urls: I) -> Connect
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        for u in urls {
            self.servers.extend(split_urls(u.as_ref()));
        }
        self
    }

    /// Authenticates with a `.creds` file (user JWT and NKey seed, operator mode).
    pub fn creds_file(mut self, path: impl Into<PathBuf>) -> Connect {
        self.auth.push(Auth::CredsFile(path.into()));
        self
    }

    /// Authenticates by signing with this NKey seed (`SU…`).
    pub fn nkey_seed(mut self, seed: impl Into<String>) -> Connect {
        self.auth.push(Auth::NkeySeed(Secret(seed.into())));
        self
    }

    /// Authenticates with the NKey seed read from this file (as the `nats` CLI's `--nkey`).
    pub fn nkey_file(mut self, path: impl Into<PathBuf>) -> Connect {
        self.auth.push(Auth::NkeyFile(path.into()));
        self
    }

    /// Authenticates with a token.
    pub fn token(mut self, token: impl Into<String>) -> Connect {
        self.auth.push(Auth::Token(Secret(token.into())));
        self
    }

    /// Authenticates with a user name and password.
    pub fn user_password(
        mut self,
        user: impl Into<String>,
        password: impl Into<String>,
    ) -> Connect {
        self.auth
            .push(Auth::UserPassword(user.into(), Secret(password.into())));
        self
    }

    /// Trusts the CA certificates in this PEM file for the server's certificate (repeatable).
    pub fn tls_ca(mut self, path: impl Into<PathBuf>) -> Connect {
        self.tls_ca.push(path.into());
        self
    }

    /// Presents this client certificate and key (PEM files) for mutual TLS.
    pub fn tls_client_cert(mut self, cert: impl Into<PathBuf>, key: impl Into<PathBuf>) -> Connect {
        self.tls_client = Some((cert.into(), key.into()));
        self
    }

    /// Starts TLS before the server's `INFO` (the server must have `handshake_first`).
    pub fn tls_first(mut self) -> Connect {
        self.tls_first = true;
        self
    }

    /// Refuses to connect without TLS (`true`), whatever the server offers.
    pub fn require_tls(mut self, required: bool) -> Connect {
        self.require_tls = Some(required);
        self
    }

    /// Also reads the `nats` CLI context `name` at connect time (see
    /// [`Connect::from_context`]); settings made on this builder win over the context's.
    /// The context must exist.
    pub fn context(mut self, name: impl Into<String>) -> Connect {
        self.context = Some(Some(name.into()));
        self
    }

    /// Also reads the `nats` CLI context selected in `nats/context.txt`, if one is, at connect
    /// time; settings made on this builder win over the context's. No selection, or a
    /// selected context whose file is gone, adds nothing (as the `nats` CLI's own tools do
    /// without a context): what a command-line tool wants by default.
    pub fn selected_context(mut self) -> Connect {
        self.context = Some(None);
        self
    }

    /// The timeout of every request (default: 10 s, async-nats' default).
    pub fn request_timeout(mut self, timeout: Duration) -> Connect {
        self.request_timeout = Some(timeout);
        self
    }

    /// Names the connection (shown by the server's monitoring).
    pub fn name(mut self, connection_name: impl Into<String>) -> Connect {
        self.name = Some(connection_name.into());
        self
    }

    /// Calls `f` with the connection's events too (disconnects, server errors, …).
    pub fn event_callback(
        mut self,
        f: impl Fn(&async_nats::Event) + Send + Sync + 'static,
    ) -> Connect {
        self.events = Some(Arc::new(f));
        self
    }

    /// Changes the async-nats options last, after everything above was applied: for settings
    /// this builder does not offer. Setting `event_callback` here turns
    /// [`ErrorKind::PermissionDenied`](crate::ErrorKind::PermissionDenied) detection off.
    pub fn options(
        mut self,
        f: impl Fn(ConnectOptions) -> ConnectOptions + Send + Sync + 'static,
    ) -> Connect {
        self.hooks.push(Arc::new(f));
        self
    }
}
