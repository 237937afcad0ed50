//! `kvtk kv …`: buckets and keys, like `nats kv`, with kvtk-core's semantics (validated keys,
//! compare-and-set, per-key TTL, gap-free watches).

use std::io::{IsTerminal, Read, Write as _};
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use futures::StreamExt;
use kvtk_core::nats::{Placement, Republish, Source};
use kvtk_core::{
    Bucket, BucketConfig, Entry, ErrorKind, Include, Kv, Revision, Status, Storage, WatchEvent,
    Write,
};
use serde_json::{json, Value};

use crate::connect::{connect, ConnectArgs};
use crate::error::{CliError, Result};
use crate::util::{confirm, parse_duration, print_json, print_line, rfc3339};

#[derive(clap::Subcommand)]
pub(crate) enum KvCmd {
    /// Create a bucket (succeeds if it exists with the same options)
    Add(AddArgs),
    /// Show a bucket's options and size
    Info {
        /// Bucket name
        bucket: String,
        /// Print JSON
        #[arg(long)]
        json: bool,
    },
    /// List the buckets with their settings and sizes
    Ls {
        /// Print JSON: the names (with --long, every setting)
        #[arg(long)]
        json: bool,
        /// With --json: every setting and size, not only the names
        #[arg(long, short = 'l')]
        long: bool,
    },
    /// Change a bucket's settings where the server allows it
    Edit(crate::admin::EditArgs),
    /// Remove delete markers older than --older-than (default 30m) and the history below them
    Compact(crate::admin::CompactArgs),
    /// Delete a bucket and all its data
    Rm {
        /// Bucket name
        bucket: String,
        /// Do not ask for confirmation
        #[arg(long, short = 'y')]
        yes: bool,
    },
    /// Write a value (from the argument, else from stdin); prints the new revision
    Put(WriteArgs),
    /// Write a value only if the key holds none; prints the new revision
    Create(WriteArgs),
    /// Write a value only if the key is at --revision; prints the new revision
    Update {
        #[command(flatten)]
        write: WriteArgs,
        /// The revision the key must be at
        #[arg(long, value_parser = parse_revision)]
        revision: Revision,
    },
    /// Print a key's value (or its entry with --json)
    Get {
        /// Bucket name
        bucket: String,
        /// Key
        key: String,
        /// Read this revision instead of the latest
        #[arg(long, value_parser = parse_revision)]
        revision: Option<Revision>,
        /// Print the entry as JSON
        #[arg(long)]
        json: bool,
    },
    /// Delete a key (a tombstone; history is kept); prints the tombstone's revision
    Del(RemoveArgs),
    /// Purge a key's history, leaving one marker; prints its revision
    Purge(RemoveArgs),
    /// Every revision the bucket holds for a key, oldest first
    History {
        /// Bucket name
        bucket: String,
        /// Key
        key: String,
        /// Print JSON
        #[arg(long)]
        json: bool,
    },
    /// List the keys with a live value, optionally matching FILTER (e.g. app.>)
    Keys {
        /// Bucket name
        bucket: String,
        /// Key filter (`*` one token, `>` the rest)
        filter: Option<String>,
        /// Print JSON
        #[arg(long)]
        json: bool,
    },
    /// Follow changes: the latest value per key first (default), then every change
    Watch {
        /// Bucket name
        bucket: String,
        /// Key filter (`*` one token, `>` the rest)
        filter: Option<String>,
        /// Start with every revision the bucket holds
        #[arg(long, conflicts_with_all = ["updates", "from"])]
        all: bool,
        /// Only changes from now on
        #[arg(long, conflicts_with = "from")]
        updates: bool,
        /// Every revision from REV on
        #[arg(long, value_name = "REV", value_parser = parse_revision)]
        from: Option<Revision>,
        /// One JSON object per line
        #[arg(long)]
        json: bool,
    },
}

#[derive(clap::Args)]
pub(crate) struct WriteArgs {
    /// Bucket name
    bucket: String,
    /// Key
    key: String,
    /// Value (read from stdin when left out)
    value: Option<String>,
    /// Per-key TTL, whole seconds (the bucket needs per-key TTLs)
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    ttl: Option<Duration>,
}

#[derive(clap::Args)]
pub(crate) struct RemoveArgs {
    /// Bucket name
    bucket: String,
    /// Key
    key: String,
    /// Only if the key is at this revision
    #[arg(long, value_parser = parse_revision)]
    revision: Option<Revision>,
    /// TTL of the marker, whole seconds (the bucket needs per-key TTLs)
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    ttl: Option<Duration>,
}

