//! `VmService`: VM lifecycle.
//!
//! Locks: `vm_locks[id]` is held across a whole lifecycle op on one VM; `create_reservation`
//! only across name check + IP allocation + first row insert. The handle cache (`handles`) is
//! a leaf lock, never held across I/O; it is mirrored to `<vm dir>/handles.json`.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex as StdMutex};
use std::time::{Duration, Instant};

use banger_api::types::{
    GuestStats, OpBegun, PortInfo, SizingSources, SshInfo, ValueSource, VmCreateParams, VmInfo,
    VmLogs, VmOpOutcome, VmPorts, VmSetParams, VmState, VmStats, WorkspaceExport,
    WorkspaceExportParams, WorkspacePrepareParams, WorkspacePrepared,
};
use banger_api::{ErrorCode, RpcError};
use banger_host::Cmd;
use banger_host::disk::{self, ImageFile};
use banger_host::guest::{GuestAddr, GuestError, WaitWatch};
use banger_host::vmm::{Drive, NetSpec, VmSpec, VmmHandle, VsockSpec};
use banger_store::{ImageRecord, KernelRecord, Store, VmRecord, VmRow};
use serde::{Deserialize, Serialize};
use tokio::sync::Mutex;
use tracing::{info, warn};

use super::image::{blocking, with_store};
use super::network::{allocate_ip, mac_for};
use super::workspace::{DEFAULT_GUEST_PATH, GuestTarget, prepared, validate_guest_path};
use super::{HostNetwork, ImageService, WorkspaceService};
use crate::daemon::Infra;
use crate::error::chain;
use crate::ops::OpRegistry;
use crate::progress::{AsyncOps, OpOutput, Progress, cancelled};
use banger_host::nat::{NatEntry, NatSpec};

/// Where the guest agent goes in every VM's system disk, and its unit.
const AGENT_GUEST_PATH: &str = "/usr/local/bin/banger-agent";
const AGENT_UNIT_PATH: &str = "/etc/systemd/system/banger-agent.service";
const AGENT_WANTS_LINK: &str = "/etc/systemd/system/multi-user.target.wants/banger-agent.service";
const AGENT_UNIT: &str = "[Unit]
Description=banger guest agent (vsock port 1024)
After=local-fs.target

[Service]
ExecStart=/usr/local/bin/banger-agent
Restart=always
RestartSec=1

[Install]
WantedBy=multi-user.target
";

/// Transient facts about a running VM (never in SQLite).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Handles {
    /// The VMM process.
    pub vmm: VmmHandle,
    /// The tap device.
    pub tap: String,
}

/// VM lifecycle.
#[derive(Debug)]
pub struct VmService {
    infra: Infra,
    network: Arc<HostNetwork>,
    image: Arc<ImageService>,
    workspace: Arc<WorkspaceService>,
    vm_locks: StdMutex<HashMap<String, Arc<Mutex<()>>>>,
    create_reservation: Mutex<()>,
    handles: StdMutex<HashMap<String, Handles>>,
    creates: AsyncOps,
    /// Last VMM CPU sample per VM (when, CPU time): a leaf lock.
    cpu_samples: StdMutex<HashMap<String, (Instant, Duration)>>,
    /// Serializes rewrites of the managed ssh config (a leaf lock).
    ssh_config_lock: Mutex<()>,
}

/// The wire form of a stored VM.
pub(crate) fn vm_info(row: VmRow) -> VmInfo {
    let VmRow { vm, image_name } = row;
    let sizing_sources = vm
        .spec
        .get("sizing")
        .and_then(|s| serde_json::from_value::<SizingSources>(s.clone()).ok());
    VmInfo {
        id: vm.id,
        name: vm.name,
        state: vm.state,
        image: image_name,
        guest_ip: vm.guest_ip,
        vcpu: vm.vcpu,
        memory_mib: vm.memory_mib,
        disk_bytes: vm.disk_bytes,
        nat: vm.nat,
        vmm: vm.vmm,
        created_at: vm.created_at,
        updated_at: vm.updated_at,
        last_error: vm.last_error,
        workspace: vm.workspace,
        sizing_sources,
    }
}

fn bad(msg: impl Into<String>) -> RpcError {
    RpcError::new(ErrorCode::BadRequest, msg)
}

/// The guest kernel command line; `init` (an absolute path in the image) replaces /sbin/init.
fn boot_cmdline(init: Option<&str>) -> String {
    let mut cmdline = String::from(
        "console=ttyS0 root=/dev/vda rw panic=-1 net.ifnames=0 quiet loglevel=4 systemd.show_status=false",
    );
    if let Some(init) = init.filter(|i| i.starts_with('/') && !i.contains(char::is_whitespace)) {
        cmdline.push_str(" init=");
        cmdline.push_str(init);
    }
    cmdline
}

fn op_failed(step: &str, msg: impl std::fmt::Display) -> RpcError {
    RpcError::new(ErrorCode::OperationFailed, format!("{step}: {msg}"))
}

/// Checks a VM name: 1–63 of `[a-z0-9-]`, no leading or trailing `-`.
pub fn validate_name(name: &str) -> Result<(), RpcError> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-')
        && name != crate::dns::PROBE_NAME;
    if ok {
        Ok(())
    } else {
        Err(bad(format!("invalid vm name {name:?}")).with_hint(
            "names are 1-63 characters of a-z, 0-9 and '-', not starting or ending with '-'",
        ))
    }
}

/// Parses a size like `8G`, `512M`, `2GiB` or a byte count.
pub fn parse_size(text: &str) -> Result<u64, RpcError> {
    let t = text.trim();
    let split = t
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let num: f64 = num
        .parse()
        .map_err(|_| bad(format!("invalid size {text:?}")).with_hint("use e.g. 8G or 512M"))?;
    let scale: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        "t" | "tb" | "tib" => 1 << 40,
        _ => {
            return Err(bad(format!("invalid size unit in {text:?}")).with_hint("use K, M, G or T"));
        }
    };
    Ok((num * scale as f64) as u64)
}

const ADJECTIVES: &[&str] = &[
    "brisk", "calm", "eager", "fuzzy", "gentle", "happy", "jolly", "keen", "lucky", "mellow",
    "nimble", "proud", "quiet", "rapid", "sunny", "tidy", "vivid", "witty",
];
const NOUNS: &[&str] = &[
    "otter", "badger", "falcon", "heron", "lynx", "marten", "newt", "owl", "panda", "quokka",
    "raven", "seal", "tapir", "walrus", "yak", "zebra", "ibis", "koala",
];

fn generate_name() -> String {
    let r = uuid::Uuid::new_v4().as_u128();
    format!(
        "{}-{}-{:04x}",
        ADJECTIVES[(r % ADJECTIVES.len() as u128) as usize],
        NOUNS[((r >> 16) % NOUNS.len() as u128) as usize],
        (r >> 40) as u16
    )
}

fn new_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..16].to_owned()
}

/// Resolved sizing with where each value came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sizing {
    /// vCPUs.
    pub vcpu: (u32, ValueSource),
    /// MiB.
    pub memory_mib: (u64, ValueSource),
    /// Bytes.
    pub disk_bytes: (u64, ValueSource),
}

/// Flag → `[vm_defaults]` → host heuristic (cpus/4 ≤ 4; RAM/8 ≤ 8 GiB) → builtin floor.
pub fn resolve_sizing(
    p: &VmCreateParams,
    d: &banger_config::VmDefaults,
    cpus: u32,
    mem_mib: u64,
) -> Result<Sizing, RpcError> {
    let vcpu = match (p.vcpu, d.vcpu, banger_config::auto_vcpu(cpus)) {
        (Some(v), _, _) => (v, ValueSource::Flag),
        (None, Some(v), _) => (v, ValueSource::Config),
        (None, None, Some(v)) => (v, ValueSource::Auto),
        _ => (1, ValueSource::Builtin),
    };
    let memory_mib = match (
        p.memory_mib,
        d.memory_mib,
        banger_config::auto_memory_mib(mem_mib),
    ) {
        (Some(v), _, _) => (v, ValueSource::Flag),
        (None, Some(v), _) => (v, ValueSource::Config),
        (None, None, Some(v)) => (v, ValueSource::Auto),
        _ => (512, ValueSource::Builtin),
    };
    let disk_bytes = match (&p.disk_size, &d.disk_size) {
        (Some(s), _) => (parse_size(s)?, ValueSource::Flag),
        (None, Some(s)) => (parse_size(s)?, ValueSource::Config),
        _ => (8 << 30, ValueSource::Builtin),
    };
    if vcpu.0 == 0 || vcpu.0 > 64 {
        return Err(
            bad(format!("--vcpu {} is out of range", vcpu.0)).with_hint("use 1 to 64 vCPUs")
        );
    }
    if memory_mib.0 < 128 {
        return Err(bad(format!("--memory {} MiB is too small", memory_mib.0))
            .with_hint("a guest needs at least 128 MiB"));
    }
    if mem_mib > 0 && memory_mib.0 > mem_mib {
        return Err(bad(format!(
            "--memory {} MiB exceeds the host's {mem_mib} MiB",
            memory_mib.0
        )));
    }
    if disk_bytes.0 < (256 << 20) {
        return Err(bad("--disk-size must be at least 256M"));
    }
    Ok(Sizing {
        vcpu,
        memory_mib,
        disk_bytes,
    })
}

