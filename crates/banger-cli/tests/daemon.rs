//! The real `banger` and `bangerd` binaries against a daemon on a temp socket.
#![allow(
    clippy::tests_outside_test_module,
    clippy::unwrap_used,
    clippy::needless_pass_by_value
)]

mod common;

use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::time::{Duration, Instant};

use common::{Env, stderr};
use serde_json::{Value, json};

fn rpc_line(stream: &mut UnixStream, reader: &mut BufReader<UnixStream>, line: &[u8]) -> Value {
    stream.write_all(line).unwrap();
    let mut response = String::new();
    reader.read_line(&mut response).unwrap();
    serde_json::from_str(&response).unwrap()
}

fn request(method: &str, params: Value) -> Vec<u8> {
    let mut line = serde_json::to_vec(
        &json!({"jsonrpc": "2.0", "id": 7, "method": method, "params": params, "protocol": banger_api::PROTOCOL_VERSION}),
    )
    .unwrap();
    line.push(b'\n');
    line
}

fn error_kind(v: &Value) -> &str {
    v["error"]["data"]["kind"]
        .as_str()
        .unwrap_or_else(|| panic!("not an error: {v}"))
}

#[test]
fn test_ping_autostarts_daemon_and_socket_is_private() {
    let env = Env::new();
    assert!(!env.socket().exists());
    let out = env.ok(&["ping"]);
    assert!(out.starts_with("pong from bangerd"), "{out}");
    let mode = std::fs::metadata(env.socket())
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    let status: Value = serde_json::from_str(&env.ok(&["daemon", "status", "--json"])).unwrap();
    assert_eq!(status["running"], true);
    assert_eq!(status["ping"]["version"], env!("CARGO_PKG_VERSION"));
    assert!(env.home().join("state/bangerd.log").exists());
}

#[test]
fn test_other_uid_is_refused_unauthorized() {
    let env = Env::new();
    env.ok(&["ping"]);
    env.open_permissions();
    // fork + setuid(nobody) + exec: the client runs as another user. The binary is copied
    // next to the socket so that user can reach it wherever the checkout lives.
    let bin = env.home().join("banger");
    std::fs::copy(common::banger_bin(), &bin).unwrap();
    let out = std::process::Command::new(&bin)
        .arg("ping")
        .env_clear()
        .env("BANGER_HOME", env.home())
        .env("HOME", env.home())
        .env("BANGER_NO_AUTOSTART", "1")
        .env("NO_COLOR", "1")
        .uid(65534)
        .gid(65534)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("unauthorized"), "{err}");
    // The daemon keeps serving its owner.
    env.ok(&["ping"]);
}

#[test]
fn test_bad_frames_get_errors_and_daemon_keeps_serving() {
    let env = Env::new();
    env.ok(&["ping"]);
    let mut stream = UnixStream::connect(env.socket()).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut reader = BufReader::new(stream.try_clone().unwrap());

    let garbage = rpc_line(&mut stream, &mut reader, b"this is not json\n");
    assert_eq!(error_kind(&garbage), "bad_request");
    assert!(
        garbage["error"]["data"]["op_id"]
            .as_str()
            .unwrap()
            .starts_with("op-")
    );

    let mut oversize = vec![b'a'; 1 << 20];
    oversize.extend_from_slice(b"aa\n");
    assert_eq!(
        error_kind(&rpc_line(&mut stream, &mut reader, &oversize)),
        "bad_request"
    );

    let unknown = rpc_line(&mut stream, &mut reader, &request("vm.explode", json!({})));
    assert_eq!(error_kind(&unknown), "unknown_method");
    assert_eq!(unknown["id"], 7);

    let wrong = rpc_line(
        &mut stream,
        &mut reader,
        &request("vm.show", json!({"nam": "x"})),
    );
    assert_eq!(error_kind(&wrong), "bad_request");

    let no_version = rpc_line(
        &mut stream,
        &mut reader,
        b"{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"ping\"}\n",
    );
    assert_eq!(error_kind(&no_version), "bad_version");
    let old_version = rpc_line(
        &mut stream,
        &mut reader,
        b"{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"ping\",\"protocol\":0}\n",
    );
    assert_eq!(error_kind(&old_version), "bad_version");

    // Same connection still works, and so does a new client.
    let pong = rpc_line(&mut stream, &mut reader, &request("ping", json!({})));
    assert!(pong["result"]["pid"].as_u64().is_some(), "{pong}");
    env.ok(&["ping"]);
}

