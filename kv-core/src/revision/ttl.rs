//! Per-key TTLs: whole seconds, checked before anything is sent.

use std::num::NonZeroU64;
use std::time::Duration;

use crate::error::{Error, ErrorKind};

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
        let mut s = String::with_capacity(21);
        super::push_decimal(&mut s, self.0.get());
        s.push('s');
        s
    }
}

impl TryFrom<Duration> for Ttl {
    type Error = Error;
    fn try_from(d: Duration) -> Result<Ttl, Error> {
        Ttl::new(d)
    }
}