impl VmService {
    /// A new service.
    pub fn new(
        infra: Infra,
        network: Arc<HostNetwork>,
        image: Arc<ImageService>,
        workspace: Arc<WorkspaceService>,
    ) -> Self {
        VmService {
            infra,
            network,
            image,
            workspace,
            vm_locks: StdMutex::default(),
            create_reservation: Mutex::new(()),
            handles: StdMutex::default(),
            creates: AsyncOps::default(),
            cpu_samples: StdMutex::default(),
            ssh_config_lock: Mutex::new(()),
        }
    }

    fn vm_lock(&self, id: &str) -> Arc<Mutex<()>> {
        let mut locks = self
            .vm_locks
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        Arc::clone(locks.entry(id.to_owned()).or_default())
    }

    /// Takes VM `name`'s lock and re-reads it under the lock (another op may have changed
    /// it meanwhile).
    async fn lock_vm(
        &self,
        name: &str,
    ) -> Result<(tokio::sync::OwnedMutexGuard<()>, VmRow), RpcError> {
        let id = self.get_row(name).await?.vm.id;
        let guard = self.vm_lock(&id).lock_owned().await;
        Ok((guard, self.get_row(&id).await?))
    }

    /// Whether VM `id` has a live VMM.
    fn vmm_alive(&self, id: &str) -> bool {
        self.cached_handles(id)
            .is_some_and(|h| self.infra.vmm.is_alive(&h.vmm))
    }

    fn vm_dir(&self, id: &str) -> PathBuf {
        self.infra.layout.vms_dir().join(id)
    }

    fn run_dir(&self, id: &str) -> PathBuf {
        self.infra.layout.runtime_dir.join("vms").join(id)
    }

    fn key_path(&self) -> PathBuf {
        self.infra
            .config
            .ssh_key_path
            .clone()
            .unwrap_or_else(|| self.infra.layout.ssh_dir().join("id_ed25519"))
    }

    fn known_hosts(&self) -> PathBuf {
        self.infra.layout.ssh_dir().join("known_hosts")
    }

    fn cached_handles(&self, id: &str) -> Option<Handles> {
        self.handles
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(id)
            .cloned()
    }

    fn set_handles(&self, id: &str, h: Option<Handles>) {
        let path = self.vm_dir(id).join("handles.json");
        match &h {
            Some(h) => {
                if let Ok(text) = serde_json::to_string_pretty(h) {
                    let tmp = path.with_extension("json.tmp");
                    if fs_err::write(&tmp, text)
                        .and_then(|()| fs_err::rename(&tmp, &path))
                        .is_err()
                    {
                        warn!(vm = id, "cannot write handles.json");
                    }
                }
            }
            None => {
                let _ = fs_err::remove_file(&path);
            }
        }
        let mut cache = self
            .handles
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match h {
            Some(h) => cache.insert(id.to_owned(), h),
            None => cache.remove(id),
        };
    }

    async fn get_row(&self, name: &str) -> Result<VmRow, RpcError> {
        let key = name.to_owned();
        with_store(&self.infra.store, move |s| s.get_vm(&key))
            .await?
            .ok_or_else(|| {
                RpcError::new(ErrorCode::NotFound, format!("vm {name:?} not found"))
                    .with_hint("`banger vm list` shows the VMs that exist")
            })
    }

    async fn save(&self, vm: &VmRecord) -> Result<(), RpcError> {
        let vm = vm.clone();
        with_store(&self.infra.store, move |s| s.update_vm(&vm)).await
    }

    /// All VMs, oldest first.
    pub async fn list(&self) -> Result<Vec<VmInfo>, RpcError> {
        let rows = with_store(&self.infra.store, Store::list_vms).await?;
        Ok(rows.into_iter().map(vm_info).collect())
    }

    /// One VM by name or id.
    pub async fn show(&self, name: &str) -> Result<VmInfo, RpcError> {
        Ok(vm_info(self.get_row(name).await?))
    }

