//! Real host networking (bridge, taps, nftables) under the control plane, inside a network
//! namespace each test creates and deletes: the test re-runs itself in the namespace with
//! `ip netns exec`. The VMM and guest are fakes; everything `ip` and `nft` do is real.
//! Needs root, `ip` and `nft`; skipped (with a message) without them.
#![allow(
    clippy::tests_outside_test_module,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stderr
)]

use std::net::Ipv4Addr;
use std::process::Command;
use std::time::{Duration, Instant};

use banger_api::types::VmSetParams;
use banger_config::Config;
use banger_daemon::daemon::Daemon;
use banger_daemon::services::Lifecycle;
use banger_testkit::daemon::{TestBed, create_vm, nat_wanted, small_config};

const IN_NETNS: &str = "BANGER_TEST_NETNS";

/// In the parent: runs `test` again inside a fresh netns, asserts it passed, deletes the
/// netns and returns `true`. In the child (or when the host lacks what is needed): `false`
/// to run the body, or `true` to skip.
fn parent_runs_in_netns(test: &str) -> bool {
    if std::env::var_os(IN_NETNS).is_some() {
        return false;
    }
    use banger_testkit::require;
    if !require::met(&[require::root(), require::tool("ip"), require::tool("nft")]) {
        eprintln!("{test} skipped");
        return true;
    }
    let ns = format!("bn{}", std::process::id());
    assert!(
        Command::new("ip")
            .args(["netns", "add", &ns])
            .status()
            .unwrap()
            .success()
    );
    let status = Command::new("ip")
        .args(["netns", "exec", &ns])
        .arg(std::env::current_exe().unwrap())
        .args([test, "--exact", "--nocapture", "--test-threads", "1"])
        .env(IN_NETNS, &ns)
        .status();
    let _ = Command::new("ip").args(["netns", "del", &ns]).status();
    assert!(status.unwrap().success(), "{test} failed inside netns {ns}");
    true
}

fn sh(program: &str, args: &[&str]) -> (bool, String) {
    let out = Command::new(program).args(args).output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

/// The guest IPs banger's live nftables table masquerades (empty when there is no table).
fn table_ips() -> Vec<Ipv4Addr> {
    let (ok, json) = sh("nft", &["-j", "list", "table", "ip", "banger"]);
    if !ok {
        return Vec::new();
    }
    banger_host::nat::masqueraded_ips(&json)
}

/// The table matches the store, and the test's own table is untouched.
fn check(daemon: &Daemon, step: &str) {
    assert_eq!(table_ips(), nat_wanted(daemon), "after {step}");
    let (ok, text) = sh("nft", &["list", "table", "inet", "keepme"]);
    assert!(
        ok && text.contains("chain keep"),
        "unrelated table damaged after {step}"
    );
}

fn taps_on_bridge() -> Vec<String> {
    let (_, out) = sh("ip", &["-o", "link", "show", "master", "br-fc"]);
    let mut taps: Vec<String> = out
        .lines()
        .filter_map(|l| l.split(": ").nth(1))
        .map(|n| n.split('@').next().unwrap_or(n).to_owned())
        .collect();
    taps.sort();
    taps
}

async fn create(daemon: &Daemon, name: &str, nat: bool) -> banger_api::types::VmInfo {
    create_vm(daemon, name, nat).await.unwrap()
}

fn wait_pool(daemon: &Daemon, n: usize) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let mut idle = daemon.services.network.idle_taps();
        if idle.len() == n || Instant::now() > deadline {
            idle.sort();
            return idle;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn real_nft_table_tracks_the_store_and_spares_other_tables() {
    if parent_runs_in_netns("real_nft_table_tracks_the_store_and_spares_other_tables") {
        return;
    }
    sh("ip", &["link", "set", "lo", "up"]);
    let (ok, _) = sh("nft", &["add", "table", "inet", "keepme"]);
    assert!(ok);
    let (ok, _) = sh(
        "nft",
        &[
            "add", "chain", "inet", "keepme", "keep", "{", "type", "filter", "hook", "input",
            "priority", "0", ";", "}",
        ],
    );
    assert!(ok);
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let bed = TestBed::real_network(Config {
            tap_pool_size: 2,
            ..small_config()
        })
        .unwrap();
        let d = &bed.daemon;
        // Starting without a bridge creates no interface; the first create makes the bridge
        // (its tap is made fresh) and warms the pool behind it.
        d.services.vm.reconcile().await.unwrap();
        assert!(
            !sh("ip", &["link", "show", "br-fc"]).0,
            "no bridge at start"
        );
        let first = create(d, "first", false).await;
        let warm = wait_pool(d, 2);
        d.services
            .vm
            .lifecycle(&first.name, Lifecycle::Delete)
            .await
            .unwrap();
        assert_eq!(warm.len(), 2);
        assert_eq!(taps_on_bridge(), warm, "pool taps sit on the real bridge");
        check(d, "start");

        let a = create(d, "a", true).await;
        let b = create(d, "b", false).await;
        check(d, "create");
        assert_eq!(table_ips(), [a.guest_ip.parse::<Ipv4Addr>().unwrap()]);
        let (_, fwd) = sh("sysctl", &["-n", "net.ipv4.ip_forward"]);
        assert_eq!(fwd.trim(), "1", "forwarding on once a guest has nat");

        let set = |name: &str, nat| VmSetParams {
            name: name.into(),
            nat: Some(nat),
            ..Default::default()
        };
        d.services.vm.set(set("b", true)).await.unwrap();
        check(d, "vm set --nat");
        assert_eq!(table_ips().len(), 2);
        d.services.vm.lifecycle("a", Lifecycle::Stop).await.unwrap();
        check(d, "stop");
        d.services
            .vm
            .lifecycle("a", Lifecycle::Start)
            .await
            .unwrap();
        check(d, "start");
        d.services.vm.set(set("a", false)).await.unwrap();
        check(d, "vm set --no-nat");
        d.services
            .vm
            .lifecycle("a", Lifecycle::Delete)
            .await
            .unwrap();
        check(d, "delete");

        // Daemon restart, with the table lost meanwhile: rebuilt from the store; the pool's
        // idle taps are re-adopted rather than made again.
        let idle_before = wait_pool(d, 2);
        sh("nft", &["delete", "table", "ip", "banger"]);
        let d2 = bed.restarted();
        d2.services.vm.reconcile().await.unwrap();
        check(&d2, "daemon restart");
        assert_eq!(table_ips(), [b.guest_ip.parse::<Ipv4Addr>().unwrap()]);
        assert_eq!(wait_pool(&d2, 2), idle_before, "idle taps re-adopted");

        d2.services
            .vm
            .lifecycle("b", Lifecycle::Delete)
            .await
            .unwrap();
        check(&d2, "last delete");
        let (exists, _) = sh("nft", &["list", "table", "ip", "banger"]);
        assert!(!exists, "no guest has nat: banger's table is gone");
        assert_eq!(
            taps_on_bridge(),
            wait_pool(&d2, 2),
            "only idle pool taps are left"
        );
    });
}

