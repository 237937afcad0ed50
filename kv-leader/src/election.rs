//! The [`Election`] handle: one named election in one bucket.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use std::collections::HashMap;

use kvtk_core::lease::{Keeper, LeaseConfig};
use kvtk_core::{Bucket, BucketConfig, Revision};
use tokio::sync::OnceCell;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::campaign::Campaign;
use crate::elector::ElectorBuilder;
use crate::error::{Error, ErrorKind};
use crate::leadership::{Held, LostReason};
use crate::line::Pace;
use crate::observe::Observer;
use crate::record::{CandidateRecord, LeaderInfo, Observed};

/// The leader lease TTL of an election that does not choose one, on a single-server
/// bucket. On a replicated bucket the default is
/// [`REPLICATED_TTL`](kvtk_core::lease::REPLICATED_TTL) (30 s), which rides through a
/// stream-leader election (see [`LeaseConfig::default_for`]): a leader whose server is
/// healthy keeps its term when another server, or the stream's leader, fails.
pub const DEFAULT_TTL: Duration = Duration::from_secs(5);

/// The longest election name or candidate identity, in bytes.
pub const MAX_NAME_LEN: usize = 128;

/// Checks an election name or candidate identity: one key token of
/// `A-Z a-z 0-9 - _ =`, 1..=[`MAX_NAME_LEN`] bytes.
pub(crate) fn validate_name(what: &str, s: &str) -> Result<(), Error> {
    if s.is_empty() {
        return Err(Error::invalid(format!("{what} is empty")));
    }
    if s.len() > MAX_NAME_LEN {
        return Err(Error::invalid(format!(
            "{what} is {} bytes long, the limit is {MAX_NAME_LEN}",
            s.len()
        )));
    }
    if let Some((at, ch)) = s
        .char_indices()
        .find(|(_, c)| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '=')))
    {
        return Err(Error::invalid(format!(
            "{what} {s:?} has character {ch:?} at byte {at}; allowed are A-Z a-z 0-9 - _ ="
        )));
    }
    if s.starts_with("_kv") {
        return Err(Error::invalid(format!(
            "{what} {s:?} starts with the reserved prefix '_kv'"
        )));
    }
    Ok(())
}

/// Counters of one [`Election`] handle (all its candidates), for measuring herd effects.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// Conditional writes sent to take the leader key (about one per term: only the first
    /// candidate in line races).
    pub cas_attempts: u64,
    /// Of those, the ones another candidate won.
    pub cas_conflicts: u64,
    /// Elections won (terms started).
    pub terms_won: u64,
    /// Leader-key watches started (one per campaign and per observer).
    pub watches: u64,
}

#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) cas_attempts: AtomicU64,
    pub(crate) cas_conflicts: AtomicU64,
    pub(crate) terms_won: AtomicU64,
    pub(crate) watches: AtomicU64,
}

impl Counters {
    pub(crate) fn bump(c: &AtomicU64) {
        c.fetch_add(1, Ordering::Relaxed);
    }
}

#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) bucket: Bucket,
    pub(crate) name: String,
    pub(crate) leader_key: String,
    /// The lease options as given; the TTL, when not given, comes from the bucket.
    opts: LeaseOpts,
    /// The lease on a single-server bucket, used until the bucket was checked.
    provisional: LeaseConfig,
    /// The lease for this bucket, set by [`Shared::check_bucket`].
    resolved: std::sync::OnceLock<LeaseConfig>,
    pub(crate) transfer_ttl: Duration,
    /// How long candidates wait for the one before them in line when the leader key is
    /// free (default: the margin, at most 250 ms).
    succession_grace: Option<Duration>,
    pub(crate) counters: Counters,
    /// Resignations of dropped leaderships, running in the background.
    pub(crate) tracker: TaskTracker,
    /// Cancelled by [`Election::shutdown`]: campaigns end.
    pub(crate) closing: CancellationToken,
    bucket_checked: OnceCell<()>,
    /// Renews every leadership and candidate registration of this election handle and its
    /// clones; created by the first campaign, its task ends with the last of them.
    keeper: OnceCell<Keeper>,
    /// The leaderships won through this handle, for [`Election::shutdown`].
    leaderships: Mutex<Vec<Weak<Held>>>,
    /// Who led until which revision, as this handle's campaigns saw it: a new campaign's
    /// watch shows only the leader key's latest state.
    pub(crate) led: Mutex<HashMap<String, Revision>>,
}

/// The lease options of an election: a TTL, margin and renewal interval when given.
#[derive(Debug, Clone, Copy)]
struct LeaseOpts {
    ttl: Option<Duration>,
    margin: Option<Duration>,
    renew_every: Option<Duration>,
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
    fn for_replicas(&self, replicas: usize) -> Result<LeaseConfig, Error> {
        let ttl = match self.ttl {
            Some(t) => t,
            None => LeaseConfig::default_for(replicas, DEFAULT_TTL)?
                .ttl()
                .as_duration(),
        };
        self.with_ttl(ttl)
    }
}

impl Shared {
    pub(crate) async fn keeper(&self) -> Result<&Keeper, Error> {
        self.check_bucket().await?;
        let lease = self.lease();
        self.keeper
            .get_or_try_init(|| async { Keeper::with_recipe(&self.bucket, lease, "leader") })
            .await
            .map_err(Error::from)
    }

