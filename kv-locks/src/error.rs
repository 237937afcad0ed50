//! Errors of kvtk-locks: one type with a matchable [`ErrorKind`].

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

kvtk_core::recipe_error! {
    /// The error of every kvtk-locks operation.
    pub struct Error {
        kind: ErrorKind,
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
        Error::new(kind, message).with_source(e)
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
