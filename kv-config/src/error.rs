//! Errors of the reader and writer, and the [`Rejection`] of a bad candidate.
//!
//! Display text is for people and is not a contract: match on [`Error::kind`] and
//! [`Rejection::kind`].

use std::error::Error as StdError;
use std::fmt;

use kvtk_core::Revision;

/// Why a candidate configuration was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RejectKind {
    /// The stored bytes are not a document of the configured format (or, in prefix mode, a
    /// value is neither JSON nor UTF-8 text).
    Malformed,
    /// The document parsed but does not decode into the type (wrong type, missing field).
    WrongType,
    /// Strict mode: the document holds fields the type does not know.
    UnknownField,
    /// The validator refused the decoded value.
    Invalid,
    /// The document key was deleted or purged while a value was in use.
    Deleted,
}

impl fmt::Display for RejectKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RejectKind::Malformed => "malformed",
            RejectKind::WrongType => "wrong type",
            RejectKind::UnknownField => "unknown field",
            RejectKind::Invalid => "invalid",
            RejectKind::Deleted => "deleted",
        })
    }
}

/// A candidate that was not applied: the kind, the KV revision it came from and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    pub(crate) kind: RejectKind,
    pub(crate) revision: Option<Revision>,
    pub(crate) message: String,
    pub(crate) fields: Vec<String>,
}

impl Rejection {
    pub(crate) fn new(kind: RejectKind, message: impl Into<String>) -> Rejection {
        Rejection {
            kind,
            revision: None,
            message: message.into(),
            fields: Vec::new(),
        }
    }

    pub(crate) fn with_fields(mut self, fields: Vec<String>) -> Rejection {
        self.fields = fields;
        self
    }

    pub(crate) fn at(mut self, revision: Option<Revision>) -> Rejection {
        self.revision = revision;
        self
    }

    /// Why it was refused.
    pub fn kind(&self) -> RejectKind {
        self.kind
    }

    /// The KV revision of the refused candidate (the newest revision it was built from);
    /// `None` when it did not come from the KV (a local file, the environment).
    pub fn revision(&self) -> Option<Revision> {
        self.revision
    }

    /// The reason, for people.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// For [`RejectKind::UnknownField`]: the unknown field paths (`db.extra`).
    pub fn fields(&self) -> &[String] {
        &self.fields
    }
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "config rejected ({})", self.kind)?;
        if let Some(r) = self.revision {
            write!(f, " at revision {r}")?;
        }
        write!(f, ": {}", self.message)
    }
}

impl StdError for Rejection {}

/// What went wrong, for matching. New kinds may be added.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The KV could not be reached and no usable local snapshot exists, or fresh
    /// configuration was demanded ([`crate::ConfigBuilder::require_fresh`]).
    Unavailable,
    /// The value was refused: see [`Error::rejection`].
    Rejected,
    /// A compare-and-set write kept conflicting with other writers.
    Conflict,
    /// A revision asked for does not exist or is not a revision of this configuration.
    NotFound,
    /// A bad argument (a key, prefix or instance name breaking the key rules).
    InvalidArgument,
    /// The local configuration file or snapshot file could not be read or written.
    Io,
    /// The value could not be encoded in the configured format.
    Encode,
    /// A KV operation failed: see the source ([`kvtk_core::Error`]).
    Kv,
    /// The bucket cannot keep a promise the reader needs: a prefix-mode configuration on a
    /// mirror, which does not keep transaction boundaries.
    Unsupported,
    /// An invariant of this library broke: a bug. Please report it.
    Internal,
}

kvtk_core::recipe_error! {
    /// The error of kvtk-config operations.
    pub struct Error {
        kind: ErrorKind,
        rejection: Option<Rejection>,
    }
}

impl Error {
    pub(crate) fn kv(context: &str, err: kvtk_core::Error) -> Error {
        let kind = match err.kind() {
            kvtk_core::ErrorKind::Conflict => ErrorKind::Conflict,
            kvtk_core::ErrorKind::InvalidKey => ErrorKind::InvalidArgument,
            kvtk_core::ErrorKind::Internal => ErrorKind::Internal,
            _ => ErrorKind::Kv,
        };
        // One layer in Display: the KV error's own text is reached through `source()`.
        Error::new(kind, context).with_source(err)
    }

    /// For [`ErrorKind::Rejected`]: why the value was refused.
    pub fn rejection(&self) -> Option<&Rejection> {
        self.rejection.as_ref()
    }
}

impl From<Rejection> for Error {
    fn from(r: Rejection) -> Self {
        Error {
            kind: ErrorKind::Rejected,
            message: r.to_string(),
            rejection: Some(r),
            source: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_prints_one_layer_and_keeps_the_cause() {
        let core = kvtk_core::Key::new("a b").unwrap_err();
        let core_text = core.to_string();
        let e = Error::kv("bad document key", core);
        assert_eq!(e.kind(), ErrorKind::InvalidArgument);
        assert_eq!(e.core_kind(), Some(kvtk_core::ErrorKind::InvalidKey));
        assert!(!e.is_transient());
        let layers = kvtk_tests::assert_one_layer_each(&e);
        assert_eq!(layers, vec!["bad document key".to_string(), core_text]);
    }
}