/// The daemon with no privileges of its own: every bridge, tap and NAT change goes through
/// the real root helper (`bangerd --root-helper`), which makes taps the owner can open.
#[test]
fn the_root_helper_does_the_privileged_work_for_the_daemon() {
    if parent_runs_in_netns("the_root_helper_does_the_privileged_work_for_the_daemon") {
        return;
    }
    sh("ip", &["link", "set", "lo", "up"]);
    assert!(sh("nft", &["add", "table", "inet", "keepme"]).0);
    let keep = "add chain inet keepme keep { type filter hook input priority 0 ; }";
    assert!(sh("nft", &[keep]).0);
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("run/root-helper.sock");
    let owner = 4242;
    let mut helper = Command::new(env!("CARGO_BIN_EXE_bangerd"))
        .args([
            "--root-helper",
            "--owner-uid",
            &owner.to_string(),
            "--socket",
        ])
        .arg(&sock)
        .env("BANGER_HOME", dir.path())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !sock.exists() {
        assert!(Instant::now() < deadline, "the helper did not start");
        std::thread::sleep(Duration::from_millis(10));
    }
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let client = std::sync::Arc::new(banger_host::helper::HelperClient::new(&sock));
        let bed = TestBed::with_privileged(small_config(), client).unwrap();
        let d = &bed.daemon;
        let vm = create(d, "h1", true).await;
        check(d, "create through the helper");
        assert_eq!(table_ips(), [vm.guest_ip.parse::<Ipv4Addr>().unwrap()]);
        let taps = taps_on_bridge();
        assert_eq!(taps.len(), 1, "{taps:?}");
        // The tap belongs to the owner, so an unprivileged VMM can open it.
        let (_, detail) = sh("ip", &["-d", "link", "show", &taps[0]]);
        assert!(detail.contains(&format!("user {owner}")), "{detail}");
        d.services
            .vm
            .lifecycle("h1", Lifecycle::Delete)
            .await
            .unwrap();
        check(d, "delete through the helper");
        assert!(taps_on_bridge().is_empty());
    });
    let _ = helper.kill();
    let _ = helper.wait();
}
