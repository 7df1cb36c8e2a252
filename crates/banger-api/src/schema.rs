//! The published API: a JSON Schema (draft 2020-12) of every method's params and result,
//! generated from the types in this crate. `banger api schema` prints it; the checked-in
//! copy (`docs/api-schema.json`) is compared with it by a test, so it cannot drift.

use schemars::generate::SchemaSettings;
use serde_json::{Map, Value, json};

use crate::methods;

/// Doc attributes as `stringify!` renders them (`doc = r" Text."`, one per doc line) → the
/// text.
fn doc_text(raw: &str) -> String {
    raw.split("doc =")
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(|p| {
            let p = p.strip_prefix('r').unwrap_or(p);
            p.trim_matches('#').trim_matches('"').trim()
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// How a method streams.
fn streams(name: &str) -> &'static str {
    if methods::DUPLEX.contains(&name) {
        "duplex"
    } else if methods::STREAMING.contains(&name) {
        "out"
    } else {
        "none"
    }
}

/// The whole API as one JSON Schema document.
pub fn api_schema() -> Value {
    let mut generator = SchemaSettings::draft2020_12().into_generator();
    let mut methods_out = Map::new();
    for (name, doc, params, result) in methods::schemas(&mut generator) {
        methods_out.insert(
            name.to_owned(),
            json!({
                "description": doc_text(doc),
                "streams": streams(name),
                "params": params,
                "result": result,
            }),
        );
    }
    let error = generator.subschema_for::<crate::RpcError>();
    json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "banger daemon API",
        "description": "JSON-RPC 2.0 over bangerd's unix socket; see docs/PROTOCOL.md for framing, versions, errors and streams.",
        "protocol": crate::PROTOCOL_VERSION,
        "methods": methods_out,
        "error": error,
        "$defs": generator.take_definitions(true),
    })
}

/// [`api_schema`] as the text of the checked-in file.
pub fn api_schema_text() -> String {
    // A JSON value always serializes.
    serde_json::to_string_pretty(&api_schema()).unwrap_or_default() + "\n"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_every_method_has_a_described_schema() {
        let s = api_schema();
        let m = s["methods"].as_object().unwrap();
        assert_eq!(m.len(), methods::ALL.len());
        let exec = &m["vm.exec"];
        assert_eq!(exec["streams"], "duplex");
        assert!(
            exec["description"]
                .as_str()
                .unwrap()
                .starts_with("Runs a command")
        );
        assert_eq!(m["vm.logs"]["streams"], "out");
        let defs = s["$defs"].as_object().unwrap();
        let params = &defs["VmExecParams"];
        assert!(
            params["properties"]["argv"]["description"].is_string(),
            "{params}"
        );
        assert!(defs.contains_key("ErrorCode"));
    }

    #[test]
    fn test_the_checked_in_schema_is_current() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/api-schema.json");
        let want = api_schema_text();
        if std::env::var_os("BANGER_UPDATE_SCHEMA").is_some() {
            std::fs::write(path, &want).unwrap();
        }
        let have = std::fs::read_to_string(path).unwrap_or_default();
        assert!(
            have == want,
            "docs/api-schema.json is out of date: run `BANGER_UPDATE_SCHEMA=1 cargo test -p banger-api schema` (or `banger api schema > docs/api-schema.json`)"
        );
    }
}
