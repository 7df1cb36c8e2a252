//! The QEMU backend: `qemu-system-x86_64 -M microvm`, daemonized, with a QMP socket.

use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::qmp::{Qmp, QmpError, qmp_command};
use super::{VmSpec, Vmm, VmmError, VmmHandle, check_socket_path};

/// CPU acceleration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accel {
    /// Hardware virtualization.
    Kvm,
    /// Software emulation (needs `tsc_early_khz=` on the kernel command line under microvm).
    Tcg,
}

/// QEMU as a VMM.
#[derive(Debug, Clone)]
pub struct QemuVmm {
    binary: PathBuf,
    accel: Accel,
    agent_mux: Option<PathBuf>,
    tb_size_mib: u32,
    qemu_img: Option<PathBuf>,
}

impl QemuVmm {
    /// QEMU at `binary` with `accel`; no vsock.
    pub fn new(binary: PathBuf, accel: Accel) -> Self {
        QemuVmm {
            binary,
            accel,
            agent_mux: None,
            tb_size_mib: 0,
            qemu_img: None,
        }
    }

    /// Gives guests the agent channel: a virtio-serial port whose host end is
    /// `binary --agent-mux` (`bangerd`), which offers the same `CONNECT <port>` socket as
    /// Firecracker's vsock ([`crate::agentmux`]). Unlike vhost-user-vsock, the port's state
    /// migrates, so these VMs can be snapshotted.
    #[must_use]
    pub fn with_agent_mux(mut self, binary: Option<PathBuf>) -> Self {
        self.agent_mux = binary;
        self
    }

    /// Caps TCG's translation cache at `mib` MiB per VM (0: QEMU's default, 1 GiB).
    #[must_use]
    pub fn with_tb_size(mut self, mib: u32) -> Self {
        self.tb_size_mib = mib;
        self
    }

    /// Layers disks at snapshots ([`Vmm::layer_disks`]), making overlays with `qemu_img`;
    /// without it, snapshots copy disks.
    #[must_use]
    pub fn with_qemu_img(mut self, qemu_img: Option<PathBuf>) -> Self {
        self.qemu_img = qemu_img;
        self
    }

