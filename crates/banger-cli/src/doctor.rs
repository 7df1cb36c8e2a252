//! `banger doctor`: what this host has, what banger will use, and what is missing, as
//! PASS/WARN/FAIL rows with a hint each. The checks are pure functions of [`Facts`] (host
//! facts behind a trait, so every path is tested with a fake) and [`DaemonFacts`].

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
}

/// The Debian packages `doctor --fix` would install for `rows`, each once, in order.
pub(crate) fn packages_to_install(rows: &[Check]) -> Vec<&'static str> {
    let mut out: Vec<&'static str> = Vec::new();
    for p in rows
        .iter()
        .filter(|c| c.level != Level::Pass)
        .flat_map(|c| c.packages.iter())
    {
        if !out.contains(p) {
            out.push(p);
        }
    }
    out
}

impl Check {
    fn with_packages(mut self, packages: &[&'static str]) -> Self {
        self.packages = packages.to_vec();
        self
    }
}

fn row(name: &'static str, level: Level, detail: impl Into<String>, hint: Option<String>) -> Check {
    Check {
        name,
        level,
        detail: detail.into(),
        hint,
        packages: Vec::new(),
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

const APT: &str = "apt-get install -y";

/// Every check, in display order.
pub(crate) fn checks(f: &dyn Facts, cfg: &Config, d: &DaemonFacts) -> Vec<Check> {
    let mut out = Vec::new();
    let arch = f.arch();
    out.push(match arch.as_str() {
        "x86_64" => row("architecture", Level::Pass, arch, None),
        "aarch64" => row("architecture", Level::Warn, "aarch64: untested", None),
        other => row(
            "architecture",
            Level::Fail,
            format!("{other} is not supported"),
            Some("banger runs on x86_64 Linux".into()),
        ),
    });
    let kvm = f.kvm();
    let kvm_ok = kvm.device && kvm.usable && kvm.probe_error.is_none();
    out.push(if kvm_ok {
        row(
            "kvm",
            Level::Pass,
            "/dev/kvm is usable: a 64-bit probe guest ran",
            None,
        )
    } else if !kvm.device {
        row(
            "kvm",
            Level::Warn,
            "no /dev/kvm: guests run under TCG emulation (slow)",
            Some(
                "enable virtualization in the firmware and `modprobe kvm_intel` (or kvm_amd)"
                    .into(),
            ),
        )
    } else if !kvm.usable {
        row(
            "kvm",
            Level::Warn,
            "/dev/kvm exists but cannot be opened read-write by this user",
            Some("add yourself to the `kvm` group and log in again".into()),
        )
    } else {
        row(
            "kvm",
            Level::Warn,
            format!(
                "KVM cannot run stock guest kernels here: {}{}; guests run under TCG",
                kvm.probe_error
                    .as_deref()
                    .unwrap_or("the probe guest failed"),
                if kvm.hw_virt {
                    ""
                } else {
                    " (no vmx/svm: nested or paravirtual KVM)"
                }
            ),
            Some("run banger on a host or VM with nested virtualization for KVM speed".into()),
        )
    });
    // The same choice bangerd makes, over this doctor's facts.
    struct Vf<'a>(&'a dyn Facts, bool);
    impl banger_host::vmm::VmmFacts for Vf<'_> {
        fn which(&self, program: &str) -> Option<PathBuf> {
            self.0.which(program)
        }
        fn kvm_usable(&self) -> bool {
            self.1
        }
    }
    let banger_host::vmm::Resolved {
        choice,
        why,
        firecracker,
    } = banger_host::vmm::resolve_vmm(
        &cfg.vmm.to_string(),
        cfg.firecracker_bin.as_deref(),
        &Vf(f, kvm_ok),
    );
    // Firecracker asked for but absent, or without a KVM that can run it: it cannot work.
    let backend_level = match &choice {
        banger_host::vmm::Choice::Firecracker(_) if firecracker.is_none() || !kvm_ok => Level::Fail,
        _ => Level::Pass,
    };
    let backend_name = match &choice {
        banger_host::vmm::Choice::Firecracker(_) => "firecracker".to_owned(),
        banger_host::vmm::Choice::Qemu(a) => format!("qemu ({})", banger_host::vmm::accel_name(*a)),
    };
    let (tun, tun_rw) = f.tun();
    out.push(if tun_rw {
        row("tun", Level::Pass, "/dev/net/tun opens read-write", None)
    } else if tun {
        row(
            "tun",
            Level::Warn,
            "/dev/net/tun is not writable by this user: an unprivileged VMM (system install) cannot attach to its tap",
            Some("sudo chmod 0666 /dev/net/tun (the mode distros ship; taps stay owner-only)".into()),
        )
    } else {
        row(
            "tun",
            Level::Fail,
            "no /dev/net/tun: guests get no network",
            Some("sudo modprobe tun".into()),
        )
    });
    out.push(row(
        "vmm backend",
        backend_level,
        format!("{backend_name}: {why}"),
        None,
    ));
    out.push(match &firecracker {
        Some(bin) => match f
            .version(bin)
            .as_deref()
            .and_then(banger_host::vmm::firecracker::parse_version)
        {
            Some(v) if v >= (1, 5, 0) => row(
                "firecracker",
                Level::Pass,
                format!("{} v{}.{}.{}", bin.display(), v.0, v.1, v.2),
                None,
            ),
            Some(v) => row(
                "firecracker",
                Level::Fail,
                format!("{} is v{}.{}.{}; banger needs >= 1.5.0", bin.display(), v.0, v.1, v.2),
                Some("install a current release from https://github.com/firecracker-microvm/firecracker/releases".into()),
            ),
            None => row(
                "firecracker",
                Level::Fail,
                format!("{} does not report a version", bin.display()),
                Some("reinstall it from the Firecracker releases".into()),
            ),
        },
        None => row(
            "firecracker",
            Level::Warn,
            "not installed (the QEMU backend is used)",
            Some("Debian has no package: put the release binary from https://github.com/firecracker-microvm/firecracker/releases on PATH".into()),
        ),
    });
    let qemu = cfg
        .qemu_bin
        .clone()
        .filter(|p| p.is_file())
        .or_else(|| f.which("qemu-system-x86_64"));
    let qemu_needed = matches!(choice, banger_host::vmm::Choice::Qemu(_));
    out.push(match &qemu {
        Some(bin) => row(
            "qemu",
            Level::Pass,
            f.version(bin).unwrap_or_else(|| bin.display().to_string()),
            None,
        ),
        None => row(
            "qemu",
            if qemu_needed {
                Level::Fail
            } else {
                Level::Warn
            },
            "qemu-system-x86_64 not found",
            Some(format!("{APT} qemu-system-x86")),
        )
        .with_packages(&["qemu-system-x86"]),
    });
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
    out.push(match f.store() {
        StoreFact::Absent => row(
            "store",
            Level::Pass,
            "no database yet (created on first use)",
            None,
        ),
        StoreFact::Compatible => row("store", Level::Pass, "schema is current", None),
        StoreFact::NeedsMigration(n) => row(
            "store",
            Level::Warn,
            format!("{n} migration(s) pending"),
            Some(
                "they run when the daemon next starts (`banger daemon stop`, then any command)"
                    .into(),
            ),
        ),
        StoreFact::Incompatible { db, known } => row(
            "store",
            Level::Fail,
            format!("written by a newer banger (schema {db}, this build knows {known})"),
            Some("upgrade banger; the database is never modified by an older one".into()),
        ),
        StoreFact::Unreadable(e) => row("store", Level::Fail, e, None),
    });
    let (cpus, mem) = f.cpus_and_memory_mib();
    let vd = &cfg.vm_defaults;
    let (vcpu, vsrc) = match vd.vcpu {
        Some(v) => (v, "config"),
        None => banger_config::auto_vcpu(cpus).map_or((1, "builtin"), |v| (v, "auto")),
    };
    let (memory, msrc) = match vd.memory_mib {
        Some(v) => (v, "config"),
        None => banger_config::auto_memory_mib(mem).map_or((512, "builtin"), |v| (v, "auto")),
    };
    let (disk, dsrc) = match &vd.disk_size {
        Some(s) => (s.clone(), "config"),
        None => ("8G".to_owned(), "builtin"),
    };
    out.push(row(
        "vm defaults",
        Level::Pass,
        format!("{vcpu} vcpu ({vsrc}), {memory} MiB ({msrc}), {disk} disk ({dsrc})"),
        None,
    ));
    out.push(if f.ssh_config_included() {
        row(
            "ssh config",
            Level::Pass,
            "~/.ssh/config includes banger's: `ssh NAME.vm` works",
            None,
        )
    } else {
        row(
            "ssh config",
            Level::Warn,
            "~/.ssh/config does not include banger's (use `banger vm ssh NAME`)",
            Some("`banger ssh-config --install` makes plain `ssh NAME.vm` work".into()),
        )
    });
    daemon_checks(cfg, d, &mut out);
    out
}

fn daemon_checks(cfg: &Config, d: &DaemonFacts, out: &mut Vec<Check>) {
    if let Some(e) = &d.error {
        out.push(row(
            "daemon",
            Level::Fail,
            format!("cannot reach bangerd: {e}"),
            Some("`banger daemon status` and <state>/bangerd.log say why".into()),
        ));
        return;
    }
    out.push(row("daemon", Level::Pass, "bangerd answers", None));
    out.push(match &d.agent {
        Some(p) => row(
            "guest agent",
            Level::Pass,
            format!("static banger-agent at {p}"),
            None,
        ),
        None => row(
            "guest agent",
            Level::Warn,
            "no static banger-agent: guests run without it; ports, stats and stop use ssh",
            Some("build it with `. scripts/lib.sh && build_agent`, or set BANGER_AGENT".into()),
        ),
    });
    if let Some(net) = &d.net {
        out.push(row(
            "network",
            Level::Pass,
            format!(
                "bridge {} {} ({}), {}/{} idle pool taps, {} guest(s) with NAT",
                net.bridge,
                net.bridge_ip,
                net.cidr,
                net.idle_taps.len(),
                net.tap_pool_size,
                net.nat.len()
            ),
            None,
        ));
        out.push(match (&net.dns.listen, &net.dns.error) {
            (Some(l), _) if d.resolves_vm => row(
                "dns",
                Level::Pass,
                format!("{l}; <name>.vm resolves on this host"),
                None,
            ),
            (Some(l), _) => row(
                "dns",
                Level::Warn,
                format!("{l} answers, but <name>.vm does not resolve on this host"),
                Some("`banger dns status` prints the recipe for your resolver".into()),
            ),
            (None, e) => row(
                "dns",
                Level::Warn,
                format!("not serving: {}", e.as_deref().unwrap_or("unknown")),
                Some("set `dns_listen` in config.toml to a free address:port".into()),
            ),
        });
    }
    if let Some(images) = &d.images {
        out.push(if images.iter().any(|i| i.name == cfg.default_image_name) {
            row("default image", Level::Pass, format!("{} is available", cfg.default_image_name), None)
        } else {
            row(
                "default image",
                Level::Warn,
                format!("{} is not built yet", cfg.default_image_name),
                Some("it is built on first use (debootstrap, needs the Debian mirror); `banger image ensure` does it now".into()),
            )
        });
    }
}

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
        banger_host::process::find_in_path(program).or_else(|| {
            ["/usr/sbin", "/sbin"]
                .iter()
                .map(|d| Path::new(d).join(program))
                .find(|p| p.is_file())
        })
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A host where everything is present and fine; tests break one thing each.
    #[derive(Debug, Clone)]
    struct Fake {
        arch: &'static str,
        kvm: Kvm,
        missing: Vec<&'static str>,
        firecracker: Option<&'static str>,
        store: StoreFact,
        ssh_included: bool,
        tun: (bool, bool),
    }

