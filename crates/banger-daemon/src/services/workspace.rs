//! `WorkspaceService`: workspace prepare/export (the slow guest I/O), `[[file_sync]]`.
//!
//! Locks: `workspace_locks[id]` is held for the guest I/O of one prepare or export, so two
//! on one VM serialize. The caller (`VmService`) takes `vm_locks[id]` only before (validate,
//! snapshot the target) and after (record the result) — never together with this one — so
//! `vm stop`/`delete` never wait behind a long import.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex as StdMutex};
use std::time::Instant;

use banger_api::ErrorCode;
use banger_api::types::{SshInfo, WorkspaceExport, WorkspacePrepareParams, WorkspacePrepared};
use banger_config::FileSync;
use banger_host::workspace::{self as ws, ShipOptions};
use banger_host::{GuestAddr, GuestIoError};
use tokio::sync::Mutex;
use tracing::{info, warn};

use super::support::{ServiceError, WorkerError, blocking, lock};
use crate::infra::Infra;
use crate::stream::StreamOut;

/// Where a workspace goes when the caller does not say.
pub const DEFAULT_GUEST_PATH: &str = "/root/repo";

/// Workspaces in guests.
#[derive(Debug)]
pub struct WorkspaceService {
    infra: Infra,
    workspace_locks: StdMutex<HashMap<String, Arc<Mutex<()>>>>,
}

/// A running VM to do guest I/O on, snapshotted under its VM lock.
#[derive(Debug, Clone)]
pub struct GuestTarget {
    /// VM id (the workspace lock's key).
    pub id: String,
    /// How users ssh to it.
    pub ssh: SshInfo,
    /// How the daemon reaches it.
    pub addr: GuestAddr,
}

