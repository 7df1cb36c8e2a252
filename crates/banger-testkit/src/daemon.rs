//! A daemon wired with recording fakes, for tests and benchmarks of the control plane.
//!
//! Disks are real (`cp`, `mkfs.ext4`, `debugfs`, `ssh-keygen` through the real runner, with
//! failure injection by program name); the bridge and taps, the VMM and the guest are fakes,
//! so nothing touches the host network and no traffic goes to a guest address.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use banger_config::{Config, Layout};
use banger_host::disk;
use banger_host::vmm::{FakeVmm, Vmm};
use banger_host::{
    CommandRunner, FakeGuest, FakePrivileged, RealRunner, RecordingRunner, RunError, SystemClock,
};
use banger_store::{ImageRecord, KernelRecord, Store};

use banger_daemon::{Daemon, Infra};

/// Errors building a test bed.
#[derive(Debug, thiserror::Error)]
pub enum TestBedError {
    /// Filesystem or layout problem.
    #[error("test bed: {0}")]
    Setup(String),
}

fn setup<E: std::fmt::Display>(e: E) -> TestBedError {
    TestBedError::Setup(e.to_string())
}

/// A config for test beds: the seeded image, small sizing, 1 s boot timeout, no stop grace,
/// no tap pool and no DNS server (tests that want them turn them on).
pub fn small_config() -> Config {
    Config {
        tap_pool_size: 0,
        dns_listen: String::new(),
        default_image_name: TEST_IMAGE.into(),
        boot_timeout_secs: 1,
        stop_timeout_secs: 0,
        vm_defaults: banger_config::VmDefaults {
            vcpu: Some(1),
            memory_mib: Some(256),
            disk_size: Some("256M".into()),
        },
        ..Config::default()
    }
}

/// Creates (and starts) VM `name` on `daemon` with the config's sizing, NAT as given; the
/// error in its wire form (what a client sees).
pub async fn create_vm(
    daemon: &Daemon,
    name: &str,
    nat: bool,
) -> Result<banger_api::types::VmInfo, banger_api::RpcError> {
    let p = banger_api::types::VmCreateParams {
        name: Some(name.into()),
        nat,
        ..Default::default()
    };
    daemon
        .services
        .vm
        .create(p, &Arc::new(banger_daemon::progress::Progress::default()))
        .await
        .map_err(banger_api::RpcError::from)
}

/// The guest IPs the store says should be NATed: running VMs with `nat` on, sorted.
pub fn nat_wanted(daemon: &Daemon) -> Vec<std::net::Ipv4Addr> {
    let mut ips: Vec<std::net::Ipv4Addr> = daemon
        .infra
        .store
        .list_vms()
        .unwrap_or_default()
        .into_iter()
        .filter(|r| r.vm.nat && r.vm.state == banger_api::types::VmState::Running)
        .filter_map(|r| r.vm.guest_ip.parse().ok())
        .collect();
    ips.sort();
    ips
}

/// Host facts of a test bed: the real host's CPUs, memory and processes (the fake VMM's
/// processes are real), and host programs as the test says: all present unless listed in
/// `missing`.
#[derive(Debug, Default)]
pub struct BedProbe {
    /// Programs the "host" lacks.
    pub missing: Mutex<Vec<String>>,
}

impl banger_host::HostProbe for BedProbe {
    fn host_cpus(&self) -> u32 {
        banger_host::RealProbe.host_cpus()
    }
    fn host_memory_mib(&self) -> u64 {
        banger_host::RealProbe.host_memory_mib()
    }
    fn cpu_time(&self, pid: u32, start: u64) -> Option<std::time::Duration> {
        banger_host::RealProbe.cpu_time(pid, start)
    }
    fn rss_kib(&self, pid: u32) -> Option<u64> {
        banger_host::RealProbe.rss_kib(pid)
    }
    fn pss_kib(&self, pid: u32) -> Option<u64> {
        banger_host::RealProbe.pss_kib(pid)
    }
    fn which(&self, name: &str) -> Option<PathBuf> {
        let missing = self
            .missing
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        (!missing.iter().any(|m| m == name)).then(|| PathBuf::from("/usr/bin").join(name))
    }
}

/// The image every test bed has.
pub const TEST_IMAGE: &str = "test-image";

