//! Per-VM cgroups: every VMM process runs in a cgroup of its own with memory, CPU and pid
//! limits derived from the VM's spec, so a guest cannot starve the host.
//!
//! Where: `<hierarchy>/banger/<instance>/<vm-id>`, where `instance` names the daemon (a hash
//! of its state directory, so two daemons on one host never touch each other's cgroups).
//! cgroup v2 (the unified hierarchy: `memory.max`, `memory.swap.max`, `cpu.max`,
//! `pids.max`) where the host has it, else the v1 `memory`, `cpu` and `pids` hierarchies
//! (`memory.limit_in_bytes`, `cpu.cfs_quota_us`/`cpu.cfs_period_us`, `pids.max`).
//!
//! The VMM enters its cgroup before it runs a single instruction of its own: the spawned
//! process writes `0` to each `cgroup.procs` between fork and exec
//! ([`CgroupEntry::apply`]), so everything it allocates, and every process it forks
//! (QEMU's daemonized child), is charged there.

use std::fmt;
use std::fs::File;
use std::os::fd::{AsRawFd, RawFd};
use std::path::{Path, PathBuf};
use std::process::Command;

use serde::{Deserialize, Serialize};

/// The CPU period (µs) of every VM cgroup; the quota is `vcpu` times it.
pub const CPU_PERIOD_US: u64 = 100_000;
/// Host CPUs a VMM may use beyond one per vCPU: its own threads (main loop, I/O, and
/// under TCG the translator) work beside the vCPUs; capping them at the vCPU count slowed a
/// 1-vCPU TCG boot from 6.6 s to 8.6 s here.
pub const CPU_OVERHEAD: u64 = 1;
/// Tasks (processes and threads) a VMM may have: its vCPUs, I/O and worker threads.
pub const PIDS_MAX: u64 = 512;
/// Host memory a VMM may use beyond the guest's own RAM (its code, device emulation,
/// buffers). QEMU under TCG adds its translation cache on top (see `Vmm::memory_overhead_mib`).
pub const MEMORY_OVERHEAD_MIB: u64 = 256;

/// The limits of one VM's cgroup.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    /// Memory (guest RAM plus the VMM's overhead), bytes; swap is not allowed on v2.
    pub memory_bytes: u64,
    /// CPU time per [`CPU_PERIOD_US`], µs: one host CPU per vCPU plus [`CPU_OVERHEAD`].
    pub cpu_quota_us: u64,
    /// Tasks.
    pub pids: u64,
}

impl Limits {
    /// The limits of a VM with `vcpu` vCPUs and `memory_mib` of RAM whose VMM needs
    /// `overhead_mib` more.
    #[must_use]
    pub fn for_vm(vcpu: u32, memory_mib: u64, overhead_mib: u64) -> Limits {
        Limits {
            memory_bytes: (memory_mib + overhead_mib) << 20,
            cpu_quota_us: (u64::from(vcpu.max(1)) + CPU_OVERHEAD) * CPU_PERIOD_US,
            pids: PIDS_MAX,
        }
    }
}

/// What a VM's cgroup holds right now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    /// The cgroup's directory (v1: the memory hierarchy's).
    pub path: PathBuf,
    /// Its limits as the kernel has them.
    pub limits: Limits,
    /// Memory charged now, bytes.
    pub memory_bytes: u64,
    /// The most ever charged, bytes (v1 `max_usage_in_bytes`, v2 `memory.peak` where the
    /// kernel has it).
    pub memory_peak_bytes: Option<u64>,
    /// Tasks now.
    pub pids: u64,
    /// Periods in which the CPU quota stopped the VMM.
    pub cpu_throttled_periods: u64,
    /// Processes in it.
    pub procs: Vec<u32>,
}

/// Errors of cgroup setup.
#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    /// The host has no usable cgroup hierarchy for a controller.
    #[error("no cgroup {0} controller is mounted")]
    NoController(&'static str),
    /// A cgroup file or directory could not be written.
    #[error("cannot write cgroup file {path}")]
    Io {
        /// Path.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> CgroupError + '_ {
    move |source| CgroupError::Io {
        path: path.to_owned(),
        source,
    }
}

/// The cgroup hierarchies in use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Hierarchy {
    /// The unified hierarchy mounted at `root`.
    V2 {
        /// Mount point (`/sys/fs/cgroup`).
        root: PathBuf,
    },
    /// Separate v1 hierarchies.
    V1 {
        /// The `memory` controller's mount.
        memory: PathBuf,
        /// The `cpu` controller's mount.
        cpu: PathBuf,
        /// The `pids` controller's mount.
        pids: PathBuf,
    },
}

