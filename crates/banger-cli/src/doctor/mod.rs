//! `banger doctor`: what this host has, what banger will use, and what is missing, as
//! PASS/WARN/FAIL rows with a hint each. The checks are pure functions of [`Facts`] (host
//! facts behind a trait, so every path is tested with a fake) and [`DaemonFacts`].
//!
//! `machine` (architecture, KVM, tun, the VMM choice, firecracker, qemu), `tools` (host
//! programs), `state` (store, sizing defaults, ssh config), `daemon` (what bangerd reports),
//! `real` (the real host's facts) and `fix` (`doctor --fix`).

mod daemon;
mod fix;
mod machine;
mod real;
mod state;
#[cfg(test)]
mod tests;
mod tools;

pub(crate) use fix::fix;
pub(crate) use real::RealFacts;

use std::path::{Path, PathBuf};

use banger_api::types::{ImageInfo, NetStatus};
use banger_config::Config;
use serde::Serialize;

/// A row's verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub(crate) enum Level {
    Pass,
    Warn,
    Fail,
}

/// One row.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct Check {
    pub(crate) name: &'static str,
    pub(crate) level: Level,
    pub(crate) detail: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) hint: Option<String>,
    /// Debian packages that fix this row (`doctor --fix` installs them after asking).
    #[serde(skip)]
    pub(crate) packages: Vec<&'static str>,
    /// Crates whose binaries fix this row (`doctor --fix` cargo-installs them after asking).
    #[serde(skip)]
    pub(crate) crates: Vec<&'static str>,
}

/// What `field` of failing and warning `rows` names, each once, in order.
fn wanted(rows: &[Check], field: fn(&Check) -> &[&'static str]) -> Vec<&'static str> {
    let mut out: Vec<&'static str> = Vec::new();
    for p in rows
        .iter()
        .filter(|c| c.level != Level::Pass)
        .flat_map(|c| field(c).iter())
    {
        if !out.contains(p) {
            out.push(p);
        }
    }
    out
}

/// The Debian packages `doctor --fix` would install for `rows`, each once, in order.
pub(crate) fn packages_to_install(rows: &[Check]) -> Vec<&'static str> {
    wanted(rows, |c| &c.packages)
}

/// The crates `doctor --fix` would `cargo install` for `rows`, each once, in order.
pub(crate) fn crates_to_install(rows: &[Check]) -> Vec<&'static str> {
    wanted(rows, |c| &c.crates)
}

impl Check {
    pub(super) fn with_packages(mut self, packages: &[&'static str]) -> Self {
        self.packages = packages.to_vec();
        self
    }
}

pub(super) fn row(
    name: &'static str,
    level: Level,
    detail: impl Into<String>,
    hint: Option<String>,
) -> Check {
    Check {
        name,
        level,
        detail: detail.into(),
        hint,
        packages: Vec::new(),
        crates: Vec::new(),
    }
}

/// What `/dev/kvm`, the CPU and a probe guest say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Kvm {
    /// `/dev/kvm` exists.
    pub(crate) device: bool,
    /// It opens read-write for this user.
    pub(crate) usable: bool,
    /// The CPU exposes vmx or svm (absent under nested paravirtual KVM, which cannot run a
    /// stock guest kernel).
    pub(crate) hw_virt: bool,
    /// Why a tiny 64-bit probe guest did not run (`banger_host::kvm::probe`); `None` when it
    /// ran (or was not tried because the device is missing or closed).
    pub(crate) probe_error: Option<String>,
}

/// The store's schema, read-only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum StoreFact {
    Absent,
    Compatible,
    NeedsMigration(u32),
    Incompatible { db: u32, known: u32 },
    Unreadable(String),
}

/// Host facts.
pub(crate) trait Facts {
    fn arch(&self) -> String;
    fn kvm(&self) -> Kvm;
    fn which(&self, program: &str) -> Option<PathBuf>;
    /// The first line `program --version` prints.
    fn version(&self, program: &Path) -> Option<String>;
    fn store(&self) -> StoreFact;
    fn cpus_and_memory_mib(&self) -> (u32, u64);
    /// Whether `~/.ssh/config` includes banger's managed ssh config.
    fn ssh_config_included(&self) -> bool;
    /// `/dev/net/tun`: (exists, opens read-write for this user).
    fn tun(&self) -> (bool, bool);
}

/// What the daemon reported (each `None` when it could not be asked).
#[derive(Debug, Clone, Default)]
pub(crate) struct DaemonFacts {
    pub(crate) error: Option<String>,
    pub(crate) net: Option<NetStatus>,
    pub(crate) images: Option<Vec<ImageInfo>>,
    /// Whether `<name>.vm` resolves through the host's resolver.
    pub(crate) resolves_vm: bool,
    /// The guest agent the daemon uses (`None`: none found, or the daemon was not asked).
    pub(crate) agent: Option<String>,
}

pub(super) const APT: &str = "apt-get install -y";

/// Every check, in display order.
pub(crate) fn checks(f: &dyn Facts, cfg: &Config, d: &DaemonFacts) -> Vec<Check> {
    let mut out = Vec::new();
    machine::checks(f, cfg, &mut out);
    tools::checks(f, &mut out);
    state::checks(f, cfg, &mut out);
    daemon::checks(cfg, d, &mut out);
    out
}