    /// Starts the agent channel's helper for `spec`; returns its (pid, start time).
    fn start_mux(spec: &VmSpec, bin: &Path) -> Result<(u32, u64), VmmError> {
        let Some(vsock) = &spec.vsock else {
            return Err(VmmError::Unsupported("no agent socket in spec".into()));
        };
        let sock = serial_socket(&spec.run_dir);
        check_socket_path(&sock)?;
        check_socket_path(&vsock.uds_path)?;
        let _ = fs_err::remove_file(&sock);
        let _ = fs_err::remove_file(&vsock.uds_path);
        let (log, log2) = append_log(&spec.vmm_log)?;
        let program = bin.display().to_string();
        let mut child = Command::new(bin)
            .arg("--agent-mux")
            .arg("--chardev")
            .arg(&sock)
            .arg("--socket")
            .arg(&vsock.uds_path)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2)
            .process_group(0)
            .spawn()
            .map_err(|source| VmmError::Spawn {
                program: program.clone(),
                source,
            })?;
        let pid = child.id();
        let deadline = Instant::now() + Duration::from_secs(5);
        while !sock.exists() {
            if let Ok(Some(status)) = child.try_wait() {
                return Err(VmmError::Startup {
                    program,
                    detail: format!("agent channel helper exited with {status}"),
                });
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return Err(VmmError::Startup {
                    program,
                    detail: "no agent channel socket after 5s".into(),
                });
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        let start = crate::process::start_time(pid).unwrap_or(0);
        std::thread::spawn(move || {
            let _ = child.wait();
        });
        Ok((pid, start))
    }

    /// The acceleration in use.
    pub fn accel(&self) -> Accel {
        self.accel
    }
}

fn p(path: &Path) -> String {
    path.display().to_string()
}

/// A path as the value of a QEMU `key=value,...` option: commas doubled (QEMU's escape).
fn kv(path: &Path) -> String {
    p(path).replace(',', ",,")
}

/// The QMP socket of a VM run dir.
pub fn qmp_socket(run_dir: &Path) -> PathBuf {
    run_dir.join("qmp.sock")
}

/// `path` opened for appending, twice (stdout and stderr of a child).
fn append_log(path: &Path) -> Result<(std::fs::File, std::fs::File), VmmError> {
    let err = |source| VmmError::Io {
        path: path.to_owned(),
        source,
    };
    let log = fs_err::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(err)?
        .into_parts()
        .0;
    let log2 = log.try_clone().map_err(err)?;
    Ok((log, log2))
}

/// The socket QEMU connects the agent's virtio-serial port to (the helper listens).
pub fn serial_socket(run_dir: &Path) -> PathBuf {
    run_dir.join("agent-serial.sock")
}

/// The full QEMU argument vector for `spec` (without the binary), TCG's translation cache
/// capped at `tb_size_mib` (0: QEMU's default).
pub fn qemu_args_tb(spec: &VmSpec, accel: Accel, tb_size_mib: u32) -> Vec<String> {
    let mut a = qemu_args(spec, accel);
    if accel == Accel::Tcg
        && tb_size_mib > 0
        && let Some(i) = a.iter().position(|x| x == "tcg")
    {
        a[i] = format!("tcg,tb-size={tb_size_mib}");
    }
    a
}

/// The full QEMU argument vector for `spec` (without the binary).
pub fn qemu_args(spec: &VmSpec, accel: Accel) -> Vec<String> {
    let mut a: Vec<String> = Vec::new();
    let mut push = |xs: &[&str]| a.extend(xs.iter().map(|s| (*s).to_owned()));
    let machine = "microvm,pit=on,pic=on,rtc=on,memory-backend=mem";
    push(&[
        "-name",
        &format!("banger-{},process=banger-{}", spec.name, spec.name),
    ]);
    push(&["-M", machine]);
    push(&["-accel", if accel == Accel::Kvm { "kvm" } else { "tcg" }]);
    push(&["-cpu", if accel == Accel::Kvm { "host" } else { "max" }]);
    push(&[
        "-smp",
        &spec.vcpu.to_string(),
        "-m",
        &format!("{}M", spec.memory_mib),
    ]);
    push(&[
        "-nodefaults",
        "-no-user-config",
        "-display",
        "none",
        "-no-reboot",
    ]);
    push(&["-kernel", &p(&spec.kernel)]);
    if let Some(initrd) = &spec.initrd {
        push(&["-initrd", &p(initrd)]);
    }
    let mut cmdline = spec.cmdline.clone();
    if accel == Accel::Tcg && !cmdline.contains("tsc_early_khz=") {
        cmdline.push_str(" tsc_early_khz=2000000");
    }
    push(&["-append", &cmdline]);
    for d in &spec.drives {
        let ro = if d.read_only { ",readonly=on" } else { "" };
        push(&[
            "-drive",
            &format!(
                "id={},file={},format={},if=none,cache=unsafe{ro}",
                d.id,
                kv(&d.path),
                crate::qcow2::Format::of(&d.path).as_str()
            ),
        ]);
        push(&["-device", &format!("virtio-blk-device,drive={}", d.id)]);
    }
    if let Some(net) = &spec.net {
        push(&[
            "-netdev",
            &format!("tap,id=n0,ifname={},script=no,downscript=no", net.tap),
        ]);
        push(&[
            "-device",
            &format!("virtio-net-device,netdev=n0,mac={}", net.mac),
        ]);
    }
    // Guest memory is always shared, so `x-ignore-shared` leaves it out of a snapshot's
    // migration stream and the snapshot copies it out as a sparse file: a memfd for a boot;
    // for a restore, the VM's own copy of the snapshot's memory file in shared memory
    // (`memory_copy_path`, unlinked once QEMU has it mapped). (A private copy-on-write
    // mapping of the snapshot file would share pages between copies, but then the copy's
    // RAM is not shared: snapshotting it again would stream all of it, faulting in every
    // hole of the file — seconds for a few GiB.) A snapshot without a memory file (older
    // layout) carries the RAM in its stream: anonymous memory then.
    let memory = match &spec.restore {
        None => format!(
            "memory-backend-memfd,id=mem,size={}M,share=on",
            spec.memory_mib
        ),
        Some(dir) if has_memory_file(spec, dir) => format!(
            "memory-backend-file,id=mem,size={}M,mem-path={},share=on",
            spec.memory_mib,
            kv(&memory_copy_path(spec))
        ),
        Some(_) => format!("memory-backend-ram,id=mem,size={}M", spec.memory_mib),
    };
    push(&["-object", &memory]);
    if spec.vsock.is_some() {
        push(&["-device", "virtio-serial-device,max_ports=2"]);
        push(&[
            "-chardev",
            &format!(
                "socket,id=agent0,path={}",
                kv(&serial_socket(&spec.run_dir))
            ),
        ]);
        push(&[
            "-device",
            &format!(
                "virtserialport,chardev=agent0,name={}",
                banger_agent_proto::mux::PORT_NAME
            ),
        ]);
    }
    push(&["-serial", &format!("file:{}", p(&spec.console_log))]);
    push(&[
        "-qmp",
        &format!("unix:{},server=on,wait=off", kv(&qmp_socket(&spec.run_dir))),
    ]);
    push(&["-pidfile", &p(&spec.run_dir.join("qemu.pid"))]);
    if spec.restore.is_some() {
        push(&["-incoming", "defer"]);
    }
    push(&["-daemonize"]);
    a
}

/// A snapshot's device state (the migration stream).
pub const SNAPSHOT_STATE: &str = "state";
/// A snapshot's guest memory (a sparse file of the guest's size).
pub const SNAPSHOT_MEMORY: &str = "memory";

#[allow(clippy::needless_pass_by_value)] // used as `map_err(qmp_err)`
fn qmp_err(e: QmpError) -> VmmError {
    VmmError::Unsupported(e.to_string())
}

fn qmp(handle: &VmmHandle) -> Result<Qmp, VmmError> {
    Qmp::connect(&handle.control_socket, Duration::from_secs(10)).map_err(qmp_err)
}

/// Polls `query-migrate` until the outgoing migration ends.
fn wait_migration(q: &mut Qmp, deadline: Instant) -> Result<(), VmmError> {
    loop {
        let r = q
            .execute("query-migrate", serde_json::Value::Null)
            .map_err(qmp_err)?;
        match r.get("status").and_then(serde_json::Value::as_str) {
            Some("completed") => return Ok(()),
            Some(s @ ("failed" | "cancelled")) => {
                let why = r
                    .get("error-desc")
                    .and_then(serde_json::Value::as_str)
                    .unwrap_or(s);
                return Err(VmmError::Unsupported(format!("snapshot failed: {why}")));
            }
            _ if Instant::now() > deadline => {
                let _ = q.execute("migrate_cancel", serde_json::Value::Null);
                return Err(VmmError::Unsupported("snapshot timed out".into()));
            }
            _ => std::thread::sleep(Duration::from_millis(5)),
        }
    }
}

/// Where a restored VM's copy of the snapshot memory goes: `/dev/shm/banger-<uid>/` (shared
/// memory, like a boot's memfd), else the VM's run directory.
pub fn memory_copy_path(spec: &VmSpec) -> PathBuf {
    let dir = shared_memory_dir().unwrap_or_else(|| spec.run_dir.clone());
    let id = spec
        .run_dir
        .file_name()
        .map_or_else(|| spec.name.clone(), |n| n.to_string_lossy().into_owned());
    dir.join(format!("{id}.mem"))
}

/// Milliseconds since `t` (debug timings).
fn elapsed_ms(t: Instant) -> u64 {
    u64::try_from(t.elapsed().as_millis()).unwrap_or(u64::MAX)
}

/// Whether restore directory `dir` carries the guest memory as a file (a VM's own slot
/// always does: it may have been moved out already, by this launch).
fn has_memory_file(spec: &VmSpec, dir: &Path) -> bool {
    spec.restore_owned || dir.join(SNAPSHOT_MEMORY).is_file()
}

/// This user's directory in shared memory (`/dev/shm/banger-<uid>`), where restored VMs'
/// memory and a fork's transient snapshot live; `None` without `/dev/shm`.
pub fn shared_memory_dir() -> Option<PathBuf> {
    let uid = rustix::process::getuid().as_raw();
    let shm = Path::new("/dev/shm");
    shm.is_dir().then(|| shm.join(format!("banger-{uid}")))
}

/// Makes `dir` (e.g. [`shared_memory_dir`]) if it is missing, and owner-only.
pub fn make_private_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    std::fs::set_permissions(dir, std::os::unix::fs::PermissionsExt::from_mode(0o700))
}

