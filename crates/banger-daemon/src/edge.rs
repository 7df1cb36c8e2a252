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

/// The wire form of a service error. Whatever the step, a full filesystem is reported as
/// `no_space` with the fix.
pub fn rpc_error(err: &dyn ServiceError) -> RpcError {
    if no_space(err) {
        return RpcError::new(banger_api::ErrorCode::NoSpace, chain(err)).with_hint(
            "a filesystem is full: free space on the one holding the path above (`df -h PATH`), then retry",
        );
    }
    let wire = RpcError::new(err.code(), chain(err));
    match err.hint() {
        Some(h) => wire.with_hint(h),
        None => wire,
    }
}

/// Whether a cause of `err` is a full filesystem: `ENOSPC`/`EDQUOT` from a call, SQLite's
/// `SQLITE_FULL`, or a host command that said so (git says "Out of diskspace").
fn no_space(err: &dyn std::error::Error) -> bool {
    let says = |e: &dyn std::error::Error| {
        let text = e.to_string();
        text.contains("No space left on device")
            || text.contains("database or disk is full")
            || text.contains("Disk quota exceeded")
            || text.contains("Out of diskspace")
    };
    if says(err) {
        return true;
    }
    let mut cur = err.source();
    while let Some(e) = cur {
        if let Some(io) = e.downcast_ref::<std::io::Error>()
            && (matches!(
                io.kind(),
                std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded
            ) || io.raw_os_error() == Some(28))
        {
            return true;
        }
        if says(e) {
            return true;
        }
        cur = e.source();
    }
    false
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
    fn test_a_full_disk_anywhere_in_the_chain_is_no_space() {
        let full = Outer(std::io::Error::from_raw_os_error(28));
        assert!(!full.to_string().contains("space"));
        assert!(no_space(&full));
        let cmd = Outer(std::io::Error::other(
            "cp: error writing '/x/root.ext4': No space left on device",
        ));
        assert!(no_space(&cmd));
        assert!(!no_space(&Outer(std::io::Error::other(
            "permission denied"
        ))));
        let e = rpc_error(&crate::services::vm::VmError::RunDir(
            std::io::Error::from_raw_os_error(28),
        ));
        assert_eq!(e.kind(), banger_api::ErrorCode::NoSpace);
        assert!(e.data.hint.unwrap().contains("df -h"));
    }

    #[test]
    fn test_chain_joins_each_cause_once() {
        let e = Outer(std::io::Error::other("inner"));
        assert_eq!(chain(&e), "outer: inner");
    }
}
