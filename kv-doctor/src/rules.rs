//! The pure rules: from what was seen of a bucket and its servers, and what the bucket is
//! for, to findings. No I/O, so every rule is table-tested.

use std::time::Duration;

use kvtk_core::lease::{REPLICATED_TTL, STREAM_LEADER_ELECTION};
use kvtk_core::{ServerVersion, Storage};

use crate::intent::{Intent, Recipe};
use crate::report::{Code, Finding, ServerFacts, Severity, SyncSetting};

/// The first release with every fix for the data loss Jepsen found in nats-server 2.12.1.
pub const FIXED_SERVER: ServerVersion = ServerVersion::new(2, 12, 4);

/// What the doctor saw.
#[derive(Debug, Clone)]
pub(crate) struct Facts {
    pub(crate) bucket: String,
    pub(crate) replicas: usize,
    pub(crate) storage: Storage,
    pub(crate) persist_async: bool,
    pub(crate) per_key_ttl: bool,
    pub(crate) atomic: bool,
    pub(crate) history: i64,
    pub(crate) mirror_of: Option<String>,
    /// The stream removes messages on its own clock (per-key TTLs or a max age).
    pub(crate) expires: bool,
    pub(crate) servers: Vec<ServerFacts>,
    /// Why `sync_interval` could not be read on the servers whose `sync` is `None`.
    pub(crate) sync_unknown: Option<String>,
    /// Consumers on the stream now.
    pub(crate) consumers: u64,
    /// The stream's own consumer limit (≤ 0: none, the server's default applies).
    pub(crate) max_consumers: i64,
}

/// The first release that limits a stream without a consumer limit of its own to
/// [`DEFAULT_MAX_CONSUMERS`].
pub const CONSUMER_LIMIT_SERVER: ServerVersion = ServerVersion::new(2, 15, 0);

/// nats-server's consumer limit of a stream that sets none (measured on 2.15.1).
pub const DEFAULT_MAX_CONSUMERS: u64 = 1_000;

/// Every finding, worst first, then by code.
pub(crate) fn findings(facts: &Facts, intent: &Intent) -> Vec<Finding> {
    let mut out: Vec<Finding> = server_too_old(facts).into_iter().collect();
    out.extend(consumers_near_limit(facts));
    if facts.mirror_of.is_some() {
        out.extend(mirror(facts, intent));
        out.extend(mirror_expires(facts));
    } else {
        out.extend(sync(facts, intent));
        out.extend(few_replicas(facts, intent));
        out.extend(memory_storage(facts, intent));
        out.extend(persist_async(facts, intent));
        out.extend(per_key_ttl(facts, intent));
        out.extend(atomic_batches(facts, intent));
        out.extend(history(facts, intent));
        out.extend(lease_ttl(facts, intent));
    }
    out.sort_by(|a, b| b.severity.cmp(&a.severity).then(a.code.cmp(&b.code)));
    out
}

fn server_too_old(facts: &Facts) -> Option<Finding> {
    let old: Vec<String> = facts
        .servers
        .iter()
        .filter_map(|s| Some((s, s.version?)))
        .filter(|(_, v)| *v < FIXED_SERVER)
        .map(|(s, v)| format!("{} ({v})", s.name))
        .collect();
    (!old.is_empty()).then(|| {
        Finding::new(
            Severity::Error,
            Code::ServerTooOld,
            format!(
                "nats-server {} is older than {FIXED_SERVER}: Jepsen's analysis of 2.12.1 found \
                 acknowledged writes lost and fixes landed through {FIXED_SERVER}; a lost write \
                 lets the server issue the same revision (fencing token, term) twice",
                old.join(", ")
            ),
            format!("upgrade every server to nats-server {FIXED_SERVER} or newer"),
        )
    })
}

/// The consumer limit that holds the stream: its own, or the server's default for a stream
/// without one on a server that has that default.
fn consumer_limit(facts: &Facts) -> Option<u64> {
    let defaulted = facts
        .servers
        .iter()
        .any(|s| s.version.is_some_and(|v| v >= CONSUMER_LIMIT_SERVER));
    u64::try_from(facts.max_consumers)
        .ok()
        .filter(|n| *n > 0)
        .or(defaulted.then_some(DEFAULT_MAX_CONSUMERS))
}

