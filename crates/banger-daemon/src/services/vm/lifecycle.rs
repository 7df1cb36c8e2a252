//! Lifecycle: start (boot), stop, restart, kill, delete, and the teardown every one of them
//! ends with. Each runs under the VM's lock; several VMs run concurrently.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use banger_api::types::{VmInfo, VmState};
use banger_host::GuestError;
use banger_host::cgroup::Limits;
use banger_host::guest::Identity;
use banger_host::guest::WaitWatch;
use banger_host::vmm::{Drive, NetSpec, VmSpec, VmmHandle, VsockSpec};
use banger_store::{KernelRecord, VmRecord, VmRow};
use tracing::{info, warn};

use super::{BootFailure, Handles, VmError, VmService, vm_info};
use crate::progress::Progress;
use crate::services::network::mac_for;
use crate::services::support::{Cancelled, blocking, chain, lock, unique_names, with_store};

/// Where a start resumes from instead of booting.
#[derive(Debug, Clone)]
pub(super) struct Restore {
    /// The snapshot directory (`state`, `memory`).
    pub dir: PathBuf,
    /// The identity a copy takes (none: the VM's own suspended state resumes).
    pub identity: Option<Identity>,
    /// What `vm show` reports (`snapshot NAME`, `template NAME`, `resume`).
    pub label: String,
    /// What maps the memory file: a snapshot id, or `suspend` for the VM's own.
    pub memory_from: String,
    /// `dir` is this VM's alone (a fork's slot): its memory file may be moved.
    pub owned: bool,
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
    /// Memory state to disk, then stop (`vm start` resumes it).
    Suspend,
    /// Stop and remove.
    Delete,
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
fn boot_error(cause: GuestError, console: &Path) -> VmError {
    let text = fs_err::read_to_string(console).unwrap_or_default();
    let lines: Vec<&str> = text.trim().lines().rev().take(3).collect();
    let tail = lines.into_iter().rev().collect::<Vec<_>>().join(" | ");
    match cause {
        GuestError::Cancelled => VmError::Cancelled(Cancelled),
        GuestError::VmmExited => VmError::Boot(BootFailure { cause, tail }),
        GuestError::Timeout(_) => VmError::BootTimeout(BootFailure { cause, tail }),
    }
}

impl VmService {
    /// The VMM's view of VM `vm`: sizing, kernel, disks, console and (when the backend has
    /// it) vsock; the network is added once a tap is held.
    pub(super) fn vm_spec(&self, vm: &VmRecord, kernel: &KernelRecord, ip: Ipv4Addr) -> VmSpec {
        let (dir, run_dir) = (self.vm_dir(&vm.id), self.run_dir(&vm.id));
        let drive = |id: &str, file: &str| Drive {
            id: id.into(),
            path: dir.join(file),
            read_only: false,
        };
        VmSpec {
            name: vm.name.clone(),
            vcpu: vm.vcpu,
            memory_mib: vm.memory_mib,
            kernel: PathBuf::from(&kernel.vmlinux_path),
            initrd: kernel.initrd_path.as_ref().map(PathBuf::from),
            cmdline: boot_cmdline(vm.spec.get("init").and_then(serde_json::Value::as_str)),
            drives: super::disks::disk_files(&vm.spec)
                .iter()
                .map(|(id, file)| drive(id, file))
                .collect(),
            net: None,
            // The guest's IPv4 address as its CID: unique among VMs, never 0-2 or u32::MAX.
            vsock: self.infra.vmm.supports_vsock().then(|| VsockSpec {
                cid: u32::from(ip),
                uds_path: run_dir.join("vsock.sock"),
            }),
            run_dir,
            console_log: dir.join("console.log"),
            vmm_log: dir.join("vmm.log"),
            restore: None,
            restore_owned: false,
            cgroup: Vec::new(),
        }
    }

