//! bangerd's `.vm` DNS server over real UDP and TCP sockets, queried with the testkit's
//! client.

use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Duration;

use banger_daemon::dns::{DnsRecords, serve};
use banger_testkit::dns::{decode_reply, encode_query, query_udp};
use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;
use tokio_util::sync::CancellationToken;

#[tokio::test]
async fn test_server_answers_over_udp_and_tcp() {
    let records = Arc::new(DnsRecords::default());
    records.set("web", Ipv4Addr::new(172, 16, 0, 9));
    let stop = CancellationToken::new();
    let addr = serve(
        "127.0.0.1:0".parse().unwrap(),
        Arc::clone(&records),
        stop.clone(),
    )
    .await
    .unwrap();
    let t = Duration::from_secs(5);
    let r = query_udp(addr, "web.vm.", RecordType::A, t).await.unwrap();
    assert_eq!(r.code, ResponseCode::NoError);
    assert_eq!(r.addrs, [Ipv4Addr::new(172, 16, 0, 9)]);
    assert!(r.authoritative);
    let r = query_udp(addr, "nope.vm.", RecordType::A, t).await.unwrap();
    assert_eq!(r.code, ResponseCode::NXDomain);
    let r = query_udp(addr, "example.com.", RecordType::A, t)
        .await
        .unwrap();
    assert_eq!(r.code, ResponseCode::Refused);
    assert!(r.addrs.is_empty());
    // TCP: two-byte length prefix, same answer.
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let q = encode_query(7, "web.vm.", RecordType::A).unwrap();
    tcp.write_all(&(q.len() as u16).to_be_bytes())
        .await
        .unwrap();
    tcp.write_all(&q).await.unwrap();
    let len = tcp.read_u16().await.unwrap();
    let mut buf = vec![0; usize::from(len)];
    tcp.read_exact(&mut buf).await.unwrap();
    assert_eq!(
        decode_reply(&buf).unwrap().addrs,
        [Ipv4Addr::new(172, 16, 0, 9)]
    );
    stop.cancel();
}
