//! Removing an entry its owner left ([`remove_marked`]): a dead session's entry, a
//! hand-over whose registration is gone, a bound creation abandoned before its outcome was
//! known. The caller decides that the owner is gone; this only writes.

use super::state::ATTEMPTS;
use crate::bucket::Bucket;
use crate::entry::Entry;
use crate::error::{Error, ErrorKind, Operation};
use crate::retry::Backoff;
use crate::revision::Revision;

/// What [`remove_if_dead`](super::remove_if_dead) or [`remove_marked`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Reaped {
    /// The entry's owner was gone (for [`remove_if_dead`](super::remove_if_dead): its
    /// session had ended), and our conditional delete removed the entry.
    Removed {
        /// The tombstone's revision.
        tombstone: Revision,
    },
    /// The entry's session is alive (the stream leader says so): nothing was written.
    Alive,
    /// The entry is not bound to a session (a plain value, a lease with its own TTL, a
    /// removal; for [`remove_marked`]: carries no mark): nothing was written.
    NotBound,
    /// The entry was no longer at the revision given: someone else removed it (another
    /// remover, or an earlier attempt of ours whose acknowledgement was lost) or rewrote it.
    Moved,
}

/// Removes `entry` (as read, at its revision) by a delete conditional on its revision whose
/// tombstone carries the entry's own mark (`<nonce>:<origin>`, never `:done`): the way an
/// entry whose owner can no longer remove it is taken away (a dead session's entry, a
/// hand-over whose registration is gone, a creation its session's owner abandoned), so watchers can tell whose
/// entry left and that it was not a completed release. [`Reaped::Moved`] when the entry was
/// no longer at that revision; [`Reaped::NotBound`] (nothing written) for an entry that
/// carries no mark. A caller decides first that the owner is gone: this does not look.
///
/// # Cancel safety
/// Not cancel safe: the delete may be applied although the future was dropped.
pub async fn remove_marked(bucket: &Bucket, entry: &Entry) -> Result<Reaped, Error> {
    let Some(tag) = entry.lease() else {
        return Ok(Reaped::NotBound);
    };
    let mark = crate::entry::LeaseTag::header_value(tag.nonce(), Some(tag.origin()));
    let mut retrying = Backoff::DEFAULT.start();
    for _ in 0..ATTEMPTS {
        let del = bucket.delete(entry.key()).revision(entry.revision());
        match del.lease_tag(mark.clone()).await {
            Ok(tombstone) => {
                tracing::debug!(key = %entry.key(), nonce = %format_args!("{:032x}", tag.nonce()), tombstone = tombstone.get(), "removed an entry its owner left");
                return Ok(Reaped::Removed { tombstone });
            }
            Err(e) if e.is_conflict() => return Ok(Reaped::Moved),
            Err(e) if e.is_transient() => retrying.pause().await,
            Err(e) => return Err(e.with_op(Operation::Lease)),
        }
    }
    Err(Error::new(
        ErrorKind::Timeout,
        "could not remove the entry its owner left",
    )
    .with_op(Operation::Lease)
    .with_key(entry.key().as_str()))
}
