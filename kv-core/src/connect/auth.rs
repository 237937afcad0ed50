//! How the client authenticates: one [`Auth`] per connection, its secrets never shown, and
//! applied to the async-nats options.

use std::fmt;
use std::path::{Path, PathBuf};

use async_nats::ConnectOptions;

use crate::error::Error;

/// A string that never shows in `Debug` output or error messages.
#[derive(Clone, PartialEq, Eq)]
pub(super) struct Secret(pub(super) String);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// How the client authenticates. One method per connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Auth {
    CredsFile(PathBuf),
    NkeySeed(Secret),
    NkeyFile(PathBuf),
    Token(Secret),
    UserPassword(String, Secret),
}

impl Auth {
    pub(super) fn method(&self) -> &'static str {
        match self {
            Auth::CredsFile(_) => "a creds file",
            Auth::NkeySeed(_) => "an NKey seed",
            Auth::NkeyFile(_) => "an NKey file",
            Auth::Token(_) => "a token",
            Auth::UserPassword(..) => "a user and password",
        }
    }
}

/// The options with `auth` applied (reading its files).
pub(super) async fn with_auth(
    o: ConnectOptions,
    auth: Option<Auth>,
) -> Result<ConnectOptions, Error> {
    Ok(match auth {
        None => o,
        Some(Auth::Token(t)) => o.token(t.0),
        Some(Auth::UserPassword(u, p)) => o.user_and_password(u, p.0),
        Some(Auth::NkeySeed(s)) => o.nkey(s.0),
        Some(Auth::NkeyFile(path)) => o.nkey(read_seed(&path).await?),
        Some(Auth::CredsFile(path)) => o.credentials_file(&path).await.map_err(|e| {
            Error::invalid_argument(format!("cannot use the creds file {}", path.display()))
                .with_source(e)
        })?,
    })
}

/// The seed in an NKey file: its first line that looks like a seed (`S…`).
async fn read_seed(path: &Path) -> Result<String, Error> {
    let text = tokio::fs::read_to_string(path).await.map_err(|e| {
        Error::invalid_argument(format!("cannot read the NKey file {}", path.display()))
            .with_source(e)
    })?;
    text.lines()
        .map(str::trim)
        .find(|l| l.starts_with('S') && l.len() > 50)
        .map(str::to_string)
        .ok_or_else(|| Error::invalid_argument(format!("no NKey seed in {}", path.display())))
}
