//! The reader handle, [`ConfigReader`]: the current value, change notification, events and
//! health; its clones share one background loop, stopped with the last of them.

use std::fmt;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use futures::stream::{BoxStream, Stream, StreamExt};
use kvtk_core::Revision;
use tokio::sync::{broadcast, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::shared::Shared;
use crate::snapshot::{ConfigEvent, Health, Snapshot};

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

impl<T> ConfigReader<T> {
    /// A reader over `shared`, whose loop `task` stops when `cancel` fires or the last
    /// handle is dropped.
    pub(crate) fn new(
        shared: Arc<Shared<T>>,
        cancel: CancellationToken,
        task: JoinHandle<()>,
        generation: watch::Receiver<u64>,
    ) -> ConfigReader<T> {
        ConfigReader {
            shared,
            owner: Arc::new(Owner {
                cancel,
                task: Mutex::new(Some(task)),
            }),
            generation,
        }
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
