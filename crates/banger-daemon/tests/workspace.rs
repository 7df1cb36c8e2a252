//! Workspaces, stats and the stale-VM reaper through the control plane, with a fake guest
//! (real git on the host): what ships, what is recorded, lock behaviour (a stalled import
//! never blocks `vm stop`), export, `auto_stop_stale_after`.
#![allow(
    clippy::tests_outside_test_module,
    clippy::unwrap_used,
    clippy::expect_used
)]

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use banger_api::ErrorCode;
use banger_api::types::WorkspaceExport;
use banger_api::types::{VmState, WorkspaceExportParams, WorkspacePrepareParams};
use banger_config::Config;
use banger_daemon::services::{Lifecycle, VmService};
use banger_daemon::stream::StreamOut;
use banger_testkit::daemon::{TestBed, Wire, create_vm, small_config};
use banger_testkit::git;

fn repo() -> tempfile::TempDir {
    git::repo(
        "echo a > tracked && echo '*.log' > .gitignore && git add -A && \
         git commit -qm one && echo u > untracked && echo i > ignored.log",
    )
}

/// Exports VM `vm`'s workspace, collecting the streamed patch.
async fn export(
    vms: &VmService,
    vm: &str,
    base: Option<&str>,
) -> (Result<WorkspaceExport, banger_api::RpcError>, Vec<u8>) {
    let (out, mut rx) = StreamOut::channel();
    let p = WorkspaceExportParams {
        name: vm.into(),
        base_commit: base.map(str::to_owned),
    };
    let run = async move {
        let r = vms.workspace_export(p, &out).await.wire();
        drop(out);
        r
    };
    let collect = async {
        let mut got = Vec::new();
        while let Some((stream, bytes)) = rx.recv().await {
            assert_eq!(stream, "patch");
            got.extend(bytes);
        }
        got
    };
    tokio::join!(run, collect)
}

fn params(vm: &str, path: &Path) -> WorkspacePrepareParams {
    WorkspacePrepareParams {
        name: vm.into(),
        path: path.display().to_string(),
        ..Default::default()
    }
}

