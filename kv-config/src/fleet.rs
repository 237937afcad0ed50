//! Fleet visibility: each reader may publish the revision it applied under
//! `_applied.<config name>.<instance>` (a [lease](kvtk_core::lease) kept alive while the
//! reader lives), and a writer can wait until enough instances have applied a revision.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use kvtk_core::lease::{
    remove_marked, Keeper, Lease, LeaseConfig, Session, SessionBook, SessionId, SessionState,
    Sessions,
};
use kvtk_core::{Bucket, Entry, Include, ReadOnlyBucket, Revision, WatchEvent};
use serde::{Deserialize, Serialize};

use crate::error::{Error, ErrorKind};
use crate::source::Source;

/// What one instance reports under its acknowledgement key (JSON).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Applied {
    /// The newest revision the instance is in sync with (see [`crate::Health::applied`]).
    pub applied: Option<u64>,
    /// The revision it refused and is holding back, if any.
    pub rejected: Option<u64>,
    /// Whether it runs on an unconfirmed (offline) value.
    pub stale: bool,
}

/// The TTL of a fleet acknowledgement that does not choose one, on a single-server
/// bucket; on a replicated bucket the lease layer's default for it
/// ([`LeaseConfig::default_for`]), at least
/// [`REPLICATED_TTL`](kvtk_core::lease::REPLICATED_TTL), which rides through a
/// stream-leader election.
pub const DEFAULT_ACK_TTL: Duration = Duration::from_secs(30);

/// This instance's acknowledgement key: a lease renewed by its own keeper (whose task dies
/// with the reader's loop, which owns this), or bound to the current session of the
/// application's `Sessions`, or on buckets without per-key TTLs a plain key.
pub(crate) struct Ack {
    key: String,
    ttl: Duration,
    /// The application chose the TTL ([`ConfigReaderBuilder::ack_ttl`](crate::ConfigBuilder::ack_ttl)).
    explicit: bool,
    keeper: Option<Keeper>,
    lease: Option<Lease>,
    /// The sessions the acknowledgement is bound to
    /// ([`ConfigBuilder::bind_ack_to_session`](crate::ConfigBuilder::bind_ack_to_session)).
    sessions: Option<Sessions>,
    /// The session the held lease is bound to: kept alive while the lease is held.
    session: Option<Arc<Session>>,
    /// The bucket has no per-key TTLs: plain writes.
    no_ttl: bool,
    last: Option<Applied>,
}

impl Ack {
    /// An acknowledgement on `key` with the TTL the application chose, or the default.
    pub(crate) fn new(key: String, ttl: Option<Duration>) -> Ack {
        Ack {
            key,
            ttl: ttl.unwrap_or(DEFAULT_ACK_TTL),
            explicit: ttl.is_some(),
            keeper: None,
            lease: None,
            sessions: None,
            session: None,
            no_ttl: false,
            last: None,
        }
    }

    /// The acknowledgement bound to `sessions`' current session, if given.
    pub(crate) fn bound_to(mut self, sessions: Option<Sessions>) -> Ack {
        self.sessions = sessions;
        self
    }

    /// How often the reader's loop makes sure the acknowledgement is there: twice per TTL.
    pub(crate) fn heartbeat(&self) -> Duration {
        (self.ttl / 2).max(Duration::from_millis(500))
    }

    /// Publishes `rec` if it changed, or if the key is gone (its lease lost); with `force`,
    /// a plain key is rewritten too. Failures are logged: the next change or heartbeat
    /// tries again.
    pub(crate) async fn publish(&mut self, bucket: &Bucket, rec: Applied, force: bool) {
        let held = self.lease.as_ref().is_some_and(Lease::is_held);
        let changed = self.last.as_ref() != Some(&rec);
        if !changed && (held || (self.no_ttl && !force)) {
            return;
        }
        // `{"v":1,"applied":…}`: see kvtk_core::format.
        let bytes = kvtk_core::format::encode_json(&rec);
        let res = match (&self.lease, held) {
            // A value change tries until it is acknowledged; the reader's loop waits one
            // heartbeat at most, and the next one tries again.
            (Some(lease), true) => {
                match tokio::time::timeout(self.heartbeat(), lease.set_value(bytes)).await {
                    Ok(written) => written.map(drop),
                    Err(_) => {
                        tracing::debug!("the applied revision was not acknowledged in time");
                        return;
                    }
                }
            }
            _ if self.no_ttl => bucket.put(&self.key, bytes).await.map(drop),
            _ => self.create(bucket, bytes).await,
        };
        match res {
            Ok(()) => self.last = Some(rec),
            // The lease is gone: the next heartbeat creates it again.
            Err(e) if e.kind() == kvtk_core::ErrorKind::LeaseLost => self.lease = None,
            Err(e) => tracing::debug!(error = %e, "cannot publish the applied revision"),
        }
    }

