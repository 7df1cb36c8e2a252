//! The composition root.

use std::sync::Arc;
use std::time::Instant;

use banger_config::{Config, Layout};
use banger_host::vmm::Vmm;
use banger_host::{Clock, CommandRunner, GuestControl, PrivilegedOps};
use banger_store::Store;
use tokio_util::sync::CancellationToken;

use crate::ops::OpRegistry;
use crate::services::{HostNetwork, ImageService, VmService, WorkspaceService};

/// Shared infrastructure every service may use. Every host side effect goes through one of
/// these traits, so tests swap in recording fakes.
#[derive(Debug, Clone)]
pub struct Infra {
    /// Where files live.
    pub layout: Layout,
    /// The loaded config.
    pub config: Arc<Config>,
    /// Durable state.
    pub store: Arc<Store>,
    /// Time.
    pub clock: Arc<dyn Clock>,
    /// Host commands (mkfs, debugfs, cp, ssh-keygen, apt, debootstrap).
    pub runner: Arc<dyn CommandRunner>,
    /// Privileged operations (bridge, taps).
    pub privileged: Arc<dyn PrivilegedOps>,
    /// The VMM backend.
    pub vmm: Arc<dyn Vmm>,
    /// Host-to-guest control (readiness, poweroff).
    pub guest: Arc<dyn GuestControl>,
    /// The static guest agent binary put into every VM (none: guests run without it and
    /// the daemon uses ssh).
    pub agent: Option<std::path::PathBuf>,
}

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

/// Builds the services from infrastructure, once. `VmService` composes the others.
pub fn wire_services(infra: &Infra) -> Services {
    let network = Arc::new(HostNetwork::new(infra.clone()));
    let image = Arc::new(ImageService::new(infra.clone()));
    let workspace = Arc::new(WorkspaceService::new(infra.clone()));
    let vm = Arc::new(VmService::new(
        infra.clone(),
        Arc::clone(&network),
        Arc::clone(&image),
        Arc::clone(&workspace),
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
