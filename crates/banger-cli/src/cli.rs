//! Command-line grammar (clap derive). Doc comments are the help text.

use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;

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
    /// Manage kernels.
    #[command(subcommand)]
    Kernel(KernelCommand),
    /// Manage images.
    #[command(subcommand)]
    Image(ImageCommand),
    /// Manage snapshots and warm-start templates.
    #[command(subcommand)]
    Snapshot(SnapshotCommand),
    /// The daemon's API for people who write their own client.
    #[command(subcommand)]
    Api(ApiCommand),
    /// Serve banger's sandboxes to coding agents over MCP (stdio by default), or install
    /// banger into an agent's MCP config (`banger mcp install --client claude-code`).
    Mcp(McpArgs),
    /// Check this host: KVM, VMM backend, tools, store, daemon, network, DNS, default image.
    /// Exits 1 when a check fails.
    Doctor {
        /// Print JSON.
        #[arg(long)]
        json: bool,
        /// Fix what is safe to fix: banger's directories and ssh key, and missing packages
        /// through apt-get (asks first; as root).
        #[arg(long, conflicts_with = "json")]
        fix: bool,
        /// With --fix: install without asking.
        #[arg(long, short, requires = "fix")]
        yes: bool,
    },
    /// Print, add or remove the `Include` that makes `ssh NAME.vm` work with banger's key
    /// and pinned host keys (in ~/.ssh/config).
    SshConfig {
        /// Add the Include to ~/.ssh/config.
        #[arg(long, conflicts_with = "uninstall")]
        install: bool,
        /// Remove it.
        #[arg(long)]
        uninstall: bool,
    },
    /// The system install: the owner's daemon and the root helper as systemd services.
    #[command(subcommand)]
    System(SystemCommand),
    /// Host networking: bridge, tap pool, NAT.
    #[command(subcommand)]
    Net(NetCommand),
    /// The `<name>.vm` DNS server.
    #[command(subcommand)]
    Dns(DnsCommand),
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
    /// Create a VM, start it and wait until ssh answers.
    Create {
        #[command(flatten)]
        args: CreateArgs,
        /// Only record the VM and make its disks; do not start it.
        #[arg(long)]
        no_start: bool,
        /// Same as --snapshot.
        #[arg(long, value_name = "SNAPSHOT", conflicts_with_all = ["snapshot", "image", "vcpu", "memory", "disk_size", "cold"])]
        from: Option<String>,
    },
    /// Create, start, then open a shell in a fresh VM or run CMD in it (exit code propagates).
    /// With PATH (inside a git repo), its files are copied to /root/repo first and the shell
    /// or CMD starts there.
    Run(RunArgs),
    /// Start stopped VMs.
    Start(NamesArgs),
    /// Stop VMs gracefully (guest poweroff, then kill after a short deadline). With
    /// --suspend, their memory state goes to disk instead and `vm start` resumes them where
    /// they were (processes, /tmp and all).
    Stop {
        #[command(flatten)]
        names: NamesArgs,
        /// Suspend: keep memory state on disk for `vm start`.
        #[arg(long)]
        suspend: bool,
    },
    /// Snapshot a running VM (paused for the copy): memory, device state and disks. `vm
    /// create --from SNAPSHOT` starts copies of it.
    Snapshot {
        /// VM name or id.
        name: String,
        /// The snapshot's name (default: VM name plus a short id).
        #[arg(long = "name", value_name = "SNAPSHOT")]
        snapshot: Option<String>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Start copies of a running VM: it is snapshotted, then each child starts from the
    /// snapshot with its own address, MAC, name, host key and machine id, and sees the
    /// parent's files and processes as they were.
    Fork {
        /// VM name or id.
        name: String,
        /// How many children (1-16).
        #[arg(long, default_value_t = 1)]
        count: u32,
        /// Child name (NAME-1..NAME-K for several); generated when omitted.
        #[arg(long = "name", value_name = "NAME")]
        child_name: Option<String>,
        /// Turn NAT on in the children.
        #[arg(long)]
        nat: bool,
        /// Keep the snapshot (listed, usable by `vm create --from`); by default it goes
        /// once the children are up.
        #[arg(long)]
        keep_snapshot: bool,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Stop then start VMs.
    Restart(NamesArgs),
    /// Kill VMs at once (when `vm stop` hangs).
    Kill(NamesArgs),
    /// Stop VMs and remove them and their disks (irreversible).
    #[command(visible_alias = "rm")]
    Delete(NamesArgs),
    /// Open a shell in a VM, or run CMD there.
    Ssh {
        /// VM name or id.
        name: String,
        /// Command to run.
        #[arg(last = true)]
        command: Vec<String>,
    },
    /// Run CMD in a VM through its agent (in its workspace when it has one); its exit code
    /// is banger's (128+N when signal N killed it). stdin is passed on unless it is a
    /// terminal (then use -t); Ctrl-C reaches the command.
    Exec {
        /// VM name or id.
        name: String,
        /// Directory in the guest to run in (default: the workspace, else /root).
        #[arg(long, visible_alias = "cwd")]
        guest_path: Option<String>,
        /// Run on a pseudo-terminal (for interactive programs; needs stdin to be a terminal).
        #[arg(short, long)]
        tty: bool,
        /// Set an environment variable (repeatable).
        #[arg(short, long, value_name = "KEY=VALUE")]
        env: Vec<String>,
        /// Kill the command after this many seconds (exit code 124).
        #[arg(long, value_name = "SECS", value_parser = clap::value_parser!(u64).range(1..))]
        timeout: Option<u64>,
        /// Command to run.
        #[arg(last = true, required = true)]
        command: Vec<String>,
    },
    /// Copy files or directories between the host and a VM through its agent: `SRC VM:DST`
    /// or `VM:SRC DST` (into DST when it is a directory, else as DST; modes kept). `-` as the
    /// host side is a tar stream on stdin or stdout.
    Cp {
        /// Source: a host path, `VM:PATH`, or `-` (a tar on stdin).
        src: String,
        /// Destination: `VM:PATH`, a host path, or `-` (a tar on stdout).
        dst: String,
    },
    /// Copy a git work tree into a VM, or take the changes made there back.
    #[command(subcommand)]
    Workspace(WorkspaceCommand),
    /// VMM CPU and memory of VMs, and load, memory and disk use inside them.
    Stats {
        /// VM names or ids (default: all).
        names: Vec<String>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Delete every VM that is not running (stopped, created, error), after confirmation.
    Prune {
        /// Do not ask.
        #[arg(short, long)]
        force: bool,
    },
    /// Change a VM: NAT on or off (also while it runs); vCPUs and memory while it is stopped.
    Set {
        /// VM name or id.
        name: String,
        /// Let the guest reach the outside world through the host (NAT).
        #[arg(long, conflicts_with = "no_nat")]
        nat: bool,
        /// Cut the guest off from the outside world.
        #[arg(long)]
        no_nat: bool,
        /// vCPUs (stopped VMs only).
        #[arg(long)]
        vcpu: Option<u32>,
        /// Memory in MiB (stopped VMs only).
        #[arg(long)]
        memory: Option<u64>,
    },
    /// List listening TCP/UDP ports in running VMs, with `<name>.vm:port` endpoints.
    Ports {
        /// VM names or ids.
        #[arg(required = true)]
        names: Vec<String>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Show a VM's serial console log (or with --vmm the VMM's log); any size, streamed.
    Logs {
        /// VM name or id.
        name: String,
        /// Keep printing what is appended until the VM stops (Ctrl-C to stop earlier).
        #[arg(short, long)]
        follow: bool,
        /// Only the last N lines.
        #[arg(long, value_name = "N")]
        tail: Option<u64>,
        /// The guest's serial console (the default).
        #[arg(long, conflicts_with = "vmm")]
        console: bool,
        /// The VMM's own log instead of the console.
        #[arg(long)]
        vmm: bool,
    },
    /// Show one VM.
    Show {
        /// VM name or id.
        name: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum KernelCommand {
    /// Import a kernel: `--from-distro` fetches the distro's cloud kernel with apt (download
    /// only), extracts a bootable vmlinux and builds a small initramfs; `NAME --vmlinux PATH`
    /// copies a kernel (ELF vmlinux or bzImage) and optional initrd and modules.
    Import {
        /// Name to store it under (default for --from-distro: debian-cloud).
        name: Option<String>,
        /// Import the distro's cloud kernel.
        #[arg(long, conflicts_with_all = ["vmlinux", "initrd", "modules"])]
        from_distro: bool,
        /// Kernel file.
        #[arg(long)]
        vmlinux: Option<PathBuf>,
        /// Initramfs.
        #[arg(long, requires = "vmlinux")]
        initrd: Option<PathBuf>,
        /// Modules directory (lib/modules/VERSION).
        #[arg(long, requires = "vmlinux")]
        modules: Option<PathBuf>,
    },
    /// List kernels (`--available`: the catalog, with what is pulled).
    List {
        /// Show the kernel catalog instead.
        #[arg(long)]
        available: bool,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Fetch a kernel bundle from the catalog (`[[kernel_catalog]]` in config.toml).
    Pull {
        /// Kernel name in the catalog.
        name: String,
    },
    /// Show one kernel.
    Show {
        /// Kernel name.
        name: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Remove a kernel (refused while an image uses it).
    Rm {
        /// Kernel name.
        name: String,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum ImageCommand {
    /// Pull an image: a catalog name fetches its bundle; anything else is an OCI / Docker
    /// reference for linux/amd64 (loopback registries over plain HTTP; credentials from
    /// ~/.docker/config.json).
    Pull {
        /// Catalog name, or a reference such as docker.io/library/debian:bookworm.
        reference: String,
        /// Name to store it under (default: from the reference, e.g. debian-bookworm).
        #[arg(long)]
        name: Option<String>,
        /// Kernel to boot it with (default: the distro kernel).
        #[arg(long)]
        kernel_ref: Option<String>,
        /// Allow plain HTTP to a registry that is not on loopback.
        #[arg(long)]
        insecure: bool,
    },
    /// Make sure an image is available (builds the default debian-bookworm image once).
    Ensure {
        /// Image name (default: config `default_image_name`).
        name: Option<String>,
    },
    /// List images.
    List {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Show one image: source, digest, kernel, entrypoint/env/workdir, VMs using it.
    Show {
        /// Image name.
        name: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Register an ext4 root filesystem as an image; the files stay where they are.
    Register {
        /// Image name.
        #[arg(long)]
        name: String,
        /// Root filesystem (ext4 image file).
        #[arg(long)]
        rootfs: PathBuf,
        /// Kernel file (stored as kernel NAME-kernel).
        #[arg(
            long,
            conflicts_with = "kernel_ref",
            required_unless_present = "kernel_ref"
        )]
        kernel: Option<PathBuf>,
        /// Initramfs for --kernel.
        #[arg(long, requires = "kernel")]
        initrd: Option<PathBuf>,
        /// Modules directory for --kernel.
        #[arg(long, requires = "kernel")]
        modules: Option<PathBuf>,
        /// A stored kernel instead.
        #[arg(long)]
        kernel_ref: Option<String>,
    },
    /// Write an image as a catalog bundle (tar+zstd of rootfs.ext4 + manifest.json) and print
    /// its sha256, for an `[[image_catalog]]` entry.
    Export {
        /// Image name.
        name: String,
        /// Output file (`NAME.tar.zst`).
        #[arg(long, short)]
        output: PathBuf,
    },
    /// Copy a registered image's files into banger's storage.
    Promote {
        /// Image name.
        name: String,
    },
    /// Delete an image (refused while a VM uses it).
    Delete {
        /// Image name.
        name: String,
    },
    /// The layer blob cache.
    #[command(subcommand)]
    Cache(CacheCommand),
}

#[derive(Debug, Subcommand)]
pub(crate) enum CacheCommand {
    /// Remove cached layer blobs no stored image was pulled from.
    Prune {
        /// Only report what would be removed.
        #[arg(long)]
        dry_run: bool,
        /// Remove every cached blob (later pulls download again).
        #[arg(long)]
        all: bool,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum NetCommand {
    /// Show the bridge, idle pool taps, guests with NAT and the DNS server.
    Status {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum DnsCommand {
    /// Show where the DNS server listens, its records, and whether `<name>.vm` resolves on
    /// this host (with a recipe when it does not).
    Status {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum SystemCommand {
    /// Install banger system-wide (as root): binaries under --prefix, /etc/banger, and two
    /// systemd units — bangerd.service running as --owner (no root) and bangerd-root.service,
    /// the root helper — then start them and wait for the daemon to answer.
    Install {
        /// The user who runs banger (the daemon runs as this user).
        #[arg(long)]
        owner: String,
        /// Install into this staging root instead of / and start nothing (packaging).
        #[arg(long)]
        destdir: Option<std::path::PathBuf>,
        /// Installation prefix.
        #[arg(long, default_value = "/usr/local")]
        prefix: String,
    },
    /// Show whether both services run and the daemon answers.
    Status,
    /// Restart both services (running VMs keep running).
    Restart,
    /// Stop and remove the services and binaries (VMs, images and config stay).
    Uninstall {
        /// Also remove /etc/banger/config.toml.
        #[arg(long)]
        purge: bool,
        /// Uninstall from this staging root instead of /.
        #[arg(long)]
        destdir: Option<std::path::PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum WorkspaceCommand {
    /// Ship PATH's git work tree (tracked files; untracked with the flag; never ignored ones)
    /// into a running VM as a checkout whose HEAD is the host's.
    Prepare {
        /// VM name or id.
        name: String,
        /// A directory inside a git repository.
        path: std::path::PathBuf,
        #[command(flatten)]
        ws: WorkspaceArgs,
        /// Where in the guest.
        #[arg(long, default_value = "/root/repo")]
        guest_path: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Print a binary-safe patch of everything changed in the VM since prepare (commits and
    /// uncommitted changes); apply it on the host with `git apply`.
    Export {
        /// VM name or id.
        name: String,
        /// Diff against this commit instead of the prepared HEAD.
        #[arg(long)]
        base_commit: Option<String>,
        /// Write the patch to FILE instead of stdout.
        #[arg(long, short)]
        output: Option<std::path::PathBuf>,
    },
}

/// What of a repository ships (`vm workspace prepare`, `vm run PATH`).
#[derive(Debug, Clone, Default, Args)]
pub(crate) struct WorkspaceArgs {
    /// Create and check out this branch in the guest.
    #[arg(long)]
    pub(crate) branch: Option<String>,
    /// Start --branch from this ref (the guest gets that commit's files).
    #[arg(long, requires = "branch")]
    pub(crate) from: Option<String>,
    /// Also ship untracked files that git does not ignore.
    #[arg(long)]
    pub(crate) include_untracked: bool,
    /// List the files that would ship and the mode; change nothing.
    #[arg(long)]
    pub(crate) dry_run: bool,
}

/// `vm run`.
#[derive(Debug, Args)]
pub(crate) struct RunArgs {
    /// A directory inside a git repository to copy into the VM.
    pub(crate) path: Option<std::path::PathBuf>,
    #[command(flatten)]
    pub(crate) create: CreateArgs,
    #[command(flatten)]
    pub(crate) ws: WorkspaceArgs,
    /// Delete the VM afterwards.
    #[arg(long)]
    pub(crate) rm: bool,
    /// Create (and prepare the workspace), print the name and exit.
    #[arg(short = 'd', long, conflicts_with = "rm")]
    pub(crate) detach: bool,
    /// Command to run instead of an interactive shell.
    #[arg(last = true)]
    pub(crate) command: Vec<String>,
}

/// Sizing and image flags shared by `vm create` and `vm run`.
#[derive(Debug, Clone, Args)]
pub(crate) struct CreateArgs {
    /// VM name (1-63 of a-z, 0-9, '-'); generated when omitted.
    #[arg(long)]
    pub(crate) name: Option<String>,
    /// Image (default: config `default_image_name`, debian-bookworm).
    #[arg(long)]
    pub(crate) image: Option<String>,
    /// vCPUs. Default: [vm_defaults] in config, else host cpus/4 (max 4), else 1.
    #[arg(long)]
    pub(crate) vcpu: Option<u32>,
    /// Memory in MiB. Default: [vm_defaults] in config, else host RAM/8 (max 8 GiB), else 512.
    #[arg(long)]
    pub(crate) memory: Option<u64>,
    /// Work disk (/root) size, e.g. 8G. Default: [vm_defaults] in config, else 8G.
    #[arg(long)]
    pub(crate) disk_size: Option<String>,
    /// Let the guest reach the outside world through the host (NAT; `vm set` changes it).
    #[arg(long)]
    pub(crate) nat: bool,
    /// Label the VM (`key=value`, repeatable; shown by `vm list`).
    #[arg(long, value_name = "KEY=VALUE")]
    pub(crate) label: Vec<String>,
    /// Start from this snapshot (`banger snapshot list`) instead of booting: its image,
    /// vCPUs, memory, disks and running processes, with a new identity (`vm create` also
    /// takes it as `--from`).
    #[arg(long, value_name = "SNAPSHOT", conflicts_with_all = ["image", "vcpu", "memory", "disk_size"])]
    pub(crate) snapshot: Option<String>,
    /// Boot cold even when the image has a warm-start template.
    #[arg(long, conflicts_with = "snapshot")]
    pub(crate) cold: bool,
}

#[derive(Debug, Args)]
pub(crate) struct NamesArgs {
    /// VM names or ids (several run concurrently).
    #[arg(required = true)]
    pub(crate) names: Vec<String>,
}

#[derive(Debug, Args)]
pub(crate) struct ListArgs {
    /// Print JSON.
    #[arg(long)]
    pub(crate) json: bool,
}

/// `banger mcp`.
#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub(crate) struct McpArgs {
    #[command(subcommand)]
    pub(crate) install: Option<McpCommand>,
    /// Serve streamable HTTP on this loopback address (e.g. 127.0.0.1:8731) instead of stdio.
    #[arg(long, value_name = "ADDR")]
    pub(crate) http: Option<std::net::SocketAddr>,
    /// Delete the sandboxes this server created when the session ends (the client goes
    /// away or the server is signalled).
    #[arg(long)]
    pub(crate) ephemeral: bool,
}

/// `banger mcp install`.
#[derive(Debug, Subcommand)]
pub(crate) enum McpCommand {
    /// Add banger to a coding agent's MCP servers (or print the entry).
    Install {
        /// The agent: claude-code (./.mcp.json), cursor (~/.cursor/mcp.json), codex
        /// (~/.codex/config.toml) or gemini (~/.gemini/settings.json).
        #[arg(long, value_parser = ["claude-code", "cursor", "codex", "gemini"])]
        client: String,
        /// Print the entry instead of writing it.
        #[arg(long)]
        print: bool,
        /// Make the entry `banger mcp --ephemeral` (sandboxes deleted at session end).
        #[arg(long)]
        ephemeral: bool,
    },
}

/// `banger snapshot`.
#[derive(Debug, Subcommand)]
pub(crate) enum SnapshotCommand {
    /// List snapshots and templates.
    #[command(visible_alias = "ls")]
    List(ListArgs),
    /// One snapshot.
    Show {
        /// Snapshot name or id.
        name: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Remove snapshots (refused while a running VM maps one's memory).
    #[command(visible_alias = "delete")]
    Rm {
        /// Snapshot names or ids.
        #[arg(required = true)]
        names: Vec<String>,
    },
}

/// `banger api`.
#[derive(Debug, Subcommand)]
pub(crate) enum ApiCommand {
    /// Print the JSON Schema of every RPC method's params and result (docs/api-schema.json;
    /// the protocol is described in docs/PROTOCOL.md).
    Schema,
}
