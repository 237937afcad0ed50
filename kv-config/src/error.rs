//! Errors of the reader and writer, and the [`Rejection`] of a bad candidate.
//!
//! Display text is for people and is not a contract: match on [`ConfigError::kind`] and
//! [`Rejection::kind`].

use std::error::Error as StdError;
use std::fmt;

use kv_core::Revision;

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
pub enum ConfigErrorKind {
    /// The KV could not be reached and no usable local snapshot exists, or fresh
    /// configuration was demanded ([`crate::ConfigBuilder::require_fresh`]).
    Unavailable,
    /// The value was refused: see [`ConfigError::rejection`].
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
    /// A KV operation failed: see the source ([`kv_core::Error`]).
    Kv,
}

type BoxError = Box<dyn StdError + Send + Sync + 'static>;

/// The error of kv-config operations.
#[derive(Debug)]
pub struct ConfigError {
    kind: ConfigErrorKind,
    message: String,
    rejection: Option<Rejection>,
    source: Option<BoxError>,
}

impl ConfigError {
    pub(crate) fn new(kind: ConfigErrorKind, message: impl Into<String>) -> ConfigError {
        ConfigError {
            kind,
            message: message.into(),
            rejection: None,
            source: None,
        }
    }

    pub(crate) fn with_source(mut self, source: impl Into<BoxError>) -> ConfigError {
        self.source = Some(source.into());
        self
    }

    pub(crate) fn kv(context: &str, err: kv_core::Error) -> ConfigError {
        let kind = match err.kind() {
            kv_core::ErrorKind::Conflict => ConfigErrorKind::Conflict,
            kv_core::ErrorKind::InvalidKey => ConfigErrorKind::InvalidArgument,
            _ => ConfigErrorKind::Kv,
        };
        ConfigError::new(kind, format!("{context}: {err}")).with_source(err)
    }

    /// What went wrong.
    pub fn kind(&self) -> ConfigErrorKind {
        self.kind
    }

    /// For [`ConfigErrorKind::Rejected`]: why the value was refused.
    pub fn rejection(&self) -> Option<&Rejection> {
        self.rejection.as_ref()
    }
}

impl From<Rejection> for ConfigError {
    fn from(r: Rejection) -> Self {
        ConfigError {
            kind: ConfigErrorKind::Rejected,
            message: r.to_string(),
            rejection: Some(r),
            source: None,
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl StdError for ConfigError {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        self.source
            .as_ref()
            .map(|s| s.as_ref() as &(dyn StdError + 'static))
    }
}
