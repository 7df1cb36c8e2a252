//! The default image: Debian from the configured mirror with debootstrap, tuned for a fast
//! boot, as a read-only `rootfs.ext4` plus a work seed directory (its `/root`).

use std::path::Path;

use banger_host::{Cmd, CommandRunner};

use crate::{ImageError, io_err};

/// Packages on top of debootstrap's minbase.
pub const PACKAGES: &[&str] = &[
    "systemd-sysv",
    "udev",
    "openssh-server",
    "iproute2",
    "kmod",
    "ca-certificates",
    // Workspaces are git checkouts.
    "git",
];

/// Units that cost seconds at boot and do nothing useful in a sandbox.
pub const MASKED_UNITS: &[&str] = &[
    "e2scrub_reap.service",
    "e2scrub_all.timer",
    "apt-daily.timer",
    "apt-daily-upgrade.timer",
    "dpkg-db-backup.timer",
    "fstrim.timer",
    "getty@tty1.service",
    "serial-getty@ttyS0.service",
    "getty-static.service",
    "dev-hugepages.mount",
    "dev-mqueue.mount",
    "sys-kernel-debug.mount",
    "sys-kernel-tracing.mount",
    "sys-kernel-config.mount",
    "sys-fs-fuse-connections.mount",
    "modprobe@configfs.service",
    "modprobe@drm.service",
    "modprobe@efi_pstore.service",
    "modprobe@fuse.service",
    "modprobe@loop.service",
    "modprobe@dm_mod.service",
    "systemd-pstore.service",
    "systemd-hwdb-update.service",
    "systemd-journal-catalog-update.service",
    "systemd-update-utmp.service",
    "systemd-update-utmp-runlevel.service",
    "ldconfig.service",
    "ssh-keygen.service",
    // No udev: the initramfs loads the few drivers a guest needs, devtmpfs makes the nodes,
    // and nothing in the image waits on a .device unit. udev costs ~15 s of a TCG boot.
    "systemd-udevd.service",
    "systemd-udevd-control.socket",
    "systemd-udevd-kernel.socket",
    "systemd-udev-trigger.service",
    "systemd-udev-settle.service",
    "systemd-tmpfiles-setup-dev.service",
    "systemd-tmpfiles-setup-dev-early.service",
    // Nothing to do in a fresh sandbox image (users exist, root is mounted rw, no modules
    // or sysctls configured, journal is volatile).
    "systemd-sysusers.service",
    "systemd-remount-fs.service",
    "systemd-modules-load.service",
    "systemd-sysctl.service",
    "systemd-journal-flush.service",
    "systemd-random-seed.service",
    "systemd-firstboot.service",
    "systemd-machine-id-commit.service",
];

/// Bumped whenever the image recipe changes; older default images are rebuilt when no VM
/// uses them.
pub const RECIPE: u64 = 4;

