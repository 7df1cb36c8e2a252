//! RPC dispatch: the table from method name to service call, generated from the protocol's
//! method list (`banger_api::for_each_method!`): a method without a [`Handler`] does not
//! compile, and no second list is kept by hand. Each handler forwards to a service; its `?`
//! turns the service's typed error into the wire's `RpcError` (`crate::edge`).

use std::future::Future;
use std::time::Duration;

use banger_api::methods::{self, Method};
use banger_api::types::{
    Empty, OperationsListResult, PingResult, VmListResult, VmOpResult, VmRefs,
};
use banger_api::{ErrorCode, RpcError};
use serde_json::Value;

use crate::daemon::Daemon;
use crate::edge;
use crate::services::{ImageService, Lifecycle};
use crate::stream::{StreamIn, StreamOut};

/// How the daemon serves method `Self`.
trait Handler: Method {
    /// Runs the method on `d` with decoded params; a streaming method writes its output to
    /// `out` (sent as chunks before the result), a duplex one also reads `input`.
    fn handle(
        d: &Daemon,
        p: Self::Params,
        out: StreamOut,
        input: StreamIn,
    ) -> impl Future<Output = Result<Self::Result, RpcError>> + Send;
}

/// `serve!(Method, |daemon, params| expr)` (or `|daemon, params, out|` for a method that
/// streams, `|daemon, params, out, input|` for a duplex one): implements [`Handler`] for
/// `methods::Method` with `Ok(expr)` as the body (`?` inside converts service errors at the
/// edge).
macro_rules! serve {
    ($m:ident, |$d:ident, $p:pat_param| $body:expr) => {
        serve!($m, |$d, $p, _out, _input| $body);
    };
    ($m:ident, |$d:ident, $p:pat_param, $out:ident| $body:expr) => {
        serve!($m, |$d, $p, $out, _input| $body);
    };
    ($m:ident, |$d:ident, $p:pat_param, $out:ident, $input:ident| $body:expr) => {
        impl Handler for methods::$m {
            #[allow(unused_variables, unused_mut)]
            async fn handle(
                $d: &Daemon,
                $p: Self::Params,
                $out: StreamOut,
                mut $input: StreamIn,
            ) -> Result<Self::Result, RpcError> {
                Ok($body)
            }
        }
    };
}

/// The outcomes of a lifecycle op on several VMs.
async fn many(d: &Daemon, p: VmRefs, op: Lifecycle) -> VmOpResult {
    VmOpResult {
        outcomes: edge::vm_outcomes(d.services.vm.lifecycle_many(&p.names, op).await),
    }
}

fn wait(ms: u64) -> Duration {
    Duration::from_millis(ms)
}

serve!(Ping, |d, Empty {}| PingResult {
    version: banger_api::VERSION.to_owned(),
    commit: banger_api::COMMIT.to_owned(),
    pid: std::process::id(),
    uptime_ms: d.started.elapsed().as_millis() as u64,
    protocol: banger_api::PROTOCOL_VERSION,
    agent: d.infra.agent.as_ref().map(|p| p.display().to_string()),
});
serve!(Shutdown, |d, Empty {}| {
    d.shutdown.cancel();
    Empty {}
});
serve!(OperationsList, |d, Empty {}| OperationsListResult {
    operations: d.ops.list()
});
serve!(VmList, |d, Empty {}| VmListResult {
    vms: d.services.vm.list().await?
});
serve!(VmShow, |d, p| d.services.vm.show(&p.name).await?);
serve!(VmCreate, |d, p| d
    .services
    .vm
    .create(p, &std::sync::Arc::default())
    .await?);
serve!(VmCreateBegin, |d, p| d.services.vm.begin_create(p, &d.ops));
serve!(VmCreateStatus, |d, p| d
    .services
    .vm
    .create_status(&p.op_id, p.seen, wait(p.wait_ms))
    .await?);
serve!(VmCreateCancel, |d, p| d
    .services
    .vm
    .create_cancel(&p.op_id)?);
serve!(VmStart, |d, p| many(d, p, Lifecycle::Start).await);
serve!(VmStop, |d, p| many(d, p, Lifecycle::Stop).await);
serve!(VmRestart, |d, p| many(d, p, Lifecycle::Restart).await);
serve!(VmKill, |d, p| many(d, p, Lifecycle::Kill).await);
serve!(VmSuspend, |d, p| many(d, p, Lifecycle::Suspend).await);
serve!(VmSnapshot, |d, p| d
    .services
    .vm
    .snapshot(&p.name, p.snapshot)
    .await?);
serve!(VmFork, |d, p| d.services.vm.fork(p).await?);
serve!(SnapshotList, |d, Empty {}| d
    .services
    .vm
    .snapshot_list()
    .await?);
serve!(SnapshotShow, |d, p| d
    .services
    .vm
    .snapshot_show(&p.name)
    .await?);
