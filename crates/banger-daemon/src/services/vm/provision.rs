//! Provisioning a new VM's disks: the copy-on-write system disk with its guest config
//! (hostname, hosts, network, resolver, its own ssh host key, the guest agent and its unit),
//! the work disk (the image's `/root` plus banger's authorized key), and the host key pinned
//! in banger's known_hosts under the VM's id. All blocking work runs off the runtime.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use banger_host::Cmd;
use banger_host::disk::{self, ImageFile};
use banger_store::{ImageRecord, VmRecord};

use super::guest_access::host_alias;
use super::{VmError, VmService};
use crate::progress::Progress;
use crate::services::support::{blocking, lock};

/// Where the guest agent goes in every VM's system disk, and its unit.
const AGENT_GUEST_PATH: &str = "/usr/local/bin/banger-agent";
const AGENT_UNIT_PATH: &str = "/etc/systemd/system/banger-agent.service";
const AGENT_WANTS_LINK: &str = "/etc/systemd/system/multi-user.target.wants/banger-agent.service";
const AGENT_UNIT: &str = "[Unit]
Description=banger guest agent (vsock port 1024)
After=local-fs.target

[Service]
ExecStart=/usr/local/bin/banger-agent
Restart=always
RestartSec=1

[Install]
WantedBy=multi-user.target
";

fn set_mode(path: &Path, mode: u32) -> Result<(), VmError> {
    use std::os::unix::fs::PermissionsExt as _;
    fs_err::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(VmError::WorkDiskFile)
}

/// A VM's `/etc/hosts`.
pub(super) fn hosts_file(vm: &VmRecord) -> String {
    format!(
        "127.0.0.1 localhost\n127.0.1.1 {0}\n{1} {0}.vm {0}\n::1 localhost ip6-localhost\n",
        vm.name, vm.guest_ip
    )
}

/// A VM's `/etc/banger/network.env` (read by `banger-network` at boot).
pub(super) fn network_env(vm: &VmRecord, cfg: &banger_config::Config) -> String {
    format!(
        "BANGER_IFACE=eth0\nBANGER_ADDR={}/{}\nBANGER_GATEWAY={}\n",
        vm.guest_ip,
        cfg.cidr.prefix_len(),
        cfg.bridge_ip
    )
}

/// What provisioning needs, owned so it can move to a blocking thread.
struct Plan {
    dir: PathBuf,
    vm: VmRecord,
    image: ImageRecord,
    key: PathBuf,
    known_hosts: PathBuf,
    known_hosts_lock: Arc<std::sync::Mutex<()>>,
    agent: Option<PathBuf>,
    config: Arc<banger_config::Config>,
    runner: Arc<dyn banger_host::CommandRunner>,
    clock: Arc<dyn banger_host::Clock>,
}

impl Plan {
    fn run(&self, progress: &Progress) -> Result<(), VmError> {
        banger_host::sshkey::ensure(self.runner.as_ref(), self.clock.as_ref(), &self.key)
            .map_err(VmError::SshKey)?;
        progress.stage("system disk")?;
        fs_err::create_dir_all(&self.dir).map_err(VmError::VmDir)?;
        let root = self.dir.join("root.ext4");
        disk::cow_copy(
            self.runner.as_ref(),
            Path::new(&self.image.rootfs_path),
            &root,
        )
        .map_err(VmError::SystemDisk)?;
        progress.stage("guest config")?;
        let host_key = self.host_key()?;
        let stage = self.dir.join("stage");
        fs_err::create_dir_all(&stage).map_err(VmError::GuestConfigFile)?;
        self.guest_config(&root, &stage, &host_key)?;
        progress.stage("work disk")?;
        self.work_disk(&stage)?;
        let _ = fs_err::remove_dir_all(&stage);
        self.pin_host_key(&host_key)?;
        let _ = fs_err::remove_file(&host_key);
        Ok(())
    }

