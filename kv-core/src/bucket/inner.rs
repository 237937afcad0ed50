//! [`Inner`]: what every handle on one opened bucket shares — its connection, names and
//! subject prefixes — and the one-message reads and writes that bucket handles, transactions,
//! watches and leases are built on.

use std::future::Future;

use async_nats::jetstream::stream;
use async_nats::{HeaderMap, Subject};
use bytes::Bytes;
use futures::future::Either;
use futures::FutureExt as _;

use crate::entry::{classify, name, Entry, Op};
use crate::error::{Error, ErrorKind};
use crate::js::name::{EXPECTED_LAST_SUBJECT_SEQ, EXPECTED_LAST_SUBJECT_SEQ_SUBJECT, ROLLUP};
use crate::js::{Js, StoredMsg};
use crate::key::{check_str, Key};
use crate::revision::{Expect, Revision, Ttl};
use crate::version::ServerVersion;

/// How often `create` re-reads and retries when the key's tombstone keeps changing under it.
const CREATE_ATTEMPTS: usize = 5;

/// What a write carries besides its operation, expectation and TTL: a lease's mark
/// (`Kv-Lease`) and a recipe's format version (`Kv-Format`, see [`crate::format`]).
#[derive(Debug, Clone, Default)]
pub(crate) struct Marks {
    pub(crate) lease: Option<String>,
    pub(crate) format: Option<u32>,
}

/// The subject a key is written on, `<write prefix><key>`, made once from the checked key:
/// a write's key costs no allocation of its own, and its request shares these bytes.
#[derive(Debug, Clone)]
pub(crate) struct WriteSubject {
    subject: Subject,
    key_at: usize,
}

impl WriteSubject {
    /// The key alone.
    pub(crate) fn key(&self) -> &str {
        self.subject.get(self.key_at..).unwrap_or_default()
    }
}

/// Shared state of a bucket handle.
#[derive(Debug, Clone)]
pub(crate) struct Inner {
    pub(crate) js: Js,
    pub(crate) name: String,
    /// The name again, shared by every entry read from this bucket (no copy per entry).
    pub(crate) shared_name: std::sync::Arc<str>,
    pub(crate) stream: String,
    pub(crate) read_prefix: String,
    pub(crate) write_prefix: String,
    pub(crate) direct: bool,
    pub(crate) atomic: bool,
    /// The origin's stream (`KV_<origin>`) when the bucket is a mirror.
    pub(crate) mirror_of: Option<String>,
}

impl Inner {
    /// The entry a message read back from the stream makes; `None` for a message that is
    /// no key's (not under `$KV.`).
    pub(crate) fn entry_from(&self, m: StoredMsg) -> Option<Entry> {
        let key = Key::from_subject(&m.subject)?;
        let revision = Revision::new(m.seq)?;
        let name = self.shared_name.clone();
        let headers = m.headers.as_ref();
        Some(Entry::from_stored(
            name, key, revision, m.time, headers, m.payload,
        ))
    }

    /// The info (configuration and state) of the bucket's stream, fresh from the server.
    pub(crate) async fn stream_info(&self) -> Result<stream::Info, Error> {
        self.js.stream_info(&self.stream).await
    }

    /// The last message of `key`: a direct get when the bucket allows it (any replica may
    /// answer), else the stream leader's.
    pub(crate) async fn last_msg(&self, key: &Key) -> Result<Option<StoredMsg>, Error> {
        let subject = format!("{}{}", self.read_prefix, key);
        if self.direct {
            self.js.direct_last(&self.stream, &subject).await
        } else {
            self.leader_last(key).await
        }
    }

    /// The last message of `key`, as the stream leader has it: never stale.
    pub(crate) async fn leader_last(&self, key: &Key) -> Result<Option<StoredMsg>, Error> {
        let subject = format!("{}{}", self.read_prefix, key);
        self.js
            .leader_get(&self.stream, serde_json::json!({ "last_by_subj": subject }))
            .await
    }

    /// The latest revision of `key` as the stream leader sees it.
    pub(crate) async fn leader_entry(&self, key: &Key) -> Result<Option<Revision>, Error> {
        Ok(self
            .leader_last(key)
            .await?
            .and_then(|m| Revision::new(m.seq)))
    }

    /// The subject `key` is written on, once it is checked as a key.
    pub(crate) fn write_subject(&self, key: &str) -> Result<WriteSubject, Error> {
        check_str(key, false)?;
        Ok(self.key_subject(key))
    }

    /// The subject a key that was checked already is written on (a [`Key`] is valid).
    pub(crate) fn key_subject(&self, key: &str) -> WriteSubject {
        WriteSubject {
            subject: Subject::from(self.subject_of(key)),
            key_at: self.write_prefix.len(),
        }
    }

    /// The subject of `filter` (a key or a key filter) for an expectation on it, once it is
    /// checked as a filter.
    pub(crate) fn expect_subject(&self, filter: &str) -> Result<String, Error> {
        check_str(filter, true)?;
        Ok(self.subject_of(filter))
    }

