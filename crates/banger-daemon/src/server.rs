//! The unix-socket JSON-RPC server.
//!
//! Each connection's peer uid is checked with `SO_PEERCRED`: only the owner uid and root are
//! served; anyone else gets one `unauthorized` error and the connection is closed. Requests on
//! a connection are answered in order; connections are served concurrently. Malformed, oversize
//! and unknown-method frames get an error response and the connection stays open.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use banger_api::frame::{Chunk, Frame, FrameReader};
use banger_api::{ErrorCode, PROTOCOL_VERSION, Request, Response, RpcError};
use serde_json::Value;
use tokio::io::{AsyncWriteExt, BufReader};
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{UnixListener, UnixStream};
use tokio_util::task::TaskTracker;
use tracing::{Instrument, debug, info, info_span, warn};

use crate::daemon::Daemon;
use crate::dispatch::dispatch;
use crate::ops::new_op_id;
use crate::stream::StreamOut;

/// Errors binding the socket.
#[derive(Debug, thiserror::Error)]
pub enum BindError {
    /// Another daemon answers on the socket.
    #[error("another bangerd is already serving on {0}")]
    InUse(String),
    /// Binding or setting permissions failed.
    #[error("cannot bind {path}")]
    Bind {
        /// Socket path.
        path: String,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
}

/// Binds the daemon socket at `path` with mode 0600, replacing a stale socket file.
pub async fn bind_socket(path: &Path) -> Result<UnixListener, BindError> {
    let display = path.display().to_string();
    let bind_err = |source| BindError::Bind {
        path: display.clone(),
        source,
    };
    if path.exists() {
        if UnixStream::connect(path).await.is_ok() {
            return Err(BindError::InUse(display));
        }
        fs_err::remove_file(path).map_err(bind_err)?;
    }
    let listener = UnixListener::bind(path).map_err(bind_err)?;
    fs_err::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(bind_err)?;
    Ok(listener)
}

/// Serves until `daemon.shutdown` is cancelled, then waits (up to 10 s) for in-flight requests.
pub async fn serve(daemon: Arc<Daemon>, listener: UnixListener) {
    let tracker = TaskTracker::new();
    loop {
        tokio::select! {
            () = daemon.shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    let d = Arc::clone(&daemon);
                    tracker.spawn(async move { handle_connection(&d, stream).await });
                }
                Err(e) => {
                    warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
        }
    }
    info!("shutting down: no longer accepting connections");
    tracker.close();
    if tokio::time::timeout(Duration::from_secs(10), tracker.wait())
        .await
        .is_err()
    {
        warn!("in-flight requests did not finish within 10s");
    }
}

async fn handle_connection(daemon: &Daemon, stream: UnixStream) {
    let peer_uid = match stream.peer_cred() {
        Ok(cred) => cred.uid(),
        Err(e) => {
            warn!(error = %e, "cannot read peer credentials; closing");
            return;
        }
    };
    let (read, mut write) = stream.into_split();
    let mut reader = FrameReader::new(BufReader::new(read));
    if peer_uid != daemon.owner_uid && peer_uid != 0 {
        let op_id = new_op_id();
        warn!(
            op_id,
            peer_uid,
            owner_uid = daemon.owner_uid,
            "refused connection from another user"
        );
        // Read (at most) the first request so the client gets an answer to it, not a reset.
        let first = tokio::time::timeout(Duration::from_secs(2), reader.next_frame()).await;
        let id = match first {
            Ok(Ok(Some(Frame::Line(line)))) => serde_json::from_slice::<Value>(&line)
                .ok()
                .and_then(|v| v.get("id").cloned())
                .unwrap_or(Value::Null),
            _ => Value::Null,
        };
        let err = RpcError::new(
            ErrorCode::Unauthorized,
            format!(
                "uid {peer_uid} may not use this daemon (owner is uid {})",
                daemon.owner_uid
            ),
        )
        .with_op_id(op_id);
        let _ = write.write_all(&Response::err(id, err).to_line()).await;
        return;
    }
    let idle = Duration::from_secs(daemon.infra.config.rpc_idle_timeout_secs.max(1));
    loop {
        let frame = tokio::select! {
            () = daemon.shutdown.cancelled() => return,
            frame = tokio::time::timeout(idle, reader.next_frame()) => match frame {
                Ok(frame) => frame,
                Err(_) => {
                    debug!("closing a connection idle for {}s", idle.as_secs());
                    return;
                }
            },
        };
        let response = match frame {
            Ok(None) => return,
            Err(e) => {
                debug!(error = %e, "connection read failed");
                return;
            }
            Ok(Some(Frame::Oversize)) => {
                let op_id = new_op_id();
                warn!(op_id, "oversize request frame");
                Response::err(
                    Value::Null,
                    RpcError::new(
                        ErrorCode::BadRequest,
                        format!("request exceeds {} bytes", banger_api::MAX_FRAME_BYTES),
                    )
                    .with_op_id(op_id),
                )
            }
            Ok(Some(Frame::Line(line))) => {
                match handle_line(daemon, &line, &mut reader, &mut write).await {
                    Some(response) => response,
                    // The client went away mid-stream; the request was cancelled.
                    None => return,
                }
            }
        };
        if write.write_all(&response.to_line()).await.is_err() {
            return;
        }
    }
}

/// Answers one request line; chunks of a streamed result are written to `write` as they
/// come. `None` when the client went away before the answer (the request is cancelled).
async fn handle_line(
    daemon: &Daemon,
    line: &[u8],
    reader: &mut FrameReader<BufReader<OwnedReadHalf>>,
    write: &mut OwnedWriteHalf,
) -> Option<Response> {
    let op_id = new_op_id();
    let bad = |id: Value, msg: String| {
        warn!(op_id, "bad request: {msg}");
        Response::err(
            id,
            RpcError::new(ErrorCode::BadRequest, msg).with_op_id(op_id.clone()),
        )
    };
    let value: Value = match serde_json::from_slice(line) {
        Ok(v) => v,
        Err(e) => return Some(bad(Value::Null, format!("invalid json: {e}"))),
    };
    let id = value.get("id").cloned().unwrap_or(Value::Null);
    let request: Request = match serde_json::from_value(value) {
        Ok(r) => r,
        Err(e) => return Some(bad(id, format!("not a json-rpc request: {e}"))),
    };
    if request.jsonrpc != "2.0" {
        return Some(bad(
            id,
            format!("unsupported jsonrpc version {:?}", request.jsonrpc),
        ));
    }
    if request.protocol != Some(PROTOCOL_VERSION) {
        let got = request
            .protocol
            .map_or_else(|| "none".to_owned(), |v| v.to_string());
        warn!(
            op_id,
            method = request.method,
            "protocol version mismatch: got {got}"
        );
        return Some(Response::err(
            id,
            RpcError::new(
                ErrorCode::BadVersion,
                format!(
                    "protocol version {got} is not supported (daemon speaks {PROTOCOL_VERSION})"
                ),
            )
            .with_hint("upgrade the client, or `banger daemon stop` so a matching daemon starts")
            .with_op_id(op_id),
        ));
    }
    let span = info_span!("rpc", op_id = %op_id, method = %request.method);
    let track = request.method != <banger_api::methods::OperationsList as banger_api::Method>::NAME;
    let _guard = track.then(|| {
        daemon
            .ops
            .begin(&op_id, &request.method, daemon.infra.clock.now_rfc3339())
    });
    let started = Instant::now();
    // A streaming request also watches its connection: a client that closed it cancels the
    // request (until the client sends more, i.e. pipelines its next request).
    let mut watch_eof = banger_api::methods::STREAMING.contains(&request.method.as_str());
    let (out, mut chunks) = StreamOut::channel();
    let call = dispatch(daemon, &request.method, request.params, out).instrument(span.clone());
    tokio::pin!(call);
    let result = loop {
        tokio::select! {
            result = &mut call => break result,
            eof = reader.at_eof(), if watch_eof => {
                if eof.unwrap_or(true) {
                    debug!(op_id, "client went away; cancelling the streaming request");
                    return None;
                }
                watch_eof = false;
            }
            Some((stream, bytes)) = chunks.recv() => {
                if write.write_all(&Chunk::new(id.clone(), stream, &bytes).to_line()).await.is_err() {
                    debug!(op_id, "client went away mid-stream; cancelling the request");
                    return None;
                }
            }
        }
    };
    // What the handler queued before it finished.
    while let Ok((stream, bytes)) = chunks.try_recv() {
        if write
            .write_all(&Chunk::new(id.clone(), stream, &bytes).to_line())
            .await
            .is_err()
        {
            return None;
        }
    }
    let _enter = span.enter();
    let elapsed_ms = started.elapsed().as_secs_f64() * 1000.0;
    match result {
        Ok(value) => {
            debug!(elapsed_ms, "request done");
            Some(Response::ok(id, value))
        }
        Err(err) => {
            warn!(elapsed_ms, kind = %err.kind(), "request failed: {}", err.message);
            Some(Response::err(id, err.with_op_id(op_id.clone())))
        }
    }
}