#[derive(clap::Args)]
pub(crate) struct AddArgs {
    /// Bucket name
    bucket: String,
    /// Revisions kept per key (1..=64)
    #[arg(long, default_value_t = 1)]
    history: i64,
    /// Maximum age of a value (the bucket's TTL)
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    ttl: Option<Duration>,
    /// Largest value in bytes
    #[arg(long, value_name = "BYTES")]
    max_value_size: Option<i32>,
    /// Largest bucket in bytes
    #[arg(long, value_name = "BYTES")]
    max_bucket_size: Option<i64>,
    /// Most consumers (watches) the bucket accepts (default: the server's, 1,000 on
    /// nats-server 2.15)
    #[arg(long, value_name = "N")]
    max_consumers: Option<u32>,
    /// Replicas (1, 3 or 5 in a cluster)
    #[arg(long, default_value_t = 1)]
    replicas: usize,
    /// Description
    #[arg(long)]
    description: Option<String>,
    /// Storage backend
    #[arg(long, value_enum, default_value_t = StorageArg::File)]
    storage: StorageArg,
    /// Compress stored values
    #[arg(long)]
    compression: bool,
    /// Enable per-key TTLs; DURATION is how long expiry and removal markers stay
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    per_key_ttl: Option<Duration>,
    /// Enable atomic multi-key batches (transactions)
    #[arg(long)]
    atomic_batches: bool,
    /// Place the bucket in this cluster
    #[arg(long, value_name = "CLUSTER")]
    placement_cluster: Option<String>,
    /// Place the bucket on servers with this tag (repeatable)
    #[arg(long, value_name = "TAG")]
    placement_tag: Vec<String>,
    /// Republish stored entries from this subject filter (with --republish-destination)
    #[arg(long, value_name = "SUBJECT", requires = "republish_destination")]
    republish_source: Option<String>,
    /// Republish to this subject
    #[arg(long, value_name = "SUBJECT", requires = "republish_source")]
    republish_destination: Option<String>,
    /// Republish headers only
    #[arg(long, requires = "republish_source")]
    republish_headers_only: bool,
    /// Mirror another bucket (a read-only copy)
    #[arg(long, value_name = "BUCKET", conflicts_with = "source")]
    mirror: Option<String>,
    /// Source entries from another bucket (repeatable)
    #[arg(long, value_name = "BUCKET")]
    source: Vec<String>,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum StorageArg {
    File,
    Memory,
}

pub(crate) fn parse_revision(s: &str) -> std::result::Result<Revision, String> {
    s.parse::<u64>()
        .ok()
        .and_then(Revision::new)
        .ok_or_else(|| format!("{s:?} is not a revision (a number ≥ 1)"))
}

pub(crate) async fn run(cmd: KvCmd, conn: &ConnectArgs) -> Result<u8> {
    let kv = connect(conn).await?;
    match cmd {
        KvCmd::Add(args) => add(&kv, args).await,
        KvCmd::Info { bucket, json } => info(&open(&kv, &bucket).await?, json).await,
        KvCmd::Ls { json, long } => crate::admin::ls(&kv, json, long).await,
        KvCmd::Edit(args) => crate::admin::edit(&kv, args).await,
        KvCmd::Compact(args) => crate::admin::compact(&kv, args).await,
        KvCmd::Rm { bucket, yes } => rm(&kv, &bucket, yes).await,
        KvCmd::Put(w) => {
            let b = open(&kv, &w.bucket).await?;
            let value = value(w.value.as_deref())?;
            write(b.put(&w.key, value), w.ttl).await
        }
        KvCmd::Create(w) => {
            let b = open(&kv, &w.bucket).await?;
            let value = value(w.value.as_deref())?;
            write(b.create(&w.key, value), w.ttl).await
        }
        KvCmd::Update { write: w, revision } => {
            let b = open(&kv, &w.bucket).await?;
            let value = value(w.value.as_deref())?;
            write(b.update(&w.key, value, revision), w.ttl).await
        }
        KvCmd::Get {
            bucket,
            key,
            revision,
            json,
        } => get(&open(&kv, &bucket).await?, &key, revision, json).await,
        KvCmd::Del(r) => {
            let b = open(&kv, &r.bucket).await?;
            remove(b.delete(&r.key), r.revision, r.ttl).await
        }
        KvCmd::Purge(r) => {
            let b = open(&kv, &r.bucket).await?;
            remove(b.purge(&r.key), r.revision, r.ttl).await
        }
        KvCmd::History { bucket, key, json } => {
            history(&open(&kv, &bucket).await?, &key, json).await
        }
        KvCmd::Keys {
            bucket,
            filter,
            json,
        } => keys(&open(&kv, &bucket).await?, filter.as_deref(), json).await,
        KvCmd::Watch {
            bucket,
            filter,
            all,
            updates,
            from,
            json,
        } => {
            let include = match (all, updates) {
                (true, _) => Include::AllHistory,
                (_, true) => Include::UpdatesOnly,
                _ => Include::LastPerKey,
            };
            let b = open(&kv, &bucket).await?;
            watch(&b, filter.as_deref(), include, from, json).await
        }
    }
}

/// Opens an existing bucket; a missing one is said plainly.
pub(crate) async fn open(kv: &Kv, bucket: &str) -> Result<Bucket> {
    kv.open(bucket).await.map_err(|e| match e.kind() {
        ErrorKind::BucketNotFound => CliError::msg(format!("bucket {bucket} not found")),
        _ => e.into(),
    })
}

/// The value argument, else all of stdin.
fn value(arg: Option<&str>) -> Result<Bytes> {
    if let Some(v) = arg {
        return Ok(Bytes::copy_from_slice(v.as_bytes()));
    }
    let mut buf = Vec::new();
    std::io::stdin().lock().read_to_end(&mut buf)?;
    Ok(Bytes::from(buf))
}

async fn write(w: Write<'_>, ttl: Option<Duration>) -> Result<u8> {
    let w = match ttl {
        Some(t) => w.ttl(t),
        None => w,
    };
    print_line(w.await?)?;
    Ok(0)
}

async fn remove(w: Write<'_>, rev: Option<Revision>, ttl: Option<Duration>) -> Result<u8> {
    let w = match rev {
        Some(r) => w.revision(r),
        None => w,
    };
    write(w, ttl).await
}

async fn add(kv: &Kv, a: AddArgs) -> Result<u8> {
    let mut cfg = BucketConfig::new(&a.bucket)
        .history(a.history)
        .replicas(a.replicas)
        .storage(match a.storage {
            StorageArg::File => Storage::File,
            StorageArg::Memory => Storage::Memory,
        })
        .compression(a.compression)
        .atomic_batches(a.atomic_batches);
    if let Some(t) = a.ttl {
        cfg = cfg.ttl(t);
    }
    if let Some(n) = a.max_value_size {
        cfg = cfg.max_value_size(n);
    }
    if let Some(n) = a.max_bucket_size {
        cfg = cfg.max_bucket_size(n);
    }
    if let Some(n) = a.max_consumers {
        cfg = cfg.max_consumers(n);
    }
    if let Some(d) = a.description {
        cfg = cfg.description(d);
    }
    if let Some(m) = a.per_key_ttl {
        cfg = cfg.per_key_ttl(m);
    }
    if a.placement_cluster.is_some() || !a.placement_tag.is_empty() {
        cfg = cfg.placement(Placement {
            cluster: a.placement_cluster,
            tags: a.placement_tag,
        });
    }
    if let (Some(source), Some(destination)) = (a.republish_source, a.republish_destination) {
        cfg = cfg.republish(Republish {
            source,
            destination,
            headers_only: a.republish_headers_only,
        });
    }
    let source = |name: String| Source {
        name,
        ..Default::default()
    };
    if let Some(m) = a.mirror {
        cfg = cfg.mirror(source(m));
    }
    if !a.source.is_empty() {
        cfg = cfg.sources(a.source.into_iter().map(source).collect());
    }
    let b = kv.create_bucket(cfg).await?;
    print_line(format!("bucket {} ready", b.name()))?;
    Ok(0)
}

fn status_json(s: &Status) -> Value {
    json!({
        "bucket": s.bucket,
        "values": s.values,
        "bytes": s.bytes,
        "history": s.history,
        "ttl_secs": s.ttl.as_secs_f64(),
        "storage": format!("{:?}", s.storage).to_lowercase(),
        "replicas": s.replicas,
        "compression": s.compression,
        "per_key_ttl": s.per_key_ttl.is_some(),
        "marker_ttl_secs": s.per_key_ttl.map(|d| d.as_secs_f64()),
        "atomic_batches": s.atomic_batches,
        "backing_stream": s.backing_stream,
        "description": s.stream_info.config.description,
    })
}

async fn info(b: &Bucket, json: bool) -> Result<u8> {
    let s = status_json(&b.status().await?);
    if json {
        print_json(&s)?;
    } else if let Value::Object(fields) = s {
        for (k, v) in fields {
            print_line(format!("{k}: {}", human(&v)))?;
        }
    }
    Ok(0)
}

/// A JSON value for people: strings bare, null as "-".
fn human(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".to_string(),
        other => other.to_string(),
    }
}

