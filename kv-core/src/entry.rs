//! Entries: one revision of one key, as read or watched.

use std::sync::Arc;
use std::time::Duration;

use async_nats::HeaderMap;
use bytes::Bytes;
use time::OffsetDateTime;

use crate::codec::Codec;
use crate::error::Error;
use crate::js::name::{
    BATCH_COMMIT, BATCH_ID, BATCH_SEQ, EXPECTED_LAST_SUBJECT_SEQ, EXPECTED_LAST_SUBJECT_SEQ_SUBJECT,
};
use crate::key::Key;
use crate::revision::{Expect, Revision};

pub(crate) const KV_OPERATION: &str = "KV-Operation";
pub(crate) const MARKER_REASON: &str = "Nats-Marker-Reason";
pub(crate) const NATS_TTL: &str = "Nats-TTL";
/// Written by a [`Lease`](crate::lease::Lease) on every write of its key:
/// `<nonce as 32 hex digits>` on the creating write, `<nonce>:<origin revision>` after it.
pub(crate) const KV_LEASE: &str = "Kv-Lease";
/// The format version of a recipe's value that is not JSON (see [`crate::format`]).
pub(crate) const KV_FORMAT: &str = "Kv-Format";

/// The header names above as async-nats names. A `&str` name that is not one of async-nats'
/// standard names is copied into a new allocation at every insert and every lookup; these
/// are made once, at compile time.
pub(crate) mod name {
    use async_nats::header::HeaderName;

    pub(crate) const KV_OPERATION: HeaderName = HeaderName::from_static(super::KV_OPERATION);
    pub(crate) const MARKER_REASON: HeaderName = HeaderName::from_static(super::MARKER_REASON);
    pub(crate) const NATS_TTL: HeaderName = HeaderName::from_static(super::NATS_TTL);
    pub(crate) const KV_LEASE: HeaderName = HeaderName::from_static(super::KV_LEASE);
    pub(crate) const KV_FORMAT: HeaderName = HeaderName::from_static(super::KV_FORMAT);
}

/// A `Kv-Format` header as read ([`Entry::format`]; see [`crate::format`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum FormatMark {
    /// A version number.
    Version(u16),
    /// A header that is no version number this library can represent.
    Unreadable,
}

impl FormatMark {
    pub(crate) fn parse(header: &str) -> FormatMark {
        header
            .trim()
            .parse()
            .map_or(FormatMark::Unreadable, FormatMark::Version)
    }
}

impl std::fmt::Display for FormatMark {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FormatMark::Version(v) => write!(f, "{v}"),
            FormatMark::Unreadable => f.write_str("(unreadable)"),
        }
    }
}

/// What a revision did to its key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Op {
    /// A value was written.
    Put,
    /// The key was deleted (a tombstone; history is kept).
    Delete,
    /// The key was purged, explicitly or by the server (TTL expiry, limits).
    Purge,
}

/// Why a key is gone, for `Delete` and `Purge` entries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Removal {
    /// An explicit `delete`.
    Deleted,
    /// An explicit `purge`.
    Purged,
    /// The key's per-key TTL (or the bucket's max age) ran out: a server expiry marker.
    Expired,
    /// The server removed it for another reason (stream limits, message removal).
    Removed,
}

/// One revision of one key.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub(crate) bucket: Arc<str>,
    pub(crate) key: Key,
    pub(crate) value: Bytes,
    pub(crate) revision: Revision,
    pub(crate) created: OffsetDateTime,
    pub(crate) delta: u64,
    pub(crate) op: Op,
    pub(crate) removal: Option<Removal>,
    pub(crate) ttl: Option<Duration>,
    pub(crate) batch: Option<Batch>,
    /// Boxed: most entries carry none, and `Entry` travels inside every watch event.
    pub(crate) lease: Option<Box<LeaseTag>>,
    /// The state of its own key the write was conditional on (see [`Entry::expected`]).
    pub(crate) expected: Option<Expect>,
    /// The `Kv-Format` header (see [`Entry::format`]); small, to keep `Entry` small.
    pub(crate) format: Option<FormatMark>,
}

