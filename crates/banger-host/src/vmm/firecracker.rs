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
        }
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
        let program = self.binary.display().to_string();
        let entry = crate::cgroup::CgroupEntry::open(&spec.cgroup)?;
        let mut command = Command::new(&self.binary);
        entry.apply(&mut command);
        if let Some(dir) = drive_dir(spec) {
            command.current_dir(dir);
        }
        let mut child = command
            .arg("--api-sock")
            .arg(&sock)
            .args(["--id", &spec.name])
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
            let requests = match &spec.restore {
                None => config_requests(spec),
                Some(dir) => restore_requests(spec, dir),
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

    fn snapshot(&self, handle: &VmmHandle, _spec: &VmSpec, dir: &Path) -> Result<(), VmmError> {
        call(
            handle,
            "PUT",
            "/snapshot/create",
            &json!({
                "snapshot_type": "Full",
                "snapshot_path": dir.join(super::qemu::SNAPSHOT_STATE),
                "mem_file_path": dir.join(super::qemu::SNAPSHOT_MEMORY),
            }),
        )
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
