//! `HostNetwork`: bridge, taps, NAT, DNS records, VMM process launch, COW disks.

use crate::daemon::Infra;

/// Host networking and VM plumbing.
#[derive(Debug)]
pub struct HostNetwork {
    #[allow(dead_code)]
    infra: Infra,
}

impl HostNetwork {
    /// A new service.
    pub fn new(infra: Infra) -> Self {
        HostNetwork { infra }
    }
}
