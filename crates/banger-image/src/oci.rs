//! From pulled layers to a bootable image: the blob cache, flattening into a staging root,
//! making the tree bootable (banger's guest tuning plus a first-boot init for images without
//! systemd or sshd), and the read-only `rootfs.ext4` + work seed, built without mounting.

use std::collections::HashSet;
use std::io::Read;
use std::path::{Path, PathBuf};

use banger_host::CommandRunner;

use crate::layers::{LayerError, apply_layer};
use crate::registry::{Compression, Layer, compression};
use crate::{ImageError, io_err};

/// Where the first-boot init lives in an image.
pub const FIRST_BOOT_INIT: &str = "/usr/local/libexec/banger-init";

/// The first-boot init: with systemd and sshd present it just execs systemd. Otherwise it
/// brings the network up from banger's per-VM config, installs them with the image's package
/// manager, and execs systemd; when the distro has no systemd (Alpine) it runs sshd and the
/// guest agent itself and stays PID 1.
pub const FIRST_BOOT_SCRIPT: &str = r#"#!/bin/sh
# Written by banger: first-boot init for images without systemd or sshd.
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
systemd_bin() {
  for p in /lib/systemd/systemd /usr/lib/systemd/systemd; do [ -x "$p" ] && { echo "$p"; return 0; }; done
  return 1
}
have_sshd() { [ -x /usr/sbin/sshd ] || [ -x /usr/bin/sshd ] || [ -x /sbin/sshd ]; }
if s=$(systemd_bin) && have_sshd; then exec "$s"; fi
mount -t proc proc /proc 2>/dev/null
mount -t sysfs sysfs /sys 2>/dev/null
mount -t tmpfs tmpfs /run 2>/dev/null
mount -o remount,rw / 2>/dev/null
echo "banger-init: installing systemd/openssh with the image's package manager" >&2
[ -x /usr/local/libexec/banger-network ] && /usr/local/libexec/banger-network
if command -v apt-get >/dev/null; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q && apt-get install -y -q --no-install-recommends systemd systemd-sysv openssh-server iproute2 ca-certificates
elif command -v dnf >/dev/null; then
  dnf install -y systemd openssh-server iproute
elif command -v microdnf >/dev/null; then
  microdnf install -y systemd openssh-server iproute
elif command -v yum >/dev/null; then
  yum install -y systemd openssh-server iproute
elif command -v zypper >/dev/null; then
  zypper --non-interactive install systemd openssh iproute2
elif command -v pacman >/dev/null; then
  pacman -Sy --noconfirm systemd openssh iproute2
elif command -v apk >/dev/null; then
  apk add --no-cache openssh-server iproute2
else
  echo "banger-init: no known package manager (apt, dnf, yum, zypper, pacman, apk)" >&2
fi
if s=$(systemd_bin) && have_sshd; then
  ln -sf /etc/systemd/system/banger-network.service /etc/systemd/system/multi-user.target.wants/banger-network.service 2>/dev/null
  exec "$s"
fi
if ! have_sshd; then echo "banger-init: sshd could not be installed; powering off" >&2; poweroff -f; fi
# No systemd in this distro: be a minimal init.
mountpoint -q /root || mount -t ext4 /dev/vdb /root
hostname -F /etc/hostname 2>/dev/null
mkdir -p /run/sshd /var/empty
sshd=$(command -v sshd || echo /usr/sbin/sshd)
"$sshd" -E /dev/console
[ -x /usr/local/libexec/banger-agent ] && /usr/local/libexec/banger-agent &
trap 'kill -TERM -1; sync; poweroff -f' TERM INT
while :; do wait; sleep 1; done
"#;

/// The layer blob cache: `sha256/<hex>` files, each verified before it was put there.
#[derive(Debug, Clone)]
pub struct BlobCache {
    dir: PathBuf,
}

/// What a cache prune removed (or would remove).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PruneReport {
    /// Digests removed.
    pub blobs: Vec<String>,
    /// Bytes freed.
    pub bytes: u64,
}

fn hex_of(digest: &str) -> Option<&str> {
    let hex = digest.strip_prefix("sha256:")?;
    (hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit())).then_some(hex)
}

