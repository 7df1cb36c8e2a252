//! Observing VMs: listening ports, stats (VMM CPU/RSS on the host, load/memory/disk/uptime
//! from the guest), logs, and the background poller (CPU samples, stale-VM reaper).

use std::sync::Arc;
use std::time::Duration;

use banger_api::types::{GuestStats, PortInfo, VmState, VmStats};
use banger_store::{Store, VmRecord, VmRow};
use tracing::{info, warn};

use super::{Handles, VmError, VmService};
use crate::services::support::{blocking, chain, lock, unique_names, with_store};

/// Ports that are probably web servers, and their scheme.
fn web_scheme(port: u16) -> Option<&'static str> {
    match port {
        443 | 8443 => Some("https"),
        80 | 3000 | 3001 | 4000 | 4200 | 5000 | 5173 | 8000 | 8008 | 8080 | 8081 | 8888 | 9000 => {
            Some("http")
        }
        _ => None,
    }
}

/// Listening sockets as shown to users: `<name>.vm:port` when reachable from the host (not
/// loopback-only), and a URL for likely web ports. Sorted, duplicates (v4 + v6 wildcard)
/// merged.
pub fn port_infos(vm: &str, listeners: &[banger_host::Listener]) -> Vec<PortInfo> {
    let mut out: Vec<PortInfo> = Vec::new();
    for l in listeners {
        let reachable = !l.addr.is_loopback();
        let endpoint = reachable.then(|| format!("{vm}.vm:{}", l.port));
        let url = (reachable && l.proto == banger_host::Proto::Tcp)
            .then(|| web_scheme(l.port).map(|s| format!("{s}://{vm}.vm:{}/", l.port)))
            .flatten();
        let info = PortInfo {
            proto: l.proto.as_str().to_owned(),
            bind: l.addr.to_string(),
            port: l.port,
            endpoint,
            url,
        };
        // One row per (proto, port, reachability): `0.0.0.0` and `::` are the same service.
        if let Some(prev) = out.iter_mut().find(|p| {
            p.proto == info.proto
                && p.port == info.port
                && p.endpoint.is_some() == info.endpoint.is_some()
        }) {
            if prev.bind != info.bind && !prev.bind.contains(&info.bind) {
                prev.bind = format!("{},{}", prev.bind, info.bind);
            }
            continue;
        }
        out.push(info);
    }
    out.sort_by(|a, b| (a.proto.as_str(), a.port).cmp(&(b.proto.as_str(), b.port)));
    out
}

/// Whether `vm` was last touched before `cutoff` (an unreadable time counts as fresh).
fn is_stale(vm: &VmRecord, cutoff: jiff::Timestamp) -> bool {
    vm.last_touched_at
        .parse::<jiff::Timestamp>()
        .is_ok_and(|t| t < cutoff)
}

impl VmService {
    /// Listening ports of running VMs, read concurrently (names deduplicated, order kept).
    pub async fn ports_many(
        &self,
        names: &[String],
    ) -> Vec<(String, Result<Vec<PortInfo>, VmError>)> {
        let futures = unique_names(names)
            .into_iter()
            .map(|n| async move { (n.clone(), self.ports(n).await) });
        futures::future::join_all(futures).await
    }

    async fn ports(&self, name: &str) -> Result<Vec<PortInfo>, VmError> {
        let (target, vm) = self.guest_target(name).await?;
        let guest = Arc::clone(&self.infra.guest);
        let listeners =
            blocking(move || guest.listening(&target.addr).map_err(VmError::Ports)).await?;
        Ok(port_infos(&vm.name, &listeners))
    }

    /// Samples VM `id`'s VMM CPU time; returns the use since the previous sample (percent of
    /// one CPU) when that sample is at least `min_gap` old.
    fn sample_cpu(&self, id: &str, h: &Handles, min_gap: Duration) -> Option<f64> {
        let used = self.infra.probe.cpu_time(h.vmm.pid, h.vmm.start_time)?;
        let now = self.infra.clock.instant();
        let mut samples = lock(&self.cpu_samples);
        let prev = samples.get(id).copied();
        let pct = prev.and_then(|(t, c)| {
            let dt = now.duration_since(t);
            (dt >= min_gap && !dt.is_zero())
                .then(|| used.saturating_sub(c).as_secs_f64() * 100.0 / dt.as_secs_f64())
        });
        if prev.is_none() || pct.is_some() {
            samples.insert(id.to_owned(), (now, used));
        }
        pct
    }

    /// Numbers for VMs `names` (all when empty): VMM pid, CPU and RSS on the host; load,
    /// memory, disk and uptime from the guest (agent, else ssh). Marks nothing as used.
    pub async fn stats_many(&self, names: &[String]) -> Result<Vec<VmStats>, VmError> {
        let rows: Vec<VmRow> = if names.is_empty() {
            with_store(&self.infra.store, Store::list_vms).await?
        } else {
            let mut rows = Vec::new();
            for n in unique_names(names) {
                rows.push(self.get_row(n).await?);
            }
            rows
        };
        let futures = rows.into_iter().map(|row| self.stats(row.vm));
        Ok(futures::future::join_all(futures).await)
    }

