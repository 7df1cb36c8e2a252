//! Command implementations.

mod cp;
mod daemon;
mod exec;
mod image;
mod mcp;
mod net;
mod snapshot;
mod sshconfig;
mod system;
mod vm;
mod workspace;

use std::process::ExitCode;

use banger_config::Layout;
use clap::CommandFactory as _;

use crate::cli::{
    CacheCommand, Cli, Command, DaemonCommand, DnsCommand, ImageCommand, KernelCommand, NetCommand,
    SnapshotCommand, SystemCommand, VmCommand, WorkspaceCommand,
};
use crate::connect::connect;
use crate::output;

/// Runs a parsed command line.
pub(crate) async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let layout = Layout::from_env()?;
    match cli.command {
        Command::Version => daemon::version(&layout).await,
        Command::Ping => {
            let started = std::time::Instant::now();
            let conn = connect(&layout).await?;
            output::data(&format!(
                "pong from bangerd {} (pid {}) in {:.1} ms",
                conn.ping.version,
                conn.ping.pid,
                started.elapsed().as_secs_f64() * 1000.0
            ));
            Ok(ExitCode::SUCCESS)
        }
        Command::Daemon(DaemonCommand::Status { json }) => daemon::status(&layout, json).await,
        Command::Daemon(DaemonCommand::Stop) => daemon::stop(&layout).await,
        Command::Vm(VmCommand::List(args)) | Command::Ps(args) => {
            vm::list(&layout, args.json).await
        }
        Command::Vm(VmCommand::Show { name, json }) => vm::show(&layout, &name, json).await,
        Command::Vm(VmCommand::Create {
            mut args,
            no_start,
            from,
        }) => {
            if from.is_some() {
                args.snapshot = from;
            }
            vm::create(&layout, &args, no_start).await
        }
        Command::Vm(VmCommand::Run(args)) => workspace::run(&layout, &args).await,
        Command::Vm(VmCommand::Workspace(WorkspaceCommand::Prepare {
            name,
            path,
            ws,
            guest_path,
            json,
        })) => workspace::prepare(&layout, &name, &path, &ws, &guest_path, json).await,
        Command::Vm(VmCommand::Workspace(WorkspaceCommand::Export {
            name,
            base_commit,
            output,
        })) => workspace::export(&layout, &name, base_commit, output.as_deref()).await,
        Command::Vm(VmCommand::Stats { names, json }) => {
            workspace::stats(&layout, &names, json).await
        }
        Command::Vm(VmCommand::Prune { force }) => workspace::prune(&layout, force).await,
        Command::Vm(VmCommand::Start(n)) => vm::many(&layout, &n.names, vm::Op::Start).await,
        Command::Vm(VmCommand::Stop { names, suspend }) => {
            let op = if suspend {
                vm::Op::Suspend
            } else {
                vm::Op::Stop
            };
            vm::many(&layout, &names.names, op).await
        }
        Command::Vm(VmCommand::Snapshot {
            name,
            snapshot,
            json,
        }) => snapshot::take(&layout, name, snapshot, json).await,
        Command::Vm(VmCommand::Fork {
            name,
            count,
            child_name,
            nat,
            keep_snapshot,
            json,
        }) => {
            let p = banger_api::types::VmForkParams {
                name,
                count,
                child_name,
                nat,
                keep_snapshot,
            };
            snapshot::fork(&layout, p, json).await
        }
        Command::Snapshot(SnapshotCommand::List(args)) => snapshot::list(&layout, args.json).await,
        Command::Snapshot(SnapshotCommand::Show { name, json }) => {
            snapshot::show(&layout, name, json).await
        }
        Command::Snapshot(SnapshotCommand::Rm { names }) => snapshot::rm(&layout, names).await,
        Command::Vm(VmCommand::Restart(n)) => vm::many(&layout, &n.names, vm::Op::Restart).await,
        Command::Vm(VmCommand::Kill(n)) => vm::many(&layout, &n.names, vm::Op::Kill).await,
        Command::Vm(VmCommand::Delete(n)) => vm::many(&layout, &n.names, vm::Op::Delete).await,
        Command::Vm(VmCommand::Ssh { name, command }) => {
            vm::ssh(&layout, &name, &command, true).await
        }
        Command::Vm(VmCommand::Exec {
            name,
            guest_path,
            tty,
            env,
            timeout,
            command,
        }) => {
            let opts = exec::ExecOpts {
                cwd: guest_path,
                tty,
                env,
                timeout,
            };
            exec::exec(&layout, &name, &command, &opts).await
        }
        Command::Vm(VmCommand::Cp { src, dst }) => cp::cp(&layout, &src, &dst).await,
        Command::Vm(VmCommand::Logs {
            name,
            follow,
            tail,
            console: _,
            vmm,
        }) => {
            let source = if vmm {
                banger_api::types::LogSource::Vmm
            } else {
                banger_api::types::LogSource::Console
            };
            vm::logs(
                &layout,
                banger_api::types::VmLogsParams {
                    name,
                    source,
                    tail,
                    follow,
                },
            )
            .await
        }
        Command::Vm(VmCommand::Set {
            name,
            nat,
            no_nat,
            vcpu,
            memory,
        }) => {
            let nat = match (nat, no_nat) {
                (true, _) => Some(true),
                (_, true) => Some(false),
                _ => None,
            };
            net::set(&layout, &name, nat, vcpu, memory).await
        }
        Command::Vm(VmCommand::Ports { names, json }) => net::ports(&layout, &names, json).await,
        Command::Doctor { json, fix, yes } => {
            if fix {
                crate::doctor::fix(&layout, yes)?;
            }
            doctor(&layout, json).await
        }
        Command::System(SystemCommand::Install {
            owner,
            destdir,
            prefix,
        }) => system::install(&owner, destdir.as_deref(), &prefix).await,
        Command::System(SystemCommand::Status) => system::status().await,
        Command::System(SystemCommand::Restart) => system::restart().await,
        Command::System(SystemCommand::Uninstall { purge, destdir }) => {
            system::uninstall(destdir.as_deref(), purge)
        }
        Command::SshConfig { install, uninstall } => sshconfig::run(&layout, install, uninstall),
        Command::Net(NetCommand::Status { json }) => net::net_status(&layout, json).await,
        Command::Dns(DnsCommand::Status { json }) => net::dns_status(&layout, json).await,
        Command::Kernel(KernelCommand::Import {
            name,
            from_distro,
            vmlinux,
            initrd,
            modules,
        }) => {
            let files = image::KernelFiles {
                name,
                from_distro,
                vmlinux,
                initrd,
                modules,
            };
            image::kernel_import(&layout, files).await
        }
        Command::Kernel(KernelCommand::List { available, json }) => {
            image::kernel_list(&layout, available, json).await
        }
        Command::Kernel(KernelCommand::Pull { name }) => image::kernel_pull(&layout, name).await,
        Command::Kernel(KernelCommand::Show { name, json }) => {
            image::kernel_show(&layout, name, json).await
        }
        Command::Kernel(KernelCommand::Rm { name }) => image::kernel_rm(&layout, name).await,
        Command::Image(ImageCommand::Pull {
            reference,
            name,
            kernel_ref,
            insecure,
        }) => image::pull(&layout, reference, name, kernel_ref, insecure).await,
        Command::Image(ImageCommand::Ensure { name }) => image::ensure(&layout, name).await,
        Command::Api(crate::cli::ApiCommand::Schema) => {
            output::data(banger_api::schema::api_schema_text().trim_end());
            Ok(ExitCode::SUCCESS)
        }
        Command::Mcp(args) => match &args.install {
            Some(crate::cli::McpCommand::Install {
                client,
                print,
                ephemeral,
            }) => mcp::install(client, *print, *ephemeral),
            None => mcp::serve(&layout, &args).await,
        },
        Command::Image(ImageCommand::List { json }) => image::list(&layout, json).await,
        Command::Image(ImageCommand::Show { name, json }) => image::show(&layout, name, json).await,
        Command::Image(ImageCommand::Register {
            name,
            rootfs,
            kernel,
            initrd,
            modules,
            kernel_ref,
        }) => {
            let r = image::Register {
                name,
                rootfs,
                kernel,
                initrd,
                modules,
                kernel_ref,
            };
            image::register(&layout, r).await
        }
        Command::Image(ImageCommand::Export { name, output }) => {
            image::export(&layout, name, &output).await
        }
        Command::Image(ImageCommand::Promote { name }) => image::promote(&layout, name).await,
        Command::Image(ImageCommand::Delete { name }) => image::delete(&layout, name).await,
        Command::Image(ImageCommand::Cache(CacheCommand::Prune { dry_run, all })) => {
            image::cache_prune(&layout, dry_run, all).await
        }
        Command::Completion { shell } => {
            let mut out = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "banger", &mut out);
            output::data(&String::from_utf8_lossy(&out));
            Ok(ExitCode::SUCCESS)
        }
    }
}

