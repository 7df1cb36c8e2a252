//! `banger vm run`, `vm workspace prepare|export`, `vm stats`, `vm prune`.

use std::io::{IsTerminal as _, Write as _};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use banger_api::methods::{VmDelete, VmList, VmStatsGet, VmWorkspaceExport, VmWorkspacePrepare};
use banger_api::types::{
    Empty, VmRefs, VmState, WorkspaceExportParams, WorkspacePrepareParams, WorkspacePrepared,
};
use banger_config::Layout;

use super::vm::{create_vm, delete_reporting};
use crate::cli::{RunArgs, WorkspaceArgs};
use crate::connect::connect;
use crate::output::{self, Hinted};

fn absolute(path: &Path) -> anyhow::Result<PathBuf> {
    std::fs::canonicalize(path).map_err(|e| {
        Hinted::new(
            format!("cannot use {}: {e}", path.display()),
            "give a directory inside a git repository",
        )
        .into()
    })
}

fn prepare_params(
    name: &str,
    path: &Path,
    ws: &WorkspaceArgs,
    guest_path: &str,
) -> WorkspacePrepareParams {
    WorkspacePrepareParams {
        name: name.to_owned(),
        path: path.display().to_string(),
        branch: ws.branch.clone(),
        from: ws.from.clone(),
        include_untracked: ws.include_untracked,
        dry_run: ws.dry_run,
        guest_path: Some(guest_path.to_owned()),
    }
}

async fn call_prepare(
    layout: &Layout,
    p: &WorkspacePrepareParams,
) -> anyhow::Result<WorkspacePrepared> {
    let mut conn = connect(layout).await?;
    if !p.dry_run {
        output::status(&format!("copying {} into vm {}...", p.path, p.name));
    }
    Ok(conn.client.call::<VmWorkspacePrepare>(p).await?)
}

fn report(w: &WorkspacePrepared) {
    let branch = w
        .branch
        .as_ref()
        .map_or_else(|| "detached".to_owned(), |b| format!("branch {b}"));
    let head = w.head.get(..12).unwrap_or(&w.head);
    if w.dry_run {
        output::status(&format!(
            "dry run: {} files ({}, {}) would ship to {} at {head} ({branch}); nothing was changed",
            w.files,
            output::size(w.bytes),
            w.mode,
            w.guest_path
        ));
    } else {
        output::status(&format!(
            "workspace: {} files ({}, {}) in {}:{} at {head} ({branch}) in {}",
            w.files,
            output::size(w.bytes),
            w.mode,
            w.vm,
            w.guest_path,
            output::duration_ms(w.elapsed_ms)
        ));
    }
}

/// `vm workspace prepare`.
pub(crate) async fn prepare(
    layout: &Layout,
    name: &str,
    path: &Path,
    ws: &WorkspaceArgs,
    guest_path: &str,
    as_json: bool,
) -> anyhow::Result<ExitCode> {
    let path = absolute(path)?;
    let w = call_prepare(layout, &prepare_params(name, &path, ws, guest_path)).await?;
    if as_json {
        output::json(&w)?;
    } else if w.dry_run {
        output::data(&w.listed.join("\n"));
    }
    report(&w);
    Ok(ExitCode::SUCCESS)
}

