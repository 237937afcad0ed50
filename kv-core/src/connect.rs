//! [`Connect`]: how a [`Kv`] reaches a production NATS deployment — several servers,
//! credentials, TLS, a `nats` CLI context — and learns of the server's permission errors.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use async_nats::{ConnectOptions, ServerAddr};
use percent_encoding::percent_decode_str;
use serde::Deserialize;

use crate::client::Kv;
use crate::error::{Error, ErrorKind, Operation};
use crate::permission::Violations;

/// A string that never shows in `Debug` output or error messages.
#[derive(Clone, PartialEq, Eq)]
struct Secret(String);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// How the client authenticates. One method per connection.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Auth {
    CredsFile(PathBuf),
    NkeySeed(Secret),
    NkeyFile(PathBuf),
    Token(Secret),
    UserPassword(String, Secret),
}

impl Auth {
    fn method(&self) -> &'static str {
        match self {
            Auth::CredsFile(_) => "a creds file",
            Auth::NkeySeed(_) => "an NKey seed",
            Auth::NkeyFile(_) => "an NKey file",
            Auth::Token(_) => "a token",
            Auth::UserPassword(..) => "a user and password",
        }
    }
}

type OptionsHook = Arc<dyn Fn(ConnectOptions) -> ConnectOptions + Send + Sync>;
type EventHook = Arc<dyn Fn(&async_nats::Event) + Send + Sync>;

/// Connection settings for a [`Kv`]: servers, credentials, TLS, timeouts. Cheap to clone;
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
/// two URLs, are refused with [`ErrorKind::InvalidArgument`].
///
/// # Secrets
/// No password, token or seed appears in an error message, a log line or this type's
/// `Debug` output; server URLs are shown without their credentials.
///
/// # Permission errors
/// The connection's event callback records the server's permission violations, so a request
/// the server refuses ends with [`ErrorKind::PermissionDenied`] as soon as the server says so,
/// instead of a [`ErrorKind::Timeout`]. A [`Kv::new`] over a client built elsewhere does not
/// see them (async-nats has one event callback per connection, owned by whoever built it): its
/// refused requests time out. Use [`Connect::event_callback`] to see the events too; setting
/// `event_callback` inside [`Connect::options`] replaces ours and turns detection off.
#[must_use = "a Connect does nothing until `connect().await`"]
#[derive(Default, Clone)]
pub struct Connect {
    servers: Vec<String>,
    auth: Vec<Auth>,
    tls_ca: Vec<PathBuf>,
    tls_client: Option<(PathBuf, PathBuf)>,
    tls_first: bool,
    require_tls: Option<bool>,
    context: Option<Option<String>>,
    request_timeout: Option<Duration>,
    name: Option<String>,
    api_prefix: Option<String>,
    inbox_prefix: Option<String>,
    events: Option<EventHook>,
    hooks: Vec<OptionsHook>,
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

