//! Property tests of the parsing kvtk-core does on user input: keys, filters, the key codec and
//! the value codecs never panic, round-trip, and name the problem when they refuse.

#![allow(clippy::unwrap_used)] // test assertions

use bytes::Bytes;
use kvtk_core::{Base64KeyCodec, Codec, ErrorKind, Json, Key, KeyCodec, KeyFilter, Raw, Utf8};
use proptest::prelude::*;

/// One token of a valid key: the allowed characters, not starting with the reserved `_kv`.
fn token() -> impl Strategy<Value = String> {
    "[A-Za-z0-9=/-][A-Za-z0-9_=/-]{0,7}"
}

fn valid_key() -> impl Strategy<Value = String> {
    prop::collection::vec(token(), 1..6).prop_map(|t| t.join("."))
}

proptest! {
    #[test]
    fn any_string_is_a_key_or_a_named_invalid_key(s in any::<String>()) {
        match Key::new(s.clone()) {
            Ok(k) => {
                prop_assert_eq!(k.as_str(), s.as_str());
                prop_assert!(KeyFilter::new(&s).unwrap().matches(&s));
            }
            Err(e) => {
                prop_assert_eq!(e.kind(), ErrorKind::InvalidKey);
            }
        }
    }

    #[test]
    fn any_string_is_a_filter_or_a_named_invalid_key(s in any::<String>()) {
        if let Err(e) = KeyFilter::new(&s) {
            prop_assert_eq!(e.kind(), ErrorKind::InvalidKey);
            prop_assert!(!e.to_string().is_empty());
        }
    }

    #[test]
    fn valid_keys_parse_and_wildcards_match_them(k in valid_key(), at in any::<prop::sample::Index>()) {
        let key = Key::new(k.clone()).unwrap();
        prop_assert_eq!(key.to_string(), k.clone());
        let mut tokens: Vec<&str> = k.split('.').collect();
        let i = at.index(tokens.len());
        prop_assert!(KeyFilter::new(">").unwrap().matches(&k));
        tokens[i] = "*";
        prop_assert!(KeyFilter::new(tokens.join(".")).unwrap().matches(&k));
        tokens.truncate(i);
        tokens.push(">");
        prop_assert!(KeyFilter::new(tokens.join(".")).unwrap().matches(&k));
    }

    #[test]
    fn base64_codec_round_trips_user_keys(s in any::<String>()) {
        let codec = Base64KeyCodec;
        match codec.encode_key(&s) {
            Ok(key) => {
                prop_assert!(!s.is_empty() && s.len() <= 767);
                prop_assert_eq!(codec.decode_key(&key).unwrap(), s);
            }
            Err(e) => {
                prop_assert!(s.is_empty() || s.len() > 767, "{}", e);
                prop_assert_eq!(e.kind(), ErrorKind::InvalidKey);
            }
        }
    }

    #[test]
    fn long_user_keys_are_refused_with_their_length(n in 768usize..3000) {
        let err = Base64KeyCodec.encode_key(&"k".repeat(n)).unwrap_err();
        prop_assert!(err.to_string().contains(&format!("{n} bytes")), "{}", err);
    }

    #[test]
    fn base64_codec_decodes_any_key_without_panicking(k in valid_key()) {
        if let Err(e) = Base64KeyCodec.decode_key(&Key::new(k).unwrap()) {
            prop_assert_eq!(e.kind(), ErrorKind::Codec);
        }
    }

    #[test]
    fn value_codecs_round_trip(bytes in prop::collection::vec(any::<u8>(), 0..256), s in any::<String>()) {
        let raw = Bytes::from(bytes.clone());
        let enc = Codec::<Bytes>::encode(&Raw, &raw).unwrap();
        prop_assert_eq!(Codec::<Bytes>::decode(&Raw, &enc).unwrap(), raw);
        prop_assert_eq!(Utf8.decode(&Utf8.encode(&s).unwrap()).unwrap(), s.clone());
        let v = serde_json::json!({ "s": s, "n": bytes.len(), "b": bytes });
        let enc = Codec::<serde_json::Value>::encode(&Json, &v).unwrap();
        prop_assert_eq!(Codec::<serde_json::Value>::decode(&Json, &enc).unwrap(), v);
    }

    #[test]
    fn value_codecs_refuse_bad_bytes_with_codec_errors(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        if let Err(e) = Codec::<String>::decode(&Utf8, &bytes) {
            prop_assert_eq!(e.kind(), ErrorKind::Codec);
            prop_assert!(std::str::from_utf8(&bytes).is_err());
        }
        if let Err(e) = Codec::<serde_json::Value>::decode(&Json, &bytes) {
            prop_assert_eq!(e.kind(), ErrorKind::Codec);
        }
    }
}