/// `vm workspace export`.
pub(crate) async fn export(
    layout: &Layout,
    name: &str,
    base_commit: Option<String>,
    out: Option<&Path>,
) -> anyhow::Result<ExitCode> {
    let mut conn = connect(layout).await?;
    // The patch streams straight into the file (written beside it, renamed when complete)
    // or to stdout: any size, never held in memory.
    let partial = out.map(|f| f.with_extension("partial"));
    let mut sink: Box<dyn std::io::Write + Send> = match &partial {
        Some(p) => Box::new(std::io::BufWriter::new(fs_err::File::create(p)?)),
        None => Box::new(std::io::stdout()),
    };
    let result = conn
        .client
        .call_streaming::<VmWorkspaceExport>(
            &WorkspaceExportParams {
                name: name.to_owned(),
                base_commit,
            },
            &mut |_, bytes| sink.write_all(bytes),
        )
        .await;
    let flushed = sink.flush();
    drop(sink);
    let e = match result.map_err(anyhow::Error::from).and_then(|e| {
        flushed?;
        Ok(e)
    }) {
        Ok(e) => e,
        Err(err) => {
            if let Some(p) = &partial {
                let _ = fs_err::remove_file(p);
            }
            return Err(err);
        }
    };
    let base = e.base.get(..12).unwrap_or(&e.base);
    if e.bytes == 0 {
        output::status(&format!("no changes in vm {name} since {base}"));
    }
    if let (Some(file), Some(p)) = (out, &partial) {
        fs_err::rename(p, file)?;
        output::status(&format!(
            "wrote {} patch against {base} to {} (apply with `git apply {}`)",
            output::size(e.bytes),
            file.display(),
            file.display()
        ));
    }
    Ok(ExitCode::SUCCESS)
}

/// `vm run [PATH] [-- CMD]`.
pub(crate) async fn run(layout: &Layout, a: &RunArgs) -> anyhow::Result<ExitCode> {
    if a.detach && !a.command.is_empty() {
        return Err(Hinted::new(
            "-d cannot be combined with a command",
            "drop -d to run it and get its exit code, or run it later with `banger vm exec NAME -- CMD`",
        )
        .into());
    }
    let ws_flags = a.ws.branch.is_some() || a.ws.include_untracked || a.ws.dry_run;
    let path = match &a.path {
        Some(p) => Some(absolute(p)?),
        None if ws_flags => {
            return Err(Hinted::new(
                "--branch, --from, --include-untracked and --dry-run need a PATH",
                "e.g. `banger vm run . --include-untracked -- make test`",
            )
            .into());
        }
        None => None,
    };
    let guest_path = "/root/repo";
    // Check the repository before making a VM: bad input changes nothing.
    if let Some(p) = &path {
        let mut plan = prepare_params("", p, &a.ws, guest_path);
        plan.dry_run = true;
        let w = call_prepare(layout, &plan).await?;
        if a.ws.dry_run {
            output::data(&w.listed.join("\n"));
            report(&w);
            return Ok(ExitCode::SUCCESS);
        }
    }
    // A VM whose guest never becomes ready is kept (state error) so `vm logs` can show why.
    let vm = create_vm(layout, &a.create, false, true).await?;
    let result = async {
        if let Some(p) = &path {
            let w = call_prepare(layout, &prepare_params(&vm.name, p, &a.ws, guest_path)).await?;
            report(&w);
        }
        if a.detach {
            output::data(&vm.name);
            return Ok(ExitCode::SUCCESS);
        }
        // A shell gets a terminal; a command gets one only when asked for interactively
        // (both ends terminals), as ssh would.
        let shell = a.command.is_empty();
        let argv = if shell {
            super::exec::login_shell()
        } else {
            a.command.clone()
        };
        let opts = super::exec::ExecOpts {
            tty: shell,
            ..super::exec::ExecOpts::default()
        };
        super::exec::exec(layout, &vm.name, &argv, &opts).await
    }
    .await;
    if a.rm {
        delete_reporting(layout, &vm.name).await?;
    } else if a.command.is_empty() && !a.detach {
        output::status(&format!(
            "vm {} is still running (stop it with `banger vm stop {}`)",
            vm.name, vm.name
        ));
    } else if result.is_err() || !a.command.is_empty() {
        output::status(&format!(
            "vm {} keeps running (`banger vm delete {}` removes it)",
            vm.name, vm.name
        ));
    }
    result
}

fn mib(v: u64) -> String {
    output::size(v << 20)
}

