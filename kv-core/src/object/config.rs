//! How to create an object store.

use std::time::Duration;

use async_nats::jetstream::stream::{self, Compression, DiscardPolicy, Placement, StorageType};

use crate::config::{validate_bucket_name, Storage};
use crate::error::Error;

/// How to create an object store: the options of the seed's `ObjectStoreOptions`.
///
/// ```
/// use std::time::Duration;
/// use kvtk_core::object::ObjectStoreConfig;
/// let cfg = ObjectStoreConfig::new("artifacts")
///     .description("build outputs")
///     .max_bytes(1 << 30)
///     .max_age(Duration::from_secs(7 * 24 * 3600))
///     .replicas(3);
/// assert_eq!(cfg.name(), "artifacts");
/// assert!(cfg.validate().is_ok());
/// assert!(ObjectStoreConfig::new("no spaces").validate().is_err());
/// ```
#[derive(Debug, Clone)]
pub struct ObjectStoreConfig {
    pub(crate) name: String,
    description: Option<String>,
    max_age: Option<Duration>,
    max_bytes: Option<i64>,
    replicas: usize,
    storage: Storage,
    compression: bool,
    placement: Option<Placement>,
}

impl ObjectStoreConfig {
    /// A store named `name`: file storage, one replica, no size or age limit.
    pub fn new(name: impl Into<String>) -> ObjectStoreConfig {
        ObjectStoreConfig {
            name: name.into(),
            description: None,
            max_age: None,
            max_bytes: None,
            replicas: 1,
            storage: Storage::File,
            compression: false,
            placement: None,
        }
    }

    /// The store name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// A description kept with the store.
    pub fn description(mut self, description: impl Into<String>) -> Self {
        self.description = Some(description.into());
        self
    }

    /// Objects older than this are removed by the server.
    pub fn max_age(mut self, max_age: Duration) -> Self {
        self.max_age = Some(max_age);
        self
    }

    /// The most bytes the store may hold (chunks and metadata); a put beyond it fails.
    pub fn max_bytes(mut self, max_bytes: i64) -> Self {
        self.max_bytes = Some(max_bytes);
        self
    }

    /// Replicas in a cluster (1 to 5).
    pub fn replicas(mut self, replicas: usize) -> Self {
        self.replicas = replicas;
        self
    }

    /// File (default) or memory storage.
    pub fn storage(mut self, storage: Storage) -> Self {
        self.storage = storage;
        self
    }

    /// Compresses the store's stream on the server (S2).
    pub fn compression(mut self, on: bool) -> Self {
        self.compression = on;
        self
    }

    /// Cluster and tag placement.
    pub fn placement(mut self, placement: Placement) -> Self {
        self.placement = Some(placement);
        self
    }

    /// Checks the options without contacting a server.
    pub fn validate(&self) -> Result<(), Error> {
        validate_bucket_name(&self.name)?;
        if !(1..=5).contains(&self.replicas) {
            return Err(Error::invalid_argument(format!(
                "replicas must be 1 to 5, got {}",
                self.replicas
            )));
        }
        if matches!(self.max_bytes, Some(b) if b < 1) {
            return Err(Error::invalid_argument("max_bytes must be at least 1"));
        }
        Ok(())
    }

    /// The stream behind the store, as async-nats and the other NATS clients lay it out.
    pub(crate) fn to_stream_config(&self) -> stream::Config {
        stream::Config {
            name: format!("OBJ_{}", self.name),
            description: self.description.clone(),
            subjects: vec![
                format!("$O.{}.C.>", self.name),
                format!("$O.{}.M.>", self.name),
            ],
            max_age: self.max_age.unwrap_or_default(),
            max_bytes: self.max_bytes.unwrap_or(-1),
            storage: match self.storage {
                Storage::File => StorageType::File,
                Storage::Memory => StorageType::Memory,
            },
            num_replicas: self.replicas,
            discard: DiscardPolicy::New,
            allow_rollup: true,
            allow_direct: true,
            compression: self.compression.then_some(Compression::S2),
            placement: self.placement.clone(),
            ..Default::default()
        }
    }
}
