//! `HostNetwork`: bridge, warm tap pool, guest IP allocation, NAT and the `.vm` DNS records.
//!
//! Locks: `nat_lock` (tokio mutex) serializes whole NAT syncs (read the store → build the
//! spec → `nft`), so the last sync always reflects the latest store; it is taken after a VM
//! lock, never before one. `pool` (idle tap names), `dns_state` and the DNS records are leaf
//! locks, never held across a command.

use std::collections::{HashSet, VecDeque};
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex as StdMutex};

use banger_api::ErrorCode;
use banger_api::types::{DnsInfo, NatInfo, NetStatus, VmState};
use banger_host::PrivError;
use banger_host::nat::{NatEntry, NatSpec};
use banger_store::Store;
use tracing::{info, warn};

use super::support::{ServiceError, WorkerError, blocking, chain, lock, with_store};
use crate::dns::DnsRecords;
use crate::infra::Infra;

/// The prefix of every tap banger creates.
pub const TAP_PREFIX: &str = "bt-";

/// What went wrong in host networking; each variant names the step.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    /// Making or configuring the bridge.
    #[error("bridge")]
    Bridge(#[source] PrivError),
    /// Creating or deleting a tap.
    #[error("tap")]
    Tap(#[source] PrivError),
    /// Listing taps for the pool.
    #[error("tap pool")]
    TapPool(#[source] PrivError),
    /// Applying banger's nftables table.
    #[error("nat")]
    Nat(#[source] PrivError),
    /// NAT was asked for on a host without `nft`.
    #[error("nat needs nftables, and `nft` is not installed on this host")]
    NftMissing,
    /// Reading the store.
    #[error("store")]
    Store(#[from] crate::services::support::StoreCallError),
    /// A blocking step's worker failed.
    #[error(transparent)]
    Worker(#[from] WorkerError),
}

impl ServiceError for NetError {
    fn code(&self) -> ErrorCode {
        ErrorCode::OperationFailed
    }
    fn hint(&self) -> Option<String> {
        match self {
            NetError::Nat(_) => Some(
                "NAT needs nftables (`nft`) and root; `banger vm set NAME --no-nat` turns it off"
                    .into(),
            ),
            NetError::NftMissing => Some(
                "`apt-get install nftables` (or `banger doctor --fix`), or go without --nat".into(),
            ),
            NetError::Bridge(_) | NetError::Tap(_) => Some(
                "bridges and taps need root (or the root helper); `banger doctor` checks".into(),
            ),
            _ => None,
        }
    }
}

/// Which tap each VM holds (the VM service's handle cache answers): NAT rules name them.
pub trait TapIndex: Send + Sync + std::fmt::Debug {
    /// The tap VM `vm_id` holds, if it runs.
    fn tap_of(&self, vm_id: &str) -> Option<String>;
}

/// Host networking.
#[derive(Debug)]
pub struct HostNetwork {
    infra: Infra,
    taps: Arc<dyn TapIndex>,
    pool: StdMutex<VecDeque<String>>,
    refilling: AtomicBool,
    /// Serializes NAT syncs so the last one always reflects the latest store.
    nat_lock: tokio::sync::Mutex<()>,
    /// `<name>.vm` records served by the DNS server.
    dns: Arc<DnsRecords>,
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

impl HostNetwork {
    /// A new service; `taps` tells which tap each running VM holds.
    pub fn new(infra: Infra, taps: Arc<dyn TapIndex>) -> Self {
        HostNetwork {
            infra,
            taps,
            pool: StdMutex::default(),
            refilling: AtomicBool::new(false),
            nat_lock: tokio::sync::Mutex::new(()),
            dns: Arc::new(DnsRecords::default()),
            dns_state: StdMutex::default(),
        }
    }

    /// A copy of the DNS server's state.
    pub fn dns_status(&self) -> DnsState {
        lock(&self.dns_state).clone()
    }

    /// Points `<name>.vm` at `ip`.
    pub fn dns_set(&self, name: &str, ip: Ipv4Addr) {
        self.dns.set(name, ip);
    }

    /// Removes `<name>.vm`.
    pub fn dns_remove(&self, name: &str) {
        self.dns.remove(name);
    }

    /// Replaces every record (startup reconcile).
    pub fn dns_replace_all(&self, records: impl IntoIterator<Item = (String, Ipv4Addr)>) {
        self.dns.replace_all(records);
    }

    /// The records served now, sorted by name.
    pub fn dns_records(&self) -> Vec<(String, Ipv4Addr)> {
        self.dns.snapshot()
    }

    /// Starts the DNS server on `dns_listen` (unless it is empty). A port already taken is
    /// logged and reported by `net.status`; the daemon runs on without names.
    pub async fn start_dns(&self, shutdown: tokio_util::sync::CancellationToken) {
        let listen = self.infra.config.dns_listen.clone();
        if listen.is_empty() {
            lock(&self.dns_state).error = Some("disabled (dns_listen = \"\")".into());
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
                lock(&self.dns_state).listen = Some(bound);
            }
            Err(e) => {
                warn!("dns: {e}");
                lock(&self.dns_state).error = Some(e);
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
            let st = lock(&self.dns_state);
            (st.listen, st.resolver)
        }) else {
            return;
        };
        match self
            .infra
            .privileged
            .sync_resolver(&self.infra.config.bridge_name, addr)
        {
            Ok(r) => lock(&self.dns_state).resolver = Some(r),
            Err(e) => warn!(
                "dns: cannot route .vm through systemd-resolved: {}",
                chain(&e)
            ),
        }
    }

    /// Makes sure the bridge exists with its address, up.
    pub fn ensure_bridge(&self) -> Result<(), NetError> {
        let c = &self.infra.config;
        self.infra
            .privileged
            .ensure_bridge(&c.bridge_name, c.bridge_ip, c.cidr.prefix_len())
            .map_err(NetError::Bridge)?;
        self.sync_resolver();
        Ok(())
    }

    /// A tap on the bridge for a new VM: an idle one from the pool when there is one (O(1)),
    /// else a new one. The pool is refilled in the background either way.
    pub fn acquire_tap(self: &Arc<Self>) -> Result<String, NetError> {
        let pooled = lock(&self.pool).pop_front();
        let tap = match pooled {
            Some(t) => t,
            None => {
                let t = random_tap_name();
                self.infra
                    .privileged
                    .create_tap(&t, &self.infra.config.bridge_name)
                    .map_err(NetError::Tap)?;
                t
            }
        };
        self.refill_in_background();
        Ok(tap)
    }

    /// Deletes a tap (missing is fine).
    pub fn delete_tap(&self, tap: &str) -> Result<(), NetError> {
        self.infra.privileged.delete_tap(tap).map_err(NetError::Tap)
    }

    /// The idle taps, oldest first.
    pub fn idle_taps(&self) -> Vec<String> {
        lock(&self.pool).iter().cloned().collect()
    }

    /// Tops the pool up to `tap_pool_size`, creating the missing taps in parallel. Returns
    /// how many were created.
    pub fn refill(&self) -> usize {
        let want = self.infra.config.tap_pool_size;
        let missing = want.saturating_sub(lock(&self.pool).len());
        if missing == 0 {
            return 0;
        }
        if let Err(e) = self.ensure_bridge() {
            warn!("tap pool: {}", chain(&e));
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
            let mut pool = lock(&self.pool);
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

    /// Startup: taps named `bt-*` that no live VM uses are re-adopted into the pool (when on
    /// the bridge and the pool has room) or deleted; then the pool is topped up.
    pub fn reconcile_taps(&self, in_use: &HashSet<String>) -> Result<(), NetError> {
        let taps = self
            .infra
            .privileged
            .list_taps(TAP_PREFIX)
            .map_err(NetError::TapPool)?;
        let want = self.infra.config.tap_pool_size;
        let bridge = &self.infra.config.bridge_name;
        let mut adopted = 0usize;
        let mut removed = 0usize;
        for t in taps.into_iter().filter(|t| !in_use.contains(&t.name)) {
            let mut pool = lock(&self.pool);
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

    /// Whether NAT can work here: checked before a VM with NAT is created or gets NAT, so
    /// a missing `nft` fails at once instead of after a full boot.
    pub fn check_nat_possible(&self) -> Result<(), NetError> {
        if self.infra.probe.which("nft").is_none() {
            return Err(NetError::NftMissing);
        }
        Ok(())
    }

    /// Rebuilds banger's NAT table from the store: running VMs with NAT on that hold a tap.
    /// Holds `nat_lock` across the whole sync.
    pub async fn sync_nat(self: &Arc<Self>) -> Result<(), NetError> {
        let _nat = self.nat_lock.lock().await;
        let spec = NatSpec {
            bridge: self.infra.config.bridge_name.clone(),
            entries: self.nat_entries().await?,
        };
        let this = Arc::clone(self);
        blocking(move || this.infra.privileged.sync_nat(&spec).map_err(NetError::Nat)).await
    }

    /// The guests that should have NAT: running VMs with `nat` on, with the taps they hold.
    pub async fn nat_entries(&self) -> Result<Vec<NatEntry>, NetError> {
        let rows = with_store(&self.infra.store, Store::list_vms).await?;
        Ok(rows
            .into_iter()
            .filter(|r| r.vm.nat && r.vm.state == VmState::Running)
            .filter_map(|r| {
                Some(NatEntry {
                    ip: r.vm.guest_ip.parse().ok()?,
                    tap: self.taps.tap_of(&r.vm.id)?,
                    vm: r.vm.name,
                })
            })
            .collect())
    }

    /// Bridge, tap pool, NAT and DNS state (`net status`).
    pub async fn status(&self) -> Result<NetStatus, NetError> {
        let cfg = &self.infra.config;
        let nat = self
            .nat_entries()
            .await?
            .into_iter()
            .map(|e| NatInfo {
                vm: e.vm,
                ip: e.ip.to_string(),
                tap: e.tap,
            })
            .collect();
        let dns = self.dns_status();
        Ok(NetStatus {
            bridge: cfg.bridge_name.clone(),
            bridge_ip: cfg.bridge_ip.to_string(),
            cidr: cfg.cidr.to_string(),
            tap_pool_size: cfg.tap_pool_size,
            idle_taps: self.idle_taps(),
            nat,
            dns: DnsInfo {
                listen: dns.listen.map(|a| a.to_string()),
                error: dns.error,
                records: self
                    .dns_records()
                    .into_iter()
                    .map(|(n, ip)| (n, ip.to_string()))
                    .collect(),
                resolver: match dns.resolver {
                    Some(banger_host::ResolverRouting::Routed) => "routed",
                    Some(banger_host::ResolverRouting::NoResolved) => "no-resolved",
                    None => "unknown",
                }
                .into(),
            },
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
