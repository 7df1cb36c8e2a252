//! Params and results of the daemon's methods.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Result of `ping`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct PingResult {
    /// The daemon's crate version.
    pub version: String,
    /// The git commit the daemon was built from.
    pub commit: String,
    /// The daemon's process id.
    pub pid: u32,
    /// Milliseconds since the daemon started.
    pub uptime_ms: u64,
    /// The daemon's protocol version.
    pub protocol: u32,
    /// The static guest agent the daemon puts into VMs (none: guests run without it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<String>,
}

/// Lifecycle state of a VM (durable, stored in SQLite).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum VmState {
    /// Recorded, disks may exist, never started or being started.
    Created,
    /// The VMM process is running.
    Running,
    /// Cleanly stopped; disks kept.
    Stopped,
    /// A lifecycle step failed; see `last_error`.
    Error,
}

impl VmState {
    /// The snake_case name used in the store and on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            VmState::Created => "created",
            VmState::Running => "running",
            VmState::Stopped => "stopped",
            VmState::Error => "error",
        }
    }
}

impl fmt::Display for VmState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Error parsing a [`VmState`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown vm state {0:?}")]
pub struct ParseVmStateError(pub String);

impl FromStr for VmState {
    type Err = ParseVmStateError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "created" => Ok(VmState::Created),
            "running" => Ok(VmState::Running),
            "stopped" => Ok(VmState::Stopped),
            "error" => Ok(VmState::Error),
            other => Err(ParseVmStateError(other.to_owned())),
        }
    }
}

/// Where a sizing value came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ValueSource {
    /// Given on the command line.
    Flag,
    /// From `[vm_defaults]` in config.toml.
    Config,
    /// Derived from the host (cpus/4, RAM/8).
    Auto,
    /// banger's built-in floor.
    Builtin,
    /// The snapshot the VM started from.
    Snapshot,
}

impl fmt::Display for ValueSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ValueSource::Flag => "flag",
            ValueSource::Config => "config",
            ValueSource::Auto => "auto",
            ValueSource::Builtin => "builtin",
            ValueSource::Snapshot => "snapshot",
        })
    }
}

/// One VM as the daemon reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct VmInfo {
    /// Stable id (never reused).
    pub id: String,
    /// DNS-label name.
    pub name: String,
    /// Lifecycle state.
    pub state: VmState,
    /// Image name.
    pub image: String,
    /// Guest IPv4 address.
    pub guest_ip: String,
    /// Virtual CPUs.
    pub vcpu: u32,
    /// Memory in MiB.
    pub memory_mib: u64,
    /// Work disk size in bytes.
    pub disk_bytes: u64,
    /// Whether NAT is enabled for this VM.
    pub nat: bool,
    /// The VMM backend that runs (or last ran) this VM: `qemu` or `firecracker`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vmm: Option<String>,
    /// Creation time, RFC 3339.
    pub created_at: String,
    /// Last state change, RFC 3339.
    pub updated_at: String,
    /// The error that put the VM in `error` (or the last failed step).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// The prepared workspace, when there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workspace: Option<serde_json::Value>,
    /// Where vcpu, memory and disk size came from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sizing_sources: Option<SizingSources>,
    /// Labels given at create.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub labels: std::collections::BTreeMap<String, String>,
    /// How the VM last started: `boot` (cold), `snapshot NAME`, `template NAME` or `resume`
    /// (from `vm stop --suspend`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_from: Option<String>,
    /// Stopped with `--suspend`: `vm start` resumes its memory state.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub suspended: bool,
    /// The running VMM's cgroup: its limits and use (`vm show` only; absent when the
    /// VM does not run or the daemon has no cgroups).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cgroup: Option<VmCgroup>,
}

/// A VMM's cgroup: the limits derived from the VM's spec and what it uses now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct VmCgroup {
    /// Its directory (cgroup v1: the memory hierarchy's).
    pub path: String,
    /// `v1` or `v2`.
    pub version: String,
    /// Memory limit: guest RAM plus the VMM's overhead, bytes.
    pub memory_max_bytes: u64,
    /// Memory charged now, bytes.
    pub memory_bytes: u64,
    /// The most ever charged, bytes, where the kernel reports it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_peak_bytes: Option<u64>,
    /// CPU time allowed per period, µs (one period per vCPU plus one for the VMM's threads).
    pub cpu_quota_us: u64,
    /// The CPU period, µs.
    pub cpu_period_us: u64,
    /// Periods in which the quota stopped the VMM.
    pub cpu_throttled_periods: u64,
    /// Task limit.
    pub pids_max: u64,
    /// Tasks now.
    pub pids: u64,
}