    /// Makes banger's ssh key once. Concurrent creates race here: each generates a pair under
    /// a temporary name and hard-links it into place, private key first, so exactly one pair
    /// wins and a `.pub` that exists always matches the private key next to it.
    fn ensure_ssh_key(&self) -> Result<(), RpcError> {
        let key = self.key_path();
        let public = key.with_extension("pub");
        if public.exists() {
            return Ok(());
        }
        if let Some(dir) = key.parent() {
            fs_err::create_dir_all(dir).map_err(|e| op_failed("ssh key", e))?;
        }
        let tmp = key.with_extension(format!("tmp-{}", new_id()));
        let tmp_pub = PathBuf::from(format!("{}.pub", tmp.display()));
        let made = self
            .infra
            .runner
            .run(
                &Cmd::new("ssh-keygen")
                    .args(["-q", "-t", "ed25519", "-N", "", "-C", "banger"])
                    .arg("-f")
                    .arg(tmp.display().to_string()),
            )
            .map_err(|e| op_failed("ssh key", chain(&e)));
        let won = made.and_then(|_| match std::fs::hard_link(&tmp, &key) {
            Ok(()) => std::fs::hard_link(&tmp_pub, &public)
                .map(|()| true)
                .map_err(|e| op_failed("ssh key", e)),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
            Err(e) => Err(op_failed("ssh key", e)),
        });
        let _ = fs_err::remove_file(&tmp);
        let _ = fs_err::remove_file(&tmp_pub);
        if !won? {
            // Another create won: its public key follows its private key within moments.
            let deadline = Instant::now() + Duration::from_secs(10);
            while !public.exists() {
                if Instant::now() > deadline {
                    return Err(op_failed(
                        "ssh key",
                        "the key being made by another create never appeared",
                    )
                    .with_hint(format!("remove {} and retry", key.display())));
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        Ok(())
    }

    /// Begins an asynchronous create; its progress is queried with [`Self::create_status`].
    pub fn begin_create(self: &Arc<Self>, p: VmCreateParams, ops: &Arc<OpRegistry>) -> OpBegun {
        let op_id = crate::ops::new_op_id();
        let guard = ops.begin(&op_id, "vm.create", self.infra.clock.now_rfc3339());
        let op = self.creates.insert(&op_id, guard);
        let this = Arc::clone(self);
        let span = tracing::info_span!("op", op_id = %op_id, method = "vm.create");
        tokio::spawn(tracing::Instrument::instrument(
            async move {
                let result = this.create(p, &op.progress).await;
                if let Err(e) = &result {
                    warn!("create failed: {}", e.message);
                }
                op.complete(
                    result
                        .map(|vm| OpOutput::Vm(Box::new(vm)))
                        .map_err(|e| e.with_op_id(op.op_id.clone())),
                );
            },
            span,
        ));
        OpBegun { op_id }
    }

    /// Stages and outcome of an asynchronous create.
    pub async fn create_status(
        &self,
        op_id: &str,
        seen: usize,
        wait: Duration,
    ) -> Result<banger_api::types::CreateStatus, RpcError> {
        self.creates.status(op_id, seen, wait).await
    }

    /// Cancels an asynchronous create.
    pub fn create_cancel(&self, op_id: &str) -> Result<banger_api::types::CreateStatus, RpcError> {
        self.creates.cancel(op_id)
    }

    /// Creates a VM; unless `no_start`, starts it and waits until ssh answers. Reports its
    /// stages to `progress` and stops (undoing everything) when it is cancelled.
    pub async fn create(
        &self,
        p: VmCreateParams,
        progress: &Arc<Progress>,
    ) -> Result<VmInfo, RpcError> {
        // Validation first: nothing is created for bad input.
        if let Some(name) = &p.name {
            validate_name(name)?;
        }
        let sizing = resolve_sizing(
            &p,
            &self.infra.config.vm_defaults,
            banger_host::process::host_cpus(),
            banger_host::process::host_memory_mib(),
        )?;
        let image_name = p
            .image
            .clone()
            .unwrap_or_else(|| self.infra.config.default_image_name.clone());
        progress.stage("image")?;
        let (image, kernel) = self.image.ensure_image(&image_name).await?;
        let now = self.infra.clock.now_rfc3339();

        // Reservation: name check + IP allocation + first row, nothing slower.
        progress.stage("reserve")?;
        let vm = {
            let _reserve = self.create_reservation.lock().await;
            let name = match &p.name {
                Some(n) => n.clone(),
                None => loop {
                    let n = generate_name();
                    let k = n.clone();
                    if !with_store(&self.infra.store, move |s| s.vm_name_taken(&k)).await? {
                        break n;
                    }
                },
            };
            let k = name.clone();
            if with_store(&self.infra.store, move |s| s.vm_name_taken(&k)).await? {
                return Err(RpcError::new(
                    ErrorCode::AlreadyExists,
                    format!("vm {name:?} already exists"),
                )
                .with_hint("pick another --name, or `banger vm delete` the old one"));
            }
            let used: Vec<Ipv4Addr> = with_store(&self.infra.store, Store::used_guest_ips)
                .await?
                .iter()
                .filter_map(|s| s.parse().ok())
                .collect();
            let cfg = &self.infra.config;
            let ip = allocate_ip(cfg.cidr, cfg.bridge_ip, &used).ok_or_else(|| {
                op_failed(
                    "ip allocation",
                    format!("no free address left in {}", cfg.cidr),
                )
                .with_hint("delete unused VMs (`banger vm prune`) or widen `cidr` in config.toml")
            })?;
            let vm = VmRecord {
                id: new_id(),
                name,
                image_id: image.id.clone(),
                state: VmState::Created,
                guest_ip: ip.to_string(),
                vcpu: sizing.vcpu.0,
                memory_mib: sizing.memory_mib.0,
                disk_bytes: sizing.disk_bytes.0,
                nat: p.nat,
                vmm: Some(self.infra.vmm.name()),
                spec: serde_json::json!({
                    "kernel": kernel.name,
                    // A pulled image without systemd or sshd boots its first-boot init.
                    "init": image.config.get("init").and_then(serde_json::Value::as_str),
                    "sizing": SizingSources { vcpu: sizing.vcpu.1, memory_mib: sizing.memory_mib.1, disk: sizing.disk_bytes.1 },
                }),
                workspace: None,
                last_error: None,
                created_at: now.clone(),
                updated_at: now.clone(),
                last_touched_at: now,
            };
            let rec = vm.clone();
            with_store(&self.infra.store, move |s| s.insert_vm(&rec)).await?;
            vm
        };
        let lock = self.vm_lock(&vm.id);
        let _guard = lock.lock().await;
        info!(vm = vm.name, ip = vm.guest_ip, "creating vm");
        let mut vm = vm;
        let result = async {
            self.provision(&vm, &image, progress).await?;
            if !p.no_start {
                self.start_locked(&mut vm, &kernel, progress).await?;
            }
            progress.check()
        }
        .await;
        if let Err(mut err) = result {
            if progress.is_cancelled() {
                err = cancelled();
            }
            let boot_failed = !progress.is_cancelled()
                && progress.stage_names().last().map(String::as_str) == Some("boot");
            if p.keep_failed_boot && boot_failed {
                warn!(
                    vm = vm.name,
                    "boot failed, keeping the vm for its logs: {}", err.message
                );
                self.teardown(&vm).await;
                vm.state = VmState::Error;
                vm.last_error = Some(err.message.clone());
                vm.updated_at = self.infra.clock.now_rfc3339();
                self.save(&vm).await?;
                self.sync_ssh_config().await;
                return Err(RpcError::new(
                    err.kind(),
                    format!(
                        "{}; vm {} was kept so its logs can show why",
                        err.message, vm.name
                    ),
                )
                .with_hint(format!(
                    "`banger vm logs {0}` shows the console; `banger vm delete {0}` removes it",
                    vm.name
                )));
            }
            warn!(vm = vm.name, "create failed, undoing: {}", err.message);
            self.teardown(&vm).await;
            let _ = fs_err::remove_dir_all(self.vm_dir(&vm.id));
            let id = vm.id.clone();
            let _ = with_store(&self.infra.store, move |s| s.delete_vm(&id)).await;
            self.forget_host_key(&vm.id);
            return Err(err);
        }
        self.sync_ssh_config().await;
        self.show(&vm.id).await
    }

    /// Disks and guest config for a new VM.
    async fn provision(
        &self,
        vm: &VmRecord,
        image: &ImageRecord,
        progress: &Arc<Progress>,
    ) -> Result<(), RpcError> {
        let dir = self.vm_dir(&vm.id);
        let progress = Arc::clone(progress);
        let runner = Arc::clone(&self.infra.runner);
        let cfg = Arc::clone(&self.infra.config);
        let (vm, image) = (vm.clone(), image.clone());
        let key = self.key_path();
        let known_hosts = self.known_hosts();
        let agent = self.infra.agent.clone();
        self.ensure_ssh_key()?;
        blocking(move || {
            let r = runner.as_ref();
            progress.stage("system disk")?;
            fs_err::create_dir_all(&dir).map_err(|e| op_failed("vm dir", e))?;
            let root = dir.join("root.ext4");
            disk::cow_copy(r, Path::new(&image.rootfs_path), &root).map_err(|e| op_failed("system disk", chain(&e)))?;
            // Per-VM host key, pinned in banger's known_hosts before the first connection.
            progress.stage("guest config")?;
            let host_key = dir.join("ssh_host_ed25519_key");
            r.run(&Cmd::new("ssh-keygen").args(["-q", "-t", "ed25519", "-N", "", "-C", &vm.name]).arg("-f").arg(host_key.display().to_string()))
                .map_err(|e| op_failed("host key", chain(&e)))?;
            let stage = dir.join("stage");
            fs_err::create_dir_all(&stage).map_err(|e| op_failed("guest config", e))?;
            let put = |name: &str, text: String| -> Result<PathBuf, RpcError> {
                let p = stage.join(name);
                fs_err::write(&p, text).map_err(|e| op_failed("guest config", e))?;
                Ok(p)
            };
            let mut files = vec![
                ImageFile { guest_path: "/etc/hostname".into(), host_path: put("hostname", format!("{}\n", vm.name))?, mode: 0o644 },
                ImageFile {
                    guest_path: "/etc/hosts".into(),
                    host_path: put("hosts", format!("127.0.0.1 localhost\n127.0.1.1 {0}\n{1} {0}.vm {0}\n::1 localhost ip6-localhost\n", vm.name, vm.guest_ip))?,
                    mode: 0o644,
                },
                ImageFile {
                    guest_path: "/etc/banger/network.env".into(),
                    host_path: put(
                        "network.env",
                        format!("BANGER_IFACE=eth0\nBANGER_ADDR={}/{}\nBANGER_GATEWAY={}\n", vm.guest_ip, cfg.cidr.prefix_len(), cfg.bridge_ip),
                    )?,
                    mode: 0o644,
                },
                ImageFile { guest_path: "/etc/resolv.conf".into(), host_path: put("resolv.conf", format!("nameserver {}\n", cfg.default_dns))?, mode: 0o644 },
                ImageFile { guest_path: "/etc/ssh/ssh_host_ed25519_key".into(), host_path: host_key.clone(), mode: 0o600 },
                ImageFile { guest_path: "/etc/ssh/ssh_host_ed25519_key.pub".into(), host_path: host_key.with_extension("pub"), mode: 0o644 },
            ];
            let mut links = Vec::new();
            if let Some(agent) = &agent {
                files.push(ImageFile { guest_path: AGENT_GUEST_PATH.into(), host_path: agent.clone(), mode: 0o755 });
                files.push(ImageFile { guest_path: AGENT_UNIT_PATH.into(), host_path: put("banger-agent.service", AGENT_UNIT.to_owned())?, mode: 0o644 });
                links.push((AGENT_WANTS_LINK, AGENT_UNIT_PATH));
            }
            disk::write_entries(r, &root, &files, &links).map_err(|e| op_failed("guest config", chain(&e)))?;
            // Work disk: the image's /root plus banger's authorized key.
            progress.stage("work disk")?;
            let work_root = stage.join("work");
            match &image.work_seed_path {
                Some(seed) if Path::new(seed).is_dir() => {
                    r.run(&Cmd::new("cp").args(["-a", seed]).arg(work_root.display().to_string()))
                        .map_err(|e| op_failed("work disk", chain(&e)))?;
                }
                _ => fs_err::create_dir_all(&work_root).map_err(|e| op_failed("work disk", e))?,
            }
            let ssh_dir = work_root.join(".ssh");
            fs_err::create_dir_all(&ssh_dir).map_err(|e| op_failed("work disk", e))?;
            let pubkey = fs_err::read_to_string(key.with_extension("pub")).map_err(|e| op_failed("ssh key", e))?;
            fs_err::write(ssh_dir.join("authorized_keys"), pubkey).map_err(|e| op_failed("work disk", e))?;
            set_mode(&ssh_dir, 0o700)?;
            set_mode(&ssh_dir.join("authorized_keys"), 0o600)?;
            set_mode(&work_root, 0o700)?;
            disk::make_ext4_root_owned(r, &dir.join("work.ext4"), vm.disk_bytes, "banger-work", &work_root)
                .map_err(|e| op_failed("work disk", chain(&e)))?;
            let _ = fs_err::remove_dir_all(&stage);
            // Pin the host key under the VM id (never reused, unlike IPs).
            let pubtext = fs_err::read_to_string(host_key.with_extension("pub")).map_err(|e| op_failed("host key", e))?;
            let mut parts = pubtext.split_whitespace();
            let entry = format!("{} {} {}\n", host_alias(&vm.id), parts.next().unwrap_or_default(), parts.next().unwrap_or_default());
            if let Some(d) = known_hosts.parent() {
                fs_err::create_dir_all(d).map_err(|e| op_failed("known_hosts", e))?;
            }
            use std::io::Write as _;
            let mut f = fs_err::OpenOptions::new().create(true).append(true).open(&known_hosts).map_err(|e| op_failed("known_hosts", e))?;
            f.write_all(entry.as_bytes()).map_err(|e| op_failed("known_hosts", e))?;
            let _ = fs_err::remove_file(&host_key);
            Ok(())
        })
        .await
    }

    fn forget_host_key(&self, id: &str) {
        let kh = self.known_hosts();
        if let Ok(text) = fs_err::read_to_string(&kh) {
            let alias = host_alias(id);
            let kept: String = text
                .lines()
                .filter(|l| l.split_whitespace().next() != Some(alias.as_str()))
                .map(|l| format!("{l}\n"))
                .collect();
            let _ = fs_err::write(&kh, kept);
        }
    }

    /// Boots a VM whose disks exist. Holds the VM's lock (caller).
    async fn start_locked(
        &self,
        vm: &mut VmRecord,
        kernel: &KernelRecord,
        progress: &Arc<Progress>,
    ) -> Result<(), RpcError> {
        let started = Instant::now();
        let run_dir = self.run_dir(&vm.id);
        let dir = self.vm_dir(&vm.id);
        let ip: Ipv4Addr = vm
            .guest_ip
            .parse()
            .map_err(|_| op_failed("network", "corrupt guest ip"))?;
        let spec = VmSpec {
            name: vm.name.clone(),
            vcpu: vm.vcpu,
            memory_mib: vm.memory_mib,
            kernel: PathBuf::from(&kernel.vmlinux_path),
            initrd: kernel.initrd_path.as_ref().map(PathBuf::from),
            cmdline: boot_cmdline(vm.spec.get("init").and_then(serde_json::Value::as_str)),
            drives: vec![
                Drive {
                    id: "rootfs".into(),
                    path: dir.join("root.ext4"),
                    read_only: false,
                },
                Drive {
                    id: "work".into(),
                    path: dir.join("work.ext4"),
                    read_only: false,
                },
            ],
            net: None,
            // The guest's IPv4 address as its CID: unique among VMs, never 0-2 or u32::MAX.
            vsock: self.infra.vmm.supports_vsock().then(|| VsockSpec {
                cid: u32::from(ip),
                uds_path: run_dir.join("vsock.sock"),
            }),
            run_dir: run_dir.clone(),
            console_log: dir.join("console.log"),
            vmm_log: dir.join("vmm.log"),
        };
        let network = Arc::clone(&self.network);
        let vmm = Arc::clone(&self.infra.vmm);
        let pr = Arc::clone(progress);
        let mut spec = spec;
        let (handle, tap) = blocking(move || {
            pr.stage("network")?;
            fs_err::create_dir_all(&spec.run_dir).map_err(|e| op_failed("run dir", e))?;
            network.ensure_bridge()?;
            let tap = network.acquire_tap()?;
            spec.net = Some(NetSpec {
                tap: tap.clone(),
                mac: mac_for(ip),
            });
            let launched = pr.stage("vmm").and_then(|()| {
                vmm.launch(&spec)
                    .map_err(|e| op_failed("vmm spawn", chain(&e)))
            });
            match launched {
                Ok(h) => Ok((h, tap)),
                Err(e) => {
                    // No handle records the tap yet: give it back here.
                    let _ = network.delete_tap(&tap);
                    Err(e)
                }
            }
        })
        .await?;
        self.set_handles(
            &vm.id,
            Some(Handles {
                vmm: handle.clone(),
                tap,
            }),
        );
        info!(
            vm = vm.name,
            pid = handle.pid,
            backend = handle.backend,
            "vmm launched"
        );
        progress.stage("boot")?;
        let timeout = Duration::from_secs(self.infra.config.boot_timeout_secs);
        let watch = Watch {
            vmm: Arc::clone(&self.infra.vmm),
            handle: handle.clone(),
            progress: Arc::clone(progress),
        };
        let guest = Arc::clone(&self.infra.guest);
        let console = dir.join("console.log");
        let addr = self.guest_addr(vm);
        blocking(move || {
            guest
                .wait_ready(&addr, timeout, &watch)
                .map_err(|e| boot_error(&e, &console))
        })
        .await?;
        vm.state = VmState::Running;
        vm.vmm = Some(handle.backend.clone());
        vm.last_error = None;
        vm.updated_at = self.infra.clock.now_rfc3339();
        vm.last_touched_at.clone_from(&vm.updated_at);
        self.save(vm).await?;
        self.network.dns.set(&vm.name, ip);
        if vm.nat {
            progress.stage("nat")?;
            self.sync_nat().await?;
        }
        if !self.infra.config.file_sync.is_empty() {
            progress.stage("file sync")?;
            self.workspace
                .file_sync(&self.guest_addr(vm), &vm.name)
                .await;
        }
        info!(
            vm = vm.name,
            "ready in {:.1}s",
            started.elapsed().as_secs_f64()
        );
        Ok(())
    }

    /// Kills the VMM (if any), removes tap, handles and DNS record, and takes the VM out of
    /// the NAT table. Never fails.
    async fn teardown(&self, vm: &VmRecord) {
        let id = vm.id.as_str();
        self.network.dns.remove(&vm.name);
        let handles = self
            .cached_handles(id)
            .or_else(|| read_handles(&self.vm_dir(id)));
        if let Some(h) = handles {
            let vmm = Arc::clone(&self.infra.vmm);
            let network = Arc::clone(&self.network);
            let _ = blocking(move || {
                vmm.kill(&h.vmm);
                let deadline = Instant::now() + Duration::from_secs(5);
                while vmm.is_alive(&h.vmm) && Instant::now() < deadline {
                    std::thread::sleep(Duration::from_millis(2));
                }
                network.delete_tap(&h.tap)
            })
            .await;
        }
        // Without handles the tap (if any) is an orphan; the next reconcile removes it.
        self.set_handles(id, None);
        let _ = fs_err::remove_dir_all(self.run_dir(id));
        if vm.nat
            && let Err(e) = self.sync_nat().await
        {
            warn!(vm = vm.name, "nat: {}", e.message);
        }
    }

    /// Rebuilds banger's NAT table from the store: running VMs with NAT on that have a tap.
    pub async fn sync_nat(&self) -> Result<(), RpcError> {
        let _nat = self.network.nat_lock.lock().await;
        let entries = self.nat_entries().await?;
        let spec = NatSpec {
            bridge: self.infra.config.bridge_name.clone(),
            entries,
        };
        let network = Arc::clone(&self.network);
        blocking(move || network.apply_nat(&spec)).await
    }

    /// The guests that should have NAT: running VMs with `nat` on, with their handles' taps.
    pub async fn nat_entries(&self) -> Result<Vec<NatEntry>, RpcError> {
        let rows = with_store(&self.infra.store, Store::list_vms).await?;
        Ok(rows
            .into_iter()
            .filter(|r| r.vm.nat && r.vm.state == VmState::Running)
            .filter_map(|r| {
                let tap = self.cached_handles(&r.vm.id)?.tap;
                Some(NatEntry {
                    ip: r.vm.guest_ip.parse().ok()?,
                    tap,
                    vm: r.vm.name,
                })
            })
            .collect())
    }

    /// Graceful stop: guest poweroff over ssh, wait briefly, then kill; always tears down.
    async fn stop_locked(&self, vm: &mut VmRecord) -> Result<(), RpcError> {
        if let Some(h) = self.cached_handles(&vm.id)
            && self.infra.vmm.is_alive(&h.vmm)
        {
            let addr = self.guest_addr(vm);
            let vmm = Arc::clone(&self.infra.vmm);
            let guest = Arc::clone(&self.infra.guest);
            let grace = Duration::from_secs(self.infra.config.stop_timeout_secs);
            blocking(move || {
                guest.request_poweroff(&addr);
                vmm.request_shutdown(&h.vmm);
                let deadline = Instant::now() + grace;
                while vmm.is_alive(&h.vmm) && Instant::now() < deadline {
                    std::thread::sleep(Duration::from_millis(50));
                }
                Ok(())
            })
            .await?;
        }
        self.teardown(vm).await;
        vm.state = VmState::Stopped;
        vm.updated_at = self.infra.clock.now_rfc3339();
        self.save(vm).await
    }

    async fn kernel_for(&self, vm: &VmRecord) -> Result<KernelRecord, RpcError> {
        let image_id = vm.image_id.clone();
        let image = with_store(&self.infra.store, move |s| s.get_image(&image_id))
            .await?
            .ok_or_else(|| op_failed("start", "the vm's image is gone"))?;
        let kid = image
            .kernel_id
            .ok_or_else(|| op_failed("start", "the vm's image has no kernel"))?;
        with_store(&self.infra.store, move |s| s.get_kernel(&kid))
            .await?
            .ok_or_else(|| op_failed("start", "the vm's kernel is gone"))
    }

    /// Runs a lifecycle op on one VM under its lock.
    pub async fn lifecycle(&self, name: &str, op: Lifecycle) -> Result<VmInfo, RpcError> {
        let (_guard, row) = self.lock_vm(name).await?;
        let mut vm = row.vm.clone();
        let alive = self.vmm_alive(&vm.id);
        match op {
            Lifecycle::Start => {
                if alive {
                    return self.show(&vm.id).await;
                }
                self.teardown(&vm).await;
                let kernel = self.kernel_for(&vm).await?;
                let progress = Arc::new(Progress::default());
                if let Err(e) = self.start_locked(&mut vm, &kernel, &progress).await {
                    self.teardown(&vm).await;
                    vm.state = VmState::Error;
                    vm.last_error = Some(e.message.clone());
                    vm.updated_at = self.infra.clock.now_rfc3339();
                    self.save(&vm).await?;
                    return Err(e);
                }
            }
            Lifecycle::Stop => self.stop_locked(&mut vm).await?,
            Lifecycle::Restart => {
                self.stop_locked(&mut vm).await?;
                let kernel = self.kernel_for(&vm).await?;
                let progress = Arc::new(Progress::default());
                self.start_locked(&mut vm, &kernel, &progress).await?;
            }
            Lifecycle::Kill => {
                self.teardown(&vm).await;
                vm.state = VmState::Stopped;
                vm.updated_at = self.infra.clock.now_rfc3339();
                self.save(&vm).await?;
            }
            Lifecycle::Delete => {
                let info = vm_info(VmRow {
                    vm: vm.clone(),
                    image_name: row.image_name.clone(),
                });
                self.stop_locked(&mut vm).await?;
                let _ = fs_err::remove_dir_all(self.vm_dir(&vm.id));
                self.forget_host_key(&vm.id);
                let id = vm.id.clone();
                with_store(&self.infra.store, move |s| s.delete_vm(&id)).await?;
                self.vm_locks
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .remove(&vm.id);
                self.sync_ssh_config().await;
                return Ok(info);
            }
        }
        self.show(&vm.id).await
    }

    /// Runs `op` on several VMs concurrently (names deduplicated, order kept).
    pub async fn lifecycle_many(&self, names: &[String], op: Lifecycle) -> Vec<VmOpOutcome> {
        let futures = unique_names(names).into_iter().map(|n| async move {
            match self.lifecycle(n, op).await {
                Ok(vm) => VmOpOutcome {
                    name: (*n).clone(),
                    vm: Some(vm),
                    error: None,
                },
                Err(e) => VmOpOutcome {
                    name: (*n).clone(),
                    vm: None,
                    error: Some(e),
                },
            }
        });
        futures::future::join_all(futures).await
    }

    /// ssh coordinates of a VM (whatever its state).
    /// How the host reaches VM `vm`'s guest: ssh, and the agent when the VMM gives vsock.
    fn guest_addr(&self, vm: &VmRecord) -> GuestAddr {
        GuestAddr {
            ip: vm.guest_ip.parse().unwrap_or(Ipv4Addr::UNSPECIFIED),
            ssh_options: self.ssh_target(vm).ssh_options(),
            vsock: self
                .infra
                .vmm
                .supports_vsock()
                .then(|| self.run_dir(&vm.id).join("vsock.sock")),
        }
    }

    fn ssh_target(&self, vm: &VmRecord) -> SshInfo {
        SshInfo {
            name: vm.name.clone(),
            host: vm.guest_ip.clone(),
            user: "root".into(),
            key_path: self.key_path().display().to_string(),
            known_hosts: self.known_hosts().display().to_string(),
            host_key_alias: host_alias(&vm.id),
            workdir: vm
                .workspace
                .as_ref()
                .and_then(|w| w.get("guest_path"))
                .and_then(|p| p.as_str())
                .map(str::to_owned),
        }
    }

    /// How to ssh into a running VM (marks it used, under its lock: a touch never
    /// overwrites a concurrent stop).
    pub async fn ssh_info(&self, name: &str) -> Result<SshInfo, RpcError> {
        Ok(self.guest_target(name).await?.0.ssh)
    }

    /// Under the VM lock: checks the VM runs, marks it used, and snapshots how to reach it
    /// (the lock is released before any guest I/O).
    async fn guest_target(&self, name: &str) -> Result<(GuestTarget, VmRecord), RpcError> {
        let (_held, row) = self.lock_vm(name).await?;
        let mut vm = row.vm;
        if vm.state != VmState::Running || !self.vmm_alive(&vm.id) {
            return Err(RpcError::new(
                ErrorCode::NotRunning,
                format!("vm {:?} is not running", vm.name),
            )
            .with_hint(format!("start it with `banger vm start {}`", vm.name)));
        }
        vm.last_touched_at = self.infra.clock.now_rfc3339();
        self.save(&vm).await?;
        let target = GuestTarget {
            id: vm.id.clone(),
            ssh: self.ssh_target(&vm),
            addr: self.guest_addr(&vm),
        };
        Ok((target, vm))
    }

    /// Ships a host git work tree into a running VM and records it on the VM.
    pub async fn workspace_prepare(
        &self,
        p: WorkspacePrepareParams,
    ) -> Result<WorkspacePrepared, RpcError> {
        let guest_path = p
            .guest_path
            .clone()
            .unwrap_or_else(|| DEFAULT_GUEST_PATH.to_owned());
        validate_guest_path(&guest_path)?;
        // A dry run may name no VM (`vm run --dry-run` plans before creating one).
        let vm_name = if p.dry_run && p.name.is_empty() {
            String::new()
        } else {
            self.get_row(&p.name).await?.vm.name
        };
        let snap = self.workspace.plan(&p).await?;
        if p.dry_run {
            return Ok(prepared(&vm_name, &guest_path, snap, true));
        }
        let (target, _) = self.guest_target(&vm_name).await?;
        let prepared = self.workspace.prepare(&target, snap, &guest_path).await?;
        // Record it, unless the VM went away meanwhile.
        let (_held, row) = self.lock_vm(&target.id).await.map_err(|_| {
            op_failed(
                "workspace prepare",
                "the vm was deleted while its workspace was copied",
            )
        })?;
        let mut vm = row.vm;
        vm.workspace = Some(serde_json::json!({
            "guest_path": prepared.guest_path,
            "source": prepared.source,
            "head": prepared.head,
            "branch": prepared.branch,
            "mode": prepared.mode,
            "prepared_at": self.infra.clock.now_rfc3339(),
        }));
        self.save(&vm).await?;
        info!(vm = %vm.name, files = prepared.files, bytes = prepared.bytes, ms = prepared.elapsed_ms, "workspace prepared");
        Ok(prepared)
    }

    /// A patch of what changed in a VM's workspace since it was prepared (or `base_commit`).
    pub async fn workspace_export(
        &self,
        p: WorkspaceExportParams,
    ) -> Result<WorkspaceExport, RpcError> {
        let (target, vm) = self.guest_target(&p.name).await?;
        let ws = vm.workspace.as_ref();
        let field = |k: &str| {
            ws.and_then(|w| w.get(k))
                .and_then(|v| v.as_str())
                .map(str::to_owned)
        };
        let Some(guest_path) = field("guest_path") else {
            return Err(RpcError::new(
                ErrorCode::BadRequest,
                format!("vm {:?} has no workspace", vm.name),
            )
            .with_hint(format!(
                "prepare one first: `banger vm workspace prepare {} PATH`",
                vm.name
            )));
        };
        let base = p.base_commit.or_else(|| field("head")).ok_or_else(|| {
            op_failed(
                "workspace export",
                "the workspace record has no head commit",
            )
        })?;
        self.workspace.export(&target, &guest_path, &base).await
    }

    /// Changes a VM's settings: NAT at any time (applied at once to a running VM), vCPUs and
    /// memory only while it is stopped.
    pub async fn set(&self, p: VmSetParams) -> Result<VmInfo, RpcError> {
        if p.nat.is_none() && p.vcpu.is_none() && p.memory_mib.is_none() {
            return Err(
                bad("nothing to change").with_hint("pass --nat, --no-nat, --vcpu or --memory")
            );
        }
        if let Some(v) = p.vcpu
            && (v == 0 || v > 64)
        {
            return Err(bad(format!("--vcpu {v} is out of range")).with_hint("use 1 to 64 vCPUs"));
        }
        if let Some(m) = p.memory_mib {
            if m < 128 {
                return Err(bad(format!("--memory {m} MiB is too small"))
                    .with_hint("a guest needs at least 128 MiB"));
            }
            let host = banger_host::process::host_memory_mib();
            if host > 0 && m > host {
                return Err(bad(format!(
                    "--memory {m} MiB exceeds the host's {host} MiB"
                )));
            }
        }
        let (_guard, row) = self.lock_vm(&p.name).await?;
        let mut vm = row.vm;
        let alive = self.vmm_alive(&vm.id);
        if (p.vcpu.is_some() || p.memory_mib.is_some()) && alive {
            return Err(RpcError::new(
                ErrorCode::BadRequest,
                format!(
                    "vm {:?} is running; vcpu and memory change only while it is stopped",
                    vm.name
                ),
            )
            .with_hint(format!(
                "`banger vm stop {}` first, then start it again after the change",
                vm.name
            )));
        }
        let old_nat = vm.nat;
        if let Some(n) = p.nat {
            vm.nat = n;
        }
        if let Some(v) = p.vcpu {
            vm.vcpu = v;
        }
        if let Some(m) = p.memory_mib {
            vm.memory_mib = m;
        }
        vm.updated_at = self.infra.clock.now_rfc3339();
        self.save(&vm).await?;
        if vm.nat != old_nat && alive {
            if let Err(e) = self.sync_nat().await {
                // Put the setting back so the store keeps matching the host.
                vm.nat = old_nat;
                self.save(&vm).await?;
                let _ = self.sync_nat().await;
                return Err(e);
            }
            info!(vm = vm.name, nat = vm.nat, "nat changed on a running vm");
        }
        self.show(&vm.id).await
    }

    /// Bridge, tap pool, NAT and DNS state.
    pub async fn net_status(&self) -> Result<banger_api::types::NetStatus, RpcError> {
        use banger_api::types::{DnsInfo, NatInfo, NetStatus};
        let cfg = &self.infra.config;
        let nat = self
            .nat_entries()
            .await?
            .into_iter()
            .map(|e| NatInfo {
                vm: e.vm,
                ip: e.ip.to_string(),
                tap: e.tap,
            })
            .collect();
        let dns = self.network.dns_status();
        Ok(NetStatus {
            bridge: cfg.bridge_name.clone(),
            bridge_ip: cfg.bridge_ip.to_string(),
            cidr: cfg.cidr.to_string(),
            tap_pool_size: cfg.tap_pool_size,
            idle_taps: self.network.idle_taps(),
            nat,
            dns: DnsInfo {
                listen: dns.listen.map(|a| a.to_string()),
                error: dns.error,
                records: self
                    .network
                    .dns
                    .snapshot()
                    .into_iter()
                    .map(|(n, ip)| (n, ip.to_string()))
                    .collect(),
                resolver: match dns.resolver {
                    Some(banger_host::ResolverRouting::Routed) => "routed",
                    Some(banger_host::ResolverRouting::NoResolved) => "no-resolved",
                    None => "unknown",
                }
                .into(),
            },
        })
    }

    /// Listening ports of running VMs, read concurrently (names deduplicated, order kept).
    pub async fn ports_many(&self, names: &[String]) -> Vec<VmPorts> {
        let futures = unique_names(names).into_iter().map(|n| async move {
            match self.ports(n).await {
                Ok(ports) => VmPorts {
                    name: (*n).clone(),
                    ports,
                    error: None,
                },
                Err(e) => VmPorts {
                    name: (*n).clone(),
                    ports: Vec::new(),
                    error: Some(e),
                },
            }
        });
        futures::future::join_all(futures).await
    }

    async fn ports(&self, name: &str) -> Result<Vec<PortInfo>, RpcError> {
        let (target, vm) = self.guest_target(name).await?;
        let guest = Arc::clone(&self.infra.guest);
        let listeners = blocking(move || {
            guest.listening(&target.addr).map_err(|e| {
                op_failed("ports", e).with_hint(
                    "the guest's agent or sshd must answer; `banger vm logs NAME` shows why they may not",
                )
            })
        })
        .await?;
        Ok(port_infos(&vm.name, &listeners))
    }

    /// Samples VM `id`'s VMM CPU time; returns the use since the previous sample (percent of
    /// one CPU) when that sample is at least `min_gap` old.
    fn sample_cpu(&self, id: &str, h: &Handles, min_gap: Duration) -> Option<f64> {
        let used = banger_host::process::cpu_time(h.vmm.pid, h.vmm.start_time)?;
        let now = Instant::now();
        let mut samples = self
            .cpu_samples
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let prev = samples.get(id).copied();
        let pct = prev.and_then(|(t, c)| {
            let dt = now.duration_since(t);
            (dt >= min_gap).then(|| used.saturating_sub(c).as_secs_f64() * 100.0 / dt.as_secs_f64())
        });
        if prev.is_none() || pct.is_some() {
            samples.insert(id.to_owned(), (now, used));
        }
        pct
    }

    /// Numbers for VMs `names` (all when empty): VMM pid, CPU and RSS on the host; load,
    /// memory, disk and uptime from the guest (agent, else ssh). Marks nothing as used.
    pub async fn stats_many(&self, names: &[String]) -> Result<Vec<VmStats>, RpcError> {
        let rows: Vec<VmRow> = if names.is_empty() {
            with_store(&self.infra.store, Store::list_vms).await?
        } else {
            let mut rows = Vec::new();
            for n in unique_names(names) {
                rows.push(self.get_row(n).await?);
            }
            rows
        };
        let futures = rows.into_iter().map(|row| async move {
            let vm = row.vm;
            let mut out = VmStats {
                name: vm.name.clone(),
                state: vm.state,
                pid: None,
                cpu_percent: None,
                rss_mib: None,
                guest: None,
                last_touched_at: vm.last_touched_at.clone(),
                error: None,
            };
            let Some(h) = self
                .cached_handles(&vm.id)
                .filter(|h| self.infra.vmm.is_alive(&h.vmm))
            else {
                return out;
            };
            out.pid = Some(h.vmm.pid);
            out.rss_mib = banger_host::process::rss_kib(h.vmm.pid).map(|k| k / 1024);
            let gap = Duration::from_millis(200);
            out.cpu_percent = match self.sample_cpu(&vm.id, &h, gap) {
                Some(p) => Some(p),
                None => {
                    tokio::time::sleep(gap).await;
                    self.sample_cpu(&vm.id, &h, gap)
                }
            };
            let guest = Arc::clone(&self.infra.guest);
            let addr = self.guest_addr(&vm);
            match blocking(move || Ok(guest.stats(&addr))).await {
                Ok(Ok((g, via))) => {
                    out.guest = Some(GuestStats {
                        load: g.load,
                        mem_total_mib: g.mem_total_kib / 1024,
                        mem_available_mib: g.mem_available_kib / 1024,
                        disk_total_mib: g.disk_total_kib / 1024,
                        disk_used_mib: g.disk_used_kib / 1024,
                        uptime_s: g.uptime_s,
                        via: via.to_owned(),
                    });
                }
                Ok(Err(e)) => out.error = Some(format!("guest stats: {e}")),
                Err(e) => out.error = Some(format!("guest stats: {}", e.message)),
            }
            out
        });
        Ok(futures::future::join_all(futures).await)
    }

    /// One pass of the background poller: samples running VMs' VMM CPU and, when
    /// `auto_stop_stale_after` is set, stops running VMs nobody touched since `now` minus
    /// that. Returns the names it stopped.
    pub async fn poll_once(&self, now: jiff::Timestamp) -> Vec<String> {
        let Ok(rows) = with_store(&self.infra.store, Store::list_vms).await else {
            return Vec::new();
        };
        // Touched before this: stale (none when the reaper is off).
        let cutoff = self
            .infra
            .config
            .auto_stop_after()
            .and_then(|d| jiff::SignedDuration::try_from(d).ok())
            .and_then(|d| now.checked_sub(d).ok());
        let mut stopped = Vec::new();
        for row in rows.into_iter().filter(|r| r.vm.state == VmState::Running) {
            if let Some(h) = self.cached_handles(&row.vm.id) {
                let _ = self.sample_cpu(&row.vm.id, &h, Duration::ZERO);
            }
            let Some(cutoff) = cutoff else { continue };
            if is_stale(&row.vm, cutoff) {
                // Re-check under the VM's lock: it may have been used meanwhile.
                let Ok((_held, row)) = self.lock_vm(&row.vm.id).await else {
                    continue;
                };
                let mut vm = row.vm;
                if vm.state != VmState::Running || !is_stale(&vm, cutoff) {
                    continue;
                }
                info!(vm = %vm.name, last_touched = %vm.last_touched_at, "stopping stale vm (auto_stop_stale_after)");
                match self.stop_locked(&mut vm).await {
                    Ok(()) => stopped.push(vm.name.clone()),
                    Err(e) => warn!(vm = %vm.name, "cannot stop stale vm: {}", e.message),
                }
            }
        }
        stopped
    }

    /// Runs [`VmService::poll_once`] every `stats_poll_interval` until `shutdown`.
    pub async fn poll_loop(self: Arc<Self>, shutdown: tokio_util::sync::CancellationToken) {
        let every = self.infra.config.stats_poll();
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(every) => {}
            }
            let _ = self.poll_once(jiff::Timestamp::now()).await;
        }
    }

    /// Rewrites the managed ssh config from the store: a `Host NAME.vm` block per VM with
    /// its address, banger's key and the VM's pinned host key. Best effort (logged).
    pub async fn sync_ssh_config(&self) {
        let _held = self.ssh_config_lock.lock().await;
        let Ok(rows) = with_store(&self.infra.store, Store::list_vms).await else {
            return;
        };
        let vms: Vec<(String, String, String)> = rows
            .iter()
            .map(|r| {
                (
                    r.vm.name.clone(),
                    r.vm.guest_ip.clone(),
                    host_alias(&r.vm.id),
                )
            })
            .collect();
        let text = ssh_config_text(&self.key_path(), &self.known_hosts(), &vms);
        let path = self.infra.layout.ssh_config_path();
        let tmp = path.with_extension("tmp");
        let written = path
            .parent()
            .map_or(Ok(()), fs_err::create_dir_all)
            .and_then(|()| fs_err::write(&tmp, text))
            .and_then(|()| fs_err::rename(&tmp, &path));
        if let Err(e) = written {
            warn!("cannot write {}: {e}", path.display());
        }
    }

    /// VMM and console logs.
    pub async fn logs(&self, name: &str) -> Result<VmLogs, RpcError> {
        let vm = self.get_row(name).await?.vm;
        let dir = self.vm_dir(&vm.id);
        let read = |f: &str| std::fs::read_to_string(dir.join(f)).unwrap_or_default();
        Ok(VmLogs {
            vmm: read("vmm.log"),
            console: read("console.log"),
        })
    }

    /// Startup reconcile: keep live VMMs, tear down dead ones and mark them stopped; then
    /// rebuild DNS records and the NAT table from the store, re-adopt idle pool taps and
    /// remove orphan ones, and warm the pool.
    pub async fn reconcile(self: &Arc<Self>) -> Result<(), RpcError> {
        self.reconcile_vms().await?;
        let rows = with_store(&self.infra.store, Store::list_vms).await?;
        let running: Vec<&VmRecord> = rows
            .iter()
            .map(|r| &r.vm)
            .filter(|v| v.state == VmState::Running)
            .collect();
        self.network.dns.replace_all(
            running
                .iter()
                .filter_map(|v| Some((v.name.clone(), v.guest_ip.parse().ok()?))),
        );
        if let Err(e) = self.sync_nat().await {
            warn!("reconcile: {}", e.message);
        }
        let in_use: std::collections::HashSet<String> = running
            .iter()
            .filter_map(|v| self.cached_handles(&v.id).map(|h| h.tap))
            .collect();
        let network = Arc::clone(&self.network);
        blocking(move || {
            if let Err(e) = network.reconcile_taps(&in_use) {
                warn!("reconcile: {}", e.message);
            }
            Ok(())
        })
        .await?;
        self.network.warm_if_bridged();
        self.sync_ssh_config().await;
        Ok(())
    }

    async fn reconcile_vms(&self) -> Result<(), RpcError> {
        for row in with_store(&self.infra.store, Store::list_vms).await? {
            let mut vm = row.vm;
            let handles = read_handles(&self.vm_dir(&vm.id));
            match handles {
                Some(h) if self.infra.vmm.is_alive(&h.vmm) => {
                    info!(
                        vm = vm.name,
                        pid = h.vmm.pid,
                        "reconcile: vmm alive, keeping it"
                    );
                    self.handles
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .insert(vm.id.clone(), h);
                    if vm.state != VmState::Running {
                        vm.state = VmState::Running;
                        self.save(&vm).await?;
                    }
                }
                other => {
                    if other.is_some() || vm.state == VmState::Running {
                        info!(vm = vm.name, "reconcile: vmm gone, tearing down");
                        let mut quiet = vm.clone();
                        quiet.nat = false; // NAT is rebuilt once, below.
                        self.teardown(&quiet).await;
                    }
                    if vm.state == VmState::Running {
                        vm.state = VmState::Stopped;
                        vm.updated_at = self.infra.clock.now_rfc3339();
                        self.save(&vm).await?;
                    }
                }
            }
        }
        Ok(())
    }
}

/// Ports that are probably web servers, and their scheme.
fn web_scheme(port: u16) -> Option<&'static str> {
    match port {
        443 | 8443 => Some("https"),
        80 | 3000 | 3001 | 4000 | 4200 | 5000 | 5173 | 8000 | 8008 | 8080 | 8081 | 8888 | 9000 => {
            Some("http")
        }
        _ => None,
    }
}

