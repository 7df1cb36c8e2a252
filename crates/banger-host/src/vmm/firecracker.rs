//! The Firecracker backend: spawn `firecracker --api-sock`, configure the VM over its REST
//! API (logger, metrics, machine, boot source, drives, network, vsock), then `InstanceStart`.
//!
//! Requests follow Firecracker's OpenAPI spec (v1.16.1); the contract tests in
//! `banger-testkit` run this backend against a fake API server that validates every request
//! against that spec file.

use std::io::{Read as _, Write as _};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::{VmSpec, Vmm, VmmError, VmmHandle, check_socket_path};

/// The oldest Firecracker banger drives.
pub const MIN_VERSION: (u32, u32, u32) = (1, 5, 0);

/// Firecracker as a VMM.
#[derive(Debug)]
pub struct FirecrackerVmm {
    binary: PathBuf,
    version: OnceLock<Result<(u32, u32, u32), String>>,
    jailer: Option<Jailer>,
}

/// Firecracker's jailer (config `jailer_bin`): each VMM runs chrooted in
/// `<vm dir>/jail/<exec name>/<vm id>/root` as `uid:gid`. The VM's files are hard-linked
/// into the jail (same filesystem: the jail is in the VM's directory), so a jailed
/// Firecracker writes the VM's own disks and nothing else; the API and vsock sockets are
/// reached through symlinks at their usual places in the run directory. banger still
/// places the process in the VM's cgroup itself (before exec), so no `--cgroup` is passed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Jailer {
    /// The `jailer` binary.
    pub binary: PathBuf,
    /// User Firecracker runs as.
    pub uid: u32,
    /// Group Firecracker runs as.
    pub gid: u32,
}

/// Paths inside a jail, as the jailed Firecracker sees them.
pub mod jail_paths {
    /// The API socket.
    pub const API_SOCK: &str = "/fc.sock";
    /// The vsock device's socket.
    pub const VSOCK: &str = "/v.sock";
    /// The kernel.
    pub const KERNEL: &str = "/vmlinux";
    /// The initramfs.
    pub const INITRD: &str = "/initrd";
    /// Firecracker's log.
    pub const LOG: &str = "/vmm.log";
    /// Firecracker's metrics (relative: the jail's top, as `run_dir` is `/`).
    pub const METRICS: &str = "metrics.json";
    /// The snapshot a restore loads.
    pub const SNAPSHOT_IN: &str = "/snapshot";
    /// Where `/snapshot/create` writes before the files move out of the jail.
    pub const SNAPSHOT_OUT: &str = "/snapshot-out";
}

/// A VM's jail: `<base>/<exec name>/<id>/root`, with `base` = `<drive dir>/jail`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Jail {
    /// `--chroot-base-dir`.
    pub base: PathBuf,
    /// `--id`.
    pub id: String,
    /// The chroot, on the host.
    pub root: PathBuf,
}

impl Jail {
    /// The jail of `spec` for Firecracker binary `exec`; `None` when its drives are not in
    /// one directory or its run directory's name is not a valid jail id.
    pub fn of(spec: &VmSpec, exec: &Path) -> Option<Jail> {
        let dir = drive_dir(spec)?;
        let id = spec.run_dir.file_name()?.to_string_lossy().into_owned();
        let valid = !id.is_empty()
            && id.len() <= 64
            && id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-');
        if !valid {
            return None;
        }
        let base = dir.join("jail");
        let root = base.join(exec.file_name()?).join(&id).join("root");
        Some(Jail { base, id, root })
    }

    /// Host path of `jailed` (absolute inside the jail).
    pub fn host(&self, jailed: &str) -> PathBuf {
        self.root.join(jailed.trim_start_matches('/'))
    }
}

