//! Snapshots: `vm snapshot` (pause, VMM state + memory, disk copies, resume), starting VMs
//! from one (`vm create --from`, `vm fork`, warm-start templates) with their own identity,
//! suspend/resume, and `snapshot list/show/rm`.
//!
//! Files: `<state>/snapshots/<id>/{state, memory, root.ext4, work.ext4}`, written under
//! `.partial-<id>` and renamed once complete; the row is inserted after the rename, so a
//! kill leaves either nothing listed (reconcile removes the directory) or a complete
//! snapshot. A suspended VM keeps its memory state in `<vm dir>/suspend-<id>/` (its disks
//! stay where they are).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use banger_api::types::{
    SizingSources, SnapshotInfo, ValueSource, VmCreateParams, VmForkParams, VmForkResult, VmInfo,
    VmState,
};
use banger_host::disk;
use banger_host::guest::{GuestFile, Identity};
use banger_store::{ImageRecord, KernelRecord, SnapshotRecord, Store, VmRecord};
use tracing::{info, warn};

use super::lifecycle::Restore;
use super::provision::{hosts_file, network_env};
use super::settings::{Sizing, validate_labels, validate_name};
use super::{VmError, VmService};
use crate::progress::Progress;
use crate::services::network::mac_for;
use crate::services::support::{blocking, chain, new_id, with_store};

/// Most children one fork makes.
const MAX_FORK: u32 = 16;

/// Where a copy of a snapshot takes its files from.
#[derive(Debug, Clone)]
pub(super) enum Source {
    /// A stored snapshot's directory: copied.
    Stored,
    /// A fork's slot for this child: moved into place.
    Slot {
        /// VMM state and memory.
        state: PathBuf,
        /// `root.ext4` and `work.ext4`.
        disks: PathBuf,
    },
}

/// Bytes of a snapshot's memory file.
fn snap_memory_len(s: &SnapshotRecord) -> u64 {
    s.memory_mib << 20
}

/// A fork's own snapshot, one slot per child: `<slot>/{state, memory}` in shared memory
/// (`/dev/shm/banger-<uid>/fork-<daemon instance>-<id>/`, so a child's memory moves into
/// place instead of being copied) and `<slot>/{root,work}.ext4` under
/// `<state>/snapshots/.fork-<id>/` (same filesystem as the VM directories). Removed when
/// the fork ends; after a kill, the next start's sweep removes them.
struct ForkFiles {
    state: PathBuf,
    disks: PathBuf,
}

impl ForkFiles {
    fn new(snapshots: &Path, instance: &str, id: &str) -> Self {
        let disks = snapshots.join(format!(".fork-{id}"));
        let state = banger_host::vmm::qemu::shared_memory_dir().map_or_else(
            || disks.clone(),
            |d| d.join(format!("fork-{instance}-{id}")),
        );
        ForkFiles { state, disks }
    }

    fn state(&self, slot: usize) -> PathBuf {
        self.state.join(slot.to_string())
    }

    /// Makes the shared-memory directory the state goes in, owner-only (guest memory is
    /// written there).
    fn prepare(&self) -> Result<(), VmError> {
        match self.state.parent() {
            Some(dir) if self.state != self.disks => {
                banger_host::vmm::qemu::make_private_dir(dir).map_err(VmError::SnapshotFiles)
            }
            _ => Ok(()),
        }
    }

    fn disks(&self, slot: usize) -> PathBuf {
        self.disks.join(slot.to_string())
    }