/// The guest memory of QEMU process `pid` (`/proc/PID/fd/N`): its memfd, or its (unlinked)
/// copy of a snapshot's memory.
fn guest_memory_of(pid: u32) -> Option<PathBuf> {
    let dir = std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?;
    dir.flatten().map(|e| e.path()).find(|p| {
        std::fs::read_link(p).is_ok_and(|l| {
            let l = l.to_string_lossy();
            l.starts_with("/memfd:memory-backend-memfd")
                || (l.contains("/banger-") && l.ends_with(".mem (deleted)"))
        })
    })
}

/// Copies `src` into a new file `dest` of `len` bytes, keeping it sparse: only the data
/// ranges of `src` (`SEEK_DATA`) are read, and all-zero blocks within them are skipped.
pub fn sparse_copy(src: &Path, dest: &Path, len: u64) -> std::io::Result<()> {
    use rustix::fs::{SeekFrom, seek};
    use std::os::unix::fs::FileExt as _;
    const BLOCK: usize = 1 << 20;
    let from = std::fs::File::open(src)?;
    let to = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(dest)?;
    to.set_len(len)?;
    let mut buf = vec![0u8; BLOCK];
    let mut pos = 0u64;
    while pos < len {
        let start = match seek(&from, SeekFrom::Data(pos)) {
            Ok(p) => p,
            Err(rustix::io::Errno::NXIO) => break,
            Err(e) => return Err(e.into()),
        };
        let end = seek(&from, SeekFrom::Hole(start))?.min(len);
        let mut off = start;
        while off < end {
            let want = usize::try_from((end - off).min(BLOCK as u64)).unwrap_or(BLOCK);
            let n = from.read_at(&mut buf[..want], off)?;
            if n == 0 {
                break;
            }
            if buf[..n].iter().any(|&b| b != 0) {
                to.write_all_at(&buf[..n], off)?;
            }
            off += n as u64;
        }
        pos = end;
    }
    // Not fsynced: as durable as the disks copied beside it (a killed daemon loses
    // nothing; a power cut may).
    Ok(())
}