/// A snapshot: a paused VM's memory, device state and disks, to start VMs from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct SnapshotInfo {
    /// Stable id.
    pub id: String,
    /// Unique name.
    pub name: String,
    /// `snapshot` (taken by `vm snapshot` or `vm fork`) or `template` (an image's warm
    /// start).
    pub kind: String,
    /// The VM it was taken from.
    pub source_vm: String,
    /// Its image.
    pub image: String,
    /// Virtual CPUs (a VM started from it has these).
    pub vcpu: u32,
    /// Memory in MiB (likewise).
    pub memory_mib: u64,
    /// Work disk size in bytes.
    pub disk_bytes: u64,
    /// The backend it was taken on.
    pub vmm: String,
    /// Bytes on disk (memory and disks, sparse).
    pub size_bytes: u64,
    /// RFC 3339.
    pub created_at: String,
    /// Running VMs that map its memory (it cannot be removed while there are any).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub used_by: Vec<String>,
}

/// Params of `vm.snapshot`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct VmSnapshotParams {
    /// VM name or id (running).
    pub name: String,
    /// The snapshot's name; `<vm>-<time>` when absent.
    #[serde(default)]
    pub snapshot: Option<String>,
}

/// Params of `vm.fork`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct VmForkParams {
    /// VM name or id (running).
    pub name: String,
    /// How many children (1–16).
    #[serde(default = "one")]
    pub count: u32,
    /// Children's name: `NAME` for one child, `NAME-1`…`NAME-K` for several; generated
    /// when absent.
    #[serde(default)]
    pub child_name: Option<String>,
    /// Turn NAT on in the children.
    #[serde(default)]
    pub nat: bool,
    /// Keep the snapshot the children start from (listed, usable by `vm create --from`);
    /// by default it is the fork's own and goes when the children are up.
    #[serde(default)]
    pub keep_snapshot: bool,
}

fn one() -> u32 {
    1
}

/// Result of `vm.fork`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct VmForkResult {
    /// The snapshot the children started from, when it was kept (`keep_snapshot`).
    #[serde(default)]
    pub snapshot: Option<SnapshotInfo>,
    /// The children, running.
    pub vms: Vec<VmInfo>,
}

/// Where each sizing value of a VM came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct SizingSources {
    /// Of `vcpu`.
    pub vcpu: ValueSource,
    /// Of `memory_mib`.
    pub memory_mib: ValueSource,
    /// Of `disk_bytes`.
    pub disk: ValueSource,
}

/// Result of starting an asynchronous operation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct OpBegun {
    /// Its id, for `*.status` and `*.cancel`.
    pub op_id: String,
}

/// Params of `vm.create.status` and `image.pull.status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OpStatusParams {
    /// The operation.
    pub op_id: String,
    /// Long-poll: answer once more than this many stage events exist (or the op is done),
    /// or after `wait_ms`.
    #[serde(default)]
    pub seen: usize,
    /// Longest wait in milliseconds (capped at 5000; 0 answers at once).
    #[serde(default)]
    pub wait_ms: u64,
}

/// Params naming an operation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OpRef {
    /// The operation.
    pub op_id: String,
}

/// State of one stage of an operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum StageState {
    /// Under way.
    Running,
    /// Finished.
    Done,
    /// Failed (the operation's error says why).
    Failed,
}

/// One stage of an operation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct StageInfo {
    /// Stage name (`image`, `system disk`, `boot`, ...).
    pub name: String,
    /// Its state.
    pub state: StageState,
    /// Milliseconds spent in it so far.
    pub elapsed_ms: u64,
}

