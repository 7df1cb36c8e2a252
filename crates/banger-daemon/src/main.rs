//! `bangerd`: banger's daemon.

use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context as _;
use banger_config::{Config, Layout, env};
use banger_daemon::{Daemon, Infra, bind_socket, logging, serve};
use banger_host::vmm::{self, Choice, FirecrackerVmm, QemuVmm, Vmm};
use banger_host::{CommandRunner, InProcessPrivileged, RealRunner, SystemClock};
use banger_store::{SchemaState, Store};
use clap::Parser;
use tracing::{error, info, warn};

/// banger's daemon: owns VM state and does the host work. The CLI starts it on demand.
#[derive(Debug, Parser)]
#[command(name = "bangerd", version = banger_api::VERSION)]
struct Args {
    /// Check the database schema and exit: 0 compatible, 1 migrations needed, 2 incompatible,
    /// 3 damaged (not a usable SQLite file).
    #[arg(long)]
    check_migrations: bool,
    /// Run as banger's root helper instead: serve the privileged operations (bridge, taps,
    /// NAT, resolver) on --socket for root and --owner-uid only, each argument checked
    /// against config.toml's bridge and network.
    #[arg(long, requires = "owner_uid")]
    root_helper: bool,
    /// The uid whose daemon may use the helper.
    #[arg(long, requires = "root_helper")]
    owner_uid: Option<u32>,
    /// The helper's socket (the root helper's, or the agent channel's).
    #[arg(long, default_value = "/run/banger/root-helper.sock")]
    socket: std::path::PathBuf,
    /// Run as a VM's agent channel helper instead (started by the QEMU backend, one per
    /// VM): carry `CONNECT <port>` clients of --socket over the virtio-serial port QEMU
    /// connects to --chardev.
    #[arg(long, requires_all = ["chardev", "socket"])]
    agent_mux: bool,
    /// The chardev socket QEMU connects to.
    #[arg(long, requires = "agent_mux")]
    chardev: Option<std::path::PathBuf>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let result = if args.check_migrations {
        check_migrations()
    } else if let (true, Some(chardev)) = (args.agent_mux, &args.chardev) {
        banger_host::agentmux::run(chardev, &args.socket)
            .map(|()| ExitCode::SUCCESS)
            .context("agent channel helper")
    } else if let (true, Some(owner)) = (args.root_helper, args.owner_uid) {
        root_helper(owner, &args.socket)
    } else {
        run()
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            #[allow(clippy::print_stderr)]
            {
                eprintln!("bangerd: {err:#}");
            }
            ExitCode::FAILURE
        }
    }
}

/// `bangerd --root-helper`: serves privileged operations for `owner` until killed.
fn root_helper(owner: u32, socket: &std::path::Path) -> anyhow::Result<ExitCode> {
    use std::os::unix::fs::PermissionsExt as _;
    if banger_config::layout::current_uid() != 0 {
        anyhow::bail!("the root helper must run as root");
    }
    let layout = Layout::from_env()?;
    let config = Config::load(&layout.config_path)?;
    let policy = banger_host::helper::Policy {
        bridge: config.bridge_name.clone(),
        network: config.cidr.network(),
        prefix: config.cidr.prefix_len(),
    };
    if let Some(dir) = socket.parent() {
        fs_err::create_dir_all(dir)?;
        fs_err::set_permissions(dir, std::fs::Permissions::from_mode(0o755))?;
    }
    let _ = fs_err::remove_file(socket);
    let listener = std::os::unix::net::UnixListener::bind(socket)
        .with_context(|| format!("cannot listen on {}", socket.display()))?;
    // Anyone may connect; the peer uid (SO_PEERCRED) decides who is served.
    fs_err::set_permissions(socket, std::fs::Permissions::from_mode(0o666))?;
    let runner: Arc<dyn CommandRunner> = Arc::new(RealRunner);
    let ops: Arc<dyn banger_host::PrivilegedOps> =
        Arc::new(InProcessPrivileged::new(runner).with_tap_owner(owner));
    #[allow(clippy::print_stderr)]
    {
        eprintln!(
            "bangerd root helper: serving uid {owner} on {} (bridge {}, network {})",
            socket.display(),
            config.bridge_name,
            config.cidr
        );
    }
    banger_host::helper::serve(&listener, owner, &Arc::new(policy), &ops);
    Ok(ExitCode::SUCCESS)
}