/// The mark a [`Lease`](crate::lease::Lease) leaves on each write of its key: which lease
/// wrote it, and the revision of the write that created that lease (its fencing token).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct LeaseTag {
    pub(crate) nonce: u128,
    pub(crate) origin: Revision,
    pub(crate) completed: bool,
}

impl LeaseTag {
    /// The revision of the write that created the lease: lock tickets and leader terms.
    /// Never above the revision of the entry carrying the tag (a forged larger value is
    /// clamped to it), so one bad writer cannot pin a fence to an unreachable token.
    pub fn origin(&self) -> Revision {
        self.origin
    }

    /// The lease's random identity.
    pub fn nonce(&self) -> u128 {
        self.nonce
    }

    /// Whether this is the tombstone of a release marked
    /// [`completed`](crate::lease::Release::completed): the lease did its work to the end
    /// (a lock holder's release), rather than being given up (a waiter leaving the queue).
    pub fn completed(&self) -> bool {
        self.completed
    }

    pub(crate) fn header_value(nonce: u128, origin: Option<Revision>) -> String {
        // Room for a completed release's suffix too: appending it does not grow the string.
        let mut s = String::with_capacity(TAG_CAPACITY);
        // `{nonce:032x}:{origin}`, without the formatting machinery: two tags per lock and
        // release.
        let mut hex = [0u8; 32];
        for (half, digits) in [(nonce >> 64) as u64, nonce as u64]
            .into_iter()
            .zip(hex.chunks_mut(16))
        {
            for (i, d) in digits.iter_mut().enumerate() {
                *d = HEX[(half >> (60 - 4 * i)) as usize & 0xf];
            }
        }
        // ASCII digits: always UTF-8.
        s.push_str(std::str::from_utf8(&hex).unwrap_or_default());
        if let Some(o) = origin {
            s.push(':');
            crate::revision::push_decimal(&mut s, o.get());
        }
        s
    }
}

const HEX: &[u8; 16] = b"0123456789abcdef";

/// The longest `Kv-Lease` value: 32 hex digits, `:`, a revision (at most 20 digits) and
/// [`COMPLETED`].
const TAG_CAPACITY: usize = 32 + 1 + 20 + COMPLETED.len();

/// The `Kv-Lease` value of a completed release's tombstone: `<nonce>:<origin>:done`.
pub(crate) const COMPLETED: &str = ":done";

/// The expectation on its own key a stored write carried: the server keeps the publish's
/// `Nats-Expected-Last-Subject-Sequence` header (0: no message). One about another subject
/// (`…-Subject` present) says nothing about this key.
fn expected_of(headers: Option<&HeaderMap>) -> Option<Expect> {
    let h = headers?;
    if h.get(EXPECTED_LAST_SUBJECT_SEQ_SUBJECT).is_some() {
        return None;
    }
    let seq = h
        .get(EXPECTED_LAST_SUBJECT_SEQ)?
        .as_str()
        .parse::<u64>()
        .ok()?;
    Some(Revision::new(seq).map_or(Expect::NoMessage, Expect::Revision))
}

/// Reads the lease mark of a message at `revision`.
fn lease_of(headers: Option<&HeaderMap>, revision: Revision) -> Option<Box<LeaseTag>> {
    let v = headers?.get(name::KV_LEASE)?.as_str();
    let (v, completed) = match v.strip_suffix(COMPLETED) {
        Some(v) => (v, true),
        None => (v, false),
    };
    let (nonce, origin) = match v.split_once(':') {
        Some((n, o)) => (n, o.parse::<u64>().ok().and_then(Revision::new)?),
        None => (v, revision),
    };
    Some(Box::new(LeaseTag {
        nonce: u128::from_str_radix(nonce, 16).ok()?,
        origin: origin.min(revision),
        completed,
    }))
}

/// Where an entry sits in the transaction (atomic batch) that wrote it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Batch {
    /// The transaction's id, the same on all its entries.
    pub id: String,
    /// 1-based position in the transaction.
    pub sequence: u64,
    /// Whether this is the transaction's last write. Entries of one transaction have
    /// contiguous revisions, so a reader that has seen the entry with `commit` has seen the
    /// whole transaction (if its filter covers every key the transaction wrote).
    pub commit: bool,
}

