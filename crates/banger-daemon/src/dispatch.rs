//! RPC dispatch: a pure forwarder from method name to service call. Service errors become
//! wire errors through `crate::edge` (the `?` and `Into` here).

use std::future::Future;

use banger_api::methods::{self, Method};
use banger_api::types::{Empty, OperationsListResult, PingResult, VmListResult, VmOpResult};
use banger_api::{ErrorCode, RpcError};
use serde_json::Value;

use crate::daemon::Daemon;
use crate::services::Lifecycle;

/// Decodes params for `M`, runs `f`, encodes its result.
async fn call<M, F, Fut, E>(params: Value, f: F) -> Result<Value, RpcError>
where
    M: Method,
    F: FnOnce(M::Params) -> Fut,
    Fut: Future<Output = Result<M::Result, E>>,
    RpcError: From<E>,
{
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
    let result = f(params).await?;
    serde_json::to_value(result).map_err(|e| {
        RpcError::new(
            ErrorCode::OperationFailed,
            format!("cannot encode result: {e}"),
        )
    })
}

/// Every method this daemon serves (pinned against [`banger_api::methods::ALL`] in tests).
pub const SERVED: &[&str] = &[
    methods::Ping::NAME,
    methods::Shutdown::NAME,
    methods::VmList::NAME,
    methods::VmShow::NAME,
    methods::OperationsList::NAME,
    methods::VmCreate::NAME,
    methods::VmCreateBegin::NAME,
    methods::VmCreateStatus::NAME,
    methods::VmCreateCancel::NAME,
    methods::VmStart::NAME,
    methods::VmStop::NAME,
    methods::VmRestart::NAME,
    methods::VmKill::NAME,
    methods::VmDelete::NAME,
    methods::VmSsh::NAME,
    methods::VmLogsGet::NAME,
    methods::VmSet::NAME,
    methods::VmPortsGet::NAME,
    methods::NetStatusGet::NAME,
    methods::VmWorkspacePrepare::NAME,
    methods::VmWorkspaceExport::NAME,
    methods::VmStatsGet::NAME,
    methods::KernelImport::NAME,
    methods::KernelList::NAME,
    methods::ImageEnsure::NAME,
    methods::ImageList::NAME,
    methods::ImageShow::NAME,
    methods::ImagePullBegin::NAME,
    methods::ImagePullStatus::NAME,
    methods::ImagePullCancel::NAME,
    methods::ImageRegister::NAME,
    methods::ImagePromote::NAME,
    methods::ImageDelete::NAME,
    methods::ImageCachePrune::NAME,
    methods::KernelShow::NAME,
    methods::KernelRm::NAME,
    methods::ImageExport::NAME,
    methods::KernelCatalog::NAME,
    methods::KernelPull::NAME,
];

async fn many<M>(daemon: &Daemon, params: Value, op: Lifecycle) -> Result<Value, RpcError>
where
    M: Method<Params = banger_api::types::VmRefs, Result = VmOpResult>,
{
    call::<M, _, _, RpcError>(params, |p| async move {
        Ok(VmOpResult {
            outcomes: crate::edge::vm_outcomes(
                daemon.services.vm.lifecycle_many(&p.names, op).await,
            ),
        })
    })
    .await
}