impl Vmm for QemuVmm {
    fn name(&self) -> String {
        match self.accel {
            Accel::Kvm => "qemu (kvm)".to_owned(),
            Accel::Tcg => "qemu (tcg)".to_owned(),
        }
    }

    fn memory_overhead_mib(&self) -> u64 {
        let tb = if self.accel == Accel::Tcg {
            // QEMU's default translation cache is 1 GiB.
            if self.tb_size_mib > 0 {
                u64::from(self.tb_size_mib)
            } else {
                1024
            }
        } else {
            0
        };
        crate::cgroup::MEMORY_OVERHEAD_MIB + tb
    }

    fn supports_vsock(&self) -> bool {
        self.agent_mux.is_some()
    }

    fn request_shutdown(&self, handle: &VmmHandle) {
        let _ = qmp_command(&handle.control_socket, "system_powerdown");
    }

    fn supports_snapshots(&self) -> bool {
        self.agent_mux.is_some()
    }

    fn overlay_tool(&self) -> Option<PathBuf> {
        self.qemu_img.clone().filter(|_| self.supports_snapshots())
    }

    /// One `transaction` of `blockdev-snapshot-sync` (`mode: existing`): every drive moves
    /// onto its overlay or none does; QEMU reopens the files it leaves read-only.
    fn layer_disks(
        &self,
        handle: &VmmHandle,
        overlays: &[(String, PathBuf)],
    ) -> Result<(), VmmError> {
        let actions: Vec<_> = overlays
            .iter()
            .map(|(drive, file)| {
                serde_json::json!({"type": "blockdev-snapshot-sync", "data": {
                    "device": drive,
                    "snapshot-file": file,
                    "format": "qcow2",
                    "mode": "existing",
                }})
            })
            .collect();
        qmp(handle)?
            .execute("transaction", serde_json::json!({"actions": actions}))
            .map(drop)
            .map_err(qmp_err)
    }

