//! The doctor's answer: findings with a severity, a stable code, a message and the fix.

use std::fmt;
use std::time::Duration;

use kvtk_core::{ServerVersion, Storage};
use serde::{Serialize, Serializer};

use crate::intent::Intent;

/// How bad a finding is. Ordered: `Info < Warning < Error`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Worth knowing; nothing is at risk because of it.
    Info,
    /// Availability or a feature is at risk, or a setting could not be checked.
    Warning,
    /// A promise of the toolkit (fencing tokens, terms, acknowledged writes) can break.
    Error,
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Error => "error",
        })
    }
}

/// What a finding is about: a stable code, for scripts and for silencing a known finding.
/// New codes may be added; existing ones keep their meaning and spelling.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum Code {
    /// A server hosting the bucket is older than 2.12.4 (Jepsen's 2.12.1 analysis).
    ServerTooOld,
    /// `sync_interval` is not `always` on a server hosting the bucket.
    SyncNotAlways,
    /// `sync_interval` could not be read (no system-account client, or it was refused).
    SyncUnchecked,
    /// Fewer than three replicas.
    FewReplicas,
    /// Memory storage.
    MemoryStorage,
    /// `persist_mode: async`: writes are acknowledged before they are stored.
    PersistAsync,
    /// Per-key TTLs (`allow_msg_ttl`) are off.
    PerKeyTtlOff,
    /// Atomic batches (`allow_atomic`) are off.
    AtomicBatchesOff,
    /// More than one revision kept per key on a bucket of leases.
    HistoryNotOne,
    /// The lease TTL is not longer than a stream-leader election.
    LeaseTtlBelowElection,
    /// No lease TTL was given, so it could not be compared with an election.
    LeaseTtlUnchecked,
    /// The stream's consumers reach 80 % of the most it accepts.
    ConsumersNearLimit,
    /// The bucket is a mirror: it takes no writes.
    Mirror,
    /// A mirror that removes keys on its own clock (per-key TTLs or a max age).
    MirrorExpires,
}

impl Code {
    /// The code as printed and serialised, e.g. `sync-not-always`.
    pub fn as_str(self) -> &'static str {
        match self {
            Code::ServerTooOld => "server-too-old",
            Code::SyncNotAlways => "sync-not-always",
            Code::SyncUnchecked => "sync-unchecked",
            Code::FewReplicas => "few-replicas",
            Code::MemoryStorage => "memory-storage",
            Code::PersistAsync => "persist-async",
            Code::PerKeyTtlOff => "per-key-ttl-off",
            Code::AtomicBatchesOff => "atomic-batches-off",
            Code::HistoryNotOne => "history-not-one",
            Code::LeaseTtlBelowElection => "lease-ttl-below-election",
            Code::LeaseTtlUnchecked => "lease-ttl-unchecked",
            Code::ConsumersNearLimit => "consumers-near-limit",
            Code::Mirror => "mirror",
            Code::MirrorExpires => "mirror-expires",
        }
    }
}

impl fmt::Display for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One thing the doctor found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct Finding {
    /// How bad it is.
    pub severity: Severity,
    /// What it is about (stable).
    pub code: Code,
    /// What is wrong and why it matters, for people.
    pub message: String,
    /// What to change.
    pub fix: String,
}

impl Finding {
    pub(crate) fn new(
        severity: Severity,
        code: Code,
        message: impl Into<String>,
        fix: impl Into<String>,
    ) -> Finding {
        Finding {
            severity,
            code,
            message: message.into(),
            fix: fix.into(),
        }
    }
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}[{}]: {}\n  fix: {}",
            self.severity, self.code, self.message, self.fix
        )
    }
}

/// `sync_interval` of one server, as its VARZ reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SyncSetting {
    /// `sync_interval: always`: every write is fsynced before it is acknowledged.
    Always,
    /// fsync in the background at this interval (the default is 2 minutes).
    Interval(#[serde(serialize_with = "secs")] Duration),
}

/// Durations serialise as seconds (a number), not serde's `{secs, nanos}`.
fn secs<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64())
}

/// A server that hosts the bucket (or, without a system-account client, the one the client
/// is connected to).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct ServerFacts {
    /// The server name.
    pub name: String,
    /// Its version, when known.
    #[serde(serialize_with = "version")]
    pub version: Option<ServerVersion>,
    /// Its `sync_interval`, when it could be read.
    pub sync: Option<SyncSetting>,
}

fn version<S: Serializer>(v: &Option<ServerVersion>, s: S) -> Result<S::Ok, S::Error> {
    match v {
        Some(v) => s.collect_str(v),
        None => s.serialize_none(),
    }
}

/// The doctor's report on one bucket: what it looked at and what it found, worst first.
///
/// `Display` prints a summary line and one block per finding; serialise it (serde) for JSON.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct Report {
    /// The bucket.
    pub bucket: String,
    /// What it was checked for.
    pub intent: Intent,
    /// Replicas of its stream.
    pub replicas: usize,
    /// Its storage.
    pub storage: Storage,
    /// The origin stream, when the bucket is a mirror.
    pub mirror_of: Option<String>,
    /// The servers hosting it, as far as they could be seen.
    pub servers: Vec<ServerFacts>,
    /// The findings, worst first (then by code).
    pub findings: Vec<Finding>,
}

impl Report {
    /// The worst severity found, `None` for a clean report.
    pub fn worst(&self) -> Option<Severity> {
        self.findings.iter().map(|f| f.severity).max()
    }

    /// Whether nothing of severity `Error` was found: the toolkit can keep its promises here.
    pub fn is_safe(&self) -> bool {
        self.worst() < Some(Severity::Error)
    }

    /// The findings of exactly this severity.
    pub fn of(&self, severity: Severity) -> impl Iterator<Item = &Finding> {
        self.findings.iter().filter(move |f| f.severity == severity)
    }

    /// The finding with this code, if any.
    pub fn find(&self, code: Code) -> Option<&Finding> {
        self.findings.iter().find(|f| f.code == code)
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let storage = match self.storage {
            Storage::File => "file",
            Storage::Memory => "memory",
        };
        let recipes: Vec<&str> = self.intent.recipes().map(|r| r.as_str()).collect();
        write!(
            f,
            "bucket {:?} (R{}, {storage} storage) for {}: ",
            self.bucket,
            self.replicas,
            recipes.join(", ")
        )?;
        let count = |s| self.of(s).count();
        write!(
            f,
            "{} error(s), {} warning(s), {} note(s)",
            count(Severity::Error),
            count(Severity::Warning),
            count(Severity::Info)
        )?;
        for finding in &self.findings {
            write!(f, "\n{finding}")?;
        }
        Ok(())
    }
}
