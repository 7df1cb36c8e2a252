//! Host facts the daemon reads while it runs: the host's CPUs and memory (sizing), and a
//! VMM process's CPU time and resident memory (stats, the poller). Behind [`HostProbe`] so
//! tests fix them.

use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

/// Host and process facts.
pub trait HostProbe: Send + Sync + std::fmt::Debug {
    /// The CPUs this process may use.
    fn host_cpus(&self) -> u32;
    /// The host's RAM in MiB, 0 when unknown.
    fn host_memory_mib(&self) -> u64;
    /// CPU time process `pid` (started at `start`) used so far; `None` when it is gone.
    fn cpu_time(&self, pid: u32, start: u64) -> Option<Duration>;
    /// Resident memory of process `pid` in KiB.
    fn rss_kib(&self, pid: u32) -> Option<u64>;
    /// Proportional set size of process `pid` in KiB (shared pages split between their
    /// users).
    fn pss_kib(&self, pid: u32) -> Option<u64>;
    /// Where host program `name` is: on `PATH`, else in `/usr/sbin` or `/sbin` (root's
    /// tools, often off an unprivileged user's `PATH`), else `~/.cargo/bin` (where
    /// `cargo install` puts tools such as `vhost-device-vsock`).
    fn which(&self, name: &str) -> Option<PathBuf>;
}

/// Reads `/proc` and the scheduler.
#[derive(Debug, Default, Clone, Copy)]
pub struct RealProbe;

impl HostProbe for RealProbe {
    fn host_cpus(&self) -> u32 {
        crate::process::host_cpus()
    }
    fn host_memory_mib(&self) -> u64 {
        crate::process::host_memory_mib()
    }
    fn cpu_time(&self, pid: u32, start: u64) -> Option<Duration> {
        crate::process::cpu_time(pid, start)
    }
    fn rss_kib(&self, pid: u32) -> Option<u64> {
        crate::process::rss_kib(pid)
    }
    fn pss_kib(&self, pid: u32) -> Option<u64> {
        crate::process::pss_kib(pid)
    }
    fn which(&self, name: &str) -> Option<PathBuf> {
        let cargo_bin = std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo/bin"));
        crate::process::find_in_path(name).or_else(|| {
            [
                Some(PathBuf::from("/usr/sbin")),
                Some(PathBuf::from("/sbin")),
                cargo_bin,
            ]
            .into_iter()
            .flatten()
            .map(|d| d.join(name))
            .find(|p| p.is_file())
        })
    }
}

/// Fixed answers a test sets: host size, and per-pid CPU time and RSS.
#[derive(Debug)]
pub struct FakeProbe {
    /// CPUs.
    pub cpus: u32,
    /// Memory in MiB.
    pub memory_mib: u64,
    /// `(pid, cpu time, rss KiB)` of processes that exist.
    pub processes: Mutex<Vec<(u32, Duration, u64)>>,
    /// Programs this host lacks (every other one is at `/usr/bin/<name>`).
    pub missing: Mutex<Vec<String>>,
}

impl Default for FakeProbe {
    fn default() -> Self {
        FakeProbe {
            cpus: 2,
            memory_mib: 8192,
            processes: Mutex::default(),
            missing: Mutex::default(),
        }
    }
}

impl FakeProbe {
    fn process(&self, pid: u32) -> Option<(u32, Duration, u64)> {
        self.processes
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
            .find(|p| p.0 == pid)
            .copied()
    }
}

impl HostProbe for FakeProbe {
    fn host_cpus(&self) -> u32 {
        self.cpus
    }
    fn host_memory_mib(&self) -> u64 {
        self.memory_mib
    }
    fn cpu_time(&self, pid: u32, _start: u64) -> Option<Duration> {
        self.process(pid).map(|p| p.1)
    }
    fn rss_kib(&self, pid: u32) -> Option<u64> {
        self.process(pid).map(|p| p.2)
    }
    fn pss_kib(&self, pid: u32) -> Option<u64> {
        // Nothing shared in the fake: PSS is RSS.
        self.process(pid).map(|p| p.2)
    }
    fn which(&self, name: &str) -> Option<PathBuf> {
        let missing = self
            .missing
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        (!missing.iter().any(|m| m == name)).then(|| PathBuf::from("/usr/bin").join(name))
    }
}