#[allow(clippy::print_stdout)]
fn check_migrations() -> anyhow::Result<ExitCode> {
    let layout = Layout::from_env()?;
    let db = layout.db_path();
    let state = match Store::inspect(&db) {
        Err(e @ banger_store::StoreError::Damaged { .. }) => {
            println!("damaged: {e}");
            return Ok(ExitCode::from(3));
        }
        other => other.with_context(|| format!("cannot inspect {}", db.display()))?,
    };
    Ok(match state {
        SchemaState::Compatible => {
            println!("compatible: {}", db.display());
            ExitCode::from(0)
        }
        SchemaState::NeedsMigration { pending } => {
            println!("migrations needed: {pending} pending for {}", db.display());
            ExitCode::from(1)
        }
        SchemaState::Incompatible { db_version, known } => {
            println!(
                "incompatible: {} has schema version {db_version}, this bangerd knows up to {known}",
                db.display()
            );
            ExitCode::from(2)
        }
    })
}

fn run() -> anyhow::Result<ExitCode> {
    let layout = Layout::from_env()?;
    let config = Config::load(&layout.config_path)?;
    layout
        .ensure_dirs()
        .context("cannot create banger's directories")?;
    let level = logging::effective_level(
        config.log_level,
        std::env::var(env::BANGER_LOG_LEVEL).ok().as_deref(),
    )?;
    logging::init(&layout.log_path(), level)
        .with_context(|| format!("cannot log to {}", layout.log_path().display()))?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async move {
        let result = serve_until_stopped(layout, config).await;
        if let Err(e) = &result {
            error!("bangerd failed: {e:#}");
        }
        result
    })?;
    Ok(ExitCode::SUCCESS)
}

async fn serve_until_stopped(layout: Layout, config: Config) -> anyhow::Result<()> {
    let db = layout.db_path();
    let store = tokio::task::spawn_blocking(move || Store::open(&db)).await??;
    let runner: Arc<dyn CommandRunner> = Arc::new(RealRunner);
    let vmm = select_vmm(&config);
    info!(vmm = vmm.name(), "vmm backend selected");
    let privileged: Arc<dyn banger_host::PrivilegedOps> = match &config.root_helper_socket {
        Some(sock) => {
            info!(
                "privileged operations go to the root helper at {}",
                sock.display()
            );
            Arc::new(banger_host::helper::HelperClient::new(sock))
        }
        None => Arc::new(InProcessPrivileged::new(Arc::clone(&runner))),
    };
    let cgroups = vm_cgroups(&layout, &config);
    let infra = Infra {
        cgroups: cgroups.clone(),
        layers: Arc::new(banger_daemon::layers::Layers::new(&layout)),
        layout: layout.clone(),
        config: Arc::new(config),
        store: Arc::new(store),
        clock: Arc::new(SystemClock),
        privileged,
        guest: Arc::new(banger_host::SshGuest::new(Arc::clone(&runner))),
        runner,
        vmm,
        probe: Arc::new(banger_host::RealProbe),
        agent: find_agent(),
    };
    let owner_uid = banger_config::layout::current_uid();
    let daemon = Arc::new(Daemon::new(infra, owner_uid));
    // Signal handlers go in before the socket is bound: a client that sees the socket may
    // send SIGTERM at once, and it must get a graceful stop.
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut int = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())?;
    let shutdown = daemon.shutdown.clone();
    tokio::spawn(async move {
        tokio::select! {
            _ = term.recv() => info!("SIGTERM received"),
            _ = int.recv() => info!("SIGINT received"),
            () = shutdown.cancelled() => return,
        }
        shutdown.cancel();
    });
    let listener = bind_socket(&layout.socket_path).await?;
    daemon.services.image.clean_leftovers();
    if let Err(e) = daemon.services.vm.reconcile().await {
        error!("reconcile failed: {}", banger_daemon::edge::chain(&e));
    }
    daemon
        .services
        .network
        .start_dns(daemon.shutdown.clone())
        .await;
    tokio::spawn(Arc::clone(&daemon.services.vm).poll_loop(daemon.shutdown.clone()));
    info!(
        pid = std::process::id(),
        version = banger_api::VERSION,
        commit = banger_api::COMMIT,
        socket = %layout.socket_path.display(),
        "bangerd started"
    );
    serve(Arc::clone(&daemon), listener).await;
    let _ = fs_err::remove_file(&layout.socket_path);
    if let Some(cg) = cgroups {
        cg.remove_instance();
    }
    info!("bangerd stopped");
    Ok(())
}

