//! Tap acquisition with real `ip` commands, inside a network namespace (run through
//! `scripts/bench-net.sh`, which creates and deletes it; skipped elsewhere):
//! - `tap/fresh`: a new tap made and attached to the bridge (what a create pays without a pool);
//! - `tap/pool`: taking an idle tap from the warm pool (the O(1) path a create takes), with
//!   the background refill it triggers running alongside.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stderr,
    missing_docs
)]

use std::time::{Duration, Instant};

use banger_config::Config;
use banger_host::{InProcessPrivileged, PrivilegedOps as _, RealRunner};
use banger_testkit::daemon::{TestBed, small_config};
use criterion::{Criterion, criterion_group, criterion_main};

fn bench(c: &mut Criterion) {
    if std::env::var_os("BANGER_BENCH_NETNS").is_none() {
        eprintln!("skipping tap benchmarks: run scripts/bench-net.sh (needs a netns)");
        return;
    }
    let bed = TestBed::real_network(Config {
        tap_pool_size: 16,
        ..small_config()
    })
    .unwrap();
    let net = std::sync::Arc::clone(&bed.daemon.services.network);
    net.ensure_bridge().unwrap();
    let ops = InProcessPrivileged::new(std::sync::Arc::new(RealRunner));
    let mut g = c.benchmark_group("tap");
    g.sample_size(20).measurement_time(Duration::from_secs(8));
    g.bench_function("fresh", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for i in 0..iters {
                let name = format!("bt-bench{i:x}");
                let t = Instant::now();
                ops.create_tap(&name, "br-fc").unwrap();
                total += t.elapsed();
                ops.delete_tap(&name).unwrap();
            }
            total
        });
    });
    g.bench_function("pool", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                // Untimed: wait until the pool has an idle tap (the refill is in the background).
                while net.idle_taps().is_empty() {
                    net.refill();
                }
                let t = Instant::now();
                let tap = net.acquire_tap().unwrap();
                total += t.elapsed();
                net.delete_tap(&tap).unwrap();
            }
            total
        });
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