impl BlobCache {
    /// A cache rooted at `dir` (created on first write).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        BlobCache { dir: dir.into() }
    }

    /// Where `digest` is (or would be) cached; `None` for a digest that is not sha256.
    pub fn path(&self, digest: &str) -> Option<PathBuf> {
        hex_of(digest).map(|h| self.dir.join("sha256").join(h))
    }

    /// Whether `digest` is cached with `size` bytes.
    pub fn has(&self, digest: &str, size: u64) -> bool {
        self.path(digest)
            .and_then(|p| std::fs::metadata(p).ok())
            .is_some_and(|m| m.is_file() && m.len() == size)
    }

    /// A fresh partial-download path for `digest`.
    pub fn partial(&self, digest: &str) -> Result<PathBuf, ImageError> {
        let hex = hex_of(digest)
            .ok_or_else(|| ImageError::Invalid(format!("unsupported digest {digest:?}")))?;
        let dir = self.dir.join("partial");
        fs_err::create_dir_all(&dir).map_err(io_err(&dir))?;
        Ok(dir.join(format!(
            "{hex}.{}",
            &uuid::Uuid::new_v4().simple().to_string()[..8]
        )))
    }

    /// Moves a verified download into the cache.
    pub fn commit(&self, partial: &Path, digest: &str) -> Result<PathBuf, ImageError> {
        let dest = self
            .path(digest)
            .ok_or_else(|| ImageError::Invalid(format!("unsupported digest {digest:?}")))?;
        if let Some(parent) = dest.parent() {
            fs_err::create_dir_all(parent).map_err(io_err(parent))?;
        }
        fs_err::rename(partial, &dest).map_err(io_err(&dest))?;
        Ok(dest)
    }

    /// Removes a cached blob (e.g. one that failed to apply).
    pub fn evict(&self, digest: &str) {
        if let Some(p) = self.path(digest) {
            let _ = fs_err::remove_file(p);
        }
    }

    /// Removes leftover partial downloads (from a killed daemon); returns how many.
    pub fn clean_partials(&self) -> usize {
        let dir = self.dir.join("partial");
        let Ok(entries) = fs_err::read_dir(&dir) else {
            return 0;
        };
        entries
            .filter_map(Result::ok)
            .filter(|e| fs_err::remove_file(e.path()).is_ok())
            .count()
    }

    /// Removes cached blobs not in `keep` (all when `keep` is empty) plus partial downloads;
    /// with `dry_run` only reports.
    pub fn prune(&self, keep: &HashSet<String>, dry_run: bool) -> PruneReport {
        let mut report = PruneReport::default();
        let dir = self.dir.join("sha256");
        let Ok(entries) = fs_err::read_dir(&dir) else {
            return report;
        };
        let mut found: Vec<_> = entries
            .filter_map(Result::ok)
            .filter_map(|e| {
                let digest = format!("sha256:{}", e.file_name().to_string_lossy());
                let size = e.metadata().ok()?.len();
                Some((digest, size, e.path()))
            })
            .filter(|(d, _, _)| !keep.contains(d))
            .collect();
        found.sort();
        for (digest, size, path) in found {
            if dry_run || fs_err::remove_file(&path).is_ok() {
                report.blobs.push(digest);
                report.bytes += size;
            }
        }
        if !dry_run {
            self.clean_partials();
        }
        report
    }
}

/// A directory on tmpfs (`/dev/shm`) with room for a tree of `bytes` (plus a margin), to
/// flatten layers into: unpacking to memory and building the ext4 from there is several times
/// faster than going through the disk twice. `None` when there is no such room; the caller
/// then stages next to the image.
pub fn fast_staging_root(bytes: u64) -> Option<PathBuf> {
    const TMPFS_MAGIC: i64 = 0x0102_1994;
    let shm = Path::new("/dev/shm");
    let st = rustix::fs::statfs(shm).ok()?;
    #[allow(clippy::unnecessary_cast)] // f_type's width differs between libcs
    let is_tmpfs = st.f_type as i64 == TMPFS_MAGIC;
    let free = st.f_bavail.saturating_mul(st.f_bsize as u64);
    // Half of what is free at most: the guests' memory comes from the same pool.
    (is_tmpfs && bytes.saturating_mul(2) + (256 << 20) < free / 2).then(|| shm.to_owned())
}