    impl Default for Fake {
        fn default() -> Self {
            Fake {
                arch: "x86_64",
                kvm: Kvm {
                    device: true,
                    usable: true,
                    hw_virt: true,
                    probe_error: None,
                },
                missing: vec![],
                firecracker: Some("Firecracker v1.16.1"),
                store: StoreFact::Compatible,
                ssh_included: true,
                tun: (true, true),
            }
        }
    }

    impl Facts for Fake {
        fn arch(&self) -> String {
            self.arch.into()
        }
        fn kvm(&self) -> Kvm {
            self.kvm.clone()
        }
        fn tun(&self) -> (bool, bool) {
            self.tun
        }
        fn which(&self, program: &str) -> Option<PathBuf> {
            if self.missing.contains(&program)
                || (program == "firecracker" && self.firecracker.is_none())
            {
                return None;
            }
            Some(PathBuf::from(format!("/usr/bin/{program}")))
        }
        fn version(&self, program: &Path) -> Option<String> {
            if program.ends_with("firecracker") {
                return self.firecracker.map(str::to_owned);
            }
            Some("QEMU emulator version 10.0.2".into())
        }
        fn store(&self) -> StoreFact {
            self.store.clone()
        }
        fn cpus_and_memory_mib(&self) -> (u32, u64) {
            (8, 16384)
        }
        fn ssh_config_included(&self) -> bool {
            self.ssh_included
        }
    }

