//! Inspection for operators: who holds a lock, since when, with which token, who waits —
//! and a forced release that goes through compare-and-set.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use kvtk_core::Revision;

use crate::checks::stored_permits;
use crate::error::{Error, ErrorKind};
use crate::locks::Locks;
use crate::names::LockName;
use crate::queue::{view, View};
use crate::rule::holders;
use crate::token::Token;
use crate::value::Holder;

/// How a queue entry takes part in its lock.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum EntryKind {
    /// A mutex holder or a read-write lock's writer.
    Exclusive,
    /// A read-write lock's reader.
    Shared,
    /// A semaphore permit.
    Permit,
    /// The value could not be read (written by something else than this library).
    Unknown,
}

/// One live entry of a lock's queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueEntry {
    /// The entry's key.
    pub key: String,
    /// Its fencing token (the ticket that orders the queue).
    pub token: Token,
    /// Its latest revision (renewals move it).
    pub revision: Revision,
    /// Who wrote it, as it says.
    pub holder: Option<Holder>,
    /// How it takes part in the lock.
    pub kind: EntryKind,
    /// When it was queued, by the writer's wall clock (for people; nothing depends on it).
    pub queued_at: Option<SystemTime>,
    /// For an entry of a multi-lock: the names of all its locks (this one included), sorted,
    /// as its value says (kept across renewals). Empty for a plain entry, and for a
    /// multi-lock's entry written by an older kvtk-locks (which did not record them).
    pub multi: Vec<String>,
}

/// A lock's state at one revision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LockInfo {
    /// The lock's name.
    pub name: String,
    /// The semaphore permit count stored for the lock, if it is a semaphore.
    pub permits: Option<u32>,
    /// The entries that hold the lock, lowest token first.
    pub holders: Vec<QueueEntry>,
    /// The entries that wait, in queue order.
    pub waiters: Vec<QueueEntry>,
    /// The revision the view was taken at.
    pub as_of: Option<Revision>,
}

impl Locks {
    /// The lock `name` as it stands: holders and waiters with their tokens and metadata.
    ///
    /// # Cancel safety
    /// Cancel safe: it only reads.
    pub async fn inspect(&self, name: &str) -> Result<LockInfo, Error> {
        let s = self.mutex(name)?.shared();
        Ok(info(&s.name, view(&s, None).await?))
    }

    /// The names of all locks with at least one live queue entry.
    ///
    /// # Cancel safety
    /// Cancel safe: it only reads.
    pub async fn names(&self) -> Result<Vec<String>, Error> {
        let keys = self.bucket().keys(">").await?;
        let mut names: Vec<String> = keys
            .iter()
            .filter_map(|k| {
                let (rest, _handle) = k.as_str().rsplit_once('.')?;
                rest.strip_suffix("._q").map(str::to_string)
            })
            .collect();
        names.sort();
        names.dedup();
        Ok(names)
    }

    /// Evicts the holder (or waiter) with `token` from lock `name`: deletes its queue entry
    /// conditional on the entry's revision, so nothing else is touched. The evicted holder's
    /// next renewal conflicts, so its `lost()` fires (with [`LostReason::Taken`]) and its
    /// guarded writes are refused at once; the next waiter is woken as by a release.
    ///
    /// Returns `false` when no live entry has that token (already released, or expired). An
    /// entry that renews between our look and our delete is retried a few times.
    ///
    /// [`LostReason::Taken`]: kvtk_core::lease::LostReason::Taken
    ///
    /// # Cancel safety
    /// Not cancel safe: the delete may be applied although the future was dropped.
    pub async fn force_release(&self, name: &str, token: Token) -> Result<bool, Error> {
        let s = self.mutex(name)?.shared();
        for _ in 0..5 {
            let v = view(&s, None).await?;
            let Some(i) = v.queue.iter().position(|q| q.ticket == token.revision()) else {
                return Ok(false);
            };
            let (key, rev) = (v.queue[i].key.clone(), v.values[i].1);
            match self.bucket().delete(&key).revision(rev).await {
                Ok(_) => {
                    tracing::warn!(lock = %s.name, token = token.get(), "forced release");
                    return Ok(true);
                }
                Err(e) if e.is_conflict() => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(Error::new(
            ErrorKind::Timeout,
            format!("the entry with token {token} of lock {name} kept changing"),
        ))
    }
}

fn info(name: &LockName, v: View) -> LockInfo {
    // The view has checked the count's format already.
    let permits = v
        .permits
        .as_ref()
        .filter(|e| e.is_value())
        .and_then(|e| stored_permits(e).ok().flatten());
    let n = holders(&v.queue, permits.filter(|p| *p > 1));
    let mut entries: Vec<QueueEntry> = v
        .queue
        .iter()
        .zip(v.values)
        .map(|(q, (value, revision))| QueueEntry {
            key: q.key.clone(),
            token: Token::new(q.ticket),
            revision,
            kind: match value.as_ref().map(|v| v.kind.as_str()) {
                Some("x") => EntryKind::Exclusive,
                Some("s") => EntryKind::Shared,
                Some("p") => EntryKind::Permit,
                _ => EntryKind::Unknown,
            },
            queued_at: value
                .as_ref()
                .filter(|v| v.since_ms > 0)
                .map(|v| UNIX_EPOCH + Duration::from_millis(v.since_ms)),
            multi: value.as_ref().map(|v| v.multi.clone()).unwrap_or_default(),
            holder: value.map(|v| v.holder),
        })
        .collect();
    let waiters = entries.split_off(n.min(entries.len()));
    LockInfo {
        name: name.as_str().to_string(),
        permits,
        holders: entries,
        waiters,
        as_of: v.as_of,
    }
}
