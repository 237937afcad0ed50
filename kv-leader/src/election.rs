//! The [`Election`] handle: one named election in one bucket.

use std::sync::Arc;
use std::time::Duration;

use kvtk_core::lease::LeaseConfig;
use kvtk_core::{Bucket, BucketConfig};

use crate::campaign::Campaign;
use crate::elector::ElectorBuilder;
use crate::error::{Error, ErrorKind};
use crate::lease_opts::LeaseOpts;
use crate::names::validate_name;
use crate::observe::Observer;
use crate::record::{CandidateRecord, LeaderInfo, Observed};
use crate::shared::Shared;
use crate::stats::Stats;

/// One named election in a bucket. Cheap to clone; every clone shares counters and the
/// leadership tasks that [`shutdown`](Election::shutdown) waits for.
///
/// ```no_run
/// # async fn demo(bucket: kvtk_core::Bucket) -> Result<(), kvtk_leader::Error> {
/// use std::time::Duration;
/// use kvtk_leader::Election;
///
/// let election = Election::new(bucket, "scheduler", Duration::from_secs(5))?;
/// let leadership = election.campaign("node-1").value("10.0.0.1:8080").await?;
/// println!("leading in term {}", leadership.term());
/// tokio::select! {
///     _ = leadership.lost() => println!("lost it"),
///     _ = tokio::time::sleep(Duration::from_secs(30)) => leadership.resign().await?,
/// }
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct Election {
    shared: Arc<Shared>,
}

/// Options of an [`Election`]; see [`Election::builder`].
#[derive(Debug)]
#[must_use = "call build()"]
pub struct ElectionBuilder {
    bucket: Bucket,
    name: String,
    ttl: Option<Duration>,
    margin: Option<Duration>,
    renew_every: Option<Duration>,
    transfer_ttl: Option<Duration>,
    succession_grace: Option<Duration>,
    bind: bool,
}

impl ElectionBuilder {
    /// Binds candidate registrations to one session per election handle (shared by its
    /// clones) instead of a lease each — a process's candidacies then cost one renewal per
    /// renewal interval in all — and makes [`Leadership::step_down`](crate::Leadership::step_down)
    /// a **one-write hand-over**: the outgoing leader writes the leader key for the first
    /// live candidate in line, bound to that candidate's session, and the successor takes it
    /// over without a write of its own. A leadership won by a race keeps a lease of its own.
    ///
    /// Candidates watch the sessions of the election's bucket: the first in line removes
    /// (by compare-and-set, judged from the stream leader) registrations of ended sessions,
    /// and a handed-over leader key whose session ended or whose registration is gone; a
    /// handed-over leader that crashed is replaced within about the session TTL + 1 s.
    /// A leader that was handed the key learns of a forced removal at its next guarded
    /// write (the server refuses it), as a lock holder bound to a session does.
    ///
    /// Every client of the bucket must run a version that knows sessions: an older one waits
    /// behind a handed-over leader it cannot judge, and cannot remove a dead session's entries.
    pub fn bind_to_session(mut self) -> Self {
        self.bind = true;
        self
    }

    /// The leader lease TTL (whole seconds, ≥ 1 s; default
    /// [`DEFAULT_TTL`](crate::DEFAULT_TTL) (5 s) on a single-server bucket,
    /// [`REPLICATED_TTL`](kvtk_core::lease::REPLICATED_TTL) (30 s) on a replicated one,
    /// decided when the first campaign or elector checks the bucket). A crashed leader is
    /// replaced within about TTL + 1 s. On a replicated bucket a lease that does not ride
    /// through a stream-leader election is warned about then
    /// ([`LeaseConfig::warn_unless_rides_through`]).
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = Some(ttl);
        self
    }

    /// The self-demotion margin (default TTL/10, clamped to 100 ms..=2 s): a leader stops
    /// trusting its lease this long before the server could expire it.
    pub fn margin(mut self, margin: Duration) -> Self {
        self.margin = Some(margin);
        self
    }

    /// The renewal interval (default TTL/3).
    pub fn renew_every(mut self, every: Duration) -> Self {
        self.renew_every = Some(every);
        self
    }

    /// How long a pending [`transfer`](crate::Leadership::transfer_to) waits for its target
    /// before the key expires and the normal race resumes (whole seconds; default
    /// min(2 s, TTL)).
    pub fn transfer_ttl(mut self, ttl: Duration) -> Self {
        self.transfer_ttl = Some(ttl);
        self
    }

    /// How long each candidate waits for the one before it in line when the leader key is
    /// free (default: the margin, at most 250 ms). Only the first live candidate (the oldest
    /// registration) races at once, so a failover costs one write; if it does not take the
    /// key — it crashed or is cut off — the next one races after one grace, and so on; after
    /// one TTL everyone does. Zero makes every candidate race at once.
    pub fn succession_grace(mut self, grace: Duration) -> Self {
        self.succession_grace = Some(grace);
        self
    }

    /// Validates the options.
    pub fn build(self) -> Result<Election, Error> {
        validate_name("election name", &self.name)?;
        let opts = LeaseOpts {
            ttl: self.ttl,
            margin: self.margin,
            renew_every: self.renew_every,
        };
        let lease = opts.for_replicas(1)?;
        let ttl = lease.ttl().as_duration();
        let transfer_ttl = self
            .transfer_ttl
            .unwrap_or_else(|| Duration::from_secs(2).min(ttl));
        kvtk_core::Ttl::new(transfer_ttl).map_err(|e| {
            Error::new(
                ErrorKind::InvalidTtl,
                format!("transfer ttl {transfer_ttl:?} is not whole seconds ≥ 1 s"),
            )
            .with_source(e)
        })?;
        Ok(Election {
            shared: Arc::new(Shared::new(
                self.bucket,
                self.name,
                opts,
                lease,
                transfer_ttl,
                self.succession_grace,
                self.bind,
            )),
        })
    }
}