/// Listening sockets as shown to users: `<name>.vm:port` when reachable from the host (not
/// loopback-only), and a URL for likely web ports. Sorted, duplicates (v4 + v6 wildcard)
/// merged.
pub fn port_infos(vm: &str, listeners: &[banger_host::Listener]) -> Vec<PortInfo> {
    let mut out: Vec<PortInfo> = Vec::new();
    for l in listeners {
        let reachable = !l.addr.is_loopback();
        let endpoint = reachable.then(|| format!("{vm}.vm:{}", l.port));
        let url = (reachable && l.proto == banger_host::Proto::Tcp)
            .then(|| web_scheme(l.port).map(|s| format!("{s}://{vm}.vm:{}/", l.port)))
            .flatten();
        let info = PortInfo {
            proto: l.proto.as_str().to_owned(),
            bind: l.addr.to_string(),
            port: l.port,
            endpoint,
            url,
        };
        // One row per (proto, port, reachability): `0.0.0.0` and `::` are the same service.
        if let Some(prev) = out.iter_mut().find(|p| {
            p.proto == info.proto
                && p.port == info.port
                && p.endpoint.is_some() == info.endpoint.is_some()
        }) {
            if prev.bind != info.bind && !prev.bind.contains(&info.bind) {
                prev.bind = format!("{},{}", prev.bind, info.bind);
            }
            continue;
        }
        out.push(info);
    }
    out.sort_by(|a, b| (a.proto.as_str(), a.port).cmp(&(b.proto.as_str(), b.port)));
    out
}

