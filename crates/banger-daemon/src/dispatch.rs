//! RPC dispatch: a pure forwarder from method name to service call.

use std::future::Future;

use banger_api::methods::{self, Method};
use banger_api::types::{Empty, OperationsListResult, PingResult, VmListResult};
use banger_api::{ErrorCode, RpcError};
use serde_json::Value;

use crate::daemon::Daemon;

/// Decodes params for `M`, runs `f`, encodes its result.
async fn call<M, F, Fut>(params: Value, f: F) -> Result<Value, RpcError>
where
    M: Method,
    F: FnOnce(M::Params) -> Fut,
    Fut: Future<Output = Result<M::Result, RpcError>>,
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
];

/// Runs one method.
pub async fn dispatch(daemon: &Daemon, method: &str, params: Value) -> Result<Value, RpcError> {
    let s = &daemon.services;
    match method {
        methods::Ping::NAME => {
            call::<methods::Ping, _, _>(params, |Empty {}| async {
                Ok(PingResult {
                    version: banger_api::VERSION.to_owned(),
                    commit: banger_api::COMMIT.to_owned(),
                    pid: std::process::id(),
                    uptime_ms: daemon.started.elapsed().as_millis() as u64,
                    protocol: banger_api::PROTOCOL_VERSION,
                })
            })
            .await
        }
        methods::Shutdown::NAME => {
            call::<methods::Shutdown, _, _>(params, |Empty {}| async {
                daemon.shutdown.cancel();
                Ok(Empty {})
            })
            .await
        }
        methods::VmList::NAME => {
            call::<methods::VmList, _, _>(params, |Empty {}| async {
                Ok(VmListResult { vms: s.vm.list().await? })
            })
            .await
        }
        methods::VmShow::NAME => {
            call::<methods::VmShow, _, _>(params, |p| async move { s.vm.show(&p.name).await }).await
        }
        methods::OperationsList::NAME => {
            call::<methods::OperationsList, _, _>(params, |Empty {}| async {
                Ok(OperationsListResult { operations: daemon.ops.list() })
            })
            .await
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
