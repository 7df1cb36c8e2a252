//! A fake Firecracker: the API on a unix socket, answering like Firecracker (204 for
//! accepted configuration, 400 with `{"fault_message": ...}` for bad input, 200 with JSON for
//! queries), with the pre-boot/post-boot rules banger relies on. Every request is checked
//! against the spec and appended to a journal (`<api-sock>.journal`, JSON lines).

use std::collections::BTreeMap;
use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde_json::{Value, json};

use crate::spec::ApiSpec;

/// One journalled request.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct JournalEntry {
    /// HTTP method.
    pub method: String,
    /// Request path.
    pub path: String,
    /// Parsed JSON body (null when empty or not JSON).
    pub body: Value,
    /// Status answered.
    pub status: u16,
    /// Spec violations (empty when the request is valid).
    pub violations: Vec<String>,
}

/// The journal file of an API socket.
pub fn journal_path(api_sock: &Path) -> PathBuf {
    let mut p = api_sock.as_os_str().to_owned();
    p.push(".journal");
    PathBuf::from(p)
}

/// Reads a journal.
pub fn read_journal(api_sock: &Path) -> Vec<JournalEntry> {
    std::fs::read_to_string(journal_path(api_sock))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

#[derive(Debug, Default)]
struct State {
    started: bool,
    paused: bool,
    boot_source: Option<Value>,
    machine: Option<Value>,
    drives: BTreeMap<String, Value>,
    nets: BTreeMap<String, Value>,
    vsock: Option<Value>,
    vsock_listener: Option<UnixListener>,
    logger: Option<Value>,
    metrics: Option<Value>,
}

/// What the server does after answering.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum After {
    /// Keep serving.
    Continue,
    /// The guest rebooted: Firecracker exits.
    Exit,
}

/// The fake.
#[derive(Debug)]
pub struct FakeFirecracker {
    spec: ApiSpec,
    /// The jail's root when run by the jailer: every path resolves inside it.
    root: Option<PathBuf>,
    id: String,
    version: String,
    journal: Option<PathBuf>,
    state: Mutex<State>,
}

fn fault(msg: impl Into<String>) -> (u16, Value) {
    (400, json!({"fault_message": msg.into()}))
}

const AFTER_START: &str = "The requested operation is not supported after starting the microVM.";

/// Where path `p`, as given to a jailed Firecracker, is for the fake: relative to its
/// directory, the jail's root (so, as in a real chroot, nothing above the root is
/// traversed: the dropped user may not be able to). A path that would leave the jail is
/// refused.
pub fn jailed_path(p: &str) -> Result<PathBuf, String> {
    let rel = Path::new(p);
    if rel
        .components()
        .any(|c| matches!(c, std::path::Component::ParentDir))
    {
        return Err(format!("{p} leaves the jail"));
    }
    let rel = rel.strip_prefix("/").unwrap_or(rel);
    Ok(if rel.as_os_str().is_empty() {
        PathBuf::from(".")
    } else {
        rel.to_owned()
    })
}

impl FakeFirecracker {
    /// A fake instance `id` reporting `version`, journalling to `journal` when set.
    pub fn new(spec: ApiSpec, id: &str, version: &str, journal: Option<PathBuf>) -> Self {
        FakeFirecracker {
            spec,
            root: None,
            id: id.to_owned(),
            version: version.to_owned(),
            journal,
            state: Mutex::default(),
        }
    }

    /// The fake, jailed in `root` (see [`jailed_path`]).
    #[must_use]
    pub fn jailed(mut self, root: Option<PathBuf>) -> Self {
        self.root = root;
        self
    }

    /// Host path of `p` as this process sees it.
    fn host(&self, p: &str) -> Result<PathBuf, (u16, Value)> {
        match &self.root {
            None => Ok(PathBuf::from(p)),
            Some(_) => jailed_path(p).map_err(fault),
        }
    }

