//! Control-plane tests of VM create/stop/delete with recording fakes: every failing create
//! step leaves nothing behind and names the step; bad input creates nothing; cancel undoes.
#![allow(
    clippy::tests_outside_test_module,
    clippy::unwrap_used,
    clippy::expect_used
)]

use std::sync::Arc;
use std::time::Duration;

use banger_api::ErrorCode;
use banger_api::types::{StageState, VmCreateParams, VmState};
use banger_config::Config;
use banger_daemon::progress::Progress;
use banger_daemon::services::Lifecycle;
use banger_host::guest::FakeReadiness;
use banger_testkit::daemon::{TestBed, Wire, small_config};

fn config() -> Config {
    small_config()
}

fn params(name: &str) -> VmCreateParams {
    VmCreateParams {
        name: Some(name.into()),
        ..Default::default()
    }
}

async fn create(
    bed: &TestBed,
    p: VmCreateParams,
) -> Result<banger_api::types::VmInfo, banger_api::RpcError> {
    bed.daemon
        .services
        .vm
        .create(p, &Arc::new(Progress::default()))
        .await
        .wire()
}

#[tokio::test(flavor = "multi_thread")]
async fn create_runs_every_stage_then_delete_leaves_nothing() {
    let bed = TestBed::new(config()).unwrap();
    let progress = Arc::new(Progress::default());
    let vm = bed
        .daemon
        .services
        .vm
        .create(params("web"), &progress)
        .await
        .unwrap();
    assert_eq!(vm.state, VmState::Running);
    assert_eq!(vm.vmm.as_deref(), Some("fake"));
    assert_eq!(
        progress.stage_names(),
        [
            "image",
            "reserve",
            "system disk",
            "guest config",
            "work disk",
            "network",
            "vmm",
            "boot"
        ]
    );
    let sources = vm.sizing_sources.unwrap();
    assert_eq!(sources.vcpu, banger_api::types::ValueSource::Config);
    assert_eq!(bed.privileged.taps().len(), 1);
    let launched = bed.vmm.launches.lock().unwrap().clone();
    assert_eq!(launched.len(), 1);
    assert_eq!(launched[0].drives.len(), 2);
    assert!(launched[0].drives[0].path.exists(), "system disk exists");
    // The guest config landed in the system disk.
    let out = std::process::Command::new("debugfs")
        .args(["-R", "cat /etc/hostname"])
        .arg(&launched[0].drives[0].path)
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "web");

    let outcomes = bed
        .daemon
        .services
        .vm
        .lifecycle_many(&["web".into()], Lifecycle::Delete)
        .await;
    let outcomes = banger_daemon::edge::vm_outcomes(outcomes);
    assert!(outcomes[0].error.is_none(), "{:?}", outcomes[0].error);
    assert_eq!(
        bed.guest.poweroffs.lock().unwrap().len(),
        1,
        "stop asked the guest first"
    );
    assert_eq!(bed.leftovers(), Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failure_at_each_create_step_leaves_nothing_and_names_the_step() {
    let bed = TestBed::new(config()).unwrap();
    // First a good create/delete, so the managed ssh key exists and the cases below fail
    // in the step under test, not in key creation.
    create(&bed, params("warm")).await.unwrap();
    bed.daemon
        .services
        .vm
        .lifecycle_many(&["warm".into()], Lifecycle::Delete)
        .await;
    assert!(bed.leftovers().is_empty());

    type Inject = fn(&TestBed, bool);
    let cases: &[(&str, Inject)] = &[
        ("system disk", |b, on| b.fail(on.then_some("cp"))),
        ("host key", |b, on| b.fail(on.then_some("ssh-keygen"))),
        ("guest config", |b, on| b.fail(on.then_some("debugfs"))),
        ("work disk", |b, on| b.fail(on.then_some("mkfs.ext4"))),
        ("tap", |b, on| {
            *b.privileged.fail.lock().unwrap() = on.then_some("create_tap");
        }),
        ("vmm spawn", |b, on| {
            *b.vmm.fail.lock().unwrap() = on.then(|| "no vmm today".to_owned());
        }),
        ("boot timeout", |b, on| {
            *b.guest.readiness.lock().unwrap() = if on {
                FakeReadiness::Never
            } else {
                FakeReadiness::Ready
            };
        }),
    ];
    for (step, inject) in cases {
        inject(&bed, true);
        let err = create(&bed, params("doomed")).await.wire().unwrap_err();
        inject(&bed, false);
        assert_eq!(err.kind(), ErrorCode::OperationFailed, "{step}: {err:?}");
        assert!(
            err.message.starts_with(&format!("{step}: ")),
            "{step}: {}",
            err.message
        );
        assert_eq!(
            bed.leftovers(),
            Vec::<String>::new(),
            "after failing {step}"
        );
    }
    // And the name is free again.
    create(&bed, params("doomed")).await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_input_fails_before_anything_is_created() {
    let bed = TestBed::new(config()).unwrap();
    create(&bed, params("taken")).await.unwrap();
    let before = bed.leftovers();
    let runs = bed.runner.calls().len();
    let priv_calls = bed.privileged.calls.lock().unwrap().len();
    let launches = bed.vmm.launches.lock().unwrap().len();
    let cases = [
        (
            VmCreateParams {
                vcpu: Some(0),
                ..params("a")
            },
            ErrorCode::BadRequest,
            "--vcpu",
        ),
        (
            VmCreateParams {
                memory_mib: Some(1),
                ..params("a")
            },
            ErrorCode::BadRequest,
            "--memory",
        ),
        (
            VmCreateParams {
                disk_size: Some("huge".into()),
                ..params("a")
            },
            ErrorCode::BadRequest,
            "size",
        ),
        (params("Bad_Name"), ErrorCode::BadRequest, "invalid vm name"),
        (params("-x"), ErrorCode::BadRequest, "invalid vm name"),
        (params("taken"), ErrorCode::AlreadyExists, "already exists"),
        (
            VmCreateParams {
                image: Some("nosuch".into()),
                ..params("a")
            },
            ErrorCode::NotFound,
            "nosuch",
        ),
    ];
    for (p, kind, text) in cases {
        let err = create(&bed, p.clone()).await.wire().unwrap_err();
        assert_eq!(err.kind(), kind, "{p:?}: {err:?}");
        assert!(err.message.contains(text), "{p:?}: {}", err.message);
        assert!(err.data.hint.is_some(), "{p:?} has a hint");
    }
    assert_eq!(bed.leftovers(), before);
    assert_eq!(bed.runner.calls().len(), runs, "no host command ran");
    assert_eq!(bed.privileged.calls.lock().unwrap().len(), priv_calls);
    assert_eq!(bed.vmm.launches.lock().unwrap().len(), launches);
}

#[tokio::test(flavor = "multi_thread")]
async fn cancelling_an_async_create_during_boot_undoes_everything() {
    let bed = TestBed::new(Config {
        boot_timeout_secs: 60,
        ..config()
    })
    .unwrap();
    *bed.guest.readiness.lock().unwrap() = FakeReadiness::Never;
    let vm = &bed.daemon.services.vm;
    let begun = vm.begin_create(params("slow"), &bed.daemon.ops);
    assert_eq!(bed.daemon.ops.list().len(), 1, "listed as in flight");
    let mut seen = 0;
    loop {
        let st = vm
            .create_status(&begun.op_id, seen, Duration::from_secs(5))
            .await
            .unwrap();
        seen = st.events;
        if st.stages.last().is_some_and(|s| s.name == "boot") {
            break;
        }
        assert!(!st.done, "create ended early: {:?}", st.error);
    }
    vm.create_cancel(&begun.op_id).unwrap();
    let st = loop {
        let st = vm
            .create_status(&begun.op_id, seen, Duration::from_secs(5))
            .await
            .unwrap();
        seen = st.events;
        if st.done {
            break st;
        }
    };
    assert_eq!(st.error.unwrap().kind(), ErrorCode::Cancelled);
    assert_eq!(st.stages.last().unwrap().state, StageState::Failed);
    assert_eq!(bed.leftovers(), Vec::<String>::new());
    assert!(bed.daemon.ops.list().is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_creates_get_distinct_ips_and_taps() {
    let bed = TestBed::new(config()).unwrap();
    let futs = (0..20).map(|i| create(&bed, params(&format!("vm-{i}"))));
    let vms: Vec<_> = futures::future::join_all(futs)
        .await
        .into_iter()
        .collect::<Result<_, _>>()
        .unwrap();
    let ips: std::collections::BTreeSet<_> = vms.iter().map(|v| v.guest_ip.clone()).collect();
    assert_eq!(ips.len(), 20);
    assert_eq!(bed.privileged.taps().len(), 20);
    let names: Vec<String> = vms.iter().map(|v| v.name.clone()).collect();
    let out = bed
        .daemon
        .services
        .vm
        .lifecycle_many(&names, Lifecycle::Delete)
        .await;
    let out = banger_daemon::edge::vm_outcomes(out);
    assert!(out.iter().all(|o| o.error.is_none()));
    assert_eq!(bed.leftovers(), Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread")]
async fn stop_keeps_disks_and_start_boots_them_again() {
    let bed = TestBed::new(config()).unwrap();
    let vm = create(&bed, params("keep")).await.unwrap();
    let s = &bed.daemon.services.vm;
    let out = s.lifecycle("keep", Lifecycle::Stop).await.unwrap();
    assert_eq!(out.state, VmState::Stopped);
    assert!(bed.privileged.taps().is_empty(), "stop removes the tap");
    let work = bed
        .daemon
        .infra
        .layout
        .vms_dir()
        .join(&vm.id)
        .join("work.ext4");
    assert!(work.exists(), "stop keeps the work disk");
    let out = s.lifecycle("keep", Lifecycle::Start).await.unwrap();
    assert_eq!(out.state, VmState::Running);
    assert_eq!(out.guest_ip, vm.guest_ip, "the address is kept");
    // A start whose boot fails leaves the VM in `error` with the reason, and no tap.
    s.lifecycle("keep", Lifecycle::Kill).await.unwrap();
    *bed.vmm.fail.lock().unwrap() = Some("broken".into());
    let err = s
        .lifecycle("keep", Lifecycle::Start)
        .await
        .wire()
        .unwrap_err();
    assert!(err.message.starts_with("vmm spawn: "));
    let shown = s.show("keep").await.unwrap();
    assert_eq!(shown.state, VmState::Error);
    assert!(shown.last_error.unwrap().contains("broken"));
    assert!(bed.privileged.taps().is_empty());
}
