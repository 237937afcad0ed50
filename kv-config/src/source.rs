//! Where a configuration lives in the bucket, and how the bucket is reached.

use std::fmt;
use std::sync::Arc;

use futures::future::BoxFuture;
use kvtk_core::{Bucket, BucketConfig, Connect, Key, ReadOnlyBucket};

use crate::error::{Error, ErrorKind};
use crate::format::Format;

/// Where a configuration lives in the bucket.
///
/// - [`Source::document`]: one key holds the whole document (JSON by default, or another
///   [`Format`]).
/// - [`Source::prefix`]: every key under `prefix.` sets one field path:
///   `app.db.pool_size = 10` under prefix `app` is `{"db": {"pool_size": 10}}`. Values are
///   JSON (scalars, arrays or objects); a value that is not JSON is taken as a string. Keys
///   are applied shallow first, so `app.db.pool_size` overrides the `pool_size` inside an
///   object stored at `app.db`. Field names must be valid key tokens
///   (`A-Z a-z 0-9 - _ = /`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// One key holds the whole document.
    Document {
        /// The key.
        key: String,
        /// The document format.
        format: Format,
    },
    /// Every key under `prefix.` sets one field.
    Prefix {
        /// The prefix (without the trailing dot).
        prefix: String,
    },
}

impl Source {
    /// A JSON document under `key`.
    pub fn document(key: impl Into<String>) -> Source {
        Source::Document {
            key: key.into(),
            format: Format::Json,
        }
    }

    /// A document under `key` in `format`.
    pub fn document_in(key: impl Into<String>, format: Format) -> Source {
        Source::Document {
            key: key.into(),
            format,
        }
    }

    /// One key per field under `prefix.`.
    pub fn prefix(prefix: impl Into<String>) -> Source {
        Source::Prefix {
            prefix: prefix.into(),
        }
    }

    /// The document key or the prefix.
    pub fn name(&self) -> &str {
        match self {
            Source::Document { key, .. } => key,
            Source::Prefix { prefix } => prefix,
        }
    }

    /// The key filter that covers the configuration.
    pub(crate) fn filter(&self) -> String {
        match self {
            Source::Document { key, .. } => key.clone(),
            Source::Prefix { prefix } => format!("{prefix}.>"),
        }
    }

    /// Checks the key or prefix against the key rules.
    pub(crate) fn validate(&self) -> Result<(), Error> {
        Key::new(self.name()).map(|_| ()).map_err(|e| {
            Error::new(
                ErrorKind::InvalidArgument,
                format!("bad config source {:?}", self.name()),
            )
            .with_source(e)
        })
    }

    /// The key filter of the applied-revision acknowledgements: `_applied.<name>.*`.
    pub(crate) fn ack_filter(&self) -> String {
        format!("{}.*", self.ack_prefix())
    }

    /// `_applied.<name>`.
    pub(crate) fn ack_prefix(&self) -> String {
        format!("_applied.{}", self.name())
    }
}

type ConnectFn =
    Arc<dyn Fn() -> BoxFuture<'static, Result<Bucket, kvtk_core::Error>> + Send + Sync>;

/// How a reader reaches its bucket: an open handle, or a function that connects and opens it
/// (called again, with backoff, until it succeeds — this is what lets a reader start while
/// the server is away).
#[derive(Clone)]
pub enum Connector {
    /// An open bucket. The connection reconnects by itself.
    Bucket(Bucket),
    /// An open read-only handle, for instance on a mirror of the origin bucket in another
    /// JetStream domain (a leaf node near the fleet, see
    /// [`ConfigBuilder::read_only`](crate::ConfigBuilder::read_only)). The reader writes
    /// nothing: no fleet acknowledgements.
    ReadOnly(ReadOnlyBucket),
    /// Connects and opens the bucket on demand.
    Lazy(ConnectFn),
}

impl fmt::Debug for Connector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Connector::Bucket(b) => f.debug_tuple("Bucket").field(&b.name()).finish(),
            Connector::ReadOnly(b) => f.debug_tuple("ReadOnly").field(&b.name()).finish(),
            Connector::Lazy(_) => f.write_str("Lazy(..)"),
        }
    }
}

