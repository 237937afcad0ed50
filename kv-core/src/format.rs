//! Format versions of what the recipes write (the workspace's `docs/protocol.md`, "Format
//! versions", is the normative description).
//!
//! Every recipe value carries the version of its format, so that a participant meeting a
//! format it does not know refuses it instead of misreading it:
//!
//! - a **JSON value** carries it as the number `"v"` (`{"v":1,…}`): lock queue entries,
//!   leader and candidate records, config acknowledgements;
//! - a value whose bytes are not the recipe's own (a member's metadata, in the
//!   application's codec) or not JSON (a semaphore's permit count) carries it in the
//!   `Kv-Format` header of the write ([`Write::format`](crate::Write::format),
//!   [`CreateLease::format`](crate::lease::CreateLease::format)); the reader checks it
//!   before it looks at the bytes.
//!
//! A value without a version was written before versions existed and means the same as
//! version 1. Any other version is refused with [`ErrorKind::Codec`](crate::ErrorKind::Codec):
//! the caller must then touch nothing (no write, no removal) that depends on the value.
//! Readers ignore JSON fields they do not know, so version 1 may grow optional fields.

use bytes::Bytes;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::entry::Entry;
pub use crate::entry::FormatMark;
use crate::error::Error;

/// The format version of every recipe value this library writes and understands.
pub const RECIPE_FORMAT: u32 = 1;

/// The header carrying a recipe value's format version when its bytes cannot.
pub const FORMAT_HEADER: &str = "Kv-Format";

/// The one refusal: `what` at `e`'s key has format `found`.
fn refuse(e: &Entry, what: &str, found: &str) -> Error {
    Error::codec(format!(
        "{what} has format version {found}, this client speaks {RECIPE_FORMAT}: refusing to touch it"
    ))
    .with_key(e.key().as_str())
}

/// Checks the `Kv-Format` header of a live value (a member's metadata, a permit count):
/// absent or [`RECIPE_FORMAT`] is fine, anything else is refused with
/// [`ErrorKind::Codec`](crate::ErrorKind::Codec). Removals carry no value and pass.
///
/// ```
/// # fn demo(e: &kvtk_core::Entry) -> Result<(), kvtk_core::Error> {
/// kvtk_core::format::check_header(e, "member")?;
/// // Only now decode e.value() with the application's codec.
/// # Ok(()) }
/// ```
pub fn check_header(e: &Entry, what: &str) -> Result<(), Error> {
    match e.format() {
        Some(m) if e.is_value() && m != FormatMark::Version(RECIPE_FORMAT as u16) => {
            Err(refuse(e, what, &m.to_string()))
        }
        _ => Ok(()),
    }
}

/// Decodes a recipe's JSON value after checking its `"v"`: `Ok(None)` for a removal or a
/// value that is not a JSON object of the shape `T` (not a recipe value: the caller treats it
/// as it treats unreadable values), `Err` ([`ErrorKind::Codec`](crate::ErrorKind::Codec))
/// for a JSON object whose `"v"` is not [`RECIPE_FORMAT`] (or a `Kv-Format` header that is
/// not), whatever else it holds. A value without `"v"` is read as version 1.
///
/// ```
/// # fn demo(e: &kvtk_core::Entry) -> Result<(), kvtk_core::Error> {
/// #[derive(serde::Deserialize)]
/// struct Ack { applied: Option<u64> }
/// let ack: Option<Ack> = kvtk_core::format::decode_json(e, "fleet acknowledgement")?;
/// println!("applied: {:?}", ack.and_then(|a| a.applied));
/// # Ok(()) }
/// ```
pub fn decode_json<T: DeserializeOwned>(e: &Entry, what: &str) -> Result<Option<T>, Error> {
    if !e.is_value() {
        return Ok(None);
    }
    check_header(e, what)?;
    let Ok(serde_json::Value::Object(mut obj)) = serde_json::from_slice(e.value()) else {
        return Ok(None);
    };
    match obj.remove("v") {
        None => {}
        Some(serde_json::Value::Number(n)) if n.as_u64() == Some(u64::from(RECIPE_FORMAT)) => {}
        Some(other) => return Err(refuse(e, what, &other.to_string())),
    }
    Ok(serde_json::from_value(serde_json::Value::Object(obj)).ok())
}

