//! `banger vm set`, `vm ports`, `net status`, `dns status`.

use std::net::{SocketAddr, ToSocketAddrs as _};
use std::process::ExitCode;

use banger_api::methods::{NetStatusGet, VmPortsGet, VmSet};
use banger_api::types::{Empty, NetStatus, VmRefs, VmSetParams};
use banger_config::Layout;

use crate::connect::connect;
use crate::output;

/// The name the daemon's DNS server always answers with 127.0.0.1.
const PROBE: &str = "banger-dns-check.vm";

pub(crate) async fn set(
    layout: &Layout,
    name: &str,
    nat: Option<bool>,
    vcpu: Option<u32>,
    memory_mib: Option<u64>,
) -> anyhow::Result<ExitCode> {
    let mut conn = connect(layout).await?;
    let vm = conn
        .client
        .call::<VmSet>(&VmSetParams {
            name: name.to_owned(),
            nat,
            vcpu,
            memory_mib,
        })
        .await?;
    output::status(&format!(
        "vm {}: nat {}, {} vcpu, {} MiB",
        vm.name,
        if vm.nat { "on" } else { "off" },
        vm.vcpu,
        vm.memory_mib
    ));
    Ok(ExitCode::SUCCESS)
}

pub(crate) async fn ports(
    layout: &Layout,
    names: &[String],
    as_json: bool,
) -> anyhow::Result<ExitCode> {
    let mut conn = connect(layout).await?;
    let result = conn
        .client
        .call::<VmPortsGet>(&VmRefs {
            names: names.to_vec(),
        })
        .await?;
    if as_json {
        output::json(&result)?;
    }
    let mut failed = false;
    let mut rows = Vec::new();
    for vm in &result {
        if let Some(e) = &vm.error {
            failed = true;
            output::print_error(&anyhow::Error::new(e.clone()).context(format!("vm {}", vm.name)));
            continue;
        }
        for p in &vm.ports {
            rows.push(vec![
                vm.name.clone(),
                p.proto.clone(),
                p.port.to_string(),
                p.bind.clone(),
                p.endpoint
                    .clone()
                    .unwrap_or_else(|| "- (guest only)".into()),
                p.url.clone().unwrap_or_default(),
            ]);
        }
    }
    if !as_json {
        output::data(&output::table(
            &["VM", "PROTO", "PORT", "BIND", "ENDPOINT", "URL"],
            rows,
        ));
    }
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

pub(crate) async fn net_status(layout: &Layout, as_json: bool) -> anyhow::Result<ExitCode> {
    let mut conn = connect(layout).await?;
    let st = conn.client.call::<NetStatusGet>(&Empty {}).await?;
    if as_json {
        output::json(&st)?;
        return Ok(ExitCode::SUCCESS);
    }
    let nat = if st.nat.is_empty() {
        "none".to_owned()
    } else {
        st.nat
            .iter()
            .map(|n| format!("{} ({} via {})", n.vm, n.ip, n.tap))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let lines = [
        (
            "bridge",
            format!("{} {} ({})", st.bridge, st.bridge_ip, st.cidr),
        ),
        (
            "tap pool",
            format!(
                "{}/{} idle{}",
                st.idle_taps.len(),
                st.tap_pool_size,
                if st.idle_taps.is_empty() {
                    String::new()
                } else {
                    format!(": {}", st.idle_taps.join(" "))
                }
            ),
        ),
        ("nat", nat),
        ("dns", dns_line(&st)),
    ];
    output::data(
        &lines
            .iter()
            .map(|(k, v)| format!("{k:<9} {v}"))
            .collect::<Vec<_>>()
            .join("\n"),
    );
    Ok(ExitCode::SUCCESS)
}

fn dns_line(st: &NetStatus) -> String {
    match (&st.dns.listen, &st.dns.error) {
        (Some(l), _) => format!("{l} (udp+tcp), {} record(s)", st.dns.records.len()),
        (None, Some(e)) => format!("not serving: {e}"),
        (None, None) => "not serving".into(),
    }
}

/// Whether the host's resolver sends `.vm` to banger: looks up the probe name, which only
/// banger's server answers (with 127.0.0.1).
pub(crate) fn host_resolves_vm() -> bool {
    format!("{PROBE}:0")
        .to_socket_addrs()
        .is_ok_and(|mut a| a.any(|a: SocketAddr| a.ip() == std::net::Ipv4Addr::LOCALHOST))
}

pub(crate) async fn dns_status(layout: &Layout, as_json: bool) -> anyhow::Result<ExitCode> {
    let mut conn = connect(layout).await?;
    let st = conn.client.call::<NetStatusGet>(&Empty {}).await?;
    let resolves = tokio::task::spawn_blocking(host_resolves_vm).await?;
    if as_json {
        output::json(&serde_json::json!({
            "listen": st.dns.listen,
            "error": st.dns.error,
            "records": st.dns.records,
            "resolver": st.dns.resolver,
            "host_resolves_vm": resolves,
        }))?;
        return Ok(ExitCode::SUCCESS);
    }
    let mut out = vec![format!("server     {}", dns_line(&st))];
    for (name, ip) in &st.dns.records {
        out.push(format!("record     {name}.vm -> {ip}"));
    }
    out.push(format!(
        "host       {}",
        if resolves {
            "`<name>.vm` resolves on this host".to_owned()
        } else {
            "`<name>.vm` does not resolve on this host yet (see below)".to_owned()
        }
    ));
    output::data(&out.join("\n"));
    if !resolves && let Some(listen) = &st.dns.listen {
        let port = listen.rsplit(':').next().unwrap_or("42069");
        output::status(&format!(
            "hint: route the `vm` domain to {listen}:\n  \
             systemd-resolved:  resolvectl dns {br} {listen} && resolvectl domain {br} '~vm'\n  \
             dnsmasq:           server=/vm/127.0.0.1#{port}   (then restart dnsmasq)\n  \
             NetworkManager:    put the dnsmasq line in /etc/NetworkManager/dnsmasq.d/banger.conf\n  \
             check:             dig @127.0.0.1 -p {port} NAME.vm",
            br = st.bridge
        ));
    }
    Ok(ExitCode::SUCCESS)
}
