//! The entry point: [`Locks`] on a bucket, and the [`Mutex`] and [`Semaphore`] handles.

use std::collections::HashMap;
use std::sync::{Arc, Mutex as StdMutex};
use std::time::Duration;

use kvtk_core::lease::{Keeper, LeaseConfig, Sessions};
use kvtk_core::{Bucket, BucketConfig, Kv};

use crate::acquire::Acquire;
use crate::checks::check_marker;
use crate::error::{Error, ErrorKind};
use crate::guard::Guard;
use crate::names::LockName;
use crate::rule::Kind;
use crate::shared::{Common, Shared, Slot};
use crate::stats::Stats;
use crate::value::{Holder, Identity};

/// The default lease TTL on a single-server bucket: a holder that dies is replaced within
/// about this long. On a replicated bucket the default is
/// [`REPLICATED_TTL`](kvtk_core::lease::REPLICATED_TTL) (30 s), which rides through a
/// stream-leader election (see [`LeaseConfig::default_for`]).
pub const DEFAULT_TTL: Duration = Duration::from_secs(10);

/// The marker TTL of buckets created by [`Locks::open`], and the default TTL of the
/// tombstones a release leaves (after which they disappear).
pub const DEFAULT_MARKER_TTL: Duration = Duration::from_secs(900);

/// Locks and semaphores on one bucket.
///
/// ```no_run
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// use kvtk_core::Kv;
/// use kvtk_locks::Locks;
/// let kv = Kv::connect("nats://127.0.0.1:4222").await?;
/// let locks = Locks::open(&kv, "locks").await?;
/// let mutex = locks.mutex("jobs.reindex")?;
/// let guard = mutex.lock().await?;
/// // ... work, passing guard.token() to the resource ...
/// guard.release().await?;
/// locks.shutdown().await;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct Locks {
    /// What its handles share; copied on write by the builder methods.
    common: Arc<Common>,
    /// The bucket's replicas, for the lease check.
    replicas: usize,
    owner: Option<Arc<Owner>>,
    /// Label metrics by lock name too ([`Locks::metrics_per_lock`]).
    per_lock: bool,
}

/// A named owner's queue keys: one per lock, shared by all its handles of that lock.
#[derive(Debug)]
struct Owner {
    id: String,
    slots: StdMutex<HashMap<String, Arc<tokio::sync::Mutex<Slot>>>>,
}

impl Owner {
    fn slot(&self, lock: &LockName) -> Arc<tokio::sync::Mutex<Slot>> {
        let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        slots.entry(lock.as_str().to_string()).or_default().clone()
    }
}

impl Locks {
    /// Opens (or creates) the bucket `bucket` for locks: history 1, per-key TTLs with a
    /// [`DEFAULT_MARKER_TTL`] marker TTL, atomic batches.
    ///
    /// # Cancel safety
    /// Not cancel safe: the bucket may be created even if the future is dropped.
    pub async fn open(kv: &Kv, bucket: &str) -> Result<Locks, Error> {
        let b = kv
            .create_or_open(
                BucketConfig::new(bucket)
                    .history(1)
                    .per_key_ttl(DEFAULT_MARKER_TTL)
                    .atomic_batches(true),
            )
            .await?;
        Locks::new(b).await
    }

    /// Uses an existing bucket. It must keep history 1 (older revisions could reappear when
    /// a TTL'd key expires) and have per-key TTLs enabled.
    ///
    /// # Cancel safety
    /// Cancel safe: it only reads.
    pub async fn new(bucket: Bucket) -> Result<Locks, Error> {
        let status = bucket.status().await?;
        if status.history != 1 {
            return Err(Error::new(
                ErrorKind::InvalidArgument,
                format!(
                    "bucket {} keeps history {}; locks need history 1",
                    status.bucket, status.history
                ),
            ));
        }
        let Some(marker_ttl) = status.per_key_ttl.filter(|d| !d.is_zero()) else {
            return Err(Error::new(
                ErrorKind::InvalidArgument,
                format!(
                    "bucket {} has no per-key TTLs (or no marker TTL); locks need them",
                    status.bucket
                ),
            ));
        };
        let lease = LeaseConfig::default_for(status.replicas, DEFAULT_TTL)?;
        let lease = if lease.ttl().as_duration() > marker_ttl {
            LeaseConfig::new(marker_ttl)?
        } else {
            lease
        };
        Ok(Locks {
            common: Arc::new(Common {
                keeper: Keeper::with_recipe(&bucket, lease, "locks")?,
                bucket,
                marker_ttl,
                tombstone_ttl: marker_ttl.max(Duration::from_secs(1)),
                lease,
                holder: Arc::new(Identity::new(Holder::this_process())),
                sessions: None,
                replicated: status.replicas > 1,
                stats: Arc::new(Stats::default()),
            }),
            replicas: status.replicas,
            owner: None,
            per_lock: false,
        })
    }