/// Runs one method.
pub async fn dispatch(daemon: &Daemon, method: &str, params: Value) -> Result<Value, RpcError> {
    let s = &daemon.services;
    match method {
        methods::Ping::NAME => {
            call::<methods::Ping, _, _, RpcError>(params, |Empty {}| async {
                Ok(PingResult {
                    version: banger_api::VERSION.to_owned(),
                    commit: banger_api::COMMIT.to_owned(),
                    pid: std::process::id(),
                    uptime_ms: daemon.started.elapsed().as_millis() as u64,
                    protocol: banger_api::PROTOCOL_VERSION,
                    agent: daemon.infra.agent.as_ref().map(|p| p.display().to_string()),
                })
            })
            .await
        }
        methods::Shutdown::NAME => {
            call::<methods::Shutdown, _, _, RpcError>(params, |Empty {}| async {
                daemon.shutdown.cancel();
                Ok(Empty {})
            })
            .await
        }
        methods::VmList::NAME => {
            call::<methods::VmList, _, _, crate::services::vm::VmError>(params, |Empty {}| async {
                Ok(VmListResult { vms: s.vm.list().await? })
            })
            .await
        }
        methods::VmShow::NAME => {
            call::<methods::VmShow, _, _, _>(params, |p| async move { s.vm.show(&p.name).await }).await
        }
        methods::OperationsList::NAME => {
            call::<methods::OperationsList, _, _, RpcError>(params, |Empty {}| async {
                Ok(OperationsListResult { operations: daemon.ops.list() })
            })
            .await
        }
        methods::VmCreate::NAME => {
            call::<methods::VmCreate, _, _, _>(params, |p| async move {
                s.vm.create(p, &std::sync::Arc::default()).await
            })
            .await
        }
        methods::VmCreateBegin::NAME => {
            call::<methods::VmCreateBegin, _, _, RpcError>(params, |p| async move { Ok(s.vm.begin_create(p, &daemon.ops)) }).await
        }
        methods::VmCreateStatus::NAME => {
            call::<methods::VmCreateStatus, _, _, _>(params, |p| async move {
                s.vm.create_status(&p.op_id, p.seen, std::time::Duration::from_millis(p.wait_ms)).await
            })
            .await
        }
        methods::VmCreateCancel::NAME => {
            call::<methods::VmCreateCancel, _, _, _>(params, |p| async move { s.vm.create_cancel(&p.op_id) }).await
        }
        methods::VmStart::NAME => many::<methods::VmStart>(daemon, params, Lifecycle::Start).await,
        methods::VmStop::NAME => many::<methods::VmStop>(daemon, params, Lifecycle::Stop).await,
        methods::VmRestart::NAME => many::<methods::VmRestart>(daemon, params, Lifecycle::Restart).await,
        methods::VmKill::NAME => many::<methods::VmKill>(daemon, params, Lifecycle::Kill).await,
        methods::VmDelete::NAME => many::<methods::VmDelete>(daemon, params, Lifecycle::Delete).await,
        methods::VmSet::NAME => {
            call::<methods::VmSet, _, _, _>(params, |p| async move { s.vm.set(p).await }).await
        }
        methods::VmPortsGet::NAME => {
            call::<methods::VmPortsGet, _, _, RpcError>(params, |p| async move { Ok(crate::edge::port_outcomes(s.vm.ports_many(&p.names).await)) }).await
        }
        methods::VmWorkspacePrepare::NAME => {
            call::<methods::VmWorkspacePrepare, _, _, _>(params, |p| async move { s.vm.workspace_prepare(p).await }).await
        }
        methods::VmWorkspaceExport::NAME => {
            call::<methods::VmWorkspaceExport, _, _, _>(params, |p| async move { s.vm.workspace_export(p).await }).await
        }
        methods::VmStatsGet::NAME => {
            call::<methods::VmStatsGet, _, _, _>(params, |p| async move { s.vm.stats_many(&p.names).await }).await
        }
        methods::NetStatusGet::NAME => {
            call::<methods::NetStatusGet, _, _, _>(params, |Empty {}| async { s.network.status().await }).await
        }
        methods::VmSsh::NAME => {
            call::<methods::VmSsh, _, _, _>(params, |p| async move { s.vm.ssh_info(&p.name).await }).await
        }
        methods::VmLogsGet::NAME => {
            call::<methods::VmLogsGet, _, _, _>(params, |p| async move { s.vm.logs(&p.name).await }).await
        }
        methods::KernelImport::NAME => {
            call::<methods::KernelImport, _, _, _>(params, |p| async move { s.image.import_kernel(p).await }).await
        }
        methods::KernelList::NAME => {
            call::<methods::KernelList, _, _, _>(params, |Empty {}| s.image.list_kernels()).await
        }
        methods::ImageEnsure::NAME => {
            call::<methods::ImageEnsure, _, _, crate::services::image::ImageError>(params, |p| async move {
                let name = p.name.unwrap_or_else(|| daemon.infra.config.default_image_name.clone());
                let (image, kernel) = s.image.ensure_image(&name).await?;
                Ok(crate::services::ImageService::info(image, &[kernel]))
            })
            .await
        }
        methods::ImageList::NAME => {
            call::<methods::ImageList, _, _, _>(params, |Empty {}| s.image.list_images()).await
        }
        methods::ImageShow::NAME => {
            call::<methods::ImageShow, _, _, _>(params, |p| async move { s.image.show(&p.name).await }).await
        }
        methods::ImagePullBegin::NAME => {
            call::<methods::ImagePullBegin, _, _, _>(params, |p| async move { s.image.begin_pull(p, &daemon.ops).await }).await
        }
        methods::ImagePullStatus::NAME => {
            call::<methods::ImagePullStatus, _, _, _>(params, |p| async move {
                s.image.pull_status(&p.op_id, p.seen, std::time::Duration::from_millis(p.wait_ms)).await
            })
            .await
        }
        methods::ImagePullCancel::NAME => {
            call::<methods::ImagePullCancel, _, _, _>(params, |p| async move { s.image.pull_cancel(&p.op_id) }).await
        }
        methods::ImageRegister::NAME => {
            call::<methods::ImageRegister, _, _, _>(params, |p| async move { s.image.register(p).await }).await
        }
        methods::ImagePromote::NAME => {
            call::<methods::ImagePromote, _, _, _>(params, |p| async move { s.image.promote(&p.name).await }).await
        }
        methods::ImageDelete::NAME => {
            call::<methods::ImageDelete, _, _, _>(params, |p| async move { s.image.delete(&p.name).await }).await
        }
        methods::ImageCachePrune::NAME => {
            call::<methods::ImageCachePrune, _, _, _>(params, |p| async move { s.image.cache_prune(p).await }).await
        }
        methods::ImageExport::NAME => {
            call::<methods::ImageExport, _, _, _>(params, |p| async move { s.image.export(&p.name, &p.output).await }).await
        }
        methods::KernelCatalog::NAME => {
            call::<methods::KernelCatalog, _, _, _>(params, |Empty {}| s.image.kernel_catalog()).await
        }
        methods::KernelPull::NAME => {
            call::<methods::KernelPull, _, _, _>(params, |p| async move {
                s.image.kernel_pull(&p.name, &std::sync::Arc::default()).await
            })
            .await
        }
        methods::KernelShow::NAME => {
            call::<methods::KernelShow, _, _, _>(params, |p| async move { s.image.kernel_show(&p.name).await }).await
        }
        methods::KernelRm::NAME => {
            call::<methods::KernelRm, _, _, _>(params, |p| async move { s.image.kernel_rm(&p.name).await }).await
        }
        other => Err(RpcError::new(ErrorCode::UnknownMethod, format!("unknown method {other:?}"))
            .with_hint("the CLI and daemon may be different versions; `banger daemon stop` restarts it on next use")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_dispatch_serves_exactly_the_documented_methods() {
        let mut served = SERVED.to_vec();
        let mut documented = methods::ALL.to_vec();
        served.sort_unstable();
        documented.sort_unstable();
        assert_eq!(served, documented);
    }
}
