//! Contract tests: banger's Firecracker backend against the fake Firecracker, which checks
//! every request against Firecracker's OpenAPI spec.
#![allow(
    clippy::tests_outside_test_module,
    clippy::unwrap_used,
    clippy::expect_used
)]

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use banger_host::vmm::firecracker::{Jail, Jailer, api_request, api_socket, jail_paths};
use banger_host::vmm::{Drive, FirecrackerVmm, NetSpec, VmSpec, Vmm, VmmError, VsockSpec};
use banger_testkit::fake_firecracker::read_journal;

const FAKE: &str = env!("CARGO_BIN_EXE_fake-firecracker");

fn spec(dir: &Path) -> VmSpec {
    let file = |name: &str| {
        let p = dir.join(name);
        std::fs::write(&p, b"x").unwrap();
        p
    };
    let run = dir.join("run");
    std::fs::create_dir_all(&run).unwrap();
    VmSpec {
        name: "web".into(),
        vcpu: 2,
        memory_mib: 512,
        kernel: file("vmlinux"),
        initrd: Some(file("initrd.img")),
        cmdline: "console=ttyS0 root=/dev/vda rw".into(),
        drives: vec![
            Drive {
                id: "rootfs".into(),
                path: file("root.ext4"),
                read_only: false,
            },
            Drive {
                id: "work".into(),
                path: file("work.ext4"),
                read_only: false,
            },
        ],
        net: Some(NetSpec {
            tap: "bt-0123456789ab".into(),
            mac: "06:00:ac:10:00:02".into(),
        }),
        vsock: Some(VsockSpec {
            cid: 3,
            uds_path: run.join("vsock.sock"),
        }),
        run_dir: run,
        console_log: dir.join("console.log"),
        vmm_log: dir.join("vmm.log"),
        restore: None,
        restore_owned: false,
        cgroup: Vec::new(),
    }
}

/// Every journalled request was valid against the spec and answered 204.
fn assert_all_accepted(journal: &[banger_testkit::fake_firecracker::JournalEntry]) {
    for e in journal {
        assert!(
            e.violations.is_empty(),
            "{} {}: {:?}",
            e.method,
            e.path,
            e.violations
        );
        assert_eq!(e.status, 204, "{} {}: {}", e.method, e.path, e.body);
    }
}

fn wait_dead(vmm: &dyn Vmm, h: &banger_host::vmm::VmmHandle) -> bool {
    let deadline = Instant::now() + Duration::from_secs(5);
    while vmm.is_alive(h) {
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    true
}

fn processes_with_arg(arg: &Path) -> usize {
    let needle = arg.as_os_str().as_encoded_bytes().to_vec();
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| std::fs::read(e.path().join("cmdline")).ok())
        .filter(|c| c.split(|b| *b == 0).any(|a| a == needle.as_slice()))
        .count()
}

#[test]
fn launch_sends_only_spec_valid_requests_and_boots() {
    let dir = tempfile::tempdir().unwrap();
    let s = spec(dir.path());
    let vmm = FirecrackerVmm::new(PathBuf::from(FAKE));
    assert_eq!(vmm.version().unwrap(), (1, 16, 1));
    let h = vmm.launch(&s).unwrap();
    assert_eq!(h.backend, "firecracker");
    assert!(vmm.is_alive(&h));
    let journal = read_journal(&h.control_socket);
    assert_all_accepted(&journal);
    let paths: Vec<&str> = journal.iter().map(|e| e.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "/logger",
            "/metrics",
            "/machine-config",
            "/boot-source",
            "/drives/rootfs",
            "/drives/work",
            "/network-interfaces/eth0",
            "/vsock",
            "/actions"
        ]
    );
    assert_eq!(journal[2].body["vcpu_count"], 2);
    assert_eq!(journal[4].body["is_root_device"], true);
    assert_eq!(journal[5].body["is_root_device"], false);
    assert_eq!(journal[6].body["host_dev_name"], "bt-0123456789ab");
    assert_eq!(journal[8].body["action_type"], "InstanceStart");
    // The instance reports running; the serial console went to console.log.
    let info = api_request(&h.control_socket, "GET", "/", None).unwrap();
    assert_eq!(info.status, 200);
    assert!(info.body.contains("\"Running\""), "{}", info.body);
    assert!(
        std::fs::read_to_string(&s.console_log)
            .unwrap()
            .contains("booted")
    );
    // Graceful stop: Ctrl-Alt-Del makes Firecracker exit.
    vmm.request_shutdown(&h);
    assert!(
        wait_dead(&vmm, &h),
        "firecracker exited after SendCtrlAltDel"
    );
    let last = read_journal(&h.control_socket).pop().unwrap();
    assert_eq!(last.body["action_type"], "SendCtrlAltDel");
    assert!(last.violations.is_empty());
}

