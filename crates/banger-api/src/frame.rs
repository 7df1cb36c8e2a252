//! Line-delimited JSON-RPC 2.0 framing.
//!
//! One JSON object per line, `\n`-terminated (a trailing `\r` is tolerated). A line longer
//! than [`MAX_FRAME_BYTES`] is reported as [`Frame::Oversize`] and skipped up to its newline,
//! so the connection stays usable for the next request. Empty lines are ignored.
//!
//! Streams: before the final [`Response`] to a request, the daemon may send any number of
//! [`Chunk`] frames with the same `id` (`{"jsonrpc":"2.0","id":N,"chunk":{"stream":"console",
//! "data":"<base64>"}}`), each carrying at most [`MAX_CHUNK_BYTES`] bytes, so every frame
//! stays under the frame cap while the total is unbounded. Flow control is the socket's: a
//! client that reads slowly stalls the daemon's writer, which stalls the producer (a bounded
//! queue sits between them). A client that goes away cancels the request.
//!
//! Duplex methods ([`crate::methods::DUPLEX`], e.g. `vm.exec`): after its request the client
//! may also send chunk frames with the request's id (stream names in [`streams`]), until the
//! final response. The daemon reads them only as fast as the request consumes them, so a
//! client that writes faster than the guest reads is slowed the same way. A chunk frame
//! arriving outside a duplex request is ignored (no response).

use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::io::{AsyncBufRead, AsyncBufReadExt};

use crate::error::RpcError;

/// Largest accepted frame (one line), in bytes, excluding the newline.
pub const MAX_FRAME_BYTES: usize = 1 << 20;

/// A JSON-RPC 2.0 request with banger's `protocol` member.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Request {
    /// Always `"2.0"`.
    pub jsonrpc: String,
    /// Echoed back in the response.
    #[serde(default)]
    pub id: Value,
    /// Method name, e.g. `vm.list`.
    pub method: String,
    /// Method params; `null` when the method takes none.
    #[serde(default)]
    pub params: Value,
    /// The caller's [`crate::PROTOCOL_VERSION`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<u32>,
}

impl Request {
    /// A request for `method` with `params`, stamped with this build's protocol version.
    pub fn new(id: u64, method: &str, params: Value) -> Self {
        Request {
            jsonrpc: "2.0".to_owned(),
            id: Value::from(id),
            method: method.to_owned(),
            params,
            protocol: Some(crate::PROTOCOL_VERSION),
        }
    }
}

/// A JSON-RPC 2.0 response: exactly one of `result` and `error` is set.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Response {
    /// Always `"2.0"`.
    pub jsonrpc: String,
    /// The request's id, or `null` when the request could not be parsed.
    pub id: Value,
    /// The result on success.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<Value>,
    /// The error on failure.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<RpcError>,
}

impl Response {
    /// A success response.
    pub fn ok(id: Value, result: Value) -> Self {
        Response {
            jsonrpc: "2.0".to_owned(),
            id,
            result: Some(result),
            error: None,
        }
    }

    /// An error response.
    pub fn err(id: Value, error: RpcError) -> Self {
        Response {
            jsonrpc: "2.0".to_owned(),
            id,
            result: None,
            error: Some(error),
        }
    }

    /// Serializes the response as one line, newline included.
    pub fn to_line(&self) -> Vec<u8> {
        // Serializing a struct of strings, JSON values and an error struct cannot fail.
        let mut line = serde_json::to_vec(self).unwrap_or_else(|_| b"{}".to_vec());
        line.push(b'\n');
        line
    }
}

