//! `HostNetwork`: bridge, warm tap pool, guest IP allocation, NAT and the `.vm` DNS records.
//!
//! Locks (all leaves except `nat_lock`): `pool` (idle tap names) is never held across a
//! command; `nat_lock` serializes whole NAT syncs (read store → build spec → `nft`), taken
//! after a VM lock, never before one; the DNS records have their own leaf lock.

use std::collections::{HashSet, VecDeque};
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex as StdMutex};

use banger_api::{ErrorCode, RpcError};
use banger_host::nat::NatSpec;
use tracing::{info, warn};

use crate::daemon::Infra;
use crate::dns::DnsRecords;
use crate::error::chain;

/// The prefix of every tap banger creates.
pub const TAP_PREFIX: &str = "bt-";

/// Host networking.
#[derive(Debug)]
pub struct HostNetwork {
    infra: Infra,
    pool: StdMutex<VecDeque<String>>,
    refilling: AtomicBool,
    /// Serializes NAT syncs so the last one always reflects the latest store.
    pub nat_lock: tokio::sync::Mutex<()>,
    /// `<name>.vm` records served by the DNS server.
    pub dns: Arc<DnsRecords>,
    dns_state: StdMutex<DnsState>,
}

/// Where the DNS server listens and whether the host resolver routes `vm` to it.
#[derive(Debug, Default, Clone)]
pub struct DnsState {
    /// The bound address.
    pub listen: Option<std::net::SocketAddr>,
    /// Why it is not listening.
    pub error: Option<String>,
    /// The resolver routing, once the bridge exists.
    pub resolver: Option<banger_host::ResolverRouting>,
}

/// The lowest address of `cidr` that is not the network, broadcast, gateway or in `used`.
pub fn allocate_ip(cidr: ipnet::Ipv4Net, gateway: Ipv4Addr, used: &[Ipv4Addr]) -> Option<Ipv4Addr> {
    cidr.hosts().find(|ip| *ip != gateway && !used.contains(ip))
}

/// The tap device of a VM: `bt-` plus 12 hex digits of its id (fits IFNAMSIZ).
pub fn tap_name(vm_id: &str) -> String {
    format!("{TAP_PREFIX}{}", &vm_id[..vm_id.len().min(12)])
}

/// A fresh random tap name (pool taps are not tied to a VM until taken).
fn random_tap_name() -> String {
    tap_name(&uuid::Uuid::new_v4().simple().to_string())
}

/// A stable, locally administered MAC derived from the guest IP.
pub fn mac_for(ip: Ipv4Addr) -> String {
    let o = ip.octets();
    format!("06:00:{:02x}:{:02x}:{:02x}:{:02x}", o[0], o[1], o[2], o[3])
}

fn net_err(what: &str, e: &banger_host::PrivError) -> RpcError {
    RpcError::new(ErrorCode::OperationFailed, format!("{what}: {}", chain(e)))
}

impl HostNetwork {
    /// A new service.
    pub fn new(infra: Infra) -> Self {
        HostNetwork {
            infra,
            pool: StdMutex::default(),
            refilling: AtomicBool::new(false),
            nat_lock: tokio::sync::Mutex::new(()),
            dns: Arc::new(DnsRecords::default()),
            dns_state: StdMutex::default(),
        }
    }

    fn dns_state(&self) -> std::sync::MutexGuard<'_, DnsState> {
        self.dns_state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A copy of the DNS server's state.
    pub fn dns_status(&self) -> DnsState {
        self.dns_state().clone()
    }

    /// Starts the DNS server on `dns_listen` (unless it is empty). A port already taken is
    /// logged and reported by `net.status`; the daemon runs on without names.
    pub async fn start_dns(&self, shutdown: tokio_util::sync::CancellationToken) {
        let listen = self.infra.config.dns_listen.clone();
        if listen.is_empty() {
            self.dns_state().error = Some("disabled (dns_listen = \"\")".into());
            return;
        }
        let result = match listen.parse() {
            Ok(addr) => crate::dns::serve(addr, Arc::clone(&self.dns), shutdown)
                .await
                .map_err(|e| format!("cannot listen on {listen}: {e}")),
            Err(e) => Err(format!("bad dns_listen {listen:?}: {e}")),
        };
        match result {
            Ok(bound) => {
                info!(listen = %bound, "dns server for .vm started");
                self.dns_state().listen = Some(bound);
            }
            Err(e) => {
                warn!("dns: {e}");
                self.dns_state().error = Some(e);
            }
        }
        // Route `vm` through systemd-resolved once the bridge exists.
        if self
            .infra
            .privileged
            .link_exists(&self.infra.config.bridge_name)
            .unwrap_or(false)
        {
            self.sync_resolver();
        }
    }

    fn sync_resolver(&self) {
        let (Some(addr), None) = ({
            let st = self.dns_state();
            (st.listen, st.resolver)
        }) else {
            return;
        };
        match self
            .infra
            .privileged
            .sync_resolver(&self.infra.config.bridge_name, addr)
        {
            Ok(r) => self.dns_state().resolver = Some(r),
            Err(e) => warn!(
                "dns: cannot route .vm through systemd-resolved: {}",
                chain(&e)
            ),
        }
    }

