//! A fence for the resource side: reject terms lower than the highest seen.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::error::{Error, ErrorKind};
use crate::record::Term;

/// An in-memory fencing check for a resource that leaders act on: every request carries the
/// leader's [`Term`]; requests with a term lower than the highest one seen are rejected.
/// Equal terms pass (one leader makes many requests).
///
/// ```
/// use kvtk_leader::Fence;
/// let fence = Fence::new();
/// assert!(fence.check_raw(7).is_ok());
/// assert!(fence.check_raw(9).is_ok());
/// assert!(fence.check_raw(9).is_ok());
/// assert!(fence.check_raw(7).is_err()); // a deposed leader
/// assert_eq!(fence.highest(), 9);
/// ```
#[derive(Debug, Default)]
pub struct Fence {
    highest: AtomicU64,
}

impl Fence {
    /// A fence that has seen no term.
    pub fn new() -> Fence {
        Fence::default()
    }

    /// Admits `term` if it is at least the highest seen, and remembers it.
    pub fn check(&self, term: Term) -> Result<(), Error> {
        self.check_raw(term.get())
    }

    /// [`check`](Self::check) with a plain number (a term that crossed a process boundary).
    pub fn check_raw(&self, term: u64) -> Result<(), Error> {
        let prev = self.highest.fetch_max(term, Ordering::SeqCst);
        if term < prev {
            return Err(Error::new(
                ErrorKind::StaleTerm,
                format!("term {term} is older than term {prev}"),
            ));
        }
        Ok(())
    }

    /// The highest term admitted so far (0 for none).
    pub fn highest(&self) -> u64 {
        self.highest.load(Ordering::SeqCst)
    }
}
