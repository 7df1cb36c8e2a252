//! VMM backends behind one trait. [`firecracker`] drives Firecracker over its API socket;
//! [`qemu`] runs the VM spec as a `qemu-system-x86_64 -M
//! microvm` process (KVM when usable, else TCG).
//!
//! A launched VMM is a daemonized process that outlives the daemon; it is identified by
//! pid plus start time ([`crate::process`]), so a reused pid is never taken for it.

pub mod firecracker;
pub mod qemu;
pub mod qmp;

use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub use firecracker::FirecrackerVmm;
pub use qemu::{Accel, QemuVmm};

/// A virtio block device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Drive {
    /// Drive id (`rootfs`, `work`).
    pub id: String,
    /// Backing file.
    pub path: PathBuf,
    /// Attach read-only.
    pub read_only: bool,
}

/// The guest's network interface.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetSpec {
    /// Host tap device.
    pub tap: String,
    /// Guest MAC address.
    pub mac: String,
}

/// A vsock device exposed on a host unix socket (Firecracker's hybrid `CONNECT <port>` protocol).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VsockSpec {
    /// Guest context id (≥ 3).
    pub cid: u32,
    /// Host unix socket.
    pub uds_path: PathBuf,
}

/// Everything a backend needs to run a VM.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmSpec {
    /// VM name (for process titles and logs).
    pub name: String,
    /// Virtual CPUs.
    pub vcpu: u32,
    /// Memory in MiB.
    pub memory_mib: u64,
    /// Kernel image.
    pub kernel: PathBuf,
    /// Initramfs.
    pub initrd: Option<PathBuf>,
    /// Kernel command line.
    pub cmdline: String,
    /// Block devices, in guest order (`vda`, `vdb`, ...).
    pub drives: Vec<Drive>,
    /// Network interface.
    pub net: Option<NetSpec>,
    /// vsock device.
    pub vsock: Option<VsockSpec>,
    /// Directory for the VMM's sockets, pid file and logs.
    pub run_dir: PathBuf,
    /// Serial console output file.
    pub console_log: PathBuf,
    /// The VMM's own log file.
    pub vmm_log: PathBuf,
    /// Start from this snapshot directory (`state` + `memory`, see [`Vmm::snapshot`])
    /// instead of booting; the guest resumes where the snapshot was taken.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restore: Option<PathBuf>,
    /// The restore directory's files are this VM's alone (a fork's per-child slot): the
    /// backend may move its memory file instead of copying it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub restore_owned: bool,
    /// `cgroup.procs` files the VMM process enters before it runs
    /// ([`crate::cgroup::CgroupEntry`]); empty: the daemon's own cgroup.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cgroup: Vec<PathBuf>,
}

/// A running VMM process.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmmHandle {
    /// Backend name (`qemu`, `firecracker`).
    pub backend: String,
    /// Process id.
    pub pid: u32,
    /// Process start time (clock ticks since boot).
    pub start_time: u64,
    /// Control socket (QMP or the Firecracker API).
    pub control_socket: PathBuf,
    /// Helper processes that live and die with the VM (pid, start time), e.g. QEMU's
    /// vhost-user vsock backend.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub helpers: Vec<(u32, u64)>,
}

