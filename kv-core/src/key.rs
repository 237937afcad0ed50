//! Validated keys, key filters and key codecs.
//!
//! A KV key becomes the last part of a NATS subject (`$KV.<bucket>.<key>`), so it must obey
//! subject rules. [`Key`] checks them once, up front, and names the rule a bad key breaks.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use base64::Engine as _;

use crate::error::{Error, ErrorKind};

/// Keys starting with this prefix are reserved for the KV implementation (ADR-8).
const RESERVED_PREFIX: &str = "_kv";

/// The longest key we accept, in bytes. NATS subjects have no hard limit, but a key this long
/// is a bug, not data.
pub const MAX_KEY_LEN: usize = 1024;

/// The longest user key [`Base64KeyCodec`] encodes, in bytes: `b` plus the base64 of 767
/// bytes is 1,024 bytes long.
const MAX_ENCODED_USER_KEY_LEN: usize = (MAX_KEY_LEN - 1) * 3 / 4;

/// Why a key or filter was rejected.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum KeyRule {
    /// The key is empty.
    Empty,
    /// The key is longer than [`MAX_KEY_LEN`] bytes.
    TooLong(usize),
    /// The key holds a character that is not allowed (`A-Z a-z 0-9 - _ = / .`; filters also
    /// allow the wildcards `*` and `>` as whole tokens).
    BadChar {
        /// The offending character.
        ch: char,
        /// Its byte offset in the key.
        at: usize,
    },
    /// The key starts or ends with `.`, or holds `..` (an empty token).
    EmptyToken,
    /// The key starts with the reserved `_kv` prefix.
    Reserved,
    /// A wildcard that is not a whole token, or `>` that is not the last token.
    BadWildcard,
    /// A user key too long for [`Base64KeyCodec`] (more than 767 bytes).
    UserKeyTooLong(usize),
}

impl fmt::Display for KeyRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyRule::Empty => write!(f, "key is empty"),
            KeyRule::TooLong(n) => write!(f, "key is {n} bytes long, the limit is {MAX_KEY_LEN}"),
            KeyRule::BadChar { ch, at } => {
                write!(f, "character {ch:?} at byte {at} is not allowed in a key")
            }
            KeyRule::EmptyToken => {
                write!(
                    f,
                    "key has an empty token (leading, trailing or double '.')"
                )
            }
            KeyRule::Reserved => write!(f, "keys starting with '{RESERVED_PREFIX}' are reserved"),
            KeyRule::BadWildcard => write!(
                f,
                "wildcards must be whole tokens and '>' must be the last token"
            ),
            KeyRule::UserKeyTooLong(n) => write!(
                f,
                "user key is {n} bytes long, Base64KeyCodec encodes at most \
                 {MAX_ENCODED_USER_KEY_LEN}"
            ),
        }
    }
}

/// The error for a key or filter that breaks `rule`.
fn invalid_key(key: &str, rule: KeyRule) -> Error {
    // Keys may be long or hold control characters: show a bounded, escaped prefix.
    let shown: String = key.chars().take(64).collect();
    Error::new(
        ErrorKind::InvalidKey,
        format!("invalid key {shown:?}: {rule}"),
    )
}

fn is_key_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '=' | '/' | '.')
}

fn check(s: &str, wildcards: bool) -> Result<(), KeyRule> {
    if s.len() <= MAX_KEY_LEN && plainly_valid(s.as_bytes(), wildcards) {
        return Ok(());
    }
    broken_rule(s, wildcards)
}

/// Whether `b` is a valid key (or filter), in one pass over its bytes: a key is checked at
/// every write. Agrees with [`broken_rule`] (a test checks), which names the rule broken.
fn plainly_valid(b: &[u8], wildcards: bool) -> bool {
    if b.starts_with(RESERVED_PREFIX.as_bytes()) {
        return false;
    }
    // The current token's length, and whether it is a wildcard (which must be the whole
    // token: nothing may follow it before the next `.`, and nothing at all after `>`).
    let (mut len, mut wild, mut last_only) = (0usize, false, false);
    for &c in b {
        if KEY_BYTES[usize::from(c)] && !wild {
            len += 1;
            continue;
        }
        match c {
            b'.' if len == 0 || last_only => return false,
            b'.' => (len, wild) = (0, false),
            b'*' | b'>' if wildcards && len == 0 => {
                (len, wild, last_only) = (1, true, c == b'>');
            }
            _ => return false,
        }
    }
    len > 0
}

