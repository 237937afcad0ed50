//! The connection flags every command shares (the `nats` CLI's conventions) and the one
//! function, [`connect`], that turns them into a [`Kv`].
//!
//! Until `kv_core::Connect` exists this module builds async-nats' `ConnectOptions` itself and
//! reads `nats` CLI context files on its own; the flags stay as they are when it switches.
//! No credential ever reaches a message: errors name files and hosts, never their contents.

use std::path::{Path, PathBuf};
use std::time::Duration;

use async_nats::{ConnectOptions, ServerAddr};
use kv_core::Kv;
use serde::Deserialize;

use crate::error::{code, one_line, CliError, Result};
use crate::util::parse_duration;

/// Connection flags. No `Debug`: it holds secrets.
#[derive(clap::Args, Clone)]
pub(crate) struct ConnectArgs {
    /// NATS server URL; repeat for a cluster (NATS_URL: comma-separated)
    #[arg(
        short = 's',
        long = "server",
        value_name = "URL",
        env = "NATS_URL",
        value_delimiter = ',',
        global = true,
        help_heading = "Connection"
    )]
    servers: Vec<String>,
    /// User credentials file (JWT and NKey seed)
    #[arg(
        long,
        value_name = "FILE",
        env = "NATS_CREDS",
        global = true,
        help_heading = "Connection"
    )]
    creds: Option<PathBuf>,
    /// User NKey seed file
    #[arg(
        long,
        value_name = "FILE",
        env = "NATS_NKEY",
        global = true,
        help_heading = "Connection"
    )]
    nkey: Option<PathBuf>,
    /// Authentication token
    #[arg(
        long,
        env = "NATS_TOKEN",
        hide_env_values = true,
        global = true,
        help_heading = "Connection"
    )]
    token: Option<String>,
    /// User name (with --password)
    #[arg(long, env = "NATS_USER", global = true, help_heading = "Connection")]
    user: Option<String>,
    /// Password (with --user)
    #[arg(
        long,
        env = "NATS_PASSWORD",
        hide_env_values = true,
        global = true,
        help_heading = "Connection"
    )]
    password: Option<String>,
    /// TLS certificate authority file
    #[arg(
        long,
        value_name = "FILE",
        env = "NATS_CA",
        global = true,
        help_heading = "Connection"
    )]
    tlsca: Option<PathBuf>,
    /// TLS client certificate file (with --tlskey)
    #[arg(
        long,
        value_name = "FILE",
        env = "NATS_CERT",
        global = true,
        help_heading = "Connection"
    )]
    tlscert: Option<PathBuf>,
    /// TLS client key file (with --tlscert)
    #[arg(
        long,
        value_name = "FILE",
        env = "NATS_KEY",
        global = true,
        help_heading = "Connection"
    )]
    tlskey: Option<PathBuf>,
    /// Start TLS before the server's INFO (servers with handshake_first)
    #[arg(long, global = true, help_heading = "Connection")]
    tls_first: bool,
    /// nats CLI context to use (default: the selected one, when there is one)
    #[arg(
        long,
        value_name = "NAME",
        env = "NATS_CONTEXT",
        global = true,
        help_heading = "Connection"
    )]
    context: Option<String>,
    /// Connection and request timeout
    #[arg(long, value_name = "DURATION", default_value = "5s", value_parser = parse_duration, global = true, help_heading = "Connection")]
    timeout: Duration,
}

/// A `nats` CLI context file (`~/.config/nats/context/<name>.json`); empty means unset.
#[derive(Deserialize, Default)]
#[serde(default)]
struct Context {
    url: String,
    token: String,
    user: String,
    password: String,
    creds: String,
    nkey: String,
    cert: String,
    key: String,
    ca: String,
    tls_first: bool,
    jetstream_domain: String,
    jetstream_api_prefix: String,
    inbox_prefix: String,
}

/// The flags merged over the context: a flag (or its environment variable) wins.
#[derive(Default)]
struct Settings {
    servers: Vec<String>,
    creds: Option<PathBuf>,
    nkey: Option<PathBuf>,
    token: Option<String>,
    user: Option<String>,
    password: Option<String>,
    ca: Option<PathBuf>,
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
    tls_first: bool,
    api_prefix: Option<String>,
    inbox_prefix: Option<String>,
}

const DEFAULT_URL: &str = "nats://127.0.0.1:4222";

