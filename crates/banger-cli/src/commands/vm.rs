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
    // A LABELS column only when some VM has labels.
    let any_labels = result.vms.iter().any(|vm| !vm.labels.is_empty());
    let rows = result
        .vms
        .iter()
        .map(|vm| {
            let mut row = vec![
                vm.name.clone(),
                if vm.suspended {
                    "suspended".to_owned()
                } else {
                    vm.state.to_string()
                },
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
            ];
            if any_labels {
                row.push(labels_text(&vm.labels));
            }
            row
        })
        .collect();
    let mut header = vec![
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
    ];
    if any_labels {
        header.push("LABELS");
    }
    output::data(&output::table(&header, rows));
    Ok(ExitCode::SUCCESS)
}

fn labels_text(labels: &std::collections::BTreeMap<String, String>) -> String {
    if labels.is_empty() {
        return "-".into();
    }
    labels
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// A CPU quota as host CPUs (`2`, `1.5`).
fn cpu_cores(quota_us: u64, period_us: u64) -> String {
    if period_us == 0 || quota_us == u64::MAX {
        return "unlimited".into();
    }
    let tenths = quota_us * 10 / period_us;
    if tenths.is_multiple_of(10) {
        format!("{}", tenths / 10)
    } else {
        format!("{}.{}", tenths / 10, tenths % 10)
    }
}

fn describe(vm: &VmInfo) -> String {
    let src = |pick: fn(&banger_api::types::SizingSources) -> banger_api::types::ValueSource| {
        vm.sizing_sources
            .as_ref()
            .map(|s| format!(" ({})", pick(s)))
            .unwrap_or_default()
    };
    let mut lines = vec![
        ("name", vm.name.clone()),
        ("id", vm.id.clone()),
        ("state", vm.state.to_string()),
        ("image", vm.image.clone()),
        ("ip", vm.guest_ip.clone()),
        ("dns", format!("{}.vm", vm.name)),
        ("vcpu", format!("{}{}", vm.vcpu, src(|s| s.vcpu))),
        (
            "memory",
            format!("{} MiB{}", vm.memory_mib, src(|s| s.memory_mib)),
        ),
        (
            "disk",
            format!("{}{}", output::size(vm.disk_bytes), src(|s| s.disk)),
        ),
        ("nat", if vm.nat { "yes".into() } else { "no".into() }),
        ("vmm", vm.vmm.clone().unwrap_or_else(|| "-".into())),
        (
            "started",
            vm.started_from.clone().unwrap_or_else(|| "-".into()),
        ),
        ("created", vm.created_at.clone()),
        ("updated", vm.updated_at.clone()),
    ];
    if !vm.labels.is_empty() {
        lines.push(("labels", labels_text(&vm.labels)));
    }
    if let Some(ws) = &vm.workspace {
        lines.push(("workspace", ws.to_string()));
    }
    if let Some(cg) = &vm.cgroup {
        lines.push((
            "limits",
            format!(
                "memory {} (using {}), cpu {}, tasks {} (cgroup {} {})",
                output::size(cg.memory_max_bytes),
                output::size(cg.memory_bytes),
                cpu_cores(cg.cpu_quota_us, cg.cpu_period_us),
                cg.pids_max,
                cg.version,
                cg.path
            ),
        ));
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

use std::process::Command as Process;
use std::time::Instant;

use banger_api::methods::{
    VmCreateBegin, VmCreateCancel, VmCreateStatus, VmDelete, VmKill, VmLogsGet, VmRestart, VmSsh,
    VmStart, VmStop, VmSuspend,
};
use banger_api::types::{SshInfo, VmCreateParams, VmOpResult, VmRefs};

use crate::cli::CreateArgs;

fn create_params(args: &CreateArgs, no_start: bool, keep_failed_boot: bool) -> VmCreateParams {
    VmCreateParams {
        name: args.name.clone(),
        image: args.image.clone(),
        vcpu: args.vcpu,
        memory_mib: args.memory,
        disk_size: args.disk_size.clone(),
        no_start,
        nat: args.nat,
        keep_failed_boot,
        from_snapshot: args.snapshot.clone(),
        cold: args.cold,
        labels: args
            .label
            .iter()
            .map(|l| {
                let (k, v) = l.split_once('=').unwrap_or((l.as_str(), ""));
                (k.to_owned(), v.to_owned())
            })
            .collect(),
    }
}

pub(crate) async fn create_vm(
    layout: &Layout,
    args: &CreateArgs,
    no_start: bool,
    keep_failed_boot: bool,
) -> anyhow::Result<VmInfo> {
    let mut conn = connect(layout).await?;
    let started = Instant::now();
    let begun = conn
        .client
        .call::<VmCreateBegin>(&create_params(args, no_start, keep_failed_boot))
        .await?;
    let status =
        crate::stages::follow::<VmCreateStatus, VmCreateCancel>(layout, conn, begun.op_id).await?;
    if let Some(err) = status.error {
        return Err(err.into());
    }
    let vm = status
        .vm
        .ok_or_else(|| anyhow::anyhow!("the daemon reported success without a vm"))?;
    output::status(&format!(
        "spec: {} vcpu | {} MiB | {} disk | {} | {}",
        vm.vcpu,
        vm.memory_mib,
        output::size(vm.disk_bytes),
        vm.guest_ip,
        vm.vmm.as_deref().unwrap_or("-")
    ));
    let verb = if no_start {
        "created (not started)"
    } else {
        "ready"
    };
    output::status(&format!(
        "vm {} {verb} in {:.1}s",
        vm.name,
        started.elapsed().as_secs_f64()
    ));
    Ok(vm)
}

pub(crate) async fn create(
    layout: &Layout,
    args: &CreateArgs,
    no_start: bool,
) -> anyhow::Result<ExitCode> {
    let vm = create_vm(layout, args, no_start, false).await?;
    output::data(&vm.name);
    Ok(ExitCode::SUCCESS)
}

#[derive(Debug, Clone, Copy)]
pub(crate) enum Op {
    Start,
    Stop,
    Restart,
    Kill,
    Delete,
    Suspend,
}

pub(crate) async fn many(layout: &Layout, names: &[String], op: Op) -> anyhow::Result<ExitCode> {
    let mut conn = connect(layout).await?;
    let refs = VmRefs {
        names: names.to_vec(),
    };
    let (result, verb): (VmOpResult, &str) = match op {
        Op::Start => (conn.client.call::<VmStart>(&refs).await?, "started"),
        Op::Stop => (conn.client.call::<VmStop>(&refs).await?, "stopped"),
        Op::Restart => (conn.client.call::<VmRestart>(&refs).await?, "restarted"),
        Op::Kill => (conn.client.call::<VmKill>(&refs).await?, "killed"),
        Op::Suspend => (conn.client.call::<VmSuspend>(&refs).await?, "suspended"),
        Op::Delete => (conn.client.call::<VmDelete>(&refs).await?, "deleted"),
    };
    let mut failed = false;
    for o in result.outcomes {
        match o.error {
            None => output::status(&format!("vm {} {verb}", o.name)),
            Some(e) => {
                failed = true;
                output::print_error(&anyhow::Error::new(e).context(format!("vm {}", o.name)));
            }
        }
    }
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// The ssh argument vector for `info`, running `command` (argv, quoted for the remote shell).
fn ssh_args(info: &SshInfo, command: &[String], interactive: bool) -> Vec<String> {
    let mut args = info.ssh_options();
    if interactive && command.is_empty() {
        args.push("-t".into());
    }
    args.push(format!("{}@{}", info.user, info.host));
    if !command.is_empty() {
        let quoted = shlex::try_join(command.iter().map(String::as_str)).unwrap_or_default();
        let line = match &info.workdir {
            Some(dir) => format!(
                "cd {} && {quoted}",
                shlex::try_quote(dir).unwrap_or_default()
            ),
            None => quoted,
        };
        args.push("--".into());
        args.push(line);
    }
    args
}

pub(crate) fn run_ssh(
    info: &SshInfo,
    command: &[String],
    interactive: bool,
) -> anyhow::Result<ExitCode> {
    let status = Process::new("ssh")
        .args(ssh_args(info, command, interactive))
        .status()?;
    Ok(ExitCode::from(
        status.code().map_or(255, |c| c.clamp(0, 255) as u8),
    ))
}

/// How to ssh into a running VM.
pub(crate) async fn ssh_info(layout: &Layout, name: &str) -> anyhow::Result<SshInfo> {
    let mut conn = connect(layout).await?;
    Ok(conn
        .client
        .call::<VmSsh>(&VmRef {
            name: name.to_owned(),
        })
        .await?)
}

pub(crate) async fn ssh(
    layout: &Layout,
    name: &str,
    command: &[String],
    interactive: bool,
) -> anyhow::Result<ExitCode> {
    let info = ssh_info(layout, name).await?;
    let code = run_ssh(&info, command, interactive)?;
    if interactive && command.is_empty() {
        output::status(&format!(
            "vm {name} is still running (stop it with `banger vm stop {name}`)"
        ));
    }
    Ok(code)
}

/// Deletes VM `name`, reporting (not returning) a failure.
pub(crate) async fn delete_reporting(layout: &Layout, name: &str) -> anyhow::Result<()> {
    let mut conn = connect(layout).await?;
    let deleted = conn
        .client
        .call::<VmDelete>(&VmRefs {
            names: vec![name.to_owned()],
        })
        .await?;
    if let Some(e) = deleted.outcomes.into_iter().find_map(|o| o.error) {
        output::print_error(&anyhow::Error::new(e).context(format!("cannot delete vm {name}")));
    }
    Ok(())
}

pub(crate) async fn logs(
    layout: &Layout,
    params: banger_api::types::VmLogsParams,
) -> anyhow::Result<ExitCode> {
    use std::io::Write as _;
    let mut conn = connect(layout).await?;
    let mut stdout = std::io::stdout();
    let result = conn
        .client
        .call_streaming::<VmLogsGet>(&params, &mut |_, bytes| {
            stdout.write_all(bytes)?;
            stdout.flush()
        })
        .await;
    match result {
        Ok(_) => Ok(ExitCode::SUCCESS),
        // The reader went away (`| head`): not an error.
        Err(banger_api::ClientError::Io(e)) if e.kind() == std::io::ErrorKind::BrokenPipe => {
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => Err(e.into()),
    }
}