async fn rm(kv: &Kv, bucket: &str, yes: bool) -> Result<u8> {
    open(kv, bucket).await?;
    confirm(&format!("delete bucket {bucket} and all its data?"), yes)?;
    kv.delete_bucket(bucket).await?;
    print_line(format!("bucket {bucket} deleted"))?;
    Ok(0)
}

/// An entry as JSON: the value as text when it is UTF-8, else base64 in `value_base64`.
pub(crate) fn entry_json(e: &Entry) -> Value {
    let (text, b64) = match std::str::from_utf8(e.value()) {
        Ok(t) => (Some(t), None),
        Err(_) => (
            None,
            Some(base64::engine::general_purpose::STANDARD.encode(e.value())),
        ),
    };
    json!({
        "bucket": e.bucket(),
        "key": e.key().as_str(),
        "revision": e.revision().get(),
        "operation": op_name(e),
        "created": rfc3339(e.created()),
        "ttl_secs": e.ttl().map(|d| d.as_secs()),
        "value": text,
        "value_base64": b64,
    })
}

fn op_name(e: &Entry) -> String {
    match e.removal() {
        Some(r) => format!("{r:?}").to_lowercase(),
        None => "put".to_string(),
    }
}

/// An entry on one line for people: revision, operation, key and value.
fn entry_line(e: &Entry) -> String {
    let value = String::from_utf8_lossy(e.value());
    match e.removal() {
        None => format!("{} put {} = {value}", e.revision(), e.key()),
        Some(_) => format!("{} {} {}", e.revision(), op_name(e), e.key()),
    }
}