/// A short layer name for errors (`sha256:0123456789ab`).
pub fn short(digest: &str) -> String {
    digest.chars().take(7 + 12).collect()
}

/// Applies `layers` (each with its cached blob file), oldest first, onto `root`.
pub fn flatten(root: &Path, layers: &[(Layer, PathBuf)]) -> Result<(), LayerError> {
    for (layer, blob) in layers {
        let name = short(&layer.digest);
        let io = |context: &str| {
            let (name, context) = (name.clone(), context.to_owned());
            move |source| LayerError::Io {
                layer: name,
                context,
                source,
            }
        };
        let file = std::io::BufReader::new(std::fs::File::open(blob).map_err(io("open blob"))?);
        let reader: Box<dyn Read + Send> = match compression(&layer.media_type) {
            Some(Compression::Gzip) => Box::new(flate2::read::GzDecoder::new(file)),
            Some(Compression::Zstd) => {
                Box::new(zstd::stream::read::Decoder::new(file).map_err(io("zstd"))?)
            }
            _ => Box::new(file),
        };
        apply_layer(root, &name, &layer.diff_id, reader)?;
    }
    Ok(())
}

/// What `make_bootable` found in the image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct BootInfo {
    /// systemd is installed.
    pub systemd: bool,
    /// sshd is installed.
    pub sshd: bool,
}

impl BootInfo {
    /// Whether the first-boot init must run (`init=`).
    pub fn needs_first_boot(self) -> bool {
        !(self.systemd && self.sshd)
    }
}

fn exists_in(root: &Path, paths: &[&str]) -> bool {
    // symlink_metadata: a dangling absolute link (`/sbin/init -> /lib/systemd/systemd`) is
    // still resolved relative to the image, never the host.
    paths.iter().any(|p| {
        let mut cur = root.join(p.trim_start_matches('/'));
        for _ in 0..8 {
            match std::fs::symlink_metadata(&cur) {
                Ok(m) if m.file_type().is_symlink() => match std::fs::read_link(&cur) {
                    Ok(t) if t.is_absolute() => {
                        cur = root.join(t.strip_prefix("/").unwrap_or(&t));
                    }
                    Ok(t) => cur = cur.parent().map_or(t.clone(), |d| d.join(&t)),
                    Err(_) => return false,
                },
                Ok(_) => return true,
                Err(_) => return false,
            }
        }
        false
    })
}

/// Prepares a flattened tree to boot as a banger guest: the standard directories, banger's
/// tuning (network unit, sshd config, masked units), the first-boot init.
pub fn make_bootable(root: &Path) -> Result<BootInfo, ImageError> {
    use std::os::unix::fs::PermissionsExt as _;
    for (dir, mode) in [
        ("etc", 0o755),
        ("etc/ssh", 0o755),
        ("root", 0o700),
        ("dev", 0o755),
        ("proc", 0o555),
        ("sys", 0o555),
        ("run", 0o755),
        ("tmp", 0o1777),
        ("var/tmp", 0o1777),
        ("usr/local/libexec", 0o755),
    ] {
        let p = root.join(dir);
        if std::fs::symlink_metadata(&p).is_err() {
            fs_err::create_dir_all(&p).map_err(io_err(&p))?;
            fs_err::set_permissions(&p, std::fs::Permissions::from_mode(mode))
                .map_err(io_err(&p))?;
        }
    }
    let info = BootInfo {
        systemd: exists_in(root, &["/lib/systemd/systemd", "/usr/lib/systemd/systemd"]),
        sshd: exists_in(root, &["/usr/sbin/sshd", "/usr/bin/sshd", "/sbin/sshd"]),
    };
    crate::rootfs::customize(root)?;
    let init = root.join(FIRST_BOOT_INIT.trim_start_matches('/'));
    fs_err::write(&init, FIRST_BOOT_SCRIPT).map_err(io_err(&init))?;
    fs_err::set_permissions(&init, std::fs::Permissions::from_mode(0o755))
        .map_err(io_err(&init))?;
    Ok(info)
}

