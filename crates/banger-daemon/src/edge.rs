//! The RPC edge: the one place a service error becomes the wire's `RpcError`.
//!
//! Services return their own typed errors (`VmError`, `ImageError`, `NetError`,
//! `WorkspaceError`, ...), each a [`ServiceError`]: a kind, a message whose sources are its
//! causes (never repeated in the message), and a hint where there is a fix. This module
//! turns them into `RpcError { kind, message: the chain joined with ": ", hint }`, the way
//! firecracker's `VmmActionError` wraps its modules' errors.

use banger_api::RpcError;

use crate::progress::OpError;
use crate::services::image::ImageError;
use crate::services::network::NetError;
pub use crate::services::support::chain;
use crate::services::support::{Cancelled, ServiceError};
use crate::services::vm::VmError;
use crate::services::workspace::WorkspaceError;

/// The wire form of a service error.
pub fn rpc_error(err: &dyn ServiceError) -> RpcError {
    let wire = RpcError::new(err.code(), chain(err));
    match err.hint() {
        Some(h) => wire.with_hint(h),
        None => wire,
    }
}

macro_rules! to_wire {
    ($($t:ty),* $(,)?) => {$(
        impl From<$t> for RpcError {
            fn from(e: $t) -> Self {
                rpc_error(&e)
            }
        }
    )*};
}

to_wire!(
    VmError,
    ImageError,
    NetError,
    WorkspaceError,
    OpError,
    Cancelled
);

/// Per-VM outcomes of a lifecycle op on several VMs, in wire form.
pub fn vm_outcomes(
    results: Vec<(String, Result<banger_api::types::VmInfo, VmError>)>,
) -> Vec<banger_api::types::VmOpOutcome> {
    results
        .into_iter()
        .map(|(name, r)| match r {
            Ok(vm) => banger_api::types::VmOpOutcome {
                name,
                vm: Some(vm),
                error: None,
            },
            Err(e) => banger_api::types::VmOpOutcome {
                name,
                vm: None,
                error: Some(e.into()),
            },
        })
        .collect()
}

/// Per-VM listening ports, in wire form.
pub fn port_outcomes(
    results: Vec<(String, Result<Vec<banger_api::types::PortInfo>, VmError>)>,
) -> Vec<banger_api::types::VmPorts> {
    results
        .into_iter()
        .map(|(name, r)| match r {
            Ok(ports) => banger_api::types::VmPorts {
                name,
                ports,
                error: None,
            },
            Err(e) => banger_api::types::VmPorts {
                name,
                ports: Vec::new(),
                error: Some(e.into()),
            },
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("outer")]
    struct Outer(#[source] std::io::Error);

    #[test]
    fn test_chain_joins_each_cause_once() {
        let e = Outer(std::io::Error::other("inner"));
        assert_eq!(chain(&e), "outer: inner");
    }
}