/// Chunk stream names of `vm.exec` (see [`crate::methods::DUPLEX`]).
pub mod streams {
    /// Client → daemon: bytes for the command's stdin.
    pub const STDIN: &str = "stdin";
    /// Client → daemon: end of stdin (no data).
    pub const STDIN_CLOSE: &str = "stdin_close";
    /// Client → daemon: a signal for the command, its number in decimal ASCII (`2`).
    pub const SIGNAL: &str = "signal";
    /// Client → daemon: the terminal's new size, `ROWS COLS` in ASCII.
    pub const RESIZE: &str = "resize";
    /// Daemon → client: the command's stdout (with a PTY, all its output).
    pub const STDOUT: &str = "stdout";
    /// Daemon → client: the command's stderr.
    pub const STDERR: &str = "stderr";
}

/// Largest payload of one [`Chunk`] (its base64 stays well under [`MAX_FRAME_BYTES`]).
pub const MAX_CHUNK_BYTES: usize = 256 << 10;

/// One piece of a streamed result, sent before the request's final [`Response`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Chunk {
    /// Always `"2.0"`.
    pub jsonrpc: String,
    /// The request's id.
    pub id: Value,
    /// The payload.
    pub chunk: ChunkData,
}

/// A chunk's payload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkData {
    /// Which stream of the request it belongs to (`console`, `vmm`, `stdout`, ...).
    pub stream: String,
    /// The bytes, base64 (standard alphabet, padded).
    pub data: String,
}

impl Chunk {
    /// A chunk of `bytes` (at most [`MAX_CHUNK_BYTES`]) on `stream` for request `id`.
    pub fn new(id: Value, stream: &str, bytes: &[u8]) -> Self {
        use base64::Engine as _;
        Chunk {
            jsonrpc: "2.0".to_owned(),
            id,
            chunk: ChunkData {
                stream: stream.to_owned(),
                data: base64::engine::general_purpose::STANDARD.encode(bytes),
            },
        }
    }

    /// The chunk as one line.
    pub fn to_line(&self) -> Vec<u8> {
        // A struct of strings and a JSON value always serializes.
        let mut line = serde_json::to_vec(self).unwrap_or_else(|_| b"{}".to_vec());
        line.push(b'\n');
        line
    }

    /// The payload's bytes.
    pub fn bytes(&self) -> Result<Vec<u8>, base64::DecodeError> {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD.decode(&self.chunk.data)
    }
}

/// What a client reads: a chunk of a stream, or the final response.
#[derive(Debug, Clone, PartialEq)]
pub enum Incoming {
    /// Part of a streamed result.
    Chunk(Chunk),
    /// The final response.
    Response(Response),
}

impl Incoming {
    /// Parses one line.
    pub fn parse(line: &[u8]) -> Result<Self, serde_json::Error> {
        let value: Value = serde_json::from_slice(line)?;
        if value.get("chunk").is_some() {
            serde_json::from_value(value).map(Incoming::Chunk)
        } else {
            serde_json::from_value(value).map(Incoming::Response)
        }
    }
}

/// One frame read from the wire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// A complete line, without its newline.
    Line(Vec<u8>),
    /// A line longer than [`MAX_FRAME_BYTES`]; its bytes were discarded.
    Oversize,
}

/// Reads newline-delimited frames with a size cap from a buffered reader.
#[derive(Debug)]
pub struct FrameReader<R> {
    inner: R,
    max: usize,
}

impl<R: AsyncBufRead + Unpin> FrameReader<R> {
    /// A reader that caps frames at [`MAX_FRAME_BYTES`].
    pub fn new(inner: R) -> Self {
        Self::with_max(inner, MAX_FRAME_BYTES)
    }

    /// A reader that caps frames at `max` bytes.
    pub fn with_max(inner: R, max: usize) -> Self {
        FrameReader { inner, max }
    }

    /// Waits until the peer sent more bytes (`Ok(false)`, nothing is consumed) or closed the
    /// connection (`Ok(true)`).
    pub async fn at_eof(&mut self) -> std::io::Result<bool> {
        Ok(self.inner.fill_buf().await?.is_empty())
    }

