//! End to end: the real binaries boot real guests on the QEMU backend, each test in its own
//! network namespace and BANGER_HOME. Needs root, qemu and a prepared kernel + image, whose
//! home `scripts/test.sh` passes in `BANGER_E2E_HOME`; skipped (with a message) without it.
#![allow(
    clippy::tests_outside_test_module,
    clippy::unwrap_used,
    clippy::print_stderr
)]

mod common;

use std::path::PathBuf;
use std::process::{Command, Output};

use common::{Env, banger_bin, bangerd_bin, stderr};
use serde_json::Value;

struct Guest {
    env: Env,
    netns: String,
}

impl Guest {
    fn new() -> Option<Self> {
        let Some(shared) = std::env::var_os("BANGER_E2E_HOME").map(PathBuf::from) else {
            eprintln!("skipping: BANGER_E2E_HOME is not set (scripts/test.sh prepares it)");
            return None;
        };
        let env = Env::new();
        // Its own netns: the real defaults (tap pool, DNS on 127.0.0.1:42069).
        env.write_config_raw("");
        std::fs::create_dir_all(env.home().join("state")).unwrap();
        std::fs::copy(shared.join("state/state.db"), env.db()).unwrap();
        let netns = format!(
            "bt{}",
            &env.home().file_name().unwrap().to_string_lossy()[2..]
        );
        let netns: String = netns.chars().filter(char::is_ascii_alphanumeric).collect();
        assert!(
            Command::new("ip")
                .args(["netns", "add", &netns])
                .status()
                .unwrap()
                .success()
        );
        Command::new("ip")
            .args(["netns", "exec", &netns, "ip", "link", "set", "lo", "up"])
            .status()
            .unwrap();
        Some(Guest { env, netns })
    }

    fn cmd(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.netns])
            .arg(banger_bin())
            .args(args);
        cmd.env("BANGER_HOME", self.env.home())
            .env("BANGER_DAEMON_BIN", bangerd_bin())
            .env("NO_COLOR", "1");
        cmd
    }

    fn run(&self, args: &[&str]) -> Output {
        self.cmd(args).output().unwrap()
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "banger {args:?}: {}\n{}",
            out.status,
            stderr(&out)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    fn links(&self) -> String {
        let out = Command::new("ip")
            .args(["netns", "exec", &self.netns, "ip", "-o", "link"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn qemu_running(&self) -> bool {
        let out = Command::new("pgrep")
            .args(["-f", &self.env.home().display().to_string()])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).lines().any(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| c.contains("qemu"))
        })
    }

    fn vhost_running(&self) -> bool {
        let out = Command::new("pgrep")
            .args([
                "-f",
                &format!("vhost-device-vsock.*{}", self.env.home().display()),
            ])
            .output()
            .unwrap();
        out.status.success()
    }

    fn assert_nothing_left(&self) {
        let list: Value = serde_json::from_str(&self.ok(&["vm", "list", "--json"])).unwrap();
        assert_eq!(list.as_array().unwrap().len(), 0, "{list}");
        assert!(!self.links().contains("bt-"), "tap left: {}", self.links());
        assert!(!self.qemu_running(), "qemu process left");
        assert!(!self.vhost_running(), "vsock backend left");
        let vms = self.env.home().join("state/vms");
        let left: Vec<_> = std::fs::read_dir(&vms)
            .map(|d| d.filter_map(Result::ok).collect())
            .unwrap_or_default();
        assert!(left.is_empty(), "files left under {}", vms.display());
    }
}

impl Drop for Guest {
    fn drop(&mut self) {
        let _ = self.cmd(&["vm", "kill", "p1", "t1", "b1"]).output();
        let _ = self.cmd(&["vm", "delete", "p1", "t1", "b1"]).output();
        let _ = self
            .cmd(&["daemon", "stop"])
            .env("BANGER_NO_AUTOSTART", "1")
            .output();
        let _ = Command::new("ip")
            .args(["netns", "del", &self.netns])
            .status();
    }
}

