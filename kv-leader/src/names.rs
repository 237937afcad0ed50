//! Election names and candidate identities: one key token each.

use crate::error::Error;

/// The longest election name or candidate identity, in bytes.
pub const MAX_NAME_LEN: usize = 128;

/// Checks an election name or candidate identity: one key token of
/// `A-Z a-z 0-9 - _ =`, 1..=[`MAX_NAME_LEN`] bytes.
pub(crate) fn validate_name(what: &str, s: &str) -> Result<(), Error> {
    if s.is_empty() {
        return Err(Error::invalid(format!("{what} is empty")));
    }
    if s.len() > MAX_NAME_LEN {
        return Err(Error::invalid(format!(
            "{what} is {} bytes long, the limit is {MAX_NAME_LEN}",
            s.len()
        )));
    }
    if let Some((at, ch)) = s
        .char_indices()
        .find(|(_, c)| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '=')))
    {
        return Err(Error::invalid(format!(
            "{what} {s:?} has character {ch:?} at byte {at}; allowed are A-Z a-z 0-9 - _ ="
        )));
    }
    if s.starts_with("_kv") {
        return Err(Error::invalid(format!(
            "{what} {s:?} starts with the reserved prefix '_kv'"
        )));
    }
    if kvtk_core::lease::in_session_space(s) {
        return Err(Error::invalid(format!(
            "{what} {s:?} is reserved for session keys"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorKind;

    #[test]
    fn names() {
        assert!(validate_name("id", "node-1_a=").is_ok());
        for bad in ["", "a.b", "a b", "a*", "a>", "_kvx", "ü", "_session"] {
            let e = validate_name("id", bad).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{bad:?}");
        }
        let long = "x".repeat(MAX_NAME_LEN + 1);
        let e = validate_name("id", &long).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidArgument);
    }
}
