//! RPC benchmarks against a real daemon on a temp socket with a real SQLite store:
//! `ping` round trip, and `vm.list` with 1,000 VM rows.
#![allow(clippy::unwrap_used, clippy::tests_outside_test_module, missing_docs)]

use std::sync::Arc;

use banger_api::Client;
use banger_api::methods::{Ping, VmList};
use banger_api::types::{Empty, VmState};
use banger_config::{Config, Layout};
use banger_daemon::{Daemon, Infra, bind_socket, serve};
use banger_host::SystemClock;
use banger_store::{ImageRecord, Store, VmRecord};
use criterion::{Criterion, criterion_group, criterion_main};

fn seed(store: &Store, n: usize) {
    store
        .upsert_image(&ImageRecord {
            id: "img".into(),
            name: "debian-bookworm".into(),
            source: "bench".into(),
            managed: true,
            rootfs_path: "/r".into(),
            work_seed_path: None,
            kernel_id: None,
            digest: None,
            config: serde_json::json!({}),
            size_bytes: 0,
            created_at: "2026-01-01T00:00:00Z".into(),
        })
        .unwrap();
    for i in 0..n {
        store
            .insert_vm(&VmRecord {
                id: format!("{i:016x}"),
                name: format!("vm-{i}"),
                image_id: "img".into(),
                state: VmState::Stopped,
                guest_ip: format!("172.16.{}.{}", i / 250, i % 250 + 2),
                vcpu: 2,
                memory_mib: 1024,
                disk_bytes: 8 << 30,
                nat: i % 2 == 0,
                vmm: Some("qemu".into()),
                spec: serde_json::json!({"kernel": "debian-cloud"}),
                workspace: None,
                last_error: None,
                created_at: format!("2026-01-01T00:{:02}:{:02}Z", i / 60 % 60, i % 60),
                updated_at: "2026-01-01T00:00:00Z".into(),
                last_touched_at: "2026-01-01T00:00:00Z".into(),
            })
            .unwrap();
    }
}

fn bench_rpc(c: &mut Criterion) {
    let dir = tempfile::Builder::new()
        .prefix("bb")
        .tempdir_in("/tmp")
        .unwrap();
    let home = dir.path().to_owned();
    let layout = Layout::from_vars(|k| (k == "BANGER_HOME").then(|| home.clone()), 0).unwrap();
    layout.ensure_dirs().unwrap();
    let store = Store::open(&layout.db_path()).unwrap();
    seed(&store, 1000);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let infra = Infra {
        layers: Arc::new(banger_daemon::layers::Layers::new(&layout)),
        layout: layout.clone(),
        config: Arc::new(Config::default()),
        store: Arc::new(store),
        clock: Arc::new(SystemClock),
        runner: Arc::new(banger_host::RecordingRunner::default()),
        privileged: Arc::new(banger_host::InProcessPrivileged::new(Arc::new(
            banger_host::RecordingRunner::default(),
        ))),
        vmm: Arc::new(banger_host::vmm::FakeVmm::default()),
        guest: Arc::new(banger_host::FakeGuest::default()),
        probe: Arc::new(banger_host::RealProbe),
        agent: None,
        cgroups: None,
    };
    let daemon = Arc::new(Daemon::new(infra, banger_config::layout::current_uid()));
    let listener = rt.block_on(bind_socket(&layout.socket_path)).unwrap();
    rt.spawn(serve(Arc::clone(&daemon), listener));
    let mut client = rt.block_on(Client::connect(&layout.socket_path)).unwrap();

    c.bench_function("rpc_ping_roundtrip", |b| {
        b.iter(|| rt.block_on(client.call::<Ping>(&Empty {})).unwrap());
    });
    let mut group = c.benchmark_group("rpc_vm_list");
    group.sample_size(30);
    group.bench_function("1000_vms", |b| {
        b.iter(|| {
            let r = rt.block_on(client.call::<VmList>(&Empty {})).unwrap();
            assert_eq!(r.vms.len(), 1000);
        });
    });
    group.bench_function("1000_vms_store_only", |b| {
        b.iter(|| assert_eq!(daemon.infra.store.list_vms().unwrap().len(), 1000));
    });
    group.finish();
    daemon.shutdown.cancel();
}

criterion_group!(benches, bench_rpc);
criterion_main!(benches);
