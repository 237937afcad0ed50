//! The hot-reloading reader: [`ConfigBuilder`] and [`ConfigReader`].

mod core;
mod feed;

use std::fmt;
use std::future::{Future, IntoFuture};
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use futures::stream::{BoxStream, Stream, StreamExt};
use kvtk_core::{Bucket, ReadOnlyBucket, Revision};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::sync::{broadcast, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;

use crate::error::{Error, ErrorKind, Rejection};
use crate::fleet::{check_instance, Ack};
use crate::format::Format;
use crate::layer::env_layer;
use crate::metrics::ReaderMetrics;
use crate::persist;
use crate::pipeline::{Pipeline, Validate};
use crate::snapshot::{ConfigEvent, Health, Origin, Snapshot};
use crate::source::{check_mirror, Connector, Source};

use self::core::Core;

/// How many events a slow subscriber may fall behind before it gets [`ConfigEvent::Lagged`].
const EVENT_CAPACITY: usize = 256;

/// State shared by the reader handles and the background task.
pub(crate) struct Shared<T> {
    pub(crate) current: ArcSwap<Snapshot<T>>,
    pub(crate) generation: watch::Sender<u64>,
    pub(crate) ready: watch::Sender<bool>,
    pub(crate) events: broadcast::Sender<ConfigEvent<T>>,
    health: Mutex<Health>,
    pub(crate) metrics: ReaderMetrics,
}

impl<T> Shared<T> {
    fn health_lock(&self) -> MutexGuard<'_, Health> {
        // A panic while holding this lock cannot leave Health inconsistent (plain fields).
        self.health.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn health(&self) -> Health {
        self.health_lock().clone()
    }

    /// Records a rejection; returns false when it repeats the one already recorded.
    pub(crate) fn reject(&self, r: Rejection) -> bool {
        {
            let mut h = self.health_lock();
            if h.rejected.as_ref() == Some(&r) {
                return false;
            }
            h.rejected = Some(r.clone());
            h.last_sync = Some(SystemTime::now());
        }
        self.metrics.rejected(&r, self.current.load().revision);
        let _ = self.events.send(ConfigEvent::Rejected(r));
        true
    }

    pub(crate) fn synced(&self, rev: Option<Revision>) {
        self.metrics.synced();
        let mut h = self.health_lock();
        h.applied = rev;
        h.rejected = None;
        h.stale = false;
        h.last_sync = Some(SystemTime::now());
    }
}

/// Stops the background task when the last reader handle is dropped.
struct Owner {
    cancel: CancellationToken,
    task: Mutex<Option<JoinHandle<()>>>,
}

impl Drop for Owner {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

/// A live, typed configuration: the current value as a lock-free snapshot, change
/// notification, events and health. Cheap to clone; the background watch stops when the
/// last clone is dropped (or on [`shutdown`](Self::shutdown)).
///
/// Build one with [`ConfigReader::builder`]; see the [crate docs](crate) for an example.
pub struct ConfigReader<T> {
    shared: Arc<Shared<T>>,
    owner: Arc<Owner>,
    generation: watch::Receiver<u64>,
}

impl<T> Clone for ConfigReader<T> {
    fn clone(&self) -> Self {
        ConfigReader {
            shared: self.shared.clone(),
            owner: self.owner.clone(),
            generation: self.generation.clone(),
        }
    }
}

impl<T> fmt::Debug for ConfigReader<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConfigReader")
            .field("health", &self.shared.health())
            .finish_non_exhaustive()
    }
}

impl<T> ConfigReader<T>
where
    T: Serialize + DeserializeOwned + Send + Sync + 'static,
{
    /// Starts building a reader of the configuration at `source`.
    pub fn builder(source: Source) -> ConfigBuilder<T> {
        ConfigBuilder::new(source)
    }
}

impl<T> ConfigReader<T> {
    /// The current value: a shared, immutable snapshot (one atomic load, no lock).
    pub fn current(&self) -> Arc<Snapshot<T>> {
        self.shared.current.load_full()
    }

    /// The newest KV revision this reader is in sync with (see [`Health::applied`]).
    pub fn revision(&self) -> Option<Revision> {
        self.shared.health().applied
    }

    /// Health and staleness.
    pub fn health(&self) -> Health {
        self.shared.health()
    }

