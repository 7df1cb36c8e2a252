//! `banger vm ...`.

use std::process::ExitCode;

use banger_api::methods::{VmList, VmShow};
use banger_api::types::{Empty, VmInfo, VmRef};
use banger_config::Layout;

use crate::connect::connect;
use crate::output;

fn short_id(id: &str) -> &str {
    &id[..id.len().min(12)]
}

fn created(ts: &str) -> String {
    // RFC 3339 `2026-01-01T12:34:56.789Z` shown as `2026-01-01 12:34`.
    ts.get(..16)
        .map_or_else(|| ts.to_owned(), |s| s.replace('T', " "))
}

pub(crate) async fn list(layout: &Layout, as_json: bool) -> anyhow::Result<ExitCode> {
    let mut conn = connect(layout).await?;
    let result = conn.client.call::<VmList>(&Empty {}).await?;
    if as_json {
        output::json(&result.vms)?;
        return Ok(ExitCode::SUCCESS);
    }
    let rows = result
        .vms
        .iter()
        .map(|vm| {
            vec![
                vm.name.clone(),
                vm.state.to_string(),
                vm.image.clone(),
                vm.guest_ip.clone(),
                vm.vcpu.to_string(),
                output::size(vm.memory_mib << 20),
                output::size(vm.disk_bytes),
                if vm.nat { "yes".into() } else { "no".into() },
                vm.workspace
                    .as_ref()
                    .and_then(|w| {
                        w.get("guest_path")
                            .and_then(|p| p.as_str())
                            .map(str::to_owned)
                    })
                    .unwrap_or_else(|| "-".into()),
                created(&vm.created_at),
                short_id(&vm.id).to_owned(),
            ]
        })
        .collect();
    output::data(&output::table(
        &[
            "NAME",
            "STATE",
            "IMAGE",
            "IP",
            "VCPU",
            "MEM",
            "DISK",
            "NAT",
            "WORKSPACE",
            "CREATED",
            "ID",
        ],
        rows,
    ));
    Ok(ExitCode::SUCCESS)
}

fn describe(vm: &VmInfo) -> String {
    let mut lines = vec![
        ("name", vm.name.clone()),
        ("id", vm.id.clone()),
        ("state", vm.state.to_string()),
        ("image", vm.image.clone()),
        ("ip", vm.guest_ip.clone()),
        ("dns", format!("{}.vm", vm.name)),
        ("vcpu", vm.vcpu.to_string()),
        ("memory", format!("{} MiB", vm.memory_mib)),
        ("disk", output::size(vm.disk_bytes)),
        ("nat", if vm.nat { "yes".into() } else { "no".into() }),
        ("vmm", vm.vmm.clone().unwrap_or_else(|| "-".into())),
        ("created", vm.created_at.clone()),
        ("updated", vm.updated_at.clone()),
    ];
    if let Some(ws) = &vm.workspace {
        lines.push(("workspace", ws.to_string()));
    }
    if let Some(err) = &vm.last_error {
        lines.push(("last error", err.clone()));
    }
    lines
        .iter()
        .map(|(k, v)| format!("{k:<11} {v}"))
        .collect::<Vec<_>>()
        .join("\n")
}

pub(crate) async fn show(layout: &Layout, name: &str, as_json: bool) -> anyhow::Result<ExitCode> {
    let mut conn = connect(layout).await?;
    let vm = conn
        .client
        .call::<VmShow>(&VmRef {
            name: name.to_owned(),
        })
        .await?;
    if as_json {
        output::json(&vm)?;
    } else {
        output::data(&describe(&vm));
    }
    Ok(ExitCode::SUCCESS)
}
