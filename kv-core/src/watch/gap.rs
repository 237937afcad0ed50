//! Proof, key by key, that a strict watch lost no revision after a check point.
//!
//! The server removes old revisions of a key from the *middle* of the stream (per-key history
//! limit, purge roll-ups, expiry) while an untouched key keeps the stream's first sequence low,
//! so "first sequence ≤ resume point" proves nothing. What the server can tell, in one direct
//! get each: a key's oldest stored revision with the number stored after it, and how many
//! messages of any key it stores from a sequence on. From those, for the first revision `q` of
//! a key that a watch delivers after its check point `from`:
//!
//! - an older stored revision of the key means nothing of it after `from` was removed
//!   (history limits remove a key's oldest revisions first, a roll-up removes all of them);
//! - fewer stored revisions than the history limit, and `q` not a purge or expiry marker,
//!   mean the limit never removed one and nothing rolled up;
//! - otherwise a removed revision of the key could lie in `[from, q)`: the watch missed
//!   nothing only if every sequence there is still stored (the server does not say which key
//!   a removed sequence belonged to, so a removed revision of *another* key in that range is
//!   reported too — a strict watch errs on the side of `HistoryGone`).

use std::collections::HashSet;

use crate::bucket::inner::Inner;
use crate::error::{Error, ErrorKind, Operation};
use crate::key::Key;

/// The keys verified since one check point.
#[derive(Debug)]
pub(super) struct GapCheck {
    /// The first revision the watch must deliver from the check point on.
    from: u64,
    /// The bucket's per-key history limit (`max_msgs_per_subject`; ≤ 0 means unlimited).
    history: i64,
    verified: HashSet<Key>,
}

impl GapCheck {
    pub(super) fn new(from: u64, history: i64) -> Self {
        GapCheck {
            from,
            history,
            verified: HashSet::new(),
        }
    }

    /// Checks that no revision of `key` between the check point and `seq` (its first revision
    /// delivered since) was removed. `rolled_up`: the revision at `seq` is a purge or an
    /// expiry marker, which may have removed older revisions.
    pub(super) async fn verify(
        &mut self,
        inner: &Inner,
        key: &Key,
        seq: u64,
        rolled_up: bool,
    ) -> Result<(), Error> {
        if seq <= self.from || self.verified.contains(key) {
            return Ok(());
        }
        let subject = format!("{}{}", inner.read_prefix, key);
        let first = if inner.direct {
            inner
                .js
                .direct_first(&inner.stream, 0, Some(&subject))
                .await?
        } else {
            None
        };
        let proven = match first {
            Some((oldest, _)) if oldest < seq => true,
            Some((_, after)) if !rolled_up && self.below_limit(after + 1) => true,
            _ => inner.direct && self.missing_before(inner, seq).await? == 0,
        };
        if !proven {
            return Err(Error::new(
                ErrorKind::HistoryGone,
                format!(
                    "revisions between {} and {seq} may be gone: the server removed messages \
                     in that range (history limit, purge or expiry)",
                    self.from
                ),
            )
            .with_key(key.as_str())
            .with_op(Operation::Watch));
        }
        self.verified.insert(key.clone());
        Ok(())
    }

    fn below_limit(&self, stored: u64) -> bool {
        self.history <= 0 || stored < self.history.unsigned_abs()
    }

    /// How many sequences in `[from, seq)` the stream no longer stores.
    async fn missing_before(&self, inner: &Inner, seq: u64) -> Result<u64, Error> {
        // Counted from `from` first: a write landing between the two reads raises only the
        // second count, which can only make the result larger (never hide a removal).
        let stored_from = stored_since(inner, self.from).await?;
        let stored_at = stored_since(inner, seq).await?;
        let stored = stored_from.saturating_sub(stored_at);
        Ok((seq - self.from).saturating_sub(stored))
    }
}

/// How many messages (of any key) the stream stores at or after `seq`.
async fn stored_since(inner: &Inner, seq: u64) -> Result<u64, Error> {
    let first = inner.js.direct_first(&inner.stream, seq, None).await?;
    Ok(first.map_or(0, |(_, after)| after + 1))
}