    /// Fills slots 1.. from slot 0 (state hard-linked, memory and disks copied, in
    /// parallel) for `count` children. A disk that is an overlay on frozen layers copies in
    /// no time; only a raw one (no layers here) costs its size.
    async fn fill(
        &self,
        count: u32,
        memory_len: u64,
        runner: Arc<dyn banger_host::CommandRunner>,
    ) -> Result<(), VmError> {
        let slots = usize::try_from(count).unwrap_or(1);
        if slots <= 1 {
            return Ok(());
        }
        let (state, disks) = (self.state.clone(), self.disks.clone());
        blocking(move || {
            let io = VmError::SnapshotFiles;
            let (s0, d0) = (state.join("0"), disks.join("0"));
            let disk_names: Vec<String> = super::disks::snapshot_disks(&d0)
                .into_iter()
                .map(|(_, f)| f)
                .collect();
            let mut jobs: Vec<(PathBuf, PathBuf, SlotFile)> = Vec::new();
            for i in 1..slots {
                let (si, di) = (state.join(i.to_string()), disks.join(i.to_string()));
                fs_err::create_dir_all(&si).map_err(io)?;
                fs_err::create_dir_all(&di).map_err(io)?;
                for e in fs_err::read_dir(&s0).map_err(io)? {
                    let name = e.map_err(io)?.file_name();
                    let kind = if disk_names.iter().any(|d| name == d.as_str()) {
                        continue;
                    } else if name == banger_host::vmm::qemu::SNAPSHOT_MEMORY {
                        SlotFile::Memory
                    } else {
                        SlotFile::Small
                    };
                    jobs.push((s0.join(&name), si.join(&name), kind));
                }
                for name in &disk_names {
                    jobs.push((d0.join(name), di.join(name), SlotFile::Disk));
                }
            }
            std::thread::scope(|scope| {
                let running: Vec<_> = jobs
                    .iter()
                    .map(|(from, to, kind)| {
                        let runner = &runner;
                        scope.spawn(move || -> Result<(), VmError> {
                            match kind {
                                SlotFile::Disk => disk::cow_copy(runner.as_ref(), from, to)
                                    .map_err(VmError::SnapshotDisk),
                                SlotFile::Memory => {
                                    banger_host::vmm::qemu::sparse_copy(from, to, memory_len)
                                        .map_err(io)
                                }
                                SlotFile::Small => fs_err::hard_link(from, to)
                                    .or_else(|_| fs_err::copy(from, to).map(drop))
                                    .map_err(io),
                            }
                        })
                    })
                    .collect();
                running.into_iter().try_for_each(|t| {
                    t.join()
                        .map_err(|_| io(std::io::Error::other("a fork copy panicked")))?
                })
            })
        })
        .await
    }

    fn remove(&self) {
        let _ = fs_err::remove_dir_all(&self.state);
        let _ = fs_err::remove_dir_all(&self.disks);
    }
}

/// How a fork's slot file is filled from slot 0's.
#[derive(Debug, Clone, Copy)]
enum SlotFile {
    /// A disk: copied (a reflink, or a few hundred KiB for an overlay on layers).
    Disk,
    /// Guest memory: copied sparsely.
    Memory,
    /// VMM state: hard-linked (never written).
    Small,
}

/// What a restore must match: the kernel, the image, the backend, the sizes and this
/// build (its agent is in the snapshot's memory).
pub(super) fn restore_key(
    kernel: &KernelRecord,
    image: &ImageRecord,
    vmm: &str,
    (vcpu, memory_mib, disk_bytes): (u32, u64, u64),
) -> String {
    format!(
        "kernel={}:{}:{} image={}:{}:{} vmm={vmm} vcpu={} memory={} disk={} banger={}:{}",
        kernel.id,
        kernel.sha256,
        kernel.created_at,
        image.id,
        image.digest.as_deref().unwrap_or("-"),
        image.created_at,
        vcpu,
        memory_mib,
        disk_bytes,
        banger_api::VERSION,
        banger_api::COMMIT,
    )
}

/// Bytes a directory's files take on disk (sparse files count what they hold).
fn du(dir: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt as _;
    std::fs::read_dir(dir).map_or(0, |d| {
        d.flatten()
            .filter_map(|e| e.metadata().ok())
            .map(|m| m.blocks() * 512)
            .sum()
    })
}

fn random_hex(bytes: usize) -> String {
    let mut out = String::new();
    while out.len() < bytes * 2 {
        out.push_str(&uuid::Uuid::new_v4().simple().to_string());
    }
    out.truncate(bytes * 2);
    out
}

impl VmService {
    fn snapshots_dir(&self) -> PathBuf {
        self.infra.layout.state_dir.join("snapshots")
    }

    /// A snapshot's directory.
    pub(super) fn snapshot_dir(&self, id: &str) -> PathBuf {
        self.snapshots_dir().join(id)
    }

    pub(super) async fn get_snapshot(&self, name: &str) -> Result<SnapshotRecord, VmError> {
        let key = name.to_owned();
        with_store(&self.infra.store, move |s| s.get_snapshot(&key))
            .await?
            .ok_or_else(|| VmError::SnapshotNotFound(name.to_owned()))
    }

