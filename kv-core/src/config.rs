//! Bucket configuration: every option of the seed's `KvOptions`, plus per-key TTL and atomic
//! batches.

use std::time::Duration;

use async_nats::jetstream::stream::{
    self, Compression, DiscardPolicy, Placement, Republish, Source, StorageType,
};

use crate::error::Error;
use crate::revision::Ttl;

/// The most history a bucket may keep per key (a server limit).
pub const MAX_HISTORY: i64 = 64;

/// Storage backend of a bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Storage {
    /// On disk (the default).
    #[default]
    File,
    /// In memory: lost when the server stops.
    Memory,
}

/// How to create a bucket.
///
/// ```
/// use std::time::Duration;
/// use kvtk_core::BucketConfig;
/// let cfg = BucketConfig::new("locks")
///     .history(1)
///     .per_key_ttl(Duration::from_secs(60))
///     .atomic_batches(true)
///     .replicas(3);
/// assert_eq!(cfg.name(), "locks");
/// assert!(cfg.validate().is_ok());
/// assert!(BucketConfig::new("bad name").validate().is_err());
/// ```
#[derive(Debug, Clone)]
pub struct BucketConfig {
    pub(crate) name: String,
    pub(crate) description: Option<String>,
    pub(crate) history: i64,
    pub(crate) ttl: Option<Duration>,
    pub(crate) max_value_size: Option<i32>,
    pub(crate) max_bucket_size: Option<i64>,
    pub(crate) replicas: usize,
    pub(crate) storage: Storage,
    pub(crate) compression: bool,
    pub(crate) placement: Option<Placement>,
    pub(crate) republish: Option<Republish>,
    pub(crate) mirror: Option<Source>,
    pub(crate) sources: Vec<Source>,
    pub(crate) marker_ttl: Option<Duration>,
    pub(crate) atomic: bool,
    pub(crate) max_consumers: Option<u32>,
}

impl BucketConfig {
    /// A bucket named `name` with history 1, file storage, one replica.
    pub fn new(name: impl Into<String>) -> BucketConfig {
        BucketConfig {
            name: name.into(),
            description: None,
            history: 1,
            ttl: None,
            max_value_size: None,
            max_bucket_size: None,
            replicas: 1,
            storage: Storage::File,
            compression: false,
            placement: None,
            republish: None,
            mirror: None,
            sources: Vec::new(),
            marker_ttl: None,
            atomic: false,
            max_consumers: None,
        }
    }

