//! The real host's facts.

use std::path::{Path, PathBuf};

use super::{Facts, Kvm, StoreFact};

/// The real host.
#[derive(Debug)]
pub(crate) struct RealFacts {
    pub(crate) db: PathBuf,
    /// banger's managed ssh config.
    pub(crate) ssh_config: PathBuf,
}

impl Facts for RealFacts {
    fn arch(&self) -> String {
        std::env::consts::ARCH.to_owned()
    }

    fn kvm(&self) -> Kvm {
        let device = Path::new("/dev/kvm").exists();
        let usable = device
            && std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open("/dev/kvm")
                .is_ok();
        let hw_virt = std::fs::read_to_string("/proc/cpuinfo").is_ok_and(|c| {
            c.lines()
                .filter(|l| l.starts_with("flags"))
                .any(|l| l.split_whitespace().any(|f| f == "vmx" || f == "svm"))
        });
        let probe_error = if device && usable {
            banger_host::kvm::probe().err()
        } else {
            None
        };
        Kvm {
            device,
            usable,
            hw_virt,
            probe_error,
        }
    }

    fn tun(&self) -> (bool, bool) {
        let path = Path::new("/dev/net/tun");
        let rw = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .is_ok();
        (path.exists(), rw)
    }

    fn which(&self, program: &str) -> Option<PathBuf> {
        banger_host::HostProbe::which(&banger_host::RealProbe, program)
    }

    fn version(&self, program: &Path) -> Option<String> {
        let out = std::process::Command::new(program)
            .arg("--version")
            .output()
            .ok()?;
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .next()
            .map(|l| l.trim().to_owned())
    }

    fn store(&self) -> StoreFact {
        if !self.db.exists() {
            return StoreFact::Absent;
        }
        match banger_store::Store::inspect(&self.db) {
            Ok(banger_store::SchemaState::Compatible) => StoreFact::Compatible,
            Ok(banger_store::SchemaState::NeedsMigration { pending }) => {
                StoreFact::NeedsMigration(pending)
            }
            Ok(banger_store::SchemaState::Incompatible { db_version, known }) => {
                StoreFact::Incompatible {
                    db: db_version,
                    known,
                }
            }
            Err(e) => StoreFact::Unreadable(e.to_string()),
        }
    }

    fn ssh_config_included(&self) -> bool {
        let Some(home) = std::env::var_os("HOME") else {
            return false;
        };
        let line = format!("Include {}", self.ssh_config.display());
        std::fs::read_to_string(PathBuf::from(home).join(".ssh/config"))
            .is_ok_and(|t| t.lines().any(|l| l.trim() == line))
    }

    fn cpus_and_memory_mib(&self) -> (u32, u64) {
        (
            banger_host::process::host_cpus(),
            banger_host::process::host_memory_mib(),
        )
    }
}
