//! The object store view: JetStream object stores next to the KV buckets, from the same
//! [`Kv`] handle — the seed's `views.os`.
//!
//! An object store keeps named objects of any size: the data is cut into chunks (128 KiB by
//! default), each one message on `$O.<store>.C.<nuid>`, and the object's metadata (name, size,
//! chunk count, SHA-256 digest, user metadata) is one rolled-up message on
//! `$O.<store>.M.<name>`. The layout is the one every NATS client uses, so stores written
//! here are read by `nats object get` and the Go, JS or Python clients, and the other way
//! round. Underneath it is async-nats' object store; errors come in kvtk-core's [`ErrorKind`]s.
//!
//! ```
//! use kvtk_core::object::{ObjectMeta, ObjectStoreConfig};
//! use kvtk_core::{ErrorKind, Kv};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), kvtk_core::Error> {
//! # let server = kvtk_tests::NatsServer::start().await;
//! # let url = server.client_url();
//! let kv = Kv::connect(&url).await?;
//! let store = kv
//!     .create_or_open_object_store(ObjectStoreConfig::new("artifacts"))
//!     .await?;
//!
//! // put from any AsyncRead (a file, a socket, a slice), in chunks
//! let data = vec![7u8; 300 * 1024];
//! let info = store
//!     .put(ObjectMeta::new("build/app.tar").chunk_size(64 * 1024), &mut data.as_slice())
//!     .await?;
//! assert_eq!((info.size(), info.chunks()), (300 * 1024, 5));
//!
//! // get as a stream (tokio AsyncRead) or all at once; the digest is checked at the end
//! assert_eq!(store.get_bytes("build/app.tar").await?, data);
//!
//! // a link is another name for an object
//! store.link("latest", &info).await?;
//! assert_eq!(store.get_bytes("latest").await?.len(), data.len());
//!
//! store.delete("build/app.tar").await?;
//! let err = store.info("build/app.tar").await.unwrap_err();
//! assert_eq!(err.kind(), ErrorKind::NotFound);
//! # Ok(()) }
//! ```

mod config;
mod error;
mod info;

use std::pin::Pin;
use std::task::{Context, Poll};

use async_nats::jetstream::{self, object_store as os, stream};
use bytes::Bytes;
use futures::{Stream, StreamExt};
use tokio::io::{AsyncRead, AsyncReadExt, ReadBuf};
use tracing::Instrument;

use crate::client::Kv;
use crate::config::validate_bucket_name;
use crate::error::{Error, ErrorKind, Operation};

pub use config::ObjectStoreConfig;
pub use info::{ObjectInfo, ObjectLink, ObjectMeta};

impl Kv {
    /// Creates an object store. Creating one that exists with the same configuration
    /// succeeds; with another configuration it fails with [`ErrorKind::BucketExists`].
    ///
    /// # Cancel safety
    /// Not cancel safe: the store may be created even if the future is dropped.
    pub async fn create_object_store(&self, cfg: ObjectStoreConfig) -> Result<ObjectStore, Error> {
        cfg.validate().map_err(|e| e.with_op(Operation::Bucket))?;
        let body = serde_json::to_vec(&cfg.to_stream_config())
            .map_err(|e| Error::new(ErrorKind::Internal, e.to_string()))?;
        self.js()
            .api::<stream::Info>(
                &format!("STREAM.CREATE.OBJ_{}", cfg.name),
                Bytes::from(body),
            )
            .await
            .map_err(|e| e.with_op(Operation::Bucket).with_key(cfg.name.clone()))?;
        self.object_store_handle(&cfg.name).await
    }

    /// Opens the store if it exists (without changing it), else creates it.
    ///
    /// # Cancel safety
    /// Not cancel safe: the store may be created even if the future is dropped.
    pub async fn create_or_open_object_store(
        &self,
        cfg: ObjectStoreConfig,
    ) -> Result<ObjectStore, Error> {
        match self.open_object_store(&cfg.name).await {
            Err(e) if e.kind() == ErrorKind::BucketNotFound => {
                match self.create_object_store(cfg.clone()).await {
                    // Lost a race with another creator: open theirs.
                    Err(e) if e.kind() == ErrorKind::BucketExists => {
                        self.open_object_store(&cfg.name).await
                    }
                    other => other,
                }
            }
            other => other,
        }
    }

