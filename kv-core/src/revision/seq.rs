//! Revisions (stream sequences) and the expectations a conditional write states on them.

use std::fmt;
use std::num::NonZeroU64;

/// A key's revision: the stream sequence of the message that wrote it. Revisions of one
/// bucket are strictly increasing across all keys, so they double as fencing tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Revision(NonZeroU64);

impl Revision {
    /// A revision from its number; `None` for 0, which no message ever has.
    pub fn new(n: u64) -> Option<Revision> {
        NonZeroU64::new(n).map(Revision)
    }

    /// The revision number.
    pub fn get(self) -> u64 {
        self.0.get()
    }
}

impl fmt::Display for Revision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl From<Revision> for u64 {
    fn from(r: Revision) -> u64 {
        r.get()
    }
}

/// What a conditional write expects of a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Expect {
    /// The key has no message at all: never written, or purged and its purge marker gone.
    /// (A deleted key still has its tombstone: expect its revision instead, or use `create`.)
    NoMessage,
    /// The key's latest message — value, tombstone or expiry marker — has this revision.
    Revision(Revision),
}

impl Expect {
    /// The `Nats-Expected-Last-Subject-Sequence` header value.
    pub(crate) fn header_value(self) -> u64 {
        match self {
            Expect::NoMessage => 0,
            Expect::Revision(r) => r.get(),
        }
    }
}

impl From<Revision> for Expect {
    fn from(r: Revision) -> Self {
        Expect::Revision(r)
    }
}
