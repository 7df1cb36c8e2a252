//! The QEMU backend: `qemu-system-x86_64 -M microvm`, daemonized, with a QMP socket.

use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::{VmSpec, Vmm, VmmError, VmmHandle, check_socket_path};

/// CPU acceleration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accel {
    /// Hardware virtualization.
    Kvm,
    /// Software emulation (needs `tsc_early_khz=` on the kernel command line under microvm).
    Tcg,
}

/// QEMU as a VMM.
#[derive(Debug, Clone)]
pub struct QemuVmm {
    binary: PathBuf,
    accel: Accel,
    agent_mux: Option<PathBuf>,
}

impl QemuVmm {
    /// QEMU at `binary` with `accel`; no vsock.
    pub fn new(binary: PathBuf, accel: Accel) -> Self {
        QemuVmm {
            binary,
            accel,
            agent_mux: None,
        }
    }

    /// Gives guests the agent channel: a virtio-serial port whose host end is
    /// `binary --agent-mux` (`bangerd`), which offers the same `CONNECT <port>` socket as
    /// Firecracker's vsock ([`crate::agentmux`]). Unlike vhost-user-vsock, the port's state
    /// migrates, so these VMs can be snapshotted.
    #[must_use]
    pub fn with_agent_mux(mut self, binary: Option<PathBuf>) -> Self {
        self.agent_mux = binary;
        self
    }

