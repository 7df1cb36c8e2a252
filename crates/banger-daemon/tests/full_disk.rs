//! A full disk: the daemon's whole home on a small loop-mounted ext4, filled up. `vm create`,
//! `image pull` (a real registry) and workspace prepare fail with `no_space`, an error that
//! names the path and a hint; they leave nothing partial (row, VM dir, staging, blob), and
//! the daemon keeps serving. Once space is freed the same requests work. Needs root
//! (`mount`), `mkfs.ext4` and `docker-registry`.
#![allow(
    clippy::tests_outside_test_module,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stderr
)]

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use banger_api::types::{ImagePullParams, WorkspacePrepareParams};
use banger_api::{ErrorCode, RpcError};
use banger_testkit::daemon::{TestBed, Wire, create_vm, small_config};
use banger_testkit::registry::{TestRegistry, layer_tar};
use banger_testkit::require;

/// An ext4 of `mib` MiB, loop-mounted until dropped.
struct LoopFs {
    _dir: tempfile::TempDir,
    mnt: PathBuf,
}

impl LoopFs {
    fn new(mib: u64) -> Option<LoopFs> {
        if !require::met(&[
            require::root(),
            require::tool("mkfs.ext4"),
            require::tool("mount"),
        ]) {
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let img = dir.path().join("fs.img");
        let mnt = dir.path().join("mnt");
        std::fs::create_dir(&mnt).unwrap();
        std::fs::File::create(&img)
            .unwrap()
            .set_len(mib << 20)
            .unwrap();
        let ok = |c: &mut Command| assert!(c.status().unwrap().success(), "{c:?}");
        ok(Command::new("mkfs.ext4").args(["-q", "-F"]).arg(&img));
        ok(Command::new("mount")
            .args(["-o", "loop"])
            .arg(&img)
            .arg(&mnt));
        Some(LoopFs { _dir: dir, mnt })
    }
}

impl Drop for LoopFs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.mnt).status();
    }
}

/// Fills the filesystem of `dir` with one file, leaving `free` bytes at most; returns it.
fn fill(dir: &Path, free: u64) -> PathBuf {
    let path = dir.join("filler");
    let mut f = std::fs::File::create(&path).unwrap();
    for chunk in [1 << 20, 4096] {
        let buf = vec![0x5a_u8; chunk];
        while f.write_all(&buf).is_ok() {}
    }
    let _ = f.sync_all();
    let len = f.metadata().unwrap().len();
    f.set_len(len.saturating_sub(free)).unwrap();
    f.sync_all().unwrap();
    path
}

fn assert_no_space(e: &RpcError, home: &Path) {
    let text = format!("{e:?}");
    eprintln!("{text}");
    assert_eq!(e.kind(), ErrorCode::NoSpace, "{text}");
    assert!(
        text.contains(&home.display().to_string()),
        "the error names the path: {text}"
    );
    assert!(
        e.data.hint.as_deref().is_some_and(|h| h.contains("df -h")),
        "{text}"
    );
}

async fn pull(tb: &TestBed, reference: &str) -> Result<(), RpcError> {
    let p = ImagePullParams {
        reference: reference.into(),
        name: Some("pulled".into()),
        kernel: Some("test-kernel".into()),
        insecure: false,
    };
    let begun = tb
        .daemon
        .services
        .image
        .begin_pull(p, &tb.daemon.ops)
        .await?;
    loop {
        let st = tb
            .daemon
            .services
            .image
            .pull_status(&begun.op_id, usize::MAX, Duration::from_secs(5))
            .await
            .unwrap();
        if st.done {
            return st.error.map_or(Ok(()), Err);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn test_a_full_disk_fails_create_pull_and_workspace_cleanly_and_the_daemon_keeps_serving() {
    let Some(fs) = LoopFs::new(128) else { return };
    let reg = TestRegistry::start().expect("docker-registry did not start");
    let tb = TestBed::in_dir(small_config(), &fs.mnt).unwrap();
    let home = tb.home().to_owned();
    let vms = &tb.daemon.services.vm;
    // A VM for the workspace, made while there is room.
    create_vm(&tb.daemon, "w", false).await.unwrap();
    // A 4 MiB layer of noise (it compresses to nothing less) and a repo with a 4 MiB file.
    let noise: Vec<u8> = (0..4u32 << 20)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let layer = reg
        .push_layer(
            "big/img",
            &layer_tar(&[banger_testkit::registry::Entry::File(
                "noise".into(),
                noise.clone(),
                0o644,
                0,
            )]),
            true,
        )
        .unwrap();
    reg.push_image("big/img", "v1", "amd64", &[layer], &serde_json::json!({}))
        .unwrap();
    let reference = format!("{}/big/img:v1", reg.addr);
    let repo = banger_testkit::git::repo("true");
    std::fs::write(repo.path().join("noise"), &noise).unwrap();
    banger_testkit::git::git(repo.path(), &["add", "-A"]);
    banger_testkit::git::git(repo.path(), &["commit", "-qm", "noise"]);
    let ws = || WorkspacePrepareParams {
        name: "w".into(),
        path: repo.path().display().to_string(),
        ..Default::default()
    };

    let filler = fill(&fs.mnt, 256 << 10);
    let rows_before = tb.daemon.infra.store.list_vms().unwrap().len();
    // What VM w has (row, tap, files, process): all a failed create may leave.
    let before = tb.leftovers();

    let e = create_vm(&tb.daemon, "full", false).await.unwrap_err();
    assert_no_space(&e, &home);
    assert_eq!(tb.daemon.infra.store.list_vms().unwrap().len(), rows_before);
    assert_eq!(tb.leftovers(), before, "a failed create leaves nothing");

    let e = pull(&tb, &reference).await.unwrap_err();
    assert_no_space(&e, &home);
    assert_eq!(tb.pull_leftovers("pulled"), Vec::<String>::new());

    let e = vms.workspace_prepare(ws()).await.wire().unwrap_err();
    assert_no_space(&e, &home);
    assert_eq!(tb.pull_leftovers("pulled"), Vec::<String>::new());
    assert!(vms.show("w").await.unwrap().workspace.is_none());

    // Still serving: reads answer, and once there is room again everything works.
    assert_eq!(vms.list().await.unwrap().len(), rows_before);
    std::fs::remove_file(filler).unwrap();
    create_vm(&tb.daemon, "full", false).await.unwrap();
    pull(&tb, &reference).await.unwrap();
    vms.workspace_prepare(ws()).await.wire().unwrap();
}