    fn must_exist(&self, what: &str, v: Option<&Value>) -> Result<(), (u16, Value)> {
        match v.and_then(Value::as_str) {
            Some(p) if self.host(p)?.exists() => Ok(()),
            Some(p) => Err(fault(format!(
                "{what}: cannot open {p}: No such file or directory (os error 2)"
            ))),
            None => Ok(()),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Whether `InstanceStart` succeeded.
    pub fn started(&self) -> bool {
        self.state().started
    }

    /// Answers one request: status, JSON body (None for 204), and what to do next.
    pub fn handle(&self, method: &str, path: &str, body: &[u8]) -> (u16, Option<Value>, After) {
        let parsed: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
        let (status, reply, after, violations) =
            match self.spec.validate_request(method, path, body) {
                Err(v) => {
                    let (s, b) = if v[0].starts_with("no such path") || v[0].starts_with("method") {
                        fault(format!(
                            "Invalid request method and/or path: {method} {path}."
                        ))
                    } else {
                        fault(v.join("; "))
                    };
                    (s, Some(b), After::Continue, v)
                }
                Ok(m) => match self.apply(&m.operation_id, &m.params, &parsed) {
                    Ok((s, b, after)) => (s, b, after, Vec::new()),
                    Err((s, b)) => (s, Some(b), After::Continue, Vec::new()),
                },
            };
        if let Some(j) = &self.journal {
            let entry = JournalEntry {
                method: method.to_owned(),
                path: path.to_owned(),
                body: parsed,
                status,
                violations,
            };
            if let (Ok(line), Ok(mut f)) = (
                serde_json::to_string(&entry),
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(j),
            ) {
                let _ = writeln!(f, "{line}");
            }
        }
        (status, reply, after)
    }

    #[allow(clippy::type_complexity)]
    fn apply(
        &self,
        op: &str,
        params: &[(String, String)],
        body: &Value,
    ) -> Result<(u16, Option<Value>, After), (u16, Value)> {
        let mut st = self.state();
        let pre_boot = matches!(
            op,
            "putGuestBootSource"
                | "putGuestDriveByID"
                | "putGuestNetworkInterfaceByID"
                | "putGuestVsock"
                | "putMachineConfiguration"
                | "putLogger"
                | "putMetrics"
        );
        if pre_boot && st.started {
            return Err(fault(AFTER_START));
        }
        let param = params.first().map(|(_, v)| v.as_str()).unwrap_or_default();
        let ok = Ok((204, None, After::Continue));
        match op {
            "describeInstance" => Ok((
                200,
                Some(json!({
                    "app_name": "Firecracker",
                    "id": self.id,
                    "state": if st.started { "Running" } else { "Not started" },
                    "vmm_version": self.version,
                })),
                After::Continue,
            )),
            "getFirecrackerVersion" => Ok((200, Some(json!({"firecracker_version": self.version})), After::Continue)),
            "getMachineConfiguration" => Ok((
                200,
                Some(st.machine.clone().unwrap_or_else(
                    || json!({"vcpu_count": 1, "mem_size_mib": 128, "smt": false, "track_dirty_pages": false}),
                )),
                After::Continue,
            )),
            "getExportVmConfig" => Ok((
                200,
                Some(json!({
                    "boot-source": st.boot_source,
                    "machine-config": st.machine,
                    "drives": st.drives.values().collect::<Vec<_>>(),
                    "network-interfaces": st.nets.values().collect::<Vec<_>>(),
                    "vsock": st.vsock,
                    "logger": st.logger,
                    "metrics": st.metrics,
                })),
                After::Continue,
            )),
            "putLogger" => {
                self.must_exist("logger", body.get("log_path"))?;
                st.logger = Some(body.clone());
                ok
            }
            "putMetrics" => {
                self.must_exist("metrics", body.get("metrics_path"))?;
                st.metrics = Some(body.clone());
                ok
            }
            "putMachineConfiguration" => {
                st.machine = Some(body.clone());
                ok
            }
            "putGuestBootSource" => {
                self.must_exist("kernel", body.get("kernel_image_path"))?;
                self.must_exist("initrd", body.get("initrd_path"))?;
                st.boot_source = Some(body.clone());
                ok
            }
            "putGuestDriveByID" => {
                if body.get("drive_id").and_then(Value::as_str) != Some(param) {
                    return Err(fault("The id from the path does not match the id from the body!"));
                }
                self.must_exist("Unable to create the virtio block device", body.get("path_on_host"))?;
                // Opened as Firecracker does, with this process's (jailed: dropped) rights.
                let writable = body.get("is_read_only") != Some(&Value::Bool(true));
                let host = self.host(body.get("path_on_host").and_then(Value::as_str).unwrap_or_default())?;
                std::fs::OpenOptions::new()
                    .read(true)
                    .write(writable)
                    .open(&host)
                    .map_err(|e| fault(format!("Unable to create the virtio block device: {e}")))?;
                let root = body.get("is_root_device") == Some(&Value::Bool(true));
                if root && st.drives.iter().any(|(id, d)| id != param && d["is_root_device"] == true) {
                    return Err(fault("A root block device already exists!"));
                }
                st.drives.insert(param.to_owned(), body.clone());
                ok
            }
            "putGuestNetworkInterfaceByID" => {
                if body.get("iface_id").and_then(Value::as_str) != Some(param) {
                    return Err(fault("The id from the path does not match the id from the body!"));
                }
                st.nets.insert(param.to_owned(), body.clone());
                ok
            }
            "putGuestVsock" => {
                let uds = self.host(body.get("uds_path").and_then(Value::as_str).unwrap_or_default())?;
                let _ = std::fs::remove_file(&uds);
                let l = UnixListener::bind(&uds)
                    .map_err(|e| fault(format!("Cannot create vsock device: {e}")))?;
                st.vsock_listener = Some(l);
                st.vsock = Some(body.clone());
                ok
            }
            "createSyncAction" => match body.get("action_type").and_then(Value::as_str) {
                Some("InstanceStart") => {
                    if st.started {
                        return Err(fault(AFTER_START));
                    }
                    if st.boot_source.is_none() {
                        return Err(fault("Cannot start microvm without kernel configuration."));
                    }
                    st.started = true;
                    let mut out = std::io::stdout().lock();
                    let _ = writeln!(out, "fake-firecracker: guest {} booted", self.id);
                    let _ = out.flush();
                    ok
                }
                Some("SendCtrlAltDel") if st.started => Ok((204, None, After::Exit)),
                Some("FlushMetrics") if st.started => ok,
                _ => Err(fault("The requested operation is not supported before starting the microVM.")),
            },
            "patchVm" if st.started => {
                st.paused = body.get("state").and_then(Value::as_str) == Some("Paused");
                ok
            }
            "createSnapshot" => {
                if !st.started {
                    return Err(fault("The requested operation is not supported before starting the microVM."));
                }
                if !st.paused {
                    return Err(fault("Cannot save the microVM state: the microVM must be paused first."));
                }
                // The state file records the configuration as given (drive paths too: a load
                // cannot change them); the memory file has the guest's size.
                let state = json!({
                    "machine-config": st.machine,
                    "drives": st.drives,
                    "network-interfaces": st.nets,
                    "vsock": st.vsock,
                });
                let path = |k: &str| self.host(body.get(k).and_then(Value::as_str).unwrap_or_default());
                std::fs::write(path("snapshot_path")?, state.to_string())
                    .map_err(|e| fault(format!("Cannot save the microVM state: {e}")))?;
                let mib = st.machine.as_ref().and_then(|m| m["mem_size_mib"].as_u64()).unwrap_or(128);
                std::fs::File::create(path("mem_file_path")?)
                    .and_then(|f| f.set_len(mib << 20))
                    .map_err(|e| fault(format!("Cannot save the guest memory: {e}")))?;
                ok
            }
            "loadSnapshot" => {
                if st.started || st.boot_source.is_some() || !st.drives.is_empty() || !st.nets.is_empty() || st.machine.is_some() {
                    return Err(fault("Loading a microVM snapshot not allowed after configuring boot-specific resources."));
                }
                let path = |v: Option<&Value>| v.and_then(Value::as_str).unwrap_or_default().to_owned();
                let mem = path(body.pointer("/mem_backend/backend_path").or_else(|| body.get("mem_file_path")));
                self.must_exist("Cannot load the guest memory", Some(&json!(mem)))?;
                let text = std::fs::read_to_string(self.host(&path(body.get("snapshot_path")))?)
                    .map_err(|e| fault(format!("Load snapshot error: Cannot open the snapshot file: {e}")))?;
                let saved: Value = serde_json::from_str(&text)
                    .map_err(|e| fault(format!("Load snapshot error: bad state file: {e}")))?;
                // Drives are reopened at their recorded paths (relative ones against this
                // process's directory).
                let mut drives = BTreeMap::new();
                for (id, d) in saved["drives"].as_object().into_iter().flatten() {
                    self.must_exist("Load snapshot error: block device", d.get("path_on_host"))?;
                    drives.insert(id.clone(), d.clone());
                }
                let mut nets: BTreeMap<String, Value> = saved["network-interfaces"]
                    .as_object()
                    .map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
                    .unwrap_or_default();
                for o in body.get("network_overrides").and_then(Value::as_array).into_iter().flatten() {
                    let id = o["iface_id"].as_str().unwrap_or_default();
                    let Some(n) = nets.get_mut(id) else {
                        return Err(fault(format!("Load snapshot error: no network interface {id} in the snapshot")));
                    };
                    n["host_dev_name"] = o["host_dev_name"].clone();
                }
                let mut vsock = saved.get("vsock").cloned().filter(|v| !v.is_null());
                if let (Some(v), Some(uds)) = (&mut vsock, body.pointer("/vsock_override/uds_path")) {
                    v["uds_path"] = uds.clone();
                }
                if let Some(v) = &vsock {
                    let uds = self.host(v["uds_path"].as_str().unwrap_or_default())?;
                    let _ = std::fs::remove_file(&uds);
                    let l = UnixListener::bind(&uds)
                        .map_err(|e| fault(format!("Load snapshot error: vsock: {e}")))?;
                    st.vsock_listener = Some(l);
                }
                st.machine = saved.get("machine-config").cloned().filter(|v| !v.is_null());
                st.drives = drives;
                st.nets = nets;
                st.vsock = vsock;
                st.started = true;
                st.paused = body.get("resume_vm") != Some(&Value::Bool(true));
                let mut out = std::io::stdout().lock();
                let _ = writeln!(out, "fake-firecracker: guest {} restored", self.id);
                ok
            }
            _ => Err(fault(format!("the fake does not implement {op}"))),
        }
    }

    /// Serves the API on `sock` until a request asks the process to exit.
    pub fn serve(self: &Arc<Self>, sock: &Path) -> std::io::Result<()> {
        let listener = UnixListener::bind(sock)?;
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        std::thread::spawn({
            let this = Arc::clone(self);
            move || {
                for conn in listener.incoming().flatten() {
                    let this = Arc::clone(&this);
                    let tx = tx.clone();
                    std::thread::spawn(move || {
                        if this.serve_conn(conn) == After::Exit {
                            let _ = tx.send(());
                        }
                    });
                }
            }
        });
        let _ = rx.recv();
        Ok(())
    }

    fn serve_conn(&self, conn: UnixStream) -> After {
        let Ok(write) = conn.try_clone() else {
            return After::Continue;
        };
        let mut reader = BufReader::new(conn);
        let mut write = write;
        loop {
            let mut head = Vec::new();
            loop {
                let mut line = Vec::new();
                match reader.read_until(b'\n', &mut line) {
                    Ok(0) | Err(_) => return After::Continue,
                    Ok(_) => {}
                }
                let end = line == b"\r\n" || line == b"\n";
                head.extend_from_slice(&line);
                if end {
                    break;
                }
            }
            let mut headers = [httparse::EMPTY_HEADER; 32];
            let mut req = httparse::Request::new(&mut headers);
            if !matches!(req.parse(&head), Ok(httparse::Status::Complete(_))) {
                return After::Continue;
            }
            let method = req.method.unwrap_or_default().to_owned();
            let path = req.path.unwrap_or_default().to_owned();
            let len = req
                .headers
                .iter()
                .find(|h| h.name.eq_ignore_ascii_case("content-length"))
                .and_then(|h| std::str::from_utf8(h.value).ok())
                .and_then(|v| v.trim().parse::<usize>().ok())
                .unwrap_or(0);
            let mut body = vec![0u8; len];
            if reader.read_exact(&mut body).is_err() {
                return After::Continue;
            }
            let (status, reply, after) = self.handle(&method, &path, &body);
            let reason = match status {
                200 => "OK",
                204 => "No Content",
                _ => "Bad Request",
            };
            let text = reply.map(|v| v.to_string()).unwrap_or_default();
            let content_type = if text.is_empty() {
                ""
            } else {
                "Content-Type: application/json\r\n"
            };
            let resp = format!(
                "HTTP/1.1 {status} {reason}\r\nServer: Firecracker API\r\nConnection: keep-alive\r\n{content_type}Content-Length: {}\r\n\r\n{text}",
                text.len()
            );
            if write.write_all(resp.as_bytes()).is_err() {
                return after;
            }
            let _ = write.flush();
            if after == After::Exit {
                return After::Exit;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fake() -> FakeFirecracker {
        FakeFirecracker::new(ApiSpec::firecracker().unwrap(), "vm1", "1.16.1", None)
    }

    #[test]
    fn test_preboot_rules_and_error_bodies() {
        let f = fake();
        let (s, b, _) = f.handle("PUT", "/actions", br#"{"action_type":"InstanceStart"}"#);
        assert_eq!(s, 400);
        assert!(
            b.unwrap()["fault_message"]
                .as_str()
                .unwrap()
                .contains("without kernel")
        );
        let (s, b, _) = f.handle(
            "PUT",
            "/boot-source",
            br#"{"kernel_image_path":"/nonexistent/vmlinux"}"#,
        );
        assert_eq!(s, 400, "{b:?}");
        let (s, _, _) = f.handle(
            "PUT",
            "/boot-source",
            br#"{"kernel_image_path":"/proc/version"}"#,
        );
        assert_eq!(s, 204);
        let (s, b, _) = f.handle("PUT", "/drives/a", br#"{"drive_id":"b","is_root_device":true,"path_on_host":"/proc/version","is_read_only":true}"#);
        assert_eq!(s, 400);
        assert!(
            b.unwrap()["fault_message"]
                .as_str()
                .unwrap()
                .contains("does not match")
        );
        let (s, _, _) = f.handle("PUT", "/actions", br#"{"action_type":"InstanceStart"}"#);
        assert_eq!(s, 204);
        assert!(f.started());
        let (s, b, _) = f.handle(
            "PUT",
            "/machine-config",
            br#"{"vcpu_count":1,"mem_size_mib":128}"#,
        );
        assert_eq!(
            (s, b.unwrap()["fault_message"].as_str().unwrap()),
            (400, AFTER_START)
        );
        let (s, b, _) = f.handle("GET", "/", b"");
        assert_eq!((s, b.unwrap()["state"].as_str().unwrap()), (200, "Running"));
        let (_, _, after) = f.handle("PUT", "/actions", br#"{"action_type":"SendCtrlAltDel"}"#);
        assert_eq!(after, After::Exit);
        let (s, b, _) = f.handle("GET", "/nope", b"");
        assert_eq!(s, 400);
        assert!(
            b.unwrap()["fault_message"]
                .as_str()
                .unwrap()
                .starts_with("Invalid request method and/or path")
        );
    }
}