    async fn stats(&self, vm: VmRecord) -> VmStats {
        let mut out = VmStats {
            name: vm.name.clone(),
            state: vm.state,
            pid: None,
            cpu_percent: None,
            rss_mib: None,
            pss_mib: None,
            guest: None,
            last_touched_at: vm.last_touched_at.clone(),
            error: None,
        };
        let Some(h) = self
            .handles
            .get(&vm.id)
            .filter(|h| self.infra.vmm.is_alive(&h.vmm))
        else {
            return out;
        };
        out.pid = Some(h.vmm.pid);
        out.rss_mib = self.infra.probe.rss_kib(h.vmm.pid).map(|k| k / 1024);
        out.pss_mib = self.infra.probe.pss_kib(h.vmm.pid).map(|k| k / 1024);
        let gap = Duration::from_millis(200);
        out.cpu_percent = match self.sample_cpu(&vm.id, &h, gap) {
            Some(p) => Some(p),
            None => {
                tokio::time::sleep(gap).await;
                self.sample_cpu(&vm.id, &h, gap)
            }
        };
        let guest = Arc::clone(&self.infra.guest);
        let addr = self.guest_addr(&vm);
        match blocking(move || Ok::<_, VmError>(guest.stats(&addr))).await {
            Ok(Ok((g, via))) => {
                out.guest = Some(GuestStats {
                    load: g.load,
                    mem_total_mib: g.mem_total_kib / 1024,
                    mem_available_mib: g.mem_available_kib / 1024,
                    disk_total_mib: g.disk_total_kib / 1024,
                    disk_used_mib: g.disk_used_kib / 1024,
                    uptime_s: g.uptime_s,
                    via: via.to_owned(),
                });
            }
            Ok(Err(e)) => out.error = Some(format!("guest stats: {e}")),
            Err(e) => out.error = Some(format!("guest stats: {}", chain(&e))),
        }
        out
    }

    /// One pass of the background poller: samples running VMs' VMM CPU and, when
    /// `auto_stop_stale_after` is set, stops running VMs nobody touched since `now` minus
    /// that. Returns the names it stopped.
    pub async fn poll_once(&self, now: jiff::Timestamp) -> Vec<String> {
        let Ok(rows) = with_store(&self.infra.store, Store::list_vms).await else {
            return Vec::new();
        };
        // Touched before this: stale (none when the reaper is off).
        let cutoff = self
            .infra
            .config
            .auto_stop_after()
            .and_then(|d| jiff::SignedDuration::try_from(d).ok())
            .and_then(|d| now.checked_sub(d).ok());
        let mut stopped = Vec::new();
        for row in rows.into_iter().filter(|r| r.vm.state == VmState::Running) {
            if let Some(h) = self.handles.get(&row.vm.id) {
                let _ = self.sample_cpu(&row.vm.id, &h, Duration::ZERO);
            }
            let Some(cutoff) = cutoff else { continue };
            if is_stale(&row.vm, cutoff) {
                // Re-check under the VM's lock: it may have been used meanwhile.
                let Ok((_held, row)) = self.lock_vm(&row.vm.id).await else {
                    continue;
                };
                let mut vm = row.vm;
                if vm.state != VmState::Running || !is_stale(&vm, cutoff) {
                    continue;
                }
                info!(vm = %vm.name, last_touched = %vm.last_touched_at, "stopping stale vm (auto_stop_stale_after)");
                match self.stop_locked(&mut vm).await {
                    Ok(()) => stopped.push(vm.name.clone()),
                    Err(e) => {
                        warn!(vm = %vm.name, "cannot stop stale vm: {}", chain(&e));
                    }
                }
            }
        }
        stopped
    }

    /// Runs [`VmService::poll_once`] every `stats_poll_interval` until `shutdown`.
    pub async fn poll_loop(self: Arc<Self>, shutdown: tokio_util::sync::CancellationToken) {
        let every = self.infra.config.stats_poll();
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(every) => {}
            }
            let _ = self.poll_once(self.infra.clock.now()).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_port_infos_endpoints_and_links() {
        use banger_host::Listener;
        let l = |proto: &str, addr: &str, port| Listener {
            proto: if proto == "tcp" {
                banger_host::Proto::Tcp
            } else {
                banger_host::Proto::Udp
            },
            addr: addr.parse().unwrap(),
            port,
        };
        let got = port_infos(
            "web",
            &[
                l("tcp", "0.0.0.0", 8080),
                l("tcp", "::", 8080),
                l("tcp", "127.0.0.1", 5432),
                l("tcp", "0.0.0.0", 22),
                l("udp", "0.0.0.0", 68),
            ],
        );
        let rows: Vec<(String, u16, Option<String>, Option<String>)> = got
            .into_iter()
            .map(|p| (p.proto, p.port, p.endpoint, p.url))
            .collect();
        assert_eq!(
            rows,
            [
                ("tcp".into(), 22, Some("web.vm:22".into()), None),
                ("tcp".into(), 5432, None, None),
                (
                    "tcp".into(),
                    8080,
                    Some("web.vm:8080".into()),
                    Some("http://web.vm:8080/".into())
                ),
                ("udp".into(), 68, Some("web.vm:68".into()), None),
            ]
        );
    }
}
