//! OCI pulls against a real registry (Debian's `docker-registry` on 127.0.0.1, started per
//! test) through the control plane, with real `mkfs.ext4`/`e2fsck`/`debugfs`: the flattened
//! tree read back from the ext4, hostile layers refused leaving nothing, coalescing, the
//! cache, register/promote/delete and kernels.
#![allow(
    clippy::tests_outside_test_module,
    clippy::unwrap_used,
    clippy::expect_used
)]

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use banger_api::types::{
    CachePruneParams, ImageInfo, ImagePullParams, ImageRegisterParams, KernelImportParams,
};
use banger_api::{ErrorCode, RpcError};
use banger_testkit::daemon::{TestBed, Wire, small_config};
use banger_testkit::registry::{Entry, TestRegistry, layer_tar};

fn registry() -> TestRegistry {
    TestRegistry::start().expect(
        "docker-registry did not start; install it with `apt-get install docker-registry` (scripts/test.sh does)",
    )
}

fn params(reference: &str, name: &str) -> ImagePullParams {
    ImagePullParams {
        reference: reference.into(),
        name: Some(name.into()),
        kernel: Some("test-kernel".into()),
        insecure: false,
    }
}

async fn wait(tb: &TestBed, op_id: &str) -> banger_api::types::OpStatus {
    loop {
        let st = tb
            .daemon
            .services
            .image
            .pull_status(op_id, usize::MAX, Duration::from_secs(5))
            .await
            .unwrap();
        if st.done {
            return st;
        }
    }
}

async fn pull(tb: &TestBed, p: ImagePullParams) -> Result<ImageInfo, RpcError> {
    let begun = tb
        .daemon
        .services
        .image
        .begin_pull(p, &tb.daemon.ops)
        .await?;
    let st = wait(tb, &begun.op_id).await;
    match st.error {
        Some(e) => Err(e),
        None => Ok(st.image.unwrap()),
    }
}

