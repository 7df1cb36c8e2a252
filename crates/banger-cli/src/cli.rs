//! Command-line grammar (clap derive). Doc comments are the help text.

use clap::{Args, Parser, Subcommand};

/// One-command development sandboxes on microVMs.
///
/// `banger vm run` boots a fresh Linux VM with its own root filesystem, network and name,
/// and drops you into it (or runs a command in it). A daemon (`bangerd`) owns the state;
/// this CLI starts it when needed.
#[derive(Debug, Parser)]
#[command(name = "banger", version = banger_api::VERSION, propagate_version = true)]
pub(crate) struct Cli {
    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Print version details of the CLI and, when running, the daemon.
    Version,
    /// Check that the daemon answers (starting it if needed).
    Ping,
    /// Manage the daemon process.
    #[command(subcommand)]
    Daemon(DaemonCommand),
    /// Manage VMs.
    #[command(subcommand)]
    Vm(VmCommand),
    /// List VMs (same as `banger vm list`).
    Ps(ListArgs),
    /// Print a shell completion script.
    Completion {
        /// The shell.
        shell: clap_complete::Shell,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum DaemonCommand {
    /// Show whether the daemon runs, its pid, version, socket and log.
    Status {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Stop the daemon gracefully. Running VMs keep running.
    Stop,
}

#[derive(Debug, Subcommand)]
pub(crate) enum VmCommand {
    /// List VMs.
    #[command(visible_alias = "ls")]
    List(ListArgs),
    /// Show one VM.
    Show {
        /// VM name or id.
        name: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Args)]
pub(crate) struct ListArgs {
    /// Print JSON.
    #[arg(long)]
    pub(crate) json: bool,
}