/// `consumers-near-limit` at 80 % of the limit: at the limit every new watch fails.
fn consumers_near_limit(facts: &Facts) -> Option<Finding> {
    let limit = consumer_limit(facts)?;
    (facts.consumers * 5 >= limit * 4).then(|| {
        Finding::new(
            Severity::Warning,
            Code::ConsumersNearLimit,
            format!(
                "the stream carries {} consumers of the {limit} it accepts: every watch is one                  (each waiting lock acquirer, each process's config readers, each observer and                  watcher), and at the limit new ones fail with \"maximum consumers limit                  reached\"",
                facts.consumers
            ),
            format!(
                "raise the bucket's limit: `kvtk kv edit {} --max-consumers N`                  (kvtk-core: BucketUpdate::max_consumers); without one of its own a stream                  gets nats-server's default, {DEFAULT_MAX_CONSUMERS} since                  {CONSUMER_LIMIT_SERVER}",
                facts.bucket
            ),
        )
    })
}

fn sync(facts: &Facts, intent: &Intent) -> Option<Finding> {
    if facts.storage == Storage::Memory {
        return None; // memory_storage says worse
    }
    let lax = lax_servers(facts);
    if lax.is_empty() {
        sync_unchecked(facts, intent)
    } else {
        Some(sync_not_always(facts, intent, &lax))
    }
}

/// The servers that fsync on an interval, named with it: `n0 (every 2 min)`.
fn lax_servers(facts: &Facts) -> Vec<String> {
    facts
        .servers
        .iter()
        .filter_map(|s| match s.sync? {
            SyncSetting::Interval(d) => Some(format!("{} (every {})", s.name, secs(d))),
            SyncSetting::Always => None,
        })
        .collect()
}

/// Whether a lost log tail reissues revisions that are fencing tokens or terms: one replica
/// holding locks or elections.
fn single_and_fencing(facts: &Facts, intent: &Intent) -> bool {
    facts.replicas == 1 && intent.fences()
}

/// `sync-not-always` on the `lax` servers: how bad depends on replicas and recipes.
fn sync_not_always(facts: &Facts, intent: &Intent, lax: &[String]) -> Finding {
    let (severity, why) = if single_and_fencing(facts, intent) {
        (
            Severity::Error,
            format!(
                "the bucket has one replica and holds {}: after a power loss or OS crash the \
                 unsynced tail of its log is gone and the same revisions — fencing tokens, \
                 terms — are issued again",
                intent.named(Recipe::fences)
            ),
        )
    } else if facts.replicas == 1 {
        (
            Severity::Warning,
            "the bucket has one replica: a power loss or OS \
             crash loses acknowledged writes (up to the sync interval)"
                .to_string(),
        )
    } else {
        (
            Severity::Info,
            "replication covers a single crash, but a power loss \
             that takes down a majority of the replicas at once can lose acknowledged writes \
             (Jepsen, nats-server 2.12.1)"
                .to_string(),
        )
    };
    Finding::new(
        severity,
        Code::SyncNotAlways,
        format!("sync_interval is not `always` on {}: {why}", lax.join(", ")),
        "set `jetstream { sync_interval: always }` on every server hosting the bucket \
         (etcd's durability), or use an R3 bucket",
    )
}

/// `sync-unchecked` when a server's sync setting could not be read.
fn sync_unchecked(facts: &Facts, intent: &Intent) -> Option<Finding> {
    let unchecked = facts.servers.iter().any(|s| s.sync.is_none());
    unchecked.then(|| {
        let reason = facts
            .sync_unknown
            .as_deref()
            .unwrap_or("no server reported it");
        Finding::new(
            if single_and_fencing(facts, intent) {
                Severity::Warning
            } else {
                Severity::Info
            },
            Code::SyncUnchecked,
            format!(
                "could not read the servers' sync_interval ({reason}); on a one-replica bucket \
                 of locks or elections anything but `always` lets revisions be issued twice \
                 after a power loss"
            ),
            "give the doctor a client of the system account (Doctor::system_account, or the \
             CLI's system-account credentials), or check `jetstream { sync_interval: always }` \
             in each server's configuration",
        )
    })
}

