//! The checks against fake hosts and daemons, and the JSON snapshot.

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
fn test_agent_channel_needs_nothing_installed() {
    let cfg = Config::default();
    let qemu = Fake {
        firecracker: None,
        ..Fake::default()
    };
    let rows = checks(&qemu, &cfg, &daemon());
    let (l, d, h) = level(&rows, "agent channel");
    assert_eq!(l, Level::Pass);
    assert!(d.contains("virtio-serial"), "{d}");
    assert!(h.is_none());
    assert!(crates_to_install(&rows).is_empty());
    let (l, d, _) = level(&checks(&Fake::default(), &cfg, &daemon()), "agent channel");
    assert_eq!((l, d.as_str()), (Level::Pass, "firecracker's vsock"));
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
    let expected = include_str!("../../tests/snapshots/doctor.json");
    assert_eq!(
        json.trim(),
        expected.trim(),
        "update tests/snapshots/doctor.json if the change is intended:\n{json}"
    );
}