    /// Running VMs whose memory maps snapshot `id`, and VMs being created from it.
    async fn snapshot_users(&self, id: &str) -> Result<Vec<String>, VmError> {
        let rows = with_store(&self.infra.store, Store::list_vms).await?;
        Ok(rows
            .into_iter()
            .filter(|r| {
                let live = r.vm.state == VmState::Running || r.vm.spec.get("creating").is_some();
                live && r.vm.spec.get("memory_from").and_then(|v| v.as_str()) == Some(id)
            })
            .map(|r| r.vm.name)
            .collect())
    }

    async fn snapshot_info(&self, s: SnapshotRecord) -> Result<SnapshotInfo, VmError> {
        let image_id = s.image_id.clone();
        let image = with_store(&self.infra.store, move |st| st.get_image(&image_id))
            .await?
            .map_or_else(|| s.image_id.clone(), |i| i.name);
        let mut used_by = self.snapshot_users(&s.id).await?;
        used_by.sort();
        Ok(SnapshotInfo {
            id: s.id,
            name: s.name,
            kind: s.kind,
            source_vm: s.source_vm,
            image,
            vcpu: s.vcpu,
            memory_mib: s.memory_mib,
            disk_bytes: s.disk_bytes,
            vmm: s.vmm,
            size_bytes: s.size_bytes,
            created_at: s.created_at,
            used_by,
        })
    }

    /// Snapshots and templates, oldest first.
    pub async fn snapshot_list(&self) -> Result<Vec<SnapshotInfo>, VmError> {
        let all = with_store(&self.infra.store, Store::list_snapshots).await?;
        let mut out = Vec::with_capacity(all.len());
        for s in all {
            out.push(self.snapshot_info(s).await?);
        }
        Ok(out)
    }

    /// One snapshot.
    pub async fn snapshot_show(&self, name: &str) -> Result<SnapshotInfo, VmError> {
        let s = self.get_snapshot(name).await?;
        self.snapshot_info(s).await
    }

    /// Removes a snapshot; refused while a running VM maps its memory. The row goes first
    /// (a kill after it leaves a directory reconcile removes).
    pub async fn snapshot_rm(&self, name: &str) -> Result<SnapshotInfo, VmError> {
        let _reserve = self.create_reservation.lock().await;
        let s = self.get_snapshot(name).await?;
        let info = self.snapshot_info(s.clone()).await?;
        if !info.used_by.is_empty() {
            return Err(VmError::SnapshotInUse {
                name: s.name,
                users: format!("running vm(s) {}", info.used_by.join(", ")),
            });
        }
        let id = s.id.clone();
        with_store(&self.infra.store, move |st| st.delete_snapshot(&id)).await?;
        let _ = fs_err::remove_dir_all(self.snapshot_dir(&s.id));
        self.collect_layers().await;
        Ok(info)
    }

    /// `vm snapshot`: under the VM's lock.
    pub async fn snapshot(
        &self,
        name: &str,
        snap: Option<String>,
    ) -> Result<SnapshotInfo, VmError> {
        let (_guard, mut row) = self.lock_vm(name).await?;
        let rec = self.snapshot_locked(&mut row.vm, snap, "snapshot").await?;
        self.snapshot_info(rec).await
    }

