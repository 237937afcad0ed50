//! [`ServerVersion`]: the version a server announces, and the feature floors kvtk-core checks
//! before it uses a feature.

use std::fmt;

use crate::error::{Error, ErrorKind};

/// A server version, as the server announces it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ServerVersion {
    /// Major.
    pub major: u32,
    /// Minor.
    pub minor: u32,
    /// Patch.
    pub patch: u32,
}

impl ServerVersion {
    /// Per-key TTLs and expiry markers (ADR-43).
    pub const PER_KEY_TTL: ServerVersion = ServerVersion::new(2, 11, 2);
    /// Atomic batch publish (ADR-50).
    pub const ATOMIC_BATCH: ServerVersion = ServerVersion::new(2, 12, 0);

    /// A version.
    pub const fn new(major: u32, minor: u32, patch: u32) -> ServerVersion {
        ServerVersion {
            major,
            minor,
            patch,
        }
    }

    /// Parses `"2.15.1"`, `"v2.15.1"` or `"2.12.0-beta.1"`.
    pub fn parse(s: &str) -> Option<ServerVersion> {
        let s = s.trim().trim_start_matches('v');
        let core = s.split(['-', '+']).next()?;
        let mut it = core.split('.').map(|p| p.parse::<u32>().ok());
        Some(ServerVersion::new(
            it.next()??,
            it.next()??,
            it.next().flatten().unwrap_or(0),
        ))
    }

    pub(crate) fn require(self, needed: ServerVersion, feature: &str) -> Result<(), Error> {
        if self >= needed {
            Ok(())
        } else {
            Err(Error::new(
                ErrorKind::ServerTooOld,
                format!("{feature} needs nats-server {needed} or newer, the server is {self}"),
            ))
        }
    }
}

impl fmt::Display for ServerVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.patch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions() {
        let v = ServerVersion::parse("v2.15.1").unwrap();
        assert_eq!(v, ServerVersion::new(2, 15, 1));
        assert!(v >= ServerVersion::ATOMIC_BATCH);
        assert_eq!(
            ServerVersion::parse("2.12.0-beta.1"),
            Some(ServerVersion::new(2, 12, 0))
        );
        assert_eq!(ServerVersion::parse("junk"), None);
        let old = ServerVersion::new(2, 9, 10);
        let e = old
            .require(ServerVersion::PER_KEY_TTL, "per-key TTL")
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::ServerTooOld);
        assert!(e.to_string().contains("2.11.2"));
    }
}