/// Connects as the flags say.
///
/// # Cancel safety
/// Cancel safe: dropping the future drops the half-made connection.
pub(crate) async fn connect(args: &ConnectArgs) -> Result<Kv> {
    let s = settings(args)?;
    let secrets: Vec<String> = [&s.token, &s.password]
        .into_iter()
        .flatten()
        .cloned()
        .collect();
    let hosts = s
        .servers
        .iter()
        .map(|u| redact_url(u))
        .collect::<Vec<_>>()
        .join(", ");
    let addrs = s
        .servers
        .iter()
        .map(|u| {
            u.parse::<ServerAddr>()
                .map_err(|_| CliError::msg(format!("invalid server URL {}", redact_url(u))))
        })
        .collect::<Result<Vec<_>>>()?;
    let opts = options(&s, args.timeout).await?;
    let client = opts.connect(addrs).await.map_err(|e| {
        let text = redact(&one_line(&e), &secrets);
        CliError::new(
            code::CONNECTION,
            format!("cannot connect to {hosts}: {text}"),
        )
    })?;
    let mut kv = Kv::new(client).with_timeout(args.timeout);
    if let Some(prefix) = s.api_prefix {
        kv = kv.with_api_prefix(prefix);
    }
    Ok(kv)
}

async fn options(s: &Settings, timeout: Duration) -> Result<ConnectOptions> {
    let mut opts = ConnectOptions::new()
        .name("kvtk")
        .connection_timeout(timeout)
        .request_timeout(Some(timeout));
    if let Some(path) = &s.creds {
        opts = opts
            .credentials_file(path)
            .await
            .map_err(|e| file_error("credentials", path, &e))?;
    }
    if let Some(path) = &s.nkey {
        opts = opts.nkey(read_seed(path)?);
    }
    if let Some(t) = &s.token {
        opts = opts.token(t.clone());
    }
    match (&s.user, &s.password) {
        (Some(u), p) => opts = opts.user_and_password(u.clone(), p.clone().unwrap_or_default()),
        (None, Some(_)) => return Err(CliError::msg("--password needs --user")),
        (None, None) => {}
    }
    if let Some(ca) = &s.ca {
        opts = opts.add_root_certificates(ca.clone());
    }
    match (&s.cert, &s.key) {
        (Some(c), Some(k)) => opts = opts.add_client_certificate(c.clone(), k.clone()),
        (None, None) => {}
        _ => return Err(CliError::msg("--tlscert and --tlskey go together")),
    }
    if s.tls_first {
        opts = opts.tls_first();
    }
    if let Some(p) = &s.inbox_prefix {
        opts = opts.custom_inbox_prefix(p);
    }
    Ok(opts)
}

/// An error about a secret file: its path and the kind of failure, never its content.
fn file_error(what: &str, path: &Path, e: &std::io::Error) -> CliError {
    CliError::msg(format!(
        "cannot use the {what} file {}: {}",
        path.display(),
        e.kind()
    ))
}

/// The seed in an NKey file: the first line that looks like a user seed.
fn read_seed(path: &Path) -> Result<String> {
    let text = std::fs::read_to_string(path).map_err(|e| file_error("nkey", path, &e))?;
    text.lines()
        .map(str::trim)
        .find(|l| l.starts_with("SU"))
        .map(str::to_string)
        .ok_or_else(|| {
            CliError::msg(format!(
                "the nkey file {} holds no user seed (a line starting with SU)",
                path.display()
            ))
        })
}

fn settings(args: &ConnectArgs) -> Result<Settings> {
    let ctx = load_context(args.context.as_deref())?.unwrap_or_default();
    let some = |s: &str| (!s.is_empty()).then(|| s.to_string());
    let path = |s: &str| context_path(s).transpose();
    let servers = if !args.servers.is_empty() {
        args.servers.clone()
    } else if !ctx.url.is_empty() {
        ctx.url.split(',').map(|u| u.trim().to_string()).collect()
    } else {
        vec![DEFAULT_URL.to_string()]
    };
    let api_prefix = some(&ctx.jetstream_api_prefix)
        .or_else(|| some(&ctx.jetstream_domain).map(|d| format!("$JS.{d}.API")));
    Ok(Settings {
        servers: servers
            .into_iter()
            .filter(|u| !u.trim().is_empty())
            .collect(),
        creds: args
            .creds
            .clone()
            .map(Ok)
            .or_else(|| path(&ctx.creds))
            .transpose()?,
        nkey: args
            .nkey
            .clone()
            .map(Ok)
            .or_else(|| path(&ctx.nkey))
            .transpose()?,
        token: args.token.clone().or_else(|| some(&ctx.token)),
        user: args.user.clone().or_else(|| some(&ctx.user)),
        password: args.password.clone().or_else(|| some(&ctx.password)),
        ca: args
            .tlsca
            .clone()
            .or_else(|| some(&ctx.ca).map(PathBuf::from)),
        cert: args
            .tlscert
            .clone()
            .or_else(|| some(&ctx.cert).map(PathBuf::from)),
        key: args
            .tlskey
            .clone()
            .or_else(|| some(&ctx.key).map(PathBuf::from)),
        tls_first: args.tls_first || ctx.tls_first,
        api_prefix,
        inbox_prefix: some(&ctx.inbox_prefix),
    })
}

