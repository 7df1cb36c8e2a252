//! `reidentify`: a guest restored from a snapshot takes its own identity before anything
//! else runs in it — clock, kernel RNG, files (hostname, hosts, network config, ssh host
//! key, machine-id), hostname, then the interface's MAC, address and route (`netconf`).

use std::io::Write as _;
use std::os::unix::fs::PermissionsExt as _;

use banger_agent_proto::{GuestFile, Identity};

fn write_file(f: &GuestFile) -> Result<(), String> {
    let path = std::path::Path::new(&f.path);
    if !path.is_absolute() || f.path.contains("/../") || f.path.ends_with("/..") {
        return Err(format!("refusing path {}", f.path));
    }
    let tmp = path.with_extension("banger-tmp");
    let write = || -> std::io::Result<()> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let _ = std::fs::remove_file(&tmp);
        let mut file = std::fs::File::create(&tmp)?;
        file.write_all(f.content.as_bytes())?;
        file.set_permissions(std::fs::Permissions::from_mode(f.mode))?;
        std::fs::rename(&tmp, path)
    };
    write().map_err(|e| format!("write {}: {e}", f.path))
}

fn hex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

/// Mixes `entropy` into the kernel's pool and reseeds its CRNG, so a copy of a snapshot
/// never repeats another copy's random numbers.
#[allow(unsafe_code)]
fn reseed(entropy: &str) -> Result<(), String> {
    let bytes = hex(entropy)
        .filter(|b| b.len() >= 32)
        .ok_or("entropy must be ≥ 32 hex bytes")?;
    let mut dev = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/urandom")
        .map_err(|e| format!("open /dev/urandom: {e}"))?;
    dev.write_all(&bytes)
        .map_err(|e| format!("write /dev/urandom: {e}"))?;
    // RNDRESEEDCRNG = _IO('R', 0x07): reseed the CRNG from the pool now.
    const RNDRESEEDCRNG: rustix::ioctl::Opcode = rustix::ioctl::opcode::none(b'R', 0x07);
    // SAFETY: RNDRESEEDCRNG takes no argument and only reads the file descriptor; `NoArg`
    // passes none, which is this ioctl's contract.
    unsafe { rustix::ioctl::ioctl(&dev, rustix::ioctl::NoArg::<RNDRESEEDCRNG>::new()) }
        .map_err(|e| format!("reseed the kernel RNG: {e}"))
}

/// Applies `id`; stops at the first failure (the host then discards the VM).
pub(crate) fn apply(id: &Identity) -> Result<(), String> {
    let now = rustix::time::Timespec {
        tv_sec: i64::try_from(id.unix_secs).map_err(|_| "time out of range")?,
        tv_nsec: i64::from(id.unix_nanos).min(999_999_999),
    };
    rustix::time::clock_settime(rustix::time::ClockId::Realtime, now)
        .map_err(|e| format!("set the clock: {e}"))?;
    reseed(&id.entropy)?;
    for f in &id.files {
        write_file(f)?;
    }
    rustix::system::sethostname(id.hostname.as_bytes())
        .map_err(|e| format!("set the hostname: {e}"))?;
    let (address, prefix_len) = crate::netconf::parse_cidr(&id.address)
        .ok_or_else(|| format!("bad address {:?}", id.address))?;
    crate::netconf::apply(&crate::netconf::Config {
        iface: id.iface.clone(),
        mac: crate::netconf::parse_mac(&id.mac).ok_or_else(|| format!("bad mac {:?}", id.mac))?,
        address,
        prefix_len,
        gateway: id
            .gateway
            .parse()
            .map_err(|_| format!("bad gateway {:?}", id.gateway))?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_files_are_written_whole_and_bad_paths_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("etc/hostname");
        let f = GuestFile {
            path: path.display().to_string(),
            mode: 0o600,
            content: "child\n".into(),
        };
        write_file(&f).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "child\n");
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        for bad in ["relative", "/etc/../x", "/a/.."] {
            let f = GuestFile {
                path: bad.into(),
                mode: 0o644,
                content: String::new(),
            };
            assert!(write_file(&f).is_err(), "{bad}");
        }
        assert_eq!(hex("00ff10"), Some(vec![0, 255, 16]));
        assert_eq!(hex("0"), None);
        assert_eq!(hex("zz"), None);
    }
}
