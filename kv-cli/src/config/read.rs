//! The reads (`get`, `history`, `diff`), what a write reports, and dotted paths in a value.

use std::collections::BTreeSet;

use kvtk_config::{flatten, ConfigWriter, Written};
use kvtk_core::Revision;
use serde_json::{json, Map, Value};

use crate::error::{CliError, Result};
use crate::util::{print_json, print_line};

/// A command-line value: JSON when it parses, else a string.
pub(super) fn parse_value(s: &str) -> Value {
    serde_json::from_str(s).unwrap_or_else(|_| Value::String(s.to_string()))
}

/// Sets `path` (dotted) in `root`, making objects on the way.
pub(super) fn set_path(root: &mut Value, path: &str, value: Value) {
    let mut cur = root;
    for part in path.split('.') {
        if !cur.is_object() {
            *cur = Value::Object(Map::new());
        }
        let Value::Object(map) = cur else { return };
        cur = map.entry(part.to_string()).or_insert(Value::Null);
    }
    *cur = value;
}

fn get_path<'a>(root: &'a Value, path: &str) -> Option<&'a Value> {
    path.split('.').try_fold(root, |v, part| v.get(part))
}

pub(super) fn report(w: Written) -> Result<u8> {
    let rev = w
        .revision
        .map_or_else(|| "none".to_string(), |r| r.to_string());
    if w.changed.is_empty() {
        print_line(format!("unchanged (revision {rev})"))?;
    } else {
        // The document's root is "" when a first write created it: name the fields only.
        let fields: Vec<&str> = w
            .changed
            .iter()
            .map(String::as_str)
            .filter(|p| !p.is_empty())
            .collect();
        let fields = if fields.is_empty() {
            "the whole document".to_string()
        } else {
            fields.join(", ")
        };
        print_line(format!("revision {rev}: {fields}"))?;
    }
    Ok(0)
}

/// A value for people: strings bare, anything else as pretty JSON.
pub(super) fn human(v: &Value) -> Result<String> {
    Ok(match v {
        Value::String(s) => s.clone(),
        other => serde_json::to_string_pretty(other)?,
    })
}

pub(super) async fn get(
    writer: &ConfigWriter<Value>,
    path: Option<&str>,
    json: bool,
) -> Result<u8> {
    let (value, rev) = writer.get().await?;
    let v = match path {
        Some(p) => get_path(&value, p)
            .ok_or_else(|| CliError::msg(format!("no value at {p}")))?
            .clone(),
        None => value,
    };
    if json {
        print_json(&json!({ "revision": rev.map(Revision::get), "value": v }))?;
    } else {
        print_line(human(&v)?)?;
    }
    Ok(0)
}

pub(super) async fn history(writer: &ConfigWriter<Value>, json: bool) -> Result<u8> {
    let versions = writer.history().await?;
    let rows: Vec<Value> = versions
        .iter()
        .map(|v| match &v.value {
            Ok(value) => json!({ "revision": v.revision.get(), "value": value }),
            Err(r) => json!({ "revision": v.revision.get(), "rejected": r.message() }),
        })
        .collect();
    if json {
        print_json(&rows)?;
        return Ok(0);
    }
    for v in &versions {
        match &v.value {
            Ok(value) => print_line(format!("{}  {value}", v.revision))?,
            Err(r) => print_line(format!("{}  (not valid: {})", v.revision, r.message()))?,
        }
    }
    Ok(0)
}

/// The configuration at `rev` from the history.
async fn at(writer: &ConfigWriter<Value>, rev: Revision) -> Result<Value> {
    let v = writer
        .history()
        .await?
        .into_iter()
        .find(|v| v.revision == rev)
        .ok_or_else(|| CliError::msg(format!("revision {rev} is not in the history")))?;
    v.value
        .map_err(|r| CliError::msg(format!("revision {rev} is not valid: {}", r.message())))
}

pub(super) async fn diff(
    writer: &ConfigWriter<Value>,
    from: Revision,
    to: Revision,
    json: bool,
) -> Result<u8> {
    let (old, new) = (
        flatten(&at(writer, from).await?),
        flatten(&at(writer, to).await?),
    );
    let paths: BTreeSet<&String> = old.keys().chain(new.keys()).collect();
    let changes: Vec<(&String, Option<&Value>, Option<&Value>)> = paths
        .into_iter()
        .map(|p| (p, old.get(p), new.get(p)))
        .filter(|(_, a, b)| a != b)
        .collect();
    if json {
        let rows: Vec<Value> = changes
            .iter()
            .map(|(p, a, b)| json!({ "path": p, "old": a, "new": b }))
            .collect();
        print_json(&rows)?;
        return Ok(0);
    }
    let show = |v: Option<&Value>| v.map_or_else(|| "(absent)".to_string(), Value::to_string);
    for (p, a, b) in changes {
        print_line(format!("{p}: {} -> {}", show(a), show(b)))?;
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_set_and_get() {
        let mut v = json!(null);
        set_path(&mut v, "db.pool", json!(4));
        set_path(&mut v, "name", json!("x"));
        assert_eq!(v, json!({"db": {"pool": 4}, "name": "x"}));
        assert_eq!(get_path(&v, "db.pool"), Some(&json!(4)));
        assert_eq!(get_path(&v, "db.none"), None);
    }

    #[test]
    fn values_are_json_or_strings() {
        assert_eq!(parse_value("10"), json!(10));
        assert_eq!(parse_value("{\"a\":1}"), json!({"a": 1}));
        assert_eq!(parse_value("hello"), json!("hello"));
    }
}