    /// Waits until the value changes after the last call (or since this handle was made),
    /// then returns the new snapshot. Like `tokio::sync::watch::Receiver::changed`, several
    /// changes in a row may be seen as one.
    ///
    /// # Cancel safety
    /// Cancel safe: a change that happens while the future is pending is reported by the
    /// next call.
    pub async fn changed(&mut self) -> Arc<Snapshot<T>> {
        // The sender lives in `shared`, which this handle keeps alive: it cannot close.
        let _ = self.generation.changed().await;
        self.current()
    }

    /// Waits until the reader has synced with the KV at least once. Returns at once unless
    /// the reader started offline from its snapshot file.
    ///
    /// # Cancel safety
    /// Cancel safe: it only waits.
    pub async fn ready(&self) {
        let mut rx = self.shared.ready.subscribe();
        let _ = rx.wait_for(|r| *r).await;
    }

    /// Whether the reader has synced with the KV at least once.
    pub fn is_ready(&self) -> bool {
        *self.shared.ready.borrow()
    }

    /// A stream of the events from now on: changes (with old and new snapshots, revision and
    /// changed paths) and rejections.
    pub fn events(&self) -> ConfigEvents<T>
    where
        T: Send + Sync + 'static,
    {
        let rx = self.shared.events.subscribe();
        let s = futures::stream::unfold(rx, |mut rx| async move {
            match rx.recv().await {
                Ok(ev) => Some((ev, rx)),
                Err(broadcast::error::RecvError::Lagged(n)) => Some((ConfigEvent::Lagged(n), rx)),
                Err(broadcast::error::RecvError::Closed) => None,
            }
        });
        ConfigEvents { inner: s.boxed() }
    }

    /// Stops the background watch (for every clone of this reader) and waits for it to end.
    /// The last value stays readable.
    ///
    /// # Cancel safety
    /// Cancel safe: the task is stopped either way; dropping the future only skips waiting.
    pub async fn shutdown(&self) {
        self.owner.cancel.cancel();
        let task = self
            .owner
            .task
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(t) = task {
            let _ = t.await;
        }
    }
}

/// The events of a reader; see [`ConfigReader::events`].
pub struct ConfigEvents<T> {
    inner: BoxStream<'static, ConfigEvent<T>>,
}

impl<T> fmt::Debug for ConfigEvents<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConfigEvents").finish_non_exhaustive()
    }
}

impl<T> Stream for ConfigEvents<T> {
    type Item = ConfigEvent<T>;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.inner.poll_next_unpin(cx)
    }
}

/// Options of a [`ConfigReader`]; await it (or call [`start`](Self::start)).
///
/// Precedence, lowest first: code [`defaults`](Self::defaults) < the optional
/// [`local_file`](Self::local_file) < the KV < environment overrides
/// ([`env_prefix`](Self::env_prefix)). Layers are deep-merged: objects field by field,
/// anything else replaced whole. The local file and the environment are read once, at start.
#[must_use = "a reader does nothing until started"]
pub struct ConfigBuilder<T> {
    source: Source,
    connector: Option<Connector>,
    pipeline: Pipeline<T>,
    defaults_error: Option<String>,
    local_file: Option<PathBuf>,
    env_prefix: Option<String>,
    env_vars: Option<Vec<(String, String)>>,
    snapshot_file: Option<PathBuf>,
    require_fresh: bool,
    start_timeout: Duration,
    instance: Option<String>,
    ack_ttl: Option<Duration>,
}

impl<T> fmt::Debug for ConfigBuilder<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConfigBuilder")
            .field("source", &self.source)
            .field("connector", &self.connector)
            .field("pipeline", &self.pipeline)
            .finish_non_exhaustive()
    }
}

