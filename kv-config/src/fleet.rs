//! Fleet visibility: each reader may publish the revision it applied under
//! `_applied.<config name>.<instance>` (a per-key-TTL'd key, refreshed while the reader
//! lives), and a writer can wait until enough instances have applied a revision.

use std::collections::BTreeMap;

use futures::StreamExt;
use kv_core::{Include, ReadOnlyBucket, Revision, WatchEvent};
use serde::{Deserialize, Serialize};

use crate::error::{ConfigError, ConfigErrorKind};
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

/// Checks an instance name: one key token (`A-Z a-z 0-9 - _ = /`, no dots).
pub(crate) fn check_instance(source: &Source, instance: &str) -> Result<String, ConfigError> {
    let key = format!("{}.{instance}", source.ack_prefix());
    if instance.is_empty() || instance.contains('.') {
        return Err(ConfigError::new(
            ConfigErrorKind::InvalidArgument,
            format!("instance name {instance:?} must be one non-empty key token (no dots)"),
        ));
    }
    kv_core::Key::new(key.as_str()).map_err(|e| {
        ConfigError::new(
            ConfigErrorKind::InvalidArgument,
            format!("bad instance name {instance:?}: {e}"),
        )
        .with_source(e)
    })?;
    Ok(key)
}

/// Waits until at least `count` instances report `applied >= revision`; returns their names.
/// Watches the acknowledgement keys (no polling). An instance whose key expires or is deleted
/// stops counting.
pub(crate) async fn wait_applied(
    bucket: &ReadOnlyBucket,
    source: &Source,
    revision: Revision,
    count: usize,
) -> Result<Vec<String>, ConfigError> {
    let prefix = format!("{}.", source.ack_prefix());
    let mut watch = bucket
        .watch([source.ack_filter()])
        .include(Include::LastPerKey)
        .await
        .map_err(|e| ConfigError::kv("cannot watch applied acknowledgements", e))?;
    let mut instances: BTreeMap<String, u64> = BTreeMap::new();
    let done = |m: &BTreeMap<String, u64>| -> Option<Vec<String>> {
        let ok: Vec<String> = m
            .iter()
            .filter(|(_, r)| **r >= revision.get())
            .map(|(k, _)| k.clone())
            .collect();
        (ok.len() >= count).then_some(ok)
    };
    if count == 0 {
        return Ok(Vec::new());
    }
    while let Some(ev) = watch.next().await {
        let e = match ev {
            Ok(WatchEvent::Entry(e)) => e,
            Ok(WatchEvent::InitialDone) => continue,
            // A vanished key is simply gone; anything else is retried inside the watch.
            Err(e) if e.kind() == kv_core::ErrorKind::HistoryGone => {
                if let Some(k) = e.key().and_then(|k| k.strip_prefix(&prefix)) {
                    instances.remove(k);
                }
                continue;
            }
            Err(e) => return Err(ConfigError::kv("applied acknowledgements watch failed", e)),
        };
        let Some(name) = e.key().as_str().strip_prefix(&prefix) else {
            continue;
        };
        let applied = e
            .is_value()
            .then(|| serde_json::from_slice::<Applied>(e.value()).ok())
            .flatten()
            .and_then(|a| a.applied);
        match applied {
            Some(r) => {
                instances.insert(name.to_string(), r);
            }
            None => {
                instances.remove(name);
            }
        }
        if let Some(ok) = done(&instances) {
            return Ok(ok);
        }
    }
    Err(ConfigError::new(
        ConfigErrorKind::Kv,
        "applied acknowledgements watch ended",
    ))
}
