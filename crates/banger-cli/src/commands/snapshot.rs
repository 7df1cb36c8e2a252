//! `banger snapshot ...`, `banger vm snapshot` and `banger vm fork`.

use std::process::ExitCode;

use banger_api::methods::{SnapshotList, SnapshotRm, SnapshotShow, VmFork, VmSnapshot};
use banger_api::types::{Empty, NameParams, SnapshotInfo, VmForkParams, VmSnapshotParams};
use banger_config::Layout;

use crate::connect::connect;
use crate::output;

fn describe(s: &SnapshotInfo) -> String {
    let mut lines = vec![
        ("name", s.name.clone()),
        ("id", s.id.clone()),
        ("kind", s.kind.clone()),
        ("from vm", s.source_vm.clone()),
        ("image", s.image.clone()),
        ("vcpu", s.vcpu.to_string()),
        ("memory", format!("{} MiB", s.memory_mib)),
        ("disk", output::size(s.disk_bytes)),
        ("vmm", s.vmm.clone()),
        ("on disk", output::size(s.size_bytes)),
        ("created", s.created_at.clone()),
    ];
    if !s.used_by.is_empty() {
        lines.push(("used by", s.used_by.join(", ")));
    }
    lines
        .iter()
        .map(|(k, v)| format!("{k:<9} {v}"))
        .collect::<Vec<_>>()
        .join("\n")
}

pub(crate) async fn take(
    layout: &Layout,
    name: String,
    snapshot: Option<String>,
    as_json: bool,
) -> anyhow::Result<ExitCode> {
    let mut conn = connect(layout).await?;
    let started = std::time::Instant::now();
    let s = conn
        .client
        .call::<VmSnapshot>(&VmSnapshotParams { name, snapshot })
        .await?;
    if as_json {
        output::json(&s)?;
    } else {
        output::status(&format!(
            "snapshot {} taken in {:.1}s",
            s.name,
            started.elapsed().as_secs_f64()
        ));
        output::data(&s.name);
    }
    Ok(ExitCode::SUCCESS)
}

pub(crate) async fn fork(
    layout: &Layout,
    p: VmForkParams,
    as_json: bool,
) -> anyhow::Result<ExitCode> {
    let mut conn = connect(layout).await?;
    let started = std::time::Instant::now();
    let r = conn.client.call::<VmFork>(&p).await?;
    if as_json {
        output::json(&r)?;
    } else {
        let kept = r
            .snapshot
            .as_ref()
            .map(|s| format!(" (snapshot {} kept)", s.name))
            .unwrap_or_default();
        output::status(&format!(
            "{} child(ren) of {} ready in {:.1}s{kept}",
            r.vms.len(),
            p.name,
            started.elapsed().as_secs_f64(),
        ));
        for vm in &r.vms {
            output::data(&vm.name);
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub(crate) async fn list(layout: &Layout, as_json: bool) -> anyhow::Result<ExitCode> {
    let mut conn = connect(layout).await?;
    let all = conn.client.call::<SnapshotList>(&Empty {}).await?;
    if as_json {
        output::json(&all)?;
        return Ok(ExitCode::SUCCESS);
    }
    let rows = all
        .iter()
        .map(|s| {
            vec![
                s.name.clone(),
                s.kind.clone(),
                s.source_vm.clone(),
                s.image.clone(),
                s.vcpu.to_string(),
                output::size(s.memory_mib << 20),
                output::size(s.size_bytes),
                if s.used_by.is_empty() {
                    "-".into()
                } else {
                    s.used_by.join(",")
                },
                s.created_at
                    .get(..16)
                    .unwrap_or(&s.created_at)
                    .replace('T', " "),
            ]
        })
        .collect();
    output::data(&output::table(
        &[
            "NAME", "KIND", "FROM", "IMAGE", "VCPU", "MEM", "ON DISK", "USED BY", "CREATED",
        ],
        rows,
    ));
    Ok(ExitCode::SUCCESS)
}

pub(crate) async fn show(layout: &Layout, name: String, as_json: bool) -> anyhow::Result<ExitCode> {
    let mut conn = connect(layout).await?;
    let s = conn
        .client
        .call::<SnapshotShow>(&NameParams { name })
        .await?;
    if as_json {
        output::json(&s)?;
    } else {
        output::data(&describe(&s));
    }
    Ok(ExitCode::SUCCESS)
}

pub(crate) async fn rm(layout: &Layout, names: Vec<String>) -> anyhow::Result<ExitCode> {
    let mut conn = connect(layout).await?;
    let mut failed = false;
    for name in names {
        match conn
            .client
            .call::<SnapshotRm>(&NameParams { name: name.clone() })
            .await
        {
            Ok(s) => output::status(&format!("snapshot {} removed", s.name)),
            Err(e) => {
                failed = true;
                output::print_error(&anyhow::Error::new(e).context(format!("snapshot {name}")));
            }
        }
    }
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}
