//! Startup reconcile: live VMMs are kept, dead ones torn down and their VMs marked stopped;
//! then DNS records and the NAT table are rebuilt from the store, leftover taps re-adopted
//! or removed, the tap pool warmed and the managed ssh config rewritten.

use std::collections::HashSet;
use std::sync::Arc;

use banger_api::types::VmState;
use banger_store::{Store, VmRecord};
use tracing::{info, warn};

use super::create::CREATING;
use super::{VmError, VmService};
use crate::services::support::{blocking, chain, with_store};

impl VmService {
    /// See the module doc. Killing `bangerd` never kills VMs: this is what picks them up.
    pub async fn reconcile(self: &Arc<Self>) -> Result<(), VmError> {
        self.reconcile_vms().await?;
        let rows = with_store(&self.infra.store, Store::list_vms).await?;
        let running: Vec<&VmRecord> = rows
            .iter()
            .map(|r| &r.vm)
            .filter(|v| v.state == VmState::Running)
            .collect();
        self.network.dns_replace_all(
            running
                .iter()
                .filter_map(|v| Some((v.name.clone(), v.guest_ip.parse().ok()?))),
        );
        if let Err(e) = self.network.sync_nat().await {
            warn!("reconcile: {}", chain(&e));
        }
        self.reconcile_cgroups(&running);
        let in_use: HashSet<String> = running
            .iter()
            .filter_map(|v| self.handles.get(&v.id).map(|h| h.tap))
            .collect();
        let network = Arc::clone(&self.network);
        blocking(move || -> Result<(), VmError> {
            if let Err(e) = network.reconcile_taps(&in_use) {
                warn!("reconcile: {}", chain(&e));
            }
            Ok(())
        })
        .await?;
        self.network.warm_if_bridged();
        self.sync_ssh_config().await;
        Ok(())
    }

    async fn reconcile_vms(&self) -> Result<(), VmError> {
        let rows = with_store(&self.infra.store, Store::list_vms).await?;
        let live: HashSet<String> = rows.iter().map(|r| r.vm.id.clone()).collect();
        self.remove_orphan_dirs(&live).await;
        self.prune_host_keys(live).await;
        self.sweep_snapshots().await;
        self.collect_layers().await;
        for row in rows {
            let mut vm = row.vm;
            if vm.spec.get(CREATING).is_some() {
                // A kill interrupted its create: undo it, as a failed create is undone.
                warn!(
                    vm = vm.name,
                    "reconcile: its create was interrupted; removing it"
                );
                self.remove_unfinished(&vm).await;
                continue;
            }
            match self.handles.read(&vm.id) {
                Some(h) if self.infra.vmm.is_alive(&h.vmm) => {
                    info!(
                        vm = vm.name,
                        pid = h.vmm.pid,
                        "reconcile: vmm alive, keeping it"
                    );
                    // A kill during a snapshot or suspend leaves the guest paused.
                    let vmm = Arc::clone(&self.infra.vmm);
                    let hv = h.vmm.clone();
                    let _ = blocking(move || -> Result<(), VmError> {
                        let _ = vmm.resume(&hv);
                        Ok(())
                    })
                    .await;
                    self.handles.adopt(&vm.id, h);
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
                    let keep = vm.spec.get("suspended").and_then(|s| s.as_str());
                    self.drop_suspend_images(&vm, keep);
                }
            }
        }
        Ok(())
    }

    /// Removes the cgroups of VMs that do not run (a VMM that died while the daemon was
    /// down, a kill between a launch failure and its cleanup, a deleted VM).
    fn reconcile_cgroups(&self, running: &[&VmRecord]) {
        let Some(cg) = &self.infra.cgroups else {
            return;
        };
        for name in cg.names() {
            if !running.iter().any(|v| v.id == name) {
                info!(
                    cgroup = name,
                    "reconcile: no running vm owns it; removing it"
                );
                cg.remove(&name);
            }
        }
    }

    /// Removes VM directories (state and runtime) that no row owns: what a kill between a
    /// delete's row and its files leaves.
    async fn remove_orphan_dirs(&self, live: &HashSet<String>) {
        let parents = [
            self.infra.layout.vms_dir(),
            self.infra.layout.runtime_dir.join("vms"),
        ];
        let live = live.clone();
        let _ = blocking(move || -> Result<(), VmError> {
            for parent in parents {
                let Ok(entries) = fs_err::read_dir(&parent) else {
                    continue;
                };
                for e in entries.flatten() {
                    let name = e.file_name().to_string_lossy().into_owned();
                    if e.path().is_dir() && !live.contains(&name) {
                        warn!(dir = %e.path().display(), "reconcile: no vm owns it; removing it");
                        let _ = fs_err::remove_dir_all(e.path());
                    }
                }
            }
            Ok(())
        })
        .await;
    }
}