/// The managed ssh config for `vms` (name, address, host-key alias).
pub fn ssh_config_text(key: &Path, known_hosts: &Path, vms: &[(String, String, String)]) -> String {
    use std::fmt::Write as _;
    let mut out = String::from(
        "# Written by bangerd; rewritten on every vm create and delete. Do not edit.\n\
         # `banger ssh-config --install` includes it from ~/.ssh/config so `ssh NAME.vm` works.\n",
    );
    for (name, ip, alias) in vms {
        let _ = write!(
            out,
            "\nHost {name}.vm\n    HostName {ip}\n    HostKeyAlias {alias}\n"
        );
    }
    let _ = write!(
        out,
        "\nHost *.vm\n    User root\n    IdentityFile {}\n    IdentitiesOnly yes\n    \
         UserKnownHostsFile {}\n    StrictHostKeyChecking yes\n    LogLevel ERROR\n",
        key.display(),
        known_hosts.display()
    );
    out
}

/// Whether `vm` was last touched before `cutoff` (an unreadable time counts as fresh).
fn is_stale(vm: &VmRecord, cutoff: jiff::Timestamp) -> bool {
    vm.last_touched_at
        .parse::<jiff::Timestamp>()
        .is_ok_and(|t| t < cutoff)
}

/// `names` without repeats, first occurrence order kept.
fn unique_names(names: &[String]) -> Vec<&String> {
    let mut unique: Vec<&String> = Vec::new();
    for n in names {
        if !unique.contains(&n) {
            unique.push(n);
        }
    }
    unique
}