    /// Starts the agent channel's helper for `spec`; returns its (pid, start time).
    fn start_mux(spec: &VmSpec, bin: &Path) -> Result<(u32, u64), VmmError> {
        let Some(vsock) = &spec.vsock else {
            return Err(VmmError::Unsupported("no agent socket in spec".into()));
        };
        let sock = serial_socket(&spec.run_dir);
        check_socket_path(&sock)?;
        check_socket_path(&vsock.uds_path)?;
        let _ = fs_err::remove_file(&sock);
        let _ = fs_err::remove_file(&vsock.uds_path);
        let (log, log2) = append_log(&spec.vmm_log)?;
        let program = bin.display().to_string();
        let mut child = Command::new(bin)
            .arg("--agent-mux")
            .arg("--chardev")
            .arg(&sock)
            .arg("--socket")
            .arg(&vsock.uds_path)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2)
            .process_group(0)
            .spawn()
            .map_err(|source| VmmError::Spawn {
                program: program.clone(),
                source,
            })?;
        let pid = child.id();
        let deadline = Instant::now() + Duration::from_secs(5);
        while !sock.exists() {
            if let Ok(Some(status)) = child.try_wait() {
                return Err(VmmError::Startup {
                    program,
                    detail: format!("agent channel helper exited with {status}"),
                });
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return Err(VmmError::Startup {
                    program,
                    detail: "no agent channel socket after 5s".into(),
                });
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        let start = crate::process::start_time(pid).unwrap_or(0);
        std::thread::spawn(move || {
            let _ = child.wait();
        });
        Ok((pid, start))
    }

    /// The acceleration in use.
    pub fn accel(&self) -> Accel {
        self.accel
    }
}

fn p(path: &Path) -> String {
    path.display().to_string()
}

/// A path as the value of a QEMU `key=value,...` option: commas doubled (QEMU's escape).
fn kv(path: &Path) -> String {
    p(path).replace(',', ",,")
}

/// The QMP socket of a VM run dir.
pub fn qmp_socket(run_dir: &Path) -> PathBuf {
    run_dir.join("qmp.sock")
}

/// Runs one QMP command (after the capabilities handshake); returns its reply line.
pub fn qmp_command(socket: &Path, command: &str) -> std::io::Result<String> {
    use std::io::{BufRead as _, BufReader, Write as _};
    let stream = std::os::unix::net::UnixStream::connect(socket)?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut writer = stream;
    let mut line = String::new();
    reader.read_line(&mut line)?; // greeting
    writer.write_all(b"{\"execute\":\"qmp_capabilities\"}\n")?;
    line.clear();
    reader.read_line(&mut line)?;
    writer.write_all(format!("{{\"execute\":\"{command}\"}}\n").as_bytes())?;
    loop {
        line.clear();
        if reader.read_line(&mut line)? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        // Skip asynchronous events; the reply has `return` or `error`.
        if line.contains("\"return\"") || line.contains("\"error\"") {
            return Ok(line.trim().to_owned());
        }
    }
}

/// `path` opened for appending, twice (stdout and stderr of a child).
fn append_log(path: &Path) -> Result<(std::fs::File, std::fs::File), VmmError> {
    let err = |source| VmmError::Io {
        path: path.to_owned(),
        source,
    };
    let log = fs_err::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(err)?
        .into_parts()
        .0;
    let log2 = log.try_clone().map_err(err)?;
    Ok((log, log2))
}

/// The socket QEMU connects the agent's virtio-serial port to (the helper listens).
pub fn serial_socket(run_dir: &Path) -> PathBuf {
    run_dir.join("agent-serial.sock")
}

/// The full QEMU argument vector for `spec` (without the binary).
pub fn qemu_args(spec: &VmSpec, accel: Accel) -> Vec<String> {
    let mut a: Vec<String> = Vec::new();
    let mut push = |xs: &[&str]| a.extend(xs.iter().map(|s| (*s).to_owned()));
    let machine = match spec.vsock {
        Some(_) => "microvm,pit=on,pic=on,rtc=on,memory-backend=mem",
        None => "microvm,pit=on,pic=on,rtc=on",
    };
    push(&[
        "-name",
        &format!("banger-{},process=banger-{}", spec.name, spec.name),
    ]);
    push(&["-M", machine]);
    push(&["-accel", if accel == Accel::Kvm { "kvm" } else { "tcg" }]);
    push(&["-cpu", if accel == Accel::Kvm { "host" } else { "max" }]);
    push(&[
        "-smp",
        &spec.vcpu.to_string(),
        "-m",
        &format!("{}M", spec.memory_mib),
    ]);
    push(&[
        "-nodefaults",
        "-no-user-config",
        "-display",
        "none",
        "-no-reboot",
    ]);
    push(&["-kernel", &p(&spec.kernel)]);
    if let Some(initrd) = &spec.initrd {
        push(&["-initrd", &p(initrd)]);
    }
    let mut cmdline = spec.cmdline.clone();
    if accel == Accel::Tcg && !cmdline.contains("tsc_early_khz=") {
        cmdline.push_str(" tsc_early_khz=2000000");
    }
    push(&["-append", &cmdline]);
    for d in &spec.drives {
        let ro = if d.read_only { ",readonly=on" } else { "" };
        push(&[
            "-drive",
            &format!(
                "id={},file={},format=raw,if=none,cache=unsafe{ro}",
                d.id,
                kv(&d.path)
            ),
        ]);
        push(&["-device", &format!("virtio-blk-device,drive={}", d.id)]);
    }
    if let Some(net) = &spec.net {
        push(&[
            "-netdev",
            &format!("tap,id=n0,ifname={},script=no,downscript=no", net.tap),
        ]);
        push(&[
            "-device",
            &format!("virtio-net-device,netdev=n0,mac={}", net.mac),
        ]);
    }
    if spec.vsock.is_some() {
        push(&[
            "-object",
            &format!(
                "memory-backend-memfd,id=mem,size={}M,share=on",
                spec.memory_mib
            ),
        ]);
        push(&["-device", "virtio-serial-device,max_ports=2"]);
        push(&[
            "-chardev",
            &format!(
                "socket,id=agent0,path={}",
                kv(&serial_socket(&spec.run_dir))
            ),
        ]);
        push(&[
            "-device",
            &format!(
                "virtserialport,chardev=agent0,name={}",
                banger_agent_proto::mux::PORT_NAME
            ),
        ]);
    }
    push(&["-serial", &format!("file:{}", p(&spec.console_log))]);
    push(&[
        "-qmp",
        &format!("unix:{},server=on,wait=off", kv(&qmp_socket(&spec.run_dir))),
    ]);
    push(&["-pidfile", &p(&spec.run_dir.join("qemu.pid"))]);
    push(&["-daemonize"]);
    a
}

impl Vmm for QemuVmm {
    fn name(&self) -> String {
        match self.accel {
            Accel::Kvm => "qemu (kvm)".to_owned(),
            Accel::Tcg => "qemu (tcg)".to_owned(),
        }
    }