    /// Makes this handle's queue entries `<lock>._q.<id>` instead of a random key per lock
    /// handle, so that NATS permissions can confine each owner to its own entries: a user
    /// allowed to publish only to `$KV.<bucket>.<lock>._q.<id>` can wait for and take `lock`
    /// but cannot remove or overwrite anyone else's place (see docs/deployment.md, "Permissions
    /// per recipe"). `id` is one key token (`A-Z a-z 0-9 - _`) and must be used by one process at
    /// a time. All handles of one lock made from this `Locks` (and its clones) share the
    /// entry, so the owner holds each lock at most once at a time: a second acquisition
    /// waits for the first guard to be released.
    pub fn owner(mut self, id: &str) -> Result<Locks, Error> {
        let ok = !id.is_empty()
            && id.len() <= 64
            && id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_'));
        if !ok {
            let shown: String = id.chars().take(64).collect();
            return Err(Error::new(
                ErrorKind::InvalidArgument,
                format!(
                    "invalid lock owner {shown:?}: one token of A-Z a-z 0-9 - _, at most 64 bytes"
                ),
            ));
        }
        self.owner = Some(Arc::new(Owner {
            id: id.to_string(),
            slots: StdMutex::new(HashMap::new()),
        }));
        Ok(self)
    }

    /// Labels the lock metrics of handles made from now on with the lock's name (`lock`)
    /// as well as `bucket` and `kind` (default: off). Every name becomes a set of time series:
    /// turn it on only when the names are few and fixed, never for names made per request
    /// or per user. See [`crate::metrics`].
    pub fn metrics_per_lock(mut self, on: bool) -> Locks {
        self.per_lock = on;
        self
    }

    /// The identity written into queue entries (default: [`Holder::this_process`]).
    pub fn holder(mut self, holder: Holder) -> Locks {
        Arc::make_mut(&mut self.common).holder = Arc::new(Identity::new(holder));
        self
    }

    /// Binds the queue entries of handles made from now on to **one session** of this
    /// `Locks` (and its clones), made at the first acquisition and renewed by one write per
    /// renewal interval however many locks are held or waited for; an entry needs no renewal
    /// of its own. The session's timing is the default lease ([`Locks::lease`]). An
    /// acquisition that sets a timing of its own ([`Acquire::ttl`](crate::Acquire::ttl),
    /// `renew_every`, `margin`) still gets a lease of its own: use that for a lock that must
    /// outlive or be independent of the others.
    ///
    /// What changes for a holder: its guard is lost when the session is (at the session's
    /// local deadline, or when its renewal finds it gone), with the session's reason. A
    /// forced release ([`Locks::force_release`]) is **not** signalled by
    /// [`Guard::lost`](crate::Guard::lost): the evicted holder learns it at its next guarded
    /// write ([`Guard::put_guarded`](crate::Guard::put_guarded), a transaction with
    /// `if_held`), which the server refuses, or at its release
    /// ([`Released::AlreadyLost`](crate::Released::AlreadyLost)). Waiters behind an entry
    /// whose session ended (its key expired on the server's clock, or closed) remove it by
    /// compare-and-set and go on, whichever mode they use themselves.
    ///
    /// Every client of the bucket must be of this version or newer: an older one waits on an
    /// entry of a dead session until a newer client removes it. With least-privilege
    /// permissions, add the session owner's set (`kvtk_tests::recipes::bound`, the workspace's
    /// docs/deployment.md).
    pub fn bind_to_session(mut self) -> Locks {
        let c = Arc::make_mut(&mut self.common);
        c.sessions = Some(Sessions::new(&c.keeper, c.lease).name(c.holder.holder().id.clone()));
        self
    }