/// Brings up the guest network from `/etc/banger/network.env` (written per VM).
const NETWORK_SCRIPT: &str = r#"#!/bin/sh
# Written by banger: static guest network from /etc/banger/network.env.
set -e
. /etc/banger/network.env
i=0
while [ ! -e "/sys/class/net/$BANGER_IFACE" ] && [ "$i" -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
ip link set lo up
ip link set "$BANGER_IFACE" up
ip addr replace "$BANGER_ADDR" dev "$BANGER_IFACE"
ip route replace default via "$BANGER_GATEWAY" dev "$BANGER_IFACE"
"#;

const NETWORK_UNIT: &str = "[Unit]
Description=banger guest network
DefaultDependencies=no
Before=network.target ssh.service
Wants=network.target
ConditionPathExists=/etc/banger/network.env

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/usr/local/libexec/banger-network

[Install]
WantedBy=multi-user.target
";

/// sshd without its config self-test (`sshd -t`, a second full sshd start under TCG).
const SSH_DROPIN: &str = "# Written by banger: skip the config self-test on start.
[Service]
ExecStartPre=
";

const SSHD_CONFIG: &str = "# Written by banger.
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin prohibit-password
UseDNS no
HostKey /etc/ssh/ssh_host_ed25519_key
";

const FSTAB: &str = "# Written by banger. / is /dev/vda (mounted rw by the initramfs);
# the per-VM work disk /dev/vdb is mounted on /root by banger-root.service (there is no
# udev, so .device units never appear and fstab entries would wait for them).
";

/// Mounts the work disk on /root before anything else looks at it.
const ROOT_UNIT: &str = "[Unit]
Description=banger work disk on /root
DefaultDependencies=no
Before=local-fs.target ssh.service
ConditionPathExists=/dev/vdb

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/bin/sh -c 'mountpoint -q /root || mount -t ext4 -o defaults /dev/vdb /root'

[Install]
WantedBy=local-fs.target
";

fn write(path: &Path, text: &str, mode: u32) -> Result<(), ImageError> {
    use std::os::unix::fs::PermissionsExt as _;
    if let Some(parent) = path.parent() {
        fs_err::create_dir_all(parent).map_err(io_err(parent))?;
    }
    // Replaced, not rewritten: a read-only file (0444 machine-id) is not writable by an
    // unprivileged owner even when it owns it.
    let _ = fs_err::remove_file(path);
    fs_err::write(path, text).map_err(io_err(path))?;
    fs_err::set_permissions(path, std::fs::Permissions::from_mode(mode)).map_err(io_err(path))
}

fn symlink(target: &str, link: &Path) -> Result<(), ImageError> {
    if let Some(parent) = link.parent() {
        fs_err::create_dir_all(parent).map_err(io_err(parent))?;
    }
    let _ = fs_err::remove_file(link);
    std::os::unix::fs::symlink(target, link).map_err(io_err(link))
}

/// Applies banger's tuning to a root tree (no chroot needed).
pub fn customize(root: &Path) -> Result<(), ImageError> {
    let systemd = root.join("etc/systemd/system");
    for unit in MASKED_UNITS {
        symlink("/dev/null", &systemd.join(unit))?;
    }
    write(
        &root.join("usr/local/libexec/banger-network"),
        NETWORK_SCRIPT,
        0o755,
    )?;
    write(&systemd.join("banger-network.service"), NETWORK_UNIT, 0o644)?;
    symlink(
        "/etc/systemd/system/banger-network.service",
        &systemd.join("multi-user.target.wants/banger-network.service"),
    )?;
    write(
        &root.join("etc/ssh/sshd_config.d/banger.conf"),
        SSHD_CONFIG,
        0o644,
    )?;
    write(&root.join("etc/fstab"), FSTAB, 0o644)?;
    write(
        &systemd.join("ssh.service.d/banger.conf"),
        SSH_DROPIN,
        0o644,
    )?;
    // Generators run before systemd does anything else; none is needed in a sandbox (fstab is
    // empty, gettys and sysv scripts are unused), so each is overridden with /dev/null.
    for dir in [
        "lib/systemd/system-generators",
        "usr/lib/systemd/system-generators",
    ] {
        if let Ok(entries) = fs_err::read_dir(root.join(dir)) {
            for e in entries.filter_map(Result::ok) {
                symlink(
                    "/dev/null",
                    &root
                        .join("etc/systemd/system-generators")
                        .join(e.file_name()),
                )?;
            }
        }
    }
    write(&systemd.join("banger-root.service"), ROOT_UNIT, 0o644)?;
    symlink(
        "/etc/systemd/system/banger-root.service",
        &systemd.join("local-fs.target.wants/banger-root.service"),
    )?;
    symlink(
        "/lib/systemd/system/multi-user.target",
        &systemd.join("default.target"),
    )?;
    // Each VM gets its own identity: no shared host keys or machine id.
    let ssh = root.join("etc/ssh");
    for entry in fs_err::read_dir(&ssh)
        .map_err(io_err(&ssh))?
        .filter_map(Result::ok)
    {
        if entry.file_name().to_string_lossy().starts_with("ssh_host_") {
            fs_err::remove_file(entry.path()).map_err(io_err(&entry.path()))?;
        }
    }
    write(&root.join("etc/machine-id"), "", 0o444)?;
    let _ = fs_err::remove_file(root.join("var/lib/dbus/machine-id"));
    write(&root.join("etc/hostname"), "banger\n", 0o644)?;
    for dir in ["var/cache/apt/archives", "var/lib/apt/lists"] {
        let d = root.join(dir);
        if let Ok(entries) = fs_err::read_dir(&d) {
            for e in entries.filter_map(Result::ok) {
                if e.path().is_file() {
                    let _ = fs_err::remove_file(e.path());
                }
            }
        }
    }
    Ok(())
}

/// Total size of the files under `dir` in bytes (apparent sizes).
pub fn tree_size(dir: &Path) -> u64 {
    walkdir::WalkDir::new(dir)
        .into_iter()
        .filter_map(Result::ok)
        .filter_map(|e| e.metadata().ok())
        .filter(std::fs::Metadata::is_file)
        .map(|m| m.len())
        .sum()
}

/// Builds `out/rootfs.ext4` and `out/work-seed/` from Debian `suite` at `mirror`,
/// using `work` for staging (removed afterwards).
pub fn build_debian(
    runner: &dyn CommandRunner,
    suite: &str,
    mirror: &str,
    work: &Path,
    out: &Path,
) -> Result<u64, ImageError> {
    let root = work.join("root");
    fs_err::create_dir_all(work).map_err(io_err(work))?;
    runner.run(
        &Cmd::new("debootstrap")
            .args([
                "--variant=minbase",
                &format!("--include={}", PACKAGES.join(",")),
            ])
            .arg(suite)
            .arg(root.display().to_string())
            .arg(mirror),
    )?;
    customize(&root)?;
    fs_err::create_dir_all(out).map_err(io_err(out))?;
    let seed = out.join("work-seed");
    let root_home = root.join("root");
    fs_err::rename(&root_home, &seed).map_err(io_err(&seed))?;
    fs_err::create_dir(&root_home).map_err(io_err(&root_home))?;
    let size = (tree_size(&root) * 3 / 2)
        .max(1 << 30)
        .next_multiple_of(1 << 20);
    let rootfs = out.join("rootfs.ext4");
    banger_host::disk::make_ext4(runner, &rootfs, size, "banger-root", Some(&root))
        .map_err(|e| ImageError::Invalid(format!("cannot build {}: {e}", rootfs.display())))?;
    runner.run(
        &Cmd::new("e2fsck")
            .args(["-fn"])
            .arg(rootfs.display().to_string()),
    )?;
    let _ = fs_err::remove_dir_all(work);
    Ok(size)
}

/// The Debian mirror apt is configured with (first `deb.debian.org`-style `debian` URI),
/// or the default one.
pub fn configured_mirror() -> String {
    let mut texts = Vec::new();
    for p in ["/etc/apt/sources.list"] {
        if let Ok(t) = std::fs::read_to_string(p) {
            texts.push(t);
        }
    }
    if let Ok(dir) = std::fs::read_dir("/etc/apt/sources.list.d") {
        for e in dir.filter_map(Result::ok) {
            if let Ok(t) = std::fs::read_to_string(e.path()) {
                texts.push(t);
            }
        }
    }
    mirror_from_sources(&texts.join("\n"))
        .unwrap_or_else(|| "http://deb.debian.org/debian".to_owned())
}

/// Finds a Debian archive URI (ending in `/debian`) in apt sources text (one-line or deb822).
pub fn mirror_from_sources(text: &str) -> Option<String> {
    text.lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .flat_map(str::split_whitespace)
        .map(|w| w.trim_end_matches('/'))
        .find(|w| (w.starts_with("http://") || w.starts_with("https://")) && w.ends_with("/debian"))
        .map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_mirror_from_sources_finds_debian_archive() {
        let t = "URIs: https://deb.nodesource.com/node_20.x\nURIs: http://deb.debian.org/debian\nURIs: http://deb.debian.org/debian-security\n";
        assert_eq!(
            mirror_from_sources(t).unwrap(),
            "http://deb.debian.org/debian"
        );
        assert_eq!(
            mirror_from_sources(
                "# deb http://x/debian bookworm\ndeb http://mirror.example/debian/ bookworm main"
            )
            .unwrap(),
            "http://mirror.example/debian"
        );
        assert!(
            mirror_from_sources("deb https://packages.cloud.google.com/apt cloud main").is_none()
        );
    }

    #[test]
    fn test_customize_masks_units_and_removes_host_keys() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("etc/ssh")).unwrap();
        std::fs::write(root.join("etc/ssh/ssh_host_rsa_key"), "k").unwrap();
        std::fs::write(root.join("etc/ssh/sshd_config"), "").unwrap();
        let gens = root.join("usr/lib/systemd/system-generators");
        std::fs::create_dir_all(&gens).unwrap();
        std::fs::write(gens.join("systemd-sysv-generator"), "").unwrap();
        customize(root).unwrap();
        let gen_mask = root.join("etc/systemd/system-generators/systemd-sysv-generator");
        assert_eq!(
            std::fs::read_link(gen_mask).unwrap(),
            Path::new("/dev/null")
        );
        assert!(!root.join("etc/ssh/ssh_host_rsa_key").exists());
        assert!(root.join("etc/ssh/sshd_config").exists());
        let masked =
            std::fs::read_link(root.join("etc/systemd/system/e2scrub_reap.service")).unwrap();
        assert_eq!(masked, Path::new("/dev/null"));
        assert_eq!(
            std::fs::read_to_string(root.join("etc/machine-id")).unwrap(),
            ""
        );
        let fstab = std::fs::read_to_string(root.join("etc/fstab")).unwrap();
        assert!(
            fstab.lines().all(|l| l.starts_with('#')),
            "no fstab entry waits on a device unit: {fstab}"
        );
        let wants = root.join("etc/systemd/system/local-fs.target.wants/banger-root.service");
        assert!(std::fs::read_link(&wants).is_ok());
        let unit = root.join("etc/systemd/system/banger-root.service");
        assert!(
            std::fs::read_to_string(&unit)
                .unwrap()
                .contains("/dev/vdb /root")
        );
        assert!(
            std::fs::read_link(root.join("etc/systemd/system/systemd-udevd.service")).is_ok(),
            "udev is masked"
        );
    }
}
