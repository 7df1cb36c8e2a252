//! Host programs banger runs, with the Debian packages that provide them.

use super::{APT, Check, Facts, Level, row};

/// The `host tools` row.
pub(super) fn checks(f: &dyn Facts, out: &mut Vec<Check>) {
    // Host tools: (program, package, needed for, required?)
    let tools: &[(&str, &'static str, &str, bool)] = &[
        ("mkfs.ext4", "e2fsprogs", "disks", true),
        ("e2fsck", "e2fsprogs", "disks", true),
        ("debugfs", "e2fsprogs", "guest config", true),
        ("ip", "iproute2", "bridge and taps", true),
        ("ssh", "openssh-client", "ssh into guests", true),
        ("ssh-keygen", "openssh-client", "keys", true),
        ("nft", "nftables", "NAT (--nat)", false),
        ("git", "git", "workspaces", false),
        (
            "qemu-img",
            "qemu-utils",
            "snapshots and forks that layer disks instead of copying them (QEMU)",
            false,
        ),
        (
            "debootstrap",
            "debootstrap",
            "building the default image",
            false,
        ),
        ("apt-get", "apt", "importing the distro kernel", false),
    ];
    let mut missing_req = Vec::new();
    let mut missing_opt = Vec::new();
    for (prog, pkg, what, required) in tools {
        if f.which(prog).is_none() {
            let entry = (format!("{prog} ({what})"), *pkg);
            if *required {
                missing_req.push(entry);
            } else {
                missing_opt.push(entry);
            }
        }
    }
    let pkgs = |v: &[(String, &str)]| {
        let mut p: Vec<&str> = v.iter().map(|(_, p)| *p).collect();
        p.dedup();
        format!("{APT} {}", p.join(" "))
    };
    let names = |v: &[(String, &str)]| {
        v.iter()
            .map(|(n, _)| n.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    };
    let all_missing: Vec<&'static str> = missing_req
        .iter()
        .chain(&missing_opt)
        .map(|(_, p)| *p)
        .collect();
    out.push(if !missing_req.is_empty() {
        row(
            "host tools",
            Level::Fail,
            format!("missing: {}", names(&missing_req)),
            Some(pkgs(&missing_req)),
        )
        .with_packages(&all_missing)
    } else if !missing_opt.is_empty() {
        row(
            "host tools",
            Level::Warn,
            format!("missing: {}", names(&missing_opt)),
            Some(pkgs(&missing_opt)),
        )
        .with_packages(&all_missing)
    } else {
        row("host tools", Level::Pass, "all present", None)
    });
}