    /// The default lease of new handles (TTL, renewal interval, margin); each acquisition
    /// may override it.
    pub fn lease(mut self, lease: LeaseConfig) -> Result<Locks, Error> {
        check_marker(lease.ttl().as_duration(), self.common.marker_ttl)?;
        lease.warn_unless_rides_through(self.replicas, self.common.bucket.name(), "locks");
        Arc::make_mut(&mut self.common).lease = lease;
        if self.common.sessions.is_some() {
            return Ok(self.bind_to_session());
        }
        Ok(self)
    }

    /// How long a release's tombstone stays (whole seconds ≥ 1; default: the bucket's
    /// marker TTL). Tombstones then expire (leaving an expiry marker for the marker TTL), so
    /// handles of exited processes do not pile up. A handle whose tombstone is gone pays a
    /// snapshot on its next acquisition instead of the one-write fast path.
    pub fn tombstone_ttl(mut self, ttl: Duration) -> Result<Locks, Error> {
        kvtk_core::Ttl::new(ttl).map_err(Error::from)?;
        Arc::make_mut(&mut self.common).tombstone_ttl = ttl;
        Ok(self)
    }

    /// The default lease of new acquisitions: [`DEFAULT_TTL`] on a single-server bucket,
    /// [`REPLICATED_TTL`](kvtk_core::lease::REPLICATED_TTL) on a replicated one, unless set
    /// with [`lease`](Locks::lease).
    pub fn default_lease(&self) -> LeaseConfig {
        self.common.lease
    }

    /// The bucket.
    pub fn bucket(&self) -> &Bucket {
        &self.common.bucket
    }

    fn handle(&self, name: &LockName, kind: Kind) -> Result<Arc<Shared>, Error> {
        let (handle_name, slot) = match &self.owner {
            Some(o) => (name.with_queue_key(&o.id)?, o.slot(name)),
            None => {
                let nonce = uuid::Uuid::new_v4().simple().to_string();
                (name.with_queue_key(&nonce)?, Arc::default())
            }
        };
        let metrics = crate::metrics::Labels::new(
            self.common.bucket.name(),
            kind,
            self.per_lock.then_some(name.as_str()),
        );
        let common = self.common.clone();
        Ok(Arc::new(Shared::new(
            common,
            handle_name,
            kind,
            metrics,
            slot,
        )))
    }

    /// A handle on the mutex `name` (see [`LockName`] for the rules).
    ///
    /// A handle has one queue entry, so it holds the lock at most once at a time: a second
    /// `lock()` on the same handle waits until the first guard is released. Use one handle
    /// per concurrent user (handles are cheap) or share one to queue locally.
    pub fn mutex(&self, name: &str) -> Result<Mutex, Error> {
        let name = LockName::new(name)?;
        Ok(Mutex {
            shared: self.handle(&name, Kind::Exclusive)?,
        })
    }

    /// A handle on the semaphore `name` with `permits` permits (≥ 1). Every client must
    /// agree on the count: the first acquisition stores it, and a handle with another count
    /// fails with [`ErrorKind::PermitMismatch`].
    pub fn semaphore(&self, name: &str, permits: u32) -> Result<Semaphore, Error> {
        let name = LockName::new(name)?;
        let kind = match permits {
            0 => {
                return Err(Error::new(
                    ErrorKind::InvalidArgument,
                    format!("semaphore {name} needs at least one permit"),
                ))
            }
            // One permit is a mutex, and interoperates with mutex handles of the same name.
            1 => Kind::Exclusive,
            n => Kind::Permit(n),
        };
        Ok(Semaphore {
            shared: self.handle(&name, kind)?,
            permits,
        })
    }

    /// A handle on the read-write lock `name`: many readers or one writer, FIFO, with
    /// writers never starved by a stream of readers (a reader that arrives after a waiting
    /// writer queues behind it). Writers and mutex holders of the same name exclude each
    /// other. Tokens of both kinds come from one sequence, so one fence serves both.
    ///
    /// A handle holds at most one read and one write lock at a time; use a handle per
    /// concurrent user.
    pub fn rwlock(&self, name: &str) -> Result<RwLock, Error> {
        let name = LockName::new(name)?;
        Ok(RwLock {
            read: self.handle(&name, Kind::Shared)?,
            write: self.handle(&name, Kind::Exclusive)?,
        })
    }

