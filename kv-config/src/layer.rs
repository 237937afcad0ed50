//! Pure JSON-tree logic: layering (deep merge), field paths, prefix assembly, environment
//! overrides, flattening and diffs. No I/O here, so all of it is unit tested.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

/// The separator of path segments in environment variable names.
pub const ENV_SEPARATOR: &str = "__";

/// Deep-merges `over` into `base`: objects merge key by key, recursively; anything else
/// (scalars, arrays, `null`) in `over` replaces what `base` had.
pub fn merge(base: &mut Value, over: Value) {
    match (base, over) {
        (Value::Object(b), Value::Object(o)) => {
            for (k, v) in o {
                match b.get_mut(&k) {
                    Some(bv) => merge(bv, v),
                    None => {
                        b.insert(k, v);
                    }
                }
            }
        }
        (b, o) => *b = o,
    }
}

/// Merges `value` in at `path` (segments), creating objects on the way. A non-object met on
/// the way is replaced by an object: the deeper key wins.
pub(crate) fn set_path(root: &mut Value, path: &[String], value: Value) {
    let mut at = root;
    for seg in path {
        if !at.is_object() {
            *at = Value::Object(Map::new());
        }
        let Value::Object(map) = at else {
            return;
        };
        at = map.entry(seg.clone()).or_insert(Value::Null);
    }
    if at.is_null() {
        *at = value;
    } else {
        merge(at, value);
    }
}

/// A prefix-mode or environment value: JSON if it parses as JSON, otherwise the raw text as
/// a string. Bytes that are neither JSON nor UTF-8 are an error.
pub(crate) fn parse_value(bytes: &[u8]) -> Result<Value, String> {
    if let Ok(v) = serde_json::from_slice::<Value>(bytes) {
        return Ok(v);
    }
    match std::str::from_utf8(bytes) {
        Ok(s) => Ok(Value::String(s.to_string())),
        Err(e) => Err(format!("value is neither json nor utf-8 text: {e}")),
    }
}

/// Assembles prefix-mode entries (`(key, raw value)`, keys starting with `prefix.`) into one
/// object. Keys are applied shallow first, then in key order, so a deeper key overrides the
/// same field inside an object stored at a parent key. Keys outside the prefix are ignored.
///
/// On a value that cannot be parsed, returns the offending key and the reason.
pub(crate) fn assemble_prefix<'a>(
    prefix: &str,
    entries: impl IntoIterator<Item = (&'a str, &'a [u8])>,
) -> Result<Value, (String, String)> {
    let mut items: Vec<(Vec<String>, &str, &[u8])> = entries
        .into_iter()
        .filter_map(|(k, v)| {
            let rest = k.strip_prefix(prefix)?.strip_prefix('.')?;
            Some((rest.split('.').map(str::to_string).collect(), k, v))
        })
        .collect();
    items.sort_by(|a, b| a.0.len().cmp(&b.0.len()).then_with(|| a.1.cmp(b.1)));
    let mut root = Value::Object(Map::new());
    for (path, key, raw) in items {
        let v = parse_value(raw).map_err(|e| (key.to_string(), e))?;
        set_path(&mut root, &path, v);
    }
    Ok(root)
}

/// The field path an environment variable sets, if it belongs to `prefix`.
///
/// Rules: the name must start with `prefix` followed by `__` (case-sensitive); the rest is
/// split on `__` and each segment is lowercased; a single `_` stays part of a segment. Names
/// with an empty segment (`MYAPP__DB____X`, `MYAPP__`) are ignored.
///
/// ```
/// use kvtk_config::env_path;
/// assert_eq!(env_path("MYAPP", "MYAPP__DB__POOL_SIZE"), Some(vec!["db".to_string(), "pool_size".to_string()]));
/// assert_eq!(env_path("MYAPP", "MYAPPX__DB"), None);
/// assert_eq!(env_path("MYAPP", "MYAPP__"), None);
/// ```
pub fn env_path(prefix: &str, name: &str) -> Option<Vec<String>> {
    let rest = name.strip_prefix(prefix)?.strip_prefix(ENV_SEPARATOR)?;
    let segs: Vec<String> = rest
        .split(ENV_SEPARATOR)
        .map(str::to_ascii_lowercase)
        .collect();
    if segs.iter().any(String::is_empty) {
        return None;
    }
    Some(segs)
}

