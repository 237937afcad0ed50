//! Combining concurrent increments into one write: the worker behind [`Counter`] (a
//! read-modify-write counter) and [`CounterHandle`] (a server-side counter).
//!
//! [`Counter`]: crate::Counter
//! [`CounterHandle`]: crate::CounterHandle

use std::sync::{Arc, OnceLock};

use futures::future::BoxFuture;
use tokio::sync::{mpsc, oneshot};
use tokio_util::task::AbortOnDropHandle;

use crate::error::{Error, ErrorKind};

/// Applies a summed delta and returns the counter's new value.
pub(crate) type Apply = Arc<dyn Fn(i64) -> BoxFuture<'static, Result<i64, Error>> + Send + Sync>;

type Waiter = (i64, oneshot::Sender<Result<i64, Error>>);

/// A lazily started worker that takes every increment queued while its previous write was
/// in flight and applies their sum with one write. It stops when the combiner is dropped.
pub(crate) struct Combiner {
    apply: Apply,
    worker: OnceLock<Worker>,
}

struct Worker {
    tx: mpsc::UnboundedSender<Waiter>,
    _task: AbortOnDropHandle<()>,
}

impl std::fmt::Debug for Combiner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Combiner")
            .field("started", &self.worker.get().is_some())
            .finish()
    }
}

impl Combiner {
    pub(crate) fn new(apply: Apply) -> Combiner {
        Combiner {
            apply,
            worker: OnceLock::new(),
        }
    }

    /// Queues `delta` and returns the value right after it was applied.
    pub(crate) async fn add(&self, delta: i64) -> Result<i64, Error> {
        let worker = self.worker.get_or_init(|| {
            let (tx, rx) = mpsc::unbounded_channel();
            Worker {
                tx,
                _task: AbortOnDropHandle::new(tokio::spawn(run(self.apply.clone(), rx))),
            }
        });
        let (done, result) = oneshot::channel();
        worker.tx.send((delta, done)).map_err(|_| stopped())?;
        result.await.map_err(|_| stopped())?
    }
}

fn stopped() -> Error {
    Error::new(ErrorKind::Connection, "counter worker stopped")
}

async fn run(apply: Apply, mut rx: mpsc::UnboundedReceiver<Waiter>) {
    while let Some(first) = rx.recv().await {
        let mut batch = vec![first];
        while let Ok(more) = rx.try_recv() {
            batch.push(more);
        }
        let sum = batch
            .iter()
            .try_fold(0i64, |acc, (d, _)| acc.checked_add(*d))
            .ok_or_else(|| Error::invalid_argument("counter would overflow"));
        let result = match sum {
            Ok(sum) => apply(sum).await.map(|v| (v, sum)),
            Err(e) => Err(e),
        };
        match result {
            Ok((new_value, total)) => {
                // Each caller gets the value right after its own increment.
                let mut running = new_value - total;
                for (d, done) in batch {
                    running += d;
                    let _ = done.send(Ok(running));
                }
            }
            Err(e) => {
                let (kind, msg) = (e.kind(), e.to_string());
                for (_, done) in batch {
                    let _ = done.send(Err(Error::new(kind, msg.clone())));
                }
            }
        }
    }
}