#[test]
fn test_vm_show_missing_is_not_found() {
    let env = Env::new();
    let out = env.banger(&["vm", "show", "nosuch"]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("not_found") && err.contains("op op-"), "{err}");
    assert!(out.stdout.is_empty(), "errors never go to stdout");
}

#[test]
fn test_vm_list_and_show_read_the_store() {
    let env = Env::new();
    std::fs::create_dir_all(env.home().join("state")).unwrap();
    {
        let store = banger_store::Store::open(&env.db()).unwrap();
        store
            .upsert_image(&banger_store::ImageRecord {
                id: "img".into(),
                name: "debian-bookworm".into(),
                source: "test".into(),
                managed: true,
                rootfs_path: "/r".into(),
                work_seed_path: None,
                kernel_id: None,
                digest: None,
                config: json!({}),
                size_bytes: 0,
                created_at: "2026-01-01T00:00:00Z".into(),
            })
            .unwrap();
        for (i, name) in ["alpha", "beta"].iter().enumerate() {
            store
                .insert_vm(&banger_store::VmRecord {
                    id: format!("id{i}"),
                    name: (*name).into(),
                    image_id: "img".into(),
                    state: banger_api::types::VmState::Stopped,
                    guest_ip: format!("172.16.0.{}", i + 2),
                    vcpu: 2,
                    memory_mib: 1024,
                    disk_bytes: 8 << 30,
                    nat: false,
                    vmm: Some("qemu".into()),
                    spec: json!({}),
                    workspace: None,
                    last_error: None,
                    created_at: format!("2026-01-01T00:00:0{i}Z"),
                    updated_at: "2026-01-01T00:00:00Z".into(),
                    last_touched_at: "2026-01-01T00:00:00Z".into(),
                })
                .unwrap();
        }
    }
    let list: Value = serde_json::from_str(&env.ok(&["vm", "list", "--json"])).unwrap();
    let names: Vec<_> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["alpha", "beta"]);
    let table = env.ok(&["ps"]);
    assert!(
        table.lines().nth(1).unwrap().starts_with("alpha"),
        "{table}"
    );
    let show: Value = serde_json::from_str(&env.ok(&["vm", "show", "beta", "--json"])).unwrap();
    assert_eq!(show["guest_ip"], "172.16.0.3");
    assert_eq!(show["state"], "stopped");

    // `vm prune` asks first; without a terminal to ask on it refuses, deleting nothing.
    let out = env.banger(&["vm", "prune"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("-f"), "{}", stderr(&out));
    let list: Value = serde_json::from_str(&env.ok(&["vm", "list", "--json"])).unwrap();
    assert_eq!(list.as_array().unwrap().len(), 2);
    // -f deletes every VM that is not running, printing their names.
    let pruned = env.ok(&["vm", "prune", "-f"]);
    assert_eq!(pruned.lines().collect::<Vec<_>>(), ["alpha", "beta"]);
    let list: Value = serde_json::from_str(&env.ok(&["vm", "list", "--json"])).unwrap();
    assert!(list.as_array().unwrap().is_empty(), "{list}");
    assert!(
        env.banger(&["vm", "prune", "-f"]).status.success(),
        "nothing to prune is fine"
    );
}