    /// A handle on several mutexes taken all together or not at all (see [`MultiLock`](crate::MultiLock)):
    /// clients asking for overlapping sets never deadlock. Duplicate names count once.
    pub fn multi<I, S>(&self, names: I) -> Result<crate::MultiLock, Error>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let handles = names
            .into_iter()
            .map(|n| self.handle(&LockName::new(n.as_ref())?, Kind::Exclusive))
            .collect::<Result<Vec<_>, Error>>()?;
        crate::MultiLock::new(handles)
    }

    /// Waits for background work (releases of dropped guards, cleanups of dropped
    /// acquisitions) to finish. Guards still held keep renewing; release them first.
    ///
    /// # Cancel safety
    /// Cancel safe.
    pub async fn shutdown(&self) {
        self.common.keeper.shutdown().await;
    }

    /// Request counters (tests and benchmarks). Only with the `testing` feature.
    #[cfg(feature = "testing")]
    pub fn stats(&self) -> crate::stats::StatsSnapshot {
        crate::stats::StatsSnapshot {
            renewals: self.common.keeper.renewals(),
            ..self.common.stats.snapshot()
        }
    }

    /// The counters themselves, to wait on. Only with the `testing` feature.
    #[cfg(feature = "testing")]
    pub fn stats_handle(&self) -> Arc<Stats> {
        self.common.stats.clone()
    }
}

/// A distributed mutex handle. Cheap to clone (clones share the handle's queue entry).
#[derive(Debug, Clone)]
pub struct Mutex {
    shared: Arc<Shared>,
}

impl Mutex {
    /// Starts an acquisition; `.await` it. See [`Acquire`] for options and cancel safety.
    pub fn lock(&self) -> Acquire {
        Acquire::new(self.shared.clone())
    }

    /// Takes the lock if it is free, else returns `None` at once.
    ///
    /// # Cancel safety
    /// A dropped future's queue entry (if it wrote one) is removed in the background.
    pub async fn try_lock(&self) -> Result<Option<Guard>, Error> {
        self.lock().try_acquire().await
    }

    /// The lock's name.
    pub fn name(&self) -> &str {
        self.shared.name.as_str()
    }

    pub(crate) fn shared(&self) -> Arc<Shared> {
        self.shared.clone()
    }
}

/// A distributed counting semaphore handle. Cheap to clone (clones share the handle's
/// queue entry).
#[derive(Debug, Clone)]
pub struct Semaphore {
    shared: Arc<Shared>,
    permits: u32,
}

impl Semaphore {
    /// Starts an acquisition of one permit; `.await` it. See [`Acquire`].
    pub fn acquire(&self) -> Acquire {
        Acquire::new(self.shared.clone())
    }

    /// Takes a permit if one is free, else returns `None` (after removing the queue entry
    /// it wrote).
    ///
    /// # Cancel safety
    /// A dropped future's queue entry is removed in the background.
    pub async fn try_acquire(&self) -> Result<Option<Guard>, Error> {
        self.acquire().try_acquire().await
    }

    /// The permit count.
    pub fn permits(&self) -> u32 {
        self.permits
    }

    /// The semaphore's name.
    pub fn name(&self) -> &str {
        self.shared.name.as_str()
    }
}

/// A read-write lock handle. Cheap to clone (clones share the handle's two queue
/// entries).
///
/// ```no_run
/// # async fn demo(locks: kvtk_locks::Locks) -> Result<(), kvtk_locks::Error> {
/// let rw = locks.rwlock("catalog")?;
/// let reading = rw.read().await?; // shared with other readers
/// reading.release().await?;
/// let writing = rw.write().await?; // alone
/// writing.release().await?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct RwLock {
    read: Arc<Shared>,
    write: Arc<Shared>,
}

impl RwLock {
    /// Starts acquiring a read (shared) lock; `.await` it. See [`Acquire`].
    pub fn read(&self) -> Acquire {
        Acquire::new(self.read.clone())
    }

    /// Starts acquiring the write (exclusive) lock; `.await` it. See [`Acquire`].
    pub fn write(&self) -> Acquire {
        Acquire::new(self.write.clone())
    }

    /// The lock's name.
    pub fn name(&self) -> &str {
        self.read.name.as_str()
    }
}