/// The daemon's VM cgroups (see `banger_host::cgroup`), when config wants them and the host
/// lets this daemon make them.
fn vm_cgroups(layout: &Layout, config: &Config) -> Option<Arc<banger_host::cgroup::VmCgroups>> {
    use banger_host::cgroup::{Hierarchy, VmCgroups, instance_name};
    if !config.vmm_cgroups {
        info!("vmm cgroups are off (config vmm_cgroups = false)");
        return None;
    }
    let made = Hierarchy::detect_or_mount(&layout.runtime_dir.join("cgroup"))
        .and_then(|h| VmCgroups::new(h, &instance_name(&layout.state_dir)));
    match made {
        Ok(cg) => {
            info!(
                version = cg.hierarchy().version(),
                path = %cg.path("").display(),
                "vmm cgroups"
            );
            Some(Arc::new(cg))
        }
        Err(e) => {
            warn!(
                "VMs run without cgroup limits: {}",
                banger_daemon::edge::chain(&e)
            );
            None
        }
    }
}

/// The static guest agent: `$BANGER_AGENT`, else next to this binary, else the static dev
/// build (`scripts/lib.sh build_agent`), else the installed one. Dynamic builds are skipped: a
/// guest's libc may differ from the host's.
fn find_agent() -> Option<std::path::PathBuf> {
    let exe_dir = std::env::current_exe().ok()?.parent()?.to_owned();
    let mut candidates: Vec<std::path::PathBuf> = Vec::new();
    if let Some(p) = std::env::var_os("BANGER_AGENT") {
        candidates.push(p.into());
    }
    candidates.extend(banger_host::process::agent_beside(&exe_dir));
    candidates.push("/usr/local/lib/banger/banger-agent".into());
    for c in &candidates {
        if c.is_file() {
            if banger_host::process::is_static_elf(c) {
                info!("guest agent: {}", c.display());
                return Some(c.clone());
            }
            info!(
                "guest agent: skipping {} (not statically linked)",
                c.display()
            );
        }
    }
    tracing::warn!(
        "guest agent not found; guests run without it (build it with `. scripts/lib.sh && build_agent`)"
    );
    None
}

/// Picks the VMM backend: Firecracker when chosen (or auto and usable), else QEMU.
fn select_vmm(config: &Config) -> Arc<dyn Vmm> {
    let resolved = vmm::resolve_vmm(
        &config.vmm.to_string(),
        config.firecracker_bin.as_deref(),
        &vmm::RealVmmFacts,
    );
    info!("vmm backend: {}", resolved.why);
    match resolved.choice {
        Choice::Firecracker(bin) => {
            let jailer = match (&config.jailer_bin, config.jailer_uid, config.jailer_gid) {
                (Some(binary), Some(uid), Some(gid)) => {
                    info!(
                        "firecracker runs under the jailer {} as {uid}:{gid}",
                        binary.display()
                    );
                    Some(banger_host::vmm::firecracker::Jailer {
                        binary: binary.clone(),
                        uid,
                        gid,
                    })
                }
                _ => None,
            };
            Arc::new(FirecrackerVmm::new(bin).with_jailer(jailer))
        }
        Choice::Qemu(accel) => {
            let qemu = config
                .qemu_bin
                .clone()
                .or_else(|| banger_host::process::find_in_path("qemu-system-x86_64"))
                .unwrap_or_else(|| "qemu-system-x86_64".into());
            // The agent channel's helper is this binary (`--agent-mux`).
            let mux = std::env::current_exe()
                .inspect_err(|e| tracing::warn!("guests get no agent channel: {e}"))
                .ok();
            Arc::new(
                QemuVmm::new(qemu, accel)
                    .with_agent_mux(mux)
                    .with_tb_size(config.qemu_tb_size_mib)
                    .with_qemu_img(banger_host::process::find_in_path("qemu-img")),
            )
        }
    }
}