    /// The bucket name.
    pub fn name(&self) -> &str {
        &self.name
    }
    /// Revisions kept per key (1..=64). Buckets with per-key TTLs should keep 1: with more,
    /// the server may raise a key's TTL and an older revision can reappear when the newest
    /// expires (nats-server #6959).
    pub fn history(mut self, history: i64) -> Self {
        self.history = history;
        self
    }
    /// The maximum age of every entry (the bucket TTL).
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = Some(ttl);
        self
    }
    /// The largest value accepted, in bytes.
    pub fn max_value_size(mut self, bytes: i32) -> Self {
        self.max_value_size = Some(bytes);
        self
    }
    /// The largest total size of the bucket, in bytes.
    pub fn max_bucket_size(mut self, bytes: i64) -> Self {
        self.max_bucket_size = Some(bytes);
        self
    }
    /// The most consumers the bucket's stream accepts. Every kvtk watch is one consumer: a
    /// lock waiter's while it waits, each process's config readers on one bucket handle, an
    /// election observer's, a membership watcher's, a console's. nats-server 2.15 limits a
    /// stream that sets no limit of its own to 1,000 (a limit of 0 or −1 means that default
    /// too); past it a new watch fails with "maximum consumers limit reached". Set more
    /// for more concurrent lock waiters or config reader processes on one bucket.
    ///
    /// ```
    /// use kvtk_core::BucketConfig;
    /// assert!(BucketConfig::new("config").max_consumers(5_000).validate().is_ok());
    /// assert!(BucketConfig::new("config").max_consumers(0).validate().is_err());
    /// ```
    pub fn max_consumers(mut self, n: u32) -> Self {
        self.max_consumers = Some(n);
        self
    }
    /// Replicas (1, 3 or 5 in a cluster).
    pub fn replicas(mut self, replicas: usize) -> Self {
        self.replicas = replicas;
        self
    }
    /// A description.
    pub fn description(mut self, d: impl Into<String>) -> Self {
        self.description = Some(d.into());
        self
    }
    /// Storage backend.
    pub fn storage(mut self, storage: Storage) -> Self {
        self.storage = storage;
        self
    }
    /// S2 compression of stored values.
    pub fn compression(mut self, on: bool) -> Self {
        self.compression = on;
        self
    }
    /// Cluster and tag placement.
    pub fn placement(mut self, placement: Placement) -> Self {
        self.placement = Some(placement);
        self
    }
    /// Republish stored entries to other subjects.
    pub fn republish(mut self, republish: Republish) -> Self {
        self.republish = Some(republish);
        self
    }
    /// Mirror another bucket (read-only copy). `source.name` may be the bucket name or its
    /// `KV_` stream name; `source.domain` names the origin's JetStream domain when it lives
    /// in another one (a hub seen from a leaf node), and becomes the external API prefix
    /// `$JS.<domain>.API`.
    ///
    /// A mirror keeps its origin's revisions (stream sequences), subjects, tombstones, purges
    /// and expiry markers, so readers on it see the origin's history. It must not expire
    /// anything itself: the server refuses expiry markers on a mirror, and [`validate`]
    /// refuses [`per_key_ttl`] and [`ttl`] with a mirror (a key removed by the mirror's own
    /// clock would vanish without an event).
    ///
    /// ```
    /// use kvtk_core::{nats::Source, BucketConfig};
    /// // On a leaf node: a local copy of the hub's `app` bucket.
    /// let cfg = BucketConfig::new("app").mirror(Source {
    ///     name: "app".into(),
    ///     domain: Some("hub".into()),
    ///     ..Default::default()
    /// });
    /// assert!(cfg.validate().is_ok());
    /// let expiring = cfg.per_key_ttl(std::time::Duration::from_secs(60));
    /// assert!(expiring.validate().is_err());
    /// ```
    ///
    /// [`validate`]: Self::validate
    /// [`per_key_ttl`]: Self::per_key_ttl
    /// [`ttl`]: Self::ttl
    pub fn mirror(mut self, source: Source) -> Self {
        self.mirror = Some(source);
        self
    }
    /// Source entries from other buckets.
    pub fn sources(mut self, sources: Vec<Source>) -> Self {
        self.sources = sources;
        self
    }
    /// Enables per-key TTLs. The server then writes an expiry marker when a key's TTL runs
    /// out, and keeps markers (and purge tombstones) for `marker_ttl` (≥ 1 s). Needs
    /// nats-server ≥ 2.11.2.
    pub fn per_key_ttl(mut self, marker_ttl: Duration) -> Self {
        self.marker_ttl = Some(marker_ttl);
        self
    }
    /// Enables atomic multi-key batches (transactions). Needs nats-server ≥ 2.12.
    pub fn atomic_batches(mut self, on: bool) -> Self {
        self.atomic = on;
        self
    }

    /// Checks the options without contacting the server.
    pub fn validate(&self) -> Result<(), Error> {
        validate_bucket_name(&self.name)?;
        if !(1..=MAX_HISTORY).contains(&self.history) {
            return Err(Error::invalid_argument(format!(
                "history must be between 1 and {MAX_HISTORY}, got {}",
                self.history
            )));
        }
        if !(1..=5).contains(&self.replicas) {
            return Err(Error::invalid_argument(format!(
                "replicas must be between 1 and 5, got {}",
                self.replicas
            )));
        }
        if let Some(t) = self.marker_ttl {
            Ttl::new(t)?;
        }
        if matches!(self.max_value_size, Some(n) if n < 1) {
            return Err(Error::invalid_argument("max_value_size must be positive"));
        }
        if matches!(self.max_bucket_size, Some(n) if n < 1) {
            return Err(Error::invalid_argument("max_bucket_size must be positive"));
        }
        if let Some(n) = self.max_consumers {
            consumer_limit(n)?;
        }
        if self.mirror.is_some() && !self.sources.is_empty() {
            return Err(Error::invalid_argument(
                "a bucket cannot both mirror and source other buckets",
            ));
        }
        if self.mirror.is_some() && (self.marker_ttl.is_some() || self.ttl.is_some()) {
            return Err(Error::invalid_argument(
                "a mirror cannot expire keys itself (per-key TTL or bucket TTL): it keeps the \
                 origin's expiry markers instead",
            ));
        }
        if let Some(s) = self
            .mirror
            .iter()
            .chain(&self.sources)
            .find(|s| s.domain.is_some() && s.external.is_some())
        {
            return Err(Error::invalid_argument(format!(
                "source {:?} names both a domain and an external API prefix",
                s.name
            )));
        }
        Ok(())
    }

    pub(crate) fn to_stream_config(&self) -> stream::Config {
        let mirror = self.mirror.clone().map(kv_stream);
        let sources = self.kv_sources();
        stream::Config {
            name: format!("KV_{}", self.name),
            description: self.description.clone(),
            subjects: match mirror {
                Some(_) => Vec::new(),
                None => vec![format!("$KV.{}.>", self.name)],
            },
            max_messages_per_subject: self.history,
            max_bytes: self.max_bucket_size.unwrap_or(-1),
            max_age: self.ttl.unwrap_or_default(),
            max_message_size: self.max_value_size.unwrap_or(-1),
            storage: match self.storage {
                Storage::File => StorageType::File,
                Storage::Memory => StorageType::Memory,
            },
            num_replicas: self.replicas,
            republish: self.republish.clone(),
            allow_rollup: true,
            deny_delete: true,
            deny_purge: false,
            allow_direct: true,
            mirror_direct: mirror.is_some(),
            mirror,
            sources: (!sources.is_empty()).then_some(sources),
            discard: DiscardPolicy::New,
            compression: self.compression.then_some(Compression::S2),
            placement: self.placement.clone(),
            allow_message_ttl: self.marker_ttl.is_some(),
            subject_delete_marker_ttl: self.marker_ttl,
            allow_atomic_publish: self.atomic,
            max_consumers: self
                .max_consumers
                .and_then(|n| consumer_limit(n).ok())
                .unwrap_or(-1),
            ..Default::default()
        }
    }

    /// The buckets this one sources, as streams. Sourced entries keep their origin's
    /// subjects unless transformed into ours.
    fn kv_sources(&self) -> Vec<Source> {
        self.sources
            .iter()
            .cloned()
            .map(kv_stream)
            .map(|mut s| {
                let origin = s.name.trim_start_matches("KV_").to_string();
                if s.subject_transforms.is_empty() && origin != self.name {
                    s.subject_transforms = vec![stream::SubjectTransform {
                        source: format!("$KV.{origin}.>"),
                        destination: format!("$KV.{}.>", self.name),
                    }];
                }
                s
            })
            .collect()
    }
}