fn tar_names(bytes: &[u8]) -> Vec<String> {
    let mut a = tar::Archive::new(bytes);
    a.entries()
        .unwrap()
        .map(|e| e.unwrap().path().unwrap().display().to_string())
        .filter_map(|p| p.strip_prefix(".git/banger-overlay/").map(str::to_owned))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn prepare_ships_tracked_files_records_the_workspace_and_export_returns_the_patch() {
    let bed = TestBed::new(small_config()).unwrap();
    let vms = &bed.daemon.services.vm;
    create_vm(&bed.daemon, "w", false).await.unwrap();
    let r = repo();
    let head = String::from_utf8(
        std::process::Command::new("git")
            .args(["-C", &r.path().display().to_string(), "rev-parse", "HEAD"])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();

    let done = vms.workspace_prepare(params("w", r.path())).await.unwrap();
    assert_eq!((done.files, done.mode.as_str()), (2, "tracked"));
    assert_eq!(done.head, head.trim());
    assert_eq!(done.guest_path, "/root/repo");
    let execs = bed.guest.execs.lock().unwrap().clone();
    assert_eq!(execs.len(), 1);
    assert!(execs[0].0.contains("/root/repo"), "{}", execs[0].0);
    // Nothing differs from HEAD: every file comes from the pack, none as a copy.
    assert!(tar_names(&execs[0].1).is_empty());
    let info = vms.show("w").await.unwrap();
    let ws = info.workspace.unwrap();
    assert_eq!(ws["head"], head.trim());
    assert_eq!(ws["branch"], "main");
    // `vm ssh`/`vm exec` run in the workspace.
    assert_eq!(
        vms.ssh_info("w").await.unwrap().workdir.as_deref(),
        Some("/root/repo")
    );

    // With the flag, the untracked file too; ignored files never.
    let mut p = params("w", r.path());
    p.include_untracked = true;
    let done = vms.workspace_prepare(p).await.unwrap();
    assert_eq!(done.mode, "tracked+untracked");
    let execs = bed.guest.execs.lock().unwrap().clone();
    assert_eq!(tar_names(&execs[1].1), ["untracked"]);

    // Export: the guest's output comes back byte for byte; base defaults to the prepared HEAD.
    bed.guest.exec_output.lock().unwrap().stdout = b"diff --git a/x b/x\n\xff\n".to_vec();
    let (e, patch) = export(vms, "w", None).await;
    let e = e.unwrap();
    assert_eq!(e.base, head.trim());
    assert_eq!(patch, b"diff --git a/x b/x\n\xff\n");
    assert_eq!(e.bytes, patch.len() as u64);
    // Any size: 3 MiB of patch streams through in chunks, byte for byte.
    let big: Vec<u8> = (0..3u32 << 20)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect();
    bed.guest
        .exec_output
        .lock()
        .unwrap()
        .stdout
        .clone_from(&big);
    let (e, patch) = export(vms, "w", None).await;
    assert_eq!(e.unwrap().bytes, big.len() as u64);
    assert!(patch == big, "byte-exact");
    let script = bed.guest.execs.lock().unwrap().last().unwrap().0.clone();
    assert!(
        script.contains("git diff --cached --binary") && script.contains(head.trim()),
        "{script}"
    );
    let (err, patch) = export(vms, "w", Some("--output=/etc/passwd")).await;
    assert_eq!(err.unwrap_err().kind(), ErrorCode::BadRequest);
    assert!(patch.is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn dry_run_and_bad_input_touch_nothing() {
    let bed = TestBed::new(small_config()).unwrap();
    let vms = &bed.daemon.services.vm;
    create_vm(&bed.daemon, "w", false).await.unwrap();
    let r = repo();
    // A dry run needs no VM and sends nothing to a guest.
    let mut p = params("", r.path());
    p.dry_run = true;
    p.include_untracked = true;
    let plan = vms.workspace_prepare(p).await.unwrap();
    assert!(plan.dry_run);
    assert_eq!(plan.listed, [".gitignore", "tracked", "untracked"]);
    let not_repo = tempfile::tempdir().unwrap();
    for (p, code) in [
        (params("w", not_repo.path()), ErrorCode::BadRequest),
        (
            params("w", Path::new("relative/path")),
            ErrorCode::BadRequest,
        ),
        (params("nosuch", r.path()), ErrorCode::NotFound),
        (
            WorkspacePrepareParams {
                guest_path: Some("/etc".into()),
                ..params("w", r.path())
            },
            ErrorCode::BadRequest,
        ),
        (
            WorkspacePrepareParams {
                from: Some("main".into()),
                ..params("w", r.path())
            },
            ErrorCode::BadRequest,
        ),
    ] {
        let err = vms.workspace_prepare(p).await.wire().unwrap_err();
        assert_eq!(err.kind(), code, "{err:?}");
    }
    let not_a_repo = vms
        .workspace_prepare(params("w", not_repo.path()))
        .await
        .wire()
        .unwrap_err();
    assert!(not_a_repo.data.hint.is_some());
    assert!(bed.guest.execs.lock().unwrap().is_empty());
    assert!(vms.show("w").await.unwrap().workspace.is_none());
    // A stopped VM: refused with a hint, nothing recorded.
    vms.lifecycle("w", Lifecycle::Stop).await.unwrap();
    let err = vms
        .workspace_prepare(params("w", r.path()))
        .await
        .wire()
        .unwrap_err();
    assert_eq!(err.kind(), ErrorCode::NotRunning);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stalled_import_does_not_block_stop_and_two_prepares_serialize() {
    let bed = Arc::new(TestBed::new(small_config()).unwrap());
    create_vm(&bed.daemon, "w", false).await.unwrap();
    let r = repo();
    let (started, release) = bed.guest.hold_exec();
    let b = Arc::clone(&bed);
    let p = params("w", r.path());
    let import = tokio::spawn(async move { b.daemon.services.vm.workspace_prepare(p).await });
    tokio::task::spawn_blocking(move || started.recv_timeout(Duration::from_secs(10)).unwrap())
        .await
        .unwrap();
    // The import is stuck in guest I/O. A second prepare waits for it (workspace lock) ...
    let b = Arc::clone(&bed);
    let p = params("w", r.path());
    let second = tokio::spawn(async move { b.daemon.services.vm.workspace_prepare(p).await });
    // ... while stop goes through at once (it never waits on the workspace lock).
    let stopped = tokio::time::timeout(
        Duration::from_secs(5),
        bed.daemon.services.vm.lifecycle("w", Lifecycle::Stop),
    )
    .await
    .expect("vm stop waited behind the import")
    .unwrap();
    assert_eq!(stopped.state, VmState::Stopped);
    assert!(!second.is_finished());
    assert_eq!(
        bed.guest.execs.lock().unwrap().len(),
        1,
        "second prepare ran concurrently"
    );
    release.send(()).unwrap();
    // The stalled import "finishes" (the fake says ok) and records; the second one finds
    // the VM stopped.
    import.await.unwrap().unwrap();
    let err = second.await.unwrap().wire().unwrap_err();
    assert_eq!(err.kind(), ErrorCode::NotRunning);
}

#[tokio::test(flavor = "multi_thread")]
async fn stale_vms_are_stopped_by_the_poller_and_used_ones_are_not() {
    let config = Config {
        auto_stop_stale_after: "10m".into(),
        ..small_config()
    };
    let bed = TestBed::new(config).unwrap();
    let vms = &bed.daemon.services.vm;
    create_vm(&bed.daemon, "idle", false).await.unwrap();
    create_vm(&bed.daemon, "busy", false).await.unwrap();
    let now = jiff::Timestamp::now();
    // Nothing is stale yet.
    assert!(vms.poll_once(now).await.is_empty());
    // 11 minutes later, after "busy" was used at the 5-minute mark: only "idle" stops.
    let later = now + jiff::SignedDuration::from_mins(11);
    let mut busy = bed.daemon.infra.store.get_vm("busy").unwrap().unwrap().vm;
    busy.last_touched_at = (now + jiff::SignedDuration::from_mins(5)).to_string();
    bed.daemon.infra.store.update_vm(&busy).unwrap();
    assert_eq!(vms.poll_once(later).await, ["idle"]);
    assert_eq!(vms.show("idle").await.unwrap().state, VmState::Stopped);
    assert_eq!(vms.show("busy").await.unwrap().state, VmState::Running);
    // Disabled (the default): never stops anything.
    let bed = TestBed::new(small_config()).unwrap();
    create_vm(&bed.daemon, "x", false).await.unwrap();
    let far = jiff::Timestamp::now() + jiff::SignedDuration::from_hours(1000);
    assert!(bed.daemon.services.vm.poll_once(far).await.is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn stats_report_vmm_and_guest_numbers() {
    let bed = TestBed::new(small_config()).unwrap();
    let vms = &bed.daemon.services.vm;
    create_vm(&bed.daemon, "s", false).await.unwrap();
    create_vm(&bed.daemon, "off", false).await.unwrap();
    vms.lifecycle("off", Lifecycle::Stop).await.unwrap();
    bed.guest.stats.lock().unwrap().mem_total_kib = 512 * 1024;
    let all = vms.stats_many(&[]).await.unwrap();
    assert_eq!(all.len(), 2);
    let s = all.iter().find(|s| s.name == "s").unwrap();
    assert!(s.pid.is_some() && s.rss_mib.is_some(), "{s:?}");
    assert!(s.cpu_percent.is_some_and(|c| c >= 0.0), "{s:?}");
    assert_eq!(s.guest.as_ref().unwrap().mem_total_mib, 512);
    let off = all.iter().find(|s| s.name == "off").unwrap();
    assert!(off.pid.is_none() && off.guest.is_none());
    let err = vms.stats_many(&["nosuch".into()]).await.wire().unwrap_err();
    assert_eq!(err.kind(), ErrorCode::NotFound);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_managed_ssh_config_follows_create_and_delete() {
    let bed = TestBed::new(small_config()).unwrap();
    let vms = &bed.daemon.services.vm;
    let a = create_vm(&bed.daemon, "a", false).await.unwrap();
    create_vm(&bed.daemon, "b", false).await.unwrap();
    let path = bed.daemon.infra.layout.ssh_config_path();
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(
        text.contains(&format!(
            "Host a.vm\n    HostName {}\n    HostKeyAlias banger-{}",
            a.guest_ip, a.id
        )),
        "{text}"
    );
    assert!(
        text.contains("Host b.vm") && text.contains("Host *.vm"),
        "{text}"
    );
    vms.lifecycle("a", Lifecycle::Delete).await.unwrap();
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(
        !text.contains("Host a.vm") && text.contains("Host b.vm"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_guest_that_never_becomes_ready_is_kept_for_its_logs_when_asked() {
    let bed = TestBed::new(small_config()).unwrap();
    let vms = &bed.daemon.services.vm;
    *bed.guest.readiness.lock().unwrap() = banger_host::guest::FakeReadiness::Never;
    let p = banger_api::types::VmCreateParams {
        name: Some("slow".into()),
        keep_failed_boot: true,
        ..Default::default()
    };
    let err = vms
        .create(
            p.clone(),
            &Arc::new(banger_daemon::progress::Progress::default()),
        )
        .await
        .wire()
        .unwrap_err();
    assert!(err.message.contains("was kept"), "{err:?}");
    assert!(
        err.data.hint.as_deref().unwrap().contains("vm logs slow"),
        "{err:?}"
    );
    let kept = vms.show("slow").await.unwrap();
    assert_eq!(kept.state, VmState::Error);
    assert!(kept.last_error.is_some());
    vms.logs(
        banger_api::types::VmLogsParams {
            name: "slow".into(),
            ..Default::default()
        },
        &banger_daemon::stream::StreamOut::discard(),
    )
    .await
    .unwrap();
    // Its VMM and tap are gone; only the row and its files stay until delete.
    vms.lifecycle("slow", Lifecycle::Delete).await.unwrap();
    assert!(bed.leftovers().is_empty(), "{:?}", bed.leftovers());
    // Without the flag, the same failure undoes everything.
    let err = vms
        .create(
            banger_api::types::VmCreateParams {
                keep_failed_boot: false,
                ..p
            },
            &Arc::new(banger_daemon::progress::Progress::default()),
        )
        .await
        .wire()
        .unwrap_err();
    assert!(!err.message.contains("was kept"), "{err:?}");
    assert!(bed.leftovers().is_empty(), "{:?}", bed.leftovers());
}
