//! Host networking through the control plane, with recording fakes: the NAT table follows
//! the store across create/set/stop/start/delete/restart, DNS records follow the VM
//! lifecycle and are served over UDP, the warm tap pool hands out taps and reconciles
//! leftovers, `vm ports` shapes what the guest reports.
#![allow(
    clippy::tests_outside_test_module,
    clippy::unwrap_used,
    clippy::expect_used
)]

use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use banger_api::ErrorCode;
use banger_api::types::{VmCreateParams, VmSetParams};
use banger_config::Config;
use banger_daemon::progress::Progress;
use banger_daemon::services::Lifecycle;
use banger_host::PrivilegedOps as _;
use banger_testkit::daemon::{TestBed, Wire, create_vm, nat_wanted, small_config};
use banger_testkit::dns;
use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;

async fn create(bed: &TestBed, name: &str, nat: bool) -> banger_api::types::VmInfo {
    create_vm(&bed.daemon, name, nat).await.unwrap()
}

fn set(name: &str, nat: Option<bool>) -> VmSetParams {
    VmSetParams {
        name: name.into(),
        nat,
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn nat_table_follows_the_store_through_every_step() {
    let bed = TestBed::new(small_config()).unwrap();
    let vms = &bed.daemon.services.vm;
    let a = create(&bed, "a", true).await;
    let b = create(&bed, "b", false).await;
    assert!(a.nat && !b.nat);
    let ip = |v: &banger_api::types::VmInfo| v.guest_ip.parse::<Ipv4Addr>().unwrap();
    assert_eq!(bed.privileged.nat_ips(), [ip(&a)]);
    // The applied spec names the tap the VM really uses.
    let spec = bed.privileged.nat.lock().unwrap().clone().unwrap();
    assert_eq!(spec.bridge, "br-fc");
    assert!(bed.privileged.taps().contains(&spec.entries[0].tap));

    vms.set(set("b", Some(true))).await.unwrap();
    assert_eq!(bed.privileged.nat_ips(), nat_wanted(&bed.daemon));
    assert_eq!(bed.privileged.nat_ips().len(), 2);
    vms.set(set("a", Some(false))).await.unwrap();
    assert_eq!(bed.privileged.nat_ips(), [ip(&b)]);
    vms.lifecycle("b", Lifecycle::Stop).await.unwrap();
    assert!(bed.privileged.nat_ips().is_empty());
    assert_eq!(bed.privileged.nat_ips(), nat_wanted(&bed.daemon));
    // NAT set on a stopped VM is remembered and applied at start.
    vms.set(set("a", Some(true))).await.unwrap();
    assert_eq!(bed.privileged.nat_ips(), [ip(&a)]);
    vms.lifecycle("b", Lifecycle::Start).await.unwrap();
    assert_eq!(bed.privileged.nat_ips(), nat_wanted(&bed.daemon));
    vms.lifecycle("a", Lifecycle::Kill).await.unwrap();
    assert_eq!(bed.privileged.nat_ips(), [ip(&b)]);
    // A daemon restart rebuilds the table from the store (wipe what the "host" has first).
    *bed.privileged.nat.lock().unwrap() = None;
    vms.reconcile().await.unwrap();
    assert_eq!(bed.privileged.nat_ips(), nat_wanted(&bed.daemon));
    assert_eq!(bed.privileged.nat_ips(), [ip(&b)]);
    vms.lifecycle("b", Lifecycle::Delete).await.unwrap();
    vms.lifecycle("a", Lifecycle::Delete).await.unwrap();
    assert!(bed.privileged.nat_ips().is_empty());
    assert!(bed.leftovers().is_empty(), "{:?}", bed.leftovers());
}

#[tokio::test(flavor = "multi_thread")]
async fn failing_nat_fails_the_create_and_leaves_nothing() {
    let bed = TestBed::new(small_config()).unwrap();
    *bed.privileged.fail.lock().unwrap() = Some("sync_nat");
    let err = bed
        .daemon
        .services
        .vm
        .create(
            VmCreateParams {
                name: Some("n".into()),
                nat: true,
                ..Default::default()
            },
            &Arc::new(Progress::default()),
        )
        .await
        .wire()
        .unwrap_err();
    assert!(err.message.starts_with("nat:"), "{}", err.message);
    assert!(err.data.hint.is_some());
    *bed.privileged.fail.lock().unwrap() = None;
    assert!(bed.leftovers().is_empty(), "{:?}", bed.leftovers());
}

#[tokio::test(flavor = "multi_thread")]
async fn failing_nat_toggle_keeps_the_old_setting() {
    let bed = TestBed::new(small_config()).unwrap();
    let vms = &bed.daemon.services.vm;
    create(&bed, "t", false).await;
    *bed.privileged.fail.lock().unwrap() = Some("sync_nat");
    assert!(vms.set(set("t", Some(true))).await.is_err());
    *bed.privileged.fail.lock().unwrap() = None;
    assert!(!vms.show("t").await.unwrap().nat);
    vms.lifecycle("t", Lifecycle::Delete).await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn vm_set_sizing_needs_a_stopped_vm_and_valid_values() {
    let bed = TestBed::new(small_config()).unwrap();
    let vms = &bed.daemon.services.vm;
    create(&bed, "s", false).await;
    let running = vms
        .set(VmSetParams {
            name: "s".into(),
            vcpu: Some(2),
            ..Default::default()
        })
        .await
        .wire()
        .unwrap_err();
    assert_eq!(running.kind(), ErrorCode::BadRequest);
    assert!(running.data.hint.unwrap().contains("vm stop"));
    for bad in [
        VmSetParams {
            name: "s".into(),
            ..Default::default()
        },
        VmSetParams {
            name: "s".into(),
            vcpu: Some(0),
            ..Default::default()
        },
        VmSetParams {
            name: "s".into(),
            memory_mib: Some(16),
            ..Default::default()
        },
    ] {
        assert_eq!(
            vms.set(bad).await.wire().unwrap_err().kind(),
            ErrorCode::BadRequest
        );
    }
    assert_eq!(
        vms.set(set("nope", Some(true)))
            .await
            .wire()
            .unwrap_err()
            .kind(),
        ErrorCode::NotFound
    );
    vms.lifecycle("s", Lifecycle::Stop).await.unwrap();
    let vm = vms
        .set(VmSetParams {
            name: "s".into(),
            vcpu: Some(2),
            memory_mib: Some(300),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!((vm.vcpu, vm.memory_mib), (2, 300));
    vms.lifecycle("s", Lifecycle::Delete).await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn dns_answers_follow_start_stop_delete_and_restart() {
    let bed = TestBed::new(Config {
        dns_listen: "127.0.0.1:0".into(),
        ..small_config()
    })
    .unwrap();
    let net = &bed.daemon.services.network;
    let vms = &bed.daemon.services.vm;
    net.start_dns(bed.daemon.shutdown.clone()).await;
    let addr: std::net::SocketAddr = net.dns_status().listen.unwrap();
    let q = |name: &'static str| dns::query_udp(addr, name, RecordType::A, Duration::from_secs(5));

    let a = create(&bed, "alpha", false).await;
    let b = create(&bed, "beta", false).await;
    assert_ne!(a.guest_ip, b.guest_ip);
    let r = q("alpha.vm.").await.unwrap();
    assert_eq!(r.code, ResponseCode::NoError);
    assert_eq!(r.addrs, [a.guest_ip.parse::<Ipv4Addr>().unwrap()]);
    assert_eq!(
        q("beta.vm.").await.unwrap().addrs,
        [b.guest_ip.parse::<Ipv4Addr>().unwrap()]
    );
    assert_eq!(q("example.com.").await.unwrap().code, ResponseCode::Refused);

    vms.lifecycle("alpha", Lifecycle::Stop).await.unwrap();
    assert_eq!(q("alpha.vm.").await.unwrap().code, ResponseCode::NXDomain);
    vms.lifecycle("alpha", Lifecycle::Start).await.unwrap();
    assert_eq!(q("alpha.vm.").await.unwrap().addrs.len(), 1);
    // A restart rebuilds the records from the store.
    net.dns_replace_all([]);
    vms.reconcile().await.unwrap();
    assert_eq!(q("alpha.vm.").await.unwrap().addrs.len(), 1);
    assert_eq!(q("beta.vm.").await.unwrap().addrs.len(), 1);
    vms.lifecycle("alpha", Lifecycle::Delete).await.unwrap();
    assert_eq!(q("alpha.vm.").await.unwrap().code, ResponseCode::NXDomain);
    vms.lifecycle("beta", Lifecycle::Delete).await.unwrap();
    assert!(bed.leftovers().is_empty(), "{:?}", bed.leftovers());
}

#[tokio::test(flavor = "multi_thread")]
async fn dns_port_in_use_is_reported_not_fatal() {
    let taken = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let bed = TestBed::new(Config {
        dns_listen: taken.local_addr().unwrap().to_string(),
        ..small_config()
    })
    .unwrap();
    let net = &bed.daemon.services.network;
    net.start_dns(bed.daemon.shutdown.clone()).await;
    let st = net.dns_status();
    assert!(st.listen.is_none());
    assert!(st.error.unwrap().contains("cannot listen"));
    let status = bed.daemon.services.network.status().await.unwrap();
    assert!(status.dns.error.is_some());
}

/// Waits (bounded) until the pool holds `n` idle taps.
fn wait_pool(bed: &TestBed, n: usize) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let idle = bed.daemon.services.network.idle_taps();
        if idle.len() == n || Instant::now() > deadline {
            return idle;
        }
        std::thread::yield_now();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn tap_pool_warms_hands_out_and_refills() {
    let bed = TestBed::new(Config {
        tap_pool_size: 4,
        ..small_config()
    })
    .unwrap();
    // A daemon start without the bridge touches no host interface at all.
    bed.daemon.services.vm.reconcile().await.unwrap();
    assert!(bed.privileged.links.lock().unwrap().is_empty());
    assert!(bed.daemon.services.network.idle_taps().is_empty());
    // With the bridge there (made by an earlier create), a start warms the pool.
    bed.daemon.services.network.ensure_bridge().unwrap();
    bed.daemon.services.vm.reconcile().await.unwrap();
    let warm = wait_pool(&bed, 4);
    assert_eq!(warm.len(), 4);
    let vm = create(&bed, "p", false).await;
    // The VM got the oldest idle tap; the pool refills behind it.
    let refilled = wait_pool(&bed, 4);
    assert_eq!(refilled.len(), 4);
    assert!(
        !refilled.contains(&warm[0]),
        "the handed-out tap is no longer idle"
    );
    assert!(bed.privileged.taps().contains(&warm[0]), "the vm uses it");
    bed.daemon
        .services
        .vm
        .lifecycle(&vm.name, Lifecycle::Delete)
        .await
        .unwrap();
    assert!(
        !bed.privileged.taps().contains(&warm[0]),
        "deleted with the vm"
    );
    assert!(bed.leftovers().is_empty(), "{:?}", bed.leftovers());
}

#[tokio::test(flavor = "multi_thread")]
async fn reconcile_adopts_idle_taps_and_removes_the_rest() {
    let bed = TestBed::new(Config {
        tap_pool_size: 2,
        ..small_config()
    })
    .unwrap();
    // Left by a previous daemon: five idle banger taps and one that is not banger's.
    bed.daemon.services.network.ensure_bridge().unwrap();
    for t in ["bt-a", "bt-b", "bt-c", "bt-d", "bt-e", "other0"] {
        bed.privileged.create_tap(t, "br-fc").unwrap();
    }
    bed.daemon.services.vm.reconcile().await.unwrap();
    let idle = wait_pool(&bed, 2);
    assert_eq!(idle, ["bt-a", "bt-b"]);
    let mut links = bed.privileged.taps();
    links.sort();
    assert_eq!(
        links,
        ["bt-a", "bt-b", "other0"],
        "surplus removed, foreign kept"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn ports_come_from_the_guest_with_endpoints() {
    let bed = TestBed::new(small_config()).unwrap();
    create(&bed, "web", false).await;
    *bed.guest.listeners.lock().unwrap() = vec![
        banger_host::Listener {
            proto: banger_host::Proto::Tcp,
            addr: "0.0.0.0".parse().unwrap(),
            port: 8080,
        },
        banger_host::Listener {
            proto: banger_host::Proto::Tcp,
            addr: "127.0.0.1".parse().unwrap(),
            port: 5432,
        },
    ];
    let out = bed
        .daemon
        .services
        .vm
        .ports_many(&["web".into(), "missing".into()])
        .await;
    let out = banger_daemon::edge::port_outcomes(out);
    assert_eq!(out.len(), 2);
    let web = &out[0];
    assert!(web.error.is_none());
    assert_eq!(web.ports.len(), 2);
    assert_eq!(web.ports[1].endpoint.as_deref(), Some("web.vm:8080"));
    assert_eq!(web.ports[1].url.as_deref(), Some("http://web.vm:8080/"));
    assert_eq!(web.ports[0].endpoint, None);
    assert_eq!(out[1].error.as_ref().unwrap().kind(), ErrorCode::NotFound);
    bed.daemon
        .services
        .vm
        .lifecycle("web", Lifecycle::Stop)
        .await
        .unwrap();
    let stopped = banger_daemon::edge::port_outcomes(
        bed.daemon.services.vm.ports_many(&["web".into()]).await,
    );
    assert_eq!(
        stopped[0].error.as_ref().unwrap().kind(),
        ErrorCode::NotRunning
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn nat_on_a_host_without_nft_is_refused_before_anything_is_created() {
    let bed = TestBed::new(small_config()).unwrap();
    let vms = &bed.daemon.services.vm;
    create(&bed, "plain", false).await;
    bed.probe.missing.lock().unwrap().push("nft".into());
    let runs = bed.runner.calls().len();
    let priv_calls = bed.privileged.calls.lock().unwrap().len();
    let launches = bed.vmm.launches.lock().unwrap().len();
    let err = create_vm(&bed.daemon, "natted", true).await.unwrap_err();
    assert!(
        err.message.contains("`nft` is not installed"),
        "{}",
        err.message
    );
    assert!(err.data.hint.as_deref().unwrap().contains("nftables"));
    assert!(bed.daemon.infra.store.get_vm("natted").unwrap().is_none());
    assert_eq!(bed.runner.calls().len(), runs, "no disk was made");
    assert_eq!(bed.privileged.calls.lock().unwrap().len(), priv_calls);
    assert_eq!(
        bed.vmm.launches.lock().unwrap().len(),
        launches,
        "nothing booted"
    );
    // Turning NAT on later is refused the same way, and the VM is unchanged.
    let err = vms.set(set("plain", Some(true))).await.wire().unwrap_err();
    assert!(
        err.message.contains("`nft` is not installed"),
        "{}",
        err.message
    );
    assert!(!vms.show("plain").await.unwrap().nat);
    // Without NAT nothing needs nft.
    vms.set(set("plain", Some(false))).await.unwrap();
    vms.lifecycle("plain", Lifecycle::Delete).await.unwrap();
    assert!(bed.leftovers().is_empty(), "{:?}", bed.leftovers());
}
