//! JSON Schemas the Configuration view checks documents against: one for every document, or
//! one per document key.

use std::collections::HashMap;

use serde_json::{json, Value};

use crate::error::Error;

/// The schemas given to the console.
#[derive(Default)]
pub(crate) struct Schemas {
    all: Option<jsonschema::Validator>,
    by_key: HashMap<String, jsonschema::Validator>,
}

impl Schemas {
    /// Compiles `schema` for document `key`, or for every document without one of its own.
    pub(crate) fn add(&mut self, key: Option<String>, schema: &Value) -> Result<(), Error> {
        let v = jsonschema::validator_for(schema).map_err(|e| {
            Error::invalid(format!(
                "the schema for {} is not a valid JSON Schema: {e}",
                key.as_deref().unwrap_or("every document")
            ))
        })?;
        match key {
            Some(k) => {
                self.by_key.insert(k, v);
            }
            None => self.all = Some(v),
        }
        Ok(())
    }

    /// The schema that applies to document `key`.
    pub(crate) fn for_key(&self, key: &str) -> Option<Checker<'_>> {
        self.by_key.get(key).or(self.all.as_ref()).map(Checker)
    }
}

/// One compiled schema.
pub(crate) struct Checker<'a>(&'a jsonschema::Validator);

impl Checker<'_> {
    /// `{"valid": bool, "errors": ["/path: message", …]}`.
    pub(crate) fn check(&self, v: &Value) -> Value {
        let errors: Vec<String> = self
            .0
            .iter_errors(v)
            .map(|e| {
                let at = e.instance_path().to_string();
                format!("{}: {e}", if at.is_empty() { "/" } else { &at })
            })
            .collect();
        json!({"valid": errors.is_empty(), "errors": errors})
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_schema_wins_over_the_general_one() {
        let mut s = Schemas::default();
        s.add(None, &json!({"type": "object"})).unwrap_or_default();
        s.add(Some("n".into()), &json!({"type": "number"}))
            .unwrap_or_default();
        let check = |k: &str, v: Value| s.for_key(k).map(|c| c.check(&v)["valid"].clone());
        assert_eq!(check("app", json!({})), Some(json!(true)));
        assert_eq!(check("app", json!(1)), Some(json!(false)));
        assert_eq!(check("n", json!(1)), Some(json!(true)));
        assert!(s.add(None, &json!({"type": 12})).is_err());
    }
}
