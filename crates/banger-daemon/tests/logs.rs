//! `vm.logs` over the real socket: any size in chunks, `tail`, `follow` until the VM stops,
//! and a client that goes away cancels the request.
#![allow(
    clippy::tests_outside_test_module,
    clippy::unwrap_used,
    clippy::expect_used
)]

use std::time::{Duration, Instant};

use banger_api::Client;
use banger_api::methods::VmLogsGet;
use banger_api::types::{LogSource, VmLogsParams};
use banger_daemon::services::Lifecycle;
use banger_testkit::daemon::{Served, TestBed, create_vm, small_config};

async fn served() -> Served {
    banger_testkit::daemon::served(TestBed::new(small_config()).unwrap())
        .await
        .unwrap()
}

fn params(name: &str) -> VmLogsParams {
    VmLogsParams {
        name: name.into(),
        ..Default::default()
    }
}

/// Pseudo-random printable lines, `n` bytes or a little more.
fn text(n: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(n + 80);
    let mut x = 0x9e37_79b9_u32;
    while out.len() < n {
        for _ in 0..60 {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            out.push(b'a' + (x % 26) as u8);
        }
        out.push(b'\n');
    }
    out
}

async fn collect(client: &mut Client, p: VmLogsParams) -> (Vec<u8>, u64, usize) {
    let mut got = Vec::new();
    let mut chunks = 0;
    let result = client
        .call_streaming::<VmLogsGet>(&p, &mut |stream, bytes| {
            assert_eq!(stream, p.source.as_str());
            chunks += 1;
            got.extend_from_slice(bytes);
            Ok(())
        })
        .await
        .unwrap();
    (got, result.bytes, chunks)
}

#[tokio::test(flavor = "multi_thread")]
async fn logs_of_any_size_stream_in_chunks_with_tail() {
    let s = served().await;
    let vm = create_vm(&s.bed.daemon, "big", false).await.unwrap();
    let dir = s.bed.daemon.infra.layout.vms_dir().join(&vm.id);
    let console = text(3 << 20);
    std::fs::write(dir.join("console.log"), &console).unwrap();
    std::fs::write(dir.join("vmm.log"), b"vmm says hi\n").unwrap();
    let mut client = Client::connect(&s.socket).await.unwrap();
    let (got, bytes, chunks) = collect(&mut client, params("big")).await;
    assert_eq!(got.len(), console.len(), "3 MiB through a 1 MiB frame cap");
    assert!(got == console, "byte-exact");
    assert_eq!(bytes, console.len() as u64);
    assert!(chunks >= 12, "{chunks} chunks of at most 256 KiB");
    let tail = VmLogsParams {
        tail: Some(2),
        ..params("big")
    };
    let (got, _, _) = collect(&mut client, tail).await;
    let lines: Vec<&[u8]> = console.split(|b| *b == b'\n').collect();
    let expected = [lines[lines.len() - 3], b"\n", lines[lines.len() - 2], b"\n"].concat();
    assert_eq!(got, expected);
    let vmm = VmLogsParams {
        source: LogSource::Vmm,
        ..params("big")
    };
    assert_eq!(collect(&mut client, vmm).await.0, b"vmm says hi\n");
    // The connection is still usable for plain calls afterwards.
    let list = client
        .call::<banger_api::methods::VmList>(&banger_api::types::Empty {})
        .await
        .unwrap();
    assert_eq!(list.vms.len(), 1);
    let err = collect_err(&mut client, params("nope")).await;
    assert_eq!(err.kind(), banger_api::ErrorCode::NotFound);
    s.bed
        .daemon
        .services
        .vm
        .lifecycle("big", Lifecycle::Delete)
        .await
        .unwrap();
}

async fn collect_err(client: &mut Client, p: VmLogsParams) -> banger_api::RpcError {
    match client
        .call_streaming::<VmLogsGet>(&p, &mut |_, _| Ok(()))
        .await
    {
        Err(banger_api::ClientError::Rpc(e)) => e,
        other => panic!("expected an rpc error, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn follow_streams_appended_lines_until_the_vm_stops() {
    let s = served().await;
    let vm = create_vm(&s.bed.daemon, "f", false).await.unwrap();
    let log = s
        .bed
        .daemon
        .infra
        .layout
        .vms_dir()
        .join(&vm.id)
        .join("console.log");
    std::fs::write(&log, b"booted\n").unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<Vec<u8>>();
    let socket = s.socket.clone();
    let follower = tokio::spawn(async move {
        let mut client = Client::connect(&socket).await.unwrap();
        let p = VmLogsParams {
            follow: true,
            ..params("f")
        };
        client
            .call_streaming::<VmLogsGet>(&p, &mut |_, bytes| {
                let _ = tx.send(bytes.to_vec());
                Ok(())
            })
            .await
            .unwrap()
    });
    let wait_for = |want: &[u8]| {
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut got = Vec::new();
        while !got.ends_with(want) {
            let left = deadline.saturating_duration_since(Instant::now());
            got.extend(rx.recv_timeout(left).expect("the followed bytes arrive"));
        }
        got
    };
    assert_eq!(wait_for(b"booted\n"), b"booted\n");
    use std::io::Write as _;
    std::fs::OpenOptions::new()
        .append(true)
        .open(&log)
        .unwrap()
        .write_all(b"more\n")
        .unwrap();
    assert_eq!(wait_for(b"more\n"), b"more\n");
    // Stopping the VM ends the stream.
    s.bed
        .daemon
        .services
        .vm
        .lifecycle("f", Lifecycle::Stop)
        .await
        .unwrap();
    let done = tokio::time::timeout(Duration::from_secs(10), follower)
        .await
        .expect("follow ends when the vm stops")
        .unwrap();
    assert_eq!(done.bytes, 12);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_follower_that_goes_away_cancels_the_request() {
    let s = served().await;
    create_vm(&s.bed.daemon, "g", false).await.unwrap();
    let socket = s.socket.clone();
    let follower = tokio::spawn(async move {
        let mut client = Client::connect(&socket).await.unwrap();
        let p = VmLogsParams {
            follow: true,
            ..params("g")
        };
        client
            .call_streaming::<VmLogsGet>(&p, &mut |_, _| Ok(()))
            .await
    });
    let ops = &s.bed.daemon.ops;
    let busy = |want: bool| async move {
        let deadline = Instant::now() + Duration::from_secs(10);
        while ops.list().iter().any(|o| o.kind == "vm.logs") != want {
            assert!(Instant::now() < deadline, "vm.logs in flight: {want}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    busy(true).await;
    follower.abort();
    // The client's socket closes; the daemon notices and drops the request.
    busy(false).await;
    s.bed
        .daemon
        .services
        .vm
        .lifecycle("g", Lifecycle::Delete)
        .await
        .unwrap();
}