    /// Pauses running VM `vm`, writes its VMM state and memory into `state_dir` and takes
    /// its disks into `disks_dir` (frozen as layers, or copied side by side: one instant,
    /// `take_disks`), then resumes it whatever happened. Holds the VM's lock (caller); a
    /// VM whose disks were layered has its new files in `vm` and its row.
    async fn capture(
        &self,
        vm: &mut VmRecord,
        state_dir: PathBuf,
        disks_dir: PathBuf,
    ) -> Result<(), VmError> {
        if !self.infra.vmm.supports_snapshots() {
            return Err(VmError::SnapshotUnsupported(self.infra.vmm.name()));
        }
        let handle = self
            .handles
            .get(&vm.id)
            .filter(|h| self.infra.vmm.is_alive(&h.vmm))
            .ok_or_else(|| VmError::NotRunning(vm.name.clone()))?;
        let kernel = self.kernel_for(vm).await?;
        let ip = vm
            .guest_ip
            .parse()
            .map_err(|_| VmError::CorruptGuestIp(vm.guest_ip.clone()))?;
        let vmm = Arc::clone(&self.infra.vmm);
        let (v, h, dirs) = (
            Arc::clone(&vmm),
            handle.vmm.clone(),
            [state_dir.clone(), disks_dir.clone()],
        );
        let paused = blocking(move || -> Result<std::time::Instant, VmError> {
            for d in &dirs {
                fs_err::create_dir_all(d).map_err(VmError::SnapshotFiles)?;
            }
            let paused = std::time::Instant::now();
            v.pause(&h).map_err(VmError::Snapshot)?;
            Ok(paused)
        })
        .await?;
        crate::crashpoint::hit("snapshot:paused");
        let taken = async {
            // Layered disks before the device state (which then names the VM's new files);
            // copies beside it.
            let layered = match vmm.overlay_tool() {
                Some(tool) => self.layer_disks(vm, &handle.vmm, &disks_dir, tool).await?,
                None => false,
            };
            let spec = self.vm_spec(vm, &kernel, ip);
            let (v, h) = (Arc::clone(&vmm), handle.vmm.clone());
            let state =
                blocking(move || v.snapshot(&h, &spec, &state_dir).map_err(VmError::Snapshot));
            if layered {
                return state.await;
            }
            let (state, copies) = tokio::join!(state, self.copy_disks(vm, &disks_dir));
            state.and(copies)
        }
        .await;
        let h = handle.vmm.clone();
        let resumed = blocking(move || vmm.resume(&h).map_err(VmError::Snapshot)).await;
        tracing::debug!(
            vm = vm.name,
            paused_ms = u64::try_from(paused.elapsed().as_millis()).unwrap_or(u64::MAX),
            "snapshot captured"
        );
        taken?;
        resumed
    }

    /// The record of a snapshot `id` of `vm` (not stored).
    async fn snapshot_record(
        &self,
        vm: &VmRecord,
        (id, name, kind): (String, String, &str),
        size_bytes: u64,
    ) -> Result<SnapshotRecord, VmError> {
        let kernel = self.kernel_for(vm).await?;
        let image_id = vm.image_id.clone();
        let image = with_store(&self.infra.store, move |s| s.get_image(&image_id))
            .await?
            .ok_or(VmError::StartMissing("image is gone"))?;
        let mut spec_json = serde_json::json!({});
        for k in ["init", "labels", "kernel"] {
            if let Some(v) = vm.spec.get(k) {
                spec_json[k] = v.clone();
            }
        }
        if let Some(w) = &vm.workspace {
            spec_json["workspace"] = w.clone();
        }
        Ok(SnapshotRecord {
            id,
            name,
            kind: kind.to_owned(),
            source_vm: vm.name.clone(),
            image_id: vm.image_id.clone(),
            vcpu: vm.vcpu,
            memory_mib: vm.memory_mib,
            disk_bytes: vm.disk_bytes,
            vmm: self.infra.vmm.name(),
            key: restore_key(
                &kernel,
                &image,
                &self.infra.vmm.name(),
                (vm.vcpu, vm.memory_mib, vm.disk_bytes),
            ),
            spec: spec_json,
            size_bytes,
            created_at: self.infra.clock.now_rfc3339(),
        })
    }

    /// Snapshots running VM `vm` into a new snapshot directory and records it. Holds the
    /// VM's lock (caller).
    pub(super) async fn snapshot_locked(
        &self,
        vm: &mut VmRecord,
        name: Option<String>,
        kind: &str,
    ) -> Result<SnapshotRecord, VmError> {
        if !self.infra.vmm.supports_snapshots() {
            return Err(VmError::SnapshotUnsupported(self.infra.vmm.name()));
        }
        let name = match name {
            Some(n) => {
                validate_name(&n)?;
                n
            }
            None => format!("{}-{}", vm.name, &new_id()[..6]),
        };
        let taken = name.clone();
        if with_store(&self.infra.store, move |s| s.snapshot_name_taken(&taken)).await? {
            return Err(VmError::SnapshotNameTaken(name));
        }
        let id = new_id();
        let staging = self.snapshots_dir().join(format!(".partial-{id}"));
        let final_dir = self.snapshot_dir(&id);
        let written = match self.capture(vm, staging.clone(), staging.clone()).await {
            Ok(()) => {
                let size = du(&staging);
                fs_err::rename(&staging, &final_dir)
                    .map(|()| size)
                    .map_err(VmError::SnapshotFiles)
            }
            Err(e) => Err(e),
        };
        let size_bytes = match written {
            Ok(size) => size,
            Err(e) => {
                let _ = fs_err::remove_dir_all(&staging);
                self.collect_layers().await;
                return Err(e);
            }
        };
        crate::crashpoint::hit("snapshot:row");
        let rec = match self.snapshot_record(vm, (id, name, kind), size_bytes).await {
            Ok(rec) => rec,
            Err(e) => {
                let _ = fs_err::remove_dir_all(&final_dir);
                return Err(e);
            }
        };
        let row = rec.clone();
        if let Err(e) = with_store(&self.infra.store, move |s| s.insert_snapshot(&row)).await {
            let _ = fs_err::remove_dir_all(&final_dir);
            return Err(e.into());
        }
        info!(vm = vm.name, snapshot = rec.name, kind, "snapshot taken");
        Ok(rec)
    }

