//! Error codes and the JSON-RPC error object.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Machine-readable error kind carried in every error response (`error.data.kind`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The request was malformed: invalid JSON, wrong params, oversize frame.
    BadRequest,
    /// The request's protocol version differs from the daemon's.
    BadVersion,
    /// The named object does not exist.
    NotFound,
    /// An object with that name already exists.
    AlreadyExists,
    /// The VM is not running but the operation needs it to be.
    NotRunning,
    /// The operation was valid but failed while being carried out.
    OperationFailed,
    /// The caller's uid may not talk to this daemon.
    Unauthorized,
    /// No such method.
    UnknownMethod,
    /// The operation was cancelled by the caller; what it had done was undone.
    Cancelled,
    /// The VM (its guest agent or its backend) lacks what the request needs.
    Unsupported,
    /// A filesystem banger writes to is full; what the operation had done was undone.
    NoSpace,
}

impl ErrorCode {
    /// The JSON-RPC numeric code for this kind (the standard ones where they exist).
    pub fn rpc_code(self) -> i64 {
        match self {
            ErrorCode::BadRequest => -32600,
            ErrorCode::UnknownMethod => -32601,
            ErrorCode::BadVersion => -32001,
            ErrorCode::NotFound => -32002,
            ErrorCode::AlreadyExists => -32003,
            ErrorCode::NotRunning => -32004,
            ErrorCode::OperationFailed => -32005,
            ErrorCode::Unauthorized => -32006,
            ErrorCode::Cancelled => -32007,
            ErrorCode::Unsupported => -32008,
            ErrorCode::NoSpace => -32009,
        }
    }

    /// The snake_case name used on the wire and in CLI messages.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadRequest => "bad_request",
            ErrorCode::BadVersion => "bad_version",
            ErrorCode::NotFound => "not_found",
            ErrorCode::AlreadyExists => "already_exists",
            ErrorCode::NotRunning => "not_running",
            ErrorCode::OperationFailed => "operation_failed",
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::UnknownMethod => "unknown_method",
            ErrorCode::Cancelled => "cancelled",
            ErrorCode::Unsupported => "unsupported",
            ErrorCode::NoSpace => "no_space",
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `error.data` of a JSON-RPC error response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ErrorData {
    /// What kind of error this is.
    pub kind: ErrorCode,
    /// The op id the daemon gave the request; it appears in the daemon's log lines.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub op_id: Option<String>,
    /// How to fix it, when there is a fix.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
}

/// A JSON-RPC 2.0 error object, with banger's [`ErrorData`].
#[derive(
    Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error, schemars::JsonSchema,
)]
#[error("{message}")]
pub struct RpcError {
    /// Numeric JSON-RPC code (derived from `data.kind`).
    pub code: i64,
    /// Human-readable message: lowercase, no trailing period.
    pub message: String,
    /// banger's structured details.
    pub data: ErrorData,
}

impl RpcError {
    /// A new error of `kind` with `message`.
    pub fn new(kind: ErrorCode, message: impl Into<String>) -> Self {
        RpcError {
            code: kind.rpc_code(),
            message: message.into(),
            data: ErrorData {
                kind,
                op_id: None,
                hint: None,
            },
        }
    }

    /// Adds a hint telling the user how to fix the problem.
    #[must_use]
    pub fn with_hint(mut self, hint: impl Into<String>) -> Self {
        self.data.hint = Some(hint.into());
        self
    }

    /// Attaches the op id of the request that failed.
    #[must_use]
    pub fn with_op_id(mut self, op_id: impl Into<String>) -> Self {
        self.data.op_id = Some(op_id.into());
        self
    }

    /// The error's kind.
    pub fn kind(&self) -> ErrorCode {
        self.data.kind
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_error_code_wire_names_match_as_str() {
        for kind in [
            ErrorCode::BadRequest,
            ErrorCode::BadVersion,
            ErrorCode::NotFound,
            ErrorCode::AlreadyExists,
            ErrorCode::NotRunning,
            ErrorCode::OperationFailed,
            ErrorCode::Unauthorized,
            ErrorCode::UnknownMethod,
            ErrorCode::Cancelled,
            ErrorCode::Unsupported,
            ErrorCode::NoSpace,
        ] {
            let json = serde_json::to_string(&kind).unwrap();
            assert_eq!(json, format!("\"{}\"", kind.as_str()));
        }
    }

    #[test]
    fn test_rpc_error_roundtrip_keeps_op_id_and_hint() {
        let err = RpcError::new(ErrorCode::NotFound, "vm \"x\" not found")
            .with_hint("run `banger vm list`")
            .with_op_id("op-1");
        let back: RpcError = serde_json::from_str(&serde_json::to_string(&err).unwrap()).unwrap();
        assert_eq!(back, err);
        assert_eq!(back.code, -32002);
    }
}