impl<T> ConfigBuilder<T>
where
    T: Serialize + DeserializeOwned + Send + Sync + 'static,
{
    fn new(source: Source) -> Self {
        ConfigBuilder {
            source,
            connector: None,
            pipeline: Pipeline::default(),
            defaults_error: None,
            local_file: None,
            env_prefix: None,
            env_vars: None,
            snapshot_file: None,
            require_fresh: false,
            start_timeout: Duration::from_secs(5),
            instance: None,
            ack_ttl: None,
        }
    }

    /// Reads from this open bucket.
    pub fn bucket(mut self, bucket: Bucket) -> Self {
        self.connector = Some(Connector::Bucket(bucket));
        self
    }

    /// Reads through a read-only handle, typically a mirror of the origin bucket in another
    /// JetStream domain — on a leaf node next to the fleet — while writers write to the
    /// origin. See [Reading from a mirror](crate#reading-from-a-mirror) for what a mirror
    /// keeps: the same revisions as the origin (so [`ConfigReader::revision`] compares with
    /// the writer's), validation before apply, last-known-good, and no silent skip across a
    /// cut link; but it is only as fresh as the mirror. A reader on a read-only handle
    /// writes nothing, so [`instance`](Self::instance) is refused, and a
    /// [`Source::prefix`](crate::Source::prefix) configuration on a mirror fails at start
    /// with [`ErrorKind::Unsupported`] (a mirror does not keep transaction boundaries).
    pub fn read_only(mut self, bucket: ReadOnlyBucket) -> Self {
        self.connector = Some(Connector::ReadOnly(bucket));
        self
    }

    /// Reaches the bucket through `connector` (needed to start while the server is away:
    /// see [`Connector::connect`]).
    pub fn connector(mut self, connector: Connector) -> Self {
        self.connector = Some(connector);
        self
    }

    /// Code defaults: the lowest layer. Without defaults every field must come from a higher
    /// layer (or have a serde default).
    pub fn defaults(mut self, defaults: T) -> Self {
        match serde_json::to_value(&defaults) {
            Ok(v) => self.pipeline.defaults = v,
            Err(e) => self.defaults_error = Some(e.to_string()),
        }
        self
    }

    /// An optional local file (`.json`; `.toml`/`.yaml` with their features) between the
    /// defaults and the KV. A missing file is skipped; an unreadable one fails the start.
    pub fn local_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.local_file = Some(path.into());
        self
    }

    /// Environment overrides, the highest layer: `PREFIX__DB__POOL_SIZE=5` sets `db.pool_size`.
    /// See [`env_path`](crate::env_path) and [`env_layer`](crate::env_layer) for the exact
    /// rules.
    pub fn env_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.env_prefix = Some(prefix.into());
        self
    }

    /// Uses these variables instead of the process environment (for tests).
    pub fn env_vars(mut self, vars: impl IntoIterator<Item = (String, String)>) -> Self {
        self.env_vars = Some(vars.into_iter().collect());
        self
    }

    /// Strict mode: a document with fields the type does not know is rejected
    /// ([`RejectKind::UnknownField`](crate::RejectKind::UnknownField)). Off by default.
    pub fn strict(mut self, strict: bool) -> Self {
        self.pipeline.strict = strict;
        self
    }

    /// A validator: `Err(reason)` rejects the candidate, which is then never applied.
    pub fn validate<F>(mut self, f: F) -> Self
    where
        F: Fn(&T) -> Result<(), String> + Send + Sync + 'static,
    {
        self.pipeline.validator = Some(Arc::new(f));
        self
    }

    /// Validates with the type's [`Validate`] implementation.
    pub fn validated(self) -> Self
    where
        T: Validate,
    {
        self.validate(|t: &T| t.validate())
    }

    /// Persists every accepted value to this file (atomically), and starts from it when the
    /// KV cannot be reached at start.
    pub fn snapshot_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.snapshot_file = Some(path.into());
        self
    }

    /// Refuses to start on a snapshot file: the start fails with
    /// [`ErrorKind::Unavailable`] when the KV cannot be reached.
    pub fn require_fresh(mut self, on: bool) -> Self {
        self.require_fresh = on;
        self
    }

    /// How long the start waits for the KV before falling back to the snapshot file
    /// (default 5 s).
    pub fn start_timeout(mut self, d: Duration) -> Self {
        self.start_timeout = d;
        self
    }

    /// Publishes the applied revision under `_applied.<config name>.<instance>` for
    /// [`ConfigWriter::wait_applied`](crate::ConfigWriter::wait_applied). `instance` is one key
    /// token (no dots).
    pub fn instance(mut self, instance: impl Into<String>) -> Self {
        self.instance = Some(instance.into());
        self
    }

    /// The per-key TTL of the acknowledgement key (whole seconds; default
    /// [`DEFAULT_ACK_TTL`](crate::DEFAULT_ACK_TTL), 30 s, which rides through a
    /// stream-leader election on a replicated bucket). The key is a
    /// [lease](kvtk_core::lease) kept alive while the reader lives and removed when it
    /// stops. Buckets without per-key TTLs get keys without one. On a replicated bucket a
    /// TTL that does not ride through a stream-leader election is warned about
    /// ([`LeaseConfig::warn_unless_rides_through`](kvtk_core::lease::LeaseConfig::warn_unless_rides_through)).
    pub fn ack_ttl(mut self, ttl: Duration) -> Self {
        self.ack_ttl = Some(ttl);
        self
    }

    fn load_local_file(&mut self) -> Result<(), Error> {
        let Some(path) = &self.local_file else {
            return Ok(());
        };
        let format = Format::from_path(path).ok_or_else(|| {
            Error::new(
                ErrorKind::InvalidArgument,
                format!("unknown config file format: {}", path.display()),
            )
        })?;
        let bytes = match std::fs::read(path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => {
                return Err(
                    Error::new(ErrorKind::Io, format!("cannot read {}", path.display()))
                        .with_source(e),
                )
            }
        };
        self.pipeline.file = format
            .parse(&bytes)
            .map_err(|m| Error::new(ErrorKind::Io, format!("{}: {m}", path.display())))?;
        Ok(())
    }

    /// Loads the configuration (from the KV, or offline from the snapshot file) and starts
    /// the background watch.
    ///
    /// Fails with [`ErrorKind::Rejected`] when the KV value is refused and no snapshot
    /// file holds a good one, and with [`ErrorKind::Unavailable`] when the KV cannot
    /// be reached in [`start_timeout`](Self::start_timeout) and there is no usable snapshot
    /// file (or [`require_fresh`](Self::require_fresh) is set).
    ///
    /// # Cancel safety
    /// Cancel safe: nothing is started until the future completes.
    pub async fn start(mut self) -> Result<ConfigReader<T>, Error> {
        self.source.validate()?;
        if let Some(e) = self.defaults_error.take() {
            return Err(Error::new(
                ErrorKind::InvalidArgument,
                format!("defaults do not serialize: {e}"),
            ));
        }
        let connector = self.connector.take().ok_or_else(|| {
            Error::new(
                ErrorKind::InvalidArgument,
                "a reader needs a bucket or a connector",
            )
        })?;
        check_connector(&connector, &self.source, self.instance.is_some())?;
        let ack = match &self.instance {
            Some(i) => Some(Ack::new(
                check_instance(&self.source, i)?,
                self.ack_ttl
                    .map(|t| Duration::from_secs(t.as_secs().max(1))),
            )),
            None => None,
        };
        self.load_local_file()?;
        if let Some(prefix) = &self.env_prefix {
            let vars = self
                .env_vars
                .take()
                .unwrap_or_else(|| std::env::vars().collect());
            self.pipeline.env = env_layer(prefix, vars);
        }
        let feed = feed::subscribe(&connector, &self.source);
        let mut core = Core {
            source: self.source.clone(),
            pipeline: Arc::new(std::mem::take(&mut self.pipeline)),
            states: feed.states(),
            feed,
            raw: None,
            had_value: false,
            snapshot_file: self.snapshot_file.clone(),
            persisted: None,
            ack,
        };
        let span = tracing::info_span!("kvtk_config.load", config = %self.source.name());
        let loaded = self.first_state(&mut core).instrument(span).await;
        // The initial value: accepted from the KV, or the snapshot file.
        let (snapshot, rejection, synced) = match loaded {
            Ok(()) => match core.evaluate() {
                Ok((value, json, kv)) => {
                    core.had_value = kv.is_some();
                    let snap = Snapshot {
                        value,
                        json,
                        revision: core.last_rev(),
                        origin: Origin::Kv,
                        stale: false,
                        loaded_at: SystemTime::now(),
                    };
                    (snap, None, true)
                }
                Err(rej) => {
                    let rej = rej.at(core.last_rev());
                    tracing::warn!(error = %rej, "config in the kv rejected at start");
                    match self.load_snapshot_file(&mut core)? {
                        Some(snap) => (snap, Some(rej), true),
                        None => return Err(rej.into()),
                    }
                }
            },
            Err(e) => {
                if self.require_fresh {
                    return Err(Error::new(
                        ErrorKind::Unavailable,
                        "fresh config required but the kv is unreachable",
                    )
                    .with_source(e));
                }
                tracing::warn!(error = %e, "config kv unreachable at start");
                match self.load_snapshot_file(&mut core)? {
                    Some(snap) => (snap, None, false),
                    None => {
                        return Err(Error::new(
                            ErrorKind::Unavailable,
                            "the kv is unreachable and there is no snapshot file",
                        )
                        .with_source(e))
                    }
                }
            }
        };
        let stale = snapshot.stale;
        let revision = snapshot.revision;
        let (generation, generation_rx) = watch::channel(0u64);
        let shared = Arc::new(Shared {
            current: ArcSwap::from_pointee(snapshot),
            generation,
            ready: watch::channel(synced).0,
            events: broadcast::channel(EVENT_CAPACITY).0,
            health: Mutex::new(Health {
                stale,
                applied: if synced && rejection.is_none() {
                    core.last_rev()
                } else {
                    None
                },
                rejected: rejection.clone(),
                last_sync: synced.then(SystemTime::now),
            }),
            metrics: ReaderMetrics::new(self.source.name()),
        });
        match &rejection {
            Some(r) => shared.metrics.rejected(r, revision),
            None if synced => shared.metrics.applied(),
            None => {}
        }
        if synced {
            if shared.health().rejected.is_none() {
                let kv = core.evaluate().ok().and_then(|(_, _, kv)| kv);
                core.persist(revision, kv).await;
            }
            core.publish_ack(&shared, true).await;
        }
        let cancel = CancellationToken::new();
        let task = tokio::spawn(core.run(shared.clone(), cancel.clone()));
        Ok(ConfigReader {
            shared,
            owner: Arc::new(Owner {
                cancel,
                task: Mutex::new(Some(task)),
            }),
            generation: generation_rx,
        })
    }

    /// Waits up to the start timeout for the feed's first state, and takes it.
    async fn first_state(&self, core: &mut Core<T>) -> Result<(), Error> {
        core.raw = core
            .states
            .first(self.start_timeout, &self.source.filter())
            .await;
        if core.raw.is_some() {
            return Ok(());
        }
        let why = core.feed.last_error().unwrap_or_else(|| "no answer".into());
        Err(Error::new(
            ErrorKind::Unavailable,
            format!("the kv did not answer in {:?}: {why}", self.start_timeout),
        ))
    }

    /// The snapshot file's value, checked like any candidate; `None` when there is none.
    fn load_snapshot_file(&self, core: &mut Core<T>) -> Result<Option<Snapshot<T>>, Error> {
        let Some(path) = &self.snapshot_file else {
            return Ok(None);
        };
        let p = match persist::read(path) {
            Ok(Some(p)) => p,
            Ok(None) => return Ok(None),
            Err(e) => {
                tracing::warn!(error = %e, "ignoring the config snapshot file");
                return Ok(None);
            }
        };
        match core.pipeline.candidate(p.kv.as_ref()) {
            Ok((value, json)) => {
                core.had_value = p.kv.is_some();
                tracing::info!(
                    revision = p.revision,
                    "config loaded from the snapshot file"
                );
                Ok(Some(Snapshot {
                    value,
                    json,
                    revision: p.revision.and_then(Revision::new),
                    origin: Origin::SnapshotFile,
                    stale: true,
                    loaded_at: SystemTime::now(),
                }))
            }
            Err(rej) => {
                tracing::warn!(error = %rej, "the config snapshot file holds a rejected value");
                Ok(None)
            }
        }
    }
}

impl<T> IntoFuture for ConfigBuilder<T>
where
    T: Serialize + DeserializeOwned + Send + Sync + 'static,
{
    type Output = Result<ConfigReader<T>, Error>;
    type IntoFuture = Pin<Box<dyn Future<Output = Self::Output> + Send>>;
    fn into_future(self) -> Self::IntoFuture {
        Box::pin(self.start())
    }
}

/// Refuses at start what the reader could not do on this bucket: acknowledgements through a
/// read-only handle, a prefix-mode configuration on a mirror.
fn check_connector(connector: &Connector, source: &Source, acks: bool) -> Result<(), Error> {
    if acks && matches!(connector, Connector::ReadOnly(_)) {
        return Err(Error::new(
            ErrorKind::InvalidArgument,
            "fleet acknowledgements (instance) need a writable bucket, not a read-only handle",
        ));
    }
    match connector.opened() {
        Some(bucket) => check_mirror(&bucket, source),
        None => Ok(()),
    }
}
