//! The candidate pipeline: layer, decode, check strictness, validate — all to the side.

use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::{Map, Value};

use crate::error::{RejectKind, Rejection};
use crate::layer::merge;

/// A configuration type that checks itself; use it with
/// [`ConfigBuilder::validated`](crate::ConfigBuilder::validated).
///
/// ```
/// use kvtk_config::Validate;
/// struct Pool { min: u32, max: u32 }
/// impl Validate for Pool {
///     fn validate(&self) -> Result<(), String> {
///         if self.min > self.max { return Err(format!("min {} > max {}", self.min, self.max)) }
///         Ok(())
///     }
/// }
/// assert!(Pool { min: 2, max: 1 }.validate().is_err());
/// ```
pub trait Validate {
    /// `Err(reason)` refuses the value.
    fn validate(&self) -> Result<(), String>;
}

pub(crate) type Validator<T> = Arc<dyn Fn(&T) -> Result<(), String> + Send + Sync>;

/// The layers below and above the KV, and the checks every candidate goes through.
pub(crate) struct Pipeline<T> {
    /// Code defaults (the type's serialized defaults), or `{}`.
    pub(crate) defaults: Value,
    /// The optional local file, or `{}`.
    pub(crate) file: Value,
    /// Environment overrides, or `{}`.
    pub(crate) env: Value,
    pub(crate) strict: bool,
    pub(crate) validator: Option<Validator<T>>,
    _t: PhantomData<fn() -> T>,
}

impl<T> fmt::Debug for Pipeline<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pipeline")
            .field("defaults", &self.defaults)
            .field("file", &self.file)
            .field("env", &self.env)
            .field("strict", &self.strict)
            .field("validator", &self.validator.is_some())
            .finish()
    }
}

impl<T> Clone for Pipeline<T> {
    fn clone(&self) -> Self {
        Pipeline {
            defaults: self.defaults.clone(),
            file: self.file.clone(),
            env: self.env.clone(),
            strict: self.strict,
            validator: self.validator.clone(),
            _t: PhantomData,
        }
    }
}

impl<T> Default for Pipeline<T> {
    fn default() -> Self {
        Pipeline {
            defaults: Value::Object(Map::new()),
            file: Value::Object(Map::new()),
            env: Value::Object(Map::new()),
            strict: false,
            validator: None,
            _t: PhantomData,
        }
    }
}

impl<T: Serialize + DeserializeOwned> Pipeline<T> {
    /// Builds the candidate: defaults < file < `kv` < env, decoded and validated. Returns the
    /// value and its normalized JSON form (the type re-serialized), which is what
    /// deduplication and diffs compare.
    pub(crate) fn candidate(&self, kv: Option<&Value>) -> Result<(T, Value), Rejection> {
        // Every reader runs this for every update: skip the layers that are empty, and decode
        // a lone layer where it lies instead of cloning it.
        let empty = |v: &Value| v.as_object().is_some_and(Map::is_empty);
        let mut layers = [Some(&self.defaults), Some(&self.file), kv, Some(&self.env)]
            .into_iter()
            .flatten()
            .filter(|layer| !empty(layer));
        let Some(first) = layers.next() else {
            return self.decode(&Value::Object(Map::new()));
        };
        let Some(second) = layers.next() else {
            return self.decode(first);
        };
        let mut doc = first.clone();
        for layer in std::iter::once(second).chain(layers) {
            merge(&mut doc, layer.clone());
        }
        self.decode(&doc)
    }

    /// Decodes a complete document, then checks strictness and the validator.
    pub(crate) fn decode(&self, doc: &Value) -> Result<(T, Value), Rejection> {
        let mut unknown = Vec::new();
        let value: T = serde_ignored::deserialize(doc, |path| unknown.push(path.to_string()))
            .map_err(|e| Rejection::new(RejectKind::WrongType, e.to_string()))?;
        if self.strict && !unknown.is_empty() {
            return Err(Rejection::new(
                RejectKind::UnknownField,
                format!("unknown field(s): {}", unknown.join(", ")),
            )
            .with_fields(unknown));
        }
        self.check(value)
    }

    /// Runs the validator on a value and normalizes it.
    pub(crate) fn check(&self, value: T) -> Result<(T, Value), Rejection> {
        if let Some(v) = &self.validator {
            v(&value).map_err(|m| Rejection::new(RejectKind::Invalid, m))?;
        }
        let json = serde_json::to_value(&value).map_err(|e| {
            Rejection::new(
                RejectKind::Invalid,
                format!("value does not serialize: {e}"),
            )
        })?;
        Ok((value, json))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;
    use serde_json::json;

    #[derive(Debug, Serialize, Deserialize, PartialEq)]
    struct Cfg {
        name: String,
        db: Db,
    }
    #[derive(Debug, Serialize, Deserialize, PartialEq)]
    struct Db {
        pool_size: u32,
    }

    fn pipeline() -> Pipeline<Cfg> {
        Pipeline {
            defaults: json!({"name": "default", "db": {"pool_size": 1}}),
            file: json!({"db": {"pool_size": 2}}),
            env: json!({"name": "from-env"}),
            validator: Some(Arc::new(|c: &Cfg| {
                if c.db.pool_size == 0 {
                    Err("pool_size must be positive".into())
                } else {
                    Ok(())
                }
            })),
            ..Pipeline::default()
        }
    }

    #[test]
    fn precedence_defaults_file_kv_env() {
        let p = pipeline();
        let (c, _) = p.candidate(None).unwrap();
        assert_eq!((c.name.as_str(), c.db.pool_size), ("from-env", 2));
        let (c, json) = p
            .candidate(Some(&json!({"name": "kv", "db": {"pool_size": 3}})))
            .unwrap();
        assert_eq!((c.name.as_str(), c.db.pool_size), ("from-env", 3));
        assert_eq!(json, json!({"name": "from-env", "db": {"pool_size": 3}}));
    }

    #[test]
    fn rejections_by_kind() {
        let mut p = pipeline();
        let kind = |p: &Pipeline<Cfg>, v: Value| p.candidate(Some(&v)).unwrap_err().kind();
        assert_eq!(
            kind(&p, json!({"db": {"pool_size": "many"}})),
            RejectKind::WrongType
        );
        assert_eq!(
            kind(&p, json!({"db": {"pool_size": 0}})),
            RejectKind::Invalid
        );
        // lenient by default, strict on request
        assert!(p.candidate(Some(&json!({"extra": 1}))).is_ok());
        p.strict = true;
        let r = p
            .candidate(Some(&json!({"extra": 1, "db": {"more": 2}})))
            .unwrap_err();
        assert_eq!(r.kind(), RejectKind::UnknownField);
        assert_eq!(r.fields(), ["db.more", "extra"]);
    }
}