    /// Creates the acknowledgement lease; falls back to plain keys on buckets without
    /// per-key TTLs.
    async fn create(&mut self, bucket: &Bucket, bytes: Bytes) -> Result<(), kvtk_core::Error> {
        // A lost lease's key is gone or someone else's: nothing of it to remove.
        if let Some(lost) = self.lease.take() {
            lost.orphan();
        }
        self.session = None;
        if let Some(sessions) = &self.sessions {
            // A bucket without per-key TTLs refuses the session: plain keys then.
            let session = match sessions.current().await {
                Ok(s) => s,
                Err(e) => return self.created(Err(e), None, bucket, bytes).await,
            };
            let bound = session.bind(&self.key, bytes.clone());
            let created = bound.tombstone_ttl(self.ttl).await;
            return self.created(created, Some(session), bucket, bytes).await;
        }
        let keeper = match &self.keeper {
            Some(k) => k,
            None => {
                let lease = self.lease_config(bucket).await?;
                self.ttl = lease.ttl().as_duration();
                self.keeper
                    .insert(Keeper::with_recipe(bucket, lease, "config")?)
            }
        };
        let created = keeper
            .lease(&self.key, bytes.clone())
            .tombstone_ttl(self.ttl)
            .await;
        self.created(created, None, bucket, bytes).await
    }

    /// Keeps the created lease (and its session); on buckets without per-key TTLs, falls back
    /// to plain keys.
    async fn created(
        &mut self,
        created: Result<Lease, kvtk_core::Error>,
        session: Option<Arc<Session>>,
        bucket: &Bucket,
        bytes: Bytes,
    ) -> Result<(), kvtk_core::Error> {
        match created {
            Ok(lease) => {
                self.lease = Some(lease);
                self.session = session;
                Ok(())
            }
            Err(e)
                if matches!(
                    e.kind(),
                    kvtk_core::ErrorKind::InvalidTtl
                        | kvtk_core::ErrorKind::FeatureDisabled
                        | kvtk_core::ErrorKind::ServerTooOld
                ) =>
            {
                tracing::warn!(error = %e, "bucket has no per-key TTL; acknowledgements are written without one");
                self.no_ttl = true;
                bucket.put(&self.key, bytes).await.map(drop)
            }
            Err(e) => Err(e),
        }
    }
}

impl Ack {
    /// The acknowledgement's lease on `bucket`, by the lease layer's one rule: the TTL the
    /// application chose (warned about when it does not ride through a stream-leader
    /// election on a replicated bucket) or the default for the bucket's replicas.
    async fn lease_config(&self, bucket: &Bucket) -> Result<LeaseConfig, kvtk_core::Error> {
        let replicas = bucket.status().await?.replicas;
        let configured = match self.explicit {
            true => Some(LeaseConfig::new(self.ttl)?),
            false => None,
        };
        LeaseConfig::for_bucket(configured, replicas, self.ttl, bucket.name(), "config")
    }
}

/// Checks an instance name: one key token (`A-Z a-z 0-9 - _ = /`, no dots).
pub(crate) fn check_instance(source: &Source, instance: &str) -> Result<String, Error> {
    let key = format!("{}.{instance}", source.ack_prefix());
    if instance.is_empty() || instance.contains('.') {
        return Err(Error::new(
            ErrorKind::InvalidArgument,
            format!("instance name {instance:?} must be one non-empty key token (no dots)"),
        ));
    }
    kvtk_core::Key::new(key.as_str()).map_err(|e| {
        Error::new(
            ErrorKind::InvalidArgument,
            format!("bad instance name {instance:?}"),
        )
        .with_source(e)
    })?;
    Ok(key)
}

/// Waits until at least `count` instances report `applied >= revision`; returns their names.
/// Watches the acknowledgement keys (no polling) and answers once it has seen every one
/// there was when it began. An instance whose key expires or is deleted stops counting, and
/// so does one whose acknowledgement is bound to a session that ended (judged from the
/// stream leader once the count is reached): that acknowledgement is also removed from
/// `bucket`, so instances that never return leave nothing behind.
pub(crate) async fn wait_applied(
    bucket: &Bucket,
    source: &Source,
    revision: Revision,
    count: usize,
) -> Result<Vec<String>, Error> {
    let prefix = format!("{}.", source.ack_prefix());
    let mut watch = bucket
        .watch([source.ack_filter()])
        .include(Include::LastPerKey)
        .await
        .map_err(|e| Error::kv("cannot watch applied acknowledgements", e))?;
    if count == 0 {
        return Ok(Vec::new());
    }
    let mut instances = Instances::new();
    let mut sessions = SessionBook::new();
    let mut replayed = false;
    while let Some(ev) = watch.next().await {
        replayed |= matches!(ev, Ok(WatchEvent::InitialDone));
        record(&mut instances, &prefix, ev)?;
        if !replayed || enough(&instances, revision, count).is_none() {
            continue;
        }
        for ended in drop_ended(bucket, &mut instances, &mut sessions).await? {
            remove_ended(bucket, &ended).await;
        }
        if let Some(ok) = enough(&instances, revision, count) {
            return Ok(ok);
        }
    }
    Err(Error::new(
        ErrorKind::Kv,
        "applied acknowledgements watch ended",
    ))
}

