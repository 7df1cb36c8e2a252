//! `banger mcp install` and `banger api schema`, run as a user would: the printed entry is
//! valid for its client; writing merges into an existing config without losing anything.
#![allow(clippy::tests_outside_test_module, clippy::unwrap_used)]

mod common;

use std::process::Command;

use common::banger_bin;
use serde_json::Value;

fn banger(home: &std::path::Path, args: &[&str]) -> std::process::Output {
    Command::new(banger_bin())
        .args(args)
        .env("HOME", home)
        .env("BANGER_HOME", home.join("banger"))
        .current_dir(home)
        .output()
        .unwrap()
}

#[test]
fn mcp_install_prints_and_merges_valid_entries() {
    let home = tempfile::tempdir().unwrap();
    let out = banger(
        home.path(),
        &["mcp", "install", "--client", "claude-code", "--print"],
    );
    assert!(out.status.success());
    let entry: Value = serde_json::from_slice(&out.stdout).unwrap();
    let banger_entry = &entry["mcpServers"]["banger"];
    assert!(
        std::path::Path::new(banger_entry["command"].as_str().unwrap()).is_absolute(),
        "{entry}"
    );
    assert_eq!(banger_entry["args"], serde_json::json!(["mcp"]));

    // cursor: merged into an existing file, other servers and keys kept.
    let cursor = home.path().join(".cursor/mcp.json");
    std::fs::create_dir_all(cursor.parent().unwrap()).unwrap();
    std::fs::write(
        &cursor,
        r#"{"mcpServers":{"other":{"command":"x"}},"keep":1}"#,
    )
    .unwrap();
    let out = banger(
        home.path(),
        &["mcp", "install", "--client", "cursor", "--ephemeral"],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_str(&std::fs::read_to_string(&cursor).unwrap()).unwrap();
    assert_eq!(v["keep"], 1);
    assert_eq!(v["mcpServers"]["other"]["command"], "x");
    assert_eq!(
        v["mcpServers"]["banger"]["args"],
        serde_json::json!(["mcp", "--ephemeral"])
    );
    // claude-code writes the project's .mcp.json.
    assert!(
        banger(home.path(), &["mcp", "install", "--client", "claude-code"])
            .status
            .success()
    );
    let v: Value =
        serde_json::from_str(&std::fs::read_to_string(home.path().join(".mcp.json")).unwrap())
            .unwrap();
    assert!(v["mcpServers"]["banger"]["command"].is_string());
    // A file that is not JSON is refused, untouched, with a hint.
    let gemini = home.path().join(".gemini/settings.json");
    std::fs::create_dir_all(gemini.parent().unwrap()).unwrap();
    std::fs::write(&gemini, "not json").unwrap();
    let out = banger(home.path(), &["mcp", "install", "--client", "gemini"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("hint:"));
    assert_eq!(std::fs::read_to_string(&gemini).unwrap(), "not json");
}

#[test]
fn api_schema_prints_the_checked_in_schema() {
    let home = tempfile::tempdir().unwrap();
    let out = banger(home.path(), &["api", "schema"]);
    assert!(out.status.success());
    let file = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/api-schema.json");
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        std::fs::read_to_string(file).unwrap()
    );
}

#[test]
fn mcp_http_refuses_non_loopback_addresses() {
    let home = tempfile::tempdir().unwrap();
    let out = banger(home.path(), &["mcp", "--http", "0.0.0.0:8731"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("not a loopback address"), "{err}");
    assert!(
        !home.path().join("banger/run").exists(),
        "bad input started nothing"
    );
}
