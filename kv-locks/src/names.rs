//! Lock names and the key layout of one lock.
//!
//! Lock `name` owns exactly the keys one level of two tokens below it:
//!
//! ```text
//! <name>._q.<handle>     one queue entry per lock handle (reused across its acquisitions)
//! <name>._s.permits      a semaphore's permit count
//! ```
//!
//! The filter `<name>.*.*` matches those keys and nothing of any other lock: a lock named
//! `<name>.x` has keys one token deeper. So a write guarded by the filter's last revision
//! (`expect_on`) is disturbed only by writes to this lock, and a snapshot of the filter holds
//! only this lock's keys.

use kvtk_core::Key;

use crate::error::{Error, ErrorKind};

/// The longest lock name accepted, in bytes.
pub const MAX_NAME_LEN: usize = 256;

/// A validated lock name: dot-separated tokens of `A-Z a-z 0-9 - _ /`, no token starting
/// with `_` (reserved for the lock's own keys). Cheap to clone.
#[derive(Debug, Clone)]
pub struct LockName {
    /// The name, or — in a lock handle — the handle's queue key, which starts with it: one
    /// allocation for both, which the handle's queue entries (leases) share too.
    full: Key,
    /// The name's length in `full` (at most [`MAX_NAME_LEN`]).
    len: u16,
}

impl LockName {
    /// Validates a lock name.
    ///
    /// ```
    /// use kvtk_locks::LockName;
    /// assert!(LockName::new("jobs.reindex").is_ok());
    /// assert!(LockName::new("jobs..reindex").is_err());
    /// assert!(LockName::new("jobs._q").is_err());
    /// assert!(LockName::new("jobs.*").is_err());
    /// ```
    pub fn new(name: impl Into<String>) -> Result<LockName, Error> {
        let name = name.into();
        let bad = |why: &str| {
            let shown: String = name.chars().take(64).collect();
            Err(Error::new(
                ErrorKind::InvalidArgument,
                format!("invalid lock name {shown:?}: {why}"),
            ))
        };
        if name.is_empty() {
            return bad("it is empty");
        }
        if name.len() > MAX_NAME_LEN {
            return bad(&format!("it is longer than {MAX_NAME_LEN} bytes"));
        }
        for token in name.split('.') {
            if token.is_empty() {
                return bad("empty token (leading, trailing or double '.')");
            }
            if token.starts_with('_') {
                return bad("tokens starting with '_' are reserved");
            }
            if let Some(c) = token
                .chars()
                .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '/')))
            {
                return bad(&format!("character {c:?} is not allowed"));
            }
        }
        // Every lock name is a valid key (no `_kv` prefix, short enough): `?` never fires.
        let full = Key::new(&name)?;
        let len = u16::try_from(name.len()).unwrap_or(u16::MAX);
        Ok(LockName { full, len })
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        let full = self.full.as_str();
        full.get(..usize::from(self.len)).unwrap_or(full)
    }

    /// The name, carrying the queue key of handle `handle` (see [`queue_key`](Self::queue_key)).
    pub(crate) fn with_queue_key(&self, handle: &str) -> Result<LockName, Error> {
        Ok(LockName {
            full: Key::new(self.queue_key(handle))?,
            len: self.len,
        })
    }

    /// The queue key a handle's name carries ([`with_queue_key`](Self::with_queue_key));
    /// the name itself as a key otherwise.
    pub(crate) fn carried_key(&self) -> &Key {
        &self.full
    }

    /// The filter matching every key of this lock and nothing else.
    pub(crate) fn all_filter(&self) -> String {
        format!("{}.*.*", self.as_str())
    }

    /// The prefix of queue keys.
    pub(crate) fn queue_prefix(&self) -> String {
        format!("{}._q.", self.as_str())
    }

    /// The queue key of handle `nonce`.
    pub(crate) fn queue_key(&self, nonce: &str) -> String {
        format!("{}._q.{nonce}", self.as_str())
    }

    /// The key holding a semaphore's permit count.
    pub(crate) fn permits_key(&self) -> String {
        format!("{}._s.permits", self.as_str())
    }
}

impl PartialEq for LockName {
    fn eq(&self, other: &LockName) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Eq for LockName {}

impl std::hash::Hash for LockName {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.as_str().hash(state);
    }
}

impl std::fmt::Display for LockName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        for ok in ["a", "a.b", "jobs/reindex-2", "A_b.c"] {
            assert!(LockName::new(ok).is_ok(), "{ok}");
        }
        for bad in [
            "", ".a", "a.", "a..b", "_a", "a._q", "a b", "a.>", "a.*", "ä",
        ] {
            let e = LockName::new(bad).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{bad}");
        }
        assert!(LockName::new("x".repeat(MAX_NAME_LEN + 1)).is_err());
        let n = LockName::new("a.b").unwrap();
        assert_eq!(n.queue_key("n1"), "a.b._q.n1");
        assert_eq!(n.all_filter(), "a.b.*.*");
        assert_eq!(n.permits_key(), "a.b._s.permits");
        // A handle's name carries its queue key in the same allocation, and is still the name.
        let h = n.with_queue_key("n1").unwrap();
        assert_eq!((h.as_str(), h.carried_key().as_str()), ("a.b", "a.b._q.n1"));
        assert_eq!(h, n);
        assert_eq!(h.to_string(), "a.b");
        assert_eq!(h.all_filter(), "a.b.*.*");
    }
}
