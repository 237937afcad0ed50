//! `kvtk kv ls|edit|compact`: buckets with their settings, changing settings, removing old
//! delete markers (kvtk-core's `Kv::buckets`, `Kv::update_bucket`, `Bucket::compact`).

use std::time::Duration;

use kvtk_core::{BucketInfo, BucketUpdate, Kv};

use crate::error::{CliError, Result};
use crate::util::{confirm, parse_duration, print_json, print_line};

/// `none`, or a value.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Limit<T>(Option<T>);

fn limit<T: std::str::FromStr>(s: &str) -> std::result::Result<Limit<T>, String> {
    if s == "none" {
        return Ok(Limit(None));
    }
    s.parse()
        .map(|v| Limit(Some(v)))
        .map_err(|_| format!("{s:?} is not a number (or none)"))
}

fn duration_limit(s: &str) -> std::result::Result<Limit<Duration>, String> {
    if s == "none" {
        return Ok(Limit(None));
    }
    parse_duration(s).map(|d| Limit(Some(d)))
}

fn on_off(s: &str) -> std::result::Result<bool, String> {
    match s {
        "on" | "true" | "yes" => Ok(true),
        "off" | "false" | "no" => Ok(false),
        _ => Err(format!("{s:?}: say on or off")),
    }
}

#[derive(clap::Args)]
pub(crate) struct EditArgs {
    /// Bucket name
    bucket: String,
    /// Revisions kept per key (1..=64)
    #[arg(long)]
    history: Option<i64>,
    /// Maximum age of a value (`none`: no limit)
    #[arg(long, value_name = "DURATION|none", value_parser = duration_limit)]
    ttl: Option<Limit<Duration>>,
    /// Largest bucket in bytes (`none`: no limit)
    #[arg(long, value_name = "BYTES|none", value_parser = limit::<i64>)]
    max_bucket_size: Option<Limit<i64>>,
    /// Largest value in bytes (`none`: no limit)
    #[arg(long, value_name = "BYTES|none", value_parser = limit::<i32>)]
    max_value_size: Option<Limit<i32>>,
    /// Most consumers (watches) the bucket accepts (`none`: the server's default, 1,000 on
    /// nats-server 2.15)
    #[arg(long, value_name = "N|none", value_parser = limit::<u32>)]
    max_consumers: Option<Limit<u32>>,
    /// Replicas (1, 3 or 5 in a cluster)
    #[arg(long)]
    replicas: Option<usize>,
    /// Turn per-key TTLs on (they cannot be turned off); DURATION is how long markers stay
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    per_key_ttl: Option<Duration>,
    /// Compress stored values
    #[arg(long, value_name = "on|off", value_parser = on_off)]
    compression: Option<bool>,
    /// Atomic multi-key batches (transactions)
    #[arg(long, value_name = "on|off", value_parser = on_off)]
    atomic_batches: Option<bool>,
    /// Description
    #[arg(long)]
    description: Option<String>,
    /// Print the bucket's settings as JSON
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args)]
pub(crate) struct CompactArgs {
    /// Bucket name
    bucket: String,
    /// Remove markers older than this, with the history below them; younger markers stay,
    /// only the history below them goes
    #[arg(long, value_name = "DURATION", default_value = "30m", value_parser = parse_duration)]
    older_than: Duration,
    /// Do not ask for confirmation
    #[arg(long, short = 'y')]
    yes: bool,
    /// Print what was removed as JSON
    #[arg(long)]
    json: bool,
}

/// `kvtk kv ls`: one line per bucket with its settings (`--json`: the names; with `--long`
/// every setting).
pub(crate) async fn ls(kv: &Kv, json: bool, long: bool) -> Result<u8> {
    let buckets = kv.buckets().await?;
    match (json, long) {
        (true, true) => print_json(&buckets)?,
        (true, false) => print_json(&buckets.iter().map(|b| &b.name).collect::<Vec<_>>())?,
        (false, _) => {
            for b in &buckets {
                print_line(line(b))?;
            }
        }
    }
    Ok(0)
}

