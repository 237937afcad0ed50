//! One error type for every kvtk-core operation, with a matchable [`ErrorKind`].
//!
//! The error records which [`Operation`] failed, on which key, and the server's `err_code`
//! when there was one. Display text is for people and is not a contract: match on
//! [`Error::kind`].

use std::error::Error as StdError;
use std::fmt;

use crate::revision::seq::Revision;

/// What went wrong, for matching. New kinds may be added.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// A compare-and-set expectation failed: the key is not at the expected revision
    /// (server `err_code` 10071, or 10164 on replicated streams).
    Conflict,
    /// `create` found a live value under the key.
    AlreadyExists,
    /// The key (or the revision asked for) does not exist.
    NotFound,
    /// The key or key filter breaks a key rule.
    InvalidKey,
    /// A TTL that is not a whole number of seconds ≥ 1 (a valid TTL on a bucket without
    /// per-key TTLs is [`FeatureDisabled`](Self::FeatureDisabled)).
    InvalidTtl,
    /// A bucket option or call argument is invalid.
    InvalidArgument,
    /// The value is larger than the bucket's or the server's limit.
    ValueTooLarge,
    /// The bucket does not exist.
    BucketNotFound,
    /// `create_bucket` found a bucket of that name with another configuration.
    BucketExists,
    /// The server is too old for the feature (the message names the version needed).
    ServerTooOld,
    /// The bucket lacks a switch the operation needs (atomic batches, per-key TTL).
    FeatureDisabled,
    /// The server did not answer in time. The operation may or may not have taken effect.
    Timeout,
    /// The connection is down or the request could not be sent.
    Connection,
    /// Nobody answered for the bucket: it does not exist, or (in a cluster) its stream has no
    /// leader at the moment, or the server said JetStream is temporarily unavailable
    /// (`err_code` 10008). Nothing was applied. Transient during failovers; retry with backoff.
    Unavailable,
    /// A value or key could not be encoded or decoded.
    Codec,
    /// A watch could not resume: the server no longer holds the history it needs.
    HistoryGone,
    /// A read-modify-write loop gave up after its attempt limit.
    TooManyAttempts,
    /// The server returned an error this library does not classify.
    Server,
    /// A write guarded by a [`Lease`](crate::lease::Lease) was refused because the lease
    /// is no longer held (expired, taken over, released, or past its local deadline).
    LeaseLost,
    /// The server refused a publish or subscription for lack of permission; the message names
    /// the subject. Detected only on a [`Kv`](crate::Kv) built by
    /// [`Connect`](crate::Connect) (which listens for the server's permission errors), and
    /// reported as soon as the server's error arrives, within the request timeout. Not
    /// transient: retrying cannot help until an operator grants the permission. A refused
    /// write was not applied.
    PermissionDenied,
    /// A write whose acknowledgement was lost was re-sent for as long as it may be, and still
    /// nobody could say whether it took effect: it may or may not have been applied. Unlike
    /// [`Timeout`](Self::Timeout) this is the end of the recognition, not an invitation to
    /// retry: repeating the write may apply it twice. Read the data to find out. Returned by
    /// counter increments ([`Counters`](crate::Counters), [`CounterHandle`](crate::CounterHandle)).
    OutcomeUnknown,
    /// A counter increment was applied exactly once (its lost acknowledgement was recovered by
    /// re-sending it), but another write to the counter replaced the stored value before the
    /// value right after this increment could be read back. Do not repeat the increment.
    ValueUnknown,
    /// An invariant of this library broke: a bug. Please report it.
    Internal,
}

/// The operation that failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Operation {
    /// Creating, opening or changing a bucket.
    Bucket,
    /// Reading a key or revision.
    Get,
    /// `put`.
    Put,
    /// `create`.
    Create,
    /// `update`.
    Update,
    /// `delete`.
    Delete,
    /// `purge`.
    Purge,
    /// Reading a key's history or the key list.
    History,
    /// A transaction commit.
    Transaction,
    /// A watch.
    Watch,
    /// Bucket status.
    Status,
    /// A read-modify-write loop.
    ReadModifyWrite,
    /// Local validation or encoding, before any request.
    Local,
    /// Creating, renewing or releasing a lease.
    Lease,
    /// An object store operation on an object ([`object`](crate::object)).
    Object,
    /// Connecting: server URLs, credentials, TLS, `nats` contexts.
    Connect,
}

impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = match self {
            Operation::Bucket => "bucket",
            Operation::Get => "get",
            Operation::Put => "put",
            Operation::Create => "create",
            Operation::Update => "update",
            Operation::Delete => "delete",
            Operation::Purge => "purge",
            Operation::History => "history",
            Operation::Transaction => "transaction",
            Operation::Watch => "watch",
            Operation::Status => "status",
            Operation::ReadModifyWrite => "read-modify-write",
            Operation::Local => "validate",
            Operation::Lease => "lease",
            Operation::Object => "object",
            Operation::Connect => "connect",
        };
        f.write_str(s)
    }
}

type BoxError = Box<dyn StdError + Send + Sync + 'static>;

/// The error of every kvtk-core operation. One pointer wide, so `Result`s stay small.
#[derive(Debug)]
pub struct Error(Box<Repr>);

#[derive(Debug)]
struct Repr {
    kind: ErrorKind,
    op: Operation,
    key: Option<String>,
    message: String,
    server_code: Option<u64>,
    current: Option<Revision>,
    source: Option<BoxError>,
}

impl Error {
    pub(crate) fn new(kind: ErrorKind, message: impl Into<String>) -> Error {
        Error(Box::new(Repr {
            kind,
            op: Operation::Local,
            key: None,
            message: message.into(),
            server_code: None,
            current: None,
            source: None,
        }))
    }

    pub(crate) fn with_op(mut self, op: Operation) -> Error {
        self.0.op = op;
        self
    }

    pub(crate) fn with_key(mut self, key: impl Into<String>) -> Error {
        self.0.key = Some(key.into());
        self
    }

    pub(crate) fn with_code(mut self, code: u64) -> Error {
        self.0.server_code = Some(code);
        self
    }

    pub(crate) fn with_current(mut self, rev: Option<Revision>) -> Error {
        self.0.current = rev;
        self
    }

    pub(crate) fn with_source(mut self, source: impl Into<BoxError>) -> Error {
        self.0.source = Some(source.into());
        self
    }

    pub(crate) fn codec(message: String) -> Error {
        Error::new(ErrorKind::Codec, message)
    }

    pub(crate) fn invalid_argument(message: impl Into<String>) -> Error {
        Error::new(ErrorKind::InvalidArgument, message)
    }

    /// What went wrong.
    pub fn kind(&self) -> ErrorKind {
        self.0.kind
    }

    /// Which operation failed.
    pub fn operation(&self) -> Operation {
        self.0.op
    }

    /// The key the operation was about, when there was one. For a failed transaction this is
    /// the key whose expectation failed, when it could be determined.
    pub fn key(&self) -> Option<&str> {
        self.0.key.as_deref()
    }

    /// The server's `err_code`, when the server answered with an error.
    pub fn server_code(&self) -> Option<u64> {
        self.0.server_code
    }

    /// For [`ErrorKind::Conflict`] and [`ErrorKind::AlreadyExists`]: the key's revision at
    /// the time, when the server or a follow-up read told us.
    pub fn current_revision(&self) -> Option<Revision> {
        self.0.current
    }

    /// Whether this is a compare-and-set conflict.
    pub fn is_conflict(&self) -> bool {
        self.0.kind == ErrorKind::Conflict
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0.op)?;
        if let Some(k) = &self.0.key {
            write!(f, " {k:?}")?;
        }
        write!(f, ": {}", self.0.message)?;
        if let Some(c) = self.0.server_code {
            write!(f, " (err_code {c})")?;
        }
        Ok(())
    }
}