/// A daemon over a private home with fakes for everything but disks.
#[derive(Debug)]
pub struct TestBed {
    /// Keeps the home alive.
    pub home: tempfile::TempDir,
    /// The daemon.
    pub daemon: Arc<Daemon>,
    /// Program names whose next runs fail.
    pub fail_program: Arc<Mutex<Option<String>>>,
    /// The runner (records every command).
    pub runner: RecordingRunner,
    /// Bridge and taps.
    pub privileged: Arc<FakePrivileged>,
    /// The fake VMM (unused when another VMM was given).
    pub vmm: Arc<FakeVmm>,
    /// The guest.
    pub guest: Arc<FakeGuest>,
    /// Host facts (programs present or missing).
    pub probe: Arc<BedProbe>,
}

impl TestBed {
    /// A test bed with `config` (its paths are ignored) and one seeded image.
    pub fn new(config: Config) -> Result<Self, TestBedError> {
        Self::with_vmm(config, None)
    }

    /// Like [`TestBed::new`], with `vmm` instead of the fake VMM when given.
    pub fn with_vmm(config: Config, vmm: Option<Arc<dyn Vmm>>) -> Result<Self, TestBedError> {
        Self::build(config, vmm, Disks::Real)
    }

    /// Like [`TestBed::new`] but with the real bridge, taps and nftables (`ip`, `nft`): for
    /// tests that run inside a network namespace of their own.
    pub fn real_network(config: Config) -> Result<Self, TestBedError> {
        let real = Arc::new(banger_host::InProcessPrivileged::new(Arc::new(RealRunner)));
        Self::build_with(config, None, Disks::Real, Some(real))
    }

    /// Like [`TestBed::new`] with `privileged` doing the bridge, taps and NAT (e.g. a client
    /// of the root helper).
    pub fn with_privileged(
        config: Config,
        privileged: Arc<dyn banger_host::PrivilegedOps>,
    ) -> Result<Self, TestBedError> {
        Self::build_with(config, None, Disks::Real, Some(privileged))
    }

    /// A second daemon over the same home and host (a daemon restart): fresh services, caches
    /// and locks, same store, fakes and files.
    #[must_use]
    pub fn restarted(&self) -> Arc<Daemon> {
        Arc::new(Daemon::new(
            self.daemon.infra.clone(),
            banger_config::layout::current_uid(),
        ))
    }

    /// The most general constructor.
    pub fn build(
        config: Config,
        vmm: Option<Arc<dyn Vmm>>,
        disks: Disks,
    ) -> Result<Self, TestBedError> {
        Self::build_with(config, vmm, disks, None)
    }

    /// Like [`TestBed::new`] with the home in a new directory under `parent` (e.g. a small
    /// filesystem).
    pub fn in_dir(config: Config, parent: &Path) -> Result<Self, TestBedError> {
        Self::build_in(config, None, Disks::Real, None, Some(parent))
    }

    fn build_with(
        config: Config,
        vmm: Option<Arc<dyn Vmm>>,
        disks: Disks,
        real_privileged: Option<Arc<dyn banger_host::PrivilegedOps>>,
    ) -> Result<Self, TestBedError> {
        Self::build_in(config, vmm, disks, real_privileged, None)
    }

