//! Errors of kvtk-locks: one type with a matchable [`ErrorKind`].

use std::error::Error as StdError;
use std::fmt;

/// What went wrong, for matching. New kinds may be added.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// A name, TTL, interval, permit count or other argument is invalid.
    InvalidArgument,
    /// A TTL that is not a whole number of seconds ≥ 1.
    InvalidTtl,
    /// The wait for the lock ended by timeout.
    Timeout,
    /// The wait was cancelled through its token.
    Cancelled,
    /// Ownership was lost (or could no longer be guaranteed).
    Lost,
    /// Clients disagree on a semaphore's permit count.
    PermitMismatch,
    /// A stale fencing token was rejected.
    StaleToken,
    /// The waiter's own queue entry vanished while it waited (it stalled or was cut off).
    QueueEntryLost,
    /// The server refused an operation for lack of permission (the KV error, reached
    /// through `source()`, names the subject). Not transient.
    PermissionDenied,
    /// An error from the KV layer (see [`Error::core_kind`]).
    Kv,
    /// An invariant of this library broke: a bug. Please report it.
    Internal,
}

/// The error of every kvtk-locks operation.
#[derive(Debug)]
pub struct Error {
    kind: ErrorKind,
    message: String,
    source: Option<Box<kvtk_core::Error>>,
}

impl Error {
    /// An error of `kind` with a message (lowercase, no trailing period).
    pub(crate) fn new(kind: ErrorKind, message: impl Into<String>) -> Error {
        Error {
            kind,
            message: message.into(),
            source: None,
        }
    }

    /// What went wrong.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// Whether the failure is expected to pass by itself (see
    /// [`kvtk_core::Error::is_transient`]).
    pub fn is_transient(&self) -> bool {
        self.source
            .as_deref()
            .is_some_and(kvtk_core::Error::is_transient)
    }

    /// For [`ErrorKind::Kv`] (and kinds derived from a KV error): the KV error's kind.
    pub fn core_kind(&self) -> Option<kvtk_core::ErrorKind> {
        self.source.as_deref().map(kvtk_core::Error::kind)
    }
}

impl From<kvtk_core::Error> for Error {
    fn from(e: kvtk_core::Error) -> Error {
        let kind = match e.kind() {
            kvtk_core::ErrorKind::InvalidTtl => ErrorKind::InvalidTtl,
            kvtk_core::ErrorKind::InvalidKey | kvtk_core::ErrorKind::InvalidArgument => {
                ErrorKind::InvalidArgument
            }
            kvtk_core::ErrorKind::LeaseLost => ErrorKind::Lost,
            kvtk_core::ErrorKind::PermissionDenied => ErrorKind::PermissionDenied,
            kvtk_core::ErrorKind::Internal => ErrorKind::Internal,
            _ => ErrorKind::Kv,
        };
        // One layer in Display: the KV error's own text is reached through `source()`.
        let message = match kind {
            ErrorKind::InvalidTtl | ErrorKind::InvalidArgument => "invalid argument",
            ErrorKind::Lost => "the lock is no longer held",
            ErrorKind::PermissionDenied => "permission denied",
            _ => "key-value operation failed",
        };
        Error {
            kind,
            message: message.to_string(),
            source: Some(Box::new(e)),
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl StdError for Error {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        self.source.as_ref().map(|e| e as &(dyn StdError + 'static))
    }
}

impl kvtk_core::Transient for Error {
    fn is_transient(&self) -> bool {
        Error::is_transient(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_prints_one_layer_and_keeps_the_cause() {
        let core = kvtk_core::Key::new("a b").unwrap_err();
        let core_text = core.to_string();
        let e = Error::from(core);
        assert_eq!(e.kind(), ErrorKind::InvalidArgument);
        assert_eq!(e.core_kind(), Some(kvtk_core::ErrorKind::InvalidKey));
        assert!(!e.is_transient());
        let layers = kvtk_tests::assert_one_layer_each(&e);
        assert_eq!(layers, vec![e.to_string(), core_text]);
    }
}