/// The bytes a key token may hold ([`is_key_char`] without `.`), as a table.
const KEY_BYTES: [bool; 256] = {
    let mut t = [false; 256];
    let mut c = 0;
    while c < 256 {
        let b = c as u8;
        t[c] = b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'=' | b'/');
        c += 1;
    }
    t
};

/// The first rule `s` breaks, if any, in the order the rules are listed in [`KeyRule`].
fn broken_rule(s: &str, wildcards: bool) -> Result<(), KeyRule> {
    if s.is_empty() {
        return Err(KeyRule::Empty);
    }
    if s.len() > MAX_KEY_LEN {
        return Err(KeyRule::TooLong(s.len()));
    }
    for (at, ch) in s.char_indices() {
        let wild = wildcards && (ch == '*' || ch == '>');
        if !is_key_char(ch) && !wild {
            return Err(KeyRule::BadChar { ch, at });
        }
    }
    // The tokens are walked without collecting them: a key is checked at every write.
    if s.split('.').any(str::is_empty) {
        return Err(KeyRule::EmptyToken);
    }
    if s.starts_with(RESERVED_PREFIX) {
        return Err(KeyRule::Reserved);
    }
    if wildcards {
        let mut tokens = s.split('.').peekable();
        while let Some(t) = tokens.next() {
            let last = tokens.peek().is_none();
            let has_wild = t.contains('*') || t.contains('>');
            let ok = !has_wild || t == "*" || (t == ">" && last);
            if !ok {
                return Err(KeyRule::BadWildcard);
            }
        }
    }
    Ok(())
}

/// Checks `s` as a key (or, with `wildcards`, as a key filter) without copying it: the
/// error is the one [`Key::new`] (or [`KeyFilter::new`]) gives.
pub(crate) fn check_str(s: &str, wildcards: bool) -> Result<(), Error> {
    check(s, wildcards).map_err(|rule| invalid_key(s, rule))
}

/// A validated KV key: `A-Z a-z 0-9 - _ = / .`, dot-separated non-empty tokens, not starting
/// with `_kv`, at most [`MAX_KEY_LEN`] bytes.
///
/// ```
/// use kvtk_core::Key;
/// let key: Key = "jobs.reindex".parse().unwrap();
/// assert_eq!(key.as_str(), "jobs.reindex");
/// let err = Key::new("bad key").unwrap_err();
/// assert_eq!(err.kind(), kvtk_core::ErrorKind::InvalidKey);
/// ```
///
/// Cheap to clone: clones share one allocation (a lock handle's queue key and the leases it
/// creates on it, say).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Key(Arc<str>);

impl Key {
    /// Validates `key`.
    pub fn new(key: impl AsRef<str>) -> Result<Key, Error> {
        let key = key.as_ref();
        match check(key, false) {
            Ok(()) => Ok(Key(key.into())),
            Err(rule) => Err(invalid_key(key, rule)),
        }
    }

    /// The key of a stored message's subject, `$KV.<bucket>.<key>` (a mirror keeps its
    /// origin's bucket token). Other writers may not have followed our rules, so the key is
    /// taken as it is.
    pub(crate) fn from_subject(subject: &str) -> Option<Key> {
        let rest = subject.strip_prefix("$KV.")?;
        let (_, key) = rest.split_once('.')?;
        Some(Key(key.into()))
    }

    /// The key as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Consumes the key, giving back the string.
    pub fn into_string(self) -> String {
        self.0.to_string()
    }
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for Key {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl FromStr for Key {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Key::new(s)
    }
}

impl TryFrom<&str> for Key {
    type Error = Error;
    fn try_from(s: &str) -> Result<Self, Self::Error> {
        Key::new(s)
    }
}

impl TryFrom<String> for Key {
    type Error = Error;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Key::new(s)
    }
}

/// A validated key filter: a key whose tokens may also be `*` (one token) or a final `>`
/// (one or more tokens).
///
/// ```
/// use kvtk_core::KeyFilter;
/// assert!(KeyFilter::new("config.>").is_ok());
/// assert!(KeyFilter::new("users.*.name").is_ok());
/// assert!(KeyFilter::new("a.>.b").is_err());
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct KeyFilter(String);

