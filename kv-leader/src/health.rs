//! Readiness for probes: ready only while a lease is fresh.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use crate::held::Held;
use crate::record::Term;

/// What a [`Health`] handle reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum HealthStatus {
    /// Leading with a fresh lease: `slack` is the time left before the local deadline.
    Leading {
        /// The term.
        term: Term,
        /// Time left before the local deadline.
        slack: Duration,
    },
    /// Not leading (a follower, or leadership ended).
    NotLeading,
}

/// A cheap, cloneable readiness signal for health probes: ready only while this instance
/// leads with a fresh lease (before its local deadline, computed on the monotonic clock,
/// so a starved lease keeper shows up here as soon as the deadline passes).
///
/// ```no_run
/// # fn demo(leadership: &kvtk_leader::Leadership) {
/// let health = leadership.health();
/// // in the HTTP /ready handler:
/// let status = if health.is_ready() { 200 } else { 503 };
/// # let _ = status;
/// # }
/// ```
#[derive(Debug, Clone, Default)]
pub struct Health {
    src: Arc<Mutex<Option<Arc<Held>>>>,
}

impl Health {
    pub(crate) fn of(held: Arc<Held>) -> Health {
        Health {
            src: Arc::new(Mutex::new(Some(held))),
        }
    }

    pub(crate) fn set(&self, held: Option<Arc<Held>>) {
        if let Ok(mut g) = self.src.lock() {
            *g = held;
        }
    }

    /// The status now.
    pub fn status(&self) -> HealthStatus {
        let now = Instant::now();
        let Ok(g) = self.src.lock() else {
            return HealthStatus::NotLeading;
        };
        match g.as_ref() {
            Some(held) if held.is_valid() => HealthStatus::Leading {
                term: held.term(),
                slack: held.deadline().saturating_duration_since(now),
            },
            Some(_) => HealthStatus::NotLeading,
            None => HealthStatus::NotLeading,
        }
    }

    /// Whether this instance leads with a fresh lease.
    pub fn is_ready(&self) -> bool {
        matches!(self.status(), HealthStatus::Leading { .. })
    }
}
