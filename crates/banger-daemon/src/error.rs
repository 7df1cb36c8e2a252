//! Turning service errors into RPC errors.

use banger_api::{ErrorCode, RpcError};
use banger_store::StoreError;

/// A store failure as an RPC error (`operation_failed`, with the cause chain).
pub fn store_error(err: &StoreError) -> RpcError {
    RpcError::new(ErrorCode::OperationFailed, chain(err))
}

/// An error and its sources joined with `: `.
pub fn chain(err: &dyn std::error::Error) -> String {
    let mut out = err.to_string();
    let mut source = err.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.ends_with(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}
