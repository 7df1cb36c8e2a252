//! Output: data on stdout, everything else on stderr; colour only on a TTY without `NO_COLOR`.

use std::fmt::Write as _;
use std::io::Write as _;

use anstyle::{AnsiColor, Style};
use banger_api::{ClientError, RpcError};
use comfy_table::{ContentArrangement, Table, presets};

/// A CLI-side error with a hint line.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub(crate) struct Hinted {
    message: String,
    hint: String,
}

impl Hinted {
    pub(crate) fn new(message: impl Into<String>, hint: impl Into<String>) -> Self {
        Hinted {
            message: message.into(),
            hint: hint.into(),
        }
    }
}

fn rpc_error(err: &anyhow::Error) -> Option<&RpcError> {
    err.chain().find_map(|e| {
        e.downcast_ref::<RpcError>()
            .or_else(|| match e.downcast_ref::<ClientError>() {
                Some(ClientError::Rpc(r)) => Some(r),
                _ => None,
            })
    })
}

/// The error as the user sees it: `banger: <chain> (op <id>)` and maybe `hint: ...`.
pub(crate) fn render_error(err: &anyhow::Error, color: bool) -> String {
    let mut message = String::new();
    for cause in err.chain() {
        let text = cause.to_string();
        if text.is_empty() || message.ends_with(&text) {
            continue;
        }
        if !message.is_empty() {
            message.push_str(": ");
        }
        message.push_str(&text);
    }
    let red = if color {
        Style::new().fg_color(Some(AnsiColor::Red.into())).bold()
    } else {
        Style::new()
    };
    let dim = if color {
        Style::new().dimmed()
    } else {
        Style::new()
    };
    let mut out = format!("{red}banger:{red:#} {message}");
    let rpc = rpc_error(err);
    if let Some(rpc) = rpc {
        match rpc.data.op_id.as_deref() {
            Some(op) => {
                let _ = write!(out, " {dim}({}, op {op}){dim:#}", rpc.kind());
            }
            None => {
                let _ = write!(out, " {dim}({}){dim:#}", rpc.kind());
            }
        }
    }
    let hint = rpc.and_then(|r| r.data.hint.clone()).or_else(|| {
        err.chain()
            .find_map(|e| e.downcast_ref::<Hinted>().map(|h| h.hint.clone()))
    });
    if let Some(hint) = hint {
        let _ = write!(out, "\n{dim}hint:{dim:#} {hint}");
    }
    out
}

/// Whether stderr gets colour.
pub(crate) fn stderr_color() -> bool {
    use std::io::IsTerminal as _;
    std::env::var_os(banger_config::env::NO_COLOR).is_none_or(|v| v.is_empty())
        && std::io::stderr().is_terminal()
}

/// Prints an error to stderr.
pub(crate) fn print_error(err: &anyhow::Error) {
    let _ = writeln!(
        std::io::stderr().lock(),
        "{}",
        render_error(err, stderr_color())
    );
}

/// Writes data to stdout. A closed pipe (e.g. `| head`) is not an error worth reporting.
pub(crate) fn data(text: &str) {
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(text.as_bytes());
    if !text.ends_with('\n') {
        let _ = out.write_all(b"\n");
    }
    let _ = out.flush();
}

/// Writes pretty JSON to stdout.
pub(crate) fn json(value: &impl serde::Serialize) -> anyhow::Result<()> {
    data(&serde_json::to_string_pretty(value)?);
    Ok(())
}

/// Writes a progress or status line to stderr.
pub(crate) fn status(text: &str) {
    let _ = writeln!(std::io::stderr().lock(), "{text}");
}

/// A borderless, left-aligned table with a header row.
pub(crate) fn table(header: &[&str], rows: Vec<Vec<String>>) -> String {
    let mut t = Table::new();
    t.load_preset(presets::NOTHING)
        .set_content_arrangement(ContentArrangement::Disabled);
    t.set_header(header.iter().copied());
    for row in rows {
        t.add_row(row);
    }
    let text = t.to_string();
    text.lines()
        .map(|l| l.trim_end().trim_start_matches(' '))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Bytes as a short human size (`512M`, `8G`).
pub(crate) fn size(bytes: u64) -> String {
    const UNITS: [(&str, u64); 4] = [
        ("T", 1 << 40),
        ("G", 1 << 30),
        ("M", 1 << 20),
        ("K", 1 << 10),
    ];
    for (unit, scale) in UNITS {
        if bytes >= scale {
            return if bytes.is_multiple_of(scale) {
                format!("{}{unit}", bytes / scale)
            } else {
                format!("{:.1}{unit}", bytes as f64 / scale as f64)
            };
        }
    }
    format!("{bytes}B")
}

/// Milliseconds as a short duration (`3h12m`, `45s`).
pub(crate) fn duration_ms(ms: u64) -> String {
    let s = ms / 1000;
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{}s", s / 60, s % 60),
        3600..86400 => format!("{}h{}m", s / 3600, (s % 3600) / 60),
        _ => format!("{}d{}h", s / 86400, (s % 86400) / 3600),
    }
}

#[cfg(test)]
mod tests {
    use banger_api::ErrorCode;

    use super::*;

    #[test]
    fn test_render_error_includes_op_id_and_hint() {
        let err = anyhow::Error::new(ClientError::Rpc(
            RpcError::new(ErrorCode::NotFound, "vm \"x\" not found")
                .with_op_id("op-1")
                .with_hint("try this"),
        ));
        assert_eq!(
            render_error(&err, false),
            "banger: vm \"x\" not found (not_found, op op-1)\nhint: try this"
        );
    }

    #[test]
    fn test_render_error_joins_chain_without_color() {
        let err = anyhow::anyhow!("inner").context("outer");
        assert_eq!(render_error(&err, false), "banger: outer: inner");
        assert!(!render_error(&err, false).contains('\x1b'));
        assert!(render_error(&err, true).contains('\x1b'));
    }

    #[test]
    fn test_size_and_duration_formatting() {
        assert_eq!(size(8 << 30), "8G");
        assert_eq!(size(1536 << 20), "1.5G");
        assert_eq!(size(512), "512B");
        assert_eq!(duration_ms(59_000), "59s");
        assert_eq!(duration_ms(3_725_000), "1h2m");
    }

    #[test]
    fn test_table_has_no_borders_or_leading_space() {
        let t = table(&["NAME", "STATE"], vec![vec!["a".into(), "running".into()]]);
        let first = t.lines().next().unwrap();
        assert!(first.starts_with("NAME"), "{t}");
        assert!(t.lines().nth(1).unwrap().starts_with('a'));
    }
}
