//! Configuration metrics through the [`metrics`] facade: applied and rejected
//! values, and how far the value in use is behind.
//!
//! Nothing is exported unless the application installs a recorder. Every metric of the toolkit,
//! with its labels, is in the one table of the workspace's
//! [docs/metrics.md](https://github.com/kv-toolkit/kv-toolkit/blob/main/docs/metrics.md). The label
//! `config` is the document key or the prefix (what [`Source::name`](crate::Source::name) shows):
//! one set of series per configuration a process reads.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ::metrics::{counter, gauge, SharedString};
use kvtk_core::Revision;

use crate::error::{RejectKind, Rejection};

/// Counter: values from the KV that became the reader's current value (at start and on each
/// change; a rewrite of the same value is not counted). Label `config`.
pub const CONFIG_APPLIED: &str = "kv_config_applied_total";

/// Counter: KV revisions the reader refused, keeping the last good value. Labels `config`,
/// `reason` (`malformed`, `wrong_type`, `unknown_field`, `invalid`, `deleted`).
pub const CONFIG_REJECTED: &str = "kv_config_rejected_total";

/// Gauge: when the value in use was applied, in seconds since the Unix epoch (the local
/// wall clock, for display only): `time() - kv_config_last_applied_timestamp_seconds` is
/// its age. Label `config`.
pub const CONFIG_LAST_APPLIED: &str = "kv_config_last_applied_timestamp_seconds";

/// Gauge: bucket revisions between the value in use and the newest revision of the
/// configuration the reader saw — 0 when it uses the newest, above 0 while a newer revision
/// is rejected. Label `config`.
pub const CONFIG_REVISION_LAG: &str = "kv_config_revision_lag";

/// The metrics of one reader.
#[derive(Debug, Clone)]
pub(crate) struct ReaderMetrics {
    config: SharedString,
}

impl ReaderMetrics {
    pub(crate) fn new(config: &str) -> ReaderMetrics {
        ReaderMetrics {
            config: SharedString::from(config.to_string()),
        }
    }

    /// A value from the KV became current.
    pub(crate) fn applied(&self) {
        counter!(CONFIG_APPLIED, "config" => self.config.clone()).increment(1);
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or(Duration::ZERO);
        gauge!(CONFIG_LAST_APPLIED, "config" => self.config.clone()).set(now.as_secs_f64());
        self.synced();
    }

    /// The value in use is the newest the KV has.
    pub(crate) fn synced(&self) {
        gauge!(CONFIG_REVISION_LAG, "config" => self.config.clone()).set(0.0);
    }

    /// `r` was refused while the value of revision `in_use` stays current.
    pub(crate) fn rejected(&self, r: &Rejection, in_use: Option<Revision>) {
        let reason = match r.kind() {
            RejectKind::Malformed => "malformed",
            RejectKind::WrongType => "wrong_type",
            RejectKind::UnknownField => "unknown_field",
            RejectKind::Invalid => "invalid",
            RejectKind::Deleted => "deleted",
        };
        counter!(CONFIG_REJECTED, "config" => self.config.clone(), "reason" => reason).increment(1);
        if let (Some(newest), Some(in_use)) = (r.revision(), in_use) {
            let lag = newest.get().saturating_sub(in_use.get());
            gauge!(CONFIG_REVISION_LAG, "config" => self.config.clone()).set(lag as f64);
        }
    }
}