/// Progress and outcome of an asynchronous operation (`vm.create.begin`, `image.pull.begin`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct OpStatus {
    /// The operation.
    pub op_id: String,
    /// Stages so far, in order.
    pub stages: Vec<StageInfo>,
    /// Count of stage events so far (pass as `seen` to long-poll).
    pub events: usize,
    /// Whether the operation finished (then exactly one of `vm`, `image` and `error` is set).
    pub done: bool,
    /// Milliseconds since it began.
    pub elapsed_ms: u64,
    /// The created VM.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vm: Option<VmInfo>,
    /// The pulled image (`image.pull.*`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<ImageInfo>,
    /// What the running stage is doing right now (bytes so far), for a live display.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// Why it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<crate::RpcError>,
}

/// Params naming one VM.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct VmRef {
    /// VM name or id.
    pub name: String,
}

/// Result of `vm.list`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct VmListResult {
    /// All VMs, oldest first.
    pub vms: Vec<VmInfo>,
}

/// One in-flight daemon operation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct OperationSummary {
    /// The op id (also in log lines).
    pub op_id: String,
    /// What kind of operation (the RPC method that started it).
    pub kind: String,
    /// Start time, RFC 3339.
    pub started_at: String,
    /// Milliseconds since it started.
    pub elapsed_ms: u64,
}

/// Result of `daemon.operations.list`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct OperationsListResult {
    /// Operations still running, oldest first.
    pub operations: Vec<OperationSummary>,
}

/// Params of methods that take none.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(deny_unknown_fields)]
pub struct Empty {}

/// Params of `vm.create`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct VmCreateParams {
    /// Name; generated when absent.
    #[serde(default)]
    pub name: Option<String>,
    /// Image name; config `default_image_name` when absent.
    #[serde(default)]
    pub image: Option<String>,
    /// Virtual CPUs.
    #[serde(default)]
    pub vcpu: Option<u32>,
    /// Memory in MiB.
    #[serde(default)]
    pub memory_mib: Option<u64>,
    /// Work disk size, e.g. `8G`.
    #[serde(default)]
    pub disk_size: Option<String>,
    /// Record the VM but do not start it.
    #[serde(default)]
    pub no_start: bool,
    /// Let the guest reach the outside world through the host (NAT).
    #[serde(default)]
    pub nat: bool,
    /// When the guest never becomes ready, keep the VM (state `error`, VMM stopped) so its
    /// logs can show why, instead of undoing the create.
    #[serde(default)]
    pub keep_failed_boot: bool,
    /// Labels (`key=value`; keys and values of `a-z0-9._-`, at most 8 of 63 characters), e.g.
    /// `origin=mcp` for VMs a coding agent created. Shown by `vm list`.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub labels: std::collections::BTreeMap<String, String>,
    /// Start from this snapshot (its image, vCPUs, memory and disks) instead of booting.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from_snapshot: Option<String>,
    /// Boot cold even when the image has a warm-start template.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub cold: bool,
}

/// Params of `vm.set`: the fields to change (absent fields stay as they are).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct VmSetParams {
    /// VM name or id.
    pub name: String,
    /// NAT on or off; works on a running VM.
    #[serde(default)]
    pub nat: Option<bool>,
    /// Virtual CPUs (stopped VMs only).
    #[serde(default)]
    pub vcpu: Option<u32>,
    /// Memory in MiB (stopped VMs only).
    #[serde(default)]
    pub memory_mib: Option<u64>,
}

/// A listening socket in a guest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct PortInfo {
    /// `tcp` or `udp`.
    pub proto: String,
    /// The address it is bound to, as the guest sees it (`0.0.0.0`, `::`, `127.0.0.1`...).
    pub bind: String,
    /// Port number.
    pub port: u16,
    /// `<name>.vm:port` when reachable from the host (not bound to loopback only).
    pub endpoint: Option<String>,
    /// A likely URL for web ports.
    pub url: Option<String>,
}

/// The listening ports of one VM, or why they could not be read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct VmPorts {
    /// The name as given.
    pub name: String,
    /// Listening sockets, sorted by protocol and port.
    pub ports: Vec<PortInfo>,
    /// The error for this VM.
    pub error: Option<crate::RpcError>,
}

/// A guest with NAT on, as applied to the host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct NatInfo {
    /// VM name.
    pub vm: String,
    /// Guest address.
    pub ip: String,
    /// Its tap.
    pub tap: String,
}