    fn pause(&self, handle: &VmmHandle) -> Result<(), VmmError> {
        qmp(handle)?
            .execute("stop", serde_json::Value::Null)
            .map(drop)
            .map_err(qmp_err)
    }

    fn set_link(&self, handle: &VmmHandle, up: bool) -> Result<(), VmmError> {
        qmp(handle)?
            .execute("set_link", serde_json::json!({"name": "n0", "up": up}))
            .map(drop)
            .map_err(qmp_err)
    }

    fn resume(&self, handle: &VmmHandle) -> Result<(), VmmError> {
        qmp(handle)?
            .execute("cont", serde_json::Value::Null)
            .map(drop)
            .map_err(qmp_err)
    }

    /// Device state through `migrate fd:` into `dir/state`; memory copied out of the
    /// memfd (left out of the stream by `x-ignore-shared`) into `dir/memory`. A VM that was
    /// itself restored has private memory, so the stream carries its RAM and there is no
    /// `dir/memory`.
    fn snapshot(&self, handle: &VmmHandle, spec: &VmSpec, dir: &Path) -> Result<(), VmmError> {
        let io = |path: PathBuf| move |source| VmmError::Io { path, source };
        let mut q = qmp(handle)?;
        q.execute(
            "migrate-set-capabilities",
            serde_json::json!({"capabilities": [{"capability": "x-ignore-shared", "state": true}]}),
        )
        .map_err(qmp_err)?;
        // The default bandwidth cap (32 MiB/s) is for live migration over a network; a
        // paused guest to a local file goes as fast as the disk takes it.
        q.execute(
            "migrate-set-parameters",
            serde_json::json!({"max-bandwidth": 1u64 << 40}),
        )
        .map_err(qmp_err)?;
        let state_path = dir.join(SNAPSHOT_STATE);
        let state = fs_err::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&state_path)
            .map_err(io(state_path.clone()))?;
        q.pass_fd("banger-snapshot", state.file())
            .map_err(qmp_err)?;
        drop(state);
        q.execute("migrate", serde_json::json!({"uri": "fd:banger-snapshot"}))
            .map_err(qmp_err)?;
        let t = Instant::now();
        wait_migration(&mut q, Instant::now() + Duration::from_mins(5))?;
        tracing::debug!(ms = elapsed_ms(t), "snapshot: device state migrated");
        let memory = dir.join(SNAPSHOT_MEMORY);
        let len = spec.memory_mib << 20;
        if let Some(mem) = guest_memory_of(handle.pid) {
            let t = Instant::now();
            sparse_copy(&mem, &memory, len).map_err(io(memory))?;
            tracing::debug!(ms = elapsed_ms(t), "snapshot: memory copied");
        }
        Ok(())
    }

    fn launch(&self, spec: &VmSpec) -> Result<VmmHandle, VmmError> {
        let qmp = qmp_socket(&spec.run_dir);
        check_socket_path(&qmp)?;
        let started = Instant::now();
        let helper = match (&spec.vsock, &self.agent_mux) {
            (Some(_), Some(bin)) => Some(Self::start_mux(spec, bin)?),
            (Some(_), None) => {
                return Err(VmmError::Unsupported(
                    "the agent channel needs bangerd's --agent-mux helper".into(),
                ));
            }
            _ => None,
        };
        let kill_helper = || {
            if let Some((pid, start)) = helper {
                crate::process::kill(pid, start);
            }
        };
        // A restore maps its own copy of the snapshot's memory (see `qemu_args`).
        let copy = match &spec.restore {
            Some(dir) if has_memory_file(spec, dir) => {
                let path = memory_copy_path(spec);
                let made = (|| {
                    if let Some(parent) = path.parent() {
                        make_private_dir(parent)?;
                    }
                    let _ = std::fs::remove_file(&path);
                    let from = dir.join(SNAPSHOT_MEMORY);
                    // A fork's child owns its slot: its memory file moves (same tmpfs), else
                    // it is copied.
                    if spec.restore_owned && std::fs::rename(&from, &path).is_ok() {
                        return Ok(());
                    }
                    sparse_copy(&from, &path, spec.memory_mib << 20)
                })();
                if let Err(source) = made {
                    let _ = std::fs::remove_file(&path);
                    kill_helper();
                    return Err(VmmError::Io { path, source });
                }
                Some(path)
            }
            _ => None,
        };
        // Where a start's time goes (agent channel helper and memory, then QEMU; the load
        // logs its own steps).
        let prepare_ms = elapsed_ms(started);
        let spawned = Instant::now();
        let launched = self.launch_qemu(spec, qmp).and_then(|h| {
            tracing::debug!(
                vm = spec.name,
                prepare_ms,
                spawn_ms = elapsed_ms(spawned),
                "qemu started"
            );
            let Some(dir) = &spec.restore else {
                return Ok(h);
            };
            match self.load_snapshot(&h, dir) {
                Ok(()) => Ok(h),
                Err(e) => {
                    crate::process::kill(h.pid, h.start_time);
                    Err(e)
                }
            }
        });
        // QEMU has the copy mapped (or failed): its name goes, its memory with QEMU.
        if let Some(path) = copy {
            let _ = std::fs::remove_file(path);
        }
        match launched {
            Ok(mut h) => {
                h.helpers.extend(helper);
                Ok(h)
            }
            Err(e) => {
                kill_helper();
                Err(e)
            }
        }
    }
}

