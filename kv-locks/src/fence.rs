//! Fencing: how a protected resource rejects writes from a holder that lost the lock.
//!
//! A lease can only promise mutual exclusion as long as the holder's process does not pause
//! for longer than the margin at the wrong moment (GC, SIGSTOP, a blocked runtime, a slow
//! disk): a holder can always be *about to* write when it loses the lock. The resource closes
//! that gap by checking the holder's [`Token`]: tokens increase from holder to holder, so a
//! write carrying a token below the highest one seen comes from a stale holder.

use std::sync::Mutex as StdMutex;

use bytes::Bytes;
use kvtk_core::{Bucket, Expect, Revision};

use crate::error::{Error, ErrorKind};
use crate::token::Token;

fn stale(token: Token, highest: u64) -> Error {
    Error::new(
        ErrorKind::StaleToken,
        format!("fencing token {token} is stale: a holder with token {highest} has written"),
    )
}

/// An in-memory fencing validator, for a resource living in one process. Thread-safe.
///
/// ```
/// use kvtk_locks::{ErrorKind, Fence, Token};
/// let fence = Fence::new();
/// let (t5, t7) = (Token::from_u64(5).unwrap(), Token::from_u64(7).unwrap());
/// assert!(fence.admit(t5).is_ok());
/// assert!(fence.admit(t7).is_ok());
/// assert_eq!(fence.admit(t5).unwrap_err().kind(), ErrorKind::StaleToken);
/// // check and write atomically:
/// let mut data = Vec::new();
/// fence.with(t7, || data.push("written under token 7")).unwrap();
/// ```
#[derive(Debug, Default)]
pub struct Fence {
    highest: StdMutex<u64>,
}

impl Fence {
    /// A fence that has seen no token.
    pub fn new() -> Fence {
        Fence::default()
    }

    /// Accepts `token` if it is at least the highest seen (and remembers it), else fails
    /// with [`ErrorKind::StaleToken`].
    pub fn admit(&self, token: Token) -> Result<(), Error> {
        self.with(token, || ())
    }

    /// Admits `token` and runs `write` while no other admission can happen: the check and
    /// the protected write are atomic with respect to other holders using this fence.
    pub fn with<R>(&self, token: Token, write: impl FnOnce() -> R) -> Result<R, Error> {
        let mut h = self.highest.lock().unwrap_or_else(|p| p.into_inner());
        if token.get() < *h {
            return Err(stale(token, *h));
        }
        *h = token.get();
        Ok(write())
    }

    /// The highest token admitted so far.
    pub fn highest(&self) -> Option<Token> {
        Token::from_u64(*self.highest.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

/// A fencing validator kept in a KV key, shared by every process that writes the resource.
///
/// [`write`](KvFence::write) checks the token and writes the data in one transaction; the
/// fence key holds the highest admitted token.
#[derive(Debug, Clone)]
pub struct KvFence {
    bucket: Bucket,
    key: String,
}

impl KvFence {
    /// A fence stored under `key` of `bucket` (which must allow atomic batches for
    /// [`write`](KvFence::write)).
    pub fn new(bucket: Bucket, key: impl Into<String>) -> KvFence {
        KvFence {
            bucket,
            key: key.into(),
        }
    }

    async fn current(&self) -> Result<(u64, Option<Revision>, bool), Error> {
        match self.bucket.get_from_leader(&self.key).await? {
            Some(e) => {
                let n = std::str::from_utf8(e.value())
                    .ok()
                    .and_then(|t| t.parse::<u64>().ok())
                    .unwrap_or(0);
                Ok((n, Some(e.revision()), e.is_value()))
            }
            None => Ok((0, None, false)),
        }
    }

    /// Admits `token` (CAS on the fence key, so admissions are linearized), or fails with
    /// [`ErrorKind::StaleToken`].
    ///
    /// # Cancel safety
    /// Not cancel safe: the fence may have been raised even if the future is dropped.
    pub async fn admit(&self, token: Token) -> Result<(), Error> {
        self.write_inner(token, None).await.map(|_| ())
    }

    /// Writes `value` under `key` together with the fence check, atomically: either the
    /// token is admitted and the data written, or nothing happens.
    ///
    /// # Cancel safety
    /// Not cancel safe: the write may be applied even if the future is dropped.
    pub async fn write(
        &self,
        token: Token,
        key: &str,
        value: impl Into<Bytes>,
    ) -> Result<Revision, Error> {
        self.write_inner(token, Some((key, value.into())))
            .await?
            .ok_or_else(|| Error::new(ErrorKind::Kv, "transaction returned no revision"))
    }

    async fn write_inner(
        &self,
        token: Token,
        data: Option<(&str, Bytes)>,
    ) -> Result<Option<Revision>, Error> {
        for _ in 0..16 {
            let (highest, rev, _) = self.current().await?;
            if token.get() < highest {
                return Err(stale(token, highest));
            }
            let v = token.get().to_string();
            let res = match &data {
                None => match rev {
                    Some(r) => self.bucket.update(&self.key, v, r).await.map(Some),
                    None => self
                        .bucket
                        .put(&self.key, v)
                        .expect(Expect::NoMessage)
                        .await
                        .map(Some),
                },
                Some((k, d)) => {
                    let txn = self.bucket.txn();
                    let txn = match rev {
                        Some(r) => txn.update(&self.key, v, r),
                        None => txn.create(&self.key, v),
                    };
                    txn.put(k, d.clone()).commit().await.map(|c| c.revision(k))
                }
            };
            match res {
                Ok(r) => return Ok(r),
                Err(e) if e.is_conflict() || e.kind() == kvtk_core::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(e.into()),
            }
        }
        Err(Error::new(
            ErrorKind::Kv,
            "fence key kept changing: too much contention",
        ))
    }
}