    /// The settings of a `nats` CLI context: `$XDG_CONFIG_HOME/nats/context/<name>.json` (or
    /// `~/.config/nats/context/<name>.json`); with `None`, the context selected in
    /// `nats/context.txt` there, if any (see [`Connect::selected_context`]: no selection, or a
    /// selected context whose file is gone, gives the defaults). Maps `url`, `creds` and `nkey`
    /// (file paths or `file://` URIs; `nkey` is a seed file), `user`, `password`, `token`,
    /// `cert`, `key`, `ca`, `tls_first`, `inbox_prefix` and
    /// `jetstream_domain`/`jetstream_api_prefix` (the JetStream API the [`Kv`] uses).
    ///
    /// # Errors
    /// [`ErrorKind::InvalidArgument`] when a named context cannot be found, or a context cannot
    /// be read or names its credentials in a way this crate does not read (a secret store
    /// URI, inline `data:`); the message names the file, never its secrets.
    pub fn from_context(name: Option<&str>) -> Result<Connect, Error> {
        Connect::new()
            .merge_context(name)
            .map_err(|e| e.with_op(Operation::Connect))
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
    /// [`ErrorKind::PermissionDenied`] detection off.
    pub fn options(
        mut self,
        f: impl Fn(ConnectOptions) -> ConnectOptions + Send + Sync + 'static,
    ) -> Connect {
        self.hooks.push(Arc::new(f));
        self
    }

    /// Connects and wraps the connection in a [`Kv`] that reports the server's permission
    /// errors as [`ErrorKind::PermissionDenied`].
    ///
    /// # Errors
    /// [`ErrorKind::InvalidArgument`] for a bad URL, conflicting credentials or an unreadable
    /// context, credentials or key file; [`ErrorKind::Connection`] when no server could be
    /// reached or the server refused the credentials or the TLS handshake (the message says
    /// which; the cause is in `source()`).
    ///
    /// # Cancel safety
    /// Cancel safe: dropping the future drops the half-made connection.
    pub async fn connect(self) -> Result<Kv, Error> {
        let api = self.api_prefix.clone();
        let (client, violations) = self
            .open()
            .await
            .map_err(|e| e.with_op(Operation::Connect))?;
        let kv = Kv::new(client).with_violations(violations);
        Ok(match api {
            Some(prefix) => kv.with_api_prefix(prefix),
            None => kv,
        })
    }

    /// Connects and returns the async-nats client itself (with the same permission-error
    /// listener installed, which only a [`Kv`] from [`Connect::connect`] uses).
    ///
    /// # Errors
    /// As [`Connect::connect`].
    ///
    /// # Cancel safety
    /// Cancel safe: dropping the future drops the half-made connection.
    pub async fn client(self) -> Result<async_nats::Client, Error> {
        let opened = self
            .open()
            .await
            .map_err(|e| e.with_op(Operation::Connect))?;
        Ok(opened.0)
    }

    async fn open(self) -> Result<(async_nats::Client, Arc<Violations>), Error> {
        let this = match self.context.clone() {
            Some(name) => self.merge_context(name.as_deref())?,
            None => self,
        };
        let (addrs, url_auth) = parse_servers(&this.servers)?;
        let shown = addrs
            .iter()
            .map(|a| a.as_url_str().trim_end_matches('/').to_string())
            .collect::<Vec<_>>()
            .join(", ");
        let auth = match (url_auth, this.auth.as_slice()) {
            (Some(_), [_, ..]) => {
                return Err(Error::invalid_argument(
                    "credentials both in a server URL and given as an option",
                ))
            }
            (Some(a), []) => Some(a),
            (None, []) => None,
            (None, [a]) => Some(a.clone()),
            (None, [a, b, ..]) => {
                return Err(Error::invalid_argument(format!(
                    "two ways to authenticate given: {} and {}",
                    a.method(),
                    b.method()
                )))
            }
        };
        let inbox_prefix = this.inbox_prefix.clone().unwrap_or_else(|| "_INBOX".into());
        let violations = Violations::new(inbox_prefix);
        let opts = this.build(auth, &violations).await?;
        let client = opts
            .connect(addrs)
            .await
            .map_err(|e| connect_error(&shown, e))?;
        Ok((client, violations))
    }

    async fn build(
        self,
        auth: Option<Auth>,
        violations: &Arc<Violations>,
    ) -> Result<ConnectOptions, Error> {
        let mut o = with_auth(ConnectOptions::new(), auth).await?;
        for ca in self.tls_ca {
            o = o.add_root_certificates(ca);
        }
        if let Some((cert, key)) = self.tls_client {
            o = o.add_client_certificate(cert, key);
        }
        if self.tls_first {
            o = o.tls_first();
        }
        if let Some(r) = self.require_tls {
            o = o.require_tls(r);
        }
        if let Some(t) = self.request_timeout {
            o = o.request_timeout(Some(t));
        }
        if let Some(n) = self.name {
            o = o.name(n);
        }
        if let Some(p) = self.inbox_prefix {
            o = o.custom_inbox_prefix(p);
        }
        let v = violations.clone();
        let user = self.events;
        o = o.event_callback(move |event| {
            if let async_nats::Event::ServerError(async_nats::ServerError::Other(text)) = &event {
                v.record(text);
            }
            if let Some(f) = &user {
                f(&event);
            }
            async {}
        });
        for hook in self.hooks {
            o = hook(o);
        }
        Ok(o)
    }

    fn merge_context(mut self, name: Option<&str>) -> Result<Connect, Error> {
        self.context = None;
        let Some((path, ctx)) = read_context(name)? else {
            return Ok(self);
        };
        if self.servers.is_empty() {
            self.servers = split_urls(ctx.url.as_deref().unwrap_or_default());
        }
        if self.auth.is_empty() {
            self.auth = ctx.auth(&path)?;
        }
        if self.tls_ca.is_empty() {
            self.tls_ca
                .extend(ctx.ca.as_deref().filter(|s| !s.is_empty()).map(expand));
        }
        if self.tls_client.is_none() {
            self.tls_client = match (ctx.cert.as_deref(), ctx.key.as_deref()) {
                (Some(c), Some(k)) if !c.is_empty() && !k.is_empty() => {
                    Some((expand(c), expand(k)))
                }
                _ => None,
            };
        }
        self.tls_first |= ctx.tls_first;
        if self.inbox_prefix.is_none() {
            self.inbox_prefix = ctx.inbox_prefix.filter(|s| !s.is_empty());
        }
        if self.api_prefix.is_none() {
            self.api_prefix = match (ctx.jetstream_api_prefix, ctx.jetstream_domain) {
                (Some(p), _) if !p.is_empty() => Some(p),
                (_, Some(d)) if !d.is_empty() => Some(format!("$JS.{d}.API")),
                _ => None,
            };
        }
        Ok(self)
    }
}

async fn with_auth(o: ConnectOptions, auth: Option<Auth>) -> Result<ConnectOptions, Error> {
    Ok(match auth {
        None => o,
        Some(Auth::Token(t)) => o.token(t.0),
        Some(Auth::UserPassword(u, p)) => o.user_and_password(u, p.0),
        Some(Auth::NkeySeed(s)) => o.nkey(s.0),
        Some(Auth::NkeyFile(path)) => o.nkey(read_seed(&path).await?),
        Some(Auth::CredsFile(path)) => o.credentials_file(&path).await.map_err(|e| {
            Error::invalid_argument(format!("cannot use the creds file {}", path.display()))
                .with_source(e)
        })?,
    })
}

/// The seed in an NKey file: its first line that looks like a seed (`S…`).
async fn read_seed(path: &Path) -> Result<String, Error> {
    let text = tokio::fs::read_to_string(path).await.map_err(|e| {
        Error::invalid_argument(format!("cannot read the NKey file {}", path.display()))
            .with_source(e)
    })?;
    text.lines()
        .map(str::trim)
        .find(|l| l.starts_with('S') && l.len() > 50)
        .map(str::to_string)
        .ok_or_else(|| Error::invalid_argument(format!("no NKey seed in {}", path.display())))
}

fn split_urls(s: &str) -> Vec<String> {
    s.split(',')
        .map(str::trim)
        .filter(|u| !u.is_empty())
        .map(str::to_string)
        .collect()
}

/// A URL as it may be shown: without user, password or token.
pub(crate) fn redact_url(url: &str) -> String {
    match url.rsplit_once('@') {
        Some((before, host)) => match before.split_once("://") {
            Some((scheme, _)) => format!("{scheme}://{host}"),
            None => host.to_string(),
        },
        None => url.to_string(),
    }
}

/// Parses the server list, taking credentials out of the URLs.
fn parse_servers(servers: &[String]) -> Result<(Vec<ServerAddr>, Option<Auth>), Error> {
    let default = ["nats://127.0.0.1:4222".to_string()];
    let list = if servers.is_empty() {
        &default[..]
    } else {
        servers
    };
    let mut addrs = Vec::with_capacity(list.len());
    let mut auth: Option<Auth> = None;
    for s in list {
        let addr: ServerAddr = s.parse().map_err(|e| {
            Error::invalid_argument(format!("invalid server URL {:?}", redact_url(s)))
                .with_source(e)
        })?;
        let (addr, found) = take_credentials(addr)?;
        match (&auth, found) {
            (_, None) => {}
            (None, found) => auth = found,
            (Some(a), Some(f)) if *a == f => {}
            (Some(_), Some(_)) => {
                return Err(Error::invalid_argument(
                    "different credentials in two server URLs",
                ))
            }
        }
        addrs.push(addr);
    }
    Ok((addrs, auth))
}

fn take_credentials(addr: ServerAddr) -> Result<(ServerAddr, Option<Auth>), Error> {
    if !addr.has_user_pass() {
        return Ok((addr, None));
    }
    let decode = |s: &str| percent_decode_str(s).decode_utf8_lossy().into_owned();
    let user = decode(addr.username().unwrap_or_default());
    let auth = match addr.password() {
        Some(p) => Auth::UserPassword(user, Secret(decode(p))),
        // `nats://token@host`: a lone user part is a token, as in the other NATS clients.
        None => Auth::Token(Secret(user)),
    };
    let mut url = addr.into_inner();
    let stripped = url.set_username("").is_ok() && url.set_password(None).is_ok();
    let bare = ServerAddr::from_url(url).ok().filter(|_| stripped);
    let bare = bare.ok_or_else(|| {
        Error::invalid_argument("cannot take the credentials out of a server URL")
    })?;
    Ok((bare, Some(auth)))
}

fn connect_error(shown: &str, e: async_nats::ConnectError) -> Error {
    use async_nats::ConnectErrorKind as K;
    // rustls' verdicts reach us as I/O errors of kind InvalidData.
    let io_kind = std::error::Error::source(&e)
        .and_then(|s| s.downcast_ref::<std::io::Error>())
        .map(std::io::Error::kind);
    let why = match e.kind() {
        K::Io if io_kind == Some(std::io::ErrorKind::InvalidData) => {
            "TLS failed (certificates, or TLS required on one side only)"
        }
        K::AuthorizationViolation => "the server refused the credentials",
        K::Authentication => "cannot sign the server's challenge with the credentials",
        K::Tls => "TLS failed (certificates, or TLS required on one side only)",
        K::TimedOut => "timed out",
        K::Dns => "cannot resolve the host",
        K::ServerParse => "invalid server address",
        K::Io | K::MaxReconnects => "cannot reach the server",
    };
    let kind = match e.kind() {
        K::ServerParse => ErrorKind::InvalidArgument,
        _ => ErrorKind::Connection,
    };
    Error::new(kind, format!("cannot connect to {shown}: {why}"))
        .with_op(Operation::Connect)
        .with_source(e)
}

/// The fields of a `nats` CLI context file we use.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Context {
    url: Option<String>,
    token: Option<String>,
    user: Option<String>,
    password: Option<String>,
    creds: Option<String>,
    nkey: Option<String>,
    cert: Option<String>,
    key: Option<String>,
    ca: Option<String>,
    tls_first: bool,
    inbox_prefix: Option<String>,
    jetstream_domain: Option<String>,
    jetstream_api_prefix: Option<String>,
}

