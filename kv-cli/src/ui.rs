//! `kvtk ui`: the operator's console in the browser (kvtk-ui), until SIGINT or SIGTERM.

use std::net::SocketAddr;
use std::path::Path;

use serde_json::Value;

use crate::connect::{connect, ConnectArgs};
use crate::error::{code, CliError, Result};
use crate::util::print_line;

/// Serve the live operator's console in the browser
///
/// Locks and their queues, elections and terms, members, configuration history and diffs,
/// buckets and the doctor's findings, updated live. Listens on loopback only unless
/// --allow-remote; read-only unless --allow-writes (force-release and rollback, each
/// confirmed and carrying the secret printed at start, or KVTK_UI_SECRET).
#[derive(clap::Args)]
pub(crate) struct UiArgs {
    /// Address to listen on (port 0: any free port)
    #[arg(long, value_name = "ADDR", default_value = kvtk_ui::DEFAULT_LISTEN)]
    listen: SocketAddr,
    /// Accept an address that is not loopback (everyone who reaches it sees holders,
    /// identities and configuration)
    #[arg(long)]
    allow_remote: bool,
    /// Offer force-release of lock holders and configuration rollback
    #[arg(long)]
    allow_writes: bool,
    /// Bucket of the Locks view
    #[arg(
        long,
        value_name = "BUCKET",
        default_value = "locks",
        env = "KVTK_LOCK_BUCKET"
    )]
    locks_bucket: String,
    /// Bucket of the Elections view
    #[arg(
        long,
        value_name = "BUCKET",
        default_value = "elections",
        env = "KVTK_ELECTION_BUCKET"
    )]
    elections_bucket: String,
    /// Bucket of the Members view
    #[arg(long, value_name = "BUCKET", default_value = "members")]
    members_bucket: String,
    /// Bucket of the Configuration view
    #[arg(
        long,
        value_name = "BUCKET",
        default_value = "config",
        env = "KVTK_CONFIG_BUCKET"
    )]
    config_bucket: String,
    /// A JSON Schema to check configuration documents against: FILE for every document, or
    /// KEY=FILE for one (repeatable)
    #[arg(long, value_name = "[KEY=]FILE")]
    schema: Vec<String>,
}

pub(crate) async fn run(args: UiArgs, conn: &ConnectArgs) -> Result<u8> {
    let kv = connect(conn).await?;
    let mut ui = kvtk_ui::Ui::new(kv)
        .listen(args.listen)
        .allow_remote(args.allow_remote)
        .allow_writes(args.allow_writes)
        .locks_bucket(Some(args.locks_bucket))
        .elections_bucket(Some(args.elections_bucket))
        .members_bucket(Some(args.members_bucket))
        .config_bucket(Some(args.config_bucket));
    for s in &args.schema {
        let (key, file) = match s.split_once('=') {
            Some((k, f)) => (Some(k.to_string()), f),
            None => (None, s.as_str()),
        };
        let schema = read_json(Path::new(file))?;
        ui = ui
            .schema(key, &schema)
            .map_err(|e| CliError::msg(e.to_string()))?;
    }
    let given = std::env::var("KVTK_UI_SECRET").ok();
    if let Some(secret) = &given {
        ui = ui.secret(secret.clone());
    }
    let server = ui.start().await.map_err(|e| CliError::msg(e.to_string()))?;
    match server.secret() {
        // A secret the operator chose is not printed again.
        Some(s) if given.is_none() => print_line(format!(
            "kvtk ui: {}#secret={s} (writes allowed: the secret is in the link)",
            server.url()
        ))?,
        Some(_) => print_line(format!(
            "kvtk ui: {} (writes allowed with the secret in KVTK_UI_SECRET)",
            server.url()
        ))?,
        None => print_line(format!("kvtk ui: {} (read-only)", server.url()))?,
    }
    let mut signals = crate::child::Signals::new()?;
    tokio::select! {
        // Stopping the console is its normal end.
        _ = signals.recv() => {
            server.shutdown().await;
            Ok(0)
        }
        () = server.stopped() => Err(CliError::new(code::ERROR, "the console stopped")),
    }
}

fn read_json(path: &Path) -> Result<Value> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| CliError::msg(format!("cannot read {}: {}", path.display(), e.kind())))?;
    serde_json::from_str(&text)
        .map_err(|e| CliError::msg(format!("{} is not valid JSON: {e}", path.display())))
}
