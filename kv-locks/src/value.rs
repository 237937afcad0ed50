//! What a queue entry holds, and the identity of a lock holder.

use serde::{Deserialize, Serialize};

/// Who holds (or waits for) a lock: written into the queue entry for operators to read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Holder {
    /// A free-form identity (defaults to `<host>/<pid>`).
    pub id: String,
    /// The host name, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// The process id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
}

impl Holder {
    /// This process: host name (from `HOSTNAME` or the kernel) and pid.
    pub fn this_process() -> Holder {
        let host = std::env::var("HOSTNAME")
            .ok()
            .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok())
            .map(|h| h.trim().to_string())
            .filter(|h| !h.is_empty());
        let pid = std::process::id();
        Holder {
            id: format!("{}/{pid}", host.as_deref().unwrap_or("unknown")),
            host,
            pid: Some(pid),
        }
    }

    /// A holder with a given identity.
    pub fn named(id: impl Into<String>) -> Holder {
        Holder {
            id: id.into(),
            host: None,
            pid: None,
        }
    }
}

/// The JSON value of a queue entry.
/// What a queue entry holds: who queued, as which kind, and when (the holder's wall clock,
/// for people reading an inspection; nothing is decided by it). The ticket is the entry's
/// lease origin, carried on every write of the entry (`Entry::lease`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct QueueValue {
    pub(crate) holder: Holder,
    /// `x` exclusive, `s` shared (reader), `p` a semaphore permit.
    #[serde(default)]
    pub(crate) kind: String,
    /// Milliseconds since the Unix epoch when the entry was written.
    #[serde(default)]
    pub(crate) since_ms: u64,
}

impl QueueValue {
    pub(crate) fn encode(&self) -> bytes::Bytes {
        // Serializing plain strings and integers cannot fail.
        bytes::Bytes::from(serde_json::to_vec(self).unwrap_or_default())
    }

    pub(crate) fn decode(b: &[u8]) -> Option<QueueValue> {
        serde_json::from_slice(b).ok()
    }

    pub(crate) fn is_shared(&self) -> bool {
        self.kind == "s"
    }
}
