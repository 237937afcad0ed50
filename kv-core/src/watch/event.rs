//! What a watch starts with ([`Include`]) and what it yields ([`WatchEvent`]).

use crate::entry::Entry;

/// Which entries a watch starts with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Include {
    /// The latest revision of each matching key, then every update (the default).
    #[default]
    LastPerKey,
    /// Every revision the bucket holds, then every update.
    AllHistory,
    /// Only updates made after the watch started.
    UpdatesOnly,
}

/// An item of a watch.
#[derive(Debug, Clone, PartialEq)]
pub enum WatchEvent {
    /// A revision of a key.
    Entry(Entry),
    /// Every entry that existed when the watch started has been delivered (sent once, also
    /// when nothing matched, and at once for [`Include::UpdatesOnly`]).
    InitialDone,
}

impl WatchEvent {
    /// The entry this event carries (`None` for [`InitialDone`](WatchEvent::InitialDone)).
    ///
    /// ```
    /// # use kvtk_core::WatchEvent;
    /// let keys: Vec<String> = [WatchEvent::InitialDone]
    ///     .into_iter()
    ///     .filter_map(WatchEvent::into_entry)
    ///     .map(|e| e.key().to_string())
    ///     .collect();
    /// assert!(keys.is_empty());
    /// ```
    pub fn into_entry(self) -> Option<Entry> {
        match self {
            WatchEvent::Entry(e) => Some(e),
            WatchEvent::InitialDone => None,
        }
    }
}
