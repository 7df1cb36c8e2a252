//! A JSON-RPC client over the daemon's unix socket.

use std::path::{Path, PathBuf};

use tokio::io::{AsyncWriteExt, BufReader};
use tokio::net::UnixStream;
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};

use crate::error::RpcError;
use crate::frame::{Frame, FrameReader, Incoming, Request, Response};
use crate::methods::Method;

/// Errors of [`Client`].
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The socket could not be reached.
    #[error("cannot connect to {path}")]
    Connect {
        /// Socket path.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// Reading or writing the socket failed.
    #[error("daemon connection failed")]
    Io(#[from] std::io::Error),
    /// The daemon closed the connection before answering.
    #[error("daemon closed the connection without answering")]
    Closed,
    /// The response was not valid JSON-RPC or did not match the method's result type.
    #[error("cannot decode the daemon's response")]
    Decode(#[source] serde_json::Error),
    /// The daemon answered with an error.
    #[error(transparent)]
    Rpc(#[from] RpcError),
}

/// One connection to the daemon; calls are sequential on it.
#[derive(Debug)]
pub struct Client {
    reader: FrameReader<BufReader<OwnedReadHalf>>,
    writer: OwnedWriteHalf,
    next_id: u64,
}

impl Client {
    /// Connects to the daemon socket at `path`.
    pub async fn connect(path: &Path) -> Result<Self, ClientError> {
        let stream = UnixStream::connect(path)
            .await
            .map_err(|source| ClientError::Connect {
                path: path.to_owned(),
                source,
            })?;
        let (read, writer) = stream.into_split();
        Ok(Client {
            reader: FrameReader::new(BufReader::new(read)),
            writer,
            next_id: 1,
        })
    }

    /// Calls a typed method.
    pub async fn call<M: Method>(&mut self, params: &M::Params) -> Result<M::Result, ClientError> {
        let params = serde_json::to_value(params).map_err(ClientError::Decode)?;
        let value = self.call_raw(M::NAME, params).await?;
        serde_json::from_value(value).map_err(ClientError::Decode)
    }

    /// Calls a method by name with raw JSON params.
    pub async fn call_raw(
        &mut self,
        method: &str,
        params: serde_json::Value,
    ) -> Result<serde_json::Value, ClientError> {
        let id = self.next_id;
        self.next_id += 1;
        let mut line =
            serde_json::to_vec(&Request::new(id, method, params)).map_err(ClientError::Decode)?;
        line.push(b'\n');
        self.send_bytes(&line).await?;
        let response = self.read_response().await?;
        match (response.result, response.error) {
            (_, Some(err)) => Err(ClientError::Rpc(err)),
            (Some(result), None) => Ok(result),
            (None, None) => Ok(serde_json::Value::Null),
        }
    }

    /// Writes raw bytes to the socket (tests use it to send malformed frames).
    pub async fn send_bytes(&mut self, bytes: &[u8]) -> Result<(), ClientError> {
        self.writer.write_all(bytes).await?;
        self.writer.flush().await?;
        Ok(())
    }

    /// Sends a request for `M` with `params`; returns its id.
    async fn send_request<M: Method>(&mut self, params: &M::Params) -> Result<u64, ClientError> {
        let params = serde_json::to_value(params).map_err(ClientError::Decode)?;
        let id = self.next_id;
        self.next_id += 1;
        let mut line =
            serde_json::to_vec(&Request::new(id, M::NAME, params)).map_err(ClientError::Decode)?;
        line.push(b'\n');
        self.send_bytes(&line).await?;
        Ok(id)
    }

    /// Calls a method whose result streams: every chunk goes to `on_chunk` (stream name,
    /// bytes) as it arrives, then the final result is returned. An error from `on_chunk`
    /// (e.g. stdout closed) ends the call; dropping the connection cancels the request.
    pub async fn call_streaming<M: Method>(
        &mut self,
        params: &M::Params,
        on_chunk: &mut (dyn FnMut(&str, &[u8]) -> std::io::Result<()> + Send),
    ) -> Result<M::Result, ClientError> {
        self.send_request::<M>(params).await?;
        read_stream::<M>(&mut self.reader, on_chunk).await
    }

    /// Calls a duplex method ([`crate::methods::DUPLEX`]): what arrives on `input` (stream
    /// name, bytes) is sent as chunks while the daemon's chunks go to `on_chunk`; reading and
    /// writing run concurrently, so a command that echoes its input never deadlocks. Ends
    /// with the final result; `input` closing only stops the sending.
    pub async fn call_duplex<M: Method>(
        &mut self,
        params: &M::Params,
        mut input: tokio::sync::mpsc::Receiver<(&'static str, Vec<u8>)>,
        on_chunk: &mut (dyn FnMut(&str, &[u8]) -> std::io::Result<()> + Send),
    ) -> Result<M::Result, ClientError> {
        use crate::frame::Chunk;
        let id = self.send_request::<M>(params).await?;
        let writer = &mut self.writer;
        let send = async move {
            while let Some((stream, bytes)) = input.recv().await {
                let pieces: Vec<&[u8]> = if bytes.is_empty() {
                    vec![&[]]
                } else {
                    bytes.chunks(crate::frame::MAX_CHUNK_BYTES).collect()
                };
                for piece in pieces {
                    let chunk = Chunk::new(serde_json::Value::from(id), stream, piece);
                    writer.write_all(&chunk.to_line()).await?;
                }
                writer.flush().await?;
            }
            Ok::<(), std::io::Error>(())
        };
        let read = read_stream::<M>(&mut self.reader, on_chunk);
        tokio::pin!(send, read);
        let mut sending = true;
        loop {
            tokio::select! {
                // Sending ends when `input` closes or the daemon stopped reading (the call
                // ended): its answer says why.
                _ = &mut send, if sending => sending = false,
                result = &mut read => return result,
            }
        }
    }

    /// Reads the next frame: a chunk or a response.
    pub async fn read_incoming(&mut self) -> Result<Incoming, ClientError> {
        match self.reader.next_frame().await? {
            Some(Frame::Line(line)) => Incoming::parse(&line).map_err(ClientError::Decode),
            Some(Frame::Oversize) | None => Err(ClientError::Closed),
        }
    }

    /// Reads the next response frame (chunks of a stream are skipped).
    pub async fn read_response(&mut self) -> Result<Response, ClientError> {
        loop {
            if let Incoming::Response(r) = self.read_incoming().await? {
                return Ok(r);
            }
        }
    }
}

/// Reads a streamed call's chunks (into `on_chunk`) up to its response; returns its result.
async fn read_stream<M: Method>(
    reader: &mut FrameReader<BufReader<OwnedReadHalf>>,
    on_chunk: &mut (dyn FnMut(&str, &[u8]) -> std::io::Result<()> + Send),
) -> Result<M::Result, ClientError> {
    loop {
        let line = match reader.next_frame().await? {
            Some(Frame::Line(line)) => line,
            Some(Frame::Oversize) | None => return Err(ClientError::Closed),
        };
        match Incoming::parse(&line).map_err(ClientError::Decode)? {
            Incoming::Chunk(chunk) => {
                let bytes = chunk.bytes().map_err(|e| {
                    ClientError::Io(std::io::Error::new(std::io::ErrorKind::InvalidData, e))
                })?;
                on_chunk(&chunk.chunk.stream, &bytes)?;
            }
            Incoming::Response(response) => {
                return match (response.result, response.error) {
                    (_, Some(err)) => Err(ClientError::Rpc(err)),
                    (result, None) => {
                        serde_json::from_value(result.unwrap_or(serde_json::Value::Null))
                            .map_err(ClientError::Decode)
                    }
                };
            }
        }
    }
}
