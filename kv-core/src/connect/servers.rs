//! Server URLs: comma-separated lists, credentials taken out of the URLs, and URLs as they
//! may be shown.

use async_nats::ServerAddr;
use percent_encoding::percent_decode_str;

use crate::connect::auth::{Auth, Secret};
use crate::error::Error;

/// The URLs of a comma-separated list (as `NATS_URL` holds them).
pub(super) fn split_urls(s: &str) -> Vec<String> {
    s.split(',')
        .map(str::trim)
        .filter(|u| !u.is_empty())
        .map(str::to_string)
        .collect()
}

/// A URL as it may be shown: without user, password or token.
pub(super) fn redact_url(url: &str) -> String {
    match url.rsplit_once('@') {
        Some((before, host)) => match before.split_once("://") {
            Some((scheme, _)) => format!("{scheme}://{host}"),
            None => host.to_string(),
        },
        None => url.to_string(),
    }
}

/// Parses the server list, taking credentials out of the URLs.
pub(super) fn parse_servers(servers: &[String]) -> Result<(Vec<ServerAddr>, Option<Auth>), Error> {
    let default = ["nats://127.0.0.1:4222".to_string()];
    let list = if servers.is_empty() {
        &default[..]
    } else {
        servers
    };
    let mut addrs = Vec::with_capacity(list.len());
    let mut auth: Option<Auth> = None;
    for s in list {
        let addr: ServerAddr = s.parse().map_err(|e| {
            Error::invalid_argument(format!("invalid server URL {:?}", redact_url(s)))
                .with_source(e)
        })?;
        let (addr, found) = take_credentials(addr)?;
        match (&auth, found) {
            (_, None) => {}
            (None, found) => auth = found,
            (Some(a), Some(f)) if *a == f => {}
            (Some(_), Some(_)) => {
                return Err(Error::invalid_argument(
                    "different credentials in two server URLs",
                ))
            }
        }
        addrs.push(addr);
    }
    Ok((addrs, auth))
}

/// The URL without its credentials, and the credentials.
fn take_credentials(addr: ServerAddr) -> Result<(ServerAddr, Option<Auth>), Error> {
    if !addr.has_user_pass() {
        return Ok((addr, None));
    }
    let decode = |s: &str| percent_decode_str(s).decode_utf8_lossy().into_owned();
    let user = decode(addr.username().unwrap_or_default());
    let auth = match addr.password() {
        Some(p) => Auth::UserPassword(user, Secret(decode(p))),
        // `nats://token@host`: a lone user part is a token, as in the other NATS clients.
        None => Auth::Token(Secret(user)),
    };
    let mut url = addr.into_inner();
    let stripped = url.set_username("").is_ok() && url.set_password(None).is_ok();
    let bare = ServerAddr::from_url(url).ok().filter(|_| stripped);
    let bare = bare.ok_or_else(|| {
        Error::invalid_argument("cannot take the credentials out of a server URL")
    })?;
    Ok((bare, Some(auth)))
}
