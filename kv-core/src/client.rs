//! The entry point: a [`Kv`] handle over one NATS connection.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::stream;
use bytes::Bytes;
use tracing::Instrument as _;

use crate::bucket::inner::Inner;
use crate::bucket::{Bucket, ReadOnlyBucket};
use crate::config::{validate_bucket_name, BucketConfig};
use crate::error::{Error, ErrorKind, Operation};
use crate::js::Js;
use crate::permission::Violations;
use crate::version::ServerVersion;

/// A handle on the KV buckets of one NATS connection. Cheap to clone.
///
/// ```no_run
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// use kvtk_core::{BucketConfig, Kv};
/// let kv = Kv::connect("nats://127.0.0.1:4222").await?;
/// let bucket = kv.create_or_open(BucketConfig::new("app")).await?;
/// bucket.put("greeting", "hello").await?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct Kv {
    js: Js,
}

impl Kv {
    /// Wraps an existing connection. The server version is read from the connection's latest
    /// `INFO` whenever a feature depends on it, so a client still connecting is fine.
    ///
    /// A `Kv` made this way does not see the server's permission errors (they go to the event
    /// callback of whoever built the client): a refused request ends as
    /// [`ErrorKind::Timeout`], not [`ErrorKind::PermissionDenied`]. Build it with
    /// [`Connect`](crate::Connect) to have them.
    pub fn new(client: async_nats::Client) -> Kv {
        let timeout = client.timeout().unwrap_or(Duration::from_secs(5));
        Kv {
            js: Js {
                client,
                api: "$JS.API".to_string(),
                timeout,
                assumed_version: None,
                version_seen: Default::default(),
                janitor: Default::default(),
                violations: None,
            },
        }
    }

    pub(crate) fn with_violations(mut self, violations: Arc<Violations>) -> Kv {
        self.js.violations = Some(violations);
        self
    }

    /// Connects to `url` (comma-separated for a cluster; credentials in the URL are used) and
    /// wraps the connection: shorthand for `Connect::new().server(url).connect()`, see
    /// [`Connect`](crate::Connect) for credentials, TLS and contexts.
    ///
    /// # Errors
    /// As [`Connect::connect`](crate::Connect::connect).
    ///
    /// # Cancel safety
    /// Cancel safe: dropping the future drops the half-made connection.
    pub async fn connect(url: &str) -> Result<Kv, Error> {
        crate::Connect::new().server(url).connect().await
    }

    /// Uses another JetStream API prefix (for a JetStream domain or an imported account).
    pub fn with_api_prefix(mut self, prefix: impl Into<String>) -> Kv {
        self.js.api = prefix.into();
        self
    }

    /// Sets the timeout of every request (default: the client's request timeout, or 5 s).
    pub fn with_timeout(mut self, timeout: Duration) -> Kv {
        self.js.timeout = timeout;
        self
    }

    /// Acts as if the server were `version`: for testing how features degrade on older
    /// servers. Not for production use; only with the `testing` feature.
    #[cfg(feature = "testing")]
    pub fn assume_server_version(mut self, version: ServerVersion) -> Kv {
        self.js.assumed_version = Some(version);
        self
    }

    /// The version of the server the client is connected to (0.0.0 before it connected).
    pub fn server_version(&self) -> ServerVersion {
        self.js.server_version()
    }

    pub(crate) fn js(&self) -> &Js {
        &self.js
    }

    /// The underlying connection.
    pub fn client(&self) -> &async_nats::Client {
        &self.js.client
    }

    fn check_features(&self, cfg: &BucketConfig) -> Result<(), Error> {
        if cfg.marker_ttl.is_some() {
            self.server_version()
                .require(ServerVersion::PER_KEY_TTL, "per-key TTL")?;
        }
        if cfg.atomic {
            self.server_version()
                .require(ServerVersion::ATOMIC_BATCH, "atomic batches")?;
        }
        Ok(())
    }