impl Entry {
    /// The entry a message of `key` stored at `revision` makes: what the write did (operation,
    /// removal, TTL, transaction, lease mark, expectation) is read from its headers. Its
    /// [`delta`](Entry::delta) is 0, as for a read; a watch sets its own.
    pub(crate) fn from_stored(
        bucket: Arc<str>,
        key: Key,
        revision: Revision,
        created: OffsetDateTime,
        headers: Option<&HeaderMap>,
        value: Bytes,
    ) -> Entry {
        let (op, removal, ttl) = classify(headers);
        Entry {
            bucket,
            key,
            value,
            revision,
            created,
            delta: 0,
            op,
            removal,
            ttl,
            batch: batch_of(headers),
            lease: lease_of(headers, revision),
            expected: expected_of(headers),
            format: headers
                .and_then(|h| h.get(name::KV_FORMAT))
                .map(|v| FormatMark::parse(v.as_str())),
        }
    }

    /// The bucket name.
    pub fn bucket(&self) -> &str {
        &self.bucket
    }
    /// The key.
    pub fn key(&self) -> &Key {
        &self.key
    }
    /// The raw value (empty for deletes and purges, and for metadata-only watches).
    pub fn value(&self) -> &Bytes {
        &self.value
    }
    /// The revision.
    pub fn revision(&self) -> Revision {
        self.revision
    }
    /// When the server stored this revision, by the server's clock. Informational only: never
    /// compare it with a local clock to judge expiry.
    pub fn created(&self) -> OffsetDateTime {
        self.created
    }
    /// For watched entries: how many more messages the watch had pending after this one when
    /// it was delivered. 0 for reads.
    pub fn delta(&self) -> u64 {
        self.delta
    }
    /// What this revision did.
    pub fn operation(&self) -> Op {
        self.op
    }
    /// Why the key is gone, for `Delete` and `Purge` entries.
    pub fn removal(&self) -> Option<Removal> {
        self.removal
    }
    /// Whether this revision is a live value (not a tombstone or marker).
    pub fn is_value(&self) -> bool {
        self.op == Op::Put
    }
    /// The per-key TTL this revision was written with, if any.
    pub fn ttl(&self) -> Option<Duration> {
        self.ttl
    }
    /// The transaction this entry was written by, if any. A watcher that must never observe
    /// half a transaction applies entries when it sees the one with `commit` set.
    ///
    /// Always `None` on a mirror: the server strips the batch headers from what it copies
    /// (see [`ReadOnlyBucket::mirror_of`](crate::ReadOnlyBucket::mirror_of)).
    pub fn batch(&self) -> Option<&Batch> {
        self.batch.as_ref()
    }
    /// The mark of the [`Lease`](crate::lease::Lease) that wrote this revision, if one did.
    pub fn lease(&self) -> Option<LeaseTag> {
        self.lease.as_deref().copied()
    }
    /// The state of its key this write was conditional on, when it was (a compare-and-set,
    /// a `create`, every lease write): the server stores the expectation with the message.
    /// A watcher that last saw the key at an older revision than [`Expect::Revision`] names
    /// missed the revisions between — replaced by the history limit before its consumer
    /// reached them (see [`crate::watch`], "Pacing"). `None` for an unconditional write, and
    /// on a mirror, which strips expectations.
    pub fn expected(&self) -> Option<Expect> {
        self.expected
    }
    /// The format version a recipe wrote into the `Kv-Format` header (for values that are
    /// not JSON; [`crate::format::check_header`] judges it). `None`: no such header.
    pub fn format(&self) -> Option<FormatMark> {
        self.format
    }
    /// Decodes the value with `codec`.
    pub fn decode<T, C: Codec<T>>(&self, codec: &C) -> Result<T, Error> {
        codec
            .decode(&self.value)
            .map_err(|e| e.with_key(self.key.as_str()))
    }
}