    fn net() -> NetStatus {
        NetStatus {
            bridge: "br-fc".into(),
            bridge_ip: "172.16.0.1".into(),
            cidr: "172.16.0.0/24".into(),
            tap_pool_size: 4,
            idle_taps: vec!["bt-1".into(), "bt-2".into()],
            nat: vec![],
            dns: banger_api::types::DnsInfo {
                listen: Some("127.0.0.1:42069".into()),
                error: None,
                records: vec![],
                resolver: "no-resolved".into(),
            },
        }
    }

    fn daemon() -> DaemonFacts {
        DaemonFacts {
            error: None,
            net: Some(net()),
            images: Some(vec![ImageInfo {
                name: "debian-bookworm".into(),
                source: "debootstrap".into(),
                rootfs: "/x/rootfs.ext4".into(),
                kernel: Some("k".into()),
                size_bytes: 1,
                ..ImageInfo::default()
            }]),
            resolves_vm: true,
            agent: Some("/usr/local/lib/banger/banger-agent".into()),
        }
    }

    fn level(checks: &[Check], name: &str) -> (Level, String, Option<String>) {
        let c = checks
            .iter()
            .find(|c| c.name == name)
            .unwrap_or_else(|| panic!("no row {name}"));
        (c.level, c.detail.clone(), c.hint.clone())
    }