/// `spec` as the jailed Firecracker sees it: kernel, initrd, drives, log, metrics and vsock
/// socket at their places inside the jail (`jail_paths`).
pub fn jailed_spec(spec: &VmSpec) -> VmSpec {
    let mut s = spec.clone();
    s.kernel = PathBuf::from(jail_paths::KERNEL);
    if s.initrd.is_some() {
        s.initrd = Some(PathBuf::from(jail_paths::INITRD));
    }
    for d in &mut s.drives {
        if let Some(name) = d.path.file_name() {
            d.path = Path::new("/").join(name);
        }
    }
    s.vmm_log = PathBuf::from(jail_paths::LOG);
    s.run_dir = PathBuf::from("/");
    if let Some(v) = &mut s.vsock {
        v.uds_path = PathBuf::from(jail_paths::VSOCK);
    }
    s.restore = spec
        .restore
        .as_ref()
        .map(|_| PathBuf::from(jail_paths::SNAPSHOT_IN));
    s
}

/// Hard-links `from` to `to`, or copies it when they are on different filesystems.
fn link_or_copy(from: &Path, to: &Path) -> std::io::Result<()> {
    match std::fs::hard_link(from, to) {
        Ok(()) => Ok(()),
        Err(e) if e.raw_os_error() == Some(rustix::io::Errno::XDEV.raw_os_error()) => {
            std::fs::copy(from, to).map(drop)
        }
        Err(e) => Err(e),
    }
}

/// Moves `from` to `to`, copying across filesystems.
fn move_file(from: &Path, to: &Path) -> std::io::Result<()> {
    match std::fs::rename(from, to) {
        Ok(()) => Ok(()),
        Err(e) if e.raw_os_error() == Some(rustix::io::Errno::XDEV.raw_os_error()) => {
            std::fs::copy(from, to)?;
            std::fs::remove_file(from)
        }
        Err(e) => Err(e),
    }
}

/// Builds `jail` for `spec` (any earlier one of the VM is removed first): its root owned by
/// `uid:gid`, the kernel, initrd, drives, log, metrics and restore files linked in, the
/// drives and log writable by `uid:gid`, and symlinks from the run directory's API and
/// vsock socket paths to the jail's.
pub fn prepare_jail(spec: &VmSpec, jail: &Jail, uid: u32, gid: u32) -> std::io::Result<()> {
    use std::os::unix::fs::{chown, symlink};
    let _ = std::fs::remove_dir_all(&jail.base);
    std::fs::create_dir_all(&jail.root)?;
    chown(&jail.root, Some(uid), Some(gid))?;
    link_or_copy(&spec.kernel, &jail.host(jail_paths::KERNEL))?;
    if let Some(initrd) = &spec.initrd {
        link_or_copy(initrd, &jail.host(jail_paths::INITRD))?;
    }
    for d in &spec.drives {
        let Some(name) = d.path.file_name() else {
            continue;
        };
        // The VM's own disk, shared by inode: never copied.
        std::fs::hard_link(&d.path, jail.root.join(name))?;
        if !d.read_only {
            chown(&d.path, Some(uid), Some(gid))?;
        }
    }
    let metrics = spec.run_dir.join("metrics.json");
    for (host, jailed) in [
        (&spec.vmm_log, jail_paths::LOG),
        (&metrics, jail_paths::METRICS),
    ] {
        link_or_copy(host, &jail.host(jailed))?;
        chown(host, Some(uid), Some(gid))?;
    }
    if let Some(dir) = &spec.restore {
        let into = jail.host(jail_paths::SNAPSHOT_IN);
        std::fs::create_dir_all(&into)?;
        for f in [super::qemu::SNAPSHOT_STATE, super::qemu::SNAPSHOT_MEMORY] {
            link_or_copy(&dir.join(f), &into.join(f))?;
        }
    }
    let api = api_socket(&spec.run_dir);
    let _ = std::fs::remove_file(&api);
    symlink(jail.host(jail_paths::API_SOCK), &api)?;
    if let Some(v) = &spec.vsock {
        let _ = std::fs::remove_file(&v.uds_path);
        symlink(jail.host(jail_paths::VSOCK), &v.uds_path)?;
    }
    Ok(())
}

