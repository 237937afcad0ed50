//! [`Sessions`]: an owner's current session, made when first needed and replaced once it
//! ended, so that a recipe binds its entries to one session per owner.

use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::Mutex;

use super::clock::LeaseConfig;
use super::create::CreateLease;
use super::keeper::Keeper;
use super::session::Session;
use crate::error::Error;
use crate::key::KeyArg;

/// One owner's session (per [`Keeper`]): [`current`](Sessions::current) makes it on first
/// use and a new one after it ended (its entries ended with it). Cheap to clone; the clones
/// share the session, which is closed in the background when the last clone and the last
/// [`Arc`] handed out are dropped.
///
/// ```no_run
/// # async fn demo(bucket: kvtk_core::Bucket) -> Result<(), kvtk_core::Error> {
/// use std::time::Duration;
/// use kvtk_core::lease::{Keeper, LeaseConfig, Sessions};
/// let keeper = Keeper::new(&bucket, LeaseConfig::new(Duration::from_secs(10))?)?;
/// let sessions = Sessions::new(&keeper, keeper.config()).name("worker-7");
/// // 10,000 entries, one renewal write per renewal interval in all:
/// let mut held = Vec::new();
/// for i in 0..10_000 {
///     held.push(sessions.bind(format!("jobs.{i}"), "mine").await?);
/// }
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct Sessions {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    keeper: Keeper,
    config: LeaseConfig,
    name: Option<String>,
    current: Mutex<Option<Arc<Session>>>,
}

impl Sessions {
    /// Sessions renewed by `keeper`, with `config` as their timing.
    pub fn new(keeper: &Keeper, config: LeaseConfig) -> Sessions {
        Sessions::named(keeper, config, None)
    }

    /// A label for people in the session key's value (e.g. `host/pid`). Only before the
    /// first session is made (a builder step on a fresh value).
    pub fn name(self, name: impl Into<String>) -> Sessions {
        Sessions::named(&self.inner.keeper, self.inner.config, Some(name.into()))
    }

    fn named(keeper: &Keeper, config: LeaseConfig, name: Option<String>) -> Sessions {
        Sessions {
            inner: Arc::new(Inner {
                keeper: keeper.clone(),
                config,
                name,
                current: Mutex::new(None),
            }),
        }
    }

    /// The sessions' timing.
    pub fn config(&self) -> LeaseConfig {
        self.inner.config
    }

    /// The current session: the one made before if it is still alive (its owner's view:
    /// no loss signalled, deadline not passed), else a new one.
    ///
    /// # Cancel safety
    /// Not cancel safe: a session key may be created although the future was dropped; it
    /// then expires after its TTL, as nobody renews it.
    pub async fn current(&self) -> Result<Arc<Session>, Error> {
        let mut current = self.inner.current.lock().await;
        if let Some(s) = current.as_ref().filter(|s| s.is_alive()) {
            return Ok(s.clone());
        }
        let mut create = self.inner.keeper.session().config(self.inner.config);
        if let Some(n) = &self.inner.name {
            create = create.name(n.clone());
        }
        let session = Arc::new(create.await?);
        *current = Some(session.clone());
        Ok(session)
    }

    /// The current session if it is alive and nobody is making one right now: the fast path
    /// of [`current`](Self::current), without waiting (`None`: call `current`).
    pub fn try_current(&self) -> Option<Arc<Session>> {
        let current = self.inner.current.try_lock().ok()?;
        current.as_ref().filter(|s| s.is_alive()).cloned()
    }

    /// Binds `value` under `key` to the current session: [`Session::bind`] on
    /// [`current`](Self::current).
    ///
    /// # Cancel safety
    /// Not cancel safe: the session's creation or the binding may be applied although the
    /// future was dropped; the keeper then removes the bound entry in the background (see
    /// [`CreateLease`]'s cancel safety).
    pub async fn bind(
        &self,
        key: impl Into<KeyArg>,
        value: impl Into<Bytes>,
    ) -> Result<super::Lease, Error> {
        self.current().await?.bind(key, value).await
    }

    /// A creation builder bound to the current session ([`Session::bind`]), for callers
    /// that add expectations before awaiting it.
    ///
    /// # Cancel safety
    /// Not cancel safe: the session's creation may be applied although the future was
    /// dropped.
    pub async fn binding(
        &self,
        key: impl Into<KeyArg>,
        value: impl Into<Bytes>,
    ) -> Result<CreateLease, Error> {
        Ok(self.current().await?.bind(key, value))
    }
}