/// The DNS server's state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct DnsInfo {
    /// Where it listens (`None` when disabled or failed to bind).
    pub listen: Option<String>,
    /// Why it is not listening.
    pub error: Option<String>,
    /// `(name, address)` records served.
    pub records: Vec<(String, String)>,
    /// `routed` when systemd-resolved sends `~vm` to banger, `no-resolved` otherwise.
    pub resolver: String,
}

/// Host networking state (`net.status`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct NetStatus {
    /// Bridge name.
    pub bridge: String,
    /// Bridge address (the guests' gateway).
    pub bridge_ip: String,
    /// Guest network.
    pub cidr: String,
    /// Configured pool size.
    pub tap_pool_size: usize,
    /// Idle taps in the pool.
    pub idle_taps: Vec<String>,
    /// Guests with NAT applied.
    pub nat: Vec<NatInfo>,
    /// DNS.
    pub dns: DnsInfo,
}

/// Params naming several VMs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct VmRefs {
    /// VM names or ids.
    pub names: Vec<String>,
}

/// Per-VM outcome of a multi-VM operation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct VmOpOutcome {
    /// The name as given.
    pub name: String,
    /// The VM after the operation, on success.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vm: Option<VmInfo>,
    /// The error, on failure.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<crate::RpcError>,
}

/// Result of multi-VM operations.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct VmOpResult {
    /// One outcome per distinct name, in the order given.
    pub outcomes: Vec<VmOpOutcome>,
}

/// How to reach a VM over ssh.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct SshInfo {
    /// VM name.
    pub name: String,
    /// Guest address.
    pub host: String,
    /// Guest user.
    pub user: String,
    /// banger's private key.
    pub key_path: String,
    /// banger's known_hosts.
    pub known_hosts: String,
    /// The alias the guest's host key is pinned under.
    pub host_key_alias: String,
    /// The workspace dir to run in, if prepared.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workdir: Option<String>,
}

/// Which log of a VM.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum LogSource {
    /// The guest's serial console.
    #[default]
    Console,
    /// The VMM's own log.
    Vmm,
}

impl LogSource {
    /// The stream name its chunks carry.
    pub fn as_str(self) -> &'static str {
        match self {
            LogSource::Console => "console",
            LogSource::Vmm => "vmm",
        }
    }
}

/// Params of `vm.logs` (the log streams as chunks named after `source`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct VmLogsParams {
    /// VM name or id.
    pub name: String,
    /// Which log.
    #[serde(default)]
    pub source: LogSource,
    /// Only the last this many lines.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tail: Option<u64>,
    /// Keep streaming what is appended (like `tail -f`) until the VM stops or the client
    /// goes away.
    #[serde(default)]
    pub follow: bool,
}

/// Params of `vm.exec`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct VmExecParams {
    /// VM name or id.
    pub name: String,
    /// Program and arguments (looked up in the guest's `PATH`; no shell unless you run one).
    pub argv: Vec<String>,
    /// Extra environment variables.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub env: std::collections::BTreeMap<String, String>,
    /// Working directory in the guest (default: the VM's workspace, else `/root`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cwd: Option<String>,
    /// Run on a pseudo-terminal of this size (output then arrives on `stdout` only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tty: Option<TtySize>,
    /// Kill the command (SIGKILL to its process group) after this many seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_secs: Option<u64>,
    /// The client sends stdin chunks; when false the command's stdin is empty.
    #[serde(default)]
    pub stdin: bool,
}

/// A terminal's size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TtySize {
    /// Rows.
    pub rows: u16,
    /// Columns.
    pub cols: u16,
}

/// Result of `vm.exec`: how the command ended.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema,
)]
pub struct VmExecResult {
    /// Its exit code, when it exited.
    pub exit_code: Option<i32>,
    /// The signal that killed it, when one did.
    pub signal: Option<i32>,
    /// Whether `timeout_secs` ran out (it was then killed).
    #[serde(default)]
    pub timed_out: bool,
}

impl VmExecResult {
    /// The exit code a shell would report: the code, or 128 + the signal.
    pub fn shell_code(&self) -> i32 {
        match (self.exit_code, self.signal) {
            (Some(c), _) => c,
            (None, Some(s)) => 128 + s,
            (None, None) => 255,
        }
    }
}

/// Result of `vm.logs`, after its chunks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct VmLogsResult {
    /// Bytes streamed.
    pub bytes: u64,
}

