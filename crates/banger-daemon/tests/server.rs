//! The socket server against hostile clients: half-sent frames never block others and are
//! closed after the idle timeout.
#![allow(
    clippy::tests_outside_test_module,
    clippy::unwrap_used,
    clippy::expect_used
)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use banger_api::Client;
use banger_api::methods::Ping;
use banger_api::types::Empty;
use banger_config::Config;
use banger_daemon::{bind_socket, serve};
use banger_testkit::daemon::{TestBed, small_config};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

#[tokio::test(flavor = "multi_thread")]
async fn stalled_half_frames_do_not_block_others_and_are_closed_when_idle() {
    let bed = TestBed::new(Config {
        rpc_idle_timeout_secs: 1,
        ..small_config()
    })
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("d.sock");
    let listener = bind_socket(&socket).await.unwrap();
    tokio::spawn(serve(Arc::clone(&bed.daemon), listener));
    let mut stalled = Vec::new();
    for _ in 0..100 {
        let mut s = tokio::net::UnixStream::connect(&socket).await.unwrap();
        s.write_all(br#"{"jsonrpc":"2.0","id":1,"meth"#)
            .await
            .unwrap();
        stalled.push(s);
    }
    let mut client = Client::connect(&socket).await.unwrap();
    let mut worst = Duration::ZERO;
    for _ in 0..20 {
        let t = Instant::now();
        client.call::<Ping>(&Empty {}).await.unwrap();
        worst = worst.max(t.elapsed());
    }
    eprintln!("ping with 100 stalled clients: worst of 20 {worst:?}");
    assert!(worst < Duration::from_millis(500), "ping took {worst:?}");
    // Each stalled connection is closed by the daemon (EOF) after the idle timeout.
    let deadline = Instant::now() + Duration::from_secs(10);
    for s in &mut stalled {
        let mut buf = [0u8; 64];
        let left = deadline.saturating_duration_since(Instant::now());
        let n = tokio::time::timeout(left, s.read(&mut buf))
            .await
            .expect("closed within the idle timeout")
            .unwrap_or(0);
        assert_eq!(n, 0, "closed without an answer to half a frame");
    }
    // The daemon keeps serving new clients.
    let mut again = Client::connect(&socket).await.unwrap();
    again.call::<Ping>(&Empty {}).await.unwrap();
}
