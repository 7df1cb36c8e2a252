//! `banger mcp`: serve sandboxes to coding agents (`banger_mcp`), and `banger mcp install`:
//! write (or print) a coding agent's MCP config entry for banger.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;
use banger_config::Layout;
use serde_json::{Value, json};

use crate::cli::McpArgs;
use crate::connect::connect;
use crate::output::{self, Hinted};

/// `banger mcp [--http ADDR] [--ephemeral]`.
pub(crate) async fn serve(layout: &Layout, args: &McpArgs) -> anyhow::Result<ExitCode> {
    if let Some(addr) = args.http
        && !addr.ip().is_loopback()
    {
        return Err(Hinted::new(
            format!("--http {addr} is not a loopback address"),
            "banger mcp serves loopback only, e.g. --http 127.0.0.1:8731",
        )
        .into());
    }
    let config = banger_config::Config::load(&layout.config_path)?;
    // Starts bangerd when needed (its progress goes to stderr; stdout is the MCP stream).
    drop(connect(layout).await?);
    let server = banger_mcp::Banger::new(banger_mcp::Settings {
        socket: layout.socket_path.clone(),
        limits: config.mcp.clone(),
        default_image: config.default_image_name.clone(),
    });
    let ended = match args.http {
        Some(addr) => {
            output::status(&format!("banger mcp: streamable http on http://{addr}/mcp"));
            banger_mcp::serve_http(server.clone(), addr).await
        }
        None => banger_mcp::serve_stdio(server.clone()).await,
    }?;
    if args.ephemeral {
        let deleted = server.delete_created().await;
        if !deleted.is_empty() {
            output::status(&format!(
                "banger mcp ({ended:?}): deleted {}",
                deleted.join(", ")
            ));
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Where `client` keeps its MCP servers, and the entry's format.
fn config_file(client: &str) -> anyhow::Result<PathBuf> {
    let home = || {
        std::env::var_os("HOME")
            .map(PathBuf::from)
            .context("HOME is not set")
    };
    Ok(match client {
        // Claude Code's project scope: checked into the repository, shared with the team.
        "claude-code" => PathBuf::from(".mcp.json"),
        "cursor" => home()?.join(".cursor/mcp.json"),
        "codex" => home()?.join(".codex/config.toml"),
        _ => home()?.join(".gemini/settings.json"),
    })
}

fn server_args(ephemeral: bool) -> Vec<String> {
    let mut args = vec!["mcp".to_owned()];
    if ephemeral {
        args.push("--ephemeral".to_owned());
    }
    args
}

/// The JSON entry (`mcpServers.banger`) for claude-code, cursor and gemini.
fn json_entry(exe: &str, ephemeral: bool) -> Value {
    json!({ "command": exe, "args": server_args(ephemeral) })
}

/// The TOML table for codex.
fn toml_entry(exe: &str, ephemeral: bool) -> String {
    let args: Vec<String> = server_args(ephemeral)
        .iter()
        .map(|a| format!("{a:?}"))
        .collect();
    format!(
        "[mcp_servers.banger]\ncommand = {exe:?}\nargs = [{}]\n",
        args.join(", ")
    )
}

/// Adds (or replaces) `mcpServers.banger` in the JSON document `text`.
fn merge_json(text: &str, entry: Value) -> anyhow::Result<String> {
    let mut doc: Value = if text.trim().is_empty() {
        json!({})
    } else {
        serde_json::from_str(text).context("the existing file is not JSON")?
    };
    let obj = doc
        .as_object_mut()
        .context("the existing file is not a JSON object")?;
    let servers = obj.entry("mcpServers").or_insert_with(|| json!({}));
    servers
        .as_object_mut()
        .context("mcpServers is not an object")?
        .insert("banger".into(), entry);
    Ok(serde_json::to_string_pretty(&doc)? + "\n")
}

/// Adds (or replaces) `[mcp_servers.banger]` in the TOML document `text`.
fn merge_toml(text: &str, exe: &str, ephemeral: bool) -> anyhow::Result<String> {
    let mut doc: toml::Table = toml::from_str(text).context("the existing file is not TOML")?;
    let entry: toml::Table = toml::from_str(&toml_entry(exe, ephemeral))?;
    let servers = doc
        .entry("mcp_servers")
        .or_insert_with(|| toml::Value::Table(toml::Table::new()));
    let servers = servers
        .as_table_mut()
        .context("mcp_servers is not a table")?;
    if let Some(banger) = entry.get("mcp_servers").and_then(|s| s.get("banger")) {
        servers.insert("banger".into(), banger.clone());
    }
    Ok(toml::to_string(&doc)?)
}

/// `banger mcp install --client C [--print] [--ephemeral]`.
pub(crate) fn install(client: &str, print: bool, ephemeral: bool) -> anyhow::Result<ExitCode> {
    let exe = std::env::current_exe()
        .ok()
        .and_then(|p| p.canonicalize().ok())
        .map_or_else(|| "banger".to_owned(), |p| p.display().to_string());
    let path = config_file(client)?;
    let codex = client == "codex";
    if print {
        let text = if codex {
            toml_entry(&exe, ephemeral)
        } else {
            serde_json::to_string_pretty(
                &json!({ "mcpServers": { "banger": json_entry(&exe, ephemeral) } }),
            )?
        };
        output::data(text.trim_end());
        output::status(&format!("({client} reads it from {})", path.display()));
        return Ok(ExitCode::SUCCESS);
    }
    let old = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    let new = if codex {
        merge_toml(&old, &exe, ephemeral)
    } else {
        merge_json(&old, json_entry(&exe, ephemeral))
    }
    .map_err(|e| {
        Hinted::new(
            format!("cannot update {}: {e:#}", path.display()),
            "fix the file, or use --print and add the entry by hand",
        )
    })?;
    write_atomically(&path, &new)?;
    output::status(&format!(
        "added banger to {client}'s MCP servers in {}",
        path.display()
    ));
    Ok(ExitCode::SUCCESS)
}

fn write_atomically(path: &Path, text: &str) -> anyhow::Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let tmp = path.with_extension("banger-tmp");
    std::fs::write(&tmp, text).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("replacing {}", path.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_json_entries_merge_without_losing_other_servers() {
        let old = r#"{"mcpServers": {"other": {"command": "x"}}, "theme": "dark"}"#;
        let new = merge_json(old, json_entry("/usr/bin/banger", true)).unwrap();
        let v: Value = serde_json::from_str(&new).unwrap();
        assert_eq!(v["mcpServers"]["other"]["command"], "x");
        assert_eq!(v["theme"], "dark");
        assert_eq!(v["mcpServers"]["banger"]["command"], "/usr/bin/banger");
        assert_eq!(
            v["mcpServers"]["banger"]["args"],
            json!(["mcp", "--ephemeral"])
        );
        let fresh: Value =
            serde_json::from_str(&merge_json("", json_entry("b", false)).unwrap()).unwrap();
        assert_eq!(fresh["mcpServers"]["banger"]["args"], json!(["mcp"]));
        assert!(merge_json("[1]", json_entry("b", false)).is_err());
    }

    #[test]
    fn test_codex_toml_entry_merges() {
        let old = "model = \"o4\"\n[mcp_servers.other]\ncommand = \"x\"\n";
        let new = merge_toml(old, "/bin/banger", false).unwrap();
        let t: toml::Table = toml::from_str(&new).unwrap();
        assert_eq!(t["model"].as_str(), Some("o4"));
        assert_eq!(t["mcp_servers"]["other"]["command"].as_str(), Some("x"));
        assert_eq!(
            t["mcp_servers"]["banger"]["command"].as_str(),
            Some("/bin/banger")
        );
        let printed: toml::Table = toml::from_str(&toml_entry("/bin/banger", true)).unwrap();
        assert_eq!(
            printed["mcp_servers"]["banger"]["args"]
                .as_array()
                .unwrap()
                .len(),
            2
        );
    }
}