impl KeyFilter {
    /// Validates `filter`.
    pub fn new(filter: impl Into<String>) -> Result<KeyFilter, Error> {
        let filter = filter.into();
        match check(&filter, true) {
            Ok(()) => Ok(KeyFilter(filter)),
            Err(rule) => Err(invalid_key(&filter, rule)),
        }
    }

    /// The filter matching every key.
    pub fn all() -> KeyFilter {
        KeyFilter(">".to_string())
    }

    /// The filter as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether `key` matches this filter.
    pub fn matches(&self, key: &str) -> bool {
        let mut pat = self.0.split('.');
        let mut toks = key.split('.');
        loop {
            match (pat.next(), toks.next()) {
                (Some(">"), Some(_)) => return true,
                (Some("*"), Some(_)) => {}
                (Some(p), Some(t)) if p == t => {}
                (None, None) => return true,
                _ => return false,
            }
        }
    }
}

impl From<Key> for KeyFilter {
    fn from(k: Key) -> Self {
        KeyFilter(k.0.to_string())
    }
}

impl fmt::Display for KeyFilter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for KeyFilter {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        KeyFilter::new(s)
    }
}

/// A key argument: `&str`, `String` (validated), or a [`Key`] (validated already, and
/// shared, not copied). Validation errors surface when the call that took it runs.
#[derive(Debug)]
pub struct KeyArg(pub(crate) Result<Key, Error>);

impl From<&str> for KeyArg {
    fn from(s: &str) -> Self {
        KeyArg(Key::new(s))
    }
}
impl From<String> for KeyArg {
    fn from(s: String) -> Self {
        KeyArg(Key::new(s))
    }
}
impl From<&String> for KeyArg {
    fn from(s: &String) -> Self {
        KeyArg(Key::new(s))
    }
}
impl From<Key> for KeyArg {
    fn from(k: Key) -> Self {
        KeyArg(Ok(k))
    }
}
impl From<&Key> for KeyArg {
    fn from(k: &Key) -> Self {
        KeyArg(Ok(k.clone()))
    }
}

/// A key filter argument: `&str`, `String`, [`Key`] or [`KeyFilter`]. Validation errors
/// surface when the watch starts.
#[derive(Debug)]
pub struct KeyFilterArg(pub(crate) Result<KeyFilter, Error>);

impl From<&str> for KeyFilterArg {
    fn from(s: &str) -> Self {
        KeyFilterArg(KeyFilter::new(s))
    }
}
impl From<String> for KeyFilterArg {
    fn from(s: String) -> Self {
        KeyFilterArg(KeyFilter::new(s))
    }
}
impl From<&String> for KeyFilterArg {
    fn from(s: &String) -> Self {
        KeyFilterArg(KeyFilter::new(s.as_str()))
    }
}
impl From<KeyFilter> for KeyFilterArg {
    fn from(f: KeyFilter) -> Self {
        KeyFilterArg(Ok(f))
    }
}
impl From<Key> for KeyFilterArg {
    fn from(k: Key) -> Self {
        KeyFilterArg(Ok(k.into()))
    }
}
impl From<&Key> for KeyFilterArg {
    fn from(k: &Key) -> Self {
        KeyFilterArg(Ok(k.clone().into()))
    }
}

/// Turns arbitrary user strings into valid keys and back (the seed's `Base64KeyCodec`).
pub trait KeyCodec: Send + Sync {
    /// Encodes a user string into a valid key.
    fn encode_key(&self, user_key: &str) -> Result<Key, Error>;
    /// Decodes a key back into the user string.
    fn decode_key(&self, key: &Key) -> Result<String, Error>;
}

/// Encodes any string (spaces, unicode, `*`, `>`...) of 1 to 767 bytes as one URL-safe
/// base64 token. Longer or empty user keys fail with
/// [`ErrorKind::InvalidKey`](crate::ErrorKind::InvalidKey): base64 makes a key a third
/// longer, and the encoded key must stay within [`MAX_KEY_LEN`].
///
/// ```
/// use kvtk_core::{Base64KeyCodec, KeyCodec};
/// let codec = Base64KeyCodec;
/// let key = codec.encode_key("user: Zoë > admins").unwrap();
/// assert_eq!(codec.decode_key(&key).unwrap(), "user: Zoë > admins");
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct Base64KeyCodec;