/// A candidate that is campaigning, as its registration key shows.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct CandidateInfo {
    /// Its identity.
    pub id: String,
    /// The value it will publish when elected.
    pub value: String,
}

impl Election {
    /// An election named `name` (one token of `A-Z a-z 0-9 - _ =`) in `bucket` with a leader
    /// lease of `ttl` (whole seconds, ≥ 1 s). The bucket needs history 1 and per-key TTLs:
    /// create it with [`Election::bucket_config`].
    pub fn new(bucket: Bucket, name: impl Into<String>, ttl: Duration) -> Result<Election, Error> {
        Election::builder(bucket, name).ttl(ttl).build()
    }

    /// Options beyond the TTL (margin, renewal interval, transfer TTL, succession grace).
    pub fn builder(bucket: Bucket, name: impl Into<String>) -> ElectionBuilder {
        ElectionBuilder {
            bucket,
            name: name.into(),
            ttl: None,
            margin: None,
            renew_every: None,
            transfer_ttl: None,
            succession_grace: None,
            bind: false,
        }
    }

    /// The configuration a bucket for elections should have: history 1, per-key TTLs with
    /// expiry markers kept for a minute (so that watchers see them), atomic batches off.
    pub fn bucket_config(bucket: impl Into<String>) -> BucketConfig {
        BucketConfig::new(bucket)
            .history(1)
            .per_key_ttl(Duration::from_secs(60))
    }

    /// The election name.
    pub fn name(&self) -> &str {
        &self.shared.name
    }

    /// The leader key, `<name>.leader`. A write guarded with
    /// `expect_on(leader_key, leader_revision)` succeeds only while that leadership lasts.
    pub fn leader_key(&self) -> &str {
        &self.shared.leader_key
    }

    /// The lease timing. Without a TTL of its own the election takes the bucket's default,
    /// known once a campaign or elector checked the bucket: until then this is the
    /// single-server lease.
    pub fn lease_config(&self) -> &LeaseConfig {
        self.shared.lease_config()
    }

    /// The bucket.
    pub fn bucket(&self) -> &Bucket {
        &self.shared.bucket
    }

    /// Starts building a campaign of candidate `id`; await it to wait until elected.
    pub fn campaign(&self, id: impl Into<String>) -> Campaign {
        Campaign::new(self.shared.clone(), id.into())
    }

    /// Starts building an elector: campaign, run work while leading, campaign again.
    pub fn elector(&self, id: impl Into<String>) -> ElectorBuilder {
        ElectorBuilder::new(self.shared.clone(), id.into())
    }

    /// Starts observing leader changes (see [`Observer`]).
    ///
    /// # Cancel safety
    /// Cancel safe: dropping the future leaves at most an idle consumer the server removes.
    pub async fn observe(&self) -> Result<Observer, Error> {
        Observer::start(self.shared.clone()).await
    }

    /// The leader now, read from the bucket's stream leader (never stale); `None` when nobody
    /// leads.
    ///
    /// # Cancel safety
    /// Cancel safe: it only reads.
    pub async fn leader(&self) -> Result<Option<LeaderInfo>, Error> {
        let e = self
            .shared
            .bucket
            .get_from_leader(&self.shared.leader_key)
            .await?;
        Ok(match e.as_ref().map(Observed::from_entry).transpose()? {
            Some(Observed::Leader(l)) => Some(l),
            _ => None,
        })
    }

    /// The candidates registered now (campaigning, or leading), sorted by identity. A
    /// candidate that crashed stays listed until its registration expires (one TTL).
    ///
    /// # Cancel safety
    /// Cancel safe: it only reads.
    pub async fn candidates(&self) -> Result<Vec<CandidateInfo>, Error> {
        let snap = self
            .shared
            .bucket
            .snapshot(format!("{}.cand.*", self.shared.name))
            .await?;
        let mut out = Vec::new();
        for e in &snap.entries {
            if let Some(c) = CandidateRecord::from_entry(e)? {
                out.push(CandidateInfo {
                    id: c.id,
                    value: c.value,
                });
            }
        }
        out.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(out)
    }

    /// Counters of every candidate and observer made through this handle and its clones.
    pub fn stats(&self) -> Stats {
        self.shared.counters.snapshot()
    }

    /// Ends every campaign, resigns every leadership held through this handle and its
    /// clones, and waits until the resignations are done (at the latest at each lease's
    /// local deadline).
    ///
    /// # Cancel safety
    /// Cancel safe: the resignations go on; awaiting again waits for them.
    pub async fn shutdown(&self) {
        self.shared.shutdown().await;
    }
}