impl StdError for Error {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        self.0
            .source
            .as_ref()
            .map(|s| s.as_ref() as &(dyn StdError + 'static))
    }
}

/// Server `err_code`s we classify.
pub(crate) mod codes {
    pub(crate) const STREAM_NOT_FOUND: u64 = 10059;
    pub(crate) const STREAM_NAME_EXISTS: u64 = 10058;
    pub(crate) const MESSAGE_TOO_LARGE: u64 = 10054;
    pub(crate) const WRONG_LAST_SEQUENCE: u64 = 10071;
    pub(crate) const WRONG_LAST_SEQUENCE_CONSTANT: u64 = 10164;
    pub(crate) const TTL_INVALID: u64 = 10165;
    pub(crate) const TTL_DISABLED: u64 = 10166;
    pub(crate) const ATOMIC_DISABLED: u64 = 10174;
    pub(crate) const NO_MESSAGE_FOUND: u64 = 10037;
    /// "duplicate message id is in process": a replicated stream still proposes an earlier
    /// publish with the same `Nats-Msg-Id`; its outcome is not known yet.
    pub(crate) const DUPLICATE_IN_PROCESS: u64 = 10158;
    /// "JetStream system temporarily unavailable": the cluster is between meta or stream
    /// leaders (seen creating a consumer while the node leading the stream was killed).
    pub(crate) const TEMPORARILY_UNAVAILABLE: u64 = 10008;
    /// "no suitable peers for placement" followed by the reasons; see [`PEER_OFFLINE`].
    pub(crate) const NO_SUITABLE_PEERS: u64 = 10005;
    /// The one placement failure that passes by itself: the meta leader has no statistics
    /// from a peer yet (right after servers start or a meta leader changes) or saw it shut
    /// down (a rolling restart). Other reasons (tags, storage) are the configuration's.
    pub(crate) const PEER_OFFLINE: &str = "no suitable peers for placement, peer offline";
    /// "maximum consumers limit reached": the stream holds as many consumers as it may
    /// (nats-server 2.15 puts a stream without a limit of its own at 1,000).
    pub(crate) const MAXIMUM_CONSUMERS: u64 = 10026;
    /// What [`MAXIMUM_CONSUMERS`] adds to the server's words: the way out.
    pub(crate) const MAXIMUM_CONSUMERS_HINT: &str = "; every watch is one consumer of the \
        bucket: raise its limit (BucketUpdate::max_consumers, or `kvtk kv edit BUCKET \
        --max-consumers N`), see docs/deployment.md";
}

/// Classifies a JetStream API error answer.
pub(crate) fn from_api(code: u64, description: &str) -> Error {
    use codes::*;
    let kind = match code {
        WRONG_LAST_SEQUENCE | WRONG_LAST_SEQUENCE_CONSTANT => ErrorKind::Conflict,
        STREAM_NOT_FOUND => ErrorKind::BucketNotFound,
        STREAM_NAME_EXISTS => ErrorKind::BucketExists,
        MESSAGE_TOO_LARGE => ErrorKind::ValueTooLarge,
        TTL_INVALID => ErrorKind::InvalidTtl,
        TTL_DISABLED | ATOMIC_DISABLED => ErrorKind::FeatureDisabled,
        NO_MESSAGE_FOUND => ErrorKind::NotFound,
        TEMPORARILY_UNAVAILABLE => ErrorKind::Unavailable,
        NO_SUITABLE_PEERS if description == PEER_OFFLINE => ErrorKind::Unavailable,
        _ => ErrorKind::Server,
    };
    let mut message = description.to_string();
    if code == MAXIMUM_CONSUMERS {
        message.push_str(MAXIMUM_CONSUMERS_HINT);
    }
    let mut e = Error::new(kind, message).with_code(code);
    if kind == ErrorKind::Conflict {
        // "wrong last sequence: 42" names the key's revision; 10164 does not.
        e.0.current = description
            .rsplit(':')
            .next()
            .and_then(|n| n.trim().parse::<u64>().ok())
            .and_then(Revision::new);
    }
    e
}

/// Classifies a failed core NATS request.
pub(crate) fn from_request(err: async_nats::RequestError) -> Error {
    use async_nats::RequestErrorKind as K;
    let (kind, message) = match err.kind() {
        K::TimedOut => (ErrorKind::Timeout, "the server did not answer in time"),
        K::NoResponders => (ErrorKind::Unavailable, "nobody answered the request"),
        K::MaxPayloadExceeded => (ErrorKind::ValueTooLarge, "request too large"),
        K::InvalidSubject => (ErrorKind::InvalidKey, "invalid subject"),
        _ => (ErrorKind::Connection, "request not sent"),
    };
    // One layer in Display: the client's own text stays in `source()`.
    Error::new(kind, message).with_source(err)
}

/// Defines a recipe crate's error type: the one place the recipes' error boilerplate lives.
///
/// kvtk-locks, kvtk-leader, kvtk-config and kvtk-membership each have one `Error` with a
/// matchable `ErrorKind` of their own, a message and an optional cause. This macro writes the
/// struct and everything they share, so every recipe error behaves alike:
///
/// - the struct (with `#[derive(Debug)]`): the fields `kind`, `message`, then the extra fields
///   given (each starts as its `Default`), then `source`, a boxed
///   `dyn std::error::Error + Send + Sync`;
/// - `pub(crate) fn new(kind, message)` (no cause) and `pub(crate) fn with_source(self, cause)`;
/// - `pub fn kind()`, `pub fn core_kind()` (the kind of a [`kvtk_core::Error`](crate::Error)
///   cause) and `pub fn is_transient()` (that cause's
///   [`is_transient`](crate::Error::is_transient); `false` without one);
/// - [`Display`](std::fmt::Display) printing the message only: **one layer**, the cause is
///   reached through [`source`](std::error::Error::source) and never copied into the message;
/// - [`std::error::Error`] with `source()`, and [`Transient`](crate::Transient).
///
/// What differs between the crates stays in each crate: the `ErrorKind` enum, how a
/// `kvtk_core::Error` maps onto it (a `From` impl or a constructor with a context message),
/// and accessors for the extra fields. Write the message lowercase, without a trailing period,
/// and without the cause's text.
///
/// A macro rather than a generic `Error<K>`: each crate keeps its own nominal `Error` type
/// (its public API), its extra fields and its inherent constructors, and may implement
/// `From<kvtk_core::Error>` for it, which the orphan rule forbids for a foreign generic type.
///
/// ```
/// mod error {
///     /// What went wrong.
///     #[derive(Debug, Clone, Copy, PartialEq, Eq)]
///     pub enum ErrorKind {
///         /// A key-value operation failed.
///         Kv,
///         /// The member is gone.
///         Lost,
///     }
///
///     kvtk_core::recipe_error! {
///         /// The error of every operation of this crate.
///         pub struct Error {
///             kind: ErrorKind,
///             /// An extra field, `None` until set by the crate's own constructors.
///             member: Option<String>,
///         }
///     }
///
///     impl Error {
///         /// The member the error is about.
///         pub fn member(&self) -> Option<&str> {
///             self.member.as_deref()
///         }
///     }
///
///     impl From<kvtk_core::Error> for Error {
///         fn from(e: kvtk_core::Error) -> Error {
///             Error::new(ErrorKind::Kv, "key-value operation failed").with_source(e)
///         }
///     }
/// }
///
/// let cause = kvtk_core::Key::new("a b").unwrap_err();
/// let cause_text = cause.to_string();
/// let e = error::Error::from(cause);
/// assert_eq!(e.kind(), error::ErrorKind::Kv);
/// assert_eq!(e.member(), None);
/// assert_eq!(e.to_string(), "key-value operation failed"); // one layer
/// assert_eq!(e.core_kind(), Some(kvtk_core::ErrorKind::InvalidKey));
/// assert!(!e.is_transient());
/// let source = std::error::Error::source(&e).map(ToString::to_string);
/// assert_eq!(source, Some(cause_text));
/// ```
#[macro_export]
macro_rules! recipe_error {
    (
        $(#[$attr:meta])*
        $vis:vis struct $name:ident {
            kind: $kind:ty
            $(, $(#[$field_attr:meta])* $field:ident : $field_ty:ty)* $(,)?
        }
    ) => {
        $(#[$attr])*
        #[derive(Debug)]
        $vis struct $name {
            kind: $kind,
            message: ::std::string::String,
            $($(#[$field_attr])* $field: $field_ty,)*
            source: ::std::option::Option<
                ::std::boxed::Box<
                    dyn ::std::error::Error
                        + ::std::marker::Send
                        + ::std::marker::Sync
                        + 'static,
                >,
            >,
        }

        impl $name {
            /// An error of `kind` with a message (lowercase, no trailing period) and no cause.
            pub(crate) fn new(
                kind: $kind,
                message: impl ::std::convert::Into<::std::string::String>,
            ) -> $name {
                $name {
                    kind,
                    message: message.into(),
                    $($field: ::std::default::Default::default(),)*
                    source: ::std::option::Option::None,
                }
            }

            /// This error with `source` as its cause, reached through
            /// [`source`](std::error::Error::source) (Display does not print it).
            pub(crate) fn with_source(
                mut self,
                source: impl ::std::convert::Into<
                    ::std::boxed::Box<
                        dyn ::std::error::Error
                            + ::std::marker::Send
                            + ::std::marker::Sync
                            + 'static,
                    >,
                >,
            ) -> $name {
                self.source = ::std::option::Option::Some(source.into());
                self
            }

            /// What went wrong.
            pub fn kind(&self) -> $kind {
                self.kind
            }

            /// For errors that come from the KV layer (their cause is a
            /// [`kvtk_core::Error`]): the KV error's kind.
            pub fn core_kind(&self) -> ::std::option::Option<$crate::ErrorKind> {
                self.core().map($crate::Error::kind)
            }

            /// Whether the failure is expected to pass by itself, so that retrying may succeed
            /// (see [`kvtk_core::Error::is_transient`]); `false` for errors that do not come
            /// from the KV layer.
            pub fn is_transient(&self) -> bool {
                self.core().is_some_and($crate::Error::is_transient)
            }

            fn core(&self) -> ::std::option::Option<&$crate::Error> {
                self.source.as_deref()?.downcast_ref::<$crate::Error>()
            }
        }

        impl ::std::fmt::Display for $name {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                // One layer: the cause is reached through `source()`.
                f.write_str(&self.message)
            }
        }

        impl ::std::error::Error for $name {
            fn source(&self) -> ::std::option::Option<&(dyn ::std::error::Error + 'static)> {
                self.source
                    .as_deref()
                    .map(|e| e as &(dyn ::std::error::Error + 'static))
            }
        }

        impl $crate::Transient for $name {
            fn is_transient(&self) -> bool {
                $name::is_transient(self)
            }
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_conflicts_and_parses_revision() {
        let e = from_api(10071, "wrong last sequence: 42");
        assert_eq!(e.kind(), ErrorKind::Conflict);
        assert_eq!(e.current_revision().map(Revision::get), Some(42));
        let e = from_api(10164, "wrong last sequence");
        assert_eq!(e.kind(), ErrorKind::Conflict);
        assert_eq!(e.current_revision(), None);
        assert_eq!(from_api(1, "x").kind(), ErrorKind::Server);
        let offline = from_api(10005, "no suitable peers for placement, peer offline");
        assert_eq!(offline.kind(), ErrorKind::Unavailable);
        assert_eq!(offline.server_code(), Some(10005));
        let tags = "no suitable peers for placement, peer offline, tags not matched ['az:x']";
        assert_eq!(from_api(10005, tags).kind(), ErrorKind::Server);
        let e = from_api(10008, "JetStream system temporarily unavailable");
        assert_eq!(e.kind(), ErrorKind::Unavailable);
        assert!(e.is_transient() && !e.outcome_unknown());
        let full = from_api(10026, "maximum consumers limit reached");
        assert_eq!(full.kind(), ErrorKind::Server);
        assert!(full.to_string().contains("--max-consumers"), "{full}");
    }

    #[test]
    fn display_is_one_layer() {
        let e = from_api(10071, "wrong last sequence: 3")
            .with_op(Operation::Update)
            .with_key("k");
        assert_eq!(
            e.to_string(),
            "update \"k\": wrong last sequence: 3 (err_code 10071)"
        );
    }

    #[test]
    fn a_wrapped_cause_is_printed_once() {
        let cause = async_nats::RequestError::new(async_nats::RequestErrorKind::TimedOut);
        let cause_text = cause.to_string();
        let e = from_request(cause).with_op(Operation::Get).with_key("k");
        assert_eq!(e.kind(), ErrorKind::Timeout);
        let layers = kvtk_tests::assert_one_layer_each(&e);
        assert_eq!(layers, vec![e.to_string(), cause_text]);
    }
}