/// Errors of VMM backends.
#[derive(Debug, thiserror::Error)]
pub enum VmmError {
    /// A socket path does not fit in `sun_path` (108 bytes).
    #[error("socket path {0} is longer than 107 bytes")]
    SocketPathTooLong(PathBuf),
    /// The VMM binary could not be started.
    #[error("cannot start {program}")]
    Spawn {
        /// Binary.
        program: String,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// The VMM exited during startup.
    #[error("{program} failed to start: {detail}")]
    Startup {
        /// Binary.
        program: String,
        /// Its last log lines.
        detail: String,
    },
    /// The VMM's API refused a request.
    #[error("{request} failed ({status}): {fault}")]
    Api {
        /// Method and path.
        request: String,
        /// HTTP status.
        status: u16,
        /// The VMM's fault message.
        fault: String,
    },
    /// The VMM is present but cannot be used.
    #[error("{0}")]
    Unsupported(String),
    /// The VMM's cgroup could not be entered.
    #[error("cannot place the vmm in its cgroup")]
    Cgroup(#[from] crate::cgroup::CgroupError),
    /// Filesystem error around the VMM's files.
    #[error("vmm file error at {path}")]
    Io {
        /// Path.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
}

/// A VMM backend.
pub trait Vmm: Send + Sync + fmt::Debug {
    /// Backend name, shown by `vm show` and in logs.
    fn name(&self) -> String;
    /// Starts the VM; returns once the VMM process runs.
    fn launch(&self, spec: &VmSpec) -> Result<VmmHandle, VmmError>;
    /// Whether the VMM process is still the one we started.
    fn is_alive(&self, handle: &VmmHandle) -> bool {
        crate::process::is_same_process(handle.pid, handle.start_time)
    }
    /// Asks the VMM to shut the guest down (best effort; the caller waits, then kills).
    fn request_shutdown(&self, _handle: &VmmHandle) {}
    /// Kills the VMM process and its helpers.
    fn kill(&self, handle: &VmmHandle) {
        crate::process::kill(handle.pid, handle.start_time);
        for (pid, start) in &handle.helpers {
            crate::process::kill(*pid, *start);
        }
    }
    /// Host memory the VMM process needs beyond the guest's RAM, MiB (its cgroup's
    /// memory limit is the sum).
    fn memory_overhead_mib(&self) -> u64 {
        crate::cgroup::MEMORY_OVERHEAD_MIB
    }
    /// Whether `launch` honours `VmSpec::vsock`.
    fn supports_vsock(&self) -> bool {
        true
    }
    /// Whether [`Vmm::snapshot`] and launches with `VmSpec::restore` work.
    fn supports_snapshots(&self) -> bool {
        false
    }
    /// The program that makes disk overlays (`qemu-img`) when this backend layers disks at
    /// snapshots ([`Vmm::layer_disks`]); `None`: snapshots copy disks.
    fn overlay_tool(&self) -> Option<PathBuf> {
        None
    }
    /// Moves a paused VM's drives onto new overlays, `(drive id, overlay)`: each overlay
    /// exists and is backed by the drive's current file (by another name, [`crate::qcow2`]);
    /// from now on the VM writes the overlays and only reads the files it wrote until now.
    fn layer_disks(
        &self,
        _handle: &VmmHandle,
        _overlays: &[(String, PathBuf)],
    ) -> Result<(), VmmError> {
        Err(VmmError::Unsupported(format!(
            "{} cannot layer disks",
            self.name()
        )))
    }
    /// Stops the guest's vCPUs (its devices quiesce).
    fn pause(&self, _handle: &VmmHandle) -> Result<(), VmmError> {
        Err(VmmError::Unsupported(format!(
            "{} cannot pause VMs",
            self.name()
        )))
    }
    /// Runs a paused guest again.
    fn resume(&self, _handle: &VmmHandle) -> Result<(), VmmError> {
        Err(VmmError::Unsupported(format!(
            "{} cannot resume VMs",
            self.name()
        )))
    }
    /// Connects (`up`) or disconnects the guest's network link. A VM restored from a
    /// snapshot starts with its link down, so nothing leaves it under the snapshot's
    /// identity before it has its own.
    fn set_link(&self, _handle: &VmmHandle, _up: bool) -> Result<(), VmmError> {
        Ok(())
    }
    /// Writes a paused VM's device state (`dir/state`) and memory (`dir/memory`) into the
    /// existing, empty `dir`. The VM stays paused.
    fn snapshot(&self, _handle: &VmmHandle, _spec: &VmSpec, _dir: &Path) -> Result<(), VmmError> {
        Err(VmmError::Unsupported(format!(
            "{} cannot snapshot VMs",
            self.name()
        )))
    }
}

/// Fails when `path` cannot be a unix socket address.
pub fn check_socket_path(path: &std::path::Path) -> Result<(), VmmError> {
    if path.as_os_str().len() > 107 {
        return Err(VmmError::SocketPathTooLong(path.to_owned()));
    }
    Ok(())
}

/// Whether KVM can run a stock guest kernel here: `/dev/kvm` exists and a tiny 64-bit probe
/// guest runs (`crate::kvm::probe`). Nested paravirtual KVM (`kvm_pvm`) fails the probe.
pub fn kvm_usable() -> bool {
    std::path::Path::new("/dev/kvm").exists() && crate::kvm::probe().is_ok()
}

/// The backend a host will use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Choice {
    /// Firecracker at this path.
    Firecracker(PathBuf),
    /// QEMU with this acceleration.
    Qemu(Accel),
}

/// Picks the backend: `firecracker` and `qemu` are taken as asked; `auto` picks Firecracker
/// when its binary is present and KVM can really run a guest, else QEMU (KVM when usable,
/// else TCG). Returns the choice and a one-line reason for logs and `doctor`.
pub fn choose(kind: &str, firecracker: Option<PathBuf>, kvm: bool) -> (Choice, String) {
    let accel = if kvm { Accel::Kvm } else { Accel::Tcg };
    match (kind, firecracker) {
        ("firecracker", Some(bin)) => {
            let why = format!("config vmm = \"firecracker\" ({})", bin.display());
            (Choice::Firecracker(bin), why)
        }
        ("firecracker", None) => (
            Choice::Firecracker(PathBuf::from("firecracker")),
            "config vmm = \"firecracker\" (binary not found on PATH)".to_owned(),
        ),
        ("qemu", _) => (
            Choice::Qemu(accel),
            format!("config vmm = \"qemu\" ({})", accel_name(accel)),
        ),
        (_, Some(bin)) if kvm => {
            let why = format!(
                "auto: firecracker found at {} and KVM is usable",
                bin.display()
            );
            (Choice::Firecracker(bin), why)
        }
        (_, Some(_)) => (
            Choice::Qemu(accel),
            "auto: firecracker found but KVM cannot run a guest here; using qemu (tcg)".to_owned(),
        ),
        (_, None) => (
            Choice::Qemu(accel),
            format!(
                "auto: no firecracker binary; using qemu ({})",
                accel_name(accel)
            ),
        ),
    }
}

/// What the VMM choice reads from the host.
pub trait VmmFacts {
    /// `program` on `PATH`.
    fn which(&self, program: &str) -> Option<PathBuf>;
    /// Whether KVM can really run a guest here ([`kvm_usable`]).
    fn kvm_usable(&self) -> bool;
}

/// The real host.
#[derive(Debug, Default, Clone, Copy)]
pub struct RealVmmFacts;

impl VmmFacts for RealVmmFacts {
    fn which(&self, program: &str) -> Option<PathBuf> {
        crate::process::find_in_path(program)
    }
    fn kvm_usable(&self) -> bool {
        kvm_usable()
    }
}

/// The VMM choice `bangerd` makes and `doctor` reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    /// The backend.
    pub choice: Choice,
    /// Why, in one line.
    pub why: String,
    /// The Firecracker binary found (configured and a file, else on `PATH`).
    pub firecracker: Option<PathBuf>,
}

/// The one VMM choice of `bangerd` and `doctor`: config `vmm` (`auto`, `firecracker`,
/// `qemu`), the configured `firecracker_bin` when it is a file (else `firecracker` on
/// `PATH`), and whether KVM can run a guest; see [`choose`].
pub fn resolve_vmm(kind: &str, firecracker_bin: Option<&Path>, facts: &dyn VmmFacts) -> Resolved {
    let firecracker = firecracker_bin
        .filter(|p| p.is_file())
        .map(Path::to_owned)
        .or_else(|| facts.which("firecracker"));
    let (choice, why) = choose(kind, firecracker.clone(), facts.kvm_usable());
    Resolved {
        choice,
        why,
        firecracker,
    }
}

/// `kvm` or `tcg`.
pub fn accel_name(a: Accel) -> &'static str {
    match a {
        Accel::Kvm => "kvm",
        Accel::Tcg => "tcg",
    }
}