    /// Creates a bucket. Creating a bucket that exists with the same configuration succeeds;
    /// with another configuration it fails with [`ErrorKind::BucketExists`].
    ///
    /// A replicated bucket (`replicas > 1`) may take longer than one request timeout: while
    /// the cluster cannot place it yet (a peer starting or restarting) or its new stream's
    /// first leader election runs late, the create is sent again for up to 30 s, then the
    /// last transient error ([`ErrorKind::Unavailable`] or [`ErrorKind::Timeout`]) is
    /// returned. It then waits, up to 10 s more, until the bucket serves requests.
    ///
    /// # Cancel safety
    /// Not cancel safe: the bucket may be created even if the future is dropped.
    pub async fn create_bucket(&self, cfg: BucketConfig) -> Result<Bucket, Error> {
        let span = tracing::debug_span!("kv.create_bucket", bucket = %cfg.name);
        async {
            cfg.validate().map_err(|e| e.with_op(Operation::Bucket))?;
            self.check_features(&cfg)
                .map_err(|e| e.with_op(Operation::Bucket))?;
            let body = serde_json::to_vec(&cfg.to_stream_config())
                .map_err(|e| Error::new(ErrorKind::InvalidArgument, e.to_string()))?;
            let info = self
                .create_stream(&cfg, Bytes::from(body))
                .await
                .map_err(|e| e.with_op(Operation::Bucket))?;
            let inner = self.inner(&cfg.name, &info);
            if cfg.replicas > 1 {
                serving(&inner).await;
            }
            Ok(Bucket::from_inner(inner))
        }
        .instrument(span)
        .await
    }

    /// Sends the stream's create request; for a replicated stream, again while the cluster
    /// cannot place it yet or the answer is late (see [`REPLICATED_CREATE_WAIT`]). A repeated
    /// create of the same configuration is idempotent on the server.
    async fn create_stream(&self, cfg: &BucketConfig, body: Bytes) -> Result<stream::Info, Error> {
        let subject = format!("STREAM.CREATE.KV_{}", cfg.name);
        let create = || self.js.api::<stream::Info>(&subject, body.clone());
        if cfg.replicas <= 1 {
            return create().await;
        }
        crate::retry::Backoff::DEFAULT
            .retry_for(REPLICATED_CREATE_WAIT, create)
            .await
    }

    /// Opens the bucket if it exists (without changing it), else creates it.
    ///
    /// # Cancel safety
    /// Not cancel safe: the bucket may be created even if the future is dropped.
    pub async fn create_or_open(&self, cfg: BucketConfig) -> Result<Bucket, Error> {
        match self.open(&cfg.name).await {
            Ok(b) => Ok(b),
            Err(e) if e.kind() == ErrorKind::BucketNotFound => {
                match self.create_bucket(cfg.clone()).await {
                    // Lost a race with another creator: open theirs.
                    Err(e) if e.kind() == ErrorKind::BucketExists => self.open(&cfg.name).await,
                    other => other,
                }
            }
            Err(e) => Err(e),
        }
    }

    /// Opens an existing bucket for reading and writing. Rides through transient failures
    /// (a timeout, no responders while the JetStream meta leader is elected) for up to
    /// [`OPEN_WAIT`]; a bucket that does not exist is [`ErrorKind::BucketNotFound`] at once.
    ///
    /// # Cancel safety
    /// Cancel safe: it only reads.
    pub async fn open(&self, name: &str) -> Result<Bucket, Error> {
        Ok(Bucket::from_inner(self.open_inner(name).await?))
    }

    /// Opens an existing bucket read-only: the handle has no write methods. Rides through
    /// transient failures as [`open`](Self::open) does.
    ///
    /// # Cancel safety
    /// Cancel safe: it only reads.
    pub async fn open_read_only(&self, name: &str) -> Result<ReadOnlyBucket, Error> {
        Ok(ReadOnlyBucket::from_inner(self.open_inner(name).await?))
    }

    async fn open_inner(&self, name: &str) -> Result<Arc<Inner>, Error> {
        validate_bucket_name(name).map_err(|e| e.with_op(Operation::Bucket))?;
        let stream = format!("KV_{name}");
        let info = crate::retry::Backoff::DEFAULT
            .retry_for(OPEN_WAIT, || self.js.stream_info(&stream))
            .await
            .map_err(|e| e.with_op(Operation::Bucket))?;
        Ok(self.inner(name, &info))
    }

    fn inner(&self, name: &str, info: &stream::Info) -> Arc<Inner> {
        // A mirror stores its origin's subjects and takes no writes of its own: reads and
        // writes both use the origin's key prefix (writes reach the origin).
        let write_bucket = info
            .config
            .mirror
            .as_ref()
            .map(|m| m.name.trim_start_matches("KV_").to_string())
            .unwrap_or_else(|| name.to_string());
        Arc::new(Inner {
            js: self.js.clone(),
            name: name.to_string(),
            shared_name: name.into(),
            stream: format!("KV_{name}"),
            // A mirror keeps its origin's subjects.
            read_prefix: format!("$KV.{write_bucket}."),
            write_prefix: format!("$KV.{write_bucket}."),
            direct: info.config.allow_direct,
            atomic: info.config.allow_atomic_publish,
            mirror_of: info.config.mirror.as_ref().map(|m| m.name.clone()),
        })
    }

