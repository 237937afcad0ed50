//! What a queue entry holds, and the identity of a lock holder.

use kvtk_core::format::RECIPE_FORMAT;
use kvtk_core::Entry;
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

/// What a queue entry holds: who queued, as which kind, and when (the holder's wall clock,
/// for people reading an inspection; nothing is decided by it), and for an entry of a
/// multi-lock the names of all its locks. The ticket is the entry's lease origin, carried on
/// every write of the entry (`Entry::lease`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub(crate) struct QueueValue {
    pub(crate) holder: Holder,
    /// `x` exclusive, `s` shared (reader), `p` a semaphore permit.
    #[serde(default)]
    pub(crate) kind: String,
    /// Milliseconds since the Unix epoch when the entry was written.
    #[serde(default)]
    pub(crate) since_ms: u64,
    /// A multi-lock's entry: the names of every lock of the multi-lock (this one included),
    /// sorted. Empty for a plain entry.
    #[serde(default)]
    pub(crate) multi: Vec<String>,
}

/// A queue entry's value as it is written (format [`RECIPE_FORMAT`]): what
/// [`QueueValue`] reads, with `"v"` first; `"multi"` only for a multi-lock's entry.
#[derive(Debug, Serialize)]
struct Written<'a> {
    v: u32,
    holder: &'a Holder,
    kind: &'a str,
    since_ms: u64,
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    multi: &'a [String],
}

/// A holder with the start of its entries' JSON, encoded once per [`Locks`](crate::Locks):
/// every queue entry's value begins with it.
#[derive(Debug)]
pub(crate) struct Identity {
    holder: Holder,
    /// `{"v":1,"holder":{…},"kind":"`: [`Written`] up to its kind's value.
    head: String,
}

impl Identity {
    pub(crate) fn new(holder: Holder) -> Identity {
        // Serializing plain strings and integers cannot fail.
        let json = serde_json::to_string(&holder).unwrap_or_default();
        let head = format!(r#"{{"v":{RECIPE_FORMAT},"holder":{json},"kind":""#);
        Identity { holder, head }
    }

    pub(crate) fn holder(&self) -> &Holder {
        &self.holder
    }
}

/// The one encoding of a queue entry's value: [`Written`]'s JSON. A plain entry (no
/// `multi`) is its holder's [`Identity`] and the rest appended by hand in `Written`'s field
/// order (a test compares it with serde's); `kind` is a tag (`Kind::tag`), which needs no
/// escaping.
pub(crate) fn encode(id: &Identity, kind: &str, since_ms: u64, multi: &[String]) -> bytes::Bytes {
    if !multi.is_empty() {
        return serialized(&id.holder, kind, since_ms, multi);
    }
    let mut out = Vec::with_capacity(id.head.len() + kind.len() + 36);
    out.extend_from_slice(id.head.as_bytes());
    out.extend_from_slice(kind.as_bytes());
    out.extend_from_slice(br#"","since_ms":"#);
    // serde_json writes an integer without the formatting machinery; into a `Vec` it
    // cannot fail.
    let _ = serde_json::to_writer(&mut out, &since_ms);
    out.push(b'}');
    bytes::Bytes::from(out)
}

/// [`Written`] through serde.
fn serialized(holder: &Holder, kind: &str, since_ms: u64, multi: &[String]) -> bytes::Bytes {
    let w = Written {
        v: RECIPE_FORMAT,
        holder,
        kind,
        since_ms,
        multi,
    };
    // Serializing plain strings and integers cannot fail.
    bytes::Bytes::from(serde_json::to_vec(&w).unwrap_or_default())
}

impl QueueValue {
    /// Reads a live queue entry's value: `None` when it is not one (written by something
    /// else than this library), an error ([`kvtk_core::ErrorKind::Codec`]) when it is of a
    /// format version this library does not know — then nothing may be decided from it.
    pub(crate) fn read(e: &Entry) -> Result<Option<QueueValue>, kvtk_core::Error> {
        kvtk_core::format::decode_json(e, "lock queue entry")
    }

    pub(crate) fn is_shared(&self) -> bool {
        self.kind == "s"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_written_value_has_its_version_first_and_multi_only_for_a_multi_lock() {
        let holder = Identity::new(Holder::named("h/1"));
        let plain = encode(&holder, "x", 42, &[]);
        assert_eq!(
            std::str::from_utf8(&plain).unwrap(),
            r#"{"v":1,"holder":{"id":"h/1"},"kind":"x","since_ms":42}"#
        );
        let multi = ["a".to_string(), "b".to_string()];
        let both = encode(&holder, "x", 42, &multi);
        assert_eq!(
            std::str::from_utf8(&both).unwrap(),
            r#"{"v":1,"holder":{"id":"h/1"},"kind":"x","since_ms":42,"multi":["a","b"]}"#
        );
    }

    #[test]
    fn a_plain_entry_is_written_as_serde_writes_it() {
        let holders = [
            Holder::named("h/1"),
            Holder::named("quote \" back \\ tab \t é ✓ \u{1}"),
            Holder {
                id: "host/7".into(),
                host: Some("host".into()),
                pid: Some(7),
            },
            Holder {
                id: String::new(),
                host: None,
                pid: Some(u32::MAX),
            },
        ];
        for holder in holders {
            let id = Identity::new(holder.clone());
            for kind in ["x", "s", "p"] {
                for since in [0, 42, u64::MAX] {
                    assert_eq!(
                        encode(&id, kind, since, &[]),
                        serialized(&holder, kind, since, &[])
                    );
                }
            }
        }
    }
}