    /// A copy of snapshot `snap`: its disks (the files the VM's row names, which are the
    /// snapshot's: moved when `owned`, a fork's slot for this VM; else copied) and a fresh, pinned host key. Returns the key (private, public) for the
    /// guest's new identity; the private half is not kept.
    fn run_restore(
        &self,
        snap: &Path,
        owned: bool,
        progress: &Progress,
    ) -> Result<(String, String), VmError> {
        progress.stage("disks")?;
        fs_err::create_dir_all(&self.dir).map_err(VmError::VmDir)?;
        let files = super::disks::disk_files(&self.vm.spec);
        if owned {
            for (_, f) in &files {
                fs_err::rename(snap.join(f), self.dir.join(f)).map_err(VmError::SnapshotFiles)?;
            }
        } else {
            let jobs: Vec<_> = files
                .iter()
                .map(|(_, f)| (snap.join(f), self.dir.join(f)))
                .collect();
            super::disks::copy_side_by_side(self.runner.as_ref(), &jobs)?;
        }
        progress.stage("host key")?;
        let host_key = self.host_key()?;
        self.pin_host_key(&host_key)?;
        let private = fs_err::read_to_string(&host_key).map_err(VmError::HostKeyFile)?;
        let public =
            fs_err::read_to_string(host_key.with_extension("pub")).map_err(VmError::HostKeyFile)?;
        let _ = fs_err::remove_file(&host_key);
        Ok((private, public))
    }

    /// A fresh ssh host key for the VM (private half removed once it is in the disk).
    fn host_key(&self) -> Result<PathBuf, VmError> {
        let host_key = self.dir.join("ssh_host_ed25519_key");
        self.runner
            .run(
                &Cmd::new("ssh-keygen")
                    .args(["-q", "-t", "ed25519", "-N", "", "-C", &self.vm.name])
                    .arg("-f")
                    .arg(host_key.display().to_string()),
            )
            .map_err(VmError::HostKey)?;
        Ok(host_key)
    }

    fn guest_config(&self, root: &Path, stage: &Path, host_key: &Path) -> Result<(), VmError> {
        let (vm, cfg) = (&self.vm, &self.config);
        let put = |name: &str, text: String| -> Result<PathBuf, VmError> {
            let p = stage.join(name);
            fs_err::write(&p, text).map_err(VmError::GuestConfigFile)?;
            Ok(p)
        };
        let file = |guest_path: &str, host_path: PathBuf, mode: u32| ImageFile {
            guest_path: guest_path.into(),
            host_path,
            mode,
        };
        let hosts = hosts_file(vm);
        let network = network_env(vm, cfg);
        let mut files = vec![
            file(
                "/etc/hostname",
                put("hostname", format!("{}\n", vm.name))?,
                0o644,
            ),
            file("/etc/hosts", put("hosts", hosts)?, 0o644),
            file(
                "/etc/banger/network.env",
                put("network.env", network)?,
                0o644,
            ),
            file(
                "/etc/resolv.conf",
                put("resolv.conf", format!("nameserver {}\n", cfg.default_dns))?,
                0o644,
            ),
            file("/etc/ssh/ssh_host_ed25519_key", host_key.to_owned(), 0o600),
            file(
                "/etc/ssh/ssh_host_ed25519_key.pub",
                host_key.with_extension("pub"),
                0o644,
            ),
        ];
        let mut links = Vec::new();
        if let Some(agent) = &self.agent {
            files.push(file(AGENT_GUEST_PATH, agent.clone(), 0o755));
            files.push(file(
                AGENT_UNIT_PATH,
                put("banger-agent.service", AGENT_UNIT.to_owned())?,
                0o644,
            ));
            links.push((AGENT_WANTS_LINK, AGENT_UNIT_PATH));
        }
        disk::write_entries(self.runner.as_ref(), root, &files, &links)
            .map_err(VmError::GuestConfig)
    }

    /// The work disk: the image's /root plus banger's authorized key.
    fn work_disk(&self, stage: &Path) -> Result<(), VmError> {
        let work_root = stage.join("work");
        match &self.image.work_seed_path {
            Some(seed) if Path::new(seed).is_dir() => {
                self.runner
                    .run(
                        &Cmd::new("cp")
                            .args(["-a", seed])
                            .arg(work_root.display().to_string()),
                    )
                    .map_err(VmError::WorkSeed)?;
            }
            _ => fs_err::create_dir_all(&work_root).map_err(VmError::WorkDiskFile)?,
        }
        let ssh_dir = work_root.join(".ssh");
        fs_err::create_dir_all(&ssh_dir).map_err(VmError::WorkDiskFile)?;
        let pubkey = fs_err::read_to_string(self.key.with_extension("pub"))
            .map_err(VmError::WorkDiskFile)?;
        fs_err::write(ssh_dir.join("authorized_keys"), pubkey).map_err(VmError::WorkDiskFile)?;
        set_mode(&ssh_dir, 0o700)?;
        set_mode(&ssh_dir.join("authorized_keys"), 0o600)?;
        set_mode(&work_root, 0o700)?;
        disk::make_ext4_root_owned(
            self.runner.as_ref(),
            &self.dir.join("work.ext4"),
            self.vm.disk_bytes,
            "banger-work",
            &work_root,
        )
        .map_err(VmError::WorkDisk)
    }