/// A stream's consumer limit as the server takes it: 1 to `i32::MAX`.
pub(crate) fn consumer_limit(n: u32) -> Result<i32, Error> {
    i32::try_from(n).ok().filter(|n| *n >= 1).ok_or_else(|| {
        Error::invalid_argument(format!("max_consumers must be between 1 and {}", i32::MAX))
    })
}

/// A bucket mirrored or sourced, as its stream (`KV_<bucket>`) reached in its own domain.
fn kv_stream(mut s: Source) -> Source {
    if !s.name.starts_with("KV_") {
        s.name = format!("KV_{}", s.name);
    }
    // The server knows no `domain`: it reaches another domain by its API prefix.
    if let Some(domain) = s.domain.take() {
        s.external.get_or_insert(stream::External {
            api_prefix: format!("$JS.{domain}.API"),
            delivery_prefix: None,
        });
    }
    s
}

/// Bucket names: `A-Z a-z 0-9 - _`, 1..=64 characters.
pub(crate) fn validate_bucket_name(name: &str) -> Result<(), Error> {
    if name.is_empty() || name.len() > 64 {
        return Err(Error::invalid_argument(format!(
            "bucket name must be 1 to 64 characters, got {}",
            name.len()
        )));
    }
    if let Some((at, ch)) = name
        .char_indices()
        .find(|(_, c)| !(c.is_ascii_alphanumeric() || *c == '-' || *c == '_'))
    {
        return Err(Error::invalid_argument(format!(
            "bucket name has character {ch:?} at byte {at}; allowed are A-Z a-z 0-9 - _"
        )));
    }
    Ok(())
}