    /// The next frame, or `None` at end of stream. A final line without a newline counts.
    pub async fn next_frame(&mut self) -> std::io::Result<Option<Frame>> {
        let mut buf = Vec::new();
        let mut oversize = false;
        loop {
            let available = self.inner.fill_buf().await?;
            if available.is_empty() {
                if oversize {
                    return Ok(Some(Frame::Oversize));
                }
                return Ok(if buf.is_empty() {
                    None
                } else {
                    Some(Frame::Line(buf))
                });
            }
            let newline = available.iter().position(|&b| b == b'\n');
            let chunk = &available[..newline.unwrap_or(available.len())];
            if !oversize {
                if buf.len() + chunk.len() > self.max {
                    oversize = true;
                    buf = Vec::new();
                } else {
                    buf.extend_from_slice(chunk);
                }
            }
            let consumed = newline.map_or(available.len(), |i| i + 1);
            self.inner.consume(consumed);
            if newline.is_some() {
                if oversize {
                    return Ok(Some(Frame::Oversize));
                }
                if buf.last() == Some(&b'\r') {
                    buf.pop();
                }
                if buf.is_empty() {
                    continue;
                }
                return Ok(Some(Frame::Line(buf)));
            }
        }
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn test_chunks_and_responses_are_told_apart_and_chunks_round_trip() {
        let bytes: Vec<u8> = (0..=255).collect();
        let chunk = Chunk::new(Value::from(7), "stdout", &bytes);
        let line = chunk.to_line();
        match Incoming::parse(&line[..line.len() - 1]).unwrap() {
            Incoming::Chunk(c) => {
                assert_eq!(c.id, Value::from(7));
                assert_eq!(c.chunk.stream, "stdout");
                assert_eq!(c.bytes().unwrap(), bytes);
            }
            other @ Incoming::Response(_) => panic!("{other:?}"),
        }
        let full = Chunk::new(Value::from(1), "x", &vec![0xff; MAX_CHUNK_BYTES]).to_line();
        assert!(full.len() < MAX_FRAME_BYTES, "a full chunk fits a frame");
        let resp = Response::ok(Value::from(7), Value::from("done")).to_line();
        assert!(matches!(
            Incoming::parse(&resp[..resp.len() - 1]).unwrap(),
            Incoming::Response(_)
        ));
    }
    use proptest::prelude::*;

    use super::*;

    fn frames(input: &[u8], max: usize) -> Vec<Frame> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(async {
            let mut reader = FrameReader::with_max(input, max);
            let mut out = Vec::new();
            while let Some(f) = reader.next_frame().await.unwrap() {
                out.push(f);
            }
            out
        })
    }

    #[test]
    fn test_frame_reader_splits_lines_and_skips_empty() {
        let got = frames(b"a\n\n b\r\nlast", 16);
        assert_eq!(
            got,
            vec![
                Frame::Line(b"a".to_vec()),
                Frame::Line(b" b".to_vec()),
                Frame::Line(b"last".to_vec())
            ]
        );
    }

    #[test]
    fn test_frame_reader_oversize_line_is_skipped_and_next_line_reads() {
        let mut input = vec![b'x'; 40];
        input.extend_from_slice(b"\nok\n");
        assert_eq!(
            frames(&input, 16),
            vec![Frame::Oversize, Frame::Line(b"ok".to_vec())]
        );
    }

    proptest! {
        #[test]
        fn prop_frame_reader_yields_each_nonempty_line(lines in proptest::collection::vec("[a-z{}\":0-9 ]{0,40}", 0..20)) {
            let mut input = Vec::new();
            for l in &lines {
                input.extend_from_slice(l.as_bytes());
                input.push(b'\n');
            }
            let expected: Vec<Frame> = lines
                .iter()
                .map(|l| if l.len() > 24 { Frame::Oversize } else { Frame::Line(l.as_bytes().to_vec()) })
                .filter(|f| f != &Frame::Line(Vec::new()))
                .collect();
            prop_assert_eq!(frames(&input, 24), expected);
        }
    }
}