fn debugfs(img: &str, req: &str) -> String {
    let out = std::process::Command::new("debugfs")
        .args(["-R", req, img])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn file(p: &str, body: &str, mode: u32, uid: u64) -> Entry {
    Entry::File(p.into(), body.as_bytes().to_vec(), mode, uid)
}

fn dir(p: &str) -> Entry {
    Entry::Dir(p.into(), 0o755)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn test_pull_flattens_a_multi_layer_index_image_into_the_exact_ext4() {
    let reg = registry();
    let tb = TestBed::new(small_config()).unwrap();
    let repo = "team/tools";
    let base = reg
        .push_layer(
            repo,
            &layer_tar(&[
                dir("etc"),
                dir("usr"),
                dir("usr/bin"),
                dir("opt"),
                dir("opt/old"),
                dir("home"),
                Entry::Dir("home/u".into(), 0o750),
                file("etc/keep", "kept\n", 0o644, 0),
                file("etc/gone", "whited out\n", 0o644, 0),
                file("opt/old/a", "lower\n", 0o644, 0),
                file("usr/bin/su", "#!/bin/sh\n", 0o4755, 0),
                file("home/u/notes", "mine\n", 0o600, 1000),
                Entry::Symlink("bin".into(), "usr/bin".into()),
            ]),
            true,
        )
        .unwrap();
    let top = reg
        .push_layer(
            repo,
            &layer_tar(&[
                file("etc/.wh.gone", "", 0o644, 0),
                dir("opt/old"),
                file("opt/old/.wh..wh..opq", "", 0o644, 0),
                file("opt/old/new", "upper\n", 0o644, 0),
                Entry::Hard("usr/bin/su2".into(), "usr/bin/su".into()),
                Entry::Symlink("etc/link".into(), "keep".into()),
                file("bin/through-link", "via bin -> usr/bin\n", 0o755, 0),
            ]),
            false,
        )
        .unwrap();
    let run = serde_json::json!({"Entrypoint": ["/usr/bin/su"], "Env": ["A=1", "PATH=/usr/bin"], "WorkingDir": "/home/u"});
    let amd = reg
        .push_image(
            repo,
            "amd64-only",
            "amd64",
            &[base.clone(), top.clone()],
            &run,
        )
        .unwrap();
    // An arm64 sibling that must not be chosen.
    let arm_layer = reg
        .push_layer(
            repo,
            &layer_tar(&[file("ARM", "wrong platform", 0o644, 0)]),
            true,
        )
        .unwrap();
    let arm = reg
        .push_image(repo, "arm64-only", "arm64", &[arm_layer], &run)
        .unwrap();
    let amd_size = reg.manifest_size(repo, &amd).unwrap();
    let arm_size = reg.manifest_size(repo, &arm).unwrap();
    reg.push_index(
        repo,
        "v1",
        &[(arm, arm_size, "arm64"), (amd.clone(), amd_size, "amd64")],
    )
    .unwrap();

    let reference = format!("{}/{repo}:v1", reg.addr);
    let img = pull(
        &tb,
        ImagePullParams {
            name: None,
            ..params(&reference, "")
        },
    )
    .await
    .unwrap();
    assert_eq!(img.name, "tools-v1", "name derived from the reference");
    assert_eq!(
        img.digest.as_deref(),
        Some(amd.as_str()),
        "the amd64 manifest"
    );
    assert!(img.managed);
    assert_eq!(img.details["entrypoint"][0], "/usr/bin/su");
    assert_eq!(img.details["workdir"], "/home/u");
    assert_eq!(img.details["env"][0], "A=1");
    assert_eq!(
        img.details["init"], "/usr/local/libexec/banger-init",
        "no systemd/sshd: first-boot init"
    );
    assert!(img.size_bytes >= 1 << 30, "floor 1 GiB");

    let rootfs = img.rootfs.clone();
    let fsck = std::process::Command::new("e2fsck")
        .args(["-fn", &rootfs])
        .output()
        .unwrap();
    assert!(
        fsck.status.success(),
        "e2fsck: {}",
        String::from_utf8_lossy(&fsck.stdout)
    );
    let su = debugfs(&rootfs, "stat /usr/bin/su");
    assert!(su.contains("Mode:  04755"), "setuid kept: {su}");
    assert!(su.contains("Links: 2"), "hard link shares the inode: {su}");
    assert!(su.contains("User:     0"), "{su}");
    let notes = debugfs(&rootfs, "stat /home/u/notes");
    assert!(notes.contains("User:  1000"), "owner kept: {notes}");
    assert!(notes.contains("Mode:  0600"), "{notes}");
    let etc = debugfs(&rootfs, "ls -l /etc");
    assert!(etc.contains(" keep"), "{etc}");
    assert!(!etc.contains(" gone"), "whiteout removed it: {etc}");
    assert!(
        debugfs(&rootfs, "stat /etc/link").contains("Type: symlink"),
        "symlink kept"
    );
    let old = debugfs(&rootfs, "ls /opt/old");
    assert!(
        old.contains("new") && !old.contains(" a "),
        "opaque dir: {old}"
    );
    assert!(
        debugfs(&rootfs, "cat /usr/bin/through-link").contains("via bin"),
        "written through the in-image symlink"
    );
    assert!(
        !debugfs(&rootfs, "ls /").contains("ARM"),
        "the arm64 layer never applied"
    );
    assert!(debugfs(&rootfs, "stat /usr/local/libexec/banger-init").contains("Mode:  0755"));
    assert!(tb.pull_leftovers("nothing").is_empty());

    // A second pull of the same layers (another name) downloads nothing.
    let begun = tb
        .daemon
        .services
        .image
        .begin_pull(params(&reference, "tools-again"), &tb.daemon.ops)
        .await
        .unwrap();
    let st = wait(&tb, &begun.op_id).await;
    assert!(st.error.is_none(), "{:?}", st.error);
    let layers: Vec<_> = st
        .stages
        .iter()
        .filter(|s| s.name.starts_with("layer "))
        .collect();
    assert_eq!(layers.len(), 2);
    assert!(
        layers.iter().all(|s| s.name.ends_with("(cached)")),
        "{layers:?}"
    );

    // Same name again: refused at once.
    let err = pull(&tb, params(&reference, "tools-again"))
        .await
        .wire()
        .unwrap_err();
    assert_eq!(err.kind(), ErrorCode::AlreadyExists);
    assert!(err.data.hint.unwrap().contains("image delete"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn test_hostile_layers_are_refused_and_leave_no_image_row_or_staging_dir() {
    let reg = registry();
    let tb = TestBed::new(small_config()).unwrap();
    let escape_dir = tempfile::tempdir().unwrap();
    let outside = escape_dir.path().display().to_string();
    let cases: Vec<(&str, Vec<Entry>, &str)> = vec![
        (
            "traversal",
            vec![file("etc/../../evil", "x", 0o644, 0)],
            "..",
        ),
        (
            "absolute",
            vec![file("/etc/evil", "x", 0o644, 0)],
            "absolute",
        ),
        (
            "symlink-escape",
            vec![
                Entry::Symlink("esc".into(), outside.clone()),
                file("esc/owned", "x", 0o644, 0),
            ],
            "esc/owned",
        ),
        ("device", vec![Entry::CharDev("dev/null2".into())], "device"),
    ];
    for (tag, entries, expect) in cases {
        let layer = reg
            .push_layer("bad/img", &layer_tar(&entries), true)
            .unwrap();
        reg.push_image("bad/img", tag, "amd64", &[layer], &serde_json::json!({}))
            .unwrap();
        let name = format!("bad-{tag}");
        let err = pull(&tb, params(&format!("{}/bad/img:{tag}", reg.addr), &name))
            .await
            .wire()
            .unwrap_err();
        assert!(
            err.message.contains("layer sha256:") && err.message.contains(expect),
            "{tag}: {}",
            err.message
        );
        assert!(
            tb.pull_leftovers(&name).is_empty(),
            "{tag}: {:?}",
            tb.pull_leftovers(&name)
        );
    }
    assert!(
        std::fs::read_dir(escape_dir.path())
            .unwrap()
            .next()
            .is_none(),
        "nothing written outside"
    );

    // The config's diff id does not match the layer.
    let mut layer = reg
        .push_layer("bad/img", &layer_tar(&[file("a", "a", 0o644, 0)]), true)
        .unwrap();
    layer.diff_id = format!("sha256:{}", "0".repeat(64));
    reg.push_image(
        "bad/img",
        "mismatch",
        "amd64",
        std::slice::from_ref(&layer),
        &serde_json::json!({}),
    )
    .unwrap();
    let err = pull(
        &tb,
        params(&format!("{}/bad/img:mismatch", reg.addr), "bad-mismatch"),
    )
    .await
    .wire()
    .unwrap_err();
    assert!(err.message.contains("digest mismatch"), "{}", err.message);
    assert!(tb.pull_leftovers("bad-mismatch").is_empty());

    // A truncated gzip stream (the blob itself is intact: its digest is of the cut bytes).
    let tar = layer_tar(&[file("big", &"x".repeat(200_000), 0o644, 0)]);
    let gz = banger_testkit::registry::gzip(&tar);
    let cut = &gz[..gz.len() / 2];
    let digest = reg
        .push_blob("bad/img", banger_testkit::registry::Body::Bytes(cut))
        .unwrap();
    let truncated = banger_testkit::registry::PushedLayer {
        media_type: banger_testkit::registry::media::LAYER_GZIP.into(),
        digest,
        size: cut.len() as u64,
        diff_id: banger_testkit::registry::digest(&tar),
    };
    reg.push_image(
        "bad/img",
        "truncated",
        "amd64",
        &[truncated],
        &serde_json::json!({}),
    )
    .unwrap();
    let err = pull(
        &tb,
        params(&format!("{}/bad/img:truncated", reg.addr), "bad-trunc"),
    )
    .await
    .wire()
    .unwrap_err();
    assert!(err.message.contains("layer sha256:"), "{}", err.message);
    assert!(tb.pull_leftovers("bad-trunc").is_empty());

    // Not linux/amd64, unknown tag, bad reference, bad name: clear errors, nothing left.
    let arm = reg
        .push_layer("bad/img", &layer_tar(&[file("a", "a", 0o644, 0)]), true)
        .unwrap();
    reg.push_image("bad/img", "arm", "arm64", &[arm], &serde_json::json!({}))
        .unwrap();
    let err = pull(&tb, params(&format!("{}/bad/img:arm", reg.addr), "bad-arm"))
        .await
        .wire()
        .unwrap_err();
    assert!(err.message.contains("linux/arm64"), "{}", err.message);
    let err = pull(
        &tb,
        params(&format!("{}/bad/img:nope", reg.addr), "bad-nope"),
    )
    .await
    .wire()
    .unwrap_err();
    assert!(err.message.contains("manifest"), "{}", err.message);
    let err = pull(&tb, params("Not A Ref", "x"))
        .await
        .wire()
        .unwrap_err();
    assert_eq!(err.kind(), ErrorCode::BadRequest);
    let err = pull(
        &tb,
        params(&format!("{}/bad/img:arm", reg.addr), "Bad/Name"),
    )
    .await
    .wire()
    .unwrap_err();
    assert_eq!(err.kind(), ErrorCode::BadRequest);
    for n in ["bad-arm", "bad-nope"] {
        assert!(tb.pull_leftovers(n).is_empty());
    }
    assert!(
        tb.daemon.infra.store.list_images().unwrap().len() == 1,
        "only the seed image"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn test_concurrent_pulls_coalesce_and_a_name_race_fails_fast() {
    let reg = registry();
    let tb = TestBed::new(small_config()).unwrap();
    // Big enough that the first pull is still running when the others begin.
    let mut noise = vec![0u8; 8 << 20];
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for b in &mut noise {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *b = x as u8;
    }
    let layer = reg
        .push_layer(
            "co/img",
            &layer_tar(&[Entry::File("noise".into(), noise, 0o644, 0)]),
            false,
        )
        .unwrap();
    reg.push_image(
        "co/img",
        "a",
        "amd64",
        std::slice::from_ref(&layer),
        &serde_json::json!({}),
    )
    .unwrap();
    reg.push_image("co/img", "b", "amd64", &[layer], &serde_json::json!({}))
        .unwrap();
    let svc = Arc::clone(&tb.daemon.services.image);
    let a = format!("{}/co/img:a", reg.addr);
    let first = svc
        .begin_pull(params(&a, "co"), &tb.daemon.ops)
        .await
        .unwrap();
    let second = svc
        .begin_pull(params(&a, "co"), &tb.daemon.ops)
        .await
        .unwrap();
    assert_eq!(first.op_id, second.op_id, "one ref + name = one operation");
    let other = format!("{}/co/img:b", reg.addr);
    let err = svc
        .begin_pull(params(&other, "co"), &tb.daemon.ops)
        .await
        .wire()
        .unwrap_err();
    assert_eq!(err.kind(), ErrorCode::AlreadyExists);
    assert!(err.message.contains("being pulled"), "{}", err.message);
    let st = wait(&tb, &first.op_id).await;
    assert!(st.error.is_none(), "{:?}", st.error);
    assert_eq!(
        tb.daemon.ops.list().len(),
        0,
        "the operation left the in-flight list"
    );
    // Once done, the name is taken for good.
    let err = pull(&tb, params(&other, "co")).await.wire().unwrap_err();
    assert_eq!(err.kind(), ErrorCode::AlreadyExists);
    assert!(tb.pull_leftovers("x").is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn test_cache_prune_delete_register_promote_and_kernels() {
    let reg = registry();
    let tb = TestBed::new(small_config()).unwrap();
    let svc = Arc::clone(&tb.daemon.services.image);
    let layer = reg
        .push_layer("c/img", &layer_tar(&[file("a", "a", 0o644, 0)]), true)
        .unwrap();
    reg.push_image(
        "c/img",
        "1",
        "amd64",
        std::slice::from_ref(&layer),
        &serde_json::json!({}),
    )
    .unwrap();
    pull(&tb, params(&format!("{}/c/img:1", reg.addr), "c1"))
        .await
        .unwrap();
    let kept = svc
        .cache_prune(CachePruneParams {
            dry_run: true,
            all: false,
        })
        .await
        .unwrap();
    assert!(
        kept.blobs.is_empty(),
        "blobs of stored images stay: {kept:?}"
    );
    svc.delete("c1").await.unwrap();
    assert!(!tb.daemon.infra.layout.images_dir().join("c1").exists());
    let dry = svc
        .cache_prune(CachePruneParams {
            dry_run: true,
            all: false,
        })
        .await
        .unwrap();
    assert_eq!(dry.blobs, std::slice::from_ref(&layer.digest));
    assert!(dry.bytes > 0 && dry.dry_run);
    let blob = tb
        .daemon
        .infra
        .layout
        .cache_dir
        .join("blobs/sha256")
        .join(layer.digest.trim_start_matches("sha256:"));
    assert!(blob.exists(), "a dry run removes nothing");
    let done = svc
        .cache_prune(CachePruneParams {
            dry_run: false,
            all: false,
        })
        .await
        .unwrap();
    assert_eq!(done.blobs, dry.blobs);
    assert!(!blob.exists());

    // Register an unmanaged image from the seed image's files plus a kernel from files.
    let seed = tb
        .daemon
        .infra
        .store
        .get_image("test-image")
        .unwrap()
        .unwrap();
    let kdir = tempfile::tempdir().unwrap();
    let vmlinux = kdir.path().join("vmlinux");
    std::fs::write(&vmlinux, b"\x7fELF not really").unwrap();
    let err = svc
        .register(ImageRegisterParams {
            name: "reg".into(),
            rootfs: "relative.ext4".into(),
            kernel_ref: Some("test-kernel".into()),
            ..ImageRegisterParams::default()
        })
        .await
        .wire()
        .unwrap_err();
    assert!(err.message.contains("absolute"), "{}", err.message);
    let img = svc
        .register(ImageRegisterParams {
            name: "reg".into(),
            rootfs: seed.rootfs_path.clone(),
            kernel: Some(vmlinux.display().to_string()),
            ..ImageRegisterParams::default()
        })
        .await
        .unwrap();
    assert!(!img.managed);
    assert_eq!(
        img.rootfs, seed.rootfs_path,
        "absolute path stored as given"
    );
    assert_eq!(img.kernel.as_deref(), Some("reg-kernel"));
    let k = svc.kernel_show("reg-kernel").await.unwrap();
    assert!(Path::new(&k.kernel).starts_with(tb.daemon.infra.layout.kernels_dir()));

    // In use: image delete names the VM, kernel rm names the image.
    let vm = tb
        .daemon
        .services
        .vm
        .create(
            banger_api::types::VmCreateParams {
                name: Some("uses-reg".into()),
                image: Some("reg".into()),
                no_start: true,
                ..Default::default()
            },
            &Arc::default(),
        )
        .await
        .unwrap();
    let err = svc.delete("reg").await.wire().unwrap_err();
    assert!(err.message.contains("uses-reg"), "{}", err.message);
    assert_eq!(svc.show("reg").await.unwrap().used_by, ["uses-reg"]);
    let err = svc.kernel_rm("reg-kernel").await.wire().unwrap_err();
    assert!(err.message.contains("reg"), "{}", err.message);

    let promoted = svc.promote("reg").await.unwrap();
    assert!(promoted.managed);
    assert!(Path::new(&promoted.rootfs).starts_with(tb.daemon.infra.layout.images_dir()));
    assert!(Path::new(&seed.rootfs_path).exists(), "the original stays");

    tb.daemon
        .services
        .vm
        .lifecycle(&vm.name, banger_daemon::services::Lifecycle::Delete)
        .await
        .unwrap();
    svc.delete("reg").await.unwrap();
    assert!(
        !Path::new(&promoted.rootfs).exists(),
        "managed files go with it"
    );
    svc.kernel_rm("reg-kernel").await.unwrap();
    assert!(!Path::new(&k.kernel).exists());
    let err = svc
        .import_kernel_files(KernelImportParams {
            name: Some("k2".into()),
            vmlinux: Some("/nonexistent/vmlinux".into()),
            ..KernelImportParams::default()
        })
        .await
        .wire()
        .unwrap_err();
    assert!(err.message.contains("not a file"), "{}", err.message);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn test_leftovers_of_a_killed_daemon_are_cleaned_at_start() {
    let tb = TestBed::new(small_config()).unwrap();
    let layout = &tb.daemon.infra.layout;
    let staging = layout.images_dir().join(".staging-deadbeef");
    std::fs::create_dir_all(staging.join("tree/etc")).unwrap();
    let kstaging = layout.kernels_dir().join(".staging-cafe");
    std::fs::create_dir_all(&kstaging).unwrap();
    let partial = layout.cache_dir.join("blobs/partial");
    std::fs::create_dir_all(&partial).unwrap();
    std::fs::write(partial.join("abc.1234"), "half").unwrap();
    let ws = layout.cache_dir.join(".workspace-Ab12Cd");
    std::fs::create_dir_all(ws.join(".git/objects")).unwrap();
    let restarted = tb.restarted();
    assert_eq!(restarted.services.image.clean_leftovers(), 4);
    assert!(!staging.exists() && !kstaging.exists() && !ws.exists());
    assert!(std::fs::read_dir(&partial).unwrap().next().is_none());
    assert!(
        layout.images_dir().join("test-image").exists(),
        "published images stay"
    );
}

/// A tar.zst with `entries` (name, body) as regular files, plus raw hostile entries.
fn bundle_file(path: &Path, files: &[(&str, &[u8])], symlink: Option<(&str, &str)>) -> String {
    let f = std::fs::File::create(path).unwrap();
    let enc = zstd::stream::write::Encoder::new(f, 1).unwrap();
    let mut b = tar::Builder::new(enc);
    for (name, body) in files {
        let mut h = tar::Header::new_gnu();
        h.set_size(body.len() as u64);
        h.set_mode(0o644);
        h.set_entry_type(tar::EntryType::Regular);
        let raw = name.as_bytes();
        h.as_gnu_mut().unwrap().name[..raw.len()].copy_from_slice(raw);
        h.set_cksum();
        b.append(&h, *body).unwrap();
    }
    if let Some((name, target)) = symlink {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Symlink);
        h.set_size(0);
        b.append_link(&mut h, name, target).unwrap();
    }
    b.into_inner().unwrap().finish().unwrap();
    banger_testkit::registry::file_digest(path)
        .unwrap()
        .trim_start_matches("sha256:")
        .to_owned()
}

fn catalog_entry(name: &str, url: &Path, sha: &str) -> banger_config::ImageCatalogEntry {
    banger_config::ImageCatalogEntry {
        name: name.into(),
        distro: "test".into(),
        arch: "amd64".into(),
        kernel_ref: "test-kernel".into(),
        url: url.display().to_string(),
        sha256: sha.into(),
        size: std::fs::metadata(url).map_or(0, |m| m.len()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn test_catalog_bundles_export_pull_autopull_and_refusals() {
    let dir = tempfile::tempdir().unwrap();
    // A bundle made by `image export` of the seed image (its work seed goes under /root).
    let maker = TestBed::new(small_config()).unwrap();
    let seed_dir = maker
        .daemon
        .infra
        .layout
        .images_dir()
        .join("test-image/work-seed");
    std::fs::write(seed_dir.join(".profile"), "export FROM_SEED=1\n").unwrap();
    let good = dir.path().join("good.tar.zst");
    let sha = maker
        .daemon
        .services
        .image
        .export("test-image", &good.display().to_string())
        .await
        .unwrap();
    assert_eq!(sha.size, std::fs::metadata(&good).unwrap().len());
    let sha = sha.sha256;
    assert_eq!(sha.len(), 64);
    let hostile = dir.path().join("hostile.tar.zst");
    let hostile_sha = bundle_file(
        &hostile,
        &[
            ("rootfs.ext4", b"x"),
            ("manifest.json", b"{\"name\":\"h\"}"),
        ],
        Some(("etc-link", "/etc")),
    );
    let traversal = dir.path().join("traversal.tar.zst");
    let traversal_sha = bundle_file(
        &traversal,
        &[("../rootfs.ext4", b"x"), ("manifest.json", b"{}")],
        None,
    );
    let extra = dir.path().join("extra.tar.zst");
    let extra_sha = bundle_file(
        &extra,
        &[
            ("rootfs.ext4", b"x"),
            ("manifest.json", b"{}"),
            ("etc/passwd", b"x"),
        ],
        None,
    );
    let kbundle = dir.path().join("kernel.tar.zst");
    let ksha = bundle_file(
        &kbundle,
        &[
            ("vmlinux", b"\x7fELF kernel"),
            ("modules/6.1/kernel/virtio.ko", b"ko"),
        ],
        None,
    );
    let mut cfg = small_config();
    cfg.image_catalog = vec![
        catalog_entry("cat-img", &good, &sha),
        catalog_entry("cat-auto", &good, &sha),
        catalog_entry("cat-badsha", &good, &"0".repeat(64)),
        catalog_entry("cat-hostile", &hostile, &hostile_sha),
        catalog_entry("cat-traversal", &traversal, &traversal_sha),
        catalog_entry("cat-extra", &extra, &extra_sha),
    ];
    let mut kernel_via_catalog = catalog_entry("cat-kernel-img", &good, &sha);
    kernel_via_catalog.kernel_ref = "cat-k".into();
    cfg.image_catalog.push(kernel_via_catalog);
    cfg.kernel_catalog = vec![banger_config::KernelCatalogEntry {
        name: "cat-k".into(),
        version: "6.1".into(),
        arch: "amd64".into(),
        url: format!("file://{}", kbundle.display()),
        sha256: ksha,
        size: 0,
    }];
    let tb = TestBed::new(cfg).unwrap();
    let svc = Arc::clone(&tb.daemon.services.image);

    let img = pull(
        &tb,
        ImagePullParams {
            reference: "cat-img".into(),
            ..ImagePullParams::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(img.name, "cat-img");
    assert_eq!(img.source, "catalog:cat-img");
    assert_eq!(img.kernel.as_deref(), Some("test-kernel"));
    let seed = tb
        .daemon
        .infra
        .layout
        .images_dir()
        .join("cat-img/work-seed/.profile");
    assert_eq!(
        std::fs::read_to_string(seed).unwrap(),
        "export FROM_SEED=1\n",
        "the exported work seed comes back"
    );
    let fsck = std::process::Command::new("e2fsck")
        .args(["-fn", &img.rootfs])
        .output()
        .unwrap();
    assert!(fsck.status.success());

    // vm create auto-pulls a missing catalog image.
    let vm = tb
        .daemon
        .services
        .vm
        .create(
            banger_api::types::VmCreateParams {
                name: Some("auto".into()),
                image: Some("cat-auto".into()),
                no_start: true,
                ..Default::default()
            },
            &Arc::default(),
        )
        .await
        .unwrap();
    assert_eq!(vm.image, "cat-auto");

    // A kernel_ref found only in the kernel catalog is pulled on the way.
    let img = pull(
        &tb,
        ImagePullParams {
            reference: "cat-kernel-img".into(),
            ..ImagePullParams::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(img.kernel.as_deref(), Some("cat-k"));
    let k = svc.kernel_show("cat-k").await.unwrap();
    assert!(Path::new(&k.kernel).is_file());
    assert!(
        svc.kernel_catalog()
            .await
            .unwrap()
            .iter()
            .any(|c| c.name == "cat-k" && c.pulled)
    );

    // Refusals leave no row, staging dir or partial download.
    for (name, expect) in [
        ("cat-badsha", "sha256 mismatch"),
        ("cat-hostile", "etc-link"),
        ("cat-traversal", ".."),
        ("cat-extra", "etc/passwd"),
    ] {
        let err = pull(
            &tb,
            ImagePullParams {
                reference: name.into(),
                ..ImagePullParams::default()
            },
        )
        .await
        .wire()
        .unwrap_err();
        assert!(err.message.contains(expect), "{name}: {}", err.message);
        assert!(tb.pull_leftovers(name).is_empty(), "{name}");
    }
    let err = svc
        .kernel_pull("nope", &Arc::default())
        .await
        .wire()
        .unwrap_err();
    assert_eq!(err.kind(), ErrorCode::NotFound);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn test_vm_create_with_an_oci_reference_pulls_it_once() {
    let reg = registry();
    let tb = TestBed::new(small_config()).unwrap();
    let layer = reg
        .push_layer(
            "auto/img",
            &layer_tar(&[file("hello", "hi", 0o644, 0)]),
            true,
        )
        .unwrap();
    reg.push_image("auto/img", "v2", "amd64", &[layer], &serde_json::json!({}))
        .unwrap();
    let reference = format!("{}/auto/img:v2", reg.addr);
    for name in ["a1", "a2"] {
        let vm = tb
            .daemon
            .services
            .vm
            .create(
                banger_api::types::VmCreateParams {
                    name: Some(name.into()),
                    image: Some(reference.clone()),
                    no_start: true,
                    ..Default::default()
                },
                &Arc::default(),
            )
            .await
            .unwrap();
        assert_eq!(
            vm.image, "img-v2",
            "stored under the reference's default name"
        );
    }
    let img = tb.daemon.services.image.show("img-v2").await.unwrap();
    assert_eq!(img.used_by, ["a1", "a2"], "pulled once, used twice");
    assert_eq!(
        img.kernel.as_deref(),
        Some("test-kernel"),
        "the default image's kernel"
    );
    let err = tb
        .daemon
        .services
        .vm
        .create(
            banger_api::types::VmCreateParams {
                name: Some("bad".into()),
                image: Some("Not/A Ref".into()),
                no_start: true,
                ..Default::default()
            },
            &Arc::default(),
        )
        .await
        .wire()
        .unwrap_err();
    assert_eq!(err.kind(), ErrorCode::BadRequest);
    assert!(tb.daemon.infra.store.get_vm("bad").unwrap().is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn test_an_oci_reference_never_means_a_local_image_that_shares_its_default_name() {
    let reg = registry();
    let tb = TestBed::new(small_config()).unwrap();
    // `<registry>/team/test:image` and `<registry>/other/test:image` both default to
    // `test-image`: the name of the test bed's own (non-OCI) image.
    for repo in ["team/test", "other/test"] {
        let layer = reg
            .push_layer(repo, &layer_tar(&[file("from", repo, 0o644, 0)]), true)
            .unwrap();
        reg.push_image(repo, "image", "amd64", &[layer], &serde_json::json!({}))
            .unwrap();
    }
    let create = |name: &str, image: String| {
        let vms = Arc::clone(&tb.daemon.services.vm);
        let name = name.to_owned();
        async move {
            vms.create(
                banger_api::types::VmCreateParams {
                    name: Some(name),
                    image: Some(image),
                    ..Default::default()
                },
                &Arc::default(),
            )
            .await
            .unwrap()
        }
    };
    let team = format!("{}/team/test:image", reg.addr);
    let other = format!("{}/other/test:image", reg.addr);
    let a = create("t1", team.clone()).await;
    assert_ne!(a.image, "test-image", "the local image was not booted");
    assert!(a.image.starts_with("test-image-"), "{}", a.image);
    let shown = tb.daemon.services.image.show(&a.image).await.unwrap();
    assert_eq!(shown.source, format!("oci:{team}"));
    // It booted the referenced image: its system disk holds that image's file.
    assert_eq!(a.state, banger_api::types::VmState::Running);
    let root = tb
        .daemon
        .infra
        .layout
        .vms_dir()
        .join(&a.id)
        .join("root.ext4");
    let from = std::process::Command::new("debugfs")
        .args(["-R", "cat /from"])
        .arg(&root)
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&from.stdout), "team/test");
    let b = create("o1", other.clone()).await;
    assert!(b.image.starts_with("test-image-"), "{}", b.image);
    assert_ne!(b.image, a.image, "two references, two images");
    assert_eq!(
        tb.daemon
            .services
            .image
            .show(&b.image)
            .await
            .unwrap()
            .source,
        format!("oci:{other}")
    );
    // The same reference again finds its image (no second pull), and the local image is
    // untouched.
    let again = create("t2", team).await;
    assert_eq!(again.image, a.image);
    let local = tb.daemon.services.image.show("test-image").await.unwrap();
    assert_eq!(local.source, "test");
    assert_eq!(
        tb.daemon
            .services
            .image
            .show(&a.image)
            .await
            .unwrap()
            .used_by,
        ["t1", "t2"]
    );
}