    /// The identity VM `vm` takes when it starts as a copy of a snapshot.
    fn identity(&self, vm: &VmRecord, host_key: (String, String)) -> Identity {
        let cfg = &self.infra.config;
        let ip: std::net::Ipv4Addr = vm
            .guest_ip
            .parse()
            .unwrap_or(std::net::Ipv4Addr::UNSPECIFIED);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        let file = |path: &str, mode: u32, content: String| GuestFile {
            path: path.into(),
            mode,
            content,
        };
        Identity {
            hostname: vm.name.clone(),
            iface: "eth0".into(),
            mac: mac_for(ip),
            address: format!("{}/{}", vm.guest_ip, cfg.cidr.prefix_len()),
            gateway: cfg.bridge_ip.to_string(),
            unix_secs: now.as_secs(),
            unix_nanos: now.subsec_nanos(),
            entropy: random_hex(64),
            files: vec![
                file("/etc/hostname", 0o644, format!("{}\n", vm.name)),
                file("/etc/hosts", 0o644, hosts_file(vm)),
                file("/etc/banger/network.env", 0o644, network_env(vm, cfg)),
                file("/etc/ssh/ssh_host_ed25519_key", 0o600, host_key.0),
                file("/etc/ssh/ssh_host_ed25519_key.pub", 0o644, host_key.1),
                file("/etc/machine-id", 0o444, format!("{}\n", random_hex(16))),
            ],
        }
    }