impl Context {
    fn auth(&self, path: &Path) -> Result<Vec<Auth>, Error> {
        let set = |s: &Option<String>| s.as_deref().filter(|v| !v.is_empty()).map(str::to_string);
        let mut out = Vec::new();
        if let Some(c) = set(&self.creds) {
            out.push(Auth::CredsFile(credential_file("creds", &c, path)?));
        }
        if let Some(n) = set(&self.nkey) {
            out.push(Auth::NkeyFile(credential_file("nkey", &n, path)?));
        }
        if let Some(t) = set(&self.token) {
            out.push(Auth::Token(Secret(t)));
        }
        if let Some(u) = set(&self.user) {
            out.push(Auth::UserPassword(
                u,
                Secret(set(&self.password).unwrap_or_default()),
            ));
        }
        if out.len() > 1 {
            return Err(Error::invalid_argument(format!(
                "the context {} gives more than one way to authenticate",
                path.display()
            )));
        }
        Ok(out)
    }
}

/// A context's `creds` or `nkey`: a path or a `file://` URI. The `nats` CLI also accepts
/// secret-store URIs and inline `data:` values, which are refused here by name only.
fn credential_file(field: &str, value: &str, ctx: &Path) -> Result<PathBuf, Error> {
    if let Some(p) = value.strip_prefix("file://") {
        return Ok(expand(p));
    }
    let scheme = match value.split_once("://") {
        Some((scheme, _)) => Some(format!("{scheme}://")),
        None => value.starts_with("data:").then(|| "data:".to_string()),
    };
    match scheme {
        Some(s) => Err(Error::invalid_argument(format!(
            "the nats context {} gives its {field} as {s}, which is not supported: use a file path",
            ctx.display()
        ))),
        None => Ok(expand(value)),
    }
}