impl QemuVmm {
    /// Feeds `dir/state` to a QEMU started with `-incoming defer` and runs the guest.
    fn load_snapshot(&self, h: &VmmHandle, dir: &Path) -> Result<(), VmmError> {
        let t0 = Instant::now();
        let mut q = qmp(h)?;
        let connected = t0.elapsed();
        q.execute(
            "migrate-set-capabilities",
            serde_json::json!({"capabilities": [{"capability": "x-ignore-shared", "state": true}]}),
        )
        .map_err(qmp_err)?;
        let state_path = dir.join(SNAPSHOT_STATE);
        let state = fs_err::File::open(&state_path).map_err(|source| VmmError::Io {
            path: state_path,
            source,
        })?;
        q.pass_fd("banger-restore", state.file()).map_err(qmp_err)?;
        drop(state);
        q.execute(
            "migrate-incoming",
            serde_json::json!({"uri": "fd:banger-restore"}),
        )
        .map_err(qmp_err)?;
        let incoming = t0.elapsed();
        let deadline = Instant::now() + Duration::from_mins(2);
        loop {
            if !crate::process::is_same_process(h.pid, h.start_time) {
                return Err(VmmError::Startup {
                    program: self.binary.display().to_string(),
                    detail: "exited while loading the snapshot (see vmm.log)".into(),
                });
            }
            let status = q
                .execute("query-status", serde_json::Value::Null)
                .map_err(qmp_err)?;
            match status.get("status").and_then(serde_json::Value::as_str) {
                Some("inmigrate") if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(2));
                }
                Some("running") => return Ok(()),
                // A snapshot is taken paused: the copy starts paused too. Its link stays
                // down until the caller has given it its identity (`set_link`).
                Some("paused" | "postmigrate" | "prelaunch") => {
                    let loaded = t0.elapsed();
                    let _ = q.execute("set_link", serde_json::json!({"name": "n0", "up": false}));
                    let r = q
                        .execute("cont", serde_json::Value::Null)
                        .map(drop)
                        .map_err(qmp_err);
                    tracing::debug!(
                        ?connected,
                        ?incoming,
                        ?loaded,
                        running = ?t0.elapsed(),
                        "snapshot load steps"
                    );
                    return r;
                }
                other => {
                    return Err(VmmError::Startup {
                        program: self.binary.display().to_string(),
                        detail: format!("snapshot load ended in state {other:?}"),
                    });
                }
            }
        }
    }

    fn launch_qemu(&self, spec: &VmSpec, qmp: PathBuf) -> Result<VmmHandle, VmmError> {
        let pidfile = spec.run_dir.join("qemu.pid");
        let _ = fs_err::remove_file(&pidfile);
        let (log, log2) = append_log(&spec.vmm_log)?;
        let program = self.binary.display().to_string();
        let entry = crate::cgroup::CgroupEntry::open(&spec.cgroup)?;
        let mut cmd = Command::new(&self.binary);
        // The process enters the VM's cgroup before exec; its daemonized child stays there.
        entry.apply(&mut cmd);
        let status = cmd
            .args(qemu_args_tb(spec, self.accel, self.tb_size_mib))
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2)
            .status()
            .map_err(|source| VmmError::Spawn {
                program: program.clone(),
                source,
            })?;
        let detail = || {
            let text = std::fs::read_to_string(&spec.vmm_log).unwrap_or_default();
            let lines: Vec<&str> = text.trim().lines().rev().take(5).collect();
            lines.into_iter().rev().collect::<Vec<_>>().join("; ")
        };
        if !status.success() {
            return Err(VmmError::Startup {
                program,
                detail: format!("{status}: {}", detail()),
            });
        }
        // -daemonize returns after the VM is set up; the pid file is written by then.
        let deadline = Instant::now() + Duration::from_secs(5);
        let pid = loop {
            if let Ok(text) = std::fs::read_to_string(&pidfile)
                && let Ok(pid) = text.trim().parse::<u32>()
            {
                break pid;
            }
            if Instant::now() > deadline {
                return Err(VmmError::Startup {
                    program,
                    detail: "no pid file after 5s".into(),
                });
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        let start_time = crate::process::start_time(pid).ok_or_else(|| VmmError::Startup {
            program: program.clone(),
            detail: format!("pid {pid} exited: {}", detail()),
        })?;
        Ok(VmmHandle {
            backend: self.name(),
            pid,
            start_time,
            control_socket: qmp,
            helpers: Vec::new(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vmm::{Drive, NetSpec};

    fn spec() -> VmSpec {
        VmSpec {
            name: "web".into(),
            vcpu: 2,
            memory_mib: 1024,
            kernel: "/k/vmlinuz".into(),
            initrd: Some("/k/initrd.img".into()),
            cmdline: "console=ttyS0 root=/dev/vda".into(),
            drives: vec![
                Drive {
                    id: "rootfs".into(),
                    path: "/v/root.ext4".into(),
                    read_only: false,
                },
                Drive {
                    id: "work".into(),
                    path: "/v/work.ext4".into(),
                    read_only: false,
                },
            ],
            net: Some(NetSpec {
                tap: "bt-1".into(),
                mac: "06:00:ac:10:00:02".into(),
            }),
            vsock: None,
            run_dir: "/r".into(),
            console_log: "/v/console.log".into(),
            vmm_log: "/v/vmm.log".into(),
            restore: None,
            restore_owned: false,
            cgroup: Vec::new(),
        }
    }

    #[test]
    fn test_paths_with_commas_and_spaces_are_escaped_in_key_value_options() {
        let mut s = spec();
        s.drives[0].path = "/home/a b,c/vms/root.ext4".into();
        s.run_dir = "/run/x,y z".into();
        s.vsock = Some(crate::vmm::VsockSpec {
            cid: 3,
            uds_path: "/run/x,y z/vsock.sock".into(),
        });
        let args = qemu_args(&s, Accel::Tcg);
        let arg_after = |flag: &str| {
            args.iter()
                .position(|a| a == flag)
                .and_then(|i| args.get(i + 1))
                .cloned()
                .unwrap_or_default()
        };
        assert!(
            arg_after("-drive").starts_with("id=rootfs,file=/home/a b,,c/vms/root.ext4,format=raw"),
            "{args:?}"
        );
        assert!(
            arg_after("-chardev").contains("path=/run/x,,y z/"),
            "{args:?}"
        );
        assert!(
            arg_after("-qmp").starts_with("unix:/run/x,,y z/"),
            "{args:?}"
        );
        assert_eq!(
            arg_after("-pidfile"),
            "/run/x,y z/qemu.pid",
            "plain arguments stay as they are"
        );
    }

    #[test]
    fn test_a_qcow2_drive_is_opened_as_qcow2_by_its_name_only() {
        let mut s = spec();
        s.drives[0].path = "/v/root-1a2b.qcow2".into();
        let args = qemu_args(&s, Accel::Tcg).join(" ");
        assert!(
            args.contains("id=rootfs,file=/v/root-1a2b.qcow2,format=qcow2,"),
            "{args}"
        );
        assert!(
            args.contains("id=work,file=/v/work.ext4,format=raw,"),
            "{args}"
        );
    }

    #[test]
    fn test_qemu_args_tcg_microvm() {
        let args = qemu_args(&spec(), Accel::Tcg).join(" ");
        assert!(
            args.contains(
                "-M microvm,pit=on,pic=on,rtc=on,memory-backend=mem -accel tcg -cpu max -smp 2 -m 1024M"
            ),
            "{args}"
        );
        assert!(
            args.contains("-append console=ttyS0 root=/dev/vda tsc_early_khz=2000000"),
            "{args}"
        );
        assert!(args.contains("-drive id=rootfs,file=/v/root.ext4,format=raw,if=none,cache=unsafe -device virtio-blk-device,drive=rootfs -drive id=work"), "{args}");
        assert!(args.contains("-netdev tap,id=n0,ifname=bt-1,script=no,downscript=no -device virtio-net-device,netdev=n0,mac=06:00:ac:10:00:02"), "{args}");
        assert!(
            args.contains("-qmp unix:/r/qmp.sock,server=on,wait=off"),
            "{args}"
        );
        assert!(args.ends_with("-daemonize"));
    }

    #[test]
    fn test_qemu_args_kvm_without_tsc_and_with_vsock() {
        let mut s = spec();
        s.vsock = Some(crate::vmm::VsockSpec {
            cid: 3,
            uds_path: "/r/v.sock".into(),
        });
        let args = qemu_args(&s, Accel::Kvm).join(" ");
        assert!(!args.contains("tsc_early_khz"));
        assert!(args.contains("-accel kvm -cpu host"));
        assert!(
            args.contains("memory-backend=mem")
                && args.contains("-device virtserialport,chardev=agent0,name=org.banger.agent")
        );
    }

    #[test]
    fn test_translation_cache_cap_only_under_tcg() {
        let args = qemu_args_tb(&spec(), Accel::Tcg, 128).join(" ");
        assert!(args.contains("-accel tcg,tb-size=128 "), "{args}");
        let args = qemu_args_tb(&spec(), Accel::Tcg, 0).join(" ");
        assert!(args.contains("-accel tcg "), "{args}");
        let args = qemu_args_tb(&spec(), Accel::Kvm, 128).join(" ");
        assert!(
            args.contains("-accel kvm ") && !args.contains("tb-size"),
            "{args}"
        );
    }

    #[test]
    fn test_long_socket_path_refused() {
        let mut s = spec();
        s.run_dir = PathBuf::from(format!("/{}", "x".repeat(120)));
        let err = QemuVmm::new("qemu-system-x86_64".into(), Accel::Tcg)
            .launch(&s)
            .unwrap_err();
        assert!(matches!(err, VmmError::SocketPathTooLong(_)));
    }
}
