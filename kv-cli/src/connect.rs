//! The connection flags every command shares (the `nats` CLI's conventions) and the one
//! function, [`connect`], that turns them into a [`Kv`] through [`kv_core::Connect`], which
//! reads `nats` contexts, authenticates, sets up TLS and keeps every secret out of its errors.

use std::path::PathBuf;
use std::time::Duration;

use kv_core::{Connect, Kv};

use crate::error::Result;
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

/// Connects as the flags say, over the selected (or `--context`) `nats` context: a flag or its
/// environment variable wins over the context, which wins over the defaults.
///
/// # Cancel safety
/// Cancel safe: dropping the future drops the half-made connection.
pub(crate) async fn connect(args: &ConnectArgs) -> Result<Kv> {
    Ok(settings(args).connect().await?)
}

/// The flags as a [`Connect`]; flags that only go together are clap's to check.
fn settings(args: &ConnectArgs) -> Connect {
    let timeout = args.timeout;
    let mut c = Connect::new()
        .servers(&args.servers)
        .name("kvtk")
        .request_timeout(timeout)
        .options(move |o| o.connection_timeout(timeout));
    c = match &args.context {
        Some(name) => c.context(name),
        None => c.selected_context(),
    };
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