/// Instance name → the revision it applied and, when its acknowledgement is bound to a
/// session, the session and the acknowledgement as read.
type Instances = BTreeMap<String, (u64, Option<(SessionId, Entry)>)>;

/// Takes out the instances whose acknowledgement is bound to a session that ended and
/// returns their acknowledgements: each session not known ended is read from the stream
/// leader (never a replica, which may lag), a no-message verdict confirmed from a state as
/// recent as its acknowledgements ([`SessionState::read_after`]).
async fn drop_ended(
    bucket: &ReadOnlyBucket,
    instances: &mut Instances,
    sessions: &mut SessionBook,
) -> Result<Vec<Entry>, Error> {
    let mut seen: BTreeMap<SessionId, Revision> = BTreeMap::new();
    for (id, e) in instances.values().filter_map(|(_, s)| s.as_ref()) {
        let newest = seen.entry(*id).or_insert(e.revision());
        *newest = (*newest).max(e.revision());
    }
    seen.retain(|id, _| sessions.get(*id) != Some(false));
    for (id, rev) in seen {
        let state = SessionState::read_after(bucket, id, rev)
            .await
            .map_err(|e| Error::kv("cannot read an acknowledgement's session", e))?;
        sessions.record(id, &state);
    }
    let ended = |s: &Option<(SessionId, Entry)>| {
        s.as_ref()
            .is_some_and(|(id, _)| sessions.get(*id) == Some(false))
    };
    let (gone, kept): (Instances, Instances) = std::mem::take(instances)
        .into_iter()
        .partition(|(_, (_, s))| ended(s));
    *instances = kept;
    let bound_to = |s: &Option<(SessionId, Entry)>| s.as_ref().map(|(id, _)| *id);
    sessions.forget_ended(|id| instances.values().any(|(_, s)| bound_to(s) == Some(id)));
    Ok(gone.into_values().filter_map(|(_, s)| Some(s?.1)).collect())
}

/// Removes an acknowledgement whose session ended, conditional on its revision (an instance
/// that acknowledged again since keeps its new one). A failure is logged: the next wait that
/// finds it tries again.
async fn remove_ended(bucket: &Bucket, ack: &Entry) {
    match remove_marked(bucket, ack).await {
        Ok(reaped) => {
            tracing::debug!(key = %ack.key(), ?reaped, "removed an acknowledgement whose session ended")
        }
        Err(e) => {
            tracing::debug!(key = %ack.key(), error = %e, "cannot remove an acknowledgement whose session ended")
        }
    }
}

/// Applies one event of the acknowledgement watch to `instances`: an acknowledgement counts,
/// a removed or unreadable one stops counting.
fn record(
    instances: &mut Instances,
    prefix: &str,
    ev: Result<WatchEvent, kvtk_core::Error>,
) -> Result<(), Error> {
    let e = match ev {
        Ok(WatchEvent::Entry(e)) => e,
        Ok(WatchEvent::InitialDone) => return Ok(()),
        // A vanished key is simply gone; anything else is retried inside the watch.
        Err(e) if e.kind() == kvtk_core::ErrorKind::HistoryGone => {
            if let Some(k) = e.key().and_then(|k| k.strip_prefix(prefix)) {
                instances.remove(k);
            }
            return Ok(());
        }
        Err(e) => return Err(Error::kv("applied acknowledgements watch failed", e)),
    };
    let Some(name) = e.key().as_str().strip_prefix(prefix) else {
        return Ok(());
    };
    // An acknowledgement of a format version this library does not know is refused: the
    // wait ends with the error rather than count or ignore it.
    let applied = kvtk_core::format::decode_json::<Applied>(&e, "config fleet acknowledgement")
        .map_err(|e| Error::kv("refusing an applied acknowledgement", e))?
        .and_then(|a| a.applied);
    match applied {
        Some(r) => {
            let bound = SessionId::bound_by(&e).map(|id| (id, e.clone()));
            instances.insert(name.to_string(), (r, bound));
        }
        None => {
            instances.remove(name);
        }
    }
    Ok(())
}

/// The instances that applied `revision` or a later one, once they are at least `count`.
fn enough(instances: &Instances, revision: Revision, count: usize) -> Option<Vec<String>> {
    let ok: Vec<String> = instances
        .iter()
        .filter(|(_, (r, _))| *r >= revision.get())
        .map(|(k, _)| k.clone())
        .collect();
    (ok.len() >= count).then_some(ok)
}
