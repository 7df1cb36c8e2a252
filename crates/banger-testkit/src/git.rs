//! Git fixtures: scripts and git commands run with a fixed identity, and throwaway repos.
#![allow(
    clippy::expect_used,
    reason = "fixtures for tests: a failure must stop the test loudly"
)]

use std::path::Path;
use std::process::Command;

fn with_identity(cmd: &mut Command) -> &mut Command {
    cmd.env("GIT_AUTHOR_NAME", "t")
        .env("GIT_AUTHOR_EMAIL", "t@example.com")
        .env("GIT_COMMITTER_NAME", "t")
        .env("GIT_COMMITTER_EMAIL", "t@example.com")
}

/// Runs `script` with `sh -c` in `dir` under a fixed git identity.
///
/// # Panics
/// When the script fails (with its stderr).
pub fn sh(dir: &Path, script: &str) {
    let out = with_identity(Command::new("sh").args(["-c", script]).current_dir(dir))
        .output()
        .expect("sh runs");
    assert!(
        out.status.success(),
        "{script}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Runs `git -C dir ARGS` under a fixed git identity; returns its trimmed stdout.
///
/// # Panics
/// When git fails (with its stderr).
pub fn git(dir: &Path, args: &[&str]) -> String {
    let out = with_identity(Command::new("git").arg("-C").arg(dir).args(args))
        .output()
        .expect("git runs");
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// A new repository on branch `main` in a temporary directory, then `script` run in it.
///
/// # Panics
/// When the directory, `git init` or the script fails.
pub fn repo(script: &str) -> tempfile::TempDir {
    let d = tempfile::tempdir().expect("temp dir");
    sh(d.path(), &format!("git init -q -b main && {script}"));
    d
}