    /// Creates a VM as a copy of snapshot `snap` (`how`: `snapshot NAME` or `template
    /// NAME`): its disks, a new name, address, tap, host key and identity.
    pub(super) async fn create_from(
        &self,
        p: VmCreateParams,
        snap: SnapshotRecord,
        (how, source): (String, Source),
        progress: &Arc<Progress>,
    ) -> Result<VmInfo, VmError> {
        if let Some(name) = &p.name {
            validate_name(name)?;
        }
        validate_labels(&p.labels)?;
        let mismatch = |why: String| VmError::SnapshotMismatch {
            name: snap.name.clone(),
            why,
        };
        if !self.infra.vmm.supports_snapshots() {
            return Err(VmError::SnapshotUnsupported(self.infra.vmm.name()));
        }
        if snap.vmm != self.infra.vmm.name() {
            return Err(mismatch(format!(
                "it was taken on {} and this host runs {}",
                snap.vmm,
                self.infra.vmm.name()
            )));
        }
        if p.vcpu.is_some_and(|v| v != snap.vcpu) {
            return Err(mismatch(format!("it has {} vCPU(s)", snap.vcpu)));
        }
        if p.memory_mib.is_some_and(|m| m != snap.memory_mib) {
            return Err(mismatch(format!(
                "it has {} MiB of memory",
                snap.memory_mib
            )));
        }
        if p.disk_size.is_some() {
            return Err(mismatch("its work disk comes with it".into()));
        }
        if p.nat {
            self.network.check_nat_possible()?;
        }
        if progress.stage_names().last().map(String::as_str) != Some("image") {
            progress.stage("image")?;
        }
        let image_id = snap.image_id.clone();
        let image = with_store(&self.infra.store, move |s| s.get_image(&image_id))
            .await?
            .ok_or(VmError::StartMissing("image is gone"))?;
        let kernel = self.image_kernel(&image).await?;
        progress.stage("reserve")?;
        let sizing = Sizing {
            vcpu: (snap.vcpu, ValueSource::Snapshot),
            memory_mib: (snap.memory_mib, ValueSource::Snapshot),
            disk_bytes: (snap.disk_bytes, ValueSource::Snapshot),
        };
        let mut labels = snap
            .spec
            .get("labels")
            .and_then(|l| serde_json::from_value(l.clone()).ok())
            .unwrap_or_default();
        if !p.labels.is_empty() {
            labels = p.labels.clone();
        }
        let p = VmCreateParams { labels, ..p };
        let mut vm = self
            .reserve(&p, &sizing, &image, &kernel, Some(&snap.id))
            .await?;
        let lock = self.vm_lock(&vm.id);
        let _guard = lock.lock().await;
        if let Some(spec) = vm.spec.as_object_mut() {
            spec.insert(
                "sizing".into(),
                serde_json::to_value(SizingSources {
                    vcpu: ValueSource::Snapshot,
                    memory_mib: ValueSource::Snapshot,
                    disk: ValueSource::Snapshot,
                })
                .unwrap_or_default(),
            );
        }
        vm.workspace = snap.spec.get("workspace").cloned();
        info!(
            vm = vm.name,
            ip = vm.guest_ip,
            from = how,
            "creating vm from a snapshot"
        );
        let (state_dir, disks_dir, owned) = match source {
            Source::Stored => {
                let dir = self.snapshot_dir(&snap.id);
                (dir.clone(), dir, false)
            }
            Source::Slot { state, disks } => (state, disks, true),
        };
        super::disks::set_disk_files(&mut vm.spec, &super::disks::snapshot_disks(&disks_dir));
        let result = async {
            let host_key = self
                .provision_restore(&vm, &image, (disks_dir, owned), progress)
                .await?;
            let restore = Restore {
                dir: state_dir,
                identity: Some(self.identity(&vm, host_key)),
                label: how,
                memory_from: snap.id.clone(),
                owned,
            };
            self.start_locked(&mut vm, &kernel, progress, Some(restore))
                .await?;
            progress.check().map_err(VmError::from)
        }
        .await;
        if let Err(err) = result {
            return Err(self.undo_create(vm, err, false, progress).await);
        }
        crate::crashpoint::hit("stage:created");
        self.finish_create(&mut vm).await?;
        self.sync_ssh_config().await;
        self.show(&vm.id).await
    }

    /// `vm fork`: snapshots a running VM (under its lock), then starts `count` children
    /// from it concurrently. The snapshot is the fork's own unless `keep_snapshot`: its
    /// files are made once per child (memory in shared memory, disks beside the snapshots)
    /// and each child moves its set into place, so a fork copies the parent's disks and
    /// memory once per child and lists no snapshot. All or nothing: when one child fails,
    /// the others are deleted and the error returned.
    pub async fn fork(&self, p: VmForkParams) -> Result<VmForkResult, VmError> {
        if !(1..=MAX_FORK).contains(&p.count) {
            return Err(VmError::ForkCount(p.count));
        }
        let names: Vec<Option<String>> = match (&p.child_name, p.count) {
            (Some(n), 1) => vec![Some(n.clone())],
            (Some(n), k) => (1..=k).map(|i| Some(format!("{n}-{i}"))).collect(),
            (None, k) => (0..k).map(|_| None).collect(),
        };
        for n in names.iter().flatten() {
            validate_name(n)?;
        }
        if p.keep_snapshot {
            let snap = {
                let (_guard, mut row) = self.lock_vm(&p.name).await?;
                self.snapshot_locked(&mut row.vm, None, "snapshot").await?
            };
            let how = format!("snapshot {}", snap.name);
            let vms = self
                .fork_children(&p, names, &snap, |_| (how.clone(), Source::Stored))
                .await?;
            return Ok(VmForkResult {
                snapshot: Some(self.snapshot_info(snap).await?),
                vms,
            });
        }
        let id = new_id();
        let files = ForkFiles::new(
            &self.snapshots_dir(),
            &banger_host::cgroup::instance_name(&self.infra.layout.state_dir),
            &id,
        );
        let made = async {
            files.prepare()?;
            let (_guard, mut row) = self.lock_vm(&p.name).await?;
            self.capture(&mut row.vm, files.state(0), files.disks(0))
                .await?;
            let how = format!("fork of {}", row.vm.name);
            let snap = self
                .snapshot_record(&row.vm, (id.clone(), how.clone(), "fork"), 0)
                .await?;
            Ok::<_, VmError>((snap, how))
        }
        .await;
        let made = match made {
            Ok(m) => files
                .fill(
                    p.count,
                    snap_memory_len(&m.0),
                    Arc::clone(&self.infra.runner),
                )
                .await
                .map(|()| m),
            Err(e) => Err(e),
        };
        let (snap, how) = match made {
            Ok(m) => m,
            Err(e) => {
                files.remove();
                self.collect_layers().await;
                return Err(e);
            }
        };
        crate::crashpoint::hit("fork:slots");
        let vms = self
            .fork_children(&p, names, &snap, |i| {
                let slot = Source::Slot {
                    state: files.state(i),
                    disks: files.disks(i),
                };
                (how.clone(), slot)
            })
            .await;
        files.remove();
        if vms.is_err() {
            self.collect_layers().await;
        }
        Ok(VmForkResult {
            snapshot: None,
            vms: vms?,
        })
    }

