//! `kvtk locks …`: who holds what, and an operator's eviction.

use kvtk_locks::{LockInfo, LockName, Locks, QueueEntry};
use serde_json::{json, Value};

use crate::connect::{connect, ConnectArgs};
use crate::error::{CliError, Result};
use crate::util::{confirm, print_json, print_line, system_time};

#[derive(clap::Subcommand)]
pub(crate) enum LocksCmd {
    /// List the locks with live entries: holders, tokens, waiters
    Ls {
        #[command(flatten)]
        bucket: BucketArg,
        /// Print JSON
        #[arg(long)]
        json: bool,
    },
    /// Show one lock: every holder and waiter with token, identity and queue time
    Show {
        /// Lock name
        name: String,
        #[command(flatten)]
        bucket: BucketArg,
        /// Print JSON
        #[arg(long)]
        json: bool,
    },
    /// Evict the holders of a lock (or the entry with --token): a compare-and-set delete of
    /// their queue entries; each evicted holder learns of it at its next renewal
    Release {
        /// Lock name
        name: String,
        /// Required: this evicts a live holder
        #[arg(long, required = true)]
        force: bool,
        /// Evict only the entry with this token (a holder or a waiter)
        #[arg(long)]
        token: Option<u64>,
        /// Do not ask for confirmation
        #[arg(long, short = 'y')]
        yes: bool,
        #[command(flatten)]
        bucket: BucketArg,
    },
}

#[derive(clap::Args)]
pub(crate) struct BucketArg {
    /// Bucket of the locks
    #[arg(long, default_value = "locks", env = "KVTK_LOCK_BUCKET")]
    bucket: String,
}

pub(crate) async fn run(cmd: LocksCmd, conn: &ConnectArgs) -> Result<u8> {
    let kv = connect(conn).await?;
    let open = |b: &BucketArg| {
        let (kv, name) = (kv.clone(), b.bucket.clone());
        async move { Ok::<_, CliError>(Locks::new(crate::kv::open(&kv, &name).await?).await?) }
    };
    // Nobody has locked anything yet: the bucket does not exist, and there is no lock.
    let missing = |b: &BucketArg| {
        let (kv, name) = (kv.clone(), b.bucket.clone());
        async move {
            matches!(kv.open(&name).await, Err(e) if e.kind() == kvtk_core::ErrorKind::BucketNotFound)
        }
    };
    match cmd {
        LocksCmd::Ls { bucket, json } if missing(&bucket).await => {
            if json {
                print_json(&Vec::<Value>::new())?;
            }
            Ok(0)
        }
        LocksCmd::Show { name, bucket, json } if missing(&bucket).await => {
            let free = LockInfo {
                name: LockName::new(name)?.as_str().to_string(),
                permits: None,
                holders: Vec::new(),
                waiters: Vec::new(),
                as_of: None,
            };
            if json {
                print_json(&info_json(&free))?;
            } else {
                show(&free)?;
            }
            Ok(0)
        }
        LocksCmd::Ls { bucket, json } => ls(&open(&bucket).await?, json).await,
        LocksCmd::Show { name, bucket, json } => {
            let info = open(&bucket).await?.inspect(&name).await?;
            if json {
                print_json(&info_json(&info))?;
            } else {
                show(&info)?;
            }
            Ok(0)
        }
        LocksCmd::Release {
            name,
            token,
            yes,
            bucket,
            force: _,
        } => release(&open(&bucket).await?, &name, token, yes).await,
    }
}

fn entry_json(e: &QueueEntry) -> Value {
    json!({
        "key": e.key,
        "token": e.token.get(),
        "revision": e.revision.get(),
        "kind": format!("{:?}", e.kind).to_lowercase(),
        "holder": e.holder.as_ref().map(|h| h.id.clone()),
        "host": e.holder.as_ref().and_then(|h| h.host.clone()),
        "pid": e.holder.as_ref().and_then(|h| h.pid),
        "queued_at": e.queued_at.map(system_time),
    })
}

fn info_json(i: &LockInfo) -> Value {
    json!({
        "name": i.name,
        "permits": i.permits,
        "holders": i.holders.iter().map(entry_json).collect::<Vec<_>>(),
        "waiters": i.waiters.iter().map(entry_json).collect::<Vec<_>>(),
        "as_of": i.as_of.map(|r| r.get()),
    })
}

async fn ls(locks: &Locks, json: bool) -> Result<u8> {
    let mut infos = Vec::new();
    for name in locks.names().await? {
        infos.push(locks.inspect(&name).await?);
    }
    if json {
        print_json(&infos.iter().map(info_json).collect::<Vec<_>>())?;
        return Ok(0);
    }
    for i in &infos {
        let holders: Vec<String> = i.holders.iter().map(who).collect();
        print_line(format!(
            "{}  held by {}  waiting: {}",
            i.name,
            if holders.is_empty() {
                "nobody".to_string()
            } else {
                holders.join(", ")
            },
            i.waiters.len()
        ))?;
    }
    Ok(0)
}

/// `host/pid (token 12)`.
fn who(e: &QueueEntry) -> String {
    let id = e.holder.as_ref().map_or("unknown", |h| h.id.as_str());
    format!("{id} (token {})", e.token)
}

fn show(i: &LockInfo) -> Result<()> {
    print_line(format!("lock {}", i.name))?;
    if let Some(n) = i.permits {
        print_line(format!("permits: {n}"))?;
    }
    for (label, entries) in [("holder", &i.holders), ("waiter", &i.waiters)] {
        for e in entries {
            let since = e.queued_at.map(system_time).unwrap_or_else(|| "-".into());
            print_line(format!(
                "{label}: {}  kind {:?}  queued {since}",
                who(e),
                e.kind
            ))?;
        }
    }
    if i.holders.is_empty() && i.waiters.is_empty() {
        print_line("free")?;
    }
    Ok(())
}

async fn release(locks: &Locks, name: &str, token: Option<u64>, yes: bool) -> Result<u8> {
    let info = locks.inspect(name).await?;
    let targets: Vec<&QueueEntry> = match token {
        Some(t) => info
            .holders
            .iter()
            .chain(&info.waiters)
            .filter(|e| e.token.get() == t)
            .collect(),
        None => info.holders.iter().collect(),
    };
    if targets.is_empty() {
        let what = token.map_or("holder".to_string(), |t| format!("entry with token {t}"));
        return Err(CliError::msg(format!("lock {name} has no {what}")));
    }
    let list: Vec<String> = targets.iter().map(|e| who(e)).collect();
    confirm(&format!("evict {} from lock {name}?", list.join(", ")), yes)?;
    for e in targets {
        let evicted = locks.force_release(name, e.token).await?;
        let word = if evicted { "evicted" } else { "already gone:" };
        print_line(format!("{word} {}", who(e)))?;
    }
    Ok(0)
}