serve!(SnapshotRm, |d, p| d
    .services
    .vm
    .snapshot_rm(&p.name)
    .await?);
serve!(VmDelete, |d, p| many(d, p, Lifecycle::Delete).await);
serve!(VmSsh, |d, p| d.services.vm.ssh_info(&p.name).await?);
serve!(VmLogsGet, |d, p, out| d.services.vm.logs(p, &out).await?);
serve!(VmExec, |d, p, out, input| d
    .services
    .vm
    .exec(p, &out, &mut input)
    .await?);
serve!(VmSet, |d, p| d.services.vm.set(p).await?);
serve!(VmPortsGet, |d, p| edge::port_outcomes(
    d.services.vm.ports_many(&p.names).await
));
serve!(VmWorkspacePrepare, |d, p| d
    .services
    .vm
    .workspace_prepare(p)
    .await?);
serve!(VmWorkspaceExport, |d, p, out| d
    .services
    .vm
    .workspace_export(p, &out)
    .await?);
serve!(VmStatsGet, |d, p| d
    .services
    .vm
    .stats_many(&p.names)
    .await?);
serve!(NetStatusGet, |d, Empty {}| d
    .services
    .network
    .status()
    .await?);
serve!(KernelImport, |d, p| d
    .services
    .image
    .import_kernel(p)
    .await?);
serve!(KernelList, |d, Empty {}| d
    .services
    .image
    .list_kernels()
    .await?);
serve!(ImageEnsure, |d, p| {
    let name = p
        .name
        .unwrap_or_else(|| d.infra.config.default_image_name.clone());
    let (image, kernel) = d.services.image.ensure_image(&name).await?;
    ImageService::info(image, &[kernel])
});
serve!(ImageList, |d, Empty {}| d
    .services
    .image
    .list_images()
    .await?);
serve!(ImageShow, |d, p| d.services.image.show(&p.name).await?);
serve!(ImagePullBegin, |d, p| d
    .services
    .image
    .begin_pull(p, &d.ops)
    .await?);
serve!(ImagePullStatus, |d, p| d
    .services
    .image
    .pull_status(&p.op_id, p.seen, wait(p.wait_ms))
    .await?);
serve!(ImagePullCancel, |d, p| d
    .services
    .image
    .pull_cancel(&p.op_id)?);
serve!(ImageRegister, |d, p| d.services.image.register(p).await?);
serve!(ImagePromote, |d, p| d
    .services
    .image
    .promote(&p.name)
    .await?);
serve!(ImageDelete, |d, p| d.services.image.delete(&p.name).await?);
serve!(ImageCachePrune, |d, p| d
    .services
    .image
    .cache_prune(p)
    .await?);
serve!(ImageExport, |d, p| d
    .services
    .image
    .export(&p.name, &p.output)
    .await?);
serve!(KernelCatalog, |d, Empty {}| d
    .services
    .image
    .kernel_catalog()
    .await?);
serve!(KernelPull, |d, p| d
    .services
    .image
    .kernel_pull(&p.name, &std::sync::Arc::default())
    .await?);
serve!(KernelShow, |d, p| d
    .services
    .image
    .kernel_show(&p.name)
    .await?);
serve!(KernelRm, |d, p| d.services.image.kernel_rm(&p.name).await?);

/// Decodes params for `M`, runs its handler, encodes its result.
async fn call<M: Handler>(
    d: &Daemon,
    params: Value,
    out: StreamOut,
    input: StreamIn,
) -> Result<Value, RpcError> {
    let params = if params.is_null() {
        Value::Object(serde_json::Map::new())
    } else {
        params
    };
    let params: M::Params = serde_json::from_value(params).map_err(|e| {
        RpcError::new(
            ErrorCode::BadRequest,
            format!("invalid params for {}: {e}", M::NAME),
        )
    })?;
    let result = M::handle(d, params, out, input).await?;
    serde_json::to_value(result).map_err(|e| {
        RpcError::new(
            ErrorCode::OperationFailed,
            format!("cannot encode result: {e}"),
        )
    })
}

/// Runs one method; a streaming one writes its output to `out`, a duplex one reads `input`.
pub async fn dispatch(
    daemon: &Daemon,
    method: &str,
    params: Value,
    out: StreamOut,
    input: StreamIn,
) -> Result<Value, RpcError> {
    macro_rules! route {
        ($($m:ident),*) => {
            match method {
                $(methods::$m::NAME => call::<methods::$m>(daemon, params, out, input).await,)*
                other => Err(RpcError::new(
                    ErrorCode::UnknownMethod,
                    format!("unknown method {other:?}"),
                )
                .with_hint(
                    "the CLI and daemon may be different versions; `banger daemon stop` restarts it on next use",
                )),
            }
        };
    }
    banger_api::for_each_method!(route)
}
