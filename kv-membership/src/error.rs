//! Errors of kvtk-membership: one type with a matchable [`ErrorKind`].
//!
//! Display prints this layer's message only; the cause (a kvtk-core or serde_json error) is
//! reached through [`source`](std::error::Error::source). Display text is for people and is
//! not a contract: match on [`Error::kind`].

use kvtk_core::Revision;

/// What went wrong, for matching. New kinds may be added.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// A group name or instance id breaks the naming rules (see [`crate::Group`]).
    InvalidName,
    /// A TTL that is not a whole number of seconds ≥ 1.
    InvalidTtl,
    /// Another argument is invalid.
    InvalidArgument,
    /// The instance id is already registered in the group by a member that is still alive
    /// ([`Error::joined_at`] tells since when).
    AlreadyJoined,
    /// The bucket is not fit for membership (per-key TTL disabled).
    BadBucket,
    /// The member is no longer registered (its lease was lost or it left).
    Lost,
    /// Metadata could not be encoded or decoded.
    Metadata,
    /// An error from the KV layer (see [`Error::core_kind`]).
    Kv,
    /// An invariant of this library broke: a bug. Please report it.
    Internal,
}

kvtk_core::recipe_error! {
    /// The error of every kvtk-membership operation.
    pub struct Error {
        kind: ErrorKind,
        joined_at: Option<Revision>,
    }
}

impl Error {
    /// A kvtk-core error met while doing `what` (lowercase, e.g. "could not join").
    pub(crate) fn kv(what: impl Into<String>, e: kvtk_core::Error) -> Error {
        let kind = match e.kind() {
            kvtk_core::ErrorKind::InvalidTtl => ErrorKind::InvalidTtl,
            kvtk_core::ErrorKind::InvalidKey => ErrorKind::InvalidName,
            kvtk_core::ErrorKind::InvalidArgument => ErrorKind::InvalidArgument,
            kvtk_core::ErrorKind::FeatureDisabled => ErrorKind::BadBucket,
            kvtk_core::ErrorKind::LeaseLost => ErrorKind::Lost,
            kvtk_core::ErrorKind::Internal => ErrorKind::Internal,
            _ => ErrorKind::Kv,
        };
        Error::new(kind, what).with_source(e)
    }

    pub(crate) fn metadata(what: impl Into<String>, e: serde_json::Error) -> Error {
        Error::new(ErrorKind::Metadata, what).with_source(e)
    }

    pub(crate) fn already_joined(key: &str, joined_at: Revision) -> Error {
        let mut e = Error::new(
            ErrorKind::AlreadyJoined,
            format!("{key} is registered by a live member since revision {joined_at}"),
        );
        e.joined_at = Some(joined_at);
        e
    }

    /// For [`ErrorKind::AlreadyJoined`]: the revision at which the live member joined.
    pub fn joined_at(&self) -> Option<Revision> {
        self.joined_at
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_prints_one_layer_and_keeps_the_cause() {
        let core = kvtk_core::Key::new("a b").unwrap_err();
        let core_text = core.to_string();
        let e = Error::kv("bad instance id", core);
        assert_eq!(e.kind(), ErrorKind::InvalidName);
        assert_eq!(e.to_string(), "bad instance id");
        assert_eq!(e.core_kind(), Some(kvtk_core::ErrorKind::InvalidKey));
        assert!(!e.is_transient());
        let layers = kvtk_tests::assert_one_layer_each(&e);
        assert_eq!(layers, vec!["bad instance id".to_string(), core_text]);
    }
}
