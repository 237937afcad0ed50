//! The key layout: member `<instance>` of group `<group>` lives at key `<group>.<instance>`.

use kvtk_core::Key;

use crate::error::{Error, ErrorKind};

/// Checks a group name: any valid KV key (dots allowed, no wildcards).
pub(crate) fn group(name: &str) -> Result<(), Error> {
    Key::new(name)
        .map(drop)
        .map_err(|e| Error::kv(format!("invalid group name {name:?}"), e))?;
    if kvtk_core::lease::in_session_space(name) {
        return Err(Error::new(
            ErrorKind::InvalidName,
            format!("invalid group name {name:?}: `_session` is reserved for session keys"),
        ));
    }
    Ok(())
}

/// The key of instance `id` in `group` (already checked). The id is one key token: a dot
/// would put it in another group's key space (`a.b.c` is also instance `c` of group `a.b`).
pub(crate) fn member_key(group: &str, id: &str) -> Result<Key, Error> {
    if id.contains('.') {
        return Err(Error::new(
            ErrorKind::InvalidName,
            format!("invalid instance id {id:?}: it must not contain '.' (encode it, e.g. with kvtk_core::Base64KeyCodec)"),
        ));
    }
    Key::new(format!("{group}.{id}"))
        .map_err(|e| Error::kv(format!("invalid instance id {id:?}"), e))
}

/// The filter matching every member key of `group`.
pub(crate) fn group_filter(group: &str) -> String {
    format!("{group}.*")
}

/// The instance id of a member key of `group`.
pub(crate) fn instance_of<'k>(group: &str, key: &'k str) -> Option<&'k str> {
    key.strip_prefix(group)?
        .strip_prefix('.')
        .filter(|id| !id.is_empty() && !id.contains('.'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_keys() {
        assert!(group("svc.api").is_ok());
        assert_eq!(group("a b").unwrap_err().kind(), ErrorKind::InvalidName);
        assert_eq!(group("a.*").unwrap_err().kind(), ErrorKind::InvalidName);
        for reserved in ["_session", "_session.x"] {
            assert_eq!(group(reserved).unwrap_err().kind(), ErrorKind::InvalidName);
        }
        assert_eq!(member_key("svc", "i-1").unwrap().as_str(), "svc.i-1");
        assert_eq!(
            member_key("svc", "a.b").unwrap_err().kind(),
            ErrorKind::InvalidName
        );
        assert_eq!(
            member_key("svc", "").unwrap_err().kind(),
            ErrorKind::InvalidName
        );
        assert_eq!(
            member_key("svc", "x:1").unwrap_err().kind(),
            ErrorKind::InvalidName
        );
        assert_eq!(instance_of("svc", "svc.i-1"), Some("i-1"));
        assert_eq!(instance_of("svc", "svc.a.b"), None);
        assert_eq!(instance_of("svc", "svcx.a"), None);
    }
}
