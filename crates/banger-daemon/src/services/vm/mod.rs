//! `VmService`: VMs.
//!
//! One file per job: this one holds the struct, the per-VM lock (take it, then re-read the
//! row), row load/save and list/show; `create` (async create, reservation, names, undo),
//! `provision` (disks, guest config, agent unit, host-key pinning), `lifecycle`
//! (start/stop/kill/restart/delete, teardown, boot), `settings` (`vm set`, sizing),
//! `observe` (stats, ports, the poller), `logs` (streamed logs), `exec` (commands through
//! the guest agent), `guest_access` (addresses, ssh target,
//! managed ssh_config, workspaces), `handles` (the handle cache), `reconcile` (startup).
//!
//! Locks: `vm_locks[id]` is held across a whole lifecycle op on one VM; `create_reservation`
//! only across name check + IP allocation + first row insert. The handle cache and
//! `cpu_samples` are leaf locks, never held across I/O.

mod create;
mod disks;
mod error;
mod exec;
mod guest_access;
mod handles;
mod lifecycle;
mod logs;
mod observe;
mod provision;
mod reconcile;
mod settings;
mod snapshot;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex as StdMutex};
use std::time::{Duration, Instant};

use banger_api::types::{SizingSources, VmInfo};
use banger_store::{Store, VmRecord, VmRow};
use tokio::sync::{Mutex, OwnedMutexGuard};

pub use error::{BootFailure, VmError};
pub use guest_access::{host_alias, ssh_config_text};
pub use handles::{HandleCache, Handles};
pub use lifecycle::Lifecycle;
pub use observe::port_infos;
pub use settings::{Sizing, parse_size, resolve_sizing, validate_name};

use super::support::{lock, with_store};
use super::{HostNetwork, ImageService, WorkspaceService};
use crate::infra::Infra;
use crate::progress::AsyncOps;

/// VMs.
#[derive(Debug)]
pub struct VmService {
    infra: Infra,
    network: Arc<HostNetwork>,
    image: Arc<ImageService>,
    workspace: Arc<WorkspaceService>,
    handles: Arc<HandleCache>,
    vm_locks: StdMutex<HashMap<String, Arc<Mutex<()>>>>,
    create_reservation: Mutex<()>,
    creates: AsyncOps,
    /// Last VMM CPU sample per VM (when, CPU time): a leaf lock.
    cpu_samples: StdMutex<HashMap<String, (Instant, Duration)>>,
    /// Serializes edits of banger's known_hosts (a pin's append, a forget's rewrite): held on
    /// the blocking pool around one edit, never with another lock held.
    known_hosts_lock: Arc<StdMutex<()>>,
    /// Serializes rewrites of the managed ssh config (held across one store read and one
    /// file write; taken after a VM lock, never before one).
    ssh_config_lock: Mutex<()>,
}

/// The wire form of a stored VM.
pub(crate) fn vm_info(row: VmRow) -> VmInfo {
    let VmRow { vm, image_name } = row;
    let sizing_sources = vm
        .spec
        .get("sizing")
        .and_then(|s| serde_json::from_value::<SizingSources>(s.clone()).ok());
    let labels = vm
        .spec
        .get("labels")
        .and_then(|l| serde_json::from_value(l.clone()).ok())
        .unwrap_or_default();
    let started_from = vm
        .spec
        .get("started_from")
        .and_then(|v| v.as_str())
        .map(str::to_owned);
    let suspended = vm
        .spec
        .get("suspended")
        .is_some_and(serde_json::Value::is_string);
    VmInfo {
        cgroup: None,
        started_from,
        suspended,
        labels,
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

impl VmService {
    /// A new service over the other three and the handle cache it shares with the network.
    pub fn new(
        infra: Infra,
        network: Arc<HostNetwork>,
        image: Arc<ImageService>,
        workspace: Arc<WorkspaceService>,
        handles: Arc<HandleCache>,
    ) -> Self {
        VmService {
            infra,
            network,
            image,
            workspace,
            handles,
            vm_locks: StdMutex::default(),
            create_reservation: Mutex::new(()),
            creates: AsyncOps::default(),
            cpu_samples: StdMutex::default(),
            known_hosts_lock: Arc::default(),
            ssh_config_lock: Mutex::new(()),
        }
    }

    fn vm_lock(&self, id: &str) -> Arc<Mutex<()>> {
        Arc::clone(lock(&self.vm_locks).entry(id.to_owned()).or_default())
    }

    /// Takes VM `name`'s lock and re-reads it under the lock (another op may have changed
    /// it meanwhile).
    async fn lock_vm(&self, name: &str) -> Result<(OwnedMutexGuard<()>, VmRow), VmError> {
        let id = self.get_row(name).await?.vm.id;
        let guard = self.vm_lock(&id).lock_owned().await;
        Ok((guard, self.get_row(&id).await?))
    }

    /// Whether VM `id` has a live VMM.
    fn vmm_alive(&self, id: &str) -> bool {
        self.handles
            .get(id)
            .is_some_and(|h| self.infra.vmm.is_alive(&h.vmm))
    }

    fn vm_dir(&self, id: &str) -> PathBuf {
        self.infra.layout.vms_dir().join(id)
    }

    fn run_dir(&self, id: &str) -> PathBuf {
        self.infra.layout.runtime_dir.join("vms").join(id)
    }

    fn key_path(&self) -> PathBuf {
        self.infra.layout.ssh_key_path(&self.infra.config)
    }

    fn known_hosts(&self) -> PathBuf {
        self.infra.layout.ssh_dir().join("known_hosts")
    }

    async fn get_row(&self, name: &str) -> Result<VmRow, VmError> {
        let key = name.to_owned();
        with_store(&self.infra.store, move |s| s.get_vm(&key))
            .await?
            .ok_or_else(|| VmError::NotFound(name.to_owned()))
    }

    async fn save(&self, vm: &VmRecord) -> Result<(), VmError> {
        let vm = vm.clone();
        Ok(with_store(&self.infra.store, move |s| s.update_vm(&vm)).await?)
    }

    /// All VMs, oldest first.
    pub async fn list(&self) -> Result<Vec<VmInfo>, VmError> {
        let rows = with_store(&self.infra.store, Store::list_vms).await?;
        Ok(rows.into_iter().map(vm_info).collect())
    }

    /// One VM by name or id, with its VMM's cgroup when it runs.
    pub async fn show(&self, name: &str) -> Result<VmInfo, VmError> {
        let mut info = vm_info(self.get_row(name).await?);
        if let Some(cg) = &self.infra.cgroups
            && self.vmm_alive(&info.id)
            && let Some(u) = cg.usage(&info.id)
        {
            info.cgroup = Some(banger_api::types::VmCgroup {
                path: u.path.display().to_string(),
                version: cg.hierarchy().version().to_owned(),
                memory_max_bytes: u.limits.memory_bytes,
                memory_bytes: u.memory_bytes,
                memory_peak_bytes: u.memory_peak_bytes,
                cpu_quota_us: u.limits.cpu_quota_us,
                cpu_period_us: banger_host::cgroup::CPU_PERIOD_US,
                cpu_throttled_periods: u.cpu_throttled_periods,
                pids_max: u.limits.pids,
                pids: u.pids,
            });
        }
        Ok(info)
    }
}
