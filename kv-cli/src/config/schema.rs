//! `--schema FILE`: a JSON Schema as the writer's and the reader's validation.

use std::path::Path;
use std::sync::Arc;

use serde_json::Value;

use crate::error::{CliError, Result};

/// A value's check: `Err` says why it is refused.
pub(super) type Validator = Arc<dyn Fn(&Value) -> std::result::Result<(), String> + Send + Sync>;

/// The schema's check, or none.
pub(super) fn load_schema(path: Option<&Path>) -> Result<Option<Validator>> {
    let Some(path) = path else { return Ok(None) };
    let schema: Value = read_json(path)?;
    let compiled = jsonschema::validator_for(&schema).map_err(|e| {
        CliError::msg(format!(
            "{} is not a valid JSON Schema: {e}",
            path.display()
        ))
    })?;
    Ok(Some(Arc::new(move |v: &Value| {
        let errors: Vec<String> = compiled
            .iter_errors(v)
            .map(|e| {
                let at = e.instance_path().to_string();
                format!("{}: {e}", if at.is_empty() { "/" } else { &at })
            })
            .collect();
        if errors.is_empty() {
            Ok(())
        } else {
            Err(format!("schema: {}", errors.join("; ")))
        }
    })))
}

pub(super) fn read_json(path: &Path) -> Result<Value> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| CliError::msg(format!("cannot read {}: {}", path.display(), e.kind())))?;
    serde_json::from_str(&text)
        .map_err(|e| CliError::msg(format!("{} is not valid JSON: {e}", path.display())))
}
