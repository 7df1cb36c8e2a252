//! The producing side of a streamed result: a handler writes bytes to a [`StreamOut`]; the
//! server sends them as chunk frames before the final response (`banger_api::frame`). The
//! queue between them is bounded, so a slow client slows the producer and memory stays
//! bounded; a client that went away makes every send fail, which stops the producer.

use banger_api::frame::MAX_CHUNK_BYTES;
use tokio::sync::mpsc;

/// Chunks queued between a producer and the socket writer (each ≤ 256 KiB).
pub const QUEUE_CHUNKS: usize = 4;

/// The receiver of a stream went away (the client disconnected).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the client went away")]
pub struct StreamClosed;

/// Where a handler writes its streamed output. A request that does not stream never sees
/// one used; [`StreamOut::discard`] is a sink for callers without a client (tests, internal).
#[derive(Debug, Clone)]
pub struct StreamOut {
    tx: Option<mpsc::Sender<(&'static str, Vec<u8>)>>,
}

impl StreamOut {
    /// A stream out and the receiver the server drains.
    pub fn channel() -> (Self, mpsc::Receiver<(&'static str, Vec<u8>)>) {
        let (tx, rx) = mpsc::channel(QUEUE_CHUNKS);
        (StreamOut { tx: Some(tx) }, rx)
    }

    /// A stream whose bytes go nowhere.
    pub fn discard() -> Self {
        StreamOut { tx: None }
    }

    /// Sends `bytes` on `stream`, split into chunks; waits while the queue is full.
    pub async fn send(&self, stream: &'static str, bytes: &[u8]) -> Result<(), StreamClosed> {
        let Some(tx) = &self.tx else {
            return Ok(());
        };
        for piece in bytes.chunks(MAX_CHUNK_BYTES) {
            tx.send((stream, piece.to_vec()))
                .await
                .map_err(|_| StreamClosed)?;
        }
        Ok(())
    }

    /// Like [`StreamOut::send`], from a blocking thread (never from the async runtime).
    pub fn send_blocking(&self, stream: &'static str, bytes: &[u8]) -> Result<(), StreamClosed> {
        let Some(tx) = &self.tx else {
            return Ok(());
        };
        for piece in bytes.chunks(MAX_CHUNK_BYTES) {
            tx.blocking_send((stream, piece.to_vec()))
                .map_err(|_| StreamClosed)?;
        }
        Ok(())
    }

    /// Resolves when the receiver is gone (never for a discarding stream).
    pub async fn closed(&self) {
        match &self.tx {
            Some(tx) => tx.closed().await,
            None => std::future::pending().await,
        }
    }
}

/// What a client sends during a duplex request ([`banger_api::methods::DUPLEX`]): chunks
/// (stream name, bytes), read off the socket only as fast as the handler takes them.
#[derive(Debug)]
pub struct StreamIn {
    rx: Option<mpsc::Receiver<(String, Vec<u8>)>>,
}

impl StreamIn {
    /// A stream in and the sender the server fills.
    pub fn channel() -> (mpsc::Sender<(String, Vec<u8>)>, Self) {
        let (tx, rx) = mpsc::channel(QUEUE_CHUNKS);
        (tx, StreamIn { rx: Some(rx) })
    }

    /// A stream that never yields (requests that are not duplex, internal callers).
    pub fn none() -> Self {
        StreamIn { rx: None }
    }

    /// The next chunk; `None` once the client can send no more (never, for
    /// [`StreamIn::none`], whose `recv` stays pending).
    pub async fn recv(&mut self) -> Option<(String, Vec<u8>)> {
        match &mut self.rx {
            Some(rx) => rx.recv().await,
            None => std::future::pending().await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn test_big_sends_are_chunked_and_a_gone_receiver_stops_the_producer() {
        let (out, mut rx) = StreamOut::channel();
        let data = vec![7u8; MAX_CHUNK_BYTES * 2 + 5];
        let producer = tokio::spawn({
            let out = out.clone();
            async move { out.send("x", &data).await }
        });
        let mut sizes = Vec::new();
        for _ in 0..3 {
            let (name, bytes) = rx.recv().await.unwrap();
            assert_eq!(name, "x");
            sizes.push(bytes.len());
        }
        assert_eq!(sizes, [MAX_CHUNK_BYTES, MAX_CHUNK_BYTES, 5]);
        producer.await.unwrap().unwrap();
        drop(rx);
        assert_eq!(out.send("x", b"more").await, Err(StreamClosed));
        out.closed().await;
        assert!(StreamOut::discard().send("x", b"y").await.is_ok());
    }
}
