//! Prefix mode's plan: which keys to write and delete so that the fields stored under a
//! prefix (one key per field) become a new value's. Pure, unit-tested.

use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;
use kvtk_core::{Expect, Key, Revision};
use serde_json::Value;

use crate::error::{Error, ErrorKind};
use crate::layer::flatten;

/// A field's write: key, JSON value, expectation on the key.
pub(crate) type Put = (String, Bytes, Expect);

/// A live key's delete, conditional on its revision.
pub(crate) type Delete = (String, Revision);

/// The writes that turn the stored fields into a new value's.
#[derive(Debug, PartialEq)]
pub(crate) struct Plan {
    pub(crate) puts: Vec<Put>,
    pub(crate) deletes: Vec<Delete>,
    /// The field paths changed, sorted.
    pub(crate) changed: Vec<String>,
}

impl Plan {
    /// The plan from the stored `entries` (key → live value or tombstone, revision), whose
    /// document is `old_doc` (defaults applied), to `new`, an object.
    pub(crate) fn of(
        prefix: &str,
        entries: &BTreeMap<String, (Option<Bytes>, Revision)>,
        old_doc: &Value,
        new: &Value,
    ) -> Result<Plan, Error> {
        let new_leaves = flatten(new);
        let (deletes, forced) = deletes(prefix, entries, &new_leaves);
        let (puts, mut changed) = puts(prefix, entries, &flatten(old_doc), &new_leaves, &forced)?;
        for (k, _) in &deletes {
            if let Some(p) = field(prefix, k) {
                if !changed.contains(&p) {
                    changed.push(p);
                }
            }
        }
        changed.sort();
        Ok(Plan {
            puts,
            deletes,
            changed,
        })
    }

    /// How many keys the plan writes.
    pub(crate) fn writes(&self) -> usize {
        self.puts.len() + self.deletes.len()
    }
}

/// The field path of key `k` under `prefix`.
fn field(prefix: &str, k: &str) -> Option<String> {
    k.strip_prefix(prefix)
        .and_then(|r| r.strip_prefix('.'))
        .map(str::to_string)
}

/// Live keys that are not a leaf of the new value (removed fields, or objects stored at a
/// parent key) are deleted, and every new leaf below them is written (the second set).
fn deletes(
    prefix: &str,
    entries: &BTreeMap<String, (Option<Bytes>, Revision)>,
    new_leaves: &BTreeMap<String, Value>,
) -> (Vec<Delete>, BTreeSet<String>) {
    let mut deletes: Vec<Delete> = Vec::new();
    let mut forced: BTreeSet<String> = BTreeSet::new();
    for (k, (v, rev)) in entries {
        let Some(path) = field(prefix, k) else {
            continue;
        };
        if v.is_some() && !new_leaves.contains_key(&path) {
            deletes.push((k.clone(), *rev));
            let below = format!("{path}.");
            forced.extend(new_leaves.keys().filter(|p| p.starts_with(&below)).cloned());
        }
    }
    (deletes, forced)
}

/// The leaves of the new value to write — changed ones and `forced` ones — conditional on
/// their keys' stored revisions; and the changed field paths.
fn puts(
    prefix: &str,
    entries: &BTreeMap<String, (Option<Bytes>, Revision)>,
    old_leaves: &BTreeMap<String, Value>,
    new_leaves: &BTreeMap<String, Value>,
    forced: &BTreeSet<String>,
) -> Result<(Vec<Put>, Vec<String>), Error> {
    let mut puts: Vec<Put> = Vec::new();
    let mut changed: Vec<String> = Vec::new();
    for (path, v) in new_leaves {
        let differs = old_leaves.get(path) != Some(v);
        if !(differs || forced.contains(path)) {
            continue;
        }
        let key = format!("{prefix}.{path}");
        Key::new(key.as_str()).map_err(|e| {
            Error::new(
                ErrorKind::InvalidArgument,
                format!("field {path:?} cannot be a key"),
            )
            .with_source(e)
        })?;
        let bytes =
            serde_json::to_vec(v).map_err(|e| Error::new(ErrorKind::Encode, e.to_string()))?;
        let expect = match entries.get(&key) {
            Some((_, rev)) => Expect::Revision(*rev),
            None => Expect::NoMessage,
        };
        if differs {
            changed.push(path.clone());
        }
        puts.push((key, Bytes::from(bytes), expect));
    }
    Ok((puts, changed))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn rev(n: u64) -> Revision {
        Revision::new(n).unwrap()
    }

    fn stored(fields: &[(&str, &str, u64)]) -> BTreeMap<String, (Option<Bytes>, Revision)> {
        fields
            .iter()
            .map(|(k, v, r)| {
                let v = (!v.is_empty()).then(|| Bytes::from(v.to_string()));
                (format!("app.{k}"), (v, rev(*r)))
            })
            .collect()
    }

    #[test]
    fn only_changed_fields_are_written_conditionally() {
        let entries = stored(&[("a", "1", 3), ("b", "2", 4)]);
        let old = json!({"a": 1, "b": 2});
        let plan = Plan::of("app", &entries, &old, &json!({"a": 1, "b": 5, "c": true})).unwrap();
        let keys: Vec<_> = plan.puts.iter().map(|(k, _, e)| (k.as_str(), *e)).collect();
        assert_eq!(
            keys,
            [
                ("app.b", Expect::Revision(rev(4))),
                ("app.c", Expect::NoMessage)
            ]
        );
        assert!(plan.deletes.is_empty());
        assert_eq!(plan.changed, ["b", "c"]);
        assert_eq!(plan.writes(), 2);
    }

    #[test]
    fn removed_fields_are_deleted_and_a_replaced_parent_forces_its_leaves() {
        // `db` was stored whole at a parent key; the new value has leaves below it, equal
        // to the old document's, which must be written all the same.
        let entries = stored(&[("db", r#"{"pool":1}"#, 5), ("gone", "1", 6), ("old", "", 7)]);
        let old = json!({"db": {"pool": 1}, "gone": 1});
        let plan = Plan::of("app", &entries, &old, &json!({"db": {"pool": 1}})).unwrap();
        assert_eq!(
            plan.deletes,
            [
                ("app.db".to_string(), rev(5)),
                ("app.gone".to_string(), rev(6))
            ]
        );
        let keys: Vec<_> = plan.puts.iter().map(|(k, _, _)| k.as_str()).collect();
        assert_eq!(keys, ["app.db.pool"]);
        assert_eq!(plan.changed, ["db", "gone"]);
    }

    #[test]
    fn a_field_that_cannot_be_a_key_is_refused() {
        let e = Plan::of("app", &BTreeMap::new(), &json!({}), &json!({"a b": 1})).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidArgument);
    }
}
