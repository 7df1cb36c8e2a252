//! Process identity (pid + start time, so a reused pid is never mistaken for ours) and signals.

use std::path::Path;

/// A process's start time in clock ticks since boot (`/proc/<pid>/stat` field 22).
pub fn start_time(pid: u32) -> Option<u64> {
    let stat =
        std::fs::read_to_string(Path::new("/proc").join(pid.to_string()).join("stat")).ok()?;
    // The command name (field 2) is in parentheses and may contain spaces: split after it.
    let after = &stat[stat.rfind(')')? + 2..];
    // `after` starts at field 3 (state); start time is field 22, i.e. index 19 here.
    after.split_whitespace().nth(19)?.parse().ok()
}

/// Whether `pid` is alive and is the process that started at `start`.
pub fn is_same_process(pid: u32, start: u64) -> bool {
    start_time(pid) == Some(start) && !is_zombie(pid)
}

fn is_zombie(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rfind(')')
                .and_then(|i| s.get(i + 2..i + 3).map(|c| c == "Z"))
        })
        .unwrap_or(false)
}

/// Sends SIGKILL to `pid` if it is still the process that started at `start`.
pub fn kill(pid: u32, start: u64) {
    if is_same_process(pid, start)
        && let Some(pid) = rustix::process::Pid::from_raw(pid as i32)
    {
        let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
    }
}

/// The first file named `name` in a `PATH` directory.
pub fn find_in_path(name: &str) -> Option<std::path::PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(name))
            .find(|p| p.is_file())
    })
}

/// The CPUs this process may use.
pub fn host_cpus() -> u32 {
    std::thread::available_parallelism().map_or(1, |n| n.get() as u32)
}

/// The host's RAM in MiB (`MemTotal`), 0 when unknown.
pub fn host_memory_mib() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .map_or(0, |kb| kb / 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_start_time_of_self_is_stable_and_identifies_us() {
        let me = std::process::id();
        let t = start_time(me).unwrap();
        assert_eq!(start_time(me), Some(t));
        assert!(is_same_process(me, t));
        assert!(!is_same_process(me, t + 1));
    }

    #[test]
    fn test_kill_ends_a_child() {
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let pid = child.id();
        let t = start_time(pid).unwrap();
        kill(pid, t);
        let status = child.wait().unwrap();
        assert!(!status.success());
        assert!(!is_same_process(pid, t));
    }
}

/// CPU time a process used so far (user + system), and the sampling clock's ticks/second.
pub fn cpu_time(pid: u32, start: u64) -> Option<std::time::Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = &stat[stat.rfind(')')? + 2..];
    let mut fields = after.split_whitespace();
    // utime and stime are fields 14 and 15 (indices 11 and 12 after the name).
    let utime: u64 = fields.nth(11)?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    if start_time(pid) != Some(start) {
        return None;
    }
    let hz = rustix::param::clock_ticks_per_second().max(1);
    Some(std::time::Duration::from_millis(
        (utime + stime) * 1000 / hz,
    ))
}

/// Proportional set size of process `pid` in KiB (`/proc/PID/smaps_rollup`): shared pages
/// count divided by how many processes map them, so copies of one snapshot that share its
/// memory are not counted as if each had it alone.
pub fn pss_kib(pid: u32) -> Option<u64> {
    let rollup = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).ok()?;
    parse_kib_field(&rollup, "Pss:")
}

fn parse_kib_field(text: &str, field: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix(field))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Resident memory of a process in KiB (`VmRSS`).
pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    parse_kib_field(&status, "VmRSS:")
}

#[cfg(test)]
mod usage_tests {
    use super::*;

    #[test]
    fn test_own_cpu_time_and_rss_are_read() {
        let me = std::process::id();
        let start = start_time(me).unwrap();
        // Burn a little CPU so the counter is non-zero.
        let mut x = 0u64;
        for i in 0..20_000_000u64 {
            x = x.wrapping_add(i * i);
        }
        assert!(x > 0);
        assert!(cpu_time(me, start).unwrap() > std::time::Duration::ZERO);
        assert!(
            cpu_time(me, start + 1).is_none(),
            "another process's start time"
        );
        assert!(rss_kib(me).unwrap() > 100);
    }
}

/// Whether `path` is an ELF executable without a program interpreter (statically linked,
/// so it runs whatever libc a guest has).
pub fn is_static_elf(path: &std::path::Path) -> bool {
    let Ok(bytes) = std::fs::read(path) else {
        return false;
    };
    let u16_at = |o: usize| {
        bytes
            .get(o..o + 2)
            .map(|b| u16::from_le_bytes([b[0], b[1]]))
    };
    let u64_at = |o: usize| {
        bytes
            .get(o..o + 8)
            .and_then(|b| <[u8; 8]>::try_from(b).ok())
            .map(u64::from_le_bytes)
    };
    // 64-bit little-endian ELF only.
    if bytes.get(..6) != Some(b"\x7fELF\x02\x01") {
        return false;
    }
    let (Some(phoff), Some(phentsize), Some(phnum)) = (u64_at(0x20), u16_at(0x36), u16_at(0x38))
    else {
        return false;
    };
    const PT_INTERP: u32 = 3;
    (0..usize::from(phnum)).all(|i| {
        let at = phoff as usize + i * usize::from(phentsize);
        bytes
            .get(at..at + 4)
            .and_then(|b| <[u8; 4]>::try_from(b).ok())
            .map(u32::from_le_bytes)
            .is_some_and(|t| t != PT_INTERP)
    })
}

#[cfg(test)]
mod elf_tests {
    use super::*;

    #[test]
    fn test_static_elf_detection() {
        // Test binaries link dynamically; busybox-static (when installed) does not.
        assert!(!is_static_elf(&std::env::current_exe().unwrap()));
        assert!(!is_static_elf(std::path::Path::new("/etc/hostname")));
        assert!(!is_static_elf(std::path::Path::new("/nonexistent")));
        if std::path::Path::new("/bin/busybox").exists() {
            assert!(is_static_elf(std::path::Path::new("/bin/busybox")));
        }
    }
}

/// Whether this process runs as root (effective uid 0).
pub fn running_as_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// Where a guest agent built with the binaries in `exe_dir` can be: next to them, or the
/// static dev build (`scripts/lib.sh build_agent` → `target/x86_64-unknown-linux-gnu/release`).
pub fn agent_beside(exe_dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut c = vec![exe_dir.join("banger-agent")];
    if let Some(target) = exe_dir.parent() {
        c.push(target.join("x86_64-unknown-linux-gnu/release/banger-agent"));
    }
    c
}
