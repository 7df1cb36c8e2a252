//! What the running daemon reports: reachability, guest agent, network, images.

use banger_config::Config;

use super::{Check, DaemonFacts, Level, row};

/// The daemon rows (only `daemon` when it cannot be reached).
pub(super) fn checks(cfg: &Config, d: &DaemonFacts, out: &mut Vec<Check>) {
    if let Some(e) = &d.error {
        out.push(row(
            "daemon",
            Level::Fail,
            format!("cannot reach bangerd: {e}"),
            Some("`banger daemon status` and <state>/bangerd.log say why".into()),
        ));
        return;
    }
    out.push(row("daemon", Level::Pass, "bangerd answers", None));
    out.push(match &d.agent {
        Some(p) => row(
            "guest agent",
            Level::Pass,
            format!("static banger-agent at {p}"),
            None,
        ),
        None => row(
            "guest agent",
            Level::Warn,
            "no static banger-agent: guests run without it; ports, stats and stop use ssh",
            Some("build it with `. scripts/lib.sh && build_agent`, or set BANGER_AGENT".into()),
        ),
    });
    if let Some(net) = &d.net {
        out.push(row(
            "network",
            Level::Pass,
            format!(
                "bridge {} {} ({}), {}/{} idle pool taps, {} guest(s) with NAT",
                net.bridge,
                net.bridge_ip,
                net.cidr,
                net.idle_taps.len(),
                net.tap_pool_size,
                net.nat.len()
            ),
            None,
        ));
        out.push(match (&net.dns.listen, &net.dns.error) {
            (Some(l), _) if d.resolves_vm => row(
                "dns",
                Level::Pass,
                format!("{l}; <name>.vm resolves on this host"),
                None,
            ),
            (Some(l), _) => row(
                "dns",
                Level::Warn,
                format!("{l} answers, but <name>.vm does not resolve on this host"),
                Some("`banger dns status` prints the recipe for your resolver".into()),
            ),
            (None, e) => row(
                "dns",
                Level::Warn,
                format!("not serving: {}", e.as_deref().unwrap_or("unknown")),
                Some("set `dns_listen` in config.toml to a free address:port".into()),
            ),
        });
    }
    if let Some(images) = &d.images {
        out.push(if images.iter().any(|i| i.name == cfg.default_image_name) {
            row("default image", Level::Pass, format!("{} is available", cfg.default_image_name), None)
        } else {
            row(
                "default image",
                Level::Warn,
                format!("{} is not built yet", cfg.default_image_name),
                Some("it is built on first use (debootstrap, needs the Debian mirror); `banger image ensure` does it now".into()),
            )
        });
    }
}
