//! The election's lease: the options given, and the default TTL when none is.

use std::time::Duration;

use kvtk_core::lease::LeaseConfig;

use crate::error::Error;

/// The leader lease TTL of an election that does not choose one, on a single-server
/// bucket. On a replicated bucket the default is
/// [`REPLICATED_TTL`](kvtk_core::lease::REPLICATED_TTL) (30 s), which rides through a
/// stream-leader election (see [`LeaseConfig::default_for`]): a leader whose server is
/// healthy keeps its term when another server, or the stream's leader, fails.
pub const DEFAULT_TTL: Duration = Duration::from_secs(5);

/// The lease options of an election: a TTL, margin and renewal interval when given.
#[derive(Debug, Clone, Copy)]
pub(crate) struct LeaseOpts {
    pub(crate) ttl: Option<Duration>,
    pub(crate) margin: Option<Duration>,
    pub(crate) renew_every: Option<Duration>,
}

impl LeaseOpts {
    /// The lease with TTL `ttl` and the options given.
    fn with_ttl(&self, ttl: Duration) -> Result<LeaseConfig, Error> {
        let mut lease = LeaseConfig::new(ttl)?;
        if let Some(m) = self.margin {
            lease = lease.with_margin(m)?;
        }
        if let Some(r) = self.renew_every {
            lease = lease.with_renew_every(r)?;
        }
        Ok(lease)
    }

    /// The lease on a bucket with `replicas` replicas: the TTL given, or the lease layer's
    /// default for the bucket ([`LeaseConfig::default_for`]).
    pub(crate) fn for_replicas(&self, replicas: usize) -> Result<LeaseConfig, Error> {
        let ttl = match self.ttl {
            Some(t) => t,
            None => LeaseConfig::default_for(replicas, DEFAULT_TTL)?
                .ttl()
                .as_duration(),
        };
        self.with_ttl(ttl)
    }
}