fn config_dir() -> Option<PathBuf> {
    let xdg = std::env::var_os("XDG_CONFIG_HOME").filter(|v| !v.is_empty());
    match xdg {
        Some(x) => Some(PathBuf::from(x)),
        None => Some(PathBuf::from(std::env::var_os("HOME")?).join(".config")),
    }
}

/// `~/…` as the `nats` CLI writes paths.
fn expand(p: &str) -> PathBuf {
    match (p.strip_prefix("~/"), std::env::var_os("HOME")) {
        (Some(rest), Some(home)) => PathBuf::from(home).join(rest),
        _ => PathBuf::from(p),
    }
}

/// The name in `nats/context.txt`; `None` when it is missing or empty.
fn selected(dir: &Path) -> Result<Option<String>, Error> {
    let sel = dir.join("context.txt");
    match std::fs::read_to_string(&sel) {
        Ok(text) => Ok(Some(text.trim().to_string()).filter(|n| !n.is_empty())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::invalid_argument(format!(
            "cannot read the selected nats context ({})",
            sel.display()
        ))
        .with_source(e)),
    }
}

/// The named context, or the selected one; `None` when no context is selected or the
/// selected one's file is gone (a named one must exist).
fn read_context(name: Option<&str>) -> Result<Option<(PathBuf, Context)>, Error> {
    let dir = match (config_dir(), name) {
        (Some(d), _) => d.join("nats"),
        (None, None) => return Ok(None),
        (None, Some(_)) => {
            return Err(Error::invalid_argument(
                "no HOME or XDG_CONFIG_HOME to find nats contexts in",
            ))
        }
    };
    let (name, named) = match name {
        Some(n) => (n.to_string(), true),
        None => match selected(&dir)? {
            Some(n) => (n, false),
            None => return Ok(None),
        },
    };
    let valid = !name.is_empty() && !name.contains(['/', '\\']) && !name.starts_with('.');
    if !valid {
        return Err(Error::invalid_argument(format!(
            "invalid nats context name {name:?}"
        )));
    }
    let path = dir.join("context").join(format!("{name}.json"));
    Ok(load_context(&path, !named)?.map(|ctx| (path, ctx)))
}

/// A context file; `None` when it is missing and `may_be_missing`.
fn load_context(path: &Path, may_be_missing: bool) -> Result<Option<Context>, Error> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && may_be_missing => return Ok(None),
        Err(e) => {
            return Err(Error::invalid_argument(format!(
                "cannot read the nats context {}",
                path.display()
            ))
            .with_source(e))
        }
    };
    // serde_json's message can quote a value (a password of the wrong type): say only where.
    serde_json::from_str(&text).map(Some).map_err(|e| {
        Error::invalid_argument(format!(
            "invalid nats context {}: not the JSON expected at line {} column {}",
            path.display(),
            e.line(),
            e.column()
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