    /// Opens an existing object store ([`ErrorKind::BucketNotFound`] when there is none).
    ///
    /// # Cancel safety
    /// Cancel safe: it only reads.
    pub async fn open_object_store(&self, name: &str) -> Result<ObjectStore, Error> {
        validate_bucket_name(name).map_err(|e| e.with_op(Operation::Bucket))?;
        // Our own request first: it classifies "no such store" and timeouts; async-nats'
        // open reports every failure alike.
        self.js()
            .api::<stream::Info>(&format!("STREAM.INFO.OBJ_{name}"), Bytes::new())
            .await
            .map_err(|e| e.with_op(Operation::Bucket).with_key(name))?;
        self.object_store_handle(name).await
    }

    /// Deletes an object store and every object in it. Returns whether it existed.
    ///
    /// # Cancel safety
    /// Not cancel safe: the store may be deleted even if the future is dropped.
    pub async fn delete_object_store(&self, name: &str) -> Result<bool, Error> {
        validate_bucket_name(name).map_err(|e| e.with_op(Operation::Bucket))?;
        #[derive(serde::Deserialize)]
        struct Deleted {
            success: bool,
        }
        match self
            .js()
            .api::<Deleted>(&format!("STREAM.DELETE.OBJ_{name}"), Bytes::new())
            .await
        {
            Ok(d) => Ok(d.success),
            Err(e) if e.kind() == ErrorKind::BucketNotFound => Ok(false),
            Err(e) => Err(e.with_op(Operation::Bucket).with_key(name)),
        }
    }

    async fn object_store_handle(&self, name: &str) -> Result<ObjectStore, Error> {
        let js = self.js();
        let mut context = jetstream::with_prefix(js.client.clone(), &js.api);
        context.set_timeout(js.timeout);
        let store = context
            .get_object_store(name)
            .await
            .map_err(|e| error::open(name, e))?;
        Ok(ObjectStore {
            name: name.to_string(),
            store,
        })
    }
}

/// A handle on one object store: put, get, info, list, watch, delete and links. Cheap to
/// clone; clones share the connection.
#[derive(Clone)]
pub struct ObjectStore {
    name: String,
    store: os::ObjectStore,
}