    fn supports_vsock(&self) -> bool {
        self.agent_mux.is_some()
    }

    fn request_shutdown(&self, handle: &VmmHandle) {
        let _ = qmp_command(&handle.control_socket, "system_powerdown");
    }

    fn launch(&self, spec: &VmSpec) -> Result<VmmHandle, VmmError> {
        let qmp = qmp_socket(&spec.run_dir);
        check_socket_path(&qmp)?;
        let helper = match (&spec.vsock, &self.agent_mux) {
            (Some(_), Some(bin)) => Some(Self::start_mux(spec, bin)?),
            (Some(_), None) => {
                return Err(VmmError::Unsupported(
                    "the agent channel needs bangerd's --agent-mux helper".into(),
                ));
            }
            _ => None,
        };
        let kill_helper = || {
            if let Some((pid, start)) = helper {
                crate::process::kill(pid, start);
            }
        };
        match self.launch_qemu(spec, qmp) {
            Ok(mut h) => {
                h.helpers.extend(helper);
                Ok(h)
            }
            Err(e) => {
                kill_helper();
                Err(e)
            }
        }
    }
}

impl QemuVmm {
    fn launch_qemu(&self, spec: &VmSpec, qmp: PathBuf) -> Result<VmmHandle, VmmError> {
        let pidfile = spec.run_dir.join("qemu.pid");
        let _ = fs_err::remove_file(&pidfile);
        let (log, log2) = append_log(&spec.vmm_log)?;
        let program = self.binary.display().to_string();
        let status = Command::new(&self.binary)
            .args(qemu_args(spec, self.accel))
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2)
            .status()
            .map_err(|source| VmmError::Spawn {
                program: program.clone(),
                source,
            })?;
        let detail = || {
            let text = std::fs::read_to_string(&spec.vmm_log).unwrap_or_default();
            let lines: Vec<&str> = text.trim().lines().rev().take(5).collect();
            lines.into_iter().rev().collect::<Vec<_>>().join("; ")
        };
        if !status.success() {
            return Err(VmmError::Startup {
                program,
                detail: format!("{status}: {}", detail()),
            });
        }
        // -daemonize returns after the VM is set up; the pid file is written by then.
        let deadline = Instant::now() + Duration::from_secs(5);
        let pid = loop {
            if let Ok(text) = std::fs::read_to_string(&pidfile)
                && let Ok(pid) = text.trim().parse::<u32>()
            {
                break pid;
            }
            if Instant::now() > deadline {
                return Err(VmmError::Startup {
                    program,
                    detail: "no pid file after 5s".into(),
                });
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        let start_time = crate::process::start_time(pid).ok_or_else(|| VmmError::Startup {
            program: program.clone(),
            detail: format!("pid {pid} exited: {}", detail()),
        })?;
        Ok(VmmHandle {
            backend: self.name(),
            pid,
            start_time,
            control_socket: qmp,
            helpers: Vec::new(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vmm::{Drive, NetSpec};

    fn spec() -> VmSpec {
        VmSpec {
            name: "web".into(),
            vcpu: 2,
            memory_mib: 1024,
            kernel: "/k/vmlinuz".into(),
            initrd: Some("/k/initrd.img".into()),
            cmdline: "console=ttyS0 root=/dev/vda".into(),
            drives: vec![
                Drive {
                    id: "rootfs".into(),
                    path: "/v/root.ext4".into(),
                    read_only: false,
                },
                Drive {
                    id: "work".into(),
                    path: "/v/work.ext4".into(),
                    read_only: false,
                },
            ],
            net: Some(NetSpec {
                tap: "bt-1".into(),
                mac: "06:00:ac:10:00:02".into(),
            }),
            vsock: None,
            run_dir: "/r".into(),
            console_log: "/v/console.log".into(),
            vmm_log: "/v/vmm.log".into(),
        }
    }

    #[test]
    fn test_paths_with_commas_and_spaces_are_escaped_in_key_value_options() {
        let mut s = spec();
        s.drives[0].path = "/home/a b,c/vms/root.ext4".into();
        s.run_dir = "/run/x,y z".into();
        s.vsock = Some(crate::vmm::VsockSpec {
            cid: 3,
            uds_path: "/run/x,y z/vsock.sock".into(),
        });
        let args = qemu_args(&s, Accel::Tcg);
        let arg_after = |flag: &str| {
            args.iter()
                .position(|a| a == flag)
                .and_then(|i| args.get(i + 1))
                .cloned()
                .unwrap_or_default()
        };
        assert!(
            arg_after("-drive").starts_with("id=rootfs,file=/home/a b,,c/vms/root.ext4,format=raw"),
            "{args:?}"
        );
        assert!(
            arg_after("-chardev").contains("path=/run/x,,y z/"),
            "{args:?}"
        );
        assert!(
            arg_after("-qmp").starts_with("unix:/run/x,,y z/"),
            "{args:?}"
        );
        assert_eq!(
            arg_after("-pidfile"),
            "/run/x,y z/qemu.pid",
            "plain arguments stay as they are"
        );
    }

    #[test]
    fn test_qemu_args_tcg_microvm() {
        let args = qemu_args(&spec(), Accel::Tcg).join(" ");
        assert!(
            args.contains("-M microvm,pit=on,pic=on,rtc=on -accel tcg -cpu max -smp 2 -m 1024M"),
            "{args}"
        );
        assert!(
            args.contains("-append console=ttyS0 root=/dev/vda tsc_early_khz=2000000"),
            "{args}"
        );
        assert!(args.contains("-drive id=rootfs,file=/v/root.ext4,format=raw,if=none,cache=unsafe -device virtio-blk-device,drive=rootfs -drive id=work"), "{args}");
        assert!(args.contains("-netdev tap,id=n0,ifname=bt-1,script=no,downscript=no -device virtio-net-device,netdev=n0,mac=06:00:ac:10:00:02"), "{args}");
        assert!(
            args.contains("-qmp unix:/r/qmp.sock,server=on,wait=off"),
            "{args}"
        );
        assert!(args.ends_with("-daemonize"));
    }

    #[test]
    fn test_qemu_args_kvm_without_tsc_and_with_vsock() {
        let mut s = spec();
        s.vsock = Some(crate::vmm::VsockSpec {
            cid: 3,
            uds_path: "/r/v.sock".into(),
        });
        let args = qemu_args(&s, Accel::Kvm).join(" ");
        assert!(!args.contains("tsc_early_khz"));
        assert!(args.contains("-accel kvm -cpu host"));
        assert!(
            args.contains("memory-backend=mem")
                && args.contains("-device virtserialport,chardev=agent0,name=org.banger.agent")
        );
    }

    #[test]
    fn test_long_socket_path_refused() {
        let mut s = spec();
        s.run_dir = PathBuf::from(format!("/{}", "x".repeat(120)));
        let err = QemuVmm::new("qemu-system-x86_64".into(), Accel::Tcg)
            .launch(&s)
            .unwrap_err();
        assert!(matches!(err, VmmError::SocketPathTooLong(_)));
    }
}