/// The API socket of a VM run dir.
pub fn api_socket(run_dir: &Path) -> PathBuf {
    run_dir.join("fc.sock")
}

/// Parses `Firecracker v1.16.1` (the first line of `firecracker --version`).
pub fn parse_version(text: &str) -> Option<(u32, u32, u32)> {
    let word = text
        .split_whitespace()
        .find(|w| w.starts_with('v') && w[1..].starts_with(|c: char| c.is_ascii_digit()))?;
    let core = word[1..].split(['-', '+']).next()?;
    let mut parts = core.split('.').map(|p| p.parse::<u32>().ok());
    Some((
        parts.next()??,
        parts.next()??,
        parts.next().flatten().unwrap_or(0),
    ))
}

/// An HTTP response from the API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiResponse {
    /// Status code.
    pub status: u16,
    /// Body (empty for 204).
    pub body: String,
}

/// One HTTP/1.1 request over the API socket (a connection per request).
pub fn api_request(
    socket: &Path,
    method: &str,
    path: &str,
    body: Option<&Value>,
) -> std::io::Result<ApiResponse> {
    let mut stream = UnixStream::connect(socket)?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    stream.set_write_timeout(Some(Duration::from_secs(10)))?;
    let body = body.map(Value::to_string).unwrap_or_default();
    let content_type = if body.is_empty() {
        ""
    } else {
        "Content-Type: application/json\r\n"
    };
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nAccept: application/json\r\n{content_type}Content-Length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(req.as_bytes())?;
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 4096];
    loop {
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut resp = httparse::Response::new(&mut headers);
        match resp.parse(&buf) {
            Ok(httparse::Status::Complete(head)) => {
                let status = resp.code.unwrap_or(0);
                let len = resp
                    .headers
                    .iter()
                    .find(|h| h.name.eq_ignore_ascii_case("content-length"))
                    .and_then(|h| std::str::from_utf8(h.value).ok())
                    .and_then(|v| v.trim().parse::<usize>().ok())
                    .unwrap_or(0);
                while buf.len() < head + len {
                    let n = stream.read(&mut chunk)?;
                    if n == 0 {
                        break;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                }
                let end = buf.len().min(head + len);
                return Ok(ApiResponse {
                    status,
                    body: String::from_utf8_lossy(&buf[head..end]).into_owned(),
                });
            }
            Ok(httparse::Status::Partial) => {}
            Err(e) => {
                return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, e));
            }
        }
        let n = stream.read(&mut chunk)?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// The directory all of `spec`'s drives are in, when they share one: Firecracker runs there
/// and is given drive paths relative to it. A snapshot records those relative paths, and
/// v1.16 cannot override drive paths on load, so a copy restored in its own directory opens
/// its own disks — never the snapshot's or another VM's.
pub fn drive_dir(spec: &VmSpec) -> Option<PathBuf> {
    let first = spec.drives.first()?.path.parent()?.to_owned();
    spec.drives
        .iter()
        .all(|d| d.path.parent() == Some(first.as_path()) && d.path.file_name().is_some())
        .then_some(first)
}

fn logging_requests(spec: &VmSpec) -> Vec<(String, Value)> {
    vec![
        (
            "/logger".to_owned(),
            json!({"log_path": spec.vmm_log, "level": "Info", "show_level": true, "show_log_origin": false}),
        ),
        (
            "/metrics".to_owned(),
            json!({"metrics_path": spec.run_dir.join("metrics.json")}),
        ),
    ]
}

/// The requests that start `spec`: logging, then `/snapshot/load` with the tap and vsock
/// socket overridden (the drives resolve in the VM's own directory, see [`drive_dir`]).
pub fn restore_requests(spec: &VmSpec, dir: &Path) -> Vec<(String, Value)> {
    let mut reqs = logging_requests(spec);
    let mut load = json!({
        "snapshot_path": dir.join(super::qemu::SNAPSHOT_STATE),
        "mem_backend": {"backend_type": "File", "backend_path": dir.join(super::qemu::SNAPSHOT_MEMORY)},
        "resume_vm": true,
        "clock_realtime": true,
    });
    if let Some(net) = &spec.net {
        load["network_overrides"] = json!([{"iface_id": "eth0", "host_dev_name": net.tap}]);
    }
    if let Some(v) = &spec.vsock {
        load["vsock_override"] = json!({"uds_path": v.uds_path});
    }
    reqs.push(("/snapshot/load".to_owned(), load));
    reqs
}