/// A lifecycle operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lifecycle {
    /// Boot a stopped VM.
    Start,
    /// Graceful stop.
    Stop,
    /// Stop then start.
    Restart,
    /// Immediate kill.
    Kill,
    /// Stop and remove.
    Delete,
}

fn set_mode(path: &Path, mode: u32) -> Result<(), RpcError> {
    use std::os::unix::fs::PermissionsExt as _;
    fs_err::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(|e| op_failed("work disk", e))
}

fn read_handles(dir: &Path) -> Option<Handles> {
    serde_json::from_str(&std::fs::read_to_string(dir.join("handles.json")).ok()?).ok()
}

/// The known_hosts alias a VM's host key is pinned under.
pub fn host_alias(id: &str) -> String {
    format!("banger-{id}")
}

/// What the guest waiter watches: the VMM's liveness and the operation's cancellation.
struct Watch {
    vmm: Arc<dyn banger_host::vmm::Vmm>,
    handle: VmmHandle,
    progress: Arc<Progress>,
}

impl WaitWatch for Watch {
    fn vmm_alive(&self) -> bool {
        self.vmm.is_alive(&self.handle)
    }
    fn cancelled(&self) -> bool {
        self.progress.is_cancelled()
    }
}

/// The error for a guest that did not become ready, with the console's last lines.
fn boot_error(e: &GuestError, console: &Path) -> RpcError {
    let text = std::fs::read_to_string(console).unwrap_or_default();
    let lines: Vec<&str> = text.trim().lines().rev().take(3).collect();
    let tail = lines.into_iter().rev().collect::<Vec<_>>().join(" | ");
    match e {
        GuestError::Cancelled => cancelled(),
        GuestError::VmmExited => op_failed("boot", format!("{e}; console: {tail}"))
            .with_hint("`banger vm logs NAME` shows the full console log"),
        GuestError::Timeout(_) => op_failed("boot timeout", format!("{e}; console: {tail}"))
            .with_hint("`banger vm logs NAME` shows the console; raise `boot_timeout_secs` in config.toml for slow hosts"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_boot_cmdline_adds_only_a_clean_absolute_init() {
        assert!(!boot_cmdline(None).contains("init="));
        assert!(
            boot_cmdline(Some("/usr/local/libexec/banger-init"))
                .ends_with(" init=/usr/local/libexec/banger-init")
        );
        assert!(!boot_cmdline(Some("relative")).contains("init="));
        assert!(!boot_cmdline(Some("/x rd.break")).contains("init="));
    }

    #[test]
    fn test_port_infos_endpoints_and_links() {
        use banger_host::Listener;
        let l = |proto: &str, addr: &str, port| Listener {
            proto: if proto == "tcp" {
                banger_host::Proto::Tcp
            } else {
                banger_host::Proto::Udp
            },
            addr: addr.parse().unwrap(),
            port,
        };
        let got = port_infos(
            "web",
            &[
                l("tcp", "0.0.0.0", 8080),
                l("tcp", "::", 8080),
                l("tcp", "127.0.0.1", 5432),
                l("tcp", "0.0.0.0", 22),
                l("udp", "0.0.0.0", 68),
            ],
        );
        let rows: Vec<(String, u16, Option<String>, Option<String>)> = got
            .into_iter()
            .map(|p| (p.proto, p.port, p.endpoint, p.url))
            .collect();
        assert_eq!(
            rows,
            [
                ("tcp".into(), 22, Some("web.vm:22".into()), None),
                ("tcp".into(), 5432, None, None),
                (
                    "tcp".into(),
                    8080,
                    Some("web.vm:8080".into()),
                    Some("http://web.vm:8080/".into())
                ),
                ("udp".into(), 68, Some("web.vm:68".into()), None),
            ]
        );
    }

    #[test]
    fn test_validate_name() {
        for ok in ["a", "web-1", "x".repeat(63).as_str()] {
            assert!(validate_name(ok).is_ok(), "{ok}");
        }
        for bad in ["", "-a", "a-", "Web", "a_b", "a.b", &"x".repeat(64)] {
            assert!(validate_name(bad).is_err(), "{bad}");
        }
        assert!(validate_name(&generate_name()).is_ok());
    }

    #[test]
    fn test_parse_size() {
        assert_eq!(parse_size("8G").unwrap(), 8 << 30);
        assert_eq!(parse_size("512M").unwrap(), 512 << 20);
        assert_eq!(parse_size("2GiB").unwrap(), 2 << 30);
        assert_eq!(parse_size("1.5G").unwrap(), 3 << 29);
        assert!(parse_size("lots").is_err());
        assert!(parse_size("8Q").is_err());
    }

    #[test]
    fn test_resolve_sizing_sources_and_limits() {
        let none = VmCreateParams::default();
        let d = banger_config::VmDefaults::default();
        let s = resolve_sizing(&none, &d, 2, 24_000).unwrap();
        assert_eq!(s.vcpu, (1, ValueSource::Builtin));
        assert_eq!(s.memory_mib, (3000, ValueSource::Auto));
        assert_eq!(s.disk_bytes, (8 << 30, ValueSource::Builtin));
        let s = resolve_sizing(&none, &d, 32, 128_000).unwrap();
        assert_eq!(s.vcpu, (4, ValueSource::Auto));
        assert_eq!(s.memory_mib, (8192, ValueSource::Auto));
        let cfg = banger_config::VmDefaults {
            vcpu: Some(2),
            memory_mib: Some(1024),
            disk_size: Some("2G".into()),
        };
        let s = resolve_sizing(&none, &cfg, 2, 24_000).unwrap();
        assert_eq!(
            (s.vcpu.1, s.memory_mib.1, s.disk_bytes.1),
            (
                ValueSource::Config,
                ValueSource::Config,
                ValueSource::Config
            )
        );
        let flags = VmCreateParams {
            vcpu: Some(0),
            ..Default::default()
        };
        assert!(resolve_sizing(&flags, &d, 2, 24_000).is_err());
        let flags = VmCreateParams {
            memory_mib: Some(1),
            ..Default::default()
        };
        assert!(resolve_sizing(&flags, &d, 2, 24_000).is_err());
    }
}
