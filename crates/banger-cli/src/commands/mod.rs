//! Command implementations.

mod daemon;
mod vm;

use std::process::ExitCode;

use banger_config::Layout;
use clap::CommandFactory as _;

use crate::cli::{Cli, Command, DaemonCommand, VmCommand};
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
        Command::Completion { shell } => {
            let mut out = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "banger", &mut out);
            output::data(&String::from_utf8_lossy(&out));
            Ok(ExitCode::SUCCESS)
        }
    }
}
