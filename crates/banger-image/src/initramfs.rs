//! A tiny initramfs: busybox, a few kernel modules and an `/init` that loads them, mounts
//! the root disk and switches to it. Written as a `newc` cpio archive directly (no root,
//! no mknod needed for `/dev/console`).

use std::path::Path;

use crate::{ImageError, io_err};

/// Modules loaded, in this order (dependencies first: `virtio_ring` before `virtio`).
pub const MODULES: &[&str] = &[
    "virtio_ring",
    "virtio",
    "virtio_mmio",
    "failover",
    "net_failover",
    "virtio_net",
    "virtio_blk",
    "vsock",
    "vmw_vsock_virtio_transport_common",
    "vmw_vsock_virtio_transport",
    "virtio_console",
];

/// The `/init` script.
pub const INIT: &str = r#"#!/bin/busybox sh
/bin/busybox mkdir -p /proc /sys /dev /newroot /sbin /usr/bin /usr/sbin
/bin/busybox --install -s
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
for m in $(cat /etc/modules); do
  [ -f "/lib/modules/$m.ko" ] && insmod "/lib/modules/$m.ko"
done
root=/dev/vda
init=/sbin/init
for arg in $(cat /proc/cmdline); do
  case "$arg" in
    root=/dev/*) root="${arg#root=}" ;;
    init=/*) init="${arg#init=}" ;;
  esac
done
i=0
while [ ! -b "$root" ] && [ "$i" -lt 1000 ]; do sleep 0.01; i=$((i + 1)); done
if ! mount -t ext4 -o rw "$root" /newroot; then
  echo "banger-initramfs: cannot mount $root" >&2
  poweroff -f
fi
umount /proc /sys
mount --move /dev /newroot/dev
exec switch_root /newroot "$init"
echo "banger-initramfs: switch_root failed" >&2
poweroff -f
"#;

struct Cpio {
    out: Vec<u8>,
    ino: u32,
}

impl Cpio {
    fn entry(&mut self, name: &str, mode: u32, data: &[u8], rdev: (u32, u32)) {
        self.ino += 1;
        let header = format!(
            "070701{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}",
            self.ino,
            mode,
            0,
            0,
            1,
            0,
            data.len(),
            0,
            0,
            rdev.0,
            rdev.1,
            name.len() + 1,
            0
        );
        self.out.extend_from_slice(header.as_bytes());
        self.out.extend_from_slice(name.as_bytes());
        self.out.push(0);
        self.pad();
        self.out.extend_from_slice(data);
        self.pad();
    }

    fn pad(&mut self) {
        while !self.out.len().is_multiple_of(4) {
            self.out.push(0);
        }
    }
}

/// Bumped whenever [`INIT`] or [`MODULES`] change (3: `virtio_console` for the agent's
/// serial port); kernels with an older initramfs get it rebuilt.
pub const VERSION: u32 = 3;

/// The file next to an initramfs recording its [`VERSION`].
pub fn version_marker(initrd: &Path) -> std::path::PathBuf {
    initrd.with_extension("version")
}

/// Whether the initramfs at `initrd` was built by this [`VERSION`].
pub fn is_current(initrd: &Path) -> bool {
    fs_err::read_to_string(version_marker(initrd)).is_ok_and(|v| v.trim() == VERSION.to_string())
}

/// Builds the initramfs from a static `busybox` and the kernel's module tree.
pub fn build(busybox: &Path, modules_root: &Path, out: &Path) -> Result<(), ImageError> {
    let mut cpio = Cpio {
        out: Vec::new(),
        ino: 0,
    };
    for dir in [
        "bin",
        "dev",
        "etc",
        "lib",
        "lib/modules",
        "proc",
        "sys",
        "newroot",
    ] {
        cpio.entry(dir, 0o040_755, &[], (0, 0));
    }
    cpio.entry("dev/console", 0o020_600, &[], (5, 1));
    cpio.entry("init", 0o100_755, INIT.as_bytes(), (0, 0));
    let bb = fs_err::read(busybox).map_err(io_err(busybox))?;
    if bb.get(..4) != Some(b"\x7fELF") {
        return Err(ImageError::Invalid(format!(
            "{} is not an ELF binary",
            busybox.display()
        )));
    }
    cpio.entry("bin/busybox", 0o100_755, &bb, (0, 0));
    let mut found = Vec::new();
    for entry in walkdir::WalkDir::new(modules_root)
        .into_iter()
        .filter_map(Result::ok)
    {
        let name = entry.file_name().to_string_lossy();
        if let Some(stem) = name.strip_suffix(".ko")
            && MODULES.contains(&stem)
            && !found.contains(&stem.to_owned())
        {
            let data = fs_err::read(entry.path()).map_err(io_err(entry.path()))?;
            cpio.entry(&format!("lib/modules/{stem}.ko"), 0o100_644, &data, (0, 0));
            found.push(stem.to_owned());
        }
    }
    for required in [
        "virtio_ring",
        "virtio",
        "virtio_mmio",
        "virtio_blk",
        "virtio_net",
    ] {
        if !found.iter().any(|f| f == required) {
            return Err(ImageError::Invalid(format!(
                "module {required}.ko not found under {}",
                modules_root.display()
            )));
        }
    }
    let order: Vec<&str> = MODULES
        .iter()
        .copied()
        .filter(|m| found.iter().any(|f| f == m))
        .collect();
    cpio.entry(
        "etc/modules",
        0o100_644,
        format!("{}\n", order.join(" ")).as_bytes(),
        (0, 0),
    );
    cpio.entry("TRAILER!!!", 0, &[], (0, 0));
    // Written beside and renamed: a kernel in use never sees a half-written initramfs.
    let tmp = out.with_extension(format!("tmp-{}", std::process::id()));
    fs_err::write(&tmp, &cpio.out).map_err(io_err(&tmp))?;
    fs_err::rename(&tmp, out).map_err(io_err(out))?;
    let marker = version_marker(out);
    fs_err::write(&marker, VERSION.to_string()).map_err(io_err(&marker))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_initramfs_is_a_valid_cpio_with_modules_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let mods = dir.path().join("modules/kernel/drivers");
        std::fs::create_dir_all(&mods).unwrap();
        for m in [
            "virtio_ring",
            "virtio",
            "virtio_mmio",
            "virtio_blk",
            "virtio_net",
            "unrelated",
        ] {
            std::fs::write(mods.join(format!("{m}.ko")), m).unwrap();
        }
        let busybox = dir.path().join("busybox");
        std::fs::write(&busybox, b"\x7fELFfake").unwrap();
        let out = dir.path().join("initrd.img");
        build(&busybox, &dir.path().join("modules"), &out).unwrap();
        let listing = std::process::Command::new("cpio")
            .args(["-it"])
            .stdin(std::fs::File::open(&out).unwrap())
            .output();
        let Ok(listing) = listing else { return };
        let names = String::from_utf8_lossy(&listing.stdout);
        for n in [
            "init",
            "bin/busybox",
            "dev/console",
            "lib/modules/virtio_blk.ko",
            "etc/modules",
        ] {
            assert!(names.lines().any(|l| l == n), "{n} missing: {names}");
        }
        assert!(!names.contains("unrelated"));
        let extract = tempfile::tempdir().unwrap();
        let st = std::process::Command::new("cpio")
            .args(["-idm", "--quiet"])
            .current_dir(extract.path())
            .stdin(std::fs::File::open(&out).unwrap())
            .status()
            .unwrap();
        assert!(st.success());
        let order = std::fs::read_to_string(extract.path().join("etc/modules")).unwrap();
        assert_eq!(
            order.trim(),
            "virtio_ring virtio virtio_mmio virtio_net virtio_blk"
        );
    }

    #[test]
    fn test_initramfs_missing_required_module_fails() {
        let dir = tempfile::tempdir().unwrap();
        let busybox = dir.path().join("busybox");
        std::fs::write(&busybox, b"\x7fELF").unwrap();
        let err = build(&busybox, dir.path(), &dir.path().join("i")).unwrap_err();
        assert!(
            err.to_string().contains("virtio_ring.ko not found"),
            "{err}"
        );
    }
}