impl std::fmt::Debug for ObjectStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ObjectStore")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl ObjectStore {
    /// The store's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Stores everything `data` yields under `meta`'s name (a `&str` will do), in chunks,
    /// each acknowledged before the next is sent; then writes the metadata with the SHA-256
    /// digest, replacing any previous object of that name, and removes the previous
    /// version's chunks. Readers see the old object or the new one, never a mix.
    ///
    /// # Cancel safety
    /// Not cancel safe. Dropped before the metadata is written, the previous object stays
    /// as it was but the chunks already sent stay in the stream, unreferenced (they count
    /// against `max_bytes` until the store is deleted). Dropped after it, the new object is
    /// stored and the previous version's chunks may remain, equally unreferenced.
    pub async fn put(
        &self,
        meta: impl Into<ObjectMeta>,
        data: &mut (impl AsyncRead + Unpin),
    ) -> Result<ObjectInfo, Error> {
        let meta = meta.into();
        let name = meta.name().to_string();
        if name.is_empty() {
            return Err(
                Error::new(ErrorKind::InvalidKey, "an object name must not be empty")
                    .with_op(Operation::Object),
            );
        }
        if meta.chunk_size_is_zero() {
            return Err(
                Error::invalid_argument("the chunk size must be at least 1 byte")
                    .with_op(Operation::Object)
                    .with_key(name),
            );
        }
        let span = tracing::debug_span!("kv.object.put", store = %self.name, object = %name);
        self.store
            .put(meta.into_nats(), data)
            .instrument(span)
            .await
            .map(ObjectInfo)
            .map_err(|e| error::put(&name, e))
    }

    /// [`put`](Self::put) of bytes already in memory.
    ///
    /// # Cancel safety
    /// As [`put`](Self::put).
    pub async fn put_bytes(
        &self,
        meta: impl Into<ObjectMeta>,
        data: impl AsRef<[u8]>,
    ) -> Result<ObjectInfo, Error> {
        self.put(meta, &mut data.as_ref()).await
    }

    /// Opens an object for reading: the returned [`ObjectReader`] streams its chunks as
    /// they arrive. A link is followed to its target (also into another store).
    /// [`ErrorKind::NotFound`] when there is no such object or it was deleted.
    ///
    /// # Cancel safety
    /// Cancel safe: it only reads.
    pub async fn get(&self, name: &str) -> Result<ObjectReader, Error> {
        let object = self
            .store
            .get(name)
            .await
            .map_err(|e| error::get(name, e))?;
        Ok(ObjectReader {
            name: name.to_string(),
            object,
            failed: None,
        })
    }

    /// The whole object in memory (the digest checked).
    ///
    /// # Cancel safety
    /// Cancel safe: it only reads.
    pub async fn get_bytes(&self, name: &str) -> Result<Vec<u8>, Error> {
        self.get(name).await?.read_all().await
    }

    /// An object's metadata (a link's own, not its target's). [`ErrorKind::NotFound`] when
    /// there is no such object or it was deleted.
    ///
    /// # Cancel safety
    /// Cancel safe: it only reads.
    pub async fn info(&self, name: &str) -> Result<ObjectInfo, Error> {
        let info = self
            .store
            .info(name)
            .await
            .map_err(|e| error::info(name, e))?;
        if info.deleted {
            return Err(Error::new(ErrorKind::NotFound, "the object was deleted")
                .with_op(Operation::Object)
                .with_key(name));
        }
        Ok(ObjectInfo(info))
    }

    /// Every object in the store (links included, deleted ones not), by name.
    ///
    /// # Cancel safety
    /// Cancel safe: it only reads.
    pub async fn list(&self) -> Result<Vec<ObjectInfo>, Error> {
        let mut list = self
            .store
            .list()
            .await
            .map_err(|e| error::watch(&self.name, e))?;
        let mut all = Vec::new();
        while let Some(info) = list.next().await {
            all.push(ObjectInfo(info.map_err(|e| error::watcher(&self.name, e))?));
        }
        all.sort_by(|a, b| a.name().cmp(b.name()));
        Ok(all)
    }

    /// Follows the store: every put, link and deletion from now on (a deletion is an
    /// [`ObjectInfo`] with [`is_deleted`](ObjectInfo::is_deleted)).
    ///
    /// # Cancel safety
    /// Cancel safe: a dropped future leaves no consumer behind for long (the server
    /// removes an unused one).
    pub async fn watch(&self) -> Result<ObjectWatch, Error> {
        let watch = self
            .store
            .watch()
            .await
            .map_err(|e| error::watch(&self.name, e))?;
        Ok(ObjectWatch {
            store: self.name.clone(),
            watch,
        })
    }

    /// Like [`watch`](Self::watch), but first the current state: the latest metadata of
    /// every object (deletions included), then the changes.
    ///
    /// # Cancel safety
    /// Cancel safe, as [`watch`](Self::watch).
    pub async fn watch_all(&self) -> Result<ObjectWatch, Error> {
        let watch = self
            .store
            .watch_with_history()
            .await
            .map_err(|e| error::watch(&self.name, e))?;
        Ok(ObjectWatch {
            store: self.name.clone(),
            watch,
        })
    }

    /// Deletes an object: its metadata is marked deleted (watchers see it) and its chunks
    /// are purged. [`ErrorKind::NotFound`] when there is no such object.
    ///
    /// # Cancel safety
    /// Not cancel safe: dropped after the metadata is marked deleted, the object is gone for
    /// readers but its chunks may stay in the stream, unreferenced.
    pub async fn delete(&self, name: &str) -> Result<(), Error> {
        self.info(name).await?;
        self.store
            .delete(name)
            .await
            .map_err(|e| error::delete(name, e))
    }

    /// Stores a link named `name` to the object `target` (of this or another store): a
    /// [`get`](Self::get) of `name` reads the target. A link may replace a link, not an
    /// object ([`ErrorKind::AlreadyExists`]); it may not point to a link.
    ///
    /// # Cancel safety
    /// Not cancel safe: the link may be written even if the future is dropped.
    pub async fn link(&self, name: &str, target: &ObjectInfo) -> Result<ObjectInfo, Error> {
        self.store
            .add_link(name, &target.0)
            .await
            .map(ObjectInfo)
            .map_err(|e| error::link(name, e))
    }

    /// Stores a link named `name` to the whole store `store` (the target is not checked).
    ///
    /// # Cancel safety
    /// Not cancel safe: the link may be written even if the future is dropped.
    pub async fn link_store(&self, name: &str, store: &str) -> Result<ObjectInfo, Error> {
        validate_bucket_name(store).map_err(|e| e.with_op(Operation::Object))?;
        self.store
            .add_bucket_link(name, store)
            .await
            .map(ObjectInfo)
            .map_err(|e| error::link(name, e))
    }
}