#[test]
fn test_check_migrations_exit_codes() {
    let env = Env::new();
    let code = |env: &Env| {
        env.bangerd_cmd(&["--check-migrations"])
            .output()
            .unwrap()
            .status
            .code()
    };
    assert_eq!(code(&env), Some(1), "no database yet: migrations needed");
    env.ok(&["ping"]);
    assert_eq!(code(&env), Some(0));
    env.ok(&["daemon", "stop"]);
    record_future_migration(&env);
    assert_eq!(code(&env), Some(2));
    // A newer database is never modified, and the daemon refuses to start on it.
    let before = std::fs::read(env.db()).unwrap();
    let out = env.banger(&["ping"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("newer"), "{}", stderr(&out));
    assert_eq!(std::fs::read(env.db()).unwrap(), before);
    // A damaged database: reported (exit 3), the daemon refuses to start with what to do, and
    // the file is left as it is.
    let junk: Vec<u8> = (0..8192u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect();
    std::fs::write(env.db(), &junk).unwrap();
    let _ = std::fs::remove_file(env.db().with_extension("db-wal"));
    let _ = std::fs::remove_file(env.db().with_extension("db-shm"));
    assert_eq!(code(&env), Some(3));
    let out = env.banger(&["ping"]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("not a usable SQLite database") && err.contains("mv "),
        "{err}"
    );
    assert_eq!(std::fs::read(env.db()).unwrap(), junk);
}

/// Records a future migration, as a newer banger would have.
fn record_future_migration(env: &Env) {
    let status = std::process::Command::new("python3")
        .args([
            "-c",
            "import sqlite3,sys; c=sqlite3.connect(sys.argv[1]); c.execute(\"INSERT INTO schema_migrations (version, name) VALUES (999, 'future')\"); c.commit(); c.execute('PRAGMA wal_checkpoint(TRUNCATE)'); c.close()",
            env.db().to_str().unwrap(),
        ])
        .status()
        .unwrap();
    assert!(status.success());
}

#[test]
fn test_unknown_config_key_is_reported_with_file_line_and_key() {
    let env = Env::new();
    env.write_config_raw("log_level = \"debug\"\nnot_a_key = true\n");
    let out = env.banger(&["ping"]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("config.toml:2") && err.contains("not_a_key"),
        "{err}"
    );
    let direct = env.bangerd_cmd(&[]).output().unwrap();
    assert!(!direct.status.success());
    assert!(stderr(&direct).contains("not_a_key"));
}

#[test]
fn test_sigterm_and_shutdown_stop_gracefully() {
    let env = Env::new();
    let mut child = env.bangerd_cmd(&[]).spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while !env.socket().exists() {
        assert!(Instant::now() < deadline, "daemon did not bind");
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(send_sigterm(child.id()), 0);
    let status = child.wait().unwrap();
    assert!(status.success(), "{status}");
    assert!(!env.socket().exists(), "socket removed on shutdown");

    env.ok(&["ping"]);
    env.ok(&["daemon", "stop"]);
    assert!(!env.socket().exists());
    let log = std::fs::read_to_string(env.home().join("state/bangerd.log")).unwrap();
    assert!(
        log.contains("SIGTERM received") && log.contains("bangerd stopped"),
        "{log}"
    );
}

fn send_sigterm(pid: u32) -> i32 {
    std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap()
        .code()
        .unwrap()
}

#[test]
fn test_completion_scripts_generate() {
    let env = Env::new();
    for shell in ["bash", "zsh", "fish"] {
        let out = env.ok(&["completion", shell]);
        assert!(out.contains("banger"), "{shell}");
    }
}

#[test]
fn test_dns_and_net_status_report_the_server_and_create_no_interface() {
    let env = Env::new();
    let net: Value = serde_json::from_str(&env.ok(&["net", "status", "--json"])).unwrap();
    assert_eq!(net["bridge"], "br-fc");
    assert_eq!(net["tap_pool_size"], 0);
    assert!(net["idle_taps"].as_array().unwrap().is_empty());
    assert!(net["nat"].as_array().unwrap().is_empty());
    let listen = net["dns"]["listen"].as_str().unwrap().to_owned();
    assert!(listen.starts_with("127.0.0.1:"), "{net}");
    // The server answers over UDP as `dns status` says.
    let port = listen.rsplit(':').next().unwrap();
    let dig = std::process::Command::new("dig")
        .args([
            "@127.0.0.1",
            "-p",
            port,
            "banger-dns-check.vm",
            "+short",
            "+tries=1",
        ])
        .output();
    if let Ok(out) = dig {
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "127.0.0.1");
    }
    let dns: Value = serde_json::from_str(&env.ok(&["dns", "status", "--json"])).unwrap();
    assert_eq!(dns["listen"], listen.as_str());
    assert!(dns["records"].as_array().unwrap().is_empty());
    assert!(dns["host_resolves_vm"].is_boolean());
    // A daemon started in the host's namespace made no bridge.
    let link = std::process::Command::new("ip")
        .args(["link", "show", "br-fc"])
        .output()
        .unwrap();
    assert!(!link.status.success(), "no bridge on the host");
    let text = env.banger(&["dns", "status"]);
    assert!(text.status.success());
    let err = stderr(&text);
    let out = String::from_utf8_lossy(&text.stdout);
    assert!(out.contains("server"), "{out}");
    if dns["host_resolves_vm"] == false {
        assert!(err.contains("hint: route the `vm` domain"), "{err}");
    }
}

#[test]
fn test_doctor_reports_this_host() {
    let env = Env::new();
    let out = env.banger(&["doctor", "--json"]);
    let rows: Value = serde_json::from_slice(&out.stdout).unwrap();
    let row = |name: &str| {
        rows.as_array()
            .unwrap()
            .iter()
            .find(|r| r["name"] == name)
            .cloned()
            .unwrap_or_else(|| panic!("no {name} row in {rows}"))
    };
    let failed = rows
        .as_array()
        .unwrap()
        .iter()
        .any(|r| r["level"] == "FAIL");
    assert_eq!(out.status.success(), !failed, "exit code follows FAIL rows");
    assert_eq!(row("daemon")["level"], "PASS");
    assert_eq!(row("store")["level"], "PASS");
    let hw_virt = std::fs::read_to_string("/proc/cpuinfo")
        .unwrap()
        .split_whitespace()
        .any(|f| f == "vmx" || f == "svm");
    if std::path::Path::new("/dev/kvm").exists() && !hw_virt {
        // This machine: nested paravirtual KVM.
        assert_eq!(row("kvm")["level"], "WARN");
        assert!(
            row("kvm")["detail"]
                .as_str()
                .unwrap()
                .contains("cannot run stock guest kernels")
        );
        assert!(
            row("vmm backend")["detail"]
                .as_str()
                .unwrap()
                .starts_with("qemu (tcg)"),
            "{rows}"
        );
    }
    let text = env.banger(&["doctor"]);
    let table = String::from_utf8_lossy(&text.stdout);
    assert!(
        table.contains("CHECK") && table.contains("vmm backend"),
        "{table}"
    );
}

#[test]
fn test_concurrent_cold_starts_share_one_daemon() {
    let env = Env::new();
    let children: Vec<_> = (0..4)
        .map(|_| {
            env.banger_cmd(&["ping"])
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let mut pids = Vec::new();
    for c in children {
        let out = c.wait_with_output().unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        pids.push(
            text.split("(pid ")
                .nth(1)
                .unwrap()
                .split(')')
                .next()
                .unwrap()
                .to_owned(),
        );
    }
    pids.dedup();
    assert_eq!(pids.len(), 1, "one daemon serves every caller: {pids:?}");
}

#[test]
fn test_system_install_and_uninstall_into_a_staging_root() {
    let env = Env::new();
    let root = tempfile::tempdir().unwrap();
    let dest = root.path().display().to_string();
    let out = env.banger(&["system", "install", "--owner", "daemon", "--destdir", &dest]);
    assert!(out.status.success(), "{}", stderr(&out));
    for f in [
        "usr/local/bin/banger",
        "usr/local/bin/bangerd",
        "etc/systemd/system/bangerd.service",
        "etc/systemd/system/bangerd-root.service",
        "etc/banger/install.toml",
        "etc/banger/config.toml",
    ] {
        assert!(root.path().join(f).exists(), "{f} missing");
    }
    let info = std::fs::read_to_string(root.path().join("etc/banger/install.toml")).unwrap();
    assert!(
        info.contains("owner = \"daemon\"") && info.contains("uid = 1\n"),
        "{info}"
    );
    let mode = std::fs::metadata(root.path().join("usr/local/bin/bangerd"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o755);
    // The generated units pass systemd-analyze verify (against the host's own system units).
    use banger_testkit::require;
    if require::met(&[
        require::file("/usr/bin/systemd-analyze"),
        require::file("/usr/lib/systemd/system/sysinit.target"),
    ]) {
        let units = root.path().join("usr/lib/systemd");
        std::fs::create_dir_all(&units).unwrap();
        assert!(
            std::process::Command::new("cp")
                .args(["-a", "/usr/lib/systemd/system"])
                .arg(&units)
                .status()
                .unwrap()
                .success()
        );
        let verify = std::process::Command::new("systemd-analyze")
            .arg("verify")
            .arg(format!("--root={dest}"))
            .args([
                "/etc/systemd/system/bangerd.service",
                "/etc/systemd/system/bangerd-root.service",
            ])
            .output()
            .unwrap();
        assert!(
            verify.status.success() && verify.stderr.is_empty(),
            "systemd-analyze verify: {}",
            String::from_utf8_lossy(&verify.stderr)
        );
    }
    // An admin's config edit survives a re-install; uninstall keeps it, --purge removes it.
    std::fs::write(
        root.path().join("etc/banger/config.toml"),
        "log_level = \"debug\"\n",
    )
    .unwrap();
    let out = env.banger(&["system", "install", "--owner", "daemon", "--destdir", &dest]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        std::fs::read_to_string(root.path().join("etc/banger/config.toml")).unwrap(),
        "log_level = \"debug\"\n"
    );
    let out = env.banger(&["system", "uninstall", "--destdir", &dest]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(!root.path().join("usr/local/bin/bangerd").exists());
    assert!(
        !root
            .path()
            .join("etc/systemd/system/bangerd.service")
            .exists()
    );
    assert!(root.path().join("etc/banger/config.toml").exists());
    let out = env.banger(&["system", "install", "--owner", "daemon", "--destdir", &dest]);
    assert!(out.status.success());
    let out = env.banger(&["system", "uninstall", "--purge", "--destdir", &dest]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(!root.path().join("etc/banger").exists());
    // A user that does not exist, root, nobody: a clear error, nothing written.
    let empty = tempfile::tempdir().unwrap();
    for owner in ["no-such-user-here", "root", "nobody"] {
        let out = env.banger(&[
            "system",
            "install",
            "--owner",
            owner,
            "--destdir",
            &empty.path().display().to_string(),
        ]);
        assert_eq!(out.status.code(), Some(1), "{owner}");
        assert!(stderr(&out).contains("hint:"), "{}", stderr(&out));
    }
    assert_eq!(std::fs::read_dir(empty.path()).unwrap().count(), 0);
}

#[test]
fn test_kill_9_mid_pull_leaves_nothing_the_next_start_does_not_clean() {
    use banger_testkit::registry::{Entry, TestRegistry, layer_tar};
    let reg = TestRegistry::start().expect("docker-registry (scripts/test.sh installs it)");
    let env = Env::new();
    let mut noise = vec![0u8; 160 << 20];
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    for chunk in noise.chunks_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        chunk.copy_from_slice(&x.to_le_bytes()[..chunk.len()]);
    }
    let layer = reg
        .push_layer(
            "kill/img",
            &layer_tar(&[Entry::File("noise".into(), noise, 0o644, 0)]),
            false,
        )
        .unwrap();
    reg.push_image("kill/img", "v1", "amd64", &[layer], &json!({}))
        .unwrap();
    let kernel = env.home().join("vmlinux");
    std::fs::write(&kernel, b"\x7fELF test kernel").unwrap();
    let mut daemon = env.bangerd_cmd(&[]).spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while !env.socket().exists() {
        assert!(Instant::now() < deadline, "daemon did not bind");
        std::thread::sleep(Duration::from_millis(10));
    }
    env.ok(&[
        "kernel",
        "import",
        "k",
        "--vmlinux",
        &kernel.display().to_string(),
    ]);
    let reference = format!("{}/kill/img:v1", reg.addr);
    let mut pull = env
        .banger_cmd(&[
            "image",
            "pull",
            &reference,
            "--name",
            "killed",
            "--kernel-ref",
            "k",
        ])
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let partial = env.home().join("cache/blobs/partial");
    let deadline = Instant::now() + Duration::from_mins(1);
    loop {
        let busy = std::fs::read_dir(&partial).is_ok_and(|mut d| d.next().is_some());
        if busy {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the pull never started downloading"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
    daemon.kill().unwrap();
    daemon.wait().unwrap();
    let left: Vec<_> = std::fs::read_dir(&partial)
        .unwrap()
        .filter_map(Result::ok)
        .collect();
    let pulled = pull.wait().unwrap();
    assert!(!pulled.success(), "the pull fails with its daemon");
    assert!(
        !left.is_empty(),
        "killed mid-download: a partial blob is left for the next start"
    );
    // The next start (autostarted by the CLI) cleans up; the row never existed.
    let images: Value = serde_json::from_str(&env.ok(&["image", "list", "--json"])).unwrap();
    assert_eq!(images.as_array().unwrap().len(), 0, "{images}");
    assert!(std::fs::read_dir(&partial).unwrap().next().is_none());
    let staging: Vec<_> = std::fs::read_dir(env.home().join("state/images"))
        .map(|d| d.filter_map(Result::ok).map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(staging.is_empty(), "{staging:?}");
    // And the same pull now completes.
    let out = env.banger(&[
        "image",
        "pull",
        &reference,
        "--name",
        "killed",
        "--kernel-ref",
        "k",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let log = std::fs::read_to_string(env.home().join("state/bangerd.log")).unwrap();
    assert!(log.contains("removed leftovers"), "{log}");
}

#[test]
fn test_doctor_fix_makes_dirs_and_key_once() {
    let env = Env::new();
    let key = env.home().join("state/ssh/id_ed25519.pub");
    assert!(!key.exists());
    let out = env.banger(&["doctor", "--fix", "--yes"]);
    let err = stderr(&out);
    assert!(err.contains("fix: made the ssh key"), "{err}");
    assert!(key.exists());
    let first = std::fs::read_to_string(&key).unwrap();
    let again = stderr(&env.banger(&["doctor", "--fix", "--yes"]));
    assert!(again.contains("fix: ssh key exists"), "{again}");
    assert_eq!(
        std::fs::read_to_string(&key).unwrap(),
        first,
        "never replaced"
    );
    let bad = env.banger(&["doctor", "--fix", "--json"]);
    assert!(!bad.status.success(), "--fix and --json conflict");
}
