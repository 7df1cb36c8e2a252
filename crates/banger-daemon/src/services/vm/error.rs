//! `VmError`: what went wrong with a VM; each variant names the step that failed.

use banger_api::ErrorCode;
use banger_host::disk::DiskError;
use banger_host::vmm::VmmError;
use banger_host::{GuestIoError, RunError};

use crate::services::image::ImageError;
use crate::services::network::NetError;
use crate::services::support::{Cancelled, ServiceError, WorkerError};
use crate::services::workspace::WorkspaceError;

/// Errors of the VM service.
#[derive(Debug, thiserror::Error)]
pub enum VmError {
    /// No VM by that name or id.
    #[error("vm {0:?} not found")]
    NotFound(String),
    /// A label banger does not accept.
    #[error("invalid label {0:?}")]
    InvalidLabel(String),
    /// A name that is not a DNS label banger accepts.
    #[error("invalid vm name {0:?}")]
    InvalidName(String),
    /// The name is taken.
    #[error("vm {0:?} already exists")]
    NameTaken(String),
    /// The VM must run for this.
    #[error("vm {0:?} is not running")]
    NotRunning(String),
    /// A size that does not parse.
    #[error("invalid size {0:?}")]
    InvalidSize(String),
    /// A size with an unknown unit.
    #[error("invalid size unit in {0:?}")]
    InvalidSizeUnit(String),
    /// vCPUs out of range.
    #[error("--vcpu {0} is out of range")]
    VcpuOutOfRange(u32),
    /// Too little memory.
    #[error("--memory {0} MiB is too small")]
    MemoryTooSmall(u64),
    /// More memory than the host has.
    #[error("--memory {memory} MiB exceeds the host's {host} MiB")]
    MemoryOverHost {
        /// Asked for.
        memory: u64,
        /// The host's.
        host: u64,
    },
    /// Too small a work disk.
    #[error("--disk-size must be at least 256M")]
    DiskTooSmall,
    /// `vm set` without a change.
    #[error("nothing to change")]
    NothingToChange,
    /// vCPUs or memory changed on a running VM.
    #[error("vm {0:?} is running; vcpu and memory change only while it is stopped")]
    RunningSizing(String),
    /// The network has no address left.
    #[error("ip allocation: no free address left in {0}")]
    NoFreeAddress(String),
    /// banger's ssh key.
    #[error("ssh key")]
    SshKey(#[source] banger_host::sshkey::SshKeyError),
    /// The VM's directory.
    #[error("vm dir")]
    VmDir(#[source] std::io::Error),
    /// The copy-on-write system disk.
    #[error("system disk")]
    SystemDisk(#[source] DiskError),
    /// The VM's ssh host key.
    #[error("host key")]
    HostKey(#[source] RunError),
    /// Reading the VM's host key.
    #[error("host key")]
    HostKeyFile(#[source] std::io::Error),
    /// Staging the guest config files.
    #[error("guest config")]
    GuestConfigFile(#[source] std::io::Error),
    /// Writing the guest config into the system disk.
    #[error("guest config")]
    GuestConfig(#[source] DiskError),
    /// Copying the image's work seed.
    #[error("work disk")]
    WorkSeed(#[source] RunError),
    /// Staging the work disk's files.
    #[error("work disk")]
    WorkDiskFile(#[source] std::io::Error),
    /// Building the work disk.
    #[error("work disk")]
    WorkDisk(#[source] DiskError),
    /// Pinning the host key in banger's known_hosts.
    #[error("known_hosts")]
    KnownHosts(#[source] std::io::Error),
    /// The stored guest address does not parse.
    #[error("network: corrupt guest ip {0:?}")]
    CorruptGuestIp(String),
    /// The VM's runtime dir.
    #[error("run dir")]
    RunDir(#[source] std::io::Error),
    /// Making the VM's cgroup.
    #[error("vmm cgroup")]
    Cgroup(#[source] banger_host::cgroup::CgroupError),
    /// Launching the VMM.
    #[error("vmm spawn")]
    VmmSpawn(#[source] VmmError),
    /// The VMM exited before the guest was ready.
    #[error("boot")]
    Boot(#[source] BootFailure),
    /// The guest was not ready in time.
    #[error("boot timeout")]
    BootTimeout(#[source] BootFailure),
    /// A boot failed and the VM was kept (state `error`) for its logs.
    #[error("vm {name} was kept so its logs can show why")]
    KeptForLogs {
        /// The VM.
        name: String,
        /// Why the boot failed.
        #[source]
        source: Box<VmError>,
    },
    /// The VM's image, its kernel or the kernel row is gone.
    #[error("start: the vm's {0}")]
    StartMissing(&'static str),
    /// Export without a prepared workspace.
    #[error("vm {0:?} has no workspace")]
    NoWorkspace(String),
    /// The stored workspace has no head commit.
    #[error("workspace export: the workspace record has no head commit")]
    NoWorkspaceHead,
    /// The VM was deleted while its workspace was copied in.
    #[error("workspace prepare: the vm was deleted while its workspace was copied")]
    DeletedDuringWorkspace,
    /// Reading a log file.
    #[error("logs")]
    Logs(#[source] std::io::Error),
    /// Exec params that cannot run.
    #[error("invalid exec: {0}")]
    InvalidExec(String),
    /// The guest has no agent that answers.
    #[error("vm {0:?} has no guest agent answering, so exec cannot run through it")]
    NoAgent(String),
    /// The guest's agent predates exec.
    #[error("vm {name:?}'s guest agent speaks protocol {protocol}; exec needs 2")]
    AgentTooOld {
        /// The VM.
        name: String,
        /// What the agent speaks.
        protocol: u32,
    },
    /// Starting the command in the guest.
    #[error("exec")]
    Exec(#[source] GuestIoError),
    /// The guest stream broke while the command ran (the VM stopped, or the agent died).
    #[error("exec: lost the guest while the command ran")]
    ExecLost(#[source] GuestIoError),
    /// Reading the guest's listening ports.
    #[error("ports")]
    Ports(#[source] GuestIoError),
    /// An image step (resolution, pull, build).
    #[error(transparent)]
    Image(#[from] ImageError),
    /// A host network step (bridge, tap, NAT).
    #[error(transparent)]
    Net(#[from] NetError),
    /// A workspace step.
    #[error(transparent)]
    Workspace(#[from] WorkspaceError),
    /// The store.
    #[error("store")]
    Store(#[from] crate::services::support::StoreCallError),
    /// The backend cannot snapshot.
    #[error("the {0} backend cannot snapshot VMs")]
    SnapshotUnsupported(String),
    /// No snapshot by that name or id.
    #[error("snapshot {0:?} not found")]
    SnapshotNotFound(String),
    /// The snapshot name is taken.
    #[error("snapshot {0:?} already exists")]
    SnapshotNameTaken(String),
    /// A snapshot still mapped by running VMs.
    #[error("snapshot {name:?} is in use by {users}")]
    SnapshotInUse {
        /// Snapshot.
        name: String,
        /// The VMs.
        users: String,
    },
    /// A restore that does not match the snapshot (sizes, backend).
    #[error("cannot start from snapshot {name:?}: {why}")]
    SnapshotMismatch {
        /// Snapshot.
        name: String,
        /// What differs.
        why: String,
    },
    /// Fork count out of range.
    #[error("--count {0} is out of range")]
    ForkCount(u32),
    /// Taking a snapshot (pause, VMM state, disks).
    #[error("snapshot")]
    Snapshot(#[source] VmmError),
    /// Copying or writing snapshot files.
    #[error("snapshot files")]
    SnapshotFiles(#[source] std::io::Error),
    /// Copying a snapshot's disks.
    #[error("snapshot disks")]
    SnapshotDisk(#[source] DiskError),
    /// Freezing a disk as a layer.
    #[error("snapshot disk layers")]
    SnapshotLayer(#[source] banger_host::qcow2::LayerError),
    /// The restored guest refused its new identity.
    #[error("reidentify")]
    Reidentify(#[source] GuestIoError),
    /// The caller cancelled.
    #[error(transparent)]
    Cancelled(#[from] Cancelled),
    /// A blocking step's worker failed.
    #[error(transparent)]
    Worker(#[from] WorkerError),
}

/// Why a guest did not become ready, with the console's last lines.
#[derive(Debug, thiserror::Error)]
#[error("{cause}; console: {tail}")]
pub struct BootFailure {
    /// What the waiter saw.
    pub cause: banger_host::GuestError,
    /// The console's last lines.
    pub tail: String,
}

impl VmError {
    /// Whether this is (or wraps) a cancellation.
    pub fn is_cancelled(&self) -> bool {
        matches!(
            self,
            VmError::Cancelled(_) | VmError::Image(ImageError::Cancelled(_))
        )
    }
}

impl ServiceError for VmError {
    fn code(&self) -> ErrorCode {
        use VmError as E;
        match self {
            E::NotFound(_) | E::SnapshotNotFound(_) => ErrorCode::NotFound,
            E::NameTaken(_) | E::SnapshotNameTaken(_) => ErrorCode::AlreadyExists,
            E::SnapshotInUse { .. } | E::SnapshotMismatch { .. } | E::ForkCount(_) => {
                ErrorCode::BadRequest
            }
            E::NotRunning(_) => ErrorCode::NotRunning,
            E::InvalidName(_)
            | E::InvalidLabel(_)
            | E::InvalidSize(_)
            | E::InvalidSizeUnit(_)
            | E::VcpuOutOfRange(_)
            | E::MemoryTooSmall(_)
            | E::MemoryOverHost { .. }
            | E::DiskTooSmall
            | E::NothingToChange
            | E::RunningSizing(_)
            | E::NoWorkspace(_)
            | E::InvalidExec(_) => ErrorCode::BadRequest,
            E::NoAgent(_) | E::AgentTooOld { .. } | E::SnapshotUnsupported(_) => {
                ErrorCode::Unsupported
            }
            E::KeptForLogs { source, .. } => source.code(),
            E::Image(e) => e.code(),
            E::Net(e) => e.code(),
            E::Workspace(e) => e.code(),
            E::Cancelled(_) => ErrorCode::Cancelled,
            _ => ErrorCode::OperationFailed,
        }
    }

    fn hint(&self) -> Option<String> {
        use VmError as E;
        let h = match self {
            E::NotFound(_) => "`banger vm list` shows the VMs that exist".into(),
            E::SnapshotNotFound(_) => "`banger snapshot list` shows the snapshots that exist".into(),
            E::SnapshotNameTaken(_) => {
                "pick another name, or `banger snapshot rm` the old one".into()
            }
            E::SnapshotUnsupported(_) => {
                "snapshots need the QEMU backend with bangerd's agent channel, or Firecracker".into()
            }
            E::SnapshotInUse { .. } => {
                "stop or delete those VMs first (`banger vm stop NAME`)".into()
            }
            E::SnapshotMismatch { .. } => {
                "a VM started from a snapshot has the snapshot's vCPUs and memory; leave --vcpu and --memory out".into()
            }
            E::ForkCount(_) => "use --count 1 to 16".into(),
            E::Reidentify(_) => {
                "the snapshot's guest agent is too old or unhealthy; take a new snapshot".into()
            }
            E::InvalidName(_) => {
                "names are 1-63 characters of a-z, 0-9 and '-', not starting or ending with '-'"
                    .into()
            }
            E::InvalidLabel(_) => {
                "labels are key=value, at most 8, of a-z, 0-9, '.', '_' and '-' (63 characters each)"
                    .into()
            }
            E::NameTaken(_) => "pick another --name, or `banger vm delete` the old one".into(),
            E::NotRunning(n) => format!("start it with `banger vm start {n}`"),
            E::InvalidSize(_) => "use e.g. 8G or 512M".into(),
            E::InvalidSizeUnit(_) => "use K, M, G or T".into(),
            E::VcpuOutOfRange(_) => "use 1 to 64 vCPUs".into(),
            E::MemoryTooSmall(_) => "a guest needs at least 128 MiB".into(),
            E::MemoryOverHost { host, .. } => format!("use at most {host} MiB"),
            E::DiskTooSmall => "use e.g. --disk-size 8G".into(),
            E::NothingToChange => "pass --nat, --no-nat, --vcpu or --memory".into(),
            E::RunningSizing(n) => {
                format!("`banger vm stop {n}` first, then start it again after the change")
            }
            E::NoFreeAddress(_) => {
                "delete unused VMs (`banger vm prune`) or widen `cidr` in config.toml".into()
            }
            E::Cgroup(_) => {
                "set `vmm_cgroups = false` in config.toml to run VMMs without cgroup limits".into()
            }
            E::Boot(_) => "`banger vm logs NAME` shows the full console log".into(),
            E::BootTimeout(_) => "`banger vm logs NAME` shows the console; raise `boot_timeout_secs` in config.toml for slow hosts".into(),
            E::KeptForLogs { name, .. } => format!(
                "`banger vm logs {name}` shows the console; `banger vm delete {name}` removes it"
            ),
            E::NoWorkspace(n) => {
                format!("prepare one first: `banger vm workspace prepare {n} PATH`")
            }
            E::NoAgent(n) => format!(
                "the image may lack banger-agent (`banger doctor`); `banger vm ssh {n} -- CMD` works without it"
            ),
            E::AgentTooOld { name, .. } => format!(
                "rebuild the image with this banger to update its agent; meanwhile `banger vm ssh {name} -- CMD` works"
            ),
            E::Ports(_) => "the guest's agent or sshd must answer; `banger vm logs NAME` shows why they may not".into(),
            E::SshKey(e) => return e.hint(),
            E::Image(e) => return e.hint(),
            E::Net(e) => return e.hint(),
            E::Workspace(e) => return e.hint(),
            _ => return None,
        };
        Some(h)
    }
}