/// Reads operation, removal reason and TTL from a KV message's headers.
pub(crate) fn classify(headers: Option<&HeaderMap>) -> (Op, Option<Removal>, Option<Duration>) {
    let Some(h) = headers else {
        return (Op::Put, None, None);
    };
    let ttl = h.get(name::NATS_TTL).and_then(|v| parse_ttl(v.as_str()));
    if let Some(reason) = h.get(name::MARKER_REASON) {
        let removal = match reason.as_str() {
            "MaxAge" => Removal::Expired,
            "Purge" => Removal::Purged,
            _ => Removal::Removed,
        };
        return (Op::Purge, Some(removal), ttl);
    }
    match h.get(name::KV_OPERATION).map(|v| v.as_str()) {
        Some("DEL") => (Op::Delete, Some(Removal::Deleted), ttl),
        Some("PURGE") => (Op::Purge, Some(Removal::Purged), ttl),
        _ => (Op::Put, None, ttl),
    }
}

/// Reads the atomic-batch headers the server keeps on each message of a batch.
fn batch_of(headers: Option<&HeaderMap>) -> Option<Batch> {
    let h = headers?;
    let id = h.get(BATCH_ID)?.as_str().to_string();
    let sequence = h.get(BATCH_SEQ)?.as_str().parse().ok()?;
    let commit = h.get(BATCH_COMMIT).is_some();
    Some(Batch {
        id,
        sequence,
        commit,
    })
}

/// Parses a `Nats-TTL` value: `"5s"`, `"1m"`, `"2h"` or plain seconds; `"never"` is none.
fn parse_ttl(s: &str) -> Option<Duration> {
    let s = s.trim();
    if let Ok(n) = s.parse::<u64>() {
        return Some(Duration::from_secs(n));
    }
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit())?);
    let n: u64 = num.parse().ok()?;
    let secs = match unit {
        "s" => n,
        "m" => n.checked_mul(60)?,
        "h" => n.checked_mul(3600)?,
        _ => return None,
    };
    Some(Duration::from_secs(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classify_headers() {
        assert_eq!(classify(None).0, Op::Put);
        let mut h = HeaderMap::new();
        h.insert(KV_OPERATION, "DEL");
        assert_eq!(classify(Some(&h)).1, Some(Removal::Deleted));
        let mut h = HeaderMap::new();
        h.insert(MARKER_REASON, "MaxAge");
        h.insert(NATS_TTL, "3s");
        let (op, rm, ttl) = classify(Some(&h));
        assert_eq!(
            (op, rm, ttl),
            (
                Op::Purge,
                Some(Removal::Expired),
                Some(Duration::from_secs(3))
            )
        );
    }

    proptest::proptest! {
        #[test]
        fn ttls_never_panic_and_round_trip(s in "\\PC{0,12}", n in 0u64..1_000_000) {
            let _ = parse_ttl(&s);
            proptest::prop_assert_eq!(parse_ttl(&format!("{n}s")), Some(Duration::from_secs(n)));
            proptest::prop_assert_eq!(parse_ttl(&format!("{n}m")), Some(Duration::from_secs(n * 60)));
            proptest::prop_assert_eq!(parse_ttl(&n.to_string()), Some(Duration::from_secs(n)));
        }

        #[test]
        fn lease_tags_are_the_formatted_ones(nonce: u128, origin in proptest::option::of(1u64..)) {
            let origin = origin.and_then(Revision::new);
            let formatted = match origin {
                Some(o) => format!("{nonce:032x}:{o}"),
                None => format!("{nonce:032x}"),
            };
            proptest::prop_assert_eq!(LeaseTag::header_value(nonce, origin), formatted);
        }

        #[test]
        fn any_headers_classify(op in "\\PC{0,8}", reason in proptest::option::of("\\PC{0,8}")) {
            let mut h = HeaderMap::new();
            h.insert(KV_OPERATION, op.as_str());
            if let Some(r) = &reason {
                h.insert(MARKER_REASON, r.as_str());
            }
            let (got, removal, _) = classify(Some(&h));
            proptest::prop_assert_eq!(got == Op::Put, removal.is_none());
        }
    }

    #[test]
    fn ttl_parsing() {
        assert_eq!(parse_ttl("7"), Some(Duration::from_secs(7)));
        assert_eq!(parse_ttl("2m"), Some(Duration::from_secs(120)));
        assert_eq!(parse_ttl("never"), None);
        assert_eq!(parse_ttl(""), None);
    }
}
