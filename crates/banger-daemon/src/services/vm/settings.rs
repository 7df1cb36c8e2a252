//! VM settings: names, sizes, sizing resolution at create and `vm set` afterwards. One
//! vCPU/memory check serves both.

use banger_api::types::{ValueSource, VmCreateParams, VmInfo, VmSetParams};
use serde::{Deserialize, Serialize};
use tracing::info;

use super::{VmError, VmService};

/// Checks a VM name: 1–63 of `[a-z0-9-]`, no leading or trailing `-`.
/// Checks VM labels: at most 8, keys and values of 1-63 characters of `a-z0-9._-` (values
/// may be empty).
pub(super) fn validate_labels(
    labels: &std::collections::BTreeMap<String, String>,
) -> Result<(), VmError> {
    let ok = |s: &str, empty_ok: bool| {
        (empty_ok || !s.is_empty())
            && s.len() <= 63
            && s.bytes().all(|b| {
                b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'-')
            })
    };
    if labels.len() > 8 {
        return Err(VmError::InvalidLabel("more than 8 labels".into()));
    }
    match labels.iter().find(|(k, v)| !ok(k, false) || !ok(v, true)) {
        Some((k, v)) => Err(VmError::InvalidLabel(format!("{k}={v}"))),
        None => Ok(()),
    }
}

pub fn validate_name(name: &str) -> Result<(), VmError> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-')
        && name != crate::dns::PROBE_NAME;
    if ok {
        Ok(())
    } else {
        Err(VmError::InvalidName(name.to_owned()))
    }
}

/// Parses a size like `8G`, `512M`, `2GiB` or a byte count.
pub fn parse_size(text: &str) -> Result<u64, VmError> {
    let t = text.trim();
    let split = t
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let num: f64 = num
        .parse()
        .map_err(|_| VmError::InvalidSize(text.to_owned()))?;
    let scale: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        "t" | "tb" | "tib" => 1 << 40,
        _ => return Err(VmError::InvalidSizeUnit(text.to_owned())),
    };
    Ok((num * scale as f64) as u64)
}

/// The vCPU and memory limits, for create and `vm set` alike (`host_mib` 0: unknown).
fn check_cpu_memory(
    vcpu: Option<u32>,
    memory_mib: Option<u64>,
    host_mib: u64,
) -> Result<(), VmError> {
    if let Some(v) = vcpu
        && (v == 0 || v > 64)
    {
        return Err(VmError::VcpuOutOfRange(v));
    }
    if let Some(m) = memory_mib {
        if m < 128 {
            return Err(VmError::MemoryTooSmall(m));
        }
        if host_mib > 0 && m > host_mib {
            return Err(VmError::MemoryOverHost {
                memory: m,
                host: host_mib,
            });
        }
    }
    Ok(())
}

/// Resolved sizing with where each value came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sizing {
    /// vCPUs.
    pub vcpu: (u32, ValueSource),
    /// MiB.
    pub memory_mib: (u64, ValueSource),
    /// Bytes.
    pub disk_bytes: (u64, ValueSource),
}

/// Flag → `[vm_defaults]` → host heuristic (cpus/4 ≤ 4; RAM/8 ≤ 8 GiB) → builtin floor.
pub fn resolve_sizing(
    p: &VmCreateParams,
    d: &banger_config::VmDefaults,
    cpus: u32,
    mem_mib: u64,
) -> Result<Sizing, VmError> {
    let vcpu = match (p.vcpu, d.vcpu, banger_config::auto_vcpu(cpus)) {
        (Some(v), _, _) => (v, ValueSource::Flag),
        (None, Some(v), _) => (v, ValueSource::Config),
        (None, None, Some(v)) => (v, ValueSource::Auto),
        _ => (1, ValueSource::Builtin),
    };
    let memory_mib = match (
        p.memory_mib,
        d.memory_mib,
        banger_config::auto_memory_mib(mem_mib),
    ) {
        (Some(v), _, _) => (v, ValueSource::Flag),
        (None, Some(v), _) => (v, ValueSource::Config),
        (None, None, Some(v)) => (v, ValueSource::Auto),
        _ => (512, ValueSource::Builtin),
    };
    let disk_bytes = match (&p.disk_size, &d.disk_size) {
        (Some(s), _) => (parse_size(s)?, ValueSource::Flag),
        (None, Some(s)) => (parse_size(s)?, ValueSource::Config),
        _ => (8 << 30, ValueSource::Builtin),
    };
    check_cpu_memory(Some(vcpu.0), Some(memory_mib.0), mem_mib)?;
    if disk_bytes.0 < (256 << 20) {
        return Err(VmError::DiskTooSmall);
    }
    Ok(Sizing {
        vcpu,
        memory_mib,
        disk_bytes,
    })
}

impl VmService {
    /// Sizing for a create, from its flags, config and the host.
    pub(super) fn sizing(&self, p: &VmCreateParams) -> Result<Sizing, VmError> {
        resolve_sizing(
            p,
            &self.infra.config.vm_defaults,
            self.infra.probe.host_cpus(),
            self.infra.probe.host_memory_mib(),
        )
    }