impl Hierarchy {
    /// Reads the host's cgroup mounts (`/proc/self/mountinfo`): v2 when a `cgroup2` mount
    /// has the memory, cpu and pids controllers, else the v1 mounts of the three.
    pub fn detect() -> Result<Hierarchy, CgroupError> {
        let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        Self::from_mountinfo(&text, |p| {
            std::fs::read_to_string(p.join("cgroup.controllers")).unwrap_or_default()
        })
    }

    /// [`Hierarchy::detect`]; where this mount namespace shows no cgroup hierarchy at all
    /// (`ip netns exec` mounts a fresh `/sys` without them), mounts the host's own under
    /// `dir` (root only) — the same hierarchies, with the controllers grouped as
    /// `/proc/cgroups` says the host has them, so limits set here are the host's.
    pub fn detect_or_mount(dir: &Path) -> Result<Hierarchy, CgroupError> {
        let found = Self::detect();
        if found.is_ok() {
            return found;
        }
        let text = std::fs::read_to_string("/proc/cgroups").unwrap_or_default();
        let Some(groups) = controller_groups(&text) else {
            return found;
        };
        let mount = |name: &str, fstype: &str, opts: &str| -> Result<PathBuf, CgroupError> {
            let at = dir.join(name);
            std::fs::create_dir_all(&at).map_err(io_err(&at))?;
            let already = std::fs::read_dir(&at).is_ok_and(|mut d| d.next().is_some());
            if !already {
                let data = std::ffi::CString::new(opts).unwrap_or_default();
                rustix::mount::mount(
                    "cgroup",
                    &at,
                    fstype,
                    rustix::mount::MountFlags::NOSUID
                        | rustix::mount::MountFlags::NODEV
                        | rustix::mount::MountFlags::NOEXEC,
                    data.as_c_str(),
                )
                .map_err(|e| CgroupError::Io {
                    path: at.clone(),
                    source: e.into(),
                })?;
            }
            Ok(at)
        };
        match groups {
            Groups::V2 => Ok(Hierarchy::V2 {
                root: mount("unified", "cgroup2", "")?,
            }),
            Groups::V1([memory, cpu, pids]) => Ok(Hierarchy::V1 {
                memory: mount(&memory, "cgroup", &memory)?,
                cpu: mount(&cpu, "cgroup", &cpu)?,
                pids: mount(&pids, "cgroup", &pids)?,
            }),
        }
    }

    /// [`Hierarchy::detect`] over a mountinfo text; `controllers` reads a v2 mount's
    /// `cgroup.controllers`.
    pub fn from_mountinfo(
        text: &str,
        controllers: impl Fn(&Path) -> String,
    ) -> Result<Hierarchy, CgroupError> {
        let mut v1: [Option<PathBuf>; 3] = [None, None, None];
        let names = ["memory", "cpu", "pids"];
        for line in text.lines() {
            // id parent major:minor root mountpoint options [optional...] - fstype source superopts
            let Some((left, right)) = line.split_once(" - ") else {
                continue;
            };
            let mount = left.split(' ').nth(4).map(unescape);
            let mut r = right.split(' ');
            let (fstype, super_opts) = (r.next(), r.nth(1).unwrap_or(""));
            let Some(mount) = mount else { continue };
            match fstype {
                Some("cgroup2") => {
                    let have = controllers(&mount);
                    let have: Vec<&str> = have.split_whitespace().collect();
                    if names.iter().all(|n| have.contains(n)) {
                        return Ok(Hierarchy::V2 { root: mount });
                    }
                }
                Some("cgroup") => {
                    for (slot, name) in v1.iter_mut().zip(names) {
                        if super_opts.split(',').any(|o| o == name) {
                            *slot = Some(mount.clone());
                        }
                    }
                }
                _ => {}
            }
        }
        let [memory, cpu, pids] = v1;
        Ok(Hierarchy::V1 {
            memory: memory.ok_or(CgroupError::NoController("memory"))?,
            cpu: cpu.ok_or(CgroupError::NoController("cpu"))?,
            pids: pids.ok_or(CgroupError::NoController("pids"))?,
        })
    }