/// Params of `kernel.import`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct KernelImportParams {
    /// Import the distro's cloud kernel.
    #[serde(default)]
    pub from_distro: bool,
    /// Name; derived when absent.
    #[serde(default)]
    pub name: Option<String>,
    /// A kernel file to import (absolute path): ELF vmlinux or bzImage.
    #[serde(default)]
    pub vmlinux: Option<String>,
    /// Its initramfs (absolute path).
    #[serde(default)]
    pub initrd: Option<String>,
    /// Its modules directory (absolute path).
    #[serde(default)]
    pub modules: Option<String>,
}

/// Params naming one image or kernel.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NameParams {
    /// The name.
    pub name: String,
}

/// Params of `image.pull.begin`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ImagePullParams {
    /// Image reference (`docker.io/library/debian:bookworm`, `127.0.0.1:5000/x:y`).
    pub reference: String,
    /// Local name; derived from the reference when absent (`debian-bookworm`).
    #[serde(default)]
    pub name: Option<String>,
    /// Kernel to boot it with; the distro default when absent.
    #[serde(default)]
    pub kernel: Option<String>,
    /// Allow plain HTTP to a registry that is not on loopback.
    #[serde(default)]
    pub insecure: bool,
}

/// Params of `image.register`: an unmanaged image from files that stay where they are.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ImageRegisterParams {
    /// Name.
    pub name: String,
    /// The root filesystem (absolute path to an ext4 image).
    pub rootfs: String,
    /// A kernel file (absolute path); registered as kernel `<name>-kernel`.
    #[serde(default)]
    pub kernel: Option<String>,
    /// Its initramfs.
    #[serde(default)]
    pub initrd: Option<String>,
    /// Its modules directory.
    #[serde(default)]
    pub modules: Option<String>,
    /// Or a stored kernel by name.
    #[serde(default)]
    pub kernel_ref: Option<String>,
}

/// A kernel catalog entry and whether it is pulled.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct KernelCatalogInfo {
    /// Name.
    pub name: String,
    /// Kernel version.
    pub version: String,
    /// Bundle size in bytes (0: unknown).
    pub size_bytes: u64,
    /// Where the bundle is.
    pub url: String,
    /// Whether a kernel of this name is stored.
    pub pulled: bool,
}

/// Params of `image.export`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ImageExportParams {
    /// Image name.
    pub name: String,
    /// Where to write the bundle (absolute path, `.tar.zst`).
    pub output: String,
}

/// What `image.export` wrote.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ImageExportResult {
    /// The bundle.
    pub path: String,
    /// Its sha256 (hex), for a catalog entry.
    pub sha256: String,
    /// Its size in bytes.
    pub size: u64,
}

/// Params of `image.cache.prune`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CachePruneParams {
    /// Report only.
    #[serde(default)]
    pub dry_run: bool,
    /// Also blobs that stored images were pulled from (the next pull of them downloads again).
    #[serde(default)]
    pub all: bool,
}

/// What `image.cache.prune` removed (or would remove).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct CachePruneResult {
    /// Blob digests.
    pub blobs: Vec<String>,
    /// Bytes freed.
    pub bytes: u64,
    /// Nothing was removed.
    pub dry_run: bool,
}

/// A stored kernel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct KernelInfo {
    /// Name.
    pub name: String,
    /// Kernel release.
    pub version: String,
    /// Origin.
    pub source: String,
    /// Boot kernel file.
    pub kernel: String,
    /// Initramfs.
    pub initrd: Option<String>,
    /// sha256 of the kernel file.
    pub sha256: String,
}

/// A stored image.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ImageInfo {
    /// Name.
    pub name: String,
    /// Origin.
    pub source: String,
    /// Root filesystem.
    pub rootfs: String,
    /// Kernel name.
    pub kernel: Option<String>,
    /// Rootfs size in bytes.
    pub size_bytes: u64,
    /// Whether banger owns the files (pulled, built, promoted) or only points at them.
    #[serde(default)]
    pub managed: bool,
    /// Manifest digest of a pulled image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
    /// When it was stored (RFC 3339).
    #[serde(default)]
    pub created_at: String,
    /// VMs using it (filled by `image.show`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub used_by: Vec<String>,
    /// Recorded details: entrypoint, env, workdir, layers, first-boot init.
    #[serde(default, skip_serializing_if = "serde_json::Value::is_null")]
    pub details: serde_json::Value,
}

