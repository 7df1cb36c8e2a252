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

use banger_api::frame::{Chunk, Frame, FrameReader, Incoming};
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
use crate::stream::{StreamIn, StreamOut};

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
                    Answer::Response(response) => response,
                    // A late chunk of a duplex request that has ended.
                    Answer::Nothing => continue,
                    // The client went away mid-stream; the request was cancelled.
                    Answer::Gone => return,
                }
            }
        };
        if write.write_all(&response.to_line()).await.is_err() {
            return;
        }
    }
}

/// What a request line gets.
enum Answer {
    /// This response.
    Response(Response),
    /// None: the line was a chunk for a duplex request that has already ended.
    Nothing,
    /// None: the client went away before the answer (the request was cancelled).
    Gone,
}

/// Watches the connection during a request: a streaming request is cancelled when the client
/// goes away (until it sends more, i.e. pipelines its next request); a duplex one gets the
/// client's chunks on `input` (read only as fast as it takes them) and is cancelled when the
/// client goes away or sends anything but its chunks. Returns only to cancel.
async fn watch_client(
    reader: &mut FrameReader<BufReader<OwnedReadHalf>>,
    method: &str,
    id: Value,
    input: tokio::sync::mpsc::Sender<(String, Vec<u8>)>,
) {
    if banger_api::methods::DUPLEX.contains(&method) {
        loop {
            let Ok(Some(Frame::Line(line))) = reader.next_frame().await else {
                return;
            };
            let chunk = match Incoming::parse(&line) {
                Ok(Incoming::Chunk(c)) if c.id == id => c,
                _ => return,
            };
            let Ok(bytes) = chunk.bytes() else { return };
            // A handler that stopped reading input just drops what follows.
            let _ = input.send((chunk.chunk.stream, bytes)).await;
        }
    }
    drop(input);
    if banger_api::methods::STREAMING.contains(&method) && reader.at_eof().await.unwrap_or(true) {
        return;
    }
    std::future::pending::<()>().await;
}

/// Answers one request line; chunks of a streamed result are written to `write` as they
/// come.
async fn handle_line(
    daemon: &Daemon,
    line: &[u8],
    reader: &mut FrameReader<BufReader<OwnedReadHalf>>,
    write: &mut OwnedWriteHalf,
) -> Answer {
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
        Err(e) => return Answer::Response(bad(Value::Null, format!("invalid json: {e}"))),
    };
    if value.get("chunk").is_some() && value.get("method").is_none() {
        debug!(op_id, "ignoring a chunk outside its request");
        return Answer::Nothing;
    }
    let id = value.get("id").cloned().unwrap_or(Value::Null);
    let request: Request = match serde_json::from_value(value) {
        Ok(r) => r,
        Err(e) => return Answer::Response(bad(id, format!("not a json-rpc request: {e}"))),
    };
    if request.jsonrpc != "2.0" {
        return Answer::Response(bad(
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
        return Answer::Response(Response::err(
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
    let (out, mut chunks) = StreamOut::channel();
    let (input_tx, input) = StreamIn::channel();
    let call =
        dispatch(daemon, &request.method, request.params, out, input).instrument(span.clone());
    let watch = watch_client(reader, &request.method, id.clone(), input_tx);
    tokio::pin!(call, watch);
    let result = loop {
        tokio::select! {
            result = &mut call => break result,
            () = &mut watch => {
                debug!(op_id, "client went away; cancelling the request");
                return Answer::Gone;
            }
            Some((stream, bytes)) = chunks.recv() => {
                if write.write_all(&Chunk::new(id.clone(), stream, &bytes).to_line()).await.is_err() {
                    debug!(op_id, "client went away mid-stream; cancelling the request");
                    return Answer::Gone;
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
            return Answer::Gone;
        }
    }
    let _enter = span.enter();
    let elapsed_ms = started.elapsed().as_secs_f64() * 1000.0;
    match result {
        Ok(value) => {
            debug!(elapsed_ms, "request done");
            Answer::Response(Response::ok(id, value))
        }
        Err(err) => {
            warn!(elapsed_ms, kind = %err.kind(), "request failed: {}", err.message);
            Answer::Response(Response::err(id, err.with_op_id(op_id.clone())))
        }
    }
}
