//! `VmService`: VM lifecycle, listing and lookup.

use std::sync::Arc;

use banger_api::types::VmInfo;
use banger_api::{ErrorCode, RpcError};
use banger_store::{Store, StoreError, VmRow};

use crate::daemon::Infra;
use crate::error::store_error;

/// VM lifecycle.
#[derive(Debug)]
pub struct VmService {
    infra: Infra,
}

/// A store call on a blocking thread.
async fn blocking<T: Send + 'static>(
    store: &Arc<Store>,
    f: impl FnOnce(&Store) -> Result<T, StoreError> + Send + 'static,
) -> Result<T, RpcError> {
    let store = Arc::clone(store);
    tokio::task::spawn_blocking(move || f(&store))
        .await
        .map_err(|e| {
            RpcError::new(
                ErrorCode::OperationFailed,
                format!("store task failed: {e}"),
            )
        })?
        .map_err(|e| store_error(&e))
}

/// The wire form of a stored VM.
pub(crate) fn vm_info(row: VmRow) -> VmInfo {
    let VmRow { vm, image_name } = row;
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
    }
}

impl VmService {
    /// A new service.
    pub fn new(infra: Infra) -> Self {
        VmService { infra }
    }

    /// All VMs, oldest first.
    pub async fn list(&self) -> Result<Vec<VmInfo>, RpcError> {
        let rows = blocking(&self.infra.store, Store::list_vms).await?;
        Ok(rows.into_iter().map(vm_info).collect())
    }

    /// One VM by name or id.
    pub async fn show(&self, name: &str) -> Result<VmInfo, RpcError> {
        let key = name.to_owned();
        blocking(&self.infra.store, move |s| s.get_vm(&key))
            .await?
            .map(vm_info)
            .ok_or_else(|| {
                RpcError::new(ErrorCode::NotFound, format!("vm {name:?} not found"))
                    .with_hint("`banger vm list` shows the VMs that exist")
            })
    }
}
