//! [`Sweeps`]: the keys on which a keeper is removing the entry of an abandoned bound
//! creation (`create/unsure.rs`). A new creation on such a key waits until that removal is
//! done: the removal recognises the abandoned write by the session's mark and value alone,
//! which a new creation of the same session on the same key would carry too.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex as StdMutex;

use tokio::sync::Notify;

use crate::key::Key;

/// The keys being swept, each with how many sweeps run on it.
#[derive(Debug, Default)]
pub(super) struct Sweeps {
    /// How many sweeps run (any key): a creation checks the map only when some do.
    running: AtomicUsize,
    keys: StdMutex<HashMap<Key, usize>>,
    done: Notify,
}

impl Sweeps {
    fn keys(&self) -> std::sync::MutexGuard<'_, HashMap<Key, usize>> {
        // A poisoned lock only means a panic elsewhere while holding it; the map is plain.
        self.keys.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A sweep of `key` begins.
    pub(super) fn begin(&self, key: &Key) {
        *self.keys().entry(key.clone()).or_default() += 1;
        self.running.fetch_add(1, Ordering::AcqRel);
    }

    /// A sweep of `key` ended (one that never began changes nothing).
    pub(super) fn end(&self, key: &Key) {
        let ended = {
            let mut keys = self.keys();
            let left = keys.get_mut(key).map(|n| {
                *n -= 1;
                *n
            });
            if left == Some(0) {
                keys.remove(key);
            }
            left.is_some()
        };
        if ended {
            self.running.fetch_sub(1, Ordering::AcqRel);
            self.done.notify_waiters();
        }
    }

    fn sweeping(&self, key: &Key) -> bool {
        self.running.load(Ordering::Acquire) > 0 && self.keys().contains_key(key)
    }

    /// Completes once no sweep of `key` runs.
    ///
    /// # Cancel safety
    /// Cancel safe: it only waits.
    pub(super) async fn clear(&self, key: &Key) {
        while self.sweeping(key) {
            let done = self.done.notified();
            if !self.sweeping(key) {
                return;
            }
            done.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_creation_waits_for_every_sweep_of_its_key_and_no_other() {
        let sweeps = Sweeps::default();
        let (a, b) = (Key::new("q.a").unwrap(), Key::new("q.b").unwrap());
        sweeps.begin(&a);
        sweeps.begin(&a);
        sweeps.clear(&b).await;
        let mut waiting = Box::pin(sweeps.clear(&a));
        assert!(futures::poll!(waiting.as_mut()).is_pending());
        sweeps.end(&a);
        assert!(futures::poll!(waiting.as_mut()).is_pending());
        sweeps.end(&a);
        assert!(futures::poll!(waiting.as_mut()).is_ready());
        sweeps.end(&b); // not begun: changes nothing
        sweeps.clear(&a).await;
    }
}
