//! `nats` CLI contexts: where they are, what of them a [`Connect`] takes, and how a context
//! names its credentials.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::connect::auth::{Auth, Secret};
use crate::connect::builder::Connect;
use crate::connect::servers::split_urls;
use crate::error::{Error, Operation};

impl Connect {
    /// The settings of a `nats` CLI context: `$XDG_CONFIG_HOME/nats/context/<name>.json` (or
    /// `~/.config/nats/context/<name>.json`); with `None`, the context selected in
    /// `nats/context.txt` there, if any (see [`Connect::selected_context`]: no selection, or a
    /// selected context whose file is gone, gives the defaults). Maps `url`, `creds` and `nkey`
    /// (file paths or `file://` URIs; `nkey` is a seed file), `user`, `password`, `token`,
    /// `cert`, `key`, `ca`, `tls_first`, `inbox_prefix` and
    /// `jetstream_domain`/`jetstream_api_prefix` (the JetStream API the [`Kv`](crate::Kv) uses).
    ///
    /// # Errors
    /// [`ErrorKind::InvalidArgument`](crate::ErrorKind::InvalidArgument) when a named context cannot be found, or a context cannot
    /// be read or names its credentials in a way this crate does not read (a secret store
    /// URI, inline `data:`); the message names the file, never its secrets.
    pub fn from_context(name: Option<&str>) -> Result<Connect, Error> {
        Connect::new()
            .merge_context(name)
            .map_err(|e| e.with_op(Operation::Connect))
    }

    /// The settings the context `name` (or the selected one) adds to those made here.
    pub(super) fn merge_context(mut self, name: Option<&str>) -> Result<Connect, Error> {
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