    /// `<write prefix><key>`, allocated once at its length (so that a [`Subject`] made of
    /// it takes the bytes over without copying them).
    pub(crate) fn subject_of(&self, key: &str) -> String {
        let mut subject = String::with_capacity(self.write_prefix.len() + key.len());
        subject.push_str(&self.write_prefix);
        subject.push_str(key);
        subject
    }

    /// Sends one write on `subject`; an expectation may apply to another key or a filter
    /// (`expect_on`: its subject). The headers are made here, before the future, which
    /// then holds no more than the request's.
    #[allow(
        clippy::too_many_arguments,
        reason = "one private call site per write kind"
    )]
    pub(crate) fn write_on(
        &self,
        op: Op,
        subject: &WriteSubject,
        value: Bytes,
        expect: Option<Expect>,
        expect_on: Option<String>,
        ttl: Option<Ttl>,
        marks: Marks,
    ) -> impl Future<Output = Result<Revision, Error>> + Send + '_ {
        match self.write_headers(op, expect, expect_on, ttl, marks) {
            Ok(headers) => Either::Left(
                self.js
                    .publish(subject.subject.clone(), headers, value)
                    .map(|ack| ack.and_then(|a| acked_revision(a.seq))),
            ),
            Err(e) => Either::Right(std::future::ready(Err(e))),
        }
    }

    /// The headers of one write: its operation, its expectation (on the written key, or on
    /// `expect_on`: the subject of another key or a filter), its TTL and its marks. A plain
    /// put has none. Names are async-nats constants and values are moved in, not copied.
    pub(crate) fn write_headers(
        &self,
        op: Op,
        expect: Option<Expect>,
        expect_on: Option<String>,
        ttl: Option<Ttl>,
        marks: Marks,
    ) -> Result<HeaderMap, Error> {
        let mut h = HeaderMap::new();
        // The order of insertion decides nothing on the wire (a hash map), but the map grows
        // at its fourth entry and hashes the first three again: async-nats' standard names
        // (quick to hash) and the short ones go first, the 43-byte expectation name last.
        if let Some(e) = expect {
            h.insert(EXPECTED_LAST_SUBJECT_SEQ, e.header_value().to_string());
        }
        if let Some(t) = ttl {
            self.js
                .server_version()
                .require(ServerVersion::PER_KEY_TTL, "per-key TTL")?;
            h.insert(name::NATS_TTL, t.header_value());
        }
        if let Some(tag) = marks.lease {
            h.insert(name::KV_LEASE, tag);
        }
        match op {
            Op::Put => {}
            Op::Delete => h.insert(name::KV_OPERATION, "DEL"),
            Op::Purge => {
                h.insert(name::KV_OPERATION, "PURGE");
                h.insert(ROLLUP, "sub");
            }
        }
        if let Some(v) = marks.format {
            h.insert(name::KV_FORMAT, v.to_string());
        }
        if let Some(subject) = expect_on {
            h.insert(EXPECTED_LAST_SUBJECT_SEQ_SUBJECT, subject);
        }
        Ok(h)
    }

    /// `create`: only if the key holds no live value. Over a tombstone or expiry marker it
    /// writes with the tombstone's revision as the expectation, keeping the TTL.
    pub(crate) async fn create(
        &self,
        subject: WriteSubject,
        value: Bytes,
        ttl: Option<Ttl>,
        format: Option<u32>,
    ) -> Result<Revision, Error> {
        let mut expect = Expect::NoMessage;
        let marks = Marks {
            lease: None,
            format,
        };
        for _ in 0..CREATE_ATTEMPTS {
            let (v, m) = (value.clone(), marks.clone());
            match self
                .write_on(Op::Put, &subject, v, Some(expect), None, ttl, m)
                .await
            {
                Ok(rev) => return Ok(rev),
                Err(e) if e.is_conflict() => {}
                Err(e) => return Err(e),
            }
            // Something is there. A live value means "exists"; a tombstone may be replaced.
            // The leader answers, so a lagging replica cannot show us a stale tombstone.
            match self.leader_last(&Key::new(subject.key())?).await? {
                None => expect = Expect::NoMessage,
                Some(m) => {
                    let (op, _, _) = classify(m.headers.as_ref());
                    let rev = Revision::new(m.seq);
                    if op == Op::Put {
                        return Err(Error::new(ErrorKind::AlreadyExists, "key already exists")
                            .with_current(rev));
                    }
                    expect = rev.map(Expect::Revision).unwrap_or(Expect::NoMessage);
                }
            }
        }
        Err(Error::new(
            ErrorKind::Conflict,
            "key kept changing while creating it",
        ))
    }
}

/// The revision a publish acknowledgement gives (sequence 0 is no revision).
fn acked_revision(seq: u64) -> Result<Revision, Error> {
    Revision::new(seq)
        .ok_or_else(|| Error::new(ErrorKind::Server, "server acknowledged sequence 0"))
}
