//! The reader's options, [`ConfigBuilder`], and the checks made before it starts.

use std::fmt;
use std::future::{Future, IntoFuture};
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use kvtk_core::lease::Sessions;
use kvtk_core::{Bucket, ReadOnlyBucket};
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::core::Core;
use super::handle::ConfigReader;
use super::start::{self, Start};
use crate::error::{Error, ErrorKind};
use crate::fleet::{check_instance, Ack};
use crate::format::Format;
use crate::layer::env_layer;
use crate::pipeline::{Pipeline, Validate};
use crate::source::{check_mirror, Connector, Source};

/// The builder of a reader lives with the builder, so the handle knows nothing of how it was
/// started (and the file graph stays a DAG).
impl<T> ConfigReader<T>
where
    T: Serialize + DeserializeOwned + Send + Sync + 'static,
{
    /// Starts building a reader of the configuration at `source`.
    pub fn builder(source: Source) -> ConfigBuilder<T> {
        ConfigBuilder::new(source)
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
    ack_sessions: Option<Sessions>,
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
            ack_sessions: None,
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

    /// Binds the acknowledgement key ([`instance`](Self::instance)) to the current session
    /// of `sessions` instead of a lease of its own: written without a TTL, never renewed by
    /// itself. Every reader given a clone of the same `Sessions` shares its one session, so
    /// the acknowledgements of any number of readers in a process cost one renewal write per
    /// interval. `sessions` must be made on the reader's bucket (its `Keeper`'s). When the
    /// session ends, [`ConfigWriter::wait_applied`](crate::ConfigWriter::wait_applied) stops
    /// counting the instance (judged from the stream leader), and the reader writes its
    /// acknowledgement again under a new session at its next heartbeat. With
    /// least-privilege permissions, add the session owner's set (`kvtk_tests::recipes::bound`);
    /// a writer that waits for bound acknowledgements reads `_session.*` from the stream
    /// leader.
    pub fn bind_ack_to_session(mut self, sessions: Sessions) -> Self {
        self.ack_sessions = Some(sessions);
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
        let (connector, ack) = self.check()?;
        self.load_local_file()?;
        self.load_env();
        let core = Core::new(
            &connector,
            self.source,
            Arc::new(self.pipeline),
            self.snapshot_file,
            ack,
        );
        let opts = Start {
            timeout: self.start_timeout,
            require_fresh: self.require_fresh,
        };
        start::launch(core, opts).await
    }

    /// Checks the options and the connector; the acknowledgement of an
    /// [`instance`](Self::instance).
    fn check(&mut self) -> Result<(Connector, Option<Ack>), Error> {
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
            Some(i) => Some(
                Ack::new(
                    check_instance(&self.source, i)?,
                    self.ack_ttl
                        .map(|t| Duration::from_secs(t.as_secs().max(1))),
                )
                .bound_to(self.ack_sessions.take()),
            ),
            None => None,
        };
        Ok((connector, ack))
    }

    /// The environment layer, read once from the process (or the variables given).
    fn load_env(&mut self) {
        if let Some(prefix) = &self.env_prefix {
            let vars = self
                .env_vars
                .take()
                .unwrap_or_else(|| std::env::vars().collect());
            self.pipeline.env = env_layer(prefix, vars);
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
