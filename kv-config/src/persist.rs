//! The local snapshot file: the KV layer of the last accepted value, written atomically
//! (temporary file in the same directory, fsync, rename), so a crash leaves either the old
//! file or the new one, never half of one.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use kvtk_core::Revision;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{Error, ErrorKind};

/// What the snapshot file holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Persisted {
    /// File format version.
    pub(crate) version: u32,
    /// The KV revision of the layer.
    pub(crate) revision: Option<u64>,
    /// The KV layer (the document, or the assembled prefix), `None` when the KV held nothing.
    pub(crate) kv: Option<Value>,
}

impl Persisted {
    pub(crate) fn new(revision: Option<Revision>, kv: Option<Value>) -> Persisted {
        Persisted {
            version: 1,
            revision: revision.map(Revision::get),
            kv,
        }
    }
}

fn io_err(what: &str, path: &Path, e: std::io::Error) -> Error {
    Error::new(ErrorKind::Io, format!("{what} {}", path.display())).with_source(e)
}

/// Writes the file atomically (blocking; call from `spawn_blocking`).
pub(crate) fn write(path: &Path, p: &Persisted) -> Result<(), Error> {
    let bytes =
        serde_json::to_vec_pretty(p).map_err(|e| Error::new(ErrorKind::Encode, e.to_string()))?;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    std::fs::create_dir_all(&dir).map_err(|e| io_err("cannot create", &dir, e))?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "config".into());
    let tmp = dir.join(format!(".{name}.tmp.{}", std::process::id()));
    let res = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(&bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        // Make the rename itself durable.
        if let Ok(d) = std::fs::File::open(&dir) {
            let _ = d.sync_all();
        }
        Ok(())
    })();
    res.map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        io_err("cannot write snapshot", path, e)
    })
}

/// Reads the file; `Ok(None)` when it does not exist.
pub(crate) fn read(path: &Path) -> Result<Option<Persisted>, Error> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_err("cannot read snapshot", path, e)),
    };
    serde_json::from_slice(&bytes).map(Some).map_err(|e| {
        Error::new(
            ErrorKind::Io,
            format!("snapshot {} is corrupt: {e}", path.display()),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip_and_missing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/app.snapshot.json");
        assert_eq!(read(&path).unwrap(), None);
        let p = Persisted::new(Revision::new(7), Some(serde_json::json!({"a": 1})));
        write(&path, &p).unwrap();
        assert_eq!(read(&path).unwrap(), Some(p.clone()));
        let p2 = Persisted::new(None, None);
        write(&path, &p2).unwrap();
        assert_eq!(read(&path).unwrap(), Some(p2));
        // no temporary files left behind
        assert_eq!(
            std::fs::read_dir(path.parent().unwrap()).unwrap().count(),
            1
        );
        std::fs::write(&path, b"{garbage").unwrap();
        assert!(read(&path).is_err());
    }
}