/// A context's `creds` or `nkey`: a path or a `file://` URI (other credential URI schemes
/// are not supported yet).
fn context_path(s: &str) -> Result<Option<PathBuf>> {
    if s.is_empty() {
        return Ok(None);
    }
    if let Some(p) = s.strip_prefix("file://") {
        return Ok(Some(PathBuf::from(p)));
    }
    match s.split_once("://") {
        Some((scheme, _)) => Err(CliError::msg(format!(
            "the nats context names credentials by {scheme}://, which kvtk does not support; use a file path"
        ))),
        None if s.starts_with("data:") => Err(CliError::msg(
            "the nats context holds inline (data:) credentials, which kvtk does not support; use a file path",
        )),
        None => Ok(Some(PathBuf::from(s))),
    }
}

/// `$XDG_CONFIG_HOME/nats`, else `~/.config/nats`.
fn nats_config_dir() -> Option<PathBuf> {
    match std::env::var_os("XDG_CONFIG_HOME").filter(|v| !v.is_empty()) {
        Some(x) => Some(PathBuf::from(x).join("nats")),
        None => std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config").join("nats")),
    }
}

/// The named context, or the selected one (`context.txt`) when none is named. A named
/// context must exist; a selected one whose file is gone is ignored.
fn load_context(name: Option<&str>) -> Result<Option<Context>> {
    let Some(dir) = nats_config_dir() else {
        return match name {
            Some(n) => Err(CliError::msg(format!(
                "cannot find nats context {n:?}: no home directory"
            ))),
            None => Ok(None),
        };
    };
    let (name, named) = match name {
        Some(n) => (n.to_string(), true),
        None => match std::fs::read_to_string(dir.join("context.txt")) {
            Ok(s) if !s.trim().is_empty() => (s.trim().to_string(), false),
            _ => return Ok(None),
        },
    };
    if name.contains(['/', '\\']) || name.starts_with('.') {
        return Err(CliError::msg(format!("invalid nats context name {name:?}")));
    }
    let path = dir.join("context").join(format!("{name}.json"));
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !named => return Ok(None),
        Err(e) => {
            return Err(CliError::msg(format!(
                "cannot read nats context {name:?} ({}): {}",
                path.display(),
                e.kind()
            )))
        }
    };
    // serde's message could quote a value (a password): say only where it broke.
    serde_json::from_slice(&bytes).map(Some).map_err(|e| {
        CliError::msg(format!(
            "cannot read nats context {name:?} ({}): invalid JSON at line {} column {}",
            path.display(),
            e.line(),
            e.column()
        ))
    })
}

/// The URL without its user information.
pub(crate) fn redact_url(url: &str) -> String {
    let (scheme, rest) = match url.split_once("://") {
        Some((s, r)) => (format!("{s}://"), r),
        None => (String::new(), url),
    };
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    match authority.rsplit_once('@') {
        Some((_, host)) => format!("{scheme}***@{host}{path}"),
        None => url.to_string(),
    }
}

/// `text` with every secret replaced.
fn redact(text: &str, secrets: &[String]) -> String {
    secrets
        .iter()
        .filter(|s| !s.is_empty())
        .fold(text.to_string(), |t, s| t.replace(s.as_str(), "***"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_lose_their_user_information() {
        assert_eq!(redact_url("nats://u:secret@h:4222"), "nats://***@h:4222");
        assert_eq!(redact_url("tok@h:4222/x"), "***@h:4222/x");
        assert_eq!(redact_url("nats://h:4222"), "nats://h:4222");
    }

    #[test]
    fn secrets_are_replaced() {
        assert_eq!(
            redact("bad token s3cr3t", &["s3cr3t".into()]),
            "bad token ***"
        );
    }

    #[test]
    fn context_credentials_are_paths_or_file_uris() {
        assert_eq!(context_path("").ok().flatten(), None);
        assert_eq!(
            context_path("file:///a/b.creds").ok().flatten(),
            Some(PathBuf::from("/a/b.creds"))
        );
        assert!(context_path("op://vault/item/field").is_err());
        assert!(context_path("data:;base64,AAAA").is_err());
    }
}
