//! The connection flags every command shares (the `nats` CLI's conventions) and the one
//! function, [`connect`], that turns them into a [`Kv`] through [`kvtk_core::Connect`], which
//! reads `nats` contexts, authenticates, sets up TLS and keeps every secret out of its errors.

use std::path::PathBuf;
use std::time::Duration;

use kvtk_core::{Connect, Kv};

use crate::error::{CliError, Result};
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
        requires = "user",
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
        requires = "tlskey",
        value_name = "FILE",
        env = "NATS_CERT",
        global = true,
        help_heading = "Connection"
    )]
    tlscert: Option<PathBuf>,
    /// TLS client key file (with --tlscert)
    #[arg(
        long,
        requires = "tlscert",
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

/// How `kvtk doctor` logs into the system account, to read the servers' `sync_interval`.
#[derive(clap::Args, Clone)]
pub(crate) struct SystemArgs {
    /// nats context of a system-account user (its own servers, credentials and TLS)
    #[arg(
        long,
        value_name = "NAME",
        conflicts_with_all = ["system_creds", "system_user"],
        help_heading = "System account"
    )]
    system_context: Option<String>,
    /// Creds file of a system-account user (with the connection's servers and TLS)
    #[arg(
        long,
        value_name = "FILE",
        conflicts_with = "system_user",
        help_heading = "System account"
    )]
    system_creds: Option<PathBuf>,
    /// System-account user (with --system-password)
    #[arg(
        long,
        value_name = "NAME",
        requires = "system_password",
        help_heading = "System account"
    )]
    system_user: Option<String>,
    /// System-account password
    #[arg(
        long,
        env = "KVTK_SYSTEM_PASSWORD",
        hide_env_values = true,
        help_heading = "System account"
    )]
    system_password: Option<String>,
}

/// Connects as the flags say, over the selected (or `--context`) `nats` context: a flag or its
/// environment variable wins over the context, which wins over the defaults.
///
/// # Cancel safety
/// Cancel safe: dropping the future drops the half-made connection.
pub(crate) async fn connect(args: &ConnectArgs) -> Result<Kv> {
    Ok(credentials(transport(args), args).connect().await?)
}

/// A second connection, logged into the system account as `sys` says (the connection's
/// servers and TLS with the system user's credentials, or a context of its own); `None`
/// when `sys` names no system user.
///
/// # Cancel safety
/// Cancel safe: dropping the future drops the half-made connection.
pub(crate) async fn system_client(args: &ConnectArgs, sys: &SystemArgs) -> Result<Option<Kv>> {
    let c = if let Some(name) = &sys.system_context {
        timeouts(Connect::new(), args.timeout).context(name)
    } else if let Some(path) = &sys.system_creds {
        transport(args).creds_file(path)
    } else if let Some(user) = &sys.system_user {
        let password = sys.system_password.as_deref().unwrap_or_default();
        transport(args).user_password(user, password)
    } else {
        return Ok(None);
    };
    let kv = c
        .connect()
        .await
        .map_err(|e| CliError::from(e).within("system account"))?;
    Ok(Some(kv))
}

fn timeouts(c: Connect, timeout: Duration) -> Connect {
    c.name("kvtk")
        .request_timeout(timeout)
        .options(move |o| o.connection_timeout(timeout))
}

/// Servers, context and TLS from the flags; flags that only go together are clap's to check.
fn transport(args: &ConnectArgs) -> Connect {
    let mut c = timeouts(Connect::new().servers(&args.servers), args.timeout);
    c = match &args.context {
        Some(name) => c.context(name),
        None => c.selected_context(),
    };
    if let Some(path) = &args.tlsca {
        c = c.tls_ca(path);
    }
    if let (Some(cert), Some(key)) = (&args.tlscert, &args.tlskey) {
        c = c.tls_client_cert(cert, key);
    }
    if args.tls_first {
        c = c.tls_first();
    }
    c
}

/// `c` with the credentials the flags give (none: the context's, if any).
fn credentials(mut c: Connect, args: &ConnectArgs) -> Connect {
    if let Some(path) = &args.creds {
        c = c.creds_file(path);
    }
    if let Some(path) = &args.nkey {
        c = c.nkey_file(path);
    }
    if let Some(token) = &args.token {
        c = c.token(token);
    }
    if let Some(user) = &args.user {
        c = c.user_password(user, args.password.as_deref().unwrap_or_default());
    }
    c
}