fn few_replicas(facts: &Facts, intent: &Intent) -> Option<Finding> {
    if facts.replicas >= 3 || !intent.fences() {
        return None;
    }
    let why = if facts.replicas == 1 {
        "while its one server is down or restarting, no lock can be taken or released and no \
         leader elected, and only `sync_interval: always` keeps its revisions after a crash"
    } else {
        "two replicas survive no server loss (a majority of two is two)"
    };
    Some(Finding::new(
        Severity::Warning,
        Code::FewReplicas,
        format!(
            "the bucket holds {} on {} replica(s): {why}",
            intent.named(Recipe::fences),
            facts.replicas
        ),
        format!(
            "run at least three servers and set the stream KV_{}'s replicas to 3 (a stream \
             update, e.g. `nats stream edit KV_{} --replicas 3`)",
            facts.bucket, facts.bucket
        ),
    ))
}

fn memory_storage(facts: &Facts, intent: &Intent) -> Option<Finding> {
    if facts.storage != Storage::Memory {
        return None;
    }
    let (severity, why) = if intent.fences() {
        (
            Severity::Error,
            format!(
                "when its servers restart the bucket starts over at revision 1, so {} hand out \
                 fencing tokens and terms that were already used",
                intent.named(Recipe::fences)
            ),
        )
    } else {
        (
            Severity::Warning,
            "its data is lost when its servers restart".to_string(),
        )
    };
    Some(Finding::new(
        severity,
        Code::MemoryStorage,
        format!("the bucket is stored in memory: {why}"),
        "create the bucket with file storage (the storage of a stream cannot be changed: \
         create a new bucket and move to it)",
    ))
}

fn persist_async(facts: &Facts, intent: &Intent) -> Option<Finding> {
    if !facts.persist_async {
        return None;
    }
    let severity = if intent.fences() {
        Severity::Error
    } else {
        Severity::Warning
    };
    Some(Finding::new(
        severity,
        Code::PersistAsync,
        "the stream has `persist_mode: async`: writes are acknowledged before they are stored, \
         so a crash loses acknowledged writes and their revisions can be issued again",
        "create the bucket with the default persist_mode (it cannot be changed on an existing \
         stream: create a new bucket and move to it)",
    ))
}

fn per_key_ttl(facts: &Facts, intent: &Intent) -> Option<Finding> {
    if facts.per_key_ttl {
        return None;
    }
    let needs = intent.named(Recipe::needs_per_key_ttl);
    let (severity, message) = if !needs.is_empty() {
        (
            Severity::Error,
            format!(
                "per-key TTLs (allow_msg_ttl) are off: {needs} keep their state in leases that \
                 the server expires, and refuse this bucket"
            ),
        )
    } else if intent.uses(Recipe::Config) {
        (
            Severity::Info,
            "per-key TTLs (allow_msg_ttl) are off: configuration acknowledgements (fleet) are \
             written without a TTL and stay after their readers exit"
                .to_string(),
        )
    } else {
        return None;
    };
    Some(Finding::new(
        severity,
        Code::PerKeyTtlOff,
        message,
        "enable per-key TTLs with expiry markers (BucketConfig::per_key_ttl; on an existing \
         stream, a stream update setting allow_msg_ttl and subject_delete_marker_ttl)",
    ))
}

