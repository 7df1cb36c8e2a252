//! The daemon's methods, one unit struct each.
//!
//! `ALL` lists every method name; [`for_each_method!`](crate::for_each_method) hands the
//! list of method types to a macro, which is how the daemon's dispatch table is generated
//! (a method without a handler does not compile).

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::types::{
    CachePruneParams, CachePruneResult, Empty, ImageEnsureParams, ImageExportParams,
    ImageExportResult, ImageInfo, ImagePullParams, ImageRegisterParams, KernelCatalogInfo,
    KernelImportParams, KernelInfo, NameParams, NetStatus, OpBegun, OpRef, OpStatus,
    OpStatusParams, OperationsListResult, PingResult, SnapshotInfo, SshInfo, VmCreateParams,
    VmExecParams, VmExecResult, VmForkParams, VmForkResult, VmInfo, VmListResult, VmLogsParams,
    VmLogsResult, VmOpResult, VmPorts, VmRef, VmRefs, VmSetParams, VmSnapshotParams, VmStats,
    WorkspaceExport, WorkspaceExportParams, WorkspacePrepareParams, WorkspacePrepared,
};

/// Methods whose results stream as chunks before the final response. A client that goes
/// away during one of these cancels it (they have no side effects to undo); other requests
/// run to completion whatever the client does.
pub const STREAMING: &[&str] = &[VmLogsGet::NAME, VmWorkspaceExport::NAME];

/// Methods that stream both ways: after the request the client may send chunks with the
/// request's id (see [`crate::frame::streams`]) until the final response. The client going
/// away cancels them (an exec's command is killed).
pub const DUPLEX: &[&str] = &[VmExec::NAME];

/// A typed RPC method.
pub trait Method {
    /// Wire name, e.g. `vm.list`.
    const NAME: &'static str;
    /// What the method's doc comment says.
    const DOC: &'static str;
    /// Params type.
    type Params: Serialize + DeserializeOwned + schemars::JsonSchema + Send + Sync;
    /// Result type.
    type Result: Serialize + DeserializeOwned + schemars::JsonSchema + Send + Sync;
}