    /// `v2` or `v1`.
    #[must_use]
    pub fn version(&self) -> &'static str {
        match self {
            Hierarchy::V2 { .. } => "v2",
            Hierarchy::V1 { .. } => "v1",
        }
    }
}

/// How the host groups the controllers banger needs.
#[derive(Debug, PartialEq, Eq)]
enum Groups {
    /// All in the unified hierarchy.
    V2,
    /// The v1 hierarchy (its controllers joined by `,`, as mount options) of memory, cpu and
    /// pids.
    V1([String; 3]),
}

/// Reads `/proc/cgroups` (`name hierarchy-id cgroups enabled`): controllers with one
/// hierarchy id are mounted together; id 0 is the unified hierarchy.
fn controller_groups(text: &str) -> Option<Groups> {
    let rows: Vec<(&str, u32)> = text
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let name = f.next()?;
            let id = f.next()?.parse().ok()?;
            (f.nth(1)? == "1").then_some((name, id))
        })
        .collect();
    let id_of = |n: &str| rows.iter().find(|(name, _)| *name == n).map(|r| r.1);
    let ids = [id_of("memory")?, id_of("cpu")?, id_of("pids")?];
    if ids.iter().all(|id| *id == 0) {
        return Some(Groups::V2);
    }
    if ids.contains(&0) {
        return None;
    }
    let group = |id: u32| {
        rows.iter()
            .filter(|r| r.1 == id)
            .map(|r| r.0)
            .collect::<Vec<_>>()
            .join(",")
    };
    Some(Groups::V1(ids.map(group)))
}

/// mountinfo escapes spaces and such as `\040`.
fn unescape(s: &str) -> PathBuf {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            out.push((b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    PathBuf::from(<std::ffi::OsString as std::os::unix::ffi::OsStringExt>::from_vec(out))
}

/// The daemon instance's name under `banger/`: a hash of its state directory.
#[must_use]
pub fn instance_name(state_dir: &Path) -> String {
    // FNV-1a: stable across builds and platforms, which std's hasher is not.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in state_dir.as_os_str().as_encoded_bytes() {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{h:016x}")
}

/// The cgroups of one daemon's VMs.
#[derive(Debug, Clone)]
pub struct VmCgroups {
    hierarchy: Hierarchy,
    /// Relative to each hierarchy's root: `banger/<instance>`.
    parent: PathBuf,
}

/// Opened `cgroup.procs` files a process about to be spawned enters (see the module doc).
/// Keep it alive until the spawn returned.
pub struct CgroupEntry {
    files: Vec<File>,
}

impl fmt::Debug for CgroupEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CgroupEntry")
            .field("fds", &self.files.len())
            .finish()
    }
}

impl CgroupEntry {
    /// Opens the `cgroup.procs` files (each a directory's `cgroup.procs`).
    pub fn open(procs: &[PathBuf]) -> Result<CgroupEntry, CgroupError> {
        let files = procs
            .iter()
            .map(|p| {
                std::fs::OpenOptions::new()
                    .write(true)
                    .open(p)
                    .map_err(io_err(p))
            })
            .collect::<Result<_, _>>()?;
        Ok(CgroupEntry { files })
    }

    /// Makes `cmd`'s process enter the cgroups between fork and exec. The files are
    /// close-on-exec: the VMM never sees them.
    #[allow(unsafe_code)] // `pre_exec` is the one way to run code between fork and exec.
    pub fn apply(&self, cmd: &mut Command) {
        use std::os::unix::process::CommandExt;
        let fds: Vec<RawFd> = self.files.iter().map(AsRawFd::as_raw_fd).collect();
        // SAFETY: the closure runs in the forked child before exec, where only
        // async-signal-safe calls are allowed: it calls write(2) on descriptors that stay
        // open (self outlives the spawn, the caller's contract) and allocates nothing.
        unsafe {
            cmd.pre_exec(move || {
                for fd in &fds {
                    // "0": the writing process itself.
                    if libc::write(*fd, b"0".as_ptr().cast(), 1) != 1 {
                        return Err(std::io::Error::last_os_error());
                    }
                }
                Ok(())
            });
        }
    }
}