    #[test]
    fn test_all_good_is_all_pass() {
        let c = checks(&Fake::default(), &Config::default(), &daemon());
        assert!(c.iter().all(|c| c.level == Level::Pass), "{c:#?}");
        assert!(level(&c, "vmm backend").1.starts_with("firecracker"));
        assert_eq!(
            level(&c, "vm defaults").1,
            "2 vcpu (auto), 2048 MiB (auto), 8G disk (builtin)"
        );
    }

    #[test]
    fn test_kvm_paths() {
        let cfg = Config::default();
        let nested = Fake {
            kvm: Kvm {
                device: true,
                usable: true,
                hw_virt: false,
                probe_error: Some("a 64-bit probe guest failed with an internal KVM error".into()),
            },
            ..Fake::default()
        };
        let c = checks(&nested, &cfg, &daemon());
        let (l, detail, hint) = level(&c, "kvm");
        assert_eq!(l, Level::Warn);
        assert!(
            detail.contains("cannot run stock guest kernels"),
            "{detail}"
        );
        assert!(hint.is_some());
        assert!(level(&c, "vmm backend").1.starts_with("qemu (tcg)"));
        let none = Fake {
            kvm: Kvm {
                device: false,
                usable: false,
                hw_virt: true,
                probe_error: None,
            },
            ..Fake::default()
        };
        assert!(
            level(&checks(&none, &cfg, &daemon()), "kvm")
                .2
                .unwrap()
                .contains("modprobe")
        );
        let perms = Fake {
            kvm: Kvm {
                device: true,
                usable: false,
                hw_virt: true,
                probe_error: None,
            },
            ..Fake::default()
        };
        assert!(
            level(&checks(&perms, &cfg, &daemon()), "kvm")
                .2
                .unwrap()
                .contains("kvm` group")
        );
    }

    #[test]
    fn test_tun_paths() {
        let cfg = Config::default();
        let ok = checks(&Fake::default(), &cfg, &daemon());
        assert_eq!(level(&ok, "tun").0, Level::Pass);
        let closed = Fake {
            tun: (true, false),
            ..Fake::default()
        };
        let (l, _, h) = level(&checks(&closed, &cfg, &daemon()), "tun");
        assert_eq!(l, Level::Warn);
        assert!(h.unwrap().contains("chmod 0666"));
        let none = Fake {
            tun: (false, false),
            ..Fake::default()
        };
        assert_eq!(level(&checks(&none, &cfg, &daemon()), "tun").0, Level::Fail);
    }

    #[test]
    fn test_firecracker_paths() {
        let cfg = Config::default();
        let old = Fake {
            firecracker: Some("Firecracker v1.4.0"),
            ..Fake::default()
        };
        let (l, d, h) = level(&checks(&old, &cfg, &daemon()), "firecracker");
        assert_eq!(l, Level::Fail);
        assert!(d.contains(">= 1.5.0") && h.unwrap().contains("releases"));
        let missing = Fake {
            firecracker: None,
            ..Fake::default()
        };
        let c = checks(&missing, &cfg, &daemon());
        assert_eq!(level(&c, "firecracker").0, Level::Warn);
        assert!(level(&c, "vmm backend").1.starts_with("qemu (kvm)"));
        // Asked for firecracker without one: the backend row fails.
        let cfg_fc = Config {
            vmm: banger_config::VmmKind::Firecracker,
            ..Config::default()
        };
        assert_eq!(
            level(&checks(&missing, &cfg_fc, &daemon()), "vmm backend").0,
            Level::Fail
        );
    }

