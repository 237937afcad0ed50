//! Metrics of the lease layer and of watches, through the [`metrics`] facade.
//!
//! Nothing is exported unless the application installs a recorder (for example
//! `metrics-exporter-prometheus`); without one an emission costs a few tens of nanoseconds.
//! Every metric of the toolkit, with its labels, is in the one table of the workspace's
//! [docs/metrics.md](https://github.com/kv-toolkit/kv-toolkit/blob/main/docs/metrics.md); the
//! constants here are the names kvtk-core emits.

use std::sync::Arc;
use std::time::Duration;

use ::metrics::{counter, histogram, SharedString};

use crate::lease::LostReason;

/// Histogram (seconds): time left to a lease's local deadline when a renewal's
/// acknowledgement arrives. Labels `bucket`, `recipe`. Near zero means renewals barely make
/// it: the next slow one loses the lease.
pub const LEASE_RENEWAL_SLACK: &str = "kv_lease_renewal_slack_seconds";

/// Counter: leases lost, by `reason` (`deadline`, `expired`, `taken`, `permission`; a
/// release is not a loss). Labels `bucket`, `recipe`, `reason`.
pub const LEASE_LOST: &str = "kv_lease_lost_total";

/// Counter: watch consumers re-created after an interruption, resuming after the last
/// revision delivered. Labels `bucket`, `reason` (what interrupted the consumer).
pub const WATCH_RESUMES: &str = "kv_watch_resumes_total";

/// Counter: watches that ended with [`ErrorKind::HistoryGone`](crate::ErrorKind::HistoryGone)
/// (at start or later). Label `bucket`.
pub const WATCH_HISTORY_GONE: &str = "kv_watch_history_gone_total";

/// The `recipe` label of leases renewed by a [`Keeper`](crate::lease::Keeper) made with
/// [`Keeper::new`](crate::lease::Keeper::new).
pub const RECIPE_LEASE: &str = "lease";

/// The labels every lease of one keeper carries.
#[derive(Debug)]
pub(crate) struct LeaseLabels {
    bucket: Arc<str>,
    recipe: &'static str,
}

impl LeaseLabels {
    pub(crate) fn new(bucket: &str, recipe: &'static str) -> Arc<LeaseLabels> {
        Arc::new(LeaseLabels {
            bucket: bucket.into(),
            recipe,
        })
    }

    fn bucket(&self) -> SharedString {
        SharedString::from(self.bucket.clone())
    }

    pub(crate) fn renewal_slack(&self, slack: Duration) {
        histogram!(LEASE_RENEWAL_SLACK, "bucket" => self.bucket(), "recipe" => self.recipe)
            .record(slack.as_secs_f64());
    }

    pub(crate) fn lost(&self, reason: LostReason) {
        let reason = match reason {
            LostReason::Released => return,
            LostReason::Deadline => "deadline",
            LostReason::Expired => "expired",
            LostReason::Taken => "taken",
            LostReason::Permission => "permission",
        };
        counter!(LEASE_LOST, "bucket" => self.bucket(), "recipe" => self.recipe, "reason" => reason)
            .increment(1);
    }
}

pub(crate) fn watch_resumed(bucket: &Arc<str>, reason: &'static str) {
    counter!(WATCH_RESUMES, "bucket" => SharedString::from(bucket.clone()), "reason" => reason)
        .increment(1);
}

/// Counts `res` when it is a `HistoryGone` error.
pub(crate) fn watch_result<T>(bucket: &Arc<str>, res: &Result<T, crate::Error>) {
    if matches!(res, Err(e) if e.kind() == crate::ErrorKind::HistoryGone) {
        counter!(WATCH_HISTORY_GONE, "bucket" => SharedString::from(bucket.clone())).increment(1);
    }
}