#[test]
fn api_errors_surface_the_fault_message_and_leave_no_process() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = spec(dir.path());
    s.kernel = dir.path().join("missing-vmlinux");
    let vmm = FirecrackerVmm::new(PathBuf::from(FAKE));
    let err = vmm.launch(&s).unwrap_err();
    match &err {
        VmmError::Api {
            request,
            status,
            fault,
        } => {
            assert_eq!((request.as_str(), *status), ("PUT /boot-source", 400));
            assert!(fault.contains("missing-vmlinux"), "{fault}");
        }
        other => panic!("unexpected {other:?}"),
    }
    let sock = api_socket(&s.run_dir);
    let deadline = Instant::now() + Duration::from_secs(5);
    while processes_with_arg(&sock) > 0 {
        assert!(
            Instant::now() < deadline,
            "the failed firecracker was killed"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(read_journal(&sock).iter().all(|e| e.violations.is_empty()));
}

#[test]
fn kill_ends_the_vmm() {
    let dir = tempfile::tempdir().unwrap();
    let vmm = FirecrackerVmm::new(PathBuf::from(FAKE));
    let h = vmm.launch(&spec(dir.path())).unwrap();
    vmm.kill(&h);
    assert!(wait_dead(&vmm, &h));
}

#[test]
fn old_versions_and_long_socket_paths_are_refused_before_spawning() {
    let dir = tempfile::tempdir().unwrap();
    let old = dir.path().join("firecracker-v1.4.1");
    std::os::unix::fs::symlink(FAKE, &old).unwrap();
    let s = spec(dir.path());
    let err = FirecrackerVmm::new(old).launch(&s).unwrap_err();
    assert!(
        matches!(&err, VmmError::Unsupported(m) if m.contains("1.4.1") && m.contains("1.5.0")),
        "{err:?}"
    );
    assert!(!api_socket(&s.run_dir).exists(), "nothing was started");

    let mut s = spec(dir.path());
    s.run_dir = dir.path().join("x".repeat(110));
    let err = FirecrackerVmm::new(PathBuf::from(FAKE))
        .launch(&s)
        .unwrap_err();
    assert!(matches!(err, VmmError::SocketPathTooLong(_)), "{err:?}");

    let err = FirecrackerVmm::new(dir.path().join("no-such-firecracker"))
        .launch(&spec(dir.path()))
        .unwrap_err();
    assert!(err.to_string().contains("no-such-firecracker"), "{err}");
}

/// The daemon config of the daemon-level contract tests: the test image, short timeouts,
/// small VMs.
fn daemon_config() -> banger_config::Config {
    banger_config::Config {
        default_image_name: banger_testkit::daemon::TEST_IMAGE.into(),
        boot_timeout_secs: 5,
        stop_timeout_secs: 5,
        tap_pool_size: 0,
        vm_defaults: banger_config::VmDefaults {
            vcpu: Some(2),
            memory_mib: Some(256),
            disk_size: Some("256M".into()),
        },
        ..banger_config::Config::default()
    }
}

/// The daemon's VM lifecycle on the Firecracker backend (fake Firecracker, fake guest):
/// create boots through the API, `vm show` names the backend, stop shuts down gracefully,
/// delete leaves nothing.
#[tokio::test(flavor = "multi_thread")]
async fn daemon_lifecycle_on_the_firecracker_backend() {
    use banger_api::types::{VmCreateParams, VmState};
    use banger_daemon::progress::Progress;
    use banger_daemon::services::Lifecycle;
    use banger_testkit::daemon::TestBed;
    use std::sync::Arc;

    let config = daemon_config();
    let fc: Arc<dyn Vmm> = Arc::new(FirecrackerVmm::new(PathBuf::from(FAKE)));
    let bed = TestBed::with_vmm(config, Some(fc)).unwrap();
    let vms = &bed.daemon.services.vm;
    let p = VmCreateParams {
        name: Some("fc1".into()),
        ..Default::default()
    };
    let vm = vms.create(p, &Arc::new(Progress::default())).await.unwrap();
    assert_eq!(vm.state, VmState::Running);
    assert_eq!(vm.vmm.as_deref(), Some("firecracker"));
    let sock = bed
        .daemon
        .infra
        .layout
        .runtime_dir
        .join("vms")
        .join(&vm.id)
        .join("fc.sock");
    let journal = read_journal(&sock);
    assert!(
        journal
            .iter()
            .all(|e| e.violations.is_empty() && e.status == 204),
        "{journal:?}"
    );
    let paths: Vec<(&str, &str)> = journal
        .iter()
        .map(|e| (e.method.as_str(), e.path.as_str()))
        .collect();
    // Booted, then (warm starts are on) paused, snapshotted as the image's template, resumed.
    assert_eq!(
        paths[paths.len() - 4..],
        [
            ("PUT", "/actions"),
            ("PATCH", "/vm"),
            ("PUT", "/snapshot/create"),
            ("PATCH", "/vm")
        ],
        "{journal:?}"
    );
    // The next create restores the template with its own tap and vsock socket, and the
    // guest gets its own identity.
    let p = VmCreateParams {
        name: Some("fc2".into()),
        ..Default::default()
    };
    let vm2 = vms.create(p, &Arc::new(Progress::default())).await.unwrap();
    assert!(
        vm2.started_from
            .as_deref()
            .unwrap()
            .starts_with("template "),
        "{vm2:?}"
    );
    let run2 = bed
        .daemon
        .infra
        .layout
        .runtime_dir
        .join("vms")
        .join(&vm2.id);
    let journal2 = read_journal(&run2.join("fc.sock"));
    let load = journal2.last().unwrap();
    assert_eq!(load.path, "/snapshot/load");
    assert!(load.violations.is_empty() && load.status == 204, "{load:?}");
    assert_eq!(
        load.body["vsock_override"]["uds_path"],
        run2.join("vsock.sock").display().to_string()
    );
    let tap1 = journal
        .iter()
        .find(|e| e.path == "/network-interfaces/eth0")
        .unwrap()
        .body["host_dev_name"]
        .clone();
    assert_ne!(load.body["network_overrides"][0]["host_dev_name"], tap1);
    let ids = bed.guest.identities.lock().unwrap().clone();
    assert_eq!(ids.len(), 1);
    assert_eq!(ids[0].hostname, "fc2");
    assert_eq!(ids[0].address, format!("{}/24", vm2.guest_ip));
    let stopped = vms.lifecycle("fc1", Lifecycle::Stop).await.unwrap();
    assert_eq!(stopped.state, VmState::Stopped);
    vms.lifecycle("fc1", Lifecycle::Delete).await.unwrap();
    vms.lifecycle("fc2", Lifecycle::Delete).await.unwrap();
    for s in vms.snapshot_list().await.unwrap() {
        vms.snapshot_rm(&s.name).await.unwrap();
    }
    assert_eq!(bed.leftovers(), Vec::<String>::new());
}

/// Snapshot of a running VM and a copy restored from it: every request valid against the
/// spec, the load overrides the tap and the vsock socket, and the copy's drives resolve in
/// its own directory (Firecracker 1.16 cannot override drive paths on load).
#[test]
fn snapshot_and_restore_requests_validate_and_copies_use_their_own_disks() {
    let parent_dir = tempfile::tempdir().unwrap();
    let parent = spec(parent_dir.path());
    let vmm = FirecrackerVmm::new(PathBuf::from(FAKE));
    assert!(vmm.supports_snapshots());
    let h = vmm.launch(&parent).unwrap();
    let snap = tempfile::tempdir().unwrap();
    // Snapshots are taken paused.
    assert!(vmm.snapshot(&h, &parent, snap.path()).is_err());
    vmm.pause(&h).unwrap();
    vmm.snapshot(&h, &parent, snap.path()).unwrap();
    vmm.resume(&h).unwrap();
    let journal = read_journal(&h.control_socket);
    for e in &journal {
        assert!(
            e.violations.is_empty(),
            "{} {}: {:?}",
            e.method,
            e.path,
            e.violations
        );
    }
    let create = journal
        .iter()
        .rfind(|e| e.path == "/snapshot/create")
        .unwrap();
    assert_eq!(create.status, 204, "{}", create.body);
    assert_eq!(create.body["snapshot_type"], "Full");
    // Drives went in relative to the VM's directory, where Firecracker runs.
    let drive = journal.iter().find(|e| e.path == "/drives/rootfs").unwrap();
    assert_eq!(drive.body["path_on_host"], "root.ext4");

    // A copy: its own directory with its own disks, tap and vsock socket.
    let child_dir = tempfile::tempdir().unwrap();
    let mut child = spec(child_dir.path());
    child.net.as_mut().unwrap().tap = "bt-abcdefabcdef".into();
    child.restore = Some(snap.path().to_owned());
    let c = vmm.launch(&child).unwrap();
    let journal = read_journal(&c.control_socket);
    let paths: Vec<&str> = journal.iter().map(|e| e.path.as_str()).collect();
    assert_eq!(paths, ["/logger", "/metrics", "/snapshot/load"]);
    let load = &journal[2];
    assert!(load.violations.is_empty(), "{:?}", load.violations);
    assert_eq!(load.status, 204, "{}", load.body);
    assert_eq!(
        load.body["network_overrides"][0]["host_dev_name"],
        "bt-abcdefabcdef"
    );
    assert_eq!(
        load.body["vsock_override"]["uds_path"],
        child.vsock.as_ref().unwrap().uds_path.display().to_string()
    );
    assert_eq!(load.body["mem_backend"]["backend_type"], "File");
    // Where the copy's drives resolve: its own directory, never the parent's.
    let config = api_request(&c.control_socket, "GET", "/vm/config", None).unwrap();
    let config: serde_json::Value = serde_json::from_str(&config.body).unwrap();
    let cwd = std::fs::read_link(format!("/proc/{}/cwd", c.pid)).unwrap();
    for d in config["drives"].as_array().unwrap() {
        let resolved = cwd.join(d["path_on_host"].as_str().unwrap());
        assert!(
            resolved.starts_with(child_dir.path()),
            "{}",
            resolved.display()
        );
        assert!(!resolved.starts_with(parent_dir.path()));
    }
    // A copy whose directory lacks the disks fails to load instead of opening others'.
    let bare = tempfile::tempdir().unwrap();
    let mut orphan = spec(bare.path());
    std::fs::remove_file(bare.path().join("work.ext4")).unwrap();
    orphan.restore = Some(snap.path().to_owned());
    let err = vmm.launch(&orphan).unwrap_err().to_string();
    assert!(err.contains("block device"), "{err}");
    vmm.kill(&h);
    vmm.kill(&c);
}

/// The Firecracker process runs in the VM's cgroup from its first instruction (the real
/// host hierarchy: needs root).
#[test]
fn launch_places_firecracker_in_the_vms_cgroup() {
    use banger_host::cgroup::{Hierarchy, Limits, VmCgroups};
    use banger_testkit::require;
    if !require::met(&[require::root()]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let instance = format!("contract-{}", std::process::id());
    let cg = VmCgroups::new(Hierarchy::detect().unwrap(), &instance).unwrap();
    let limits = Limits::for_vm(2, 512, 256);
    let mut s = spec(dir.path());
    s.cgroup = cg.create("fc", &limits).unwrap();
    let vmm = FirecrackerVmm::new(PathBuf::from(FAKE));
    let h = vmm.launch(&s).unwrap();
    let usage = cg.usage("fc").unwrap();
    vmm.kill(&h);
    assert!(wait_dead(&vmm, &h));
    assert_eq!(usage.procs, vec![h.pid]);
    assert_eq!(usage.limits, limits);
    // The cgroup empties once the killed process has been reaped (by the backend's
    // reaper thread), which may be a moment after it died.
    let deadline = Instant::now() + Duration::from_secs(5);
    while !cg.remove_quietly("fc").is_empty() {
        assert!(Instant::now() < deadline, "the cgroup never emptied");
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(cg.names().is_empty());
    cg.remove_instance();
}

const JAILER: &str = env!("CARGO_BIN_EXE_fake-jailer");

/// The fake's journal of a jailed launch (it is written inside the jail).
fn jail_journal(jail: &Jail) -> Vec<banger_testkit::fake_firecracker::JournalEntry> {
    read_journal(&jail.host(jail_paths::API_SOCK))
}

/// Firecracker under the jailer (config `jailer_bin`): the jailer gets the VM id, the
/// binary, uid/gid and a chroot base in the VM's directory; Firecracker runs there as
/// uid:gid, every path it is given is inside the jail (the fake resolves them there and
/// refuses others), the drives are the VM's own files (same inode), the API and vsock
/// sockets answer at their usual paths; a snapshot moves out of the jail and a copy
/// restores in its own jail with its own disks.
#[test]
fn jailer_runs_firecracker_chrooted_as_its_user_on_the_vms_own_files() {
    use banger_testkit::require;
    use std::os::unix::fs::MetadataExt as _;
    if !require::met(&[require::root()]) {
        return;
    }
    let (uid, gid) = (65534, 65534);
    let jailer = Jailer {
        binary: PathBuf::from(JAILER),
        uid,
        gid,
    };
    let vmm = FirecrackerVmm::new(PathBuf::from(FAKE)).with_jailer(Some(jailer));
    let parent_dir = tempfile::tempdir().unwrap();
    let parent = spec(parent_dir.path());
    let jail = Jail::of(&parent, Path::new(FAKE)).unwrap();
    assert_eq!(jail.base, parent_dir.path().join("jail"));
    let h = vmm.launch(&parent).unwrap();
    let record: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(jail.root.parent().unwrap().join("jailer.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(record["id"], "run");
    assert_eq!(record["uid"], uid);
    assert_eq!(
        record["extra"],
        serde_json::json!(["--api-sock", "/fc.sock"])
    );
    let status = std::fs::read_to_string(format!("/proc/{}/status", h.pid)).unwrap();
    let ids = |key: &str| {
        status
            .lines()
            .find(|l| l.starts_with(key))
            .unwrap()
            .split_whitespace()
            .nth(1)
            .unwrap()
            .parse::<u32>()
            .unwrap()
    };
    assert_eq!((ids("Uid:"), ids("Gid:")), (uid, gid), "{status}");
    assert_eq!(
        std::fs::read_link(format!("/proc/{}/cwd", h.pid)).unwrap(),
        jail.root
    );
    let journal = jail_journal(&jail);
    assert!(!journal.is_empty());
    assert_all_accepted(&journal);
    let body = |path: &str| &journal.iter().find(|e| e.path == path).unwrap().body;
    assert_eq!(body("/boot-source")["kernel_image_path"], "/vmlinux");
    assert_eq!(body("/logger")["log_path"], "/vmm.log");
    assert_eq!(body("/vsock")["uds_path"], "/v.sock");
    for (id, file) in [("rootfs", "root.ext4"), ("work", "work.ext4")] {
        assert_eq!(body(&format!("/drives/{id}"))["path_on_host"], file);
        let inside = std::fs::metadata(jail.root.join(file)).unwrap();
        let own = std::fs::metadata(parent_dir.path().join(file)).unwrap();
        assert_eq!(inside.ino(), own.ino(), "{file} is the vm's own");
        assert_eq!((own.uid(), own.gid()), (uid, gid));
    }
    // The API and vsock sockets answer where the daemon looks for them.
    let r = api_request(&api_socket(&parent.run_dir), "GET", "/", None).unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    std::os::unix::net::UnixStream::connect(&parent.vsock.as_ref().unwrap().uds_path).unwrap();

    // Snapshot: written in the jail, moved out.
    let snap = tempfile::tempdir().unwrap();
    vmm.pause(&h).unwrap();
    vmm.snapshot(&h, &parent, snap.path()).unwrap();
    vmm.resume(&h).unwrap();
    for f in ["state", "memory"] {
        assert!(snap.path().join(f).is_file(), "{f}");
    }
    assert!(!jail.host(jail_paths::SNAPSHOT_OUT).exists());
    let create = jail_journal(&jail)
        .into_iter()
        .rfind(|e| e.path == "/snapshot/create")
        .unwrap();
    assert_eq!(create.body["snapshot_path"], "/snapshot-out/state");
    assert!(create.violations.is_empty(), "{:?}", create.violations);

    // A copy restores in its own jail, on its own disks.
    let child_dir = tempfile::tempdir().unwrap();
    let mut child = spec(child_dir.path());
    child.net.as_mut().unwrap().tap = "bt-abcdefabcdef".into();
    child.restore = Some(snap.path().to_owned());
    let c = vmm.launch(&child).unwrap();
    let child_jail = Jail::of(&child, Path::new(FAKE)).unwrap();
    let journal = jail_journal(&child_jail);
    let load = journal.iter().find(|e| e.path == "/snapshot/load").unwrap();
    assert!(load.violations.is_empty(), "{:?}", load.violations);
    assert_eq!(load.status, 204, "{}", load.body);
    assert_eq!(load.body["snapshot_path"], "/snapshot/state");
    assert_eq!(load.body["vsock_override"]["uds_path"], "/v.sock");
    let config = api_request(&c.control_socket, "GET", "/vm/config", None).unwrap();
    let config: serde_json::Value = serde_json::from_str(&config.body).unwrap();
    for d in config["drives"].as_array().unwrap() {
        let name = d["path_on_host"].as_str().unwrap();
        let inside = std::fs::metadata(child_jail.root.join(name)).unwrap();
        let own = std::fs::metadata(child_dir.path().join(name)).unwrap();
        let parents = std::fs::metadata(parent_dir.path().join(name)).unwrap();
        assert_eq!(inside.ino(), own.ino());
        assert_ne!(inside.ino(), parents.ino());
    }
    vmm.kill(&h);
    vmm.kill(&c);
    assert!(wait_dead(&vmm, &h) && wait_dead(&vmm, &c));
}

/// The jailer refuses what the real one refuses, and banger reports it without leaving a
/// process.
#[test]
fn a_jailer_that_fails_leaves_no_process_and_says_why() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = spec(dir.path());
    // Not a valid jail id: refused before anything runs.
    s.run_dir = dir.path().join("bad id");
    std::fs::create_dir_all(&s.run_dir).unwrap();
    let vmm = FirecrackerVmm::new(PathBuf::from(FAKE)).with_jailer(Some(Jailer {
        binary: PathBuf::from(JAILER),
        uid: 65534,
        gid: 65534,
    }));
    let err = vmm.launch(&s).unwrap_err().to_string();
    assert!(err.contains("jail"), "{err}");
    assert_eq!(processes_with_arg(&dir.path().join("jail")), 0);
}

/// The daemon on Firecracker under the jailer (config `jailer_bin`): a cold create, a warm
/// create from the image's template and a fork of two, each VMM jailed in its own VM's
/// directory with every request valid; deleting everything leaves nothing.
#[tokio::test(flavor = "multi_thread")]
async fn daemon_on_a_jailed_firecracker_creates_restores_and_forks() {
    use banger_api::types::{VmCreateParams, VmForkParams, VmState};
    use banger_daemon::progress::Progress;
    use banger_daemon::services::Lifecycle;
    use banger_testkit::daemon::TestBed;
    use banger_testkit::require;
    use std::sync::Arc;
    if !require::met(&[require::root()]) {
        return;
    }
    let config = daemon_config();
    let fc: Arc<dyn Vmm> = Arc::new(FirecrackerVmm::new(PathBuf::from(FAKE)).with_jailer(Some(
        Jailer {
            binary: PathBuf::from(JAILER),
            uid: 65534,
            gid: 65534,
        },
    )));
    let bed = TestBed::with_vmm(config, Some(fc)).unwrap();
    let vms = &bed.daemon.services.vm;
    let create = |name: &str| VmCreateParams {
        name: Some(name.into()),
        ..Default::default()
    };
    let vm1 = vms
        .create(create("j1"), &Arc::new(Progress::default()))
        .await
        .unwrap();
    let vm2 = vms
        .create(create("j2"), &Arc::new(Progress::default()))
        .await
        .unwrap();
    assert!(
        vm2.started_from
            .as_deref()
            .unwrap()
            .starts_with("template "),
        "{vm2:?}"
    );
    let fork = vms
        .fork(VmForkParams {
            name: "j2".into(),
            count: 2,
            ..VmForkParams::default()
        })
        .await
        .unwrap();
    assert_eq!(fork.vms.len(), 2);
    let mut all = vec![vm1, vm2];
    all.extend(fork.vms);
    for vm in &all {
        assert_eq!(vm.state, VmState::Running, "{vm:?}");
        let dir = bed.daemon.infra.layout.vms_dir().join(&vm.id);
        let run = bed.daemon.infra.layout.runtime_dir.join("vms").join(&vm.id);
        let exec = Path::new(FAKE).file_name().unwrap();
        let root = dir.join("jail").join(exec).join(&vm.id).join("root");
        let journal = read_journal(&root.join("fc.sock"));
        assert!(!journal.is_empty(), "{}", vm.name);
        for e in &journal {
            assert!(
                e.violations.is_empty() && e.status == 204,
                "{} {} {}: {:?} {}",
                vm.name,
                e.method,
                e.path,
                e.violations,
                e.body
            );
        }
        // Its sockets answer at the daemon's usual paths.
        let r = api_request(&run.join("fc.sock"), "GET", "/", None).unwrap();
        assert_eq!(r.status, 200, "{}", vm.name);
    }
    for vm in &all {
        vms.lifecycle(&vm.name, Lifecycle::Delete).await.unwrap();
    }
    for s in vms.snapshot_list().await.unwrap() {
        vms.snapshot_rm(&s.name).await.unwrap();
    }
    assert_eq!(bed.leftovers(), Vec::<String>::new());
}