fn atomic_batches(facts: &Facts, intent: &Intent) -> Option<Finding> {
    if facts.atomic {
        return None;
    }
    let mut needs = Vec::new();
    if intent.uses(Recipe::Locks) {
        needs.push("multi-locks and the KV fence");
    }
    if intent.uses(Recipe::Config) {
        needs.push("prefix-mode configuration writes of several fields");
    }
    (!needs.is_empty()).then(|| {
        Finding::new(
            Severity::Warning,
            Code::AtomicBatchesOff,
            format!(
                "atomic batches (allow_atomic) are off: {} fail with FeatureDisabled",
                needs.join(" and ")
            ),
            "enable atomic batches (BucketConfig::atomic_batches(true); on an existing stream, \
             a stream update setting allow_atomic)",
        )
    })
}

fn history(facts: &Facts, intent: &Intent) -> Option<Finding> {
    let needs = intent.named(Recipe::needs_per_key_ttl);
    (facts.history != 1 && !needs.is_empty()).then(|| {
        Finding::new(
            Severity::Error,
            Code::HistoryNotOne,
            format!(
                "the bucket keeps {} revisions per key: with per-key TTLs an older revision can \
                 reappear when the newest expires (nats-server #6959), and {needs} refuse it",
                facts.history
            ),
            format!(
                "keep one revision per key (max_msgs_per_subject: 1 on the stream KV_{})",
                facts.bucket
            ),
        )
    })
}

fn lease_ttl(facts: &Facts, intent: &Intent) -> Option<Finding> {
    if facts.replicas < 2 || !intent.holds_leases() {
        return None;
    }
    let election = secs(STREAM_LEADER_ELECTION);
    match intent.current_lease() {
        None => Some(Finding::new(
            Severity::Info,
            Code::LeaseTtlUnchecked,
            format!(
                "no lease given: on a replicated bucket no renewal lands while the stream \
                 elects a new leader (up to about {election}), so a lease that does not ride \
                 through one loses healthy holders"
            ),
            "pass the lease your holders use (Intent::lease) to have it checked",
        )),
        Some(lease) if !lease.rides_through_election() => Some(Finding::new(
            Severity::Warning,
            Code::LeaseTtlBelowElection,
            format!(
                "the lease (TTL {}, renewed every {}) does not ride through a stream-leader \
                 election (about {election}): during a routine leader change no renewal lands \
                 and healthy holders lose their locks, leaderships or memberships (safely: \
                 they demote themselves)",
                secs(lease.ttl().as_duration()),
                secs(lease.renew_every())
            ),
            format!(
                "use a lease TTL of at least {} (kvtk_core::lease::REPLICATED_TTL, the recipes' \
                 default on replicated buckets), or renew more often \
                 (LeaseConfig::rides_through_election)",
                secs(REPLICATED_TTL)
            ),
        )),
        Some(_) => None,
    }
}

fn mirror(facts: &Facts, intent: &Intent) -> Option<Finding> {
    let origin = facts.mirror_of.as_deref()?;
    let recipes: Vec<&str> = intent.recipes().map(Recipe::as_str).collect();
    Some(Finding::new(
        Severity::Info,
        Code::Mirror,
        format!(
            "the bucket is a read-only mirror of the stream {origin}: it serves config readers, \
             election observers and membership listings; writes, and the durability of \
             revisions, are the origin's"
        ),
        format!(
            "take locks, campaign, join and write on the origin bucket, and run the doctor on \
             it for {}",
            recipes.join(", ")
        ),
    ))
}

fn mirror_expires(facts: &Facts) -> Option<Finding> {
    facts.expires.then(|| {
        Finding::new(
            Severity::Error,
            Code::MirrorExpires,
            "the mirror removes keys on its own clock (per-key TTLs or a max age): a key can \
             vanish from it without the tombstone or expiry marker its readers would see, and \
             before the origin removed it",
            "recreate the mirror without allow_msg_ttl and max_age: it copies the origin's \
             expiry markers (kvtk-core's BucketConfig refuses both on a mirror)",
        )
    })
}

/// `2 min`, `10 s`, `1.5 s`: short durations for messages.
fn secs(d: Duration) -> String {
    let s = d.as_secs_f64();
    if s >= 60.0 && d.as_secs().is_multiple_of(60) {
        format!("{} min", d.as_secs() / 60)
    } else {
        format!("{s} s")
    }
}

#[cfg(test)]
mod tests;
