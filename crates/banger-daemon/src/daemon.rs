//! The composition root.

use std::sync::Arc;
use std::time::Instant;

use tokio_util::sync::CancellationToken;

pub use crate::infra::Infra;
use crate::ops::OpRegistry;
use crate::services::network::TapIndex;
use crate::services::vm::HandleCache;
use crate::services::{HostNetwork, ImageService, VmService, WorkspaceService};

/// The four services.
#[derive(Debug, Clone)]
pub struct Services {
    /// Bridge, taps, IP allocation.
    pub network: Arc<HostNetwork>,
    /// Images and kernels.
    pub image: Arc<ImageService>,
    /// Workspaces in guests.
    pub workspace: Arc<WorkspaceService>,
    /// VM lifecycle.
    pub vm: Arc<VmService>,
}

/// Builds the services from infrastructure, once. `VmService` composes the others; the
/// handle cache is the seam through which `HostNetwork` learns which tap each VM holds.
pub fn wire_services(infra: &Infra) -> Services {
    let handles = Arc::new(HandleCache::new(infra.layout.vms_dir()));
    let network = Arc::new(HostNetwork::new(
        infra.clone(),
        Arc::clone(&handles) as Arc<dyn TapIndex>,
    ));
    let image = Arc::new(ImageService::new(infra.clone()));
    let workspace = Arc::new(WorkspaceService::new(infra.clone()));
    let vm = Arc::new(VmService::new(
        infra.clone(),
        Arc::clone(&network),
        Arc::clone(&image),
        Arc::clone(&workspace),
        handles,
    ));
    Services {
        network,
        image,
        workspace,
        vm,
    }
}

/// The daemon: infrastructure, services, and process-wide state.
#[derive(Debug)]
pub struct Daemon {
    /// Shared infrastructure.
    pub infra: Infra,
    /// The services RPC dispatch forwards to.
    pub services: Services,
    /// In-flight operations.
    pub ops: Arc<OpRegistry>,
    /// Only this uid (and root) may talk to the daemon.
    pub owner_uid: u32,
    /// When the daemon started.
    pub started: Instant,
    /// Cancelled to stop serving (SIGTERM or the `shutdown` method).
    pub shutdown: CancellationToken,
}

impl Daemon {
    /// A daemon over `infra` with freshly wired services.
    pub fn new(infra: Infra, owner_uid: u32) -> Self {
        let services = wire_services(&infra);
        Daemon {
            infra,
            services,
            ops: Arc::new(OpRegistry::default()),
            owner_uid,
            started: Instant::now(),
            shutdown: CancellationToken::new(),
        }
    }
}
