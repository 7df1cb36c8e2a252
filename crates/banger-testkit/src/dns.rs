//! A tiny DNS query client for tests and benches of bangerd's `.vm` server.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::{Name, RData, RecordType};

/// What a query got back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// The response code.
    pub code: ResponseCode,
    /// A records in the answer section.
    pub addrs: Vec<Ipv4Addr>,
    /// The AA flag.
    pub authoritative: bool,
}

/// Encodes an A (or other) query for `name` with `id`.
pub fn encode_query(id: u16, name: &str, qtype: RecordType) -> std::io::Result<Vec<u8>> {
    let invalid = |e: hickory_proto::ProtoError| {
        std::io::Error::new(std::io::ErrorKind::InvalidInput, e.to_string())
    };
    let mut msg = hickory_proto::op::Message::query();
    msg.metadata.id = id;
    msg.metadata.recursion_desired = true;
    msg.add_query(hickory_proto::op::Query::query(
        Name::from_ascii(name).map_err(invalid)?,
        qtype,
    ));
    msg.to_vec().map_err(invalid)
}

/// Decodes a reply.
pub fn decode_reply(bytes: &[u8]) -> std::io::Result<Reply> {
    let msg = hickory_proto::op::Message::from_vec(bytes)
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e.to_string()))?;
    Ok(Reply {
        code: msg.metadata.response_code,
        addrs: msg
            .answers
            .iter()
            .filter_map(|r| match &r.data {
                RData::A(a) => Some(a.0),
                _ => None,
            })
            .collect(),
        authoritative: msg.metadata.authoritative,
    })
}

/// One UDP query to `server`, waiting at most `timeout`.
pub async fn query_udp(
    server: SocketAddr,
    name: &str,
    qtype: RecordType,
    timeout: Duration,
) -> std::io::Result<Reply> {
    let sock = tokio::net::UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).await?;
    sock.connect(server).await?;
    let id = (std::process::id() as u16) ^ 0x5a5a;
    sock.send(&encode_query(id, name, qtype)?).await?;
    let mut buf = vec![0u8; 1500];
    let n = tokio::time::timeout(timeout, sock.recv(&mut buf))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "no dns reply"))??;
    decode_reply(&buf[..n])
}