/// An object being read: a tokio [`AsyncRead`] over its chunks, in order. The SHA-256
/// digest is checked when the last chunk arrives; a mismatch fails that read with
/// [`std::io::ErrorKind::InvalidData`] ([`ErrorKind::Codec`] from
/// [`read_all`](Self::read_all)), delivering none of the last chunk's bytes. After a failed
/// read every further read fails too.
///
/// The chunks come through an ordered push consumer of async-nats, created on the first
/// read and re-created after a gap; the server removes it once the reader is dropped.
pub struct ObjectReader {
    name: String,
    object: os::Object,
    /// Set by the first failed read: the reader is done, every later read fails alike.
    failed: Option<std::io::ErrorKind>,
}

impl std::fmt::Debug for ObjectReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ObjectReader")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl ObjectReader {
    /// The metadata of the object being read (the target's, for a link).
    pub fn info(&self) -> ObjectInfo {
        ObjectInfo(self.object.info().clone())
    }

    /// Reads the rest of the object into memory.
    ///
    /// # Cancel safety
    /// Cancel safe: it only reads (the bytes read so far are lost with the reader).
    pub async fn read_all(mut self) -> Result<Vec<u8>, Error> {
        let mut out = Vec::with_capacity(self.object.info().size);
        match self.read_to_end(&mut out).await {
            Ok(_) => Ok(out),
            Err(e) => Err(error::read(&self.name, e)),
        }
    }
}

impl AsyncRead for ObjectReader {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        if let Some(kind) = self.failed {
            return Poll::Ready(Err(std::io::Error::new(
                kind,
                "an earlier read of this object failed",
            )));
        }
        // async-nats fills the buffer with the last chunk and then reports a digest mismatch
        // in the same call; the AsyncRead contract (and tokio's read_to_end) wants a failed
        // read to deliver nothing, so those bytes are taken back.
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.object).poll_read(cx, buf);
        if let Poll::Ready(Err(e)) = &polled {
            buf.set_filled(before);
            self.failed = Some(e.kind());
        }
        polled
    }
}

/// The changes of a store, as a [`Stream`] of object metadata.
///
/// # Recovery
/// Deliveries come from an ordered push consumer of async-nats on the metadata subjects:
/// after a missed heartbeat or a sequence gap it re-creates itself after the last stream
/// sequence it delivered. Each object keeps only its latest metadata (a rollup), so what a
/// watch that was away missed is an object's intermediate versions, never its latest. An
/// error item means the consumer could not be re-created; start a new watch (with
/// [`ObjectStore::watch_all`] to learn the current state).
pub struct ObjectWatch {
    store: String,
    watch: os::Watch,
}

impl std::fmt::Debug for ObjectWatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ObjectWatch")
            .field("store", &self.store)
            .finish_non_exhaustive()
    }
}

impl Stream for ObjectWatch {
    type Item = Result<ObjectInfo, Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        this.watch.poll_next_unpin(cx).map(|item| {
            item.map(|r| {
                r.map(ObjectInfo)
                    .map_err(|e| error::watcher(&this.store, e))
            })
        })
    }
}
