//! Control-plane cost of `vm create` with the fake VMM and fake guest (only the creates are
//! timed; each VM is killed and deleted untimed afterwards):
//! - `create/simulated_disks`: the daemon's own work (validation, store, locks, handles,
//!   stages, spawning the fake VMM) with host disk commands recorded, not run;
//! - `create/real_disks`: plus real `cp --reflink`, `ssh-keygen`, `debugfs`, `mkfs.ext4`;
//! - `concurrent/{1,10}`: wall time of 1 vs 10 concurrent creates (simulated disks), with
//!   the fake guest ready at once (pure control plane, CPU-bound on small hosts) and with a
//!   500 ms stand-in boot (`boot500ms/`), which shows whether creates serialize anywhere.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use banger_api::types::VmCreateParams;
use banger_config::Config;
use banger_daemon::progress::Progress;
use banger_daemon::services::Lifecycle;
use banger_host::guest::FakeReadiness;
use banger_testkit::daemon::{Disks, TestBed, small_config};
use criterion::{Criterion, criterion_group, criterion_main};

fn config() -> Config {
    // A stand-in boot of 500 ms must fit in the boot timeout.
    Config {
        boot_timeout_secs: 30,
        ..small_config()
    }
}

static N: AtomicU64 = AtomicU64::new(0);

async fn create(bed: &TestBed) -> String {
    let name = format!("b-{}", N.fetch_add(1, Ordering::Relaxed));
    let p = VmCreateParams {
        name: Some(name.clone()),
        ..Default::default()
    };
    bed.daemon
        .services
        .vm
        .create(p, &Arc::new(Progress::default()))
        .await
        .unwrap();
    name
}

async fn cleanup(bed: &TestBed, names: Vec<String>) {
    let vms = &bed.daemon.services.vm;
    vms.lifecycle_many(&names, Lifecycle::Kill).await;
    vms.lifecycle_many(&names, Lifecycle::Delete).await;
}

/// Times `n` concurrent creates per iteration.
fn timed(rt: &tokio::runtime::Runtime, bed: &TestBed, n: usize, iters: u64) -> Duration {
    let mut total = Duration::ZERO;
    for _ in 0..iters {
        let t = Instant::now();
        let names = rt.block_on(futures::future::join_all((0..n).map(|_| create(bed))));
        total += t.elapsed();
        rt.block_on(cleanup(bed, names));
    }
    total
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut g = c.benchmark_group("create");
    g.sample_size(30);
    g.measurement_time(Duration::from_secs(5));
    for (label, disks) in [
        ("simulated_disks", Disks::Simulated),
        ("real_disks", Disks::Real),
    ] {
        let bed = TestBed::build(config(), None, disks).unwrap();
        g.bench_function(label, |b| b.iter_custom(|iters| timed(&rt, &bed, 1, iters)));
    }
    g.finish();

    let mut g = c.benchmark_group("concurrent");
    g.sample_size(20);
    g.measurement_time(Duration::from_secs(5));
    let bed = TestBed::build(config(), None, Disks::Simulated).unwrap();
    for n in [1usize, 10] {
        g.bench_function(n.to_string(), |b| {
            b.iter_custom(|iters| timed(&rt, &bed, n, iters));
        });
    }
    *bed.guest.readiness.lock().unwrap() = FakeReadiness::AfterMs(500);
    g.sample_size(10);
    for n in [1usize, 10] {
        g.bench_function(format!("boot500ms/{n}"), |b| {
            b.iter_custom(|iters| timed(&rt, &bed, n, iters));
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