/// A bucket's settings on one line.
fn line(b: &BucketInfo) -> String {
    let d = |d: Option<Duration>| {
        d.map_or("-".to_string(), |d| {
            humantime::format_duration(d).to_string()
        })
    };
    let n = |n: Option<i64>| n.map_or("-".to_string(), |n| n.to_string());
    let mut s = format!(
        "{}  history {}  keys {}  messages {}  bytes {}  replicas {}  {}{}  per-key-ttl {}  max-age {}  max-bytes {}  max-value {}  consumers {}/{}  atomic {}",
        b.name,
        b.history,
        b.keys,
        b.values,
        b.bytes,
        b.replicas,
        format!("{:?}", b.storage).to_lowercase(),
        if b.compression { "+s2" } else { "" },
        b.marker_ttl.map_or("off".to_string(), |t| format!("on (markers {})", d(Some(t)))),
        d(b.max_age),
        n(b.max_bytes),
        n(b.max_value_size),
        b.consumers,
        b.max_consumers.map_or("default".to_string(), |n| n.to_string()),
        if b.atomic_batches { "on" } else { "off" },
    );
    if let Some(m) = &b.mirror_of {
        s.push_str(&format!("  mirror-of {m}"));
    }
    if let Some(l) = &b.leader {
        s.push_str(&format!("  leader {l}"));
    }
    s
}

/// `kvtk kv edit BUCKET …`: changes settings; prints the bucket as it is now.
pub(crate) async fn edit(kv: &Kv, a: EditArgs) -> Result<u8> {
    let mut u = BucketUpdate::new();
    if let Some(h) = a.history {
        u = u.history(h);
    }
    if let Some(Limit(t)) = a.ttl {
        u = u.max_age(t);
    }
    if let Some(Limit(n)) = a.max_bucket_size {
        u = u.max_bytes(n);
    }
    if let Some(Limit(n)) = a.max_value_size {
        u = u.max_value_size(n);
    }
    if let Some(Limit(n)) = a.max_consumers {
        u = u.max_consumers(n);
    }
    if let Some(r) = a.replicas {
        u = u.replicas(r);
    }
    if let Some(t) = a.per_key_ttl {
        u = u.per_key_ttl(t);
    }
    if let Some(c) = a.compression {
        u = u.compression(c);
    }
    if let Some(on) = a.atomic_batches {
        u = u.atomic_batches(on);
    }
    if let Some(d) = a.description {
        u = u.description(d);
    }
    if u == BucketUpdate::new() {
        return Err(CliError::new(
            crate::error::code::USAGE,
            "nothing to change: give at least one setting (see kvtk kv edit --help)",
        ));
    }
    let info = kv
        .update_bucket(&a.bucket, u)
        .await
        .map_err(|e| bucket_error(&a.bucket, e))?;
    if a.json {
        print_json(&info)?;
    } else {
        print_line(line(&info))?;
    }
    Ok(0)
}

/// `kvtk kv compact BUCKET --older-than D`: removes old delete markers.
pub(crate) async fn compact(kv: &Kv, a: CompactArgs) -> Result<u8> {
    let b = crate::kv::open(kv, &a.bucket).await?;
    let age = humantime::format_duration(a.older_than);
    confirm(
        &format!(
            "remove delete markers older than {age} from bucket {} (and the history below every marker)?",
            a.bucket
        ),
        a.yes,
    )?;
    let done = b.compact(a.older_than).await?;
    if a.json {
        print_json(&done)?;
    } else {
        print_line(format!(
            "removed {} delete markers older than {age}; kept {} younger ones; {} messages removed",
            done.markers_removed, done.markers_kept, done.messages_removed
        ))?;
    }
    Ok(0)
}

/// A missing bucket said plainly; anything else as the library says it.
fn bucket_error(bucket: &str, e: kvtk_core::Error) -> CliError {
    match e.kind() {
        kvtk_core::ErrorKind::BucketNotFound => CliError::msg(format!("bucket {bucket} not found")),
        _ => CliError::from(e).within(format!("cannot change bucket {bucket}")),
    }
}
