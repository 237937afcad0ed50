//! Errors of kvtk-leader: one type with a matchable [`ErrorKind`].
//!
//! Display text is for people and is not a contract: match on [`Error::kind`].

use std::error::Error as StdError;
use std::fmt;

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

/// The error of every kvtk-leader operation.
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

    pub(crate) fn invalid(message: impl Into<String>) -> Error {
        Error::new(ErrorKind::InvalidArgument, message)
    }

    pub(crate) fn lost(message: impl Into<String>) -> Error {
        Error::new(ErrorKind::Lost, message)
    }

    pub(crate) fn with_source(mut self, e: kvtk_core::Error) -> Error {
        self.source = Some(Box::new(e));
        self
    }

    /// What went wrong.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// For errors that come from the KV layer: the KV error's kind.
    pub fn core_kind(&self) -> Option<kvtk_core::ErrorKind> {
        self.source.as_deref().map(kvtk_core::Error::kind)
    }

    /// Whether the failure is expected to pass by itself (see
    /// [`kvtk_core::Error::is_transient`]).
    pub fn is_transient(&self) -> bool {
        self.source
            .as_deref()
            .is_some_and(kvtk_core::Error::is_transient)
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
