//! `kvtk config …`: a configuration document (or a prefix of field keys) written through
//! kvtk-config's validated, compare-and-set writer, and followed through its reader.
//!
//! One file per role: this one the arguments and the dispatch, `schema.rs` the `--schema`
//! check, `read.rs` the reads and what they print, `edit.rs` the editor round-trip,
//! `follow.rs` `watch` and `exec` on kvtk-config's reader.

use std::path::PathBuf;

use kvtk_config::{ConfigWriter, Source};
use kvtk_core::{Bucket, BucketConfig, Kv, Revision};
use serde_json::{json, Map, Value};

use crate::connect::{connect, ConnectArgs};
use crate::error::{CliError, Result};
use crate::kv::parse_revision;
use crate::util::{print_json, print_line};

mod edit;
mod follow;
mod read;
mod schema;

use follow::{ExecArgs, Followed};
use read::{human, parse_value, report, set_path};
use schema::{load_schema, read_json, Validator};

#[derive(clap::Args)]
pub(crate) struct ConfigArgs {
    #[command(flatten)]
    target: Target,
    #[command(subcommand)]
    cmd: ConfigCmd,
}

#[derive(clap::Args)]
struct Target {
    /// Bucket of the configuration (created with history 10 on the first write)
    #[arg(
        long,
        default_value = "config",
        env = "KVTK_CONFIG_BUCKET",
        global = true
    )]
    bucket: String,
    /// Key of the configuration document
    #[arg(long, default_value = "config", env = "KVTK_CONFIG_KEY", global = true)]
    key: String,
    /// Keep one field per key under PREFIX instead of one document under --key
    #[arg(long, global = true)]
    prefix: Option<String>,
    /// Refuse (and, for watch and exec, ignore) values this JSON Schema rejects
    #[arg(long, value_name = "FILE", global = true)]
    schema: Option<PathBuf>,
}

#[derive(clap::Subcommand)]
enum ConfigCmd {
    /// Print the configuration, or the value at a dotted PATH
    Get {
        /// Dotted path, such as db.pool_size
        path: Option<String>,
        /// Print JSON with the revision
        #[arg(long)]
        json: bool,
    },
    /// Set the value at a dotted PATH (VALUE is JSON, else a string)
    Set {
        /// Dotted path, such as db.pool_size
        path: String,
        /// The value: JSON (10, true, {"a":1}) or else taken as a string
        #[arg(allow_hyphen_values = true)]
        value: String,
    },
    /// Replace the configuration with a JSON file (validated first; refused as a whole)
    Apply {
        /// A JSON file
        file: PathBuf,
    },
    /// Edit in $VISUAL or $EDITOR; validated, written only if nobody wrote meanwhile
    Edit,
    /// Every revision the bucket still holds, oldest first
    History {
        /// Print JSON
        #[arg(long)]
        json: bool,
    },
    /// The fields that differ between two revisions
    Diff {
        /// The older revision
        #[arg(value_parser = parse_revision)]
        from: Revision,
        /// The newer revision
        #[arg(value_parser = parse_revision)]
        to: Revision,
        /// Print JSON
        #[arg(long)]
        json: bool,
    },
    /// Write the configuration as it was at REV (validated again)
    Rollback {
        /// The revision to restore
        #[arg(value_parser = parse_revision)]
        rev: Revision,
    },
    /// Print the configuration, then every validated change
    Watch {
        /// One JSON object per line
        #[arg(long)]
        json: bool,
    },
    /// Run a command with the configuration rendered to a file or the environment;
    /// restart it (or signal it) on every validated change, not on an identical rewrite
    Exec(ExecArgs),
}

pub(crate) async fn run(args: ConfigArgs, conn: &ConnectArgs) -> Result<u8> {
    let t = &args.target;
    let validator = load_schema(t.schema.as_deref())?;
    let kv = connect(conn).await?;
    let source = match &t.prefix {
        Some(p) => Source::prefix(p),
        None => Source::document(&t.key),
    };
    let writes = matches!(
        args.cmd,
        ConfigCmd::Set { .. }
            | ConfigCmd::Apply { .. }
            | ConfigCmd::Edit
            | ConfigCmd::Rollback { .. }
    );
    let bucket = match bucket(&kv, &t.bucket, writes).await {
        Ok(b) => b,
        // Nobody configured anything yet: reads show the empty document.
        Err(e) if !writes && e.kind() == kvtk_core::ErrorKind::BucketNotFound => {
            return missing_bucket(args.cmd);
        }
        Err(e) => return Err(e.into()),
    };
    let writer = writer(bucket.clone(), source.clone(), validator.clone());
    let followed = || Followed {
        bucket,
        source,
        validator,
    };
    match args.cmd {
        ConfigCmd::Get { path, json } => read::get(&writer, path.as_deref(), json).await,
        ConfigCmd::Set { path, value } => {
            let v = parse_value(&value);
            report(writer.update(|cur| set_path(cur, &path, v.clone())).await?)
        }
        ConfigCmd::Apply { file } => report(writer.set(&read_json(&file)?).await?),
        ConfigCmd::Edit => edit::edit(&writer).await,
        ConfigCmd::History { json } => read::history(&writer, json).await,
        ConfigCmd::Diff { from, to, json } => read::diff(&writer, from, to, json).await,
        ConfigCmd::Rollback { rev } => report(writer.rollback(rev).await?),
        ConfigCmd::Watch { json } => follow::watch(followed(), json).await,
        ConfigCmd::Exec(e) => follow::exec(followed(), e).await,
    }
}

async fn bucket(kv: &Kv, name: &str, create: bool) -> Result<Bucket, kvtk_core::Error> {
    if !create {
        return kv.open(name).await;
    }
    let cfg = BucketConfig::new(name).history(10).atomic_batches(true);
    kv.create_or_open(cfg).await
}

/// A read of a bucket not made yet: what the same read of an empty bucket says (the empty
/// document, no history); following it (`watch`, `exec`) needs the bucket.
fn missing_bucket(cmd: ConfigCmd) -> Result<u8> {
    match cmd {
        ConfigCmd::Get { path: None, json } => {
            let empty = Value::Object(Map::new());
            if json {
                print_json(&json!({ "revision": null, "value": empty }))?;
            } else {
                print_line(human(&empty)?)?;
            }
            Ok(0)
        }
        ConfigCmd::Get { path: Some(p), .. } => Err(CliError::msg(format!("no value at {p}"))),
        ConfigCmd::History { json: true } => {
            print_json(&Vec::<Value>::new())?;
            Ok(0)
        }
        ConfigCmd::History { json: false } => Ok(0),
        ConfigCmd::Diff { from, .. } => Err(CliError::msg(format!(
            "revision {from} is not in the history"
        ))),
        _ => Err(CliError::msg("the configuration bucket does not exist yet")),
    }
}

fn writer(bucket: Bucket, source: Source, validator: Option<Validator>) -> ConfigWriter<Value> {
    let w = ConfigWriter::<Value>::new(bucket, source);
    match validator {
        Some(v) => w.validate(move |value: &Value| v(value)),
        None => w,
    }
}
