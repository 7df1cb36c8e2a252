//! Guard rails from `[mcp]` in config.toml: what a sandbox created over MCP may ask for.

use banger_config::McpConfig;

use crate::error::ToolError;

/// The label every sandbox created over MCP carries (`origin=mcp`).
pub const ORIGIN_KEY: &str = "origin";
/// Its value.
pub const ORIGIN_MCP: &str = "mcp";

/// What a create asks for (after defaults).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ask<'a> {
    /// Image name or reference (`None`: the default image).
    pub image: Option<&'a str>,
    /// vCPUs asked for.
    pub vcpu: Option<u32>,
    /// Memory asked for, MiB.
    pub memory_mib: Option<u64>,
    /// NAT.
    pub nat: bool,
    /// MCP sandboxes that exist now.
    pub existing: usize,
}

fn over(what: String, hint: String) -> ToolError {
    ToolError::new("limit_exceeded", what, hint)
}

/// Checks `ask` against `cfg`; `default_image` is what no image means.
pub fn check_create(cfg: &McpConfig, ask: &Ask<'_>, default_image: &str) -> Result<(), ToolError> {
    if ask.existing >= cfg.max_sandboxes as usize {
        return Err(over(
            format!(
                "{} sandboxes exist; [mcp] max_sandboxes is {}",
                ask.existing, cfg.max_sandboxes
            ),
            "delete one with `sandbox_delete` (`sandbox_list` shows them)".into(),
        ));
    }
    if let Some(v) = ask.vcpu
        && v > cfg.max_vcpu
    {
        return Err(over(
            format!("vcpu {v} is over [mcp] max_vcpu {}", cfg.max_vcpu),
            format!("ask for at most {} vcpu", cfg.max_vcpu),
        ));
    }
    if let Some(m) = ask.memory_mib
        && m > cfg.max_memory_mib
    {
        return Err(over(
            format!(
                "memory_mib {m} is over [mcp] max_memory_mib {}",
                cfg.max_memory_mib
            ),
            format!("ask for at most {} MiB", cfg.max_memory_mib),
        ));
    }
    let image = ask.image.unwrap_or(default_image);
    if !cfg.allowed_images.is_empty() && !cfg.allowed_images.iter().any(|i| i == image) {
        return Err(ToolError::new(
            "forbidden",
            format!("image {image:?} is not in [mcp] allowed_images"),
            format!(
                "use one of: {} (`image_list` shows what exists)",
                cfg.allowed_images.join(", ")
            ),
        ));
    }
    if ask.nat && !cfg.allow_nat {
        return Err(ToolError::new(
            "forbidden",
            "nat (outside network access) is off for MCP sandboxes",
            "create without nat; the user can allow it with [mcp] allow_nat = true in config.toml",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ask() -> Ask<'static> {
        Ask {
            image: None,
            vcpu: Some(2),
            memory_mib: Some(1024),
            nat: false,
            existing: 0,
        }
    }

    #[test]
    fn test_each_limit_refuses_with_a_remediation() {
        let cfg = McpConfig {
            max_sandboxes: 2,
            max_vcpu: 2,
            max_memory_mib: 2048,
            allowed_images: vec!["debian-bookworm".into()],
            ..McpConfig::default()
        };
        assert!(check_create(&cfg, &ask(), "debian-bookworm").is_ok());
        let cases = [
            (
                Ask {
                    existing: 2,
                    ..ask()
                },
                "limit_exceeded",
                "sandbox_delete",
            ),
            (
                Ask {
                    vcpu: Some(3),
                    ..ask()
                },
                "limit_exceeded",
                "at most 2",
            ),
            (
                Ask {
                    memory_mib: Some(4096),
                    ..ask()
                },
                "limit_exceeded",
                "2048",
            ),
            (
                Ask {
                    image: Some("alpine"),
                    ..ask()
                },
                "forbidden",
                "image_list",
            ),
            (Ask { nat: true, ..ask() }, "forbidden", "allow_nat"),
        ];
        for (a, code, hint) in cases {
            let e = check_create(&cfg, &a, "debian-bookworm").unwrap_err();
            assert_eq!(e.code, code, "{a:?}");
            assert!(e.hint.as_deref().unwrap().contains(hint), "{e:?}");
        }
        // The default image counts as what it names.
        assert!(check_create(&cfg, &ask(), "other").is_err());
    }
}