macro_rules! methods {
    (($d:tt) $($(#[$doc:meta])* $ty:ident = $name:literal ($params:ty) -> $result:ty;)*) => {
        $(
            $(#[$doc])*
            #[derive(Debug, Clone, Copy)]
            pub struct $ty;
            impl Method for $ty {
                const NAME: &'static str = $name;
                const DOC: &'static str = concat!($(stringify!($doc), "\n"),*);
                type Params = $params;
                type Result = $result;
            }
        )*
        /// Every method name the protocol defines.
        pub const ALL: &[&str] = &[$($name),*];

        /// Every method's (name, doc, params schema, result schema), definitions in `g`.
        pub(crate) fn schemas(
            g: &mut schemars::SchemaGenerator,
        ) -> Vec<(&'static str, &'static str, schemars::Schema, schemars::Schema)> {
            vec![$(($name, <$ty as Method>::DOC, g.subschema_for::<$params>(), g.subschema_for::<$result>())),*]
        }

        /// Invokes macro `$m` with every method type: `$m!(Ping, Shutdown, ...)`.
        #[macro_export]
        macro_rules! for_each_method {
            ($d m:ident) => {
                $d m!($($ty),*)
            };
        }
    };
}

methods! {
    ($)
    /// Liveness and identity of the daemon.
    Ping = "ping" (Empty) -> PingResult;
    /// Asks the daemon to stop gracefully. Running VMs keep running.
    Shutdown = "shutdown" (Empty) -> Empty;
    /// All VMs.
    VmList = "vm.list" (Empty) -> VmListResult;
    /// One VM by name or id.
    VmShow = "vm.show" (VmRef) -> VmInfo;
    /// In-flight operations.
    OperationsList = "daemon.operations.list" (Empty) -> OperationsListResult;
    /// Creates (and unless `no_start`, starts and waits for) a VM.
    VmCreate = "vm.create" (VmCreateParams) -> VmInfo;
    /// Begins an asynchronous create; follow it with `vm.create.status`.
    VmCreateBegin = "vm.create.begin" (VmCreateParams) -> OpBegun;
    /// Stages and outcome of a create (long-polls with `seen` + `wait_ms`).
    VmCreateStatus = "vm.create.status" (OpStatusParams) -> OpStatus;
    /// Cancels a create; what it made is undone.
    VmCreateCancel = "vm.create.cancel" (OpRef) -> OpStatus;
    /// Starts stopped VMs.
    VmStart = "vm.start" (VmRefs) -> VmOpResult;
    /// Stops VMs gracefully (guest poweroff, then kill after a short deadline).
    VmStop = "vm.stop" (VmRefs) -> VmOpResult;
    /// Stops then starts VMs.
    VmRestart = "vm.restart" (VmRefs) -> VmOpResult;
    /// Kills VMs' VMM processes at once.
    VmKill = "vm.kill" (VmRefs) -> VmOpResult;
    /// Stops VMs and removes them with their disks.
    VmDelete = "vm.delete" (VmRefs) -> VmOpResult;
    /// Pauses VMs, writes their memory state to disk and stops them; `vm.start` resumes
    /// them where they were.
    VmSuspend = "vm.suspend" (VmRefs) -> VmOpResult;
    /// Snapshots a running VM (paused meanwhile): memory, device state and disks.
    VmSnapshot = "vm.snapshot" (VmSnapshotParams) -> SnapshotInfo;
    /// Snapshots a running VM and starts `count` children from it, each with its own
    /// identity (address, MAC, name, host key, machine id, clock, RNG).
    VmFork = "vm.fork" (VmForkParams) -> VmForkResult;
    /// Snapshots and templates.
    SnapshotList = "snapshot.list" (Empty) -> Vec<SnapshotInfo>;
    /// One snapshot.
    SnapshotShow = "snapshot.show" (NameParams) -> SnapshotInfo;
    /// Removes a snapshot (refused while a running VM maps its memory).
    SnapshotRm = "snapshot.rm" (NameParams) -> SnapshotInfo;
    /// How to ssh into a running VM.
    VmSsh = "vm.ssh" (VmRef) -> SshInfo;
    /// Runs a command in a VM through its agent: stdin, signals and window sizes stream in,
    /// stdout and stderr stream out, the result is how it ended.
    VmExec = "vm.exec" (VmExecParams) -> VmExecResult;
    /// A VM's console or VMM log, streamed as chunks (`tail`, `follow`).
    VmLogsGet = "vm.logs" (VmLogsParams) -> VmLogsResult;
    /// Changes a VM's settings (NAT live; vcpu and memory when stopped).
    VmSet = "vm.set" (VmSetParams) -> VmInfo;
    /// Listening TCP/UDP ports in running VMs.
    VmPortsGet = "vm.ports" (VmRefs) -> Vec<VmPorts>;
    /// Ships a host git work tree into a running VM.
    VmWorkspacePrepare = "vm.workspace.prepare" (WorkspacePrepareParams) -> WorkspacePrepared;
    /// A patch of what changed in a VM's workspace since it was prepared (streamed).
    VmWorkspaceExport = "vm.workspace.export" (WorkspaceExportParams) -> WorkspaceExport;
    /// VMM and guest numbers of VMs (all when `names` is empty).
    VmStatsGet = "vm.stats" (VmRefs) -> Vec<VmStats>;
    /// Bridge, tap pool, NAT and DNS state.
    NetStatusGet = "net.status" (Empty) -> NetStatus;
    /// Imports a kernel.
    KernelImport = "kernel.import" (KernelImportParams) -> KernelInfo;
    /// Lists kernels.
    KernelList = "kernel.list" (Empty) -> Vec<KernelInfo>;
    /// Makes sure an image is available locally (building the default one if needed).
    ImageEnsure = "image.ensure" (ImageEnsureParams) -> ImageInfo;
    /// Lists images.
    ImageList = "image.list" (Empty) -> Vec<ImageInfo>;
    /// One image, with the VMs using it.
    ImageShow = "image.show" (NameParams) -> ImageInfo;
    /// Starts pulling an OCI image (two pulls of one ref share one operation).
    ImagePullBegin = "image.pull.begin" (ImagePullParams) -> OpBegun;
    /// Progress and outcome of a pull (long-poll).
    ImagePullStatus = "image.pull.status" (OpStatusParams) -> OpStatus;
    /// Cancels a pull; nothing is left.
    ImagePullCancel = "image.pull.cancel" (OpRef) -> OpStatus;
    /// Registers an unmanaged image from files.
    ImageRegister = "image.register" (ImageRegisterParams) -> ImageInfo;
    /// Copies an unmanaged image into banger's storage.
    ImagePromote = "image.promote" (NameParams) -> ImageInfo;
    /// Deletes an image (refused while a VM uses it).
    ImageDelete = "image.delete" (NameParams) -> ImageInfo;
    /// Removes cached layer blobs.
    ImageCachePrune = "image.cache.prune" (CachePruneParams) -> CachePruneResult;
    /// Writes an image as a catalog bundle (tar+zstd of rootfs.ext4 + manifest.json).
    ImageExport = "image.export" (ImageExportParams) -> ImageExportResult;
    /// The kernel catalog, with what is pulled.
    KernelCatalog = "kernel.catalog" (Empty) -> Vec<KernelCatalogInfo>;
    /// Fetches a kernel bundle from the catalog.
    KernelPull = "kernel.pull" (NameParams) -> KernelInfo;
    /// One kernel.
    KernelShow = "kernel.show" (NameParams) -> KernelInfo;
    /// Removes a kernel (refused while an image or VM uses it).
    KernelRm = "kernel.rm" (NameParams) -> KernelInfo;
}