    /// The lease: the one for the bucket once it was checked, the single-server one before.
    pub(crate) fn lease(&self) -> LeaseConfig {
        self.resolved.get().copied().unwrap_or(self.provisional)
    }

    /// How long candidates wait for the ones before them in line.
    pub(crate) fn pace(&self) -> Pace {
        let lease = self.lease();
        Pace {
            grace: self
                .succession_grace
                .unwrap_or_else(|| lease.margin().min(Duration::from_millis(250))),
            last_resort: lease.ttl().as_duration(),
        }
    }

    pub(crate) fn register_leadership(&self, held: &Arc<Held>) {
        let mut all = self.leaderships.lock().unwrap_or_else(|p| p.into_inner());
        all.retain(|w| w.strong_count() > 0);
        all.push(Arc::downgrade(held));
    }

    fn live_leaderships(&self) -> Vec<Arc<Held>> {
        let all = self.leaderships.lock().unwrap_or_else(|p| p.into_inner());
        all.iter().filter_map(Weak::upgrade).collect()
    }

    pub(crate) fn candidate_key(&self, id: &str) -> String {
        format!("{}.cand.{id}", self.name)
    }

    /// Checks once per handle that the bucket keeps one revision per key and has per-key
    /// TTLs (with more history an older leader record could reappear: nats-server #6959).
    pub(crate) async fn check_bucket(&self) -> Result<(), Error> {
        self.bucket_checked
            .get_or_try_init(|| async {
                let st = self.bucket.status().await?;
                if st.history != 1 {
                    return Err(Error::new(
                        ErrorKind::BadBucket,
                        format!(
                            "bucket {:?} keeps {} revisions per key; elections need history 1",
                            st.bucket, st.history
                        ),
                    ));
                }
                if st.per_key_ttl.is_none() {
                    return Err(Error::new(
                        ErrorKind::BadBucket,
                        format!(
                            "bucket {:?} has no per-key TTL; create it with Election::bucket_config",
                            st.bucket
                        ),
                    ));
                }
                let lease = self.opts.for_replicas(st.replicas)?;
                lease.warn_unless_rides_through(st.replicas, &st.bucket, "leader");
                let _ = self.resolved.set(lease);
                Ok(())
            })
            .await
            .map(|_| ())
    }
}

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
    pub(crate) shared: Arc<Shared>,
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
}

impl ElectionBuilder {
    /// The leader lease TTL (whole seconds, ≥ 1 s; default [`DEFAULT_TTL`] (5 s) on a
    /// single-server bucket, [`REPLICATED_TTL`](kvtk_core::lease::REPLICATED_TTL) (30 s) on
    /// a replicated one, decided when the first campaign or elector checks the bucket). A
    /// crashed leader is replaced within about TTL + 1 s. On a replicated bucket a lease
    /// that does not ride through a stream-leader election is warned about then
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
            shared: Arc::new(Shared {
                succession_grace: self.succession_grace,
                leader_key: format!("{}.leader", self.name),
                bucket: self.bucket,
                name: self.name,
                opts,
                provisional: lease,
                resolved: std::sync::OnceLock::new(),
                transfer_ttl,
                counters: Counters::default(),
                tracker: TaskTracker::new(),
                closing: CancellationToken::new(),
                bucket_checked: OnceCell::new(),
                keeper: OnceCell::new(),
                leaderships: Mutex::new(Vec::new()),
                led: Mutex::new(HashMap::new()),
            }),
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
        self.shared
            .resolved
            .get()
            .unwrap_or(&self.shared.provisional)
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
        ElectorBuilder::new(self.clone(), id.into())
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
        Ok(match e.as_ref().map(Observed::from_entry) {
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
        let mut out: Vec<CandidateInfo> = snap
            .entries
            .iter()
            .filter(|e| e.is_value())
            .filter_map(|e| serde_json::from_slice::<CandidateRecord>(e.value()).ok())
            .map(|c| CandidateInfo {
                id: c.id,
                value: c.value,
            })
            .collect();
        out.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(out)
    }

    /// Counters of every candidate and observer made through this handle and its clones.
    pub fn stats(&self) -> Stats {
        let c = &self.shared.counters;
        Stats {
            cas_attempts: c.cas_attempts.load(Ordering::Relaxed),
            cas_conflicts: c.cas_conflicts.load(Ordering::Relaxed),
            terms_won: c.terms_won.load(Ordering::Relaxed),
            watches: c.watches.load(Ordering::Relaxed),
        }
    }

    /// Ends every campaign, resigns every leadership held through this handle and its
    /// clones, and waits until the resignations are done (at the latest at each lease's
    /// local deadline).
    ///
    /// # Cancel safety
    /// Cancel safe: the resignations go on; awaiting again waits for them.
    pub async fn shutdown(&self) {
        self.shared.closing.cancel();
        for held in self.shared.live_leaderships() {
            self.shared.tracker.spawn(async move {
                held.resign(LostReason::Shutdown).await;
            });
        }
        self.shared.tracker.close();
        self.shared.tracker.wait().await;
        if let Some(keeper) = self.shared.keeper.get() {
            keeper.shutdown().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(validate_name("id", "node-1_a=").is_ok());
        for bad in ["", "a.b", "a b", "a*", "a>", "_kvx", "ü"] {
            let e = validate_name("id", bad).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{bad:?}");
        }
        let long = "x".repeat(MAX_NAME_LEN + 1);
        let e = validate_name("id", &long).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidArgument);
    }
}