impl Connector {
    /// Connects to `url` (comma-separated for a cluster, credentials in it honoured) and
    /// opens (or creates) the bucket described by `bucket`: shorthand for
    /// [`Connector::connect_with`]`(Connect::new().server(url), bucket)`.
    pub fn connect(url: impl Into<String>, bucket: BucketConfig) -> Connector {
        Connector::connect_with(Connect::new().server(url.into()), bucket)
    }

    /// Connects with these settings (credentials, TLS, a `nats` context, …) and opens (or
    /// creates) the bucket described by `bucket`.
    ///
    /// ```no_run
    /// # #[allow(dead_code)]
    /// # async fn demo() -> Result<(), kvtk_config::Error> {
    /// use kvtk_config::{ConfigReader, Connector, Source};
    /// use kvtk_core::{BucketConfig, Connect};
    /// let connector = Connector::connect_with(
    ///     Connect::new().server("tls://nats.internal:4222").creds_file("/etc/app/reader.creds"),
    ///     BucketConfig::new("config"),
    /// );
    /// let reader = ConfigReader::<serde_json::Value>::builder(Source::document("app"))
    ///     .connector(connector)
    ///     .await?;
    /// println!("{:?}", reader.current());
    /// # Ok(()) }
    /// ```
    pub fn connect_with(connect: Connect, bucket: BucketConfig) -> Connector {
        Connector::Lazy(Arc::new(move || {
            let connect = connect.clone();
            let cfg = bucket.clone();
            Box::pin(async move {
                let kv = connect.connect().await?;
                kv.create_or_open(cfg).await
            })
        }))
    }

    /// A custom connect function.
    pub fn from_fn<F>(f: F) -> Connector
    where
        F: Fn() -> BoxFuture<'static, Result<Bucket, kvtk_core::Error>> + Send + Sync + 'static,
    {
        Connector::Lazy(Arc::new(f))
    }

    /// The handle to read through, and the one to write acknowledgements through when
    /// there is one.
    pub(crate) async fn open(&self) -> Result<Opened, kvtk_core::Error> {
        let bucket = match self {
            Connector::ReadOnly(b) => {
                return Ok(Opened {
                    read: b.clone(),
                    write: None,
                })
            }
            Connector::Bucket(b) => b.clone(),
            Connector::Lazy(f) => f().await?,
        };
        Ok(Opened {
            read: bucket.read_only(),
            write: Some(bucket),
        })
    }

    /// The handle when it is already open.
    pub(crate) fn opened(&self) -> Option<ReadOnlyBucket> {
        match self {
            Connector::Bucket(b) => Some(b.read_only()),
            Connector::ReadOnly(b) => Some(b.clone()),
            Connector::Lazy(_) => None,
        }
    }
}

/// A reached bucket: read through `read` (a clone of the same handle as `write`, when both).
#[derive(Debug, Clone)]
pub(crate) struct Opened {
    pub(crate) read: ReadOnlyBucket,
    pub(crate) write: Option<Bucket>,
}

/// Refuses what a reader cannot promise on this bucket: a prefix-mode configuration on a
/// mirror (the server strips the batch headers, so a multi-key change cannot be applied
/// whole).
pub(crate) fn check_mirror(bucket: &ReadOnlyBucket, source: &Source) -> Result<(), Error> {
    match (bucket.mirror_of(), source) {
        (Some(origin), Source::Prefix { prefix }) => Err(Error::new(
            ErrorKind::Unsupported,
            format!(
                "prefix {prefix:?} cannot be read from bucket {:?}, a mirror of {origin}: a \
                 mirror does not keep transaction boundaries, so a multi-key change could be \
                 applied half; read a document-mode configuration from the mirror, or the \
                 prefix from the origin",
                bucket.name()
            ),
        )),
        _ => Ok(()),
    }
}

impl From<Bucket> for Connector {
    fn from(b: Bucket) -> Self {
        Connector::Bucket(b)
    }
}

impl From<ReadOnlyBucket> for Connector {
    fn from(b: ReadOnlyBucket) -> Self {
        Connector::ReadOnly(b)
    }
}