async fn doctor(layout: &Layout, as_json: bool) -> anyhow::Result<ExitCode> {
    use crate::doctor::{DaemonFacts, Level, RealFacts, checks};
    let config = banger_config::Config::load(&layout.config_path)?;
    let mut facts = DaemonFacts::default();
    match connect(layout).await {
        Ok(mut conn) => {
            facts.agent.clone_from(&conn.ping.agent);
            facts.net = conn
                .client
                .call::<banger_api::methods::NetStatusGet>(&banger_api::types::Empty {})
                .await
                .ok();
            facts.images = conn
                .client
                .call::<banger_api::methods::ImageList>(&banger_api::types::Empty {})
                .await
                .ok();
            facts.resolves_vm = tokio::task::spawn_blocking(net::host_resolves_vm).await?;
        }
        Err(e) => facts.error = Some(format!("{e:#}")),
    }
    let host = RealFacts {
        db: layout.db_path(),
        ssh_config: layout.ssh_config_path(),
    };
    let rows = checks(&host, &config, &facts);
    if as_json {
        output::json(&rows)?;
    } else {
        let mut table = Vec::new();
        for c in &rows {
            let level = match c.level {
                Level::Pass => "PASS",
                Level::Warn => "WARN",
                Level::Fail => "FAIL",
            };
            table.push(vec![level.to_owned(), c.name.to_owned(), c.detail.clone()]);
            if let Some(h) = &c.hint {
                table.push(vec![String::new(), String::new(), format!("hint: {h}")]);
            }
        }
        output::data(&output::table(&["", "CHECK", "DETAIL"], table));
    }
    Ok(if rows.iter().any(|c| c.level == Level::Fail) {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}
