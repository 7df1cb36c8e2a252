//! The `.vm` DNS server on loopback (UDP), 100 records:
//! - `dns/sequential`: one query in flight (latency; queries/s = 1 / time);
//! - `dns/pipelined`: 256 queries over 8 sockets with 32 in flight each (throughput, reported
//!   as elements/s = queries/s).
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;

use banger_daemon::dns::{DnsRecords, serve};
use banger_testkit::dns::{decode_reply, encode_query};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use hickory_proto::rr::RecordType;
use tokio::net::UdpSocket;
use tokio_util::sync::CancellationToken;

async fn ask(sock: &UdpSocket, id: u16, name: &str, buf: &mut [u8]) {
    sock.send(&encode_query(id, name, RecordType::A).unwrap())
        .await
        .unwrap();
    let n = sock.recv(buf).await.unwrap();
    assert_eq!(decode_reply(&buf[..n]).unwrap().addrs.len(), 1);
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let records = Arc::new(DnsRecords::default());
    for i in 0..100u8 {
        records.set(&format!("vm{i}"), Ipv4Addr::new(172, 16, 0, 2 + i));
    }
    let stop = CancellationToken::new();
    let addr: SocketAddr = rt
        .block_on(serve("127.0.0.1:0".parse().unwrap(), records, stop.clone()))
        .unwrap();
    let sock = rt.block_on(async {
        let s = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        s.connect(addr).await.unwrap();
        s
    });
    let mut g = c.benchmark_group("dns");
    let mut buf = vec![0u8; 1500];
    let mut id = 0u16;
    g.bench_function("sequential", |b| {
        b.iter(|| {
            id = id.wrapping_add(1);
            rt.block_on(ask(&sock, id, &format!("vm{}.vm.", id % 100), &mut buf));
        });
    });
    let socks: Vec<Arc<UdpSocket>> = rt.block_on(async {
        let mut v = Vec::new();
        for _ in 0..8 {
            let s = UdpSocket::bind("127.0.0.1:0").await.unwrap();
            s.connect(addr).await.unwrap();
            v.push(Arc::new(s));
        }
        v
    });
    g.throughput(Throughput::Elements(256));
    g.bench_function("pipelined", |b| {
        b.iter(|| {
            rt.block_on(async {
                let tasks = socks.iter().map(|s| {
                    let s = Arc::clone(s);
                    tokio::spawn(async move {
                        for i in 0..32u16 {
                            s.send(&encode_query(i, &format!("vm{i}.vm."), RecordType::A).unwrap())
                                .await
                                .unwrap();
                        }
                        let mut buf = vec![0u8; 1500];
                        for _ in 0..32 {
                            s.recv(&mut buf).await.unwrap();
                        }
                    })
                });
                for t in tasks {
                    t.await.unwrap();
                }
            });
        });
    });
    g.finish();
    stop.cancel();
}

criterion_group!(benches, bench);
criterion_main!(benches);