    /// Changes a VM's settings: NAT at any time (applied at once to a running VM), vCPUs and
    /// memory only while it is stopped.
    pub async fn set(&self, p: VmSetParams) -> Result<VmInfo, VmError> {
        if p.nat.is_none() && p.vcpu.is_none() && p.memory_mib.is_none() {
            return Err(VmError::NothingToChange);
        }
        check_cpu_memory(p.vcpu, p.memory_mib, self.infra.probe.host_memory_mib())?;
        if p.nat == Some(true) {
            self.network.check_nat_possible()?;
        }
        let (_guard, row) = self.lock_vm(&p.name).await?;
        let mut vm = row.vm;
        let alive = self.vmm_alive(&vm.id);
        if (p.vcpu.is_some() || p.memory_mib.is_some()) && alive {
            return Err(VmError::RunningSizing(vm.name));
        }
        let old_nat = vm.nat;
        if let Some(n) = p.nat {
            vm.nat = n;
        }
        if let Some(v) = p.vcpu {
            vm.vcpu = v;
        }
        if let Some(m) = p.memory_mib {
            vm.memory_mib = m;
        }
        vm.updated_at = self.infra.clock.now_rfc3339();
        self.save(&vm).await?;
        if vm.nat != old_nat && alive {
            if let Err(e) = self.network.sync_nat().await {
                // Put the setting back so the store keeps matching the host.
                vm.nat = old_nat;
                self.save(&vm).await?;
                let _ = self.network.sync_nat().await;
                return Err(e.into());
            }
            info!(vm = vm.name, nat = vm.nat, "nat changed on a running vm");
        }
        self.show(&vm.id).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_validate_name() {
        for ok in ["a", "web-1", "x".repeat(63).as_str()] {
            assert!(validate_name(ok).is_ok(), "{ok}");
        }
        for bad in ["", "-a", "a-", "Web", "a_b", "a.b", &"x".repeat(64)] {
            assert!(validate_name(bad).is_err(), "{bad}");
        }
        assert!(validate_name(&super::super::create::generate_name()).is_ok());
    }

    #[test]
    fn test_parse_size() {
        assert_eq!(parse_size("8G").unwrap(), 8 << 30);
        assert_eq!(parse_size("512M").unwrap(), 512 << 20);
        assert_eq!(parse_size("2GiB").unwrap(), 2 << 30);
        assert_eq!(parse_size("1.5G").unwrap(), 3 << 29);
        assert!(parse_size("lots").is_err());
        assert!(parse_size("8Q").is_err());
    }

    #[test]
    fn test_one_cpu_memory_check_for_create_and_set() {
        assert!(check_cpu_memory(Some(1), Some(128), 1024).is_ok());
        assert!(matches!(
            check_cpu_memory(Some(0), None, 0),
            Err(VmError::VcpuOutOfRange(0))
        ));
        assert!(matches!(
            check_cpu_memory(Some(65), None, 0),
            Err(VmError::VcpuOutOfRange(65))
        ));
        assert!(matches!(
            check_cpu_memory(None, Some(64), 0),
            Err(VmError::MemoryTooSmall(64))
        ));
        assert!(matches!(
            check_cpu_memory(None, Some(4096), 2048),
            Err(VmError::MemoryOverHost {
                memory: 4096,
                host: 2048
            })
        ));
        assert!(
            check_cpu_memory(None, Some(4096), 0).is_ok(),
            "unknown host size"
        );
    }

    #[test]
    fn test_resolve_sizing_sources_and_limits() {
        let none = VmCreateParams::default();
        let d = banger_config::VmDefaults::default();
        let s = resolve_sizing(&none, &d, 2, 24_000).unwrap();
        assert_eq!(s.vcpu, (1, ValueSource::Builtin));
        assert_eq!(s.memory_mib, (3000, ValueSource::Auto));
        assert_eq!(s.disk_bytes, (8 << 30, ValueSource::Builtin));
        let s = resolve_sizing(&none, &d, 32, 128_000).unwrap();
        assert_eq!(s.vcpu, (4, ValueSource::Auto));
        assert_eq!(s.memory_mib, (8192, ValueSource::Auto));
        let cfg = banger_config::VmDefaults {
            vcpu: Some(2),
            memory_mib: Some(1024),
            disk_size: Some("2G".into()),
        };
        let s = resolve_sizing(&none, &cfg, 2, 24_000).unwrap();
        assert_eq!(
            (s.vcpu.1, s.memory_mib.1, s.disk_bytes.1),
            (
                ValueSource::Config,
                ValueSource::Config,
                ValueSource::Config
            )
        );
        let flags = VmCreateParams {
            vcpu: Some(0),
            ..Default::default()
        };
        assert!(resolve_sizing(&flags, &d, 2, 24_000).is_err());
        let flags = VmCreateParams {
            memory_mib: Some(1),
            ..Default::default()
        };
        assert!(resolve_sizing(&flags, &d, 2, 24_000).is_err());
    }
}
