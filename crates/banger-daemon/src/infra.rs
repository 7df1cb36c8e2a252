//! `Infra`: the shared infrastructure every service is built from.

use std::sync::Arc;

use banger_config::{Config, Layout};
use banger_host::vmm::Vmm;
use banger_host::{Clock, CommandRunner, GuestControl, HostProbe, PrivilegedOps};
use banger_store::Store;

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
    /// Host facts that change while the daemon runs (CPUs, memory, VMM CPU time and RSS).
    pub probe: Arc<dyn HostProbe>,
    /// Per-VM cgroups for VMM processes (none: off in config, or the host lets this daemon
    /// have none).
    pub cgroups: Option<Arc<banger_host::cgroup::VmCgroups>>,
    /// The static guest agent binary put into every VM (none: guests run without it and
    /// the daemon uses ssh).
    pub agent: Option<std::path::PathBuf>,
    /// Disk layers (`<state>/layers/`) and their collector's lock.
    pub layers: Arc<crate::layers::Layers>,
}
