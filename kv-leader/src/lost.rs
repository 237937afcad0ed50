//! Why a leadership ended.

use kvtk_core::lease;

/// Why a leadership ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum LostReason {
    /// The local lease deadline passed without a confirmed renewal (cut off, stalled, or the
    /// bucket's stream was unavailable for too long), or the server expired the key.
    Expired,
    /// Someone else wrote or removed the leader key (a renewal conflicted).
    Overwritten,
    /// We resigned (explicitly, or by dropping the handle).
    Resigned,
    /// We handed leadership over to another candidate.
    Transferred,
    /// The [`Election`](crate::Election) handle was shut down.
    Shutdown,
}

impl From<lease::LostReason> for LostReason {
    fn from(r: lease::LostReason) -> LostReason {
        match r {
            lease::LostReason::Taken => LostReason::Overwritten,
            lease::LostReason::Released => LostReason::Resigned,
            _ => LostReason::Expired,
        }
    }
}