/// The configuration requests for `spec`, in order, as (path, body). `InstanceStart` last.
pub fn config_requests(spec: &VmSpec) -> Vec<(String, Value)> {
    let relative = drive_dir(spec).is_some();
    let mut reqs = logging_requests(spec);
    reqs.extend([(
        "/machine-config".to_owned(),
        json!({"vcpu_count": spec.vcpu, "mem_size_mib": spec.memory_mib, "smt": false}),
    )]);
    let mut boot = json!({"kernel_image_path": spec.kernel, "boot_args": spec.cmdline});
    if let Some(initrd) = &spec.initrd {
        boot["initrd_path"] = json!(initrd);
    }
    reqs.push(("/boot-source".to_owned(), boot));
    for (i, d) in spec.drives.iter().enumerate() {
        reqs.push((
            format!("/drives/{}", d.id),
            json!({
                "drive_id": d.id,
                "path_on_host": match (relative, d.path.file_name()) {
                    (true, Some(name)) => PathBuf::from(name),
                    _ => d.path.clone(),
                },
                "is_root_device": i == 0,
                "is_read_only": d.read_only,
                "cache_type": "Unsafe",
                "io_engine": "Sync",
            }),
        ));
    }
    if let Some(net) = &spec.net {
        reqs.push((
            "/network-interfaces/eth0".to_owned(),
            json!({"iface_id": "eth0", "host_dev_name": net.tap, "guest_mac": net.mac}),
        ));
    }
    if let Some(v) = &spec.vsock {
        reqs.push((
            "/vsock".to_owned(),
            json!({"guest_cid": v.cid, "uds_path": v.uds_path}),
        ));
    }
    reqs.push((
        "/actions".to_owned(),
        json!({"action_type": "InstanceStart"}),
    ));
    reqs
}

/// One API request that must answer 204.
fn call(handle: &VmmHandle, method: &str, path: &str, body: &Value) -> Result<(), VmmError> {
    let resp = api_request(&handle.control_socket, method, path, Some(body)).map_err(|e| {
        VmmError::Api {
            request: format!("{method} {path}"),
            status: 0,
            fault: e.to_string(),
        }
    })?;
    if resp.status == 204 {
        Ok(())
    } else {
        Err(VmmError::Api {
            request: format!("{method} {path}"),
            status: resp.status,
            fault: fault(&resp.body),
        })
    }
}

fn fault(body: &str) -> String {
    serde_json::from_str::<Value>(body)
        .ok()
        .and_then(|v| {
            v.get("fault_message")
                .and_then(Value::as_str)
                .map(str::to_owned)
        })
        .unwrap_or_else(|| body.trim().to_owned())
}

impl FirecrackerVmm {
    /// Firecracker at `binary`.
    pub fn new(binary: PathBuf) -> Self {
        FirecrackerVmm {
            binary,
            version: OnceLock::new(),
            jailer: None,
        }
    }

    /// Runs every VM under `jailer` (none: Firecracker directly).
    #[must_use]
    pub fn with_jailer(mut self, jailer: Option<Jailer>) -> Self {
        self.jailer = jailer;
        self
    }

    /// The binary's version (`--version`), checked once.
    pub fn version(&self) -> Result<(u32, u32, u32), VmmError> {
        let program = self.binary.display().to_string();
        self.version
            .get_or_init(|| {
                let out = Command::new(&self.binary)
                    .arg("--version")
                    .stdin(Stdio::null())
                    .output()
                    .map_err(|e| format!("cannot run {program} --version: {e}"))?;
                let text = String::from_utf8_lossy(&out.stdout);
                parse_version(&text)
                    .ok_or_else(|| format!("cannot read a version from {:?}", text.trim()))
            })
            .clone()
            .map_err(|detail| VmmError::Startup {
                program: program.clone(),
                detail,
            })
    }