impl KeyCodec for Base64KeyCodec {
    fn encode_key(&self, user_key: &str) -> Result<Key, Error> {
        if user_key.is_empty() {
            return Err(invalid_key(user_key, KeyRule::Empty));
        }
        if user_key.len() > MAX_ENCODED_USER_KEY_LEN {
            return Err(invalid_key(
                user_key,
                KeyRule::UserKeyTooLong(user_key.len()),
            ));
        }
        let enc = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(user_key.as_bytes());
        // URL-safe base64 may start with "_kv"; a fixed one-letter prefix keeps it valid.
        Key::new(format!("b{enc}"))
    }

    fn decode_key(&self, key: &Key) -> Result<String, Error> {
        let body = key
            .as_str()
            .strip_prefix('b')
            .ok_or_else(|| Error::codec("key was not made by Base64KeyCodec".to_string()))?;
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(body)
            .map_err(|e| Error::codec(format!("key is not base64: {e}")))?;
        String::from_utf8(bytes).map_err(|e| Error::codec(format!("key is not UTF-8: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules() {
        assert!(Key::new("a.b-c_d=e/f").is_ok());
        assert_eq!(check("", false), Err(KeyRule::Empty));
        assert_eq!(check("a..b", false), Err(KeyRule::EmptyToken));
        assert_eq!(check(".a", false), Err(KeyRule::EmptyToken));
        assert_eq!(check("a.", false), Err(KeyRule::EmptyToken));
        assert_eq!(check("_kv.x", false), Err(KeyRule::Reserved));
        assert_eq!(
            check("a b", false),
            Err(KeyRule::BadChar { ch: ' ', at: 1 })
        );
        assert_eq!(
            check("a.*", false),
            Err(KeyRule::BadChar { ch: '*', at: 2 })
        );
        assert_eq!(check("é", false), Err(KeyRule::BadChar { ch: 'é', at: 0 }));
        assert!(check(&"a".repeat(MAX_KEY_LEN + 1), false).is_err());
        assert_eq!(check("a.>.b", true), Err(KeyRule::BadWildcard));
        assert_eq!(check("a*", true), Err(KeyRule::BadWildcard));
        assert!(check("a.*.>", true).is_ok());
    }

    #[test]
    fn base64_codec_takes_user_keys_up_to_767_bytes() {
        let codec = Base64KeyCodec;
        let longest = "é".repeat(383) + "x";
        assert_eq!(longest.len(), 767);
        let key = codec.encode_key(&longest).unwrap();
        assert_eq!(key.as_str().len(), MAX_KEY_LEN);
        assert_eq!(codec.decode_key(&key).unwrap(), longest);
        let err = codec.encode_key(&"x".repeat(768)).unwrap_err();
        assert_eq!(err.kind(), crate::ErrorKind::InvalidKey);
        assert!(err.to_string().contains("768 bytes"), "{err}");
    }

    proptest::proptest! {
        #[test]
        fn the_one_pass_check_agrees_with_the_rules(s in "[a-c_k v.*>é-]{0,12}", wildcards: bool) {
            let plain = plainly_valid(s.as_bytes(), wildcards);
            proptest::prop_assert_eq!(plain, broken_rule(&s, wildcards).is_ok(), "{:?}", s);
        }
    }

    #[test]
    fn subjects_to_keys() {
        let key = |s| Key::from_subject(s).map(Key::into_string);
        assert_eq!(key("$KV.b.a.b.c").as_deref(), Some("a.b.c"));
        assert_eq!(key("$KV.b"), None);
        assert_eq!(key("other"), None);
    }

    #[test]
    fn filter_matching() {
        let f = KeyFilter::new("a.*.c").unwrap();
        assert!(f.matches("a.b.c"));
        assert!(!f.matches("a.b.d"));
        assert!(!f.matches("a.b"));
        let g = KeyFilter::new("a.>").unwrap();
        assert!(g.matches("a.b"));
        assert!(g.matches("a.b.c"));
        assert!(!g.matches("a"));
        assert!(KeyFilter::all().matches("x"));
    }

    #[test]
    fn base64_roundtrip_any_string() {
        for s in ["x", "_kv", "a b", "…>*", "\u{0}", "🙂.🙂"] {
            let k = Base64KeyCodec.encode_key(s).unwrap();
            assert_eq!(Base64KeyCodec.decode_key(&k).unwrap(), s);
        }
        assert!(Base64KeyCodec.encode_key("").is_err());
        assert!(Base64KeyCodec
            .decode_key(&Key::new("zzz").unwrap())
            .is_err());
    }
}