    /// Starts one child of `snap` per name, concurrently (`source(i)`: where child `i`'s
    /// files come from); when one fails, the others are deleted.
    async fn fork_children(
        &self,
        p: &VmForkParams,
        names: Vec<Option<String>>,
        snap: &SnapshotRecord,
        source: impl Fn(usize) -> (String, Source),
    ) -> Result<Vec<VmInfo>, VmError> {
        let progress: Vec<Arc<Progress>> = names.iter().map(|_| Arc::default()).collect();
        let children = names
            .into_iter()
            .zip(&progress)
            .enumerate()
            .map(|(i, (name, pr))| {
                let params = VmCreateParams {
                    name,
                    nat: p.nat,
                    ..VmCreateParams::default()
                };
                self.create_from(params, snap.clone(), source(i), pr)
            });
        let results = futures::future::join_all(children).await;
        let mut vms = Vec::new();
        let mut first_err = None;
        for r in results {
            match r {
                Ok(vm) => vms.push(vm),
                Err(e) => {
                    first_err.get_or_insert(e);
                }
            }
        }
        if let Some(e) = first_err {
            warn!(
                vm = p.name,
                "fork failed, removing its children: {}",
                chain(&e)
            );
            for vm in &vms {
                let _ = self.lifecycle(&vm.id, super::Lifecycle::Delete).await;
            }
            return Err(e);
        }
        Ok(vms)
    }

    /// The kernel of `image`.
    async fn image_kernel(&self, image: &ImageRecord) -> Result<KernelRecord, VmError> {
        let kid = image
            .kernel_id
            .clone()
            .ok_or(VmError::StartMissing("image has no kernel"))?;
        with_store(&self.infra.store, move |s| s.get_kernel(&kid))
            .await?
            .ok_or(VmError::StartMissing("kernel is gone"))
    }

    /// The image's warm-start template for a VM sized like `vm` would be (its key), when
    /// there is one.
    pub(super) async fn template_for(
        &self,
        key: String,
    ) -> Result<Option<SnapshotRecord>, VmError> {
        let all = with_store(&self.infra.store, Store::list_snapshots).await?;
        Ok(all
            .into_iter()
            .find(|s| s.kind == "template" && s.key == key))
    }

    /// Whether creates may use (and make) templates.
    pub(super) fn warm_starts(&self) -> bool {
        self.infra.config.warm_start && self.infra.vmm.supports_snapshots()
    }

    /// After a cold create: snapshot the fresh VM as its image's template (best effort; a
    /// concurrent create may have made it first). Holds the VM's lock (caller).
    pub(super) async fn make_template(&self, vm: &mut VmRecord, image: &ImageRecord, key: &str) {
        if matches!(self.template_for(key.to_owned()).await, Ok(Some(_))) {
            return;
        }
        let name = format!(
            "template-{}-{}",
            image.name.chars().take(40).collect::<String>(),
            &new_id()[..8]
        );
        match self.snapshot_locked(vm, Some(name), "template").await {
            Ok(t) => info!(
                image = image.name,
                template = t.name,
                "warm-start template made"
            ),
            Err(e) => warn!(image = image.name, "no warm-start template: {}", chain(&e)),
        }
    }