    fn build_in(
        config: Config,
        vmm: Option<Arc<dyn Vmm>>,
        disks: Disks,
        real_privileged: Option<Arc<dyn banger_host::PrivilegedOps>>,
        parent: Option<&Path>,
    ) -> Result<Self, TestBedError> {
        let custom_vmm = vmm;
        let home = match parent {
            Some(p) => tempfile::tempdir_in(p),
            None => tempfile::tempdir(),
        }
        .map_err(setup)?;
        let h = home.path().to_owned();
        let layout =
            Layout::from_vars(|k| (k == "BANGER_HOME").then(|| h.clone()), 0).map_err(setup)?;
        layout.ensure_dirs().map_err(setup)?;
        let store = Store::open(&layout.db_path()).map_err(setup)?;
        let fail_program: Arc<Mutex<Option<String>>> = Arc::default();
        let fail = Arc::clone(&fail_program);
        // The seed image is always built for real; afterwards `Simulated` fakes the commands.
        let seeded = Arc::new(std::sync::atomic::AtomicBool::new(true));
        let seeding = Arc::clone(&seeded);
        let runner = RecordingRunner::with_responder(move |cmd| {
            let injected = fail
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .clone();
            if injected.as_deref() == Some(cmd.program.as_str()) {
                return Err(RunError::Failed {
                    command: cmd.to_string(),
                    code: 1,
                    stderr: "injected failure".into(),
                });
            }
            if disks == Disks::Simulated && !seeding.load(std::sync::atomic::Ordering::Relaxed) {
                return Ok(simulate(cmd));
            }
            RealRunner.output(cmd)
        });
        seed_image(&layout, &store, &runner)?;
        seeded.store(false, std::sync::atomic::Ordering::Relaxed);
        let privileged = Arc::new(FakePrivileged::default());
        let vmm = Arc::new(FakeVmm::default());
        let guest = Arc::new(FakeGuest::default());
        let probe = Arc::new(BedProbe::default());
        let infra = Infra {
            layers: Arc::new(banger_daemon::layers::Layers::new(&layout)),
            layout,
            config: Arc::new(config),
            store: Arc::new(store),
            clock: Arc::new(SystemClock),
            runner: Arc::new(runner.clone()),
            privileged: real_privileged.unwrap_or_else(|| Arc::clone(&privileged) as _),
            vmm: custom_vmm.unwrap_or_else(|| Arc::clone(&vmm) as _),
            guest: Arc::clone(&guest) as _,
            probe: Arc::clone(&probe) as _,
            agent: None,
            cgroups: None,
        };
        Ok(TestBed {
            home,
            daemon: Arc::new(Daemon::new(infra, banger_config::layout::current_uid())),
            fail_program,
            runner,
            privileged,
            vmm,
            guest,
            probe,
        })
    }

    /// Makes every run of `program` fail (or none, with `None`).
    pub fn fail(&self, program: Option<&str>) {
        *self
            .fail_program
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = program.map(str::to_owned);
    }

    /// Everything a VM could leave behind: rows, taps, VM and run dirs, known_hosts lines,
    /// live fake VMM processes. Empty when nothing is left.
    pub fn leftovers(&self) -> Vec<String> {
        let infra = &self.daemon.infra;
        let mut out = Vec::new();
        for row in infra.store.list_vms().unwrap_or_default() {
            out.push(format!("row {}", row.vm.name));
        }
        let idle = self.daemon.services.network.idle_taps();
        for tap in self.privileged.taps() {
            if !idle.contains(&tap) {
                out.push(format!("tap {tap}"));
            }
        }
        for (name, ip) in self.daemon.services.network.dns_records() {
            out.push(format!("dns {name} {ip}"));
        }
        for ip in self.privileged.nat_ips() {
            out.push(format!("nat {ip}"));
        }
        for s in infra.store.list_snapshots().unwrap_or_default() {
            out.push(format!("snapshot {}", s.name));
        }
        for dir in [
            infra.layout.vms_dir(),
            infra.layout.runtime_dir.join("vms"),
            infra.layout.state_dir.join("snapshots"),
        ] {
            for e in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
                out.push(format!("file {}", e.path().display()));
            }
        }
        let kh = infra.layout.ssh_dir().join("known_hosts");
        for line in std::fs::read_to_string(kh).unwrap_or_default().lines() {
            if !line.trim().is_empty() {
                out.push(format!("known_hosts {line}"));
            }
        }
        let launched = self
            .vmm
            .launched_pids
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        for (pid, start) in launched {
            if banger_host::process::is_same_process(pid, start) {
                out.push(format!("process {pid}"));
            }
        }
        out
    }

    /// Nothing an image pull or a workspace prepare could leave: staging dirs, partial
    /// downloads, workspace staging repos, an image row or directory named `name`.
    pub fn pull_leftovers(&self, name: &str) -> Vec<String> {
        let layout = &self.daemon.infra.layout;
        let mut out = Vec::new();
        for e in std::fs::read_dir(layout.images_dir())
            .into_iter()
            .flatten()
            .flatten()
        {
            let n = e.file_name().to_string_lossy().into_owned();
            if n.starts_with(".staging") || n == name {
                out.push(format!("dir {n}"));
            }
        }
        let partial = layout.cache_dir.join("blobs/partial");
        for e in std::fs::read_dir(partial).into_iter().flatten().flatten() {
            out.push(format!("partial {}", e.path().display()));
        }
        for e in std::fs::read_dir(&layout.cache_dir)
            .into_iter()
            .flatten()
            .flatten()
        {
            if e.file_name().to_string_lossy().starts_with(".workspace-") {
                out.push(format!("workspace staging {}", e.path().display()));
            }
        }
        if matches!(self.daemon.infra.store.get_image(name), Ok(Some(_))) {
            out.push(format!("row {name}"));
        }
        out
    }

    /// The home directory.
    pub fn home(&self) -> &Path {
        self.home.path()
    }
}