/// A fake VMM for tests: records launches, starts a harmless `sleep` so liveness and kill
/// are real, and can be told to fail.
#[derive(Debug, Default)]
pub struct FakeVmm {
    /// Launched specs.
    pub launches: std::sync::Mutex<Vec<VmSpec>>,
    /// When set, `launch` fails with this message.
    pub fail: std::sync::Mutex<Option<String>>,
    /// Pid and start time of every process launched.
    pub launched_pids: std::sync::Mutex<Vec<(u32, u64)>>,
}

impl Vmm for FakeVmm {
    fn name(&self) -> String {
        "fake".to_owned()
    }

    fn launch(&self, spec: &VmSpec) -> Result<VmmHandle, VmmError> {
        self.launches
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(spec.clone());
        if let Some(msg) = self
            .fail
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
        {
            return Err(VmmError::Startup {
                program: "fake".into(),
                detail: msg,
            });
        }
        let entry = crate::cgroup::CgroupEntry::open(&spec.cgroup)?;
        let mut cmd = std::process::Command::new("sleep");
        entry.apply(&mut cmd);
        let child = cmd.arg("600").spawn().map_err(|source| VmmError::Spawn {
            program: "sleep".into(),
            source,
        })?;
        let pid = child.id();
        // Reap it in the background so a kill does not leave a zombie.
        std::thread::spawn(move || {
            let mut child = child;
            let _ = child.wait();
        });
        let start_time = crate::process::start_time(pid).unwrap_or(0);
        self.launched_pids
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push((pid, start_time));
        Ok(VmmHandle {
            backend: "fake".into(),
            pid,
            start_time,
            control_socket: spec.run_dir.join("fake.sock"),
            helpers: Vec::new(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Facts(Option<&'static str>, bool);
    impl VmmFacts for Facts {
        fn which(&self, program: &str) -> Option<PathBuf> {
            (program == "firecracker").then_some(self.0?.into())
        }
        fn kvm_usable(&self) -> bool {
            self.1
        }
    }

    #[test]
    fn test_resolve_vmm_uses_a_configured_binary_only_when_it_is_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("firecracker");
        std::fs::write(&bin, "").unwrap();
        let r = resolve_vmm("auto", Some(&bin), &Facts(Some("/p/firecracker"), true));
        assert_eq!(r.choice, Choice::Firecracker(bin.clone()));
        assert_eq!(r.firecracker, Some(bin));
        let missing = dir.path().join("nope");
        let r = resolve_vmm("auto", Some(&missing), &Facts(Some("/p/firecracker"), true));
        assert_eq!(
            r.firecracker,
            Some(PathBuf::from("/p/firecracker")),
            "falls back to PATH"
        );
        let r = resolve_vmm("auto", Some(&missing), &Facts(None, true));
        assert_eq!(r.choice, Choice::Qemu(Accel::Kvm));
        let r = resolve_vmm("auto", None, &Facts(Some("/p/firecracker"), false));
        assert_eq!(r.choice, Choice::Qemu(Accel::Tcg), "{}", r.why);
    }

    #[test]
    fn test_choose_backend() {
        let fc = Some(PathBuf::from("/usr/bin/firecracker"));
        assert_eq!(
            choose("auto", fc.clone(), true).0,
            Choice::Firecracker("/usr/bin/firecracker".into())
        );
        let (c, why) = choose("auto", fc.clone(), false);
        assert_eq!(c, Choice::Qemu(Accel::Tcg));
        assert!(why.contains("KVM cannot run"), "{why}");
        assert_eq!(choose("auto", None, true).0, Choice::Qemu(Accel::Kvm));
        assert_eq!(choose("qemu", fc, true).0, Choice::Qemu(Accel::Kvm));
        assert_eq!(
            choose("firecracker", None, false).0,
            Choice::Firecracker("firecracker".into())
        );
    }
}