async fn get(b: &Bucket, key: &str, rev: Option<Revision>, json: bool) -> Result<u8> {
    let entry = match rev {
        Some(r) => b.entry_at(key, r).await?,
        None => b.get(key).await?,
    };
    let Some(e) = entry else {
        let at = rev.map(|r| format!(" at revision {r}")).unwrap_or_default();
        return Err(CliError::msg(format!("key {key} not found{at}")));
    };
    if json {
        print_json(&entry_json(&e))?;
        return Ok(0);
    }
    let mut out = std::io::stdout().lock();
    out.write_all(e.value())?;
    if std::io::stdout().is_terminal() {
        writeln!(out)?;
    }
    out.flush()?;
    Ok(0)
}

async fn history(b: &Bucket, key: &str, json: bool) -> Result<u8> {
    let entries = b.history(key).await?;
    if json {
        print_json(&entries.iter().map(entry_json).collect::<Vec<_>>())?;
    } else {
        for e in &entries {
            print_line(format!("{}  {}", rfc3339(e.created()), entry_line(e)))?;
        }
    }
    Ok(0)
}

async fn keys(b: &Bucket, filter: Option<&str>, json: bool) -> Result<u8> {
    let keys = b.keys(filter.unwrap_or(">")).await?;
    let keys: Vec<&str> = keys.iter().map(|k| k.as_str()).collect();
    if json {
        print_json(&keys)?;
    } else {
        for k in keys {
            print_line(k)?;
        }
    }
    Ok(0)
}

async fn watch(
    b: &Bucket,
    filter: Option<&str>,
    include: Include,
    from: Option<Revision>,
    json: bool,
) -> Result<u8> {
    let mut builder = b.watch([filter.unwrap_or(">")]).include(include);
    if let Some(r) = from {
        builder = builder.from_revision(r);
    }
    let mut w = builder.await?;
    let mut signals = crate::child::Signals::new()?;
    loop {
        tokio::select! {
            ev = w.next() => match ev {
                Some(Ok(WatchEvent::Entry(e))) if json => print_json(&entry_json(&e))?,
                Some(Ok(WatchEvent::Entry(e))) => print_line(entry_line(&e))?,
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(e.into()),
                None => return Err(CliError::msg("the watch ended")),
            },
            sig = signals.recv() => if crate::elect::stops(sig) {
                return Ok(crate::child::signal_exit(sig));
            },
        }
    }
}
