//! What an [`Election`](crate::Election) handle's clones, campaigns, observers and
//! leaderships share: the bucket and keys, the lease (decided once the bucket was checked),
//! the one lease keeper, counters, and the leaderships to resign on shutdown.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;

use kvtk_core::lease::{Keeper, Lease, LeaseConfig, Sessions};
use kvtk_core::{Bucket, Revision};
use tokio::sync::OnceCell;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::error::{Error, ErrorKind};
use crate::held::Held;
use crate::lease_opts::LeaseOpts;
use crate::line::Pace;
use crate::lost::LostReason;
use crate::stats::Counters;

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
    resolved: OnceLock<LeaseConfig>,
    pub(crate) transfer_ttl: Duration,
    /// How long candidates wait for the one before them in line when the leader key is
    /// free (default: the margin, at most 250 ms).
    succession_grace: Option<Duration>,
    pub(crate) counters: Counters,
    /// Resignations of dropped leaderships, running in the background.
    pub(crate) tracker: TaskTracker,
    /// Cancelled by [`Election::shutdown`](crate::Election::shutdown): campaigns end.
    pub(crate) closing: CancellationToken,
    bucket_checked: OnceCell<()>,
    /// Renews every leadership and candidate registration of this election handle and its
    /// clones; created by the first campaign, its task ends with the last of them.
    keeper: OnceCell<Keeper>,
    /// Registrations are bound to one session per handle ([`ElectionBuilder::bind_to_session`](crate::ElectionBuilder::bind_to_session)).
    pub(crate) bind: bool,
    /// The handle's sessions, made with the keeper when `bind`.
    sessions: OnceCell<Sessions>,
    /// The leaderships won through this handle, for [`Election::shutdown`](crate::Election::shutdown).
    leaderships: Mutex<Vec<Weak<Held>>>,
    /// Who led until which revision, as this handle's campaigns saw it: a new campaign's
    /// watch shows only the leader key's latest state.
    pub(crate) led: Mutex<HashMap<String, Revision>>,
}

impl Shared {
    /// The state of election `name` in `bucket` with the lease options `opts`, whose lease
    /// on a single-server bucket is `provisional`.
    pub(crate) fn new(
        bucket: Bucket,
        name: String,
        opts: LeaseOpts,
        provisional: LeaseConfig,
        transfer_ttl: Duration,
        succession_grace: Option<Duration>,
        bind: bool,
    ) -> Shared {
        Shared {
            bind,
            sessions: OnceCell::new(),
            succession_grace,
            leader_key: format!("{name}.leader"),
            bucket,
            name,
            opts,
            provisional,
            resolved: OnceLock::new(),
            transfer_ttl,
            counters: Counters::default(),
            tracker: TaskTracker::new(),
            closing: CancellationToken::new(),
            bucket_checked: OnceCell::new(),
            keeper: OnceCell::new(),
            leaderships: Mutex::new(Vec::new()),
            led: Mutex::new(HashMap::new()),
        }
    }

    pub(crate) async fn keeper(&self) -> Result<&Keeper, Error> {
        self.check_bucket().await?;
        let lease = self.lease();
        self.keeper
            .get_or_try_init(|| async { Keeper::with_recipe(&self.bucket, lease, "leader") })
            .await
            .map_err(Error::from)
    }

    /// The handle's sessions, when registrations are bound to one (`None` otherwise).
    pub(crate) async fn sessions(&self) -> Result<Option<&Sessions>, Error> {
        if !self.bind {
            return Ok(None);
        }
        let keeper = self.keeper().await?;
        let lease = self.lease();
        let sessions = self
            .sessions
            .get_or_init(|| async { Sessions::new(keeper, lease) })
            .await;
        Ok(Some(sessions))
    }

    /// Lets go of a registration nobody campaigns with any more: one bound to a session is
    /// released in the background (it would live as long as the session), one with a lease
    /// of its own is left to expire.
    pub(crate) fn drop_registration(&self, reg: Lease) {
        if !reg.is_bound() || tokio::runtime::Handle::try_current().is_err() {
            reg.orphan();
            return;
        }
        self.tracker.spawn(async move {
            let _ = tokio::time::timeout(Duration::from_secs(1), reg.release()).await;
        });
    }

    /// The lease: the one for the bucket once it was checked, the single-server one before.
    pub(crate) fn lease(&self) -> LeaseConfig {
        *self.lease_config()
    }

    /// The lease, borrowed (see [`Shared::lease`]).
    pub(crate) fn lease_config(&self) -> &LeaseConfig {
        self.resolved.get().unwrap_or(&self.provisional)
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

    /// Ends every campaign, resigns every leadership won through this handle, and waits
    /// for the resignations and the keeper.
    pub(crate) async fn shutdown(&self) {
        self.closing.cancel();
        for held in self.live_leaderships() {
            self.tracker.spawn(async move {
                held.resign(LostReason::Shutdown).await;
            });
        }
        self.tracker.close();
        self.tracker.wait().await;
        if let Some(keeper) = self.keeper.get() {
            keeper.shutdown().await;
        }
    }
}
