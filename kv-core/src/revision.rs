//! Revisions, expectations and per-key TTLs.

use std::fmt;
use std::num::NonZeroU64;
use std::time::Duration;

use crate::error::{Error, ErrorKind};

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

/// A per-key TTL: a whole number of seconds, at least one. The server counts expiry on its
/// own clock, in whole seconds.
///
/// ```
/// use std::time::Duration;
/// use kvtk_core::Ttl;
/// assert_eq!(Ttl::new(Duration::from_secs(5)).unwrap().as_secs(), 5);
/// // Sub-second parts are refused, never truncated.
/// assert!(Ttl::new(Duration::from_millis(1500)).is_err());
/// assert!(Ttl::new(Duration::from_millis(500)).is_err());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Ttl(NonZeroU64);

impl Ttl {
    /// Validates a TTL: whole seconds, ≥ 1 s.
    pub fn new(d: Duration) -> Result<Ttl, Error> {
        if d.subsec_nanos() != 0 {
            return Err(Error::new(
                ErrorKind::InvalidTtl,
                format!("ttl {d:?} is not a whole number of seconds"),
            ));
        }
        NonZeroU64::new(d.as_secs())
            .map(Ttl)
            .ok_or_else(|| Error::new(ErrorKind::InvalidTtl, "ttl must be at least one second"))
    }

    /// A TTL of `secs` seconds (`secs` ≥ 1).
    pub fn from_secs(secs: u64) -> Result<Ttl, Error> {
        Ttl::new(Duration::from_secs(secs))
    }

    /// Whole seconds.
    pub fn as_secs(self) -> u64 {
        self.0.get()
    }

    /// As a duration.
    pub fn as_duration(self) -> Duration {
        Duration::from_secs(self.0.get())
    }

    /// The `Nats-TTL` header value.
    pub(crate) fn header_value(self) -> String {
        format!("{}s", self.0.get())
    }
}

impl TryFrom<Duration> for Ttl {
    type Error = Error;
    fn try_from(d: Duration) -> Result<Ttl, Error> {
        Ttl::new(d)
    }
}