impl VmCgroups {
    /// VM cgroups under `banger/<instance>` of `hierarchy`; creates that directory (and
    /// on v2 enables the controllers down to it). Fails where the daemon may not
    /// (an unprivileged daemon without a delegated cgroup).
    pub fn new(hierarchy: Hierarchy, instance: &str) -> Result<VmCgroups, CgroupError> {
        let cg = VmCgroups {
            hierarchy,
            parent: Path::new("banger").join(instance),
        };
        match &cg.hierarchy {
            Hierarchy::V2 { root } => {
                let mut dir = root.clone();
                for part in [Path::new("banger"), Path::new(instance)] {
                    enable_controllers(&dir)?;
                    dir = dir.join(part);
                    mkdir(&dir)?;
                }
                enable_controllers(&dir)?;
            }
            Hierarchy::V1 { .. } => {
                for root in cg.roots() {
                    let dir = root.join(&cg.parent);
                    std::fs::create_dir_all(&dir).map_err(io_err(&dir))?;
                }
            }
        }
        Ok(cg)
    }

    /// The hierarchy in use.
    #[must_use]
    pub fn hierarchy(&self) -> &Hierarchy {
        &self.hierarchy
    }

    fn roots(&self) -> Vec<&Path> {
        match &self.hierarchy {
            Hierarchy::V2 { root } => vec![root],
            Hierarchy::V1 { memory, cpu, pids } => vec![memory, cpu, pids],
        }
    }

    /// VM `name`'s cgroup directory in each hierarchy (v1: memory, cpu, pids).
    fn dirs(&self, name: &str) -> Vec<PathBuf> {
        self.roots()
            .iter()
            .map(|r| r.join(&self.parent).join(name))
            .collect()
    }

    /// VM `name`'s cgroup directory (v1: in the memory hierarchy).
    #[must_use]
    pub fn path(&self, name: &str) -> PathBuf {
        self.roots()[0].join(&self.parent).join(name)
    }

    /// Creates (or re-creates) VM `name`'s cgroup with `limits`; returns the
    /// `cgroup.procs` files its VMM enters ([`CgroupEntry`]).
    pub fn create(&self, name: &str, limits: &Limits) -> Result<Vec<PathBuf>, CgroupError> {
        let made = self.create_inner(name, limits);
        if made.is_err() {
            self.remove(name);
        }
        made
    }

    fn create_inner(&self, name: &str, l: &Limits) -> Result<Vec<PathBuf>, CgroupError> {
        let dirs = self.dirs(name);
        for d in &dirs {
            mkdir(d)?;
        }
        let quota = l.cpu_quota_us.to_string();
        match &self.hierarchy {
            Hierarchy::V2 { .. } => {
                let d = &dirs[0];
                write(&d.join("memory.max"), &l.memory_bytes.to_string())?;
                // Absent without swap accounting: nothing to cap then.
                let swap = d.join("memory.swap.max");
                if swap.exists() {
                    write(&swap, "0")?;
                }
                write(&d.join("cpu.max"), &format!("{quota} {CPU_PERIOD_US}"))?;
                write(&d.join("pids.max"), &l.pids.to_string())?;
            }
            Hierarchy::V1 { .. } => {
                write(
                    &dirs[0].join("memory.limit_in_bytes"),
                    &l.memory_bytes.to_string(),
                )?;
                write(
                    &dirs[1].join("cpu.cfs_period_us"),
                    &CPU_PERIOD_US.to_string(),
                )?;
                write(&dirs[1].join("cpu.cfs_quota_us"), &quota)?;
                write(&dirs[2].join("pids.max"), &l.pids.to_string())?;
            }
        }
        Ok(dirs.iter().map(|d| d.join("cgroup.procs")).collect())
    }

    /// Removes VM `name`'s cgroup (nothing when it is gone; the kernel refuses while a
    /// process is still in it). Returns whether none is left.
    pub fn remove(&self, name: &str) -> bool {
        let left = self.remove_quietly(name);
        for (dir, e) in &left {
            tracing::warn!(path = %dir.display(), "cannot remove cgroup: {e}");
        }
        left.is_empty()
    }