/// Builds `out/rootfs.ext4` (content × 1.5, floor 1 GiB, sparse) and `out/work-seed` (the
/// image's `/root`) from the tree at `root`. Returns the image size in bytes.
pub fn build_rootfs(
    runner: &dyn CommandRunner,
    root: &Path,
    out: &Path,
) -> Result<u64, ImageError> {
    fs_err::create_dir_all(out).map_err(io_err(out))?;
    let seed = out.join("work-seed");
    let root_home = root.join("root");
    if std::fs::rename(&root_home, &seed).is_err() {
        // The tree is on tmpfs: copy across filesystems, owners and modes kept.
        runner.run(
            &banger_host::Cmd::new("cp")
                .arg("-a")
                .arg(root_home.display().to_string())
                .arg(seed.display().to_string()),
        )?;
        fs_err::remove_dir_all(&root_home).map_err(io_err(&root_home))?;
    }
    fs_err::create_dir(&root_home).map_err(io_err(&root_home))?;
    let size = (crate::rootfs::tree_size(root) * 3 / 2)
        .max(1 << 30)
        .next_multiple_of(1 << 20);
    let rootfs = out.join("rootfs.ext4");
    banger_host::disk::make_ext4(runner, &rootfs, size, "banger-root", Some(root))
        .map_err(|e| ImageError::Invalid(format!("cannot build {}: {e}", rootfs.display())))?;
    Ok(size)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_blob_cache_paths_commit_and_prune() {
        let dir = tempfile::tempdir().unwrap();
        let cache = BlobCache::new(dir.path());
        let (a, b) = (
            format!("sha256:{}", "a".repeat(64)),
            format!("sha256:{}", "b".repeat(64)),
        );
        assert!(cache.path("sha256:../../etc").is_none());
        assert!(cache.path("md5:abc").is_none());
        for d in [&a, &b] {
            let p = cache.partial(d).unwrap();
            std::fs::write(&p, "12345").unwrap();
            cache.commit(&p, d).unwrap();
        }
        assert!(cache.has(&a, 5));
        assert!(!cache.has(&a, 6));
        let left = cache.partial(&a).unwrap();
        std::fs::write(&left, "x").unwrap();
        let keep: HashSet<String> = [a.clone()].into();
        let dry = cache.prune(&keep, true);
        assert_eq!(dry.blobs, std::slice::from_ref(&b));
        assert_eq!(dry.bytes, 5);
        assert!(cache.has(&b, 5), "a dry run removes nothing");
        let done = cache.prune(&keep, false);
        assert_eq!(done, dry);
        assert!(!cache.has(&b, 5));
        assert!(cache.has(&a, 5));
        assert!(!left.exists(), "partials go too");
    }

    #[test]
    fn test_first_boot_script_is_valid_sh_and_covers_the_package_managers() {
        let out = std::process::Command::new("sh")
            .args(["-n", "-c", FIRST_BOOT_SCRIPT])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        for pm in ["apt-get", "apk", "dnf", "pacman", "zypper"] {
            assert!(
                FIRST_BOOT_SCRIPT.contains(&format!("command -v {pm}")),
                "{pm}"
            );
        }
    }

    #[test]
    fn test_make_bootable_detects_systemd_through_absolute_links() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("usr/lib/systemd")).unwrap();
        std::fs::write(root.join("usr/lib/systemd/systemd"), "").unwrap();
        std::fs::create_dir_all(root.join("usr/sbin")).unwrap();
        std::os::unix::fs::symlink("/usr/lib", root.join("lib")).unwrap();
        let info = make_bootable(root).unwrap();
        assert!(info.systemd);
        assert!(!info.sshd);
        assert!(info.needs_first_boot());
        assert!(root.join("usr/local/libexec/banger-init").exists());
        assert!(
            root.join("etc/systemd/system/banger-network.service")
                .exists()
        );
        std::fs::write(root.join("usr/sbin/sshd"), "").unwrap();
        assert!(!make_bootable(root).unwrap().needs_first_boot());
    }
}
