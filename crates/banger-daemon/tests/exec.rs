//! `vm.exec` over the real socket with a fake agent (echoes stdin, exits with its last
//! argument, dies of a signal it is sent): stdin in and stdout/stderr out at once, byte-exact
//! and unbounded in total; signals; timeouts; no agent → `unsupported`; the VM's lock is free
//! while a command runs.
#![allow(
    clippy::tests_outside_test_module,
    clippy::unwrap_used,
    clippy::expect_used
)]

use std::time::{Duration, Instant};

use banger_api::methods::{VmExec, VmShow};
use banger_api::types::{VmExecParams, VmExecResult, VmRef};
use banger_api::{Client, ClientError, ErrorCode};
use banger_testkit::daemon::{Served, TestBed, create_vm, small_config};
use tokio::sync::mpsc;

async fn served(agent: Option<u32>) -> Served {
    let bed = TestBed::new(small_config()).unwrap();
    *bed.guest.agent.lock().unwrap() = agent;
    let s = banger_testkit::daemon::served(bed).await.unwrap();
    create_vm(&s.bed.daemon, "x", false).await.unwrap();
    s
}

fn params(argv: &[&str]) -> VmExecParams {
    VmExecParams {
        name: "x".into(),
        argv: argv.iter().map(|s| (*s).to_owned()).collect(),
        stdin: true,
        ..VmExecParams::default()
    }
}

type Input = mpsc::Sender<(&'static str, Vec<u8>)>;

/// Runs an exec; `feed` gets the input sender. Returns (stdout, stderr, result).
async fn exec(
    s: &Served,
    p: VmExecParams,
    feed: impl FnOnce(Input) + Send + 'static,
) -> (Vec<u8>, Vec<u8>, Result<VmExecResult, ClientError>) {
    let mut client = Client::connect(&s.socket).await.unwrap();
    let (tx, rx) = mpsc::channel(4);
    tokio::spawn(async move { feed(tx) });
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let r = client
        .call_duplex::<VmExec>(&p, rx, &mut |stream, bytes| {
            match stream {
                "stdout" => out.extend_from_slice(bytes),
                "stderr" => err.extend_from_slice(bytes),
                other => panic!("stream {other}"),
            }
            Ok(())
        })
        .await;
    (out, err, r)
}

#[tokio::test(flavor = "multi_thread")]
async fn exec_streams_both_ways_byte_exact_with_exit_codes() {
    let s = served(Some(2)).await;
    // 5 MB in while it comes back out: neither direction may wait for the other.
    let data: Vec<u8> = (0..5_000_000u32).map(|i| (i * 7 % 256) as u8).collect();
    let sent = data.clone();
    let (out, err, r) = exec(&s, params(&["fake", "7"]), move |tx| {
        tokio::spawn(async move {
            for piece in sent.chunks(100_000) {
                tx.send(("stdin", piece.to_vec())).await.unwrap();
            }
            tx.send(("stdin_close", Vec::new())).await.unwrap();
        });
    })
    .await;
    let r = r.unwrap();
    assert_eq!(out.len(), data.len());
    assert!(out == data, "stdout differs from stdin");
    assert_eq!(err, b"fake 7", "stderr kept apart");
    assert_eq!((r.exit_code, r.signal, r.timed_out), (Some(7), None, false));
    let spec = s.bed.guest.exec_specs.lock().unwrap()[0].clone();
    assert_eq!(spec.cwd.as_deref(), Some("/root"), "no workspace: /root");
    // Without stdin the command reads end of file at once.
    let mut p = params(&["fake", "0"]);
    p.stdin = false;
    let (out, _, r) = exec(&s, p, drop).await;
    assert!(out.is_empty());
    assert_eq!(r.unwrap().exit_code, Some(0));
}

#[tokio::test(flavor = "multi_thread")]
async fn signals_reach_the_command_and_a_timeout_kills_it() {
    let s = served(Some(2)).await;
    let (_, _, r) = exec(&s, params(&["fake"]), |tx| {
        tokio::spawn(async move {
            tx.send(("stdin", b"x".to_vec())).await.unwrap();
            tx.send(("signal", b"2".to_vec())).await.unwrap();
            // Keep stdin open: only the signal ends it.
            tokio::time::sleep(Duration::from_secs(30)).await;
        });
    })
    .await;
    let r = r.unwrap();
    assert_eq!((r.exit_code, r.signal), (None, Some(2)));
    assert_eq!(r.shell_code(), 130);
    let mut p = params(&["fake"]);
    p.timeout_secs = Some(1);
    let started = Instant::now();
    let (_, _, r) = exec(&s, p, |tx| {
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(30)).await;
            drop(tx);
        });
    })
    .await;
    let r = r.unwrap();
    assert!(r.timed_out);
    assert_eq!(r.signal, Some(9));
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_running_command_holds_no_lock_and_no_agent_is_unsupported() {
    let s = served(Some(2)).await;
    let (tx, rx) = mpsc::channel(4);
    let socket = s.socket.clone();
    let running = tokio::spawn(async move {
        let mut client = Client::connect(&socket).await.unwrap();
        client
            .call_duplex::<VmExec>(&params(&["fake"]), rx, &mut |_, _| Ok(()))
            .await
    });
    tx.send(("stdin", b"x".to_vec())).await.unwrap();
    while s.bed.guest.exec_specs.lock().unwrap().is_empty() {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // The VM's lock is free while the command runs.
    let mut other = Client::connect(&s.socket).await.unwrap();
    let started = Instant::now();
    other
        .call::<VmShow>(&VmRef { name: "x".into() })
        .await
        .unwrap();
    assert!(started.elapsed() < Duration::from_secs(1));
    tx.send(("stdin_close", Vec::new())).await.unwrap();
    assert_eq!(running.await.unwrap().unwrap().exit_code, Some(0));

    // Bad params change nothing and say why.
    let (_, _, r) = exec(&s, params(&[]), drop).await;
    let ClientError::Rpc(e) = r.unwrap_err() else {
        panic!()
    };
    assert_eq!(e.kind(), ErrorCode::BadRequest, "{e}");

    let s = served(Some(1)).await;
    let (_, _, r) = exec(&s, params(&["true"]), drop).await;
    let ClientError::Rpc(e) = r.unwrap_err() else {
        panic!()
    };
    assert_eq!(e.kind(), ErrorCode::Unsupported, "{e}");
    assert!(e.message.contains("protocol 1"), "{e}");
    let s = served(None).await;
    let (_, _, r) = exec(&s, params(&["true"]), drop).await;
    let ClientError::Rpc(e) = r.unwrap_err() else {
        panic!()
    };
    assert_eq!(e.kind(), ErrorCode::Unsupported, "{e}");
    assert!(e.data.hint.unwrap().contains("vm ssh"));
}