#[test]
fn e2e_vm_run_rm_propagates_exit_code_and_leaves_nothing() {
    let Some(g) = Guest::new() else { return };
    let out = g.run(&[
        "vm",
        "run",
        "--name",
        "t1",
        "--rm",
        "--",
        "sh",
        "-c",
        "echo hi; exit 7",
    ]);
    assert_eq!(out.status.code(), Some(7), "{}", stderr(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "hi");
    g.assert_nothing_left();
}

#[test]
fn e2e_work_disk_persists_and_vms_survive_daemon_kill() {
    let Some(g) = Guest::new() else { return };
    g.ok(&["vm", "create", "--name", "p1", "--disk-size", "1G"]);
    g.ok(&[
        "vm",
        "exec",
        "p1",
        "--",
        "sh",
        "-c",
        "echo kept > /root/marker && sync",
    ]);
    // The guest has a vsock device (vhost-device-vsock under QEMU), bound to its driver.
    g.ok(&[
        "vm",
        "exec",
        "p1",
        "--",
        "sh",
        "-c",
        "test -c /dev/vsock && ls /sys/bus/virtio/drivers/vmw_vsock_virtio_transport | grep -q virtio",
    ]);
    g.ok(&["vm", "stop", "p1"]);
    let show: Value = serde_json::from_str(&g.ok(&["vm", "show", "p1", "--json"])).unwrap();
    assert_eq!(show["state"], "stopped");
    assert!(!g.qemu_running());
    g.ok(&["vm", "start", "p1"]);
    assert_eq!(
        g.ok(&["vm", "exec", "p1", "--", "cat", "/root/marker"])
            .trim(),
        "kept"
    );

    // kill -9 the daemon: the VM keeps running and the next call's daemon adopts it.
    let status: Value = serde_json::from_str(&g.ok(&["daemon", "status", "--json"])).unwrap();
    let pid = status["ping"]["pid"].as_u64().unwrap();
    assert!(
        Command::new("kill")
            .args(["-9", &pid.to_string()])
            .status()
            .unwrap()
            .success()
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while std::path::Path::new(&format!("/proc/{pid}")).exists() {
        assert!(std::time::Instant::now() < deadline, "bangerd did not die");
        std::thread::yield_now();
    }
    assert!(g.qemu_running(), "killing bangerd must not kill the VM");
    assert!(g.vhost_running(), "nor its vsock backend");
    let show: Value = serde_json::from_str(&g.ok(&["vm", "show", "p1", "--json"])).unwrap();
    assert_eq!(show["state"], "running");
    assert_eq!(g.ok(&["vm", "exec", "p1", "--", "hostname"]).trim(), "p1");
    let code = g
        .run(&["vm", "exec", "p1", "--", "sh", "-c", "exit 3"])
        .status
        .code();
    assert_eq!(code, Some(3));
    g.ok(&["vm", "delete", "p1"]);
    g.assert_nothing_left();
}

#[test]
fn e2e_bad_input_creates_nothing() {
    let Some(g) = Guest::new() else { return };
    g.ok(&["vm", "create", "--name", "b1", "--no-start"]);
    let show: Value = serde_json::from_str(&g.ok(&["vm", "show", "b1", "--json"])).unwrap();
    assert_eq!(show["state"], "created");
    let vms = g.env.home().join("state/vms");
    let count = || std::fs::read_dir(&vms).unwrap().count();
    assert_eq!(count(), 1);
    let cases: &[(&[&str], &str)] = &[
        (&["vm", "create", "--vcpu", "0"], "bad_request"),
        (&["vm", "create", "--memory", "1"], "bad_request"),
        (&["vm", "create", "--name", "Bad_Name"], "bad_request"),
        (&["vm", "create", "--name", "b1"], "already_exists"),
        (
            &["vm", "run", "--name", "b1", "--", "true"],
            "already_exists",
        ),
        (&["vm", "create", "--image", "nosuch"], "not_found"),
    ];
    for (args, kind) in cases {
        let out = g.run(args);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
        assert!(
            err.contains(kind) && err.contains("hint:"),
            "{args:?}: {err}"
        );
    }
    let list: Value = serde_json::from_str(&g.ok(&["vm", "list", "--json"])).unwrap();
    assert_eq!(list.as_array().unwrap().len(), 1, "{list}");
    assert_eq!(count(), 1, "no files for failed creates");
    assert!(!g.links().contains("bt-"), "no tap: {}", g.links());
    g.ok(&["vm", "delete", "b1"]);
    g.assert_nothing_left();
}
