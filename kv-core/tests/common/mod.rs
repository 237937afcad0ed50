//! Shared helpers of the kvtk-core real-server tests (the kit, `kvtk_tests`, has the rest:
//! `T`, `within`, `next`, `until`).
#![allow(dead_code)]

use kvtk_core::{Entry, Watch, WatchEvent};

/// The next event of `w`, within the kit's `T`.
///
/// # Panics
///
/// When no event comes within `T`, the watch ends or reports an error.
pub(crate) async fn next_event(w: &mut Watch) -> WatchEvent {
    kvtk_tests::next("a watch event", w)
        .await
        .expect("watch item ok")
}

/// The next entry of `w`, skipping the initial-values marker.
///
/// # Panics
///
/// As [`next_event`].
pub(crate) async fn next_entry(w: &mut Watch) -> Entry {
    loop {
        if let WatchEvent::Entry(e) = next_event(w).await {
            return e;
        }
    }
}