/// Params naming an image.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ImageEnsureParams {
    /// Image name; the default image when absent.
    #[serde(default)]
    pub name: Option<String>,
}

impl SshInfo {
    /// ssh options that use banger's key and accept only the pinned host key.
    pub fn ssh_options(&self) -> Vec<String> {
        vec![
            "-i".to_owned(),
            self.key_path.clone(),
            "-o".into(),
            "IdentitiesOnly=yes".into(),
            "-o".into(),
            // Quoted: ssh splits this option's value at whitespace (several files).
            format!("UserKnownHostsFile=\"{}\"", self.known_hosts),
            "-o".into(),
            "StrictHostKeyChecking=yes".into(),
            "-o".into(),
            format!("HostKeyAlias={}", self.host_key_alias),
            "-o".into(),
            "LogLevel=ERROR".into(),
        ]
    }
}

/// Params of `vm.workspace.prepare`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WorkspacePrepareParams {
    /// VM name or id.
    pub name: String,
    /// An absolute path inside a git work tree on the host.
    pub path: String,
    /// Create and check out this branch in the guest.
    #[serde(default)]
    pub branch: Option<String>,
    /// Start `branch` from this ref (the guest gets that commit's tree).
    #[serde(default)]
    pub from: Option<String>,
    /// Also ship untracked files that git does not ignore.
    #[serde(default)]
    pub include_untracked: bool,
    /// Only report what would ship.
    #[serde(default)]
    pub dry_run: bool,
    /// Where in the guest (default `/root/repo`).
    #[serde(default)]
    pub guest_path: Option<String>,
}

/// Result of `vm.workspace.prepare`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct WorkspacePrepared {
    /// VM name.
    pub vm: String,
    /// The repository's top level on the host.
    pub source: String,
    /// Where it is in the guest.
    pub guest_path: String,
    /// The guest's HEAD commit.
    pub head: String,
    /// The guest's branch (`None`: detached).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub branch: Option<String>,
    /// `tracked`, `tracked+untracked`, `checkout of <sha>`...
    pub mode: String,
    /// Files shipped from the host work tree.
    pub files: u64,
    /// Their bytes.
    pub bytes: u64,
    /// Nothing was done.
    pub dry_run: bool,
    /// With `dry_run`: the files that would ship.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub listed: Vec<String>,
    /// Milliseconds the transfer took.
    pub elapsed_ms: u64,
}

/// Params of `vm.workspace.export`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WorkspaceExportParams {
    /// VM name or id.
    pub name: String,
    /// Diff against this commit instead of the one prepared.
    #[serde(default)]
    pub base_commit: Option<String>,
}

/// Result of `vm.workspace.export`, after the patch (`git diff --binary`) streamed as
/// chunks named `patch`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct WorkspaceExport {
    /// The commit the patch applies to.
    pub base: String,
    /// Bytes of patch streamed.
    pub bytes: u64,
}

/// Guest-side numbers (from the agent, or ssh when there is none).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct GuestStats {
    /// Load averages over 1, 5, 15 minutes.
    pub load: [f64; 3],
    /// Memory total, MiB.
    pub mem_total_mib: u64,
    /// Memory available, MiB.
    pub mem_available_mib: u64,
    /// Root filesystem size, MiB.
    pub disk_total_mib: u64,
    /// Root filesystem used, MiB.
    pub disk_used_mib: u64,
    /// Seconds since the guest booted.
    pub uptime_s: u64,
    /// Where they came from: `agent` or `ssh`.
    pub via: String,
}

/// One VM's numbers in `vm.stats`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct VmStats {
    /// VM name.
    pub name: String,
    /// Lifecycle state.
    pub state: VmState,
    /// The VMM's pid when running.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    /// The VMM's CPU use since the last sample, percent of one CPU.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_percent: Option<f64>,
    /// The VMM's resident memory, MiB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rss_mib: Option<u64>,
    /// The VMM's proportional set size, MiB: memory shared with other VMMs (copies of one
    /// snapshot share its pages) counted once in total.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pss_mib: Option<u64>,
    /// Guest-side numbers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guest: Option<GuestStats>,
    /// Last time the VM was used, RFC 3339.
    pub last_touched_at: String,
    /// Why some numbers are missing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}