/// Encodes a recipe's JSON value with `"v":` [`RECIPE_FORMAT`] first: `value` must
/// serialize as a JSON object without a field `v` of its own.
///
/// ```
/// #[derive(serde::Serialize)]
/// struct Ack { applied: u64 }
/// let b = kvtk_core::format::encode_json(&Ack { applied: 7 });
/// assert_eq!(&b[..], br#"{"v":1,"applied":7}"#);
/// ```
pub fn encode_json<T: Serialize>(value: &T) -> Bytes {
    #[derive(Serialize)]
    struct Versioned<'a, T> {
        v: u32,
        #[serde(flatten)]
        rest: &'a T,
    }
    let w = Versioned {
        v: RECIPE_FORMAT,
        rest: value,
    };
    // The recipes' values are plain structs of strings, numbers and options: they always
    // serialize.
    Bytes::from(serde_json::to_vec(&w).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use async_nats::HeaderMap;
    use bytes::Bytes;

    use super::*;
    use crate::{ErrorKind, Key, Revision};

    #[derive(Debug, PartialEq, serde::Deserialize)]
    struct Rec {
        id: String,
    }

    fn entry(value: &str, format: Option<&str>) -> Entry {
        let mut h = HeaderMap::new();
        if let Some(f) = format {
            h.insert(FORMAT_HEADER, f);
        }
        let (key, rev) = (Key::new("e.leader").unwrap(), Revision::new(3).unwrap());
        let at = time::OffsetDateTime::UNIX_EPOCH;
        let value = Bytes::from(value.to_string());
        Entry::from_stored(Arc::from("b"), key, rev, at, Some(&h), value)
    }

    fn read(value: &str, format: Option<&str>) -> Result<Option<Rec>, Error> {
        decode_json(&entry(value, format), "leader record")
    }

    #[test]
    fn version_1_and_no_version_are_the_same_format() {
        let want = Some(Rec { id: "a".into() });
        assert_eq!(read(r#"{"id":"a"}"#, None).unwrap(), want);
        assert_eq!(read(r#"{"v":1,"id":"a"}"#, None).unwrap(), want);
        assert_eq!(read(r#"{"v":1,"id":"a"}"#, Some("1")).unwrap(), want);
        assert!(check_header(&entry("8", None), "permits").is_ok());
        assert!(check_header(&entry("8", Some("1")), "permits").is_ok());
    }

    #[test]
    fn an_unknown_version_is_refused_whatever_the_value_holds() {
        for v in [
            r#"{"v":99,"id":"a"}"#,
            r#"{"v":2}"#,
            r#"{"v":"1","id":"a"}"#,
            r#"{"v":null}"#,
        ] {
            let e = read(v, None).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::Codec, "{v}");
            assert!(e.to_string().contains("this client speaks 1"), "{e}");
        }
        for h in ["99", "x", "", "1.0"] {
            let e = check_header(&entry("8", Some(h)), "permits").unwrap_err();
            assert_eq!(e.kind(), ErrorKind::Codec, "{h:?}");
            assert_eq!(
                read(r#"{"id":"a"}"#, Some(h)).unwrap_err().kind(),
                ErrorKind::Codec
            );
        }
    }

    #[test]
    fn values_that_are_no_recipe_values_are_not_refused() {
        assert_eq!(read("not json", None).unwrap(), None);
        assert_eq!(read("[1,2]", None).unwrap(), None);
        assert_eq!(read(r#"{"v":1,"other":true}"#, None).unwrap(), None);
    }
}
