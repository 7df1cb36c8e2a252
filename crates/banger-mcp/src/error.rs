//! Tool errors an agent can act on: banger's error code, the cause, and a remediation.

use banger_api::ClientError;
use rmcp::model::CallToolResult;
use serde::Serialize;

/// A failed tool call, returned to the agent as a tool result with `isError` (never as an
/// opaque protocol error).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, thiserror::Error)]
#[error("{message}")]
pub struct ToolError {
    /// banger's error code (`not_found`, `bad_request`, `limit_exceeded`, `forbidden`, ...).
    pub code: String,
    /// What went wrong.
    pub message: String,
    /// How to fix it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
}

impl ToolError {
    /// An error of `code`.
    pub fn new(code: &str, message: impl Into<String>, hint: impl Into<String>) -> Self {
        ToolError {
            code: code.to_owned(),
            message: message.into(),
            hint: Some(hint.into()),
        }
    }

    /// The tool result the agent sees: the error as structured content and as text.
    pub fn into_result(self) -> CallToolResult {
        let value = serde_json::to_value(&self).unwrap_or_default();
        let mut text = format!("error ({}): {}", self.code, self.message);
        if let Some(h) = &self.hint {
            text.push_str("\nhint: ");
            text.push_str(h);
        }
        let mut r = CallToolResult::structured_error(value);
        r.content = vec![rmcp::model::ContentBlock::text(text)];
        r
    }

    /// Replaces the hint of a `not_found` error with `hint` (the tool knows which listing
    /// helps).
    #[must_use]
    pub fn not_found_hint(mut self, hint: &str) -> Self {
        if self.code == "not_found" {
            self.hint = Some(hint.to_owned());
        }
        self
    }
}

impl From<ClientError> for ToolError {
    fn from(e: ClientError) -> Self {
        match e {
            ClientError::Rpc(e) => ToolError {
                code: e.kind().as_str().to_owned(),
                message: e.message.clone(),
                hint: e.data.hint.clone(),
            },
            ClientError::Connect { path, source } => ToolError::new(
                "daemon_unavailable",
                format!("cannot reach bangerd at {}: {source}", path.display()),
                "start it with `banger daemon start` (or any banger command), then retry",
            ),
            other => ToolError::new(
                "daemon_unavailable",
                format!("talking to bangerd failed: {other}"),
                "`banger daemon status` shows whether it runs; retry the call",
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use banger_api::{ErrorCode, RpcError};

    #[test]
    fn test_rpc_errors_keep_code_and_hint_and_render_both() {
        let e: ToolError = ClientError::Rpc(
            RpcError::new(ErrorCode::NotFound, "vm \"x\" not found").with_hint("list them"),
        )
        .into();
        assert_eq!(e.code, "not_found");
        let e = e.not_found_hint("`sandbox_list` shows the sandboxes that exist");
        let r = e.into_result();
        assert_eq!(r.is_error, Some(true));
        let s = r.structured_content.unwrap();
        assert_eq!(s["code"], "not_found");
        assert!(s["hint"].as_str().unwrap().contains("sandbox_list"));
        let text = serde_json::to_string(&r.content).unwrap();
        assert!(
            text.contains("error (not_found)") && text.contains("hint:"),
            "{text}"
        );
    }
}
