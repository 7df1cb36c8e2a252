//! The machine: architecture, KVM, `/dev/net/tun`, the VMM backend (the same choice bangerd
//! makes), firecracker and qemu.

use std::path::PathBuf;

use banger_config::Config;

use super::{APT, Check, Facts, Level, row};

/// Rows from the architecture to qemu.
pub(super) fn checks(f: &dyn Facts, cfg: &Config, out: &mut Vec<Check>) {
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
    // The guest agent's channel: Firecracker has vsock built in; under QEMU it is a
    // virtio-serial port whose host end is `bangerd --agent-mux` (nothing to install).
    out.push(row(
        "agent channel",
        Level::Pass,
        match choice {
            banger_host::vmm::Choice::Firecracker(_) => "firecracker's vsock",
            banger_host::vmm::Choice::Qemu(_) => {
                "a virtio-serial port carried by bangerd --agent-mux (migrates with snapshots)"
            }
        },
        None,
    ));
}
