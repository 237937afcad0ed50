//! What an object is: its metadata as written, and what a put is given.

use std::collections::HashMap;

use async_nats::jetstream::object_store as os;
use time::OffsetDateTime;

/// An object's metadata: name, size, chunks, SHA-256 digest, modification time, user
/// metadata, and the link it is when it is one.
#[derive(Debug, Clone, PartialEq)]
pub struct ObjectInfo(pub(crate) os::ObjectInfo);

impl ObjectInfo {
    /// The object's name.
    pub fn name(&self) -> &str {
        &self.0.name
    }

    /// The store the object lives in.
    pub fn store(&self) -> &str {
        &self.0.bucket
    }

    /// The description given at put.
    pub fn description(&self) -> Option<&str> {
        self.0.description.as_deref()
    }

    /// The user metadata given at put.
    pub fn metadata(&self) -> &HashMap<String, String> {
        &self.0.metadata
    }

    /// The size in bytes (0 for a link or a deleted object).
    pub fn size(&self) -> u64 {
        self.0.size as u64
    }

    /// How many chunks hold the data.
    pub fn chunks(&self) -> u64 {
        self.0.chunks as u64
    }

    /// `SHA-256=<base64url>` of the data, as every NATS client writes and checks it.
    pub fn digest(&self) -> Option<&str> {
        self.0.digest.as_deref()
    }

    /// When the object was written, by the writer's clock.
    pub fn modified(&self) -> Option<OffsetDateTime> {
        self.0.modified
    }

    /// Whether this is the record of a deletion (seen in watches only: reads of a deleted
    /// object fail with [`ErrorKind::NotFound`](crate::ErrorKind::NotFound)).
    pub fn is_deleted(&self) -> bool {
        self.0.deleted
    }

    /// Where this object points when it is a link.
    pub fn link(&self) -> Option<ObjectLink<'_>> {
        let link = self.0.options.as_ref()?.link.as_ref()?;
        Some(ObjectLink {
            store: &link.bucket,
            object: link.name.as_deref(),
        })
    }

    /// The chunk size the object was written with.
    pub fn chunk_size(&self) -> Option<usize> {
        self.0.options.as_ref()?.max_chunk_size
    }
}

/// The target of a link: an object in a store, or a whole store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ObjectLink<'a> {
    /// The store the link points into.
    pub store: &'a str,
    /// The object it points to; `None` for a link to the whole store.
    pub object: Option<&'a str>,
}

/// What to store under a name: description, user metadata and chunk size.
///
/// ```
/// use kvtk_core::object::ObjectMeta;
/// let meta = ObjectMeta::new("reports/2026-05.pdf")
///     .description("monthly report")
///     .metadata("content-type", "application/pdf")
///     .chunk_size(256 * 1024);
/// assert_eq!(meta.name(), "reports/2026-05.pdf");
/// ```
#[derive(Debug, Clone, Default)]
pub struct ObjectMeta {
    name: String,
    description: Option<String>,
    metadata: HashMap<String, String>,
    chunk_size: Option<usize>,
}

impl ObjectMeta {
    /// An object named `name` (any non-empty string).
    pub fn new(name: impl Into<String>) -> ObjectMeta {
        ObjectMeta {
            name: name.into(),
            ..ObjectMeta::default()
        }
    }

    /// The object's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// A description kept with the object.
    pub fn description(mut self, description: impl Into<String>) -> Self {
        self.description = Some(description.into());
        self
    }

    /// One entry of user metadata.
    pub fn metadata(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.metadata.insert(key.into(), value.into());
        self
    }

    /// The size of the chunks the data is cut into (default 128 KiB). Each chunk is one
    /// message: it must fit the server's `max_payload`.
    pub fn chunk_size(mut self, bytes: usize) -> Self {
        self.chunk_size = Some(bytes);
        self
    }

    pub(crate) fn chunk_size_is_zero(&self) -> bool {
        self.chunk_size == Some(0)
    }

    pub(crate) fn into_nats(self) -> os::ObjectMetadata {
        os::ObjectMetadata {
            name: self.name,
            description: self.description,
            chunk_size: self.chunk_size,
            metadata: self.metadata,
            headers: None,
        }
    }
}

impl From<&str> for ObjectMeta {
    fn from(name: &str) -> ObjectMeta {
        ObjectMeta::new(name)
    }
}

impl From<String> for ObjectMeta {
    fn from(name: String) -> ObjectMeta {
        ObjectMeta::new(name)
    }
}
