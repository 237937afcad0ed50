//! The checks of a handle against its lock: its kind against the entries queued (a
//! semaphore never shares a name with a mutex or read-write lock), its permit count against
//! the stored one, and a lease TTL against the bucket's marker TTL.

use std::future::IntoFuture as _;
use std::time::Duration;

use crate::error::{Error, ErrorKind};
use crate::queue::{view, View};
use crate::shared::Shared;

/// Refuses a lease TTL longer than the bucket's marker TTL.
pub(crate) fn check_marker(ttl: Duration, marker: Duration) -> Result<(), Error> {
    if ttl > marker {
        return Err(Error::new(
            ErrorKind::InvalidTtl,
            format!("lock ttl {ttl:?} exceeds the bucket's marker ttl {marker:?}"),
        ));
    }
    Ok(())
}

/// Stores the permit count (first user) or checks it against the stored one.
pub(crate) async fn ensure_permits(s: &Shared) -> Result<(), Error> {
    let Some(permits) = s.permits() else {
        return Ok(());
    };
    // Refuse before storing a count, so a mistaken handle leaves the name usable.
    let v = view(s, None).await?;
    check_kind(s, &v)?;
    // A stored count never changes (it is only ever created), so any replica's copy of it
    // is the count: no write and no leader read when it is there already.
    if let Some(stored) = v.permits.as_ref().filter(|e| e.is_value()) {
        return mismatch(s, stored_permits(stored)?);
    }
    let key = s.name.permits_key();
    // Transient failures are ridden out like every step of a wait (chaos found semaphore
    // acquisitions failing at once on "no responders" after a node restart). A create whose
    // outcome was unknown and that did land finds its own count next time: no mismatch.
    let retry = kvtk_core::Backoff::DEFAULT;
    let create = || {
        let count = s.bucket.create(&key, permits.to_string());
        count.format(kvtk_core::format::RECIPE_FORMAT).into_future()
    };
    match retry.retry(create).await {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == kvtk_core::ErrorKind::AlreadyExists => {
            let stored = retry.retry(|| s.bucket.get_from_leader(&key)).await?;
            mismatch(
                s,
                stored.as_ref().map(stored_permits).transpose()?.flatten(),
            )
        }
        Err(e) => Err(e.into()),
    }
}

/// A stored permit count (decimal text, format version in its `Kv-Format` header): `None`
/// when unreadable, an error when of a format version this library does not know.
pub(crate) fn stored_permits(e: &kvtk_core::Entry) -> Result<Option<u32>, kvtk_core::Error> {
    kvtk_core::format::check_header(e, "semaphore permit count")?;
    Ok(std::str::from_utf8(e.value())
        .ok()
        .and_then(|t| t.trim().parse::<u32>().ok()))
}

/// A semaphore's permit count must agree with the bucket's, and a mutex or read-write lock
/// must not share a name with a semaphore.
fn mismatch(s: &Shared, stored: Option<u32>) -> Result<(), Error> {
    let mine = s.permits().unwrap_or(1);
    if stored.unwrap_or(1) == mine {
        return Ok(());
    }
    Err(Error::new(
        ErrorKind::PermitMismatch,
        format!(
            "lock {} has {} permits in the bucket, this handle expects {}",
            s.name,
            stored.map_or_else(|| "an unreadable number of".to_string(), |n| n.to_string()),
            mine
        ),
    ))
}

/// Checks the queued entries and the stored permit count of a view against the handle's kind.
pub(crate) fn check_kind(s: &Shared, v: &View) -> Result<(), Error> {
    if v.mixes_with(s.kind) {
        return Err(Error::new(
            ErrorKind::PermitMismatch,
            format!(
                "lock {} is in use as a {}, this handle is not",
                s.name,
                if s.permits().is_some() {
                    "mutex or read-write lock"
                } else {
                    "semaphore"
                }
            ),
        ));
    }
    match &v.permits {
        Some(e) if e.is_value() => mismatch(s, stored_permits(e)?),
        _ => Ok(()),
    }
}
