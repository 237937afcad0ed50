//! Checkers: read a [`History`](crate::history::History) and report every violation of a
//! safety property ([`all`]) or, while no fault is in place, of a liveness property
//! ([`liveness`]), naming the operations involved.
//!
//! Unknown outcomes are treated as the property requires: a lock acquisition whose outcome is
//! unknown may or may not hold, so only *believers* (clients told they hold) can overlap; a write
//! with an unknown outcome may or may not appear in a watch or a configuration.
//!
//! ```
//! use kvtk_tests::check;
//! use kvtk_tests::history::{History, Mode, Op};
//!
//! let h = History::new();
//! let acquire = || Op::Acquire { lock: "l".into(), mode: Mode::Mutex };
//! h.invoke("a", acquire()).ok(Some(1));
//! h.invoke("b", acquire()).ok(Some(2)); // while `a` still believes it holds
//! let violations = check::all(&h.records());
//! assert_eq!(violations.len(), 1);
//! assert_eq!(violations[0].property, check::Property::MutualExclusion);
//! ```

mod config;
mod holds;
mod leader;
mod liveness;
mod membership;
mod watch;

use std::fmt;

use crate::history::Record;

pub use config::configs;
pub use holds::{fencing, holds, mutual_exclusion, token_order, Hold};
pub use leader::observers;
pub use liveness::{liveness, Bounds, STREAM_LEADER_ELECTION};
pub use watch::watches;

/// The property a [`Violation`] breaks: safety, or liveness ([`Property::is_liveness`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Property {
    /// More believers than a lock (or election) admits at one time.
    MutualExclusion,
    /// Tokens (or terms) not unique, or not increasing in real-time order.
    TokenOrder,
    /// A fenced write with a stale token accepted after a newer one.
    Fencing,
    /// An observer missed a term or saw terms go backwards.
    Observer,
    /// A watch lost, duplicated, reordered or altered a revision.
    Watch,
    /// A configuration reader applied an invalid or torn configuration.
    Config,
    /// Liveness: an operation failed or ended unknown, or a hold was lost, without a fault.
    Unavailable,
    /// Liveness: a lock waiter was not granted within the bound without a fault.
    SlowWaiter,
    /// Liveness: an observer missed a term without a fault.
    MissedTerm,
    /// Liveness: a configuration reader did not converge on the last write without a fault.
    Divergence,
    /// Liveness: a membership watcher did not see a join or leave without a fault.
    MissedMember,
}

impl Property {
    /// Whether it is a liveness property (checked only while no fault is in place).
    pub fn is_liveness(self) -> bool {
        matches!(
            self,
            Property::Unavailable
                | Property::SlowWaiter
                | Property::MissedTerm
                | Property::Divergence
                | Property::MissedMember
        )
    }
}

/// One violation: which property, what happened, and the operations involved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// The property broken.
    pub property: Property,
    /// A one-line description.
    pub summary: String,
    /// The operations involved, in the order the summary names them.
    pub ops: Vec<Record>,
}

impl Violation {
    fn new(property: Property, summary: impl Into<String>, ops: Vec<Record>) -> Violation {
        Violation {
            property,
            summary: summary.into(),
            ops,
        }
    }
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}: {}", self.property, self.summary)?;
        for op in &self.ops {
            write!(f, "\n    {op}")?;
        }
        Ok(())
    }
}

/// Runs every safety checker over `records` ([`liveness`] runs the liveness checks).
pub fn all(records: &[Record]) -> Vec<Violation> {
    let mut out = mutual_exclusion(records);
    out.extend(token_order(records));
    out.extend(fencing(records));
    out.extend(observers(records));
    out.extend(watches(records));
    out.extend(configs(records));
    out
}