/// `vm stats`.
pub(crate) async fn stats(
    layout: &Layout,
    names: &[String],
    as_json: bool,
) -> anyhow::Result<ExitCode> {
    let mut conn = connect(layout).await?;
    let all = conn
        .client
        .call::<VmStatsGet>(&VmRefs {
            names: names.to_vec(),
        })
        .await?;
    if as_json {
        output::json(&all)?;
        return Ok(ExitCode::SUCCESS);
    }
    let mut rows = Vec::new();
    let mut failed = false;
    for s in &all {
        let g = s.guest.as_ref();
        rows.push(vec![
            s.name.clone(),
            s.state.to_string(),
            s.cpu_percent.map_or("-".into(), |c| format!("{c:.1}%")),
            s.rss_mib.map_or("-".into(), mib),
            s.pss_mib.map_or("-".into(), mib),
            g.map_or("-".into(), |g| {
                format!("{:.2} {:.2} {:.2}", g.load[0], g.load[1], g.load[2])
            }),
            g.map_or("-".into(), |g| {
                format!(
                    "{} / {}",
                    mib(g.mem_total_mib - g.mem_available_mib.min(g.mem_total_mib)),
                    mib(g.mem_total_mib)
                )
            }),
            g.map_or("-".into(), |g| {
                format!("{} / {}", mib(g.disk_used_mib), mib(g.disk_total_mib))
            }),
            g.map_or("-".into(), |g| output::duration_ms(g.uptime_s * 1000)),
        ]);
        if let Some(e) = &s.error {
            failed |= !names.is_empty();
            output::status(&format!("vm {}: {e}", s.name));
        }
    }
    output::data(&output::table(
        &[
            "NAME",
            "STATE",
            "VMM CPU",
            "VMM RSS",
            "VMM PSS",
            "LOAD",
            "GUEST MEM",
            "GUEST DISK",
            "UP",
        ],
        rows,
    ));
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// `vm prune`: delete every VM that is not running.
pub(crate) async fn prune(layout: &Layout, force: bool) -> anyhow::Result<ExitCode> {
    let mut conn = connect(layout).await?;
    let list = conn.client.call::<VmList>(&Empty {}).await?;
    let doomed: Vec<_> = list
        .vms
        .into_iter()
        .filter(|v| v.state != VmState::Running)
        .collect();
    if doomed.is_empty() {
        output::status("nothing to prune: every vm is running");
        return Ok(ExitCode::SUCCESS);
    }
    let rows = doomed
        .iter()
        .map(|v| {
            vec![
                v.name.clone(),
                v.state.to_string(),
                v.image.clone(),
                v.created_at.clone(),
            ]
        })
        .collect();
    output::status(output::table(&["NAME", "STATE", "IMAGE", "CREATED"], rows).trim_end());
    if !force {
        if !std::io::stdin().is_terminal() {
            return Err(Hinted::new(
                "vm prune needs confirmation and stdin is not a terminal",
                "pass -f to delete without asking",
            )
            .into());
        }
        let _ = write!(
            std::io::stderr().lock(),
            "delete these {} vm(s) and their disks? [y/N] ",
            doomed.len()
        );
        let _ = std::io::stderr().flush();
        let mut answer = String::new();
        std::io::stdin().read_line(&mut answer)?;
        if !matches!(answer.trim(), "y" | "Y" | "yes") {
            output::status("nothing deleted");
            return Ok(ExitCode::SUCCESS);
        }
    }
    let result = conn
        .client
        .call::<VmDelete>(&VmRefs {
            names: doomed.iter().map(|v| v.name.clone()).collect(),
        })
        .await?;
    let mut failed = false;
    for o in result.outcomes {
        match o.error {
            Some(e) => {
                failed = true;
                output::print_error(
                    &anyhow::Error::new(e).context(format!("cannot delete vm {}", o.name)),
                );
            }
            None => output::data(&o.name),
        }
    }
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}
