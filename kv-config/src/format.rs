//! Document formats: JSON always, TOML and YAML behind the `toml` and `yaml` features.

use std::path::Path;

use serde_json::Value;

/// How a whole-document value (and a local file) is encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Format {
    /// JSON (the default).
    #[default]
    Json,
    /// TOML (feature `toml`).
    #[cfg(feature = "toml")]
    Toml,
    /// YAML (feature `yaml`).
    #[cfg(feature = "yaml")]
    Yaml,
}

impl Format {
    /// The format of a file by its extension: `.json`, `.toml` (feature `toml`), `.yaml` /
    /// `.yml` (feature `yaml`). `None` for anything else.
    pub fn from_path(path: &Path) -> Option<Format> {
        match path.extension()?.to_str()? {
            "json" => Some(Format::Json),
            #[cfg(feature = "toml")]
            "toml" => Some(Format::Toml),
            #[cfg(feature = "yaml")]
            "yaml" | "yml" => Some(Format::Yaml),
            _ => None,
        }
    }

    /// Parses a document into a JSON tree.
    pub(crate) fn parse(self, bytes: &[u8]) -> Result<Value, String> {
        match self {
            Format::Json => serde_json::from_slice(bytes).map_err(|e| format!("invalid json: {e}")),
            #[cfg(feature = "toml")]
            Format::Toml => {
                let s = std::str::from_utf8(bytes).map_err(|e| format!("invalid toml: {e}"))?;
                toml::from_str(s).map_err(|e| toml_error(s, &e))
            }
            #[cfg(feature = "yaml")]
            Format::Yaml => serde_saphyr::from_slice_with_options(bytes, yaml_options())
                .map_err(|e| format!("invalid yaml: {e}")),
        }
    }

    /// Encodes a JSON tree as a document.
    pub(crate) fn encode(self, v: &Value) -> Result<Vec<u8>, String> {
        match self {
            Format::Json => serde_json::to_vec_pretty(v).map_err(|e| e.to_string()),
            #[cfg(feature = "toml")]
            Format::Toml => toml::to_string(v)
                .map(String::into_bytes)
                .map_err(|e| format!("cannot encode as toml: {e}")),
            #[cfg(feature = "yaml")]
            Format::Yaml => serde_saphyr::to_string(v)
                .map(String::into_bytes)
                .map_err(|e| format!("cannot encode as yaml: {e}")),
        }
    }
}

/// A TOML parse error by message, line and column: toml's own Display quotes the offending
/// line, and configuration may hold secrets that must not reach logs.
#[cfg(feature = "toml")]
fn toml_error(text: &str, e: &toml::de::Error) -> String {
    let Some(at) = e.span().map(|span| span.start.min(text.len())) else {
        return format!("invalid toml: {}", e.message());
    };
    let before = &text.as_bytes()[..at];
    let line = before.iter().filter(|b| **b == b'\n').count() + 1;
    let line_start = before
        .iter()
        .rposition(|b| *b == b'\n')
        .map_or(0, |i| i + 1);
    let column = text
        .get(line_start..at)
        .map_or(at - line_start, |s| s.chars().count())
        + 1;
    format!(
        "invalid toml: {} at line {line} column {column}",
        e.message()
    )
}

/// YAML 1.2 core schema, as serde_yaml 0.9 read it: only `true`/`false` are booleans (`yes`,
/// `on` stay strings), duplicate keys are errors. Errors carry a line and column but no
/// snippet of the document: configuration may hold secrets, and errors end up in logs.
#[cfg(feature = "yaml")]
fn yaml_options() -> serde_saphyr::Options {
    serde_saphyr::options! {
        strict_booleans: true,
        with_snippet: false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    proptest::proptest! {
        #[test]
        fn documents_decode_or_name_their_format(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..64)) {
            let formats = [
                Format::Json,
                #[cfg(feature = "toml")]
                Format::Toml,
                #[cfg(feature = "yaml")]
                Format::Yaml,
            ];
            for f in formats {
                if let Err(e) = f.parse(&bytes) {
                    proptest::prop_assert!(e.starts_with("invalid "), "{}", e);
                }
            }
        }

        #[test]
        fn json_documents_round_trip(m in proptest::collection::btree_map("[a-z]{1,6}", (proptest::prelude::any::<i64>(), "\\PC{0,8}", proptest::prelude::any::<bool>()), 0..5)) {
            let v = serde_json::json!(m);
            let bytes = Format::Json.encode(&v).unwrap();
            proptest::prop_assert_eq!(Format::Json.parse(&bytes).unwrap(), v);
        }
    }

    #[test]
    fn json_roundtrip_and_errors() {
        let v = json!({"a": {"b": [1, 2]}});
        let bytes = Format::Json.encode(&v).unwrap();
        assert_eq!(Format::Json.parse(&bytes).unwrap(), v);
        assert!(Format::Json.parse(b"{").is_err());
        assert_eq!(
            Format::from_path(Path::new("x/app.json")),
            Some(Format::Json)
        );
        assert_eq!(Format::from_path(Path::new("app.ini")), None);
    }

    #[cfg(feature = "toml")]
    #[test]
    fn toml_roundtrip() {
        let v = json!({"name": "x", "db": {"pool_size": 3}});
        let bytes = Format::Toml.encode(&v).unwrap();
        assert_eq!(Format::Toml.parse(&bytes).unwrap(), v);
        assert!(Format::Toml.parse(b"= nope").is_err());
        let e = Format::Toml
            .parse("name = \"x\"\npassword = \"hunter2-secret\n".as_bytes())
            .unwrap_err();
        assert!(
            e.starts_with("invalid toml: ") && e.contains("line 2"),
            "{e}"
        );
        assert!(!e.contains("hunter2-secret"), "{e}");
    }

    #[cfg(feature = "yaml")]
    #[test]
    fn yaml_roundtrip() {
        let v = json!({"name": "x", "db": {"pool_size": 3}});
        let bytes = Format::Yaml.encode(&v).unwrap();
        assert_eq!(Format::Yaml.parse(&bytes).unwrap(), v);
        assert!(Format::Yaml.parse(b"a: [").is_err());
    }

    #[cfg(feature = "yaml")]
    #[test]
    fn yaml_reads_the_core_schema_and_keeps_documents_out_of_errors() {
        let v = Format::Yaml
            .parse(b"enabled: true\nmode: yes\nport: 8080\nratio: 0.5\nname: ~\n")
            .unwrap();
        assert_eq!(
            v,
            json!({"enabled": true, "mode": "yes", "port": 8080, "ratio": 0.5, "name": null})
        );
        assert!(Format::Yaml.parse(b"a: 1\na: 2\n").is_err());
        let e = Format::Yaml
            .parse(b"password: hunter2-secret\nlist: [\n")
            .unwrap_err();
        assert!(e.starts_with("invalid yaml: "), "{e}");
        assert!(!e.contains("hunter2-secret"), "{e}");
    }
}