/// The environment layer: every variable of `vars` under `prefix`, as one object. Values are
/// parsed like prefix-mode values: `5` is a number, `true` a boolean,
/// `"5"` (with quotes) a string, anything that is not JSON a string. Variables are applied in
/// name order, so the result does not depend on the environment's order.
pub fn env_layer(prefix: &str, vars: impl IntoIterator<Item = (String, String)>) -> Value {
    let mut vars: Vec<(Vec<String>, String, String)> = vars
        .into_iter()
        .filter_map(|(k, v)| Some((env_path(prefix, &k)?, k, v)))
        .collect();
    vars.sort_by(|a, b| a.0.len().cmp(&b.0.len()).then_with(|| a.1.cmp(&b.1)));
    let mut root = Value::Object(Map::new());
    for (path, _, v) in vars {
        let v = parse_value(v.as_bytes()).unwrap_or(Value::String(v));
        set_path(&mut root, &path, v);
    }
    root
}

/// Leaf values by dotted path: objects are walked into (an empty object is a leaf), anything
/// else — scalars, arrays, `null` — is a leaf. The root itself, if not an object, has path "".
pub fn flatten(v: &Value) -> BTreeMap<String, Value> {
    fn walk(v: &Value, path: &mut Vec<String>, out: &mut BTreeMap<String, Value>) {
        match v {
            Value::Object(m) if !m.is_empty() => {
                for (k, c) in m {
                    path.push(k.clone());
                    walk(c, path, out);
                    path.pop();
                }
            }
            _ => {
                out.insert(path.join("."), v.clone());
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(v, &mut Vec::new(), &mut out);
    out
}

/// The field paths whose value differs between `old` and `new` (added, removed or changed
/// leaves; see [`flatten`]), sorted.
pub fn diff_paths(old: &Value, new: &Value) -> Vec<String> {
    let (a, b) = (flatten(old), flatten(new));
    let mut out: Vec<String> = a
        .iter()
        .filter(|(k, v)| b.get(*k) != Some(v))
        .map(|(k, _)| k.clone())
        .chain(b.keys().filter(|k| !a.contains_key(*k)).cloned())
        .collect();
    out.sort();
    out.dedup();
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// JSON trees without floats (serde_json's float parsing may differ by one ulp).
    fn tree() -> impl proptest::strategy::Strategy<Value = Value> {
        use proptest::prelude::*;
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            "\\PC{0,8}".prop_map(Value::from),
        ];
        leaf.prop_recursive(3, 24, 4, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
                proptest::collection::btree_map("[a-z_]{1,4}", inner, 0..4)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest::proptest! {
        #[test]
        fn merge_keeps_every_leaf_of_the_override_and_is_idempotent(base in tree(), over in tree()) {
            let mut merged = base.clone();
            merge(&mut merged, over.clone());
            let leaves = flatten(&merged);
            for (path, v) in flatten(&over) {
                if v.as_object().is_some_and(|o| o.is_empty()) {
                    continue;
                }
                proptest::prop_assert_eq!(leaves.get(&path), Some(&v), "{}", path);
            }
            let mut again = merged.clone();
            merge(&mut again, over);
            proptest::prop_assert_eq!(&again, &merged);
            proptest::prop_assert!(diff_paths(&merged, &merged).is_empty());
        }

        #[test]
        fn prefix_and_env_parsing_never_panic(
            entries in proptest::collection::vec(("\\PC{0,12}", proptest::collection::vec(proptest::prelude::any::<u8>(), 0..12)), 0..6),
            vars in proptest::collection::vec(("\\PC{0,16}", "\\PC{0,8}"), 0..6),
        ) {
            let refs: Vec<(&str, &[u8])> = entries.iter().map(|(k, v)| (k.as_str(), v.as_slice())).collect();
            if let Err((key, why)) = assemble_prefix("app", refs) {
                proptest::prop_assert!(entries.iter().any(|(k, _)| *k == key));
                proptest::prop_assert!(why.contains("neither json nor utf-8"), "{}", why);
            }
            let layer = env_layer("APP", vars.clone());
            proptest::prop_assert!(layer.is_object());
            for (name, _) in vars {
                if let Some(path) = env_path("APP", &name) {
                    proptest::prop_assert!(!path.is_empty() && path.iter().all(|s| !s.is_empty()));
                }
            }
        }

        #[test]
        fn values_parse_as_json_or_text(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..32)) {
            match parse_value(&bytes) {
                Ok(Value::String(s)) if serde_json::from_slice::<Value>(&bytes).is_err() => {
                    proptest::prop_assert_eq!(s.as_bytes(), bytes.as_slice());
                }
                Ok(_) => {}
                Err(e) => proptest::prop_assert!(std::str::from_utf8(&bytes).is_err(), "{}", e),
            }
        }
    }

    #[test]
    fn merge_is_deep_and_replaces_non_objects() {
        let mut base = json!({"db": {"host": "a", "pool": 5}, "tags": [1, 2], "x": 1});
        merge(
            &mut base,
            json!({"db": {"pool": 9}, "tags": [3], "x": {"y": 2}}),
        );
        assert_eq!(
            base,
            json!({"db": {"host": "a", "pool": 9}, "tags": [3], "x": {"y": 2}})
        );
    }

    #[test]
    fn prefix_assembly_paths_and_raw_strings() {
        let entries: Vec<(&str, &[u8])> = vec![
            ("app.db.pool_size", b"10"),
            ("app.db", br#"{"host":"h","pool_size":1}"#),
            ("app.name", b"plain text"),
            ("app.quoted", br#""123""#),
            ("app.flag", b"true"),
            ("other.x", b"1"),
        ];
        let v = assemble_prefix("app", entries).unwrap();
        assert_eq!(
            v,
            json!({
                "db": {"host": "h", "pool_size": 10},
                "name": "plain text",
                "quoted": "123",
                "flag": true,
            })
        );
        let err = assemble_prefix("app", vec![("app.bad", &[0xff, 0xfe][..])]).unwrap_err();
        assert_eq!(err.0, "app.bad");
        // a key equal to the prefix, or sharing only its first characters, is not a field
        let v = assemble_prefix("app", vec![("app", &b"1"[..]), ("apple.x", b"2")]).unwrap();
        assert_eq!(v, json!({}));
    }

    #[test]
    fn deeper_key_replaces_scalar_parent() {
        let mut root = json!({});
        set_path(&mut root, &["a".into()], json!(1));
        set_path(&mut root, &["a".into(), "b".into()], json!(2));
        assert_eq!(root, json!({"a": {"b": 2}}));
    }

    #[test]
    fn env_rules() {
        let vars = vec![
            ("MYAPP__DB__POOL_SIZE".to_string(), "20".to_string()),
            ("MYAPP__NAME".to_string(), "svc".to_string()),
            ("MYAPP__ZIP".to_string(), "\"01234\"".to_string()),
            ("MYAPP__DB".to_string(), r#"{"host":"envhost"}"#.to_string()),
            ("MYAPP__BAD____X".to_string(), "1".to_string()),
            ("MYAPP_SINGLE".to_string(), "1".to_string()),
            ("OTHER__X".to_string(), "1".to_string()),
            ("myapp__lower".to_string(), "1".to_string()),
        ];
        assert_eq!(
            env_layer("MYAPP", vars),
            json!({"db": {"host": "envhost", "pool_size": 20}, "name": "svc", "zip": "01234"})
        );
        assert_eq!(
            env_path("MYAPP", "MYAPP__A_B__C"),
            Some(vec!["a_b".into(), "c".into()])
        );
    }

    #[test]
    fn flatten_and_diff() {
        let a = json!({"db": {"host": "h", "pool": 1}, "tags": [1], "e": {}});
        let b = json!({"db": {"host": "h", "pool": 2}, "tags": [1, 2], "n": null});
        let f = flatten(&a);
        assert_eq!(
            f.keys().cloned().collect::<Vec<_>>(),
            vec!["db.host", "db.pool", "e", "tags"]
        );
        assert_eq!(diff_paths(&a, &b), vec!["db.pool", "e", "n", "tags"]);
        assert!(diff_paths(&a, &a).is_empty());
    }

    #[test]
    fn parse_values() {
        assert_eq!(parse_value(b"5").unwrap(), json!(5));
        assert_eq!(parse_value(b"").unwrap(), json!(""));
        assert_eq!(parse_value(b"{oops").unwrap(), json!("{oops"));
        assert!(parse_value(&[0xff]).is_err());
    }
}