    #[test]
    fn test_tool_and_qemu_paths() {
        let cfg = Config::default();
        let no_nft = Fake {
            missing: vec!["nft", "git"],
            ..Fake::default()
        };
        let (l, d, h) = level(&checks(&no_nft, &cfg, &daemon()), "host tools");
        assert_eq!(l, Level::Warn);
        assert!(d.contains("nft (NAT (--nat))") && d.contains("git"), "{d}");
        assert_eq!(h.unwrap(), "apt-get install -y nftables git");
        let no_mkfs = Fake {
            missing: vec!["mkfs.ext4", "nft"],
            ..Fake::default()
        };
        let (l, _, h) = level(&checks(&no_mkfs, &cfg, &daemon()), "host tools");
        assert_eq!(l, Level::Fail);
        assert_eq!(h.unwrap(), "apt-get install -y e2fsprogs");
        let no_qemu = Fake {
            missing: vec!["qemu-system-x86_64"],
            firecracker: None,
            ..Fake::default()
        };
        assert_eq!(
            level(&checks(&no_qemu, &cfg, &daemon()), "qemu").0,
            Level::Fail
        );
        let fc_only = Fake {
            missing: vec!["qemu-system-x86_64"],
            ..Fake::default()
        };
        assert_eq!(
            level(&checks(&fc_only, &cfg, &daemon()), "qemu").0,
            Level::Warn
        );
        // `doctor --fix` installs what the failing and warning rows name, each package once.
        let many = Fake {
            missing: vec!["mkfs.ext4", "e2fsck", "nft", "qemu-system-x86_64"],
            firecracker: None,
            ..Fake::default()
        };
        assert_eq!(
            packages_to_install(&checks(&many, &cfg, &daemon())),
            ["qemu-system-x86", "e2fsprogs", "nftables"]
        );
        assert!(packages_to_install(&checks(&Fake::default(), &cfg, &daemon())).is_empty());
    }

    #[test]
    fn test_store_and_daemon_paths() {
        let cfg = Config::default();
        let newer = Fake {
            store: StoreFact::Incompatible { db: 9, known: 3 },
            ..Fake::default()
        };
        assert_eq!(
            level(&checks(&newer, &cfg, &daemon()), "store").0,
            Level::Fail
        );
        let pending = Fake {
            store: StoreFact::NeedsMigration(2),
            ..Fake::default()
        };
        assert_eq!(
            level(&checks(&pending, &cfg, &daemon()), "store").0,
            Level::Warn
        );
        let down = DaemonFacts {
            error: Some("refused".into()),
            ..DaemonFacts::default()
        };
        let c = checks(&Fake::default(), &cfg, &down);
        assert_eq!(level(&c, "daemon").0, Level::Fail);
        assert!(c.iter().all(|r| r.name != "dns"));
        let unresolved = DaemonFacts {
            resolves_vm: false,
            ..daemon()
        };
        let (l, _, h) = level(&checks(&Fake::default(), &cfg, &unresolved), "dns");
        assert_eq!(l, Level::Warn);
        assert!(h.unwrap().contains("dns status"));
        let no_image = DaemonFacts {
            images: Some(vec![]),
            ..daemon()
        };
        assert_eq!(
            level(&checks(&Fake::default(), &cfg, &no_image), "default image").0,
            Level::Warn
        );
        let no_agent = DaemonFacts {
            agent: None,
            ..daemon()
        };
        let (l, _, h) = level(&checks(&Fake::default(), &cfg, &no_agent), "guest agent");
        assert_eq!(l, Level::Warn);
        assert!(h.unwrap().contains("build_agent"));
        let no_include = Fake {
            ssh_included: false,
            ..Fake::default()
        };
        let (l, _, h) = level(&checks(&no_include, &cfg, &daemon()), "ssh config");
        assert_eq!(l, Level::Warn);
        assert!(h.unwrap().contains("ssh-config --install"));
    }

    #[test]
    fn test_json_snapshot() {
        let host = Fake {
            kvm: Kvm {
                device: true,
                usable: true,
                hw_virt: false,
                probe_error: Some("a 64-bit probe guest failed with an internal KVM error".into()),
            },
            firecracker: None,
            missing: vec!["nft"],
            ..Fake::default()
        };
        let json = serde_json::to_string_pretty(&checks(
            &host,
            &Config::default(),
            &DaemonFacts {
                resolves_vm: false,
                ..daemon()
            },
        ))
        .unwrap();
        let expected = include_str!("../tests/snapshots/doctor.json");
        assert_eq!(
            json.trim(),
            expected.trim(),
            "update tests/snapshots/doctor.json if the change is intended:\n{json}"
        );
    }
}
