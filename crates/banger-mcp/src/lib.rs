//! `banger mcp`: an MCP server (the official Rust SDK, `rmcp`) whose tools drive banger's
//! sandboxes through `bangerd`'s socket — the same socket and peer-uid check as the CLI.
//! Over stdio (what MCP clients launch) or streamable HTTP on loopback.
//!
//! - `server` — the tools (`sandbox_create`, `sandbox_exec`, ...) and the handler.
//! - `run` — a command in a sandbox through `vm.exec`, outputs bounded.
//! - `limits` — `[mcp]` guard rails.
//! - `error` — tool errors: code, cause, remediation.

pub mod error;
pub mod limits;
pub mod run;
pub mod server;

use std::net::SocketAddr;

use rmcp::ServiceExt as _;
pub use server::{Banger, Settings};

/// Errors serving MCP.
#[derive(Debug, thiserror::Error)]
pub enum McpError {
    /// The transport failed to start or broke.
    #[error("mcp transport")]
    Transport(#[source] std::io::Error),
    /// The HTTP address is not on loopback.
    #[error("--http {0} is not a loopback address")]
    NotLoopback(SocketAddr),
}

/// Why serving ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    /// The client closed the session (stdin reached its end).
    ClientGone,
    /// A signal (SIGINT, SIGTERM, SIGHUP) stopped the server.
    Signalled,
}

async fn signalled() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut i), Ok(mut t), Ok(mut h)) = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
        signal(SignalKind::hangup()),
    ) else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = i.recv() => {}
        _ = t.recv() => {}
        _ = h.recv() => {}
    }
}

/// Serves one MCP session on stdin/stdout until the client goes away or a signal comes.
pub async fn serve_stdio(server: Banger) -> Result<Ended, McpError> {
    let running = server
        .serve(rmcp::transport::stdio())
        .await
        .map_err(|e| McpError::Transport(std::io::Error::other(e.to_string())))?;
    tokio::select! {
        _ = running.waiting() => Ok(Ended::ClientGone),
        () = signalled() => Ok(Ended::Signalled),
    }
}

/// Serves streamable HTTP at `addr` (loopback only) until a signal comes.
pub async fn serve_http(server: Banger, addr: SocketAddr) -> Result<Ended, McpError> {
    use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
    use rmcp::transport::streamable_http_server::{
        StreamableHttpServerConfig, StreamableHttpService,
    };
    if !addr.ip().is_loopback() {
        return Err(McpError::NotLoopback(addr));
    }
    let service = StreamableHttpService::new(
        move || Ok(server.clone()),
        std::sync::Arc::new(LocalSessionManager::default()),
        StreamableHttpServerConfig::default(),
    );
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(McpError::Transport)?;
    tracing::info!("mcp: streamable http on http://{addr}/mcp");
    let serve = async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let service = service.clone();
            tokio::spawn(async move {
                let io = hyper_util::rt::TokioIo::new(stream);
                let svc = hyper_util::service::TowerToHyperService::new(service);
                let _ = hyper_util::server::conn::auto::Builder::new(
                    hyper_util::rt::TokioExecutor::new(),
                )
                .serve_connection(io, svc)
                .await;
            });
        }
    };
    tokio::select! {
        () = serve => Ok(Ended::Signalled),
        () = signalled() => Ok(Ended::Signalled),
    }
}
