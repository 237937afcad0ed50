//! Errors of kvtk-leader: one type with a matchable [`ErrorKind`].
//!
//! Display text is for people and is not a contract: match on [`Error::kind`].

/// What went wrong, for matching. New kinds may be added.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// An election name, candidate identity, duration or other argument is invalid.
    InvalidArgument,
    /// A TTL that is not a whole number of seconds ≥ 1.
    InvalidTtl,
    /// Leadership was lost (or could no longer be guaranteed) before or during the operation.
    Lost,
    /// The transfer target is not campaigning (no fresh candidate registration).
    NotCampaigning,
    /// The bucket is not fit for elections (history above 1, per-key TTL disabled).
    BadBucket,
    /// A write carried a term lower than one already seen (see [`crate::Fence`]).
    StaleTerm,
    /// The work run by an elector panicked.
    WorkPanicked,
    /// The election handle was shut down ([`crate::Election::shutdown`]).
    Closed,
    /// An error from the KV layer (see [`Error::core_kind`]).
    Kv,
    /// An invariant of this library broke: a bug. Please report it.
    Internal,
}

kvtk_core::recipe_error! {
    /// The error of every kvtk-leader operation.
    pub struct Error {
        kind: ErrorKind,
    }
}

impl Error {
    pub(crate) fn invalid(message: impl Into<String>) -> Error {
        Error::new(ErrorKind::InvalidArgument, message)
    }

    pub(crate) fn lost(message: impl Into<String>) -> Error {
        Error::new(ErrorKind::Lost, message)
    }
}

impl From<kvtk_core::Error> for Error {
    fn from(e: kvtk_core::Error) -> Error {
        let kind = match e.kind() {
            kvtk_core::ErrorKind::InvalidTtl => ErrorKind::InvalidTtl,
            kvtk_core::ErrorKind::InvalidKey | kvtk_core::ErrorKind::InvalidArgument => {
                ErrorKind::InvalidArgument
            }
            kvtk_core::ErrorKind::FeatureDisabled => ErrorKind::BadBucket,
            kvtk_core::ErrorKind::LeaseLost => ErrorKind::Lost,
            kvtk_core::ErrorKind::Internal => ErrorKind::Internal,
            _ => ErrorKind::Kv,
        };
        // One layer in Display: the KV error's own text is reached through `source()`.
        let message = match kind {
            ErrorKind::InvalidTtl | ErrorKind::InvalidArgument => "invalid argument",
            ErrorKind::BadBucket => "the bucket is not fit for elections",
            ErrorKind::Lost => "leadership is no longer held",
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