/// What went wrong with a workspace; each variant names the step.
#[derive(Debug, thiserror::Error)]
pub enum WorkspaceError {
    /// The host repository cannot be shipped (not a repo, submodules, bad names, git).
    #[error(transparent)]
    Repo(ws::WorkspaceError),
    /// The workspace path is relative.
    #[error("workspace path {0:?} is not absolute")]
    PathNotAbsolute(String),
    /// `--from` without `--branch`.
    #[error("--from needs --branch")]
    FromWithoutBranch,
    /// The guest path is not a place a workspace may go.
    #[error("guest path {path:?} {why}")]
    BadGuestPath {
        /// The path given.
        path: String,
        /// Why it is refused.
        why: &'static str,
    },
    /// The export base is not a revision.
    #[error("--base-commit {0:?} is not a valid revision")]
    BadBaseCommit(String),
    /// Making the staging dir on the host.
    #[error("cannot make staging dir")]
    Staging(#[source] std::io::Error),
    /// Streaming the workspace into the guest.
    #[error("workspace import")]
    Import(#[source] GuestIoError),
    /// Reading the patch out of the guest.
    #[error("workspace export")]
    Export(#[source] GuestIoError),
    /// The guest side of a step exited non-zero.
    #[error("{step} failed in the guest (exit {code}): {tail}")]
    InGuest {
        /// Which step.
        step: &'static str,
        /// Its exit code.
        code: i32,
        /// The last lines of its stderr.
        tail: String,
    },
    /// A blocking step's worker failed.
    #[error(transparent)]
    Worker(#[from] WorkerError),
}

impl ServiceError for WorkspaceError {
    fn code(&self) -> ErrorCode {
        match self {
            WorkspaceError::Repo(ws::WorkspaceError::Git(_) | ws::WorkspaceError::Io { .. })
            | WorkspaceError::Staging(_)
            | WorkspaceError::Import(_)
            | WorkspaceError::Export(_)
            | WorkspaceError::InGuest { .. }
            | WorkspaceError::Worker(_) => ErrorCode::OperationFailed,
            _ => ErrorCode::BadRequest,
        }
    }

    fn hint(&self) -> Option<String> {
        match self {
            WorkspaceError::Repo(e) => e.hint(),
            WorkspaceError::FromWithoutBranch => {
                Some("name the branch to create, e.g. `--branch try --from main`".into())
            }
            WorkspaceError::BadGuestPath { .. } => {
                Some(format!("use a directory such as {DEFAULT_GUEST_PATH}"))
            }
            WorkspaceError::InGuest { code, .. } if *code == ws::NO_GIT => Some(
                "workspaces need git in the guest: install it there (`apt-get install git`) or use an image that has it".into(),
            ),
            _ => None,
        }
    }
}

fn in_guest(step: &'static str, out: &banger_host::CmdOutput) -> WorkspaceError {
    let stderr = String::from_utf8_lossy(&out.stderr);
    let tail: Vec<&str> = stderr.trim().lines().rev().take(3).collect();
    WorkspaceError::InGuest {
        step,
        code: out.code,
        tail: tail.into_iter().rev().collect::<Vec<_>>().join("; "),
    }
}

/// What a prepare (or with `dry_run`, its plan: the files listed) reports for `snap`.
pub fn prepared(
    vm: &str,
    guest_path: &str,
    snap: ws::RepoSnapshot,
    dry_run: bool,
) -> WorkspacePrepared {
    WorkspacePrepared {
        vm: vm.to_owned(),
        source: snap.root.display().to_string(),
        guest_path: guest_path.to_owned(),
        mode: snap.mode(),
        files: snap.files.len() as u64,
        bytes: snap.bytes,
        dry_run,
        head: snap.head,
        branch: snap.branch,
        listed: if dry_run { snap.files } else { Vec::new() },
        elapsed_ms: 0,
    }
}

/// Unpacks a file_sync stream (paths relative to `/`, all under `root/`).
const FILE_SYNC_SCRIPT: &str = "set -e; tar -x --no-same-owner -C /";

/// Writes the tar stream for `entries` (host paths with `~/` against `home`); returns how
/// many entries were packed. Missing host paths are skipped with a warning.
pub fn file_sync_tar(
    entries: &[FileSync],
    home: &Path,
    out: &mut dyn std::io::Write,
) -> std::io::Result<usize> {
    let mut tar = tar::Builder::new(out);
    tar.follow_symlinks(false);
    let mut packed = 0;
    for e in entries {
        let host = e.host_path(home);
        let guest = e.guest_path();
        let rel = guest.trim_start_matches('/');
        let Ok(meta) = std::fs::metadata(&host) else {
            warn!(host = %host.display(), "file_sync: host path missing, skipped");
            continue;
        };
        let add_file = |tar: &mut tar::Builder<&mut dyn std::io::Write>, src: &Path, name: &str| {
            let mut f = std::fs::File::open(src)?;
            let mut header = tar::Header::new_gnu();
            header.set_metadata(&f.metadata()?);
            if let Some(mode) = e.mode_bits() {
                header.set_mode(mode);
            }
            header.set_uid(0);
            header.set_gid(0);
            tar.append_data(&mut header, name, &mut f)
        };
        if meta.is_dir() {
            for entry in walkdir::WalkDir::new(&host).follow_links(false) {
                let entry = entry.map_err(std::io::Error::other)?;
                let sub = entry
                    .path()
                    .strip_prefix(&host)
                    .map_err(std::io::Error::other)?;
                let name = if sub.as_os_str().is_empty() {
                    rel.to_owned()
                } else {
                    format!("{rel}/{}", sub.display())
                };
                if entry.file_type().is_file() {
                    add_file(&mut tar, entry.path(), &name)?;
                } else {
                    tar.append_path_with_name(entry.path(), &name)?;
                }
            }
        } else {
            add_file(&mut tar, &host, rel)?;
        }
        packed += 1;
    }
    tar.finish()?;
    Ok(packed)
}

/// Checks a guest path: absolute, normalized, not `/` and not a system directory.
pub fn validate_guest_path(p: &str) -> Result<(), WorkspaceError> {
    let bad = |why: &'static str| WorkspaceError::BadGuestPath {
        path: p.to_owned(),
        why,
    };
    if !p.starts_with('/') {
        return Err(bad("is not absolute"));
    }
    if p.split('/').any(|c| c == ".." || c == ".") || p.contains("//") || p.ends_with('/') {
        return Err(bad("is not normalized"));
    }
    if p.chars().any(char::is_control) {
        return Err(bad("contains control characters"));
    }
    let top = p.split('/').nth(1).unwrap_or("");
    if p.split('/').count() < 3
        || [
            "bin", "boot", "dev", "etc", "lib", "lib64", "proc", "sbin", "sys", "usr", "var",
        ]
        .contains(&top)
    {
        return Err(bad("would replace a system directory"));
    }
    Ok(())
}

impl WorkspaceService {
    /// A new service.
    pub fn new(infra: Infra) -> Self {
        WorkspaceService {
            infra,
            workspace_locks: StdMutex::default(),
        }
    }

    fn lock_for(&self, id: &str) -> Arc<Mutex<()>> {
        Arc::clone(
            lock(&self.workspace_locks)
                .entry(id.to_owned())
                .or_default(),
        )
    }

    /// What would ship, computed on the host only.
    pub async fn plan(
        &self,
        p: &WorkspacePrepareParams,
    ) -> Result<ws::RepoSnapshot, WorkspaceError> {
        let path = Path::new(&p.path).to_owned();
        if !path.is_absolute() {
            return Err(WorkspaceError::PathNotAbsolute(p.path.clone()));
        }
        if p.from.is_some() && p.branch.is_none() {
            return Err(WorkspaceError::FromWithoutBranch);
        }
        let opts = ShipOptions {
            branch: p.branch.clone(),
            from: p.from.clone(),
            include_untracked: p.include_untracked,
        };
        let runner = Arc::clone(&self.infra.runner);
        blocking(move || ws::snapshot(runner.as_ref(), &path, &opts).map_err(WorkspaceError::Repo))
            .await
    }

    /// Ships `snap` into the guest at `guest_path`, holding the VM's workspace lock.
    pub async fn prepare(
        &self,
        target: &GuestTarget,
        snap: ws::RepoSnapshot,
        guest_path: &str,
    ) -> Result<WorkspacePrepared, WorkspaceError> {
        let lock = self.lock_for(&target.id);
        let _held = lock.lock().await;
        let started = Instant::now();
        let addr = target.addr.clone();
        let runner = Arc::clone(&self.infra.runner);
        let guest = Arc::clone(&self.infra.guest);
        let staging_root = self.infra.layout.cache_dir.clone();
        let script = ws::unpack_script(guest_path).map_err(WorkspaceError::Repo)?;
        let snap = blocking(move || -> Result<_, WorkspaceError> {
            fs_err::create_dir_all(&staging_root).map_err(WorkspaceError::Staging)?;
            // Removed on drop, whatever happens below.
            let staging = tempfile::Builder::new()
                .prefix(".workspace-")
                .tempdir_in(&staging_root)
                .map_err(WorkspaceError::Staging)?;
            let dot_git = ws::shallow_git_dir(runner.as_ref(), &snap, staging.path())
                .map_err(WorkspaceError::Repo)?;
            crate::crashpoint::hit("workspace:staged");
            let mut pack_err = None;
            let mut feed = |w: &mut dyn std::io::Write| {
                ws::write_tar(&snap, &dot_git, w).map_err(|e| {
                    let msg = e.to_string();
                    pack_err = Some(e);
                    std::io::Error::other(msg)
                })
            };
            let out = guest
                .exec(&addr, &script, Some(&mut feed), None)
                .map_err(WorkspaceError::Import)?;
            if let Some(e) = pack_err {
                return Err(WorkspaceError::Repo(e));
            }
            if out.code != 0 {
                return Err(in_guest("workspace import", &out));
            }
            crate::crashpoint::hit("workspace:imported");
            Ok(snap)
        })
        .await?;
        let mut done = prepared(&target.ssh.name, guest_path, snap, false);
        done.elapsed_ms = started.elapsed().as_millis() as u64;
        Ok(done)
    }

    /// Copies the `[[file_sync]]` entries into the guest (each start). A missing host path
    /// is skipped with a warning; a failure is logged, never fatal to the start.
    pub async fn file_sync(&self, addr: &GuestAddr, vm: &str) {
        let entries = self.infra.config.file_sync.clone();
        let home =
            std::env::var_os("HOME").map_or_else(|| "/root".into(), std::path::PathBuf::from);
        let guest = Arc::clone(&self.infra.guest);
        let addr = addr.clone();
        let vm = vm.to_owned();
        let _ = blocking(move || -> Result<(), WorkerError> {
            let mut stream = Vec::new();
            let copied = match file_sync_tar(&entries, &home, &mut stream) {
                Ok(n) => n,
                Err(e) => {
                    warn!(vm = %vm, "file_sync: {e}");
                    return Ok(());
                }
            };
            if copied == 0 {
                return Ok(());
            }
            let mut feed = |w: &mut dyn std::io::Write| w.write_all(&stream);
            match guest.exec(&addr, FILE_SYNC_SCRIPT, Some(&mut feed), None) {
                Ok(out) if out.code == 0 => info!(vm = %vm, entries = copied, "file_sync done"),
                Ok(out) => warn!(vm = %vm, "file_sync failed in the guest: {}", String::from_utf8_lossy(&out.stderr).trim()),
                Err(e) => warn!(vm = %vm, "file_sync: {e}"),
            }
            Ok(())
        })
        .await;
    }

    /// Streams a patch of everything that changed in the guest's workspace since `base`
    /// to `out` (chunks named `patch`; any size).
    pub async fn export(
        &self,
        target: &GuestTarget,
        guest_path: &str,
        base: &str,
        out: &StreamOut,
    ) -> Result<WorkspaceExport, WorkspaceError> {
        if !ws::valid_rev(base) {
            return Err(WorkspaceError::BadBaseCommit(base.to_owned()));
        }
        let lock = self.lock_for(&target.id);
        let _held = lock.lock().await;
        let addr = target.addr.clone();
        let guest = Arc::clone(&self.infra.guest);
        let script = ws::export_script(guest_path, base).map_err(WorkspaceError::Repo)?;
        let out = out.clone();
        let (result, bytes) = blocking(move || -> Result<_, WorkspaceError> {
            let mut bytes = 0u64;
            let mut sink = |chunk: &[u8]| {
                bytes += chunk.len() as u64;
                out.send_blocking("patch", chunk)
                    .map_err(|e| std::io::Error::new(std::io::ErrorKind::BrokenPipe, e))
            };
            let result = guest.exec(&addr, &script, None, Some(&mut sink));
            Ok((result, bytes))
        })
        .await?;
        let result = result.map_err(WorkspaceError::Export)?;
        if result.code != 0 {
            return Err(in_guest("workspace export", &result));
        }
        Ok(WorkspaceExport {
            base: base.to_owned(),
            bytes,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_file_sync_tar_packs_files_dirs_modes_and_skips_missing() {
        let home = tempfile::tempdir().unwrap();
        std::fs::write(home.path().join(".gitconfig"), "[user]\n").unwrap();
        std::fs::create_dir_all(home.path().join(".config/tool/sub")).unwrap();
        std::fs::write(home.path().join(".config/tool/sub/a.toml"), "a").unwrap();
        let e = |host: &str, guest: &str, mode: Option<&str>| FileSync {
            host: host.into(),
            guest: guest.into(),
            mode: mode.map(str::to_owned),
        };
        let mut out = Vec::new();
        let n = file_sync_tar(
            &[
                e("~/.gitconfig", "~/.gitconfig", Some("0600")),
                e("~/.config/tool", "/root/.config/tool", None),
                e("~/missing", "~/missing", None),
            ],
            home.path(),
            &mut out,
        )
        .unwrap();
        assert_eq!(n, 2);
        let mut archive = tar::Archive::new(out.as_slice());
        let mut got: Vec<(String, u32, u64)> = archive
            .entries()
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                let h = e.header();
                (
                    e.path().unwrap().display().to_string(),
                    h.mode().unwrap(),
                    h.uid().unwrap(),
                )
            })
            .collect();
        got.sort();
        let names: Vec<&str> = got.iter().map(|g| g.0.as_str()).collect();
        assert_eq!(
            names,
            [
                "root/.config/tool",
                "root/.config/tool/sub",
                "root/.config/tool/sub/a.toml",
                "root/.gitconfig"
            ]
        );
        assert_eq!(got[3].1 & 0o7777, 0o600);
        assert!(
            got.iter()
                .filter(|g| !g.0.ends_with("sub") && !g.0.ends_with("tool"))
                .all(|g| g.2 == 0)
        );
    }

    #[test]
    fn test_guest_path_validation() {
        for ok in ["/root/repo", "/home/dev/src", "/srv/app", "/tmp/w"] {
            assert!(validate_guest_path(ok).is_ok(), "{ok}");
        }
        for bad in [
            "root/repo",
            "/",
            "/root",
            "/etc/x",
            "/usr/src",
            "/root/../etc",
            "/root/a/",
            "/a//b",
            "/root/a\nb",
        ] {
            assert!(validate_guest_path(bad).is_err(), "{bad:?}");
        }
    }
}