    fn pool(&self) -> std::sync::MutexGuard<'_, VecDeque<String>> {
        self.pool
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Makes sure the bridge exists with its address, up.
    pub fn ensure_bridge(&self) -> Result<(), RpcError> {
        let c = &self.infra.config;
        self.infra
            .privileged
            .ensure_bridge(&c.bridge_name, c.bridge_ip, c.cidr.prefix_len())
            .map_err(|e| net_err("bridge", &e))?;
        self.sync_resolver();
        Ok(())
    }

    /// A tap on the bridge for a new VM: an idle one from the pool when there is one (O(1)),
    /// else a new one. The pool is refilled in the background either way.
    pub fn acquire_tap(self: &Arc<Self>) -> Result<String, RpcError> {
        let pooled = self.pool().pop_front();
        let tap = match pooled {
            Some(t) => t,
            None => {
                let t = random_tap_name();
                self.infra
                    .privileged
                    .create_tap(&t, &self.infra.config.bridge_name)
                    .map_err(|e| net_err("tap", &e))?;
                t
            }
        };
        self.refill_in_background();
        Ok(tap)
    }

    /// Deletes a tap (missing is fine).
    pub fn delete_tap(&self, tap: &str) -> Result<(), RpcError> {
        self.infra
            .privileged
            .delete_tap(tap)
            .map_err(|e| net_err("tap", &e))
    }

    /// The idle taps, oldest first.
    pub fn idle_taps(&self) -> Vec<String> {
        self.pool().iter().cloned().collect()
    }

    /// Tops the pool up to `tap_pool_size`, creating the missing taps in parallel. Returns
    /// how many were created.
    pub fn refill(&self) -> usize {
        let want = self.infra.config.tap_pool_size;
        let missing = want.saturating_sub(self.pool().len());
        if missing == 0 {
            return 0;
        }
        if let Err(e) = self.ensure_bridge() {
            warn!("tap pool: {}", e.message);
            return 0;
        }
        let bridge = self.infra.config.bridge_name.clone();
        let made: Vec<String> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..missing)
                .map(|_| {
                    let bridge = &bridge;
                    scope.spawn(move || {
                        let t = random_tap_name();
                        match self.infra.privileged.create_tap(&t, bridge) {
                            Ok(()) => Some(t),
                            Err(e) => {
                                warn!("tap pool: cannot create {t}: {}", chain(&e));
                                None
                            }
                        }
                    })
                })
                .collect();
            handles
                .into_iter()
                .filter_map(|h| h.join().ok().flatten())
                .collect()
        });
        let n = made.len();
        let mut surplus = Vec::new();
        {
            let mut pool = self.pool();
            for t in made {
                if pool.len() < want {
                    pool.push_back(t);
                } else {
                    surplus.push(t);
                }
            }
        }
        for t in surplus {
            let _ = self.delete_tap(&t);
        }
        n
    }

    /// Refills the pool on a background thread unless a refill is already running.
    pub fn refill_in_background(self: &Arc<Self>) {
        if self.infra.config.tap_pool_size == 0 || self.refilling.swap(true, Ordering::AcqRel) {
            return;
        }
        self.spawn_refill();
    }

    /// Startup warm-up: only when the bridge already exists. A daemon started for image work
    /// never creates host interfaces; the first create makes the bridge and warms the pool.
    pub fn warm_if_bridged(self: &Arc<Self>) {
        let bridged = self
            .infra
            .privileged
            .link_exists(&self.infra.config.bridge_name)
            .unwrap_or(false);
        if bridged {
            self.refill_in_background();
        }
    }

    fn spawn_refill(self: &Arc<Self>) {
        let this = Arc::clone(self);
        let spawned = std::thread::Builder::new()
            .name("tap-pool".into())
            .spawn(move || {
                this.refill();
                this.refilling.store(false, Ordering::Release);
            });
        if spawned.is_err() {
            self.refilling.store(false, Ordering::Release);
        }
    }

    /// Startup: taps named `bt-*` that no live VM uses are re-adopted into the pool (when on
    /// the bridge and the pool has room) or deleted; then the pool is topped up.
    pub fn reconcile_taps(&self, in_use: &HashSet<String>) -> Result<(), RpcError> {
        let taps = self
            .infra
            .privileged
            .list_taps(TAP_PREFIX)
            .map_err(|e| net_err("tap pool", &e))?;
        let want = self.infra.config.tap_pool_size;
        let bridge = &self.infra.config.bridge_name;
        let mut adopted = 0usize;
        let mut removed = 0usize;
        for t in taps.into_iter().filter(|t| !in_use.contains(&t.name)) {
            let mut pool = self.pool();
            if pool.contains(&t.name) {
                continue;
            }
            if t.master.as_deref() == Some(bridge.as_str()) && !t.carrier && pool.len() < want {
                pool.push_back(t.name);
                adopted += 1;
            } else {
                drop(pool);
                let _ = self.delete_tap(&t.name);
                removed += 1;
            }
        }
        if adopted + removed > 0 {
            info!(adopted, removed, "tap pool: reconciled leftover taps");
        }
        Ok(())
    }

    /// Makes banger's nftables table exactly `spec` (one atomic transaction).
    pub fn apply_nat(&self, spec: &NatSpec) -> Result<(), RpcError> {
        self.infra.privileged.sync_nat(spec).map_err(|e| {
            net_err("nat", &e).with_hint(
                "NAT needs nftables (`nft`) and root; `banger vm set NAME --no-nat` turns it off",
            )
        })
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