    /// Suspend: pause, memory state into `<vm dir>/suspend-<id>`, then stop. Holds the
    /// VM's lock (caller).
    pub(super) async fn suspend_locked(&self, vm: &mut VmRecord) -> Result<(), VmError> {
        if !self.infra.vmm.supports_snapshots() {
            return Err(VmError::SnapshotUnsupported(self.infra.vmm.name()));
        }
        let handle = self
            .handles
            .get(&vm.id)
            .filter(|h| self.infra.vmm.is_alive(&h.vmm))
            .ok_or_else(|| VmError::NotRunning(vm.name.clone()))?;
        let kernel = self.kernel_for(vm).await?;
        let ip = vm
            .guest_ip
            .parse()
            .map_err(|_| VmError::CorruptGuestIp(vm.guest_ip.clone()))?;
        let spec = self.vm_spec(vm, &kernel, ip);
        let dir_name = format!("suspend-{}", &new_id()[..12]);
        let staging = self.vm_dir(&vm.id).join(format!(".partial-{dir_name}"));
        let final_dir = self.vm_dir(&vm.id).join(&dir_name);
        let vmm = Arc::clone(&self.infra.vmm);
        let (st, fin) = (staging.clone(), final_dir);
        let saved = blocking(move || -> Result<(), VmError> {
            fs_err::create_dir_all(&st).map_err(VmError::SnapshotFiles)?;
            vmm.pause(&handle.vmm).map_err(VmError::Snapshot)?;
            if let Err(e) = vmm.snapshot(&handle.vmm, &spec, &st) {
                let _ = vmm.resume(&handle.vmm);
                return Err(VmError::Snapshot(e));
            }
            fs_err::rename(&st, &fin).map_err(VmError::SnapshotFiles)
        })
        .await;
        if let Err(e) = saved {
            let _ = fs_err::remove_dir_all(&staging);
            return Err(e);
        }
        crate::crashpoint::hit("suspend:teardown");
        self.teardown(vm).await;
        if let Some(spec) = vm.spec.as_object_mut() {
            spec.insert("suspended".into(), dir_name.clone().into());
        }
        vm.state = VmState::Stopped;
        vm.updated_at = self.infra.clock.now_rfc3339();
        self.save(vm).await?;
        self.drop_suspend_images(vm, Some(&dir_name));
        Ok(())
    }

    /// Where a start of `vm` resumes from: its suspended memory state, if any is there.
    pub(super) fn resume_point(&self, vm: &VmRecord) -> Option<Restore> {
        let name = vm.spec.get("suspended")?.as_str()?;
        let dir = self.vm_dir(&vm.id).join(name);
        dir.join(banger_host::vmm::qemu::SNAPSHOT_STATE)
            .is_file()
            .then(|| Restore {
                dir,
                identity: None,
                label: "resume".into(),
                memory_from: "suspend".into(),
                owned: false,
            })
    }

    /// Removes `vm`'s suspend directories other than `keep` (once no VMM maps them).
    pub(super) fn drop_suspend_images(&self, vm: &VmRecord, keep: Option<&str>) {
        let Ok(entries) = std::fs::read_dir(self.vm_dir(&vm.id)) else {
            return;
        };
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let ours = name.starts_with("suspend-") || name.starts_with(".partial-suspend-");
            if ours && keep != Some(name.as_str()) {
                let _ = fs_err::remove_dir_all(e.path());
            }
        }
    }

    /// At startup: partial snapshot directories, directories no row owns and the files of
    /// forks this daemon was killed in the middle of are removed.
    pub(super) async fn sweep_snapshots(&self) {
        let instance = banger_host::cgroup::instance_name(&self.infra.layout.state_dir);
        let prefix = format!("fork-{instance}-");
        if let Some(shm) = banger_host::vmm::qemu::shared_memory_dir()
            && let Ok(entries) = std::fs::read_dir(shm)
        {
            for e in entries.flatten() {
                if e.file_name().to_string_lossy().starts_with(&prefix) {
                    info!(dir = %e.path().display(), "removing an interrupted fork's files");
                    let _ = fs_err::remove_dir_all(e.path());
                }
            }
        }
        let Ok(rows) = with_store(&self.infra.store, Store::list_snapshots).await else {
            return;
        };
        let known: std::collections::HashSet<String> = rows.into_iter().map(|s| s.id).collect();
        let Ok(entries) = std::fs::read_dir(self.snapshots_dir()) else {
            return;
        };
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if !known.contains(&name) {
                info!(dir = name, "removing a snapshot directory no row owns");
                let _ = fs_err::remove_dir_all(e.path());
            }
        }
    }
}
