//! Election metrics through the [`metrics`] facade: who leads, and the terms'
//! starts and ends.
//!
//! Nothing is exported unless the application installs a recorder. Every metric of the toolkit,
//! with its labels, is in the one table of the workspace's
//! [docs/metrics.md](https://github.com/kv-toolkit/kv-toolkit/blob/main/docs/metrics.md). Renewal
//! slack and lease losses of leaderships and candidate registrations are the lease layer's
//! ([`kvtk_core::metrics`], `recipe="leader"`).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use ::metrics::{counter, gauge, Label, SharedString};

use crate::lost::LostReason;

/// Gauge: 1 while this process leads the election, else 0 (more than 1 only if several
/// handles in one process believe they lead, which fencing makes harmless). Labels
/// `bucket`, `election`.
pub const LEADER: &str = "kv_leader_is_leader";

/// Counter: leadership transitions of this process, by `event`: `elected`, and the end of
/// a term — `resigned`, `transferred`, `shutdown`, `expired`, `overwritten` (the
/// [`LostReason`]). Labels `bucket`, `election`, `event`.
pub const LEADER_TRANSITIONS: &str = "kv_leader_transitions_total";

/// One term of this process: counts its start at once and its end exactly once, from
/// whichever notices first (our own resignation, transfer or shutdown, or the lease
/// layer's end of the leader lease).
#[derive(Debug)]
pub(crate) struct TermMetrics {
    labels: Vec<Label>,
    ended: AtomicBool,
}

impl TermMetrics {
    pub(crate) fn elected(bucket: &str, election: &str) -> Arc<TermMetrics> {
        let labels = vec![
            Label::new("bucket", SharedString::from(bucket.to_string())),
            Label::new("election", SharedString::from(election.to_string())),
        ];
        gauge!(LEADER, labels.clone()).increment(1.0);
        transition(&labels, "elected");
        Arc::new(TermMetrics {
            labels,
            ended: AtomicBool::new(false),
        })
    }

    pub(crate) fn ended(&self, reason: LostReason) {
        if self.ended.swap(true, Ordering::AcqRel) {
            return;
        }
        gauge!(LEADER, self.labels.clone()).decrement(1.0);
        transition(
            &self.labels,
            match reason {
                LostReason::Expired => "expired",
                LostReason::Overwritten => "overwritten",
                LostReason::Resigned => "resigned",
                LostReason::Transferred => "transferred",
                LostReason::Shutdown => "shutdown",
            },
        );
    }
}

fn transition(labels: &[Label], event: &'static str) {
    let mut l = labels.to_vec();
    l.push(Label::new("event", event));
    counter!(LEADER_TRANSITIONS, l).increment(1);
}