    /// Boots a VM whose disks exist and waits until the guest is ready. Holds the VM's lock
    /// (caller).
    pub(super) async fn start_locked(
        &self,
        vm: &mut VmRecord,
        kernel: &KernelRecord,
        progress: &Arc<Progress>,
        restore: Option<Restore>,
    ) -> Result<(), VmError> {
        let started = Instant::now();
        let ip: Ipv4Addr = vm
            .guest_ip
            .parse()
            .map_err(|_| VmError::CorruptGuestIp(vm.guest_ip.clone()))?;
        let mut spec = self.vm_spec(vm, kernel, ip);
        spec.restore = restore.as_ref().map(|r| r.dir.clone());
        spec.restore_owned = restore.as_ref().is_some_and(|r| r.owned);
        let network = Arc::clone(&self.network);
        let vmm = Arc::clone(&self.infra.vmm);
        let cgroups = self.infra.cgroups.clone();
        let pr = Arc::clone(progress);
        let id = vm.id.clone();
        let (handle, tap) = blocking(move || -> Result<_, VmError> {
            pr.stage("network")?;
            fs_err::create_dir_all(&spec.run_dir).map_err(VmError::RunDir)?;
            network.ensure_bridge()?;
            let tap = network.acquire_tap()?;
            spec.net = Some(NetSpec {
                tap: tap.clone(),
                mac: mac_for(ip),
            });
            let launched = pr.stage("vmm").map_err(VmError::from).and_then(|()| {
                if let Some(cg) = &cgroups {
                    let limits =
                        Limits::for_vm(spec.vcpu, spec.memory_mib, vmm.memory_overhead_mib());
                    spec.cgroup = cg.create(&id, &limits).map_err(VmError::Cgroup)?;
                }
                vmm.launch(&spec).map_err(VmError::VmmSpawn)
            });
            match launched {
                Ok(h) => Ok((h, tap)),
                Err(e) => {
                    // No handle records the tap yet: give it back here.
                    let _ = network.delete_tap(&tap);
                    if let Some(cg) = &cgroups {
                        cg.remove(&id);
                    }
                    Err(e)
                }
            }
        })
        .await?;
        self.handles.set(
            &vm.id,
            Some(Handles {
                vmm: handle.clone(),
                tap,
                agent: None,
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
        let console = self.vm_dir(&vm.id).join("console.log");
        let addr = self.guest_addr(vm);
        let ready = blocking(move || -> Result<_, VmError> {
            guest
                .wait_ready(&addr, timeout, &watch)
                .map_err(|e| boot_error(e, &console))
        })
        .await?;
        self.handles.set_agent(&vm.id, ready.agent);
        if let Some(r) = &restore {
            progress.stage("identity")?;
            let guest = Arc::clone(&self.infra.guest);
            let vmm = Arc::clone(&self.infra.vmm);
            let (addr, h) = (self.guest_addr(vm), handle.clone());
            let identity = r.identity.clone();
            blocking(move || -> Result<(), VmError> {
                let t = Instant::now();
                if let Some(id) = &identity {
                    guest.reidentify(&addr, id).map_err(VmError::Reidentify)?;
                }
                let reidentify_ms = t.elapsed().as_millis();
                vmm.set_link(&h, true).map_err(VmError::Snapshot)?;
                tracing::debug!(
                    reidentify_ms,
                    link_ms = t.elapsed().as_millis() - reidentify_ms,
                    "identity taken"
                );
                Ok(())
            })
            .await?;
        }
        if let Some(spec) = vm.spec.as_object_mut() {
            let (from, memory) = match &restore {
                Some(r) => (r.label.clone(), Some(r.memory_from.clone())),
                None => ("boot".to_owned(), None),
            };
            spec.insert("started_from".into(), from.into());
            spec.insert("memory_from".into(), memory.into());
            spec.remove("suspended");
        }
        vm.state = VmState::Running;
        vm.vmm = Some(handle.backend.clone());
        vm.last_error = None;
        vm.updated_at = self.infra.clock.now_rfc3339();
        vm.last_touched_at.clone_from(&vm.updated_at);
        self.save(vm).await?;
        self.network.dns_set(&vm.name, ip);
        if vm.nat {
            progress.stage("nat")?;
            self.network.sync_nat().await?;
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
    pub(super) async fn teardown(&self, vm: &VmRecord) {
        let id = vm.id.as_str();
        self.network.dns_remove(&vm.name);
        if let Some(h) = self.handles.cached_or_read(id) {
            let vmm = Arc::clone(&self.infra.vmm);
            let network = Arc::clone(&self.network);
            let clock = Arc::clone(&self.infra.clock);
            let _ = blocking(move || -> Result<_, VmError> {
                vmm.kill(&h.vmm);
                clock.wait_until(
                    Duration::from_secs(5),
                    Duration::from_millis(2),
                    &mut || !vmm.is_alive(&h.vmm),
                );
                network.delete_tap(&h.tap).map_err(VmError::from)
            })
            .await;
        }
        // Without handles the tap (if any) is an orphan; the next reconcile removes it.
        self.handles.set(id, None);
        if let Some(cg) = self.infra.cgroups.clone() {
            // Empty once the VMM is gone and reaped; a VMM that outlived its kill keeps it,
            // and the next reconcile tries again.
            let id = id.to_owned();
            let clock = Arc::clone(&self.infra.clock);
            let _ = blocking(move || -> Result<(), VmError> {
                clock.wait_until(
                    Duration::from_secs(3),
                    Duration::from_millis(5),
                    &mut || cg.remove_quietly(&id).is_empty(),
                );
                cg.remove(&id);
                Ok(())
            })
            .await;
        }
        let _ = fs_err::remove_dir_all(self.run_dir(id));
        if vm.nat
            && let Err(e) = self.network.sync_nat().await
        {
            warn!(vm = vm.name, "{}", chain(&e));
        }
    }

    /// Graceful stop: guest poweroff, wait up to `stop_timeout_secs`, then kill; always
    /// tears down.
    pub(super) async fn stop_locked(&self, vm: &mut VmRecord) -> Result<(), VmError> {
        crate::crashpoint::hit("stop:poweroff");
        let was_alive = self.vmm_alive(&vm.id);
        if let Some(h) = self.handles.get(&vm.id)
            && self.infra.vmm.is_alive(&h.vmm)
        {
            let addr = self.guest_addr(vm);
            let vmm = Arc::clone(&self.infra.vmm);
            let guest = Arc::clone(&self.infra.guest);
            let clock = Arc::clone(&self.infra.clock);
            let grace = Duration::from_secs(self.infra.config.stop_timeout_secs);
            blocking(move || -> Result<(), VmError> {
                guest.request_poweroff(&addr);
                vmm.request_shutdown(&h.vmm);
                clock.wait_until(grace, Duration::from_millis(50), &mut || {
                    !vmm.is_alive(&h.vmm)
                });
                Ok(())
            })
            .await?;
        }
        crate::crashpoint::hit("stop:teardown");
        self.teardown(vm).await;
        if was_alive {
            // A VM resumed from a suspend mapped that image; it is done with it now. (A
            // stop of a suspended VM keeps it suspended.)
            self.drop_suspend_images(vm, None);
        }
        crate::crashpoint::hit("stop:save");
        vm.state = VmState::Stopped;
        vm.updated_at = self.infra.clock.now_rfc3339();
        self.save(vm).await
    }

    pub(super) async fn kernel_for(&self, vm: &VmRecord) -> Result<KernelRecord, VmError> {
        let image_id = vm.image_id.clone();
        let image = with_store(&self.infra.store, move |s| s.get_image(&image_id))
            .await?
            .ok_or(VmError::StartMissing("image is gone"))?;
        let kid = image
            .kernel_id
            .ok_or(VmError::StartMissing("image has no kernel"))?;
        with_store(&self.infra.store, move |s| s.get_kernel(&kid))
            .await?
            .ok_or(VmError::StartMissing("kernel is gone"))
    }

    /// Runs a lifecycle op on one VM under its lock.
    pub async fn lifecycle(&self, name: &str, op: Lifecycle) -> Result<VmInfo, VmError> {
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
                let restore = self.resume_point(&vm);
                if let Err(e) = self
                    .start_locked(&mut vm, &kernel, &progress, restore)
                    .await
                {
                    self.teardown(&vm).await;
                    vm.state = VmState::Error;
                    vm.last_error = Some(chain(&e));
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
                self.start_locked(&mut vm, &kernel, &progress, None).await?;
            }
            Lifecycle::Suspend => self.suspend_locked(&mut vm).await?,
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
                // The row goes first: a kill after it leaves only files without a row,
                // which reconcile removes; never a row whose disks are gone.
                crate::crashpoint::hit("delete:row");
                let id = vm.id.clone();
                with_store(&self.infra.store, move |s| s.delete_vm(&id)).await?;
                crate::crashpoint::hit("delete:files");
                let _ = fs_err::remove_dir_all(self.vm_dir(&vm.id));
                self.collect_layers().await;
                self.forget_host_key(&vm.id).await;
                lock(&self.vm_locks).remove(&vm.id);
                self.sync_ssh_config().await;
                return Ok(info);
            }
        }
        self.show(&vm.id).await
    }

    /// Runs `op` on several VMs concurrently (names deduplicated, order kept).
    pub async fn lifecycle_many(
        &self,
        names: &[String],
        op: Lifecycle,
    ) -> Vec<(String, Result<VmInfo, VmError>)> {
        let futures = unique_names(names)
            .into_iter()
            .map(|n| async move { (n.clone(), self.lifecycle(n, op).await) });
        futures::future::join_all(futures).await
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
}