    /// [`VmCgroups::remove`] without the warnings, for a caller that retries (a killed VMM
    /// leaves its cgroup only once it has been reaped): what is left, and why.
    pub fn remove_quietly(&self, name: &str) -> Vec<(PathBuf, std::io::Error)> {
        let mut left = Vec::new();
        for dir in self.dirs(name) {
            match std::fs::remove_dir(&dir) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => left.push((dir, e)),
            }
        }
        left
    }

    /// Removes this daemon's own `banger/<instance>` directories when no VM cgroup is left
    /// in them (a daemon stopping with VMs running keeps them).
    pub fn remove_instance(&self) {
        for root in self.roots() {
            let _ = std::fs::remove_dir(root.join(&self.parent));
        }
    }

    /// Names of the VM cgroups that exist.
    #[must_use]
    pub fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = Vec::new();
        for root in self.roots() {
            let Ok(entries) = std::fs::read_dir(root.join(&self.parent)) else {
                continue;
            };
            for e in entries.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if e.path().is_dir() && !names.contains(&name) {
                    names.push(name);
                }
            }
        }
        names.sort();
        names
    }

    /// What VM `name`'s cgroup holds; none when it does not exist.
    #[must_use]
    pub fn usage(&self, name: &str) -> Option<Usage> {
        let dirs = self.dirs(name);
        if !dirs[0].is_dir() {
            return None;
        }
        let num = |p: PathBuf| read_u64(&p);
        let procs = std::fs::read_to_string(dirs[0].join("cgroup.procs"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .collect();
        let throttled = |p: PathBuf| {
            std::fs::read_to_string(p)
                .unwrap_or_default()
                .lines()
                .find_map(|l| l.strip_prefix("nr_throttled ")?.trim().parse().ok())
                .unwrap_or(0)
        };
        Some(match &self.hierarchy {
            Hierarchy::V2 { .. } => {
                let d = &dirs[0];
                let cpu = std::fs::read_to_string(d.join("cpu.max")).unwrap_or_default();
                Usage {
                    path: d.clone(),
                    limits: Limits {
                        memory_bytes: num(d.join("memory.max")).unwrap_or(u64::MAX),
                        cpu_quota_us: cpu
                            .split_whitespace()
                            .next()
                            .and_then(|q| q.parse().ok())
                            .unwrap_or(u64::MAX),
                        pids: num(d.join("pids.max")).unwrap_or(u64::MAX),
                    },
                    memory_bytes: num(d.join("memory.current")).unwrap_or(0),
                    memory_peak_bytes: num(d.join("memory.peak")),
                    pids: num(d.join("pids.current")).unwrap_or(0),
                    cpu_throttled_periods: throttled(d.join("cpu.stat")),
                    procs,
                }
            }
            Hierarchy::V1 { .. } => {
                let (m, c, p) = (&dirs[0], &dirs[1], &dirs[2]);
                let quota = std::fs::read_to_string(c.join("cpu.cfs_quota_us"))
                    .ok()
                    .and_then(|q| q.trim().parse::<i64>().ok())
                    .and_then(|q| u64::try_from(q).ok())
                    .unwrap_or(u64::MAX);
                Usage {
                    path: m.clone(),
                    limits: Limits {
                        memory_bytes: num(m.join("memory.limit_in_bytes")).unwrap_or(u64::MAX),
                        cpu_quota_us: quota,
                        pids: num(p.join("pids.max")).unwrap_or(u64::MAX),
                    },
                    memory_bytes: num(m.join("memory.usage_in_bytes")).unwrap_or(0),
                    memory_peak_bytes: num(m.join("memory.max_usage_in_bytes")),
                    pids: num(p.join("pids.current")).unwrap_or(0),
                    cpu_throttled_periods: throttled(c.join("cpu.stat")),
                    procs,
                }
            }
        })
    }
}

/// A number file; `max` reads as `u64::MAX`.
fn read_u64(path: &Path) -> Option<u64> {
    let text = std::fs::read_to_string(path).ok()?;
    let text = text.trim();
    if text == "max" {
        return Some(u64::MAX);
    }
    text.parse().ok()
}

fn mkdir(dir: &Path) -> Result<(), CgroupError> {
    match std::fs::create_dir(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(source) => Err(CgroupError::Io {
            path: dir.to_owned(),
            source,
        }),
    }
}

fn write(path: &Path, value: &str) -> Result<(), CgroupError> {
    std::fs::write(path, value).map_err(io_err(path))
}

/// v2: lets `dir`'s children use the memory, cpu and pids controllers.
fn enable_controllers(dir: &Path) -> Result<(), CgroupError> {
    let path = dir.join("cgroup.subtree_control");
    let on = std::fs::read_to_string(&path).unwrap_or_default();
    let missing: Vec<String> = ["memory", "cpu", "pids"]
        .iter()
        .filter(|c| !on.split_whitespace().any(|o| o == **c))
        .map(|c| format!("+{c}"))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    write(&path, &missing.join(" "))
}

#[cfg(test)]
mod tests {
    use super::*;

    const V1: &str = "\
25 1 0:23 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
26 25 0:24 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
27 25 0:25 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
28 25 0:26 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
";

    #[test]
    fn test_detect_reads_v1_and_v2_mounts() {
        assert_eq!(
            Hierarchy::from_mountinfo(V1, |_| String::new()).unwrap(),
            Hierarchy::V1 {
                memory: "/sys/fs/cgroup/memory".into(),
                cpu: "/sys/fs/cgroup/cpu".into(),
                pids: "/sys/fs/cgroup/pids".into(),
            }
        );
        let co = "30 1 0:27 / /sys/fs/cgroup/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct\n";
        let mixed = format!("{}{co}", V1.replace("rw,cpu\n", "rw,cpuset\n"));
        let Hierarchy::V1 { cpu, .. } =
            Hierarchy::from_mountinfo(&mixed, |_| String::new()).unwrap()
        else {
            panic!("v1 expected")
        };
        assert_eq!(cpu, PathBuf::from("/sys/fs/cgroup/cpu,cpuacct"));
        let v2 = "40 1 0:30 / /sys/fs/cg\\040two rw - cgroup2 cgroup2 rw,nsdelegate\n";
        assert_eq!(
            Hierarchy::from_mountinfo(v2, |p| {
                assert_eq!(p, Path::new("/sys/fs/cg two"));
                "cpuset cpu io memory pids".into()
            })
            .unwrap(),
            Hierarchy::V2 {
                root: "/sys/fs/cg two".into()
            }
        );
        // A v2 mount without the controllers (they are bound to v1) is not enough.
        assert!(matches!(
            Hierarchy::from_mountinfo(v2, |_| "cpu io".into()),
            Err(CgroupError::NoController("memory"))
        ));
    }

    #[test]
    fn test_controller_groups_follow_proc_cgroups() {
        let v1 = "#subsys_name\thierarchy\tnum_cgroups\tenabled\n\
                  cpu\t1\t3\t1\ncpuacct\t1\t1\t1\nmemory\t4\t40\t1\npids\t8\t3\t1\n\
                  net_cls\t0\t1\t1\n";
        assert_eq!(
            controller_groups(v1),
            Some(Groups::V1([
                "memory".into(),
                "cpu,cpuacct".into(),
                "pids".into()
            ]))
        );
        let v2 = "cpu\t0\t9\t1\nmemory\t0\t9\t1\npids\t0\t9\t1\n";
        assert_eq!(controller_groups(v2), Some(Groups::V2));
        // A disabled or missing controller, or a hybrid split: nothing to mount.
        assert_eq!(
            controller_groups(&v2.replace("pids\t0\t9\t1", "pids\t0\t9\t0")),
            None
        );
        assert_eq!(
            controller_groups("memory\t4\t1\t1\ncpu\t0\t1\t1\npids\t0\t1\t1"),
            None
        );
    }

    #[test]
    fn test_limits_follow_the_spec() {
        let l = Limits::for_vm(2, 1024, 384);
        assert_eq!(l.memory_bytes, 1408 << 20);
        assert_eq!(l.cpu_quota_us, 300_000);
        assert_eq!(l.pids, PIDS_MAX);
    }

    #[test]
    fn test_instance_name_is_stable_and_distinct() {
        assert_eq!(
            instance_name(Path::new("/var/lib/banger")),
            instance_name(Path::new("/var/lib/banger"))
        );
        assert_ne!(
            instance_name(Path::new("/var/lib/banger")),
            instance_name(Path::new("/tmp/other"))
        );
        assert_eq!(instance_name(Path::new("/x")).len(), 16);
    }

    /// A v2 tree in a temp dir: the files the kernel would have, written as the kernel's.
    #[test]
    fn test_v2_create_writes_limits_enables_controllers_and_removes() {
        let root = tempfile::tempdir().unwrap();
        std::fs::write(root.path().join("cgroup.subtree_control"), "cpu").unwrap();
        let cg = VmCgroups::new(
            Hierarchy::V2 {
                root: root.path().into(),
            },
            "abc",
        )
        .unwrap();
        assert_eq!(
            std::fs::read_to_string(root.path().join("cgroup.subtree_control")).unwrap(),
            "+memory +pids"
        );
        assert_eq!(
            std::fs::read_to_string(root.path().join("banger/abc/cgroup.subtree_control")).unwrap(),
            "+memory +cpu +pids"
        );
        let procs = cg.create("vm1", &Limits::for_vm(2, 512, 256)).unwrap();
        let dir = root.path().join("banger/abc/vm1");
        assert_eq!(procs, vec![dir.join("cgroup.procs")]);
        let read = |f: &str| std::fs::read_to_string(dir.join(f)).unwrap();
        assert_eq!(read("memory.max"), (768u64 << 20).to_string());
        assert_eq!(read("cpu.max"), "300000 100000");
        assert_eq!(read("pids.max"), "512");
        assert!(!dir.join("memory.swap.max").exists());
        assert_eq!(cg.names(), vec!["vm1".to_owned()]);
        assert_eq!(cg.path("vm1"), dir);
        std::fs::write(dir.join("memory.current"), "1000\n").unwrap();
        std::fs::write(dir.join("cgroup.procs"), "42\n").unwrap();
        std::fs::write(dir.join("cpu.stat"), "usage_usec 5\nnr_throttled 3\n").unwrap();
        let u = cg.usage("vm1").unwrap();
        assert_eq!(u.limits, Limits::for_vm(2, 512, 256));
        assert_eq!((u.memory_bytes, u.procs.clone()), (1000, vec![42]));
        assert_eq!(u.cpu_throttled_periods, 3);
        assert!(cg.usage("nope").is_none());
        // A real cgroup directory holds only kernel files; here they are regular files.
        for f in std::fs::read_dir(&dir).unwrap() {
            std::fs::remove_file(f.unwrap().path()).unwrap();
        }
        assert!(cg.remove("vm1"));
        assert!(cg.names().is_empty());
        assert!(cg.remove("vm1"), "removing a gone cgroup is fine");
    }

    #[test]
    fn test_v1_create_writes_each_controller() {
        let t = tempfile::tempdir().unwrap();
        let h = Hierarchy::V1 {
            memory: t.path().join("memory"),
            cpu: t.path().join("cpu"),
            pids: t.path().join("pids"),
        };
        let cg = VmCgroups::new(h, "i").unwrap();
        let procs = cg.create("vm", &Limits::for_vm(1, 256, 256)).unwrap();
        assert_eq!(procs.len(), 3);
        let read = |p: &str| std::fs::read_to_string(t.path().join(p)).unwrap();
        assert_eq!(
            read("memory/banger/i/vm/memory.limit_in_bytes"),
            (512u64 << 20).to_string()
        );
        assert_eq!(read("cpu/banger/i/vm/cpu.cfs_quota_us"), "200000");
        assert_eq!(read("cpu/banger/i/vm/cpu.cfs_period_us"), "100000");
        assert_eq!(read("pids/banger/i/vm/pids.max"), "512");
        assert_eq!(cg.usage("vm").unwrap().limits, Limits::for_vm(1, 256, 256));
    }

    #[test]
    fn test_entry_makes_the_child_write_zero_before_exec() {
        let t = tempfile::tempdir().unwrap();
        let procs = vec![t.path().join("a.procs"), t.path().join("b.procs")];
        for p in &procs {
            std::fs::write(p, "").unwrap();
        }
        let entry = CgroupEntry::open(&procs).unwrap();
        let mut cmd = Command::new("true");
        entry.apply(&mut cmd);
        assert!(cmd.status().unwrap().success());
        for p in &procs {
            assert_eq!(std::fs::read_to_string(p).unwrap(), "0");
        }
        assert!(CgroupEntry::open(&[t.path().join("missing/cgroup.procs")]).is_err());
    }
}
