//! Workspace prepare, host side plus a local stand-in for the guest: a repo of 2,000 files
//! / 50 MB is snapshotted (git ls-files), given a depth-1 `.git` (git fetch), streamed as
//! tar into the real unpack script (tar -x, git reset) running locally. What it leaves out
//! is ssh and the guest's own CPU; `scripts/bench-workspace.sh` measures a real guest.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::path::Path;
use std::time::Duration;

use banger_host::workspace::{self, ShipOptions};
use banger_host::{CommandRunner as _, RealRunner};
use criterion::{Criterion, criterion_group, criterion_main};

const FILES: usize = 2000;
const BYTES: usize = 50 << 20;

fn make_repo(dir: &Path) {
    let per_file = BYTES / FILES;
    let mut seed: u64 = 0x9E37_79B9_7F4A_7C15;
    for i in 0..FILES {
        let sub = dir.join(format!("d{:02}", i % 40));
        std::fs::create_dir_all(&sub).unwrap();
        // Pseudo-random bytes (xorshift): incompressible, like binaries and assets.
        let mut data = Vec::with_capacity(per_file);
        while data.len() < per_file {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            data.extend_from_slice(&seed.to_le_bytes());
        }
        std::fs::write(sub.join(format!("f{i:04}.bin")), &data).unwrap();
    }
    banger_testkit::git::git(dir, &["init", "-q", "-b", "main"]);
    banger_testkit::git::git(dir, &["add", "-A"]);
    banger_testkit::git::git(dir, &["commit", "-qm", "bench"]);
}

fn prepare(repo: &Path, guest: &Path) {
    let snap = workspace::snapshot(&RealRunner, repo, &ShipOptions::default()).unwrap();
    assert_eq!(snap.files.len(), FILES);
    let staging = tempfile::tempdir().unwrap();
    let dot_git = workspace::shallow_git_dir(&RealRunner, &snap, staging.path()).unwrap();
    let mut feed = |w: &mut dyn std::io::Write| {
        workspace::write_tar(&snap, &dot_git, w).map_err(std::io::Error::other)
    };
    let script =
        workspace::unpack_script(&guest.display().to_string()).expect("a plain path quotes");
    let out = banger_host::guest::run_fed(
        &banger_host::Cmd::new("sh").args(["-c", &script]),
        Some(&mut feed),
        None,
    )
    .unwrap();
    assert_eq!(out.code, 0, "{}", String::from_utf8_lossy(&out.stderr));
}

fn bench(c: &mut Criterion) {
    let repo = tempfile::tempdir().unwrap();
    make_repo(repo.path());
    let guest = tempfile::tempdir().unwrap();
    let dst = guest.path().join("repo");
    let mut g = c.benchmark_group("workspace");
    g.sample_size(10).measurement_time(Duration::from_secs(40));
    g.bench_function("prepare_2000_files_50MB_local_guest", |b| {
        b.iter(|| prepare(repo.path(), &dst));
    });
    g.bench_function("snapshot_only", |b| {
        b.iter(|| workspace::snapshot(&RealRunner, repo.path(), &ShipOptions::default()).unwrap());
    });
    g.finish();
    // Sanity: the guest copy's HEAD is the repo's.
    let head = |d: &Path| {
        RealRunner
            .run(
                &banger_host::Cmd::new("git")
                    .arg("-C")
                    .arg(d.display().to_string())
                    .args(["rev-parse", "HEAD"]),
            )
            .unwrap()
            .stdout
    };
    assert_eq!(head(repo.path()), head(&dst));
}

criterion_group!(benches, bench);
criterion_main!(benches);