/// How host disk commands run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Disks {
    /// Real `cp`, `mkfs.ext4`, `debugfs`, `ssh-keygen`.
    Real,
    /// Commands are recorded and succeed without running (`ssh-keygen` writes dummy keys), to
    /// measure the control plane alone.
    Simulated,
}

fn simulate(cmd: &banger_host::Cmd) -> banger_host::CmdOutput {
    if cmd.program == "ssh-keygen"
        && let Some(i) = cmd.args.iter().position(|a| a == "-f")
        && let Some(path) = cmd.args.get(i + 1)
    {
        let _ = std::fs::write(path, "-----BEGIN OPENSSH PRIVATE KEY-----\n");
        let _ = std::fs::write(format!("{path}.pub"), "ssh-ed25519 AAAAC3Nza fake\n");
    }
    banger_host::CmdOutput::ok()
}

fn seed_image(
    layout: &Layout,
    store: &Store,
    runner: &RecordingRunner,
) -> Result<(), TestBedError> {
    let dir = layout.images_dir().join(TEST_IMAGE);
    let seed = dir.join("work-seed");
    fs_err::create_dir_all(seed.join(".config")).map_err(setup)?;
    fs_err::write(seed.join(".profile"), "# test\n").map_err(setup)?;
    let rootfs = dir.join("rootfs.ext4");
    let tree = dir.join("tree");
    fs_err::create_dir_all(tree.join("etc/ssh")).map_err(setup)?;
    disk::make_ext4(runner, &rootfs, 32 << 20, "rootfs", Some(&tree)).map_err(setup)?;
    let kdir = layout.kernels_dir().join("test-kernel");
    fs_err::create_dir_all(&kdir).map_err(setup)?;
    let vmlinux: PathBuf = kdir.join("vmlinux");
    fs_err::write(&vmlinux, b"not a kernel").map_err(setup)?;
    let now = jiff::Timestamp::now().to_string();
    store
        .upsert_kernel(&KernelRecord {
            id: "k-test".into(),
            name: "test-kernel".into(),
            version: "0".into(),
            source: "test".into(),
            managed: true,
            vmlinux_path: vmlinux.display().to_string(),
            initrd_path: None,
            modules_dir: None,
            sha256: String::new(),
            created_at: now.clone(),
        })
        .map_err(setup)?;
    store
        .upsert_image(&ImageRecord {
            id: "i-test".into(),
            name: TEST_IMAGE.into(),
            source: "test".into(),
            managed: true,
            rootfs_path: rootfs.display().to_string(),
            work_seed_path: Some(seed.display().to_string()),
            kernel_id: Some("k-test".into()),
            digest: None,
            config: serde_json::json!({}),
            size_bytes: 32 << 20,
            created_at: now,
        })
        .map_err(setup)
}

/// A service result in the form a client sees: its error converted at the RPC edge.
pub trait Wire<T> {
    /// The result with its error as the wire's `RpcError`.
    fn wire(self) -> Result<T, banger_api::RpcError>;
}

impl<T, E> Wire<T> for Result<T, E>
where
    banger_api::RpcError: From<E>,
{
    fn wire(self) -> Result<T, banger_api::RpcError> {
        self.map_err(banger_api::RpcError::from)
    }
}

/// A test bed's daemon served on a real socket in a temporary directory.
#[derive(Debug)]
pub struct Served {
    /// The test bed.
    pub bed: TestBed,
    /// The daemon's socket.
    pub socket: PathBuf,
    _dir: tempfile::TempDir,
}

/// Serves `bed`'s daemon on a fresh socket (the server task lives as long as the runtime).
pub async fn served(bed: TestBed) -> Result<Served, TestBedError> {
    let dir = tempfile::tempdir().map_err(setup)?;
    let socket = dir.path().join("d.sock");
    let listener = banger_daemon::bind_socket(&socket).await.map_err(setup)?;
    tokio::spawn(banger_daemon::serve(Arc::clone(&bed.daemon), listener));
    Ok(Served {
        bed,
        socket,
        _dir: dir,
    })
}
