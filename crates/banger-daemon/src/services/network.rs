//! `HostNetwork`: bridge, taps and guest IP allocation.

use std::net::Ipv4Addr;

use banger_api::{ErrorCode, RpcError};

use crate::daemon::Infra;
use crate::error::chain;

/// Host networking.
#[derive(Debug)]
pub struct HostNetwork {
    infra: Infra,
}

/// The lowest address of `cidr` that is not the network, broadcast, gateway or in `used`.
pub fn allocate_ip(cidr: ipnet::Ipv4Net, gateway: Ipv4Addr, used: &[Ipv4Addr]) -> Option<Ipv4Addr> {
    cidr.hosts().find(|ip| *ip != gateway && !used.contains(ip))
}

/// The tap device of a VM: `bt-` plus 12 hex digits of its id (fits IFNAMSIZ).
pub fn tap_name(vm_id: &str) -> String {
    format!("bt-{}", &vm_id[..vm_id.len().min(12)])
}

/// A stable, locally administered MAC derived from the guest IP.
pub fn mac_for(ip: Ipv4Addr) -> String {
    let o = ip.octets();
    format!("06:00:{:02x}:{:02x}:{:02x}:{:02x}", o[0], o[1], o[2], o[3])
}

impl HostNetwork {
    /// A new service.
    pub fn new(infra: Infra) -> Self {
        HostNetwork { infra }
    }

    /// Makes sure the bridge exists with its address, up.
    pub fn ensure_bridge(&self) -> Result<(), RpcError> {
        let c = &self.infra.config;
        self.infra
            .privileged
            .ensure_bridge(&c.bridge_name, c.bridge_ip, c.cidr.prefix_len())
            .map_err(|e| {
                RpcError::new(ErrorCode::OperationFailed, format!("bridge: {}", chain(&e)))
            })
    }

    /// Creates the VM's tap on the bridge.
    pub fn create_tap(&self, tap: &str) -> Result<(), RpcError> {
        self.infra
            .privileged
            .create_tap(tap, &self.infra.config.bridge_name)
            .map_err(|e| RpcError::new(ErrorCode::OperationFailed, format!("tap: {}", chain(&e))))
    }

    /// Deletes a tap (missing is fine).
    pub fn delete_tap(&self, tap: &str) -> Result<(), RpcError> {
        self.infra
            .privileged
            .delete_tap(tap)
            .map_err(|e| RpcError::new(ErrorCode::OperationFailed, format!("tap: {}", chain(&e))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_allocate_ip_skips_gateway_and_used_and_exhausts() {
        let net: ipnet::Ipv4Net = "172.16.0.0/29".parse().unwrap();
        let gw = Ipv4Addr::new(172, 16, 0, 1);
        assert_eq!(
            allocate_ip(net, gw, &[]),
            Some(Ipv4Addr::new(172, 16, 0, 2))
        );
        let used: Vec<Ipv4Addr> = (2..=5).map(|i| Ipv4Addr::new(172, 16, 0, i)).collect();
        assert_eq!(
            allocate_ip(net, gw, &used),
            Some(Ipv4Addr::new(172, 16, 0, 6))
        );
        let full: Vec<Ipv4Addr> = (2..=6).map(|i| Ipv4Addr::new(172, 16, 0, i)).collect();
        assert_eq!(allocate_ip(net, gw, &full), None);
        // Reuse after release.
        assert_eq!(
            allocate_ip(net, gw, &full[1..]),
            Some(Ipv4Addr::new(172, 16, 0, 2))
        );
    }

    proptest::proptest! {
        /// Any sequence of allocations and releases on a small network: an allocated address
        /// is never in use, never the gateway/network/broadcast, exhaustion only when every
        /// host address is taken, and released addresses become available again.
        #[test]
        fn prop_allocator_never_duplicates(ops in proptest::collection::vec(proptest::option::of(0usize..16), 1..80), prefix in 26u8..=29) {
            let net = ipnet::Ipv4Net::new(Ipv4Addr::new(10, 9, 8, 0), prefix).unwrap();
            let gw = Ipv4Addr::new(10, 9, 8, 1);
            let hosts: Vec<Ipv4Addr> = net.hosts().filter(|h| *h != gw).collect();
            let mut used: Vec<Ipv4Addr> = Vec::new();
            for op in ops {
                match op {
                    None => match allocate_ip(net, gw, &used) {
                        Some(ip) => {
                            proptest::prop_assert!(!used.contains(&ip));
                            proptest::prop_assert!(hosts.contains(&ip));
                            used.push(ip);
                        }
                        None => proptest::prop_assert_eq!(used.len(), hosts.len()),
                    },
                    Some(i) if !used.is_empty() => {
                        let freed = used.remove(i % used.len());
                        proptest::prop_assert!(allocate_ip(net, gw, &used).is_some());
                        proptest::prop_assert!(!used.contains(&freed));
                    }
                    Some(_) => {}
                }
            }
        }
    }

    #[test]
    fn test_tap_name_fits_ifnamsiz_and_mac_is_local() {
        assert_eq!(tap_name("0123456789abcdef").len(), 15);
        assert_eq!(mac_for(Ipv4Addr::new(172, 16, 0, 2)), "06:00:ac:10:00:02");
    }
}
