//! What consumers see: snapshots, change events and health.

use std::fmt;
use std::ops::Deref;
use std::sync::Arc;
use std::time::SystemTime;

use kvtk_core::Revision;
use serde_json::Value;

use crate::error::Rejection;

/// Where the current value came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Origin {
    /// Read from the KV (with the lower and upper layers applied). A KV with no value yet
    /// gives the defaults, with no revision.
    Kv,
    /// Loaded from the local snapshot file because the KV could not be reached at start.
    SnapshotFile,
}

/// One accepted configuration value, immutable and cheap to share.
///
/// It derefs to the value: `reader.current().db.pool_size`.
#[derive(Debug)]
pub struct Snapshot<T> {
    pub(crate) value: T,
    pub(crate) json: Value,
    pub(crate) revision: Option<Revision>,
    pub(crate) origin: Origin,
    pub(crate) stale: bool,
    pub(crate) loaded_at: SystemTime,
}

impl<T> Snapshot<T> {
    /// The value.
    pub fn value(&self) -> &T {
        &self.value
    }
    /// The value as JSON (the type re-serialized), as compared for deduplication.
    pub fn json(&self) -> &Value {
        &self.json
    }
    /// The KV revision this value was built from (the newest revision of its keys); `None`
    /// when the KV held nothing (defaults).
    pub fn revision(&self) -> Option<Revision> {
        self.revision
    }
    /// Where it came from.
    pub fn origin(&self) -> Origin {
        self.origin
    }
    /// Whether it has not been confirmed against the KV yet (an offline start).
    pub fn is_stale(&self) -> bool {
        self.stale
    }
    /// When this reader accepted it (local clock).
    pub fn loaded_at(&self) -> SystemTime {
        self.loaded_at
    }
}

impl<T> Deref for Snapshot<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.value
    }
}

/// A change of the applied value.
pub struct Change<T> {
    /// The value before.
    pub old: Arc<Snapshot<T>>,
    /// The value now.
    pub new: Arc<Snapshot<T>>,
    /// The KV revision of the new value.
    pub revision: Option<Revision>,
    /// The field paths that changed (`db.pool_size`), sorted.
    pub paths: Vec<String>,
}

impl<T> Clone for Change<T> {
    fn clone(&self) -> Self {
        Change {
            old: self.old.clone(),
            new: self.new.clone(),
            revision: self.revision,
            paths: self.paths.clone(),
        }
    }
}

impl<T> fmt::Debug for Change<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Change")
            .field("revision", &self.revision)
            .field("paths", &self.paths)
            .finish_non_exhaustive()
    }
}

/// An event of a reader (see [`ConfigReader::events`](crate::ConfigReader::events)).
#[non_exhaustive]
pub enum ConfigEvent<T> {
    /// A new value was applied. Sent only when the decoded value really changed.
    Changed(Change<T>),
    /// A candidate was refused; the previous value stays in use.
    Rejected(Rejection),
    /// This subscriber fell behind and missed this many events; `current()` is up to date.
    Lagged(u64),
}

impl<T> Clone for ConfigEvent<T> {
    fn clone(&self) -> Self {
        match self {
            ConfigEvent::Changed(c) => ConfigEvent::Changed(c.clone()),
            ConfigEvent::Rejected(r) => ConfigEvent::Rejected(r.clone()),
            ConfigEvent::Lagged(n) => ConfigEvent::Lagged(*n),
        }
    }
}

impl<T> fmt::Debug for ConfigEvent<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigEvent::Changed(c) => f.debug_tuple("Changed").field(c).finish(),
            ConfigEvent::Rejected(r) => f.debug_tuple("Rejected").field(r).finish(),
            ConfigEvent::Lagged(n) => f.debug_tuple("Lagged").field(n).finish(),
        }
    }
}

/// How a reader is doing.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Health {
    /// The current value has not been confirmed against the KV (offline start, not yet
    /// synced).
    pub stale: bool,
    /// The newest KV revision this reader is in sync with: the current value, or a later
    /// revision that decoded to the same value. `None` before the first sync or when the KV
    /// holds nothing.
    pub applied: Option<Revision>,
    /// The newest refused candidate, while the KV still holds it; cleared when a later
    /// revision is accepted. While set, the running value is older than what the KV holds.
    pub rejected: Option<Rejection>,
    /// When the reader last synced with the KV (local clock).
    pub last_sync: Option<SystemTime>,
}

impl Health {
    /// Neither stale nor holding back a refused candidate.
    pub fn is_healthy(&self) -> bool {
        !self.stale && self.rejected.is_none()
    }
}