    fn startup(&self, detail: impl Into<String>) -> VmmError {
        VmmError::Startup {
            program: self.binary.display().to_string(),
            detail: detail.into(),
        }
    }
}

impl Vmm for FirecrackerVmm {
    fn name(&self) -> String {
        "firecracker".to_owned()
    }

    fn launch(&self, spec: &VmSpec) -> Result<VmmHandle, VmmError> {
        let sock = api_socket(&spec.run_dir);
        check_socket_path(&sock)?;
        if let Some(v) = &spec.vsock {
            check_socket_path(&v.uds_path)?;
        }
        let v = self.version()?;
        if v < MIN_VERSION {
            return Err(VmmError::Unsupported(format!(
                "firecracker {}.{}.{} is older than {}.{}.{}",
                v.0, v.1, v.2, MIN_VERSION.0, MIN_VERSION.1, MIN_VERSION.2
            )));
        }
        let io = |path: &Path| {
            let path = path.to_owned();
            move |source| VmmError::Io { path, source }
        };
        let _ = fs_err::remove_file(&sock);
        // Firecracker opens (not creates) its log and metrics files.
        let log = fs_err::File::create(&spec.vmm_log).map_err(io(&spec.vmm_log))?;
        let metrics = spec.run_dir.join("metrics.json");
        fs_err::File::create(&metrics).map_err(io(&metrics))?;
        let console = fs_err::File::create(&spec.console_log).map_err(io(&spec.console_log))?;
        let entry = crate::cgroup::CgroupEntry::open(&spec.cgroup)?;
        let (mut command, program, requests_spec) = match &self.jailer {
            None => {
                let mut command = Command::new(&self.binary);
                if let Some(dir) = drive_dir(spec) {
                    command.current_dir(dir);
                }
                command
                    .arg("--api-sock")
                    .arg(&sock)
                    .args(["--id", &spec.name]);
                (command, self.binary.display().to_string(), spec.clone())
            }
            Some(j) => {
                let jail = Jail::of(spec, &self.binary).ok_or_else(|| {
                    VmmError::Unsupported(
                        "the jailer needs the vm's drives in one directory and a run directory named like a jail id".into(),
                    )
                })?;
                prepare_jail(spec, &jail, j.uid, j.gid).map_err(io(&jail.root))?;
                let mut command = Command::new(&j.binary);
                command
                    .arg("--id")
                    .arg(&jail.id)
                    .arg("--exec-file")
                    .arg(&self.binary)
                    .args(["--uid", &j.uid.to_string(), "--gid", &j.gid.to_string()])
                    .arg("--chroot-base-dir")
                    .arg(&jail.base)
                    .args(["--", "--api-sock", jail_paths::API_SOCK]);
                (command, j.binary.display().to_string(), jailed_spec(spec))
            }
        };
        entry.apply(&mut command);
        let mut child = command
            .stdin(Stdio::null())
            .stdout(console.into_parts().0)
            .stderr(log.into_parts().0)
            // Its own process group: signals to the daemon's group never reach the VM.
            .process_group(0)
            .spawn()
            .map_err(|source| VmmError::Spawn {
                program: program.clone(),
                source,
            })?;
        let pid = child.id();
        let start_time = crate::process::start_time(pid).unwrap_or(0);
        let handle = VmmHandle {
            backend: self.name(),
            pid,
            start_time,
            control_socket: sock.clone(),
            helpers: Vec::new(),
        };
        let configured = (|| {
            let deadline = Instant::now() + Duration::from_secs(5);
            while UnixStream::connect(&sock).is_err() {
                if let Ok(Some(status)) = child.try_wait() {
                    let text = std::fs::read_to_string(&spec.vmm_log).unwrap_or_default();
                    return Err(self.startup(format!("exited with {status}: {}", text.trim())));
                }
                if Instant::now() > deadline {
                    return Err(self.startup("no api socket after 5s"));
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            let requests = match &requests_spec.restore {
                None => config_requests(&requests_spec),
                Some(dir) => restore_requests(&requests_spec, dir),
            };
            for (path, body) in requests {
                let resp = api_request(&sock, "PUT", &path, Some(&body))
                    .map_err(|e| self.startup(format!("PUT {path}: {e}")))?;
                if resp.status != 204 {
                    return Err(VmmError::Api {
                        request: format!("PUT {path}"),
                        status: resp.status,
                        fault: fault(&resp.body),
                    });
                }
            }
            Ok(())
        })();
        if let Err(e) = configured {
            let _ = child.kill();
            let _ = child.wait();
            return Err(e);
        }
        // Reap it when it exits so it never lingers as a zombie of the daemon.
        std::thread::spawn(move || {
            let _ = child.wait();
        });
        Ok(handle)
    }

    fn supports_snapshots(&self) -> bool {
        true
    }

    fn pause(&self, handle: &VmmHandle) -> Result<(), VmmError> {
        call(handle, "PATCH", "/vm", &json!({"state": "Paused"}))
    }

    fn resume(&self, handle: &VmmHandle) -> Result<(), VmmError> {
        call(handle, "PATCH", "/vm", &json!({"state": "Resumed"}))
    }

    /// `/snapshot/create` into `dir`; a jailed Firecracker writes inside its jail and the
    /// files are moved out.
    fn snapshot(&self, handle: &VmmHandle, spec: &VmSpec, dir: &Path) -> Result<(), VmmError> {
        let files = [super::qemu::SNAPSHOT_STATE, super::qemu::SNAPSHOT_MEMORY];
        let jail = self
            .jailer
            .as_ref()
            .and_then(|_| Jail::of(spec, &self.binary));
        let Some(jail) = jail else {
            return call(
                handle,
                "PUT",
                "/snapshot/create",
                &json!({
                    "snapshot_type": "Full",
                    "snapshot_path": dir.join(files[0]),
                    "mem_file_path": dir.join(files[1]),
                }),
            );
        };
        let out = jail.host(jail_paths::SNAPSHOT_OUT);
        let _ = std::fs::remove_dir_all(&out);
        let owner = self.jailer.as_ref().map(|j| (j.uid, j.gid));
        std::fs::create_dir_all(&out)
            .and_then(|()| {
                let (uid, gid) = owner.unwrap_or((0, 0));
                std::os::unix::fs::chown(&out, Some(uid), Some(gid))
            })
            .map_err(|source| VmmError::Io {
                path: out.clone(),
                source,
            })?;
        let jailed = |f: &str| format!("{}/{f}", jail_paths::SNAPSHOT_OUT);
        let made = call(
            handle,
            "PUT",
            "/snapshot/create",
            &json!({
                "snapshot_type": "Full",
                "snapshot_path": jailed(files[0]),
                "mem_file_path": jailed(files[1]),
            }),
        )
        .and_then(|()| {
            files.iter().try_for_each(|f| {
                move_file(&out.join(f), &dir.join(f)).map_err(|source| VmmError::Io {
                    path: dir.join(f),
                    source,
                })
            })
        });
        let _ = std::fs::remove_dir_all(&out);
        made
    }

    fn request_shutdown(&self, handle: &VmmHandle) {
        let _ = api_request(
            &handle.control_socket,
            "PUT",
            "/actions",
            Some(&json!({"action_type": "SendCtrlAltDel"})),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_parse_version() {
        assert_eq!(
            parse_version("Firecracker v1.16.1\n\nSupported snapshot data format versions: v8.0.0"),
            Some((1, 16, 1))
        );
        assert_eq!(parse_version("Firecracker v1.4.0-dev"), Some((1, 4, 0)));
        assert_eq!(parse_version("firecracker"), None);
        assert!(parse_version("Firecracker v1.4.1").unwrap() < MIN_VERSION);
    }
}