    /// The names of the buckets on the server (the streams that hold `$KV.<bucket>.>`
    /// subjects and are named `KV_<bucket>`), sorted.
    ///
    /// # Cancel safety
    /// Cancel safe: it only reads.
    pub async fn bucket_names(&self) -> Result<Vec<String>, Error> {
        #[derive(serde::Deserialize)]
        struct Page {
            total: usize,
            #[serde(default)]
            streams: Option<Vec<String>>,
        }
        let mut names = Vec::new();
        let mut offset = 0;
        loop {
            let body = serde_json::json!({ "offset": offset, "subject": "$KV.*.>" });
            let page: Page = self
                .js
                .api("STREAM.NAMES", Bytes::from(body.to_string()))
                .await
                .map_err(|e| e.with_op(Operation::Bucket))?;
            let streams = page.streams.unwrap_or_default();
            offset += streams.len();
            let done = streams.is_empty() || offset >= page.total;
            names.extend(
                streams
                    .into_iter()
                    .filter_map(|s| s.strip_prefix("KV_").map(str::to_string)),
            );
            if done {
                break;
            }
        }
        names.sort();
        Ok(names)
    }

    /// Deletes a bucket and all its data. Returns whether it existed.
    ///
    /// # Cancel safety
    /// Not cancel safe: the bucket may be deleted even if the future is dropped.
    pub async fn delete_bucket(&self, name: &str) -> Result<bool, Error> {
        validate_bucket_name(name).map_err(|e| e.with_op(Operation::Bucket))?;
        #[derive(serde::Deserialize)]
        struct Deleted {
            success: bool,
        }
        match self
            .js
            .api::<Deleted>(&format!("STREAM.DELETE.KV_{name}"), Bytes::new())
            .await
        {
            Ok(d) => Ok(d.success),
            Err(e) if e.kind() == ErrorKind::BucketNotFound => Ok(false),
            Err(e) => Err(e.with_op(Operation::Bucket)),
        }
    }
}

/// How long [`Kv::create_bucket`] keeps asking for a replicated bucket that the cluster
/// cannot create yet. Two cases pass by themselves, measured on a healthy 3-node cluster:
/// the meta leader has no statistics from a peer yet ("no suitable peers for placement, peer
/// offline", right after servers start, or while one restarts), and the new stream's first
/// leader election fails, so that its answer waits one Raft election timeout (4–9 s) — with
/// one of three nodes down, half of the creates took 4–5 s.
const REPLICATED_CREATE_WAIT: Duration = Duration::from_secs(30);

/// How long [`Kv::open`] rides through transient failures of its one read (the stream's
/// info): on a busy 2-core machine, 50 clients opening one bucket at once saw an answer
/// later than a 5 s request timeout, and a meta-leader election leaves none for seconds.
pub const OPEN_WAIT: Duration = Duration::from_secs(15);

/// How long [`Kv::create_bucket`] waits for a new replicated bucket to serve requests.
const SERVING_WAIT: Duration = Duration::from_secs(10);

/// Waits, up to [`SERVING_WAIT`], until a new replicated bucket serves requests: its stream
/// has a leader (which takes writes) and a replica answers direct gets. Right after the
/// stream is created both can answer "no responders" for a moment (seen in R3 tests: a
/// writer's first read failed). The bucket exists either way, so this never fails: past the
/// wait, callers meet a transient error, which the recipes ride out.
async fn serving(inner: &Inner) {
    let ready = crate::retry::Backoff::DEFAULT.retry_for(SERVING_WAIT, || serves(inner));
    if let Err(e) = ready.await {
        tracing::debug!(bucket = %inner.name, error = %e, "a new replicated bucket is not serving yet");
    }
}

/// Whether the bucket serves requests now: `Unavailable` (transient) until its stream names a
/// leader and a replica answers a direct get (a probe of a key nobody writes: "not found").
async fn serves(inner: &Inner) -> Result<(), Error> {
    let unavailable = || Error::new(ErrorKind::Unavailable, "the new bucket does not serve yet");
    let info = inner.stream_info().await?;
    if info.cluster.is_none_or(|c| c.leader.is_none()) {
        return Err(unavailable());
    }
    if inner.direct {
        let probe = format!("{}_kvtk_ready", inner.read_prefix);
        inner.js.direct_last(&inner.stream, &probe).await?;
    }
    Ok(())
}
