//! Reaching guests: the address the daemon uses (ssh options, the agent's vsock socket),
//! the ssh target users get, the managed ssh_config, and workspaces (validated and recorded
//! under the VM lock, copied without it).

use std::net::Ipv4Addr;
use std::path::Path;

use banger_api::types::{
    SshInfo, VmState, WorkspaceExport, WorkspaceExportParams, WorkspacePrepareParams,
    WorkspacePrepared,
};
use banger_host::GuestAddr;
use banger_store::{Store, VmRecord};
use tracing::{info, warn};

use super::{VmError, VmService};
use crate::services::support::{blocking, chain, with_store};
use crate::services::workspace::{DEFAULT_GUEST_PATH, GuestTarget, prepared, validate_guest_path};
use crate::stream::StreamOut;

/// The known_hosts alias a VM's host key is pinned under.
pub fn host_alias(id: &str) -> String {
    format!("banger-{id}")
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
        "\nHost *.vm\n    User root\n    IdentityFile \"{}\"\n    IdentitiesOnly yes\n    \
         UserKnownHostsFile \"{}\"\n    StrictHostKeyChecking yes\n    LogLevel ERROR\n",
        key.display(),
        known_hosts.display()
    );
    out
}

/// A stored workspace's field.
fn workspace_field(vm: &VmRecord, key: &str) -> Option<String> {
    vm.workspace
        .as_ref()
        .and_then(|w| w.get(key))
        .and_then(|v| v.as_str())
        .map(str::to_owned)
}

impl VmService {
    /// How the host reaches VM `vm`'s guest: ssh, and the agent when the VMM gives vsock
    /// (with the protocol readiness saw, from the handle cache).
    pub(super) fn guest_addr(&self, vm: &VmRecord) -> GuestAddr {
        GuestAddr {
            agent: self.handles.get(&vm.id).and_then(|h| h.agent),
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
            workdir: workspace_field(vm, "guest_path"),
        }
    }

    /// How to ssh into a running VM (marks it used, under its lock: a touch never
    /// overwrites a concurrent stop).
    pub async fn ssh_info(&self, name: &str) -> Result<SshInfo, VmError> {
        Ok(self.guest_target(name).await?.0.ssh)
    }

    /// Under the VM lock: checks the VM runs, marks it used, and snapshots how to reach it
    /// (the lock is released before any guest I/O).
    pub(super) async fn guest_target(
        &self,
        name: &str,
    ) -> Result<(GuestTarget, VmRecord), VmError> {
        let (_held, row) = self.lock_vm(name).await?;
        let mut vm = row.vm;
        if vm.state != VmState::Running || !self.vmm_alive(&vm.id) {
            return Err(VmError::NotRunning(vm.name));
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
    ) -> Result<WorkspacePrepared, VmError> {
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
        let (_held, row) = self
            .lock_vm(&target.id)
            .await
            .map_err(|_| VmError::DeletedDuringWorkspace)?;
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

    /// Streams a patch of what changed in a VM's workspace since it was prepared (or
    /// `base_commit`) to `out`.
    pub async fn workspace_export(
        &self,
        p: WorkspaceExportParams,
        out: &StreamOut,
    ) -> Result<WorkspaceExport, VmError> {
        let (target, vm) = self.guest_target(&p.name).await?;
        let Some(guest_path) = workspace_field(&vm, "guest_path") else {
            return Err(VmError::NoWorkspace(vm.name));
        };
        let base = p
            .base_commit
            .or_else(|| workspace_field(&vm, "head"))
            .ok_or(VmError::NoWorkspaceHead)?;
        Ok(self
            .workspace
            .export(&target, &guest_path, &base, out)
            .await?)
    }

    /// Rewrites the managed ssh config from the store: a `Host NAME.vm` block per VM with
    /// its address, banger's key and the VM's pinned host key. Best effort (logged). The
    /// store read and the file write run off the runtime under `ssh_config_lock`.
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
        let written = blocking(move || -> Result<(), VmError> {
            let tmp = path.with_extension("tmp");
            let written = path
                .parent()
                .map_or(Ok(()), fs_err::create_dir_all)
                .and_then(|()| fs_err::write(&tmp, text))
                .and_then(|()| fs_err::rename(&tmp, &path));
            if let Err(e) = written {
                warn!("cannot write {}: {e}", path.display());
            }
            Ok(())
        })
        .await;
        if let Err(e) = written {
            warn!("ssh config: {}", chain(&e));
        }
    }
}
