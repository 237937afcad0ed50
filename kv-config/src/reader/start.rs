//! Starting a reader: wait for the feed's first state, take the value to start with — the
//! KV's when accepted, else the snapshot file's — and spawn the reader's loop.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use kvtk_core::Revision;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;

use super::core::Core;
use super::handle::ConfigReader;
use super::shared::Shared;
use crate::error::{Error, ErrorKind, Rejection};
use crate::metrics::ReaderMetrics;
use crate::persist;
use crate::snapshot::{Health, Origin, Snapshot};

/// The start options of a [`ConfigBuilder`](crate::ConfigBuilder) that loading needs.
pub(crate) struct Start {
    /// How long to wait for the KV before falling back to the snapshot file.
    pub(crate) timeout: Duration,
    /// Refuse to start from the snapshot file.
    pub(crate) require_fresh: bool,
}

/// The value a reader starts with.
struct Initial<T> {
    snapshot: Snapshot<T>,
    /// Why the KV's value was refused (the snapshot then comes from the snapshot file).
    rejection: Option<Rejection>,
    /// Whether the KV answered (else the snapshot is the file's, offline).
    synced: bool,
}

/// Loads the value to start with, then spawns the reader's loop over `core`.
pub(crate) async fn launch<T>(mut core: Core<T>, opts: Start) -> Result<ConfigReader<T>, Error>
where
    T: Serialize + DeserializeOwned + Send + Sync + 'static,
{
    let span = tracing::info_span!("kvtk_config.load", config = %core.source.name());
    let loaded = first_state(&mut core, opts.timeout).instrument(span).await;
    let initial = match loaded {
        Ok(()) => from_kv(&mut core)?,
        Err(e) => offline(&mut core, e, opts.require_fresh)?,
    };
    let synced = initial.synced;
    let revision = initial.snapshot.revision;
    let (shared, generation) = shared_state(&core, initial);
    if synced {
        first_sync(&mut core, &shared, revision).await;
    }
    let cancel = CancellationToken::new();
    let task = tokio::spawn(core.run(shared.clone(), cancel.clone()));
    Ok(ConfigReader::new(shared, cancel, task, generation))
}

/// Waits up to `timeout` for the feed's first state, and takes it.
async fn first_state<T>(core: &mut Core<T>, timeout: Duration) -> Result<(), Error> {
    core.raw = core.states.first(timeout, &core.source.filter()).await;
    if core.raw.is_some() {
        return Ok(());
    }
    let why = core.feed.last_error().unwrap_or_else(|| "no answer".into());
    Err(Error::new(
        ErrorKind::Unavailable,
        format!("the kv did not answer in {timeout:?}: {why}"),
    ))
}

/// The KV's value when it is accepted; when it is refused, the snapshot file's, with the
/// rejection.
fn from_kv<T>(core: &mut Core<T>) -> Result<Initial<T>, Error>
where
    T: Serialize + DeserializeOwned + Send + Sync + 'static,
{
    match core.evaluate() {
        Ok((value, json, kv)) => {
            core.had_value = kv.is_some();
            let snapshot = Snapshot {
                value,
                json,
                revision: core.last_rev(),
                origin: Origin::Kv,
                stale: false,
                loaded_at: SystemTime::now(),
            };
            Ok(Initial {
                snapshot,
                rejection: None,
                synced: true,
            })
        }
        Err(rej) => {
            let rej = rej.at(core.last_rev());
            tracing::warn!(error = %rej, "config in the kv rejected at start");
            match load_snapshot_file(core) {
                Some(snapshot) => Ok(Initial {
                    snapshot,
                    rejection: Some(rej),
                    synced: true,
                }),
                None => Err(rej.into()),
            }
        }
    }
}

/// The snapshot file's value when the KV did not answer (`e`) in time, unless a fresh value
/// is required.
fn offline<T>(core: &mut Core<T>, e: Error, require_fresh: bool) -> Result<Initial<T>, Error>
where
    T: Serialize + DeserializeOwned + Send + Sync + 'static,
{
    if require_fresh {
        return Err(Error::new(
            ErrorKind::Unavailable,
            "fresh config required but the kv is unreachable",
        )
        .with_source(e));
    }
    tracing::warn!(error = %e, "config kv unreachable at start");
    match load_snapshot_file(core) {
        Some(snapshot) => Ok(Initial {
            snapshot,
            rejection: None,
            synced: false,
        }),
        None => Err(Error::new(
            ErrorKind::Unavailable,
            "the kv is unreachable and there is no snapshot file",
        )
        .with_source(e)),
    }
}

/// The snapshot file's value, checked like any candidate; `None` when there is none (or it
/// is unreadable, or refused).
fn load_snapshot_file<T>(core: &mut Core<T>) -> Option<Snapshot<T>>
where
    T: Serialize + DeserializeOwned + Send + Sync + 'static,
{
    let path = core.snapshot_file.as_ref()?;
    let p = match persist::read(path) {
        Ok(p) => p?,
        Err(e) => {
            tracing::warn!(error = %e, "ignoring the config snapshot file");
            return None;
        }
    };
    match core.pipeline.candidate(p.kv.as_ref()) {
        Ok((value, json)) => {
            core.had_value = p.kv.is_some();
            tracing::info!(
                revision = p.revision,
                "config loaded from the snapshot file"
            );
            Some(Snapshot {
                value,
                json,
                revision: p.revision.and_then(Revision::new),
                origin: Origin::SnapshotFile,
                stale: true,
                loaded_at: SystemTime::now(),
            })
        }
        Err(rej) => {
            tracing::warn!(error = %rej, "the config snapshot file holds a rejected value");
            None
        }
    }
}

/// The state the reader's handles share with its loop, starting from `initial`; the
/// receiver of its change generations.
fn shared_state<T>(
    core: &Core<T>,
    initial: Initial<T>,
) -> (Arc<Shared<T>>, tokio::sync::watch::Receiver<u64>)
where
    T: Serialize + DeserializeOwned + Send + Sync + 'static,
{
    let Initial {
        snapshot,
        rejection,
        synced,
    } = initial;
    let revision = snapshot.revision;
    let health = Health {
        stale: snapshot.stale,
        applied: if synced && rejection.is_none() {
            core.last_rev()
        } else {
            None
        },
        rejected: rejection.clone(),
        last_sync: synced.then(SystemTime::now),
    };
    let metrics = ReaderMetrics::new(core.source.name());
    let (shared, generation) = Shared::new(snapshot, health, synced, metrics);
    match &rejection {
        Some(r) => shared.metrics.rejected(r, revision),
        None if synced => shared.metrics.applied(),
        None => {}
    }
    (Arc::new(shared), generation)
}

/// What the first sync with the KV does besides applying: persist the accepted value (at
/// `revision`) and publish the acknowledgement.
async fn first_sync<T>(core: &mut Core<T>, shared: &Shared<T>, revision: Option<Revision>)
where
    T: Serialize + DeserializeOwned + Send + Sync + 'static,
{
    if shared.health().rejected.is_none() {
        let kv = core.evaluate().ok().and_then(|(_, _, kv)| kv);
        core.persist(revision, kv).await;
    }
    core.publish_ack(shared, true).await;
}
