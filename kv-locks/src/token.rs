//! Fencing tokens.

use std::fmt;

use kvtk_core::Revision;

/// A fencing token: the revision of the write that put the holder into the lock's queue.
///
/// Tokens of one lock strictly increase from one holder to the next (a later holder
/// entered the queue later, and revisions only grow), so a resource that remembers the
/// highest token it has seen can reject writes from a holder that lost the lock without
/// noticing (see [`Fence`](crate::Fence)).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Token(Revision);

impl Token {
    pub(crate) fn new(r: Revision) -> Token {
        Token(r)
    }

    /// A token from its number (as sent to a resource); `None` for 0.
    pub fn from_u64(n: u64) -> Option<Token> {
        Revision::new(n).map(Token)
    }

    /// The token's number.
    pub fn get(self) -> u64 {
        self.0.get()
    }

    /// The token as a bucket revision.
    pub fn revision(self) -> Revision {
        self.0
    }
}

impl fmt::Display for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}