    /// Pins the host key under the VM id (never reused, unlike IPs).
    fn pin_host_key(&self, host_key: &Path) -> Result<(), VmError> {
        let pubtext =
            fs_err::read_to_string(host_key.with_extension("pub")).map_err(VmError::HostKeyFile)?;
        let mut parts = pubtext.split_whitespace();
        let entry = format!(
            "{} {} {}\n",
            host_alias(&self.vm.id),
            parts.next().unwrap_or_default(),
            parts.next().unwrap_or_default()
        );
        if let Some(d) = self.known_hosts.parent() {
            fs_err::create_dir_all(d).map_err(VmError::KnownHosts)?;
        }
        let _edit = lock(&self.known_hosts_lock);
        let mut f = fs_err::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.known_hosts)
            .map_err(VmError::KnownHosts)?;
        f.write_all(entry.as_bytes()).map_err(VmError::KnownHosts)
    }
}

impl VmService {
    /// Disks and guest config for a new VM.
    pub(super) async fn provision(
        &self,
        vm: &VmRecord,
        image: &ImageRecord,
        progress: &Arc<Progress>,
    ) -> Result<(), VmError> {
        let plan = self.plan(vm, image);
        let progress = Arc::clone(progress);
        blocking(move || plan.run(&progress)).await
    }

    fn plan(&self, vm: &VmRecord, image: &ImageRecord) -> Plan {
        Plan {
            dir: self.vm_dir(&vm.id),
            vm: vm.clone(),
            image: image.clone(),
            key: self.key_path(),
            known_hosts: self.known_hosts(),
            known_hosts_lock: Arc::clone(&self.known_hosts_lock),
            agent: self.infra.agent.clone(),
            config: Arc::clone(&self.infra.config),
            runner: Arc::clone(&self.infra.runner),
            clock: Arc::clone(&self.infra.clock),
        }
    }

    /// Disks and host key for a VM started from snapshot directory `snap`; returns the
    /// host key (private, public).
    pub(super) async fn provision_restore(
        &self,
        vm: &VmRecord,
        image: &ImageRecord,
        (snap, owned): (PathBuf, bool),
        progress: &Arc<Progress>,
    ) -> Result<(String, String), VmError> {
        let plan = self.plan(vm, image);
        let progress = Arc::clone(progress);
        blocking(move || plan.run_restore(&snap, owned, &progress)).await
    }

    /// Removes VM `id`'s pinned host key from banger's known_hosts.
    pub(super) async fn forget_host_key(&self, id: &str) {
        let alias = host_alias(id);
        self.edit_known_hosts(move |first| first != alias).await;
    }

    /// Drops the pinned host keys of VMs that no longer exist (a kill between a delete's
    /// row and its known_hosts edit leaves one behind).
    pub(super) async fn prune_host_keys(&self, live: std::collections::HashSet<String>) {
        self.edit_known_hosts(move |first| {
            first
                .strip_prefix("banger-")
                .is_none_or(|id| live.contains(id))
        })
        .await;
    }

    /// Keeps the known_hosts lines whose first field `keep` accepts.
    async fn edit_known_hosts(&self, keep: impl Fn(&str) -> bool + Send + 'static) {
        let kh = self.known_hosts();
        let edit_lock = Arc::clone(&self.known_hosts_lock);
        let _ = blocking(move || -> Result<(), VmError> {
            let _edit = lock(&edit_lock);
            if let Ok(text) = fs_err::read_to_string(&kh) {
                let kept: String = text
                    .lines()
                    .filter(|l| keep(l.split_whitespace().next().unwrap_or("")))
                    .map(|l| format!("{l}\n"))
                    .collect();
                if kept != text {
                    let _ = fs_err::write(&kh, kept);
                }
            }
            Ok(())
        })
        .await;
    }
}
