//! Watch: a writer puts unique values on eight keys; watchers follow `k.>` across faults and
//! must deliver every revision once, in order, with its value.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use kvtk_core::{Bucket, ErrorKind, Include, Revision, WatchEvent};
use kvtk_tests::history::{History, Op};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::{bounded, settle};

const FILTER: &str = "k.>";
const KEYS: u64 = 8;
/// Pause between writes: with history 64 per key the stream keeps ~25 s of writes, more than
/// any recovery takes, so a watch needs no compacted revision.
const WRITE_EVERY: Duration = Duration::from_millis(50);

/// What the writer acknowledged last, and what the watchers saw.
#[derive(Debug, Default)]
pub(crate) struct Progress {
    /// Highest acknowledged write revision.
    pub last_written: AtomicU64,
    /// Watches re-created after their stream ended or reported history gone.
    pub restarts: AtomicU64,
    /// `HistoryGone` reports.
    pub history_gone: AtomicU64,
}

/// Starts the writer (on `writer`) and one watcher per bucket handle in `watchers`.
/// `writing` stops the writer; after `stop` the watchers end once they delivered the last
/// acknowledged write (the runner bounds how long that may take).
pub(crate) fn start(
    tasks: &mut JoinSet<()>,
    writer: Bucket,
    watchers: Vec<Bucket>,
    history: &History,
    writing: &CancellationToken,
    stop: &CancellationToken,
    progress: &Arc<Progress>,
) {
    tasks.spawn(write(
        writer,
        history.clone(),
        writing.clone(),
        Arc::clone(progress),
    ));
    for (i, bucket) in watchers.into_iter().enumerate() {
        let w = Watcher {
            bucket,
            client: format!("watcher-{i}"),
            history: history.clone(),
            stop: stop.clone(),
            progress: Arc::clone(progress),
        };
        tasks.spawn(w.run());
    }
}

async fn write(bucket: Bucket, history: History, stop: CancellationToken, progress: Arc<Progress>) {
    let mut n = 0u64;
    while !stop.is_cancelled() {
        let key = format!("k.{}", n % KEYS);
        let value = format!("w{n}");
        let op = history.invoke(
            "writer",
            Op::Write {
                key: key.clone(),
                value: value.clone(),
            },
        );
        let out = bounded(&stop, bucket.put(&key, value)).await;
        if let Some(rev) = settle(op, out, |r: &Revision| Some(r.get())) {
            progress
                .last_written
                .fetch_max(rev.get(), Ordering::Relaxed);
        }
        n += 1;
        tokio::time::sleep(WRITE_EVERY).await;
    }
}

struct Watcher {
    bucket: Bucket,
    client: String,
    history: History,
    stop: CancellationToken,
    progress: Arc<Progress>,
}

impl Watcher {
    /// Watches from the start; after a stream end resumes after the last delivery, after
    /// `HistoryGone` starts over with updates only (recorded as a new segment).
    async fn run(self) {
        let mut after = 0u64;
        let mut updates_only = false;
        loop {
            let start = Op::WatchStart {
                key: FILTER.into(),
                after,
            };
            self.history.instant(&self.client, start, None);
            let gone = self.follow(&mut after, updates_only).await;
            if self.done(after) {
                return;
            }
            self.progress.restarts.fetch_add(1, Ordering::Relaxed);
            if gone {
                updates_only = true;
                after = self.progress.last_written.load(Ordering::Relaxed);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn done(&self, after: u64) -> bool {
        self.stop.is_cancelled() && after >= self.progress.last_written.load(Ordering::Relaxed)
    }

    /// Delivers until the watch ends, the run is over or history is gone (returns true).
    async fn follow(&self, after: &mut u64, updates_only: bool) -> bool {
        let mut builder = self.bucket.watch([FILTER]);
        builder = match Revision::new(*after + 1) {
            Some(rev) if !updates_only => builder.include(Include::AllHistory).from_revision(rev),
            _ => builder.include(Include::UpdatesOnly),
        };
        let Ok(mut watch) = builder.start().await else {
            return false;
        };
        loop {
            // A short timeout so a finished run is noticed while the watch is idle.
            match tokio::time::timeout(Duration::from_millis(500), watch.next()).await {
                Ok(Some(Ok(WatchEvent::Entry(e)))) => {
                    let key = e.key().as_str().to_string();
                    let value = String::from_utf8_lossy(e.value()).into_owned();
                    let rev = e.revision().get();
                    self.history
                        .instant(&self.client, Op::Deliver { key, value }, Some(rev));
                    *after = rev;
                }
                Ok(Some(Ok(_))) => {}
                Ok(Some(Err(e))) if e.kind() == ErrorKind::HistoryGone => {
                    self.history.instant(
                        &self.client,
                        Op::HistoryGone { key: FILTER.into() },
                        Some(*after),
                    );
                    self.progress.history_gone.fetch_add(1, Ordering::Relaxed);
                    return true;
                }
                Ok(Some(Err(e))) => tracing::debug!("{}: watch error {e}", self.client),
                Ok(None) => return false,
                Err(_) if self.done(*after) => return false,
                Err(_) => {}
            }
        }
    }
}
